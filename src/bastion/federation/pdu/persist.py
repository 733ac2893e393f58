"""Storing a decided PDU: the outcome handed to the room engine, the only writer of a room.

S-S API "Checks performed on receipt of a PDU" (SPEC-MAP §2.4) and its consequences: "Rejection"
(a rejected event is stored, flagged, never served, never an auth event, prev event or forward
extremity), "Soft failure" (stored, not served to clients, not a forward extremity); "Joining
Rooms" (the state of a room from a send_join response).

* :meth:`Persister.remote_event` — through :meth:`RoomEngine.accept_remote_event`: checks 5–6
  (:func:`~bastion.federation.pdu.decide.check_states`) run under the room's lock against the
  current state, then one write stores the event with its verdict;
* :meth:`Persister.outliers` — events held without their place in the DAG (fetched auth events,
  an event rejected at check 4);
* :meth:`Persister.joined_room` — a room joined over federation.

Only the engine moves a room's head; this module only translates the pipeline's
:class:`~bastion.federation.pdu.decide.Outcome` into the engine's ``Verdict``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bastion.core.auth_rules import auth_types_for_event
from bastion.core.state_keys import CREATE_KEY
from bastion.federation.pdu.decide import Outcome, SignatureVerifier, check_states
from bastion.services.room_engine import RoomEngine, Verdict
from bastion.storage.interface import RemoteEvent

if TYPE_CHECKING:
    from bastion.storage.interface import Store

#: The guard's check of a federated event under the room's lock: ``check(current_state)``, a
#: reason to soft-fail it or None (:class:`bastion.guard.service.RemoteEventCheck`).
GuardCheck = Callable[[Mapping[tuple[str, str], str]], "str | None"]

#: An outlier to store: (event_id, room_id, pdu, rejected).
OutlierRow = tuple[str, str, dict[str, Any], bool]


def to_verdict(outcome: Outcome) -> Verdict:
    """The engine's verdict for an outcome (its reason: the outcome's message)."""
    if outcome.outcome == "reject":
        return Verdict.reject(outcome.message or "rejected")
    if outcome.outcome == "soft_fail":
        return Verdict.soft_fail(outcome.message or "soft-failed")
    return Verdict.accept()


class Persister:
    def __init__(self, engine: RoomEngine, store: Store) -> None:
        self.engine = engine
        self.store = store

    def auth_state(
        self, event: dict[str, Any], state: Mapping[tuple[str, str], str], version: str
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The events of ``state`` (IDs) that the auth rules look at for ``event``: those of its
        auth events selection and the create event (rejected events are not state)."""
        keys = [*auth_types_for_event(event, version), CREATE_KEY]
        ids = {k: state[k] for k in keys if k in state}
        evs = self.store.get_pdus(list(ids.values()))
        return {k: evs[v] for k, v in ids.items() if v in evs}

    async def remote_event(
        self, pdu: dict[str, Any], event_id: str, room_id: str, version: str, *,
        state_before: dict[tuple[str, str], str], sg_before: int | None,
        verify: SignatureVerifier, backfilled: bool = False, backfill_pos: int | None = None,
        guard: GuardCheck | None = None,
    ) -> Outcome:  # fmt: skip
        """Checks 5–6 under the room's lock (against the state before the event and the
        engine's current state; no check 6 for a backfilled event) and the event stored as they
        decide, in one write. ``guard(current_state)``: asked, under the same lock, about an
        event that passed checks 5–6 (not a backfilled one); a reason soft-fails it (the
        guard's refusal of a federated event, issue 9; S-S API "Soft failure")."""
        decided: list[Outcome] = []

        def decide(before: Mapping[tuple[str, str], str],
                   current: Mapping[tuple[str, str], str] | None) -> Verdict:  # fmt: skip
            outcome = check_states(
                pdu, self.auth_state(pdu, before, version),
                None if current is None else self.auth_state(pdu, current, version),
                version, verify=verify,
            )  # fmt: skip
            if outcome.accepted and guard is not None and current is not None:
                reason = guard(current)
                if reason is not None:
                    outcome = Outcome("soft_fail", None, "guard", reason)
            decided.append(outcome)
            return to_verdict(outcome)

        await self.engine.accept_remote_event(
            pdu, event_id, room_id, version, state_before=state_before, sg_before=sg_before,
            decide=decide, backfilled=backfilled, backfill_pos=backfill_pos,
        )  # fmt: skip
        return decided[-1]

    async def outliers(self, rows: list[OutlierRow]) -> None:
        """Store events as outliers (rejected or not): they never move a head."""
        await self.engine.store_outliers(rows)

    async def rejected_outlier(self, event_id: str, room_id: str, pdu: dict[str, Any]) -> None:
        """An event rejected at check 4: held as a rejected outlier (its state is not known)."""
        await self.engine.store_outliers([(event_id, room_id, pdu, True)])

    async def joined_room(
        self, room_id: str, version: str, creator: str, outliers: list[OutlierRow],
        state: dict[tuple[str, str], str], join: RemoteEvent,
    ) -> None:  # fmt: skip
        """A send_join response: the room, its state and auth chain, the join on top."""
        await self.engine.install_joined_room(room_id, version, creator, outliers, state, join)
