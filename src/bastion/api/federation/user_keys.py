"""S-S API "Device Management" (user_devices.yaml) and "End-to-End Encryption" (user_keys.yaml):
a local user's devices and keys for other servers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_user_id
from bastion.errors import MatrixError, invalid_param, not_found

if TYPE_CHECKING:
    from bastion.server import HomeServer

V1 = "/_matrix/federation/v1"


def register(router: Router, hs: HomeServer) -> None:
    fed = hs.require_federation()

    def local_user(user_id: str) -> str:
        try:
            parsed = parse_user_id(user_id, historical=True)
        except MatrixError:
            raise invalid_param("invalid user ID") from None
        if parsed.domain != hs.server_name:
            raise not_found("the user is not on this server")
        if not hs.store.user_exists(user_id):
            raise not_found("unknown user")
        return user_id

    async def user_devices(req: Request) -> dict:
        """GET /_matrix/federation/v1/user/devices/{userId} — S-S API "Device Management":
        ``user_id``, ``stream_id`` (the latest ``m.device_list_update`` of the user), every
        device with its keys and display name, ``master_key`` and ``self_signing_key``."""
        return fed.device_lists.user_devices(local_user(req.params["userId"]))

    async def keys_query(req: Request) -> dict:
        """POST /_matrix/federation/v1/user/keys/query — S-S API "End-to-End Encryption":
        device keys as uploaded (plus ``unsigned``), master and self-signing keys of our
        users; users of other servers are left out."""
        return hs.e2ee.query_keys_for_server(await req.json())

    async def keys_claim(req: Request) -> dict:
        """POST /_matrix/federation/v1/user/keys/claim — S-S API "End-to-End Encryption": one
        key per device of our users, the oldest one-time key first, else the fallback key."""
        return await hs.e2ee.claim_keys_for_server(await req.json())

    router.add("GET", f"{V1}/user/devices/{{userId}}", user_devices, auth=True)
    router.add("POST", f"{V1}/user/keys/query", keys_query, auth=True)
    router.add("POST", f"{V1}/user/keys/claim", keys_claim, auth=True)
