"""Simplified Sliding Sync (MSC4186, ``POST /_matrix/client/unstable/org.matrix.simplified_msc3575
/sync``): lists of the user's rooms sorted by their latest event, windows over them, room
subscriptions, and the ``to_device``, ``e2ee``, ``account_data``, ``receipts`` and ``typing``
extensions. List filters: ``is_dm``, ``is_encrypted``, ``is_invite``, ``room_types``,
``not_room_types``, ``spaces`` (children of spaces the user is joined to), ``tags`` and
``not_tags``, as Synapse serves them; ``room_name_like`` is not (Synapse ignores it too).

Built on the /sync pieces: a response covers ``(since, upto]`` of the same stream positions
(``SyncToken``), rooms are read through the same store methods and visibility filter, and the
room-scoped extensions are the /sync contributors' output reshaped. To-device messages follow
the extension's own ``since``/``next_batch`` (MSC3885): a ``since`` acknowledges, and deletes,
everything up to it.

Per-connection state lives in memory only, bounded (least recently used connections are
dropped): a ``pos`` maps to the stream position it stood for and what the connection had been
sent of each room as of it — up to that position, or only up to an earlier one when the room
had updates while outside every list window and subscription (those updates are sent when it
comes back, as Synapse does). A ``pos`` the server does not know (never given, dropped, or
before a restart) is answered 400 ``M_UNKNOWN_POS`` and the client starts afresh, as the MSC
allows.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain, islice
from typing import TYPE_CHECKING

from bastion.core.canonical_json import parse_json
from bastion.core.sliding_sync import (
    RoomConfig,
    SlidingRequest,
    extension_rooms,
    sent_after,
    sticky_subscriptions,
    wanted_state,
    window,
)
from bastion.errors import M_UNKNOWN_POS, MatrixError
from bastion.services.filtering import default_filter
from bastion.services.sync import MAX_TIMEOUT_MS
from bastion.services.sync_api import SyncContext, SyncToken

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import EventRow

#: Connections remembered (least recently used dropped) and positions kept per connection.
MAX_CONNECTIONS = 5_000
#: Connections (``conn_id`` values) one device may hold; its least recently used go first.
CONNECTIONS_PER_DEVICE = 8
POSITIONS_PER_CONNECTION = 4
#: Rooms whose latest event position is remembered.
MAX_BUMP_CACHE = 100_000
#: What a room the user left is sent with: the events up to the leave, no state.
LEFT_ROOM = RoomConfig(10, ())


def unknown_pos() -> MatrixError:
    return MatrixError(M_UNKNOWN_POS, "unknown position: start a new connection", 400)


@dataclass(frozen=True, slots=True)
class _Position:
    """What a connection had been sent as of one ``pos`` (MSC4186 "Connections"). The room
    maps are :func:`bastion.core.sliding_sync.sent_after`'s: None for a room sent up to this
    position, a token for one sent only up to that token, absent for one never sent. A map
    is shared with the previous position while unchanged."""

    token: SyncToken
    #: Rooms (timeline and state).
    rooms: Mapping[str, SyncToken | None]
    #: The configuration each room was last sent with: a wider ``required_state`` sends what
    #: it adds, a larger ``timeline_limit`` the room's latest events again.
    configs: Mapping[str, RoomConfig]
    #: The ``receipts``, ``account_data`` and ``typing`` extensions' rooms.
    receipts: Mapping[str, SyncToken | None]
    account_data: Mapping[str, SyncToken | None]
    typing: Mapping[str, SyncToken | None]
    #: The connection's room subscriptions as of this position (sticky).
    subscriptions: dict[str, RoomConfig]


_NOTHING: Mapping[str, SyncToken | None] = {}


class _Computed:
    """One response and the connection's state after it."""

    __slots__ = ("position", "response")

    def __init__(self, response: dict, position: _Position) -> None:
        self.response = response
        self.position = position


class _Connection:
    __slots__ = ("counter", "positions")

    def __init__(self) -> None:
        self.counter = 0
        self.positions: OrderedDict[str, _Position] = OrderedDict()


