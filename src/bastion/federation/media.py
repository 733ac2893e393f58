"""Other servers' media, fetched for our users (S-S API "Content Repository"; C-S API "Content
repository", "Retrieving remote media").

``hs.federation.media.fetch(server_name, media_id)`` asks the server for the file with the
authenticated endpoint ``GET /_matrix/federation/v1/media/download/{mediaId}`` (signed with
X-Matrix, resolved and egress-filtered like every federation request) and reads its
``multipart/mixed`` answer with aiohttp's multipart reader: a JSON metadata part, then either
the content part or a part with a ``Location`` header. A ``Location`` is followed once, and
only to an ``http``/``https`` URL whose host's addresses pass the egress filter. Only when the
server answers 404 ``M_UNRECOGNIZED`` (it does not know the endpoint) is the legacy
unauthenticated ``GET /_matrix/media/v3/download/{serverName}/{mediaId}`` asked instead, with
``allow_remote=false`` (S-S API: servers "MUST NOT" be asked to fetch from a third server).

The bytes are handed to the media service as they arrive; it counts them against the upload
size limit and writes them to disk (never more than a read buffer in memory). Anything the
server answers that is not usable (no boundary, missing parts, a part too large to be
metadata, a refused redirect) is a 502 ``M_UNKNOWN``, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
import orjson

from bastion.core.media import base_type, redirect_target_allowed
from bastion.errors import M_NOT_FOUND, M_UNKNOWN, MatrixError
from bastion.federation.resolver import FederationError
from bastion.services.remote import RemoteFile

if TYPE_CHECKING:
    from bastion.federation.client import FederationClient
    from bastion.server import HomeServer

log = logging.getLogger("bastion.federation.media")

#: A whole remote fetch, headers to last byte (a max_upload_size file on a slow link fits).
FETCH_TIMEOUT = 300.0
#: The metadata part and an error body are small JSON objects.
MAX_JSON_PART = 64 * 1024
READ_CHUNK = 64 * 1024
#: S-S API "Content Repository": how long the remote may wait for a pending upload.
REMOTE_TIMEOUT_MS = "20000"


class BadRemoteAnswer(Exception):
    """The remote server's answer is not a media answer we can use."""


def _unusable(what: str) -> MatrixError:
    return MatrixError(M_UNKNOWN, f"the remote server's media answer is unusable: {what}", 502)


def _unreachable() -> MatrixError:
    return MatrixError(M_UNKNOWN, "the remote media could not be fetched", 502)


async def _read_small(chunks: AsyncIterator[bytes] | None, stream=None) -> bytes:
    """At most :data:`MAX_JSON_PART` bytes of a small body (BadRemoteAnswer past it)."""
    data = bytearray()
    if stream is not None:
        data += await stream.read(MAX_JSON_PART + 1)
    elif chunks is not None:
        async for chunk in chunks:
            data += chunk
            if len(data) > MAX_JSON_PART:
                break
    if len(data) > MAX_JSON_PART:
        raise BadRemoteAnswer("a JSON part is too large")
    return bytes(data)


async def _part_chunks(
    part: aiohttp.BodyPartReader, reader: aiohttp.MultipartReader | None = None
) -> AsyncIterator[bytes]:
    """The bytes of one part; with ``reader``, the last part: the answer must then end with
    the closing boundary (a body cut short is never taken for the whole file)."""
    while True:
        chunk = await part.read_chunk(READ_CHUNK)
        if not chunk:
            break
        yield chunk
    if reader is not None and (await reader.next() is not None or not reader.at_eof()):
        raise ValueError("the multipart answer has more parts than metadata and content")


async def _body_chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in resp.content.iter_chunked(READ_CHUNK):
        yield chunk


def _errcode(raw: bytes) -> str | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    code = body.get("errcode") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _filename_of(disposition: str | None) -> str | None:
    if not disposition:
        return None
    try:
        _kind, params = aiohttp.multipart.parse_content_disposition(disposition)
        return aiohttp.multipart.content_disposition_filename(params, "filename")
    except (ValueError, UnicodeError):
        return None


