"""Differential tests: our auth rules against Synapse's on generated rooms and events.

Hypothesis draws a room (create event with or without ``m.federate`` and ``additional_creators``,
members in every membership, optional power levels with random values, join rules including
restricted/knock/knock_restricted with allow lists, an optional third-party invite) and a
candidate event (every membership transition, third-party invites, power-level changes, join
rules, arbitrary state, messages, redactions, aliases, create events), then asserts that our
allow/deny decision equals Synapse's:

* against the room state — :func:`check_auth_against_state` vs
  ``check_state_dependent_auth_rules``;
* against the event's auth events, sometimes tampered with (an extra entry, a duplicate, no
  create event, a rejected entry, an entry from another room) — :func:`check_auth` vs
  ``check_state_independent_auth_rules`` followed by ``check_state_dependent_auth_rules``.

Where Synapse departs from the spec, the spec wins: such mismatches are excused only when the
case matches a condition listed in ``DIVERGENCES.md`` ("Auth rules"), see :func:`_divergence`.
Inputs on which Synapse raises something other than an auth error give no verdict and are
skipped.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from nacl.signing import SigningKey

from bastion.core.auth_rules import auth_types_for_event, check_auth, check_auth_against_state
from bastion.core.base64 import encode_base64
from bastion.core.events import compute_event_id, compute_room_id_v12
from bastion.core.room_versions import EventIdFormat, get_room_version
from bastion.core.signing import sign_json
from tests.differential.synapse_oracle import (
    OracleCrash,
    synapse_allows_against_state,
    synapse_allows_with_auth_events,
)

CREATOR = "@alice:a.example"
USERS = [CREATOR, "@bob:b.example", "@carol:a.example", "@dan:c.example", "@eve:b.example"]
OUTSIDER = "@zed:z.example"
LEVELS = [0, 1, 10, 49, 50, 51, 75, 99, 100, 101]
NAMED = ["users_default", "events_default", "state_default", "ban", "kick", "redact", "invite"]
EVENT_TYPES = [
    "m.room.message", "m.room.topic", "m.room.power_levels", "m.room.member",
    "m.room.third_party_invite", "m.room.redaction", "m.room.join_rules", "org.example.custom",
]  # fmt: skip
JOIN_RULES = ["public", "invite", "knock", "restricted", "knock_restricted", "private"]
IS_KEY = SigningKey(b"\x07" * 32)
OTHER_KEY = SigningKey(b"\x08" * 32)
IS_PUBLIC = encode_base64(bytes(IS_KEY.verify_key))
OTHER_PUBLIC = encode_base64(bytes(OTHER_KEY.verify_key))

# Versions 10–12 are the focus; the others are cheap, so they run too.
VERSIONS = st.sampled_from(["10", "11", "12"] * 3 + [str(n) for n in range(1, 10)])
# BASTION_AUTH_EXAMPLES=50000 runs a long, randomised hunt instead of the quick CI run.
_EXAMPLES = int(os.environ.get("BASTION_AUTH_EXAMPLES", "1500"))
SETTINGS = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize=_EXAMPLES <= 1500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _domain(user_id: str) -> str:
    return user_id.split(":", 1)[1]


class Scenario:
    """A room state and a counter for unique event fields."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.rv = get_room_version(version)
        self.n = 0
        self.state: dict[tuple[str, str], dict] = {}
        self.room_id = "!room:a.example"
        self.create_id = ""

    def ref(self, event_id: str) -> Any:
        if self.rv.event_id_format is EventIdFormat.V1_OPAQUE:
            return [event_id, {"sha256": "AAAA"}]
        return event_id

    def event(
        self,
        etype: str,
        sender: str,
        content: dict,
        state_key: str | None = None,
        *,
        prev: list[str] | None = None,
        auth: list[str] | None = None,
        signers: tuple[str, ...] = (),
        **extra: Any,
    ) -> dict:
        self.n += 1
        ev: dict[str, Any] = {
            "type": etype,
            "sender": sender,
            "content": content,
            "room_id": self.room_id,
            "origin_server_ts": 1000 + self.n,
            "depth": self.n,
            "hashes": {"sha256": "AAAA"},
            "signatures": {s: {"ed25519:k": "c2ln"} for s in (_domain(sender), *signers)},
            "prev_events": [self.ref(p) for p in (prev if prev is not None else ["$p"])],
            "auth_events": [self.ref(a) for a in (auth or [])],
            **extra,
        }
        if state_key is not None:
            ev["state_key"] = state_key
        if self.rv.event_id_format is EventIdFormat.V1_OPAQUE:
            ev["event_id"] = f"${self.n}:{_domain(sender)}"
        return ev

    def eid(self, event: dict) -> str:
        if self.rv.event_id_format is EventIdFormat.V1_OPAQUE:
            return event["event_id"]
        return compute_event_id(event, self.version)

    def put(self, event: dict) -> dict:
        self.state[(event["type"], event["state_key"])] = event
        return event


