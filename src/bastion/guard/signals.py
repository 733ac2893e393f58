"""The guard's vocabulary (pure): what a check sees (:class:`EventContext`), what a detector,
the classifier, a rate limit or a policy list says about it (:class:`Signal`), and what the guard
decides from all of them (:class:`Verdict`, :func:`combine`) and records (:class:`Decision`).

DESIGN.md "Guard decision": signals (detector, score, evidence) -> policy -> action -> alert +
ledger record. Nothing here reads a clock, a database or the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ACTIONS",
    "SEVERITIES",
    "Decision",
    "EventContext",
    "Signal",
    "Verdict",
    "combine",
]

#: How strongly a signal speaks, weakest first. ``info`` is recorded only when it comes with a
#: stronger signal; ``warn`` is recorded and alerted but lets the event through; ``hold`` asks
#: for a moderator; ``block`` refuses (a local event: 403; a federated event: soft-failed).
SEVERITIES: Final = ("info", "warn", "hold", "block")

#: The actions a verdict may carry out (beyond letting the event through, refusing or holding
#: it). A signal names one in ``action`` to ask for it; the guard's decisions module carries it
#: out and records it.
ACTIONS: Final = (
    "redact",  # redact the event (or, with evidence["event_ids"], those events)
    "quarantine_media",  # quarantine the media the event links (evidence["mxc"])
    "suspend",  # suspend the sender's (local) account
    "lock",  # lock the sender's (local) account
    "ban",  # ban the sender from the room
    "server_acl",  # add the sender's server to the room's server ACL deny list
    "cool_room",  # switch the room to knock/invite for a cooling period (join waves)
)


@dataclass(frozen=True, slots=True)
class EventContext:
    """One event the guard is asked about, before it is accepted: a local user's event before it
    is built, or a federated event after its signature, hash and auth checks.

    ``content`` is the event's content: for ``m.room.encrypted`` events, and for any event in a
    room whose state has ``m.room.encryption`` (``encrypted_room``), nothing may read text from
    it (the classifier never sees it; detectors may use only counts and metadata).
    """

    sender: str
    room_id: str
    etype: str
    content: Mapping[str, Any]
    state_key: str | None
    now_ms: int
    #: True for a local user's event; False for one received over federation.
    local: bool
    #: The server the event came from (ours for a local event; the transaction's origin).
    origin: str
    #: The room is encrypted (``m.room.encryption`` in its current state).
    encrypted_room: bool = False
    #: When the sender's account was created (local senders; None when unknown).
    sender_created_ms: int | None = None
    #: When the sender last joined this room (None: not joined, or unknown).
    sender_joined_ms: int | None = None
    #: The event ID (federated events; None for a local event not yet built).
    event_id: str | None = None
    #: The client's address (local requests, when known).
    ip: str | None = None

    @property
    def readable(self) -> bool:
        """Whether the server may read the content's text (never in encrypted rooms)."""
        return not self.encrypted_room and self.etype != "m.room.encrypted"

    @property
    def membership(self) -> str | None:
        """The ``membership`` of an ``m.room.member`` event, else None."""
        if self.etype != "m.room.member":
            return None
        value = self.content.get("membership")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Signal:
    """What one check says about one event or request."""

    #: Which check: ``detector.message_flood``, ``classifier``, ``policy.user``,
    #: ``rate.message``, ``login.stuffing``, ``report`` ... (dot-separated, stable: alerts,
    #: metrics and the admin API use it).
    source: str
    #: One of :data:`SEVERITIES`.
    severity: str
    #: How sure the check is, 0..1.
    score: float
    #: A sentence a person can read (a moderator; the user, when the event is refused).
    reason: str
    #: Small, JSON-serialisable evidence (counts, thresholds, matched rule, features).
    evidence: Mapping[str, Any] = field(default_factory=dict)
    #: One of :data:`ACTIONS` the check asks for, or None.
    action: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError("a signal's score is between 0 and 1")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard decides about one event: ``allow``, ``warn`` (let through, recorded and
    alerted), ``hold`` (for a moderator) or ``block``; the signals behind it; the actions to
    carry out. In shadow mode ``enforced`` is False: the verdict is recorded, nothing is done."""

    outcome: str
    signals: tuple[Signal, ...]
    actions: tuple[str, ...]
    enforced: bool

    @property
    def recorded(self) -> bool:
        """Whether this verdict is recorded (anything but a plain allow)."""
        return self.outcome != "allow" or bool(self.actions)

    @property
    def reason(self) -> str:
        """The reasons of the signals that decided, strongest first."""
        decisive = [s for s in self.signals if s.severity == self.outcome] or list(self.signals)
        return "; ".join(s.reason for s in decisive)


_RANK: Final = {name: i for i, name in enumerate(SEVERITIES)}


def combine(signals: Iterable[Signal], *, enforce: bool = True) -> Verdict:
    """The verdict of a set of signals: the strongest severity wins (``info`` alone allows);
    the actions are those asked for by signals at the winning severity, in order, once each.
    ``enforce`` False (shadow mode): the same verdict, marked not enforced."""
    sigs = tuple(signals)
    if not sigs:
        return Verdict("allow", (), (), enforce)
    rank = _RANK
    top = max((rank[s.severity] for s in sigs), default=0)
    outcome = "allow" if top == 0 else SEVERITIES[top]
    actions: list[str] = []
    for s in sigs:
        if s.action is not None and rank[s.severity] == top and s.action not in actions:
            actions.append(s.action)
    ordered = tuple(sorted(sigs, key=lambda s: (-rank[s.severity], -s.score)))
    return Verdict(outcome, ordered, tuple(actions) if top else (), enforce)


@dataclass(frozen=True, slots=True)
class Decision:
    """One recorded guard decision: a row of ``guard_decisions`` and a ``guard.decision`` ledger
    record, written in one transaction (:meth:`bastion.guard.service.GuardService.record`).

    ``status``: ``done`` (carried out), ``shadow`` (shadow mode: recorded only), ``held``
    (waiting for a moderator), ``approved`` / ``rejected`` (a held one, reviewed), ``reversed``
    (an admin undid it), ``open`` (a report or alert waiting to be looked at)."""

    source: str
    outcome: str
    reason: str
    ts: int
    status: str = "done"
    subject: str | None = None
    room_id: str | None = None
    event_id: str | None = None
    origin: str | None = None
    score: float = 0.0
    actions: tuple[str, ...] = ()
    signals: tuple[Signal, ...] = ()
    #: What a held local event would have been (room_id, type, state_key, content, txn), so an
    #: approval can send it; None otherwise.
    held: Mapping[str, Any] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls, verdict: Verdict, ctx: EventContext, *, status: str, held: Mapping[str, Any] | None
    ) -> Decision:
        """The decision recording ``verdict`` about ``ctx``."""
        top = verdict.signals[0] if verdict.signals else None
        return cls(
            source=top.source if top is not None else "guard",
            outcome=verdict.outcome,
            reason=verdict.reason,
            ts=ctx.now_ms,
            status=status,
            subject=ctx.sender,
            room_id=ctx.room_id,
            event_id=ctx.event_id,
            origin=ctx.origin,
            score=max((s.score for s in verdict.signals), default=0.0),
            actions=verdict.actions,
            signals=verdict.signals,
            held=held,
        )

    def signals_json(self) -> list[dict[str, Any]]:
        """The signals as JSON (the admin API and the ledger record's details)."""
        return [
            {"source": s.source, "severity": s.severity, "score": round(s.score, 4),
             "reason": s.reason, "evidence": dict(s.evidence),
             **({"action": s.action} if s.action else {})}
            for s in self.signals
        ]  # fmt: skip
