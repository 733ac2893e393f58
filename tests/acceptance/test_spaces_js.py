"""A space with a child room on another Bastion, through matrix-js-sdk (tests/js/spaces.mjs):
``getRoomHierarchy`` on server A lists the space and the public child room on server B with
its summary (C-S API "Spaces", answered through B's S-S ``GET /v1/hierarchy/{roomId}``), not
B's private room; pagination and ``suggested_only`` pass through; the user joins the child
through the ``via`` server the hierarchy gave."""

from __future__ import annotations

from tests.support import server_pair
from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest

pair = server_pair.pair  # the fixture


def test_space_with_a_child_on_another_server(pair, node):
    a, b = pair
    result = run_script(
        node, "spaces.mjs", "remote-child", a.base_url, b.base_url, b.hs.server_name,
        timeout=120,
    )  # fmt: skip
    space, garden = result["space"], result["garden"]
    rooms = result["rooms"]
    assert [r["room_id"] for r in rooms] == [space, garden]
    assert rooms[0]["name"] == "Home" and rooms[0]["room_type"] == "m.space"
    assert [c["state_key"] for c in rooms[0]["children_state"]] == [garden, result["shed"]]
    child = rooms[1]
    assert child["name"] == "Garden" and child["topic"] == "Plants and such"
    assert child["join_rule"] == "public" and child["num_joined_members"] == 1
    assert child["children_state"] == [] and child["room_version"]
    assert result["next_batch"] is None
    assert result["suggested"] == [space, garden]
    assert result["paged"] == [[space], [garden]] and result["small_next"] == "string"
    assert result["joined"] == garden
