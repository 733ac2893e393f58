"""Event hashing, signing, verification and format checks (S-S API "Signing Events",
"Checks performed on receipt of a PDU" step 1)."""

import copy

import pytest

from bastion.core import (
    MatrixError,
    SignatureError,
    check_content_hash,
    compute_event_id,
    compute_room_id_v12,
    redact,
    sign_event,
    signing_key_from_seed,
    verify_event,
)
from bastion.core.events import required_signers, validate_pdu

KEY = signing_key_from_seed(b"\x01" * 32)
OTHER = signing_key_from_seed(b"\x02" * 32)
KEYS = {"example.org": {"ed25519:1": KEY.verify_key}}


def message(version="10", **extra):
    ev = {
        "type": "m.room.message",
        "room_id": "!r:example.org",
        "sender": "@u:example.org",
        "content": {"body": "hello", "msgtype": "m.text"},
        "origin_server_ts": 1700000000000,
        "depth": 5,
        "prev_events": ["$" + "a" * 43],
        "auth_events": ["$" + "b" * 43],
        "hashes": {},
        "signatures": {},
    }
    ev.update(extra)
    return sign_event(ev, version, "example.org", "ed25519:1", KEY)


@pytest.mark.parametrize("version", ["3", "4", "6", "10", "11", "12"])
def test_signed_event_verifies(version):
    ev = message(version)
    assert verify_event(ev, version, KEYS) is True
    validate_pdu(ev, version) if version != "12" else None


def test_tampered_content_fails_hash_but_not_signature():
    ev = message()
    ev["content"]["body"] = "changed"
    # Content is redacted away, so the signature over the redacted form still holds: the PDU
    # pipeline must then carry on with the redacted event (PDU check 3).
    assert verify_event(ev, "10", KEYS) is False
    assert check_content_hash(ev) is False


def test_tampered_kept_field_fails_signature():
    ev = message()
    ev["origin_server_ts"] += 1
    with pytest.raises(SignatureError):
        verify_event(ev, "10", KEYS)


def test_signature_by_unknown_key_or_wrong_key_is_refused():
    ev = message()
    with pytest.raises(SignatureError, match="known key"):
        verify_event(ev, "10", {"example.org": {"ed25519:other": KEY.verify_key}})
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_event(ev, "10", {"example.org": {"ed25519:1": OTHER.verify_key}})
    with pytest.raises(SignatureError, match="not signed by"):
        verify_event({**ev, "signatures": {}}, "10", KEYS)


def test_unknown_algorithms_are_ignored_alongside_a_valid_signature():
    ev = message()
    ev["signatures"]["example.org"]["curve25519:x"] = "abcd"
    assert verify_event(ev, "10", KEYS) is True


def test_several_signatures():
    ev = message()
    ev2 = sign_event(ev, "10", "other.org", "ed25519:k", OTHER)
    assert set(ev2["signatures"]) == {"example.org", "other.org"}
    assert verify_event(ev2, "10", KEYS)
    assert verify_event(ev2, "10", {"other.org": {"ed25519:k": OTHER.verify_key}, **KEYS})


def test_v1_events_need_the_event_id_domain_signature():
    ev = message("1", event_id="$abc:other.org", prev_events=[], auth_events=[])
    assert required_signers(ev, "1") == {"example.org", "other.org"}
    with pytest.raises(SignatureError, match="other.org"):
        verify_event(ev, "1", KEYS)
    assert required_signers(ev, "3") == {"example.org"}


def test_event_id_formats():
    ev = message("3")
    eid3 = compute_event_id(ev, "3")
    eid4 = compute_event_id(ev, "4")
    assert eid3[1:].replace("+", "-").replace("/", "_") == eid4[1:]
    assert len(eid4) == 44