class FederationMedia:
    """Fetches other servers' media files (implements
    :class:`bastion.services.remote.RemoteMediaSource`)."""

    def __init__(self, hs: HomeServer, client: FederationClient) -> None:
        self.hs = hs
        self.client = client

    @asynccontextmanager
    async def fetch(self, server_name: str, media_id: str) -> AsyncIterator[RemoteFile]:
        path = f"/_matrix/federation/v1/media/download/{quote(media_id, safe='')}"
        query = {"timeout_ms": REMOTE_TIMEOUT_MS}
        async with AsyncExitStack() as stack:
            try:
                resp = await stack.enter_async_context(
                    self.client.stream(server_name, path, query, timeout=FETCH_TIMEOUT)
                )
                if resp.status == 404 and _errcode(await _read_small(None, resp.content)) == (
                    "M_UNRECOGNIZED"
                ):
                    remote = await self._legacy(stack, server_name, media_id)
                else:
                    _check_status(resp.status)
                    remote = await self._multipart(stack, resp)
            except BadRemoteAnswer as e:
                log.info("media %s/%s: %s", server_name, media_id, e)
                raise _unusable(str(e)) from None
            except (FederationError, aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.info("media %s/%s could not be fetched: %s", server_name, media_id, e)
                raise _unreachable() from None
            yield RemoteFile(
                remote.content_type, remote.filename, remote.content_length,
                _guarded(remote.chunks),
            )  # fmt: skip

    async def _multipart(self, stack: AsyncExitStack, resp: aiohttp.ClientResponse) -> RemoteFile:
        """The content of a ``multipart/mixed`` federation media answer (or where its
        ``Location`` part points)."""
        if base_type(resp.headers.get("Content-Type", "")) != "multipart/mixed":
            raise BadRemoteAnswer("not multipart/mixed")
        try:
            reader = aiohttp.MultipartReader(
                resp.headers, resp.content, max_field_size=8190, max_headers=32
            )
            meta = await reader.next()
            if not isinstance(meta, aiohttp.BodyPartReader):
                raise BadRemoteAnswer("no metadata part")
            if base_type(meta.headers.get("Content-Type", "")) != "application/json":
                raise BadRemoteAnswer("the metadata part is not JSON")
            try:
                metadata = orjson.loads(await _read_small(_part_chunks(meta)))
            except orjson.JSONDecodeError:
                raise BadRemoteAnswer("the metadata part is not JSON") from None
            if not isinstance(metadata, dict):
                raise BadRemoteAnswer("the metadata is not an object")
            content = await reader.next()
        except (KeyError, AssertionError, ValueError, RuntimeError) as e:
            raise BadRemoteAnswer(f"malformed multipart ({e})") from None
        if not isinstance(content, aiohttp.BodyPartReader):
            raise BadRemoteAnswer("no content part")
        location = content.headers.get("Location")
        if location is not None:
            return await self._redirect(stack, location)
        length = content.headers.get("Content-Length")
        return RemoteFile(
            content.headers.get("Content-Type"),
            _filename_of(content.headers.get("Content-Disposition")),
            int(length) if length is not None and length.isdigit() else None,
            _part_chunks(content, reader),
        )

    async def _redirect(self, stack: AsyncExitStack, location: str) -> RemoteFile:
        if not redirect_target_allowed(location):
            raise BadRemoteAnswer("the Location is not an http(s) URL")
        resp = await stack.enter_async_context(
            self.client.open_url(location, timeout=FETCH_TIMEOUT)
        )
        _check_status(resp.status)
        return RemoteFile(
            resp.headers.get("Content-Type"),
            _filename_of(resp.headers.get("Content-Disposition")),
            resp.content_length,
            _body_chunks(resp),
        )

    async def _legacy(self, stack: AsyncExitStack, server_name: str, media_id: str) -> RemoteFile:
        """The deprecated ``/_matrix/media/v3/download`` (unauthenticated), for servers that do
        not know the federation endpoint."""
        path = (
            f"/_matrix/media/v3/download/{quote(server_name, safe='')}/{quote(media_id, safe='')}"
        )
        query = {"allow_remote": "false", "allow_redirect": "true", "timeout_ms": REMOTE_TIMEOUT_MS}
        resp = await stack.enter_async_context(
            self.client.stream(server_name, path, query, sign=False, timeout=FETCH_TIMEOUT)
        )
        if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
            return await self._redirect(stack, resp.headers["Location"])
        _check_status(resp.status)
        return RemoteFile(
            resp.headers.get("Content-Type"),
            _filename_of(resp.headers.get("Content-Disposition")),
            resp.content_length,
            _body_chunks(resp),
        )


def _check_status(status: int) -> None:
    if status == 404:
        raise MatrixError(M_NOT_FOUND, "the remote server has no such media", 404)
    if status != 200:
        raise BadRemoteAnswer(f"status {status}")


async def _guarded(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks, with a transfer that breaks or turns out malformed on the way reported as a
    502 Matrix error."""
    try:
        async for chunk in chunks:
            yield chunk
    except (aiohttp.ClientError, TimeoutError, ValueError, AssertionError, RuntimeError) as e:
        log.info("a remote media transfer failed: %s", e)
        raise _unreachable() from None