def _level(rv: Any) -> st.SearchStrategy[Any]:
    """A power level as the room version lets it be written (stringy v1–v9, floaty v1–v5)."""
    base = st.sampled_from(LEVELS)
    if rv.enforce_int_power_levels:
        return base
    forms = [base, base.map(str), base.map(lambda n: f" +{n:03d} ")]
    if rv.event_id_format is EventIdFormat.V1_OPAQUE:  # v3–v5 IDs: we hash canonical JSON only
        forms.append(base.map(lambda n: n + 0.5))
    return st.one_of(*forms)


@st.composite
def power_levels_content(draw: Any, rv: Any, creators: frozenset[str]) -> dict:
    content: dict[str, Any] = {}
    for name in NAMED:
        if draw(st.booleans()):
            content[name] = draw(_level(rv))
    if draw(st.booleans()):
        eligible = [u for u in USERS + [OUTSIDER] if not (rv.privileged_creators and u in creators)]
        content["users"] = draw(st.dictionaries(st.sampled_from(eligible), _level(rv), max_size=4))
    if draw(st.booleans()):
        content["events"] = draw(
            st.dictionaries(st.sampled_from(EVENT_TYPES), _level(rv), max_size=4)
        )
    if draw(st.booleans()):
        content["notifications"] = {"room": draw(_level(rv))}
    return content


@st.composite
def scenarios(draw: Any) -> tuple[Scenario, dict, str]:
    """A room state and a candidate event; returns (scenario, candidate, tamper mode)."""
    sc = Scenario(draw(VERSIONS))
    rv = sc.rv

    # m.room.create
    content: dict[str, Any] = {"room_version": sc.version}
    if not rv.implicit_room_creator:
        content["creator"] = CREATOR
    federate = draw(st.sampled_from([None, None, True, False]))
    if federate is not None:
        content["m.federate"] = federate
    if rv.privileged_creators and draw(st.booleans()):
        content["additional_creators"] = draw(
            st.lists(st.sampled_from(USERS[1:]), max_size=2, unique=True)
        )
    create = sc.event("m.room.create", CREATOR, content, "", prev=[])
    if rv.room_id_is_create_hash:
        del create["room_id"]
        sc.room_id = compute_room_id_v12(create)
    sc.create_id = sc.eid(create)
    sc.put(create)
    creators = frozenset([CREATOR, *content.get("additional_creators", [])])

    # Memberships
    memberships = [None, "join", "join", "invite", "leave", "ban"]
    if rv.knock_join_rule:
        memberships.append("knock")
    for user in USERS:
        m = (
            "join"
            if user == CREATOR and draw(st.integers(0, 4))
            else draw(st.sampled_from(memberships))
        )
        if m is not None:
            sender = user if m in ("join", "leave", "knock") else CREATOR
            sc.put(sc.event("m.room.member", sender, {"membership": m}, user))

    # Power levels, join rules, third-party invite
    if draw(st.integers(0, 3)):
        sc.put(sc.event("m.room.power_levels", CREATOR,
                        draw(power_levels_content(rv, creators)), ""))  # fmt: skip
    if draw(st.integers(0, 4)):
        jr: dict[str, Any] = {"join_rule": draw(st.sampled_from(JOIN_RULES))}
        if jr["join_rule"] in ("restricted", "knock_restricted") and draw(st.booleans()):
            jr["allow"] = [{"type": "m.room_membership", "room_id": "!other:b.example"}]
        sc.put(sc.event("m.room.join_rules", CREATOR, jr, ""))
    if draw(st.booleans()):
        key_content = draw(
            st.sampled_from(
                [
                    {"public_key": IS_PUBLIC},
                    {"public_key": OTHER_PUBLIC, "public_keys": [{"public_key": IS_PUBLIC}]},
                    {"public_key": OTHER_PUBLIC},
                ]
            )
        )
        tpi_sender = draw(st.sampled_from(USERS))
        sc.put(sc.event("m.room.third_party_invite", tpi_sender,
                        {"display_name": "x", **key_content}, "tok"))  # fmt: skip

    candidate = draw(candidate_events(sc, creators))
    tamper = draw(
        st.sampled_from(["none"] * 6 + ["extra", "duplicate", "no_create", "rejected", "room"])
    )
    return sc, candidate, tamper


