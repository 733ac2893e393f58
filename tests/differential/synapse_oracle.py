"""Synapse's auth rules as a test oracle (test-only; Synapse is AGPL — called, never copied).

Our event dicts become Synapse ``EventBase`` objects through ``make_event_from_dict``; the
state-dependent rules are ``synapse.event_auth.check_state_dependent_auth_rules`` and the rules on
the auth events themselves (our rule 3) ``check_state_independent_auth_rules``, an ``async``
function that reads auth events from a store. The fake store here never suspends, so the
coroutine is driven to completion with a single ``send(None)`` (no event loop needed).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from synapse.api.errors import SynapseError
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.event_auth import (
    check_state_dependent_auth_rules,
    check_state_independent_auth_rules,
)
from synapse.events import make_event_from_dict

logging.getLogger("synapse").setLevel(logging.ERROR)

#: Synapse refused the event (AuthError and its parent SynapseError).
DENIED = False
ALLOWED = True


class OracleCrash(Exception):
    """Synapse raised something other than an auth error: no verdict for this input."""


def to_synapse(event: Mapping[str, Any], room_version: str, *, rejected: bool = False) -> Any:
    return make_event_from_dict(
        copy.deepcopy(dict(event)),
        KNOWN_ROOM_VERSIONS[room_version],
        {},
        rejected_reason="rejected in test" if rejected else None,
    )


class FakeStore:
    """The one method ``check_state_independent_auth_rules`` needs, over a dict."""

    def __init__(self, events: Iterable[Any]) -> None:
        self.events = {e.event_id: e for e in events}

    async def get_events(
        self,
        event_ids: Iterable[str],
        redact_behaviour: Any = None,
        get_prev_content: bool = False,
        allow_rejected: bool = False,
    ) -> dict[str, Any]:
        return {i: self.events[i] for i in event_ids if i in self.events}


def _run(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("oracle coroutine suspended")


def _verdict(fn: Any) -> bool:
    try:
        fn()
    except SynapseError:
        return DENIED
    except Exception as e:  # KeyError, ValueError, AssertionError, RuntimeError ...
        raise OracleCrash(f"{type(e).__name__}: {e}") from e
    return ALLOWED


def synapse_allows_against_state(
    event: Mapping[str, Any], state: Iterable[Mapping[str, Any]], room_version: str
) -> bool:
    """Synapse's verdict on the state-dependent rules (our :func:`check_auth_against_state`)."""
    try:
        ev = to_synapse(event, room_version)
    except SynapseError:  # Synapse refuses to parse it (e.g. a v12 create with a room_id)
        return DENIED
    state_events = [to_synapse(e, room_version) for e in state]
    if event.get("type") == "m.room.create":
        return _verdict(lambda: _run(check_state_independent_auth_rules(FakeStore([]), ev)))
    return _verdict(lambda: check_state_dependent_auth_rules(ev, state_events))


def synapse_allows_with_auth_events(
    event: Mapping[str, Any],
    auth_events: Iterable[Mapping[str, Any]],
    room_version: str,
    rejected_ids: Iterable[str] = (),
) -> bool:
    """Synapse's verdict on PDU check 4 (our :func:`check_auth`): the state-independent rules
    with ``auth_events`` in the store (those in ``rejected_ids`` marked rejected), then the
    state-dependent rules against the auth events the event names."""
    rejected = set(rejected_ids)
    try:
        ev = to_synapse(event, room_version)
    except SynapseError:  # Synapse refuses to parse it (e.g. a v12 create with a room_id)
        return DENIED
    stored = []
    for e in auth_events:
        se = to_synapse(e, room_version)
        if se.event_id in rejected:
            se = to_synapse(e, room_version, rejected=True)
        stored.append(se)
    store = FakeStore(stored)

    def check() -> None:
        _run(check_state_independent_auth_rules(store, ev))
        if ev.type != "m.room.create":
            named = [store.events[i] for i in ev.auth_event_ids()]
            check_state_dependent_auth_rules(ev, named)

    return _verdict(check)
