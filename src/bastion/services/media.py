"""The media service (C-S API "Content repository"): local uploads (direct and asynchronous),
downloads, and thumbnails.

Files live under ``config.media_path``::

    local/<id[0:2]>/<id[2:4]>/<id>                      the uploaded bytes
    thumbnails/<id[0:2]>/<id[2:4]>/<id>/<w>x<h>-<method>[-animated].<png|jpeg|webp>
    tmp/                                                uploads being received

Thumbnails come in a fixed set of sizes (``thumbnail_sizes``; a request gets the configured size
that fits best, :func:`bastion.core.media.select_thumbnail_size`). Each is generated at most once
per media — concurrent requests share one generation — and stored as a file beside the media;
later requests serve that file without decoding anything. The outcome "serve the original" (the
image is no larger than the size) and "cannot thumbnail" are stored too, as empty marker files
(``.original``, ``.unknown``, ``.too-large``), so a hostile image costs its decode only once per
size. Generation runs on a small thread pool of its own, never on the default executor that file
I/O uses.

An upload is streamed to a temporary file (never held in memory whole), counted against
``max_upload_size`` as it arrives, hashed (SHA-256), flushed to disk, and renamed into place
inside the write function that records it, so a 200 means both the bytes and the row are durable.
Paths are only ever built from media IDs that passed the spec's ``[A-Za-z0-9_-]`` allow-list and
exist in the database (C-S API "Security considerations": directory traversal).

Remote media (issue 11): another server's ``mxc://`` URI is fetched over federation
(:class:`bastion.services.remote.RemoteMediaSource`, the S-S API "Content Repository"), once
for every concurrent request, and cached: the bytes pass the rules an upload passes (the
``max_upload_size`` cap, counted as they arrive and aborted past it; the content type and file
name normalised as for an upload) and are written like an upload, under ``remote/`` with a
file name this server picks (a row of ``remote_media`` names it), encrypted at rest when that
is on. Later requests are served from the cache; thumbnails of remote media are made here,
from the cached original, like those of local media (under ``remote_thumbnails/``). Without a
federation listener another server's media is 404.

Quarantined remote media (a row of ``quarantined_remote_media``, written by the admin API or a
guard action) is 404 ``M_NOT_FOUND``, cached or not, and never fetched: quarantining drops the
cached copy in the same write (:meth:`drop_remote_copies` then deletes its files), and a fetch
that finishes after the quarantine finds it in the write that would have recorded the file and
throws the bytes away.

Encryption at rest (``at_rest_key`` set, issue 10): every new upload is written encrypted with
a random key of its own (:mod:`bastion.core.media_encryption`), kept in its row
(``local_media.file_key``), and so are its thumbnails; files written before it was turned on
stay as they are and are served as they are (their row has no key). :meth:`content_chunks`
reads a file's plaintext either way. Deleting the row deletes the key, which makes every copy
of the file unreadable (crypto-shredding).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.core.identifiers import parse_server_name
from bastion.core.media import (
    ThumbnailSize,
    base_type,
    is_valid_media_id,
    normalise_upload_content_type,
    plan_thumbnail,
    remote_upload_name,
    select_thumbnail_size,
)
from bastion.core.media_encryption import (
    Encryptor,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    new_key,
)
from bastion.core.rate_limit import TokenBuckets, retry_after_ms
from bastion.errors import (
    M_CANNOT_OVERWRITE_MEDIA,
    M_NOT_YET_UPLOADED,
    M_UNKNOWN,
    MatrixError,
    forbidden,
    invalid_param,
    limit_exceeded,
    not_found,
    too_large,
)
from bastion.services.lifecycle import BackgroundService
from bastion.storage.interface import Row, Txn

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.services.remote import RemoteMediaSource

log = logging.getLogger(__name__)

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
MEDIA_ID_LENGTH = 24  # 62^24 ≈ 2^143: unguessable

#: POST /_matrix/media/v1/create: recommended expiry of an unused media ID (24 hours) and how
#: many pending uploads one user may hold ("limit the number of concurrent pending uploads").
UNUSED_EXPIRY_MS = 24 * 60 * 60 * 1000
MAX_PENDING_UPLOADS = 10

#: timeout_ms: "The default value is 20000 … The content repository SHOULD impose a maximum".
DEFAULT_DOWNLOAD_TIMEOUT_MS = 20_000
MAX_DOWNLOAD_TIMEOUT_MS = 60_000

#: Thumbnailing: only these decoders are ever run on uploaded bytes (the rest of Pillow's
#: format zoo stays unreachable), within these bounds (decompression-bomb guard).
THUMBNAIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF",
                     "image/webp": "WEBP", "image/apng": "PNG"}  # fmt: skip
MAX_THUMBNAIL_SOURCE_PIXELS = 40_000_000
MAX_ANIMATED_FRAMES = 100
MAX_ANIMATED_TOTAL_PIXELS = 100_000_000
MAX_THUMBNAIL_DIMENSION = 10_000
THUMBNAIL_CONCURRENCY = 2
#: Source types whose thumbnails may be animated (a separate stored file when asked for).
ANIMATABLE_TYPES = frozenset({"image/gif", "image/webp", "image/apng", "image/png"})
#: Stored thumbnail files: extension -> content type. Marker files (empty) record outcomes.
_STORED_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_ORIGINAL, _UNKNOWN, _TOO_LARGE = "original", "unknown", "too-large"

_WRITE_BUFFER = 1024 * 1024
#: A cached remote file's last-access time is written at most this often (not on every read).
REMOTE_TOUCH_INTERVAL_MS = 60 * 60 * 1000
#: New fetches of other servers' media one user may start: a token a second, 30 at once (each
#: fetch can move up to ``max_upload_size`` bytes; cached files and fetches already running
#: cost nothing).
REMOTE_FETCH_RATE = 1.0
REMOTE_FETCH_BURST = 30


class CannotThumbnail(Exception):
    """The content is not an image we thumbnail, or it does not decode."""


class ThumbnailTooLarge(Exception):
    """The image is larger than the thumbnailer will decode."""


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A thumbnail to serve: a file (cached, or the original) or fresh bytes."""

    content_type: str
    path: Path | None = None
    data: bytes | None = None
    #: The key ``path`` is encrypted with (encryption at rest), else None.
    file_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    tmp_path: Path
    size: int
    sha256: str
    #: The key the file was written encrypted with (encryption at rest), else None.
    file_key: bytes | None = None


