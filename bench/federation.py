"""Federation benchmark: inbound PDU throughput against Synapse, and joining a room of 10,000
state events.

1. Inbound throughput (verify + auth + persist): a test federation peer (tests/support/peer.py,
   an HTTPS server with its own signing key, certificate of a test CA) joins a public room on each
   server with make_join / send_join, then sends a stream of valid ``m.room.message`` events, a
   chain each on the previous one, in ``PUT /_matrix/federation/v1/send`` transactions of 50 PDUs,
   one transaction at a time (both servers answer /send once the PDUs are processed). Events are
   built and signed before the clock starts; every PDU must be accepted. Figure: events/s, the
   median of several rounds, the servers alternating.

   Bastion runs in this process (tests/support/federation.py: a HomeServer on its own thread,
   TLS listener) — the peer's client shares its interpreter, which can only slow Bastion down.
   Synapse (matrix-synapse from PyPI, the launcher of tests/acceptance/test_synapse_peer.py)
   runs as a subprocess with TLS and the same test CA, fetching the peer's keys from it; its
   ``rc_federation`` and client rate limits are raised so they do not throttle the stream.
   Bastion's per-origin /send rate limit is raised likewise.

2. Join of a room with 10,000 state events: the peer holds a v12 room (create, power levels,
   join rules, 9,997 joined members); a local user's join is ingested with
   ``process_room_state`` (every state and auth-chain event signature-checked, auth-checked and
   stored; the join checked against the state; one write). Figures: wall time on a fresh server,
   the process's peak RSS growth during the join (VmHWM after resetting it via
   /proc/self/clear_refs), and, on a second fresh server, the Python heap peak under
   tracemalloc.

Prints a table, then the JSON figures on the last line (ours, Synapse's, ratio).

Run: python bench/federation.py [--quick] [--rounds N] [--events N] [--state N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bastion.core.auth_rules import auth_types_for_event  # noqa: E402
from bastion.core.events import compute_event_id, compute_room_id_v12, sign_event  # noqa: E402
from bastion.core.x_matrix import authorization_header  # noqa: E402
from tests.support.federation import TestCA, https, run, start_fed_server  # noqa: E402
from tests.support.peer import FakePeer  # noqa: E402

V1 = "/_matrix/federation/v1"
TXN_SIZE = 50
LIMIT = {"per_second": 100000, "burst_count": 100000}
SYNAPSE_CONFIG = {
    "rc_message": LIMIT,
    "rc_registration": LIMIT,
    "rc_joins": {"local": LIMIT, "remote": LIMIT},
    "rc_joins_per_room": LIMIT,
    "rc_room_creation": LIMIT,
    "rc_federation": {"window_size": 1000, "sleep_limit": 100000, "sleep_delay": 1,
                      "reject_limit": 100000, "concurrent": 100},
    "allow_public_rooms_over_federation": True,
}  # fmt: skip


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class Target:
    """A server under test as the peer sees it: name, federation port, client base URL."""

    def __init__(self, label: str, name: str, fed_port: int, client_url: str) -> None:
        self.label, self.name, self.fed_port, self.client_url = label, name, fed_port, client_url
        self.room_id = ""
        self.state: dict = {}
        self.prev = ""
        self.depth = 0


def fed(ca: TestCA, peer: FakePeer, t: Target, method: str, path: str, body=None):
    auth = authorization_header(method, path, peer.server_name, t.name, peer.key_id, peer.key, body)
    return https(ca, t.fed_port, method, path, body, {"Authorization": auth})


def client(url: str, method: str, path: str, body=None, token: str | None = None):
    import urllib.request

    req = urllib.request.Request(url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)  # fmt: skip
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def public_room(t: Target) -> None:
    """A local user registers and creates a public v12 room."""
    name = "u" + uuid.uuid4().hex[:8]
    reg = client(t.client_url, "POST", "/_matrix/client/v3/register",
                 {"username": name, "password": "pw-123456789", "auth": {"type": "m.login.dummy"}})  # fmt: skip
    room = client(t.client_url, "POST", "/_matrix/client/v3/createRoom",
                  {"preset": "public_chat", "room_version": "12"}, reg["access_token"])  # fmt: skip
    t.room_id = room["room_id"]


def peer_join(ca: TestCA, peer: FakePeer, t: Target, user: str) -> None:
    """make_join / send_join (v2) of ``user`` into ``t.room_id``; records the state."""
    s, made = fed(ca, peer, t, "GET", f"{V1}/make_join/{q(t.room_id)}/{q(user)}?ver=12")
    assert s == 200, (t.label, s, made)
    template = {k: v for k, v in made["event"].items() if k not in ("signatures", "hashes")}
    template["origin_server_ts"] = int(time.time() * 1000)
    ev = sign_event(template, "12", peer.server_name, peer.key_id, peer.key)
    eid = compute_event_id(ev, "12")
    s, joined = fed(ca, peer, t, "PUT", f"/_matrix/federation/v2/send_join/{q(t.room_id)}/{q(eid)}",
                    ev)  # fmt: skip
    assert s == 200, (t.label, s, joined)
    state = {}
    for e in joined["state"]:
        if isinstance(e.get("state_key"), str):
            state[(e["type"], e["state_key"])] = compute_event_id(e, "12")
    state[("m.room.member", user)] = eid
    t.state, t.prev, t.depth = state, eid, ev["depth"]


def build_stream(peer: FakePeer, t: Target, user: str, n: int) -> list[dict]:
    probe = {"type": "m.room.message", "sender": user, "content": {}, "room_id": t.room_id}
    auth = [t.state[k] for k in auth_types_for_event(probe, "12") if k in t.state]
    out = []
    now = int(time.time() * 1000)
    for i in range(n):
        t.depth += 1
        eid, ev = peer.build("12", t.room_id, user, "m.room.message",
                             {"msgtype": "m.text", "body": f"message {i} {uuid.uuid4().hex}"},
                             prev_events=[t.prev], auth_events=auth, depth=t.depth, ts=now + i)  # fmt: skip
        peer.events.pop(eid, None)
        t.prev = eid
        out.append(ev)
    return out


def send_stream(ca: TestCA, peer: FakePeer, t: Target, events: list[dict]) -> float:
    """Seconds to push ``events`` in transactions of 50; every PDU must be accepted."""
    start = time.perf_counter()
    for i in range(0, len(events), TXN_SIZE):
        body = {"origin": peer.server_name, "origin_server_ts": int(time.time() * 1000),
                "pdus": events[i : i + TXN_SIZE]}  # fmt: skip
        s, resp = fed(ca, peer, t, "PUT", f"{V1}/send/{uuid.uuid4().hex}", body)
        if s != 200:
            raise RuntimeError(f"{t.label}: /send answered {s}: {resp}")
        errors = {k: v for k, v in resp.get("pdus", {}).items() if v}
        if errors:
            raise RuntimeError(f"{t.label}: PDUs refused: {list(errors.items())[:3]}")
    return time.perf_counter() - start


# -- the 10,000-state-event room ------------------------------------------------------------------
def big_room(peer: FakePeer, members: int):
    creator = peer.user("creator")
    ts = int(time.time() * 1000)
    create = sign_event({"type": "m.room.create", "state_key": "", "sender": creator,
                         "content": {"room_version": "12"}, "origin_server_ts": ts, "depth": 1,
                         "prev_events": [], "auth_events": []},
                        "12", peer.server_name, peer.key_id, peer.key)  # fmt: skip
    room_id = compute_room_id_v12(create)
    create_id = compute_event_id(create, "12")
    events = {create_id: create}
    state = {("m.room.create", ""): create_id}
    prev, depth = create_id, 1

    def add(etype, content, state_key, sender=creator):
        nonlocal prev, depth
        probe = {"type": etype, "sender": sender, "content": content, "room_id": room_id,
                 "state_key": state_key}  # fmt: skip
        auth = [state[k] for k in auth_types_for_event(probe, "12") if k in state]
        depth += 1
        eid, ev = peer.build("12", room_id, sender, etype, content, state_key,
                             prev_events=[prev], auth_events=auth, depth=depth, ts=ts + depth)  # fmt: skip
        peer.events.pop(eid, None)
        events[eid] = ev
        state[(etype, state_key)] = eid
        prev = eid

    add("m.room.member", {"membership": "join"}, creator)
    add("m.room.power_levels", {"users": {}, "users_default": 0}, "")
    add("m.room.join_rules", {"join_rule": "public"}, "")
    for i in range(members - 4):
        u = peer.user(f"m{i}")
        add("m.room.member", {"membership": "join", "displayname": f"member {i}"}, u, sender=u)
    return room_id, events, state, prev, depth


def vm(field: str) -> int:
    """A /proc/self/status figure in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def join_big_room(srv, room) -> dict:
    room_id, events, state, prev, depth = room
    user = f"@joiner:{srv.hs.server_name}"
    probe = {"type": "m.room.member", "sender": user, "content": {"membership": "join"},
             "room_id": room_id, "state_key": user}  # fmt: skip
    auth = [state[k] for k in auth_types_for_event(probe, "12") if k in state]
    sk = srv.hs.signing_key
    join = sign_event({**probe, "origin_server_ts": int(time.time() * 1000), "depth": depth + 1,
                       "prev_events": [prev], "auth_events": auth}, "12",
                      srv.hs.server_name, sk.key_id, sk.key)  # fmt: skip
    state_events = [events[e] for e in state.values()]
    return {"room_id": room_id, "join": join, "state": state_events, "chain": state_events}


