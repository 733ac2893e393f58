"""Room previews through matrix-js-sdk (tests/js/peek.mjs): ``peekInRoom`` shows a
world_readable room to a non-member (``/rooms/{roomId}/initialSync``) and follows it live
(``/events?room_id=``); a members-only room is refused (C-S API "Room Previews")."""

from __future__ import annotations

from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest


def test_a_non_member_peeks_into_a_world_readable_room(server, node):
    result = run_script(node, "peek.mjs", "world_readable", server.base_url)
    first = result["first"]
    assert first["name"] == "Open book"
    assert first["bodies"] == ["before"]
    assert first["aliceJoined"] == "join"
    assert result["live"] == ["before", "live"]
    assert result["refused"] == {"status": 403, "errcode": "M_FORBIDDEN"}
