"""Ephemeral data units across servers (S-S API "EDUs", "Typing Notifications", "Presence",
"Receipts", "Device Management", "End-to-End Encryption", "Send-to-device messaging", "Server
Access Control Lists (ACLs)").

``hs.federation.edus`` registers one handler per EDU type in ``hs.federation.edu_handlers``
(``async fn(origin, content)``, called by ``PUT /send/{txnId}`` for each EDU of a transaction)
and sends local users' typing notifications, receipts and to-device messages to other servers
through ``hs.federation.sender.send_edu``.

Every handler first checks that the user (or sender) the EDU speaks for belongs to the origin
server, and drops the EDU otherwise (logged with the reason); an EDU never fails its
transaction. ``m.typing`` and ``m.receipt`` are dropped for rooms whose ``m.room.server_acl``
denies the origin.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, TypeGuard

from bastion.core.canonical_json import canonical_json
from bastion.core.identifiers import is_valid_user_id, server_name_of
from bastion.services.e2ee import MAX_ID_LENGTH, MAX_TO_DEVICE_CONTENT, MAX_TO_DEVICE_MESSAGES
from bastion.services.ephemeral import PRESENCE_STATES
from bastion.services.lifecycle import BackgroundService
from bastion.storage.interface import Txn

if TYPE_CHECKING:
    from bastion.federation.container import Federation
    from bastion.federation.sender import FederationSender
    from bastion.server import HomeServer

log = logging.getLogger("bastion.federation.edus")

#: Typing notifications from other servers last this long unless renewed (the EDU carries no
#: timeout; the local cap applies).
FEDERATION_TYPING_TIMEOUT_MS = 30_000
#: Receipts applied from one ``m.receipt`` EDU.
MAX_RECEIPTS_PER_EDU = 1000
#: Presence updates applied from one ``m.presence`` EDU.
MAX_PRESENCE_PER_EDU = 1000
#: Received ``message_id`` values are remembered this long (retried transactions arrive sooner).
TO_DEVICE_DEDUPE_MS = 7 * 24 * 3600 * 1000


async def send_edu(
    sender: FederationSender, destination: str, edu_type: str, content: dict, key: str | None = None
) -> None:
    """Queue an EDU for ``destination`` with the federation sender (which batches, retries and
    persists it). ``key``: a later EDU with the same key may replace an unsent earlier one."""
    if destination == sender.hs.server_name:
        return
    try:
        await sender.send_edu(destination, edu_type, content, key=key)
    except Exception:  # a sender failure must not fail the local request
        log.exception("queueing %s for %s failed", edu_type, destination)


def ok_id(value: object) -> TypeGuard[str]:
    """A non-empty string of at most :data:`MAX_ID_LENGTH` characters (room, device, message IDs)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


