"""What the Synapse-compatible admin API (:mod:`bastion.api.synapse_admin`) does: listings and
queries of users, rooms and media in Synapse's shapes, and the admin changes Synapse's API
offers (create/modify users, reset passwords, delete/purge/block rooms, quarantine and delete
media, registration tokens).

Every change takes ``audit``, the call's ``admin.request`` record
(:func:`bastion.api.admin_access.admin_request`), and writes it in the transaction of the
change, with the change's own action records (``account.create``, ``password.change``,
``account.lock``, ``account.admin``, ``room.block``, ``room.purge``, ``registration_token.*``).

Room deletion (Synapse admin API "Rooms", "Delete Room API"): the local users in the room leave
it (as themselves, as Synapse does; a leave that fails is reported in
``failed_to_kick_users``), its local aliases are removed and it leaves the room directory; with
``block`` no local user can join or be invited again; with ``purge`` (the default) every event,
state group, membership, receipt, alias and room account-data row of the room is deleted in one
transaction, recorded by ``room.purge`` records that list the deleted event IDs (200 per
record), so the ledger shows which event leaves lost their rows and why. The highest stream
position the room held stays in ``room_deletions`` so positions are never reused. As with
Synapse, a client that did not sync between its user's leave and the purge is not told of the
leave (the leave event went with the room): the room drops out of its list at its next initial
sync.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from bastion.core.identifiers import parse_room_id, parse_server_name, parse_user_id
from bastion.core.media import is_valid_media_id
from bastion.errors import (
    MatrixError,
    bad_json,
    forbidden,
    invalid_param,
    missing_param,
    not_found,
)
from bastion.ledger import records
from bastion.services.accounts import check_password_strength, check_profile_value
from bastion.services.security_records import record_in
from bastion.storage.interface import Row, Txn, registration_token_valid
from bastion.storage.sqlite.admin_directory import MEDIA_ORDER, USER_ORDER

if TYPE_CHECKING:
    from bastion.server import HomeServer

log = logging.getLogger("bastion.admin_directory")

Audit = Callable[[Txn], None]

#: Event IDs per ``room.purge`` record (a record stays well under a ledger entry's 64 KiB).
PURGE_IDS_PER_RECORD = 200
#: The most rows one listing page returns.
MAX_PAGE = 1000
#: Registration tokens: characters and length (Synapse admin API "Registration Tokens").
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "._~-")
MAX_TOKEN_LENGTH = 64
#: Hex digits of a token's hash in the handle the listing shows (``prefix:hexdigits``).
HANDLE_HEX = 12
#: The most uses or the latest expiry a token may have (an SQLite integer).
MAX_INT = 2**53

_MXC = re.compile(r"^mxc://([^/]+)/([A-Za-z0-9_-]+)$")


def _bool(body: dict, key: str, default: bool | None) -> bool | None:
    value = body.get(key, default)
    if value is None or isinstance(value, bool):
        return value
    raise bad_json(f"'{key}' must be a boolean")


def _opt_int(body: dict, key: str, *, minimum: int) -> int | None:
    """An optional integer (``null`` allowed) of a request body, at least ``minimum``."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_param(f"'{key}' must be an integer or null")
    if not minimum <= value <= MAX_INT:
        raise invalid_param(f"'{key}' must be at least {minimum}")
    return value