class MediaService(BackgroundService):
    background_name = "thumbnail"

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        self.root: Path = hs.config.media_path
        self.thumbnail_sizes: tuple[ThumbnailSize, ...] = hs.config.thumbnail_size_set
        self._waiters: dict[str, tuple[asyncio.Event, int]] = {}  # media ID -> (event, waiters)
        self._generating: dict[tuple[str, str], asyncio.Task] = {}  # (thumb dir, name) -> task
        #: Remote fetches in flight, shared by every request for the same file.
        self._fetching: dict[tuple[str, str], asyncio.Task] = {}
        self._remote_fetches = TokenBuckets(REMOTE_FETCH_RATE, REMOTE_FETCH_BURST)
        #: Other servers' media (None: no federation listener, remote media is 404).
        self.remote_media: RemoteMediaSource | None = None
        self._thumb_executor: ThreadPoolExecutor | None = None
        #: New files are written encrypted (encryption at rest is on).
        self.encrypt: bool = bool(hs.config.at_rest_key)
        self._remove_partial_uploads()

    def close(self) -> None:
        """Shutdown (after the drain): release the thumbnailing threads."""
        executor, self._thumb_executor = self._thumb_executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def _remove_partial_uploads(self) -> None:
        """Uploads cut off by a crash leave ``tmp/*.part`` files; nothing refers to them."""
        tmp_dir = self.root / "tmp"
        if tmp_dir.is_dir():
            for part in tmp_dir.glob("*.part"):
                _unlink_quietly(part)

    # -- paths --------------------------------------------------------------------------------
    def local_path(self, media_id: str) -> Path:
        if not is_valid_media_id(media_id):  # never reached with a bad ID; belt and braces
            raise ValueError("invalid media ID")
        return self.root / "local" / media_id[0:2] / media_id[2:4] / media_id

    def _thumb_dir(self, media_id: str) -> Path:
        if not is_valid_media_id(media_id):
            raise ValueError("invalid media ID")
        return self.root / "thumbnails" / media_id[0:2] / media_id[2:4] / media_id

    @staticmethod
    def _is_remote(row: Row) -> bool:
        return "file_path" in row.keys()  # noqa: SIM118 (sqlite3.Row: `in` tests values)

    def file_of(self, row: Row) -> Path:
        """The stored file of a media row, local or cached remote."""
        if self._is_remote(row):
            return self.root / row["file_path"]  # chosen by this server (new_remote_file)
        return self.local_path(row["media_id"])

    def _thumb_dir_of(self, row: Row) -> Path:
        if self._is_remote(row):
            return self.root / "remote_thumbnails" / Path(row["file_path"]).relative_to("remote")
        return self._thumb_dir(row["media_id"])

    @staticmethod
    def new_remote_file() -> str:
        """A new file path (relative to the media directory) for a cached remote file: named
        by this server, never after anything the remote said."""
        name = secrets.token_hex(16)
        return f"remote/{name[0:2]}/{name[2:4]}/{name}"

    def delete_remote_files(self, file_path: str) -> None:
        """Delete a cached remote file and its thumbnails (blocking: a worker thread)."""
        if not file_path.startswith("remote/") or ".." in file_path:
            return
        _unlink_quietly(self.root / file_path)
        thumbs = self.root / "remote_thumbnails" / Path(file_path).relative_to("remote")
        shutil.rmtree(thumbs, ignore_errors=True)

    async def drop_remote_copies(self, file_paths: Iterable[str]) -> None:
        """Delete the files and thumbnails of cached remote media whose rows are gone (a
        quarantine): thumbnails being made from them are waited for first, so none is written
        after its directory is removed."""
        for file_path in file_paths:
            if not file_path.startswith("remote/") or ".." in file_path:
                continue
            thumbs = str(self.root / "remote_thumbnails" / Path(file_path).relative_to("remote"))
            pending = [t for (d, _n), t in self._generating.items() if d == thumbs]
            if pending:
                await asyncio.wait(pending)  # (never cancels them: others may be waiting)
            await asyncio.to_thread(self.delete_remote_files, file_path)

    def delete_files(self, media_id: str) -> bool:
        """Delete a local media's file and its thumbnails (retention, erasure, the admin API;
        the caller deletes the row, :meth:`~bastion.storage.interface.MediaStore.
        delete_local_media_in`); whether there was a file. Blocking: a worker thread."""
        path = self.local_path(media_id)
        try:
            path.unlink()
            existed = True
        except FileNotFoundError:
            existed = False
        except OSError:
            log.warning("could not delete the file of %s", media_id, exc_info=True)
            existed = True
        shutil.rmtree(self._thumb_dir(media_id), ignore_errors=True)
        return existed

    def mxc(self, media_id: str) -> str:
        return f"mxc://{self.hs.server_name}/{media_id}"

    @staticmethod
    def new_media_id() -> str:
        return "".join(secrets.choice(_ALPHABET) for _ in range(MEDIA_ID_LENGTH))

    # -- receiving bytes ----------------------------------------------------------------------
    async def receive(
        self, chunks: AsyncIterator[bytes], content_length: int | None
    ) -> ReceivedFile:
        """Stream a request body to a temporary file, enforcing the upload size limit
        (413 ``M_TOO_LARGE``). The file is fsynced before this returns."""
        limit = self.hs.config.max_upload_size
        if content_length is not None and content_length > limit:
            raise _too_large(limit)
        tmp_dir = self.root / "tmp"
        await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
        tmp_path = tmp_dir / (secrets.token_hex(16) + ".part")
        f = await asyncio.to_thread(open, tmp_path, "xb")
        digest = hashlib.sha256()
        size = 0
        buf = bytearray()
        key = new_key() if self.encrypt else None
        enc = Encryptor(key) if key is not None else None
        try:
            try:
                if enc is not None:
                    await asyncio.to_thread(f.write, enc.header())
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    digest.update(chunk)
                    buf += chunk
                    if len(buf) >= _WRITE_BUFFER:
                        data = bytes(buf) if enc is None else enc.update(bytes(buf))
                        await asyncio.to_thread(f.write, data)
                        buf.clear()
                tail = bytes(buf) if enc is None else enc.update(bytes(buf)) + enc.finish()
                if tail:
                    await asyncio.to_thread(f.write, tail)
                await asyncio.to_thread(_flush_and_sync, f)
            finally:
                await asyncio.to_thread(f.close)
        except BaseException:
            await asyncio.to_thread(_unlink_quietly, tmp_path)
            raise
        return ReceivedFile(tmp_path, size, digest.hexdigest(), key)

    # -- uploads ------------------------------------------------------------------------------
    async def upload(self, user_id: str, chunks: AsyncIterator[bytes],
                     content_length: int | None, content_type: str | None,
                     filename: str | None) -> str:  # fmt: skip
        """POST /_matrix/media/v3/upload: store the content under a new media ID."""
        ctype = normalise_upload_content_type(content_type)
        received = await self.receive(chunks, content_length)
        media_id = self.new_media_id()
        final = self.local_path(media_id)
        now = self.hs.now_ms()
        store = self.hs.store

        def fn(conn: Txn) -> None:
            store.insert_local_media_in(
                conn, media_id, user_id, now, content_type=ctype, upload_name=filename,
                size=received.size, sha256=received.sha256, file_key=received.file_key,
            )  # fmt: skip
            os.replace(received.tmp_path, final)

        await self._commit_file(fn, received, final)
        return self.mxc(media_id)

    async def create_pending(self, user_id: str) -> tuple[str, int]:
        """POST /_matrix/media/v1/create: a media ID to upload to later, and its expiry.
        429 ``M_LIMIT_EXCEEDED`` past ``MAX_PENDING_UPLOADS`` unexpired pending IDs."""
        now = self.hs.now_ms()
        media_id = self.new_media_id()
        expires = now + UNUSED_EXPIRY_MS
        store = self.hs.store

        def fn(conn: Txn) -> None:
            # Counted in the same transaction as the insert: concurrent creates cannot overrun.
            if store.count_pending_uploads_in(conn, user_id, now) >= MAX_PENDING_UPLOADS:
                raise limit_exceeded(60_000, f"at most {MAX_PENDING_UPLOADS} pending uploads; upload to those first")  # fmt: skip
            store.insert_local_media_in(
                conn, media_id, user_id, now, unused_expires_at=expires, uploaded=False
            )

        await self.hs.store.transaction(fn)
        return self.mxc(media_id), expires

    def check_pending_upload(self, user_id: str, server_name: str, media_id: str) -> None:
        """PUT /_matrix/media/v3/upload/{serverName}/{mediaId}, before reading the body:
        404 ``M_NOT_FOUND`` (not created here, or expired), 403 ``M_FORBIDDEN`` (another user
        created it), 409 ``M_CANNOT_OVERWRITE_MEDIA`` (already uploaded)."""
        row = self._local_row(server_name, media_id)
        if row is None:
            raise not_found("unknown media ID")
        if row["user_id"] != user_id:
            raise forbidden("this media ID was created by another user")
        if row["upload_ts"] is not None:
            raise MatrixError(M_CANNOT_OVERWRITE_MEDIA, "media already uploaded", 409)
        if row["unused_expires_at"] is not None and row["unused_expires_at"] <= self.hs.now_ms():
            raise not_found("this media ID has expired")

    async def upload_pending(self, user_id: str, server_name: str, media_id: str,
                             chunks: AsyncIterator[bytes], content_length: int | None,
                             content_type: str | None, filename: str | None) -> None:  # fmt: skip
        """PUT /_matrix/media/v3/upload/{serverName}/{mediaId}: fill a created media ID, once."""
        self.check_pending_upload(user_id, server_name, media_id)
        ctype = normalise_upload_content_type(content_type)
        received = await self.receive(chunks, content_length)
        final = self.local_path(media_id)
        now = self.hs.now_ms()
        store = self.hs.store

        def fn(conn: Txn) -> bool:
            if not store.complete_pending_upload_in(
                conn,
                media_id,
                now,
                ctype,
                filename,
                received.size,
                received.sha256,
                file_key=received.file_key,
            ):
                return False
            os.replace(received.tmp_path, final)  # only the one upload that won gets the file
            return True

        if not await self._commit_file(fn, received, final):
            # A concurrent PUT won, or the ID expired while the body arrived.
            self.check_pending_upload(user_id, server_name, media_id)
            raise MatrixError(M_CANNOT_OVERWRITE_MEDIA, "media already uploaded", 409)
        waiter = self._waiters.pop(media_id, None)
        if waiter is not None:
            waiter[0].set()

    async def _commit_file(self, fn, received: ReceivedFile, final: Path):
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        try:
            result = await self.hs.store.transaction(fn)
        finally:
            await asyncio.to_thread(_unlink_quietly, received.tmp_path)  # gone if renamed
        if result is not False:
            await asyncio.to_thread(_fsync_dir, final.parent)
        return result

    # -- lookups ------------------------------------------------------------------------------
    def _local_row(self, server_name: str, media_id: str) -> Row | None:
        """The row of a local media ID, or None. A malformed server name is 400
        ``M_INVALID_PARAM``; another server's media is 404 (no federation yet)."""
        try:
            parse_server_name(server_name)
        except MatrixError:
            raise invalid_param("invalid server name in the media URI") from None
        if server_name != self.hs.server_name:
            raise not_found("no such media on this server")
        if not is_valid_media_id(media_id):
            return None
        return self.hs.store.get_local_media(media_id)

    async def get_media(
        self, server_name: str, media_id: str, timeout_ms: int | None,
        requester: str | None = None,
    ) -> Row:  # fmt: skip
        """The row of any ``mxc://server_name/media_id`` a client (``requester``) asks for:
        uploaded local media (:meth:`get_uploaded`) or another server's, from the cache or
        fetched now (:meth:`get_remote`)."""
        try:
            parse_server_name(server_name)
        except MatrixError:
            raise invalid_param("invalid server name in the media URI") from None
        if server_name == self.hs.server_name:
            return await self.get_uploaded(server_name, media_id, timeout_ms)
        return await self.get_remote(server_name, media_id, requester)

    async def get_remote(
        self, server_name: str, media_id: str, requester: str | None = None
    ) -> Row:
        """The cached row of another server's media, fetching it first when it is not cached
        (one fetch for all concurrent requests). 404 ``M_NOT_FOUND`` without federation, for
        a malformed media ID, or when the server has no such media; 502 when it cannot be
        fetched; 502 ``M_TOO_LARGE`` past ``max_upload_size``; 429 ``M_LIMIT_EXCEEDED`` when
        ``requester`` has started too many new fetches (:data:`REMOTE_FETCH_RATE`)."""
        if self.remote_media is None or not is_valid_media_id(media_id):
            raise not_found("no such media")
        store = self.hs.store
        if store.remote_media_quarantine(server_name, media_id) is not None:
            # Quarantined by an admin or the guard: neither served nor fetched.
            raise not_found("this media has been quarantined")
        row = store.get_remote_media(server_name, media_id)
        if row is None:
            key = (server_name, media_id)
            task = self._fetching.get(key)
            if task is None:
                if requester is not None:
                    wait = self._remote_fetches.take(requester, time.monotonic())
                    if wait:
                        raise limit_exceeded(
                            retry_after_ms(wait), "too many fetches of other servers' media"
                        )
                task = self.spawn(self._fetch_remote(server_name, media_id), cancel_on_stop=True)
                self._fetching[key] = task
                task.add_done_callback(lambda _t: self._fetching.pop(key, None))
            error = await asyncio.shield(task)
            if error is not None:
                raise error
            row = store.get_remote_media(server_name, media_id)
            if row is None:
                raise not_found("no such media")
            return row
        now = self.hs.now_ms()
        if now - row["last_access_ts"] > REMOTE_TOUCH_INTERVAL_MS:
            await store.transaction(
                lambda conn: store.touch_remote_media_in(conn, server_name, media_id, now)
            )
        return row

    async def _fetch_remote(self, server_name: str, media_id: str) -> MatrixError | None:
        """Fetch and cache one remote file (a background task shared by every request that
        waits for it); the error to give them, or None once the row and file are in place."""
        assert self.remote_media is not None
        try:
            async with self.remote_media.fetch(server_name, media_id) as remote:
                content_type = normalise_upload_content_type(remote.content_type)
                upload_name = remote_upload_name(remote.filename)
                try:
                    received = await self.receive(remote.chunks, remote.content_length)
                except MatrixError as e:
                    if e.errcode == "M_TOO_LARGE":
                        limit = self.hs.config.max_upload_size
                        return MatrixError(
                            "M_TOO_LARGE", f"the remote file is larger than {limit} bytes", 502
                        )
                    raise
        except MatrixError as e:
            return e
        except OSError:
            log.warning("could not cache remote media %s/%s", server_name, media_id, exc_info=True)
            return MatrixError(M_UNKNOWN, "the remote media could not be stored", 502)
        rel = self.new_remote_file()
        final = self.root / rel
        now = self.hs.now_ms()
        store = self.hs.store

        def fn(conn: Txn) -> bool:
            if store.remote_media_quarantined_in(conn, server_name, media_id):
                return False  # quarantined while it was fetched: the bytes are thrown away
            store.insert_remote_media_in(
                conn, server_name, media_id, now, content_type=content_type,
                upload_name=upload_name, size=received.size, sha256=received.sha256,
                file_path=rel, file_key=received.file_key,
            )  # fmt: skip
            os.replace(received.tmp_path, final)
            return True

        if not await self._commit_file(fn, received, final):
            return not_found("this media has been quarantined")
        return None

    async def get_uploaded(self, server_name: str, media_id: str, timeout_ms: int | None):
        """The row of uploaded local media, waiting up to ``timeout_ms`` for a pending
        asynchronous upload (then 504 ``M_NOT_YET_UPLOADED``); 404 ``M_NOT_FOUND`` otherwise."""
        row = self._local_row(server_name, media_id)
        if row is None:
            raise not_found("no such media")
        if self.hs.store.media_quarantined(media_id):
            # Quarantined by the guard (issue 9): not served until an admin reverses it.
            raise not_found("this media has been quarantined")
        if row["upload_ts"] is not None:
            return row
        if row["unused_expires_at"] is not None and row["unused_expires_at"] <= self.hs.now_ms():
            raise not_found("no such media")
        timeout = DEFAULT_DOWNLOAD_TIMEOUT_MS if timeout_ms is None else timeout_ms
        timeout = max(0, min(timeout, MAX_DOWNLOAD_TIMEOUT_MS))
        if timeout > 0:
            event, waiting = self._waiters.get(media_id, (asyncio.Event(), 0))
            self._waiters[media_id] = (event, waiting + 1)
            try:
                await asyncio.wait_for(event.wait(), timeout / 1000)
            except TimeoutError:
                pass
            finally:
                entry = self._waiters.get(media_id)
                if entry is not None and entry[0] is event:
                    if entry[1] <= 1:
                        del self._waiters[media_id]
                    else:
                        self._waiters[media_id] = (event, entry[1] - 1)
            row = self.hs.store.get_local_media(media_id)
        if row is None or row["upload_ts"] is None:
            raise MatrixError(M_NOT_YET_UPLOADED, "content has not yet been uploaded", 504)
        return row

    async def purge_remote_cache(self, before_ts: int, batch: int = 500) -> int:
        """Forget cached remote files last served before ``before_ts`` (their rows, keys, files
        and thumbnails), a page of ``batch`` per write; how many. A later request fetches the
        file again. (Synapse admin API "Purge Remote Media API"; the retention job's
        ``remote_media_max_lifetime``.)"""
        store = self.hs.store
        total = 0
        while True:
            rows = store.remote_media_accessed_before(before_ts, batch)
            if not rows:
                return total
            keys = [(r["server_name"], r["media_id"]) for r in rows]

            def fn(conn: Txn, keys: list[tuple[str, str]] = keys) -> int:
                return store.delete_remote_media_in(conn, keys)

            await store.transaction(fn)
            for r in rows:
                await asyncio.to_thread(self.delete_remote_files, r["file_path"])
            total += len(rows)

    # -- reading content ----------------------------------------------------------------------
    def content_chunks(self, row: Row) -> Iterator[bytes]:
        """The plaintext of uploaded local media ``row``, in pieces, decrypted when it was
        written encrypted (blocking: run it in a worker thread). Raises OSError when the file
        is missing and :class:`~bastion.core.media_encryption.Corrupt` when it was changed."""
        return _read_plain(self.file_of(row), _key_of(row))

    def content_chunks_of(self, media_id: str) -> Iterator[bytes]:
        """:meth:`content_chunks` of a local media ID (nothing for an unknown one)."""
        row = self.hs.store.get_local_media(media_id)
        return iter(()) if row is None else self.content_chunks(row)

    # -- thumbnails ---------------------------------------------------------------------------
    async def thumbnail(self, row: Row, width: int, height: int, method: str,
                        animated: bool) -> Thumbnail:  # fmt: skip
        """C-S API "Thumbnails" for uploaded local media ``row``: the configured size that best
        fits the request, from its stored file (generated once, on first request), or the
        original when it is no larger than that size. 400 ``M_UNKNOWN`` for content that is not
        a thumbnailable image, 413 ``M_TOO_LARGE`` for images too large to decode."""
        ctype = base_type(row["content_type"] or "")
        if ctype not in THUMBNAIL_FORMATS:
            raise MatrixError(M_UNKNOWN, "cannot generate thumbnails for this content type", 400)
        size = select_thumbnail_size(self.thumbnail_sizes, width, height, method)
        animated = animated and ctype in ANIMATABLE_TYPES
        name = size.key + ("-animated" if animated else "")
        thumb_dir = self._thumb_dir_of(row)
        source = self.file_of(row)
        stored = await asyncio.to_thread(self._stored_thumbnail, thumb_dir, name)
        outcome: tuple[str, Path | None, bytes | None]
        if stored is None:
            key = (str(thumb_dir), name)
            task = self._generating.get(key)
            if task is None:
                task = self.spawn(
                    self._generate(source, thumb_dir, name, size, animated, _key_of(row))
                )
                self._generating[key] = task
                task.add_done_callback(lambda _t: self._generating.pop(key, None))
            outcome = await asyncio.shield(task)
        else:
            outcome = stored
        kind, path, data = outcome
        file_key = _key_of(row)
        if kind == _ORIGINAL:
            return Thumbnail(ctype, path=source, file_key=file_key)
        if kind == _TOO_LARGE:
            raise too_large("content is too large to thumbnail")
        if kind == _UNKNOWN:
            raise MatrixError(
                M_UNKNOWN, "cannot generate thumbnails for the requested content", 400
            )
        return Thumbnail(_STORED_TYPES[kind], path=path, data=data,
                         file_key=file_key if path is not None else None)  # fmt: skip

    def _stored_thumbnail(self, directory: Path, name: str) -> tuple[str, Path | None, None] | None:
        """(kind, path) of the stored outcome for thumbnail ``name`` in a media's thumbnail
        ``directory``: an image extension of :data:`_STORED_TYPES` or a marker; None when not
        generated yet. Runs in a worker thread."""
        for kind in (*_STORED_TYPES, _ORIGINAL, _UNKNOWN, _TOO_LARGE):
            path = directory / f"{name}.{kind}"
            if path.is_file():
                return kind, path, None
        return None

    async def _generate(self, stored_path: Path, thumb_dir: Path, name: str, size: ThumbnailSize,
                        animated: bool,
                        key: bytes | None) -> tuple[str, Path | None, bytes | None]:  # fmt: skip
        """Make thumbnail ``name`` once and store its outcome (a background task, shared by
        every request that waits for it); ``key``: the media is encrypted at rest with it,
        and so is the stored thumbnail."""
        if self._thumb_executor is None:
            self._thumb_executor = ThreadPoolExecutor(
                THUMBNAIL_CONCURRENCY, thread_name_prefix="thumbnail"
            )
        src: Path | io.BytesIO = stored_path
        if key is not None:
            plain = await asyncio.to_thread(lambda: b"".join(_read_plain(stored_path, key)))
            src = io.BytesIO(plain)
        loop = asyncio.get_running_loop()
        data = b""
        try:
            result = await loop.run_in_executor(
                self._thumb_executor, make_thumbnail, src, size.width, size.height, size.method,
                animated,
            )  # fmt: skip
        except ThumbnailTooLarge:
            kind = _TOO_LARGE
        except CannotThumbnail:
            kind = _UNKNOWN
        else:
            if result is None:
                kind = _ORIGINAL  # the original is no larger than this size: serve it
            else:
                data, out_type = result
                kind = out_type.rsplit("/", 1)[-1]
        path = thumb_dir / f"{name}.{kind}"
        stored = encrypt_bytes(key, data) if key is not None and data else data
        try:
            await asyncio.to_thread(_write_atomically, path, stored)
        except OSError:
            log.warning("could not store a thumbnail in %s", thumb_dir, exc_info=True)
            return kind, None, data  # served from memory this once
        return kind, path, None


