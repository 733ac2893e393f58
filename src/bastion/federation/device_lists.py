"""Device lists across servers (S-S API "Device Management", "End-to-End Encryption").

``hs.federation.device_lists``:

- **Outbound.** Every change of a local user's device list (device added or deleted, device
  keys uploaded, a device signed by the self-signing key) is recorded in the change's write
  transaction (:meth:`local_change_in`); after the commit, one ``m.device_list_update`` EDU per
  change goes to every server sharing a room with the user, with ``stream_id`` (the change's
  stream position) and ``prev_id`` (the user's previous change). New cross-signing keys send
  ``m.signing_key_update``. ``GET /user/devices`` (:meth:`user_devices`) gives the whole list
  with the user's latest ``stream_id``.
- **Inbound.** A remote user's devices are cached the first time a local user who shares a room
  with them asks for their keys (a full ``GET /user/devices`` resynchronisation), and kept current
  by their server's ``m.device_list_update`` EDUs: an EDU whose ``prev_id`` names an update we have
  not seen triggers a resynchronisation. Each change is a device-list change of the remote user,
  so local users sharing a room see them in ``/sync``'s ``device_lists.changed``.
- **Client proxying.** ``/keys/query`` for remote users is answered from the cache when it is
  current, else from the user's server; ``/keys/claim`` always asks the user's server. Both are
  bounded by the request's ``timeout``; a server that fails is named in ``failures``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bastion.core.e2e_keys import check_cross_signing_key, check_device_keys
from bastion.core.identifiers import is_valid_user_id, server_name_of
from bastion.errors import MatrixError
from bastion.federation.edus import ok_id, send_edu
from bastion.services.e2ee import MAX_ID_LENGTH
from bastion.services.lifecycle import BackgroundService
from bastion.storage.interface import Txn

if TYPE_CHECKING:
    from bastion.federation.container import Federation
    from bastion.server import HomeServer

log = logging.getLogger("bastion.federation.device_lists")

#: Devices accepted for one remote user (a hostile server cannot fill the disk).
MAX_REMOTE_DEVICES = 1000
#: Concurrent resynchronisations while answering one /keys/query.
RESYNC_CONCURRENCY = 10


def _valid_device_keys(keys: object, user_id: str, device_id: str) -> dict | None:
    """Device keys as the user's device signed them, or None (logged) if they do not check."""
    if keys is None:
        return None
    try:
        check_device_keys(keys, user_id, device_id)
    except MatrixError as e:
        log.info("ignoring device keys of %s %s: %s", user_id, device_id, e.message)
        return None
    return keys if isinstance(keys, dict) else None  # (checked: always a dict here)


def _valid_cross_signing(body: dict, user_id: str) -> dict[str, dict]:
    out = {}
    for field, usage in (("master_key", "master"), ("self_signing_key", "self_signing")):
        key = body.get(field)
        if key is None:
            continue
        try:
            check_cross_signing_key(key, user_id, usage)
        except MatrixError as e:
            log.info("ignoring %s of %s: %s", field, user_id, e.message)
            continue
        out[usage] = key
    return out


