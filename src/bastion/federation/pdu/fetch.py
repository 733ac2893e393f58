"""Fetching what a received PDU needs: every network request of the inbound pipeline.

S-S API "Checks performed on receipt of a PDU" (SPEC-MAP §2.4: "the server should … fetch the
missing auth events" for check 4, "the state before the event" for check 5), "Retrieving events"
(``GET /event/{eventId}``, ``GET /event_auth/{roomId}/{eventId}``, ``GET /state_ids/{roomId}``),
"Backfilling and retrieving missing events" (``POST /get_missing_events/{roomId}``), and the
keys of rule 5.2 of v8+ (the authorising server of a restricted join, "Retrieving server keys").

Bounded: each request has a timeout, every fetched event is charged to the :class:`Budget` of
the PDU and of the transaction (config ``federation_max_fetch_per_pdu``/``_per_txn``), and an
answer larger than ``federation_max_state_size`` is refused. The fetcher only brings events in;
the pipeline checks them (checks 1–4) before anything is stored.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from nacl.signing import VerifyKey

from bastion.core.pdu_checks import order_by_depth
from bastion.core.signing import signing_key_ids
from bastion.errors import MatrixError
from bastion.federation.pdu.parse import guess_event_id
from bastion.federation.resolver import FederationError

if TYPE_CHECKING:
    from bastion.config import Config
    from bastion.federation.client import FederationClient
    from bastion.federation.keyring import Keyring
    from bastion.storage.interface import Store

log = logging.getLogger("bastion.federation.pdu")

#: get_missing_events: how many events to ask for.
MISSING_EVENTS_LIMIT = 10
#: /event requests run concurrently when fetching the state at a missing prev event.
FETCH_CONCURRENCY = 16
#: Timeout of one federation request, in seconds.
REQUEST_TIMEOUT = 30

V1 = "/_matrix/federation/v1"


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


@dataclass
class StateAt:
    """A ``/state_ids`` answer at a prev event: the IDs of the state before it, and the events
    fetched (those of its state, auth chain and the prev event itself we did not hold)."""

    pdu_ids: list[str]
    fetched: list[Any]
    unknown: set[str]


class Fetcher:
    """The network side of the pipeline; reads the store only to skip what it already holds."""

    def __init__(
        self, client: FederationClient, keyring: Keyring, store: Store, config: Config
    ) -> None:
        self.client = client
        self.keyring = keyring
        self.store = store
        self.max_state_size: int = config.federation_max_state_size

    async def _json(
        self, origin: str, method: str, path: str, body: Any = None,
        query: dict[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        status, data = await self.client.request(
            method, origin, path, body, query, timeout=REQUEST_TIMEOUT
        )
        if status != 200 or not isinstance(data, dict):
            raise FederationError(f"{method} {path.split('?')[0][:120]} answered {status}")
        return data

    async def _event(self, origin: str, event_id: str) -> Any:
        """``GET /event/{eventId}``: the PDU, or None."""
        data = await self._json(origin, "GET", f"{V1}/event/{quote(event_id, safe='')}")
        pdus = data.get("pdus")
        return pdus[0] if isinstance(pdus, list) and pdus else None

    async def auth_events(
        self, origin: str, room_id: str, version: str, event_id: str, auth_ids: list[str],
        budget: Budget,
    ) -> list[Any]:  # fmt: skip
        """The auth events of ``event_id`` we lack: its auth chain (``/event_auth``), or, when
        that fails, each missing auth event (``/event``). Returns the events to check (those
        not held), charged to the budget."""
        metas = self.store.get_event_meta(auth_ids)
        missing = [a for a in auth_ids if a not in metas]
        if not missing:
            return []
        path = f"{V1}/event_auth/{quote(room_id, safe='')}/{quote(event_id, safe='')}"
        try:
            data = await self._json(origin, "GET", path)
            chain = data.get("auth_chain")
            if not isinstance(chain, list):
                raise FederationError("event_auth: no auth_chain")
            if len(chain) > self.max_state_size:
                raise FederationError("event_auth: the auth chain is larger than we accept")
            ids: dict[str, Any] = {}
            for ev in chain:
                i = guess_event_id(ev, version)
                if i is not None:
                    ids[i] = ev
            known = self.store.get_event_meta(ids)
            unknown = [v for i, v in ids.items() if i not in known]
            budget.spend(len(unknown))
            return unknown
        except FederationError as e:
            log.info("event_auth for %s from %s failed (%s); fetching events one by one",
                     event_id, origin, e)  # fmt: skip
        budget.spend(len(missing))
        fetched = []
        for a in missing:
            try:
                ev = await self._event(origin, a)
            except FederationError:
                continue
            if ev is not None:
                fetched.append(ev)
        return fetched

    async def missing_events(
        self, origin: str, room_id: str, version: str, event_id: str, earliest: list[str],
        budget: Budget,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """``POST /get_missing_events``: the events between our forward extremities
        (``earliest``) and ``event_id``, oldest first (``event_id`` itself left out), charged
        to the budget. Empty when the request fails."""
        metas = self.store.get_event_meta(earliest)
        body = {
            "earliest_events": earliest,
            "latest_events": [event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": min((m.depth for m in metas.values()), default=0),
        }
        path = f"{V1}/get_missing_events/{quote(room_id, safe='')}"
        try:
            data = await self._json(origin, "POST", path, body)
        except FederationError as e:
            log.info("get_missing_events for %s from %s failed: %s", event_id, origin, e)
            return []
        events = data.get("events")
        if not isinstance(events, list):
            return []
        events = events[: MISSING_EVENTS_LIMIT * 2]
        budget.spend(len(events))
        by_id: dict[str, dict[str, Any]] = {}
        for ev in events:
            if isinstance(ev, dict) and ev.get("room_id") == room_id:
                i = guess_event_id(ev, version)
                if i is not None:
                    by_id[i] = ev
        return [by_id[i] for i in order_by_depth(by_id) if i != event_id]

    async def state_at(self, origin: str, room_id: str, prev_id: str, budget: Budget) -> StateAt:
        """``GET /state_ids`` at a prev event we could not get into the DAG, and every event of
        that state, of its auth chain and the prev event itself that we do not hold
        (``/event``, ``FETCH_CONCURRENCY`` at a time), charged to the budget."""
        data = await self._json(origin, "GET", f"{V1}/state_ids/{quote(room_id, safe='')}",
                                query={"event_id": prev_id})  # fmt: skip
        pdu_ids, chain_ids = data.get("pdu_ids"), data.get("auth_chain_ids")
        if not isinstance(pdu_ids, list) or not isinstance(chain_ids, list):
            raise FederationError("state_ids: malformed response")
        if len(pdu_ids) + len(chain_ids) > self.max_state_size:
            raise FederationError("state_ids: the state is larger than we accept")
        wanted = [i for i in dict.fromkeys([*chain_ids, *pdu_ids, prev_id]) if isinstance(i, str)]
        metas = self.store.get_event_meta(wanted)
        unknown = [i for i in wanted if i not in metas]
        budget.spend(len(unknown))
        fetched: list[Any] = []
        for i in range(0, len(unknown), FETCH_CONCURRENCY):
            results = await asyncio.gather(
                *(self._event(origin, e) for e in unknown[i : i + FETCH_CONCURRENCY]),
                return_exceptions=True,
            )
            fetched += [r for r in results if isinstance(r, dict)]
        return StateAt([i for i in pdu_ids if isinstance(i, str)], fetched, set(unknown))

    async def signing_keys(self, server: str, event: dict[str, Any]) -> dict[str, VerifyKey]:
        """The verify keys (key ID → key) of ``server`` for the key IDs it signed ``event``
        with (rule 5.2 of v8+: the authorising server of a restricted join); none when they
        cannot be had."""
        try:
            found = await self.keyring.get_verify_keys(server, signing_key_ids(event, server), 0)
        except (MatrixError, FederationError):
            return {}
        return {k: v.key for k, v in found.items()}
