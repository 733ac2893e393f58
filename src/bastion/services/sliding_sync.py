"""Simplified Sliding Sync (MSC4186, ``POST /_matrix/client/unstable/org.matrix.simplified_msc3575
/sync``): lists of the user's rooms sorted by their latest event, windows over them, room
subscriptions, and the ``to_device``, ``e2ee`` and ``account_data`` extensions.

Built on the /sync pieces: a response covers ``(since, upto]`` of the same stream positions
(``SyncToken``), rooms are read through the same store methods and visibility filter, and the
extensions are the /sync contributors' output reshaped (to-device messages are acknowledged and
deleted exactly as /sync does, through ``E2EE.contribute_global``).

Per-connection state lives in memory only, bounded (least recently used connections are
dropped): a ``pos`` maps to the stream position it stood for and the rooms already sent as of
it. A ``pos`` the server does not know (never given, dropped, or before a restart) is answered
400 ``M_UNKNOWN_POS`` and the client starts afresh, as the MSC allows.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain, islice
from typing import TYPE_CHECKING

from bastion.core.canonical_json import parse_json
from bastion.core.sliding_sync import (
    RoomConfig,
    SlidingRequest,
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
    token: SyncToken
    #: Rooms the client has been sent (their ``initial`` section) as of this position.
    sent: frozenset[str]
    #: The connection's room subscriptions as of this position (sticky).
    subscriptions: dict[str, RoomConfig]


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
        while True:
            await self.hs.notifications.settle_current()
            upto = SyncToken(self.store.current_pos, self.hs.typing.serial)
            response, sent, subs = self.compute(requester, req, since, upto)
            remaining = deadline - loop.time()
            if since is None or response["rooms"] or _has_extension(response) or remaining <= 0:
                break
            # No await since ``upto`` was read (as /sync): a later commit's wake-up reaches us.
            keys = {user_id, *self.store.get_rooms_for_user(user_id)}
            with self.hs.notifier.listen(keys) as listener:
                woken = await listener.wait(remaining)
            if not woken:
                upto = SyncToken(self.store.current_pos, self.hs.typing.serial)
                response, sent, subs = self.compute(requester, req, since, upto)
                break
        response["pos"] = self._remember(key, _Position(upto, sent, subs))
        return response

    def compute(
        self, requester, req: SlidingRequest, since: _Position | None, upto: SyncToken
    ) -> tuple[dict, frozenset[str], dict[str, RoomConfig]]:
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
            lists_out[lst.name] = {"count": len(members)}
            for r in window(members, lst.ranges):
                wanted[r] = wanted[r].merged(lst.config) if r in wanted else lst.config
        subs = sticky_subscriptions(since.subscriptions if since is not None else {}, req)
        for room_id, cfg in subs.items():
            # Only rooms the user is in (or invited to): others are left out, nothing leaks.
            if room_id in listed:
                wanted[room_id] = wanted[room_id].merged(cfg) if room_id in wanted else cfg

        sent_before = since.sent if since is not None else frozenset()
        changed: set[str] | None = None
        at_since: dict[str, tuple[str, str, int]] = {}
        if since_tok is not None:
            at_since = (
                memberships
                if since_tok.pos == upto.pos  # nothing since: the same memberships
                else store.get_memberships_at(user_id, since_tok.pos)
            )
            changed = store.rooms_with_events_between(joined, since_tok.pos, upto.pos)
            changed |= {
                r for r, (_m, _e, p) in memberships.items() if p > since_tok.pos and r in wanted
            }
        rooms_out: dict[str, dict] = {}
        now = self.hs.now_ms()
        for room_id, cfg in wanted.items():
            membership, event_id, _pos = listed[room_id]
            # New to the client, or joined since it was last sent (as an invite): all of it.
            fresh = room_id not in sent_before or (
                membership == "join" and at_since.get(room_id, ("",))[0] != "join"
            )
            if not fresh and changed is not None and room_id not in changed:
                continue
            room_since = None if fresh else since_tok
            if membership == "invite":
                room = self._invite(room_id, event_id)
                if room is None:
                    continue
            else:
                room = self._room(ctx, room_id, cfg, room_since, upto.pos, now)
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
        if since_tok is not None:
            for room_id in sent_before - listed.keys():
                membership, _e, left_pos = memberships.get(room_id, ("", "", 0))
                if membership not in ("leave", "ban") or left_pos <= since_tok.pos:
                    gone.add(room_id)
                    continue
                room = self._room(ctx, room_id, LEFT_ROOM, since_tok, left_pos, now)
                room["bump_stamp"] = left_pos
                rooms_out[room_id] = room
                gone.add(room_id)
        response: dict = {"lists": lists_out, "rooms": rooms_out, "extensions": {}}
        self._extensions(ctx, req, rooms_out, response["extensions"])
        self._ephemeral(ctx, req, wanted, joined, sent_before, response["extensions"])
        return response, (sent_before | frozenset(rooms_out)) - gone, subs

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
        upto: int, now: int,
    ) -> dict:  # fmt: skip
        """A joined room: the timeline (newest ``timeline_limit`` events of ``(since, upto]``,
        visible ones only), the ``required_state`` (all of it when the room is new to the
        client, else the keys whose event changed), counts and name."""
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
            keys = {k for k in keys if before.get(k) != end_state[k]}
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
        room: dict = {
            "required_state": [sync._format(ctx, r, now) for r in state_rows],
            "timeline": [sync._format(ctx, r, now) for r in visible],
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
    def _extensions(
        self, ctx: SyncContext, req: SlidingRequest, rooms_out: dict, out: dict
    ) -> None:  # fmt: skip
        ext = req.extensions
        if ext.to_device:
            since = ext.to_device_since
            td_ctx = SyncContext(
                ctx.requester,
                SyncToken(since) if since is not None else None,
                ctx.upto,
                ctx.filter,
                False,
                ctx.joined_room_ids,
            )
            out["to_device"] = {
                "next_batch": str(ctx.upto.pos),
                "events": self.hs.e2ee.to_device_events(td_ctx),
            }
        if ext.e2ee:
            e2ee = self.hs.e2ee
            user_id, device_id = ctx.requester.user_id, ctx.requester.device_id
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
            ad = self.hs.account_data
            glob: dict = {}
            ad.contribute_global(ctx, glob)
            per_room: dict = {}
            # Incremental: only the rooms whose account data changed since (one query).
            named = ad.rooms_changed(ctx)
            rooms = ctx.joined_room_ids if named is None else named & ctx.joined_room_ids
            for room_id in sorted(rooms):
                room: dict = {}
                ad.contribute_room(ctx, room_id, room)
                if room.get("account_data"):
                    per_room[room_id] = room["account_data"]["events"]
            out["account_data"] = {
                "global": glob.get("account_data", {}).get("events", []),
                "rooms": per_room,
            }

    def _ephemeral(
        self, ctx: SyncContext, req: SlidingRequest, wanted: dict[str, RoomConfig],
        joined: set[str], sent_before: frozenset[str], out: dict,
    ) -> None:  # fmt: skip
        """The ``typing`` and ``receipts`` extensions: for the joined rooms the lists' windows
        and the subscriptions cover, the /sync contributors' ``m.typing`` and ``m.receipt``
        events — what changed since ``pos``, or all of it for a room new to the client."""
        parts = [
            (name, service)
            for name, service, on in (
                ("typing", self.hs.typing, req.extensions.typing),
                ("receipts", self.hs.receipts, req.extensions.receipts),
            )
            if on
        ]
        if not parts:
            return
        fresh_ctx = SyncContext(
            ctx.requester, None, ctx.upto, ctx.filter, False, ctx.joined_room_ids
        )
        results: dict[str, dict] = {name: {} for name, _ in parts}
        # The rooms the client already has need asking only if the service names them as
        # changed since ``pos`` (one look-up each, not one per room).
        changed: dict[str, set[str] | None] = {
            name: service.rooms_changed(ctx) if ctx.since is not None else None
            for name, service in parts
        }
        for room_id in wanted:
            if room_id not in joined:
                continue
            known = room_id in sent_before
            room_ctx = ctx if known else fresh_ctx
            for name, service in parts:
                named = changed[name]
                if known and named is not None and room_id not in named:
                    continue
                room: dict = {}
                service.contribute_room(room_ctx, room_id, room)
                for event in room.get("ephemeral", {}).get("events", []):
                    results[name][room_id] = event
        for name, rooms in results.items():
            out[name] = {"rooms": rooms}


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
