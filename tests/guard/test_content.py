"""``hs.guard.classifier`` (ContentClassifier): never reads encrypted rooms; thresholds from
the room, the server's config and the model; URL signals; shadow mode."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.guard.classifier.model import shipped_model
from bastion.guard.config import parse_guard_config
from bastion.guard.content import ContentClassifier, message_texts
from bastion.guard.signals import EventContext

NOW = 1_800_000_000_000
DAY = 86_400_000
SPAM = "You have been selected for a £500 cash prize! Call 09061234567 now to claim at bit.ly/x3"
HAM = "I think the bug is in line 42, you forgot to return the value from the callback"


def classifier(guard: Mapping[str, Any] | None = None,
               rooms: Mapping[str, Any] | None = None) -> ContentClassifier:  # fmt: skip
    settings = dict(rooms or {})
    hs = SimpleNamespace(config=SimpleNamespace(guard_config=parse_guard_config(guard or {})))
    hs.guard = SimpleNamespace(room_settings=lambda room_id: settings.get(room_id, {}))
    return ContentClassifier(hs)  # type: ignore[arg-type]


def ctx(body: str | None = SPAM, *, etype: str = "m.room.message", encrypted: bool = False,
        content: Mapping[str, Any] | None = None, created: int | None = None,
        room: str = "!r:hs", local: bool = True) -> EventContext:  # fmt: skip
    if content is None:
        content = {"msgtype": "m.text", "body": body}
    return EventContext(
        sender="@u:hs", room_id=room, etype=etype, content=content, state_key=None, now_ms=NOW,
        local=local, origin="hs", encrypted_room=encrypted, sender_created_ms=created,
    )  # fmt: skip


def by_source(signals: list[Any], source: str) -> list[Any]:
    return [s for s in signals if s.source == source]


def test_spam_is_blocked_ham_passes() -> None:
    c = classifier()
    sigs = by_source(c.signals(ctx(SPAM)), "classifier")
    assert len(sigs) == 1 and sigs[0].severity in ("hold", "block")
    assert sigs[0].evidence["score"] > sigs[0].evidence["hold"]
    assert sigs[0].evidence["reasons"], "an explained verdict"
    assert by_source(c.signals(ctx(HAM)), "classifier") == []


def test_encrypted_rooms_are_never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    c = classifier()
    read: list[str] = []
    monkeypatch.setattr("bastion.guard.content.message_texts",
                        lambda *a: read.append("read") or [SPAM])  # fmt: skip
    assert c.signals(ctx(SPAM, encrypted=True)) == []
    enc = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": SPAM, "body": SPAM}
    assert c.signals(ctx(etype="m.room.encrypted", content=enc)) == []
    assert read == []
    assert c.signals(ctx(SPAM)) != [] and read == ["read"]


def test_room_thresholds_override_the_server() -> None:
    score = shipped_model().score(SPAM).score
    c = classifier(rooms={"!lax:hs": {"classifier": {"hold": 0.99999, "block": 0.999999}},
                          "!off:hs": {"classifier": {"enabled": False}},
                          "!strict:hs": {"classifier": {"hold": 0.0, "block": 0.0}}})  # fmt: skip
    if score <= 0.99999:
        assert by_source(c.signals(ctx(SPAM, room="!lax:hs")), "classifier") == []
    assert c.signals(ctx(SPAM, room="!off:hs")) == []
    strict = by_source(c.signals(ctx(HAM, room="!strict:hs")), "classifier")
    assert strict and strict[0].severity == "block"


def test_server_thresholds_from_config() -> None:
    c = classifier({"classifier": {"hold": 0.0, "block": 1.0}})
    sigs = by_source(c.signals(ctx(HAM)), "classifier")
    assert sigs and sigs[0].severity == "hold"
    assert c.thresholds() == (True, 0.0, 1.0)


def test_shadow_mode_only_warns() -> None:
    c = classifier({"classifier": {"shadow": True}})
    sigs = by_source(c.signals(ctx(SPAM)), "classifier")
    assert sigs and sigs[0].severity == "warn" and sigs[0].reason.startswith("shadow: would")
    assert sigs[0].evidence["shadow"] is True


def test_guard_or_classifier_off_loads_nothing() -> None:
    for table in ({"enabled": False}, {"classifier": {"enabled": False}}):
        c = classifier(table)
        assert c.model is None and c.signals(ctx(SPAM)) == []


def test_federated_events_scored_unless_turned_off() -> None:
    assert by_source(classifier().signals(ctx(SPAM, local=False)), "classifier")
    off = classifier({"classifier": {"federated": False}})
    assert off.signals(ctx(SPAM, local=False)) == []


def test_html_payload_behind_a_harmless_body_is_scored() -> None:
    content = {"msgtype": "m.text", "body": "hello there",
               "format": "org.matrix.custom.html", "formatted_body": f"<p>{SPAM}</p>"}  # fmt: skip
    assert by_source(classifier().signals(ctx(content=content)), "classifier")


def test_message_texts() -> None:
    assert message_texts("m.room.message", {"body": "a", "format": "org.matrix.custom.html",
                                            "formatted_body": "<b>a</b>"}) == ["a"]  # fmt: skip
    assert message_texts("m.room.topic", {"topic": "free money"}) == ["free money"]
    assert message_texts("m.room.message", {"m.new_content": {"body": "edited"}, "body": "*"}) \
        == ["*", "edited"]  # fmt: skip
    assert message_texts("m.room.message", {"m.text": [{"body": "ext"}]}) == ["ext"]
    assert message_texts("m.room.message", {"body": 5, "formatted_body": ["x"]}) == []
    assert message_texts("m.room.member", {"membership": "join"}) == []


def test_unknown_domains_from_new_accounts() -> None:
    c = classifier()
    link = "have a look at https://totally-new-site.example/page when you can"
    new = by_source(c.signals(ctx(link, created=NOW - DAY)), "classifier.url")
    assert [s.severity for s in new] == ["warn"]
    assert new[0].evidence["hosts"] == ["totally-new-site.example"]
    assert by_source(c.signals(ctx(link, created=NOW - 30 * DAY)), "classifier.url") == []
    assert by_source(c.signals(ctx(link, created=None)), "classifier.url") == []
    known = "docs at https://github.com/matrix-org/matrix-spec when you can"
    assert by_source(c.signals(ctx(known, created=NOW - DAY)), "classifier.url") == []


def test_shortener_is_an_info_signal() -> None:
    sigs = by_source(classifier().signals(ctx("see https://bit.ly/abc ok", created=None)),
                     "classifier.url")  # fmt: skip
    assert [s.severity for s in sigs] == ["info"]


def test_config_errors_name_the_key() -> None:
    for table, key in (({"hold": 2}, "hold"), ({"brands": ["not a domain"]}, "brands"),
                       ({"bogus": 1}, "bogus"), ({"hold": 0.9, "block": 0.5}, "hold")):  # fmt: skip
        with pytest.raises(ValueError, match=key):
            parse_guard_config({"classifier": table})
