"""The guard's vocabulary (bastion.guard.signals, pure): signals, combine, decisions; the ledger
details of a decision; a room's guard settings (bastion.guard.room_settings)."""

from __future__ import annotations

import pytest

from bastion.guard.decisions import _ledger_safe
from bastion.guard.room_settings import parse_room_settings
from bastion.guard.service import decision_record_details
from bastion.guard.signals import Decision, EventContext, Signal, combine
from bastion.ledger.records import action_record, entry_bytes


def sig(severity: str, score: float = 0.5, source: str = "detector.x", action=None, **ev):
    return Signal(source, severity, score, f"{source} says {severity}", ev, action)


def ctx(**kw) -> EventContext:
    base = dict(sender="@a:hs", room_id="!r:hs", etype="m.room.message",
                content={"body": "hi"}, state_key=None, now_ms=1000, local=True, origin="hs")  # fmt: skip
    base.update(kw)
    return EventContext(**base)


# -- Signal ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw", [{"severity": "fatal"}, {"score": 1.5}, {"score": -0.1}, {"action": "nuke"}]
)
def test_signal_refuses_unknown_values(kw):
    args = {"source": "s", "severity": "warn", "score": 0.5, "reason": "r", **kw}
    with pytest.raises(ValueError):
        Signal(**args)


# -- combine ---------------------------------------------------------------------------------
def test_nothing_or_info_allows():
    assert combine([]).outcome == "allow"
    v = combine([sig("info", action="ban")])
    assert v.outcome == "allow" and v.actions == () and not v.recorded


@pytest.mark.parametrize(
    ("severities", "outcome"),
    [(["warn"], "warn"), (["warn", "hold"], "hold"), (["block", "warn", "hold"], "block"),
     (["info", "warn"], "warn")],
)  # fmt: skip
def test_strongest_severity_wins(severities, outcome):
    v = combine([sig(s) for s in severities])
    assert v.outcome == outcome and v.recorded
    assert v.signals[0].severity == outcome


def test_actions_only_of_the_winning_severity_once_each_in_order():
    v = combine([
        sig("warn", action="redact"), sig("block", action="ban"),
        sig("block", action="suspend"), sig("block", action="ban"),
    ])  # fmt: skip
    assert v.outcome == "block" and v.actions == ("ban", "suspend")


def test_shadow_verdict_is_the_same_but_not_enforced():
    sigs = [sig("block", action="ban")]
    enforced, shadow = combine(sigs), combine(sigs, enforce=False)
    assert (shadow.outcome, shadow.actions) == (enforced.outcome, enforced.actions)
    assert enforced.enforced and not shadow.enforced


def test_reason_names_the_deciding_signals_strongest_first():
    v = combine([sig("warn", source="a"), sig("hold", 0.2, source="b"),
                 sig("hold", 0.9, source="c")])  # fmt: skip
    assert v.reason == "c says hold; b says hold"


# -- Decision --------------------------------------------------------------------------------
def test_decision_of_a_verdict():
    v = combine([sig("hold", 0.7, source="classifier"), sig("warn", 0.9)])
    held = {"room_id": "!r:hs", "type": "m.room.message"}
    d = Decision.of(v, ctx(event_id="$e"), status="held", held=held)
    assert (d.source, d.outcome, d.status, d.subject, d.room_id, d.event_id, d.origin) == (
        "classifier", "hold", "held", "@a:hs", "!r:hs", "$e", "hs")  # fmt: skip
    assert d.score == 0.9 and d.held == held and d.ts == 1000
    assert [s["source"] for s in d.signals_json()] == ["classifier", "detector.x"]


def test_ledger_details_of_a_decision_are_canonical_json():
    """Canonical JSON (the ledger's encoding) has no floats: scores are per mille."""
    v = combine([sig("block", 0.98765, action="ban", ratio=0.25)])
    d = Decision.of(v, ctx(), status="done", held=None)
    details = decision_record_details(7, d)
    assert details["score_per_mille"] == 988
    assert details["signals"] == [
        {"source": "detector.x", "severity": "block", "score_per_mille": 988}]  # fmt: skip
    record = action_record(action="guard.decision", actor="server", ts=1, details=details)
    assert entry_bytes(record)  # encodes


def test_ledger_safe_values():
    out = _ledger_safe({"a": 0.5, "b": [1, 2**60, "x" * 600], "c": {"d": None, "e": True}})
    assert out == {"a": "0.5", "b": [1, str(2**60), "x" * 500], "c": {"d": None, "e": True}}


# -- EventContext ----------------------------------------------------------------------------
def test_encrypted_content_is_never_readable():
    assert ctx().readable
    assert not ctx(encrypted_room=True).readable
    assert not ctx(etype="m.room.encrypted").readable
    assert ctx(etype="m.room.member", content={"membership": "join"}).membership == "join"
    assert ctx().membership is None


# -- room settings ---------------------------------------------------------------------------
def test_room_settings_valid():
    s = {"classifier": {"enabled": True, "hold_per_mille": 500, "block_per_mille": 1000.0},
         "detectors": {"message_flood": False, "enabled": True}}  # fmt: skip
    assert parse_room_settings(s) == {
        "classifier": {"enabled": True, "hold_per_mille": 500, "block_per_mille": 1000},
        "detectors": {"message_flood": False, "enabled": True},
    }
    assert parse_room_settings({}) == {}


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ([], "settings"),
        ({"colour": 1}, "colour"),
        ({"classifier": 1}, "settings.classifier"),
        ({"classifier": {"hold_per_mille": 1001}}, "settings.classifier.hold_per_mille"),
        ({"classifier": {"hold_per_mille": -1}}, "settings.classifier.hold_per_mille"),
        ({"classifier": {"hold_per_mille": 0.5}}, "settings.classifier.hold_per_mille"),
        ({"classifier": {"hold_per_mille": "500"}}, "settings.classifier.hold_per_mille"),
        ({"classifier": {"hold_per_mille": True}}, "settings.classifier.hold_per_mille"),
        ({"classifier": {"block_per_mille": float("nan")}}, "settings.classifier.block_per_mille"),
        (
            {"classifier": {"hold_per_mille": 900, "block_per_mille": 500}},
            "settings.classifier.hold_per_mille",
        ),
        ({"classifier": {"enabled": "yes"}}, "settings.classifier.enabled"),
        ({"classifier": {"hold": 1}}, "hold"),
        ({"detectors": {"Bad Name": True}}, "settings.detectors"),
        ({"detectors": {"flood": 1}}, "settings.detectors.flood"),
        ({"detectors": {f"d{i}": True for i in range(65)}}, "settings.detectors"),
    ],
)
def test_room_settings_invalid(settings, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        parse_room_settings(settings)
