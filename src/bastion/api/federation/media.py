"""S-S API "Content Repository" (federation content-repository.yaml): this server's media for
other servers, answered as ``multipart/mixed`` (a JSON metadata part, then the content part).

X-Matrix authenticated like every federation route (the origin must be a server that signs
its requests; room ACLs do not apply: media belongs to no room). Quarantined media is 404, as
for our own clients; files encrypted at rest are decrypted as they are sent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web

from bastion.api.http import Request, Router
from bastion.core.media import (
    THUMBNAIL_METHODS,
    content_disposition,
    multipart_media_head,
    multipart_media_tail,
    served_content_type,
)
from bastion.core.media_encryption import Corrupt
from bastion.errors import invalid_param, missing_param, not_found
from bastion.services.media import MAX_DOWNLOAD_TIMEOUT_MS, MAX_THUMBNAIL_DIMENSION, read_thumbnail

if TYPE_CHECKING:
    from bastion.server import HomeServer

log = logging.getLogger(__name__)

V1 = "/_matrix/federation/v1"


class MultipartMediaResponse(web.StreamResponse):
    """``multipart/mixed`` with the metadata part and one content part whose bytes come from
    ``pieces`` (read in a worker thread, piece by piece: a file is never held whole). A file
    found changed or missing on the way ends the response early, never with other bytes."""

    def __init__(self, pieces: Iterator[bytes], size: int | None, content_type: str,
                 disposition: str) -> None:  # fmt: skip
        boundary = secrets.token_hex(16)
        super().__init__(headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
        self._head = multipart_media_head(boundary, content_type, disposition)
        self._tail = multipart_media_tail(boundary)
        self._pieces = pieces
        if size is not None:
            self.content_length = len(self._head) + size + len(self._tail)

    async def prepare(self, request: web.BaseRequest):
        writer = await super().prepare(request)
        if request.method == "HEAD":
            return writer
        await self.write(self._head)
        done = object()
        while True:
            try:
                piece = await asyncio.to_thread(next, self._pieces, done)
            except (Corrupt, OSError):
                log.error("a media file could not be read back for another server")
                if request.transport is not None:
                    request.transport.close()
                return writer
            if piece is done:
                break
            await self.write(piece)  # type: ignore[arg-type]
        await self.write(self._tail)
        return writer


def _dimension(req: Request, key: str) -> int:
    value = req.query.get(key)
    if value is None or value == "":
        raise missing_param(f"query parameter {key!r} is required")
    if not (value.isascii() and value.isdigit() and len(value) <= 9) or int(value) <= 0:
        raise invalid_param(f"{key} must be a positive integer")
    return min(int(value), MAX_THUMBNAIL_DIMENSION)


def register(router: Router, hs: HomeServer) -> None:
    media = hs.media

    def timeout(req: Request) -> int | None:
        return req.query_int("timeout_ms", None, minimum=0, maximum=MAX_DOWNLOAD_TIMEOUT_MS)

    async def download(req: Request) -> web.StreamResponse:
        """GET /_matrix/federation/v1/media/download/{mediaId} — S-S API "Content Repository"
        (getContent): the metadata part ``{}`` and the file, with the Content-Type and
        Content-Disposition our own clients get ("Serving inline content")."""
        row = await media.get_uploaded(hs.server_name, req.params["mediaId"], timeout(req))
        ctype, inline = served_content_type(row["content_type"])
        if not await asyncio.to_thread(media.file_of(row).is_file):
            raise not_found("the content of this media is missing")
        return MultipartMediaResponse(
            media.content_chunks(row), row["size"], ctype,
            content_disposition(inline, row["upload_name"]),
        )  # fmt: skip

    async def thumbnail(req: Request) -> web.StreamResponse:
        """GET /_matrix/federation/v1/media/thumbnail/{mediaId} — S-S API "Content Repository"
        (getContentThumbnail): the thumbnail the C-S endpoint would serve, as a multipart
        answer."""
        width = _dimension(req, "width")
        height = _dimension(req, "height")
        method = req.query.get("method") or "scale"
        if method not in THUMBNAIL_METHODS:
            raise invalid_param("method must be crop or scale")
        animated = req.query.get("animated") == "true"
        row = await media.get_uploaded(hs.server_name, req.params["mediaId"], timeout(req))
        thumb = await media.thumbnail(row, width, height, method, animated)
        ext = thumb.content_type.rsplit("/", 1)[-1]
        disposition = content_disposition(True, f"thumbnail.{ext}")
        if thumb.path is not None and thumb.path == media.file_of(row):
            pieces, size = media.content_chunks(row), row["size"]  # the original, as it is
        else:
            if thumb.path is not None:
                data = await asyncio.to_thread(read_thumbnail, thumb.path, thumb.file_key)
            else:
                data = thumb.data or b""
            pieces, size = iter((data,)), len(data)
        return MultipartMediaResponse(pieces, size, thumb.content_type, disposition)

    router.add("GET", f"{V1}/media/download/{{mediaId}}", download, auth=True)
    router.add("GET", f"{V1}/media/thumbnail/{{mediaId}}", thumbnail, auth=True)
