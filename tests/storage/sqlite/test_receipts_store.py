"""Receipts in the SQLite store (storage/sqlite/account_data.py): the receipts on given events
and a user's own, as of a stream position (sliding sync's receipts for a room new to a
connection)."""

from __future__ import annotations

from bastion.storage.sqlite.store import SqliteStore


def test_receipts_for_events_and_own(tmp_path):
    store = SqliteStore(tmp_path / "h.db")
    store.open()
    try:

        def put(room, rtype, user, event):
            return store.transaction_sync(
                lambda conn: store.set_receipt_in(conn, room, rtype, user, "", event, 1)
            )

        put("!r", "m.read", "@a:x", "$old")
        put("!r", "m.read", "@b:x", "$old")
        put("!r", "m.read.private", "@c:x", "$new")
        put("!other", "m.read", "@d:x", "$new")
        upto = put("!r", "m.read", "@e:x", "$new")
        later = put("!r", "m.read", "@f:x", "$new")

        def got(event_ids, user, pos):
            rows = store.receipts_for_events("!r", event_ids, user, pos)
            return sorted((r["user_id"], r["receipt_type"], r["event_id"]) for r in rows)

        assert got(["$new"], "@a:x", upto) == [
            ("@a:x", "m.read", "$old"),  # the user's own, on any event
            ("@c:x", "m.read.private", "$new"),  # left to the service to hide
            ("@e:x", "m.read", "$new"),
        ]
        assert got([], "@z:x", later) == []
        assert ("@f:x", "m.read", "$new") in got(["$new"], "@z:x", later)
    finally:
        store.close()
