"""Per-user data outside the room DAG: filters (C-S API "Filtering"), account data ("Client
Config"), receipts ("Receipts"), push rules ("Push Rules"), presence ("Presence") and content
reports ("Reporting content").

Account data, receipts, push-rule changes and presence changes carry global stream positions, so
/sync finds "what changed since" with one indexed range query each.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import orjson

from bastion.storage.sqlite.base import StoreBase
from bastion.storage.sqlite.rooms import rooms_with_rows

STREAMS: list[tuple[str, str]] = [
    ("account_data", "stream_pos"),
    ("receipts", "stream_pos"),
    ("push_rules", "stream_pos"),
    ("presence", "stream_pos"),
]


class AccountDataStore(StoreBase):
    # -- filters ----------------------------------------------------------------------------
    async def add_filter(self, user_id: str, filter_json: str) -> str:
        """Store a filter (canonical JSON text) and return its ID; an identical filter of the
        same user keeps its ID."""

        def fn(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT filter_id FROM user_filters WHERE user_id = ? AND filter_json = ?",
                (user_id, filter_json),
            ).fetchone()
            if row is not None:
                return str(row[0])
            row = conn.execute(
                "SELECT COALESCE(MAX(filter_id), -1) + 1 FROM user_filters WHERE user_id = ?",
                (user_id,),
            ).fetchone()
            conn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?,?,?)",
                (user_id, row[0], filter_json),
            )
            return str(row[0])

        return await self.db.write(fn)

    def get_filter(self, user_id: str, filter_id: str) -> str | None:
        if not filter_id.isdigit() or len(filter_id) > 18:
            return None
        row = self.db.read_one(
            "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
            (user_id, int(filter_id)),
        )
        return row[0] if row else None

    # -- account data -----------------------------------------------------------------------
    def set_account_data_in(
        self, conn: sqlite3.Connection, user_id: str, room_id: str, data_type: str, content: str
    ) -> int:
        """Write one account-data entry (room_id '' for global) inside a write function; wakes
        the user's sync. Returns its stream position."""
        pos = self.next_stream_pos(conn)
        conn.execute(
            "INSERT INTO account_data (user_id, room_id, type, content, stream_pos)"
            " VALUES (?,?,?,?,?) ON CONFLICT (user_id, room_id, type)"
            " DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos",
            (user_id, room_id, data_type, content, pos),
        )
        self.wake(user_id)
        return pos

    async def set_account_data(
        self, user_id: str, room_id: str, data_type: str, content: str
    ) -> int:
        return await self.db.write(
            lambda conn: self.set_account_data_in(conn, user_id, room_id, data_type, content)
        )

    def get_account_data_in(
        self, conn: sqlite3.Connection, user_id: str, room_id: str, data_type: str
    ) -> str | None:
        """One account-data entry (room_id '' for global) inside a write function, for a
        read-modify-write in one transaction (room tags)."""
        row = conn.execute(
            "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
            (user_id, room_id, data_type),
        ).fetchone()
        return row[0] if row else None

    def get_account_data(self, user_id: str, room_id: str, data_type: str) -> str | None:
        row = self.db.read_one(
            "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
            (user_id, room_id, data_type),
        )
        return row[0] if row else None

    def account_data_changes(
        self, user_id: str, room_id: str, since: int | None, upto: int
    ) -> list[sqlite3.Row]:
        """(type, content) of one user's account data for one room ('' for global) changed in
        ``(since, upto]`` (all if since is None), in stream order."""
        return self.db.read(
            "SELECT type, content FROM account_data WHERE user_id = ? AND room_id = ?"
            " AND stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos",
            (user_id, room_id, -1 if since is None else since, upto),
        )

    def account_data_rooms_changed(self, user_id: str, since: int, upto: int) -> set[str]:
        """The rooms whose account data of ``user_id`` changed in ``(since, upto]``."""
        return {
            r[0]
            for r in self.db.read(
                "SELECT DISTINCT room_id FROM account_data WHERE user_id = ? AND stream_pos > ?"
                " AND stream_pos <= ? AND room_id != ''",
                (user_id, since, upto),
            )
        }

    # -- receipts ---------------------------------------------------------------------------
    def set_receipt_in(
        self, conn: sqlite3.Connection, room_id: str, receipt_type: str, user_id: str,
        thread_id: str, event_id: str, ts: int,
    ) -> int:  # fmt: skip
        pos = self.next_stream_pos(conn)
        conn.execute(
            "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts,"
            " stream_pos) VALUES (?,?,?,?,?,?,?)"
            " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
            " event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos",
            (room_id, receipt_type, user_id, thread_id, event_id, ts, pos),
        )
        # Private receipts concern only their owner.
        if receipt_type == "m.read.private":
            self.wake(user_id)
        else:
            self.wake(room_id)
        return pos

    def receipts_for_room(self, room_id: str, since: int | None, upto: int) -> list[sqlite3.Row]:
        return self.db.read(
            "SELECT receipt_type, user_id, thread_id, event_id, ts FROM receipts"
            " WHERE room_id = ? AND stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos",
            (room_id, -1 if since is None else since, upto),
        )

    def receipts_for_events(
        self, room_id: str, event_ids: Iterable[str], user_id: str, upto: int
    ) -> list[sqlite3.Row]:
        """The receipts of ``room_id`` up to ``upto`` that are on one of ``event_ids`` or are
        ``user_id``'s own, in stream order."""
        return self.db.read(
            "SELECT receipt_type, user_id, thread_id, event_id, ts FROM receipts"
            " WHERE room_id = ? AND stream_pos <= ?"
            " AND (user_id = ? OR event_id IN (SELECT value FROM json_each(?)))"
            " ORDER BY stream_pos",
            (room_id, upto, user_id, orjson.dumps(sorted(set(event_ids))).decode()),
        )

    def receipt_rooms_changed(self, room_ids, since: int, upto: int) -> set[str]:
        """Those of ``room_ids`` with a receipt changed in ``(since, upto]``."""
        return rooms_with_rows(self.db, "receipts", room_ids, since, upto)

    # -- push rules -------------------------------------------------------------------------
    def get_push_rules_doc(self, user_id: str) -> str | None:
        row = self.db.read_one("SELECT rules_json FROM push_rules WHERE user_id = ?", (user_id,))
        return row[0] if row else None

    @staticmethod
    def get_push_rules_doc_in(conn: sqlite3.Connection, user_id: str) -> str | None:
        row = conn.execute(
            "SELECT rules_json FROM push_rules WHERE user_id = ?", (user_id,)
        ).fetchone()
        return row[0] if row else None

    def put_push_rules_doc_in(self, conn: sqlite3.Connection, user_id: str, doc: str) -> int:
        pos = self.next_stream_pos(conn)
        conn.execute(
            "INSERT INTO push_rules (user_id, rules_json, stream_pos) VALUES (?,?,?)"
            " ON CONFLICT (user_id) DO UPDATE SET rules_json = excluded.rules_json,"
            " stream_pos = excluded.stream_pos",
            (user_id, doc, pos),
        )
        self.wake(user_id)
        return pos

    def push_rules_changed(self, user_id: str, since: int, upto: int) -> bool:
        row = self.db.read_one(
            "SELECT 1 FROM push_rules WHERE user_id = ? AND stream_pos > ? AND stream_pos <= ?",
            (user_id, since, upto),
        )
        return row is not None

    # -- presence ---------------------------------------------------------------------------
    def load_presence(self) -> list[sqlite3.Row]:
        return self.db.read(
            "SELECT user_id, state, status_msg, last_active_ts, stream_pos FROM presence"
        )

    def set_presence_in(
        self, conn: sqlite3.Connection, user_id: str, state: str, status_msg: str | None,
        last_active_ts: int, wake: Iterable[str],
    ) -> int:  # fmt: skip
        pos = self.next_stream_pos(conn)
        conn.execute(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos)"
            " VALUES (?,?,?,?,?) ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,"
            " status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,"
            " stream_pos = excluded.stream_pos",
            (user_id, state, status_msg, last_active_ts, pos),
        )
        self.wake(user_id, *wake)
        return pos

    def presence_changes(
        self, user_ids: Iterable[str], since: int | None, upto: int
    ) -> list[sqlite3.Row]:
        """The presence rows of ``user_ids`` changed in ``(since, upto]`` (every row when
        ``since`` is None)."""
        cols = "SELECT user_id, state, status_msg, last_active_ts FROM presence"
        wanted = user_ids if isinstance(user_ids, (set, frozenset, dict)) else set(user_ids)
        if since is None:
            # Every row up to ``upto``: read them all when there are not many more rows than
            # users asked (rows are upserted in place, so the highest rowid bounds their number).
            top = self.db.read_one("SELECT MAX(rowid) FROM presence")
            whole = top is None or top[0] is None or top[0] <= 2 * len(wanted) + 64
        if since is not None or whole:
            # An incremental sync: the few rows of the range (indexed), then the users asked.
            return [
                r
                for r in self.db.read(
                    f"{cols} WHERE stream_pos > ? AND stream_pos <= ?",  # noqa: S608
                    (-1 if since is None else since, upto),
                )
                if r[0] in wanted
            ]
        ids = list(wanted)
        out: list[sqlite3.Row] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.extend(
                self.db.read(
                    f"{cols} WHERE user_id IN ({marks}) AND stream_pos > ? AND stream_pos <= ?",  # noqa: S608
                    (*chunk, -1, upto),
                )
            )
        return out

    # -- content reports --------------------------------------------------------------------
    @staticmethod
    def add_content_report_in(
        conn: sqlite3.Connection, reporter: str, kind: str, room_id: str | None,
        event_id: str | None, target_user_id: str | None, reason: str | None,
        target_exists: bool, now_ms: int,
    ) -> int:  # fmt: skip
        """Store a report inside a write function (with what else the caller writes); its ID."""
        cur = conn.execute(
            "INSERT INTO content_reports (ts, reporter, kind, room_id, event_id,"
            " target_user_id, reason, target_exists) VALUES (?,?,?,?,?,?,?,?)",
            (now_ms, reporter, kind, room_id, event_id, target_user_id, reason,
             int(target_exists)),
        )  # fmt: skip
        if cur.lastrowid is None:  # never after an INSERT
            raise RuntimeError("the report was not stored")
        return cur.lastrowid

    async def add_content_report(
        self, reporter: str, kind: str, room_id: str | None, event_id: str | None,
        target_user_id: str | None, reason: str | None, target_exists: bool, now_ms: int,
    ) -> int:  # fmt: skip
        return await self.db.write(
            lambda conn: self.add_content_report_in(
                conn,
                reporter,
                kind,
                room_id,
                event_id,
                target_user_id,
                reason,
                target_exists,
                now_ms,
            )  # fmt: skip
        )

    def content_reports(self, limit: int = 100, offset: int = 0) -> list[sqlite3.Row]:
        return self.db.read(
            "SELECT * FROM content_reports ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)
        )
