"""Room upgrades (C-S API "Room Upgrades", "Server behaviour"): ``hs.rooms.upgrade_room``.

The steps the spec lists, in its order: the permission check (the user may send
``m.room.tombstone`` in the old room); the replacement room, created by createRoom's machinery
(:meth:`bastion.services.room_create.RoomCreator.create_room`) with a create event carrying
``predecessor`` (``room_id``, and ``event_id`` — the last known event of the old room — except
for v12+ rooms, where the spec lets it be omitted), the old room's ``type`` and
``m.federate``, the transferred state (:data:`bastion.core.room_upgrade.TRANSFERRED_STATE`,
the power levels, the canonical alias, a space's children) and the bans; in the same write the
local aliases and the room directory listing move to the new room; then the tombstone in the
old room, the canonical alias removed from it, and its power levels restricted.

Members: the spec invites nobody (Synapse neither; Element offers to invite). A member of an
invite-only room could then not follow the tombstone, so when the new room's join rule is not
``public`` the old room's joined and invited members are invited: local ones in the new room's
batch, remote ones (at most :data:`MAX_REMOTE_INVITES`, after the tombstone) one by one through
the ordinary invite path, each countersigned by the invitee's server outside the room's lock; a
refused remote invite is logged and does not undo the upgrade.

No room lock is held across a network call: the new room is one batch in one write, each
old-room event one append of the room engine, each remote invite countersigned outside the lock.

When a local user joins a replacement room ("the server should automatically transfer ... the
user's personalized settings"), :meth:`RoomUpgrader.after_join` copies their tags of the
predecessor room (``m.tag``, when the new room has none), their push rules for it
(:func:`bastion.services.push_rules.copy_room_rules`) and adds the new room beside the old one
in their ``m.direct`` lists, as Synapse does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bastion.core.canonical_json import canonical_json, parse_json
from bastion.core.identifiers import parse_user_id
from bastion.core.power_levels import required_power_level
from bastion.core.room_upgrade import (
    TRANSFERRED_STATE,
    direct_with_replacement,
    normalise_power_levels,
    replacement_power_levels,
    restricted_power_levels,
)
from bastion.core.room_versions import get_room_version
from bastion.core.state_keys import CREATE_KEY
from bastion.core.state_keys import POWER_LEVELS_KEY as PL_KEY
from bastion.errors import (
    M_UNSUPPORTED_ROOM_VERSION,
    MatrixError,
    bad_json,
    forbidden,
    invalid_param,
)
from bastion.services.push_rules import copy_room_rules
from bastion.services.room_create import CREATABLE_VERSIONS

if TYPE_CHECKING:
    from bastion.services.rooms import RoomService
    from bastion.storage.interface import Txn

log = logging.getLogger("bastion.rooms")

#: At most this many additional creators in one request.
MAX_ADDITIONAL_CREATORS = 100

TOMBSTONE_BODY = "This room has been replaced"

#: At most this many remote members of a non-public room are invited to its replacement.
MAX_REMOTE_INVITES = 50


class RoomUpgrader:
    """POST /rooms/{roomId}/upgrade (``hs.rooms.upgrade_room``)."""

    def __init__(self, rooms: RoomService) -> None:
        self.rooms = rooms
        self.store = rooms.store
        #: One upgrade of a room at a time (two at once would make two replacement rooms).
        #: Held across this server's own writes only, never a network call.
        self._upgrading: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    async def upgrade_room(
        self, requester, room_id: str, body: dict, *, ip: str | None = None
    ) -> str:
        """Upgrade ``room_id`` to ``body["new_version"]``; returns the replacement room's ID.
        Errors: 400 ``M_UNSUPPORTED_ROOM_VERSION``, 403 when the user may not send a tombstone
        (or is not joined), 400 ``M_BAD_JSON``/``M_INVALID_PARAM`` for a malformed body."""
        version = body.get("new_version")
        if not isinstance(version, str):
            raise bad_json("'new_version' must be a string")
        get_room_version(version)
        if version not in CREATABLE_VERSIONS:
            raise MatrixError(
                M_UNSUPPORTED_ROOM_VERSION, f"cannot create rooms of version {version[:40]}"
            )
        additional = body.get("additional_creators")
        if additional is not None:
            if not isinstance(additional, list) or len(additional) > MAX_ADDITIONAL_CREATORS:
                raise bad_json("'additional_creators' must be an array of user IDs")
            for u in additional:
                if not isinstance(u, str):
                    raise bad_json("'additional_creators' must be an array of user IDs")
                try:
                    parse_user_id(u)
                except MatrixError:
                    raise invalid_param(f"invalid user ID {u[:80]!r}") from None
        entry = self._upgrading.get(room_id)
        if entry is None:
            entry = self._upgrading[room_id] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                return await self._upgrade(requester, room_id, version, additional or [], ip)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._upgrading[room_id]

    async def _upgrade(
        self, requester, room_id: str, version: str, additional: list[str], ip: str | None
    ) -> str:
        rooms = self.rooms
        user_id = requester.user_id
        new_rv = get_room_version(version)
        if rooms.membership_of(room_id, user_id) != "join":
            raise forbidden("you are not joined to this room")
        head = rooms.require_room(room_id)
        old_rv = get_room_version(head.room_version)
        state = dict(head.state)
        pl_event = rooms.current_state_event(room_id, *PL_KEY)
        pl_content = pl_event.get("content", {}) if pl_event else None
        needed = required_power_level("m.room.tombstone", True, pl_content, old_rv)
        upgrader_level = rooms.power_level(room_id, user_id)
        if upgrader_level < needed:
            raise forbidden("you may not upgrade this room (sending m.room.tombstone)")

        rows = self.store.get_event_rows(list(state.values()))
        current = {(r.type, r.state_key): r.event for r in rows.values()}
        create = current.get(CREATE_KEY) or {}
        old_create_content = create.get("content", {})
        creation: dict = {"predecessor": {"room_id": room_id}}
        if not new_rv.room_id_is_create_hash:
            last = self.store.get_room_events(room_id, limit=1)
            if last:
                creation["predecessor"]["event_id"] = last[0].event_id
        room_type = old_create_content.get("type")
        if isinstance(room_type, str):
            creation["type"] = room_type
        if old_create_content.get("m.federate") is False:
            creation["m.federate"] = False
        creators = [user_id]
        if new_rv.privileged_creators and additional:
            extra = [u for u in dict.fromkeys(additional) if u != user_id]
            creation["additional_creators"] = extra
            creators += extra

        copied: list[tuple[str, str, dict]] = []
        for etype in TRANSFERRED_STATE:
            ev = current.get((etype, ""))
            if ev is not None and ev.get("content"):
                copied.append((etype, "", ev["content"]))
        if room_type == "m.space":
            for (t, sk), ev in sorted(current.items(), key=lambda kv: str(kv[0])):
                if t == "m.space.child" and sk is not None and ev.get("content"):
                    copied.append((t, sk, ev["content"]))
        aliases = self.store.get_aliases_for_room(room_id)
        canonical = current.get(("m.room.canonical_alias", ""))
        canonical_content = canonical.get("content") if canonical else None
        if canonical_content:
            copied.append(("m.room.canonical_alias", "", canonical_content))

        initial = list(copied)
        after: list[tuple[str, str, dict]] = []
        members = rooms.store.get_room_members(room_id)
        bans = sorted(u for u, m in members.items() if m == "ban" and u != user_id)
        if pl_content is not None:
            old_pl = normalise_power_levels(pl_content, old_rv)
            first, final = replacement_power_levels(
                old_pl, user_id, upgrader_level, new_rv, creators,
                [t for t, _, _ in copied],
            )  # fmt: skip
            initial.insert(0, ("m.room.power_levels", "", first))
        else:
            final = None
        after += [("m.room.member", u, {"membership": "ban"}) for u in bans]
        join_rule = (current.get(("m.room.join_rules", "")) or {}).get("content", {})
        public = join_rule.get("join_rule") == "public"
        to_invite = [] if public else [
            u for u, m in sorted(members.items()) if m in ("join", "invite") and u != user_id
        ]  # fmt: skip
        after += [
            ("m.room.member", u, {"membership": "invite"}) for u in to_invite if rooms.is_local(u)
        ]
        remote_invites = [u for u in to_invite if not rooms.is_local(u)][:MAX_REMOTE_INVITES]
        if final is not None:
            after.append(("m.room.power_levels", "", final))

        published = self.store.is_room_public(room_id)
        now = rooms.hs.now_ms()

        def move(conn: Txn, new_room_id: str) -> None:
            # C-S "Room Upgrades" step 4: the local aliases, and the directory listing.
            for alias in aliases:
                row = self.store.get_alias(alias)
                if row is None or row["room_id"] != room_id:
                    continue
                self.store.delete_alias_in(conn, alias)
                self.store.add_alias_sync(conn, alias, new_room_id, row["creator"], now)
            if published:
                self.store.set_room_public_sync(conn, room_id, False)

        body = {
            "room_version": version,
            "preset": "public_chat" if public else "private_chat",
            "visibility": "public" if published else "private",
            "creation_content": creation,
            "initial_state": [{"type": t, "state_key": sk, "content": c} for t, sk, c in initial],
        }
        new_room_id, _ = await rooms.create_room(
            requester, body, ip=ip, after_state=after, in_write=move
        )
        engine = rooms.engine
        await engine.append_local_event(
            room_id, user_id, "m.room.tombstone",
            {"body": TOMBSTONE_BODY, "replacement_room": new_room_id}, "",
        )  # fmt: skip
        if canonical_content and (
            canonical_content.get("alias") or canonical_content.get("alt_aliases")
        ):
            await self._best_effort(room_id, user_id, "m.room.canonical_alias", {})
        if pl_content is not None:
            restricted = restricted_power_levels(pl_content, old_rv)
            if restricted is not None:
                await self._best_effort(room_id, user_id, "m.room.power_levels", restricted)
        if remote_invites and rooms.remote is not None:
            for u in remote_invites:
                try:
                    await rooms.update_membership(user_id, new_room_id, u, "invite", ip=ip)
                except MatrixError as e:
                    log.warning("upgrade of %s: inviting %s failed: %s", room_id, u, e.message)
        log.info("room %s upgraded to %s (version %s)", room_id, new_room_id, version)
        return new_room_id

    async def after_join(self, user_id: str, room_id: str) -> None:
        """A local user joined ``room_id``: when it replaces a room they were in (its create
        event's ``predecessor``), carry their tags, push rules and direct-chat listing over.
        One state lookup for every other join."""
        create = self.rooms.current_state_event(room_id, *CREATE_KEY)
        pred = (create or {}).get("content", {}).get("predecessor")
        old = pred.get("room_id") if isinstance(pred, dict) else None
        if not isinstance(old, str) or old == room_id:
            return
        if self.store.get_membership(old, user_id) is None:
            return
        store = self.store
        rules_copied = False

        def fn(conn: Txn) -> None:
            nonlocal rules_copied
            rules_text = store.get_push_rules_doc_in(conn, user_id)
            if rules_text is not None:
                rules = copy_room_rules(parse_json(rules_text, strict=False), old, room_id)
                if rules is not None:
                    store.put_push_rules_doc_in(
                        conn, user_id, canonical_json(rules).decode("utf-8")
                    )
                    rules_copied = True
            tags = store.get_account_data_in(conn, user_id, old, "m.tag")
            if tags is not None and store.get_account_data_in(conn, user_id, room_id,
                                                               "m.tag") is None:  # fmt: skip
                store.set_account_data_in(conn, user_id, room_id, "m.tag", tags)
            direct = store.get_account_data_in(conn, user_id, "", "m.direct")
            if direct is None:
                return
            try:
                new = direct_with_replacement(parse_json(direct, strict=False), old, room_id)
                text = None if new is None else canonical_json(new).decode("utf-8")
            except MatrixError:
                return  # content that does not parse or encode is left alone
            if text is not None:
                store.set_account_data_in(conn, user_id, "", "m.direct", text)

        await store.transaction(fn)
        if rules_copied:
            self.rooms.hs.notifications.forget_rules(user_id)

    async def _best_effort(self, room_id: str, user_id: str, etype: str, content: dict) -> None:
        """An old-room change the upgrader may lack the power for (the spec: "if possible")."""
        try:
            await self.rooms.engine.append_local_event(room_id, user_id, etype, content, "")
        except MatrixError as e:
            log.info("upgrade of %s: %s not sent: %s", room_id, etype, e.message)
