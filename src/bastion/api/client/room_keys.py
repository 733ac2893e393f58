"""Server-side key backups (C-S API "End-to-End Encryption" → "Server-side key backups",
key_backup.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer

V3 = "/_matrix/client/v3/room_keys"


def register(router: Router, hs: HomeServer) -> None:
    e2ee = hs.e2ee

    async def create_version(req: Request) -> dict:
        """POST /_matrix/client/v3/room_keys/version — a new backup version becomes current."""
        return await e2ee.create_backup_version(req.requester, await req.json())

    async def get_current(req: Request) -> dict:
        """GET /_matrix/client/v3/room_keys/version — the current backup (404 if none)."""
        return e2ee.get_backup_version(req.requester, None)

    async def get_version(req: Request) -> dict:
        """GET /_matrix/client/v3/room_keys/version/{version}."""
        return e2ee.get_backup_version(req.requester, req.params["version"])

    async def put_version(req: Request) -> dict:
        """PUT /_matrix/client/v3/room_keys/version/{version} — only ``auth_data`` changes."""
        return await e2ee.update_backup_version(
            req.requester, req.params["version"], await req.json()
        )

    async def delete_version(req: Request) -> dict:
        """DELETE /_matrix/client/v3/room_keys/version/{version} — the backup and its keys."""
        return await e2ee.delete_backup_version(req.requester, req.params["version"])

    def _ids(req: Request) -> tuple[str | None, str | None]:
        return req.params.get("roomId"), req.params.get("sessionId")

    async def put_keys(req: Request) -> dict:
        """PUT /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version= — only into
        the current backup (403 ``M_WRONG_ROOM_KEYS_VERSION``); an existing key is replaced
        only by a better one (verified, then lower first_message_index, then lower
        forwarded_count)."""
        room_id, session_id = _ids(req)
        version = req.query.get("version")
        keys = e2ee.backup_keys_from_body(await req.json(), room_id, session_id)
        return await e2ee.put_backup_keys(req.requester, version, keys)

    async def get_keys(req: Request) -> dict:
        """GET /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=."""
        room_id, session_id = _ids(req)
        return e2ee.get_backup_keys(req.requester, req.query.get("version"), room_id, session_id)

    async def delete_keys(req: Request) -> dict:
        """DELETE /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=."""
        room_id, session_id = _ids(req)
        return await e2ee.delete_backup_keys(
            req.requester, req.query.get("version"), room_id, session_id
        )

    router.add("POST", f"{V3}/version", create_version, allow_suspended=True)
    router.add("GET", f"{V3}/version", get_current)
    router.add("GET", f"{V3}/version/{{version}}", get_version)
    router.add("PUT", f"{V3}/version/{{version}}", put_version, allow_suspended=True)
    router.add("DELETE", f"{V3}/version/{{version}}", delete_version, allow_suspended=True)
    for path in (f"{V3}/keys", f"{V3}/keys/{{roomId}}", f"{V3}/keys/{{roomId}}/{{sessionId}}"):
        router.add("PUT", path, put_keys, allow_suspended=True)
        router.add("GET", path, get_keys)
        router.add("DELETE", path, delete_keys, allow_suspended=True)
