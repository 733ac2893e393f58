"""Export: everything the server holds about one user, in one ZIP archive (GDPR Art. 15, the
right of access, and Art. 20, the right to data portability: "a structured, commonly used and
machine-readable format"; issue 10 "Export").

The archive's layout is documented in :mod:`~bastion.services.export.schema` (``schema.md``
in every archive; the kinds and
their files are :data:`~bastion.services.export.collect.KINDS`); ``manifest.json`` lists the
kinds with their counts and the schema version; ``index.html`` shows it all to a person,
offline. :mod:`~bastion.services.export.collect` decides what goes in,
:mod:`~bastion.services.export.archive` writes the ZIP as the data is read (never the whole
archive, nor all of a kind, in memory).

Three ways in, each writing one ``compliance.export`` ledger action record (actor, subject =
the exported user, details: counts per kind, the archive's bytes and SHA-256; never content):

* the user: ``POST /_bastion/client/v1/export`` (:mod:`bastion.api.client.export`), after
  password re-authentication (User-Interactive Authentication), at most one export per
  :attr:`ExportService.min_interval_ms` (one hour by default; counted from the user's last
  ``compliance.export`` record, so a restart does not reset it) and one at a time;
* an admin: ``GET /_bastion/admin/v1/users/{userId}/export``
  (:mod:`bastion.api.bastion_admin.export`), an admin read of the user's data;
* ``bastion admin export-user USER_ID -o FILE`` on the data directory (the server stopped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.core.identifiers import parse_user_id
from bastion.errors import MatrixError, invalid_param, limit_exceeded, not_found
from bastion.ledger import records
from bastion.services.export.archive import (
    SCHEMA_VERSION,
    ArchiveResult,
    Progress,
    ProgressFn,
    new_part_path,
    remove_parts,
    write_archive,
)
from bastion.services.export.collect import KINDS, PAGE_SIZE, Collector
from bastion.services.security_records import record_in

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

__all__ = ["KINDS", "SCHEMA_VERSION", "ArchiveResult", "ExportService", "Progress"]

log = logging.getLogger("bastion.export")

#: The shortest time between two exports a user asks for themselves (ms).
DEFAULT_MIN_INTERVAL_MS = 60 * 60 * 1000
#: How long a user whose export is being written is asked to wait before asking again (ms).
BUSY_RETRY_MS = 10_000


def drive(steps: Generator[Progress, None, ArchiveResult]) -> ArchiveResult:
    """Run an export's steps to the end (the command line: no event loop)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            result: ArchiveResult = stop.value
            return result


