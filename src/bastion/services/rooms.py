"""The room engine (``hs.rooms``): build, authorise and persist events of local rooms; read
them back for clients with history visibility applied.

Building an event (S-S API "Auth events selection", "Signing Events"; C-S API "Room Events"):
``prev_events`` are the room's forward extremities (at most 20), ``depth`` one more than the
deepest, ``auth_events`` chosen by :func:`auth_types_for_event` from the current state; then
the content hash and our signature, and the event ID from the reference hash. The event is
authorised with the auth rules against the current state (403 ``M_FORBIDDEN`` with the rule's
reason), checked for size (413 ``M_TOO_LARGE``), and persisted with its state change, forward
extremities, membership rows and transaction ID in one write. Writes are serialised per room
(an ``asyncio.Lock``) so that prev_events and state stay consistent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass, field

from bastion.core.auth_rules import auth_types_for_event, check_auth_against_state
from bastion.core.events import (
    check_event_size,
    compute_event_id,
    compute_room_id_v12,
    redact,
    sign_event,
)
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
from bastion.storage.sqlite.rooms import EventRow, NewEvent, StateMap

log = logging.getLogger("bastion.rooms")

MAX_PREV_EVENTS = 20

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


@dataclass
class RoomHead:
    """The in-memory current state of a room, changed only under the room's lock."""

    room_id: str
    room_version: str
    state: StateMap = field(default_factory=dict)
    group: int | None = None
    chain_len: int = 0
    extremities: list[str] = field(default_factory=list)
    depth: int = 0

    def copy(self) -> RoomHead:
        return RoomHead(
            self.room_id, self.room_version, dict(self.state), self.group, self.chain_len,
            list(self.extremities), self.depth,
        )  # fmt: skip


