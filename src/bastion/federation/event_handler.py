"""The inbound PDU pipeline (``hs.federation_events``): transactions, the checks performed on
receipt of a PDU, missing events and state, and room state received on a join.

S-S API "Transactions", "Checks performed on receipt of a PDU" (SPEC-MAP §2.4), "Rejection",
"Soft failure", "Retrieving events", "Backfilling and retrieving missing events", "Room State
Resolution", "Server Access Control Lists (ACLs)".

For each PDU, in order:

1. format — :func:`bastion.core.validate_pdu` for the room's version (a room we are not in:
   dropped, we cannot know its version);
2. signatures — the sender's server (and the event ID's in v1–v2) via the keyring; failure:
   dropped;
3. content hash — mismatch: carry on with the redacted event;
4. auth against the event's own auth events (missing ones fetched from ``/event_auth`` or
   ``/event`` and checked 1–4 as outliers); failure: *rejected* (stored, flagged, never served,
   never an auth event, prev event or extremity);
5. auth against the state before the event: the state after its prev event, or the resolution of
   the states after its prev events; missing prev events are asked for with
   ``get_missing_events``, and failing that the state at them is fetched with ``/state_ids``;
   failure: rejected;
6. auth against the room's current state; failure: *soft-failed* (stored, not served to
   clients, not a forward extremity).

Checks 5 and 6 run as one pure ``decide`` inside the room engine's append of a remote event
(``hs.rooms.engine.accept_remote_event``), under the room's lock; one write then stores the
event, its state groups, the forward extremities and the room's new current state (resolved
when there are several extremities), with membership rows so that local users' /sync sees
remote membership changes. Only accepted events move the room's head. The work per PDU and per transaction is bounded
(config ``federation_max_fetch_per_pdu``, ``federation_max_fetch_per_txn``,
``federation_max_state_size``); every dropped or rejected PDU is logged on
``bastion.federation.pdu`` with its event ID, origin and reason.

Interfaces for the other federation parts:

* ``await process_incoming_pdu(origin, pdu, room_version, backfilled=False)`` → ``(event_id,
  error)``; error ``None`` when accepted (also when soft-failed: the origin did nothing wrong);
* ``await process_backfill(origin, room_version, events)`` → how many were accepted: a backfill
  response (id → PDU) checked oldest first, with stream positions that keep /messages in order;
* ``await process_room_state(origin, room_id, room_version, state, auth_chain, join_event)``
  ingests a send_join response (raises ``MatrixError`` when it does not check out);
* ``server_allowed_in_room(room_id, server_name)``: the room's server ACL;
* ``hs.federation_edu_handlers[edu_type] = async fn(origin, content)`` receives EDUs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bastion.core.auth_rules import (
    JAUVS,
    auth_types_for_event,
    check_auth,
    check_auth_against_state,
)
from bastion.core.events import (
    compute_event_id,
    redact,
    validate_pdu,
    verify_event_signature,
)
from bastion.core.pdu_checks import (
    TokenBucket,
    order_by_auth,
    order_by_depth,
    parse_transaction,
    ref_ids,
)
from bastion.core.room_versions import get_room_version
from bastion.core.server_acl import domain_allowed, server_acl_allows
from bastion.core.signing import signing_key_ids
from bastion.core.state_keys import CREATE_KEY
from bastion.core.state_keys import SERVER_ACL_KEY as ACL_KEY
from bastion.errors import MatrixError
from bastion.federation.resolver import FederationError
from bastion.services.room_engine import Verdict
from bastion.storage.sqlite.federation_inbound import RemoteEvent

log = logging.getLogger("bastion.federation.pdu")

#: get_missing_events: how many events to ask for.
MISSING_EVENTS_LIMIT = 10
#: Signatures verified concurrently when ingesting a room's state.
VERIFY_BATCH = 256


class BudgetExceeded(Exception):
    """The bounded work of a PDU or transaction is spent."""


@dataclass
class Budget:
    """Events we may still fetch for the current transaction and PDU."""

    txn_left: int
    pdu_left: int = 0

    def spend(self, n: int = 1) -> None:
        if n > self.txn_left or n > self.pdu_left:
            raise BudgetExceeded(f"fetch budget spent (asked for {n} more events)")
        self.txn_left -= n
        self.pdu_left -= n


class Dropped(Exception):
    """A PDU failed checks 1–2 (or cannot be processed): not stored."""


def _server_of(user_id: object) -> str | None:
    if not isinstance(user_id, str) or ":" not in user_id:
        return None
    return user_id.split(":", 1)[1]


class FederationEventHandler:
    def __init__(self, hs: Any) -> None:
        self.hs = hs
        self.store = hs.store
        self.config = hs.config
        self._buckets: dict[str, TokenBucket] = {}
        self._txn_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # ------------------------------------------------------------------------------------------
    # Access control and rate limits
    # ------------------------------------------------------------------------------------------
    def origin_allowed(self, server_name: str) -> bool:
        """The server-wide allow/deny list (config ``federation_domain_allow``/``_deny``)."""
        return domain_allowed(
            server_name, self.config.federation_domain_allow, self.config.federation_domain_deny
        )

    def server_allowed_in_room(self, room_id: str, server_name: str) -> bool:
        """The room's ``m.room.server_acl`` (S-S "Server Access Control Lists")."""
        acl = self.hs.rooms.current_state_event(room_id, *ACL_KEY)
        return server_acl_allows(acl.get("content") if acl else None, server_name)

    def require_acl(self, room_id: str, server_name: str) -> None:
        """403 ``M_FORBIDDEN`` when the room's server ACL denies ``server_name`` (every
        room-scoped federation endpoint calls this)."""
        if not self.server_allowed_in_room(room_id, server_name):
            raise MatrixError("M_FORBIDDEN", "server is denied by the room's server ACL", 403)

    def check_send_rate(self, origin: str) -> None:
        """Per-origin token bucket on /send: 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``."""
        bucket = self._buckets.get(origin)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._buckets.clear()
            bucket = self._buckets[origin] = TokenBucket(
                float(self.config.federation_send_per_second),
                float(self.config.federation_send_burst),
            )
        wait = bucket.take(time.monotonic())
        if wait > 0:
            raise MatrixError(
                "M_LIMIT_EXCEEDED", "too many transactions", 429,
                retry_after_ms=max(1, int(wait * 1000)),
            )  # fmt: skip

    # ------------------------------------------------------------------------------------------
    # Transactions
    # ------------------------------------------------------------------------------------------
    async def on_send_transaction(self, origin: str, txn_id: str, body: dict) -> dict:
        """PUT /send/{txnId}: process the PDUs and EDUs; the response is kept per (origin,
        txnId) so a retried transaction gets the same answer without being processed again."""
        done = self.store.get_federation_txn(origin, txn_id)
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
                results: dict[str, dict] = {}
                for pdu in pdus:
                    eid, error = await self._txn_pdu(origin, pdu, budget)
                    if eid is not None:
                        results[eid] = {} if error is None else {"error": error}
                for edu in edus:
                    await self._edu(origin, edu)
                response = {"pdus": results}
                now = self.hs.now_ms()
                await self.store.db.write(
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
        room_id = pdu.get("room_id")
        guess_version = None
        if room_id is None and pdu.get("type") == "m.room.create":
            # A v12 create event has no room_id: its room is named after its event ID.
            guess_version = "12"
            guess = _guess_event_id(pdu, guess_version)
            room_id = "!" + guess[1:] if guess else None
        version = self.store.get_room_version(room_id) if isinstance(room_id, str) else None
        if version is None:
            eid = _guess_event_id(pdu, guess_version)
            log.info("dropped PDU %s from %s: room %.100r is unknown here", eid, origin, room_id)
            return eid, "unknown room"
        if not self.server_allowed_in_room(room_id, origin):
            eid = _guess_event_id(pdu, version)
            log.info("dropped PDU %s from %s: denied by the room's server ACL", eid, origin)
            return eid, "server is denied by the room's server ACL"
        return await self.process_incoming_pdu(origin, pdu, version, budget=budget)

    async def _edu(self, origin: str, edu: object) -> None:
        """Hand an EDU to its handler (``hs.federation_edu_handlers``); ACLs for typing and
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
        handler = getattr(self.hs, "federation_edu_handlers", {}).get(etype)
        if handler is None:
            return
        try:
            await handler(origin, content)
        except MatrixError as e:
            log.info("EDU %s from %s refused: %s", etype, origin, e.message)
        except Exception:  # noqa: BLE001 — one bad EDU must not fail the transaction
            log.exception("EDU %s from %s failed", etype, origin)

    # ------------------------------------------------------------------------------------------
    # The checks
    # ------------------------------------------------------------------------------------------
    async def process_backfill(
        self, origin: str, room_version: str, events: dict[str, dict]
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
        self, origin: str, pdu: dict, room_version: str, *, backfilled: bool = False,
        budget: Budget | None = None, backfill_pos: int | None = None, _nested: bool = False,
    ) -> tuple[str | None, str | None]:  # fmt: skip
        """Run one PDU through the checks and persist it. Returns (event_id or None when it has
        none, error or None). Soft-failed events return no error. ``backfill_pos``: the stream
        position reserved for a backfilled event (``process_backfill``)."""
        if budget is None:
            budget = Budget(self.config.federation_max_fetch_per_txn)
        if not _nested:
            budget.pdu_left = self.config.federation_max_fetch_per_pdu
        eid = _guess_event_id(pdu, room_version)
        try:
            pdu, eid = await self._check_format_and_signatures(pdu, room_version)
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
        room_id = pdu["room_id"]
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

    async def _check_format_and_signatures(self, pdu: dict, version: str) -> tuple[dict, str]:
        """Checks 1–3. Returns the event (redacted on a hash mismatch) and its ID."""
        try:
            validate_pdu(pdu, version)
            eid = compute_event_id(pdu, version)
        except MatrixError as e:
            raise Dropped(f"format: {e.message}") from None
        is_v12_create = (
            get_room_version(version).room_id_is_create_hash and pdu["type"] == "m.room.create"
        )
        if not is_v12_create and not isinstance(pdu.get("room_id"), str):
            raise Dropped("format: no room_id")
        try:
            hash_ok = await self.hs.keyring.verify_event_signatures(pdu, version)
        except MatrixError as e:
            raise Dropped(f"signatures: {e.message}") from None
        if not hash_ok:
            log.info("PDU %s: content hash mismatch; continuing with the redacted event", eid)
            pdu = redact(pdu, version)
        return pdu, eid

    async def _verifier(self, event: dict, version: str):
        """Rule 5.2 of v8+ (restricted joins): a synchronous check of the authorising server's
        signature, with its keys fetched beforehand."""
        via = event.get("content", {}).get(JAUVS)
        server = _server_of(via)
        keys: dict = {}
        if server is not None and server != _server_of(event.get("sender")):
            try:
                key_ids = signing_key_ids(event, server)
                keys = await self.hs.keyring.get_verify_keys(server, key_ids, 0)
            except (MatrixError, FederationError):
                keys = {}

        def verify(ev: dict, srv: str) -> bool:
            if srv == self.hs.server_name:
                found = {k: v.key for k, v in self.hs.keyring.own_keys().items()}
            elif srv == _server_of(ev.get("sender")):
                return True  # checked with the event's other signatures (check 2)
            else:
                found = {k: v.key for k, v in keys.items()} if srv == server else {}
            for key_id, key in found.items():
                try:
                    verify_event_signature(ev, version, srv, key_id, key)
                    return True
                except MatrixError:
                    continue
            return False

        return verify

    def _auth_ids(self, pdu: dict, version: str) -> list[str]:
        ids = ref_ids(pdu.get("auth_events"))
        if get_room_version(version).room_id_is_create_hash and pdu.get("type") != "m.room.create":
            ids.append("$" + pdu["room_id"][1:])
        return ids

    async def _process_checked(
        self, origin: str, pdu: dict, eid: str, room_id: str, version: str, backfilled: bool,
        budget: Budget, nested: bool, backfill_pos: int | None = None,
    ) -> str | None:  # fmt: skip
        verify = await self._verifier(pdu, version)
        # Check 4: auth against the event's auth events.
        auth_ids = self._auth_ids(pdu, version)
        await self._ensure_auth_events(origin, room_id, version, eid, auth_ids, budget)
        metas = self.store.get_event_meta(auth_ids)
        auth_pdus = self.store.get_pdus([a for a in auth_ids if a in metas], with_rejected=True)
        rejected_ids = {a for a, m in metas.items() if m.rejected}
        result = check_auth(
            pdu, list(auth_pdus.values()), version, rejected=rejected_ids, verify_signature=verify
        )
        if not result:
            reason = f"auth events: rule {result.rule}: {result.reason}"
            # Rejected without a known state before it: held as a rejected outlier.
            await self.engine.store_outliers([(eid, room_id, pdu, True)])
            log.info("rejected PDU %s from %s: %s", eid, origin, reason)
            return reason

        # Check 5 needs the prev events (or the state at them).
        prev_ids = ref_ids(pdu.get("prev_events"))
        missing = self._missing_prevs(prev_ids)
        if missing and not backfilled and not nested:
            await self._get_missing_events(origin, room_id, version, pdu, eid, budget)
            missing = self._missing_prevs(prev_ids)
        fetched_states: list[dict] = []
        for p in missing:
            fetched_states.append(
                await self._state_after_missing_prev(origin, room_id, version, p, budget)
            )

        return await self._decide_and_persist(
            origin, pdu, eid, room_id, version, prev_ids, missing, fetched_states,
            backfilled, verify, backfill_pos,
        )  # fmt: skip

    def _missing_prevs(self, prev_ids: list[str]) -> list[str]:
        metas = self.store.get_event_meta(prev_ids)
        return [p for p in prev_ids if p not in metas or metas[p].outlier]

    @property
    def engine(self):
        """The room engine: the only writer of rooms' histories."""
        return self.hs.rooms.engine

    async def _decide_and_persist(
        self, origin: str, pdu: dict, eid: str, room_id: str, version: str, prev_ids: list[str],
        missing: list[str], fetched_states: list[dict], backfilled: bool, verify,
        backfill_pos: int | None = None,
    ) -> str | None:  # fmt: skip
        """The state before the event (from its prev events: immutable, so outside the room's
        lock), then checks 5–6 and the write through the room engine."""
        known = [p for p in prev_ids if p not in missing]
        metas = self.store.get_event_meta(known)
        states = [self.store.get_state_group(metas[p].sg_after) for p in known] + fetched_states
        sg_before = metas[known[0]].sg_after if len(known) == 1 and not missing else None
        if len(states) > 1:
            state_before = self.engine.resolve_states(version, states, {eid: pdu})
        else:
            state_before = dict(states[0]) if states else {}

        def decide(before: Mapping, current: Mapping | None) -> Verdict:
            # Check 5: auth against the state before the event.
            result = self._auth_against(pdu, before, version, verify)
            if not result:
                return Verdict.reject(
                    f"state before the event: rule {result.rule}: {result.reason}"
                )
            # Check 6: auth against the room's current state → soft fail.
            if current is not None:
                now = self._auth_against(pdu, current, version, verify)
                if not now:
                    return Verdict.soft_fail(f"current state: rule {now.rule}: {now.reason}")
            return Verdict.accept()

        verdict = await self.engine.accept_remote_event(
            pdu, eid, room_id, version, state_before=state_before, sg_before=sg_before,
            decide=decide, backfilled=backfilled, backfill_pos=backfill_pos,
        )  # fmt: skip
        if verdict.outcome == "reject":
            log.info("rejected PDU %s from %s: %s", eid, origin, verdict.reason)
            return verdict.reason
        if verdict.outcome == "soft_fail":
            log.info("soft-failed PDU %s from %s: %s", eid, origin, verdict.reason)
        return None

    def _auth_against(self, pdu: dict, state: Mapping, version: str, verify):
        keys = [*auth_types_for_event(pdu, version), CREATE_KEY]
        ids = {k: state[k] for k in keys if k in state}
        evs = self.store.get_pdus(list(ids.values()))
        auth_state = {k: evs[v] for k, v in ids.items() if v in evs}
        return check_auth_against_state(pdu, auth_state, version, verify_signature=verify)

    # ------------------------------------------------------------------------------------------
    # Fetching what we miss
    # ------------------------------------------------------------------------------------------
    async def _fetch_json(self, origin: str, method: str, path: str, body=None, query=None):
        status, data = await self.hs.federation_client.request(
            method, origin, path, body, query, timeout=30
        )
        if status != 200 or not isinstance(data, dict):
            raise FederationError(f"{method} {path.split('?')[0][:120]} answered {status}")
        return data

    async def _ensure_auth_events(
        self, origin: str, room_id: str, version: str, eid: str, auth_ids: list[str],
        budget: Budget,
    ) -> None:  # fmt: skip
        """Fetch the auth events we lack (``/event_auth``, else ``/event``), checked 1–4 and
        stored as outliers."""
        metas = self.store.get_event_meta(auth_ids)
        missing = [a for a in auth_ids if a not in metas]
        if not missing:
            return
        path = f"/_matrix/federation/v1/event_auth/{quote(room_id, safe='')}/{quote(eid, safe='')}"
        try:
            data = await self._fetch_json(origin, "GET", path)
            chain = data.get("auth_chain")
            if not isinstance(chain, list):
                raise FederationError("event_auth: no auth_chain")
            if len(chain) > self.config.federation_max_state_size:
                raise FederationError("event_auth: the auth chain is larger than we accept")
            ids = {}
            for ev in chain:
                i = _guess_event_id(ev, version) if isinstance(ev, dict) else None
                if i is not None:
                    ids[i] = ev
            known = self.store.get_event_meta(ids)
            budget.spend(len([i for i in ids if i not in known]))
            await self._ingest_outliers(
                room_id, version, [v for i, v in ids.items() if i not in known]
            )
        except FederationError as e:
            log.info("event_auth for %s from %s failed (%s); fetching events one by one",
                     eid, origin, e)  # fmt: skip
            metas = self.store.get_event_meta(auth_ids)
            missing = [a for a in auth_ids if a not in metas]
            budget.spend(len(missing))
            fetched = []
            for a in missing:
                try:
                    data = await self._fetch_json(
                        origin, "GET", f"/_matrix/federation/v1/event/{quote(a, safe='')}"
                    )
                except FederationError:
                    continue
                pdus = data.get("pdus")
                if isinstance(pdus, list) and pdus:
                    fetched.append(pdus[0])
            await self._ingest_outliers(room_id, version, fetched)

    async def _ingest_outliers(
        self, room_id: str, version: str, events: list, *, expect: set[str] | None = None
    ) -> dict[str, dict]:
        """Checks 1–4 on a batch of events of ``room_id`` (verified in concurrent batches,
        checked in auth order) and store them as outliers. Returns id → event of those stored
        (rejected ones included); events failing checks 1–2 are dropped."""
        parsed: dict[str, dict] = {}
        for ev in events:
            if not isinstance(ev, dict):
                continue
            try:
                validate_pdu(ev, version)
                eid = compute_event_id(ev, version)
            except MatrixError:
                continue
            if expect is not None and eid not in expect:
                continue
            rid = ev.get("room_id")
            if rid != room_id and not (
                ev.get("type") == "m.room.create" and "$" + room_id[1:] == eid
            ):
                continue
            parsed[eid] = ev
        known = self.store.get_event_meta(parsed)
        todo = {e: v for e, v in parsed.items() if e not in known}
        checked = await self._verify_batch(version, todo)
        order = order_by_auth(checked)
        accepted: dict[str, dict] = {}
        rejected: set[str] = {e for e, m in known.items() if m.rejected}
        rows = []
        for eid in order:
            ev = checked[eid]
            ok = self._check_own_auth(ev, version, checked, rejected)
            if ok is None:
                continue  # an auth event is unavailable: not stored
            if not ok:
                rejected.add(eid)
                log.info("rejected outlier %s: %s", eid, ok.reason)
            accepted[eid] = ev
            rows.append((eid, room_id, ev, not ok))
        await self.engine.store_outliers(rows)
        return accepted

    async def _verify_batch(self, version: str, events: dict[str, dict]) -> dict[str, dict]:
        """Checks 2–3 on many events, ``VERIFY_BATCH`` at a time. Returns the events that pass
        (redacted where the content hash does not match)."""
        out: dict[str, dict] = {}
        items = list(events.items())
        for i in range(0, len(items), VERIFY_BATCH):
            chunk = items[i : i + VERIFY_BATCH]
            results = await asyncio.gather(
                *(self.hs.keyring.verify_event_signatures(ev, version) for _, ev in chunk),
                return_exceptions=True,
            )
            for (eid, ev), res in zip(chunk, results, strict=True):
                if isinstance(res, BaseException):
                    log.info("dropped event %s: signatures: %s", eid, res)
                    continue
                out[eid] = ev if res else redact(ev, version)
        return out

    def _check_own_auth(self, ev: dict, version: str, batch: dict[str, dict], rejected: set[str]):
        """Check 4 for an outlier; None when an auth event is neither in the batch nor stored."""
        auth_ids = self._auth_ids(ev, version)
        if ev.get("type") == "m.room.create":
            return check_auth(ev, [], version)
        found = {a: batch[a] for a in auth_ids if a in batch}
        rest = [a for a in auth_ids if a not in found]
        if rest:
            stored = self.store.get_pdus(rest, with_rejected=True)
            if len(stored) < len(set(rest)):
                return None
            found.update(stored)
            rejected |= {e for e, m in self.store.get_event_meta(rest).items() if m.rejected}
        return check_auth(ev, list(found.values()), version, rejected=rejected)

    async def _get_missing_events(
        self, origin: str, room_id: str, version: str, pdu: dict, eid: str, budget: Budget
    ) -> None:
        """POST /get_missing_events: the events between our forward extremities and this one,
        processed oldest first."""
        head = self.engine.head(room_id)
        earliest = list(head.extremities) if head else []
        metas = self.store.get_event_meta(earliest)
        min_depth = min((m.depth for m in metas.values()), default=0)
        body = {
            "earliest_events": earliest,
            "latest_events": [eid],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": min_depth,
        }
        try:
            data = await self._fetch_json(
                origin, "POST",
                f"/_matrix/federation/v1/get_missing_events/{quote(room_id, safe='')}", body,
            )  # fmt: skip
        except FederationError as e:
            log.info("get_missing_events for %s from %s failed: %s", eid, origin, e)
            return
        events = data.get("events")
        if not isinstance(events, list):
            return
        events = events[: MISSING_EVENTS_LIMIT * 2]
        budget.spend(len(events))
        by_id: dict[str, dict] = {}
        for ev in events:
            if isinstance(ev, dict) and ev.get("room_id") == room_id:
                try:
                    by_id[compute_event_id(ev, version)] = ev
                except MatrixError:
                    continue
        for mid in order_by_depth(by_id):
            if mid == eid:
                continue
            await self.process_incoming_pdu(
                origin, by_id[mid], version, budget=budget, _nested=True
            )

    async def _state_after_missing_prev(
        self, origin: str, room_id: str, version: str, prev_id: str, budget: Budget
    ) -> dict:
        """The state after a prev event we could not get into the DAG: ``/state_ids`` at it
        (the state before it) plus the event itself, every event fetched and checked."""
        q = {"event_id": prev_id}
        data = await self._fetch_json(
            origin, "GET", f"/_matrix/federation/v1/state_ids/{quote(room_id, safe='')}", query=q
        )
        pdu_ids, chain_ids = data.get("pdu_ids"), data.get("auth_chain_ids")
        if not isinstance(pdu_ids, list) or not isinstance(chain_ids, list):
            raise FederationError("state_ids: malformed response")
        if len(pdu_ids) + len(chain_ids) > self.config.federation_max_state_size:
            raise FederationError("state_ids: the state is larger than we accept")
        wanted = [i for i in dict.fromkeys([*chain_ids, *pdu_ids, prev_id]) if isinstance(i, str)]
        metas = self.store.get_event_meta(wanted)
        unknown = [i for i in wanted if i not in metas]
        budget.spend(len(unknown))
        fetched = []
        for i in range(0, len(unknown), 16):
            chunk = unknown[i : i + 16]
            results = await asyncio.gather(
                *(
                    self._fetch_json(
                        origin, "GET", f"/_matrix/federation/v1/event/{quote(e, safe='')}"
                    )
                    for e in chunk
                ),
                return_exceptions=True,
            )
            for res in results:
                if isinstance(res, dict) and isinstance(res.get("pdus"), list) and res["pdus"]:
                    fetched.append(res["pdus"][0])
        await self._ingest_outliers(room_id, version, fetched, expect=set(unknown))
        metas = self.store.get_event_meta(wanted)
        evs = self.store.get_pdus([i for i in pdu_ids if isinstance(i, str)])
        state: dict = {}
        for i in pdu_ids:
            ev = evs.get(i) if isinstance(i, str) else None
            if ev is not None and isinstance(ev.get("state_key"), str):
                state[(ev["type"], ev["state_key"])] = i
        prev = self.store.get_pdus([prev_id]).get(prev_id)
        if prev is None:
            raise FederationError(f"prev event {prev_id[:80]} is unavailable")
        if isinstance(prev.get("state_key"), str):
            state[(prev["type"], prev["state_key"])] = prev_id
        return state

    # ------------------------------------------------------------------------------------------
    # Joining: the state of a room from a send_join response
    # ------------------------------------------------------------------------------------------
    async def process_room_state(
        self, origin: str, room_id: str, room_version: str, state_events: list[dict],
        auth_chain: list[dict], join_event: dict,
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
            join, join_id = await self._check_format_and_signatures(join_event, room_version)
        except Dropped as e:
            raise MatrixError("M_BAD_JSON", f"join event: {e}") from None
        if join.get("room_id") != room_id or join.get("type") != "m.room.member":
            raise MatrixError("M_BAD_JSON", "the join event is not a membership event of the room")
        parsed: dict[str, dict] = {}
        state_ids: list[str] = []
        for ev in [*auth_chain, *state_events]:
            if not isinstance(ev, dict):
                continue
            try:
                validate_pdu(ev, room_version)
                eid = compute_event_id(ev, room_version)
            except MatrixError:
                continue
            parsed[eid] = ev
        for ev in state_events:
            if isinstance(ev, dict):
                try:
                    state_ids.append(compute_event_id(ev, room_version))
                except MatrixError:
                    continue
        known = self.store.get_event_meta(parsed)
        todo = {e: v for e, v in parsed.items() if e not in known}
        checked = await self._verify_batch(room_version, todo)
        rejected: set[str] = {e for e, m in known.items() if m.rejected}
        outliers = []
        ok_events: dict[str, dict] = {}
        for eid in order_by_auth(checked):
            ev = checked[eid]
            if eid != "$" + room_id[1:] and ev.get("room_id") != room_id:
                continue
            res = self._check_own_auth(ev, room_version, checked, rejected)
            if res is None:
                continue
            if not res:
                rejected.add(eid)
                log.info("rejected state event %s from %s: %s", eid, origin, res.reason)
            ok_events[eid] = ev
            outliers.append((eid, room_id, ev, not res))
        stored = self.store.get_pdus([e for e in state_ids if e in known])
        all_events = {**stored, **ok_events}
        state: dict = {}
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
        auth_ids = self._auth_ids(join, room_version)
        auth_evs = [all_events.get(a) for a in auth_ids]
        missing = [a for a, e in zip(auth_ids, auth_evs, strict=True) if e is None]
        if missing:
            more = self.store.get_pdus(missing, with_rejected=True)
            auth_evs = [e if e is not None else more.get(a) for a, e in zip(auth_ids, auth_evs, strict=True)]  # fmt: skip
        res = check_auth(
            join, [e for e in auth_evs if e is not None], room_version,
            rejected=rejected, verify_signature=verify,
        )  # fmt: skip
        if not res:
            raise MatrixError(
                "M_FORBIDDEN", f"the join event fails its auth events: {res.reason}", 403
            )
        keys = [*auth_types_for_event(join, room_version), CREATE_KEY]
        auth_state = {
            k: all_events[state[k]] for k in keys if k in state and state[k] in all_events
        }
        res = check_auth_against_state(join, auth_state, room_version, verify_signature=verify)
        if not res:
            raise MatrixError(
                "M_FORBIDDEN", f"the join event is not allowed by the room state: {res.reason}", 403
            )
        rec = RemoteEvent(join, join_id, room_id)
        rec.state_events = {**{state[k]: all_events[state[k]] for k in state
                               if k[0] == "m.room.member"}, join_id: join}  # fmt: skip
        creator = create.get("sender", "")
        await self.engine.install_joined_room(room_id, room_version, creator, outliers, state, rec)


def _guess_event_id(pdu: dict, version: str | None = None) -> str | None:
    """An event's ID for logs and the /send response, when it can be computed."""
    try:
        return compute_event_id(pdu, version or "10")
    except Exception:  # noqa: BLE001
        return None
