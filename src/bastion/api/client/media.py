"""Content repository (C-S API "Content repository", content-repo.yaml, authed-content-repo.yaml).

Served:
- ``POST /_matrix/media/v3/upload``, ``POST /_matrix/media/v1/create`` and
  ``PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`` (uploads did not move to /client/v1);
- ``GET /_matrix/client/v1/media/config``, ``.../download/{serverName}/{mediaId}[/{fileName}]``
  and ``.../thumbnail/{serverName}/{mediaId}``, all authenticated.

The deprecated unauthenticated ``GET /_matrix/media/v3/download|thumbnail`` are *frozen*
("Client behaviour": servers SHOULD freeze them): every piece of media on this server is newer
than the freeze, so they answer 404 ``M_NOT_FOUND`` as the spec allows.
``/_matrix/media/v3/config`` and both ``preview_url`` endpoints are not served (URL previews
fetch arbitrary URLs for clients: an SSRF surface this server does not open).
Remote media (another server name) is fetched over federation and cached
(:meth:`bastion.services.media.MediaService.get_media`); without a federation listener it is
404.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web

from bastion.api.http import CORS_HEADERS, Request, Router
from bastion.core.media import (
    CONTENT_SECURITY_POLICY,
    MAX_FILENAME_LENGTH,
    THUMBNAIL_METHODS,
    content_disposition,
    served_content_type,
)
from bastion.core.media_encryption import Corrupt
from bastion.errors import invalid_param, missing_param, not_found
from bastion.services.media import (
    MAX_DOWNLOAD_TIMEOUT_MS,
    MAX_THUMBNAIL_DIMENSION,
    read_thumbnail,
)

if TYPE_CHECKING:
    from bastion.server import HomeServer

_DIGITS = re.compile(r"[0-9]{1,9}")

#: Headers on every piece of served media ("Serving inline content", "Content repository").
MEDIA_HEADERS = {
    **CORS_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Referrer-Policy": "no-referrer",
    # Media is immutable; it was fetched with an access token, so no shared cache keeps it.
    "Cache-Control": "private, max-age=86400",
}


def _filename_param(req: Request) -> str | None:
    """``?filename=`` of an upload: at most 255 characters, no control characters."""
    name = req.query.get("filename")
    if name is None or name == "":
        return None
    if len(name) > MAX_FILENAME_LENGTH or not name.isprintable():
        raise invalid_param(f"filename must be at most {MAX_FILENAME_LENGTH} printable characters")
    return name


def _timeout_ms(req: Request) -> int | None:
    return req.query_int("timeout_ms", None, minimum=0, maximum=MAX_DOWNLOAD_TIMEOUT_MS)


def _dimension(req: Request, key: str) -> int:
    value = req.query.get(key)
    if value is None or value == "":
        raise missing_param(f"query parameter {key!r} is required")
    if not _DIGITS.fullmatch(value) or int(value) <= 0:
        raise invalid_param(f"{key} must be a positive integer")
    return min(int(value), MAX_THUMBNAIL_DIMENSION)


def _bool_param(req: Request, key: str) -> bool:
    value = req.query.get(key)
    if value is None or value == "":
        return False
    if value not in ("true", "false"):
        raise invalid_param(f"{key} must be true or false")
    return value == "true"


def _body_chunks(req: Request):
    return req.raw.content.iter_chunked(65536)


log = logging.getLogger(__name__)


class DecryptingFileResponse(web.StreamResponse):
    """A media file encrypted at rest, decrypted as it is sent: the stored file is read in
    a worker thread piece by piece (never whole in memory). A file found changed on the way
    (:class:`~bastion.core.media_encryption.Corrupt`) ends the response early: the client sees
    a short body, never bytes that were not the upload's."""

    def __init__(self, pieces: Iterator[bytes], size: int | None,
                 headers: dict[str, str]) -> None:  # fmt: skip
        super().__init__(headers=headers)
        self._pieces = pieces
        if size is not None:
            self.content_length = size

    async def prepare(self, request: web.BaseRequest):
        writer = await super().prepare(request)
        if request.method == "HEAD":
            return writer
        done = object()
        while True:
            try:
                piece = await asyncio.to_thread(next, self._pieces, done)
            except (Corrupt, OSError):
                log.error("a media file encrypted at rest could not be read back")
                if request.transport is not None:
                    request.transport.close()
                return writer
            if piece is done:
                return writer
            await self.write(piece)  # type: ignore[arg-type]


