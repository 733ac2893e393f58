"""Pure parts of the inbound pipeline: server ACL evaluation (S-S "Server Access Control
Lists", appendices "Glob-style matching"), the origin allow/deny list, transaction shape,
auth ordering, server visibility and the token bucket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core import rate_limit
from bastion.core.pdu_checks import (
    TokenBucket,
    order_by_auth,
    parse_transaction,
    server_may_see,
)
from bastion.core.server_acl import (
    domain_allowed,
    glob_matches,
    host_of,
    is_ip_literal,
    server_acl_allows,
)
from bastion.errors import MatrixError


def test_acl_order_of_evaluation():
    assert server_acl_allows(None, "evil.example")
    acl = {"allow": ["*"], "deny": ["evil.example", "*.bad.org"]}
    assert not server_acl_allows(acl, "evil.example")
    assert not server_acl_allows(acl, "EVIL.example:8448")  # case-insensitive, port ignored
    assert not server_acl_allows(acl, "a.b.bad.org")
    assert server_acl_allows(acl, "bad.org")
    assert server_acl_allows(acl, "good.example")
    assert not server_acl_allows({"deny": []}, "good.example")  # no allow: nobody
    assert not server_acl_allows({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4:80")
    assert not server_acl_allows({"allow": ["*"], "allow_ip_literals": False}, "[::1]:8448")
    assert server_acl_allows({"allow": ["*"]}, "[::1]:8448")
    assert server_acl_allows({"allow": ["?.example"]}, "a.example")
    assert not server_acl_allows({"allow": ["?.example"]}, "ab.example")
    # Junk content: non-list entries ignored, non-bool allow_ip_literals is the default.
    assert server_acl_allows({"allow": ["*", 3], "deny": "x", "allow_ip_literals": "no"}, "1.2.3.4")


def test_helpers():
    assert host_of("example.org:8448") == "example.org"
    assert host_of("[2001:db8::1]:443") == "[2001:db8::1]"
    assert host_of("example.org") == "example.org"
    assert is_ip_literal("[2001:db8::1]") and is_ip_literal("10.0.0.1")
    assert not is_ip_literal("example.org")
    assert glob_matches("*.Example.ORG", "matrix.example.org")
    assert not glob_matches("a.c", "abc")  # '.' is literal
    assert domain_allowed("x.org", [], [])
    assert not domain_allowed("x.org", ["*"], ["x.*"])
    assert not domain_allowed("y.org", ["x.org"], [])
    assert domain_allowed("X.ORG:1", ["x.org"], [])


@given(st.text(alphabet="ab.*?", max_size=8), st.text(alphabet="ab.", max_size=8))
def test_glob_star_matches_everything_and_is_total(pattern, value):
    assert glob_matches("*", value)
    glob_matches(pattern, value)  # never raises


def test_parse_transaction():
    ok = {"origin": "o", "origin_server_ts": 1, "pdus": [{}], "edus": [{}]}
    assert parse_transaction(ok, "o") == ([{}], [{}])
    assert parse_transaction({"origin": "o", "origin_server_ts": 1}, "o") == ([], [])
    cases = [
        ({**ok, "origin": "p"}, 403),
        ({**ok, "origin_server_ts": "1"}, 400),
        ({**ok, "pdus": {}}, 400),
        ({**ok, "edus": "x"}, 400),
        ({**ok, "pdus": [{}] * 51}, 400),
        ({**ok, "edus": [{}] * 101}, 400),
    ]
    for body, status in cases:
        with pytest.raises(MatrixError) as e:
            parse_transaction(body, "o")
        assert e.value.status == status


def test_order_by_auth():
    evs = {
        "c": {"auth_events": ["a", "b"], "depth": 1},
        "b": {"auth_events": ["a"], "depth": 5},
        "a": {"auth_events": [], "depth": 9},
        "x": {"auth_events": ["outside"], "depth": 0},
    }
    order = order_by_auth(evs)
    assert order.index("a") < order.index("b") < order.index("c")
    assert set(order) == set(evs)
    cyc = {"p": {"auth_events": ["q"]}, "q": {"auth_events": ["p"]}}
    assert sorted(order_by_auth(cyc)) == ["p", "q"]


def test_server_may_see():
    assert server_may_see("world_readable", [])
    assert server_may_see("joined", ["join"])
    assert not server_may_see("joined", ["invite", "leave"])
    assert server_may_see("invited", ["invite"])
    assert server_may_see("shared", [])
    assert not server_may_see("shared", [], in_room_now=False)
    assert server_may_see("nonsense", [])  # unknown means shared


def test_token_bucket():
    b = TokenBucket(rate=1.0, burst=2.0)
    assert b.take(0.0) == 0 and b.take(0.0) == 0
    wait = b.take(0.0)
    assert 0 < wait <= 1.0
    assert b.take(1.0) == 0


def test_token_bucket_lives_in_rate_limit():
    assert TokenBucket is rate_limit.TokenBucket


def test_token_buckets_per_key():
    buckets = rate_limit.TokenBuckets(rate=1.0, burst=2.0)
    assert buckets.take("a", 0.0) == 0 and buckets.take("a", 0.0) == 0
    assert 0 < buckets.take("a", 0.0) <= 1.0
    assert buckets.take("b", 0.0) == 0  # another key has its own bucket
    assert buckets.take("a", 1.0) == 0  # refilled at `rate`


def test_token_buckets_forget_least_recently_used_keys():
    buckets = rate_limit.TokenBuckets(rate=0.001, burst=1.0, max_keys=2)
    assert buckets.take("a", 0.0) == 0
    assert buckets.take("b", 0.0) == 0
    assert buckets.take("a", 0.0) > 0  # "a" is now the most recently used
    assert buckets.take("c", 0.0) == 0  # evicts "b", not "a"
    assert len(buckets) == 2
    assert buckets.take("a", 0.0) > 0  # "a" kept its empty bucket
    assert buckets.take("b", 0.0) == 0  # "b" was forgotten: full again
    with pytest.raises(ValueError):
        rate_limit.TokenBuckets(1.0, 1.0, max_keys=0)


def test_retry_after_ms():
    assert rate_limit.retry_after_ms(0.0) == 1
    assert rate_limit.retry_after_ms(0.0004) == 1
    assert rate_limit.retry_after_ms(2.5) == 2500
