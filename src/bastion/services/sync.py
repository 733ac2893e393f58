"""/sync (C-S API "Syncing"; sync.yaml): initial and incremental syncs, long-polling on the
notifier, and the per-room sections of joined, invited, knocked and left rooms.

A sync fixes ``upto`` (the committed stream position and the typing serial) before reading
anything, and everything it returns lies in ``(since, upto]``; so ``next_batch`` = ``upto``
moves whenever a response carries something, and nothing is skipped between two syncs. Other
services add their parts through ``hs.sync_contributors`` (services/sync_api.py).

The long poll registers its listener on ``{user_id} ∪ joined rooms`` right after a computation
that found nothing, with no await in between — the notifier wakes listeners on the event loop,
so the wake-up of a commit after ``upto`` is still queued and reaches it — then waits on it: no
sleep loops, and a sync that answers at once never registers.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from itertools import chain, islice
from typing import TYPE_CHECKING

from bastion.services.filtering import (
    apply_event_fields,
    event_filter_allows,
    event_filter_is_open,
    room_allowed,
)
from bastion.services.relations import RelationsReader
from bastion.services.sync_api import SyncContext, SyncToken
from bastion.storage.sqlite.rooms import EventRow

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: Timeline events per room when the filter gives no limit.
DEFAULT_TIMELINE_LIMIT = 10
#: State groups whose non-member entries are kept (lazy-loading members reads only those).
NON_MEMBER_CACHE_GROUPS = 1024
#: Longest long-poll honoured.
MAX_TIMEOUT_MS = 5 * 60 * 1000

#: Keys of a response that never make it "non-empty" on their own.
_NOT_CONTENT = frozenset(
    {"next_batch", "device_one_time_keys_count", "device_unused_fallback_key_types", "summary",
     "unread_notifications", "unread_thread_notifications", "limited", "prev_batch"}
)  # fmt: skip


def has_content(obj) -> bool:
    """Whether a (part of a) sync response carries anything: some non-empty list of events or
    users, or a room entry."""
    if isinstance(obj, list):
        return len(obj) > 0
    if isinstance(obj, dict):
        return any(has_content(v) for k, v in obj.items() if k not in _NOT_CONTENT)
    return False


class SyncService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.store
        self._non_member_cache: OrderedDict[int | None, dict] = OrderedDict()

    def _typing_serial(self) -> int:
        return self.hs.typing.serial

    async def sync(
        self, requester, since: SyncToken | None, timeout_ms: int, full_state: bool,
        flt: dict, use_state_after: bool = False,
    ) -> dict:  # fmt: skip
        """GET /sync. Waits up to ``timeout_ms`` for something new (incremental syncs only)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        user_id = requester.user_id
        while True:
            # The notification counts of every event up to ``upto`` first (evaluated after
            # commit, in the background); then ``upto`` with no await before the listener below.
            await self.hs.notifications.settle_current()
            upto = SyncToken(self.store.current_pos, self._typing_serial())
            response = self.compute(requester, since, upto, full_state, flt, use_state_after)
            if since is None or full_state or has_content(response):
                return response
            remaining = deadline - loop.time()
            if remaining <= 0:
                return response
            # No await since ``upto`` was read: the wake-up of anything committed after it is
            # still queued on this loop (the notifier runs there), so it reaches this listener.
            keys = {user_id, *self.store.get_rooms_for_user(user_id)}
            with self.hs.notifier.listen(keys) as listener:
                woken = await listener.wait(remaining)
            if not woken:
                # Timed out: one last look (cheap), so a commit racing the timeout is not lost.
                upto = SyncToken(self.store.current_pos, self._typing_serial())
                return self.compute(requester, since, upto, full_state, flt, use_state_after)

    # ------------------------------------------------------------------------------------------
    def compute(
        self, requester, since: SyncToken | None, upto: SyncToken, full_state: bool, flt: dict,
        use_state_after: bool = False,
    ) -> dict:  # fmt: skip
        user_id = requester.user_id
        if since is not None and since.pos > upto.pos:
            since = SyncToken(upto.pos, since.typing)
        # ``since`` first: the store keeps the last position asked per user (the previous sync's
        # ``upto``, normally this one's ``since``) and reads only the rows after it.
        at_since = self.store.get_memberships_at(user_id, since.pos) if since else {}
        at_upto = self.store.get_memberships_at(user_id, upto.pos)
        joined = {r for r, (m, _, _) in at_upto.items() if m == "join"}
        ctx = SyncContext(requester, since, upto, flt, full_state, set(joined))
        rooms_out: dict = {"join": {}, "invite": {}, "leave": {}, "knock": {}}
        response: dict = {"next_batch": str(upto), "rooms": rooms_out}
        room_flt = flt["room"]
        include_leave = room_flt.get("include_leave", False)
        now = self.hs.now_ms()
        # Every room's timeline (rows, served events), for the bundled aggregations.
        timelines: list[tuple[list[EventRow], list[dict]]] = []
        # An incremental sync computes only the joined rooms where something happened in
        # (since, upto]: an event (timeline, state, membership), or something a contributor
        # adds (ephemeral events, room account data). The others would be empty and left out.
        visit: set[str] | None = None
        if since is not None and not full_state:
            visit = self.store.rooms_with_events_between(joined, since.pos, upto.pos)
            quiet = joined - visit
            for c in self.hs.sync_contributors:
                if not quiet:
                    break
                named = c.rooms_changed(ctx)
                if named is None:
                    visit = None
                    break
                visit |= named
                quiet -= named
        for room_id, (membership, event_id, pos) in sorted(at_upto.items()):
            changed = since is None or pos > since.pos
            if (
                visit is not None
                and membership == "join"
                and not changed
                and room_id not in visit
                and at_since.get(room_id, (None,))[0] == "join"
            ):
                continue  # joined before and after, nothing new (see ``visit``)
            if not room_allowed(flt, room_id):
                continue
            before = at_since.get(room_id, (None, None, 0))[0]
            if membership == "join":
                newly = since is None or before != "join"
                rooms_out["join"][room_id] = self._room(
                    ctx,
                    room_id,
                    None if newly else since,
                    upto.pos,
                    now,
                    use_state_after,
                    timelines,
                    full=full_state,
                )
            elif membership in ("invite", "knock"):
                if not changed:
                    continue
                row = self.store.get_event_row(event_id)
                fm = self.hs.rooms.remote
                if row is None:
                    # An invite/knock of a room this server is not in (over federation).
                    stripped = fm.out_of_room_stripped_state(event_id) if fm else None
                    if stripped is None:
                        continue
                else:
                    state = self.hs.rooms.state_at_group(row.sg_before)
                    stripped = self.hs.rooms.stripped_state(room_id, state, row)
                key = "invite_state" if membership == "invite" else "knock_state"
                rooms_out[membership][room_id] = {key: {"events": stripped}}
            elif membership in ("leave", "ban"):
                if self.store.is_forgotten(room_id, user_id):
                    continue
                if since is None:
                    if not include_leave:
                        continue
                elif not changed:
                    continue
                elif before is None:
                    continue  # never in the room as of since, and not now either
                newly = since is None or before != "join"
                rooms_out["leave"][room_id] = self._room(
                    ctx, room_id, None if newly else since, pos, now, use_state_after,
                    timelines, full=full_state,
                )  # fmt: skip
        self.bundle_timelines(ctx, timelines, now)
        for c in self.hs.sync_contributors:
            c.contribute_global(ctx, response)
        for room_id, room in list(rooms_out["join"].items()):
            for c in self.hs.sync_contributors:
                c.contribute_room(ctx, room_id, room)
            if since is not None and not full_state and not has_content(room):
                del rooms_out["join"][room_id]
                continue
            room["summary"] = self._summary(room_id, user_id)
            self.hs.notifications.contribute_counts(ctx, room_id, room)
        return response

    # ------------------------------------------------------------------------------------------
    def _room(
        self, ctx: SyncContext, room_id: str, since: SyncToken | None, upto_pos: int, now: int,
        use_state_after: bool, timelines: list[tuple[list[EventRow], list[dict]]],
        full: bool = False,
    ) -> dict:  # fmt: skip
        """The timeline and state of one joined (or left) room, up to ``upto_pos``. ``since``
        None: the room is new to the client (initial sync, newly joined): the timeline is the
        latest events and the state all of it; ``full`` (full_state): all of the state too.
        The timeline's rows and events are appended to ``timelines``; its events are finished
        by :meth:`bundle_timelines`."""
        rooms = self.hs.rooms
        user_id = ctx.requester.user_id
        flt = ctx.filter
        tl_flt = flt["room"]["timeline"]
        st_flt = flt["room"]["state"]
        limit = tl_flt.get("limit") or DEFAULT_TIMELINE_LIMIT
        store = self.store
        # An incremental sync reads committed positions only: the slice and the state groups
        # at those positions are the same for every member syncing the room (kept, bounded).
        group_at = store.room_group_at if since is None else store.room_group_at_cached
        if since is None:
            rows = store.get_room_events(room_id, upto=upto_pos, limit=limit + 1)
        else:
            rows = list(
                store.get_room_events_cached(
                    room_id, after=since.pos, upto=upto_pos, limit=limit + 1
                )
            )
        limited = len(rows) > limit
        rows = rows[:limit]
        rows.reverse()
        if since is None and not limited and rows:
            # New to the client: "limited" tells it there is history to paginate.
            limited = (
                self.store.get_room_events(room_id, upto=rows[0].stream_pos - 1, limit=1) != []
            )
        # The room's state (its resolved current state, S-S "Room State Resolution") as it was
        # at the end of the timeline and just before its first event — after a fork that is
        # not the state on the branch of the newest event. Backfilled history has no such
        # record before its oldest event: there, the state before that event.
        end_group = group_at(room_id, upto_pos)
        if rows:
            start_group = group_at(room_id, rows[0].stream_pos - 1)
            if start_group is None:
                start_group = rows[0].sg_before
        else:
            start_group = end_group
        visible = rooms.filter_visible(user_id, rows)
        timeline = (
            visible
            if event_filter_is_open(tl_flt)
            else [r for r in visible if event_filter_allows(tl_flt, r.event, room_id)]
        )
        prev_batch = rows[0].stream_pos - 1 if rows else (since.pos if since else upto_pos)

        lazy = bool(st_flt.get("lazy_load_members"))
        senders = {r.sender for r in timeline} | {user_id}
        # Lazy-loading members: only the members of the timeline's senders (and the user's own)
        # are wanted of the state, so only those are looked up (no pass over every member).
        wanted = senders if lazy else None
        if since is None or full:
            state_ids = self._target_state(rows, start_group, end_group, use_state_after, wanted)
        else:
            since_group = group_at(room_id, since.pos)
            if (end_group if use_state_after else start_group) == since_group and (
                use_state_after or start_group == end_group
            ):
                # The state the client gets is the state it had (the same group): no change.
                # (The common case, a message and no state event: no state map is built.)
                state_ids = {}
            else:
                target = self._target_state(rows, start_group, end_group, use_state_after, wanted)
                since_state = rooms.state_at_group(since_group)
                state_ids = {k: v for k, v in target.items() if since_state.get(k) != v}
        if lazy and (since is None or full or limited):
            start_state = rooms.state_at_group(start_group)
            for s in senders:
                key = ("m.room.member", s)
                if key in start_state and key not in state_ids:
                    state_ids[key] = start_state[key]
        timeline_ids = {r.event_id for r in timeline}
        # The state events (as ``RoomReader.state_events``: in stream order), parsed rows
        # shared through the store's cache: read here, never changed.
        wanted_ids = [v for v in state_ids.values() if v not in timeline_ids or use_state_after]
        state_rows = sorted(
            self.store.get_event_rows_cached(wanted_ids).values(), key=lambda r: r.stream_pos
        )
        if not event_filter_is_open(st_flt):
            state_rows = [r for r in state_rows if event_filter_allows(st_flt, r.event, room_id)]
        events = [self._serve(ctx, r, now) for r in timeline]
        timelines.append((timeline, events))
        room: dict = {
            "timeline": {
                "events": events,
                "limited": limited,
                "prev_batch": str(SyncToken(prev_batch, 0)),  # negative: backfilled history
            },
        }
        state_field = "state_after" if use_state_after else "state"
        room[state_field] = {"events": [self._format(ctx, r, now) for r in state_rows]}
        if use_state_after:
            room.setdefault("state", {"events": []})
        return room

    def bundle_timelines(
        self, ctx: SyncContext, timelines: list[tuple[list[EventRow], list[dict]]], now: int
    ) -> None:
        """Finish the timelines' events: their bundled aggregations (C-S API "Aggregations of
        child events": an event served to a client carries the aggregations of its children
        in ``unsigned.m.relations``, /sync timelines included; ``m.thread``, ``m.replace``,
        ``m.reference``, counted up to ``upto``, as :meth:`RelationsReader.add_bundles`), then
        the filter's ``event_fields``. One read for all the timelines finds the events that
        have children to bundle; nothing more is read when none do."""
        rows = [r for tl, _ in timelines for r in tl]
        if rows:
            served = [ev for _, evs in timelines for ev in evs]
            # (the timelines' events passed the requester's visibility check: a child among
            # them is not checked again)
            RelationsReader(self.store, self.hs.rooms.access).add_bundles_where_related(
                ctx.requester.user_id, rows, served, lambda r: self._serve(ctx, r, now),
                upto=ctx.upto.pos, known={r.event_id: r for r in rows},
            )  # fmt: skip
        fields = ctx.filter.get("event_fields")
        if fields is not None:
            for _, evs in timelines:
                evs[:] = [apply_event_fields(ev, fields) for ev in evs]

    def _serve(self, ctx: SyncContext, row: EventRow, now: int) -> dict:
        """An event as the filter's ``event_format`` serves it (a new dict, ``unsigned``
        included: bundles are added to it), before ``event_fields``."""
        if ctx.filter.get("event_format") == "federation":
            ev = dict(row.event)
            if isinstance(ev.get("unsigned"), dict):
                ev["unsigned"] = dict(ev["unsigned"])
            return ev
        return self.hs.rooms.client_event(row, ctx.requester, now, with_room_id=False)

    def _format(self, ctx: SyncContext, row: EventRow, now: int) -> dict:
        return apply_event_fields(self._serve(ctx, row, now), ctx.filter.get("event_fields"))

    def _target_state(
        self, rows: list[EventRow], start_group: int | None, end_group: int | None,
        use_state_after: bool, members: set[str] | None = None,
    ) -> dict:  # fmt: skip
        """The state a room section is built on (a new map; the cached groups are never
        changed). ``state_after``: the state at the end of the timeline. Otherwise the state at
        its start and, for the keys no event of the timeline sets, the state at its end — so
        that a change the timeline does not carry (the resolution of a fork, a soft-failed
        event that made it into the state) reaches the client, which applies ``state`` and then
        the timeline. ``members``: of the member events, only those of these users (lazy
        loading); None: all."""
        state_at = self.hs.rooms.state_at_group
        if use_state_after or start_group == end_group:
            group = end_group if use_state_after else start_group
            if members is None:
                return dict(state_at(group))
            state = state_at(group)
            out = dict(self._non_member_state(group))
            for u in members:
                key = ("m.room.member", u)
                if key in state:
                    out[key] = state[key]
            return out
        start_state, end_state = state_at(start_group), state_at(end_group)
        touched = {(r.type, r.state_key) for r in rows if r.state_key is not None}
        if members is None:
            return {**start_state, **{k: v for k, v in end_state.items() if k not in touched}}
        out = {
            **self._non_member_state(start_group),
            **{k: v for k, v in self._non_member_state(end_group).items() if k not in touched},
        }
        for u in members:
            key = ("m.room.member", u)
            if key not in touched and key in end_state:
                out[key] = end_state[key]
            elif key in start_state:
                out[key] = start_state[key]
        return out

    def _non_member_state(self, group: int | None) -> dict:
        """The entries of a state group other than member events (never mutate). Cached,
        bounded: a state group never changes."""
        hit = self._non_member_cache.get(group)
        if hit is not None:
            self._non_member_cache.move_to_end(group)
            return hit
        out = {
            k: v for k, v in self.hs.rooms.state_at_group(group).items() if k[0] != "m.room.member"
        }
        self._non_member_cache[group] = out
        while len(self._non_member_cache) > NON_MEMBER_CACHE_GROUPS:
            self._non_member_cache.popitem(last=False)
        return out

    def _summary(self, room_id: str, user_id: str) -> dict:
        """C-S "Room summary": heroes (up to 5 other members), joined and invited counts (from
        the store's cached member lists: no per-sync read of every member)."""
        members = self.store.room_members_cached(room_id)
        joined, invited = members.sorted_joined_invited()
        heroes = list(islice((u for u in chain(joined, invited) if u != user_id), 5))
        if not heroes:
            heroes = sorted(u for u in members.members if u != user_id)[:5]
        return {
            "m.heroes": heroes,
            "m.joined_member_count": len(joined),
            "m.invited_member_count": len(invited),
        }
