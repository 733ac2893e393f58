"""Server notices (C-S API "Server Notices", ``modules/server_notices.md``): ``hs.server_notices``.

The server speaks to a user through a system user, the *notices user* (localpart
``guard.alerts.server_notices_localpart``, default ``notices``). It is created on first use with
no password, so nobody can log in as it; an existing account of that name that this part did
not create (someone registered it first) is never used — the notices fail with an error in the
log rather than speak as somebody else.

Each user has exactly one server-notices room ("Servers should manage exactly 1 server notices
room per user"), created on the first notice, in one write with its row in
``server_notice_rooms`` and the room's ``m.server_notice`` tag in the user's room account data
("Servers must identify this room to clients with the m.server_notice tag"). The user is
*invited*, not joined ("Servers should invite the target user rather than automatically join
them"). Two first notices at once create one room: creation is serialised per user, and the
row's primary key refuses a second room in the same transaction as its creation.

What the user may do there (the spec leaves it to the server; as Synapse does):

* read, and join; not send: the room's power levels give users ``users_default: -10`` below
  ``events_default: 0`` (Synapse's choice, which clients know), so a user cannot post messages,
  state or reactions into it, nor invite anyone (``invite: 100``) — a notice room cannot be used
  to make a message look official;
* not reject the invite: "Attempting to reject the invite must result in a
  M_CANNOT_LEAVE_SERVER_NOTICE_ROOM error" (:meth:`ServerNotices.check_leave`, called by
  ``RoomService.update_membership``);
* leave once joined ("Servers should not prevent the user leaving the room after joining"):
  the next notice invites them again to the same room.

The room never federates (``m.federate: false``), is not in the directory, and its messages are
``m.room.message`` with ``msgtype: m.server_notice``, ``body`` and ``server_notice_type`` (the
event schema requires it: ``org.bastion.notice`` unless the caller names one). The server's own
events in these rooms are appended through the room engine (``hs.rooms.engine``) directly, not
through the guard's hooks: they are not a user's traffic to judge, and an alert quoting an
attack must not be judged as that attack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bastion.core.identifiers import server_name_of
from bastion.core.room_versions import get_room_version
from bastion.errors import M_FORBIDDEN, M_UNKNOWN, MatrixError, invalid_param, not_found
from bastion.guard.alerts import json_safe
from bastion.storage.sqlite.server_notices import PURPOSE_ALERTS, PURPOSE_NOTICES

if TYPE_CHECKING:
    from bastion.server import HomeServer

__all__ = [
    "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
    "NOTICE_TAG",
    "ServerNotices",
    "ServerNoticesUnavailable",
]

log = logging.getLogger(__name__)

#: C-S API "Server Notices": the room tag that identifies the room to clients.
NOTICE_TAG = "m.server_notice"
#: C-S API "Common error codes": refusing to reject the server-notices room's invite.
M_CANNOT_LEAVE_SERVER_NOTICE_ROOM = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
#: ``server_notice_type`` when the caller names none (the schema requires one).
DEFAULT_NOTICE_TYPE = "org.bastion.notice"
DISPLAY_NAME = "Server Notices"
NOTICE_ROOM_NAME = "Server Notices"
NOTICE_ROOM_TOPIC = "Messages from the administrators and the security of this server."
ALERTS_ROOM_NAME = "Bastion guard alerts"
ALERTS_ROOM_TOPIC = "What the guard decided: refusals, holds, throttles and attacks."
#: The longest notice body kept (an event is at most 64 KiB).
MAX_BODY = 16_000
#: Users below events_default (0): they cannot send into their notices room (Synapse: -10).
USERS_DEFAULT = -10


class _KeyLock:
    """A lock and how many callers hold or wait for it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class ServerNoticesUnavailable(MatrixError):
    """The notices user cannot be used (its name is taken by another account)."""

    def __init__(self, message: str) -> None:
        super().__init__(M_UNKNOWN, message, 500)


