"""Reading event relationships (C-S API "Relationships": "Relations API"; "Threading":
"Fetching all threads in a room"), with read access and history visibility applied as for
every other read (:mod:`bastion.services.room_access`): the parent must be an event the
requester may see, and only the children (or thread roots) they may see are listed.

Pagination is by stream position, in the token grammar of /messages and /sync: going
backwards a position ``p`` names the events at or below it, going forwards those above it, so
a /messages ``start`` or a /sync ``next_batch`` works as ``from`` too (as the spec allows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from bastion.core.relations import (
    MAX_RECURSION_DEPTH,
    THREAD,
    latest_replacement,
    may_start_thread_from,
    relation_of,
    thread_path,
)
from bastion.errors import M_UNKNOWN, MatrixError, not_found
from bastion.services.room_access import RoomAccess
from bastion.storage.interface import EventRow, Store

#: References bundled per page at most (C-S API "Aggregations of child events": the bundle
#: is a summary; the relations API lists them all).
_MAX_REFERENCES = 1000

#: The relation types whose children are bundled with their parent (C-S API "Aggregations
#: of child events": ``m.thread``, ``m.replace``, ``m.reference``; annotations are not).
BUNDLED_REL_TYPES = (THREAD, "m.replace", "m.reference")

#: Store reads per page at most: a page of events the requester may not see ends early, with
#: a ``next_batch`` to continue from.
_ROUNDS = 8


def check_new_relation(store: Store, room_id: str, content: dict) -> None:
    """Before a local send: 400 ``M_UNKNOWN`` for an ``m.thread`` relation to an event of the
    room that itself has a relation (C-S API "Threading", "Validation of m.thread
    relationships"). Nothing is read for an event without an ``m.thread`` relation."""
    rel = relation_of({"content": content})
    if rel is None or rel.rel_type != THREAD:
        return
    parent = store.get_event_row(rel.parent_id)
    if parent is not None and parent.room_id == room_id and not may_start_thread_from(parent.event):
        raise MatrixError(M_UNKNOWN, "cannot start a thread from an event with a relation")


def event_thread(
    store: Store, room_id: str, event_id: str, event: dict
) -> tuple[str | None, list[str]]:
    """The thread root of ``event`` (of ``room_id``; None: the main timeline) and the events
    on the way to it (:func:`bastion.core.relations.thread_path`; C-S API "Threaded read
    receipts"). The relations of the events it relates to are read from the index, one row per
    hop: nothing is read for an event without a relation, or with an ``m.thread`` one."""
    return thread_path(
        event_id, relation_of(event), lambda parent: store.relation_of_event(room_id, parent)
    )


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

    def add_bundles_where_related(
        self, user_id: str, rows: Sequence[EventRow], served: Sequence[dict],
        fmt: Callable[[EventRow], dict], *, upto: int | None = None,
        known: Mapping[str, EventRow] | None = None,
    ) -> None:  # fmt: skip
        """:meth:`add_bundles` for a page that spans many rooms and mostly has no relations
        (a /sync response's timelines): one read finds the events that have children of a
        bundled type, and only those (and only their rooms) are read further; a page without
        any costs that one read."""
        self._add_bundles_where_related(
            user_id, rows, served, fmt, upto=upto, known=known, nested=False
        )

    def _add_bundles_where_related(
        self, user_id: str, rows: Sequence[EventRow], served: Sequence[dict],
        fmt: Callable[[EventRow], dict], *, upto: int | None,
        known: Mapping[str, EventRow] | None, nested: bool,
    ) -> None:  # fmt: skip
        live = [(r, ev) for r, ev in zip(rows, served, strict=True) if not r.redacted_because]
        if not live:
            return
        parents = self.store.related_parents([r.event_id for r, _ in live], BUNDLED_REL_TYPES)
        if not parents:
            return
        picked = [(r, ev) for r, ev in live if r.event_id in parents]
        self.add_bundles(
            user_id, [r for r, _ in picked], [ev for _, ev in picked], fmt, upto=upto,
            known=known, _nested=nested,
        )  # fmt: skip

    def add_bundles(
        self, user_id: str, rows: Sequence[EventRow], served: Sequence[dict],
        fmt: Callable[[EventRow], dict], *, upto: int | None = None,
        known: Mapping[str, EventRow] | None = None, _nested: bool = False,
    ) -> None:  # fmt: skip
        """Put the bundled aggregations (C-S API "Aggregations of child events") of ``rows``
        into ``unsigned["m.relations"]`` of ``served`` (their client events, in the same
        order): ``m.thread`` (``latest_event``, ``count``, ``current_user_participated``:
        "Threading", "Server-side aggregation of m.thread relationships"), ``m.replace`` (the
        most recent valid replacement, whole: "Event replacements", "Server-side aggregation
        of m.replace relationships"; the content is never replaced) and ``m.reference``
        (``chunk`` of event IDs: "Reference relations"). Only children the requester may see
        count; a redacted event gets none. A few reads per page (one per distinct read cap:
        one for all the rooms the requester is joined to), never one per event or room.
        ``fmt`` serves a child as a client event. A thread's ``latest_event`` gets its own
        bundle (once: it cannot be a thread root, see :func:`check_new_relation`).
        ``upto``: only children at stream positions up to it count (a /sync response holds
        what lies up to its ``next_batch``; a later child comes with a later one). ``known``:
        rows already known to be visible to the requester (a /sync timeline, where a parent's
        children mostly are too): those children are neither read nor checked again."""
        # The read cap of each room (rooms the requester may not read get nothing), and the
        # parents grouped by cap: one read per group, whatever the number of rooms (every
        # joined room shares one cap).
        caps: dict[str, int | None] = {}
        denied: set[str] = set()
        groups: dict[int | None, dict[str, str]] = {}
        idx: list[int] = []
        for i, row in enumerate(rows):
            if row.redacted_because or row.room_id in denied:
                continue
            if row.room_id not in caps:
                try:
                    cap = self.access.read_access(user_id, row.room_id)
                except MatrixError:
                    denied.add(row.room_id)
                    continue
                caps[row.room_id] = cap if upto is None else upto if cap is None else min(cap, upto)
            groups.setdefault(caps[row.room_id], {})[row.event_id] = row.room_id
            idx.append(i)
        threads: dict[str, tuple[int, str, bool]] = {}
        others: list[tuple[str, str, str]] = []
        for cap, parents in groups.items():
            threads.update(self.store.thread_summaries(parents, user_id, cap))
            others += self.store.relations_of_types(
                parents, ("m.replace", "m.reference"), cap, _MAX_REFERENCES - len(others)
            )
        if not threads and not others:
            return
        wanted = [latest for _, latest, _ in threads.values()] + [c for c, _, _ in others]
        known = known or {}
        children = {e: known[e] for e in wanted if e in known}
        visible = set(children)
        missing = [e for e in wanted if e not in known]
        if missing:
            fetched = self.store.get_event_rows(missing)
            children.update(fetched)
            visible |= {
                r.event_id for r in self.access.filter_visible(user_id, list(fetched.values()))
            }
        edits: dict[str, list[EventRow]] = {}
        refs: dict[str, list[str]] = {}
        for child, parent, rel_type in others:
            if child not in visible:
                continue
            if rel_type == "m.replace":
                edits.setdefault(parent, []).append(children[child])
            else:
                refs.setdefault(parent, []).append(child)
        latest_rows: list[EventRow] = []
        latest_served: list[dict] = []
        for i in idx:
            row = rows[i]
            bundle: dict = {}
            summary = threads.get(row.event_id)
            if summary is not None and summary[1] in visible:
                count, latest, replied = summary
                latest_rows.append(children[latest])
                latest_served.append(fmt(children[latest]))
                bundle["m.thread"] = {
                    "latest_event": latest_served[-1],
                    "count": count,
                    "current_user_participated": replied or row.sender == user_id,
                }
            candidates = edits.get(row.event_id)
            if candidates:
                best = latest_replacement(
                    row.event, [{**c.event, "event_id": c.event_id} for c in candidates]
                )
                if best is not None:
                    bundle["m.replace"] = fmt(candidates[best])
            if row.event_id in refs:
                bundle["m.reference"] = {"chunk": [{"event_id": e} for e in refs[row.event_id]]}
            if bundle:
                served[i].setdefault("unsigned", {})["m.relations"] = bundle
        if latest_rows and not _nested:
            # (most latest replies have no children: one read finds those that do)
            self._add_bundles_where_related(
                user_id, latest_rows, latest_served, fmt, upto=upto, known=known, nested=True
            )
