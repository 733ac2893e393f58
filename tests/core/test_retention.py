"""The retention core (core/retention.py): durations, the ``[retention]`` table, a room's
effective policy (MSC1763 ``m.room.retention``, clamped as Synapse's purge jobs clamp it) and
which events and media expire."""

from __future__ import annotations

import pytest

from bastion.config import Config, ConfigError
from bastion.core.retention import (
    MAX_SAFE_INTEGER,
    Candidate,
    RetentionConfig,
    RetentionPolicy,
    cutoff,
    effective_policy,
    expired,
    media_expired,
    parse_duration,
    parse_retention_config,
    room_policy,
)

DAY = 86_400_000


@pytest.mark.parametrize(
    ("value", "ms"),
    [(1, 1), (86_400_000, DAY), ("1d", DAY), ("30m", 1_800_000), ("15s", 15_000),
     ("250ms", 250), ("2h", 7_200_000), ("1w", 7 * DAY), ("1y", 365 * DAY), ("500", 500),
     (" 3d ", 3 * DAY)],
)  # fmt: skip
def test_durations_as_synapse_writes_them(value, ms):
    assert parse_duration(value, "k") == ms


@pytest.mark.parametrize(
    "value",
    [0, -1, "0d", "-1d", "1.5d", "1 d", "d", "", "1x", True, 1.5, None, [1], {"a": 1},
     MAX_SAFE_INTEGER + 1, "9999999999999999d", "1" * 40],
)  # fmt: skip
def test_bad_durations_are_refused_with_the_key(value):
    with pytest.raises(ValueError, match="retention.x"):
        parse_duration(value, "retention.x")


def test_config_defaults_and_values():
    assert parse_retention_config({}) == RetentionConfig()
    assert RetentionConfig().enabled is False
    c = parse_retention_config({
        "enabled": True, "default_max_lifetime": "30d", "default_min_lifetime": "1d",
        "allowed_lifetime_min": "1d", "allowed_lifetime_max": "1y", "purge_interval": "12h",
        "purge_batch_size": 100, "local_media_max_lifetime": "90d",
    })  # fmt: skip
    assert c == RetentionConfig(True, 30 * DAY, DAY, DAY, 365 * DAY, 12 * 3_600_000, 100,
                                90 * DAY)  # fmt: skip


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"enabled": "yes"}, "retention.enabled must be true or false"),
        ({"enabled": 1}, "retention.enabled must be true or false"),
        ({"purge_interval": "soon"}, "retention.purge_interval"),
        ({"default_max_lifetime": -5}, "retention.default_max_lifetime"),
        ({"purge_batch_size": 0}, "retention.purge_batch_size"),
        ({"purge_batch_size": 10**9}, "retention.purge_batch_size"),
        ({"purge_batch_size": "5"}, "retention.purge_batch_size"),
        ({"max_lifetime": "1d"}, "unknown key"),
        ({"allowed_lifetime_min": "2d", "allowed_lifetime_max": "1d"}, "greater than"),
        ({"default_min_lifetime": "2d", "default_max_lifetime": "1d"}, "greater than"),
        ({"default_max_lifetime": "1h", "allowed_lifetime_min": "1d"}, "outside"),
        ({"default_max_lifetime": "2y", "allowed_lifetime_max": "1y"}, "outside"),
    ],
)
def test_config_errors_name_the_key(table, message):
    with pytest.raises(ValueError, match=message):
        parse_retention_config(table)
    # ... and the server's config refuses to load with a ConfigError.
    with pytest.raises(ConfigError, match=message):
        Config(retention=table).validate()


def test_the_server_config_carries_the_table():
    c = Config(retention={"enabled": True, "default_max_lifetime": "1d"}).validate()
    assert c.retention_config.default_max_lifetime == DAY


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"max_lifetime": 1000, "min_lifetime": 10}, RetentionPolicy(1000, 10)),
        ({"max_lifetime": 1000}, RetentionPolicy(1000, None)),
        ({}, RetentionPolicy(None, None)),
        # Hostile or mistaken values are ignored, never trusted.
        ({"max_lifetime": "1000"}, RetentionPolicy(None, None)),
        ({"max_lifetime": 1000.0}, RetentionPolicy(None, None)),
        ({"max_lifetime": True}, RetentionPolicy(None, None)),
        ({"max_lifetime": 0}, RetentionPolicy(None, None)),
        ({"max_lifetime": -1}, RetentionPolicy(None, None)),
        ({"max_lifetime": 2**64}, RetentionPolicy(None, None)),
        ({"max_lifetime": MAX_SAFE_INTEGER}, RetentionPolicy(MAX_SAFE_INTEGER, None)),
        ({"max_lifetime": None, "min_lifetime": [1]}, RetentionPolicy(None, None)),
        ({"max_lifetime": {"x": 1}}, RetentionPolicy(None, None)),
    ],
)
def test_room_policy_from_hostile_content(content, expected):
    assert room_policy(content) == expected


