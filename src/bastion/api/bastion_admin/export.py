"""``GET /_bastion/admin/v1/users/{userId}/export`` — an admin's export of a user's data (GDPR
Art. 15 requests answered by the operator; :mod:`bastion.services.export`).

Server admins only (403 ``M_FORBIDDEN``). The read is an ``admin.request`` ledger record with
the user as its subject (:func:`bastion.api.admin_access.record_admin_read`), committed before
the archive is written, and the export its ``compliance.export`` record. A malformed or remote
user ID is 400 ``M_INVALID_PARAM``, an unknown one 404 ``M_NOT_FOUND``; a deactivated account
can be exported (its data is still held). No rate limit: admins are trusted and recorded. The
answer is the ZIP archive, streamed as for the user's own export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from bastion.api.admin_access import record_admin_read, require_admin
from bastion.api.client.export import archive_name, stream_archive
from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def export_user(req: Request) -> web.StreamResponse:
        """GET /_bastion/admin/v1/users/{userId}/export — the user's data as a ZIP archive."""
        admin = require_admin(req)
        user_id = hs.export.require_local_user(req.params["userId"])
        await record_admin_read(hs, req, target=user_id, subject=user_id)
        result = await hs.export.export_for_admin(admin, user_id, req.raw.remote)
        return await stream_archive(req, result, archive_name(user_id, hs.now_ms()))

    router.add("GET", "/_bastion/admin/v1/users/{userId}/export", export_user)