def test_v12_room_id_is_the_create_event_hash():
    create = {
        "type": "m.room.create",
        "state_key": "",
        "sender": "@u:example.org",
        "content": {"room_version": "12"},
        "origin_server_ts": 1,
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
        "hashes": {},
        "signatures": {},
    }
    create = sign_event(create, "12", "example.org", "ed25519:1", KEY)
    validate_pdu(create, "12")
    room_id = compute_room_id_v12(create)
    assert room_id == "!" + compute_event_id(create, "12")[1:]
    validate_pdu(message("12", room_id=room_id), "12")
    with pytest.raises(MatrixError, match="no 'room_id'"):
        validate_pdu({**create, "room_id": room_id}, "12")


def test_redaction_rules_change_with_version():
    pl = {
        "type": "m.room.power_levels",
        "state_key": "",
        "content": {"invite": 0, "ban": 50, "x": 1},
    }
    assert redact(pl, "10")["content"] == {"ban": 50}
    assert redact(pl, "11")["content"] == {"ban": 50, "invite": 0}
    jr = {"type": "m.room.join_rules", "content": {"join_rule": "restricted", "allow": []}}
    assert redact(jr, "7")["content"] == {"join_rule": "restricted"}
    assert redact(jr, "8")["content"] == {"join_rule": "restricted", "allow": []}
    aliases = {"type": "m.room.aliases", "content": {"aliases": ["#a:b"]}}
    assert redact(aliases, "5")["content"] == {"aliases": ["#a:b"]}
    assert redact(aliases, "6")["content"] == {}
    create = {
        "type": "m.room.create",
        "content": {"creator": "@a:b", "m.federate": False},
        "origin": "b",
    }
    assert redact(create, "10") == {
        "type": "m.room.create",
        "content": {"creator": "@a:b"},
        "origin": "b",
    }
    assert redact(create, "11") == {"type": "m.room.create", "content": create["content"]}


def test_redact_does_not_mutate_its_input():
    ev = message()
    before = copy.deepcopy(ev)
    redact(ev, "10")
    sign_event(ev, "10", "x", "ed25519:1", KEY)
    assert ev == before


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"type": 5}, "'type'"),
        ({"content": []}, "'content'"),
        ({"sender": "nobody"}, "user ID"),
        ({"origin_server_ts": "1"}, "origin_server_ts"),
        ({"depth": -1}, "depth"),
        ({"depth": 2**53}, "range"),
        ({"prev_events": "x"}, "'prev_events'"),
        ({"prev_events": ["$" + "a" * 43] * 21}, "more than 20"),
        ({"auth_events": ["$" + "a" * 43] * 11}, "more than 10"),
        ({"auth_events": ["$nothash"]}, "URL-safe"),
        ({"hashes": {}}, "sha256"),
        ({"signatures": {"x": "y"}}, "signatures"),
        ({"state_key": 1}, "state_key"),
        ({"room_id": "r"}, "room ID"),
        ({"unsigned": []}, "unsigned"),
        ({"content": {"body": "x" * 70000}}, "65536"),
        ({"type": "t" * 256}, "255 bytes"),
        ({"content": {"n": 1.5}}, "float"),
    ],
)
def test_validate_pdu_names_the_problem(change, match):
    ev = {**message(), **change}
    with pytest.raises(MatrixError, match=match):
        validate_pdu(ev, "10")


def test_oversize_is_m_too_large():
    with pytest.raises(MatrixError) as e:
        validate_pdu(message(content={"body": "x" * 70000}), "11")
    assert (e.value.errcode, e.value.status) == ("M_TOO_LARGE", 413)


def test_v1_reference_format():
    ev = message(
        "1",
        event_id="$e:example.org",
        prev_events=[["$p:example.org", {"sha256": "x"}]],
        auth_events=[],
    )
    validate_pdu(ev, "1")
    with pytest.raises(MatrixError, match="pairs"):
        validate_pdu({**ev, "prev_events": ["$p:example.org"]}, "1")


def test_unknown_room_version():
    with pytest.raises(MatrixError) as e:
        compute_event_id(message(), "13")
    assert e.value.errcode == "M_UNSUPPORTED_ROOM_VERSION"
