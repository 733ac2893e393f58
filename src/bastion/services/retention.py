"""The retention purge job (``hs.retention``; GDPR Art. 5(1)(e), storage limitation).

While the server runs and ``[retention] enabled`` is true, every ``purge_interval`` (the first
run a few seconds after start) the job:

1. for each room, takes its effective policy (:func:`bastion.core.retention.effective_policy`:
   the room's ``m.room.retention`` state, MSC1763, clamped into the server's allowed range,
   else the server's default) and **strips** every event that outlived it to the redacted form
   of its room version, with
   :func:`~bastion.services.compliance_records.strip_and_record_in` and a ``compliance.purge``
   ledger record per 200 events (``details``: ``cause`` ``"retention"``, the room, the
   policy). The room's **current state** events stay whole; so does everything under a
   **legal hold** (a held room is skipped; a held user's events stay), and events stripped
   already are left alone. Expired events kept for one of these reasons wait in a small table
   and are stripped on the first run after the reason ends (the state was replaced, the hold
   lifted).
2. deletes **local media** older than ``local_media_max_lifetime``: the file, its thumbnails
   and its row, with a ``compliance.media_purge`` record per 200 media IDs — unless its
   uploader is held, or an event of a held room points at it (an ``mxc://`` URI the server
   can read: an encrypted event's attachment is invisible to it and not protected by a room
   hold; hold the uploader to protect it).

3. deletes the **cached copies of remote media** (issue 11, :mod:`bastion.services.media`)
   not served for ``remote_media_max_lifetime``: another server's file, kept only to serve it
   again; a later request fetches it anew. Holds do not apply (it is not our users' data).

Work is done in pages of ``purge_batch_size`` events (or media), each page read, decided and
written in one write transaction (so a hold set or a state change between pages is seen), with
the event loop yielded between pages: the writer is never held for long and other writes
interleave. A run stops early when the server shuts down and resumes on the next start
(:mod:`bastion.storage.sqlite.retention` keeps each room's progress, so a run reads only what
is new or newly expired).

What Bastion does differently from Synapse, and why
--------------------------------------------------
Synapse's purge jobs *delete* expired events from its database. Deleting an event breaks the
room's graph, so Synapse never purges state events and always keeps a room's most recent
message whole, so that the room's forward extremities (the events new ones point at) survive.
Bastion does not delete: it **strips** an expired event's content to the redacted skeleton
(the redaction algorithm of the room version), keeping its ID, hashes, signatures, ``prev`` and
``auth`` events. The graph, the extremities and every signature stay valid, so nothing needs to
be kept whole for the room's sake: the last message expires like the others, and so do old
state events that are no longer current (a member's old display name and avatar, a former
topic); only the *current* state stays whole, because it is what the room is (its name, its
members, its rules) and clients and other servers need it. Clients see a consistent history:
``/messages`` and ``/sync`` return the skeletons in order, like redacted events, with no gaps.
Every stripped event is listed in a ``compliance.purge`` record, so ``bastion ledger verify``
tells purged history from forged history.

Two smaller differences: Synapse also stops serving an expired event to clients before its
purge job has run; Bastion serves it until the next run strips it (at most ``purge_interval``
later). And, as with Synapse, a purge is not pushed to clients: a client that already holds
an event keeps its copy (MSC1763 asks clients to apply the room's policy themselves), and a
stripped event gets no new stream position, so ``/sync`` does not send it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.core.retention import (
    Candidate,
    RetentionPolicy,
    cutoff,
    effective_policy,
    expired,
    media_expired,
)
from bastion.ledger.records import (
    ACTION_COMPLIANCE_LEGAL_HOLD,
    ACTION_COMPLIANCE_LEGAL_HOLD_LIFT,
    ACTION_COMPLIANCE_MEDIA_PURGE,
    ACTION_COMPLIANCE_PURGE,
)
from bastion.services.compliance_records import EVENTS_PER_RECORD, strip_and_record_in
from bastion.services.lifecycle import RUNNING, BackgroundService
from bastion.services.security_records import record_in

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Row, Txn

log = logging.getLogger(__name__)

__all__ = ["ACTOR", "PurgeReport", "RetentionService"]

#: The actor of the purge records.
ACTOR = "server"
#: The first run comes this many seconds after start (or after one interval, if shorter).
FIRST_RUN_DELAY = 5.0
#: The timestamp a room's progress starts from: before any event.
_START_TS = -(2**62)
_RETENTION_TYPE = "m.room.retention"


@dataclass
class PurgeReport:
    """What one run did."""

    rooms: int = 0
    events: int = 0
    media: int = 0
    complete: bool = True


def _candidate(row: Row) -> Candidate:
    return Candidate(
        event_id=row["event_id"], sender=row["sender"],
        origin_server_ts=int(row["origin_server_ts"]), current_state=bool(row["current_state"]),
        stripped=bool(row["stripped"]),
    )  # fmt: skip


class RetentionService(BackgroundService):
    """``hs.retention``: the purge job (see the module)."""

    background_name = "retention"

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        self.config = hs.config.retention_config
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        #: Runs completed since start, and the last one's report (status, tests).
        self.runs = 0
        self.last: PurgeReport | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        if self.config.enabled:
            interval = self.config.purge_interval / 1000
            self._arm(min(FIRST_RUN_DELAY, interval))

    def _arm(self, delay: float) -> None:
        self.cancel_timer(self._timer)
        self._timer = self.call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        self.spawn(self._scheduled())

    async def _scheduled(self) -> None:
        try:
            await self.run_once()
        except Exception:
            log.exception("the retention purge failed; it runs again after the interval")
        if self._running:
            self._arm(self.config.purge_interval / 1000)

    @property
    def _running(self) -> bool:
        return self._bg_state == RUNNING

    # -- legal holds --------------------------------------------------------------------------
    async def set_hold(
        self, kind: str, target: str, reason: str, *, admin: str, origin: str | None,
        also: Callable[[Txn], None] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Hold a user (``kind`` "user": their events and uploads) or a room (``kind``
        "room": its events and the media they point at): the purge job leaves them alone
        until the hold is lifted. A ``compliance.legal_hold`` record in the same transaction
        (and ``also``, the caller's ``admin.request`` record). Setting a hold again updates
        its reason. The hold as stored."""
        store, now = self.hs.store, self.hs.now_ms()

        def fn(conn: Txn) -> bool:
            created = store.set_legal_hold_in(conn, kind, target, reason, admin, now)
            record_in(
                store, conn, ACTION_COMPLIANCE_LEGAL_HOLD, actor=admin, ts=now, target=target,
                subject=target if kind == "user" else None, reason=reason, origin=origin,
                details={"kind": kind, "new": created},
            )  # fmt: skip
            if also is not None:
                also(conn)
            return created

        await store.transaction(fn)
        return {"kind": kind, "target": target, "reason": reason, "set_by": admin,
                "set_ts": now}  # fmt: skip

    async def lift_hold(
        self, kind: str, target: str, reason: str | None, *, admin: str, origin: str | None,
        also: Callable[[Txn], None] | None = None,
    ) -> bool:  # fmt: skip
        """Lift a hold (False, nothing written, when there is none), with a
        ``compliance.legal_hold_lift`` record. What it kept is purged by the next run, if
        its policy says so."""
        store, now = self.hs.store, self.hs.now_ms()

        def fn(conn: Txn) -> bool:
            if also is not None:
                also(conn)  # (the call is recorded even when there is nothing to lift)
            if not store.lift_legal_hold_in(conn, kind, target):
                return False
            record_in(
                store, conn, ACTION_COMPLIANCE_LEGAL_HOLD_LIFT, actor=admin, ts=now,
                target=target, subject=target if kind == "user" else None, reason=reason,
                origin=origin, details={"kind": kind},
            )  # fmt: skip
            return True

        return await store.transaction(fn)

    # -- one run ------------------------------------------------------------------------------
    async def run_once(self) -> PurgeReport:
        """One purge of every room and of local media, at the server's clock now."""
        async with self._lock:
            report = PurgeReport()
            now = self.hs.now_ms()
            for room_id in self.hs.store.retention_room_ids():
                if not self._running:
                    report.complete = False
                    break
                n = await self._purge_room(room_id, now)
                if n is not None:
                    report.rooms += 1
                    report.events += n
            if report.complete and self.config.local_media_max_lifetime is not None:
                report.media = await self._purge_media(now)
            remote_lifetime = self.config.remote_media_max_lifetime
            if report.complete and remote_lifetime is not None:
                report.media += await self.hs.media.purge_remote_cache(
                    now - remote_lifetime, self.config.purge_batch_size
                )
            if report.events:
                # The stripped events' rows left the search index with them; rewriting the
                # index removes their words from its older segments as well (as erasure does).
                await self.hs.store.optimize_search_index()
            self.runs += 1
            self.last = report
            if report.events or report.media:
                log.info("retention: %d event(s) stripped in %d room(s), %d media deleted",
                         report.events, report.rooms, report.media)  # fmt: skip
            return report

    def policy_of(self, room_id: str) -> RetentionPolicy:
        """The room's effective policy now."""
        state = self.hs.store.get_current_state_event(room_id, _RETENTION_TYPE, "")
        content = state.get("content") if isinstance(state, dict) else None
        return effective_policy(self.config, content)

    async def _purge_room(self, room_id: str, now: int) -> int | None:
        """Strip what expired in one room; the count (None: nothing applies to the room)."""
        store = self.hs.store
        policy = self.policy_of(room_id)
        limit = cutoff(policy, now)
        if limit is None:
            return None
        if any(h["kind"] == "room" for h in store.legal_holds_for(None, room_id)):
            return None  # held: nothing of it moves, its progress neither
        done_ts, done_pos = store.retention_progress(room_id) or (_START_TS, 0)
        upto = store.last_room_pos(room_id) or 0
        details: dict[str, Any] = {"cause": "retention", "room_id": room_id,
                                   "max_lifetime": policy.max_lifetime}  # fmt: skip
        if policy.min_lifetime is not None:
            details["min_lifetime"] = policy.min_lifetime
        batch = self.config.purge_batch_size
        total = 0

        def decide(conn: Txn, rows: Iterable[Row]) -> tuple[list[str], list[str], list[str]]:
            """(strip, keep waiting, drop from the waiting list) for a page of rows."""
            held_users, held_rooms = store.legal_hold_targets_in(conn)
            cands = [_candidate(r) for r in rows]
            strip = expired(policy, now, cands, room_held=room_id in held_rooms,
                            held_users=held_users)  # fmt: skip
            chosen = set(strip)
            wait = [c.event_id for c in cands
                    if c.event_id not in chosen and not c.stripped and c.origin_server_ts < limit]  # fmt: skip
            waiting = set(wait)
            drop = [c.event_id for c in cands if c.event_id not in waiting]
            return strip, wait, drop

        def apply(conn: Txn, strip: list[str]) -> int:
            if not strip:
                return 0
            done = strip_and_record_in(store, conn, ACTION_COMPLIANCE_PURGE, strip, actor=ACTOR,
                                       ts=now, target=room_id, details=details)  # fmt: skip
            return len(done)

        # 1. Events kept earlier (current state then, or a held sender).
        after_id = ""
        while self._running:

            def deferred_page(conn: Txn, after: str = after_id) -> tuple[int, str | None]:
                rows = store.retention_deferred_in(conn, room_id, after, batch)
                if not rows:
                    return 0, None
                strip, _wait, drop = decide(conn, rows)
                n = apply(conn, strip)
                store.undefer_retention_in(conn, drop)
                return n, rows[-1]["event_id"]

            n, next_id = await store.transaction(deferred_page)
            total += n
            await asyncio.sleep(0)
            if next_id is None:
                break
            after_id = next_id

        # 2. Events stored before the last run that have expired since.
        if limit > done_ts and done_pos > 0:
            key: tuple[int, int] | None = None
            while self._running:

                def aged_page(conn: Txn, after: Any = key) -> tuple[int, tuple[int, int] | None]:
                    rows = store.retention_aged_in(conn, room_id, done_ts, limit, done_pos,
                                                   after, batch)  # fmt: skip
                    if not rows:
                        return 0, None
                    strip, wait, _drop = decide(conn, rows)
                    store.defer_retention_in(conn, room_id, wait)
                    last = rows[-1]
                    nxt = (int(last["origin_server_ts"]), int(last["stream_pos"]))
                    return apply(conn, strip), (nxt if len(rows) == batch else None)

                n, key = await store.transaction(aged_page)
                total += n
                await asyncio.sleep(0)
                if key is None:
                    break

        # 3. Events stored since the last run (expired already: old history, or a first run).
        pos = done_pos
        while self._running and pos < upto:

            def new_page(conn: Txn, after: int = pos) -> tuple[int, int]:
                rows, last = store.retention_new_in(conn, room_id, after, upto, limit, batch)
                strip, wait, _drop = decide(conn, rows)
                store.defer_retention_in(conn, room_id, wait)
                return apply(conn, strip), last

            n, pos = await store.transaction(new_page)
            total += n
            await asyncio.sleep(0)

        if self._running:
            await store.transaction(
                lambda conn: store.set_retention_progress_in(conn, room_id, limit, upto)
            )
        return total

    async def _purge_media(self, now: int) -> int:
        """Delete local media past ``local_media_max_lifetime`` that no hold covers."""
        store, media = self.hs.store, self.hs.media
        lifetime = self.config.local_media_max_lifetime
        assert lifetime is not None
        held_rooms = [h["target"] for h in store.list_legal_holds() if h["kind"] == "room"]
        in_held_rooms = store.media_referenced_in_rooms(held_rooms, self.hs.server_name)
        batch = self.config.purge_batch_size
        total = 0
        key: tuple[int, str] | None = None
        while self._running:

            def page(conn: Txn, after: Any = key) -> tuple[int, tuple[int, str] | None]:
                held_users, _ = store.legal_hold_targets_in(conn)
                rows = store.local_media_created_before_in(conn, now - lifetime, after, batch)
                doomed = [
                    r["media_id"] for r in rows
                    if media_expired(lifetime, now, int(r["created_ts"]),
                                     held=r["user_id"] in held_users
                                     or r["media_id"] in in_held_rooms)
                ]  # fmt: skip
                if doomed:
                    store.delete_local_media_in(conn, doomed)
                    for i in range(0, len(doomed), EVENTS_PER_RECORD):
                        record_in(
                            store, conn, ACTION_COMPLIANCE_MEDIA_PURGE, actor=ACTOR, ts=now,
                            details={"cause": "retention", "max_lifetime": lifetime,
                                     "media": doomed[i : i + EVENTS_PER_RECORD]},
                        )  # fmt: skip
                    # The files go last, inside the transaction: should the commit fail, the
                    # rows stay and the next run deletes them again; no file outlives its row.
                    for media_id in doomed:
                        media.delete_files(media_id)
                last = rows[-1] if rows else None
                nxt = (int(last["created_ts"]), str(last["media_id"])) if last else None
                return len(doomed), (nxt if len(rows) == batch else None)

            n, key = await store.transaction(page)
            total += n
            await asyncio.sleep(0)
            if key is None:
                break
        return total
