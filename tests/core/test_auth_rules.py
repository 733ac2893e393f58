"""The authorisation rules, rule by rule (room versions' "Authorisation rules").

Test names carry the v12 rule number unless the rule only exists in older versions (then the
number of the version tested). Each rule has at least one accepted and one rejected event.
Every decision is taken twice — against the room state (:func:`check_auth_against_state`) and
against the event's own auth events (:func:`check_auth`) — and both must agree.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from bastion.core.auth_rules import (
    AuthResult,
    auth_types_for_event,
    check_auth,
    check_auth_against_state,
    is_valid_user_id,
)
from bastion.core.base64 import encode_base64
from bastion.core.power_levels import (
    CREATOR_POWER_LEVEL,
    get_user_power_level,
    named_level,
    parse_power_level,
    required_power_level,
)
from bastion.core.room_versions import get_room_version
from bastion.core.signing import sign_json
from bastion.errors import MatrixError
from tests.support.room_builder import Room, default_power_levels, standard_room

ALICE = "@alice:a.example"  # creator
BOB = "@bob:b.example"
CAROL = "@carol:a.example"
DAN = "@dan:c.example"
ALL_VERSIONS = [str(n) for n in range(1, 13)]


def decide(room: Room, event: dict, **kwargs: Any) -> AuthResult:
    """Check ``event`` against the room state and against its auth events; both must agree."""
    by_state = check_auth_against_state(event, room.state, room.version, **kwargs)
    by_auth = check_auth(event, room.auth_events_of(event), room.version, **kwargs)
    assert (by_state.allowed, by_state.rule) == (by_auth.allowed, by_auth.rule), (by_state, by_auth)
    return by_state


def allowed(room: Room, event: dict, rule: str | None = None, **kwargs: Any) -> None:
    result = decide(room, event, **kwargs)
    assert result.allowed, result
    if rule is not None:
        assert result.rule == rule, result


def denied(room: Room, event: dict, rule: str | None = None, **kwargs: Any) -> None:
    result = decide(room, event, **kwargs)
    assert not result.allowed, result
    if rule is not None:
        assert result.rule == rule, result


def room_with_pl(version: str = "12", join_rule: str = "invite", **pl: Any) -> Room:
    room = standard_room(version, ALICE, join_rule=None)
    room.set_power_levels(default_power_levels(room, **pl))
    room.set_join_rule(join_rule)
    return room


# --- AuthResult -------------------------------------------------------------------------------


def test_auth_result_truthiness() -> None:
    assert AuthResult(True, "11")
    assert not AuthResult(False, "6", "no")


# --- Rule 1: m.room.create --------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_rule_1_5_create_event_allowed(version: str) -> None:
    room = Room(version, ALICE)
    result = check_auth(room.create, [], version)
    assert result.allowed
    assert result.rule == ("1.4" if version == "11" else "1.5")
    assert check_auth_against_state(room.create, {}, version).allowed


def test_rule_1_1_create_with_prev_events_rejected_v12() -> None:
    room = Room("12", ALICE)
    create = dict(room.create, prev_events=["$x"])
    assert check_auth(create, [], "12").rule == "1.1"
    assert not check_auth(create, [], "12")


def test_rule_1_2_create_with_room_id_rejected_v12() -> None:
    room = Room("12", ALICE)
    assert check_auth(room.create, [], "12")
    result = check_auth(dict(room.create, room_id="!x:a.example"), [], "12")
    assert not result and result.rule == "1.2"


def test_rule_1_2_room_id_domain_must_match_sender_v11() -> None:
    assert check_auth(Room("11", ALICE).create, [], "11")
    bad = Room("11", ALICE, room_id="!room:elsewhere.example").create
    result = check_auth(bad, [], "11")
    assert not result and result.rule == "1.2"


def test_rule_1_3_unknown_room_version_rejected() -> None:
    for version in ("1", "10", "12"):
        assert check_auth(
            Room(version, ALICE, create_content={"room_version": "9"}).create, [], version
        )
        bad = Room(version, ALICE, create_content={"room_version": "999"}).create
        result = check_auth(bad, [], version)
        assert not result and result.rule == "1.3"
    assert not check_auth(Room("12", ALICE, create_content={"room_version": 12}).create, [], "12")


@pytest.mark.parametrize("extra", [[BOB], [], [BOB, CAROL]])
def test_rule_1_4_additional_creators_valid_v12(extra: list) -> None:
    create = Room("12", ALICE, create_content={"additional_creators": extra}).create
    assert check_auth(create, [], "12")


@pytest.mark.parametrize("extra", ["@bob:b.example", ["bob"], [3], [None], ["@bob:bad host!"], {}])
def test_rule_1_4_additional_creators_invalid_rejected_v12(extra: Any) -> None:
    create = Room("12", ALICE, create_content={"additional_creators": extra}).create
    result = check_auth(create, [], "12")
    assert not result and result.rule == "1.4"


def test_rule_1_4_create_needs_creator_v10() -> None:
    create = Room("10", ALICE).create
    assert check_auth(create, [], "10")
    no_creator = copy.deepcopy(create)
    del no_creator["content"]["creator"]
    result = check_auth(no_creator, [], "10")
    assert not result and result.rule == "1.4"
    # v11 dropped the rule: the creator is the sender.
    assert check_auth(Room("11", ALICE).create, [], "11")


# --- Rule 2 (v12): the room ID is the create event's ID ---------------------------------------


def test_rule_2_room_id_must_be_create_event_id_v12() -> None:
    room = standard_room("12", ALICE, members={BOB: "join"})
    msg = room.build("m.room.message", {"body": "hi"}, BOB)
    allowed(room, msg, "11")
    other = Room("12", "@mallory:m.example")
    forged = room.build("m.room.message", {"body": "hi"}, BOB, room_id=other.room_id)
    assert not check_auth_against_state(forged, room.state, "12")
    assert check_auth_against_state(forged, room.state, "12").rule == "2"
    result = check_auth(forged, room.auth_events_of(msg), "12")
    assert not result and result.rule == "2"


def test_rule_2_create_event_must_not_be_rejected_v12() -> None:
    room = standard_room("12", ALICE, members={BOB: "join"})
    msg = room.build("m.room.message", {"body": "hi"}, BOB)
    create_id = room.event_id(room.create)
    result = check_auth(msg, room.auth_events_of(msg), "12", rejected={create_id})
    assert not result and result.rule == "2"


def test_rule_2_create_must_be_supplied_v12() -> None:
    room = standard_room("12", ALICE, members={BOB: "join"})
    msg = room.build("m.room.message", {"body": "hi"}, BOB)
    without_create = [e for e in room.auth_events_of(msg) if e["type"] != "m.room.create"]
    assert check_auth(msg, without_create, "12").rule == "2"
    state = {k: v for k, v in room.state.items() if k[0] != "m.room.create"}
    assert check_auth_against_state(msg, state, "12").rule == "2"


def test_rule_2_create_event_id_kwarg_v12() -> None:
    room = standard_room("12", ALICE, members={BOB: "join"})
    msg = room.build("m.room.message", {"body": "hi"}, BOB)
    create_id = room.event_id(room.create)
    assert check_auth_against_state(msg, room.state, "12", create_event_id=create_id)
    assert not check_auth_against_state(msg, room.state, "12", create_event_id="$wrong")


# --- Rule 3: the auth events themselves -------------------------------------------------------


def _message_room(version: str) -> tuple[Room, dict]:
    room = standard_room(version, ALICE, members={BOB: "join"})
    room.set_power_levels(default_power_levels(room))
    return room, room.build("m.room.message", {"body": "hi"}, BOB)


@pytest.mark.parametrize("version", ["6", "11", "12"])
def test_rule_3_1_duplicate_auth_entries_rejected(version: str) -> None:
    room, msg = _message_room(version)
    assert check_auth(msg, room.auth_events_of(msg), version)
    old_pl = room.build("m.room.power_levels", default_power_levels(room, ban=60), state_key="")
    dup = room.build("m.room.message", {"body": "hi"}, BOB,
                     auth=room.auth_events_for(msg) + [old_pl])  # fmt: skip
    result = check_auth(dup, room.auth_events_of(dup), version)
    assert not result
    assert result.rule == ("3.1" if version == "12" else "2.1")


@pytest.mark.parametrize("version", ["6", "11", "12"])
def test_rule_3_2_unexpected_auth_entry_rejected(version: str) -> None:
    room, msg = _message_room(version)
    extra = room.build("m.room.message", {"body": "hi"}, BOB,
                       auth=room.auth_events_for(msg) + [room.state[("m.room.join_rules", "")]])  # fmt: skip
    result = check_auth(extra, room.auth_events_of(extra), version)
    assert not result and result.rule == ("3.2" if version == "12" else "2.2")


def test_rule_3_2_create_event_must_not_be_listed_v12() -> None:
    room, msg = _message_room("12")
    listed = room.build("m.room.message", {"body": "hi"}, BOB,
                        auth=room.auth_events_for(msg) + [room.create])  # fmt: skip
    result = check_auth(listed, room.auth_events_of(listed), "12")
    assert not result and result.rule == "3.2"


@pytest.mark.parametrize("version", ["6", "11", "12"])
def test_rule_3_3_rejected_auth_entry_rejected(version: str) -> None:
    room, msg = _message_room(version)
    pl_id = room.event_id(room.state[("m.room.power_levels", "")])
    assert check_auth(msg, room.auth_events_of(msg), version, rejected={"$other"})
    result = check_auth(msg, room.auth_events_of(msg), version, rejected={pl_id})
    assert not result and result.rule == ("3.3" if version == "12" else "2.3")


@pytest.mark.parametrize("version", ["1", "6", "11"])
def test_rule_3_4_create_must_be_among_auth_events_v1_to_v11(version: str) -> None:
    room, msg = _message_room(version)
    no_create = room.build("m.room.message", {"body": "hi"}, BOB,
                           auth=[e for e in room.auth_events_for(msg) if e["type"] != "m.room.create"])  # fmt: skip
    result = check_auth(no_create, room.auth_events_of(no_create), version)
    assert not result and result.rule == "2.4"


@pytest.mark.parametrize("version", ["6", "11", "12"])
def test_rule_3_5_auth_entry_from_other_room_rejected(version: str) -> None:
    room, msg = _message_room(version)
    other = standard_room(
        version,
        ALICE,
        members={BOB: "join"},
        room_id="!other:a.example",
        create_content={"other": True},
    )
    foreign_member = other.state[("m.room.member", BOB)]
    auth = [e for e in room.auth_events_for(msg) if e["type"] != "m.room.member"] + [foreign_member]
    room.events[room.event_id(foreign_member)] = foreign_member
    bad = room.build("m.room.message", {"body": "hi"}, BOB, auth=auth)
    result = check_auth(bad, room.auth_events_of(bad), version)
    assert not result and result.rule == ("3.5" if version == "12" else "2.5")


def test_rule_3_missing_auth_event_rejected() -> None:
    room, msg = _message_room("12")
    supplied = [e for e in room.auth_events_of(msg) if e["type"] != "m.room.power_levels"]
    result = check_auth(msg, supplied, "12")
    assert not result and "not supplied" in (result.reason or "")
    assert check_auth(msg, room.auth_events_of(msg) + [room.state[JR]], "12")  # extras ignored


JR = ("m.room.join_rules", "")


# --- Rule 4: m.federate -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "6", "12"])
def test_rule_4_unfederated_room_rejects_other_servers(version: str) -> None:
    room = standard_room(version, ALICE, create_content={"m.federate": False},
                         join_rule="public", members={BOB: "join", CAROL: "join"})  # fmt: skip
    allowed(room, room.build("m.room.message", {"body": "hi"}, CAROL))
    expected = {"1": "3", "6": "3", "12": "4"}[version]
    denied(room, room.build("m.room.message", {"body": "hi"}, BOB), expected)
    denied(room, room.member(DAN), expected)


def test_rule_4_federate_true_allows_other_servers() -> None:
    room = standard_room("12", ALICE, create_content={"m.federate": True}, join_rule="public")
    allowed(room, room.member(BOB), "5.3.6")


# --- v1–v5 rule 4: m.room.aliases --------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "5"])
def test_rule_4_v1_aliases_state_key_is_sender_domain(version: str) -> None:
    room = standard_room(version, ALICE, members={BOB: "join"})
    room.set_power_levels(default_power_levels(room))
    # 4.3: allowed even though bob's power level is below state_default — and even unjoined.
    allowed(room, room.build("m.room.aliases", {"aliases": ["#x:b.example"]}, BOB, "b.example"),
            "4.3")  # fmt: skip
    allowed(room, room.build("m.room.aliases", {"aliases": []}, DAN, "c.example"), "4.3")
    # 4.2
    denied(room, room.build("m.room.aliases", {"aliases": []}, BOB, "a.example"), "4.2")
    # 4.1
    denied(room, room.build("m.room.aliases", {"aliases": []}, BOB), "4.1")


def test_rule_v6_aliases_are_ordinary_state() -> None:
    room = standard_room("6", ALICE, members={BOB: "join"})
    room.set_power_levels(default_power_levels(room))
    denied(room, room.build("m.room.aliases", {"aliases": []}, BOB, "b.example"), "7")
    allowed(room, room.build("m.room.aliases", {"aliases": []}, ALICE, "a.example"), "10")


# --- Rule 5: m.room.member --------------------------------------------------------------------


def test_rule_5_1_member_needs_state_key_and_membership() -> None:
    room = standard_room("12", ALICE, join_rule="public")
    allowed(room, room.member(BOB))
    denied(room, room.build("m.room.member", {}, BOB, BOB), "5.1")
    denied(room, room.build("m.room.member", {"membership": "join"}, BOB), "5.1")


def test_rule_5_1_numbering_v6() -> None:
    room = standard_room("6", ALICE, join_rule="public")
    denied(room, room.build("m.room.member", {}, BOB, BOB), "4.1")


def _restricted_room(version: str = "12", rule: str = "restricted") -> Room:
    room = room_with_pl(version, join_rule=rule, invite=50, users={CAROL: 50} if version == "12"
                        else {ALICE: 100, CAROL: 50})  # fmt: skip
    room.set_member(CAROL)
    room.set_member(DAN)
    return room


def test_rule_5_2_jauvs_event_must_be_signed_by_authoriser_server() -> None:
    room = _restricted_room()
    content = {"join_authorised_via_users_server": CAROL}
    unsigned = room.build("m.room.member", {"membership": "join", **content}, BOB, BOB)
    denied(room, unsigned, "5.2.1")
    signed = room.build("m.room.member", {"membership": "join", **content}, BOB, BOB,
                        extra_signers=["a.example"])  # fmt: skip
    allowed(room, signed, "5.3.5.3")


def test_rule_5_2_jauvs_signature_callback() -> None:
    room = _restricted_room()
    content = {"membership": "join", "join_authorised_via_users_server": CAROL}
    event = room.build("m.room.member", content, BOB, BOB, extra_signers=["a.example"])
    seen = []

    def verifier(ev: dict, server: str) -> bool:
        seen.append(server)
        return server == "a.example" and ev is event

    allowed(room, event, "5.3.5.3", verify_signature=verifier)
    assert seen == ["a.example", "a.example"]
    denied(room, event, "5.2.1", verify_signature=lambda ev, server: False)


def test_rule_5_2_applies_to_any_membership_v8() -> None:
    room = _restricted_room("8")
    leave = room.build("m.room.member", {"membership": "leave",
                                         "join_authorised_via_users_server": CAROL}, DAN, DAN)  # fmt: skip
    denied(room, leave, "4.2.1")
    # v7 has no such rule.
    room7 = standard_room("7", ALICE, members={DAN: "join"})
    allowed(room7, room7.build("m.room.member", {"membership": "leave",
                                                 "join_authorised_via_users_server": CAROL}, DAN, DAN))  # fmt: skip


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_rule_5_3_1_creator_first_join_allowed(version: str) -> None:
    room = Room(version, ALICE)
    number = {"12": "5.3.1"}.get(version, "4.3.1" if int(version) >= 8 else
                                 "4.2.1" if int(version) >= 6 else "5.2.1")  # fmt: skip
    allowed(room, room.member(ALICE), number)
    denied(room, room.member(BOB))  # not the creator: no join rules → rejected


def test_rule_5_3_1_needs_create_as_only_prev_event() -> None:
    room = Room("12", ALICE)
    first = room.member(ALICE)
    later = room.build("m.room.member", {"membership": "join"}, ALICE, ALICE,
                       prev=[room.create, first])  # fmt: skip
    denied(room, later, "5.3.7")


def test_rule_5_3_1_v10_creator_is_content_creator() -> None:
    room = Room("10", "@server:a.example", create_content={"creator": CAROL})
    allowed(room, room.member(CAROL), "4.3.1")
    denied(room, room.member("@server:a.example"))


def test_rule_5_3_2_cannot_join_someone_else() -> None:
    room = standard_room("12", ALICE, join_rule="public")
    allowed(room, room.member(BOB), "5.3.6")
    denied(room, room.member(BOB, sender=ALICE), "5.3.2")


def test_rule_5_3_3_banned_user_cannot_join_v11() -> None:
    room = standard_room("11", ALICE, join_rule="public", members={BOB: "ban", DAN: "leave"})
    allowed(room, room.member(DAN), "4.3.6")
    denied(room, room.member(BOB), "4.3.3")


@pytest.mark.parametrize("rule", ["invite", "knock"])
def test_rule_5_3_4_invite_or_knock_room_needs_invite(rule: str) -> None:
    room = standard_room("12", ALICE, join_rule=rule, members={BOB: "invite", DAN: "knock"})
    allowed(room, room.member(BOB), "5.3.4")
    denied(room, room.member(DAN), "5.3.7")
    denied(room, room.member(CAROL), "5.3.7")


def test_rule_5_3_4_knock_join_rule_unknown_before_v7() -> None:
    room = standard_room("6", ALICE, join_rule="knock", members={BOB: "invite"})
    denied(room, room.member(BOB), "4.2.6")
    room7 = standard_room("7", ALICE, join_rule="knock", members={BOB: "invite"})
    allowed(room7, room7.member(BOB), "4.2.4")


def _jauvs_join(room: Room, user: str, authoriser: str) -> dict:
    content = {"membership": "join", "join_authorised_via_users_server": authoriser}
    return room.build("m.room.member", content, user, user,
                      extra_signers=[authoriser.split(":", 1)[1]])  # fmt: skip


@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
def test_rule_5_3_5_restricted_join(rule: str) -> None:
    room = _restricted_room("12", rule)
    room.set_member(BOB, "invite")
    allowed(room, room.member(BOB), "5.3.5.1")  # 5.3.5.1: invited
    allowed(room, _jauvs_join(room, "@eve:e.example", CAROL), "5.3.5.3")
    # 5.3.5.2: the authoriser lacks the invite level / is not joined / is absent
    denied(room, _jauvs_join(room, "@eve:e.example", DAN), "5.3.5.2")
    denied(room, _jauvs_join(room, "@eve:e.example", "@nobody:a.example"), "5.3.5.2")
    denied(room, room.member("@eve:e.example"), "5.3.5.2")


def test_rule_5_3_5_creator_authorises_v12() -> None:
    room = _restricted_room("12")
    allowed(room, _jauvs_join(room, "@eve:e.example", ALICE), "5.3.5.3")


def test_rule_5_3_5_restricted_needs_v8_and_knock_restricted_v10() -> None:
    room7 = _restricted_room("7")
    denied(room7, room7.member("@eve:e.example"), "4.2.6")
    room9 = _restricted_room("9", "knock_restricted")
    denied(room9, _jauvs_join(room9, "@eve:e.example", CAROL), "4.3.7")
    room9r = _restricted_room("9", "restricted")
    allowed(room9r, _jauvs_join(room9r, "@eve:e.example", CAROL), "4.3.5.3")
    room10 = _restricted_room("10", "knock_restricted")
    allowed(room10, _jauvs_join(room10, "@eve:e.example", CAROL), "4.3.5.3")


def test_rule_5_3_6_public_room_join_allowed() -> None:
    room = standard_room("12", ALICE, join_rule="public")
    allowed(room, room.member(BOB), "5.3.6")


def test_rule_5_3_7_other_join_rules_rejected() -> None:
    room = standard_room("12", ALICE, join_rule="private", members={BOB: "invite"})
    denied(room, room.member(BOB), "5.3.7")
    room.set_join_rule("public")
    allowed(room, room.member(BOB))
    # No join rules event at all: no rule lets anyone but the creator in (DIVERGENCES.md D2).
    bare = standard_room("12", ALICE, join_rule=None, members={BOB: "invite"})
    denied(bare, bare.member(BOB), "5.3.7")


# --- 5.4.1: third-party invites ---------------------------------------------------------------

IS_KEY = SigningKey(b"\x01" * 32)
IS_PUBLIC = encode_base64(bytes(IS_KEY.verify_key))


def _tpi_room(version: str = "12", **tpi_content: Any) -> Room:
    room = standard_room(version, ALICE, members={CAROL: "join"})
    room.add("m.room.third_party_invite",
             tpi_content or {"display_name": "b...", "public_key": IS_PUBLIC}, CAROL, "tok")  # fmt: skip
    return room


def _tpi_invite(room: Room, target: str = BOB, sender: str = CAROL, *, key: SigningKey = IS_KEY,
                signed: Any = None, **fields: Any) -> dict:  # fmt: skip
    if signed is None:
        signed = sign_json({"mxid": target, "token": "tok", **fields}, "id.example",
                           "ed25519:0", key)  # fmt: skip
    content = {
        "membership": "invite",
        "third_party_invite": {"display_name": "b", "signed": signed},
    }
    return room.build("m.room.member", content, sender, target)


def test_rule_5_4_1_7_third_party_invite_signed_by_invite_key() -> None:
    room = _tpi_room()
    allowed(room, _tpi_invite(room), "5.4.1.7")


def test_rule_5_4_1_7_public_keys_list() -> None:
    other = encode_base64(bytes(SigningKey(b"\x02" * 32).verify_key))
    room = _tpi_room(
        public_key=other, public_keys=[{"public_key": other}, {"public_key": IS_PUBLIC}]
    )
    allowed(room, _tpi_invite(room), "5.4.1.7")


def test_rule_5_4_1_8_third_party_invite_wrong_key_rejected() -> None:
    room = _tpi_room()
    denied(room, _tpi_invite(room, key=SigningKey(b"\x03" * 32)), "5.4.1.8")
    forged = sign_json({"mxid": BOB, "token": "tok"}, "id.example", "ed25519:0", IS_KEY)
    forged["mxid"] = BOB  # unchanged: still valid
    allowed(room, _tpi_invite(room, signed=forged))
    tampered = dict(forged, extra="x")
    denied(room, _tpi_invite(room, signed=tampered), "5.4.1.8")
    unsigned = {"mxid": BOB, "token": "tok"}
    denied(room, _tpi_invite(room, signed=unsigned), "5.4.1.8")


def test_rule_5_4_1_1_third_party_invite_target_banned() -> None:
    room = _tpi_room()
    room.set_member(BOB, "ban", sender=ALICE)
    denied(room, _tpi_invite(room), "5.4.1.1")


def test_rule_5_4_1_2_third_party_invite_needs_signed() -> None:
    room = _tpi_room()
    event = room.build("m.room.member", {"membership": "invite",
                                         "third_party_invite": {"display_name": "b"}}, CAROL, BOB)  # fmt: skip
    denied(room, event, "5.4.1.2")
    event = room.build("m.room.member", {"membership": "invite", "third_party_invite": "x"},
                       CAROL, BOB)  # fmt: skip
    denied(room, event, "5.4.1.2")


def test_rule_5_4_1_3_signed_needs_mxid_and_token() -> None:
    room = _tpi_room()
    signed = sign_json({"token": "tok"}, "id.example", "ed25519:0", IS_KEY)
    denied(room, _tpi_invite(room, signed=signed), "5.4.1.3")


def test_rule_5_4_1_4_mxid_must_be_state_key() -> None:
    room = _tpi_room()
    signed = sign_json({"mxid": DAN, "token": "tok"}, "id.example", "ed25519:0", IS_KEY)
    denied(room, _tpi_invite(room, signed=signed), "5.4.1.4")


def test_rule_5_4_1_5_token_must_name_an_invite() -> None:
    room = _tpi_room()
    signed = sign_json({"mxid": BOB, "token": "nope"}, "id.example", "ed25519:0", IS_KEY)
    denied(room, _tpi_invite(room, signed=signed), "5.4.1.5")


def test_rule_5_4_1_6_sender_must_have_sent_the_invite() -> None:
    room = _tpi_room()
    room.set_member(ALICE)
    denied(room, _tpi_invite(room, sender=ALICE), "5.4.1.6")


def test_rule_5_4_2_inviter_must_be_joined() -> None:
    room = standard_room("12", ALICE, members={CAROL: "leave"})
    allowed(room, room.member(BOB, "invite", sender=ALICE), "5.4.4")
    denied(room, room.member(BOB, "invite", sender=CAROL), "5.4.2")


@pytest.mark.parametrize("membership", ["join", "ban"])
def test_rule_5_4_3_cannot_invite_joined_or_banned(membership: str) -> None:
    room = standard_room("12", ALICE, members={BOB: membership, DAN: "leave"})
    allowed(room, room.member(DAN, "invite", sender=ALICE))
    denied(room, room.member(BOB, "invite", sender=ALICE), "5.4.3")


def test_rule_5_4_4_invite_level() -> None:
    room = room_with_pl("12", invite=50, users={CAROL: 50, DAN: 10})
    room.set_member(CAROL)
    room.set_member(DAN)
    allowed(room, room.member(BOB, "invite", sender=CAROL), "5.4.4")
    denied(room, room.member(BOB, "invite", sender=DAN), "5.4.5")


# --- 5.5 leave, 5.6 ban -----------------------------------------------------------------------


@pytest.mark.parametrize("membership", ["join", "invite", "knock"])
def test_rule_5_5_1_user_may_leave(membership: str) -> None:
    room = standard_room("12", ALICE, members={BOB: membership})
    allowed(room, room.member(BOB, "leave"), "5.5.1")


@pytest.mark.parametrize("membership", ["leave", "ban", None])
def test_rule_5_5_1_cannot_leave_without_membership(membership: str | None) -> None:
    room = standard_room("12", ALICE, members={BOB: membership} if membership else {})
    denied(room, room.member(BOB, "leave"), "5.5.1")


def test_rule_5_5_1_knock_leave_needs_v7() -> None:
    room = standard_room("6", ALICE, members={BOB: "knock"})  # forced state: impossible in v6
    denied(room, room.member(BOB, "leave"), "4.4.1")


def test_rule_5_5_2_kicker_must_be_joined() -> None:
    room = standard_room("12", ALICE, members={BOB: "join", CAROL: "invite"})
    denied(room, room.member(BOB, "leave", sender=CAROL), "5.5.2")


def test_rule_5_5_3_unban_needs_ban_level() -> None:
    room = room_with_pl("12", ban=60, kick=10, users={CAROL: 50})
    room.set_member(CAROL)
    room.set_member(BOB, "ban", sender=ALICE)
    denied(room, room.member(BOB, "leave", sender=CAROL), "5.5.3")
    allowed(room, room.member(BOB, "leave", sender=ALICE), "5.5.4")


def test_rule_5_5_4_kick_needs_kick_level_and_higher_level() -> None:
    room = room_with_pl("12", users={CAROL: 50, DAN: 50, "@eve:e.example": 10})
    for user in (CAROL, DAN, "@eve:e.example"):
        room.set_member(user)
    allowed(room, room.member("@eve:e.example", "leave", sender=CAROL), "5.5.4")
    denied(room, room.member(DAN, "leave", sender=CAROL), "5.5.5")  # equal level
    denied(room, room.member(CAROL, "leave", sender="@eve:e.example"), "5.5.5")
    denied(room, room.member(ALICE, "leave", sender=CAROL), "5.5.5")  # creator: infinite


def test_rule_5_6_1_banner_must_be_joined() -> None:
    room = standard_room("12", ALICE, members={CAROL: "leave"})
    denied(room, room.member(BOB, "ban", sender=CAROL), "5.6.1")


def test_rule_5_6_2_ban_needs_ban_level_and_higher_level() -> None:
    room = room_with_pl("12", users={CAROL: 50, DAN: 49})
    room.set_member(CAROL)
    room.set_member(DAN)
    allowed(room, room.member(BOB, "ban", sender=CAROL), "5.6.2")
    allowed(room, room.member(DAN, "ban", sender=CAROL), "5.6.2")
    denied(room, room.member(BOB, "ban", sender=DAN), "5.6.3")
    denied(room, room.member(CAROL, "ban", sender=CAROL), "5.6.3")


def test_rule_5_6_v1_numbering() -> None:
    room = standard_room("1", ALICE, members={CAROL: "join"})
    allowed(room, room.member(CAROL, "ban", sender=ALICE), "5.5.2")
    denied(room, room.member(ALICE, "ban", sender=CAROL), "5.5.3")


# --- 5.7 knock, 5.8 unknown -------------------------------------------------------------------


def test_rule_5_7_1_knock_needs_knock_join_rule() -> None:
    room = standard_room("12", ALICE, join_rule="knock")
    allowed(room, room.member(BOB, "knock"), "5.7.3")
    room.set_join_rule("invite")
    denied(room, room.member(BOB, "knock"), "5.7.1")


def test_rule_5_7_1_knock_restricted_v10_not_v9() -> None:
    room10 = standard_room("10", ALICE, join_rule="knock_restricted")
    allowed(room10, room10.member(BOB, "knock"), "4.7.3")
    room9 = standard_room("9", ALICE, join_rule="knock_restricted")
    denied(room9, room9.member(BOB, "knock"), "4.7.1")


def test_rule_5_7_2_knock_for_someone_else_rejected() -> None:
    room = standard_room("12", ALICE, join_rule="knock", members={CAROL: "join"})
    denied(room, room.member(BOB, "knock", sender=CAROL), "5.7.2")


@pytest.mark.parametrize("membership", ["ban", "invite", "join"])
def test_rule_5_7_4_knock_when_banned_invited_or_joined_rejected(membership: str) -> None:
    room = standard_room("12", ALICE, join_rule="knock", members={BOB: membership, DAN: "leave"})
    allowed(room, room.member(DAN, "knock"), "5.7.3")
    denied(room, room.member(BOB, "knock"), "5.7.4")


def test_rule_5_7_knock_unknown_before_v7() -> None:
    room = standard_room("6", ALICE, join_rule="knock")
    denied(room, room.member(BOB, "knock"), "4.6")
    room7 = standard_room("7", ALICE, join_rule="knock")
    allowed(room7, room7.member(BOB, "knock"), "4.6.3")


@pytest.mark.parametrize("membership", ["foo", "", 3, None, ["join"]])
def test_rule_5_8_unknown_membership_rejected(membership: Any) -> None:
    room = standard_room("12", ALICE, join_rule="public")
    denied(room, room.build("m.room.member", {"membership": membership}, BOB, BOB), "5.8")


# --- Rules 6–9 --------------------------------------------------------------------------------


@pytest.mark.parametrize("membership", ["invite", "leave", "ban", "knock", None])
def test_rule_6_sender_must_be_joined(membership: str | None) -> None:
    room = standard_room("12", ALICE, members={BOB: membership} if membership else {})
    allowed(room, room.build("m.room.message", {"body": "hi"}, ALICE), "11")
    denied(room, room.build("m.room.message", {"body": "hi"}, BOB), "6")


def test_rule_7_third_party_invite_needs_invite_level() -> None:
    room = room_with_pl("12", invite=20, users={CAROL: 20, DAN: 19}, events={
        "m.room.third_party_invite": 100})  # fmt: skip
    room.set_member(CAROL)
    room.set_member(DAN)
    # The event's own level (100) is not consulted: rule 7 decides first.
    allowed(room, room.build("m.room.third_party_invite", {"public_key": IS_PUBLIC}, CAROL, "t"),
            "7.1")  # fmt: skip
    denied(
        room, room.build("m.room.third_party_invite", {"public_key": IS_PUBLIC}, DAN, "t"), "7.1"
    )


def test_rule_8_required_power_level() -> None:
    room = room_with_pl("12", events={"m.room.name": 10, "m.room.message": 5},
                        users={CAROL: 10, DAN: 4})  # fmt: skip
    room.set_member(CAROL)
    room.set_member(DAN)
    allowed(room, room.build("m.room.name", {"name": "x"}, CAROL, ""))
    denied(room, room.build("m.room.topic", {"topic": "x"}, CAROL, ""), "8")  # state_default 50
    allowed(room, room.build("m.room.message", {"body": "x"}, CAROL))
    denied(room, room.build("m.room.message", {"body": "x"}, DAN), "8")
    allowed(room, room.build("org.example.event", {}, DAN))  # events_default 0


def test_rule_8_redaction_needs_only_its_event_level_v3_plus() -> None:
    room = room_with_pl("11", redact=100, users={ALICE: 100})
    room.set_member(DAN)
    allowed(room, room.build("m.room.redaction", {"redacts": "$x"}, DAN), "10")
    room2 = room_with_pl("11", events={"m.room.redaction": 10})
    room2.set_member(DAN)
    denied(room2, room2.build("m.room.redaction", {"redacts": "$x"}, DAN), "7")


def test_rule_8_default_levels_without_power_levels_v11() -> None:
    room = standard_room("11", ALICE, members={BOB: "join"})
    allowed(room, room.build("m.room.message", {"body": "x"}, BOB))
    denied(room, room.build("m.room.topic", {"topic": "x"}, BOB, ""), "7")
    allowed(room, room.build("m.room.topic", {"topic": "x"}, ALICE, ""))  # creator: 100


def test_rule_9_at_state_key_must_be_sender() -> None:
    room = room_with_pl("12", state_default=0)
    room.set_member(BOB)
    allowed(room, room.build("org.example.state", {}, BOB, BOB))
    allowed(room, room.build("org.example.state", {}, BOB, "bob"))
    denied(room, room.build("org.example.state", {}, BOB, CAROL), "9")
    denied(room, room.build("org.example.state", {}, ALICE, BOB), "9")  # even for the creator


# --- Rule 10: m.room.power_levels -------------------------------------------------------------


def _pl_room(version: str = "12", **pl: Any) -> Room:
    room = room_with_pl(version, **pl)
    for user in (CAROL, DAN):
        room.set_member(user)
    return room


def _pl_change(room: Room, sender: str = ALICE, **changes: Any) -> dict:
    content = copy.deepcopy(room.state[("m.room.power_levels", "")]["content"])
    for key, value in changes.items():
        if value is None:
            content.pop(key, None)
        else:
            content[key] = value
    return room.build("m.room.power_levels", content, sender, "")


@pytest.mark.parametrize("name", ["users_default", "events_default", "state_default", "ban",
                                  "redact", "kick", "invite"])  # fmt: skip
def test_rule_10_1_named_levels_must_be_integers_v10(name: str) -> None:
    room = _pl_room("10")
    allowed(room, _pl_change(room, **{name: 7}))
    for bad in ("7", True, None, [7]):
        content = dict(room.state[("m.room.power_levels", "")]["content"], **{name: bad})
        event = room.build("m.room.power_levels", content, ALICE, "")
        denied(room, event, "9.1")


def test_rule_10_1_stringy_levels_allowed_v9() -> None:
    room = _pl_room("9")
    allowed(room, _pl_change(room, ban=" +050 ", kick="007"), "9.8")
    denied(room, _pl_change(room, ban="fifty"), "9")
    denied(room, _pl_change(room, ban="1_0"), "9")
    denied(room, _pl_change(room, ban=True), "9")


def test_rule_10_2_events_and_notifications_integers() -> None:
    room = _pl_room("12")
    allowed(room, _pl_change(room, events={"m.room.name": 10}, notifications={"room": 20}))
    denied(room, _pl_change(room, events={"m.room.name": "10"}), "10.2")
    denied(room, _pl_change(room, events=[]), "10.2")
    denied(room, _pl_change(room, notifications={"room": None}), "10.2")


def test_rule_10_3_users_must_map_user_ids_to_integers() -> None:
    room = _pl_room("12")
    allowed(room, _pl_change(room, users={CAROL: 5}))
    denied(room, _pl_change(room, users={"carol": 5}), "10.3")
    denied(room, _pl_change(room, users={CAROL: "5"}), "10.3")
    denied(room, _pl_change(room, users=[CAROL]), "10.3")


def test_rule_10_3_users_stringy_v1() -> None:
    room = _pl_room("1")
    allowed(room, _pl_change(room, users={ALICE: 100, CAROL: "5"}), "10.8")
    denied(room, _pl_change(room, users={ALICE: 100, CAROL: "five"}), "10.1")
    content = dict(room.state[("m.room.power_levels", "")]["content"])
    for value, ok in ((5.9, True), (float("inf"), False), (float("nan"), False)):  # floaty v1–v5
        content["users"] = {ALICE: 100, CAROL: value}
        event = room.build("m.room.power_levels", content, ALICE, "", sign=False)
        assert decide(room, event).allowed is ok


def test_rule_10_4_creators_not_in_users_v12() -> None:
    room = Room("12", ALICE, create_content={"additional_creators": [BOB]})
    room.set_member(ALICE)
    allowed(room, room.build("m.room.power_levels", {"users": {CAROL: 50}}, ALICE, ""), "10.5")
    denied(room, room.build("m.room.power_levels", {"users": {ALICE: 100}}, ALICE, ""), "10.4")
    denied(room, room.build("m.room.power_levels", {"users": {BOB: 100}}, ALICE, ""), "10.4")
    # v11: the creator is listed as usual.
    room11 = Room("11", ALICE)
    room11.set_member(ALICE)
    allowed(room11, room11.build("m.room.power_levels", {"users": {ALICE: 100}}, ALICE, ""), "9.4")


def test_rule_10_5_first_power_levels_allowed() -> None:
    room = standard_room("12", ALICE)
    allowed(room, room.build("m.room.power_levels", {"users": {CAROL: 1000}, "ban": 1}, ALICE, ""),
            "10.5")  # fmt: skip


def test_rule_10_6_named_level_changes_within_sender_level() -> None:
    room = _pl_room("12", users={CAROL: 60, DAN: 40}, kick=70)
    allowed(room, _pl_change(room, CAROL, ban=60), "10.11")
    allowed(room, _pl_change(room, CAROL, redact=None), "10.11")  # removing 50 ≤ 60
    denied(room, _pl_change(room, CAROL, ban=61), "10.6.2")
    denied(room, _pl_change(room, CAROL, kick=10), "10.6.1")
    denied(room, _pl_change(room, CAROL, kick=None), "10.6.1")
    denied(room, _pl_change(room, DAN, users_default=1), "8")  # needs state_default first


def test_rule_10_7_events_entries_changed_or_removed() -> None:
    room = _pl_room("12", users={CAROL: 60}, events={"m.room.name": 70, "m.room.topic": 20},
                    state_default=60)  # fmt: skip
    allowed(room, _pl_change(room, CAROL, events={"m.room.name": 70}), "10.11")
    denied(room, _pl_change(room, CAROL, events={"m.room.name": 20, "m.room.topic": 20}), "10.7.1")
    denied(room, _pl_change(room, CAROL, events={"m.room.topic": 20}), "10.7.1")


def test_rule_10_8_events_entries_added_or_changed() -> None:
    room = _pl_room("12", users={CAROL: 60}, state_default=60)
    allowed(room, _pl_change(room, CAROL, events={"m.room.name": 60}), "10.11")
    denied(room, _pl_change(room, CAROL, events={"m.room.name": 61}), "10.8.1")


def test_rule_10_8_notifications_checked_v6_not_v5() -> None:
    for version, ok in (("5", True), ("6", False)):
        room = _pl_room(version, users={ALICE: 100, CAROL: 60}, state_default=60)
        result = decide(room, _pl_change(room, CAROL, notifications={"room": 90}))
        assert result.allowed is ok, result
        assert result.rule == ("10.8" if ok else "9.5.1")


def test_rule_10_9_users_changed_or_removed_below_sender() -> None:
    room = _pl_room("12", users={CAROL: 60, DAN: 60, "@eve:e.example": 59}, state_default=60)
    allowed(room, _pl_change(room, CAROL, users={CAROL: 60, DAN: 60}), "10.11")  # eve removed
    allowed(room, _pl_change(room, CAROL, users={CAROL: 10, DAN: 60, "@eve:e.example": 59}))
    denied(room, _pl_change(room, CAROL, users={CAROL: 60, DAN: 10, "@eve:e.example": 59}),
           "10.9.1")  # fmt: skip
    denied(room, _pl_change(room, CAROL, users={CAROL: 60, "@eve:e.example": 59}), "10.9.1")


def test_rule_10_10_users_added_or_changed_not_above_sender() -> None:
    room = _pl_room("12", users={CAROL: 60}, state_default=60)
    allowed(room, _pl_change(room, CAROL, users={CAROL: 60, DAN: 60}), "10.11")
    denied(room, _pl_change(room, CAROL, users={CAROL: 60, DAN: 61}), "10.10.1")
    denied(room, _pl_change(room, CAROL, users={CAROL: 61}), "10.10.1")


def test_rule_10_creator_may_set_any_level_v12() -> None:
    room = _pl_room("12")
    allowed(room, _pl_change(room, ALICE, ban=2**53 - 1, users={CAROL: 2**53 - 1}), "10.11")


def test_rule_10_numbering_v1_to_v9() -> None:
    room = _pl_room("6", users={ALICE: 100, CAROL: 60}, state_default=60)
    denied(room, _pl_change(room, CAROL, ban=61), "9.3.2")
    denied(room, _pl_change(room, CAROL, users={CAROL: 60, ALICE: 1}), "9.6.1")
    denied(room, _pl_change(room, CAROL, users={CAROL: 60, ALICE: 100, DAN: 61}), "9.7.1")


# --- v1–v2 rule 11: m.room.redaction ----------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_rule_11_v1_redaction_needs_redact_level_or_same_domain(version: str) -> None:
    room = _pl_room(version, users={ALICE: 100, CAROL: 50, DAN: 0})
    room.set_member(BOB)
    allowed(room, room.build("m.room.redaction", {}, CAROL, redacts="$1:b.example"), "11.1")
    allowed(room, room.build("m.room.redaction", {}, BOB, redacts="$1:b.example"), "11.2")
    denied(room, room.build("m.room.redaction", {}, BOB, redacts="$1:a.example"), "11.3")
    denied(room, room.build("m.room.redaction", {}, BOB), "11.3")


def test_rule_11_v3_redaction_not_gated_by_redact_level() -> None:
    room = _pl_room("3", users={ALICE: 100})
    room.set_member(BOB)
    allowed(room, room.build("m.room.redaction", {}, BOB, redacts="$x"), "11")


# --- Rule 11: otherwise allow ------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_rule_11_otherwise_allow(version: str) -> None:
    room = standard_room(version, ALICE, members={BOB: "join"})
    number = {"1": "12", "2": "12"}.get(
        version, "11" if int(version) <= 5 or version == "12" else "10"
    )
    allowed(room, room.build("m.room.message", {"body": "hi"}, BOB), number)


# --- Auth events selection --------------------------------------------------------------------


def test_auth_types_for_event_selection() -> None:
    room = standard_room("11", ALICE)
    join = room.build("m.room.member", {"membership": "join",
                                        "join_authorised_via_users_server": CAROL}, BOB, BOB)  # fmt: skip
    assert auth_types_for_event(join, "11") == [
        ("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", BOB),
        ("m.room.join_rules", ""), ("m.room.member", CAROL),
    ]  # fmt: skip
    assert ("m.room.member", CAROL) not in auth_types_for_event(join, "7")
    assert ("m.room.create", "") not in auth_types_for_event(join, "12")
    assert auth_types_for_event(room.create, "11") == []
    leave = room.member(BOB, "leave", sender=ALICE)
    assert auth_types_for_event(leave, "11") == [
        ("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", ALICE),
        ("m.room.member", BOB),
    ]  # fmt: skip
    tpi = {"type": "m.room.member", "sender": ALICE, "state_key": BOB, "content": {
        "membership": "invite", "third_party_invite": {"signed": {"token": "t"}}}}  # fmt: skip
    assert ("m.room.third_party_invite", "t") in auth_types_for_event(tpi, "12")
    msg = room.build("m.room.message", {}, BOB)
    assert auth_types_for_event(msg, "12") == [("m.room.power_levels", ""), ("m.room.member", BOB)]


@given(st.dictionaries(st.sampled_from(["type", "sender", "state_key", "content"]),
                       st.none() | st.integers() | st.text(max_size=5)
                       | st.dictionaries(st.text(max_size=8), st.none() | st.text(max_size=5))))  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_auth_types_for_event_never_raises(event: dict) -> None:
    assert isinstance(auth_types_for_event(event, "12"), list)


# --- Power levels ----------------------------------------------------------------------------


def test_power_levels_defaults_without_power_levels_event() -> None:
    for version in ("1", "10", "11"):
        room = standard_room(version, ALICE)
        assert get_user_power_level(ALICE, room.state, version) == 100
        assert get_user_power_level(BOB, room.state, version) == 0
    room = standard_room("12", ALICE, create_content={"additional_creators": [BOB]})
    assert get_user_power_level(ALICE, room.state, "12") == CREATOR_POWER_LEVEL
    assert get_user_power_level(BOB, room.state, "12") > 2**53
    assert get_user_power_level(CAROL, room.state, "12") == 0


def test_power_levels_users_and_users_default() -> None:
    room = room_with_pl("11", users={ALICE: 100, CAROL: 7}, users_default=3)
    assert get_user_power_level(CAROL, room.state, "11") == 7
    assert get_user_power_level(DAN, room.state, "11") == 3
    room12 = room_with_pl("12", users={CAROL: 7}, users_default=3)
    assert get_user_power_level(ALICE, room12.state, "12") == CREATOR_POWER_LEVEL
    # v10 creator semantics: content.creator
    room10 = Room("10", "@s:a.example", create_content={"creator": CAROL})
    assert get_user_power_level(CAROL, room10.state, "10") == 100
    assert get_user_power_level("@s:a.example", room10.state, "10") == 0
    assert get_user_power_level(CAROL, {}, "10") == 0


def test_power_levels_value_parsing() -> None:
    v1, v6, v10 = (get_room_version(v) for v in ("1", "6", "10"))
    assert parse_power_level(" +050 ", v6) == 50
    assert parse_power_level("-7", v6) == -7
    assert parse_power_level("0100", v1) == 100
    assert parse_power_level("1e3", v6) is None
    assert parse_power_level("١٢", v6) is None
    assert parse_power_level(True, v1) is None
    assert parse_power_level(5.114698e4, v1) == 51146
    assert parse_power_level(-5.9, v1) == -5
    assert parse_power_level(float("nan"), v1) is None
    assert parse_power_level(50.5, v6) is None  # v6+ are canonical JSON: no floats
    assert parse_power_level("50", v10) is None
    assert parse_power_level(50, v10) == 50


def test_power_levels_named_and_required_levels() -> None:
    rv = get_room_version("12")
    assert [named_level(None, n, rv) for n in ("ban", "kick", "redact", "invite")] == [
        50,
        50,
        50,
        0,
    ]
    assert named_level({"ban": 7}, "ban", rv) == 7
    assert required_power_level("m.room.topic", True, None, rv) == 50
    assert required_power_level("m.room.message", False, None, rv) == 0
    content = {"events": {"m.room.message": 9}, "state_default": 1, "events_default": 2}
    assert required_power_level("m.room.message", False, content, rv) == 9
    assert required_power_level("m.room.topic", True, content, rv) == 1
    assert required_power_level("x", False, content, rv) == 2


# --- Malformed input --------------------------------------------------------------------------


def test_non_dict_event_raises_matrix_error() -> None:
    for fn in (lambda e: check_auth(e, [], "12"), lambda e: check_auth_against_state(e, {}, "12"),
               lambda e: auth_types_for_event(e, "12")):  # fmt: skip
        with pytest.raises(MatrixError):
            fn(["not", "an", "event"])


def test_malformed_events_are_rejected_with_a_reason() -> None:
    room = standard_room("12", ALICE, members={BOB: "join"})
    good = room.build("m.room.message", {"body": "hi"}, BOB)
    for key, value in (("content", "x"), ("sender", 5), ("sender", "nocolon"), ("type", None),
                       ("state_key", 3)):  # fmt: skip
        bad = dict(good, **{key: value})
        result = check_auth_against_state(bad, room.state, "12")
        assert not result and result.reason
        assert not check_auth(bad, room.auth_events_of(good), "12")
    assert not check_auth(dict(good, auth_events="x"), room.auth_events_of(good), "12")
    assert not check_auth(good, "x", "12")  # type: ignore[arg-type]


_int = st.integers(-(2**53) + 1, 2**53 - 1)
_leaf = st.none() | st.booleans() | _int | st.text(max_size=6)
_junk = (
    _leaf | st.lists(_leaf, max_size=2) | st.dictionaries(st.text(max_size=6), _leaf, max_size=3)
)


@given(
    etype=st.sampled_from(
        [
            "m.room.member",
            "m.room.power_levels",
            "m.room.create",
            "m.room.third_party_invite",
            "m.room.redaction",
            "m.room.aliases",
            "m.room.message",
        ]
    ),  # fmt: skip
    content=st.dictionaries(
        st.sampled_from(
            [
                "membership",
                "users",
                "events",
                "ban",
                "notifications",
                "third_party_invite",
                "join_authorised_via_users_server",
                "additional_creators",
                "room_version",
                "creator",
            ]
        ),  # fmt: skip
        _junk,
        max_size=4,
    ),
    state_key=st.none() | st.text(max_size=4) | st.just(BOB),
    version=st.sampled_from(ALL_VERSIONS),
    pl_content=st.dictionaries(
        st.sampled_from(["users", "events", "ban", "users_default"]), _junk, max_size=3
    ),  # fmt: skip
)
@settings(max_examples=300, deadline=None)
def test_malformed_content_never_raises(etype: str, content: dict, state_key: Any, version: str,
                                        pl_content: dict) -> None:  # fmt: skip
    room = standard_room(version, ALICE, members={BOB: "join"}, join_rule="restricted")
    room.state[("m.room.power_levels", "")] = {"type": "m.room.power_levels", "state_key": "",
                                                "sender": ALICE, "content": pl_content,
                                                "room_id": room.room_id, "event_id": "$pl:a"}  # fmt: skip
    room.state[("m.room.third_party_invite", "t")] = {"type": "m.room.third_party_invite",
                                                       "state_key": "t", "sender": BOB,
                                                       "room_id": room.room_id, "event_id": "$t:a",
                                                       "content": {"public_key": 5}}  # fmt: skip
    for e in list(room.state.values())[-2:]:
        room.events[room.event_id(e)] = e
    event = room.build(etype, content, BOB, state_key)
    assert isinstance(check_auth_against_state(event, room.state, version), AuthResult)
    assert isinstance(check_auth(event, room.auth_events_of(event), version), AuthResult)


def test_is_valid_user_id() -> None:
    for good in (ALICE, "@a:1.2.3.4:8448", "@a:[::1]", "@Historical=ok:x.y"):
        assert is_valid_user_id(good), good
    for bad in ("alice:a", "@alice", "@:a.example", "@a:bad host", 5, "@a:" + "x" * 300):
        assert not is_valid_user_id(bad), bad


# --- Speed (state resolution calls check_auth_against_state in a hot loop) --------------------


def test_check_auth_against_state_is_fast_v12() -> None:
    import time

    room = _pl_room("12", users={CAROL: 60})
    events = [room.build("m.room.topic", {"topic": str(i)}, CAROL, "") for i in range(200)]
    start = time.perf_counter()
    for _ in range(10):
        for event in events:
            assert check_auth_against_state(event, room.state, "12")
    per_check = (time.perf_counter() - start) / 2000
    assert per_check < 200e-6, f"{per_check * 1e6:.1f} µs per check"