class AdminDirectory:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.store

    # -- users ------------------------------------------------------------------------------------
    def check_local_user_id(self, user_id: str) -> str:
        """400 ``M_INVALID_PARAM`` unless ``user_id`` is a user ID of this server."""
        try:
            parsed = parse_user_id(user_id, historical=True)
        except MatrixError:
            raise invalid_param("not a valid user ID") from None
        if parsed.server_name != self.hs.server_name:
            raise invalid_param("can only look up local users")
        return user_id

    def local_user(self, user_id: str) -> Row:
        """The row of a local user; 400 for a remote or malformed ID, 404 if unknown."""
        self.check_local_user_id(user_id)
        row = self.store.get_user(user_id)
        if row is None:
            raise not_found("user not found")
        return row

    def user_details(self, user_id: str) -> dict[str, Any]:
        """Synapse admin API "User Admin API", "Query User Account"."""
        row = self.local_user(user_id)
        profile = self.store.get_profile(user_id)
        return {
            "name": user_id,
            "displayname": profile.get("displayname"),
            "avatar_url": profile.get("avatar_url"),
            "threepids": [],
            "external_ids": [],
            "is_guest": False,
            "admin": bool(row["is_admin"]),
            "deactivated": bool(row["deactivated"]),
            "erased": False,
            "shadow_banned": False,
            "locked": bool(row["locked"]),
            "suspended": bool(row["suspended"]),
            "approved": True,
            "creation_ts": row["created_ts"],
            "appservice_id": None,
            "consent_server_notice_sent": None,
            "consent_version": None,
            "consent_ts": None,
            "user_type": None,
            "last_seen_ts": self.store.admin_user_last_seen(user_id),
        }

    def list_users(self, q: dict[str, str], offset: int, limit: int) -> dict[str, Any]:
        """Synapse admin API "User Admin API", "List Accounts" (v2)."""
        order_by = q.get("order_by") or "name"
        if order_by not in USER_ORDER:
            raise invalid_param("unknown order_by")
        direction = q.get("dir") or "f"
        if direction not in ("f", "b"):
            raise invalid_param("dir must be 'f' or 'b'")
        flags = {k: _query_bool(q, k) for k in ("deactivated", "locked", "admins", "guests")}
        rows, total = self.store.admin_list_users(
            name=q.get("name") or None, user_id=q.get("user_id") or None,
            deactivated=bool(flags["deactivated"]), locked=bool(flags["locked"]),
            admins=flags["admins"], order_by=order_by, backwards=direction == "b",
            offset=offset, limit=limit,
        )  # fmt: skip
        users = [
            {
                "name": r["user_id"],
                "user_type": None,
                "is_guest": False,
                "admin": bool(r["is_admin"]),
                "deactivated": bool(r["deactivated"]),
                "shadow_banned": False,
                "displayname": r["displayname"],
                "avatar_url": r["avatar_url"],
                "creation_ts": r["created_ts"],
                "approved": True,
                "erased": False,
                "last_seen_ts": r["last_seen_ts"],
                "locked": bool(r["locked"]),
                "suspended": bool(r["suspended"]),
            }
            for r in rows
        ]
        out: dict[str, Any] = {"users": users, "total": total}
        if offset + len(users) < total:
            out["next_token"] = str(offset + len(users))
        return out

    async def put_user(
        self, admin: str, user_id: str, body: dict, audit: Audit, ip: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Synapse admin API "User Admin API", "Create or modify account": 201 with the new
        account, 200 with the modified one."""
        self.check_local_user_id(user_id)
        row = self.store.get_user(user_id)
        localpart = user_id[1 : user_id.index(":")]
        if row is None:
            try:
                parse_user_id(user_id)  # a new account: today's user ID grammar
            except MatrixError:
                raise invalid_param("not a valid user ID for a new account") from None
        password = body.get("password")
        if password is not None:
            password = check_password_strength(password)
        logout = _bool(body, "logout_devices", True)
        set_admin = _bool(body, "admin", None)
        set_locked = _bool(body, "locked", None)
        deactivated = _bool(body, "deactivated", None)
        profile: dict[str, Any] = {}
        for key in ("displayname", "avatar_url"):
            if key in body:
                value = body[key]
                if value is not None:
                    check_profile_value(key, value)
                profile[key] = value
        for key in ("threepids", "external_ids"):
            value = body.get(key)
            if value is not None and not isinstance(value, list):
                raise bad_json(f"'{key}' must be a list")
            if value:
                raise invalid_param(f"Bastion keeps no {key}: only an empty list is accepted")
        if body.get("user_type") is not None:
            raise invalid_param("Bastion has no user types: 'user_type' must be null")
        if deactivated is True and (row is None or not row["deactivated"]):
            raise invalid_param(
                "deactivate accounts with POST /_synapse/admin/v1/deactivate/{userId}"
            )
        if deactivated is False and row is not None and row["deactivated"]:
            raise invalid_param("Bastion does not reactivate deactivated accounts")
        if row is not None and row["deactivated"] and (password or profile or set_locked):
            raise invalid_param("the account is deactivated")
        if user_id == admin and set_admin is False:
            raise forbidden("you cannot demote yourself")
        notices = self.hs.server_notices
        if row is None and notices.is_system_user(user_id):
            raise invalid_param("that user ID is reserved for server notices")
        pw_hash = await self.hs.passwords.hash_async(password) if password else None
        now = self.hs.now_ms()
        store, accounts = self.store, self.hs.accounts
        created = row is None
        was_admin = bool(row["is_admin"]) if row is not None else False
        was_locked = bool(row["locked"]) if row is not None else False

        def fn(conn: Txn) -> bool:
            audit(conn)
            if created:
                if not store.create_user_in(
                    conn, user_id, pw_hash, now, is_admin=bool(set_admin), displayname=localpart
                ):
                    return False
                record_in(
                    store, conn, records.ACTION_ACCOUNT_CREATE, actor=admin, ts=now,
                    target=user_id, subject=user_id, origin=ip,
                    details={"admin": bool(set_admin), "via": "synapse_admin"},
                )  # fmt: skip
            else:
                if pw_hash is not None:
                    store.set_password_hash_in(conn, user_id, pw_hash)
                    record_in(
                        store, conn, records.ACTION_PASSWORD_CHANGE, actor=admin, ts=now,
                        target=user_id, subject=user_id, origin=ip,
                        details={"logout_devices": bool(logout), "by_admin": True},
                    )  # fmt: skip
                    if logout:
                        accounts._delete_devices_in(  # noqa: SLF001
                            conn, user_id, store.device_ids_in(conn, user_id),
                            cause="password_change", ts=now, origin=ip,
                        )  # fmt: skip
                if set_admin is not None and was_admin != set_admin:
                    store.set_user_flag_in(conn, user_id, "is_admin", set_admin)
                    record_in(
                        store, conn, records.ACTION_ACCOUNT_ADMIN, actor=admin, ts=now,
                        target=user_id, subject=user_id, origin=ip, details={"admin": set_admin},
                    )  # fmt: skip
            if set_locked is not None and (created or was_locked != set_locked):
                store.set_user_flag_in(conn, user_id, "locked", set_locked)
                action = (
                    records.ACTION_ACCOUNT_LOCK if set_locked else records.ACTION_ACCOUNT_UNLOCK
                )
                record_in(
                    store, conn, action, actor=admin, ts=now, target=user_id, subject=user_id,
                    origin=ip, details={"locked": set_locked},
                )  # fmt: skip
            for key, value in profile.items():
                if value is None:
                    store.delete_profile_field_in(conn, user_id, key)
                else:
                    store.set_profile_field_in(conn, user_id, key, value)
            return True

        if not await store.transaction(fn):
            raise MatrixError("M_USER_IN_USE", "that user ID is already taken")
        if profile and not created:
            await accounts._propagate_profile(user_id)  # noqa: SLF001
        return (201 if created else 200), self.user_details(user_id)

    async def reset_password(
        self, admin: str, user_id: str, body: dict, audit: Audit, ip: str | None
    ) -> None:
        """Synapse admin API "User Admin API", "Reset password"."""
        row = self.local_user(user_id)
        if row["deactivated"]:
            raise invalid_param("the account is deactivated")
        if "new_password" not in body:
            raise missing_param("'new_password' is required")
        password = check_password_strength(body["new_password"], "new_password")
        logout = _bool(body, "logout_devices", True)
        pw_hash = await self.hs.passwords.hash_async(password)
        now = self.hs.now_ms()
        store, accounts = self.store, self.hs.accounts

        def fn(conn: Txn) -> None:
            audit(conn)
            store.set_password_hash_in(conn, user_id, pw_hash)
            record_in(
                store, conn, records.ACTION_PASSWORD_CHANGE, actor=admin, ts=now, target=user_id,
                subject=user_id, origin=ip,
                details={"logout_devices": bool(logout), "by_admin": True},
            )  # fmt: skip
            if logout:
                accounts._delete_devices_in(  # noqa: SLF001
                    conn, user_id, store.device_ids_in(conn, user_id), cause="password_change",
                    ts=now, origin=ip,
                )  # fmt: skip

        await store.transaction(fn)

    def joined_rooms(self, user_id: str) -> dict[str, Any]:
        """Synapse admin API "User Admin API", "List room memberships of a user"."""
        self.local_user(user_id)
        rooms = sorted(self.store.get_rooms_for_user(user_id))
        return {"joined_rooms": rooms, "total": len(rooms)}

    # -- rooms ------------------------------------------------------------------------------------
    def check_room_id(self, room_id: str) -> str:
        try:
            parse_room_id(room_id)
        except MatrixError:
            raise invalid_param("not a valid room ID") from None
        return room_id

    def _summary(self, s: dict[str, Any]) -> dict[str, Any]:
        """One room in the shape of Synapse's room list and room details."""

        def content(etype: str) -> dict[str, Any]:
            raw = s["state"].get(etype)
            if raw is None:
                return {}
            try:
                value = orjson.loads(raw).get("content")
            except (orjson.JSONDecodeError, AttributeError):
                return {}
            return value if isinstance(value, dict) else {}

        suffix = ":" + self.hs.server_name
        create = content("m.room.create")

        def text(etype: str, key: str) -> Any:
            value = content(etype).get(key)
            return value if isinstance(value, str) else None

        return {
            "room_id": s["room_id"],
            "name": text("m.room.name", "name"),
            "topic": text("m.room.topic", "topic"),
            "avatar": text("m.room.avatar", "url"),
            "canonical_alias": text("m.room.canonical_alias", "alias"),
            "joined_members": len(s["joined"]),
            "joined_local_members": sum(1 for u in s["joined"] if u.endswith(suffix)),
            "joined_local_devices": 0,
            "version": s["room_version"],
            "creator": s["creator"],
            "encryption": text("m.room.encryption", "algorithm"),
            "federatable": create.get("m.federate", True) is not False,
            "public": s["is_public"],
            "join_rules": text("m.room.join_rules", "join_rule"),
            "guest_access": text("m.room.guest_access", "guest_access"),
            "history_visibility": text("m.room.history_visibility", "history_visibility"),
            "state_events": s["state_events"],
            "room_type": create.get("type") if isinstance(create.get("type"), str) else None,
        }

    _ROOM_ORDER = (
        "name", "canonical_alias", "joined_members", "joined_local_members", "version",
        "creator", "encryption", "federatable", "public", "join_rules", "guest_access",
        "history_visibility", "state_events",
    )  # fmt: skip

    def list_rooms(self, q: dict[str, str], offset: int, limit: int) -> dict[str, Any]:
        """Synapse admin API "Rooms", "List Room API"."""
        order_by = q.get("order_by") or "name"
        if order_by == "size":
            order_by = "joined_members"
        if order_by not in self._ROOM_ORDER:
            raise invalid_param("unknown order_by")
        direction = q.get("dir") or "f"
        if direction not in ("f", "b"):
            raise invalid_param("dir must be 'f' or 'b'")
        empty = _query_bool(q, "empty_rooms")
        rooms = [self._summary(s) for s in self.store.admin_room_summaries()]
        term = (q.get("search_term") or "").lower()
        if term:
            rooms = [
                r for r in rooms
                if term in r["room_id"].lower() or term in (r["name"] or "").lower()
                or term in (r["canonical_alias"] or "").lower()
            ]  # fmt: skip
        if empty is not None:
            rooms = [r for r in rooms if (r["joined_local_members"] == 0) == empty]

        def key(r: dict[str, Any]) -> tuple:
            v = r[order_by]
            # None sorts first; numbers and text keep their own order.
            return (v is not None, v if not isinstance(v, str) else v.lower(), r["room_id"])

        rooms.sort(key=key, reverse=direction == "b")
        page = rooms[offset : offset + limit]
        out: dict[str, Any] = {
            "rooms": page, "offset": offset, "total_rooms": len(rooms),
        }  # fmt: skip
        if offset + len(page) < len(rooms):
            out["next_batch"] = offset + len(page)
        if offset > 0:
            out["prev_batch"] = max(0, offset - limit)
        return out

    def room_details(self, room_id: str) -> dict[str, Any]:
        """Synapse admin API "Rooms", "Room Details API"."""
        self.check_room_id(room_id)
        found = self.store.admin_room_summaries(room_id)
        if not found:
            raise not_found("room not found")
        out = self._summary(found[0])
        out["forgotten"] = False
        out["blocked"] = self.store.room_blocked(room_id)
        return out

    def room_members(self, room_id: str) -> dict[str, Any]:
        """Synapse admin API "Rooms", "Room Members API"."""
        self.require_room(room_id)
        members = sorted(u for u, m in self.store.get_room_members(room_id).items() if m == "join")
        return {"members": members, "total": len(members)}

    def room_state(self, room_id: str) -> dict[str, Any]:
        """Synapse admin API "Rooms", "Room State API" (events in the client format)."""
        self.require_room(room_id)
        events = []
        for event_id, raw in self.store.admin_room_state_jsons(room_id):
            ev = orjson.loads(raw)
            for key in ("signatures", "hashes", "auth_events", "prev_events", "depth"):
                ev.pop(key, None)
            ev["event_id"], ev["room_id"] = event_id, room_id
            events.append(ev)
        return {"state": events}

    def require_room(self, room_id: str) -> None:
        self.check_room_id(room_id)
        if not self.store.room_exists(room_id):
            raise not_found("room not found")

    def block_status(self, room_id: str) -> dict[str, Any]:
        """Synapse admin API "Rooms", "Get block status"."""
        self.check_room_id(room_id)
        row = self.store.get_blocked_room(room_id)
        if row is None:
            return {"block": False}
        return {"block": True, "user_id": row["user_id"]}

    async def set_block(self, admin: str, room_id: str, block: bool, audit: Audit,
                        ip: str | None) -> None:  # fmt: skip
        """Synapse admin API "Rooms", "Block Room API" (a room need not be known to be
        blocked)."""
        self.check_room_id(room_id)
        now = self.hs.now_ms()
        store = self.store

        def fn(conn: Txn) -> None:
            audit(conn)
            changed = (
                store.block_room_in(conn, room_id, admin, now)
                if block
                else store.unblock_room_in(conn, room_id)
            )
            if changed:
                record_in(
                    store, conn, records.ACTION_ROOM_BLOCK, actor=admin, ts=now, target=room_id,
                    origin=ip, details={"block": block},
                )  # fmt: skip

        await store.transaction(fn)

    def check_delete_body(self, body: dict) -> dict[str, Any]:
        """The options of a room deletion (Synapse's ``block``, ``purge``, ``force_purge``)."""
        if body.get("new_room_user_id") is not None:
            raise invalid_param(
                "Bastion does not create replacement rooms: omit 'new_room_user_id'"
            )
        for key in ("room_name", "message"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise bad_json(f"'{key}' must be a string")
        return {
            "block": bool(_bool(body, "block", False)),
            "purge": bool(_bool(body, "purge", True)),
            "force_purge": bool(_bool(body, "force_purge", False)),
        }

    async def delete_room(
        self, admin: str, room_id: str, opts: dict[str, Any], audit: Audit, ip: str | None
    ) -> tuple[str, dict[str, Any]]:
        """Synapse admin API "Rooms", "Delete Room API" (v1 and v2): (delete ID, result).
        The work is done before this returns (v2 callers find it ``complete`` at once)."""
        self.check_room_id(room_id)
        store, rooms = self.store, self.hs.rooms
        known = store.room_exists(room_id)
        if not known and not opts["block"]:
            raise not_found("room not found")
        if opts["purge"] and known and store.legal_holds_for(None, room_id):
            # A room under a legal hold keeps its history (issue 10): block it, not purge it.
            raise forbidden("the room is under a legal hold: its history cannot be purged")
        delete_id = secrets.token_urlsafe(12)
        now = self.hs.now_ms()
        result: dict[str, Any] = {
            "kicked_users": [], "failed_to_kick_users": [], "local_aliases": [],
            "new_room_id": None,
        }  # fmt: skip

        # The block first (no one joins while the users leave); the call's admin.request record
        # goes with the last write: the purge (or the failure, or the end without a purge).
        def start(conn: Txn) -> None:
            if opts["block"] and store.block_room_in(conn, room_id, admin, now):
                record_in(
                    store, conn, records.ACTION_ROOM_BLOCK, actor=admin, ts=now, target=room_id,
                    origin=ip, details={"block": True},
                )  # fmt: skip
            store.put_room_deletion_in(
                conn, delete_id, room_id, "shutting_down", now, orjson.dumps(result).decode()
            )

        await store.transaction(start)
        if not known:
            await self._finish(delete_id, room_id, "complete", result, None, audit)
            return delete_id, result
        # The local users leave, as themselves (Synapse's room shutdown).
        suffix = ":" + self.hs.server_name
        for user_id, membership in sorted(store.get_room_members(room_id).items()):
            if not user_id.endswith(suffix) or membership not in ("join", "invite", "knock"):
                continue
            try:
                await rooms.update_membership(user_id, room_id, user_id, "leave")
                result["kicked_users"].append(user_id)
            except MatrixError as e:
                log.warning("room deletion %s: %s could not leave: %s", room_id, user_id, e)
                result["failed_to_kick_users"].append(user_id)
        result["local_aliases"] = sorted(
            a for a in store.get_aliases_for_room(room_id) if a.endswith(suffix)
        )
        if opts["purge"] and result["failed_to_kick_users"] and not opts["force_purge"]:
            error = "some local users could not be removed; purge refused (see force_purge)"
            await self._finish(delete_id, room_id, "failed", result, error, audit)
            raise MatrixError("M_UNKNOWN", error, 400)
        finished = self.hs.now_ms()

        def finish(conn: Txn) -> None:
            audit(conn)
            top = 0
            if opts["purge"]:
                event_ids, top = store.purge_room_in(conn, room_id)
                for i in range(0, max(len(event_ids), 1), PURGE_IDS_PER_RECORD):
                    chunk = event_ids[i : i + PURGE_IDS_PER_RECORD]
                    record_in(
                        store, conn, records.ACTION_ROOM_PURGE, actor=admin, ts=finished,
                        target=room_id, origin=ip,
                        details={"room_id": room_id, "events": chunk, "total": len(event_ids)},
                    )  # fmt: skip
            else:
                for alias in store.get_aliases_for_room(room_id):
                    if alias.endswith(suffix):
                        store.delete_alias_in(conn, alias)
                store.set_room_public_sync(conn, room_id, False)
            store.put_room_deletion_in(
                conn, delete_id, room_id, "complete", finished, orjson.dumps(result).decode(),
                top,
            )  # fmt: skip

        # Under the room's lock: no local event is being appended while the rows go.
        async with rooms.engine.room_lock(room_id):
            await store.transaction(finish)
            if opts["purge"]:
                rooms.forget_head(room_id)
                store.forget_room_caches()
        return delete_id, result

    async def _finish(self, delete_id: str, room_id: str, status: str, result: dict[str, Any],
                      error: str | None, audit: Audit) -> None:  # fmt: skip
        body = dict(result)
        if error is not None:
            body["error"] = error
        now = self.hs.now_ms()
        store = self.store

        def fn(conn: Txn) -> None:
            audit(conn)
            store.put_room_deletion_in(
                conn, delete_id, room_id, status, now, orjson.dumps(body).decode()
            )

        await store.transaction(fn)

    @staticmethod
    def deletion_view(row: Row, with_ids: bool) -> dict[str, Any]:
        """One deletion in the shape of Synapse's "Query the status of a room deletion"."""
        result = orjson.loads(row["result"])
        error = result.pop("error", None)
        out: dict[str, Any] = {"status": row["status"], "shutdown_room": result}
        if error is not None:
            out["error"] = error
        if with_ids:
            out = {"delete_id": row["delete_id"], "room_id": row["room_id"], **out}
        return out

    def deletion_status_by_room(self, room_id: str) -> dict[str, Any]:
        self.check_room_id(room_id)
        rows = self.store.room_deletions_of(room_id)
        if not rows:
            raise not_found("no deletion of this room")
        return {"results": [self.deletion_view(r, True) for r in rows]}

    def deletion_status(self, delete_id: str) -> dict[str, Any]:
        row = self.store.get_room_deletion(delete_id)
        if row is None:
            raise not_found("no such deletion")
        return self.deletion_view(row, False)

    # -- media ------------------------------------------------------------------------------------
    def remote_media_key(self, server_name: str, media_id: str) -> tuple[str, str]:
        """Another server's ``mxc://`` URI named in a request, as (server name, media ID):
        400 ``M_INVALID_PARAM`` for a malformed server name, 404 ``M_NOT_FOUND`` for a media ID
        no server could have made (C-S API "Content repository": ``[A-Za-z0-9_-]``)."""
        try:
            parse_server_name(server_name)
        except MatrixError:
            raise invalid_param("invalid server name") from None
        if not is_valid_media_id(media_id):
            raise not_found("no such media")
        return server_name, media_id

    async def quarantine_by_id(self, admin: str, server_name: str, media_id: str,
                               quarantine: bool, audit: Audit) -> None:  # fmt: skip
        """Synapse admin API "Media Admin API", "Quarantining media by ID" and "Remove media
        from quarantine by ID": local media (404 ``M_NOT_FOUND`` when unknown), or another
        server's, whether cached here or not (400 ``M_INVALID_PARAM`` for a malformed server
        name; releasing one that is neither cached nor quarantined is 404)."""
        if server_name == self.hs.server_name:
            self.media_info(server_name, media_id)  # 404 unknown
            await self.quarantine(admin, [media_id], quarantine, audit)
            return
        key = self.remote_media_key(server_name, media_id)
        if (
            not quarantine
            and self.store.remote_media_quarantine(*key) is None
            and self.store.get_remote_media(*key) is None
        ):
            raise not_found("no such media")
        await self.quarantine(admin, [], quarantine, audit, remote=[key])

    def list_user_media(self, user_id: str, q: dict[str, str], offset: int,
                        limit: int) -> dict[str, Any]:  # fmt: skip
        """Synapse admin API "User Admin API", "List media uploaded by a user"."""
        self.local_user(user_id)
        order_by = q.get("order_by") or "created_ts"
        if order_by not in MEDIA_ORDER:
            raise invalid_param("unknown order_by")
        direction = q.get("dir")
        if direction not in (None, "", "f", "b"):
            raise invalid_param("dir must be 'f' or 'b'")
        # Synapse's default: newest first.
        backwards = direction == "b" or (not direction and "order_by" not in q)
        rows, total = self.store.admin_list_user_media(
            user_id, order_by=order_by, backwards=backwards, offset=offset, limit=limit
        )
        media = [
            {
                "media_id": r["media_id"],
                "media_type": r["content_type"],
                "media_length": r["size"],
                "upload_name": r["upload_name"],
                "created_ts": r["created_ts"],
                "last_access_ts": r["upload_ts"],
                "quarantined_by": r["quarantine_reason"],
                "safe_from_quarantine": bool(r["protected"]),
                "sha256": r["sha256"],
            }
            for r in rows
        ]
        out: dict[str, Any] = {"media": media, "total": total}
        if offset + len(media) < total:
            out["next_token"] = offset + len(media)
        return out

    def room_media(self, room_id: str) -> dict[str, Any]:
        """Synapse admin API "Media Admin API", "List all media in a room"."""
        self.require_room(room_id)
        local: list[str] = []
        remote: list[str] = []
        for uri in dict.fromkeys(self.store.admin_room_media_refs(room_id)):
            m = _MXC.match(uri)
            if m is None:
                continue
            (local if m.group(1) == self.hs.server_name else remote).append(uri)
        return {"local": local, "remote": remote}

    def media_info(self, server_name: str, media_id: str) -> dict[str, Any]:
        """Synapse admin API "Media Admin API", "Query a piece of media by ID": local media, or
        another server's that is cached here or quarantined (what the cache knew of it is kept
        with the quarantine; ``null`` fields when it was never cached). ``quarantined_by`` is
        the quarantine's reason (it names the admin, or the guard's decision)."""
        if server_name != self.hs.server_name:
            return self._remote_media_info(self.remote_media_key(server_name, media_id))
        if not is_valid_media_id(media_id):
            raise not_found("no such media")
        row = self.store.get_local_media(media_id)
        if row is None:
            raise not_found("no such media")
        return {
            "media_info": {
                "media_origin": server_name, "user_id": row["user_id"],
                "media_id": media_id, "media_type": row["content_type"],
                "media_length": row["size"], "upload_name": row["upload_name"],
                "created_ts": row["created_ts"], "last_access_ts": row["upload_ts"],
                "quarantined_by": self.store.admin_media_quarantine_reason(media_id),
                "safe_from_quarantine": bool(self.store.protected_media_ids([media_id])),
                "sha256": row["sha256"],
            }
        }  # fmt: skip

    def _remote_media_info(self, key: tuple[str, str]) -> dict[str, Any]:
        cached = self.store.get_remote_media(*key)
        quarantine = self.store.remote_media_quarantine(*key)
        row = cached if cached is not None else quarantine
        if row is None:
            raise not_found("no such media")
        return {
            "media_info": {
                "media_origin": key[0], "user_id": None, "media_id": key[1],
                "media_type": row["content_type"], "media_length": row["size"],
                "upload_name": row["upload_name"], "created_ts": row["fetched_ts"],
                "last_access_ts": row["last_access_ts"],
                "quarantined_by": quarantine["reason"] if quarantine is not None else None,
                "safe_from_quarantine": False,  # protection is for local media only
                "sha256": row["sha256"],
            }
        }  # fmt: skip

    async def quarantine(self, admin: str, media_ids: list[str], quarantine: bool,
                         audit: Audit, remote: Sequence[tuple[str, str]] = ()) -> int:  # fmt: skip
        """Quarantine (or release) local media IDs (the guard's ``guard_quarantined_media``)
        and other servers' media (``remote`` (server name, media ID) pairs, cached or not:
        ``quarantined_remote_media``) in one transaction with ``audit``; the number changed.

        Quarantining another server's media deletes its cached copy from disk (the row and its
        key in this transaction, then the file and thumbnails): a security-first choice over
        Synapse's, which keeps the file. What was quarantined is harmful by assumption; keeping
        the bytes would leave them on this server's disk and in its backups for no use, since
        they are never served while quarantined. Releasing it fetches it from its server again
        on the next request (if that server still has it), through the same checks as any
        fetch."""
        store = self.store
        now = self.hs.now_ms()
        reason = f"quarantined by {admin} (admin API)"
        dropped: list[str] = []

        def fn(conn: Txn) -> int:
            dropped.clear()
            audit(conn)
            if not quarantine:
                n = sum(store.unquarantine_media_in(conn, m) for m in media_ids)
                return n + sum(store.unquarantine_remote_media_in(conn, *k) for k in remote)
            n = sum(store.quarantine_media_in(conn, m, None, reason, now) for m in media_ids)
            for server_name, media_id in remote:
                new, file_path = store.quarantine_remote_media_in(
                    conn, server_name, media_id, None, reason, now
                )
                n += new
                if file_path is not None:
                    dropped.append(file_path)
            return n

        n = await store.transaction(fn)
        await self.hs.media.drop_remote_copies(dropped)
        return n

    async def protect(self, admin: str, media_id: str, protect: bool, audit: Audit) -> None:
        """Protect a local media ID from bulk quarantine (or stop protecting it)."""
        store = self.store
        now = self.hs.now_ms()

        def fn(conn: Txn) -> None:
            audit(conn)
            store.protect_media_in(conn, media_id, admin, now, protect)

        await store.transaction(fn)

    def unprotected(self, media_ids: list[str]) -> list[str]:
        """``media_ids`` less the protected ones (a bulk quarantine passes those by)."""
        protected = self.store.protected_media_ids(media_ids)
        return [m for m in media_ids if m not in protected]

    def local_media_ids_of_room(self, room_id: str) -> list[str]:
        suffix = self.hs.server_name
        out = []
        for uri in self.room_media(room_id)["local"]:
            m = _MXC.match(uri)
            if m is not None and m.group(1) == suffix:
                out.append(m.group(2))
        return out

    def remote_media_keys_of_room(self, room_id: str) -> list[tuple[str, str]]:
        """(server name, media ID) of the other servers' media the room's events use (those
        of :meth:`room_media`'s ``remote`` list that are well-formed)."""
        out: list[tuple[str, str]] = []
        for uri in self.room_media(room_id)["remote"]:
            m = _MXC.match(uri)
            if m is None or m.group(1) == self.hs.server_name:
                continue
            try:
                out.append(self.remote_media_key(m.group(1), m.group(2)))
            except MatrixError:
                continue
        return out

    def local_media_ids_of_user(self, user_id: str) -> list[str]:
        self.local_user(user_id)
        rows, _ = self.store.admin_list_user_media(
            user_id, order_by="media_id", backwards=False, offset=0, limit=2**31
        )
        return [r["media_id"] for r in rows]

    async def delete_media(self, media_ids: list[str], audit: Audit) -> list[str]:
        """Delete local media: the rows in one transaction (with ``audit``), then the files;
        the IDs deleted."""
        store = self.store

        def fn(conn: Txn) -> list[str]:
            audit(conn)
            return [m for m in media_ids if store.delete_local_media_in(conn, [m])]

        deleted = await store.transaction(fn)
        for media_id in deleted:
            self.hs.media.delete_files(media_id)
        return deleted

    def media_before(self, before_ts: int, size_gt: int, keep_profiles: bool) -> list[str]:
        ids = self.store.admin_local_media_ids_before(before_ts, size_gt)
        if keep_profiles and ids:
            used = self.store.admin_profile_media_refs()
            ids = [m for m in ids if f"mxc://{self.hs.server_name}/{m}" not in used]
        return ids

    # -- registration tokens ------------------------------------------------------------------------
    @staticmethod
    def token_handle(row: Row) -> str:
        """What the listing shows for a token: its stored prefix, ``:`` (never part of a token)
        and the first hex digits of its hash."""
        return f"{row['prefix']}:{row['hash_hex'][:HANDLE_HEX]}"

    def token_view(self, row: Row, token: str | None = None) -> dict[str, Any]:
        return {
            "token": token if token is not None else self.token_handle(row),
            "uses_allowed": row["uses_allowed"],
            "pending": 0,
            "completed": row["completed"],
            "expiry_time": row["expiry_ts"],
            "valid": registration_token_valid(row, self.hs.now_ms()),
        }

    def find_token(self, ident: str) -> Row:
        """A token by its full text or by the handle the listing shows; 404 otherwise."""
        if not ident or len(ident) > 100:
            raise not_found("no such registration token")
        if ":" in ident:
            prefix, _, hexpart = ident.rpartition(":")
            if len(hexpart) < 8 or any(c not in "0123456789abcdef" for c in hexpart.lower()):
                raise not_found("no such registration token")
            rows = self.store.find_registration_tokens(prefix, hexpart.lower())
            if len(rows) != 1:
                raise not_found("no such registration token")
            return rows[0]
        row = self.store.get_registration_token_hashed(ident)
        if row is None:
            raise not_found("no such registration token")
        return row

    def list_tokens(self, valid: bool | None) -> dict[str, Any]:
        """Synapse admin API "Registration Tokens", "List all tokens"."""
        views = [self.token_view(r) for r in self.store.list_registration_tokens_hashed()]
        if valid is not None:
            views = [v for v in views if v["valid"] == valid]
        for v in views:
            del v["valid"]
        return {"registration_tokens": views}

    def token_details(self, ident: str) -> dict[str, Any]:
        view = self.token_view(self.find_token(ident))
        del view["valid"]
        return view

    async def new_token(self, admin: str, body: dict, audit: Audit,
                        ip: str | None) -> dict[str, Any]:  # fmt: skip
        """Synapse admin API "Registration Tokens", "Create token". The token is shown in
        full here, once: only its hash is stored."""
        token = body.get("token")
        if token is not None:
            if (
                not isinstance(token, str)
                or not 0 < len(token) <= MAX_TOKEN_LENGTH
                or any(c not in TOKEN_CHARS for c in token)
            ):
                raise invalid_param("a token is 1-64 characters of A-Z a-z 0-9 . _ ~ -")
        else:
            length = body.get("length", 16)
            if (
                isinstance(length, bool)
                or not isinstance(length, int)
                or not (0 < length <= MAX_TOKEN_LENGTH)
            ):
                raise invalid_param("'length' must be an integer from 1 to 64")
            alphabet = string.ascii_letters + string.digits + "._~-"
            token = "".join(secrets.choice(alphabet) for _ in range(length))
        uses = _opt_int(body, "uses_allowed", minimum=0)
        expiry = _opt_int(body, "expiry_time", minimum=0)
        now = self.hs.now_ms()
        if expiry is not None and expiry < now:
            raise invalid_param("'expiry_time' is in the past")
        store = self.store

        def fn(conn: Txn) -> bool:
            audit(conn)
            if not store.create_registration_token_in(conn, token, uses, expiry, now):
                return False
            record_in(
                store, conn, records.ACTION_REGISTRATION_TOKEN_CREATE, actor=admin, ts=now,
                target=token[:4] + "…", origin=ip, details={"uses": uses, "expiry_ts": expiry},
            )  # fmt: skip
            return True

        if not await store.transaction(fn):
            raise invalid_param("that token already exists")
        return {"token": token, "uses_allowed": uses, "pending": 0, "completed": 0,
                "expiry_time": expiry}  # fmt: skip

    async def update_token(self, admin: str, ident: str, body: dict, audit: Audit,
                           ip: str | None) -> dict[str, Any]:  # fmt: skip
        """Synapse admin API "Registration Tokens", "Update token"."""
        row = self.find_token(ident)
        changes: dict[str, int | None] = {}
        if "uses_allowed" in body:
            changes["uses_allowed"] = _opt_int(body, "uses_allowed", minimum=0)
        if "expiry_time" in body:
            expiry = _opt_int(body, "expiry_time", minimum=0)
            if expiry is not None and expiry < self.hs.now_ms():
                raise invalid_param("'expiry_time' is in the past")
            changes["expiry_ts"] = expiry
        store, now, hash_hex = self.store, self.hs.now_ms(), row["hash_hex"]

        def fn(conn: Txn) -> Row | None:
            audit(conn)
            if not store.update_registration_token_in(conn, hash_hex, changes):
                return None
            if changes:
                record_in(
                    store, conn, records.ACTION_REGISTRATION_TOKEN_UPDATE, actor=admin, ts=now,
                    target=row["prefix"] + "…", origin=ip,
                    details={k: v for k, v in changes.items()},
                )  # fmt: skip
            return store.registration_token_by_hash_in(conn, hash_hex)

        updated = await store.transaction(fn)
        if updated is None:
            raise not_found("no such registration token")
        view = self.token_view(updated, ident if ":" not in ident else None)
        del view["valid"]
        return view

    async def delete_token(self, admin: str, ident: str, audit: Audit, ip: str | None) -> None:
        """Synapse admin API "Registration Tokens", "Delete token"."""
        row = self.find_token(ident)
        store, now, hash_hex = self.store, self.hs.now_ms(), row["hash_hex"]

        def fn(conn: Txn) -> bool:
            audit(conn)
            if not store.delete_registration_token_in(conn, hash_hex):
                return False
            record_in(
                store, conn, records.ACTION_REGISTRATION_TOKEN_DELETE, actor=admin, ts=now,
                target=row["prefix"] + "…", origin=ip, details={"deleted": True},
            )  # fmt: skip
            return True

        if not await store.transaction(fn):
            raise not_found("no such registration token")


def _query_bool(q: dict[str, str], key: str) -> bool | None:
    """A ``true``/``false`` query parameter (absent or empty: None)."""
    value = q.get(key)
    if value is None or value == "":
        return None
    if value == "true":
        return True
    if value == "false":
        return False
    raise invalid_param(f"query parameter {key!r} must be 'true' or 'false'")


__all__ = ["AdminDirectory"]
