"""The pure decision on a received PDU (bastion.federation.pdu.decide), tested directly with the
room builder: S-S API "Checks performed on receipt of a PDU" checks 4 (auth events), 5 (state
before the event) and 6 (current state: soft failure), and rule 5.2 of v8+ (the authoriser's
signature on a restricted join)."""

from __future__ import annotations

import pytest

from bastion.federation.pdu.decide import (
    ACCEPT,
    authoriser_server,
    check_auth_events,
    check_states,
    decide,
    signature_verifier,
)
from tests.support.room_builder import KEY_ID, Room, default_power_levels, server_key, standard_room

ALICE = "@alice:a.example"  # creator
BOB = "@bob:b.example"
CAROL = "@carol:a.example"
EVE = "@eve:e.example"
JAUVS = "join_authorised_via_users_server"
VERSIONS = ["10", "12"]
#: Rules as each room version numbers them: an auth event rejected on receipt; rule 5.2 (v8+).
REJECTED_AUTH_RULE = {"10": "2.3", "12": "3.3"}
AUTHORISER_RULE = {"10": "4.2.1", "12": "5.2.1"}
#: "If the sender's current membership state is not join, reject."
SENDER_JOINED_RULE = {"10": "5", "12": "6"}
NOT_JOINED = "the sender is not joined to the room"


def _public(version: str) -> Room:
    room = standard_room(version, ALICE, join_rule="public")
    room.set_power_levels(default_power_levels(room))
    return room


def _message(room: Room, sender: str, **kw) -> dict:
    return room.build("m.room.message", {"msgtype": "m.text", "body": "hi"}, sender, **kw)


@pytest.mark.parametrize("version", VERSIONS)
def test_accept(version: str) -> None:
    room = _public(version)
    join = room.member(BOB)
    outcome = decide(join, room.auth_events_of(join), room.state, room.state, version)
    assert outcome == ACCEPT
    assert (outcome.outcome, outcome.check, outcome.rule, outcome.message) == (
        "accept", None, None, None,
    )  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_reject_at_check_4_auth_events(version: str) -> None:
    room = _public(version)
    # Bob never joined: his message cites no membership of his.
    msg = _message(room, BOB)
    outcome = decide(msg, room.auth_events_of(msg), room.state, room.state, version)
    assert (outcome.outcome, outcome.check) == ("reject", 4)
    assert (outcome.rule, outcome.reason) == (SENDER_JOINED_RULE[version], NOT_JOINED)
    assert outcome.message == f"auth events: rule {outcome.rule}: {outcome.reason}"


@pytest.mark.parametrize("version", VERSIONS)
def test_reject_at_check_5_state_before(version: str) -> None:
    room = _public(version)
    room.set_member(BOB)
    old_auth = room.auth_events_for(_message(room, BOB))  # cites Bob's join
    room.add("m.room.member", {"membership": "ban"}, ALICE, BOB)
    # On top of the ban, yet citing the join: its auth events allow it, its state does not.
    msg = _message(room, BOB, auth=old_auth)
    assert check_auth_events(msg, room.auth_events_of(msg), version) == ACCEPT
    outcome = decide(msg, room.auth_events_of(msg), room.state, room.state, version)
    assert (outcome.outcome, outcome.check) == ("reject", 5)
    assert (outcome.rule, outcome.reason) == (SENDER_JOINED_RULE[version], NOT_JOINED)
    assert outcome.message == f"state before the event: rule {outcome.rule}: {outcome.reason}"


@pytest.mark.parametrize("version", VERSIONS)
def test_soft_fail_at_check_6_ban_in_current_state(version: str) -> None:
    room = _public(version)
    room.set_member(BOB)
    msg = _message(room, BOB)  # sent while Bob was joined
    before = dict(room.state)
    room.add("m.room.member", {"membership": "ban"}, ALICE, BOB)  # a fork bans him meanwhile
    current = dict(room.state)
    outcome = decide(msg, room.auth_events_of(msg), before, current, version)
    assert (outcome.outcome, outcome.check) == ("soft_fail", 6)
    assert (outcome.rule, outcome.reason) == (SENDER_JOINED_RULE[version], NOT_JOINED)
    assert outcome.message == f"current state: rule {outcome.rule}: {outcome.reason}"
    # A backfilled event (no current state to check against) is accepted.
    assert decide(msg, room.auth_events_of(msg), before, None, version) == ACCEPT
    assert check_states(msg, before, current, version) == outcome


