"""createRoom (C-S API "Creation"): the mandatory event order, presets, ``initial_state``,
``power_level_content_override``, invites and the alias, appended through the room engine as one
batch in one write (:meth:`bastion.services.room_engine.RoomEngine.append_new_room`)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.core.identifiers import parse_room_alias, parse_user_id
from bastion.core.room_versions import get_room_version
from bastion.core.state_keys import POWER_LEVELS_KEY as PL_KEY
from bastion.errors import (
    M_FORBIDDEN,
    M_ROOM_IN_USE,
    M_UNKNOWN,
    M_UNRECOGNIZED,
    M_UNSUPPORTED_ROOM_VERSION,
    MatrixError,
    bad_json,
    invalid_param,
    not_found,
)
from bastion.services.room_engine import RoomBatch

if TYPE_CHECKING:
    from bastion.services.rooms import RoomService
    from bastion.storage.interface import Txn

log = logging.getLogger("bastion.rooms")

#: Room versions this server creates rooms in (v1–v2 need opaque event IDs and hash pairs in
#: prev_events; creating them is not supported).
CREATABLE_VERSIONS = frozenset(str(n) for n in range(3, 13))

PRESETS = {
    "private_chat": ("invite", "shared", "can_join"),
    "trusted_private_chat": ("invite", "shared", "can_join"),
    "public_chat": ("public", "shared", "forbidden"),
}


class RoomCreator:
    """POST /createRoom (``hs.rooms.create_room``)."""

    def __init__(self, rooms: RoomService) -> None:
        self.rooms = rooms
        self.hs = rooms.hs
        self.store = rooms.store
        self.engine = rooms.engine

    async def create_room(
        self, requester, body: dict, *, ip: str | None = None,
        after_state: list[tuple[str, str, dict]] | None = None,
        in_write: Callable[[Txn, str], None] | None = None,
    ) -> tuple[str, str | None]:  # fmt: skip
        """POST /createRoom (C-S API "Creation"): the mandatory event order, presets,
        initial_state, power_level_content_override, invites, aliases. Returns (room_id, alias).

        For room upgrades (:mod:`bastion.services.room_upgrade`), never from a client's body:
        ``after_state`` events (type, state key, content; memberships allowed) are appended by
        the creator after the invites, in the same batch; ``in_write(conn, room_id)`` runs in
        the write that persists the room."""
        user_id = requester.user_id
        version = body.get("room_version", self.hs.config.default_room_version)
        if not isinstance(version, str):
            raise bad_json("'room_version' must be a string")
        rv = get_room_version(version)
        if version not in CREATABLE_VERSIONS:
            raise MatrixError(
                M_UNSUPPORTED_ROOM_VERSION, f"cannot create rooms of version {version}"
            )

        def opt(key: str, typ, what: str):
            v = body.get(key)
            if v is not None and not isinstance(v, typ):
                raise bad_json(f"'{key}' must be {what}")
            return v

        visibility = opt("visibility", str, "a string") or "private"
        if visibility not in ("public", "private"):
            raise invalid_param("'visibility' must be 'public' or 'private'")
        preset = opt("preset", str, "a string")
        if preset is None:
            preset = "public_chat" if visibility == "public" else "private_chat"
        if preset not in PRESETS:
            raise invalid_param(f"unknown preset {preset[:40]!r}")
        name = opt("name", str, "a string")
        topic = opt("topic", str, "a string")
        alias_name = opt("room_alias_name", str, "a string")
        is_direct = opt("is_direct", bool, "a boolean")
        creation_content = opt("creation_content", dict, "an object") or {}
        pl_override = opt("power_level_content_override", dict, "an object")
        invites = opt("invite", list, "an array") or []
        initial_state = opt("initial_state", list, "an array") or []
        if body.get("invite_3pid"):
            raise MatrixError(
                M_UNRECOGNIZED, "third-party invites are not supported by this server"
            )

        for u in invites:
            if not isinstance(u, str):
                raise bad_json("'invite' must be an array of user IDs")
            try:
                parse_user_id(u, historical=True)
            except MatrixError:
                raise invalid_param(f"invalid user ID in 'invite': {u[:80]!r}") from None
            if not self.rooms.is_local(u):
                if self.rooms.remote is None:
                    raise MatrixError(
                        M_FORBIDDEN, "this server does not federate: cannot invite " + u
                    )
            elif not self.store.user_exists(u):
                raise not_found(f"unknown user {u}")
        invites = [u for u in dict.fromkeys(invites) if u != user_id]
        # The guard (issue 9): the room_create rate limit, and the invites as invites.
        await self.hs.guard.before_room_create(user_id, invites, ip=ip)

        states: list[tuple[str, str, dict]] = []
        for i, item in enumerate(initial_state):
            if not isinstance(item, dict):
                raise bad_json(f"initial_state[{i}] must be an object")
            t, sk, c = item.get("type"), item.get("state_key", ""), item.get("content")
            if not isinstance(t, str) or not t:
                raise bad_json(f"initial_state[{i}].type must be a non-empty string")
            if not isinstance(sk, str):
                raise bad_json(f"initial_state[{i}].state_key must be a string")
            if not isinstance(c, dict):
                raise bad_json(f"initial_state[{i}].content must be an object")
            if t in ("m.room.create", "m.room.member"):
                raise invalid_param(f"initial_state may not contain {t} events")
            states.append((t, sk, c))

        alias = None
        if alias_name is not None:
            alias = f"#{alias_name}:{self.hs.server_name}"
            try:
                parse_room_alias(alias)
            except MatrixError:
                raise invalid_param("invalid room_alias_name") from None
            if ":" in alias_name or not alias_name:
                raise invalid_param("room_alias_name must be a non-empty localpart")
            if self.store.get_alias(alias) is not None:
                raise MatrixError(M_ROOM_IN_USE, "room alias already taken")

        trusted = preset == "trusted_private_chat"
        # 1. m.room.create
        create_content = dict(creation_content)
        create_content["room_version"] = version
        if not rv.implicit_room_creator:
            create_content["creator"] = user_id
        else:
            create_content.pop("creator", None)
        if rv.privileged_creators and trusted and invites:
            additional = create_content.get("additional_creators") or []
            if not isinstance(additional, list):
                raise bad_json("'additional_creators' must be an array")
            create_content["additional_creators"] = list(dict.fromkeys([*additional, *invites]))
        batch: RoomBatch | None = None

        def add(sender: str, etype: str, content: dict, state_key: str | None = "") -> None:
            if batch is None:  # the create event is built first, in the loop below
                raise RuntimeError("no room is being built")
            try:
                batch.add(sender, etype, content, state_key)
            except MatrixError as e:
                if e.errcode == M_FORBIDDEN:
                    raise invalid_param(f"{etype}: {e.message}") from None
                raise

        # The room ID is random, or (v12) the create event's hash: the engine gives every
        # create event its own timestamp, and an ID already taken (a room created before a clock
        # step back) is never reused.
        for _ in range(5):
            batch = self.engine.new_room(
                "" if rv.room_id_is_create_hash else self._new_room_id(), version
            )
            add(user_id, "m.room.create", create_content)
            if not self.store.room_exists(batch.room_id):
                break
        else:
            raise MatrixError(M_UNKNOWN, "could not choose a unique room ID", 500)
        # 2. the creator's join
        add(user_id, "m.room.member", {"membership": "join", **self.rooms.profile_content(user_id)},
            user_id)  # fmt: skip
        # 3. power levels
        pl_given = [c for t, sk, c in states if (t, sk) == PL_KEY]
        if pl_given:
            pl = dict(pl_given[-1])
        else:
            pl = self._default_power_levels(user_id, rv, preset, invites)
        if pl_override:
            pl.update(pl_override)
        if rv.privileged_creators and isinstance(pl.get("users"), dict):
            creators = {user_id, *create_content.get("additional_creators", [])}
            if creators & set(pl["users"]):
                raise invalid_param("room creators may not be listed in power levels")
        add(user_id, "m.room.power_levels", pl)
        # 4. canonical alias
        if alias is not None:
            add(user_id, "m.room.canonical_alias", {"alias": alias})
        # 5. preset events (initial_state takes precedence)
        given = {(t, sk) for t, sk, _ in states}
        join_rule, history, guest = PRESETS[preset]
        for etype, content in (
            ("m.room.join_rules", {"join_rule": join_rule}),
            ("m.room.history_visibility", {"history_visibility": history}),
            ("m.room.guest_access", {"guest_access": guest}),
        ):
            if (etype, "") not in given:
                add(user_id, etype, content)
        # 6. initial_state
        for t, sk, c in states:
            if (t, sk) == PL_KEY:
                continue
            add(user_id, t, c, sk)
        # 7. name and topic
        if name is not None:
            add(user_id, "m.room.name", {"name": name})
        if topic is not None:
            add(user_id, "m.room.topic", {
                "topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]},
            })  # fmt: skip
        # 8. invites (remote users: after the room exists, each countersigned by their server)
        remote_invites = [u for u in invites if not self.rooms.is_local(u)]
        for u in invites:
            if u in remote_invites:
                continue
            invite: dict[str, object] = {"membership": "invite"}
            if is_direct:
                invite["is_direct"] = True
            add(user_id, "m.room.member", invite, u)
        # 9. an upgrade's last events (bans, invites, the restored power levels)
        for t, sk, c in after_state or ():
            add(user_id, t, c, sk)

        room_id = batch.room_id
        now = self.hs.now_ms()

        def extra(conn) -> None:
            self.store.create_room_sync(
                conn, room_id, version, user_id, now, visibility == "public"
            )
            if alias is not None and not self.store.add_alias_sync(
                conn, alias, room_id, user_id, now
            ):
                raise MatrixError(M_ROOM_IN_USE, "room alias already taken")
            if in_write is not None:
                in_write(conn, room_id)

        await self.engine.append_new_room(batch, extra)
        for u in remote_invites:
            try:
                await self.rooms.update_membership(
                    user_id, room_id, u, "invite",
                    extra_content={"is_direct": True} if is_direct else None,
                )  # fmt: skip
            except MatrixError as e:
                log.warning("createRoom %s: inviting %s failed: %s", room_id, u, e.message)
        return room_id, alias

    def _new_room_id(self) -> str:
        return f"!{secrets.token_urlsafe(18)}:{self.hs.server_name}"

    @staticmethod
    def _default_power_levels(creator: str, rv, preset: str, invites: list[str]) -> dict:
        users: dict[str, int] = {}
        if not rv.privileged_creators:
            users[creator] = 100
            if preset == "trusted_private_chat":
                for u in invites:
                    users[u] = 100
        return {
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": 150 if rv.privileged_creators else 100,
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 50 if preset == "public_chat" else 0,
            "notifications": {"room": 50},
        }