class DeviceLists(BackgroundService):
    """Device lists of local users sent to other servers, and remote users' device lists. Sends
    and resynchronisations run in the background, through the service lifecycle."""

    background_name = "device-list"

    def __init__(self, hs: HomeServer, fed: Federation) -> None:
        super().__init__()
        self.hs = hs
        self.fed = fed
        self.store = hs.store
        self._lock = threading.Lock()
        self._flushed: int | None = None  # last outbound change handed to the sender
        self._dirty = False
        self._signing_pending: set[str] = set()
        self._flush_task: asyncio.Task | None = None
        self._again = False
        self._resyncs: dict[str, asyncio.Task] = {}

    # -- helpers ------------------------------------------------------------------------------
    def servers_sharing_room_with(self, user_id: str) -> list[str]:
        return self.fed.sender.destinations_for_user(user_id)

    def shares_room_with_local_user(self, user_id: str) -> bool:
        return any(
            server_name_of(u) == self.hs.server_name
            for u in self.store.get_users_sharing_room_with(user_id)
        )

    # -- outbound -----------------------------------------------------------------------------
    def local_change_in(self, conn: Txn, user_id: str, device_id: str, stream_id: int) -> None:
        """Inside a write function: ``device_id`` of local ``user_id`` changed at stream
        position ``stream_id`` (from ``add_device_list_change_in``)."""
        with self._lock:
            if self._flushed is None:
                self._flushed = self.store.last_outbound_device_change_in(conn)
            self._dirty = True
        self.store.add_outbound_device_change_in(conn, stream_id, user_id, device_id)
        self.store.run_after_commit(self._schedule_flush)

    def signing_keys_changed_in(self, conn: Txn, user_id: str) -> None:
        """Inside a write function: local ``user_id`` uploaded cross-signing keys."""
        with self._lock:
            self._signing_pending.add(user_id)
        self.store.run_after_commit(self._schedule_flush)

    def _schedule_flush(self) -> None:
        # On the event loop, after a commit that changed a local device list.
        if self._flush_task is not None and not self._flush_task.done():
            self._again = True
            return
        self._flush_task = self.spawn(self._flush())

    async def _flush(self) -> None:
        while True:
            self._again = False
            with self._lock:
                self._dirty = False
                signing, self._signing_pending = self._signing_pending, set()
                after = self._flushed or 0
            for user_id in sorted(signing):
                await self._send_signing_key_update(user_id)
            rows = self.store.outbound_device_changes_after(after)
            for stream_id, user_id, device_id, prev in rows:
                await self._send_device_list_update(stream_id, user_id, device_id, prev)
                with self._lock:
                    self._flushed = max(self._flushed or 0, stream_id)
            if not self._again and len(rows) < 1000:
                return

    def device_update_content(
        self, stream_id: int, user_id: str, device_id: str, prev: int | None
    ) -> dict:
        """The ``m.device_list_update`` content for one change, from the current state."""
        content: dict[str, Any] = {
            "user_id": user_id,
            "device_id": device_id,
            "stream_id": stream_id,
            "prev_id": [prev] if prev else [],
        }
        device = self.store.get_device(user_id, device_id)
        if device is None:
            content["deleted"] = True
            return content
        if device["display_name"] is not None:
            content["device_display_name"] = device["display_name"]
        keys = self.hs.e2ee.local_device_keys(user_id, [device_id], unsigned=False)
        if device_id in keys:
            content["keys"] = keys[device_id]
        return content

    async def _send_device_list_update(
        self, stream_id: int, user_id: str, device_id: str, prev: int | None
    ) -> None:
        destinations = self.servers_sharing_room_with(user_id)
        if not destinations:
            return
        content = self.device_update_content(stream_id, user_id, device_id, prev)
        for destination in destinations:
            await send_edu(self.fed.sender, destination, "m.device_list_update", content)

    async def _send_signing_key_update(self, user_id: str) -> None:
        destinations = self.servers_sharing_room_with(user_id)
        if not destinations:
            return
        cross = self.store.get_cross_signing_keys(user_id)
        content: dict[str, Any] = {"user_id": user_id}
        if "master" in cross:
            content["master_key"] = self.hs.e2ee.master_key_view(user_id, cross["master"], None)
        if "self_signing" in cross:
            content["self_signing_key"] = cross["self_signing"]
        for destination in destinations:
            await send_edu(self.fed.sender, destination, "m.signing_key_update", content)

    def user_devices(self, user_id: str) -> dict:
        """``GET /_matrix/federation/v1/user/devices/{userId}`` for a local user."""
        devices = []
        keys = self.hs.e2ee.local_device_keys(user_id, None, unsigned=False)
        for row in self.store.get_devices(user_id):
            entry: dict[str, Any] = {"device_id": row["device_id"]}
            if row["device_id"] in keys:
                entry["keys"] = keys[row["device_id"]]
            if row["display_name"] is not None:
                entry["device_display_name"] = row["display_name"]
            devices.append(entry)
        out: dict[str, Any] = {
            "user_id": user_id,
            "stream_id": self.store.last_outbound_device_change(user_id),
            "devices": devices,
        }
        cross = self.store.get_cross_signing_keys(user_id)
        if "master" in cross:
            out["master_key"] = self.hs.e2ee.master_key_view(user_id, cross["master"], None)
        if "self_signing" in cross:
            out["self_signing_key"] = cross["self_signing"]
        return out

    # -- inbound: m.device_list_update and m.signing_key_update -------------------------------
    async def on_device_list_update(self, origin: str, content: dict) -> None:
        """The ``m.device_list_update`` EDU (S-S API "Device Management")."""
        user_id = content.get("user_id")
        device_id = content.get("device_id")
        stream_id = content.get("stream_id")
        prev_ids = content.get("prev_id", [])
        deleted = content.get("deleted", False)
        name = content.get("device_display_name")
        if (
            not isinstance(user_id, str)
            or not is_valid_user_id(user_id, historical=True)
            or not ok_id(device_id)
            or not isinstance(stream_id, int)
            or isinstance(stream_id, bool)
            or not isinstance(prev_ids, list)
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in prev_ids)
            or len(prev_ids) > 100
            or not isinstance(deleted, bool)
            or (name is not None and not isinstance(name, str))
        ):
            log.info("dropping a malformed m.device_list_update from %s", origin)
            return
        if server_name_of(user_id) != origin:
            log.info("dropping m.device_list_update from %s for %s: not its user", origin, user_id)
            return
        if not self.shares_room_with_local_user(user_id):
            log.debug("ignoring m.device_list_update for %s: no shared room", user_id)
            return
        keys = None if deleted else _valid_device_keys(content.get("keys"), user_id, device_id)
        name = name[:MAX_ID_LENGTH] if name else None
        store = self.store
        e2ee = self.hs.e2ee

        def fn(conn: Txn) -> str:
            cached = store.remote_device_list_in(conn, user_id)
            if cached is None:
                # Not cached: the next /keys/query fetches the list; clients learn of the change.
                pos = store.add_device_list_change_in(conn, user_id)
                e2ee.queue_device_list_wake(user_id)
                return f"noted at {pos}"
            if stream_id <= cached[0] or store.remote_stream_ids_seen_in(
                conn, user_id, [stream_id]
            ):
                return "duplicate"
            known = store.remote_stream_ids_seen_in(conn, user_id, prev_ids)
            store.mark_remote_stream_id_in(conn, user_id, stream_id)
            if set(prev_ids) - known:
                return "resync"
            if deleted:
                store.delete_remote_device_in(conn, user_id, device_id)
            elif store.count_remote_devices_in(
                conn, user_id
            ) >= MAX_REMOTE_DEVICES and not store.remote_device_exists_in(conn, user_id, device_id):
                return "too many devices"
            else:
                store.set_remote_device_in(conn, user_id, device_id, name, keys)
            store.add_device_list_change_in(conn, user_id)
            e2ee.queue_device_list_wake(user_id)
            return "applied"

        outcome = await store.transaction(fn)
        log.debug("m.device_list_update %s %s %s: %s", user_id, device_id, stream_id, outcome)
        if outcome == "resync":
            self.schedule_resync(user_id)

    async def on_signing_key_update(self, origin: str, content: dict) -> None:
        """The ``m.signing_key_update`` EDU (S-S API "End-to-End Encryption")."""
        user_id = content.get("user_id")
        if not isinstance(user_id, str) or not is_valid_user_id(user_id, historical=True):
            log.info("dropping a malformed m.signing_key_update from %s", origin)
            return
        if server_name_of(user_id) != origin:
            log.info("dropping m.signing_key_update from %s for %s: not its user", origin, user_id)
            return
        if not self.shares_room_with_local_user(user_id):
            return
        keys = _valid_cross_signing(content, user_id)
        if not keys:
            return
        store = self.store
        e2ee = self.hs.e2ee

        def fn(conn: Txn) -> None:
            if store.remote_device_list_in(conn, user_id) is not None:
                for usage, key in keys.items():
                    store.set_remote_cross_signing_key_in(conn, user_id, usage, key)
            store.add_device_list_change_in(conn, user_id)
            e2ee.queue_device_list_wake(user_id)

        await store.transaction(fn)

    # -- resynchronisation --------------------------------------------------------------------
    def schedule_resync(self, user_id: str) -> asyncio.Task:
        """Resynchronise ``user_id``'s list in the background (one at a time per user)."""
        task = self._resyncs.get(user_id)
        if task is None or task.done():
            task = self.spawn(self.resync(user_id), cancel_on_stop=True)
            self._resyncs[user_id] = task
            task.add_done_callback(
                lambda t: (
                    self._resyncs.pop(user_id, None) if self._resyncs.get(user_id) is t else None
                )
            )
        return task

    async def resync(self, user_id: str, timeout: float = 30) -> bool:
        """Fetch the whole device list with ``GET /user/devices`` and replace the cache. On
        failure the cache is dropped (it may be out of date). True on success."""
        server = server_name_of(user_id) or ""
        synced_pos = self.store.current_pos
        store = self.store
        e2ee = self.hs.e2ee
        try:
            status, body = await self.fed.client.request(
                "GET", server, f"/_matrix/federation/v1/user/devices/{quote(user_id, safe='')}",
                timeout=timeout,
            )  # fmt: skip
            parsed = self._parse_user_devices(user_id, status, body)
        except Exception as e:  # noqa: BLE001 - any failure leaves the list uncached
            log.info("device list resync of %s failed: %s", user_id, e)

            def drop(conn: Txn) -> None:
                store.delete_remote_device_list_in(conn, user_id)

            await store.transaction(drop)
            return False
        stream_id, devices, cross = parsed

        def fn(conn: Txn) -> None:
            store.replace_remote_device_list_in(
                conn, user_id, stream_id, synced_pos, devices, cross
            )
            store.add_device_list_change_in(conn, user_id)
            e2ee.queue_device_list_wake(user_id)

        await store.transaction(fn)
        return True

    @staticmethod
    def _parse_user_devices(user_id: str, status: int, body: Any) -> tuple:
        if status != 200 or not isinstance(body, dict):
            raise ValueError(f"status {status}")
        if body.get("user_id") != user_id:
            raise ValueError("the answer is for another user")
        stream_id = body.get("stream_id")
        if not isinstance(stream_id, int) or isinstance(stream_id, bool):
            raise ValueError("no integer stream_id")
        raw = body.get("devices")
        if not isinstance(raw, list):
            raise ValueError("devices is not a list")
        if len(raw) > MAX_REMOTE_DEVICES:
            raise ValueError(f"more than {MAX_REMOTE_DEVICES} devices")
        devices = []
        for d in raw:
            if not isinstance(d, dict) or not ok_id(d.get("device_id")):
                continue
            device_id = d["device_id"]
            name = d.get("device_display_name")
            name = name[:MAX_ID_LENGTH] if isinstance(name, str) and name else None
            devices.append((device_id, name, _valid_device_keys(d.get("keys"), user_id, device_id)))
        return stream_id, devices, _valid_cross_signing(body, user_id)

    def cache_is_current(self, user_id: str) -> bool:
        """Serve ``user_id``'s keys from the cache? Only while a room is shared (otherwise
        their server no longer sends us updates) and if the cache was filled after the room
        became shared."""
        row = self.store.get_remote_device_list(user_id)
        if row is None or not self.shares_room_with_local_user(user_id):
            return False
        return row["synced_pos"] >= self.store.last_join_pos_in_rooms_of(
            user_id, self.hs.server_name
        )

    def cached_keys(self, user_id: str, device_ids: list[str]) -> tuple[dict, dict]:
        """(device keys {device_id: keys with unsigned}, cross-signing {usage: key})."""
        out = {}
        for device_id, (keys, name) in self.store.get_remote_devices(user_id).items():
            if keys is None or (device_ids and device_id not in device_ids):
                continue
            obj = dict(keys)
            unsigned = dict(obj.get("unsigned") or {})
            if name is not None:
                unsigned["device_display_name"] = name
            obj["unsigned"] = unsigned
            out[device_id] = obj
        return out, self.store.get_remote_cross_signing_keys(user_id)

    # -- client proxying ----------------------------------------------------------------------
    async def query_remote(self, wanted: dict[str, list[str]], timeout: float) -> dict:
        """``/keys/query`` for remote users: {device_keys, master_keys, self_signing_keys,
        failures}."""
        result: dict[str, dict] = {
            "device_keys": {},
            "master_keys": {},
            "self_signing_keys": {},
            "failures": {},
        }

        def serve_cached(user_id: str) -> None:
            devices, cross = self.cached_keys(user_id, wanted[user_id])
            result["device_keys"][user_id] = devices
            if "master" in cross:
                result["master_keys"][user_id] = cross["master"]
            if "self_signing" in cross:
                result["self_signing_keys"][user_id] = cross["self_signing"]

        by_server: dict[str, list[str]] = {}
        for user_id in wanted:
            if self.cache_is_current(user_id):
                serve_cached(user_id)
            else:
                by_server.setdefault(server_name_of(user_id) or "", []).append(user_id)
        semaphore = asyncio.Semaphore(RESYNC_CONCURRENCY)

        async def resync_one(user_id: str) -> None:
            async with semaphore:
                task = self.schedule_resync(user_id)
                ok = await asyncio.shield(task)
            if not ok:
                raise ValueError(f"could not fetch the devices of {user_id}")
            serve_cached(user_id)

        async def ask(server: str, users: list[str]) -> None:
            tracked = [u for u in users if self.shares_room_with_local_user(u)]
            others = [u for u in users if u not in tracked]
            if others:
                status, body = await self.fed.client.request(
                    "POST", server, "/_matrix/federation/v1/user/keys/query",
                    {"device_keys": {u: wanted[u] for u in others}}, timeout=timeout,
                )  # fmt: skip
                self._merge_query(server, status, body, others, result)
            await asyncio.gather(*(resync_one(u) for u in tracked))

        await self._per_server(by_server, ask, timeout, result["failures"])
        return result

    @staticmethod
    def _merge_query(server: str, status: int, body: Any, users: list[str], result: dict) -> None:
        if status != 200 or not isinstance(body, dict):
            raise ValueError(f"status {status}")
        device_keys = body.get("device_keys")
        device_keys = device_keys if isinstance(device_keys, dict) else {}
        for user_id in users:
            devices = device_keys.get(user_id)
            if isinstance(devices, dict):
                result["device_keys"][user_id] = {
                    d: k for d, k in devices.items()
                    if isinstance(k, dict) and k.get("user_id") == user_id
                    and k.get("device_id") == d
                }  # fmt: skip
            for field in ("master_keys", "self_signing_keys"):
                keys = body.get(field)
                key = keys.get(user_id) if isinstance(keys, dict) else None
                if isinstance(key, dict) and key.get("user_id") == user_id:
                    result[field][user_id] = key

    async def claim_remote(self, wanted: dict[str, dict[str, str]], timeout: float) -> dict:
        """``/keys/claim`` for remote users: {one_time_keys, failures}."""
        result: dict[str, dict] = {"one_time_keys": {}, "failures": {}}
        by_server: dict[str, list[str]] = {}
        for user_id in wanted:
            by_server.setdefault(server_name_of(user_id) or "", []).append(user_id)

        async def ask(server: str, users: list[str]) -> None:
            status, body = await self.fed.client.request(
                "POST", server, "/_matrix/federation/v1/user/keys/claim",
                {"one_time_keys": {u: wanted[u] for u in users}}, timeout=timeout,
            )  # fmt: skip
            if status != 200 or not isinstance(body, dict):
                raise ValueError(f"status {status}")
            otks = body.get("one_time_keys")
            otks = otks if isinstance(otks, dict) else {}
            for user_id in users:
                devices = otks.get(user_id)
                if not isinstance(devices, dict):
                    continue
                kept = {
                    d: keys for d, keys in devices.items()
                    if d in wanted[user_id] and isinstance(keys, dict) and len(keys) == 1
                }  # fmt: skip
                if kept:
                    result["one_time_keys"][user_id] = kept

        await self._per_server(by_server, ask, timeout, result["failures"])
        return result

    async def _per_server(self, by_server: dict, ask, timeout: float, failures: dict) -> None:
        """Run ``ask(server, users)`` for every server at once, within ``timeout``; a server
        that fails or does not answer in time goes into ``failures``."""
        if not by_server:
            return
        tasks = {
            server: asyncio.get_running_loop().create_task(ask(server, users))
            for server, users in by_server.items()
        }
        done, pending = await asyncio.wait(tasks.values(), timeout=max(timeout, 0.001))
        for server, task in tasks.items():
            if task in pending:
                task.cancel()
                failures[server] = {"status": 504, "message": "the server did not answer in time"}
            elif task.exception() is not None:
                log.info("keys request to %s failed: %s", server, task.exception())
                failures[server] = {"status": 503, "message": "the server could not be reached"}
