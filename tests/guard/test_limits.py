"""The guard's rate limits, pure part (bastion.guard.limits): the names and their defaults
(Synapse's rc_* values, synapse/config/ratelimiting.py), the [guard.rate_limits] table with junk
in it, and per-user overrides as an admin gives them."""

import math
import re

import pytest

from bastion.config import Config, ConfigError
from bastion.guard.config import parse_guard_config
from bastion.guard.limits import (
    DEFAULT_MAX_KEYS,
    EXEMPT,
    KEYS,
    LIMITS,
    USER_LIMITS,
    LimitSpec,
    bucket_key,
    overrides_json,
    parse_overrides,
    parse_rate_limits,
)

#: Synapse 1.163's defaults (synapse/config/ratelimiting.py) for the limits that have one.
SYNAPSE = {
    "message": ("rc_message", 0.2, 10),
    "join": ("rc_joins.local", 0.1, 10),
    "join_remote": ("rc_joins.remote", 0.01, 10),
    "join_room": ("rc_joins_per_room", 1, 10),
    "invite": ("rc_invites.per_issuer", 0.3, 10),
    "invite_room": ("rc_invites.per_room", 0.3, 10),
    "invite_target": ("rc_invites.per_user", 0.003, 5),
    "room_create": ("rc_room_creation", 0.016, 10),
    "media_create": ("rc_media_create", 10, 50),
    "to_device": ("rc_key_requests", 20, 100),
    "report": ("rc_reports", 1, 5),
}


def test_every_issue_area_has_a_limit_with_a_known_key():
    for name in ("message", "state", "join", "invite", "room_create", "media_upload",
                 "media_create", "to_device", "typing", "receipt", "report", "federation_send",
                 "federation_event", "federation_event_room"):  # fmt: skip
        assert name in LIMITS
    for name, d in LIMITS.items():
        assert d.key in KEYS, name
        assert d.default.per_second > 0 and d.default.burst >= 1, name
        assert d.about, name
    assert LIMITS["join_room"].key == "room" and LIMITS["invite_room"].key == "room"
    assert LIMITS["federation_send"].key == "origin"
    assert LIMITS["federation_event_room"].key == "origin_room"
    assert {n for n, d in LIMITS.items() if d.key == "user"} == USER_LIMITS


@pytest.mark.parametrize("name", sorted(SYNAPSE))
def test_defaults_are_synapses(name):
    setting, rate, burst = SYNAPSE[name]
    d = LIMITS[name].default
    assert (d.per_second, d.burst) == (rate, burst), setting
    assert setting in LIMITS[name].about


def test_empty_table_gives_every_default():
    cfg = parse_rate_limits({})
    assert cfg.enabled is True and cfg.max_keys == DEFAULT_MAX_KEYS
    assert cfg.configured == frozenset()
    assert dict(cfg.limits) == {n: d.default for n, d in LIMITS.items()}
    assert parse_guard_config({}).rate_limits == cfg