# -- helpers (run in worker threads) -----------------------------------------------------------


def _key_of(row: Row) -> bytes | None:
    """The file key of a media row (None: stored in plain, as before encryption at rest)."""
    key = row["file_key"]
    return bytes(key) if key is not None else None


def _read_plain(path: Path, key: bytes | None, piece: int = 256 * 1024) -> Iterator[bytes]:
    """A stored file's plaintext in pieces (``key``: it is encrypted with it)."""

    def raw() -> Iterator[bytes]:
        with open(path, "rb") as f:
            while data := f.read(piece):
                yield data

    return raw() if key is None else decrypt_stream(key, raw())


def read_thumbnail(path: Path, key: bytes | None) -> bytes:
    """A stored thumbnail's bytes (blocking)."""
    data = path.read_bytes()
    return decrypt_bytes(key, data) if key is not None else data


def _too_large(limit: int) -> MatrixError:
    return too_large(f"cannot upload files larger than {limit} bytes")


def _flush_and_sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + "." + secrets.token_hex(8) + ".part")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def make_thumbnail(src: Path | io.BytesIO, want_w: int, want_h: int, method: str,
                   animated: bool) -> tuple[bytes, str] | None:  # fmt: skip
    """Decode ``src`` (PNG, JPEG, GIF or WebP only) and make a thumbnail per
    :func:`bastion.core.media.plan_thumbnail`. Returns (bytes, content type), or None when the
    original should be served as it is. Animated output (WebP) only when asked and the source
    is animated; otherwise the first frame, as PNG (JPEG for JPEG sources)."""
    from PIL import Image, ImageOps, ImageSequence

    try:
        with Image.open(src, formats=sorted(set(THUMBNAIL_FORMATS.values()))) as im:
            src_w, src_h = im.size
            if src_w <= 0 or src_h <= 0:
                raise CannotThumbnail("empty image")
            if src_w * src_h > MAX_THUMBNAIL_SOURCE_PIXELS:
                raise ThumbnailTooLarge()
            frames = getattr(im, "n_frames", 1)
            is_animated = frames > 1
            want_animated = (
                animated
                and is_animated
                and frames <= MAX_ANIMATED_FRAMES
                and frames * src_w * src_h <= MAX_ANIMATED_TOTAL_PIXELS
            )
            if not want_animated:
                im.seek(0)
                frame: Image.Image = im
                orientation = im.getexif().get(0x0112, 1) if im.format == "JPEG" else 1
                if orientation not in (None, 1):
                    frame = ImageOps.exif_transpose(im)
                    src_w, src_h = frame.size
                plan = plan_thumbnail(src_w, src_h, want_w, want_h, method)
                if plan.original and not is_animated and frame is im:
                    return None
                return _encode_static(frame, plan, jpeg=im.format == "JPEG")
            plan = plan_thumbnail(src_w, src_h, want_w, want_h, method)
            if plan.original:
                return None
            out_frames = []
            durations = []
            for fr in ImageSequence.Iterator(im):
                durations.append(int(fr.info.get("duration", 100)) or 100)
                out_frames.append(
                    fr.convert("RGBA").resize(
                        (plan.width, plan.height), Image.Resampling.LANCZOS, box=plan.crop_box
                    )
                )
            buf = io.BytesIO()
            out_frames[0].save(
                buf, format="WEBP", save_all=True, append_images=out_frames[1:],
                duration=durations, loop=0, quality=80,
            )  # fmt: skip
            return buf.getvalue(), "image/webp"
    except (CannotThumbnail, ThumbnailTooLarge):
        raise
    except Image.DecompressionBombError:
        raise ThumbnailTooLarge() from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError,
            Image.UnidentifiedImageError) as e:  # fmt: skip
        raise CannotThumbnail(str(e)) from None


def _encode_static(frame, plan, *, jpeg: bool) -> tuple[bytes, str]:
    from PIL import Image

    if jpeg:
        img = frame.convert("RGB")
    elif frame.mode not in ("RGB", "RGBA", "L", "LA"):
        img = frame.convert("RGBA")
    else:
        img = frame
    if (plan.width, plan.height) != img.size or plan.crop_box is not None:
        img = img.resize((plan.width, plan.height), Image.Resampling.LANCZOS, box=plan.crop_box)
    buf = io.BytesIO()
    if jpeg:
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue(), "image/jpeg"
    img.save(buf, format="PNG")
    return buf.getvalue(), "image/png"