class ServerNotices:
    """``hs.server_notices``: each user's server-notices room and the alerts room."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        #: Creation of a room for (user, purpose), serialised (released once it exists).
        self._locks: dict[tuple[str, str], _KeyLock] = {}
        self._system_ready = False
        #: room ID -> (owner, purpose) of the rooms known to be ours.
        self._owned: dict[str, tuple[str, str]] = {}

    # -- the notices user ---------------------------------------------------------------------
    @property
    def system_user_id(self) -> str:
        localpart = self.hs.config.guard_config.alerts.server_notices_localpart
        return f"@{localpart}:{self.hs.server_name}"

    def is_system_user(self, user_id: str) -> bool:
        """True for the notices user (the server itself speaking)."""
        return user_id == self.system_user_id

    async def ensure_system_user(self) -> str:
        """The notices user, created on first use (no password: it cannot log in)."""
        user_id = self.system_user_id
        if self._system_ready:
            return user_id
        store = self.hs.store
        now = self.hs.now_ms()
        ok = await store.transaction(
            lambda conn: store.create_server_notice_system_user_in(
                conn, user_id, DISPLAY_NAME, now
            )  # fmt: skip
        )
        if not ok:
            log.error(
                "server notices: %s is an account this server did not create for notices; "
                "set guard.alerts.server_notices_localpart to an unused name", user_id,
            )  # fmt: skip
            raise ServerNoticesUnavailable(f"{user_id} is not the server's notices user")
        self._system_ready = True
        return user_id

    # -- rooms -----------------------------------------------------------------------------------
    def notice_room_of(self, user_id: str) -> str | None:
        """The user's server-notices room, if it has been created."""
        return self.hs.store.get_server_notice_room(user_id, PURPOSE_NOTICES)

    def owner_of(self, room_id: str) -> tuple[str, str] | None:
        """(user ID, purpose) of a room this part owns, or None."""
        known = self._owned.get(room_id)
        if known is not None:
            return known
        owner = self.hs.store.server_notice_room_owner(room_id)
        if owner is not None:
            self._owned[room_id] = owner
        return owner

    def is_notice_room(self, room_id: str) -> bool:
        owner = self.owner_of(room_id)
        return owner is not None and owner[1] == PURPOSE_NOTICES

    def check_leave(self, room_id: str, user_id: str, current: str | None) -> None:
        """C-S API "Server Notices", client behaviour: rejecting the invite to one's
        server-notices room fails with 403 ``M_CANNOT_LEAVE_SERVER_NOTICE_ROOM``; leaving it
        once joined is allowed. ``current``: the user's membership before the leave."""
        if current != "invite":
            return
        owner = self.owner_of(room_id)
        if owner is not None and owner == (user_id, PURPOSE_NOTICES):
            raise MatrixError(
                M_CANNOT_LEAVE_SERVER_NOTICE_ROOM,
                "the invite to your server notices room cannot be rejected; join it instead",
                403,
            )

    async def notice_room_for(self, user_id: str) -> str:
        """The user's server-notices room, created on first use; the user invited again if
        they left it."""
        if server_name_of(user_id) != self.hs.server_name:
            raise invalid_param("server notices go to local users only")
        room_id = self.notice_room_of(user_id)
        if room_id is None:
            if not self.hs.store.user_exists(user_id):
                raise not_found("unknown user")
            room_id = await self._room(user_id, PURPOSE_NOTICES, [user_id])
        await self._invite_if_gone(room_id, user_id)
        return room_id

    async def alerts_room(self) -> str:
        """The guard's alerts room, owned by the notices user, created on first use with every
        server admin invited. Its members follow the admins: admins made since are invited,
        and members who are no longer admins (demoted, deactivated) are removed — alerts name
        users and addresses, for admins' eyes only."""
        system = await self.ensure_system_user()
        store = self.hs.store
        room_id = store.get_server_notice_room(system, PURPOSE_ALERTS)
        admins = store.server_admins()
        if room_id is None:
            room_id = await self._room(system, PURPOSE_ALERTS, admins)
        for admin in admins:
            await self._invite_if_gone(room_id, admin)
        admin_set = set(admins)
        members = store.room_members_cached(room_id).members
        for user, membership in list(members.items()):
            if (
                membership in ("join", "invite", "knock")
                and user != system
                and (user not in admin_set)
            ):
                await self.hs.rooms.engine.append_local_event(
                    room_id, system, "m.room.member",
                    {"membership": "leave", "reason": "no longer a server admin"}, user,
                )  # fmt: skip
        return room_id

    async def _invite_if_gone(self, room_id: str, user_id: str) -> None:
        current = self.hs.rooms.membership_of(room_id, user_id)
        if current in ("invite", "join", "ban"):
            return
        system = await self.ensure_system_user()
        await self.hs.rooms.engine.append_local_event(
            room_id, system, "m.room.member", {"membership": "invite"}, user_id
        )

    async def _room(self, owner: str, purpose: str, invites: list[str]) -> str:
        """The (owner, purpose) room, created once: concurrent callers wait for the first and
        find its room (the lock is forgotten when nobody holds or waits for it)."""
        key = (owner, purpose)
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _KeyLock()
        entry.users += 1
        try:
            async with entry.lock:
                room_id = self.hs.store.get_server_notice_room(owner, purpose)
                if room_id is not None:
                    return room_id
                return await self._create_room(owner, purpose, invites)
        finally:
            entry.users -= 1
            if entry.users == 0 and self._locks.get(key) is entry:
                del self._locks[key]

    async def _create_room(self, owner: str, purpose: str, invites: list[str]) -> str:
        """Build and persist the room in one write, with its row and (for a notices room) the
        user's ``m.server_notice`` tag (C-S API "Server Notices", "Room Tagging")."""
        hs = self.hs
        system = await self.ensure_system_user()
        version = hs.config.default_room_version
        rv = get_room_version(version)
        engine = hs.rooms.engine
        notices = purpose == PURPOSE_NOTICES
        room_id = "" if rv.room_id_is_create_hash else f"!{secrets.token_urlsafe(18)}:" + (
            hs.server_name
        )  # fmt: skip
        batch = engine.new_room(room_id, version)
        create: dict[str, Any] = {"room_version": version, "m.federate": False}
        if not rv.implicit_room_creator:
            create["creator"] = system
        batch.add(system, "m.room.create", create)
        batch.add(system, "m.room.member", {"membership": "join", "displayname": DISPLAY_NAME},
                  system)  # fmt: skip
        batch.add(system, "m.room.power_levels", self._power_levels(system, rv, notices))
        batch.add(system, "m.room.join_rules", {"join_rule": "invite"})
        batch.add(system, "m.room.history_visibility", {"history_visibility": "shared"})
        batch.add(system, "m.room.guest_access", {"guest_access": "forbidden"})
        name, topic = (
            (NOTICE_ROOM_NAME, NOTICE_ROOM_TOPIC) if notices else (ALERTS_ROOM_NAME,
                                                                   ALERTS_ROOM_TOPIC)
        )  # fmt: skip
        batch.add(system, "m.room.name", {"name": name})
        batch.add(system, "m.room.topic", {"topic": topic})
        for user in dict.fromkeys(invites):
            if user != system:
                batch.add(system, "m.room.member", {"membership": "invite"}, user)
        new_room_id = batch.room_id
        now = hs.now_ms()
        store = hs.store

        def extra(conn) -> None:
            store.create_room_sync(conn, new_room_id, version, system, now, False)
            store.add_server_notice_room_in(conn, owner, new_room_id, now, purpose)
            if notices:
                # A new room: the user has no tags for it yet.
                tags = json.dumps({"tags": {NOTICE_TAG: {}}}, separators=(",", ":"))
                store.set_account_data_in(conn, owner, new_room_id, "m.tag", tags)

        await engine.append_new_room(batch, extra)
        self._owned[new_room_id] = (owner, purpose)
        log.info("created the %s room %s for %s", purpose, new_room_id, owner)
        return new_room_id

    @staticmethod
    def _power_levels(system: str, rv, notices: bool) -> dict[str, Any]:
        users: dict[str, int] = {} if rv.privileged_creators else {system: 100}
        return {
            "users": users,
            # Notices room: nobody but the notices user may send anything. Alerts room: the
            # invited admins may talk about an alert, not change the room.
            "users_default": USERS_DEFAULT if notices else 0,
            "events_default": 0,
            "state_default": 100,
            "invite": 100,
            "kick": 100,
            "ban": 100,
            "redact": 100,
            "events": {},
            "notifications": {"room": 100},
        }

    # -- sending ---------------------------------------------------------------------------------
    async def send_notice(
        self, user_id: str, body: str, *, notice_type: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:  # fmt: skip
        """Send a server notice to a local user (C-S API "Server Notices", event
        ``m.room.message`` with ``msgtype: m.server_notice``); its event ID. Creates the user's
        notices room on first use. ``extra``: more content keys (they cannot replace
        ``msgtype``, ``body`` or ``server_notice_type``). Errors: 400 for a remote user, 404
        for an unknown one, 500 when the notices user's name is taken."""
        if not isinstance(body, str) or not body:
            raise invalid_param("a notice needs a body")
        # Event content is canonical JSON: no floats, bounded integers.
        content: dict[str, Any] = json_safe(dict(extra or {}))
        content.update({
            "msgtype": "m.server_notice",
            "body": body[:MAX_BODY],
            "server_notice_type": notice_type or DEFAULT_NOTICE_TYPE,
        })  # fmt: skip
        room_id = await self.notice_room_for(user_id)
        system = await self.ensure_system_user()
        return await self.hs.rooms.engine.append_local_event(
            room_id, system, "m.room.message", content
        )

    async def post_alert(self, room_id: str | None, body: str, extra: Mapping[str, Any]) -> str:
        """Post an alert (``m.notice``) to the configured ``room_id`` — which the notices user
        joins when it has been invited there — or to the automatic alerts room."""
        if room_id is None:
            room_id = await self.alerts_room()
        system = await self.ensure_system_user()
        engine = self.hs.rooms.engine
        membership = self.hs.rooms.membership_of(room_id, system)
        if membership == "invite" and engine.head(room_id) is not None:
            await engine.append_local_event(
                room_id, system, "m.room.member",
                {"membership": "join", "displayname": DISPLAY_NAME}, system,
            )  # fmt: skip
        elif membership != "join":
            raise MatrixError(
                M_FORBIDDEN, f"{system} is not in the alerts room {room_id}: invite it there", 403
            )
        content: dict[str, Any] = json_safe(dict(extra))
        content.update({"msgtype": "m.notice", "body": body[:MAX_BODY]})
        return await engine.append_local_event(room_id, system, "m.room.message", content)
