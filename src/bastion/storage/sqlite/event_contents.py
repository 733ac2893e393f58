"""Removing what people wrote while keeping the room graph (issue 10: erasure and retention).

:meth:`EventContentsStore.strip_event_contents_in` rewrites stored events to the form the
redaction algorithm of their room version leaves (C-S API "Redactions"; room versions'
"Redactions" sections): the content keys a room needs (membership, power levels, join rules,
...) stay, everything a person wrote goes. The redacted form keeps the event's ID, its
content hash (``hashes`` is kept by the algorithm) and its signatures (they are computed over
the redacted form), so the room's graph, its auth chains and every signature still verify.

The copies of the same events waiting to be sent to other servers
(``federation_outbound_pdus``) are rewritten too: a peer that has not received the event yet
receives the redacted form (which it accepts: S-S API "Checks performed on receipt of a PDU",
a content hash that does not match means the event is redacted before it is processed).

Nothing else here decides *which* events: the callers (the erasure and retention services)
do, and they record what they stripped in the ledger in the same transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

import orjson

from bastion.core.events import redact
from bastion.storage.sqlite.base import StoreBase
from bastion.storage.sqlite.relations import unindex_relations_in
from bastion.storage.sqlite.search import unindex_search_in

STREAMS: list[tuple[str, str]] = []

#: Events read and rewritten per statement.
_CHUNK = 500


class EventContentsStore(StoreBase):
    #: (:meth:`bastion.storage.sqlite.rooms.RoomsStore.events_rewritten_in`, beside it in the
    #: store)
    events_rewritten_in: Callable[[sqlite3.Connection], None]

    def strip_event_contents_in(
        self, conn: sqlite3.Connection, event_ids: Sequence[str]
    ) -> list[str]:
        """Inside a write: rewrite each of ``event_ids`` (that is stored and not stripped
        already) to its redacted form, in ``events`` and in the outbound federation queue;
        the IDs whose stored JSON changed, in the order given. Unknown IDs are skipped.

        The parsed-row caches are dropped after the commit (:meth:`events_rewritten_in`).
        A rejected event is stripped too: its content is as personal as any other."""
        ids = list(dict.fromkeys(event_ids))
        changed: list[str] = []
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                "SELECT e.event_id, e.json, r.room_version FROM events e"
                " JOIN rooms r ON r.room_id = e.room_id"
                f" WHERE e.event_id IN ({marks})",  # noqa: S608
                chunk,
            ).fetchall()
            by_id = {r[0]: (r[1], r[2]) for r in rows}
            for eid in chunk:
                found = by_id.get(eid)
                if found is None:
                    continue
                raw, room_version = found
                event = orjson.loads(raw)
                stripped = redact(event, room_version)
                # (redaction drops `unsigned`; a redaction the room already applied keeps its
                # `redacted_because`, which names the redaction event, not what was written)
                unsigned = event.get("unsigned")
                if isinstance(unsigned, dict) and "redacted_because" in unsigned:
                    stripped["unsigned"] = {"redacted_because": unsigned["redacted_because"]}
                if stripped == event:
                    continue
                data = orjson.dumps(stripped)
                conn.execute("UPDATE events SET json = ? WHERE event_id = ?", (data, eid))
                conn.execute(
                    "UPDATE federation_outbound_pdus SET pdu = ? WHERE event_id = ?",
                    (orjson.dumps(_outbound(stripped)), eid),
                )
                changed.append(eid)
        if changed:
            unindex_relations_in(conn, changed)  # (the redacted form has no m.relates_to)
            unindex_search_in(conn, changed)  # (nor any searchable text)
            self.events_rewritten_in(conn)
        return [eid for eid in ids if eid in set(changed)]


def _outbound(event: dict) -> dict:
    """The PDU as queued for federation: without ``unsigned`` (never sent over federation by
    this server)."""
    return {k: v for k, v in event.items() if k != "unsigned"}
