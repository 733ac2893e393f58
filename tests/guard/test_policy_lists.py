"""Moderation policy lists (pure): the config table, rule parsing (stable and legacy types,
recommendations, hashed entities, malformed and hostile content), glob matching and the
compiled rule set."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest

from bastion.guard.policy_lists import (
    MAX_ENTITY_CHARS,
    MAX_GLOBS_PER_KIND,
    Glob,
    PolicyConfig,
    compile_rules,
    entity_sha256,
    parse_policy_config,
    parse_rule,
    rules_from_state,
    server_host,
)


def ban(entity: str, reason: str = "spam", rec: str = "m.ban") -> dict:
    return {"entity": entity, "recommendation": rec, "reason": reason}


def sha(entity: str, padded: bool) -> str:
    text = base64.b64encode(hashlib.sha256(entity.encode()).digest()).decode()
    return text if padded else text.rstrip("=")


# -- config ------------------------------------------------------------------------------------
def test_config_defaults_and_values() -> None:
    assert parse_policy_config({}) == PolicyConfig()
    cfg = parse_policy_config(
        {"lists": ["!a:x", "!b:y", "!a:x"], "invites": False, "server_acl": True}
    )
    assert cfg.lists == ("!a:x", "!b:y")
    assert not cfg.invites and cfg.server_acl and cfg.joins and cfg.federation_origins


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"lists": "!a:x"}, "guard.policy.lists"),
        ({"lists": ["#alias:x"]}, "guard.policy.lists"),
        ({"lists": [1]}, "guard.policy.lists"),
        ({"joins": "yes"}, "guard.policy.joins"),
        ({"server_acl": 1}, "guard.policy.server_acl"),
    ],
)
def test_config_errors_name_the_key(table: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        parse_policy_config(table)


# -- rules -------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["m.policy.rule", "m.room.rule", "org.matrix.mjolnir.rule"])
@pytest.mark.parametrize("kind", ["user", "room", "server"])
def test_every_rule_type_stable_and_legacy(prefix: str, kind: str) -> None:
    rule = parse_rule(f"{prefix}.{kind}", "k", ban("x*"), "!list:x")
    assert rule is not None
    assert (rule.kind, rule.entity, rule.reason, rule.list_id) == (kind, "x*", "spam", "!list:x")


@pytest.mark.parametrize("rec", ["m.ban", "org.matrix.mjolnir.ban", "m.takedown"])
def test_ban_recommendations(rec: str) -> None:
    rule = parse_rule("m.policy.rule.user", "k", ban("@a:x", rec=rec))
    assert rule is not None and rule.recommendation == rec


@pytest.mark.parametrize(
    ("etype", "content"),
    [
        ("m.policy.rule.user", {}),  # removed rule
        ("m.policy.rule.user", ban("@a:x", rec="m.allow")),  # unknown recommendation: ignored
        ("m.policy.rule.user", ban("@a:x", rec="org.example.mute")),
        ("m.policy.rule.user", {"entity": "@a:x", "recommendation": 5}),
        ("m.policy.rule.user", {"entity": "@a:x"}),
        ("m.policy.rule.user", {"recommendation": "m.ban"}),  # no entity, no hash
        ("m.policy.rule.user", {"entity": 7, "recommendation": "m.ban"}),
        ("m.policy.rule.user", {"entity": "", "recommendation": "m.ban"}),
        ("m.policy.rule.user", ban("@" + "a" * MAX_ENTITY_CHARS + ":x")),  # huge entity
        ("m.policy.rule.user", ban("@a\x00:x")),
        ("m.policy.rule.user", {"hashes": {"sha256": "not base64!!"}, "recommendation": "m.ban"}),
        ("m.policy.rule.user", {"hashes": {"sha256": "AAAA"}, "recommendation": "m.ban"}),
        ("m.policy.rule.user", {"hashes": "x", "recommendation": "m.ban"}),
        ("m.policy.rule.user", {"hashes": {"sha256": 5}, "recommendation": "m.ban"}),
        ("m.policy.rule.group", ban("+g:x")),  # not a rule type
        ("m.room.message", ban("@a:x")),
    ],
)
def test_malformed_or_ignored_rules(etype: str, content: dict) -> None:
    assert parse_rule(etype, "k", content) is None


def test_rule_reason_not_a_string_or_huge() -> None:
    rule = parse_rule("m.policy.rule.user", "k", {"entity": "@a:x", "recommendation": "m.ban",
                                                  "reason": {"x": 1}})  # fmt: skip
    assert rule is not None and rule.reason == ""
    rule = parse_rule("m.policy.rule.user", "k", ban("@a:x", reason="r" * 10_000))
    assert rule is not None and len(rule.reason) == 500


# -- hashed entities (MSC4205) -------------------------------------------------------------------
@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("key", ["hashes", "org.matrix.msc4205.hashes"])
def test_hashed_entities(padded: bool, key: str) -> None:
    rules = [
        parse_rule("m.policy.rule.user", "u", {key: {"sha256": sha("@evil:x.org", padded)},
                                               "recommendation": "m.ban"}),
        parse_rule("m.policy.rule.server", "s", {key: {"sha256": sha("bad.example", padded)},
                                                 "recommendation": "m.ban"}),
        parse_rule("m.policy.rule.room", "r", {key: {"sha256": sha("!room:x", padded)},
                                               "recommendation": "m.ban"}),
    ]  # fmt: skip
    assert all(r is not None and r.entity is None for r in rules)
    compiled = compile_rules(r for r in rules if r is not None)
    assert compiled.match("user", "@evil:x.org") is rules[0]
    assert compiled.match("user", "@good:x.org") is None
    assert compiled.match("server", "bad.example:8448") is rules[1]  # port ignored
    assert compiled.match("server", "BAD.example") is rules[1]  # names are case-insensitive
    assert compiled.match("room", "!room:x") is rules[2]
    assert compiled.match("room", "!other:x") is None
    assert entity_sha256("@evil:x.org") == sha("@evil:x.org", False)


def test_entity_wins_over_hash() -> None:
    content = {**ban("@a:x"), "hashes": {"sha256": sha("@b:x", True)}}
    rule = parse_rule("m.policy.rule.user", "k", content)
    assert rule is not None and rule.entity == "@a:x" and rule.sha256 is None


# -- globs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("@spam*:localhost", "@spam:localhost", True),
        ("@spam*:localhost", "@spammer1:localhost", True),
        ("@spam*:localhost", "@spam:localhost.evil", False),
        ("@spam*:localhost", "@xspam:localhost", False),
        ("@spam?:x", "@spam1:x", True),
        ("@spam?:x", "@spam:x", False),
        ("@spam?:x", "@spam12:x", False),
        ("*", "", True),
        ("*", "anything", True),
        ("?", "", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "acb", False),
        ("a*a", "a", False),  # the two pieces may not overlap
        ("a*a", "aa", True),
        ("*ab?d*", "xxabcdyy", True),
        ("*ab?d*", "xxabdyy", False),
        ("a?*?c", "abc", False),
        ("a?*?c", "abbc", True),
        ("*.example.org", "evil.example.org", True),
        ("*.example.org", "example.org", False),
        ("a.c", "abc", False),  # no regular-expression meaning
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("@x*:y", "@x\n:y", True),  # any character, a newline too
    ],
)
def test_glob_semantics(pattern: str, value: str, expected: bool) -> None:
    assert Glob(pattern).matches(value) is expected


def test_user_and_room_globs_case_sensitive_server_globs_not() -> None:
    compiled = rules_from_state(
        "!l:x",
        [
            ("m.policy.rule.user", "u", ban("@Spam*:x")),
            ("m.policy.rule.server", "s", ban("*.EVIL.org")),
            ("m.policy.rule.room", "r", ban("!Bad*:x")),
        ],
    )
    assert compiled.match("user", "@Spammer:x") is not None
    assert compiled.match("user", "@spammer:x") is None
    assert compiled.match("server", "a.evil.ORG:443") is not None
    assert compiled.match("server", "evil.org") is None
    assert compiled.match("room", "!Bad1:x") is not None
    assert compiled.match("room", "!bad1:x") is None


def test_server_rules_match_the_name_without_port() -> None:
    compiled = rules_from_state(
        "!l:x", [("m.policy.rule.server", "a", ban("evil.org")),
                 ("m.policy.rule.server", "b", ban("[::1]"))]
    )  # fmt: skip
    assert compiled.match("server", "evil.org:8448") is not None
    assert compiled.match("server", "EVIL.org") is not None
    assert compiled.match("server", "[::1]:8448") is not None
    assert compiled.match("server", "good.org") is None
    assert server_host("[::1]:80") == "[::1]" and server_host("A.b:1") == "a.b"


def test_compiled_rules_answer_with_the_rule_and_count() -> None:
    compiled = rules_from_state(
        "!l:x",
        [
            ("m.policy.rule.user", "1", ban("@a:x", reason="exact")),
            ("org.matrix.mjolnir.rule.user", "2", ban("@b*:x", reason="glob",
                                                      rec="org.matrix.mjolnir.ban")),
            ("m.policy.rule.user", "3", {}),
            ("m.room.topic", "", {"topic": "t"}),
            ("m.policy.rule.server", "4", ban("evil.org")),
        ],
    )  # fmt: skip
    hit = compiled.match("user", "@a:x")
    assert hit is not None and hit.reason == "exact" and hit.state_key == "1"
    hit = compiled.match("user", "@bob:x")
    assert hit is not None and hit.reason == "glob" and hit.event_type.startswith("org.matrix")
    assert compiled.match("user", "@c:x") is None
    assert compiled.counts() == {"user": 2, "room": 0, "server": 1}
    assert compiled.match("nonsense", "@a:x") is None
    assert compiled.match("user", "") is None


# -- hostile rules -------------------------------------------------------------------------------
def test_pathological_globs_are_linear() -> None:
    """``*a*a*a...*b`` against ``aaaa...``: a backtracking matcher takes exponential or high
    polynomial time; the piece-by-piece matcher takes a few linear scans."""
    pattern = "*a" * 250 + "*b"  # 502 characters, just under the entity bound
    value = "a" * 500
    rule = parse_rule("m.policy.rule.user", "k", ban(pattern))
    assert rule is not None
    compiled = compile_rules([rule])
    start = time.perf_counter()
    for i in range(200):
        assert compiled.match("user", value + str(i)) is None  # not cached: each value differs
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    for _ in range(200):
        assert not Glob("?*" * 200 + "b").matches("a" * 480)
        assert not Glob("a?" * 100 + "*" + "?b" * 100).matches("a" * 500)
    assert time.perf_counter() - start < 1.0


def test_too_many_globs_are_dropped_per_list() -> None:
    state = [
        ("m.policy.rule.user", str(i), ban(f"@s{i}*:x")) for i in range(MAX_GLOBS_PER_KIND + 7)
    ]
    state.append(("m.policy.rule.user", "exact", ban("@exact:x")))
    compiled = rules_from_state("!l:x", state)
    assert compiled.dropped == 7
    assert compiled.counts()["user"] == MAX_GLOBS_PER_KIND + 1
    assert compiled.match("user", "@exact:x") is not None  # exact rules are never dropped
    start = time.perf_counter()
    for i in range(50):
        compiled.match("user", f"@nobody{i}:y")
    assert time.perf_counter() - start < 2.0


def test_hostile_values_are_not_matched() -> None:
    compiled = rules_from_state("!l:x", [("m.policy.rule.user", "k", ban("*"))])
    assert compiled.match("user", "@a:x") is not None
    assert compiled.match("user", "@" + "a" * 10_000 + ":x") is None  # no valid ID is so long
