"""End-to-end encryption, server side (C-S API "End-to-End Encryption", "Send-to-Device
messaging", "Cross-signing", "Server-side key backups").

The server never decrypts anything: it validates, stores and relays keys and messages. What real
clients rely on (see the project's client notes) and how this service keeps it:

- ``/keys/query`` serves each device's keys exactly as uploaded (only ``unsigned`` is added and
  verified cross-signing signatures are merged into ``signatures``); re-uploading different
  device keys for an existing device is refused.
- Signed one-time and fallback keys must carry a valid signature by the device's Ed25519 key.
  ``/keys/claim`` hands out each one-time key once, oldest upload first, in one transaction,
  then the fallback key (marked used until a new one is uploaded).
- To-device messages are delivered in order, at most :data:`TO_DEVICE_LIMIT` per sync, and
  deleted only when the device syncs again with a later ``since``. When a response cannot carry
  every pending message, the position of the last one it carried is recorded for its
  ``next_batch`` and a new stream position is taken, so the next sync moves ``next_batch``
  forward and continues from there.
- Device-list changes (keys uploaded, devices added or deleted, cross-signing keys changed) take
  a global stream position and wake every user sharing a room with the owner; ``/sync`` and
  ``/keys/changes`` report them, plus users who newly share a room (``changed``) or no longer
  share any (``left``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from bastion.core.canonical_json import canonical_json
from bastion.core.e2e_keys import (
    backup_key_replaces,
    bad_json,
    check_backup_key,
    check_cross_signing_key,
    check_device_keys,
    check_one_time_keys,
    check_signature,
    ed25519_key,
    invalid,
    same_signed_content,
)
from bastion.core.identifiers import is_valid_user_id, server_name_of
from bastion.errors import (
    M_INVALID_SIGNATURE,
    M_WRONG_ROOM_KEYS_VERSION,
    MatrixError,
    forbidden,
    missing_param,
    not_found,
    too_large,
)
from bastion.ledger import records
from bastion.services.lifecycle import BackgroundService
from bastion.services.remote import RemoteDevices, ToDeviceOutbox
from bastion.services.security_records import SIGNATURES_PER_RECORD, key_sha256, record_in
from bastion.services.sync_api import SyncContext, SyncToken
from bastion.storage.interface import Txn

if TYPE_CHECKING:
    from bastion.server import HomeServer

log = logging.getLogger("bastion.e2ee")

TO_DEVICE_LIMIT = 100
MAX_ONE_TIME_KEYS_PER_DEVICE = 1000  # per algorithm; clients keep about 50
MAX_TO_DEVICE_MESSAGES = 10000  # entries in one sendToDevice request, before "*" expansion
MAX_TO_DEVICE_CONTENT = 65536  # bytes of canonical JSON per message (as for events)
MAX_CLAIMS = 10000
MAX_QUERY_USERS = 10000
MAX_BACKUP_KEYS_PER_REQUEST = 100000
MAX_ID_LENGTH = 255
DEFAULT_OTK_ALGORITHM = "signed_curve25519"
#: The ``timeout`` of a /keys/query or /keys/claim body (ms): its default and its cap.
KEYS_DEFAULT_TIMEOUT_MS = 10_000
KEYS_MAX_TIMEOUT_MS = 60_000
CROSS_SIGNING_FIELDS = (
    ("master_key", "master"),
    ("self_signing_key", "self_signing"),
    ("user_signing_key", "user_signing"),
)


def timeout_seconds(body: dict) -> float:
    """The ``timeout`` (ms) of a /keys/query or /keys/claim body, defaulted and capped."""
    timeout = body.get("timeout")
    if not isinstance(timeout, int) or isinstance(timeout, bool):
        timeout = KEYS_DEFAULT_TIMEOUT_MS
    return max(0, min(timeout, KEYS_MAX_TIMEOUT_MS)) / 1000


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise invalid(f"{what} must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    return value


class E2EEService(BackgroundService):
    """Keys, to-device messages, device lists, cross-signing and key backup; a /sync
    contributor (``contribute_global``). Its background work (deleting delivered to-device
    messages, recording truncated deliveries) is spawned through the service lifecycle."""

    background_name = "E2EE"

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        self.store = hs.store
        # (user, device) -> {token position: last delivered position} for truncated deliveries
        # (mirrors device_inbox_cursors, so a quick next sync does not wait for the commit).
        self._cursors: dict[tuple[str, str], dict[int, int]] = {}
        #: Device lists and to-device messages across servers (handed in by the homeserver;
        #: None when federation is off).
        self.remote_devices: RemoteDevices | None = None
        self.to_device_outbox: ToDeviceOutbox | None = None

    # -- other servers --------------------------------------------------------------------------
    def _local_change_in(self, conn: Txn, user_id: str, device_id: str, pos: int) -> None:
        """A local device-list change at ``pos``: recorded for the other servers (sent when
        federation is on)."""
        if self.remote_devices is not None:
            self.remote_devices.local_change_in(conn, user_id, device_id, pos)
        else:
            self.store.add_outbound_device_change_in(conn, pos, user_id, device_id)

    def _signing_keys_changed_in(self, conn: Txn, user_id: str) -> None:
        if self.remote_devices is not None:
            self.remote_devices.signing_keys_changed_in(conn, user_id)

    @staticmethod
    def _federation_off(users: Iterable[str], result: dict) -> dict:
        for server in {server_name_of(u) for u in users}:
            result["failures"][server] = {"status": 503, "message": "federation is off"}
        return result

    async def _query_remote(self, wanted: dict[str, list[str]], timeout: float) -> dict:
        if self.remote_devices is not None:
            return await self.remote_devices.query_remote(wanted, timeout)
        empty: dict[str, dict] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        return self._federation_off(wanted, {**empty, "failures": {}})

    async def _claim_remote(self, wanted: dict[str, dict[str, str]], timeout: float) -> dict:
        if self.remote_devices is not None:
            return await self.remote_devices.claim_remote(wanted, timeout)
        return self._federation_off(wanted, {"one_time_keys": {}, "failures": {}})

    # -- wake-ups -----------------------------------------------------------------------------
    def queue_device_list_wake(self, user_id: str) -> None:
        """Inside a write function: wake the user now and, after commit, everyone sharing a
        room with them (computed on the event loop)."""
        self.store.wake(user_id)
        self.store.run_after_commit(self._wake_sharing, user_id)

    def _wake_sharing(self, user_id: str) -> None:
        # On the event loop, after the commit.
        self.hs.notifier.notify(self.users_sharing_room_with(user_id))

    # -- room membership (from the rooms store) -----------------------------------------------
    def users_sharing_room_with(self, user_id: str) -> set[str]:
        users = set(self.store.get_users_sharing_room_with(user_id))
        users.add(user_id)
        return users

    def _rooms_for_user(self, user_id: str, membership: str) -> set[str]:
        return set(self.store.get_rooms_for_user(user_id, membership=membership))

    def device_list_delta(
        self, user_id: str, since_pos: int, upto_pos: int, joined_room_ids: set[str] | None = None
    ) -> tuple[list[str], list[str]]:
        """(changed, left) for ``user_id`` over (since, upto] (E2EE "Extensions to /sync",
        "Tracking the device list for a user")."""
        sharing = self.users_sharing_room_with(user_id)
        changed = self.store.device_list_changes(since_pos, upto_pos) & sharing
        left: set[str] = set()
        joined = (
            set(joined_room_ids)
            if joined_room_ids is not None
            else self._rooms_for_user(user_id, "join")
        )
        rooms = joined | self._rooms_for_user(user_id, "leave")
        rooms |= self._rooms_for_user(user_id, "ban")
        if rooms:
            for room_id, member, membership, _pos in self.store.get_membership_changes_in_rooms(
                rooms, since_pos, upto_pos
            ):
                if membership == "join":
                    if member == user_id:
                        changed |= set(self.store.get_joined_users(room_id))
                    else:
                        changed.add(member)
                elif membership in ("leave", "ban"):
                    if member == user_id:
                        left |= set(self.store.get_joined_users(room_id))
                    else:
                        left.add(member)
        changed &= sharing
        left -= sharing
        left.discard(user_id)
        return sorted(changed), sorted(left)

    # -- hooks for the accounts service (inside its write functions) --------------------------
    def on_device_added(self, conn: Txn, user_id: str, device_id: str) -> None:
        """A new device: a device-list change for everyone sharing a room with its owner (and
        an ``m.device_list_update`` for the servers sharing a room)."""
        pos = self.store.add_device_list_change_in(conn, user_id)
        self._local_change_in(conn, user_id, device_id, pos)
        self.queue_device_list_wake(user_id)

    def on_device_renamed(self, conn: Txn, user_id: str, device_id: str) -> None:
        """A device's display name changed: a device-list change (its name is served with its
        keys, and other servers get an ``m.device_list_update``)."""
        pos = self.store.add_device_list_change_in(conn, user_id)
        self._local_change_in(conn, user_id, device_id, pos)
        self.queue_device_list_wake(user_id)

    def on_device_deleted(self, conn: Txn, user_id: str, device_id: str) -> bool:
        """A deleted device: drop its keys, one-time and fallback keys, signatures on it and
        pending to-device messages; emit a device-list change. True if the device had
        published device keys (the caller's ``device.delete`` record says so)."""
        had_keys = self.store.delete_device_e2e_in(conn, user_id, device_id)
        self._cursors.pop((user_id, device_id), None)
        pos = self.store.add_device_list_change_in(conn, user_id)
        self._local_change_in(conn, user_id, device_id, pos)
        self.queue_device_list_wake(user_id)
        return had_keys

    # -- POST /keys/upload ----------------------------------------------------------------------
    def _otk_counts(self, counts: dict[str, int]) -> dict[str, int]:
        return {DEFAULT_OTK_ALGORITHM: 0, **counts}

    async def upload_keys(self, requester, body: dict, ip: str | None = None) -> dict:
        """POST /keys/upload. New device keys are a ``device_keys.upload`` record (with the
        SHA-256 of the stored key object) in the same transaction; one-time and fallback keys
        are not recorded (see :mod:`bastion.services.security_records`)."""
        user_id, device_id = requester.user_id, requester.device_id
        device_keys = body.get("device_keys")
        device_key = None
        if device_keys is not None:
            device_key = check_device_keys(device_keys, user_id, device_id)
        else:
            stored = self.store.get_device_keys_one(user_id, device_id)
            if stored is not None:
                ed = stored.get("keys", {}).get(f"ed25519:{device_id}")
                device_key = ed25519_key(ed, "stored device key") if ed else None
        otks = body.get("one_time_keys")
        otk_list = (
            check_one_time_keys(otks, user_id, device_id, device_key, fallback=False)
            if otks is not None
            else []
        )
        if len(otk_list) > MAX_ONE_TIME_KEYS_PER_DEVICE:
            raise invalid(f"at most {MAX_ONE_TIME_KEYS_PER_DEVICE} one-time keys per upload")
        fbks = body.get("fallback_keys")
        fallback_list = (
            check_one_time_keys(fbks, user_id, device_id, device_key, fallback=True)
            if fbks is not None
            else []
        )
        now = self.hs.now_ms()
        store = self.store

        def fn(conn: Txn) -> dict[str, int]:
            if not store.device_exists_in(conn, user_id, device_id):
                raise not_found("this device no longer exists")
            if device_keys is not None:
                existing = store.get_device_keys_in(conn, user_id, device_id)
                if existing is None:
                    store.set_device_keys_in(conn, user_id, device_id, device_keys, now)
                    record_in(
                        store, conn, records.ACTION_DEVICE_KEYS_UPLOAD, actor=user_id, ts=now,
                        target=user_id, subject=user_id, origin=ip,
                        details={"device_id": device_id, "keys_sha256": key_sha256(device_keys)},
                    )  # fmt: skip
                    pos = store.add_device_list_change_in(conn, user_id)
                    self._local_change_in(conn, user_id, device_id, pos)
                    self.queue_device_list_wake(user_id)
                elif not same_signed_content(existing, device_keys):
                    raise invalid(
                        "this device already has different device keys; log in as a new device"
                    )
            for algorithm, key_id, key in otk_list:
                old = store.get_one_time_key_in(conn, user_id, device_id, algorithm, key_id)
                if old is not None:
                    if canonical_json(old) != canonical_json(key):
                        raise invalid(f"one-time key {algorithm}:{key_id} was already uploaded")
                    continue
                store.add_one_time_key_in(conn, user_id, device_id, algorithm, key_id, key)
            counts = store.count_one_time_keys_in(conn, user_id, device_id)
            if any(n > MAX_ONE_TIME_KEYS_PER_DEVICE for n in counts.values()):
                raise invalid(f"at most {MAX_ONE_TIME_KEYS_PER_DEVICE} unclaimed one-time keys")
            for algorithm, key_id, key in fallback_list:
                current = store.get_fallback_key_in(conn, user_id, device_id, algorithm)
                if (
                    current is not None
                    and current[0] == key_id
                    and canonical_json(current[1]) == canonical_json(key)
                ):
                    continue  # the same key again: keep its used flag
                store.set_fallback_key_in(conn, user_id, device_id, algorithm, key_id, key)
            return counts

        counts = await store.transaction(fn)
        return {"one_time_key_counts": self._otk_counts(counts)}

    # -- POST /keys/query -----------------------------------------------------------------------
    def _with_signatures(self, obj: dict, extra: list, visible_to: set[str]) -> dict:
        out = dict(obj)
        sigs = {u: dict(v) for u, v in (obj.get("signatures") or {}).items()}
        for signer_user, signer_key, signature in extra:
            if signer_user in visible_to:
                sigs.setdefault(signer_user, {})[signer_key] = signature
        if sigs:
            out["signatures"] = sigs
        return out

    def local_device_keys(
        self, user_id: str, device_ids: list[str] | None, *, unsigned: bool = True
    ) -> dict[str, dict]:
        """{device_id: device keys} of a local user as /keys/query serves them: as uploaded,
        with the signatures verified on upload by the owner merged in (and ``unsigned`` with
        the display name when asked)."""
        devices = self.store.get_device_keys(user_id, device_ids or None)
        sigs = self.store.get_signatures(user_id, devices.keys())
        served = {}
        for device_id, (keys, display_name) in devices.items():
            obj = self._with_signatures(keys, sigs.get(device_id, []), {user_id})
            if unsigned:
                extra = dict(obj.get("unsigned") or {})
                if display_name is not None:
                    extra["device_display_name"] = display_name
                obj["unsigned"] = extra
            served[device_id] = obj
        return served

    def master_key_view(self, user_id: str, master: dict, viewer: str | None) -> dict:
        """A master key with the verified signatures ``viewer`` may see (the owner's always;
        the viewer's own, e.g. by their user-signing key)."""
        (pub,) = (k.partition(":")[2] for k in master["keys"])
        extra = self.store.get_signatures(user_id, [pub]).get(pub, [])
        visible = {user_id} if viewer is None else {user_id, viewer}
        return self._with_signatures(master, extra, visible)

    def _add_local_user_keys(
        self, result: dict, user_id: str, device_ids: list[str], viewer: str | None
    ) -> None:
        if not self.store.user_exists(user_id):
            return  # unknown users are left out, without a failure (keys.yaml)
        result["device_keys"][user_id] = self.local_device_keys(user_id, device_ids)
        cross = self.store.get_cross_signing_keys(user_id)
        if "master" in cross:
            result["master_keys"][user_id] = self.master_key_view(user_id, cross["master"], viewer)
        if "self_signing" in cross:
            result["self_signing_keys"][user_id] = cross["self_signing"]
        if "user_signing" in cross and user_id == viewer:
            result["user_signing_keys"][user_id] = cross["user_signing"]

    @staticmethod
    def _check_query(body: dict) -> dict[str, list[str]]:
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise bad_json("'device_keys' must be an object mapping user IDs to device lists")
        if len(wanted) > MAX_QUERY_USERS:
            raise invalid(f"at most {MAX_QUERY_USERS} users per query")
        timeout = body.get("timeout")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)):
            raise bad_json("'timeout' must be an integer")
        for user_id, device_ids in wanted.items():
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise bad_json(f"device_keys[{user_id!r}] must be a list of device IDs")
            if not is_valid_user_id(user_id, historical=True):
                raise invalid(f"{user_id!r} is not a valid user ID")
        return wanted

    async def query_keys(self, requester, body: dict) -> dict:
        """POST /keys/query: local users from the store; remote users from the device-list
        cache or their servers (``self.remote_devices``), within the request's ``timeout``."""
        wanted = self._check_query(body)
        result: dict[str, Any] = {
            "device_keys": {},
            "failures": {},
            "master_keys": {},
            "self_signing_keys": {},
            "user_signing_keys": {},
        }
        remote: dict[str, list[str]] = {}
        for user_id, device_ids in wanted.items():
            if server_name_of(user_id) != self.hs.server_name:
                remote[user_id] = device_ids
            else:
                self._add_local_user_keys(result, user_id, device_ids, requester.user_id)
        if remote:
            got = await self._query_remote(remote, timeout_seconds(body))
            for field in ("device_keys", "master_keys", "self_signing_keys", "failures"):
                result[field].update(got[field])
        return result

    def query_keys_for_server(self, body: dict) -> dict:
        """POST /_matrix/federation/v1/user/keys/query: our users only (others are left out);
        no user-signing keys; master keys with their owner's signatures."""
        wanted = self._check_query(body)
        result: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {},
                                  "user_signing_keys": {}}  # fmt: skip
        for user_id, device_ids in wanted.items():
            if server_name_of(user_id) == self.hs.server_name:
                self._add_local_user_keys(result, user_id, device_ids, None)
        del result["user_signing_keys"]
        return result

    # -- POST /keys/claim -----------------------------------------------------------------------
    @staticmethod
    def _check_claim(body: dict) -> dict[str, dict[str, str]]:
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise bad_json("'one_time_keys' must be an object")
        timeout = body.get("timeout")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)):
            raise bad_json("'timeout' must be an integer")
        for user_id, devices in wanted.items():
            if not isinstance(devices, dict) or not all(
                isinstance(a, str) and a for a in devices.values()
            ):
                raise bad_json(f"one_time_keys[{user_id!r}] must map device IDs to algorithms")
            if not is_valid_user_id(user_id, historical=True):
                raise invalid(f"{user_id!r} is not a valid user ID")
        return wanted

    async def _claim_local(self, local: list[tuple[str, str, str]]) -> dict:
        if len(local) > MAX_CLAIMS:
            raise invalid(f"at most {MAX_CLAIMS} keys per claim")
        store = self.store

        def fn(conn: Txn) -> dict:
            out: dict[str, dict] = {}
            for user_id, device_id, algorithm in local:
                got = store.claim_one_time_key_in(conn, user_id, device_id, algorithm)
                if got is not None:
                    key_id, key, _fallback = got
                    out.setdefault(user_id, {})[device_id] = {f"{algorithm}:{key_id}": key}
            return out

        return await store.transaction(fn) if local else {}

    async def claim_keys(self, requester, body: dict) -> dict:
        """POST /keys/claim: local keys in one transaction; remote users' keys from their
        servers (``/user/keys/claim``) within the request's ``timeout``."""
        wanted = self._check_claim(body)
        local: list[tuple[str, str, str]] = []
        remote: dict[str, dict[str, str]] = {}
        for user_id, devices in wanted.items():
            if server_name_of(user_id) != self.hs.server_name:
                remote[user_id] = devices
            else:
                local += [(user_id, d, a) for d, a in devices.items()]
        if sum(len(d) for d in remote.values()) + len(local) > MAX_CLAIMS:
            raise invalid(f"at most {MAX_CLAIMS} keys per claim")
        claimed = await self._claim_local(local)
        failures: dict[str, dict] = {}
        if remote:
            got = await self._claim_remote(remote, timeout_seconds(body))
            claimed.update(got["one_time_keys"])
            failures.update(got["failures"])
        return {"one_time_keys": claimed, "failures": failures}

    async def claim_keys_for_server(self, body: dict) -> dict:
        """POST /_matrix/federation/v1/user/keys/claim: our users only, same rules as the
        client API (oldest one-time key first, then the fallback key)."""
        wanted = self._check_claim(body)
        local = [
            (user_id, d, a)
            for user_id, devices in wanted.items()
            if server_name_of(user_id) == self.hs.server_name
            for d, a in devices.items()
        ]
        return {"one_time_keys": await self._claim_local(local)}

    # -- GET /keys/changes ----------------------------------------------------------------------
    def key_changes(self, requester, from_token: str | None, to_token: str | None) -> dict:
        if not from_token or not to_token:
            raise missing_param("'from' and 'to' are required")
        since = SyncToken.parse(from_token)
        upto = SyncToken.parse(to_token)
        upto_pos = min(upto.pos, self.store.current_pos)
        if upto_pos <= since.pos:
            return {"changed": [], "left": []}
        changed, left = self.device_list_delta(requester.user_id, since.pos, upto_pos)
        return {"changed": changed, "left": left}

    # -- PUT /sendToDevice ----------------------------------------------------------------------
    async def send_to_device(self, requester, event_type: str, txn_id: str, body: dict) -> dict:
        _check_id(event_type, "event type")
        _check_id(txn_id, "transaction ID")
        messages = body.get("messages")
        if not isinstance(messages, dict):
            raise bad_json("'messages' must be an object mapping user IDs to devices")
        plan: list[tuple[str, dict[str, dict]]] = []
        remote: dict[str, dict[str, dict]] = {}
        total = 0
        for user_id, by_device in messages.items():
            if not is_valid_user_id(user_id, historical=True):
                raise invalid(f"{user_id!r} is not a valid user ID")
            if not isinstance(by_device, dict):
                raise bad_json(f"messages[{user_id!r}] must map device IDs to contents")
            for device_id, content in by_device.items():
                _check_id(device_id, "device ID")
                if not isinstance(content, dict):
                    raise bad_json(f"messages[{user_id!r}][{device_id!r}] must be an object")
                if len(canonical_json(content)) > MAX_TO_DEVICE_CONTENT:
                    raise too_large(f"a message is larger than {MAX_TO_DEVICE_CONTENT} bytes", 400)
            total += len(by_device)
            if total > MAX_TO_DEVICE_MESSAGES:
                raise too_large(f"at most {MAX_TO_DEVICE_MESSAGES} messages per request", 400)
            if not by_device:
                continue
            if server_name_of(user_id) == self.hs.server_name:
                plan.append((user_id, by_device))
            else:
                remote[user_id] = by_device  # m.direct_to_device to the user's server
        sender, sender_device = requester.user_id, requester.device_id
        now = self.hs.now_ms()
        store = self.store

        def fn(conn: Txn) -> None:
            if store.to_device_txn_seen_in(conn, sender, sender_device, txn_id, now):
                return
            self.deliver_to_device_in(conn, sender, event_type, plan)
            if remote:  # queued for the recipients' servers in the same transaction
                if self.to_device_outbox is not None:
                    self.to_device_outbox.send_to_device_in(conn, sender, event_type, remote)
                else:
                    log.info("to-device messages for other servers dropped: federation is off")

        await store.transaction(fn)
        return {}

    def deliver_to_device_in(
        self, conn: Txn, sender: str, event_type: str,
        plan: list[tuple[str, dict[str, dict]]],
    ) -> None:  # fmt: skip
        """Inside a write function: put messages ({device_id or "*": content} per local user)
        in the devices' inboxes and wake their syncs."""
        store = self.store
        woken = set()
        for user_id, by_device in plan:
            targets: dict[str, dict] = {}
            for device_id, content in by_device.items():
                if device_id != "*" and store.device_exists_in(conn, user_id, device_id):
                    targets[device_id] = content
            if "*" in by_device:
                for device_id in store.device_ids_in(conn, user_id):
                    targets.setdefault(device_id, by_device["*"])
            for device_id in sorted(targets):
                store.add_to_device_in(
                    conn, user_id, device_id, sender, event_type, targets[device_id]
                )
            if targets:
                woken.add(user_id)
        if woken:
            store.wake(*woken)

    # -- /sync ----------------------------------------------------------------------------------
    def contribute_global(self, ctx: SyncContext, response: dict) -> None:
        """``to_device``, ``device_one_time_keys_count`` and ``device_unused_fallback_key_types``
        on every sync; ``device_lists`` on incremental syncs (E2EE "Extensions to /sync",
        Send-to-Device "Extensions to /sync")."""
        user_id, device_id = ctx.requester.user_id, ctx.requester.device_id
        upto = ctx.upto.pos
        response["to_device"] = {"events": self.to_device_events(ctx)}
        response["device_one_time_keys_count"] = self._otk_counts(
            self.store.count_one_time_keys(user_id, device_id)
        )
        response["device_unused_fallback_key_types"] = self.store.unused_fallback_key_types(
            user_id, device_id
        )
        if ctx.since is not None and upto > ctx.since.pos:
            changed, left = self.device_list_delta(
                user_id, ctx.since.pos, upto, ctx.joined_room_ids or None
            )
            response["device_lists"] = {"changed": changed, "left": left}

    def to_device_events(self, ctx: SyncContext) -> list[dict]:
        """The device's to-device messages in ``(since, upto]`` (at most ``TO_DEVICE_LIMIT``),
        those of the response that produced ``since`` acknowledged (deleted) first."""
        user_id, device_id = ctx.requester.user_id, ctx.requester.device_id
        upto = ctx.upto.pos
        after = 0
        if ctx.since is not None:
            after = self._acknowledge(user_id, device_id, ctx.since.pos)
        if ctx.since is not None and upto <= ctx.since.pos:
            # Pending messages here were held back by a full response; wait for the stream
            # position that response took, so this response's next_batch moves forward.
            return []
        rows = self.store.get_to_device(user_id, device_id, after, upto, TO_DEVICE_LIMIT + 1)
        if len(rows) > TO_DEVICE_LIMIT:
            rows = rows[:TO_DEVICE_LIMIT]
            self._record_truncation(user_id, device_id, upto, rows[-1][0])
        return [event for _pos, event in rows]

    def contribute_room(self, ctx: SyncContext, room_id: str, room: dict) -> None:
        return None

    def rooms_changed(self, ctx: SyncContext) -> set[str] | None:
        return set()

    def _acknowledge(self, user_id: str, device_id: str, since_pos: int) -> int:
        """A sync with ``since``: the device has the response that produced it, so delete the
        messages that response carried. Returns the position after which to deliver."""
        key = (user_id, device_id)
        by_token = self._cursors.get(key)
        last = by_token.get(since_pos) if by_token else None
        if last is None:
            last = self.store.get_inbox_cursor(user_id, device_id, since_pos)
        acked = min(last, since_pos) if last is not None else since_pos
        if by_token:
            for t in [t for t in by_token if t < since_pos]:
                del by_token[t]
            if not by_token:
                self._cursors.pop(key, None)
        if self.store.has_to_device_upto(user_id, device_id, acked):
            store = self.store
            self.spawn(
                store.transaction(
                    lambda conn: store.delete_to_device_upto_in(
                        conn, user_id, device_id, acked, since_pos
                    )
                )
            )
        return acked

    def _record_truncation(self, user_id: str, device_id: str, token_pos: int, last: int) -> None:
        self._cursors.setdefault((user_id, device_id), {})[token_pos] = last
        store = self.store

        def fn(conn: Txn) -> None:
            store.set_inbox_cursor_in(conn, user_id, device_id, token_pos, last)
            store.wake(user_id)

        self.spawn(store.transaction(fn))

    # -- cross-signing --------------------------------------------------------------------------
    async def upload_cross_signing_keys(self, requester, body: dict, ip: str | None) -> dict:
        """POST /keys/device_signing/upload (cross_signing.yaml)."""
        user_id = requester.user_id
        given: dict[str, tuple[dict, str, Any]] = {}
        for field, usage in CROSS_SIGNING_FIELDS:
            if body.get(field) is not None:
                pub, vk = check_cross_signing_key(body[field], user_id, usage)
                given[usage] = (body[field], pub, vk)
        if not given:
            raise missing_param("no cross-signing keys were given")
        existing = self.store.get_cross_signing_keys(user_id)
        if "master" in given:
            _, master_pub, master_vk = given["master"]
        elif "master" in existing:
            master_pub = next(iter(existing["master"]["keys"].values()))
            master_vk = ed25519_key(master_pub, "master key")
        else:
            raise missing_param("no master key is available")
        for usage in ("self_signing", "user_signing"):
            if usage in given:
                check_signature(
                    given[usage][0], user_id, f"ed25519:{master_pub}", master_vk, f"{usage}_key"
                )
        device_ids = {d["device_id"] for d in self.store.get_devices(user_id)}
        for _key, pub, _vk in given.values():
            if pub in device_ids:
                raise forbidden("a cross-signing key equals a device ID")
        if "master" in existing:
            if all(
                usage in existing and canonical_json(existing[usage]) == canonical_json(key)
                for usage, (key, _p, _v) in given.items()
            ):
                return {}  # an identical re-upload (MSC3967): idempotent, no UIA
            accounts = self.hs.accounts
            session = await accounts.require_password_uia(
                body, requester, "keys/device_signing/upload", ip
            )
            accounts.end_uia(session)
        store = self.store
        now = self.hs.now_ms()
        # Key transparency: the public keys and the SHA-256 of each stored key object.
        details: dict[str, Any] = {
            "keys": {usage: pub for usage, (_k, pub, _v) in given.items()},
            "sha256": {usage: key_sha256(key) for usage, (key, _p, _v) in given.items()},
        }

        def fn(conn: Txn) -> None:
            pos = store.add_device_list_change_in(conn, user_id)
            replaced = {}
            for usage, (key, pub, _vk) in given.items():
                old = store.set_cross_signing_key_in(conn, user_id, usage, pub, key, pos)
                if old is not None and old != pub:
                    replaced[usage] = old
                    store.delete_signatures_by_signer_in(conn, user_id, f"ed25519:{old}")
                    if usage == "master":
                        store.delete_signatures_on_in(conn, user_id, old)
            record_in(
                store, conn, records.ACTION_CROSS_SIGNING_UPLOAD, actor=user_id, ts=now,
                target=user_id, subject=user_id, origin=ip,
                details={**details, "replaced": replaced} if replaced else details,
            )  # fmt: skip
            self._signing_keys_changed_in(conn, user_id)
            self.queue_device_list_wake(user_id)

        await store.transaction(fn)
        return {}

    async def upload_signatures(self, requester, body: dict, ip: str | None = None) -> dict:
        """POST /keys/signatures/upload: every signature is verified before it is stored. The
        stored signatures are ``signatures.upload`` records (at most
        :data:`~bastion.services.security_records.SIGNATURES_PER_RECORD` each) in the same
        transaction."""
        me = requester.user_id
        my_keys = self.store.get_cross_signing_keys(me)
        failures: dict[str, dict] = {}
        accepted: list[tuple[str, str, str, str]] = []  # target user, target key, signer key, sig
        for target_user, by_key in body.items():
            if not isinstance(by_key, dict):
                raise bad_json(f"{target_user!r} must map key IDs to signed objects")
            for key_id, obj in by_key.items():
                try:
                    accepted += self._check_signed_object(me, my_keys, target_user, key_id, obj)
                except MatrixError as e:
                    failures.setdefault(target_user, {})[key_id] = {
                        "errcode": e.errcode,
                        "error": e.message,
                    }
        if accepted:
            store = self.store
            my_master = my_keys.get("master")
            master_pub = next(iter(my_master["keys"].values())) if my_master else None
            signed_devices = sorted({k for u, k, _s, _g in accepted if u == me and k != master_pub})
            signed_master = any(u == me and k == master_pub for u, k, _s, _g in accepted)
            now = self.hs.now_ms()

            def fn(conn: Txn) -> None:
                for target_user, target_key, signer_key, sig in accepted:
                    store.add_signature_in(conn, target_user, target_key, me, signer_key, sig)
                for i in range(0, len(accepted), SIGNATURES_PER_RECORD):
                    chunk = accepted[i : i + SIGNATURES_PER_RECORD]
                    record_in(
                        store, conn, records.ACTION_SIGNATURES_UPLOAD, actor=me, ts=now,
                        target=me, subject=me, origin=ip,
                        details={"signatures": [list(s) for s in chunk]},
                    )  # fmt: skip
                # New signatures on your own keys interest everyone sharing a room with you;
                # a signature on someone else's master key interests only your own devices.
                for device_id in signed_devices:
                    pos = store.add_device_list_change_in(conn, me)
                    self._local_change_in(conn, me, device_id, pos)
                if not signed_devices:
                    store.add_device_list_change_in(conn, me)
                if signed_master:
                    self._signing_keys_changed_in(conn, me)
                self.queue_device_list_wake(me)

            await store.transaction(fn)
        return {"failures": failures}

    def _check_signed_object(
        self, me: str, my_keys: dict, target_user: str, key_id: str, obj: object
    ) -> list[tuple[str, str, str, str]]:
        if not isinstance(obj, dict):
            raise bad_json("the signed object must be an object")
        signers: dict[str, Any] = {}  # acceptable signer key IDs -> verify key
        stored: dict[str, Any] | None
        if target_user == me:
            master = my_keys.get("master")
            master_pub = next(iter(master["keys"].values())) if master else None
            if master is not None and master_pub is not None and key_id == master_pub:
                stored = master
                # Your own master key, signed by one of your devices.
                for device_id, (keys, _name) in self.store.get_device_keys(me).items():
                    ed = keys.get("keys", {}).get(f"ed25519:{device_id}")
                    if ed:
                        signers[f"ed25519:{device_id}"] = ed
            else:
                stored = self.store.get_device_keys_one(me, key_id)
                if stored is None:
                    raise not_found("no such device or key")
                ssk = my_keys.get("self_signing")
                if ssk is None:
                    raise missing_param("no self-signing key uploaded")
                ssk_pub = next(iter(ssk["keys"].values()))
                signers[f"ed25519:{ssk_pub}"] = ssk_pub
        else:
            if not is_valid_user_id(target_user, historical=True):
                raise invalid("not a valid user ID")
            theirs = self.store.get_cross_signing_keys(target_user).get("master")
            if theirs is None or key_id != next(iter(theirs["keys"].values())):
                raise not_found("no such master key")
            stored = theirs
            usk = my_keys.get("user_signing")
            if usk is None:
                raise missing_param("no user-signing key uploaded")
            usk_pub = next(iter(usk["keys"].values()))
            signers[f"ed25519:{usk_pub}"] = usk_pub
        if not same_signed_content(obj, stored):
            raise invalid("the signed object does not match the stored key")
        sigs = obj.get("signatures")
        mine = sigs.get(me) if isinstance(sigs, dict) else None
        if not isinstance(mine, dict):
            raise MatrixError(M_INVALID_SIGNATURE, "no signature by you", 400)
        already = (stored.get("signatures") or {}).get(me, {})
        out = []
        for signer_key, sig in mine.items():
            if already.get(signer_key) == sig:
                continue
            if signer_key not in signers or not isinstance(sig, str):
                raise MatrixError(
                    M_INVALID_SIGNATURE, f"signature by {signer_key} is not acceptable here", 400
                )
            single = {**stored, "signatures": {me: {signer_key: sig}}}
            check_signature(
                single, me, signer_key, ed25519_key(signers[signer_key], signer_key), key_id
            )
            out.append((target_user, key_id, signer_key, sig))
        return out

    # -- server-side key backup -----------------------------------------------------------------
    @staticmethod
    def _parse_version(version: object) -> int | None:
        if isinstance(version, str) and version.isdigit() and len(version) <= 18:
            return int(version)
        return None

    def _version_info(self, row) -> dict:
        return {
            "algorithm": row["algorithm"],
            "auth_data": _json(row["auth_data"]),
            "count": self.store.count_backup_keys(row["user_id"], row["version"]),
            "etag": str(row["etag"]),
            "version": str(row["version"]),
        }

    @staticmethod
    def _check_backup_body(body: dict) -> tuple[str, dict]:
        algorithm = body.get("algorithm")
        if not isinstance(algorithm, str) or not algorithm or len(algorithm) > MAX_ID_LENGTH:
            raise bad_json("'algorithm' must be a non-empty string")
        auth_data = body.get("auth_data")
        if not isinstance(auth_data, dict):
            raise bad_json("'auth_data' must be an object")
        return algorithm, auth_data

    async def create_backup_version(self, requester, body: dict) -> dict:
        algorithm, auth_data = self._check_backup_body(body)
        user_id = requester.user_id
        version = await self.store.transaction(
            lambda conn: self.store.create_backup_version_in(conn, user_id, algorithm, auth_data)
        )
        return {"version": str(version)}

    def get_backup_version(self, requester, version: str | None) -> dict:
        if version is None:
            row = self.store.get_backup_version(requester.user_id)
            if row is None:
                raise not_found("no current backup version")
            return self._version_info(row)
        v = self._parse_version(version)
        row = self.store.get_backup_version(requester.user_id, v) if v is not None else None
        if row is None:
            raise not_found("unknown backup version")
        return self._version_info(row)

    async def update_backup_version(self, requester, version: str, body: dict) -> dict:
        algorithm, auth_data = self._check_backup_body(body)
        if "version" in body and body["version"] != version:
            raise invalid("'version' in the body does not match the path")
        v = self._parse_version(version)
        user_id = requester.user_id
        store = self.store

        def fn(conn: Txn) -> None:
            row = store.backup_version_in(conn, user_id, v) if v is not None else None
            if v is None or row is None or row["deleted"]:
                raise not_found("unknown backup version")
            if row["algorithm"] != algorithm:
                raise invalid("'algorithm' does not match the backup's algorithm")
            store.update_backup_auth_data_in(conn, user_id, v, auth_data)

        await store.transaction(fn)
        return {}

    async def delete_backup_version(self, requester, version: str) -> dict:
        v = self._parse_version(version)
        user_id = requester.user_id
        store = self.store

        def fn(conn: Txn) -> None:
            row = store.backup_version_in(conn, user_id, v) if v is not None else None
            if v is None or row is None:
                raise not_found("unknown backup version")
            if not row["deleted"]:
                store.delete_backup_version_in(conn, user_id, v)

        await store.transaction(fn)
        return {}

    def _required_version(self, version: str | None) -> int | None:
        if version is None or version == "":
            raise missing_param("the 'version' query parameter is required")
        return self._parse_version(version)

    async def put_backup_keys(
        self, requester, version: str | None, keys: list[tuple[str, str, dict]]
    ) -> dict:
        """Store keys [(room_id, session_id, KeyBackupData)] in the current backup."""
        v = self._required_version(version)
        if len(keys) > MAX_BACKUP_KEYS_PER_REQUEST:
            raise too_large("too many keys in one request")
        user_id = requester.user_id
        store = self.store

        def fn(conn: Txn) -> dict:
            current = store.current_backup_version_in(conn, user_id)
            if current is None:
                raise not_found("unknown backup version")
            if v is None or v != current["version"]:
                raise MatrixError(
                    M_WRONG_ROOM_KEYS_VERSION,
                    "wrong backup version",
                    403,
                    current_version=str(current["version"]),
                )
            changed = False
            for room_id, session_id, data in keys:
                old = store.get_backup_key_in(conn, user_id, v, room_id, session_id)
                if old is not None and not backup_key_replaces(dict(old), data):
                    continue
                store.put_backup_key_in(conn, user_id, v, room_id, session_id, data)
                changed = True
            etag = current["etag"]
            if changed:
                store.bump_backup_etag_in(conn, user_id, v)
                etag += 1
            return {"etag": str(etag), "count": store.count_backup_keys_in(conn, user_id, v)}

        return await store.transaction(fn)

    def get_backup_keys(
        self, requester, version: str | None, room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict:  # fmt: skip
        v = self._required_version(version)
        if v is None or self.store.get_backup_version(requester.user_id, v) is None:
            raise not_found("unknown backup version")
        rooms = self.store.get_backup_keys(requester.user_id, v, room_id, session_id)
        if session_id is not None:
            data = rooms.get(room_id, {}).get(session_id)
            if data is None:
                raise not_found("key not found")
            return data
        if room_id is not None:
            return {"sessions": rooms.get(room_id, {})}
        return {"rooms": {r: {"sessions": s} for r, s in rooms.items()}}

    async def delete_backup_keys(
        self, requester, version: str | None, room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict:  # fmt: skip
        v = self._required_version(version)
        user_id = requester.user_id
        store = self.store

        def fn(conn: Txn) -> dict:
            row = store.backup_version_in(conn, user_id, v) if v is not None else None
            if v is None or row is None or row["deleted"]:
                raise not_found("unknown backup version")
            etag = row["etag"]
            if store.delete_backup_keys_in(conn, user_id, v, room_id, session_id):
                store.bump_backup_etag_in(conn, user_id, v)
                etag += 1
            return {"etag": str(etag), "count": store.count_backup_keys_in(conn, user_id, v)}

        return await store.transaction(fn)

    # parse helpers for the handlers
    @staticmethod
    def backup_keys_from_body(body: dict, room_id: str | None, session_id: str | None) -> list:
        if session_id is not None:
            return [(room_id, session_id, check_backup_key(body, "body"))]
        if room_id is not None:
            sessions = body.get("sessions")
            if not isinstance(sessions, dict):
                raise bad_json("'sessions' must be an object")
            return [
                (room_id, sid, check_backup_key(d, f"sessions[{sid!r}]"))
                for sid, d in sessions.items()
            ]
        rooms = body.get("rooms")
        if not isinstance(rooms, dict):
            raise bad_json("'rooms' must be an object")
        out = []
        for rid, room in rooms.items():
            if not isinstance(room, dict) or not isinstance(room.get("sessions"), dict):
                raise bad_json(f"rooms[{rid!r}].sessions must be an object")
            out += [
                (rid, sid, check_backup_key(d, f"rooms[{rid!r}].sessions[{sid!r}]"))
                for sid, d in room["sessions"].items()
            ]
        return out


def _json(text: str) -> Any:
    return orjson.loads(text)
