"""A room upgrade through matrix-js-sdk (tests/js/upgrade.mjs): alice upgrades an invite-only
room with ``upgradeRoom``; bob's client sees the tombstone, follows its ``replacement_room``,
and both talk in the new room, whose upgrade history the SDK verifies on both sides (C-S API
"Room Upgrades")."""

from __future__ import annotations

from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest


def test_both_users_follow_the_upgrade(server, node):
    result = run_script(node, "upgrade.mjs", "follow", server.base_url)
    old, new = result["old_id"], result["new_id"]
    assert new != old and result["replacement"] == new
    assert result["predecessor_room"] == old
    assert result["history_alice"] == [old, new] and result["history_bob"] == [old, new]
    assert result["name"] == "Before the upgrade" and result["version"] == "12"
    old_send = result["old_send"]
    assert (old_send.get("status"), old_send.get("errcode")) == (403, "M_FORBIDDEN"), old_send