@st.composite
def candidate_events(draw: Any, sc: Scenario, creators: frozenset[str]) -> dict:
    rv = sc.rv
    kinds = ["member"] * 6 + ["pl"] * 3 + ["message", "state", "tpi", "redaction", "join_rules"]
    if rv.special_case_aliases_auth:
        kinds.append("aliases")
    kinds.append("create")
    kind = draw(st.sampled_from(kinds))
    sender = draw(st.sampled_from(USERS + [OUTSIDER]))
    prev = [sc.create_id] if draw(st.integers(0, 5)) == 0 else ["$p"]

    if kind == "member":
        target = draw(st.sampled_from([sender, sender] + USERS + [OUTSIDER]))
        membership = draw(st.sampled_from(["join", "invite", "leave", "ban", "knock", "foo"]))
        content: dict[str, Any] = {"membership": membership}
        signers: tuple[str, ...] = ()
        if membership == "join" and rv.restricted_join_rule and draw(st.booleans()):
            authoriser = draw(st.sampled_from(USERS + [OUTSIDER]))
            content["join_authorised_via_users_server"] = authoriser
            signers = (_domain(authoriser),)
        if membership == "invite" and draw(st.integers(0, 2)) == 0:
            signed = {
                "mxid": draw(st.sampled_from([target, target, OUTSIDER])),
                "token": draw(st.sampled_from(["tok", "tok", "other"])),
            }
            key = draw(st.sampled_from([IS_KEY, IS_KEY, OTHER_KEY]))
            signed = sign_json(signed, "id.example", "ed25519:0", key)
            content["third_party_invite"] = {"display_name": "x", "signed": signed}
        return sc.event("m.room.member", sender, content, target, prev=prev, signers=signers)
    if kind == "pl":
        current = sc.state.get(("m.room.power_levels", ""))
        content = copy.deepcopy(current["content"]) if current and draw(st.booleans()) else {}
        fresh = draw(power_levels_content(rv, creators))
        for key, value in fresh.items():
            if draw(st.booleans()):
                content[key] = value
        for key in list(content):
            if draw(st.integers(0, 5)) == 0:
                del content[key]
        if rv.privileged_creators and draw(st.integers(0, 9)) == 0:
            content.setdefault("users", {})[draw(st.sampled_from(sorted(creators)))] = 100
        if draw(st.integers(0, 19)) == 0:
            if rv.enforce_int_power_levels:
                content[draw(st.sampled_from(NAMED))] = draw(st.sampled_from(["50", 50.5, None]))
            else:  # Synapse validates only `users` values in v1–v9 (see DIVERGENCES.md)
                content["users"] = {"@bob:b.example": "fifty"}
        if draw(st.integers(0, 19)) == 0:
            content["users"] = {"notauser": 10}
        return sc.event("m.room.power_levels", sender, content, "", prev=prev)
    if kind == "message":
        return sc.event("m.room.message", sender, {"body": "hi"}, prev=prev)
    if kind == "state":
        etype = draw(st.sampled_from(["m.room.topic", "org.example.custom", "m.room.name"]))
        state_key = draw(st.sampled_from(["", sender, "@bob:b.example", "@", "x"]))
        return sc.event(etype, sender, {"topic": "t"}, state_key, prev=prev)
    if kind == "tpi":
        return sc.event("m.room.third_party_invite", sender, {"public_key": IS_PUBLIC}, "tok2",
                        prev=prev)  # fmt: skip
    if kind == "redaction":
        target_id = draw(st.sampled_from(["$9:" + _domain(sender), "$9:elsewhere.example"]))
        if rv.redacts_in_content:
            return sc.event("m.room.redaction", sender, {"redacts": target_id}, prev=prev)
        return sc.event("m.room.redaction", sender, {}, prev=prev, redacts=target_id)
    if kind == "join_rules":
        rule = draw(st.sampled_from(JOIN_RULES))
        return sc.event("m.room.join_rules", sender, {"join_rule": rule}, "", prev=prev)
    if kind == "aliases":
        state_key = draw(st.sampled_from([_domain(sender), "elsewhere.example", None]))
        return sc.event("m.room.aliases", sender, {"aliases": ["#a:x"]}, state_key, prev=prev)
    # A (second) create event: rule 1 only.
    content = {"room_version": draw(st.sampled_from([sc.version, "999"]))}
    if not rv.implicit_room_creator and draw(st.integers(0, 3)):
        content["creator"] = sender
    if rv.privileged_creators and draw(st.booleans()):
        content["additional_creators"] = draw(
            st.sampled_from([["@bob:b.example"], "@bob:b.example", ["bob"], [3]])
        )
    ev = sc.event("m.room.create", sender, content, "", prev=draw(st.sampled_from([[], ["$p"]])))
    if rv.room_id_is_create_hash:
        if draw(st.integers(0, 3)):
            del ev["room_id"]
    elif draw(st.integers(0, 3)) == 0:
        ev["room_id"] = "!room:elsewhere.example"
    return ev