class FederationEDUs(BackgroundService):
    """``hs.federation.edus``: inbound EDU handlers and outbound room EDUs (queued in the
    background, through the service lifecycle)."""

    background_name = "EDU"

    def __init__(self, hs: HomeServer, fed: Federation) -> None:
        super().__init__()
        self.hs = hs
        self.fed = fed
        self.store = hs.store
        handlers = fed.edu_handlers
        handlers["m.typing"] = self.on_typing
        handlers["m.receipt"] = self.on_receipt
        handlers["m.presence"] = self.on_presence
        handlers["m.direct_to_device"] = self.on_direct_to_device
        handlers["m.device_list_update"] = fed.device_lists.on_device_list_update
        handlers["m.signing_key_update"] = fed.device_lists.on_signing_key_update

    # -- helpers ------------------------------------------------------------------------------
    def servers_in_room(self, room_id: str) -> list[str]:
        """Servers with a joined member in the room, other than this one (and not refused by
        the server-wide allow/deny list)."""
        return self.fed.sender.destinations_for_room(room_id)

    def _joined(self, room_id: str, user_id: str) -> bool:
        row = self.store.get_membership(room_id, user_id)
        return row is not None and row["membership"] == "join"

    # -- inbound ------------------------------------------------------------------------------
    async def on_typing(self, origin: str, content: dict) -> None:
        """``m.typing`` (S-S API "Typing Notifications"): the user must belong to the origin and
        be joined to the room, and the room's ACL must allow the origin."""
        room_id, user_id, typing = (content.get(k) for k in ("room_id", "user_id", "typing"))
        if (
            not ok_id(room_id)
            or not is_valid_user_id(user_id, historical=True)
            or not isinstance(typing, bool)
        ):
            log.info("dropping a malformed m.typing from %s", origin)
            return
        if server_name_of(user_id) != origin:
            log.info("dropping m.typing from %s for %s: not its user", origin, user_id)
            return
        if not self.fed.acl.room_allows(room_id, origin):
            log.info("dropping m.typing from %s in %s: denied by the server ACL", origin, room_id)
            return
        if not self._joined(room_id, user_id):
            log.info("dropping m.typing from %s: %s is not joined to %s", origin, user_id, room_id)
            return
        self.hs.typing.set_typing(room_id, user_id, typing, FEDERATION_TYPING_TIMEOUT_MS)

    async def on_receipt(self, origin: str, content: dict) -> None:
        """``m.receipt`` (S-S API "Receipts"): ``m.read`` receipts of the origin's users who are
        joined to the room, stored like local receipts; rooms whose ACL denies the origin are
        skipped."""
        now = self.hs.now_ms()
        receipts: list[tuple[str, str, str, str, int]] = []
        for room_id, by_type in content.items():
            if not ok_id(room_id) or not isinstance(by_type, dict):
                continue
            if not self.fed.acl.room_allows(room_id, origin):
                log.info("dropping receipts from %s in %s: denied by the ACL", origin, room_id)
                continue
            by_user = by_type.get("m.read")
            if not isinstance(by_user, dict):
                continue
            for user_id, receipt in by_user.items():
                if (
                    not is_valid_user_id(user_id, historical=True)
                    or server_name_of(user_id) != origin
                ):
                    log.info("dropping a receipt from %s for %r: not its user", origin, user_id)
                    continue
                if not isinstance(receipt, dict):
                    continue
                event_ids, data = receipt.get("event_ids"), receipt.get("data")
                if (
                    not isinstance(event_ids, list)
                    or not event_ids
                    or not all(ok_id(e) and e.startswith("$") for e in event_ids)
                    or not isinstance(data, dict)
                ):
                    continue
                ts = data.get("ts")
                if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
                    ts = now
                thread_id = data.get("thread_id")
                if thread_id is not None and not ok_id(thread_id):
                    continue
                if not self._joined(room_id, user_id):
                    log.info("dropping a receipt: %s is not joined to %s", user_id, room_id)
                    continue
                receipts.append((room_id, user_id, thread_id or "", event_ids[-1], ts))
                if len(receipts) >= MAX_RECEIPTS_PER_EDU:
                    break
        if not receipts:
            return
        store = self.store

        def fn(conn: Txn) -> None:
            for room_id, user_id, thread_id, event_id, ts in receipts:
                store.set_receipt_in(conn, room_id, "m.read", user_id, thread_id, event_id, ts)

        await store.transaction(fn)

    async def on_presence(self, origin: str, content: dict) -> None:
        """``m.presence`` (S-S API "Presence"): updates for the origin's users who share a room
        with a local user."""
        push = content.get("push")
        if not isinstance(push, list):
            log.info("dropping a malformed m.presence from %s", origin)
            return
        now = self.hs.now_ms()
        for update in push[:MAX_PRESENCE_PER_EDU]:
            if not isinstance(update, dict):
                continue
            user_id, presence = update.get("user_id"), update.get("presence")
            ago, status_msg = update.get("last_active_ago", 0), update.get("status_msg")
            if (
                not is_valid_user_id(user_id, historical=True)
                or presence not in PRESENCE_STATES
                or not isinstance(ago, int)
                or isinstance(ago, bool)
                or (status_msg is not None and not isinstance(status_msg, str))
            ):
                continue
            if server_name_of(user_id) != origin:
                log.info("dropping presence from %s for %s: not its user", origin, user_id)
                continue
            if not self.fed.device_lists.shares_room_with_local_user(user_id):
                continue
            await self.hs.presence.set_remote(
                user_id, presence, status_msg[:1024] if status_msg else None, now - max(ago, 0)
            )

    async def on_direct_to_device(self, origin: str, content: dict) -> None:
        """``m.direct_to_device`` (S-S API "Send-to-device messaging"): delivered to local
        devices like local to-device messages (``*``: every device), once per ``message_id``."""
        sender, event_type = content.get("sender"), content.get("type")
        message_id, messages = content.get("message_id"), content.get("messages")
        if (
            not is_valid_user_id(sender, historical=True)
            or not ok_id(event_type)
            or not ok_id(message_id)
            or not isinstance(messages, dict)
        ):
            log.info("dropping a malformed m.direct_to_device from %s", origin)
            return
        if server_name_of(sender) != origin:
            log.info("dropping m.direct_to_device from %s for %s: not its user", origin, sender)
            return
        e2ee = self.hs.e2ee
        plan: list[tuple[str, dict[str, dict]]] = []
        total = 0
        for user_id, by_device in messages.items():
            if (
                not is_valid_user_id(user_id, historical=True)
                or server_name_of(user_id) != self.hs.server_name
            ):
                log.info("m.direct_to_device from %s: %r is not a user here", origin, user_id)
                continue
            if not isinstance(by_device, dict):
                continue
            kept = {
                d: c for d, c in by_device.items()
                if ok_id(d) and isinstance(c, dict)
                and len(canonical_json(c)) <= MAX_TO_DEVICE_CONTENT
            }  # fmt: skip
            total += len(kept)
            if total > MAX_TO_DEVICE_MESSAGES:
                log.info("m.direct_to_device from %s: too many messages", origin)
                break
            if kept:
                plan.append((user_id, kept))
        store = self.store
        now = self.hs.now_ms()

        def fn(conn: Txn) -> bool:
            if store.federation_to_device_seen_in(
                conn, origin, message_id, now, TO_DEVICE_DEDUPE_MS
            ):
                return False
            e2ee.deliver_to_device_in(conn, sender, event_type, plan)
            return True

        if not await store.transaction(fn):
            log.info("m.direct_to_device %s from %s already delivered", message_id, origin)

    # -- outbound -----------------------------------------------------------------------------
    def local_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        """A local user started or stopped typing: tell the other servers in the room."""
        if server_name_of(user_id) != self.hs.server_name:
            return
        content = {"room_id": room_id, "user_id": user_id, "typing": typing}
        for destination in self.servers_in_room(room_id):
            self.spawn(
                send_edu(
                    self.fed.sender, destination, "m.typing", content, key=f"{room_id} {user_id}"
                )
            )

    async def local_receipt(
        self, room_id: str, user_id: str, event_id: str, ts: int, thread_id: str | None
    ) -> None:
        """A local user's public read receipt (``m.read``): tell the other servers."""
        if server_name_of(user_id) != self.hs.server_name:
            return
        data: dict[str, Any] = {"ts": ts}
        if thread_id is not None:
            data["thread_id"] = thread_id
        content = {room_id: {"m.read": {user_id: {"event_ids": [event_id], "data": data}}}}
        key = f"{room_id} {user_id} {thread_id or ''}"
        for destination in self.servers_in_room(room_id):
            await send_edu(self.fed.sender, destination, "m.receipt", content, key=key)

    def local_presence(self, user_id: str, rooms: set[str], content: dict) -> None:
        """A local user's presence changed (S-S API "Presence"): an ``m.presence`` EDU to every
        other server with a joined member in one of the user's ``rooms``, which is where the
        spec says presence goes (users sharing a room). ``content``: the user's C-S presence
        content (``presence``, ``last_active_ago``, ``currently_active``, ``status_msg``). An
        unsent update is replaced by a newer one for the same user."""
        if server_name_of(user_id) != self.hs.server_name:
            return
        push = {"user_id": user_id, **content}
        destinations = sorted({d for room_id in rooms for d in self.servers_in_room(room_id)})
        for destination in destinations:
            self.spawn(
                send_edu(
                    self.fed.sender, destination, "m.presence", {"push": [push]},
                    key=f"presence {user_id}",
                )
            )  # fmt: skip

    def send_to_device_in(
        self, conn: Txn, sender: str, event_type: str,
        remote: dict[str, dict[str, dict]],
    ) -> None:  # fmt: skip
        """Inside the write that accepts a to-device request: queue the messages for remote
        users ({user_id: {device_id or "*": content}}) as one ``m.direct_to_device`` EDU per
        server, each with a new ``message_id`` (so an acknowledged request is never lost)."""
        by_server: dict[str, dict[str, dict]] = {}
        for user_id, by_device in remote.items():
            by_server.setdefault(server_name_of(user_id) or "", {})[user_id] = by_device
        for destination, messages in sorted(by_server.items()):
            content = {
                "sender": sender,
                "type": event_type,
                "message_id": secrets.token_urlsafe(24),  # 32 characters
                "messages": messages,
            }
            if not self.fed.sender.send_edu_in(conn, destination, "m.direct_to_device", content):
                log.info("to-device messages for %s dropped: server refused", destination)
