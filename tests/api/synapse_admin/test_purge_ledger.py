"""A room purged through ``DELETE /_synapse/admin/v1/rooms/{roomId}`` leaves the ledger
verifiable: the ``room.purge`` records list every event removed with the room, so ``bastion
ledger verify`` accepts their missing rows, and still reports an event row deleted without
such a record."""

from __future__ import annotations

import sqlite3

from bastion.ledger.verify import DELETED, LocalOptions, verify_local
from tests.support.accounts import make_user
from tests.support.harness import Client, ServerThread


def _verify(data_dir):
    opts = LocalOptions(
        data_dir=data_dir, database=data_dir / "homeserver.db", server_name="localhost",
        signing_key_path=data_dir / "signing.key", workers=1,
    )  # fmt: skip
    return verify_local(opts)


def test_verify_accepts_a_purged_room_and_only_it(tmp_path):
    data = tmp_path / "data"
    srv = ServerThread(data).start()
    try:
        admin = make_user(srv, "admin", admin=True)
        alice = Client(srv.base_url).register("alice")
        rooms = []
        for name in ("purged", "kept"):
            rid = alice.request("POST", "/_matrix/client/v3/createRoom", {"name": name})
            rooms.append(rid.body["room_id"])
            r = alice.request("PUT", f"/_matrix/client/v3/rooms/{rooms[-1]}/send/m.room.message/1",
                              {"msgtype": "m.text", "body": name})  # fmt: skip
            assert r.status == 200
        r = admin.request("DELETE", f"/_synapse/admin/v1/rooms/{rooms[0]}", {"purge": True})
        assert r.status == 200, r.body
    finally:
        srv.stop()
    report = _verify(data)
    assert report.ok, [f.line() for f in report.findings]
    assert report.stats["events_purged_by_records"] > 0
    # An event of the other room deleted without a record is still found.
    conn = sqlite3.connect(str(data / "homeserver.db"))
    with conn:
        conn.execute(
            "DELETE FROM events WHERE room_id = ? AND type = 'm.room.message'", (rooms[1],)
        )
    conn.close()
    report = _verify(data)
    assert [f.kind for f in report.findings] == [DELETED]
