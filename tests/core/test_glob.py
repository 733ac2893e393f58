"""Glob-style matching without backtracking (appendices "Glob-style matching"), and the places
that match globs chosen by others: room server ACLs (a room's moderators; a policy list's server
bans are written into them) and event filters (a client)."""

from __future__ import annotations

import time

import pytest

from bastion.core.glob import Glob, glob_match, star_match
from bastion.core.server_acl import domain_allowed, glob_matches, server_acl_allows
from bastion.services.filtering import matches_glob

#: ``*a*a*a*a*a*a*b``: with a backtracking regular expression each check against a 60-character
#: name took about 8 s (and doubles with each further ``*a``).
HOSTILE = "*a" * 6 + "*b"
NAME = "a" * 60 + ".org"


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("", "", True),
        ("", "a", False),
        ("abc", "abc", True),
        ("abc", "abd", False),
        ("*", "", True),
        ("**", "x", True),
        ("a*", "a", True),
        ("*a", "ba", True),
        ("*a", "ab", False),
        ("a*b*a", "aba", True),
        ("a*b*a", "ab", False),
        ("?", "x", True),
        ("??", "x", False),
        ("*?*", "", False),
        ("*.matrix.org", "x.matrix.org", True),
        ("*.matrix.org", "matrix.org", False),
        ("a.?", "a.b", True),
        ("a.?", "axb", False),
        ("(a|b)+", "(a|b)+", True),
        ("(a|b)+", "aa", False),
    ],
)
def test_glob_semantics(pattern: str, value: str, expected: bool) -> None:
    assert glob_match(pattern, value) is expected
    assert Glob(pattern).matches(value) is expected


def test_star_match_takes_question_marks_literally() -> None:
    assert star_match("m.room.*", "m.room.message")
    assert not star_match("m.?", "m.x")
    assert star_match("m.?", "m.?")
    assert star_match("*?*", "a?b") and not star_match("*?*", "ab")


def test_acl_globs_are_case_insensitive_and_whole() -> None:
    assert glob_matches("*.EVIL.org", "a.evil.ORG")
    assert not glob_matches("evil.org", "evil.org.uk")
    acl = {"allow": ["*"], "deny": ["*.evil.org"]}
    assert not server_acl_allows(acl, "a.evil.org:8448")
    assert server_acl_allows(acl, "good.org")


def test_hostile_acl_patterns_cost_no_backtracking() -> None:
    """Regression: a room's ``m.room.server_acl`` (or a policy list's server ban written into
    it) with ``*a*a*a*a*a*a*b`` blocked the event loop for seconds on every check."""
    start = time.perf_counter()
    for _ in range(100):
        assert server_acl_allows({"allow": ["*"], "deny": [HOSTILE]}, NAME)
        assert domain_allowed(NAME, ["*"], [HOSTILE])
        assert time.perf_counter() - start < 0.5
    huge = {"allow": ["*"], "deny": ["*a" * 200 + "*b"]}
    assert server_acl_allows(huge, "a" * 250)
    assert time.perf_counter() - start < 1.0


def test_hostile_filter_patterns_cost_no_backtracking() -> None:
    """Regression: an event filter's ``types`` with ``*a*a*a*a*a*a*b`` took seconds per event."""
    start = time.perf_counter()
    for _ in range(100):
        assert not matches_glob("a" * 64, HOSTILE)
        assert time.perf_counter() - start < 0.5
    assert not matches_glob("a" * 250, "*a" * 120 + "*b")
    assert time.perf_counter() - start < 1.0
    assert matches_glob("m.room.message", "m.room.*")
    assert not matches_glob("m.room.message", "m.call.*")