def register(router: Router, hs: HomeServer) -> None:
    media = hs.media
    limits = hs.guard.limits

    async def upload(req: Request) -> dict:
        """POST /_matrix/media/v3/upload — C-S API "Content repository" (content-repo.yaml
        uploadContent). 413 ``M_TOO_LARGE`` over ``max_upload_size``; rate limit
        ``media_upload`` (429 ``M_LIMIT_EXCEEDED``)."""
        filename = _filename_param(req)
        limits.require("media_upload", user=req.requester.user_id, ip=req.raw.remote)
        uri = await media.upload(
            req.requester.user_id, _body_chunks(req), req.raw.content_length,
            req.raw.headers.get("Content-Type"), filename,
        )  # fmt: skip
        return {"content_uri": uri}

    async def create(req: Request) -> dict:
        """POST /_matrix/media/v1/create — C-S API "Content repository" (createContent):
        a media ID for a later upload, with ``unused_expires_at``; rate limit
        ``media_create`` (429 ``M_LIMIT_EXCEEDED``)."""
        limits.require("media_create", user=req.requester.user_id, ip=req.raw.remote)
        uri, expires = await media.create_pending(req.requester.user_id)
        return {"content_uri": uri, "unused_expires_at": expires}

    async def upload_to(req: Request) -> dict:
        """PUT /_matrix/media/v3/upload/{serverName}/{mediaId} — C-S API "Content repository"
        (uploadContentToMXC): only by the user who created the ID, only once; rate limit
        ``media_upload`` (429 ``M_LIMIT_EXCEEDED``)."""
        filename = _filename_param(req)
        limits.require("media_upload", user=req.requester.user_id, ip=req.raw.remote)
        await media.upload_pending(
            req.requester.user_id, req.params["serverName"], req.params["mediaId"],
            _body_chunks(req), req.raw.content_length, req.raw.headers.get("Content-Type"),
            filename,
        )  # fmt: skip
        return {}

    async def config(req: Request) -> dict:
        """GET /_matrix/client/v1/media/config — C-S API "Content repository" (getConfigAuthed)."""
        return {"m.upload.size": hs.config.max_upload_size}

    async def download(req: Request) -> web.StreamResponse:
        """GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}] — C-S API
        "Content repository" (getContentAuthed, getContentOverrideNameAuthed) and "Serving
        inline content"; another server's media is fetched over federation the first time
        and served from the cache after (502 ``M_TOO_LARGE`` past ``max_upload_size``)."""
        timeout = _timeout_ms(req)
        row = await media.get_media(
            req.params["serverName"], req.params["mediaId"], timeout, req.requester.user_id
        )
        ctype, inline = served_content_type(row["content_type"])
        name = req.params.get("fileName") or row["upload_name"]
        headers = {
            **MEDIA_HEADERS,
            "Content-Type": ctype,
            "Content-Disposition": content_disposition(inline, name),
        }
        path = media.file_of(row)
        if not await asyncio.to_thread(path.is_file):
            raise not_found("the content of this media is missing")
        if row["file_key"] is not None:
            # Encrypted at rest: decrypted as it is sent (a Range request gets it whole).
            return DecryptingFileResponse(media.content_chunks(row), row["size"], headers)
        return web.FileResponse(path, headers=headers)

    async def thumbnail(req: Request) -> web.StreamResponse:
        """GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId} — C-S API "Content
        repository" (getContentThumbnailAuthed) and "Thumbnails": served at the configured
        ``thumbnail_sizes`` entry that best fits ``width``/``height``/``method`` (the spec lets
        the server return another size); width or height that is not a positive integer of at
        most nine digits is 400 ``M_INVALID_PARAM``."""
        width = _dimension(req, "width")
        height = _dimension(req, "height")
        method = req.query.get("method") or "scale"
        if method not in THUMBNAIL_METHODS:
            raise invalid_param("method must be crop or scale")
        animated = _bool_param(req, "animated")
        timeout = _timeout_ms(req)
        row = await media.get_media(
            req.params["serverName"], req.params["mediaId"], timeout, req.requester.user_id
        )
        thumb = await media.thumbnail(row, width, height, method, animated)
        ext = thumb.content_type.rsplit("/", 1)[-1]
        headers = {
            **MEDIA_HEADERS,
            "Content-Type": thumb.content_type,
            "Content-Disposition": content_disposition(True, f"thumbnail.{ext}"),
        }
        if thumb.path is not None and thumb.file_key is not None:
            if thumb.path == media.file_of(row):  # (the original, as its thumbnail)
                return DecryptingFileResponse(media.content_chunks(row), row["size"], headers)
            data = await asyncio.to_thread(read_thumbnail, thumb.path, thumb.file_key)
            return web.Response(body=data, headers=headers)
        if thumb.path is not None:
            return web.FileResponse(thumb.path, headers=headers)
        return web.Response(body=thumb.data, headers=headers)

    async def frozen(req: Request) -> dict:
        """GET /_matrix/media/v3/download|thumbnail/… — deprecated and frozen (C-S API
        "Client behaviour", content-repo.yaml: "MAY return 404 M_NOT_FOUND for media which
        exists, but is after the server froze unauthenticated media access")."""
        raise not_found("unauthenticated media access is frozen; use /_matrix/client/v1/media/")

    router.add("POST", "/_matrix/media/v3/upload", upload)
    router.add("POST", "/_matrix/media/v1/create", create)
    router.add("PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}", upload_to)
    router.add("GET", "/_matrix/client/v1/media/config", config)
    # The deprecated path (content-repo.yaml getConfig) still needs an access token.
    router.add("GET", "/_matrix/media/v3/config", config)
    router.add("GET", "/_matrix/client/v1/media/download/{serverName}/{mediaId}", download)
    router.add(
        "GET", "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", download
    )
    router.add("GET", "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", thumbnail)
    for path in (
        "/_matrix/media/v3/download/{serverName}/{mediaId}",
        "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}",
        "/_matrix/media/v3/thumbnail/{serverName}/{mediaId}",
    ):
        router.add("GET", path, frozen, auth=False)