class RoomService:
    def __init__(self, hs) -> None:
        self.hs = hs
        self.store = hs.store
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._heads: dict[str, RoomHead] = {}

    # ------------------------------------------------------------------------------------------
    # Room state and helpers
    # ------------------------------------------------------------------------------------------
    def _head(self, room_id: str) -> RoomHead | None:
        head = self._heads.get(room_id)
        if head is None:
            row = self.store.load_room_head(room_id)
            if row is None:
                return None
            head = RoomHead(
                room_id, row.room_version, row.state, row.group, row.chain_len,
                row.extremities, row.depth,
            )  # fmt: skip
            self._heads[room_id] = head
        return head

    def forget_head(self, room_id: str) -> None:
        """Drop the cached head of a room whose state another writer changed (a room joined
        over federation): the next read loads it from the store."""
        self._heads.pop(room_id, None)

    def require_room(self, room_id: str) -> RoomHead:
        head = self._head(room_id)
        if head is None:
            raise err("M_NOT_FOUND", "unknown room", 404)
        return head

    def current_state_event(self, room_id: str, etype: str, state_key: str = "") -> dict | None:
        head = self._head(room_id)
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
    # Building and persisting
    # ------------------------------------------------------------------------------------------
    def _build(
        self, head: RoomHead, pending: dict[str, dict], sender: str, etype: str, content: dict,
        state_key: str | None = None, *, redacts: str | None = None, bad_status: int = 403,
    ) -> NewEvent:  # fmt: skip
        """Build, authorise and sign one event on top of ``head`` (which it advances)."""
        version = head.room_version
        rv = get_room_version(version)
        ev: dict = {
            "type": etype,
            "sender": sender,
            "content": content,
            "origin_server_ts": self.hs.now_ms(),
            "depth": head.depth + 1,
            "prev_events": head.extremities[-MAX_PREV_EVENTS:],
            "auth_events": [],
        }
        if not (rv.room_id_is_create_hash and etype == "m.room.create"):
            ev["room_id"] = head.room_id
        if state_key is not None:
            ev["state_key"] = state_key
        if redacts is not None and not rv.redacts_in_content:
            ev["redacts"] = redacts
        keys = auth_types_for_event(ev, version)
        ev["auth_events"] = [head.state[k] for k in keys if k in head.state]

        def lookup(eid: str) -> dict | None:
            return pending.get(eid) or self.store.get_event(eid)

        auth_state: dict = {}
        for k in [*keys, CREATE_KEY]:
            eid = head.state.get(k)
            if eid is not None:
                e = lookup(eid)
                if e is not None:
                    auth_state[k] = e
        check_event_size(ev)
        # Rule 5.2 (v8+): a join authorised via one of our users carries our signature, which
        # sign_event adds below; the event is built and signed here, so that holds.
        # v12: the room ID is the create event's ID; our own room's create event is trusted, so
        # pass its ID instead of hashing it on every check.
        create_id = (
            "$" + ev["room_id"][1:] if rv.room_id_is_create_hash and "room_id" in ev else None
        )
        result = check_auth_against_state(
            ev, auth_state, version,
            verify_signature=lambda _ev, server: server == self.hs.server_name,
            create_event_id=create_id,
        )  # fmt: skip
        if not result:
            raise err("M_FORBIDDEN", result.reason or "not allowed by the auth rules", bad_status)
        signed = sign_event(
            ev, version, self.hs.server_name, self.hs.signing_key.key_id, self.hs.signing_key.key
        )
        check_event_size(signed)
        event_id = compute_event_id(signed, version)
        if etype == "m.room.create" and rv.room_id_is_create_hash:
            head.room_id = compute_room_id_v12(signed)
        replaces = None
        state_after = None
        if state_key is not None:
            replaces = head.state.get((etype, state_key))
            head.state[(etype, state_key)] = event_id
            state_after = dict(head.state)
        head.extremities = [event_id]
        head.depth += 1
        pending[event_id] = signed
        wake: tuple[str, ...] = ()
        if etype == "m.room.member" and state_key is not None:
            wake = (state_key,)
        return NewEvent(
            signed, event_id, head.room_id, head.depth,
            state_after=state_after, replaces_state=replaces, wake=wake,
        )  # fmt: skip

    async def _persist(
        self, head: RoomHead, events: list[NewEvent], base: RoomHead | None, extra=None
    ) -> list[NewEvent]:
        """Persist events built on ``head`` in one write; then ``head`` becomes the room's."""
        group = base.group if base else None
        chain = base.chain_len if base else 0

        sender = getattr(self.hs, "federation_sender", None)

        def fn(conn):
            if extra is not None:
                extra(conn)
            result = self.store.persist_events_sync(conn, events, group, chain)
            if sender is not None:  # queued for the other servers in the same transaction
                sender.enqueue_events_in(conn, events)
            return result

        head.group, head.chain_len = await self.hs.store.db.write(fn)
        self._heads[head.room_id] = head
        return events

    async def _send(
        self, room_id: str, sender: str, etype: str, content: dict,
        state_key: str | None = None, *, txn: tuple[str, str, str, str] | None = None,
        redacts: str | None = None, check=None, prepare=None,
    ) -> str:  # fmt: skip
        """Build, authorise and persist one event in an existing room; return its ID.
        ``prepare(event, event_id, head)``, when given, may return a replacement PDU before
        the write (a remote invite comes back countersigned by the invitee's server)."""
        async with self._locks[room_id]:
            if txn is not None:
                existing = self.store.get_txn_event(*txn)
                if existing is not None:
                    return existing
            base = self.require_room(room_id)
            if check is not None:
                check(base)
            head = base.copy()
            ne = self._build(head, {}, sender, etype, content, state_key, redacts=redacts)
            ne.txn = txn
            if prepare is not None:
                ne.event = await prepare(ne.event, ne.event_id, base)
            if redacts is not None:
                ne.redaction_target = self._redaction_target(base, sender, redacts)
            await self._persist(head, [ne], base)
            return ne.event_id

    def _redaction_target(self, head: RoomHead, sender: str, target_id: str):
        """C-S "Redactions" / rooms v3+ "Handling redactions": the target is redacted when the
        redaction's sender may redact it (the target's sender, or the redact power level —
        checked before building; for local users the domains always match)."""
        row = self.store.get_event_row(target_id)
        if row is None or row.room_id != head.room_id or row.redacted_because:
            return None
        return (target_id, redact(row.event, head.room_version))

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
        return await self._send(room_id, sender, type, content, None, txn=txn)

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
        return await self._send(room_id, sender, type, content, state_key)

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
        return await self._send(
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
        first."""
        if membership not in ("join", "leave", "invite", "ban", "knock"):
            raise err("M_BAD_JSON", f"unknown membership {membership[:40]!r}")
        if reason is not None and not isinstance(reason, str):
            raise err("M_BAD_JSON", "'reason' must be a string")
        try:
            parse_user_id(target_user_id, historical=True)
        except MatrixError:
            raise err("M_INVALID_PARAM", "invalid user ID") from None
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
        prepare = None
        if membership == "invite":
            if not self._is_local(target_user_id):
                if fm is None:
                    raise err("M_FORBIDDEN", "this server does not federate: cannot invite")

                async def prepare(event: dict, event_id: str, head: RoomHead) -> dict:
                    return await fm.remote_invite(event, event_id, room_id, head.room_version)

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
            authoriser = self._restricted_join_authoriser(room_id, target_user_id)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        return await self._send(
            room_id, actor_user_id, "m.room.member", content, target_user_id, prepare=prepare
        )

    def _federation(self):
        """``hs.federation_membership`` when this server federates (a federation listener is
        configured), else None: remote users cannot be invited and remote rooms not joined."""
        fm = getattr(self.hs, "federation_membership", None)
        return fm if fm is not None and self.hs.config.federation_address is not None else None

    def _restricted_join_authoriser(self, room_id: str, user_id: str) -> str | None:
        """C-S "Restricted rooms" (v8+ ``restricted``, v10+ ``knock_restricted``): when the
        user meets a condition of the join rule's ``allow`` list (membership of another room),
        the local member with the highest power level who may invite authorises the join."""
        head = self.require_room(room_id)
        rv = get_room_version(head.room_version)
        jr = self.current_state_event(room_id, *JR_KEY)
        content = jr.get("content", {}) if jr else {}
        rule = content.get("join_rule")
        if not (
            (rule == "restricted" and rv.restricted_join_rule)
            or (rule == "knock_restricted" and rv.knock_restricted_join_rule)
        ):
            return None
        allow = content.get("allow")
        if not isinstance(allow, list):
            return None
        if not any(
            isinstance(a, dict)
            and a.get("type") == "m.room_membership"
            and isinstance(a.get("room_id"), str)
            and self.membership_of(a["room_id"], user_id) == "join"
            for a in allow
        ):
            return None
        pl = self.current_state_event(room_id, *PL_KEY)
        invite_level = named_level(pl["content"] if pl else None, "invite", rv)
        candidates = [
            (self.power_level(room_id, u), u)
            for u in self.store.get_joined_users(room_id)
            if self._is_local(u)
        ]
        candidates = [c for c in candidates if c[0] >= invite_level]
        return max(candidates)[1] if candidates else None

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
        room_id = "" if rv.room_id_is_create_hash else self._new_room_id()
        head = RoomHead(room_id, version)
        pending: dict[str, dict] = {}
        events: list[NewEvent] = []

        def add(sender: str, etype: str, content: dict, state_key: str | None = "") -> None:
            try:
                ne = self._build(head, pending, sender, etype, content, state_key)
            except MatrixError as e:
                if e.errcode == "M_FORBIDDEN":
                    raise err("M_INVALID_PARAM", f"{etype}: {e.message}") from None
                raise
            events.append(ne)

        add(user_id, "m.room.create", create_content)
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

        room_id = head.room_id
        for ne in events:
            ne.room_id = room_id
        now = self.hs.now_ms()

        def extra(conn) -> None:
            self.store.create_room_sync(
                conn, room_id, version, user_id, now, visibility == "public"
            )
            if alias is not None and not self.store.add_alias_sync(
                conn, alias, room_id, user_id, now
            ):
                raise err("M_ROOM_IN_USE", "room alias already taken")

        async with self._locks[room_id]:
            await self._persist(head, events, None, extra)
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
        if self._head(room_id) is not None and self.history_visibility_now(room_id) == (
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
        avatar, canonical alias, encryption and topic events (the list the spec recommends),
        then the invite or knock itself, then the inviter's own ``m.room.member`` event.

        The inviter's member event is one of the events "not described here" the spec lets a
        server add (as Synapse does): without it a client has no name for a room without an
        ``m.room.name`` and shows a direct-message invite as "Empty room"; with it the room is
        named after the inviter's display name."""
        ids = [state[(t, "")] for t in STRIPPED_TYPES if (t, "") in state]
        inviter_member = None
        if extra is not None:
            sender = extra.event["sender"]
            if sender != extra.event.get("state_key"):
                inviter_member = state.get(("m.room.member", sender))
        rows = self.store.get_event_rows(ids + ([inviter_member] if inviter_member else []))
        events = [rows[eid].event for eid in ids if eid in rows]
        if extra is not None:
            events.append(extra.event)
        if inviter_member is not None and inviter_member in rows:
            events.append(rows[inviter_member].event)
        return [
            {"type": e["type"], "state_key": e.get("state_key", ""), "sender": e["sender"],
             "content": e.get("content", {})}
            for e in events
        ]  # fmt: skip

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
