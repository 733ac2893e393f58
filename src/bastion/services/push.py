"""Notifications (C-S API "Push Notifications": "Push Rules", "Receiving notifications";
``unread_notifications`` in /sync; ``GET /notifications``).

After each commit of room events (the room engine's after-commit hook: never under the room's
lock, never on the send path's await), the events are queued here and one background task
evaluates each against the push rules of every local member other than the sender
(:mod:`bastion.core.push_rules`; each user's rules compiled once and cached until they change),
then stores one notification row per (user, event) the rules notify for, with the per (user,
room, thread) unread counts, in one write per batch. Pushers (``hs.pushers``) are handed the
notifications to deliver. An event's thread is found by following its relations up to 3 hops
("Marking notifications as read"); a local user's own event marks their notifications before
it read in its thread, as a receipt would ("by sending an event").

/sync and read receipts first :meth:`Notifications.settle` the queue up to their stream
position, so the counts they read or clear include every event they know of.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from bastion.core.identifiers import server_name_of
from bastion.core.power_levels import user_power_level
from bastion.core.push_rules import CompiledRules, PushContext, compile_ruleset, summarise
from bastion.core.relations import MAIN_TIMELINE
from bastion.core.room_versions import get_room_version
from bastion.errors import invalid_param
from bastion.services.lifecycle import BackgroundService
from bastion.services.push_rules import effective_ruleset, empty_document
from bastion.services.relations import event_thread

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.services.room_engine import PersistedEvents
    from bastion.services.sync_api import SyncContext

log = logging.getLogger(__name__)

#: The thread ID of the main timeline (receipts' ``thread_id``).
MAIN = MAIN_TIMELINE
#: Compiled rulesets kept (least recently used go first).
RULES_CACHE_SIZE = 20_000
#: Members evaluated between two yields to the event loop (a huge room never stalls it).
YIELD_EVERY = 256
#: Notifications are kept this long (then pruned, room by room, every PRUNE_EVERY events).
KEEP_MS = 30 * 24 * 3600 * 1000
PRUNE_EVERY = 1000
#: Glob characters: a user ID holding one is always evaluated on its own.
_GLOB_CHARS = frozenset("*?")
#: The user the shared evaluation of default rules stands for: no event names it (an event that
#: does is evaluated member by member).
_GENERIC_USER = "@\x00generic:\x00"
_GENERIC_RULES = compile_ruleset(effective_ruleset(_GENERIC_USER, empty_document()))
#: Rows of one room read at most per ``GET /notifications`` request.
LIST_SCAN_ROWS = 20_000
#: Rows read at most per ``GET /notifications`` request over all rooms (but LIST_SCAN_MIN per
#: room at least).
LIST_SCAN_BUDGET = 100_000
LIST_SCAN_MIN = 200
#: How long /sync or a receipt waits for the queue at most (then it reads what is stored).
SETTLE_TIMEOUT_S = 2.0


def _named_users(event: Mapping[str, Any]) -> set[str]:
    """The user IDs (lower-cased) an event names where the default rules look for the user:
    ``content.m.mentions.user_ids`` and the state key."""
    named: set[str] = set()
    state_key = event.get("state_key")
    if isinstance(state_key, str):
        named.add(state_key.lower())
    content = event.get("content")
    mentions = content.get("m.mentions") if isinstance(content, Mapping) else None
    ids = mentions.get("user_ids") if isinstance(mentions, Mapping) else None
    if isinstance(ids, list):
        named.update(u.lower() for u in ids if isinstance(u, str))
    return named


class Notifications(BackgroundService):
    """``hs.notifications``."""

    background_name = "notifications"

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        self._rules: OrderedDict[str, tuple[CompiledRules, bool]] = OrderedDict()
        self._queue: list[PersistedEvents] = []
        #: The lowest stream position queued, and in the batch being evaluated.
        self._queued_low: int | None = None
        self._busy_low: int | None = None
        self._worker: asyncio.Task | None = None
        self._progress: asyncio.Future | None = None
        #: Notifying events per room since its last prune.
        self._since_prune: dict[str, int] = {}
        #: Events evaluated and member evaluations run (benchmarks, tests).
        self.evaluated_events = 0
        self.evaluations = 0

    # -- the rules cache ------------------------------------------------------------------------
    def rules_for(self, user_id: str) -> CompiledRules:
        return self._entry(user_id)[0]

    def _entry(self, user_id: str) -> tuple[CompiledRules, bool]:
        """The user's compiled rules, and whether they are the server-default rules unchanged
        (then an event that neither mentions the user nor has the user as its state key gets
        the same actions as for any other such user: see :meth:`_evaluate`)."""
        entry = self._rules.get(user_id)
        if entry is not None:
            self._rules.move_to_end(user_id)
            return entry
        is_default = self.hs.push_rules.is_default(user_id) and not _GLOB_CHARS.intersection(
            user_id
        )
        entry = (compile_ruleset(self.hs.push_rules.ruleset(user_id)), is_default)
        self._rules[user_id] = entry
        if len(self._rules) > RULES_CACHE_SIZE:
            self._rules.popitem(last=False)
        return entry

    def forget_rules(self, user_id: str) -> None:
        """The user's push rules changed: compile them again when next needed."""
        self._rules.pop(user_id, None)

    # -- the queue ------------------------------------------------------------------------------
    def events_persisted(self, batch: PersistedEvents) -> None:
        """After-commit hook (on the event loop): queue the events for evaluation."""
        if not batch.events or self.stopped:
            return
        low = min(e[3] for e in batch.events)
        self._queue.append(batch)
        if self._queued_low is None or low < self._queued_low:
            self._queued_low = low
        if self._worker is None or self._worker.done():
            self._worker = self.spawn(self._run())

    def pending_upto(self, pos: int) -> bool:
        """Whether events at or below ``pos`` are still waiting to be evaluated (queued, or in
        the batch being evaluated)."""
        return any(low is not None and low <= pos for low in (self._queued_low, self._busy_low))

    async def settle(self, pos: int) -> None:
        """Wait (a bounded time) until every event up to ``pos`` has been evaluated; events
        queued after it are not waited for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT_S
        while self.pending_upto(pos):
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("notifications: evaluation is behind by more than %ss",
                            SETTLE_TIMEOUT_S)  # fmt: skip
                return
            progress = self._progress
            if progress is None:
                progress = self._progress = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(progress), remaining)
            except TimeoutError:
                continue

    async def settle_current(self) -> None:
        """:meth:`settle` at the store's current position, read again after each wait (at most
        a few rounds under a steady stream of events), so that a reader taking the current
        position right after this returns, with no await in between, finds every count in."""
        store = self.hs.store
        for _ in range(3):
            if not self.pending_upto(store.current_pos):
                return
            await self.settle(store.current_pos)

    def _advance(self) -> None:
        """A batch is done: wake the waiters of :meth:`settle` to look again."""
        progress, self._progress = self._progress, None
        if progress is not None and not progress.done():
            progress.set_result(None)

    async def _run(self) -> None:
        while self._queue:
            batches, self._queue = self._queue, []
            self._busy_low, self._queued_low = self._queued_low, None
            try:
                await self._process([e for b in batches for e in b.events])
            except Exception:  # noqa: BLE001 - one bad batch must not stop notifications
                log.exception("notifications: evaluating a batch failed")
            finally:
                self._busy_low = None
                self._advance()

    # -- evaluation -----------------------------------------------------------------------------
    async def _process(self, events: list[tuple[dict, str, str, int]]) -> None:
        rows: list[tuple[str, int, str, str, str, int, bool, str]] = []
        notified: list[tuple[str, dict, str, str, int, tuple[Any, ...]]] = []
        # A local user's own event marks what they were notified of before it read, in its
        # thread (C-S API "Marking notifications as read": "by sending an event").
        reads: list[tuple[str, str, int, str]] = []
        server = self.hs.server_name
        for event, event_id, room_id, pos in events:
            thread: str | None = None
            sender = event.get("sender")
            if isinstance(sender, str) and server_name_of(sender) == server:
                thread = self._thread_of(event, event_id, room_id)
                reads.append((sender, room_id, pos, thread))
            for user_id, actions in await self._evaluate(event, event_id, room_id):
                notify, highlight, _ = summarise(actions)
                if not notify:
                    continue
                if thread is None:
                    thread = self._thread_of(event, event_id, room_id)
                ts = event.get("origin_server_ts")
                rows.append((user_id, pos, room_id, thread, event_id,
                             ts if type(ts) is int else 0, highlight,
                             orjson.dumps(list(actions)).decode()))  # fmt: skip
                notified.append((user_id, event, event_id, room_id, pos, actions))
        store = self.hs.store
        if reads:
            # Only where the sender has unread notifications (a read, no write, for the rest).
            counted = {(r[0], r[2], r[3]) for r in rows}
            reads = [
                r for r in reads
                if (r[0], r[1], r[3]) in counted
                or any(store.get_push_counts(r[0], r[1]).get(r[3], (0, 0)))
            ]  # fmt: skip
        if not rows and not reads:
            return
        # Every PRUNE_EVERY notifying events of a room, its notifications older than
        # KEEP_MS go (the list and the counts' recounts need no more).
        prune = []
        for room_id in {r[2] for r in rows}:
            n = self._since_prune.get(room_id, 0) + 1
            if n >= PRUNE_EVERY:
                prune.append(room_id)
                n = 0
            self._since_prune[room_id] = n
        before_ts = self.hs.now_ms() - KEEP_MS if prune else 0

        def write(conn: Any) -> None:
            if rows:
                store.add_notifications_in(conn, rows)
            # after the rows: those of later events of the batch stay unread
            for user_id, room_id, pos, thread in reads:
                store.mark_notifications_read_in(conn, user_id, room_id, pos, thread)
            for room_id in prune:
                store.prune_notifications_in(conn, room_id, before_ts)

        await store.transaction(write)
        if notified:
            self.hs.pushers.notified(notified)

    def _thread_of(self, event: dict, event_id: str, room_id: str) -> str:
        """The thread an event is in for notification counts and receipts (C-S API "Push
        Notifications", "Marking notifications as read": relations followed up to 3 hops)."""
        root, _ = event_thread(self.hs.store, room_id, event_id, event)
        return MAIN if root is None else root

    async def _evaluate(
        self, event: dict, event_id: str, room_id: str
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """``(user_id, actions)`` for each local member (other than the sender) with actions."""
        hs = self.hs
        sender = event.get("sender")
        server = hs.server_name
        members = hs.store.room_members_cached(room_id)
        joined = members.joined
        users = [u for u in joined if u != sender and server_name_of(u) == server]
        state_key = event.get("state_key")
        if (
            event.get("type") == "m.room.member"
            and isinstance(state_key, str)
            and state_key != sender
            and state_key not in joined
            and server_name_of(state_key) == server
        ):
            users.append(state_key)  # an invite (or other membership) of a local user
        if not users:
            return []
        engine = hs.rooms.engine
        head = engine.head(room_id)
        version = head.room_version if head is not None else "10"
        create = engine.current_state_event(room_id, "m.room.create")
        pl_event = engine.current_state_event(room_id, "m.room.power_levels")
        pl = pl_event.get("content") if isinstance(pl_event, Mapping) else None
        pl = pl if isinstance(pl, Mapping) else None
        try:
            power = user_power_level(sender, create, pl, get_room_version(version))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - an unknown room version or odd sender
            power = 0
        ctx = PushContext(member_count=len(joined), sender_power=power, power_levels=pl,
                          room_version=version)  # fmt: skip
        ev = {**event, "event_id": event_id, "room_id": room_id}
        # Users with the default rules share one evaluation, unless the event names them (a
        # mention, or as its state key: the only places the default rules look for the user).
        names = _named_users(ev)
        # (an event naming the stand-in is evaluated for every member on their own)
        named = None if _GENERIC_USER.lower() in names else names
        shared: tuple[Any, ...] | None = None
        out: list[tuple[str, tuple[Any, ...]]] = []
        self.evaluated_events += 1
        for i, user_id in enumerate(users):
            if i and i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            rules, is_default = self._entry(user_id)
            if is_default and named is not None and user_id.lower() not in named:
                if shared is None:
                    ctx.display_name = None
                    shared = _GENERIC_RULES.evaluate(ev, ctx)
                    self.evaluations += 1
                actions = shared
            else:
                if rules.needs_display_name:
                    member = engine.current_state_event(room_id, "m.room.member", user_id)
                    content = member.get("content") if isinstance(member, Mapping) else None
                    name = content.get("displayname") if isinstance(content, Mapping) else None
                    ctx.display_name = name if isinstance(name, str) else None
                else:
                    ctx.display_name = None
                actions = rules.evaluate(ev, ctx)
                self.evaluations += 1
            if actions:
                out.append((user_id, actions))
        return out

    # -- reading --------------------------------------------------------------------------------
    def contribute_counts(self, ctx: SyncContext, room_id: str, room: dict) -> None:
        """``unread_notifications`` (and, when the timeline filter asks with
        ``unread_thread_notifications``, ``unread_thread_notifications``) of a joined room in
        /sync (C-S API "Receiving notifications", "Threading": "Notification counts")."""
        counts = self.hs.store.get_push_counts(ctx.requester.user_id, room_id)
        timeline = ctx.filter.get("room", {}).get("timeline", {})
        per_thread = bool(timeline.get("unread_thread_notifications"))
        if per_thread:
            n, h = counts.get(MAIN, (0, 0))
            threads = {
                t: {"notification_count": c[0], "highlight_count": c[1]}
                for t, c in counts.items()
                if t != MAIN and (c[0] or c[1])
            }
            if threads:
                room["unread_thread_notifications"] = threads
        else:
            n = sum(c[0] for c in counts.values())
            h = sum(c[1] for c in counts.values())
        room["unread_notifications"] = {"highlight_count": h, "notification_count": n}

    def list_notifications(
        self, requester: Any, from_token: str | None, limit: int, only_highlight: bool
    ) -> dict:
        """``GET /notifications`` (C-S API "Listing Notifications"): newest first over the
        user's rooms; ``from`` is the ``next_token`` of the previous page (a stream position).
        Each room is read newest first, at most ``LIST_SCAN_ROWS`` rows of it per request (its
        rows are every member's): a page may then hold fewer than ``limit`` notifications but
        its ``next_token`` goes on from where the reading stopped."""
        before = None
        if from_token is not None and from_token != "":
            if not from_token.isdigit() or len(from_token) > 15:
                raise invalid_param("'from' is not a token this server gave")
            before = int(from_token)
        user_id = requester.user_id
        store = self.hs.store
        candidates: list[Any] = []
        floor = 0  # nothing above it was missed, in any room
        rooms = list(store.get_local_memberships(user_id))
        # The rows looked at over all rooms stay within LIST_SCAN_BUDGET (at least
        # LIST_SCAN_MIN per room): a user in many rooms gets shorter pages, never a long look.
        scan = max(LIST_SCAN_MIN, min(LIST_SCAN_ROWS, LIST_SCAN_BUDGET // max(1, len(rooms))))
        for room_id in rooms:
            rows, room_floor = store.get_room_notifications(
                user_id, room_id, before, limit, scan, only_highlight
            )
            candidates.extend(rows)
            if room_floor is not None:
                floor = max(floor, room_floor)
        candidates.sort(key=lambda r: r["stream_pos"], reverse=True)
        page = [r for r in candidates if r["stream_pos"] >= floor][:limit]
        next_token = None
        if len(page) == limit:
            next_token = page[-1]["stream_pos"]
        elif floor > 0:
            next_token = floor
        events = store.get_event_rows([r["event_id"] for r in page if r["event_id"]])
        fmt = self.hs.rooms.client_event
        read_positions: dict[str, dict[str, int]] = {}
        out = []
        for r in page:
            ev = events.get(r["event_id"]) if r["event_id"] else None
            if ev is None:
                continue  # purged (retention) or erased since
            reads = read_positions.get(r["room_id"])
            if reads is None:
                reads = read_positions[r["room_id"]] = store.get_read_positions(
                    user_id, r["room_id"]
                )
            out.append({
                "actions": orjson.loads(r["actions"]),
                "event": fmt(ev, requester),
                "read": r["stream_pos"] <= reads.get(r["thread_id"], 0),
                "room_id": r["room_id"],
                "ts": r["ts"],
            })  # fmt: skip
        body: dict[str, Any] = {"notifications": out}
        if next_token is not None:
            body["next_token"] = str(next_token)
        return body