class SlidingSyncService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.store
        self._conns: OrderedDict[tuple[str, str, str], _Connection] = OrderedDict()
        self._filter = default_filter()
        #: room -> (position checked up to, latest event position then): bounded; lets a
        #: request re-read only the rooms with events since (one query for the others).
        self._bumps: OrderedDict[str, tuple[int, int]] = OrderedDict()

    # -- connections ---------------------------------------------------------------------------
    def _position(self, key: tuple[str, str, str], pos: str | None) -> _Position | None:
        if pos is None:
            return None
        conn = self._conns.get(key)
        found = conn.positions.get(pos) if conn is not None else None
        if found is None:
            raise unknown_pos()
        self._conns.move_to_end(key)
        return found

    def _remember(self, key: tuple[str, str, str], position: _Position) -> str:
        conn = self._conns.get(key)
        if conn is None:
            # A device's own connections are bounded first, so that one device opening many
            # cannot push other users' connections out.
            mine = [k for k in self._conns if k[:2] == key[:2]]
            for k in mine[: max(0, len(mine) - CONNECTIONS_PER_DEVICE + 1)]:
                del self._conns[k]
            conn = self._conns[key] = _Connection()
            while len(self._conns) > MAX_CONNECTIONS:
                self._conns.popitem(last=False)
        self._conns.move_to_end(key)
        conn.counter += 1
        name = str(conn.counter)
        conn.positions[name] = position
        while len(conn.positions) > POSITIONS_PER_CONNECTION:
            conn.positions.popitem(last=False)
        return name

    # -- the request ---------------------------------------------------------------------------
    async def sync(
        self, requester, req: SlidingRequest, pos: str | None, timeout_ms: int
    ) -> dict:  # fmt: skip
        key = (requester.user_id, requester.device_id or "", req.conn_id)
        if pos is None:
            # A fresh start forgets what the connection had (MSC4186: no ``pos``).
            self._conns.pop(key, None)
        since = self._position(key, pos)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        user_id = requester.user_id
        ext = req.extensions
        if ext.to_device and ext.to_device_since is not None:
            # The device has every message up to ``since``: delete them (MSC3885).
            self.hs.e2ee.acknowledge_to_device(
                user_id, requester.device_id, ext.to_device_since, self.store.current_pos
            )
        while True:
            await self.hs.notifications.settle_current()
            upto = SyncToken(self.store.current_pos, self.hs.typing.serial)
            out = self.compute(requester, req, since, upto)
            response = out.response
            remaining = deadline - loop.time()
            if since is None or response["rooms"] or _has_extension(response) or remaining <= 0:
                break
            # No await since ``upto`` was read (as /sync): a later commit's wake-up reaches us.
            keys = {user_id, *self.store.get_rooms_for_user(user_id)}
            with self.hs.notifier.listen(keys) as listener:
                woken = await listener.wait(remaining)
            if not woken:
                upto = SyncToken(self.store.current_pos, self.hs.typing.serial)
                out = self.compute(requester, req, since, upto)
                break
        out.response["pos"] = self._remember(key, out.position)
        return out.response

    def compute(
        self, requester, req: SlidingRequest, since: _Position | None, upto: SyncToken
    ) -> _Computed:
        user_id = requester.user_id
        store = self.store
        since_tok = since.token if since is not None else None
        if since_tok is not None and since_tok.pos > upto.pos:
            since_tok = SyncToken(upto.pos, since_tok.typing)
        memberships = store.get_memberships_at(user_id, upto.pos)
        joined = {r for r, (m, _, _) in memberships.items() if m == "join"}
        listed = {r: v for r, v in memberships.items() if v[0] in ("join", "invite")}
        bump = self._bump_stamps(listed.keys(), upto.pos)
        ordered = sorted(listed, key=lambda r: (-bump[r], r))
        ctx = SyncContext(requester, since_tok, upto, self._filter, False, set(joined))

        wanted: dict[str, RoomConfig] = {}
        lists_out: dict[str, dict] = {}
        windows: dict[str, list[str]] = {}
        dms: set[str] | None = None
        for lst in req.lists:
            f = lst.filters
            members = ordered
            if f.is_dm is not None:
                if dms is None:
                    dms = self._direct_rooms(user_id)
                members = [r for r in members if (r in dms) == f.is_dm]
            if f.is_invite is not None:
                members = [r for r in members if (listed[r][0] == "invite") == f.is_invite]
            if f.is_encrypted is not None:
                members = [r for r in members if self._encrypted(r, upto.pos) == f.is_encrypted]
            if f.room_types is not None or f.not_room_types:
                members = [r for r in members if self._type_ok(r, f.room_types, f.not_room_types)]
            if f.spaces is not None:
                children = self._space_children(f.spaces, joined, upto.pos)
                members = [r for r in members if r in children]
            if f.tags is not None or f.not_tags:
                tagged = {r: set(self.hs.tags.get(user_id, r)) for r in members}
                members = [
                    r for r in members
                    if not (tagged[r] & f.not_tags) and (f.tags is None or tagged[r] & f.tags)
                ]  # fmt: skip
            lists_out[lst.name] = {"count": len(members)}
            windows[lst.name] = window(members, lst.ranges)
            for r in windows[lst.name]:
                wanted[r] = wanted[r].merged(lst.config) if r in wanted else lst.config
        subs = sticky_subscriptions(since.subscriptions if since is not None else {}, req)
        # Only rooms the user is in (or invited to): others are left out, nothing leaks.
        subscribed = [r for r in subs if r in listed]
        for room_id in subscribed:
            cfg = subs[room_id]
            wanted[room_id] = wanted[room_id].merged(cfg) if room_id in wanted else cfg

        before = since.rooms if since is not None else _NOTHING
        configs_before = since.configs if since is not None else {}
        changed: set[str] = set()
        at: dict[int, dict[str, tuple[str, str, int]]] = {}
        if since_tok is not None:
            changed = store.rooms_with_events_between(joined, since_tok.pos, upto.pos)
            changed |= {r for r, (_m, _e, p) in memberships.items() if p > since_tok.pos}
        rooms_out: dict[str, dict] = {}
        unsent: set[str] = set()
        now = self.hs.now_ms()
        # Every room's timeline (rows, served events), for the bundled aggregations.
        timelines: list[tuple[list[EventRow], list[dict]]] = []
        for room_id, cfg in wanted.items():
            membership, event_id, member_pos = listed[room_id]
            known = room_id in before
            # Sent up to: the request's position (live) or an earlier one (owed updates).
            room_since = (before[room_id] or since_tok) if known else None
            fresh = room_since is None
            if room_since is not None and member_pos > room_since.pos and membership == "join":
                # Joined since it was last sent (as an invite, say): all of it again.
                if room_since.pos not in at:
                    at[room_since.pos] = store.get_memberships_at(user_id, room_since.pos)
                fresh = at[room_since.pos].get(room_id, ("",))[0] != "join"
            if fresh:
                room_since = None
            old = configs_before.get(room_id)
            old_required = old.required_state if old is not None else ()
            wider = not fresh and any(k not in old_required for k in cfg.required_state)
            # A larger timeline_limit than the room was sent with: its latest events again
            # (MSC4186 "Changes to timeline_limit"; Synapse's ``unstable_expanded_timeline``).
            expanded = (
                not fresh and membership == "join" and old is not None
                and cfg.timeline_limit > old.timeline_limit
            )  # fmt: skip
            if (
                not fresh and before[room_id] is None and room_id not in changed
                and not wider and not expanded
            ):  # fmt: skip
                continue  # up to date
            if membership == "invite":
                if room_since is not None and member_pos <= room_since.pos:
                    continue  # the invite was sent and has not changed
                room = self._invite(room_id, event_id)
                if room is None:
                    unsent.add(room_id)
                    continue
            elif expanded:
                room = self._room(ctx, room_id, cfg, None, upto.pos, now, timelines)
                room["unstable_expanded_timeline"] = True
            else:
                room = self._room(
                    ctx, room_id, cfg, room_since, upto.pos, now, timelines,
                    old_required if wider else None,
                )  # fmt: skip
                if room_since is not None and not (
                    room["timeline"] or room["required_state"] or room["limited"]
                ):
                    continue
            room["membership"] = membership
            if fresh:
                room["initial"] = True
            room["bump_stamp"] = bump[room_id]
            rooms_out[room_id] = room
        # Rooms the client was sent that the user has left since: their last timeline, up to
        # the leave (or ban), once; then they are forgotten by this connection.
        gone: set[str] = set()
        for room_id in before.keys() - listed.keys():
            gone.add(room_id)
            membership, _e, left_pos = memberships.get(room_id, ("", "", 0))
            room_since = before[room_id] or since_tok
            if membership not in ("leave", "ban") or room_since is None:
                continue
            if left_pos <= room_since.pos:
                continue
            room = self._room(ctx, room_id, LEFT_ROOM, room_since, left_pos, now, timelines)
            room["bump_stamp"] = left_pos
            rooms_out[room_id] = room
        # Bundled aggregations, as in /sync (C-S API "Aggregations of child events").
        self.hs.sync.bundle_timelines(ctx, timelines, now)
        # Live rooms outside every window and subscription that had updates: owed from here.
        missed = [r for r, p in before.items() if p is None and r not in wanted and r in changed]
        live = wanted.keys() - unsent
        rooms_after = sent_after(before, live, missed, since_tok, gone)
        configs_after = configs_before
        if gone or any(configs_before.get(r) != wanted[r] for r in live):
            configs_after = {r: c for r, c in configs_before.items() if r not in gone}
            configs_after.update((r, wanted[r]) for r in live)
        response: dict = {"lists": lists_out, "rooms": rooms_out, "extensions": {}}
        extensions = response["extensions"]
        self._global_extensions(ctx, req, extensions)
        covered = {
            name: extension_rooms(req.extensions.scope(name), windows, subscribed) & joined
            for name in ("account_data", "receipts", "typing")
            if getattr(req.extensions, name)
        }
        # An extension left out of a request forgets its rooms: when it is back, they are
        # new to it (nothing it missed meanwhile is lost).
        receipts_after = _NOTHING
        if "receipts" in covered:
            receipts_after = self._receipts(
                ctx, covered["receipts"], since.receipts if since is not None else _NOTHING, rooms_out,
                extensions,
            )  # fmt: skip
        account_data_after = _NOTHING
        if "account_data" in covered:
            account_data_after = self._room_account_data(
                ctx, covered["account_data"], since.account_data if since is not None else _NOTHING,
                extensions,
            )  # fmt: skip
        typing_after = _NOTHING
        if "typing" in covered:
            typing_after = self._typing(
                ctx, covered["typing"], since.typing if since is not None else _NOTHING, extensions
            )
        position = _Position(
            token=upto,
            rooms=rooms_after,
            configs=configs_after,
            receipts=_drop(receipts_after, gone),
            account_data=_drop(account_data_after, gone),
            typing=_drop(typing_after, gone),
            subscriptions=subs,
        )
        return _Computed(response, position)

    # -- rooms -----------------------------------------------------------------------------------
    def _bump_stamps(self, room_ids: Iterable[str], upto: int) -> dict[str, int]:
        """Each room's latest event position at ``upto`` (the list order and ``bump_stamp``).
        Rooms known as of an earlier position are re-read only when one query says they had
        events since."""
        cache = self._bumps
        out: dict[str, int] = {}
        stale: dict[str, tuple[int, int]] = {}
        for r in room_ids:
            hit = cache.get(r)
            if hit is not None and hit[0] == upto:
                out[r] = hit[1]
            elif hit is not None and hit[0] < upto:
                stale[r] = hit
            else:
                out[r] = self._read_bump(r, upto)
        if stale:
            since = min(checked for checked, _ in stale.values())
            moved = self.store.rooms_with_events_between(stale, since, upto)
            for r, (_checked, stamp) in stale.items():
                if r in moved:
                    out[r] = self._read_bump(r, upto)
                else:
                    out[r] = stamp
                    cache[r] = (upto, stamp)
        return out

    def _read_bump(self, room_id: str, upto: int) -> int:
        rows = self.store.get_room_events(room_id, upto=upto, limit=1)
        stamp = rows[0].stream_pos if rows else 0
        self._bumps[room_id] = (upto, stamp)
        self._bumps.move_to_end(room_id)
        while len(self._bumps) > MAX_BUMP_CACHE:
            self._bumps.popitem(last=False)
        return stamp

    def _direct_rooms(self, user_id: str) -> set[str]:
        raw = self.store.get_account_data(user_id, "", "m.direct")
        out: set[str] = set()
        if raw is None:
            return out
        content = parse_json(raw, strict=False)
        if isinstance(content, dict):
            for rooms in content.values():
                if isinstance(rooms, list):
                    out.update(r for r in rooms if isinstance(r, str))
        return out

    def _state(self, room_id: str, upto: int) -> dict:
        return self.hs.rooms.state_at_group(self.store.room_group_at_cached(room_id, upto))

    def _encrypted(self, room_id: str, upto: int) -> bool:
        return ("m.room.encryption", "") in self._state(room_id, upto)

    def _space_children(self, spaces: frozenset[str], joined: set[str], upto: int) -> set[str]:
        """The rooms the ``m.space.child`` state of ``spaces`` names (C-S API "Spaces": a child
        event whose ``via`` is not a non-empty list is no child), read only in the spaces the
        user is joined to: another space's children are not revealed."""
        out: set[str] = set()
        for space in spaces & joined:
            state = self._state(space, upto)
            ids = {k[1]: v for k, v in state.items() if k[0] == "m.space.child"}
            pdus = self.store.get_pdus(list(ids.values()))
            for child, event_id in ids.items():
                via = (pdus.get(event_id) or {}).get("content", {}).get("via")
                if isinstance(via, list) and via:
                    out.add(child)
        return out

    def _type_ok(self, room_id: str, types, not_types) -> bool:
        ev = self.hs.rooms.current_state_event(room_id, "m.room.create")
        rtype = ev.get("content", {}).get("type") if ev else None
        if not isinstance(rtype, str):
            rtype = None
        if rtype in not_types:
            return False
        return types is None or rtype in types

    def _invite(self, room_id: str, event_id: str) -> dict | None:
        row = self.store.get_event_row(event_id)
        if row is None:
            fm = self.hs.rooms.remote
            stripped = fm.out_of_room_stripped_state(event_id) if fm else None
            if stripped is None:
                return None
        else:
            state = self.hs.rooms.state_at_group(row.sg_before)
            stripped = self.hs.rooms.stripped_state(room_id, state, row)
        return {"invite_state": stripped}

    def _room(
        self, ctx: SyncContext, room_id: str, cfg: RoomConfig, since: SyncToken | None,
        upto: int, now: int, timelines: list[tuple[list[EventRow], list[dict]]],
        old_required: tuple[tuple[str, str], ...] | None = None,
    ) -> dict:  # fmt: skip
        """A joined room: the timeline (newest ``timeline_limit`` events of ``(since, upto]``,
        visible ones only), the ``required_state`` (all of it when the room is new to the
        client, else the keys whose event changed, and those a ``required_state`` wider than
        ``old_required``, the one the room was last sent with, adds: MSC4186 "Changes to
        required_state"), counts and name. The timeline's rows and events are appended to
        ``timelines`` (finished by ``SyncService.bundle_timelines``)."""
        store = self.store
        rooms = self.hs.rooms
        user_id = ctx.requester.user_id
        limit = cfg.timeline_limit
        if since is None:
            rows = store.get_room_events(room_id, upto=upto, limit=limit + 1) if limit else []
        else:
            rows = list(
                store.get_room_events_cached(room_id, after=since.pos, upto=upto, limit=limit + 1)
            )
        limited = len(rows) > limit
        rows = rows[:limit]
        rows.reverse()
        visible = rooms.filter_visible(user_id, rows)
        end_state = self._state(room_id, upto)
        senders = {r.sender for r in visible} | {user_id}
        keys = wanted_state(cfg.required_state, end_state.keys(), user_id, senders)
        if since is not None:
            before = self._state(room_id, since.pos)
            added: set[tuple[str, str]] = set()
            if old_required is not None:
                added = keys - wanted_state(old_required, end_state.keys(), user_id, senders)
            keys = {k for k in keys if k in added or before.get(k) != end_state[k]}
            if ("m.room.member", "$LAZY") in cfg.required_state:
                # The members of this timeline's senders, changed or not: the client may
                # never have been sent them (a sender new to it).
                keys |= {k for k in (("m.room.member", u) for u in senders) if k in end_state}
        sync = self.hs.sync
        members = store.room_members_cached(room_id)
        joined, invited = members.sorted_joined_invited()
        name_id = end_state.get(("m.room.name", ""))
        avatar_id = end_state.get(("m.room.avatar", ""))
        heroes: list[str] = []
        if name_id is None:
            # No name: up to 5 other members to name the room after (as /sync's m.heroes).
            heroes = list(islice((u for u in chain(joined, invited) if u != user_id), 5))
        hero_keys = {("m.room.member", u) for u in heroes} & end_state.keys()
        extra = [end_state[k] for k in hero_keys] + [i for i in (name_id, avatar_id) if i]
        by_id = store.get_event_rows_cached([end_state[k] for k in keys] + extra)
        state_rows = sorted(
            (by_id[end_state[k]] for k in keys if end_state[k] in by_id),
            key=lambda r: r.stream_pos,
        )
        events = [sync._serve(ctx, r, now) for r in visible]
        timelines.append((visible, events))
        room: dict = {
            "required_state": [sync._format(ctx, r, now) for r in state_rows],
            "timeline": events,
            "limited": limited,
            "joined_count": len(joined),
            "invited_count": len(invited),
        }
        if rows:
            room["prev_batch"] = str(SyncToken(rows[0].stream_pos - 1, 0))
        if since is not None:
            room["num_live"] = len(visible)
        name = _content_str(by_id, name_id, "name")
        if name is not None:
            room["name"] = name
        avatar = _content_str(by_id, avatar_id, "url")
        if avatar is not None:
            room["avatar"] = avatar
        if heroes:
            out = []
            for u in heroes:
                hero = {"user_id": u}
                mid = end_state.get(("m.room.member", u))
                for field, key in (("displayname", "displayname"), ("avatar_url", "avatar_url")):
                    value = _content_str(by_id, mid, key)
                    if value is not None:
                        hero[field] = value
                out.append(hero)
            room["heroes"] = out
        counts: dict = {}
        self.hs.notifications.contribute_counts(ctx, room_id, counts)
        room.update(counts["unread_notifications"])
        return room

    # -- extensions ------------------------------------------------------------------------------
    def _global_extensions(self, ctx: SyncContext, req: SlidingRequest, out: dict) -> None:
        """``to_device`` (MSC3885: its own ``since``/``next_batch``, at most ``limit``
        messages), ``e2ee`` (MSC3884: one-time key counts and unused fallback key types always,
        ``device_lists`` since ``pos``) and the global part of ``account_data`` (MSC3959:
        everything on a new connection, then what changed since ``pos``)."""
        ext = req.extensions
        user_id, device_id = ctx.requester.user_id, ctx.requester.device_id
        if ext.to_device:
            events, next_batch = self.hs.e2ee.to_device_batch(
                user_id, device_id, ext.to_device_since, ctx.upto.pos, ext.to_device_limit
            )
            out["to_device"] = {"next_batch": next_batch, "events": events}
        if ext.e2ee:
            e2ee = self.hs.e2ee
            body: dict = {
                "device_one_time_keys_count": e2ee._otk_counts(
                    self.store.count_one_time_keys(user_id, device_id)
                ),
                "device_unused_fallback_key_types": self.store.unused_fallback_key_types(
                    user_id, device_id
                ),
            }
            if ctx.since is not None and ctx.upto.pos > ctx.since.pos:
                changed, left = e2ee.device_list_delta(
                    user_id, ctx.since.pos, ctx.upto.pos, ctx.joined_room_ids or None
                )
                body["device_lists"] = {"changed": changed, "left": left}
            out["e2ee"] = body
        if ext.account_data:
            glob: dict = {}
            self.hs.account_data.contribute_global(ctx, glob)
            out["account_data"] = {
                "global": glob.get("account_data", {}).get("events", []),
                "rooms": {},
            }

    def _room_account_data(
        self, ctx: SyncContext, covered: set[str], before: Mapping[str, SyncToken | None],
        out: dict,
    ) -> Mapping[str, SyncToken | None]:  # fmt: skip
        """The ``account_data`` extension's rooms (MSC3959): for each room it covers, all of
        the room's account data the first time, then what changed since it was last sent."""
        ad = self.hs.account_data
        since = ctx.since
        changed: set[str] = set()
        if since is not None:
            changed = self.store.account_data_rooms_changed(
                ctx.requester.user_id, since.pos, ctx.upto.pos
            )
        per_room: dict[str, list] = out["account_data"]["rooms"]
        for room_id in sorted(covered):
            known = room_id in before
            if known and before[room_id] is None and room_id not in changed:
                continue
            room_since = (before[room_id] or since) if known else None
            room: dict = {}
            ad.contribute_room(_at(ctx, room_since), room_id, room)
            if room.get("account_data"):
                per_room[room_id] = room["account_data"]["events"]
        missed = [r for r, p in before.items() if p is None and r not in covered and r in changed]
        return sent_after(before, covered, missed, since)

    def _receipts(
        self, ctx: SyncContext, covered: set[str], before: Mapping[str, SyncToken | None],
        rooms_out: dict, out: dict,
    ) -> Mapping[str, SyncToken | None]:  # fmt: skip
        """The ``receipts`` extension (MSC3960): for a room it covers that is new to it (or
        sent whole in this response), the receipts on the events of the room's timeline here
        and the user's own; afterwards, the receipts that changed since it was last sent."""
        receipts = self.hs.receipts
        user_id = ctx.requester.user_id
        since = ctx.since
        changed: set[str] = set()
        if since is not None:
            changed = self.store.receipt_rooms_changed(before.keys(), since.pos, ctx.upto.pos)
        rooms: dict[str, dict] = {}
        for room_id in sorted(covered):
            sent = rooms_out.get(room_id)
            if room_id not in before or (sent is not None and sent.get("initial")):
                timeline = sent["timeline"] if sent is not None else []
                event = receipts.receipt_event_on(
                    user_id, room_id, [e["event_id"] for e in timeline], ctx.upto.pos
                )
            else:
                if before[room_id] is None and room_id not in changed:
                    continue
                room_since = before[room_id] or since
                if room_since is None:  # a known room implies a pos: never
                    continue
                event = receipts.receipt_event(user_id, room_id, room_since.pos, ctx.upto.pos)
            if event is not None:
                rooms[room_id] = event
        out["receipts"] = {"rooms": rooms}
        missed = [r for r, p in before.items() if p is None and r not in covered and r in changed]
        return sent_after(before, covered, missed, since)

    def _typing(
        self, ctx: SyncContext, covered: set[str], before: Mapping[str, SyncToken | None],
        out: dict,
    ) -> Mapping[str, SyncToken | None]:  # fmt: skip
        """The ``typing`` extension (MSC3961): who is typing in each room it covers — the
        first time, if anybody; then whenever that changed since it was last sent."""
        typing = self.hs.typing
        since = ctx.since
        changed = typing.rooms_changed(ctx) or set()
        rooms: dict[str, dict] = {}
        for room_id in sorted(covered):
            known = room_id in before
            if known and before[room_id] is None and room_id not in changed:
                continue
            room: dict = {}
            typing.contribute_room(_at(ctx, (before[room_id] or since) if known else None),
                                   room_id, room)  # fmt: skip
            for event in room.get("ephemeral", {}).get("events", []):
                rooms[room_id] = event
        out["typing"] = {"rooms": rooms}
        missed = [r for r, p in before.items() if p is None and r not in covered and r in changed]
        return sent_after(before, covered, missed, since)


