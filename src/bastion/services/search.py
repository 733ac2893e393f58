"""Server-side search (C-S API "Server Side Search", ``POST /search``, spec v1.19): the room
events category.

Which rooms: the spec searches "events in all rooms that the user has been in, including those
that they have left", and "only events that the user is allowed to see": the rooms the user is
joined to, and those they left or were banned from after having joined, read up to their
leave (the room reader's rule, :meth:`RoomAccess.read_access`); never a room they were only
invited to, nor one they never joined. Encrypted rooms (``m.room.encryption`` in the room's
current state) are not searched: the server cannot read what is said in them (the issue asks
for search "over unencrypted rooms"). Every candidate then passes the reader's history
visibility (:meth:`RoomAccess.filter_visible`), as /messages does.

What matches, the query syntax and the ``next_batch`` token: :mod:`bastion.core.search`. The
index (FTS5): :mod:`bastion.storage.sqlite.search`. ``order_by`` ``rank`` orders by the index's
BM25 score (``rank`` in results is its negation: higher is closer), ``recent`` newest first.
``count`` is the number of matches in the searched rooms before history visibility (the spec's
"approximate count").

Groups (``room_id``, ``sender``) partition the results of the page; a group's ``next_batch``
continues within that group only (the spec's "using a token inside a group will return more
results from within that group").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.core.search import (
    KEYS,
    Cursor,
    fts_query,
    highlights,
    search_words,
    searchable_text,
)
from bastion.errors import MatrixError
from bastion.services.filtering import event_filter_allows, matches_glob
from bastion.storage.interface import EventRow, Requester

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: Rounds of (fetch a batch of candidates, apply history visibility) per page at most.
_ROUNDS = 10


@dataclass(frozen=True, slots=True)
class RoomEventsCriteria:
    """A validated ``search_categories.room_events`` (the handler checks shapes and clamps)."""

    term: str
    keys: tuple[str, ...]
    event_filter: dict
    order: str  # "rank" | "recent"
    limit: int
    context: tuple[int, int, bool] | None  # before, after, include_profile
    include_state: bool
    group_by: tuple[str, ...]


class Search:
    """``hs.search``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    def searchable_rooms(self, user_id: str, event_filter: dict) -> dict[str, int | None]:
        """Room ID -> highest stream position the user may read (None: no cap), for the rooms
        the search covers (the filter's ``rooms``/``not_rooms`` applied)."""
        store, rooms = self.hs.store, self.hs.rooms
        out: dict[str, int | None] = dict.fromkeys(store.get_rooms_for_user(user_id, "join"))
        for membership in ("leave", "ban"):
            for room_id in store.get_rooms_for_user(user_id, membership):
                history = store.get_user_membership_history(user_id, room_id)
                row = store.get_membership(room_id, user_id)
                if row is not None and any(m == "join" for m, _ in history):
                    out[room_id] = row["stream_pos"]
        wanted = event_filter.get("rooms")
        unwanted = set(event_filter.get("not_rooms") or ())
        return {
            room_id: cap
            for room_id, cap in out.items()
            if (wanted is None or room_id in wanted)
            and room_id not in unwanted
            and rooms.current_state_event(room_id, "m.room.encryption") is None
        }

    async def room_events(
        self, requester: Requester, c: RoomEventsCriteria, cursor: Cursor | None
    ) -> dict:
        """The ``room_events`` result category of a search."""
        await self.hs.store.flush_search_index()  # (what was sent until now is searched)
        store, hs = self.hs.store, self.hs
        user_id = requester.user_id
        words = search_words(c.term)
        f = c.event_filter
        columns = {KEYS[k][2] for k in c.keys if _type_allowed(f, KEYS[k][0])}
        rooms = self.searchable_rooms(user_id, f) if words and columns else {}
        senders = f.get("senders")
        not_senders = f.get("not_senders") or []
        if cursor is not None and cursor.room_id is not None:
            rooms = {r: cap for r, cap in rooms.items() if r == cursor.room_id}
        if cursor is not None and cursor.sender is not None:
            senders = [s for s in (senders or [cursor.sender]) if s == cursor.sender]
        if not rooms or senders == []:
            return {"count": 0, "highlights": [], "results": []}
        query = fts_query(words, columns)
        recent = c.order == "recent"
        after = (cursor.score, cursor.pos) if cursor is not None else None
        found: list[tuple[EventRow, float]] = []
        more = True
        for _ in range(_ROUNDS):
            need = c.limit - len(found)
            batch = max(2 * need, 20)
            hits = store.search_events(
                query, rooms, senders=senders, not_senders=not_senders, recent=recent,
                after=after, limit=batch,
            )  # fmt: skip
            rows = store.get_event_rows([h[0] for h in hits])
            candidates = [rows[h[0]] for h in hits if h[0] in rows]
            visible = {r.event_id for r in hs.rooms.filter_visible(user_id, candidates)}
            for eid, pos, score in hits:
                after = (score, pos)
                row = rows.get(eid)
                if row is None or eid not in visible:
                    continue
                if not event_filter_allows(f, row.event, row.room_id):
                    continue
                found.append((row, score))
                if len(found) == c.limit:
                    break
            if len(hits) < batch and len(found) < c.limit:
                more = False
                break
            if len(found) >= c.limit:
                break
        out: dict = {
            "count": store.search_count(query, rooms, senders=senders, not_senders=not_senders),
            "highlights": highlights(
                words, [t[1] for r, _ in found if (t := searchable_text(r.event)) is not None]
            ),
            "results": self._results(requester, found, c),
        }
        next_cursor = None
        if more and after is not None:
            next_cursor = Cursor(
                c.order, after[1], after[0],
                cursor.room_id if cursor else None, cursor.sender if cursor else None,
            )  # fmt: skip
            out["next_batch"] = next_cursor.token()
        if c.include_state:
            out["state"] = self._state(requester, {r.room_id for r, _ in found})
        if c.group_by:
            out["groups"] = _groups(found, c.group_by, next_cursor)
        return out

    def _results(
        self, requester: Requester, found: list[tuple[EventRow, float]], c: RoomEventsCriteria
    ) -> list[dict]:
        from bastion.api.client.rooms import token, with_bundles

        hs = self.hs
        now = hs.now_ms()
        rows = [r for r, _ in found]
        served = with_bundles(
            hs, requester, rows, [hs.rooms.client_event(r, requester, now) for r in rows]
        )
        out = []
        for (row, score), event in zip(found, served, strict=True):
            result: dict = {"rank": -score, "result": event}
            if c.context is not None:
                before_n, after_n, profile = c.context
                before, b_end = self._around(requester, row, before_n, backwards=True)
                after, a_end = self._around(requester, row, after_n, backwards=False)
                start = b_end if b_end is not None else (
                    before[-1].stream_pos - 1 if before else row.stream_pos - 1)  # fmt: skip
                last = after[-1] if after else row
                end = a_end if a_end is not None else last.stream_pos
                ctx: dict = {
                    "events_before": [hs.rooms.client_event(r, requester, now) for r in before],
                    "events_after": [hs.rooms.client_event(r, requester, now) for r in after],
                    "start": token(start),
                    "end": token(end),
                }
                if profile:
                    ctx["profile_info"] = self._profiles(row, [row, *before, *after])
                result["context"] = ctx
            out.append(result)
        return out

    def _around(
        self, requester: Requester, row: EventRow, n: int, *, backwards: bool
    ) -> tuple[list[EventRow], int | None]:
        """Up to ``n`` events the requester may see just before (newest first) or after the
        result, as /context gives them, and where pagination stopped (None: the end)."""
        if n == 0:
            return [], None
        start = row.stream_pos - 1 if backwards else row.stream_pos
        rows, end, _ = self.hs.rooms.paginate(
            requester, row.room_id, start, None, backwards, n, None
        )
        return rows, end

    def _profiles(self, at: EventRow, rows: list[EventRow]) -> dict:
        """The senders' display names and avatars as the room knew them at the result (the
        spec's "historic profile information")."""
        store = self.hs.store
        state = store.get_state_group(at.sg_after)
        senders = {r.sender for r in rows}
        ids = {s: state[("m.room.member", s)] for s in senders if ("m.room.member", s) in state}
        members = store.get_event_rows(list(ids.values()))
        out: dict = {}
        for sender, eid in ids.items():
            member = members.get(eid)
            content = member.event.get("content") if member else None
            if not isinstance(content, dict):
                continue
            info = {k: content[k] for k in ("displayname", "avatar_url")
                    if isinstance(content.get(k), str)}  # fmt: skip
            out[sender] = info
        return out

    def _state(self, requester: Requester, room_ids: set[str]) -> dict:
        hs, now = self.hs, self.hs.now_ms()
        out = {}
        for room_id in sorted(room_ids):
            try:
                state = hs.rooms.state_for_reader(requester.user_id, room_id)
            except MatrixError:
                continue
            out[room_id] = [
                hs.rooms.client_event(r, requester, now) for r in hs.rooms.state_events(state)
            ]
        return out


def _type_allowed(event_filter: dict, etype: str) -> bool:
    """Whether the filter's ``types``/``not_types`` let events of ``etype`` through."""
    if any(matches_glob(etype, p) for p in event_filter.get("not_types") or ()):
        return False
    types = event_filter.get("types")
    return types is None or any(matches_glob(etype, p) for p in types)


def _groups(
    found: list[tuple[EventRow, float]], group_by: tuple[str, ...], cursor: Cursor | None
) -> dict:
    """``groups``: for each key asked, the page's results per value, ``order`` the rank of
    the value's first result on the page (1 first), and a ``next_batch`` continuing within
    the group when the search has more results."""
    out: dict = {}
    for key in group_by:
        groups: dict[str, dict] = {}
        for row, _ in found:
            value = row.room_id if key == "room_id" else row.sender
            g = groups.get(value)
            if g is None:
                g = groups[value] = {"order": len(groups) + 1, "results": []}
                if cursor is not None:
                    g["next_batch"] = Cursor(
                        cursor.order, cursor.pos, cursor.score,
                        value if key == "room_id" else cursor.room_id,
                        value if key == "sender" else cursor.sender,
                    ).token()  # fmt: skip
            g["results"].append(row.event_id)
        out[key] = groups
    return out
