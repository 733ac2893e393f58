"""Outbound federation and out-of-room memberships (S-S API "Transactions", "Inviting to a
room", "Leaving Rooms (Rejecting Invites)", "Knocking upon a room").

* ``federation_outbound_pdus`` / ``federation_outbound_edus``: the per-destination queue of
  what we still have to send. PDUs are queued in the write that persists the event, so an event
  acknowledged to a client is never lost; rows are deleted once the destination answered 200.
  An EDU with a key (e.g. typing in one room) replaces an older unsent EDU with the same key.
* ``federation_destinations``: the back-off state of each destination, kept across restarts.
* ``out_of_room_memberships``: memberships of local users in rooms this server is not in — an
  invite received over federation, a knock we sent, the leave that rejected an invite or
  retracted a knock. They are also recorded in ``membership_events``/``current_membership`` so
  that /sync shows them, and carry the stripped state clients see with them.
"""

from __future__ import annotations

import sqlite3

import orjson

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = [("out_of_room_memberships", "stream_pos")]

#: At most this many PDUs and EDUs per transaction (S-S API "Transactions").
MAX_PDUS = 50
MAX_EDUS = 100


class FederationQueueStore(StoreBase):
    # -- the outbound queue --------------------------------------------------------------------
    def enqueue_pdu_in(
        self, conn: sqlite3.Connection, destinations: list[str], event_id: str, pdu: dict
    ) -> None:
        data = orjson.dumps(pdu)
        conn.executemany(
            "INSERT INTO federation_outbound_pdus (destination, event_id, pdu) VALUES (?,?,?)",
            [(d, event_id, data) for d in destinations],
        )

    def enqueue_edu_in(
        self, conn: sqlite3.Connection, destination: str, edu_type: str, content: dict,
        key: str | None,
    ) -> None:  # fmt: skip
        if key is not None:
            conn.execute(
                "DELETE FROM federation_outbound_edus WHERE destination = ? AND edu_type = ?"
                " AND edu_key = ?",
                (destination, edu_type, key),
            )
        conn.execute(
            "INSERT INTO federation_outbound_edus (destination, edu_type, edu_key, content)"
            " VALUES (?,?,?,?)",
            (destination, edu_type, key, orjson.dumps(content)),
        )

    def next_outbound_batch(
        self, destination: str
    ) -> tuple[list[tuple[int, dict]], list[tuple[int, dict]]]:
        """The oldest queued PDUs (at most 50) and EDUs (at most 100) for ``destination``, as
        (row id, PDU) and (row id, {edu_type, content})."""
        pdus = [
            (r[0], orjson.loads(r[1]))
            for r in self.db.read(
                "SELECT id, pdu FROM federation_outbound_pdus WHERE destination = ?"
                " ORDER BY id LIMIT ?",
                (destination, MAX_PDUS),
            )
        ]
        edus = [
            (r[0], {"edu_type": r[1], "content": orjson.loads(r[2])})
            for r in self.db.read(
                "SELECT id, edu_type, content FROM federation_outbound_edus WHERE destination = ?"
                " ORDER BY id LIMIT ?",
                (destination, MAX_EDUS),
            )
        ]
        return pdus, edus

    def delete_outbound_in(
        self, conn: sqlite3.Connection, pdu_ids: list[int], edu_ids: list[int]
    ) -> None:
        conn.executemany(
            "DELETE FROM federation_outbound_pdus WHERE id = ?", [(i,) for i in pdu_ids]
        )
        conn.executemany(
            "DELETE FROM federation_outbound_edus WHERE id = ?", [(i,) for i in edu_ids]
        )

    def queued_destinations(self) -> list[str]:
        return [
            r[0]
            for r in self.db.read(
                "SELECT destination FROM federation_outbound_pdus UNION"
                " SELECT destination FROM federation_outbound_edus"
            )
        ]

    def queue_length(self, destination: str) -> int:
        row = self.db.read_one(
            "SELECT (SELECT COUNT(*) FROM federation_outbound_pdus WHERE destination = ?)"
            " + (SELECT COUNT(*) FROM federation_outbound_edus WHERE destination = ?)",
            (destination, destination),
        )
        return row[0] if row else 0

    # -- back-off --------------------------------------------------------------------------------
    def get_destination_retry(self, destination: str) -> tuple[int, int, int]:
        """(failures, retry_interval_ms, retry_at_ms) of a destination (zeros: healthy)."""
        row = self.db.read_one(
            "SELECT failures, retry_interval_ms, retry_at_ms FROM federation_destinations"
            " WHERE destination = ?",
            (destination,),
        )
        return (row[0], row[1], row[2]) if row else (0, 0, 0)

    def set_destination_retry_in(
        self, conn: sqlite3.Connection, destination: str, failures: int, interval_ms: int,
        retry_at_ms: int,
    ) -> None:  # fmt: skip
        if failures == 0:
            conn.execute(
                "DELETE FROM federation_destinations WHERE destination = ?", (destination,)
            )
            return
        conn.execute(
            "INSERT INTO federation_destinations (destination, failures, retry_interval_ms,"
            " retry_at_ms) VALUES (?,?,?,?) ON CONFLICT (destination) DO UPDATE SET"
            " failures = excluded.failures, retry_interval_ms = excluded.retry_interval_ms,"
            " retry_at_ms = excluded.retry_at_ms",
            (destination, failures, interval_ms, retry_at_ms),
        )

    # -- servers in rooms ------------------------------------------------------------------------
    #: The server names of a room's joined members, found by SQLite (a big room's members are
    #: never turned into Python rows on every event): as ``server_name_of``, what follows the
    #: first ``:`` ('' for an ID without one).
    _JOINED_SERVERS = (
        "SELECT DISTINCT CASE WHEN instr(user_id, ':') > 0"
        " THEN substr(user_id, instr(user_id, ':') + 1) ELSE '' END"
        " FROM current_membership WHERE room_id = ? AND membership = 'join'"
    )

    def joined_servers_in(self, conn: sqlite3.Connection, room_id: str) -> set[str]:
        """The servers with a joined member in the room (on the writer's connection)."""
        return {r[0] for r in conn.execute(self._JOINED_SERVERS, (room_id,))}

    def joined_servers(self, room_id: str) -> set[str]:
        return {r[0] for r in self.db.read(self._JOINED_SERVERS, (room_id,))}

    # -- gaps in a room's history ------------------------------------------------------------
    def backward_extremities(self, room_id: str, limit: int = 20) -> list[str]:
        """Prev events of the room's timeline events that we do not hold, or hold only as
        outliers (S-S API "Backfilling": where to backfill from)."""
        return [
            r[0]
            for r in self.db.read(
                "SELECT DISTINCT ee.prev_event_id FROM events e"
                " JOIN event_edges ee ON ee.event_id = e.event_id"
                " LEFT JOIN events p ON p.event_id = ee.prev_event_id"
                " WHERE e.room_id = ? AND e.rejected = 0 AND e.soft_failed = 0"
                " AND (p.event_id IS NULL OR p.soft_failed = 2) LIMIT ?",
                (room_id, limit),
            )
        ]

    # -- out-of-room memberships -----------------------------------------------------------------
    def store_out_of_room_membership_in(
        self, conn: sqlite3.Connection, event: dict, event_id: str, room_id: str,
        room_version: str, stripped_state: list[dict],
    ) -> int:  # fmt: skip
        """Record a local user's membership in a room we are not in (an invite received over
        federation, our knock, or the leave that rejected an invite/retracted a knock). Returns
        its stream position; wakes the user's /sync."""
        user_id = event["state_key"]
        membership = event["content"]["membership"]
        pos = self.next_stream_pos(conn)
        conn.execute(
            "INSERT OR REPLACE INTO out_of_room_memberships (event_id, room_id, user_id,"
            " membership, room_version, stream_pos, event, stripped_state)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (event_id, room_id, user_id, membership, room_version, pos, orjson.dumps(event),
             orjson.dumps(stripped_state)),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO membership_events (room_id, user_id, membership, event_id,"
            " stream_pos, sender) VALUES (?,?,?,?,?,?)",
            (room_id, user_id, membership, event_id, pos, event["sender"]),
        )
        conn.execute(
            "INSERT OR REPLACE INTO current_membership (room_id, user_id, membership,"
            " event_id, stream_pos, forgotten) VALUES (?,?,?,?,?,0)",
            (room_id, user_id, membership, event_id, pos),
        )
        self.wake(user_id)
        return pos

    def get_out_of_room_membership(self, event_id: str) -> sqlite3.Row | None:
        """The row of an out-of-room membership event: event (JSON), stripped_state (JSON),
        room_id, user_id, membership, room_version, stream_pos."""
        return self.db.read_one(
            "SELECT * FROM out_of_room_memberships WHERE event_id = ?", (event_id,)
        )

    def get_latest_out_of_room_membership(self, room_id: str, user_id: str) -> sqlite3.Row | None:
        return self.db.read_one(
            "SELECT * FROM out_of_room_memberships WHERE room_id = ? AND user_id = ?"
            " ORDER BY stream_pos DESC LIMIT 1",
            (room_id, user_id),
        )
