"""The guard (``hs.guard``, issue 9): the one entry point the rest of the server calls.

It builds the parts (login defence, rate limits, detectors, room cooling, the classifier, policy
lists, alerts) and runs the guard's decision path (DESIGN.md "Guard decision": signals ->
policy -> action -> alert + ledger record):

* :meth:`GuardService.before_local_event` — before a local user's event is built (message,
  state, join, invite, knock, room creation): rate limits (429 ``M_LIMIT_EXCEEDED``), then the
  detectors, the classifier, the policy lists and a cooling room's join refusal, combined
  (:func:`~bastion.guard.signals.combine`) and carried out: block -> 403 ``M_FORBIDDEN`` with
  the signals' reason (C-S API "Standard error response"); hold -> the would-be event is kept
  with the decision, 403 ``M_FORBIDDEN`` saying it waits for a moderator, whose approval sends
  it (:mod:`bastion.guard.decisions`); warn -> recorded and alerted, the event goes through;
  shadow mode (``guard.mode = "shadow"``) -> recorded with status ``shadow``, nothing enforced.
* :meth:`GuardService.check_remote_event` — a federated event after its signature, hash and
  auth checks (S-S API "Checks performed on receipt of a PDU"), decided under the room's lock
  with checks 5-6: a blocked or held event is soft-failed (S-S API "Soft failure": stored, not
  served, never a forward extremity) and recorded.
* :meth:`GuardService.check_remote_membership` — make_join / send_join / make_knock /
  send_knock / invite from another server (S-S API "Joining Rooms", "Inviting to a room"):
  refused (403) for a cooling room or a user/server on a policy list.
* :meth:`GuardService.record` / :meth:`GuardService.record_in` — a decision: its
  ``guard_decisions`` row and its ``guard.decision`` ledger record in one transaction, then an
  alert for warn/hold/block. Every part records its decisions through these.

Cost (issue 9: p99 <= 5 ms per decision, < 10 % added send cost): the allow path reads only the
room engine's cached head, the store's cached event rows and a bounded cache
of account creation times; it writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bastion.core.identifiers import server_name_of
from bastion.errors import MatrixError, forbidden
from bastion.guard.alerts import Alerts
from bastion.guard.behaviour import Detectors
from bastion.guard.config import GuardConfig
from bastion.guard.content import ContentClassifier
from bastion.guard.decisions import BYPASS, GuardActions
from bastion.guard.login_defence import LoginDefence
from bastion.guard.policy_service import PolicyLists
from bastion.guard.rate_limiter import RateLimits
from bastion.guard.room_cooling import RoomCooling
from bastion.guard.room_settings import parse_room_settings, runtime_view
from bastion.guard.signals import Decision, EventContext, Signal, Verdict, combine
from bastion.ledger import records
from bastion.services.security_records import clip, record_in

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

log = logging.getLogger(__name__)

__all__ = ["GuardService", "RemoteEventCheck"]

#: Account creation times kept in memory (they never change).
CREATED_CACHE_SIZE = 50_000
#: Rooms whose guard settings are kept in memory.
ROOM_SETTINGS_CACHE_SIZE = 10_000
#: The longest reason kept in a ledger record.
MAX_RECORD_REASON = 1000
#: The signals listed in a ledger record (their sources, severities and scores).
MAX_RECORD_SIGNALS = 20
#: The actor of the guard's own records.
GUARD_ACTOR = "server"
#: A refusal of the same membership from the same server is recorded once in this time.
REFUSAL_RECORD_MS = 10 * 60 * 1000
#: Remote refusals remembered for that, at most.
MAX_RECENT_REFUSALS = 10_000
#: Alerts waiting for their decision's commit, at most.
MAX_PENDING_ALERTS = 10_000
#: Outcomes that are alerted when recorded.
ALERTED = ("warn", "hold", "block")

MEMBERSHIPS_CHECKED = ("join", "invite", "knock")


def _per_mille(score: float) -> int:
    """A 0..1 score as an integer (canonical JSON, the ledger's encoding, has no floats)."""
    return max(0, min(1000, round(score * 1000)))


def decision_record_details(decision_id: int, decision: Decision) -> dict[str, Any]:
    """The ``details`` of a ``guard.decision`` ledger record (small, integers only)."""
    details: dict[str, Any] = {
        "decision_id": decision_id,
        "source": clip(decision.source, 100),
        "outcome": decision.outcome,
        "status": decision.status,
        "score_per_mille": _per_mille(decision.score),
        "actions": list(decision.actions),
        "signals": [
            {"source": clip(s.source, 100), "severity": s.severity,
             "score_per_mille": _per_mille(s.score)}
            for s in decision.signals[:MAX_RECORD_SIGNALS]
        ],
    }  # fmt: skip
    if decision.room_id is not None:
        details["room_id"] = clip(decision.room_id)
    if decision.event_id is not None:
        details["event_id"] = clip(decision.event_id)
    return details


class RemoteEventCheck:
    """The guard's check of one federated event, run by the room engine under the room's lock
    after checks 5-6 passed (:meth:`__call__`, synchronous), then recorded after the write
    (:meth:`finish`).

    ``pushed``: the origin pushed the event in its ``/send`` transaction (S-S API
    "Transactions"). Only pushed events count against the origin's event rate limits
    (``federation_event``, ``federation_event_room``): events this server fetched itself
    (``get_missing_events``, ``/state_ids`` and ``/event``, S-S API "Backfilling and retrieving
    missing events") are catch-up it asked for — after a netsplit, a busy room's history would
    otherwise be soft-failed. The detectors and policy lists see both."""

    def __init__(self, guard: GuardService, origin: str, pdu: Mapping[str, Any],
                 event_id: str, *, pushed: bool = True) -> None:  # fmt: skip
        self.guard = guard
        self.origin = origin
        self.pdu = pdu
        self.event_id = event_id
        self.pushed = pushed
        self.verdict: Verdict | None = None
        self.ctx: EventContext | None = None

    def __call__(self, current: Mapping[tuple[str, str], str]) -> str | None:
        """The reason to soft-fail the event, or None to accept it."""
        guard = self.guard
        ctx = guard.remote_context(self.pdu, self.event_id, self.origin, current)
        self.ctx = ctx
        if self.pushed and not guard.limits.remote_event_allowed(ctx):
            # The rate-limit part records when a throttle starts; not every refused event.
            return f"{self.origin} is sending too many events"
        if not guard.enabled:
            return None  # rate limits only (they have their own switch)
        try:
            sigs = guard.content_signals(ctx)
        except MatrixError as e:
            # A part's refusal (a throttle's 429): soft-failed, recorded by that part when
            # its throttle starts.
            return e.message
        verdict = combine(sigs, enforce=guard.config.enforce)
        self.verdict = verdict
        if verdict.enforced and verdict.outcome in ("hold", "block"):
            return verdict.reason or "refused by the server's guard"
        return None

    async def finish(self) -> None:
        """Record the verdict (when there is one to record), after the event was stored."""
        verdict, ctx = self.verdict, self.ctx
        if verdict is None or ctx is None or not verdict.recorded:
            return
        if not verdict.enforced:
            status = "shadow"
        elif verdict.outcome == "hold":
            status = "open"  # soft-failed; a moderator may look at it
        else:
            status = "done"
        decision = Decision.of(verdict, ctx, status=status, held=None)
        decision_id = await self.guard.record(decision)
        if verdict.enforced and verdict.actions:
            await self.guard.actions.carry_out(decision_id, decision, ctx)


class GuardService:
    """``hs.guard``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config: GuardConfig = hs.config.guard_config
        #: false (benchmarks): detectors, classifier, policy lists and actions are off; every
        #: hook returns at once (rate limits keep their own switch).
        self.enabled: bool = self.config.enabled
        #: (sender, *txn) of the held or rejected local events (loaded on first use, then kept
        #: as holds are made): a retry is looked up only when it is one of them.
        self._held_txns: set[tuple[str, ...]] | None = None
        #: (sender, *txn) of the local events whose hold is being written, and the answer to
        #: give once it is (None: it was not written).
        self._holding: dict[tuple[str, ...], asyncio.Future[str | None]] = {}
        self.alerts = Alerts(hs)
        self.limits = RateLimits(hs)
        self.login = LoginDefence(hs)
        self.detectors = Detectors(hs)
        self.cooling = RoomCooling(hs)
        self.classifier = ContentClassifier(hs)
        self.policy = PolicyLists(hs)
        #: Carrying out actions and reviews (redact, quarantine, suspend, ..., approve).
        self.actions = GuardActions(hs, self)
        self._created: OrderedDict[str, int | None] = OrderedDict()
        self._room_settings: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._pending_alerts: dict[int, tuple[str, str, dict[str, Any]]] = {}
        self._recent_refusals: dict[tuple[str, ...], tuple[int, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------------------------
    # Building what a check sees
    # ------------------------------------------------------------------------------------------
    def _created_ms(self, user_id: str) -> int | None:
        cache = self._created
        if user_id in cache:
            return cache[user_id]
        row = self.hs.store.get_user(user_id)
        created = int(row["created_ts"]) if row is not None and row["created_ts"] else None
        cache[user_id] = created
        if len(cache) > CREATED_CACHE_SIZE:
            cache.popitem(last=False)
        return created

    def _joined_ms(self, state: Mapping[tuple[str, str], str], user_id: str) -> int | None:
        eid = state.get(("m.room.member", user_id))
        if eid is None:
            return None
        row = self.hs.store.get_event_rows_cached([eid]).get(eid)
        if row is None:
            return None
        ev = row.event
        if ev.get("content", {}).get("membership") != "join":
            return None
        ts = ev.get("origin_server_ts")
        return ts if type(ts) is int else None

    def local_context(
        self, sender: str, room_id: str, etype: str, content: Mapping[str, Any],
        state_key: str | None, *, ip: str | None = None, now_ms: int | None = None,
    ) -> EventContext:  # fmt: skip
        """What the guard sees of a local user's event (cheap: cached reads only)."""
        head = self.hs.rooms.engine.head(room_id)
        state = head.state if head is not None else {}
        return EventContext(
            sender=sender, room_id=room_id, etype=etype, content=content, state_key=state_key,
            now_ms=self.hs.now_ms() if now_ms is None else now_ms, local=True,
            origin=self.hs.server_name,
            encrypted_room=("m.room.encryption", "") in state,
            sender_created_ms=self._created_ms(sender),
            sender_joined_ms=self._joined_ms(state, sender),
            ip=ip,
        )  # fmt: skip

    def remote_context(
        self, pdu: Mapping[str, Any], event_id: str | None, origin: str,
        current: Mapping[tuple[str, str], str] | None,
    ) -> EventContext:  # fmt: skip
        """What the guard sees of a federated event (``current``: the room's current state)."""
        state = current or {}
        content = pdu.get("content")
        sender = pdu.get("sender")
        state_key = pdu.get("state_key")
        room_id = pdu.get("room_id")
        etype = pdu.get("type")
        return EventContext(
            sender=sender if isinstance(sender, str) else "",
            room_id=room_id if isinstance(room_id, str) else "",
            etype=etype if isinstance(etype, str) else "",
            content=content if isinstance(content, dict) else {},
            state_key=state_key if isinstance(state_key, str) else None,
            now_ms=self.hs.now_ms(), local=False, origin=origin,
            encrypted_room=("m.room.encryption", "") in state,
            sender_joined_ms=self._joined_ms(state, sender) if isinstance(sender, str) else None,
            event_id=event_id,
        )  # fmt: skip

    @staticmethod
    def _part_signals(part: Callable[[EventContext], list[Signal]],
                      ctx: EventContext) -> list[Signal]:  # fmt: skip
        """One part's signals; a part that fails is logged and heard as saying nothing (one
        broken detector must not stop every message of the server). A Matrix error is the
        part's answer, not a failure: the detectors' flood throttle is a 429 (local events)."""
        try:
            return list(part(ctx))
        except MatrixError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("guard part %s failed on an event in %s", part, ctx.room_id)
            return []

    def content_signals(self, ctx: EventContext) -> list[Signal]:
        """What the detectors, the classifier, the policy lists and a cooling room say."""
        sigs = self._part_signals(self.detectors.signals, ctx)
        sigs += self._part_signals(self.classifier.signals, ctx)
        sigs += self._part_signals(self.policy.signals, ctx)
        if ctx.membership == "join" and ctx.state_key == ctx.sender:
            reason = self.cooling.refuses_join(ctx.room_id, ctx.sender, ctx.now_ms)
            if reason is not None:
                sigs.append(Signal("detector.join_wave", "block", 1.0, reason,
                                   {"cooling": True}))  # fmt: skip
        return sigs

    # ------------------------------------------------------------------------------------------
    # Local events
    # ------------------------------------------------------------------------------------------
    async def before_local_event(
        self, sender: str, room_id: str, etype: str, content: Mapping[str, Any],
        state_key: str | None = None, *, ip: str | None = None,
        txn: tuple[str, str, str, str] | None = None,
    ) -> None:  # fmt: skip
        """Before a local user's event is built: 429 when a rate limit refuses it, 403 when the
        guard blocks or holds it (C-S API "Rate limiting", "Standard error response"). An
        approved held event (being sent by its moderator's approval) is not asked about again."""
        if BYPASS.get():
            return
        if not self.enabled:
            # Rate limits have their own switch (guard.rate_limits.enabled).
            self.limits.require_local_event(
                EventContext(
                    sender,
                    room_id,
                    etype,
                    content,
                    state_key,
                    self.hs.now_ms(),
                    True,
                    self.hs.server_name,
                    ip=ip,
                )  # fmt: skip
            )
            return
        if txn is not None:
            self._refuse_held_retry(sender, txn)
            pending = self._holding.get((sender, *txn))
            if pending is not None:
                # The same transaction is being held right now (a retry that came before the
                # first attempt's decision was written): the first attempt's answer.
                answer = await asyncio.shield(pending)
                if answer is not None:
                    raise forbidden(answer)
        ctx = self.local_context(sender, room_id, etype, content, state_key, ip=ip)
        self.limits.require_local_event(ctx)
        verdict = combine(self.content_signals(ctx), enforce=self.config.enforce)
        if not verdict.recorded:
            return
        await self.carry_out_local(verdict, ctx, txn=txn)

    def _refuse_held_retry(self, sender: str, txn: tuple[str, str, str, str]) -> None:
        """A client's retry of a held event (the same sender and transaction ID, C-S API
        "Transaction identifiers") gets the first attempt's answer, 403 naming the same
        decision, without a second decision (nor rate limits or detectors counting it again).
        A rejected one stays refused."""
        if self._held_txns is None:
            self._held_txns = self.hs.store.held_guard_txn_keys()
        if (sender, *txn) not in self._held_txns:
            return  # (every send checks this: no database read unless the sender has a hold)
        held = self.hs.store.held_guard_decision_for_txn(sender, txn)
        if held is None:
            return
        if held["status"] == "held":
            raise forbidden(
                f"this event is held for review by a moderator (decision {held['id']}): "
                f"{held['reason']}"
            )
        raise forbidden(
            f"this event was rejected by a moderator (decision {held['id']}): {held['reason']}"
        )

    async def carry_out_local(
        self, verdict: Verdict, ctx: EventContext, *,
        txn: tuple[str, str, str, str] | None = None,
    ) -> None:  # fmt: skip
        """Record a verdict about a local event and carry it out (raise 403 to refuse)."""
        reason = verdict.reason or "refused by the server's guard"
        if not verdict.enforced:
            await self.record(Decision.of(verdict, ctx, status="shadow", held=None))
            return
        if verdict.outcome == "hold":
            held = {
                "room_id": ctx.room_id, "type": ctx.etype, "state_key": ctx.state_key,
                "content": dict(ctx.content),
                "txn": list(txn) if txn is not None else None,
            }  # fmt: skip
            decision = Decision.of(verdict, ctx, status="held", held=held)
            key = (ctx.sender, *txn) if txn is not None else None
            pending: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            if key is not None:
                # Taken before the first await: a retry of this transaction arriving while the
                # decision is written waits for its answer instead of making a second one.
                self._holding[key] = pending
            try:
                decision_id = await self.record(decision)
            except BaseException:
                pending.set_result(None)  # (a waiting retry is judged on its own)
                if key is not None:
                    self._holding.pop(key, None)
                raise
            answer = (
                f"this event is held for review by a moderator (decision {decision_id}): {reason}"
            )
            pending.set_result(answer)
            if key is not None:
                self._holding.pop(key, None)
                if self._held_txns is not None:
                    self._held_txns.add(key)
            if verdict.actions:
                await self.actions.carry_out(decision_id, decision, ctx)
            raise forbidden(answer)
        decision = Decision.of(verdict, ctx, status="done", held=None)
        decision_id = await self.record(decision)
        if verdict.actions:
            await self.actions.carry_out(decision_id, decision, ctx)
        if verdict.outcome == "block":
            raise forbidden(f"refused by the server's guard: {reason}")

    async def before_room_create(
        self, creator: str, invites: list[str], *, ip: str | None = None
    ) -> None:
        """createRoom (C-S API "Creation"): the ``room_create`` rate limit (429), then each of
        the ``invite`` list as an invite (rate limits, detectors, policy lists): a createRoom
        that invites cannot get around the invite checks. An invite the guard would hold
        refuses the createRoom (there is no room yet to hold it for)."""
        self.limits.require("room_create", user=creator, ip=ip)
        if not self.enabled or not invites:
            return
        now = self.hs.now_ms()
        created = self._created_ms(creator)
        for invitee in invites:
            ctx = EventContext(
                sender=creator, room_id="", etype="m.room.member",
                content={"membership": "invite"}, state_key=invitee, now_ms=now, local=True,
                origin=self.hs.server_name, sender_created_ms=created, ip=ip,
            )  # fmt: skip
            self.limits.require_local_event(ctx)
            verdict = combine(self.content_signals(ctx), enforce=self.config.enforce)
            if not verdict.recorded:
                continue
            if not verdict.enforced:
                await self.record(Decision.of(verdict, ctx, status="shadow", held=None))
                continue
            decision = Decision.of(verdict, ctx, status="done", held=None)
            decision_id = await self.record(decision)
            if verdict.actions:
                await self.actions.carry_out(decision_id, decision, ctx)
            if verdict.outcome in ("hold", "block"):
                raise forbidden(f"refused by the server's guard: inviting {invitee}: "
                                f"{verdict.reason}")  # fmt: skip

    # ------------------------------------------------------------------------------------------
    # Federated events and memberships
    # ------------------------------------------------------------------------------------------
    def check_remote_event(
        self, origin: str, pdu: Mapping[str, Any], event_id: str, *, pushed: bool = True
    ) -> RemoteEventCheck:
        """The check a federated event's append runs under the room's lock (with the guard
        off, ``guard.enabled = false``, only the rate limits). ``pushed``: the origin sent it
        in its ``/send`` transaction (rate-limited); False for events this server fetched
        (:class:`RemoteEventCheck`)."""
        return RemoteEventCheck(self, origin, pdu, event_id, pushed=pushed)

    async def check_remote_membership(
        self, origin: str, room_id: str, sender: str, membership: str, *,
        state_key: str | None = None, content: Mapping[str, Any] | None = None,
        event_id: str | None = None,
    ) -> None:  # fmt: skip
        """make_join / send_join / make_knock / send_knock / invite from another server (S-S
        API "Joining Rooms", "Knocking upon a room", "Inviting to a room"): 403 ``M_FORBIDDEN``
        when the room cools (joins), or a policy list names the user, the server or the room;
        an invite is also seen by the detectors (invite fan-out). Recorded when refused.

        A join or knock is not shown to the detectors here: the event a send_join / send_knock
        carries is stored through the PDU pipeline, whose check (:class:`RemoteEventCheck`)
        shows it to them — once, so it counts once towards a join wave (make_join carries
        no event)."""
        if not self.enabled or BYPASS.get():
            return
        head = self.hs.rooms.engine.head(room_id)
        if head is None and membership != "invite":
            return  # not a room of ours: the handler answers 404
        target = sender if state_key is None else state_key
        ctx = self.remote_context(
            {"type": "m.room.member", "room_id": room_id, "sender": sender,
             "state_key": target, "content": {**(content or {}), "membership": membership}},
            event_id, origin, head.state if head is not None else None,
        )  # fmt: skip
        sigs = self._part_signals(self.policy.signals, ctx)
        if membership == "invite":
            sigs += self._part_signals(self.detectors.signals, ctx)
        if membership == "join":
            reason = self.cooling.refuses_join(room_id, sender, ctx.now_ms)
            if reason is not None:
                sigs.append(Signal("detector.join_wave", "block", 1.0, reason,
                                   {"cooling": True}))  # fmt: skip
        verdict = combine(sigs, enforce=self.config.enforce)
        if not verdict.recorded:
            return
        # Another server may ask again and again: the same refusal is recorded once per
        # REFUSAL_RECORD_MS (each request is still refused).
        key = (origin, room_id, sender, target, membership, verdict.outcome,
               verdict.signals[0].source if verdict.signals else "")  # fmt: skip
        recent = self._recent_refusals.get(key)
        if recent is not None and ctx.now_ms - recent[0] < REFUSAL_RECORD_MS:
            decision_id = recent[1]
        else:
            status = "done" if verdict.enforced else "shadow"
            decision_id = await self.record(Decision.of(verdict, ctx, status=status, held=None))
            self._recent_refusals[key] = (ctx.now_ms, decision_id)
            if len(self._recent_refusals) > MAX_RECENT_REFUSALS:
                self._recent_refusals.pop(next(iter(self._recent_refusals)))
        if verdict.enforced and verdict.outcome in ("hold", "block"):
            raise forbidden(f"refused by the server's guard (decision {decision_id}): "
                            f"{verdict.reason}")  # fmt: skip

    # ------------------------------------------------------------------------------------------
    # Recording
    # ------------------------------------------------------------------------------------------
    def record_in(self, conn: Txn, decision: Decision) -> int:
        """Write ``decision`` inside the caller's write function: its ``guard_decisions`` row
        and its ``guard.decision`` ledger record; its ID. Warn, hold and block decisions are
        alerted once the write commits."""
        store = self.hs.store
        decision_id = store.insert_guard_decision_in(
            conn, ts=decision.ts, source=decision.source, outcome=decision.outcome,
            status=decision.status, reason=decision.reason, subject=decision.subject,
            room_id=decision.room_id, event_id=decision.event_id, origin=decision.origin,
            score=decision.score, actions=decision.actions, signals=decision.signals_json(),
            held=decision.held, details=decision.details,
        )  # fmt: skip
        subject = decision.subject
        idx = record_in(
            store, conn, records.ACTION_GUARD_DECISION, actor=GUARD_ACTOR, ts=decision.ts,
            target=clip(decision.event_id or decision.room_id or subject or decision.source),
            subject=clip(subject) if subject is not None and subject.startswith("@") else None,
            reason=clip(decision.reason, MAX_RECORD_REASON),
            origin=clip(decision.origin) if decision.origin is not None else None,
            details=decision_record_details(decision_id, decision),
        )  # fmt: skip
        store.set_guard_decision_ledger_idx_in(conn, decision_id, idx)
        if decision.outcome in ALERTED:
            self._pending_alerts[decision_id] = (
                f"guard.{decision.outcome}",
                f"{decision.outcome} ({decision.source}, {decision.status}): {decision.reason}",
                {"decision_id": decision_id, "ts": decision.ts, "source": decision.source,
                 "outcome": decision.outcome, "status": decision.status,
                 "subject": subject, "room_id": decision.room_id,
                 "event_id": decision.event_id, "origin": decision.origin,
                 "actions": list(decision.actions)},
            )  # fmt: skip
            if len(self._pending_alerts) > MAX_PENDING_ALERTS:  # no loop drains them (CLI)
                self._pending_alerts.pop(next(iter(self._pending_alerts)))
            store.run_after_commit(self._alert_committed, decision_id)
        return decision_id

    async def record(self, decision: Decision) -> int:
        """Write ``decision`` in a transaction of its own (:meth:`record_in`); its ID."""
        return await self.hs.store.transaction(lambda conn: self.record_in(conn, decision))

    def _alert_committed(self, decision_id: int) -> None:
        """On the event loop, once a recorded decision committed: its alert and metric."""
        pending = self._pending_alerts.pop(decision_id, None)
        if pending is None:
            return
        kind, summary, details = pending
        # The store runs after-commit calls of a batch even for a write of it that failed (and
        # was rolled back on its own): alert only a decision that is really there.
        row = self.hs.store.get_guard_decision(decision_id)
        if row is None or (row["ts"], row["source"]) != (details["ts"], details["source"]):
            return
        self.alerts.count(
            "bastion_guard_decisions_total",
            {"source": details["source"], "outcome": details["outcome"],
             "status": details["status"]},
        )  # fmt: skip
        self.spawn(self.alerts.alert(kind, summary, details))

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background (kept referenced until done; failures logged)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("guard background task failed", exc_info=task.exception())

    # ------------------------------------------------------------------------------------------
    # Per-room settings
    # ------------------------------------------------------------------------------------------
    def room_settings(self, room_id: str) -> Mapping[str, Any]:
        """A room's guard settings (classifier thresholds, detectors on/off; ``{}``: the
        server's defaults), cached; the thresholds also as fractions
        (:func:`~bastion.guard.room_settings.runtime_view`)."""
        cache = self._room_settings
        hit = cache.get(room_id)
        if hit is not None:
            return hit
        stored = self.hs.store.get_guard_room_settings(room_id)
        settings: Mapping[str, Any] = runtime_view(stored) if isinstance(stored, dict) else {}
        cache[room_id] = settings
        if len(cache) > ROOM_SETTINGS_CACHE_SIZE:
            cache.popitem(last=False)
        return settings

    def set_room_settings_in(
        self, conn: Txn, room_id: str, settings: Mapping[str, Any], now_ms: int
    ) -> dict[str, Any]:
        """Validate (ValueError naming the key) and store a room's settings inside the
        caller's write; the cache follows once it commits."""
        parsed = parse_room_settings(settings)
        self.hs.store.set_guard_room_settings_in(conn, room_id, parsed, now_ms)
        self.hs.store.run_after_commit(self._forget_room_settings, room_id)
        return parsed

    def _forget_room_settings(self, room_id: str) -> None:
        self._room_settings.pop(room_id, None)

    # ------------------------------------------------------------------------------------------
    def is_local(self, user_id: str) -> bool:
        try:
            return server_name_of(user_id) == self.hs.server_name
        except Exception:  # noqa: BLE001 - not a user ID
            return False