def _divergence(sc: Scenario, event: dict, state: dict, ours: bool, theirs: bool) -> str | None:
    """The DIVERGENCES.md entry explaining a mismatch, if the case is a documented one."""
    create = state.get(("m.room.create", ""))
    if event.get("type") != "m.room.member" or create is None:
        return None
    membership = event["content"].get("membership")
    # D1: Synapse also applies m.federate to the *target* of a membership event.
    if (
        ours
        and not theirs
        and create["content"].get("m.federate") is False
        and _domain(event["state_key"]) != _domain(create["sender"])
    ):
        return "D1"
    # D2: with no m.room.join_rules event Synapse assumes "invite"; the spec names no default.
    if not ours and theirs and membership == "join" and ("m.room.join_rules", "") not in state:
        return "D2"
    return None


def _compare(label: str, sc: Scenario, event: dict, ours: Any, theirs: bool, state: dict) -> None:
    detail = ours.reason[:30] if sc.version == "12" and ours.rule == "3" else ""
    hypothesis_event(f"{'allow' if ours else 'deny'} {ours.rule} {detail}")
    if bool(ours) == theirs:
        return
    excuse = _divergence(sc, event, state, bool(ours), theirs)
    if excuse:
        note(f"known divergence {excuse}")
        hypothesis_event(f"divergence {excuse}")
        return
    raise AssertionError(
        f"{label}: room v{sc.version}: bastion says {'ALLOW' if ours else 'DENY'} "
        f"(rule {ours.rule}: {ours.reason}); synapse says {'ALLOW' if theirs else 'DENY'}\n"
        f"event: {event}\nstate: {list(state.values())}"
    )


@SETTINGS
@given(scenarios())
def test_auth_against_state_matches_synapse(case: tuple[Scenario, dict, str]) -> None:
    sc, event, _ = case
    ours = check_auth_against_state(event, sc.state, sc.version)
    try:
        theirs = synapse_allows_against_state(event, sc.state.values(), sc.version)
    except OracleCrash as crash:
        note(f"synapse crashed: {crash}")
        hypothesis_event("synapse crashed")
        assume(False)
        return
    _compare("against state", sc, event, ours, theirs, sc.state)


def _with_auth_events(sc: Scenario, event: dict, tamper: str) -> tuple[dict, list[dict], set]:
    """Point ``event``'s auth_events at the selection from the state, then tamper with them."""
    selected = [sc.state[k] for k in auth_types_for_event(event, sc.version) if k in sc.state]
    rejected: set[str] = set()
    if tamper == "extra":
        extras = [e for k, e in sc.state.items() if e not in selected and k[0] != "m.room.create"]
        if extras:
            selected.append(extras[0])
    elif tamper == "duplicate" and selected:
        twin = copy.deepcopy(selected[-1])
        twin["origin_server_ts"] += 1
        if "event_id" in twin:
            twin["event_id"] = twin["event_id"].replace("$", "$dup", 1)
        selected.append(twin)
    elif tamper == "no_create":
        selected = [e for e in selected if e["type"] != "m.room.create"]
    elif tamper == "rejected" and selected:
        rejected.add(sc.eid(selected[-1]))
    elif tamper == "room" and selected:
        alien = copy.deepcopy(selected[-1])
        alien["room_id"] = "!elsewhere:b.example"
        if "event_id" in alien:
            alien["event_id"] = alien["event_id"].replace("$", "$alien", 1)
        selected[-1] = alien
    event = dict(event)
    event["auth_events"] = [sc.ref(sc.eid(e)) for e in selected]
    supplied = list(selected)
    if sc.rv.room_id_is_create_hash:
        supplied.append(sc.state[("m.room.create", "")])
    return event, supplied, rejected


@SETTINGS
@given(scenarios())
def test_auth_with_auth_events_matches_synapse(case: tuple[Scenario, dict, str]) -> None:
    sc, event, tamper = case
    if event["type"] == "m.room.create":
        supplied: list[dict] = []
        rejected: set[str] = set()
    else:
        event, supplied, rejected = _with_auth_events(sc, event, tamper)
    ours = check_auth(event, supplied, sc.version, rejected=rejected)
    try:
        theirs = synapse_allows_with_auth_events(event, supplied, sc.version, rejected)
    except OracleCrash as crash:
        note(f"synapse crashed: {crash}")
        hypothesis_event("synapse crashed")
        assume(False)
        return
    auth_state = {(e["type"], e["state_key"]): e for e in supplied}
    _compare(f"with auth events (tamper={tamper})", sc, event, ours, theirs, auth_state)
