"""Simplified sliding sync (MSC4186) through matrix-js-sdk's ``SlidingSync``
(tests/js/sliding_sync.mjs): a list window over the rooms by activity and its count, a room
entering the window on a long-polled incremental request, and a room subscription bringing
a room the window never held."""

from __future__ import annotations

from tests.support.guard import exempt
from tests.support.harness import Client
from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest


def test_sliding_sync_list_window_and_subscription(server, node):
    alice = Client(server.base_url).register()
    exempt(server, alice)  # several messages within a second, by design
    assert alice.user_id and alice.access_token and alice.device_id
    result = run_script(
        node, "sliding_sync.mjs", "rooms", server.base_url,
        alice.user_id, alice.access_token, alice.device_id,
    )  # fmt: skip
    first, second, third = result["ids"]
    assert result["firstWindow"] == sorted([second, third])
    assert result["count"] == 4
    assert result["moved"]["name"] == "First"
    assert result["moved"]["bodies"] == ["still here"]
    assert result["hidden"] not in result["firstWindow"]
    assert result["subscribed"]["name"] == "Hidden"
    assert result["subscribed"]["bodies"] == ["over there"]