def test_a_limit_set_in_part_keeps_the_rest_of_its_default():
    cfg = parse_rate_limits({"enabled": False, "max_keys": 500,
                             "message": {"per_second": 5}, "typing": {"burst": 3},
                             "federation_send": {"per_second": 2.5, "burst": 7}})  # fmt: skip
    assert cfg.enabled is False and cfg.max_keys == 500
    assert cfg.limits["message"] == LimitSpec(5.0, 10)
    assert cfg.limits["typing"] == LimitSpec(LIMITS["typing"].default.per_second, 3)
    assert cfg.limits["federation_send"] == LimitSpec(2.5, 7)
    assert cfg.configured == {"message", "typing", "federation_send"}
    assert cfg.limits["join"] == LIMITS["join"].default


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"messages": {"per_second": 1}}, "unknown key(s) messages"),  # a typo is refused
        ({"login": {"per_second": 1}}, "unknown key(s) login"),  # the login part's
        ({"enabled": "yes"}, "guard.rate_limits.enabled"),
        ({"enabled": 1}, "guard.rate_limits.enabled"),
        ({"max_keys": 0}, "guard.rate_limits.max_keys"),
        ({"max_keys": 1.5}, "guard.rate_limits.max_keys"),
        ({"max_keys": True}, "guard.rate_limits.max_keys"),
        ({"message": 5}, "guard.rate_limits.message"),
        ({"message": [1, 2]}, "guard.rate_limits.message"),
        ({"message": {"rate": 1}}, "guard.rate_limits.message: unknown key(s) rate"),
        ({"message": {"burst_count": 3}}, "unknown key(s) burst_count"),
        ({"message": {"per_second": 0}}, "guard.rate_limits.message.per_second"),
        ({"message": {"per_second": -1}}, "guard.rate_limits.message.per_second"),
        ({"message": {"per_second": math.nan}}, "guard.rate_limits.message.per_second"),
        ({"message": {"per_second": math.inf}}, "guard.rate_limits.message.per_second"),
        ({"message": {"per_second": "1"}}, "guard.rate_limits.message.per_second"),
        ({"message": {"per_second": False}}, "guard.rate_limits.message.per_second"),
        ({"message": {"per_minute": 0}}, "guard.rate_limits.message.per_minute"),
        ({"message": {"per_hour": 2, "per_minute": 1}}, "give one of per_minute, per_hour"),
        ({"message": {"burst": 0}}, "guard.rate_limits.message.burst"),
        ({"message": {"burst": 2.5}}, "guard.rate_limits.message.burst"),
        ({"message": {"burst": 10**12}}, "guard.rate_limits.message.burst"),
        ({"message": {"burst": None}}, "guard.rate_limits.message.burst"),
    ],
)
def test_junk_is_refused_naming_the_key(table, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        parse_rate_limits(table)


def test_config_refuses_a_bad_table_at_load(tmp_path):
    with pytest.raises(ConfigError, match="guard.rate_limits"):
        Config(server_name="localhost", data_dir=tmp_path,
               guard={"rate_limits": {"message": {"per_second": -2}}}).validate()  # fmt: skip
    with pytest.raises(ConfigError, match="guard.rate_limits"):
        Config(server_name="localhost", data_dir=tmp_path,
               guard={"rate_limits": []}).validate()  # fmt: skip


def test_rates_per_minute_and_per_hour():
    cfg = parse_rate_limits({"message": {"per_minute": 30}, "invite": {"per_hour": 36, "burst": 2}})
    assert cfg.limits["message"] == LimitSpec(0.5, 10)
    assert cfg.limits["invite"] == LimitSpec(0.01, 2)
    got = parse_overrides({"typing": {"per_hour": 7200, "burst": 4}})
    assert got == {"typing": LimitSpec(2.0, 4)}
    # shown as given, in whole numbers (the ledger's canonical JSON has no fractions)
    assert overrides_json(got) == {"typing": {"per_hour": 7200, "burst": 4}}
    assert overrides_json({"message": LimitSpec(0.2, 10)}) == {
        "message": {"per_second": 0.2, "burst": 10}
    }


def test_overrides_accept_user_limits_null_and_exempt():
    got = parse_overrides({"message": {"per_second": 50, "burst": 500}, "typing": None})
    assert got == {"message": LimitSpec(50.0, 500), "typing": None}
    assert parse_overrides({EXEMPT: None}) == {EXEMPT: None}
    assert parse_overrides({}) == {}
    assert overrides_json(got) == {"message": {"per_second": 50, "burst": 500},
                                   "typing": None}  # fmt: skip
    assert parse_overrides(overrides_json(got)) == got  # what is stored reads back the same


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "must be an object"),
        ([], "must be an object"),
        ("*", "must be an object"),
        ({EXEMPT: {"per_second": 1, "burst": 1}}, "must be null"),
        ({"join_room": None}, "unknown limit"),  # keyed by the room: no per-user override
        ({"federation_send": None}, "unknown limit"),
        ({"nonsense": None}, "unknown limit"),
        ({"message": {"per_second": 1}}, "burst is required"),
        ({"message": {"burst": 1}}, "per_second (or per_minute, per_hour) is required"),
        ({"message": {"per_second": 1, "per_hour": 1, "burst": 1}}, "give one of"),
        ({"message": {"per_second": 1, "burst": 1, "x": 1}}, "unknown key"),
        ({"message": {"per_second": -1, "burst": 1}}, "per_second"),
        ({"message": {"per_second": 1, "burst": "many"}}, "burst"),
        ({"message": 3}, "must be a table"),
    ],
)
def test_junk_overrides_are_refused(value, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_overrides(value)


def test_bucket_keys():
    kw = {"user": "@a:x", "ip": "10.0.0.1", "room": "!r:x", "origin": "o.example"}
    assert bucket_key("user", **kw) == "@a:x"
    assert bucket_key("ip", **kw) == "10.0.0.1"
    assert bucket_key("room", **kw) == "!r:x"
    assert bucket_key("origin", **kw) == "o.example"
    assert bucket_key("origin_room", **kw) == "o.example|!r:x"
    none = {"user": None, "ip": None, "room": None, "origin": None}
    for key in KEYS:
        assert bucket_key(key, **none) is None  # nothing to key by: nothing counted
    assert bucket_key("origin_room", **{**none, "origin": "o"}) is None
