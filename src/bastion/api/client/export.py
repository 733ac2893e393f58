"""``POST /_bastion/client/v1/export`` — a user's export of their own data (GDPR Art. 15, right
of access; Art. 20, right to data portability; :mod:`bastion.services.export`).

Authenticated, with password re-authentication through User-Interactive Authentication
(C-S API "User-Interactive Authentication API", flow ``m.login.password``, as for
``/account/password`` and ``/account/deactivate``: a first request without ``auth`` gets the
401 with ``flows`` and ``session``; a wrong password gets 401 with ``errcode`` M_FORBIDDEN). At
most one export per hour (``hs.export.min_interval_ms``) and one at a time: 429
``M_LIMIT_EXCEEDED`` with ``retry_after_ms`` (C-S API "Rate limiting"). A suspended account
may still export (the right of access does not end with a suspension).

The answer is the ZIP archive, streamed from the temporary file it was written to
(``Content-Type: application/zip``, ``Content-Disposition: attachment``); the file is unlinked
as soon as it is open, so nothing of it stays on disk once the answer is sent or cut off.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING

from aiohttp import web

from bastion.api.http import NO_STORE, SECURITY_HEADERS, Request, Router
from bastion.services.export.archive import CHUNK, ArchiveResult

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: The UIA operation name of an export.
UIA_OPERATION = "export"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def archive_name(user_id: str, ts: int) -> str:
    """A file name for the archive: the user ID's safe characters and the time."""
    return f"bastion-export-{_UNSAFE.sub('_', user_id.lstrip('@'))[:100]}-{ts}.zip"


async def stream_archive(req: Request, result: ArchiveResult, name: str) -> web.StreamResponse:
    """Send the archive at ``result.path`` and remove it (it is unlinked once open)."""
    f = await asyncio.to_thread(open, result.path, "rb")
    try:
        os.unlink(result.path)
        resp = web.StreamResponse(
            headers={
                **SECURITY_HEADERS, **NO_STORE,
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="{name}"',
                "Access-Control-Allow-Origin": "*",
            }
        )  # fmt: skip
        resp.content_length = result.size
        await resp.prepare(req.raw)
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        f.close()


def register(router: Router, hs: HomeServer) -> None:
    async def export(req: Request) -> web.StreamResponse:
        """POST /_bastion/client/v1/export — the requester's data as a ZIP archive (UIA with
        ``m.login.password``)."""
        body = await req.json(allow_empty=True)
        user_id = req.requester.user_id
        hs.export.check_rate(user_id)  # before asking for the password
        session = await hs.accounts.require_password_uia(
            body, req.requester, UIA_OPERATION, req.raw.remote
        )
        hs.accounts.end_uia(session)
        result = await hs.export.export_own(user_id, req.raw.remote)
        return await stream_archive(req, result, archive_name(user_id, hs.now_ms()))

    router.add("POST", "/_bastion/client/v1/export", export, allow_suspended=True)