@pytest.mark.parametrize("version", VERSIONS)
def test_rejected_auth_event_rejects_at_check_4(version: str) -> None:
    room = _public(version)
    join = room.set_member(BOB)
    msg = _message(room, BOB)
    auth = room.auth_events_of(msg)
    assert decide(msg, auth, room.state, room.state, version) == ACCEPT
    outcome = decide(msg, auth, room.state, room.state, version,
                     rejected_auth={room.event_id(join)})  # fmt: skip
    assert (outcome.outcome, outcome.check) == ("reject", 4)
    assert outcome.rule == REJECTED_AUTH_RULE[version]
    assert "was rejected" in (outcome.reason or "")


def _restricted_room(version: str) -> Room:
    users = {CAROL: 50} if version == "12" else {ALICE: 100, CAROL: 50}
    room = standard_room(version, ALICE, join_rule="restricted")
    room.set_power_levels(default_power_levels(room, invite=50, users=users))
    room.set_member(CAROL)
    return room


@pytest.mark.parametrize("version", VERSIONS)
def test_restricted_join_authoriser_signature(version: str) -> None:
    room = _restricted_room(version)
    content = {"membership": "join", JAUVS: CAROL}
    signed = room.build("m.room.member", content, EVE, EVE, extra_signers=["a.example"])
    unsigned = room.build("m.room.member", content, EVE, EVE)
    assert authoriser_server(signed) == "a.example"
    good = {KEY_ID: server_key("a.example").verify_key}
    wrong = {KEY_ID: server_key("x.example").verify_key}

    def run(event: dict, verify) -> object:
        return decide(event, room.auth_events_of(event), room.state, room.state, version,
                      verify=verify)  # fmt: skip

    # We are b.example; the authoriser's keys were fetched.
    assert run(signed, signature_verifier(version, "b.example", "a.example", good)) == ACCEPT
    # The authoriser is us: our own keys.
    assert run(signed, signature_verifier(version, "a.example", "a.example", good)) == ACCEPT
    for event, verify in (
        (signed, signature_verifier(version, "b.example", "a.example", wrong)),
        (signed, signature_verifier(version, "b.example", "a.example", {})),  # keys unavailable
        (unsigned, signature_verifier(version, "b.example", "a.example", good)),
        (signed, signature_verifier(version, "b.example", None, good)),  # keys of no one
    ):
        outcome = run(event, verify)
        rule = AUTHORISER_RULE[version]
        assert (outcome.outcome, outcome.check, outcome.rule) == ("reject", 4, rule)
        assert outcome.message and outcome.message.startswith(f"auth events: rule {rule}: ")


def test_restricted_join_signature_checked_at_check_5_too() -> None:
    """A join whose auth events would let it in without the authoriser (Eve was invited) still
    needs the authoriser's signature (rule 5.2 comes first), at each check."""
    room = _restricted_room("12")
    room.set_member(EVE, "invite", sender=CAROL)
    join = room.build("m.room.member", {"membership": "join", JAUVS: CAROL}, EVE, EVE)
    verify = signature_verifier("12", "b.example", "a.example",
                                {KEY_ID: server_key("a.example").verify_key})  # fmt: skip
    outcome = check_states(join, room.state, room.state, "12", verify=verify)
    assert (outcome.outcome, outcome.check, outcome.rule) == ("reject", 5, "5.2.1")


def test_the_sender_server_counts_as_verified_unless_it_is_us() -> None:
    room = _restricted_room("12")
    join = room.build("m.room.member", {"membership": "join"}, EVE, EVE)
    verify = signature_verifier("12", "b.example", "a.example", {})
    assert verify(join, "e.example")  # check 2 verified the sender's server
    assert not verify(join, "a.example")  # no keys
    assert not verify(join, "z.example")  # not the authoriser
    # An event claiming to be from us is checked with our keys, never taken on trust.
    ours = signature_verifier("12", "e.example", "e.example", {})
    assert not ours(join, "e.example")