def timed_join(srv, peer_name: str, j: dict, *, trace: bool) -> dict:
    ingest = srv.hs.federation.events.process_room_state(
        peer_name, j["room_id"], "12", j["state"], j["chain"], j["join"]
    )
    rss_before = vm("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    run(srv, ingest, timeout=600)
    seconds = time.perf_counter() - start
    out = {"seconds": seconds, "rss_before_mib": rss_before / 1024,
           "rss_peak_growth_mib": (vm("VmHWM") - rss_before) / 1024 if hwm_reset else None}  # fmt: skip
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["python_heap_peak_mib"] = peak / 2**20
    state_len = run(srv, _state_len(srv, j["room_id"]))
    assert state_len == len(j["state"]) + 1, state_len
    return out


async def _state_len(srv, room_id):
    return len(srv.hs.rooms.engine.head(room_id).state)


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer events and rounds, 2,000 state")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=1000, help="PDUs per round")
    ap.add_argument("--state", type=int, default=10_000, help="state events of the joined room")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.events, args.state = 2, 300, 2000
    args.events -= args.events % TXN_SIZE

    from tests.acceptance.test_synapse_peer import synapse_process

    tmp = Path(tempfile.mkdtemp(prefix="bench-federation-"))
    ca = TestCA(tmp / "ca")
    peer = FakePeer(ca, "bench-peer").start()
    # Rate limits lifted (the per-origin /send and event buckets), as Synapse's are.
    ours_srv = start_fed_server(tmp, ca, "bastion", guard={"rate_limits": {"enabled": False}})
    figures: dict = {"ours": {}, "synapse": {}, "ratio": {}}
    try:
        with synapse_process(tmp / "synapse", ca, SYNAPSE_CONFIG) as syn:
            ours = Target("bastion", ours_srv.hs.server_name, ours_srv.hs.federation_bound_port,
                          ours_srv.base_url)  # fmt: skip
            theirs = Target("synapse", syn["name"], syn["fed_port"], syn["client"])
            user = peer.user("streamer")
            for t in (ours, theirs):
                public_room(t)
                peer_join(ca, peer, t, user)
                send_stream(ca, peer, t, build_stream(peer, t, user, TXN_SIZE))  # warm-up
            rates: dict[str, list[float]] = {"bastion": [], "synapse": []}
            for r in range(args.rounds):
                for t in (ours, theirs) if r % 2 == 0 else (theirs, ours):
                    stream = build_stream(peer, t, user, args.events)
                    seconds = send_stream(ca, peer, t, stream)
                    rates[t.label].append(args.events / seconds)
                    print(f"  round {r + 1} {t.label:8} {args.events / seconds:8.1f} events/s",
                          file=sys.stderr)  # fmt: skip
        figures["ours"]["inbound_events_per_s"] = statistics.median(rates["bastion"])
        figures["synapse"]["inbound_events_per_s"] = statistics.median(rates["synapse"])
        figures["ratio"]["inbound_throughput"] = (
            figures["ours"]["inbound_events_per_s"] / figures["synapse"]["inbound_events_per_s"]
        )
        figures["rounds"], figures["events_per_round"] = args.rounds, args.events

        # The big join, on fresh servers (timed; then traced).
        t0 = time.perf_counter()
        room = big_room(peer, args.state)
        build_s = time.perf_counter() - t0
        print(f"  built a room of {args.state} state events in {build_s:.1f} s", file=sys.stderr)
        for label, trace in (("join", False), ("join_traced", True)):
            srv = start_fed_server(tmp, ca, f"joiner-{label}",
                                   guard={"rate_limits": {"enabled": False}})  # fmt: skip
            try:
                figures["ours"][label] = timed_join(srv, peer.server_name,
                                                    join_big_room(srv, room), trace=trace)  # fmt: skip
            finally:
                srv.stop()
        figures["state_events"] = args.state
    finally:
        ours_srv.stop()
        peer.stop()

    o, s = figures["ours"], figures["synapse"]
    rows = [
        ("inbound PDUs (50/txn), events/s", f"{o['inbound_events_per_s']:.1f}",
         f"{s['inbound_events_per_s']:.1f}", f"{figures['ratio']['inbound_throughput']:.2f}x"),
        (f"join, {args.state} state events: time", f"{o['join']['seconds']:.2f} s", "-", "-"),
        ("join: peak RSS growth", f"{o['join']['rss_peak_growth_mib'] or 0:.1f} MiB", "-", "-"),
        ("join: Python heap peak (tracemalloc)",
         f"{o['join_traced']['python_heap_peak_mib']:.1f} MiB", "-", "-"),
    ]  # fmt: skip
    print(f"{'figure':42} {'Bastion':>12} {'Synapse':>12} {'ratio':>8}")
    for name, a, b, c in rows:
        print(f"{name:42} {a:>12} {b:>12} {c:>8}")
    figures["goals"] = {
        "inbound_2x_synapse": figures["ratio"]["inbound_throughput"] >= 2,
        "join_under_30s": o["join"]["seconds"] < 30,
    }
    print(json.dumps(figures, sort_keys=True))
    os._exit(0)  # the in-process servers' threads are daemons; do not wait on them


if __name__ == "__main__":
    main()