class ExportService:
    """Exports of users' data (``hs.export``)."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.store
        #: Rows per store read and items per page.
        self.page_size = PAGE_SIZE
        #: The shortest time between two exports a user asks for themselves.
        self.min_interval_ms = DEFAULT_MIN_INTERVAL_MS
        #: Where the server writes archives before sending them (in the data directory).
        self.tmp_dir: Path = hs.config.data_dir / "export-tmp"
        self._running: set[str] = set()
        remove_parts(self.tmp_dir)

    # -- the archive --------------------------------------------------------------------------
    def require_local_user(self, user_id: str) -> str:
        """``user_id`` if it is a user of this server with an account (deactivated included):
        400 ``M_INVALID_PARAM`` for a malformed or remote user ID, 404 ``M_NOT_FOUND`` for
        one without an account."""
        try:
            parsed = parse_user_id(user_id, historical=True)
        except MatrixError:
            raise invalid_param("not a valid user ID") from None
        if parsed.domain != self.hs.server_name:
            raise invalid_param("only users of this server can be exported")
        if self.store.export_account(user_id) is None:
            raise not_found("no such user")
        return user_id

    def steps(
        self, user_id: str, path: Path, progress: ProgressFn | None = None
    ) -> Generator[Progress, None, ArchiveResult]:
        """The export of ``user_id`` written to ``path``, one page per step."""
        now = self.hs.now_ms()
        collector = Collector(
            self.store, self.hs.rooms.reader, self.hs.rooms.access, self.hs.rooms.client_event,
            self.hs.media.local_path, user_id, page_size=self.page_size, now_ms=now,
            media_chunks=self.hs.media.content_chunks_of,
        )  # fmt: skip
        return write_archive(
            collector, path, user_id=user_id, server_name=self.hs.server_name, created_ts=now,
            progress=progress,
        )  # fmt: skip

    async def write(self, user_id: str, progress: ProgressFn | None = None) -> ArchiveResult:
        """Write the export to a temporary file in the data directory, a page per turn of the
        event loop (other requests are served in between)."""
        path = new_part_path(self.tmp_dir, "export")
        steps = self.steps(user_id, path, progress)
        try:
            while True:
                try:
                    next(steps)
                except StopIteration as stop:
                    result: ArchiveResult = stop.value
                    return result
                await asyncio.sleep(0)
        finally:
            steps.close()  # on cancellation: the partial file is removed

    # -- the record ---------------------------------------------------------------------------
    @staticmethod
    def record_details(result: ArchiveResult) -> dict:
        return {"counts": result.counts, "bytes": result.size, "sha256": result.sha256,
                "schema_version": SCHEMA_VERSION}  # fmt: skip

    def record_in(
        self, conn: Txn, result: ArchiveResult, *, user_id: str, actor: str, origin: str | None,
        ts: int,
    ) -> int:  # fmt: skip
        """The export's ``compliance.export`` ledger record (no content: counts, size, hash)."""
        return record_in(
            self.store, conn, records.ACTION_COMPLIANCE_EXPORT, actor=actor, ts=ts,
            target=user_id, subject=user_id, origin=origin, details=self.record_details(result),
        )  # fmt: skip

    async def record(self, result: ArchiveResult, *, user_id: str, actor: str,
                     origin: str | None) -> None:  # fmt: skip
        ts = self.hs.now_ms()
        await self.store.transaction(
            lambda conn: self.record_in(
                conn, result, user_id=user_id, actor=actor, origin=origin, ts=ts
            )
        )

    # -- the user's own export ----------------------------------------------------------------
    def check_rate(self, user_id: str) -> None:
        """429 ``M_LIMIT_EXCEEDED`` (with ``retry_after_ms``) while the user's previous export
        is younger than :attr:`min_interval_ms` or still being written."""
        if user_id in self._running:
            raise limit_exceeded(BUSY_RETRY_MS, "an export of this account is being written")
        last = self.store.export_last_action_ts(user_id, records.ACTION_COMPLIANCE_EXPORT, user_id)
        if last is not None:
            wait = last + self.min_interval_ms - self.hs.now_ms()
            if wait > 0:
                raise limit_exceeded(wait, "one export per hour: try again later")

    async def export_own(self, user_id: str, origin: str | None) -> ArchiveResult:
        """The user's own export (after UIA): rate-limited, written, recorded."""
        self.check_rate(user_id)
        self._running.add(user_id)  # no await since the check: two requests cannot both pass
        try:
            result = await self.write(user_id)
            try:
                await self.record(result, user_id=user_id, actor=user_id, origin=origin)
            except BaseException:
                result.path.unlink(missing_ok=True)
                raise
        finally:
            self._running.discard(user_id)
        log.info("export of %s: %d bytes", user_id, result.size)
        return result

    async def export_for_admin(self, admin: str, user_id: str,
                               origin: str | None) -> ArchiveResult:  # fmt: skip
        """An admin's export of ``user_id`` (the caller has recorded the admin read)."""
        result = await self.write(user_id)
        try:
            await self.record(result, user_id=user_id, actor=admin, origin=origin)
        except BaseException:
            result.path.unlink(missing_ok=True)
            raise
        log.info("export of %s by %s: %d bytes", user_id, admin, result.size)
        return result
