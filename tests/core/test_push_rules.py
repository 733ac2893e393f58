"""Push rule evaluation (C-S API "Push Notifications" → "Conditions", "Predefined Rules"): the
spec's examples, the default rules in order, a user's rules merged in, and robustness against
any event or rule shape."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.push_rules import (
    PushContext,
    body_glob_match,
    compile_condition,
    compile_ruleset,
    parse_dotted_path,
    summarise,
)
from bastion.services.push_rules import effective_ruleset, empty_document, put_rule, set_attribute

ME = "@me:example.org"
OTHER = "@other:example.org"
ROOM = "!room:example.org"
CTX = PushContext(member_count=5, display_name="Alice Smith", sender_power=0,
                  power_levels={"users": {"@mod:example.org": 50}}, room_version="10")  # fmt: skip


def msg(body: object = "hello", **content: object) -> dict:
    return {"type": "m.room.message", "sender": OTHER, "room_id": ROOM, "event_id": "$e",
            "content": {"msgtype": "m.text", "body": body, **content}}  # fmt: skip


def cond(c: dict, event: dict, ctx: PushContext = CTX) -> bool:
    return compile_condition(c)(event, ctx)


def rules(doc: dict | None = None):
    return compile_ruleset(effective_ruleset(ME, doc or empty_document()))


def rule_for(event: dict, ctx: PushContext = CTX, doc: dict | None = None) -> str | None:
    found = rules(doc).match(event, ctx)
    return None if found is None else found[0]


# -- dotted paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("content.body", ("content", "body")),
        ("content.m\\.relates_to.rel_type", ("content", "m.relates_to", "rel_type")),
        ("content.m\\.mentions.user_ids", ("content", "m.mentions", "user_ids")),
        ("a\\\\.b", ("a\\", "b")),  # an escaped backslash, then a separator
        ("a\\b", ("a\\b",)),  # any other backslash stands for itself
        ("type", ("type",)),
        ("", ("",)),
    ],
)
def test_dotted_paths(key: str, path: tuple) -> None:
    assert parse_dotted_path(key) == path


# -- event_match -------------------------------------------------------------------------------


TOPIC = {"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}


@pytest.mark.parametrize(
    ("topic", "expected"),
    [("Lunch plans", True), ("LUNCH", True), (" lunch", False), ("lunc", False), (None, False)],
)
def test_event_match_spec_example(topic: object, expected: bool) -> None:
    event = {"type": "m.room.topic", "state_key": "", "content": {"topic": topic}}
    assert cond(TOPIC, event) is expected


def test_event_match_absent_or_not_string_never_matches_even_star() -> None:
    star = {"kind": "event_match", "key": "content.topic", "pattern": "*"}
    assert cond(star, {"content": {}}) is False
    assert cond(star, {"content": {"topic": 5}}) is False
    assert cond(star, {"content": "x"}) is False
    assert cond(star, {"content": {"topic": ""}}) is True


def test_event_match_literal_is_case_insensitive_and_whole() -> None:
    c = {"kind": "event_match", "key": "type", "pattern": "m.room.message"}
    assert cond(c, {"type": "m.room.message"})
    assert cond(c, {"type": "M.Room.Message"})
    assert not cond(c, {"type": "m.room.message.x"})


BODY = {"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("An example event.", True),
        ("exple", True),
        ("An exciting triple-whammy", True),
        ("Anexample event", False),  # no word boundary before "ex"
        ("An examples event", False),  # no word boundary after "ple"
        ("EXAMPLE", True),
    ],
)
def test_event_match_body_word_boundaries(body: str, expected: bool) -> None:
    assert cond(BODY, msg(body)) is expected


@pytest.mark.parametrize(
    ("pattern", "body", "expected"),
    [
        ("cake", "I like cake.", True),
        ("cake", "cakes", False),
        ("cake", "_cake", False),  # "_" is a word character
        ("cake", "(cake)", True),
        ("c?ke", "coke please", True),
        ("*", "", True),
        ("lunch*", "lunchtime", True),
        ("*time", "lunchtime", True),
        ("a*b*c", "a x b y c", True),
        ("a*b*c", "a x c y b", False),
    ],
)
def test_body_glob(pattern: str, body: str, expected: bool) -> None:
    assert body_glob_match(pattern, body) is expected


def test_body_glob_is_not_backtracking() -> None:
    start = time.perf_counter()
    assert not body_glob_match("*a" * 12 + "*b", "a " * 20000)
    assert time.perf_counter() - start < 1.0


# -- event_property_is / event_property_contains ------------------------------------------------


FEDERATE = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("true", False), (1, False)])
def test_event_property_is_spec_example(value: object, expected: bool) -> None:
    event = {"type": "m.room.create", "state_key": "", "content": {"m.federate": value}}
    assert cond(FEDERATE, event) is expected


def test_event_property_is_types() -> None:
    one = {"kind": "event_property_is", "key": "content.n", "value": 1}
    null = {"kind": "event_property_is", "key": "content.n", "value": None}
    assert cond(one, {"content": {"n": 1}})
    assert not cond(one, {"content": {"n": True}})
    assert not cond(one, {"content": {"n": 1.0}})
    assert not cond(one, {"content": {}})
    assert cond(null, {"content": {"n": None}})
    assert not cond(null, {"content": {}})
    # a compound value in the rule: the condition never matches
    assert not cond({"kind": "event_property_is", "key": "content", "value": {}}, {"content": {}})


ALIASES = {"kind": "event_property_contains", "key": "content.alt_aliases",
           "value": "#myroom:example.com"}  # fmt: skip


def test_event_property_contains_spec_example() -> None:
    event = {"content": {"alt_aliases": ["#somewhere:example.org", "#myroom:example.com"]}}
    assert cond(ALIASES, event)
    assert not cond(ALIASES, {"content": {"alt_aliases": [":example.com"]}})
    assert not cond(ALIASES, {"content": {"alt_aliases": "#myroom:example.com"}})
    assert not cond(ALIASES, {"content": {}})
    assert cond(ALIASES, {"content": {"alt_aliases": [{}, [], "#myroom:example.com"]}})


# -- room_member_count, contains_display_name, sender_notification_permission -------------------


@pytest.mark.parametrize(
    ("is_", "count", "expected"),
    [
        ("2", 2, True), ("2", 3, False), ("==2", 2, True), ("<2", 1, True), ("<2", 2, False),
        (">2", 3, True), (">2", 2, False), ("<=2", 2, True), (">=10", 9, False),
        (">=10", 10, True), ("x", 2, False), ("=2", 2, False), ("", 0, False),
    ],
)  # fmt: skip
def test_room_member_count(is_: str, count: int, expected: bool) -> None:
    ctx = PushContext(member_count=count)
    assert cond({"kind": "room_member_count", "is": is_}, msg(), ctx) is expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [("hi alice smith!", True), ("Alice Smithers", False), ("hello", False), (None, False)],
)
def test_contains_display_name(body: object, expected: bool) -> None:
    assert cond({"kind": "contains_display_name"}, msg(body)) is expected
    no_name = PushContext(member_count=2)
    assert cond({"kind": "contains_display_name"}, msg(body), no_name) is False


def test_sender_notification_permission() -> None:
    c = {"kind": "sender_notification_permission", "key": "room"}
    low = PushContext(member_count=3, sender_power=0, power_levels={})
    high = PushContext(member_count=3, sender_power=50, power_levels={})
    raised = PushContext(member_count=3, sender_power=50,
                         power_levels={"notifications": {"room": 75}})  # fmt: skip
    assert not cond(c, msg(), low)
    assert cond(c, msg(), high)  # "room" defaults to 50
    assert not cond(c, msg(), raised)
    assert not cond({"kind": "sender_notification_permission", "key": "unknown"}, msg(), high)


def test_unknown_and_malformed_conditions_never_match() -> None:
    for c in [{"kind": "nope"}, {"kind": "event_match"}, {"kind": "event_match", "key": 1},
              "x", None, {"kind": "room_member_count", "is": 2}, {"kind": []}]:  # fmt: skip
        assert cond(c, msg()) is False  # type: ignore[arg-type]


# -- the default rules -------------------------------------------------------------------------


def test_default_rule_order() -> None:
    ids = [r.rule_id for r in rules().rules]
    assert ids == [
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ]  # fmt: skip  (.m.rule.master is disabled by default)


def two() -> PushContext:
    return PushContext(member_count=2)


@pytest.mark.parametrize(
    ("event", "ctx", "rule", "notify", "highlight"),
    [
        (msg(), CTX, ".m.rule.message", True, False),
        (msg(), two(), ".m.rule.room_one_to_one", True, False),
        ({"type": "m.room.encrypted", "sender": OTHER, "content": {}}, CTX,
         ".m.rule.encrypted", True, False),
        ({"type": "m.room.encrypted", "sender": OTHER, "content": {}}, two(),
         ".m.rule.encrypted_room_one_to_one", True, False),
        (msg(msgtype="m.notice"), CTX, ".m.rule.suppress_notices", False, False),
        ({"type": "m.room.member", "state_key": ME, "sender": OTHER,
          "content": {"membership": "invite"}}, CTX, ".m.rule.invite_for_me", True, False),
        ({"type": "m.room.member", "state_key": OTHER, "sender": OTHER,
          "content": {"membership": "join"}}, CTX, ".m.rule.member_event", False, False),
        (msg(**{"m.mentions": {"user_ids": [ME]}}), CTX, ".m.rule.is_user_mention", True, True),
        (msg(**{"m.mentions": {"room": True}}),
         PushContext(member_count=5, sender_power=100, power_levels={}),
         ".m.rule.is_room_mention", True, True),
        (msg(**{"m.mentions": {"room": True}}), CTX, ".m.rule.message", True, False),
        ({"type": "m.room.tombstone", "state_key": "", "sender": OTHER, "content": {}}, CTX,
         ".m.rule.tombstone", True, True),
        ({"type": "m.reaction", "sender": OTHER, "content": {}}, CTX, ".m.rule.reaction",
         False, False),
        ({"type": "m.room.server_acl", "state_key": "", "sender": OTHER, "content": {}}, CTX,
         ".m.rule.room.server_acl", False, False),
        (msg(**{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}), CTX,
         ".m.rule.suppress_edits", False, False),
        ({"type": "m.call.invite", "sender": OTHER, "content": {}}, CTX, ".m.rule.call",
         True, False),
        ({"type": "m.room.topic", "state_key": "", "sender": OTHER, "content": {}}, CTX,
         None, False, False),
    ],
)  # fmt: skip
def test_default_rules(event: dict, ctx: PushContext, rule: str | None, notify: bool,
                       highlight: bool) -> None:  # fmt: skip
    found = rules().match(event, ctx)
    assert (None if found is None else found[0]) == rule
    n, h, _ = summarise(() if found is None else found[1])
    assert (n, h) == (notify, highlight)


def test_call_rings_and_sound_tweaks() -> None:
    _, _, tweaks = summarise(rules().evaluate({"type": "m.call.invite", "content": {}}, CTX))
    assert tweaks == {"sound": "ring"}


def test_master_rule_silences_everything_and_ranks_first() -> None:
    doc = set_attribute(empty_document(), ME, "override", ".m.rule.master", "enabled", True)
    doc = put_rule(doc, "override", "loud", {"conditions": [], "actions": ["notify"]}, None, None)
    assert rule_for(msg(), CTX, doc) == ".m.rule.master"
    assert rules(doc).evaluate(msg(), CTX) == ()


def test_user_rules_merge_in_spec_order() -> None:
    doc = empty_document()
    doc = put_rule(doc, "content", "cake", {"pattern": "cake",
                   "actions": ["notify", {"set_tweak": "highlight"}]}, None, None)  # fmt: skip
    doc = put_rule(doc, "room", ROOM, {"actions": []}, None, None)
    doc = put_rule(doc, "sender", OTHER, {"actions": ["notify"]}, None, None)
    # a content rule ranks above a room rule
    assert rule_for(msg("cake time"), CTX, doc) == "cake"
    # the room rule mutes the room (above the sender rule and the underride defaults)
    assert rule_for(msg("hello"), CTX, doc) == ROOM
    elsewhere = {**msg("hello"), "room_id": "!elsewhere:example.org"}
    assert rule_for(elsewhere, CTX, doc) == OTHER
    # overrides still win over content rules
    assert rule_for(msg("cake", msgtype="m.notice"), CTX, doc) == ".m.rule.suppress_notices"


def test_disabled_default_rule_is_skipped() -> None:
    doc = set_attribute(empty_document(), ME, "override", ".m.rule.suppress_notices",
                        "enabled", False)  # fmt: skip
    assert rule_for(msg(msgtype="m.notice"), CTX, doc) == ".m.rule.message"


def test_summarise() -> None:
    assert summarise(["notify", {"set_tweak": "highlight", "value": False}]) == (
        True, False, {"highlight": False})  # fmt: skip
    assert summarise([{"set_tweak": "highlight"}])[:2] == (False, False)
    assert summarise(["dont_notify", "coalesce", 5, {"set_tweak": 1}]) == (False, False, {})


# -- robustness ---------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)  # fmt: skip
KEYS = st.sampled_from(["content.body", "type", "content.m\\.mentions.user_ids", "a.b\\", ""])
CONDITION = st.one_of(
    JSON,
    st.fixed_dictionaries({"kind": st.sampled_from([
        "event_match", "event_property_is", "event_property_contains", "room_member_count",
        "contains_display_name", "sender_notification_permission", "other"])},
        optional={"key": KEYS | JSON, "pattern": st.text(max_size=10) | JSON,
                  "value": JSON, "is": st.text(max_size=5) | JSON}),
)  # fmt: skip
RULE = st.fixed_dictionaries(
    {}, optional={"rule_id": st.text(max_size=10) | JSON, "enabled": JSON | st.just(True),
                  "conditions": st.lists(CONDITION, max_size=4) | JSON,
                  "pattern": st.text(max_size=10) | JSON, "actions": st.lists(JSON) | JSON},
)  # fmt: skip
RULESET = st.dictionaries(st.sampled_from(["override", "content", "room", "sender",
                                           "underride", "x"]),
                          st.lists(RULE | JSON, max_size=4) | JSON, max_size=5)  # fmt: skip
EVENT = st.one_of(
    JSON,
    st.fixed_dictionaries({}, optional={"type": JSON, "content": JSON, "sender": JSON,
                                        "room_id": JSON, "state_key": JSON}),
)  # fmt: skip
CONTEXT = st.builds(
    PushContext, member_count=st.integers(0, 10**6), display_name=st.none() | st.text(max_size=8),
    sender_power=st.integers(-(10**6), 10**6),
    power_levels=st.none() | st.dictionaries(st.sampled_from(["notifications", "users"]), JSON),
    room_version=st.sampled_from(["1", "10", "12", "nope"]),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(ruleset=RULESET, event=EVENT, ctx=CONTEXT)
def test_any_shape_never_raises(ruleset: object, event: object, ctx: PushContext) -> None:
    compiled = compile_ruleset(ruleset)  # type: ignore[arg-type]
    actions = compiled.evaluate(event, ctx)  # type: ignore[arg-type]
    notify, highlight, tweaks = summarise(actions)
    assert isinstance(notify, bool) and isinstance(highlight, bool) and isinstance(tweaks, dict)


@settings(max_examples=300, deadline=None)
@given(event=EVENT, ctx=CONTEXT)
def test_default_rules_never_raise(event: object, ctx: PushContext) -> None:
    rules().evaluate(event, ctx)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(pattern=st.text(alphabet="ab*? -_", max_size=8), body=st.text(alphabet="ab -_", max_size=12))
def test_body_glob_agrees_with_brute_force(pattern: str, body: str) -> None:
    from bastion.core.glob import glob_match

    def word(ch: str) -> bool:
        return ch.isascii() and (ch.isalnum() or ch == "_")

    starts = [i for i in range(len(body) + 1) if i == 0 or not word(body[i - 1])]
    ends = [j for j in range(len(body) + 1) if j == len(body) or not word(body[j])]
    brute = any(glob_match(pattern, body[i:j]) for i in starts for j in ends if j >= i)
    assert body_glob_match(pattern, body) is brute


@settings(max_examples=300, deadline=None)
@given(event=EVENT, ctx=CONTEXT, mention=st.booleans(), as_state_key=st.booleans())
def test_shared_default_evaluation_equals_each_users(
    event: object, ctx: PushContext, mention: bool, as_state_key: bool
) -> None:
    """services/push.py evaluates the default rules once for every member the event does not
    name; for such a member that gives exactly what their own default rules give."""
    from bastion.services.push import _GENERIC_RULES, _named_users

    if not isinstance(event, dict):
        return
    event = dict(event)
    if as_state_key:
        event["state_key"] = ME.upper()
    if mention:
        event["content"] = {"m.mentions": {"user_ids": [ME, OTHER]}, "body": "hi"}
    if ME.lower() in _named_users(event):
        return
    assert rules().evaluate(event, ctx) == _GENERIC_RULES.evaluate(event, ctx)


def test_invite_is_evaluated_for_the_invitee_alone() -> None:
    from bastion.services.push import _GENERIC_RULES, _named_users

    invite = {"type": "m.room.member", "state_key": ME, "sender": OTHER,
              "content": {"membership": "invite"}}  # fmt: skip
    assert ME.lower() in _named_users(invite)
    assert rules().evaluate(invite, CTX) != _GENERIC_RULES.evaluate(invite, CTX)
