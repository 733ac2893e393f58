"""Device management (C-S API "Device Management", device_management.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import invalid_param, missing_param, not_found
from bastion.services.accounts import bad_json

if TYPE_CHECKING:
    from bastion.server import HomeServer


def _device_json(row) -> dict:
    out = {"device_id": row["device_id"]}
    for key in ("display_name", "last_seen_ip", "last_seen_ts"):
        if row[key] is not None:
            out[key] = row[key]
    return out


def register(router: Router, hs: HomeServer) -> None:
    accounts = hs.accounts
    store = hs.store

    async def list_devices(req: Request) -> dict:
        """GET /_matrix/client/v3/devices — the requester's devices."""
        return {"devices": [_device_json(r) for r in store.get_devices(req.requester.user_id)]}

    async def get_device(req: Request) -> dict:
        """GET /_matrix/client/v3/devices/{deviceId} — 404 ``M_NOT_FOUND`` if unknown."""
        row = store.get_device(req.requester.user_id, req.params["deviceId"])
        if row is None:
            raise not_found("no such device")
        return _device_json(row)

    async def put_device(req: Request) -> dict:
        """PUT /_matrix/client/v3/devices/{deviceId} — set ``display_name``."""
        await accounts.update_device(req.requester, req.params["deviceId"], await req.json())
        return {}

    async def delete_device(req: Request) -> dict:
        """DELETE /_matrix/client/v3/devices/{deviceId} — UIA (``m.login.password``); revokes
        the device's tokens and deletes its end-to-end keys."""
        body = await req.json(allow_empty=True)
        session = await accounts.require_password_uia(
            body, req.requester, "delete_devices", req.raw.remote
        )
        accounts.end_uia(session)
        await accounts.delete_devices(req.requester, [req.params["deviceId"]], req.raw.remote)
        return {}

    async def delete_devices(req: Request) -> dict:
        """POST /_matrix/client/v3/delete_devices — UIA (``m.login.password``)."""
        body = await req.json()
        devices = body.get("devices")
        if devices is None:
            raise missing_param("'devices' is required")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise bad_json("'devices' must be a list of device IDs")
        if len(devices) > 1000:
            raise invalid_param("at most 1000 devices at a time")
        session = await accounts.require_password_uia(
            body, req.requester, "delete_devices", req.raw.remote
        )
        accounts.end_uia(session)
        await accounts.delete_devices(req.requester, list(dict.fromkeys(devices)), req.raw.remote)
        return {}

    router.add("GET", "/_matrix/client/v3/devices", list_devices)
    router.add("GET", "/_matrix/client/v3/devices/{deviceId}", get_device)
    router.add("PUT", "/_matrix/client/v3/devices/{deviceId}", put_device)
    router.add(
        "DELETE", "/_matrix/client/v3/devices/{deviceId}", delete_device, allow_suspended=True
    )
    router.add("POST", "/_matrix/client/v3/delete_devices", delete_devices, allow_suspended=True)
