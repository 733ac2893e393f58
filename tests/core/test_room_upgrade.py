"""The pure decisions of room upgrades (core/room_upgrade.py): power levels normalised to
integers, the replacement room's power levels (v12 creators removed, the upgrader's level
raised while the state is copied), the old room's restriction."""

from __future__ import annotations

from bastion.core.room_upgrade import (
    TRANSFERRED_STATE,
    direct_with_replacement,
    normalise_power_levels,
    replacement_power_levels,
    restricted_power_levels,
)
from bastion.core.room_versions import get_room_version

V9, V11, V12 = (get_room_version(v) for v in ("9", "11", "12"))


def test_normalise_turns_stringy_levels_into_integers_and_drops_junk():
    content = {"ban": "75", "kick": " +20 ", "redact": "x", "users": {"@a:x": "100", "@b:x": []},
               "events": {"m.room.name": "60"}, "notifications": {"room": "10"},
               "historical": 100}  # fmt: skip
    out = normalise_power_levels(content, V9)
    assert out == {"ban": 75, "kick": 20, "users": {"@a:x": 100}, "events": {"m.room.name": 60},
                   "notifications": {"room": 10}, "historical": 100}  # fmt: skip
    # v11 already has integers only: strings are not levels there.
    assert normalise_power_levels({"ban": "75", "kick": 20}, V11) == {"kick": 20}


def test_replacement_keeps_the_levels_when_the_upgrader_has_enough():
    pl = {"users": {"@a:x": 100, "@b:x": 50}, "state_default": 50}
    first, final = replacement_power_levels(pl, "@a:x", 100, V11, ["@a:x"], TRANSFERRED_STATE)
    assert first == pl and final is None
    assert first["users"] is not pl["users"]  # a copy


def test_replacement_raises_then_restores_the_upgrader():
    pl = {"users": {"@a:x": 100, "@m:x": 60}, "events": {"m.room.name": 100}}
    first, final = replacement_power_levels(pl, "@m:x", 60, V11, ["@m:x"], ["m.room.name"])
    assert first["users"]["@m:x"] == 100 and final is not None
    assert final["users"] == {"@a:x": 100, "@m:x": 60}
    # The power levels themselves need 100 by default here (state_default 50): a user at 50
    # whose copied state needs only 50 is still raised to send the final power levels.
    pl = {"users": {"@m:x": 50}, "events": {"m.room.power_levels": 90}}
    first, final = replacement_power_levels(pl, "@m:x", 50, V11, ["@m:x"], ["m.room.topic"])
    assert first["users"]["@m:x"] == 90 and final == pl


def test_replacement_in_v12_removes_the_creators():
    pl = {"users": {"@a:x": 100, "@b:x": 100, "@c:x": 50}}
    first, final = replacement_power_levels(pl, "@a:x", 100, V12, ["@a:x", "@b:x"], [])
    assert first["users"] == {"@c:x": 50} and final is None
    assert first["events"] == {"m.room.tombstone": 150}  # creators upgrade it again
    pl = {"users": {"@c:x": 200}, "events": {"m.room.tombstone": 200}}
    first, _ = replacement_power_levels(pl, "@a:x", 100, V12, ["@a:x"], [])
    assert first["events"]["m.room.tombstone"] == 200


def test_a_v12_creator_upgrading_to_v11_keeps_the_highest_level():
    pl = {"users": {"@c:x": 50}, "events": {"m.room.tombstone": 150}}
    first, final = replacement_power_levels(pl, "@a:x", float("inf"), V11, ["@a:x"], [])
    assert first["users"]["@a:x"] == 150 and final is None


def test_restriction_of_the_old_room():
    assert restricted_power_levels({"users_default": 0}, V11) == {
        "users_default": 0, "events_default": 50, "invite": 50}  # fmt: skip
    assert restricted_power_levels({"users_default": 60, "invite": 0, "x": 1}, V11) == {
        "users_default": 60, "events_default": 61, "invite": 61, "x": 1}  # fmt: skip
    assert restricted_power_levels({"events_default": 50, "invite": 70}, V11) is None
    assert restricted_power_levels({"events_default": "50", "invite": "50"}, V9) is None


def test_direct_chats_gain_the_replacement_room():
    content = {"@a:x": ["!old:x", "!o2:x"], "@b:x": ["!o2:x"], "@c:x": "junk"}
    assert direct_with_replacement(content, "!old:x", "!new:x") == {
        "@a:x": ["!old:x", "!o2:x", "!new:x"], "@b:x": ["!o2:x"], "@c:x": "junk"}  # fmt: skip
    assert direct_with_replacement({"@a:x": ["!old:x", "!new:x"]}, "!old:x", "!new:x") is None
    assert direct_with_replacement({"@a:x": ["!o2:x"]}, "!old:x", "!new:x") is None
    assert direct_with_replacement(["!old:x"], "!old:x", "!new:x") is None
