"""The inbound PDU pipeline (``hs.federation.events``): transactions, the checks performed on
receipt of a PDU, missing events and state, and room state received on a join — the
orchestration of the steps of this package.

S-S API "Transactions", "Checks performed on receipt of a PDU" (SPEC-MAP §2.4), "Rejection",
"Soft failure", "Retrieving events", "Backfilling and retrieving missing events", "Room State
Resolution", "Joining Rooms", "Server Access Control Lists (ACLs)".

For each PDU, in order:

1–3. :mod:`~bastion.federation.pdu.parse` — format, signatures (failure: dropped), content hash
   (mismatch: carry on with the redacted event); a room we are not in: dropped, we cannot know
   its version;
4. auth against the event's own auth events (:func:`~bastion.federation.pdu.decide.check_auth_events`;
   missing ones fetched by :mod:`~bastion.federation.pdu.fetch` and checked 1–4 as outliers);
   failure: *rejected*, held as a rejected outlier;
5. auth against the state before the event: the state after its prev event, or the resolution
   of the states after its prev events; missing prev events are asked for with
   ``get_missing_events``, and failing that the state at them is fetched with ``/state_ids``;
   failure: rejected;
6. auth against the room's current state; failure: *soft-failed*.

Checks 5 and 6 (:func:`~bastion.federation.pdu.decide.check_states`) run inside the room
engine's append of a remote event (:mod:`~bastion.federation.pdu.persist`), under the room's
lock; one write then stores the event with its verdict. Only accepted events move the room's
head. No network request runs under a room lock. The work per PDU and per transaction is
bounded (config ``federation_max_fetch_per_pdu``, ``federation_max_fetch_per_txn``,
``federation_max_state_size``); every dropped or rejected PDU is logged on
``bastion.federation.pdu`` with its event ID, origin and reason.

Interfaces for the other federation parts:

* ``await process_incoming_pdu(origin, pdu, room_version, backfilled=False)`` → ``(event_id,
  error)``; error ``None`` when accepted (also when soft-failed: the origin did nothing wrong);
* ``await process_backfill(origin, room_version, events)`` → how many were accepted;
* ``await process_room_state(origin, room_id, room_version, state, auth_chain, join_event)``
  ingests a send_join response (raises ``MatrixError`` when it does not check out);
* ``origin_allowed``, ``server_allowed_in_room``, ``require_acl``, ``check_send_rate``;
* ``hs.federation_edu_handlers[edu_type] = async fn(origin, content)`` receives EDUs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from nacl.signing import VerifyKey

from bastion.core.identifiers import server_name_of
from bastion.core.pdu_checks import order_by_auth, order_by_depth, parse_transaction, ref_ids
from bastion.core.rate_limit import TokenBuckets, retry_after_ms
from bastion.core.state_keys import CREATE_KEY
from bastion.errors import MatrixError
from bastion.federation.pdu.decide import (
    Outcome,
    SignatureVerifier,
    authoriser_server,
    check_auth_events,
    decide,
    signature_verifier,
)
from bastion.federation.pdu.fetch import Budget, BudgetExceeded, Fetcher
from bastion.federation.pdu.parse import (
    Dropped,
    auth_ids,
    check_format_and_signatures,
    guess_event_id,
    parse_events,
    transaction_pdu_room,
    verify_batch,
)
from bastion.federation.pdu.persist import OutlierRow, Persister
from bastion.federation.resolver import FederationError
from bastion.storage.interface import RemoteEvent

if TYPE_CHECKING:
    from bastion.config import Config
    from bastion.federation.client import FederationClient
    from bastion.federation.container import InboundContext
    from bastion.federation.keyring import Keyring
    from bastion.services.room_engine import RoomEngine
    from bastion.storage.interface import Store

log = logging.getLogger("bastion.federation.pdu")

#: Per-origin /send buckets remembered at most (least recently used forgotten first).
MAX_RATE_LIMITED_ORIGINS = 10_000

#: ``async fn(origin, content)``: the handler of one EDU type.
EduHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


class FederationEventHandler:
    """The pipeline. Its dependencies are read once from the homeserver: the store, the config,
    the keyring, the federation client, the room engine (the only writer of rooms), our server
    name and the clock; the EDU handlers (``hs.federation.edu_handlers``, registered by the
    services after this object is built) are looked up when an EDU arrives."""

    def __init__(self, hs: InboundContext) -> None:
        self._edu_handlers = hs.federation_edu_handlers  # filled in by the EDU services
        self.acl = hs.acl
        self.store: Store = hs.store
        self.config: Config = hs.config
        self.keyring: Keyring = hs.keyring
        self.client: FederationClient = hs.federation_client
        self.engine: RoomEngine = hs.rooms.engine
        self.server_name: str = hs.server_name
        self.now_ms: Callable[[], int] = hs.now_ms
        self.fetcher = Fetcher(self.client, self.keyring, self.store, self.config)
        self.persister = Persister(self.engine, self.store)
        self._send_buckets = TokenBuckets(
            float(self.config.federation_send_per_second),
            float(self.config.federation_send_burst),
            MAX_RATE_LIMITED_ORIGINS,
        )
        self._txn_locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: The guard (issue 9): asked about each event that passed checks 5–6.
        self.guard = hs.guard

    @property
    def edu_handlers(self) -> Mapping[str, EduHandler]:
        return self._edu_handlers

    # ------------------------------------------------------------------------------------------
    # Access control and rate limits
    # ------------------------------------------------------------------------------------------
    def origin_allowed(self, server_name: str) -> bool:
        """The server-wide allow/deny list (config ``federation_domain_allow``/``_deny``)."""
        return self.acl.server_allowed(server_name)

    def server_allowed_in_room(self, room_id: str, server_name: str) -> bool:
        """The room's ``m.room.server_acl`` (S-S "Server Access Control Lists")."""
        return self.acl.room_allows(room_id, server_name)

    def require_acl(self, room_id: str, server_name: str) -> None:
        """403 ``M_FORBIDDEN`` when the room's server ACL denies ``server_name`` (every
        room-scoped federation endpoint calls this)."""
        self.acl.require_room(room_id, server_name)

    def check_send_rate(self, origin: str) -> None:
        """Per-origin token bucket on /send: 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``."""
        wait = self._send_buckets.take(origin, time.monotonic())
        if wait > 0:
            raise MatrixError(
                "M_LIMIT_EXCEEDED", "too many transactions", 429,
                retry_after_ms=retry_after_ms(wait),
            )  # fmt: skip

    # ------------------------------------------------------------------------------------------
    # Transactions
    # ------------------------------------------------------------------------------------------
    async def on_send_transaction(
        self, origin: str, txn_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT /send/{txnId}: process the PDUs and EDUs; the response is kept per (origin,
        txnId) so a retried transaction gets the same answer without being processed again."""
        done: dict[str, Any] | None = self.store.get_federation_txn(origin, txn_id)
        if done is not None:
            return done
        pdus, edus = parse_transaction(body, origin)
        key = (origin, txn_id)
        lock = self._txn_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                done = self.store.get_federation_txn(origin, txn_id)
                if done is not None:
                    return done
                budget = Budget(self.config.federation_max_fetch_per_txn)
                results: dict[str, dict[str, Any]] = {}
                for pdu in pdus:
                    eid, error = await self._txn_pdu(origin, pdu, budget)
                    if eid is not None:
                        results[eid] = {} if error is None else {"error": error}
                for edu in edus:
                    await self._edu(origin, edu)
                response: dict[str, Any] = {"pdus": results}
                now = self.now_ms()
                await self.store.transaction(
                    lambda conn: self.store.store_federation_txn_in(
                        conn, origin, txn_id, response, now
                    )
                )
                return response
        finally:
            if not lock.locked():
                self._txn_locks.pop(key, None)

    async def _txn_pdu(
        self, origin: str, pdu: object, budget: Budget
    ) -> tuple[str | None, str | None]:
        if not isinstance(pdu, dict):
            log.info("dropped PDU from %s: not a JSON object", origin)
            return None, None
        room_id, guess_version = transaction_pdu_room(pdu)
        version = self.store.get_room_version(room_id) if isinstance(room_id, str) else None
        if version is None or not isinstance(room_id, str):
            eid = guess_event_id(pdu, guess_version)
            log.info("dropped PDU %s from %s: room %.100r is unknown here", eid, origin, room_id)
            return eid, "unknown room"
        if not self.server_allowed_in_room(room_id, origin):
            eid = guess_event_id(pdu, version)
            log.info("dropped PDU %s from %s: denied by the room's server ACL", eid, origin)
            return eid, "server is denied by the room's server ACL"
        return await self.process_incoming_pdu(origin, pdu, version, budget=budget)

    async def _edu(self, origin: str, edu: object) -> None:
        """Hand an EDU to its handler (``hs.federation.edu_handlers``); ACLs for typing and
        receipts; unknown EDU types are ignored."""
        if not isinstance(edu, dict):
            return
        etype, content = edu.get("edu_type"), edu.get("content")
        if not isinstance(etype, str) or not isinstance(content, dict):
            return
        if etype == "m.typing":
            room_id = content.get("room_id")
            if not isinstance(room_id, str) or not self.server_allowed_in_room(room_id, origin):
                return
        elif etype == "m.receipt":
            content = {
                r: v
                for r, v in content.items()
                if isinstance(r, str) and self.server_allowed_in_room(r, origin)
            }
            if not content:
                return
        handler = self.edu_handlers.get(etype)
        if handler is None:
            return
        try:
            await handler(origin, content)
        except MatrixError as e:
            log.info("EDU %s from %s refused: %s", etype, origin, e.message)
        except Exception:  # noqa: BLE001 — one bad EDU must not fail the transaction
            log.exception("EDU %s from %s failed", etype, origin)

    # ------------------------------------------------------------------------------------------
    # One PDU
    # ------------------------------------------------------------------------------------------
    async def process_backfill(
        self, origin: str, room_version: str, events: dict[str, dict[str, Any]]
    ) -> int:
        """A backfill response (event ID → PDU, S-S "Backfilling and retrieving missing
        events"), checked as one batch: oldest first, so each event's prev events are stored
        when it is checked and the state before it comes from them (not from one ``/state_ids``
        request per event); within one fetch budget. The events take stream positions reserved
        below the room's earliest in the same order, the newest just below it, so /messages
        pages back through them newest first. Returns how many were accepted."""
        order = order_by_depth(events)
        if not order:
            return 0
        lowest = self.store.reserve_backfill_positions(len(order))
        budget = Budget(self.config.federation_max_fetch_per_txn)
        accepted = 0
        for i, eid in enumerate(order):
            try:
                _, error = await self.process_incoming_pdu(
                    origin, events[eid], room_version, backfilled=True, budget=budget,
                    backfill_pos=lowest + i,
                )  # fmt: skip
            except Exception:  # noqa: BLE001 - one bad event must not fail the batch
                log.exception("backfilled event %s from %s failed", eid, origin)
                continue
            accepted += error is None
        return accepted

    async def process_incoming_pdu(
        self, origin: str, pdu: dict[str, Any], room_version: str, *, backfilled: bool = False,
        budget: Budget | None = None, backfill_pos: int | None = None, _nested: bool = False,
    ) -> tuple[str | None, str | None]:  # fmt: skip
        """Run one PDU through the checks and persist it. Returns (event_id or None when it has
        none, error or None). Soft-failed events return no error. ``backfill_pos``: the stream
        position reserved for a backfilled event (``process_backfill``)."""
        if budget is None:
            budget = Budget(self.config.federation_max_fetch_per_txn)
        if not _nested:
            budget.pdu_left = self.config.federation_max_fetch_per_pdu
        eid: str | None = guess_event_id(pdu, room_version)
        try:
            pdu, eid = await check_format_and_signatures(self.keyring, pdu, room_version)
        except Dropped as e:
            log.info("dropped PDU %s from %s: %s", eid, origin, e)
            return eid, str(e)
        meta = self.store.get_event_meta([eid]).get(eid)
        if pdu.get("type") == "m.room.create":
            # A room's create event is its root: we hold it for every room we know (a v12 one
            # has no room_id at all). One arriving through /send, get_missing_events or
            # backfill is either that same event again or the root of another room.
            if meta is not None:
                return eid, ("event was rejected" if meta.rejected else None)
            reason = "an m.room.create event cannot be added to an existing room"
            log.info("dropped PDU %s from %s: %s", eid, origin, reason)
            return eid, reason
        room_id: str = pdu["room_id"]
        if meta is not None and not meta.outlier:
            return eid, ("event was rejected" if meta.rejected else None)
        try:
            return eid, await self._process_checked(
                origin, pdu, eid, room_id, room_version, backfilled, budget, _nested,
                backfill_pos,
            )  # fmt: skip
        except (BudgetExceeded, FederationError) as e:
            log.info("dropped PDU %s from %s: %s", eid, origin, e)
            return eid, f"could not process the event: {e}"

    async def _verifier(self, event: dict[str, Any], version: str) -> SignatureVerifier:
        """Rule 5.2 of v8+ (restricted joins): a synchronous check of the authorising server's
        signature, with its keys gathered beforehand (ours, or fetched)."""
        server = authoriser_server(event)
        keys: dict[str, VerifyKey] = {}
        if server == self.server_name:
            keys = {k: v.key for k, v in self.keyring.own_keys().items()}
        elif server is not None and server != server_name_of(event.get("sender")):
            keys = await self.fetcher.signing_keys(server, event)
        return signature_verifier(version, self.server_name, server, keys)

    async def _process_checked(
        self, origin: str, pdu: dict[str, Any], eid: str, room_id: str, version: str,
        backfilled: bool, budget: Budget, nested: bool, backfill_pos: int | None = None,
    ) -> str | None:  # fmt: skip
        """Checks 4–6 of a PDU that passed checks 1–3; the error, or None."""
        verify = await self._verifier(pdu, version)
        # Check 4: auth against the event's auth events (fetched when missing).
        ids = auth_ids(pdu, version)
        fetched = await self.fetcher.auth_events(origin, room_id, version, eid, ids, budget)
        if fetched:
            await self._ingest_outliers(room_id, version, fetched)
        metas = self.store.get_event_meta(ids)
        auth_pdus = self.store.get_pdus([a for a in ids if a in metas], with_rejected=True)
        rejected_ids = {a for a, m in metas.items() if m.rejected}
        outcome = check_auth_events(pdu, list(auth_pdus.values()), version,
                                    rejected=rejected_ids, verify=verify)  # fmt: skip
        if not outcome.accepted:
            await self.persister.rejected_outlier(eid, room_id, pdu)
            log.info("rejected PDU %s from %s: %s", eid, origin, outcome.message)
            return outcome.message

        # Check 5 needs the prev events (or the state at them).
        prev_ids = ref_ids(pdu.get("prev_events"))
        missing = self._missing_prevs(prev_ids)
        if missing and not backfilled and not nested:
            head = self.engine.head(room_id)
            earliest = list(head.extremities) if head else []
            for ev in await self.fetcher.missing_events(origin, room_id, version, eid,
                                                        earliest, budget):  # fmt: skip
                await self.process_incoming_pdu(origin, ev, version, budget=budget, _nested=True)
            missing = self._missing_prevs(prev_ids)
        fetched_states = [
            await self._state_after_missing_prev(origin, room_id, version, p, budget)
            for p in missing
        ]

        # The state before the event, from its prev events (immutable: outside the room's lock).
        known = [p for p in prev_ids if p not in missing]
        known_metas = self.store.get_event_meta(known)
        states: list[Mapping[tuple[str, str], str]] = [
            self.store.get_state_group(known_metas[p].sg_after) for p in known
        ]
        states += fetched_states
        sg_before = known_metas[known[0]].sg_after if len(known) == 1 and not missing else None
        if len(states) > 1:
            state_before = self.engine.resolve_states(version, states, {eid: pdu})
        else:
            state_before = dict(states[0]) if states else {}

        # Checks 5–6 under the room's lock, then the guard's check (a blocked or held event is
        # soft-failed), and the write; the guard's decision is recorded after it.
        check = None
        if self.guard is not None and not backfilled:
            check = self.guard.remote_event_check(origin, pdu, eid)
        outcome = await self.persister.remote_event(
            pdu, eid, room_id, version, state_before=state_before, sg_before=sg_before,
            verify=verify, backfilled=backfilled, backfill_pos=backfill_pos, guard=check,
        )  # fmt: skip
        if check is not None:
            await check.finish()
        if outcome.outcome == "reject":
            log.info("rejected PDU %s from %s: %s", eid, origin, outcome.message)
            return outcome.message
        if outcome.outcome == "soft_fail":
            log.info("soft-failed PDU %s from %s: %s", eid, origin,
                     outcome.message or f"{outcome.rule}: {outcome.reason}")  # fmt: skip
        return None

    def _missing_prevs(self, prev_ids: list[str]) -> list[str]:
        metas = self.store.get_event_meta(prev_ids)
        return [p for p in prev_ids if p not in metas or metas[p].outlier]

    async def _state_after_missing_prev(
        self, origin: str, room_id: str, version: str, prev_id: str, budget: Budget
    ) -> dict[tuple[str, str], str]:
        """The state after a prev event we could not get into the DAG: ``/state_ids`` at it
        (the state before it) plus the event itself, every event fetched and checked 1–4."""
        at = await self.fetcher.state_at(origin, room_id, prev_id, budget)
        await self._ingest_outliers(room_id, version, at.fetched, expect=at.unknown)
        evs = self.store.get_pdus(at.pdu_ids)
        state: dict[tuple[str, str], str] = {}
        for i in at.pdu_ids:
            ev = evs.get(i)
            if ev is not None and isinstance(ev.get("state_key"), str):
                state[(ev["type"], ev["state_key"])] = i
        prev = self.store.get_pdus([prev_id]).get(prev_id)
        if prev is None:
            raise FederationError(f"prev event {prev_id[:80]} is unavailable")
        if isinstance(prev.get("state_key"), str):
            state[(prev["type"], prev["state_key"])] = prev_id
        return state

    # ------------------------------------------------------------------------------------------
    # Outliers: checks 1–4 on a batch
    # ------------------------------------------------------------------------------------------
    async def _check_batch(
        self, room_id: str, version: str, events: list[Any], *, expect: set[str] | None = None,
        rejected: set[str], log_as: str = "outlier",
    ) -> tuple[dict[str, dict[str, Any]], list[OutlierRow], dict[str, Any]]:  # fmt: skip
        """Checks 1–4 on a batch of events of ``room_id`` (verified in concurrent batches,
        checked in auth order). Returns (id → event of those that pass checks 1–3 and whose auth
        events are available — rejected ones included, the outlier rows to store, and the
        stored events' metadata). ``rejected`` gains the IDs rejected."""
        parsed = parse_events(events, version, room_id, expect=expect)
        known = self.store.get_event_meta(parsed)
        rejected |= {e for e, m in known.items() if m.rejected}
        todo = {e: v for e, v in parsed.items() if e not in known}
        checked = await verify_batch(self.keyring, version, todo)
        kept: dict[str, dict[str, Any]] = {}
        rows: list[OutlierRow] = []
        for eid in order_by_auth(checked):
            ev = checked[eid]
            outcome = self._check_own_auth(ev, version, checked, rejected)
            if outcome is None:
                continue  # an auth event is unavailable: not stored
            if not outcome.accepted:
                rejected.add(eid)
                log.info("rejected %s %s: %s", log_as, eid, outcome.reason)
            kept[eid] = ev
            rows.append((eid, room_id, ev, not outcome.accepted))
        return kept, rows, known

    async def _ingest_outliers(
        self, room_id: str, version: str, events: list[Any], *, expect: set[str] | None = None
    ) -> None:
        """Checks 1–4 on a batch of events of ``room_id``, stored as outliers (rejected ones
        flagged); events failing checks 1–2 or whose auth events are unavailable are dropped."""
        _, rows, _ = await self._check_batch(room_id, version, events, expect=expect,
                                             rejected=set())  # fmt: skip
        await self.persister.outliers(rows)

    def _check_own_auth(
        self, ev: dict[str, Any], version: str, batch: dict[str, dict[str, Any]],
        rejected: set[str],
    ) -> Outcome | None:  # fmt: skip
        """Check 4 for an outlier; None when an auth event is neither in the batch nor stored."""
        if ev.get("type") == "m.room.create":
            return check_auth_events(ev, [], version)
        ids = auth_ids(ev, version)
        found = {a: batch[a] for a in ids if a in batch}
        rest = [a for a in ids if a not in found]
        if rest:
            stored = self.store.get_pdus(rest, with_rejected=True)
            if len(stored) < len(set(rest)):
                return None
            found.update(stored)
            rejected |= {e for e, m in self.store.get_event_meta(rest).items() if m.rejected}
        return check_auth_events(ev, list(found.values()), version, rejected=rejected)

    # ------------------------------------------------------------------------------------------
    # Joining: the state of a room from a send_join response
    # ------------------------------------------------------------------------------------------
    async def process_room_state(
        self, origin: str, room_id: str, room_version: str, state_events: list[Any],
        auth_chain: list[Any], join_event: dict[str, Any],
    ) -> None:  # fmt: skip
        """Ingest a send_join response (S-S "Joining Rooms"): every event of the state and auth
        chain checked 1–4 (as outliers), the join event checked against its auth events and
        the returned state; then the room (version, state, the join as forward extremity and
        current state) is stored in one write. Raises ``MatrixError`` (``M_FORBIDDEN``, 403 for
        the join not allowed, ``M_BAD_JSON`` for a malformed response)."""
        if not isinstance(state_events, list) or not isinstance(auth_chain, list):
            raise MatrixError("M_BAD_JSON", "state and auth_chain must be arrays")
        if len(state_events) + len(auth_chain) > 2 * self.config.federation_max_state_size:
            raise MatrixError("M_TOO_LARGE", "the room state is larger than we accept", 502)
        try:
            join, join_id = await check_format_and_signatures(
                self.keyring, join_event, room_version
            )
        except Dropped as e:
            raise MatrixError("M_BAD_JSON", f"join event: {e}") from None
        if join.get("room_id") != room_id or join.get("type") != "m.room.member":
            raise MatrixError("M_BAD_JSON", "the join event is not a membership event of the room")
        state_ids = [i for ev in state_events if (i := guess_event_id(ev, room_version))]
        rejected: set[str] = set()
        ok_events, outliers, known = await self._check_batch(
            room_id, room_version, [*auth_chain, *state_events], rejected=rejected,
            log_as=f"state event (from {origin})",
        )  # fmt: skip
        stored = self.store.get_pdus([e for e in state_ids if e in known])
        all_events = {**stored, **ok_events}
        state: dict[tuple[str, str], str] = {}
        for eid in state_ids:
            ev = all_events.get(eid)
            if ev is None or eid in rejected or not isinstance(ev.get("state_key"), str):
                continue
            state[(ev["type"], ev["state_key"])] = eid
        if CREATE_KEY not in state:
            raise MatrixError("M_BAD_JSON", "the room state has no valid m.room.create event")
        create = all_events[state[CREATE_KEY]]
        if create.get("content", {}).get("room_version", "1") != room_version:
            raise MatrixError("M_BAD_JSON", "the room's create event names another room version")
        verify = await self._verifier(join, room_version)
        join_auth_ids = auth_ids(join, room_version)
        missing = [a for a in join_auth_ids if a not in all_events]
        more = self.store.get_pdus(missing, with_rejected=True) if missing else {}
        auth_evs = [ev for a in join_auth_ids if (ev := all_events.get(a) or more.get(a))]
        auth_state = {k: all_events[v] for k, v in state.items()}
        outcome = decide(join, auth_evs, auth_state, None, room_version,
                         rejected_auth=rejected, verify=verify)  # fmt: skip
        if outcome.check == 4:
            raise MatrixError(
                "M_FORBIDDEN", f"the join event fails its auth events: {outcome.reason}", 403
            )
        if not outcome.accepted:
            raise MatrixError(
                "M_FORBIDDEN", f"the join event is not allowed by the room state: "
                f"{outcome.reason}", 403,
            )  # fmt: skip
        rec = RemoteEvent(join, join_id, room_id)
        rec.state_events = {**{state[k]: all_events[state[k]] for k in state
                               if k[0] == "m.room.member"}, join_id: join}  # fmt: skip
        creator = create.get("sender", "")
        await self.persister.joined_room(room_id, room_version, creator, outliers, state, rec)
