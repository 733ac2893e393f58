"""Favourites through matrix-js-sdk (tests/js/tags.mjs): a room tag set with ``setRoomTag`` on
one device reaches the same user's second device through /sync (C-S API "Room Tagging")."""

from __future__ import annotations

from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest


def test_favourite_reaches_second_device(server, node):
    result = run_script(node, "tags.mjs", "favourites", server.base_url)
    assert result["seen"] == {"m.favourite": {"order": 0.5}, "u.my work": {}}
    assert result["listed"] == {"tags": result["seen"]}
    assert result["moved"] == {"m.lowpriority": {"order": 0.25}, "u.my work": {}}
    assert result["cleared"] == {}
    assert result["after"] == {"tags": {}}
    refused = result["refused"]
    assert (refused.get("status"), refused.get("errcode")) == (403, "M_FORBIDDEN"), refused
