"""The room service (``hs.rooms``): what local users do in rooms (send, state, redact,
membership, createRoom, aliases) and reading rooms back for clients with history visibility
applied.

Every event is appended through the room engine (``hs.rooms.engine``,
:mod:`bastion.services.room_engine`), which owns the per-room lock, the room heads and the
append path: building an event (S-S API "Auth events selection", "Signing Events"; C-S API
"Room Events"), authorising it against the current state (403 ``M_FORBIDDEN`` with the rule's
reason), checking its size (413 ``M_TOO_LARGE``) and persisting it in one write.
"""

from __future__ import annotations

import logging
import secrets

from bastion.core.auth_rules import JAUVS
from bastion.core.identifiers import parse_room_alias, parse_user_id
from bastion.core.power_levels import (
    named_level,
    required_power_level,
    user_power_level,
)
from bastion.core.room_versions import get_room_version
from bastion.core.state_keys import CREATE_KEY
from bastion.core.state_keys import HISTORY_VISIBILITY_KEY as HV_KEY
from bastion.core.state_keys import JOIN_RULES_KEY as JR_KEY
from bastion.core.state_keys import POWER_LEVELS_KEY as PL_KEY
from bastion.core.visibility import is_event_visible
from bastion.errors import MatrixError
from bastion.services.room_engine import MAX_PREV_EVENTS, RoomEngine, RoomHead
from bastion.storage.sqlite.rooms import EventRow, StateMap

log = logging.getLogger("bastion.rooms")

__all__ = ["MAX_PREV_EVENTS", "RoomHead", "RoomService"]

#: Room versions this server creates rooms in (v1–v2 need opaque event IDs and hash pairs in
#: prev_events; creating them is not supported).
CREATABLE_VERSIONS = frozenset(str(n) for n in range(3, 13))

#: The event types of invite/knock stripped state (C-S "Stripped state"; since 1.16 the
#: create event is required).
STRIPPED_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)

PRESETS = {
    "private_chat": ("invite", "shared", "can_join"),
    "trusted_private_chat": ("invite", "shared", "can_join"),
    "public_chat": ("public", "shared", "forbidden"),
}


def err(errcode: str, message: str, status: int = 400) -> MatrixError:
    return MatrixError(errcode, message, status)


