"""What bundled aggregations cost /sync: the server's own time to compute an initial and an
incremental /sync for a member of 30 rooms, in rooms without relations and in rooms whose
latest events hold a thread root with three replies, an edit and a reference (every timeline
then carries a bundle: C-S API "Aggregations of child events").

In process: a Bastion on a thread, filled over HTTP; each figure is the median over many
computations of the CPU time of the server's loop thread (``time.thread_time``), with the
minimum beside it (other load on the machine still moves the median). Prints a line per case, then the figures as one JSON object on
the last line. Run it on an earlier commit for the figures before a change.

Run: python bench/sync_bundles.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from bastion.services.filtering import parse_filter  # noqa: E402
from bastion.services.sync_api import SyncToken  # noqa: E402
from tests.support.accounts import call_on_server  # noqa: E402
from tests.support.guard import NO_RATE_LIMITS  # noqa: E402
from tests.support.harness import Client, ServerThread  # noqa: E402

QUICK = "--quick" in sys.argv
ROOMS = 30
#: Messages per room; the timeline limit of the syncs.
MESSAGES, LIMIT = 14, 10
ROUNDS = 50 if QUICK else 200
V3 = "/_matrix/client/v3"


def send(c: Client, room_id: str, content: dict) -> str:
    path = f"{V3}/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}"
    r = c.request("PUT", path, content)
    assert r.status == 200, r.body
    return r.body["event_id"]


def text(body: str, **extra) -> dict:
    return {"msgtype": "m.text", "body": body, **extra}


def fill(a: Client, b: Client, relations: bool) -> list[str]:
    rooms = []
    for _ in range(ROOMS):
        r = a.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
        room = r.body["room_id"]
        assert b.request("POST", f"{V3}/rooms/{room}/join", {}).status == 200
        rooms.append(room)
        for m in range(MESSAGES - (6 if relations else 0)):
            send(a, room, text(f"message {m}"))
        if relations:
            root = send(a, room, text("root"))
            for k in range(3):
                rel = {"rel_type": "m.thread", "event_id": root}
                send(b, room, text(f"reply {k}", **{"m.relates_to": rel}))
            rel = {"rel_type": "m.replace", "event_id": root}
            send(a, room, text("* root!", **{"m.new_content": text("root!"), "m.relates_to": rel}))
            rel = {"rel_type": "m.reference", "event_id": root}
            send(b, room, text("see", **{"m.relates_to": rel}))
    return rooms


def measure(relations: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServerThread(Path(tmp) / "data", guard=NO_RATE_LIMITS).start()
        try:
            a, b = Client(srv.base_url).register(), Client(srv.base_url).register()
            rooms = fill(a, b, relations)
            hs = srv.hs
            assert hs is not None
            flt = parse_filter({"room": {"timeline": {"limit": LIMIT}}})
            requester = SimpleNamespace(user_id=b.user_id, device_id=b.device_id, is_guest=False)

            def timed(since: SyncToken | None) -> tuple[list[float], dict]:
                upto = SyncToken(hs.store.current_pos, hs.typing.serial)
                out, resp = [], {}
                for _ in range(ROUNDS):
                    t0 = time.thread_time()
                    resp = hs.sync.compute(requester, since, upto, False, flt)
                    out.append(time.thread_time() - t0)
                return out, resp

            initial, resp = call_on_server(srv, timed, None)
            bundled = sum(
                "m.relations" in e.get("unsigned", {})
                for room in resp["rooms"]["join"].values()
                for e in room["timeline"]["events"]
            )
            since = SyncToken.parse(resp["next_batch"])
            send(a, rooms[0], text("new"))
            incremental, resp = call_on_server(srv, timed, since)
            assert list(resp["rooms"]["join"]) == [rooms[0]]
        finally:
            srv.stop()
    return {
        "initial_ms": statistics.median(initial) * 1000,
        "initial_min_ms": min(initial) * 1000,
        "incremental_ms": statistics.median(incremental) * 1000,
        "incremental_min_ms": min(incremental) * 1000,
        "bundled_events": bundled,
    }


def main() -> None:
    figures = {}
    for relations in (False, True):
        name = "relations" if relations else "plain"
        f = figures[name] = measure(relations)
        print(
            f"{name:9} initial /sync ({ROOMS} rooms, limit {LIMIT}) {f['initial_ms']:.2f} ms"
            f" (min {f['initial_min_ms']:.2f}), incremental (1 new event)"
            f" {f['incremental_ms']:.3f} ms (min {f['incremental_min_ms']:.3f}),"
            f" {f['bundled_events']} events bundled"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