def _at(ctx: SyncContext, since: SyncToken | None) -> SyncContext:
    """``ctx`` as of another ``since`` (None: everything)."""
    if since == ctx.since:
        return ctx
    return SyncContext(ctx.requester, since, ctx.upto, ctx.filter, False, ctx.joined_room_ids)


def _drop(sent: Mapping[str, SyncToken | None], gone: set[str]) -> Mapping[str, SyncToken | None]:
    if not gone or not any(r in sent for r in gone):
        return sent
    return {r: p for r, p in sent.items() if r not in gone}


def _content_str(rows: dict, event_id: str | None, key: str) -> str | None:
    """A non-empty string field of a state event's content, if there is one."""
    row = rows.get(event_id) if event_id is not None else None
    value = row.event.get("content", {}).get(key) if row is not None else None
    return value if isinstance(value, str) and value else None


def _has_extension(response: dict) -> bool:
    ext = response["extensions"]
    if ext.get("typing", {}).get("rooms") or ext.get("receipts", {}).get("rooms"):
        return True
    if ext.get("to_device", {}).get("events"):
        return True
    e2ee = ext.get("e2ee", {}).get("device_lists")
    if e2ee and (e2ee["changed"] or e2ee["left"]):
        return True
    ad = ext.get("account_data")
    return bool(ad and (ad["global"] or ad["rooms"]))