class RoomService:
    def __init__(self, hs) -> None:
        self.hs = hs
        self.store = hs.store
        #: The one writer of rooms' histories (lock, heads, appends).
        self.engine = RoomEngine(hs)

    # ------------------------------------------------------------------------------------------
    # Room state and helpers
    # ------------------------------------------------------------------------------------------
    def forget_head(self, room_id: str) -> None:
        """Drop the cached head of a room: the next read loads it from the store."""
        self.engine.forget_head(room_id)

    def require_room(self, room_id: str) -> RoomHead:
        """The room's head (read only), 404 ``M_NOT_FOUND`` for a room we do not hold."""
        return self.engine.require_room(room_id)

    def current_state_event(self, room_id: str, etype: str, state_key: str = "") -> dict | None:
        head = self.engine.head(room_id)
        if head is None:
            return None
        eid = head.state.get((etype, state_key))
        return self.store.get_event(eid) if eid else None

    def membership_of(self, room_id: str, user_id: str) -> str | None:
        row = self.store.get_membership(room_id, user_id)
        return row["membership"] if row else None

    def power_level(self, room_id: str, user_id: str) -> int | float:
        head = self.require_room(room_id)
        rv = get_room_version(head.room_version)
        pl = self.current_state_event(room_id, *PL_KEY)
        create = self.current_state_event(room_id, *CREATE_KEY)
        return user_power_level(user_id, create, pl["content"] if pl else None, rv)

    def can_send_state(self, room_id: str, user_id: str, etype: str) -> bool:
        head = self.require_room(room_id)
        rv = get_room_version(head.room_version)
        pl = self.current_state_event(room_id, *PL_KEY)
        needed = required_power_level(etype, True, pl["content"] if pl else None, rv)
        return self.power_level(room_id, user_id) >= needed

    def _profile_content(self, user_id: str) -> dict:
        if not self.hs.server_name or not user_id.endswith(":" + self.hs.server_name):
            return {}
        getter = getattr(self.store, "get_profile", None)
        profile = getter(user_id) if getter else {}
        out = {}
        for key in ("displayname", "avatar_url"):
            v = profile.get(key) if isinstance(profile, dict) else None
            if isinstance(v, str):
                out[key] = v
        return out

    def _is_local(self, user_id: str) -> bool:
        return user_id.split(":", 1)[1] == self.hs.server_name

    # ------------------------------------------------------------------------------------------
    # Public write API (used by the HTTP layer and other services)
    # ------------------------------------------------------------------------------------------
    async def send_message_event(
        self, sender: str, device_id: str | None, room_id: str, type: str, content: dict,  # noqa: A002
        txn_id: str | None,
    ) -> str:  # fmt: skip
        """Send a message event; idempotent per (sender, device, room, txn_id)."""
        if type == "m.room.redaction":
            redacts = content.get("redacts")
            if not isinstance(redacts, str):
                raise err("M_BAD_JSON", "m.room.redaction needs a string 'redacts' in content")
            reason = content.get("reason")
            return await self.redact_event(
                sender, device_id, room_id, redacts, reason, txn_id, extra=content
            )
        txn = (sender, device_id, "send:" + room_id, txn_id) if txn_id and device_id else None
        return await self.engine.append_local_event(room_id, sender, type, content, None, txn=txn)

    async def send_state_event(
        self,
        sender: str,
        room_id: str,
        type: str,
        state_key: str,
        content: dict,  # noqa: A002
    ) -> str:
        """Send a state event. Re-sending the current content by the same sender returns the
        existing event (no duplicate state events)."""
        if type == "m.room.member":
            membership = content.get("membership")
            if not isinstance(membership, str):
                raise err("M_BAD_JSON", "m.room.member content needs a string 'membership'")
            extra = {k: v for k, v in content.items() if k != "membership"}
            return await self.update_membership(
                sender, room_id, state_key, membership, extra_content=extra
            )
        if type == "m.room.canonical_alias":
            self._check_canonical_alias(room_id, content)
        head = self.require_room(room_id)
        cur = head.state.get((type, state_key))
        if cur is not None:
            ev = self.store.get_event(cur)
            if ev is not None and ev.get("sender") == sender and ev.get("content") == content:
                return cur
        return await self.engine.append_local_event(room_id, sender, type, content, state_key)

    def _check_canonical_alias(self, room_id: str, content: dict) -> None:
        aliases = []
        alias = content.get("alias")
        if alias is not None:
            aliases.append(alias)
        alt = content.get("alt_aliases")
        if alt is not None:
            if not isinstance(alt, list):
                raise err("M_INVALID_PARAM", "'alt_aliases' must be an array")
            aliases.extend(alt)
        for a in aliases:
            try:
                parse_room_alias(a)
            except MatrixError:
                raise err("M_INVALID_PARAM", f"invalid room alias {str(a)[:80]!r}") from None
            row = self.store.get_alias(a)
            if row is None or row["room_id"] != room_id:
                raise err("M_BAD_ALIAS", f"{a} does not point to this room")

    async def redact_event(
        self, sender: str, device_id: str | None, room_id: str, target_id: str,
        reason: object = None, txn_id: str | None = None, extra: dict | None = None,
    ) -> str:  # fmt: skip
        """PUT /rooms/{roomId}/redact/{eventId}/{txnId} (C-S "Redactions")."""
        if reason is not None and not isinstance(reason, str):
            raise err("M_BAD_JSON", "'reason' must be a string")
        head = self.require_room(room_id)
        rv = get_room_version(head.room_version)
        content: dict = dict(extra or {})
        content.pop("redacts", None)
        if reason is not None:
            content["reason"] = reason
        if rv.redacts_in_content:
            content["redacts"] = target_id

        def check(base: RoomHead) -> None:
            target = self.store.get_event_row(target_id)
            if target is None or target.room_id != room_id:
                raise err("M_NOT_FOUND", "unknown event", 404)
            if target.sender != sender:
                pl = self.current_state_event(room_id, *PL_KEY)
                needed = named_level(pl["content"] if pl else None, "redact", rv)
                if self.power_level(room_id, sender) < needed:
                    raise err("M_FORBIDDEN", "you may not redact other users' events", 403)

        txn = (sender, device_id, "redact:" + room_id, txn_id) if txn_id and device_id else None
        return await self.engine.append_local_event(
            room_id, sender, "m.room.redaction", content, None, txn=txn, redacts=target_id,
            check=check,
        )  # fmt: skip

    async def update_membership(
        self, actor_user_id: str, room_id: str, target_user_id: str, membership: str,
        reason: str | None = None, extra_content: dict | None = None,
        via: list[str] | None = None,
    ) -> str:  # fmt: skip
        """Change a membership: join, leave (also reject an invite, kick, unban), invite, ban,
        knock. Errors: 404 unknown room or user, 403 when the auth rules refuse.

        Over federation (``hs.federation_membership``): a join, knock or leave of a room this
        server is not in goes through a server in the room (``via``, the inviter's server, the
        servers we last saw in it); an invite of a remote user is countersigned by their server
        first (outside the room's lock).

        ``join_authorised_via_users_server`` is never taken from the client (C-S "Restricted
        rooms": the resident server chooses the authoriser): it is removed from
        ``extra_content`` and set only by :meth:`restricted_join_authoriser`."""
        if membership not in ("join", "leave", "invite", "ban", "knock"):
            raise err("M_BAD_JSON", f"unknown membership {membership[:40]!r}")
        if reason is not None and not isinstance(reason, str):
            raise err("M_BAD_JSON", "'reason' must be a string")
        try:
            parse_user_id(target_user_id, historical=True)
        except MatrixError:
            raise err("M_INVALID_PARAM", "invalid user ID") from None
        extra_content = {k: v for k, v in (extra_content or {}).items() if k != JAUVS}
        fm = self._federation()
        remote = fm is not None and target_user_id == actor_user_id and membership in (
            "join", "knock", "leave",
        ) and not fm.is_in_room(room_id)  # fmt: skip
        servers = fm.candidate_servers(room_id, actor_user_id, via) if remote else []
        if servers and (
            membership != "leave"
            or self.membership_of(room_id, actor_user_id) in ("invite", "knock")
        ):
            content = {**(extra_content or {}), "membership": membership}
            if reason is not None:
                content["reason"] = reason
            if membership == "join":
                for k, v in self._profile_content(target_user_id).items():
                    content.setdefault(k, v)
            return await fm.remote_membership(actor_user_id, room_id, membership, content, servers)
        self.require_room(room_id)
        countersign = None
        if membership == "invite":
            if not self._is_local(target_user_id):
                if fm is None:
                    raise err("M_FORBIDDEN", "this server does not federate: cannot invite")

                async def countersign(event: dict, event_id: str, version: str) -> dict:
                    return await fm.remote_invite(event, event_id, room_id, version)

            elif not self.store.user_exists(target_user_id):
                raise err("M_NOT_FOUND", "unknown user", 404)
        content: dict = {}
        if extra_content:
            content.update(extra_content)
        content["membership"] = membership
        if reason is not None:
            content["reason"] = reason
        if membership == "join" and target_user_id == actor_user_id:
            for k, v in self._profile_content(target_user_id).items():
                content.setdefault(k, v)
        current = self.membership_of(room_id, target_user_id)
        if (
            membership == "leave"
            and target_user_id != actor_user_id
            and current not in ("join", "invite", "knock", "ban")
        ):
            raise err("M_FORBIDDEN", "the target user is not in the room", 403)
        if membership == "join" and current == "ban":
            raise err("M_FORBIDDEN", "you are banned from this room", 403)
        if membership == "join" and target_user_id == actor_user_id and current not in (
            "invite", "join",
        ):  # fmt: skip
            try:
                authoriser = self.restricted_join_authoriser(room_id, target_user_id)
            except MatrixError:
                authoriser = None  # the auth rules refuse the join (403)
            if authoriser is not None:
                content[JAUVS] = authoriser
        else:
            authoriser = None
        return await self.engine.append_local_event(
            room_id, actor_user_id, "m.room.member", content, target_user_id,
            authoriser=authoriser, countersign=countersign,
        )  # fmt: skip

    def _federation(self):
        """``hs.federation_membership`` when this server federates (a federation listener is
        configured), else None: remote users cannot be invited and remote rooms not joined."""
        fm = getattr(self.hs, "federation_membership", None)
        return fm if fm is not None and self.hs.config.federation_address is not None else None

    def restricted_join_authoriser(self, room_id: str, user_id: str) -> str | None:
        """The one restricted-join authoriser, for local joins and for make_join/send_join
        (C-S and S-S API "Restricted rooms", v8+ ``restricted``, v10+ ``knock_restricted``).

        None when no authoriser is needed (the user is invited or joined, or the join rule is
        not restricted). Otherwise the user must be joined to one of the rooms of the rule's
        ``allow`` list that this server is in, and the authoriser is the local joined member with
        the highest power level who may invite. Errors: 400 ``M_UNABLE_TO_AUTHORISE_JOIN`` when
        this server is in none of the allowed rooms, 403 ``M_FORBIDDEN`` when the user is in none
        of them, 400 ``M_UNABLE_TO_GRANT_JOIN`` when no local user may invite."""
        head = self.require_room(room_id)
        rv = get_room_version(head.room_version)
        if self.membership_of(room_id, user_id) in ("invite", "join"):
            return None
        jr = self.current_state_event(room_id, *JR_KEY)
        content = jr.get("content", {}) if jr else {}
        rule = content.get("join_rule")
        if not (
            (rule == "restricted" and rv.restricted_join_rule)
            or (rule == "knock_restricted" and rv.knock_restricted_join_rule)
        ):
            return None
        allow = content.get("allow")
        allowed_rooms = [
            a["room_id"]
            for a in (allow if isinstance(allow, list) else [])
            if isinstance(a, dict)
            and a.get("type") == "m.room_membership"
            and isinstance(a.get("room_id"), str)
        ]
        known = [r for r in allowed_rooms if self._server_in_room(r)]
        if not known:
            raise err("M_UNABLE_TO_AUTHORISE_JOIN", "this server is in none of the allowed rooms")
        if not any(self.membership_of(r, user_id) == "join" for r in known):
            raise err("M_FORBIDDEN", "you are not a member of any room this room allows", 403)
        pl = self.current_state_event(room_id, *PL_KEY)
        invite_level = named_level(pl["content"] if pl else None, "invite", rv)
        candidates = sorted(
            (self.power_level(room_id, u), u)
            for u in self.store.get_joined_users(room_id)
            if self._is_local(u)
        )
        candidates = [c for c in candidates if c[0] >= invite_level]
        if not candidates:
            raise err("M_UNABLE_TO_GRANT_JOIN", "no user of this server may invite you")
        return candidates[-1][1]

    def _server_in_room(self, room_id: str) -> bool:
        """Whether a local user is joined to the room."""
        return self.store.room_exists(room_id) and any(
            self._is_local(u) for u in self.store.get_joined_users(room_id)
        )

    # ------------------------------------------------------------------------------------------
    # createRoom
    # ------------------------------------------------------------------------------------------
    async def create_room(self, requester, body: dict) -> tuple[str, str | None]:
        """POST /createRoom (C-S API "Creation"): the mandatory event order, presets,
        initial_state, power_level_content_override, invites, aliases. Returns (room_id, alias)."""
        user_id = requester.user_id
        version = body.get("room_version", self.hs.config.default_room_version)
        if not isinstance(version, str):
            raise err("M_BAD_JSON", "'room_version' must be a string")
        rv = get_room_version(version)
        if version not in CREATABLE_VERSIONS:
            raise err("M_UNSUPPORTED_ROOM_VERSION", f"cannot create rooms of version {version}")

        def opt(key: str, typ, what: str):
            v = body.get(key)
            if v is not None and not isinstance(v, typ):
                raise err("M_BAD_JSON", f"'{key}' must be {what}")
            return v

        visibility = opt("visibility", str, "a string") or "private"
        if visibility not in ("public", "private"):
            raise err("M_INVALID_PARAM", "'visibility' must be 'public' or 'private'")
        preset = opt("preset", str, "a string")
        if preset is None:
            preset = "public_chat" if visibility == "public" else "private_chat"
        if preset not in PRESETS:
            raise err("M_INVALID_PARAM", f"unknown preset {preset[:40]!r}")
        name = opt("name", str, "a string")
        topic = opt("topic", str, "a string")
        alias_name = opt("room_alias_name", str, "a string")
        is_direct = opt("is_direct", bool, "a boolean")
        creation_content = opt("creation_content", dict, "an object") or {}
        pl_override = opt("power_level_content_override", dict, "an object")
        invites = opt("invite", list, "an array") or []
        initial_state = opt("initial_state", list, "an array") or []
        if body.get("invite_3pid"):
            raise err("M_UNRECOGNIZED", "third-party invites are not supported by this server")

        for u in invites:
            if not isinstance(u, str):
                raise err("M_BAD_JSON", "'invite' must be an array of user IDs")
            try:
                parse_user_id(u, historical=True)
            except MatrixError:
                raise err("M_INVALID_PARAM", f"invalid user ID in 'invite': {u[:80]!r}") from None
            if not self._is_local(u):
                if self._federation() is None:
                    raise err("M_FORBIDDEN", "this server does not federate: cannot invite " + u)
            elif not self.store.user_exists(u):
                raise err("M_NOT_FOUND", f"unknown user {u}", 404)
        invites = [u for u in dict.fromkeys(invites) if u != user_id]

        states: list[tuple[str, str, dict]] = []
        for i, item in enumerate(initial_state):
            if not isinstance(item, dict):
                raise err("M_BAD_JSON", f"initial_state[{i}] must be an object")
            t, sk, c = item.get("type"), item.get("state_key", ""), item.get("content")
            if not isinstance(t, str) or not t:
                raise err("M_BAD_JSON", f"initial_state[{i}].type must be a non-empty string")
            if not isinstance(sk, str):
                raise err("M_BAD_JSON", f"initial_state[{i}].state_key must be a string")
            if not isinstance(c, dict):
                raise err("M_BAD_JSON", f"initial_state[{i}].content must be an object")
            if t in ("m.room.create", "m.room.member"):
                raise err("M_INVALID_PARAM", f"initial_state may not contain {t} events")
            states.append((t, sk, c))

        alias = None
        if alias_name is not None:
            alias = f"#{alias_name}:{self.hs.server_name}"
            try:
                parse_room_alias(alias)
            except MatrixError:
                raise err("M_INVALID_PARAM", "invalid room_alias_name") from None
            if ":" in alias_name or not alias_name:
                raise err("M_INVALID_PARAM", "room_alias_name must be a non-empty localpart")
            if self.store.get_alias(alias) is not None:
                raise err("M_ROOM_IN_USE", "room alias already taken")

        trusted = preset == "trusted_private_chat"
        # 1. m.room.create
        create_content = dict(creation_content)
        create_content["room_version"] = version
        if not rv.implicit_room_creator:
            create_content["creator"] = user_id
        else:
            create_content.pop("creator", None)
        if rv.privileged_creators and trusted and invites:
            extra = create_content.get("additional_creators") or []
            if not isinstance(extra, list):
                raise err("M_BAD_JSON", "'additional_creators' must be an array")
            create_content["additional_creators"] = list(dict.fromkeys([*extra, *invites]))
        batch = None

        def add(sender: str, etype: str, content: dict, state_key: str | None = "") -> None:
            try:
                batch.add(sender, etype, content, state_key)
            except MatrixError as e:
                if e.errcode == "M_FORBIDDEN":
                    raise err("M_INVALID_PARAM", f"{etype}: {e.message}") from None
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
            raise err("M_UNKNOWN", "could not choose a unique room ID", 500)
        # 2. the creator's join
        add(user_id, "m.room.member", {"membership": "join", **self._profile_content(user_id)},
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
                raise err("M_INVALID_PARAM", "room creators may not be listed in power levels")
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
        remote_invites = [u for u in invites if not self._is_local(u)]
        for u in invites:
            if u in remote_invites:
                continue
            content = {"membership": "invite"}
            if is_direct:
                content["is_direct"] = True
            add(user_id, "m.room.member", content, u)

        room_id = batch.room_id
        now = self.hs.now_ms()

        def extra(conn) -> None:
            self.store.create_room_sync(
                conn, room_id, version, user_id, now, visibility == "public"
            )
            if alias is not None and not self.store.add_alias_sync(
                conn, alias, room_id, user_id, now
            ):
                raise err("M_ROOM_IN_USE", "room alias already taken")

        await self.engine.append_new_room(batch, extra)
        for u in remote_invites:
            try:
                await self.update_membership(
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

    # ------------------------------------------------------------------------------------------
    # Aliases
    # ------------------------------------------------------------------------------------------
    def resolve_room(self, room_id_or_alias: str) -> str:
        """A room ID, or the room an alias of ours points to (404 otherwise)."""
        if room_id_or_alias.startswith("#"):
            try:
                parse_room_alias(room_id_or_alias)
            except MatrixError:
                raise err("M_INVALID_PARAM", "invalid room alias") from None
            row = self.store.get_alias(room_id_or_alias)
            if row is None:
                raise err("M_NOT_FOUND", "room alias not found", 404)
            return row["room_id"]
        if not room_id_or_alias.startswith("!"):
            raise err("M_INVALID_PARAM", "expected a room ID or a room alias")
        return room_id_or_alias

    # ------------------------------------------------------------------------------------------
    # Reading: access and visibility
    # ------------------------------------------------------------------------------------------
    def state_at_group(self, group: int | None) -> StateMap:
        return self.store.get_state_group(group)

    def history_visibility_now(self, room_id: str) -> str:
        ev = self.current_state_event(room_id, *HV_KEY)
        v = ev["content"].get("history_visibility") if ev else None
        return v if isinstance(v, str) else "shared"

    def read_access(self, user_id: str, room_id: str) -> int | None:
        """Whether ``user_id`` may read the room: returns the stream position reads are capped
        at (None: no cap). Joined: no cap; left or banned after having joined: up to their
        leave; world_readable rooms: no cap. Otherwise 403 (unknown rooms too: nothing about
        their existence leaks)."""
        row = self.store.get_membership(room_id, user_id)
        if row is not None and row["membership"] == "join":
            return None
        if self.engine.head(room_id) is not None and self.history_visibility_now(room_id) == (
            "world_readable"
        ):
            return None
        if row is not None and row["membership"] in ("leave", "ban"):
            history = self.store.get_user_membership_history(user_id, room_id)
            if any(m == "join" for m, _ in history):
                return row["stream_pos"]
        raise err("M_FORBIDDEN", "you are not a member of this room", 403)

    def filter_visible(self, user_id: str, rows: list[EventRow]) -> list[EventRow]:
        """The rows the user may see (C-S "History visibility", server behaviour)."""
        if not rows:
            return rows
        joins: dict[str, list[int]] = {}
        contents: dict[str, dict | None] = {}

        def content_of(eid: str | None) -> dict | None:
            if eid is None:
                return None
            if eid not in contents:
                ev = self.store.get_event(eid)
                contents[eid] = ev.get("content") if ev else None
            return contents[eid]

        out = []
        for row in rows:
            room_id = row.room_id
            if room_id not in joins:
                joins[room_id] = [
                    p
                    for m, p in self.store.get_user_membership_history(user_id, room_id)
                    if m == "join"
                ]
            state = self.state_at_group(row.sg_before)
            hv = content_of(state.get(HV_KEY)) or {}
            vis = [hv.get("history_visibility")]
            mem_c = content_of(state.get(("m.room.member", user_id))) or {}
            mems = [mem_c.get("membership")]
            if row.type == "m.room.history_visibility" and row.state_key == "":
                vis.append(row.event["content"].get("history_visibility"))
            if row.type == "m.room.member" and row.state_key == user_id:
                mems.append(row.event["content"].get("membership"))
            joined_later = any(p > row.stream_pos for p in joins[room_id])
            if is_event_visible(tuple(vis), tuple(mems), joined_later):
                out.append(row)
        return out

    # ------------------------------------------------------------------------------------------
    # Client event format (C-S API "Room event format")
    # ------------------------------------------------------------------------------------------
    def client_event(
        self, row: EventRow, requester=None, now: int | None = None, *, with_room_id: bool = True,
        _depth: int = 0,
    ) -> dict:  # fmt: skip
        ev = row.event
        out: dict = {
            "event_id": row.event_id,
            "sender": ev["sender"],
            "type": ev["type"],
            "content": ev.get("content", {}),
            "origin_server_ts": ev["origin_server_ts"],
        }
        if with_room_id:
            out["room_id"] = row.room_id
        if "state_key" in ev:
            out["state_key"] = ev["state_key"]
        now = self.hs.now_ms() if now is None else now
        unsigned: dict = {"age": max(0, now - ev["origin_server_ts"])}
        if (
            requester is not None
            and row.txn_id is not None
            and row.txn_user == requester.user_id
            and row.txn_device == requester.device_id
        ):
            unsigned["transaction_id"] = row.txn_id
        if row.replaces_state:
            prev = self.store.get_event(row.replaces_state)
            unsigned["replaces_state"] = row.replaces_state
            if prev is not None:
                unsigned["prev_content"] = prev.get("content", {})
                unsigned["prev_sender"] = prev.get("sender")
        if row.redacted_because and _depth == 0:
            red = self.store.get_event_row(row.redacted_because)
            if red is not None:
                unsigned["redacted_because"] = self.client_event(
                    red, requester, now, with_room_id=with_room_id, _depth=1
                )
        if ev["type"] == "m.room.redaction":
            redacts = ev.get("redacts")
            if redacts is None:
                redacts = out["content"].get("redacts")
            if isinstance(redacts, str):
                out["redacts"] = redacts
                if "redacts" not in out["content"] and not row.redacted_because:
                    out["content"] = {**out["content"], "redacts": redacts}
        out["unsigned"] = unsigned
        return out

    def stripped_state(self, room_id: str, state: StateMap, extra: EventRow | None) -> list[dict]:
        """C-S "Stripped state" for invites and knocks: the room's create, join rules, name,
        avatar, canonical alias, encryption and topic events, plus the member event."""
        out = []
        ids = [state[(t, "")] for t in STRIPPED_TYPES if (t, "") in state]
        rows = self.store.get_event_rows(ids)
        for eid in ids:
            r = rows.get(eid)
            if r is not None:
                e = r.event
                out.append({"type": e["type"], "state_key": e.get("state_key", ""),
                            "sender": e["sender"], "content": e.get("content", {})})  # fmt: skip
        if extra is not None:
            e = extra.event
            out.append({"type": e["type"], "state_key": e.get("state_key", ""),
                        "sender": e["sender"], "content": e.get("content", {})})  # fmt: skip
        return out

    def public_rooms(self, limit: int | None, since: str | None, term: str | None) -> dict:
        """This server's published rooms, largest first, optionally filtered by a search term,
        paged with ``since`` tokens ``o<offset>`` (C-S API "Listing rooms"; also served to other
        servers, S-S API "Public Room Directory")."""
        chunk = [self.room_summary_fields(r) for r in self.hs.store.get_public_room_ids()]
        if term:
            t = term.casefold()
            chunk = [
                c for c in chunk
                if any(t in str(c.get(k, "")).casefold()
                       for k in ("name", "topic", "canonical_alias", "room_id"))
            ]  # fmt: skip
        chunk.sort(key=lambda c: (-c["num_joined_members"], c["room_id"]))
        total = len(chunk)
        offset = 0
        if since:
            if not since.startswith("o") or not since[1:].isdigit() or len(since) > 12:
                raise MatrixError("M_INVALID_PARAM", "invalid 'since' token", 400)
            offset = int(since[1:])
        end = total if limit is None else offset + limit
        out: dict = {"chunk": chunk[offset:end], "total_room_count_estimate": total}
        if end < total:
            out["next_batch"] = f"o{end}"
        if offset > 0:
            out["prev_batch"] = f"o{max(0, offset - (limit or offset))}"
        return out

    def room_summary_fields(self, room_id: str) -> dict:
        """For the public room directory: name, topic, alias, avatar, counts, join rule."""
        state = self.store.get_current_state_ids(room_id)
        rows = self.store.get_event_rows(
            [
                eid
                for k, eid in state.items()
                if k[1] == ""
                and k[0]
                in (
                    "m.room.name",
                    "m.room.topic",
                    "m.room.canonical_alias",
                    "m.room.avatar",
                    "m.room.join_rules",
                    "m.room.history_visibility",
                    "m.room.guest_access",
                    "m.room.create",
                )  # fmt: skip
            ]
        )
        c = {r.type: r.event.get("content", {}) for r in rows.values()}
        out: dict = {
            "room_id": room_id,
            "num_joined_members": len(self.store.get_joined_users(room_id)),
            "world_readable": c.get("m.room.history_visibility", {}).get("history_visibility")
            == "world_readable",
            "guest_can_join": c.get("m.room.guest_access", {}).get("guest_access") == "can_join",
            "join_rule": c.get("m.room.join_rules", {}).get("join_rule", "invite"),
        }
        for key, etype, field_ in (
            ("name", "m.room.name", "name"),
            ("topic", "m.room.topic", "topic"),
            ("canonical_alias", "m.room.canonical_alias", "alias"),
            ("avatar_url", "m.room.avatar", "url"),
            ("room_type", "m.room.create", "type"),
        ):
            v = c.get(etype, {}).get(field_)
            if isinstance(v, str):
                out[key] = v
        return out

    # ------------------------------------------------------------------------------------------
    # Reading: state, messages, context, members
    # ------------------------------------------------------------------------------------------
    def state_for_reader(self, user_id: str, room_id: str) -> StateMap:
        """The state a reader sees: current for members, at their leave for former members."""
        cap = self.read_access(user_id, room_id)
        if cap is None:
            return self.store.get_current_state_ids(room_id)
        return self.state_at_group(self.store.room_group_at(room_id, cap))

    def state_events(self, state: StateMap) -> list[EventRow]:
        rows = self.store.get_event_rows(list(state.values()))
        return sorted(rows.values(), key=lambda r: r.stream_pos)

    def paginate(
        self, requester, room_id: str, from_pos: int | None, to_pos: int | None,
        backwards: bool, limit: int, event_filter: dict | None,
    ) -> tuple[list[EventRow], int | None, int]:  # fmt: skip
        """GET /messages: visible events from ``from_pos`` in the direction asked. Returns
        (rows, end position or None when the end was reached, start position)."""
        from bastion.services.filtering import event_filter_allows

        cap = self.read_access(requester.user_id, room_id)
        top = self.store.current_pos if cap is None else cap
        if from_pos is None:
            from_pos = top if backwards else 0
        start = from_pos
        out: list[EventRow] = []
        cursor = min(from_pos, top) if backwards else from_pos
        reached_end = False
        for _ in range(20):
            need = limit - len(out)
            batch = max(need * 2, 20)
            if backwards:
                lower = to_pos if to_pos is not None else None
                rows = self.store.get_room_events(room_id, after=lower, upto=cursor, limit=batch)
            else:
                upper = top if to_pos is None else min(to_pos, top)
                rows = self.store.get_room_events(
                    room_id, after=cursor, upto=upper, limit=batch, backwards=False
                )
            if not rows:
                reached_end = True
                break
            visible = {r.event_id for r in self.filter_visible(requester.user_id, rows)}
            for r in rows:
                cursor = r.stream_pos - 1 if backwards else r.stream_pos
                if r.event_id not in visible:
                    continue
                if event_filter is not None and not event_filter_allows(
                    event_filter, r.event, room_id
                ):
                    continue
                out.append(r)
                if len(out) >= limit:
                    break
            if len(out) >= limit:
                break
            if len(rows) < batch:
                reached_end = True
                break
        return out, (None if reached_end else cursor), start

    def context(
        self, requester, room_id: str, event_id: str, limit: int, event_filter: dict | None
    ) -> dict:
        """GET /rooms/{roomId}/context/{eventId} pieces: the event, events before and after,
        and the state at the last returned event."""
        cap = self.read_access(requester.user_id, room_id)
        row = self.store.get_event_row(event_id, served=True)
        if row is None or row.room_id != room_id or (cap is not None and row.stream_pos > cap):
            raise err("M_NOT_FOUND", "event not found", 404)
        if not self.filter_visible(requester.user_id, [row]):
            raise err("M_NOT_FOUND", "event not found", 404)
        before_n = limit // 2
        after_n = limit - before_n
        before, b_end, _ = self.paginate(
            requester, room_id, row.stream_pos - 1, None, True, before_n, event_filter
        )
        after, a_end, _ = self.paginate(
            requester, room_id, row.stream_pos, None, False, after_n, event_filter
        )
        last = after[-1] if after else row
        start = b_end if b_end is not None else (before[-1].stream_pos - 1 if before else
                                                 row.stream_pos - 1)  # fmt: skip
        end = a_end if a_end is not None else last.stream_pos
        return {
            "event": row,
            "before": before,
            "after": after,
            "start": start,
            "end": end,
            "state": self.state_events(self.state_at_group(last.sg_after)),
        }

    def members(
        self, requester, room_id: str, at_pos: int | None, membership: str | None,
        not_membership: str | None,
    ) -> list[EventRow]:  # fmt: skip
        cap = self.read_access(requester.user_id, room_id)
        pos = at_pos
        if cap is not None:
            pos = cap if pos is None else min(pos, cap)
        if pos is None:
            state = self.store.get_current_state_ids(room_id)
        else:
            state = self.state_at_group(self.store.room_group_at(room_id, pos))
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        out = []
        for r in self.store.get_event_rows(ids).values():
            m = r.event.get("content", {}).get("membership")
            if membership is not None and m != membership:
                continue
            if not_membership is not None and m == not_membership:
                continue
            out.append(r)
        out.sort(key=lambda r: r.stream_pos)
        return out

    def joined_members(self, requester, room_id: str) -> dict:
        if self.membership_of(room_id, requester.user_id) != "join":
            raise err("M_FORBIDDEN", "you are not joined to this room", 403)
        state = self.store.get_current_state_ids(room_id)
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        joined = {}
        for r in self.store.get_event_rows(ids).values():
            c = r.event.get("content", {})
            if c.get("membership") != "join":
                continue
            info = {}
            if isinstance(c.get("displayname"), str):
                info["display_name"] = c["displayname"]
            if isinstance(c.get("avatar_url"), str):
                info["avatar_url"] = c["avatar_url"]
            joined[r.state_key] = info
        return joined
