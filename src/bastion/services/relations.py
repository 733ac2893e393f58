"""Reading event relationships (C-S API "Relationships": "Relations API"; "Threading":
"Fetching all threads in a room"), with read access and history visibility applied as for
every other read (:mod:`bastion.services.room_access`): the parent must be an event the
requester may see, and only the children (or thread roots) they may see are listed.

Pagination is by stream position, in the token grammar of /messages and /sync: going
backwards a position ``p`` names the events at or below it, going forwards those above it, so
a /messages ``start`` or a /sync ``next_batch`` works as ``from`` too (as the spec allows).
"""

from __future__ import annotations

from bastion.core.relations import MAX_RECURSION_DEPTH
from bastion.errors import MatrixError, not_found
from bastion.services.room_access import RoomAccess
from bastion.storage.interface import EventRow, Store

#: Store reads per page at most: a page of events the requester may not see ends early, with
#: a ``next_batch`` to continue from.
_ROUNDS = 8


class RelationsReader:
    """``hs.relations``: the relations of an event and the threads of a room."""

    def __init__(self, store: Store, access: RoomAccess) -> None:
        self.store = store
        self.access = access

    def visible_parent(
        self, user_id: str, room_id: str, event_id: str
    ) -> tuple[EventRow, int | None]:
        """The event ``event_id`` of ``room_id`` and the requester's read cap, or 404
        ``M_NOT_FOUND`` when it is unknown, elsewhere, or not visible to them (nothing tells
        the two apart)."""
        try:
            cap = self.access.read_access(user_id, room_id)
        except MatrixError:
            raise not_found("event not found") from None
        row = self.store.get_event_row(event_id, served=True)
        if (
            row is None
            or row.room_id != room_id
            or (cap is not None and row.stream_pos > cap)
            or not self.access.filter_visible(user_id, [row])
        ):
            raise not_found("event not found")
        return row, cap

    def relations(
        self, user_id: str, room_id: str, event_id: str, *, rel_type: str | None,
        event_type: str | None, from_pos: int | None, to_pos: int | None, backwards: bool,
        limit: int, recurse: bool,
    ) -> tuple[list[EventRow], int | None]:  # fmt: skip
        """The events relating to ``event_id`` (directly, or up to
        :data:`MAX_RECURSION_DEPTH` steps with ``recurse``) that the requester may see, in
        stream order (newest first when ``backwards``), at most ``limit``; and the position to
        continue from (None at the end)."""
        _, cap = self.visible_parent(user_id, room_id, event_id)
        lower, upper = (to_pos, from_pos) if backwards else (from_pos, to_pos)
        if cap is not None:
            upper = cap if upper is None else min(upper, cap)
        out: list[EventRow] = []
        for _ in range(_ROUNDS):
            if lower is not None and upper is not None and upper <= lower:
                return out, None
            batch = max(2 * (limit - len(out)), 20)
            if recurse:
                found = self.store.relation_descendants(
                    room_id, event_id, MAX_RECURSION_DEPTH, rel_type=rel_type,
                    event_type=event_type, after=lower, upto=upper, backwards=backwards,
                    limit=batch,
                )  # fmt: skip
            else:
                found = self.store.relation_children(
                    room_id, [event_id], rel_type=rel_type, event_type=event_type, after=lower,
                    upto=upper, backwards=backwards, limit=batch,
                )  # fmt: skip
            rows = self.store.get_event_rows([eid for eid, _ in found])
            candidates = [rows[eid] for eid, _ in found if eid in rows]
            visible = {r.event_id for r in self.access.filter_visible(user_id, candidates)}
            for eid, pos in found:
                if backwards:
                    upper = pos - 1
                else:
                    lower = pos
                if eid in visible:
                    out.append(rows[eid])
                    if len(out) >= limit:
                        return out, (upper if backwards else lower)
            if len(found) < batch:
                return out, None
        return out, (upper if backwards else lower)

    def threads(
        self, user_id: str, room_id: str, *, participated: bool, from_pos: int | None, limit: int
    ) -> tuple[list[EventRow], int | None]:
        """The thread roots of ``room_id`` the requester may see, the latest active first (by
        the position of the thread's latest reply they may see), at most ``limit``; and the
        position to continue from (None at the end). 403 when they may not read the room."""
        cap = self.access.read_access(user_id, room_id)
        upto = from_pos
        out: list[EventRow] = []
        for _ in range(_ROUNDS):
            batch = max(2 * (limit - len(out)), 20)
            found = self.store.thread_roots(
                room_id, upto=upto, cap=cap, participant=user_id if participated else None,
                limit=batch,
            )  # fmt: skip
            rows = self.store.get_event_rows([eid for eid, _ in found])
            candidates = [
                rows[eid]
                for eid, _ in found
                if eid in rows and (cap is None or rows[eid].stream_pos <= cap)
            ]
            visible = {r.event_id for r in self.access.filter_visible(user_id, candidates)}
            for eid, latest in found:
                upto = latest - 1
                if eid in visible:
                    out.append(rows[eid])
                    if len(out) >= limit:
                        return out, upto
            if len(found) < batch:
                return out, None
        return out, upto
