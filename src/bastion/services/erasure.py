"""Erasure on deactivation (GDPR Art. 17; C-S API "Account deactivation", ``erase``): what the
user wrote and uploaded is really deleted, not hidden (issue 10).

``hs.erasure.erase(user_id, ...)``, in this order:

1. ``redact_federated``: for each of the user's events in the rooms they are joined to that
   have members on other servers, an ``m.room.redaction`` sent *as the user* through the room
   service, before they leave (auth rules: a sender may always redact their own events; room
   versions' "Redactions": the other servers then drop the content of their copies too). A
   redaction the room refuses is counted, not fatal.
2. Deactivation as for every deactivated account
   (:meth:`~bastion.services.accounts.AccountService.deactivate`): devices with their tokens
   and keys, the password and the profile go, the user leaves every room; the user ID is never
   reused. Skipped for an account already deactivated.
3. In a few transactions: every event the user sent, in every room, state events included
   (but the room's settings, :data:`KEPT_STATE_TYPES`), and every membership event about them
   is rewritten to its redacted form
   (:func:`~bastion.services.compliance_records.strip_and_record_in`, ``compliance.erase``
   records listing them; the redaction algorithm keeps what rooms need), at most
   :data:`EVENTS_PER_TRANSACTION` per transaction so the writer is never held long; their media
   files and thumbnails are removed, then every row that holds what they wrote
   (:mod:`bastion.storage.sqlite.erasure` lists each table and what happens to it) goes, the
   account is marked erased, and one ``compliance.erasure`` record (counts per kind, never
   content) is written, all in one transaction.
4. Disk hygiene: ``secure_delete`` is always on (the erasure's deletes leave zeros); the WAL
   is checkpointed and truncated, the database is ``VACUUM``-ed and the WAL truncated again
   (:meth:`~bastion.storage.interface.ErasureStore.compact_database`). Media files are unlinked,
   not overwritten first: on journaling and copy-on-write filesystems and SSDs an overwrite in
   place is not guaranteed to reach the old blocks, so it would promise what it cannot keep
   (encryption at rest, with per-file keys, is the answer to that). The in-memory copies
   (parsed events, presence, the classifier's word cache) are dropped.

Erasing an account again (a crash in between, or an erased account erased once more) does what
is left and changes nothing else: stripping an event twice changes nothing.

What is not erased, on purpose: what other users wrote (their replies may quote the user; their
reports about the user), the ledger's leaves (IDs and hashes, no content; the ledger must keep
verifying), room aliases the user created (the room's addresses), and the user ID itself
(deactivated IDs are never reused).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.core.identifiers import parse_user_id
from bastion.errors import MatrixError, forbidden, invalid_param, not_found
from bastion.guard.classifier.model import clear_classifier_caches
from bastion.ledger import records
from bastion.services.compliance_records import strip_and_record_in
from bastion.services.security_records import clip, record_in
from bastion.storage.interface import Requester

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

log = logging.getLogger(__name__)

#: Events stripped per write transaction.
EVENTS_PER_TRANSACTION = 1000

#: State events of the user that are neither stripped nor redacted: the room's settings. Their
#: content is configuration, not what a person wrote, and the redaction algorithm would empty
#: it (room versions' "Redactions" keep no key of ``m.room.encryption``, ``m.room.server_acl``,
#: ``m.room.tombstone``, ``m.room.guest_access``, ``m.space.child``/``parent``,
#: ``m.room.canonical_alias`` or ``m.room.pinned_events``): erasing a room's creator would
#: otherwise switch its encryption setting off for clients that read it, lift its server ACL,
#: cut its upgrade link or its place in a space. Power levels, join rules and history
#: visibility are settings too (IDs and numbers; their redacted forms drop some of them, e.g.
#: ``notifications``). The room's name, topic and avatar are the user's words: erased.
KEPT_STATE_TYPES = (
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.tombstone",
    "m.room.guest_access",
    "m.room.canonical_alias",
    "m.room.pinned_events",
    "m.space.child",
    "m.space.parent",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.history_visibility",
)


class Erasure:
    """``hs.erasure``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._lock = asyncio.Lock()  # one erasure at a time (each ends with a VACUUM)

    def check_target(self, user_id: str) -> None:
        """400 ``M_INVALID_PARAM`` for a malformed or remote user ID, 404 ``M_NOT_FOUND`` for
        an unknown one. A deactivated account may still be erased."""
        try:
            parsed = parse_user_id(user_id, historical=True)
        except MatrixError:
            raise invalid_param("not a valid user ID") from None
        if parsed.domain != self.hs.server_name:
            raise invalid_param("only users of this server can be deactivated or erased")
        if self.hs.store.get_user(user_id) is None:
            raise not_found("no such user")

    async def erase(
        self, user_id: str, *, actor: str, redact_federated: bool = False,
        reason: str | None = None, origin: str | None = None,
        also_in: Callable[[Txn], None] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Deactivate and erase ``user_id`` (a local user, :meth:`check_target`); ``actor``:
        who asked (the user, an admin, ``cli``); ``also_in``: a write for the deactivation's
        transaction (an admin call's ``admin.request`` record). The summary: counts per kind
        and the time the disk hygiene took."""
        holds = self.hs.store.legal_holds_for(user_id, None)
        if holds:
            # GDPR Art. 17(3)(e): not while the data is needed for legal claims. Refused before
            # anything changes (the account is not deactivated either).
            raise forbidden(
                "this account's data is under a legal hold and cannot be erased until an "
                "administrator lifts it"
            )
        async with self._lock:
            return await self._erase(user_id, actor, redact_federated, reason, origin, also_in)

    async def _erase(
        self, user_id: str, actor: str, redact_federated: bool, reason: str | None,
        origin: str | None, also_in: Callable[[Txn], None] | None,
    ) -> dict[str, Any]:  # fmt: skip
        hs, store = self.hs, self.hs.store
        counts: dict[str, int] = {}
        # 1. Redactions, while the user is still in their rooms.
        if redact_federated:
            sent = failed = 0
            for room_id, event_id in store.erasure_redaction_targets(
                user_id, hs.server_name, KEPT_STATE_TYPES
            ):
                try:
                    await hs.rooms.redact_event(user_id, None, room_id, event_id)
                    sent += 1
                except MatrixError as e:
                    failed += 1
                    log.warning("erasure of %s: no redaction of %s: %s", user_id, event_id, e)
            counts["redactions_sent"] = sent
            counts["redactions_failed"] = failed
        # 2. Deactivation (devices, tokens, keys, password, profile; leaves every room).
        row = store.get_user(user_id)
        if row is not None and not row["deactivated"]:
            counts["devices"] = len(store.get_devices(user_id))
            await hs.accounts.deactivate(
                Requester(user_id, ""), origin, actor=actor, also_in=also_in
            )
            also_in = None
        # 3. The events (in batches), the media files, then every other row, and the record.
        hs.presence.forget(user_id)  # (no idle timer writes its status back meanwhile)
        event_ids = store.erasure_event_ids(user_id, KEPT_STATE_TYPES)
        now = hs.now_ms()
        stripped = 0
        for i in range(0, len(event_ids), EVENTS_PER_TRANSACTION):
            batch = event_ids[i : i + EVENTS_PER_TRANSACTION]

            def strip(conn: Txn, batch: list[str] = batch) -> int:
                return len(strip_and_record_in(
                    store, conn, records.ACTION_COMPLIANCE_ERASE, batch, actor=actor, ts=now,
                    subject=user_id, target=user_id,
                ))  # fmt: skip

            stripped += await store.transaction(strip)
        counts["events_stripped"] = stripped
        media_ids = store.erasure_media_ids(user_id)
        counts["media_files"] = await asyncio.to_thread(self._remove_media_files, media_ids)

        def finish(conn: Txn) -> dict[str, int]:
            deleted = store.erase_user_rows_in(
                conn, user_id, now_ms=now, actor=actor, media_ids=media_ids
            )
            if deleted.get("cross_signing_keys"):
                # The user's contacts learn that the keys are gone.
                store.add_device_list_change_in(conn, user_id)
                hs.e2ee.queue_device_list_wake(user_id)
            store.mark_user_erased_in(conn, user_id, now, redact_federated)
            summary = {**counts, **{k: v for k, v in deleted.items() if v}}
            record_in(
                store, conn, records.ACTION_COMPLIANCE_ERASURE, actor=actor, ts=now,
                target=user_id, subject=user_id, origin=origin,
                reason=clip(reason, 1000) if reason is not None else None,
                details={"counts": summary, "redact_federated": redact_federated},
            )  # fmt: skip
            if also_in is not None:
                also_in(conn)
            return summary

        summary = await store.transaction(finish)
        self._drop_caches(user_id)
        # 4. Nothing of it left in the WAL, free pages or slack space.
        hygiene = await store.compact_database()
        log.info("erased %s: %s; disk hygiene %s", user_id, summary, hygiene)
        return {"counts": summary, "disk": hygiene}

    def _remove_media_files(self, media_ids: list[str]) -> int:
        """Unlink each media file and its thumbnails (a worker thread); how many files were
        there."""
        media = self.hs.media
        return sum(media.delete_files(media_id) for media_id in media_ids)

    def _drop_caches(self, user_id: str) -> None:
        """The in-memory copies of what the user wrote."""
        self.hs.store.drop_event_caches()
        self.hs.presence.forget(user_id)
        # Words of messages are the keys of the classifier's bucket cache.
        clear_classifier_caches()
