"""A remote invite never holds the room's lock across the network (issue 7, defect 3): while the
invitee's server takes its time to countersign (S-S API "Inviting to a room", PUT /v2/invite),
the room's other members send and receive with normal latency, local and remote alike. The
invite is then persisted on the room's new head (rebuilt and countersigned again, since the room
moved meanwhile)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from bastion.core.events import sign_event
from tests.support.federation import start_fed_server
from tests.support.harness import Client
from tests.support.peer import FakePeer, on_server
from tests.support.rooms import create_room, join, send, sync

V3 = "/_matrix/client/v3"
#: How long the invitee's server would take at most; the test releases it once it has measured.
SLOW_S = 30.0
#: Normal latency for a send or a sync while the invite is pending.
FAST_S = 2.0


def test_slow_invitee_server_does_not_block_the_room(tmp_path, test_ca):
    srv = start_fed_server(tmp_path, test_ca, "bastion", registration="open")
    peer = FakePeer(test_ca, "slow-peer").start()
    release = threading.Event()
    invites: list[dict] = []

    async def slow_invite(body: dict):
        invites.append(body)
        deadline = time.monotonic() + SLOW_S
        while not release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        signed = sign_event(body["event"], body["room_version"], peer.server_name, peer.key_id,
                            peer.key)  # fmt: skip
        return 200, {"event": signed}

    peer.invite_handler = slow_invite
    try:
        admin = Client(srv.base_url).register("admin")
        bob = Client(srv.base_url).register("bob")
        room_id = create_room(admin, room_version="10")
        join(bob, room_id)
        peer.join(srv, room_id, peer.user("p1"))
        since = sync(admin)["next_batch"]
        guest = peer.user("guest")
        result: dict = {}

        def invite() -> None:
            result["r"] = admin.request(
                "POST", f"{V3}/rooms/{room_id}/invite", {"user_id": guest}, timeout=120
            )

        inviting = threading.Thread(target=invite)
        inviting.start()
        deadline = time.monotonic() + 10
        while not invites and time.monotonic() < deadline:
            time.sleep(0.02)
        assert invites, "the invitee's server was never asked"
        try:
            for i in range(3):
                t0 = time.monotonic()
                eid = send(bob, room_id, f"while the invite is pending {i}")
                sent = time.monotonic() - t0
                got = sync(admin, since)
                received = time.monotonic() - t0
                since = got["next_batch"]
                timeline = got["rooms"]["join"][room_id]["timeline"]["events"]
                assert eid in [e["event_id"] for e in timeline]
                assert sent < FAST_S and received < FAST_S, (sent, received)
                # A remote member's transaction is processed meanwhile too.
                t0 = time.monotonic()
                reid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                                         {"msgtype": "m.text", "body": f"remote {i}"})  # fmt: skip
                status, body = peer.send(srv, uuid.uuid4().hex, [ev])
                assert (status, body) == (200, {"pdus": {reid: {}}})
                assert time.monotonic() - t0 < FAST_S
            assert inviting.is_alive()  # the invite is still waiting for its countersignature
        finally:
            release.set()
            inviting.join(60)
        r = result["r"]
        assert r.status == 200, r.body
        # The room moved while the first invite was out: it was rebuilt on the new head.
        assert len(invites) == 2
        assert on_server(srv, lambda: srv.hs.rooms.membership_of(room_id, guest)) == "invite"
        head = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id))
        member = head.state[("m.room.member", guest)]
        stored = on_server(srv, lambda: srv.hs.store.get_event(member))
        assert peer.server_name in stored["signatures"]
        assert head.extremities == [member]
    finally:
        peer.stop()
        srv.stop()