@pytest.mark.parametrize("content", [None, "x", 5, [1, 2]])
def test_no_room_policy_without_an_object(content):
    assert room_policy(content) is None


def test_room_without_a_policy_gets_the_default():
    config = RetentionConfig(default_max_lifetime=30 * DAY, default_min_lifetime=DAY)
    assert effective_policy(config, None) == RetentionPolicy(30 * DAY, DAY)
    assert effective_policy(RetentionConfig(), None) == RetentionPolicy(None, None)


def test_missing_or_bad_fields_fall_back_to_the_default_field_by_field():
    config = RetentionConfig(default_max_lifetime=30 * DAY, default_min_lifetime=DAY)
    assert effective_policy(config, {"max_lifetime": 2 * DAY}) == RetentionPolicy(2 * DAY, DAY)
    assert effective_policy(config, {"min_lifetime": 5}) == RetentionPolicy(30 * DAY, 5)
    assert effective_policy(config, {"max_lifetime": -3}) == RetentionPolicy(30 * DAY, DAY)


def test_room_max_lifetime_is_clamped_into_the_allowed_range():
    config = RetentionConfig(allowed_lifetime_min=DAY, allowed_lifetime_max=30 * DAY)
    assert effective_policy(config, {"max_lifetime": 1}).max_lifetime == DAY
    assert effective_policy(config, {"max_lifetime": MAX_SAFE_INTEGER}).max_lifetime == 30 * DAY
    assert effective_policy(config, {"max_lifetime": 2 * DAY}).max_lifetime == 2 * DAY
    only_max = RetentionConfig(allowed_lifetime_max=DAY)
    assert effective_policy(only_max, {"max_lifetime": 5}).max_lifetime == 5
    assert effective_policy(only_max, {"max_lifetime": 9 * DAY}).max_lifetime == DAY
    # A room asking for nothing keeps the default (which the config check keeps in range).
    assert effective_policy(config, {}).max_lifetime is None


def test_min_lifetime_wins_over_max_lifetime():
    assert RetentionPolicy(1000, 5000).lifetime == 5000
    assert RetentionPolicy(5000, 1000).lifetime == 5000
    assert RetentionPolicy(None, 1000).lifetime is None
    assert cutoff(RetentionPolicy(1000, 5000), 10_000) == 5000
    assert cutoff(RetentionPolicy(None, None), 10_000) is None


def _c(eid, ts, sender="@a:x", **kw) -> Candidate:
    return Candidate(event_id=eid, sender=sender, origin_server_ts=ts, **kw)


def test_which_events_expire():
    policy = RetentionPolicy(1000)
    now = 10_000
    cands = [
        _c("$old", 8_999),
        _c("$edge", 9_000),  # exactly max_lifetime old: not yet
        _c("$new", 9_500),
        _c("$state", 1, current_state=True),
        _c("$gone", 1, stripped=True),
        _c("$held", 1, sender="@held:x"),
        _c("$future", 10**12),
        _c("$ancient", -(10**12)),
    ]
    assert expired(policy, now, cands, held_users={"@held:x"}) == ["$old", "$ancient"]
    assert expired(policy, now, cands, room_held=True) == []
    assert expired(RetentionPolicy(None), now, cands) == []
    # min_lifetime protects.
    assert expired(RetentionPolicy(1000, 1500), now, cands) == ["$held", "$ancient"]


def test_media_expiry():
    assert media_expired(1000, 10_000, 8_999)
    assert not media_expired(1000, 10_000, 9_000)
    assert not media_expired(1000, 10_000, 1, held=True)
    assert not media_expired(None, 10_000, 1)


def test_the_config_file_table(tmp_path):
    from bastion.config import load_config

    path = tmp_path / "bastion.toml"
    path.write_text('server_name = "x.example"\n[retention]\nenabled = true\n'
                    'default_max_lifetime = "30d"\npurge_interval = 60000\n')  # fmt: skip
    c = load_config(path).validate()
    assert (c.retention_config.enabled, c.retention_config.default_max_lifetime,
            c.retention_config.purge_interval) == (True, 30 * DAY, 60_000)  # fmt: skip
    path.write_text('[retention]\ndefault_max_lifetime = "30 days"\n')
    with pytest.raises(ConfigError, match="retention.default_max_lifetime"):
        load_config(path).validate()
