"""The room service (``hs.rooms``): what local users do in rooms (send, state, redact,
membership, restricted joins), and the one entry point to the room modules, each of one
concern, whose public methods it exposes:

* :mod:`~bastion.services.room_engine` — the per-room lock, the heads and every append;
* :mod:`~bastion.services.room_create` — createRoom;
* :mod:`~bastion.services.room_upgrade` — room upgrades;
* :mod:`~bastion.services.room_aliases` — resolving aliases, canonical alias checks;
* :mod:`~bastion.services.room_access` — read access and history visibility;
* :mod:`~bastion.services.room_reading` — state, /messages, /context, members;
* :mod:`~bastion.services.room_format` — the client event format;
* :mod:`~bastion.services.room_directory` — the public room directory.

Every event is appended through the room engine (``hs.rooms.engine``,
:mod:`bastion.services.room_engine`), which owns the per-room lock, the room heads and the
append path: building an event (S-S API "Auth events selection", "Signing Events"; C-S API
"Room Events"), authorising it against the current state (403 ``M_FORBIDDEN`` with the rule's
reason), checking its size (413 ``M_TOO_LARGE``) and persisting it in one write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core.auth_rules import JAUVS
from bastion.core.identifiers import parse_user_id, server_name_of
from bastion.core.power_levels import (
    named_level,
    required_power_level,
    user_power_level,
)
from bastion.core.room_versions import get_room_version
from bastion.core.state_keys import CREATE_KEY
from bastion.core.state_keys import JOIN_RULES_KEY as JR_KEY
from bastion.core.state_keys import POWER_LEVELS_KEY as PL_KEY
from bastion.errors import (
    M_FORBIDDEN,
    M_UNABLE_TO_AUTHORISE_JOIN,
    M_UNABLE_TO_GRANT_JOIN,
    MatrixError,
    bad_json,
    forbidden,
    invalid_param,
    not_found,
)
from bastion.services.relations import check_new_relation
from bastion.services.remote import RemoteMembership
from bastion.services.room_access import RoomAccess
from bastion.services.room_aliases import RoomAliases
from bastion.services.room_create import RoomCreator
from bastion.services.room_directory import RoomDirectory
from bastion.services.room_engine import RoomEngine, RoomHead
from bastion.services.room_format import ClientEventFormat
from bastion.services.room_reading import RoomReader
from bastion.services.room_upgrade import RoomUpgrader
from bastion.storage.interface import EventRow, StateMap

if TYPE_CHECKING:
    from bastion.server import HomeServer

__all__ = ["RoomHead", "RoomService"]

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


class RoomService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.store
        #: The one writer of rooms' histories (lock, heads, appends).
        self.engine = RoomEngine(hs.store, hs.server_name, hs.signing_key, hs.now_ms)
        #: Memberships across servers (handed in by the homeserver; None when federation is
        #: off: remote users cannot be invited and remote rooms not joined).
        self.remote: RemoteMembership | None = None
        self.access = RoomAccess(hs.store, self.engine)
        self.reader = RoomReader(hs.store, self.access)
        self.aliases = RoomAliases(hs.store)
        self.directory = RoomDirectory(hs.store)
        self.creator = RoomCreator(self)
        # The public methods of the room modules, as ``hs.rooms.<method>``.
        self.create_room = self.creator.create_room
        self.upgrader = RoomUpgrader(self)
        self.upgrade_room = self.upgrader.upgrade_room
        self.resolve_room = self.aliases.resolve_room
        self.state_at_group = self.access.state_at_group
        self.history_visibility_now = self.access.history_visibility_now
        self.read_access = self.access.read_access
        self.filter_visible = self.access.filter_visible
        self.client_event = ClientEventFormat(hs.store, hs.now_ms).client_event
        self.public_rooms = self.directory.public_rooms
        self.room_summary_fields = self.directory.room_summary_fields
        self.state_for_reader = self.reader.state_for_reader
        self.state_events = self.reader.state_events
        self.paginate = self.reader.paginate
        self.context = self.reader.context
        self.timestamp_to_event = self.reader.timestamp_to_event
        self.members = self.reader.members
        self.joined_members = self.reader.joined_members

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
        return self.engine.current_state_event(room_id, etype, state_key)

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

    def profile_content(self, user_id: str) -> dict:
        if not self.is_local(user_id):
            return {}
        profile = self.store.get_profile(user_id)
        out = {}
        for key in ("displayname", "avatar_url"):
            v = profile.get(key) if isinstance(profile, dict) else None
            if isinstance(v, str):
                out[key] = v
        return out

    def is_local(self, user_id: str) -> bool:
        return server_name_of(user_id) == self.hs.server_name

    # ------------------------------------------------------------------------------------------
    # Public write API (used by the HTTP layer and other services)
    # ------------------------------------------------------------------------------------------
    async def send_message_event(
        self, sender: str, device_id: str | None, room_id: str, type: str, content: dict,  # noqa: A002
        txn_id: str | None, *, ip: str | None = None,
    ) -> str:  # fmt: skip
        """Send a message event; idempotent per (sender, device, room, txn_id). The guard
        decides first (``hs.guard.before_local_event``: 429 rate limits, 403 refused or held);
        redactions are not asked about (they remove content)."""
        if type == "m.room.redaction":
            redacts = content.get("redacts")
            if not isinstance(redacts, str):
                raise bad_json("m.room.redaction needs a string 'redacts' in content")
            reason = content.get("reason")
            return await self.redact_event(
                sender, device_id, room_id, redacts, reason, txn_id, extra=content
            )
        txn = (sender, device_id, "send:" + room_id, txn_id) if txn_id and device_id else None
        if txn is not None:
            # A retried transaction gets its event again, without asking the guard again.
            existing = self.store.get_txn_event(*txn)
            if existing is not None:
                return existing
        check_new_relation(self.store, room_id, content)
        await self.hs.guard.before_local_event(sender, room_id, type, content, None, ip=ip,
                                               txn=txn)  # fmt: skip
        return await self.engine.append_local_event(room_id, sender, type, content, None, txn=txn)

    async def send_state_event(
        self,
        sender: str,
        room_id: str,
        type: str,
        state_key: str,
        content: dict,  # noqa: A002
        *,
        ip: str | None = None,
    ) -> str:
        """Send a state event. Re-sending the current content by the same sender returns the
        existing event (no duplicate state events). The guard decides before a new event is
        built (``hs.guard.before_local_event``)."""
        if type == "m.room.member":
            membership = content.get("membership")
            if not isinstance(membership, str):
                raise bad_json("m.room.member content needs a string 'membership'")
            extra = {k: v for k, v in content.items() if k != "membership"}
            return await self.update_membership(
                sender, room_id, state_key, membership, extra_content=extra, ip=ip
            )
        if type == "m.room.canonical_alias":
            self.aliases.check_canonical_alias(room_id, content)
        head = self.require_room(room_id)
        cur = head.state.get((type, state_key))
        if cur is not None:
            ev = self.store.get_event(cur)
            if ev is not None and ev.get("sender") == sender and ev.get("content") == content:
                return cur
        await self.hs.guard.before_local_event(sender, room_id, type, content, state_key, ip=ip)
        return await self.engine.append_local_event(room_id, sender, type, content, state_key)

    async def redact_event(
        self, sender: str, device_id: str | None, room_id: str, target_id: str,
        reason: object = None, txn_id: str | None = None, extra: dict | None = None,
    ) -> str:  # fmt: skip
        """PUT /rooms/{roomId}/redact/{eventId}/{txnId} (C-S "Redactions")."""
        if reason is not None and not isinstance(reason, str):
            raise bad_json("'reason' must be a string")
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
                raise not_found("unknown event")
            if target.sender != sender:
                pl = self.current_state_event(room_id, *PL_KEY)
                needed = named_level(pl["content"] if pl else None, "redact", rv)
                if self.power_level(room_id, sender) < needed:
                    raise forbidden("you may not redact other users' events")

        txn = (sender, device_id, "redact:" + room_id, txn_id) if txn_id and device_id else None
        return await self.engine.append_local_event(
            room_id, sender, "m.room.redaction", content, None, txn=txn, redacts=target_id,
            check=check,
        )  # fmt: skip

    async def update_membership(
        self, actor_user_id: str, room_id: str, target_user_id: str, membership: str,
        reason: str | None = None, extra_content: dict | None = None,
        via: list[str] | None = None, *, ip: str | None = None,
    ) -> str:  # fmt: skip
        """Change a membership: join, leave (also reject an invite, kick, unban), invite, ban,
        knock. Errors: 404 unknown room or user, 403 when the auth rules refuse.

        Over federation (``self.remote``): a join, knock or leave of a room this
        server is not in goes through a server in the room (``via``, the inviter's server, the
        servers we last saw in it); an invite of a remote user is countersigned by their server
        first (outside the room's lock).

        ``join_authorised_via_users_server`` is never taken from the client (C-S "Restricted
        rooms": the resident server chooses the authoriser): it is removed from
        ``extra_content`` and set only by :meth:`restricted_join_authoriser`.

        A join, invite or knock is first put to the guard (``hs.guard.before_local_event``: 429
        rate limits, 403 a cooling room, a policy list, invite spam)."""
        if membership not in ("join", "leave", "invite", "ban", "knock"):
            raise bad_json(f"unknown membership {membership[:40]!r}")
        if reason is not None and not isinstance(reason, str):
            raise bad_json("'reason' must be a string")
        try:
            parse_user_id(target_user_id, historical=True)
        except MatrixError:
            raise invalid_param("invalid user ID") from None
        if membership == "leave" and target_user_id == actor_user_id:
            # C-S API "Server Notices": the invite to one's notices room cannot be rejected.
            self.hs.server_notices.check_leave(
                room_id, actor_user_id, self.membership_of(room_id, actor_user_id)
            )
        extra_content = {k: v for k, v in (extra_content or {}).items() if k != JAUVS}
        if membership in ("join", "invite", "knock") and self.store.room_blocked(room_id):
            # Blocked by an admin (Synapse admin API "Rooms", "Block Room API").
            raise forbidden("this room has been blocked on this server")
        if membership in ("join", "invite", "knock"):
            guarded: dict = {**extra_content, "membership": membership}
            if reason is not None:
                guarded["reason"] = reason
            await self.hs.guard.before_local_event(
                actor_user_id, room_id, "m.room.member", guarded, target_user_id, ip=ip
            )
        fm = self.remote
        remote = fm is not None and target_user_id == actor_user_id and membership in (
            "join", "knock", "leave",
        ) and not fm.is_in_room(room_id)  # fmt: skip
        servers = fm.candidate_servers(room_id, actor_user_id, via) if fm and remote else []
        if (
            fm is not None
            and servers
            and (
                membership != "leave"
                or self.membership_of(room_id, actor_user_id) in ("invite", "knock")
            )
        ):
            remote_content = {**(extra_content or {}), "membership": membership}
            if reason is not None:
                remote_content["reason"] = reason
            if membership == "join":
                for k, v in self.profile_content(target_user_id).items():
                    remote_content.setdefault(k, v)
            event_id = await fm.remote_membership(
                actor_user_id, room_id, membership, remote_content, servers
            )
            if membership == "join":
                await self.upgrader.after_join(actor_user_id, room_id)
            return event_id
        self.require_room(room_id)
        countersign = None
        if membership == "invite":
            if not self.is_local(target_user_id):
                if fm is None:
                    raise MatrixError(M_FORBIDDEN, "this server does not federate: cannot invite")

                async def countersign(event: dict, event_id: str, version: str) -> dict:
                    return await fm.remote_invite(event, event_id, room_id, version)

            elif not self.store.user_exists(target_user_id):
                raise not_found("unknown user")
        content: dict = {}
        if extra_content:
            content.update(extra_content)
        content["membership"] = membership
        if reason is not None:
            content["reason"] = reason
        if membership == "join" and target_user_id == actor_user_id:
            for k, v in self.profile_content(target_user_id).items():
                content.setdefault(k, v)
        current = self.membership_of(room_id, target_user_id)
        if (
            membership == "leave"
            and target_user_id != actor_user_id
            and current not in ("join", "invite", "knock", "ban")
        ):
            raise forbidden("the target user is not in the room")
        if membership == "join" and current == "ban":
            raise forbidden("you are banned from this room")
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
        event_id = await self.engine.append_local_event(
            room_id, actor_user_id, "m.room.member", content, target_user_id,
            authoriser=authoriser, countersign=countersign,
        )  # fmt: skip
        if membership == "join" and target_user_id == actor_user_id and current != "join":
            # C-S "Room Upgrades": a user's settings follow them into a replacement room.
            await self.upgrader.after_join(actor_user_id, room_id)
        return event_id

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
            raise MatrixError(
                M_UNABLE_TO_AUTHORISE_JOIN, "this server is in none of the allowed rooms"
            )
        if not any(self.membership_of(r, user_id) == "join" for r in known):
            raise forbidden("you are not a member of any room this room allows")
        pl = self.current_state_event(room_id, *PL_KEY)
        invite_level = named_level(pl["content"] if pl else None, "invite", rv)
        candidates = sorted(
            (self.power_level(room_id, u), u)
            for u in self.store.get_joined_users(room_id)
            if self.is_local(u)
        )
        candidates = [c for c in candidates if c[0] >= invite_level]
        if not candidates:
            raise MatrixError(M_UNABLE_TO_GRANT_JOIN, "no user of this server may invite you")
        return candidates[-1][1]

    def _server_in_room(self, room_id: str) -> bool:
        """Whether a local user is joined to the room."""
        return self.store.room_exists(room_id) and any(
            self.is_local(u) for u in self.store.get_joined_users(room_id)
        )

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
