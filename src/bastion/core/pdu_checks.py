"""Pure decisions of the inbound PDU pipeline (S-S API "Transactions", "Checks performed on
receipt of a PDU", "Retrieving events"; C-S module "History visibility", "Server behaviour").

The shell (``bastion.federation.pdu``) fetches, verifies signatures and persists;
what is decided from data alone lives here: the shape of a transaction, the order in which a
batch of events must be checked and which server may see which event. The token bucket used for
per-origin rate limits lives in :mod:`bastion.core.rate_limit` (importable from here too).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

from bastion.core.rate_limit import TokenBucket as TokenBucket  # its former home
from bastion.core.visibility import normalise_visibility
from bastion.errors import bad_json, forbidden, too_large

#: S-S API "Transactions": at most 50 PDUs and 100 EDUs per transaction.
MAX_TXN_PDUS = 50
MAX_TXN_EDUS = 100


def parse_transaction(body: Mapping[str, Any], origin: str) -> tuple[list[Any], list[Any]]:
    """Check the body of ``PUT /send/{txnId}`` (transactions.yaml) sent by ``origin`` (the
    authenticated server) and return ``(pdus, edus)``. Raises 400 ``M_BAD_JSON`` for a malformed
    body, 400 ``M_TOO_LARGE`` for more than 50 PDUs or 100 EDUs (the spec names no error code;
    the status follows the reference server) and 403 ``M_FORBIDDEN`` when the body's ``origin``
    is not the authenticated origin."""
    if body.get("origin") != origin:
        raise forbidden("the transaction's origin is not the signing server")
    ts = body.get("origin_server_ts")
    if type(ts) is not int:
        raise bad_json("'origin_server_ts' must be an integer")
    pdus = body.get("pdus", [])
    edus = body.get("edus", [])
    if not isinstance(pdus, list):
        raise bad_json("'pdus' must be an array")
    if edus is None:
        edus = []
    if not isinstance(edus, list):
        raise bad_json("'edus' must be an array")
    if len(pdus) > MAX_TXN_PDUS or len(edus) > MAX_TXN_EDUS:
        raise too_large(
            f"a transaction carries at most {MAX_TXN_PDUS} PDUs and {MAX_TXN_EDUS} EDUs", 400
        )
    return pdus, edus


def ref_ids(refs: Any) -> list[str]:
    """The event IDs of a ``prev_events``/``auth_events`` list (any event format); junk skipped."""
    if not isinstance(refs, list):
        return []
    out = []
    for r in refs:
        if isinstance(r, list) and r:
            r = r[0]
        if isinstance(r, str):
            out.append(r)
    return out


def order_by_auth(events: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The IDs of ``events`` ordered so that each comes after those of its auth events that are
    in the batch (auth events outside the batch are ignored). Ties are broken by depth, then ID;
    events on an auth cycle (impossible for valid events) come last, in depth order."""
    ids = list(events)
    pending = {eid: {a for a in ref_ids(events[eid].get("auth_events")) if a in events}
               for eid in ids}  # fmt: skip
    users: dict[str, list[str]] = {}
    for eid, deps in pending.items():
        for d in deps:
            users.setdefault(d, []).append(eid)

    def key(eid: str) -> tuple[int, str]:
        d = events[eid].get("depth")
        return (d if type(d) is int else 0, eid)

    ready = [key(e) for e, deps in pending.items() if not deps]
    heapq.heapify(ready)
    out: list[str] = []
    done: set[str] = set()
    while ready:
        _, eid = heapq.heappop(ready)
        out.append(eid)
        done.add(eid)
        for u in users.get(eid, ()):
            deps = pending[u]
            deps.discard(eid)
            if not deps and u not in done:
                heapq.heappush(ready, key(u))
    if len(out) < len(ids):
        out.extend(sorted((e for e in ids if e not in done), key=key))
    return out


def order_by_depth(events: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Oldest first: ``get_missing_events`` and backfill responses are processed in this order."""

    def key(eid: str) -> tuple[int, str]:
        d = events[eid].get("depth")
        return (d if type(d) is int else 0, eid)

    return sorted(events, key=key)


def server_may_see(
    visibility: object, server_memberships: Iterable[str | None], *, in_room_now: bool = True
) -> bool:
    """C-S "History visibility", server behaviour, for a whole server: may a server see an event,
    given the ``history_visibility`` at the event and the memberships its users had then?

    ``world_readable``: yes. ``shared``: yes when the server is in the room (it has a user joined
    now — the rule "the user joined at any point after the event" for its users). ``invited``: a
    user of the server was joined or invited at the event. ``joined``: a user was joined at the
    event. Events a server may not see are served redacted (the DAG stays walkable)."""
    v = normalise_visibility(visibility)
    memberships = set(server_memberships)
    if v == "world_readable":
        return True
    if "join" in memberships:
        return True
    if v == "shared":
        return in_room_now
    if v == "invited":
        return "invite" in memberships
    return False
