"""Key management API (C-S API "End-to-End Encryption" → "Key management API", keys.yaml;
"Cross-signing", cross_signing.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer

V3 = "/_matrix/client/v3"


def register(router: Router, hs: HomeServer) -> None:
    e2ee = hs.e2ee

    async def upload(req: Request) -> dict:
        """POST /_matrix/client/v3/keys/upload — "Uploading keys": device keys (self-signed by
        the device), signed one-time keys and fallback keys; returns ``one_time_key_counts``."""
        return await e2ee.upload_keys(req.requester, await req.json(), req.raw.remote)

    async def query(req: Request) -> dict:
        """POST /_matrix/client/v3/keys/query — device keys as uploaded (plus ``unsigned``),
        cross-signing keys with the verified signatures the caller may see."""
        return await e2ee.query_keys(req.requester, await req.json())

    async def claim(req: Request) -> dict:
        """POST /_matrix/client/v3/keys/claim — one key per device: the oldest unclaimed
        one-time key, else the fallback key."""
        return await e2ee.claim_keys(req.requester, await req.json())

    async def changes(req: Request) -> dict:
        """GET /_matrix/client/v3/keys/changes?from=&to= — users whose device lists changed
        (``changed``) or who no longer share a room (``left``) between two sync tokens."""
        q = req.query
        return e2ee.key_changes(req.requester, q.get("from"), q.get("to"))

    async def device_signing_upload(req: Request) -> dict:
        """POST /_matrix/client/v3/keys/device_signing/upload — "Cross-signing": UIA
        (m.login.password) unless this is the first upload or an identical re-upload."""
        return await e2ee.upload_cross_signing_keys(req.requester, await req.json(), req.raw.remote)

    async def signatures_upload(req: Request) -> dict:
        """POST /_matrix/client/v3/keys/signatures/upload — each signature is verified before
        it is stored; bad ones are reported in ``failures``."""
        return await e2ee.upload_signatures(req.requester, await req.json(), req.raw.remote)

    router.add("POST", f"{V3}/keys/upload", upload, allow_suspended=True)
    router.add("POST", f"{V3}/keys/query", query, allow_suspended=True)
    router.add("POST", f"{V3}/keys/claim", claim, allow_suspended=True)
    router.add("GET", f"{V3}/keys/changes", changes)
    router.add(
        "POST", f"{V3}/keys/device_signing/upload", device_signing_upload, allow_suspended=True
    )
    router.add("POST", f"{V3}/keys/signatures/upload", signatures_upload, allow_suspended=True)
