"""Unread counts through matrix-js-sdk (tests/js/unread.mjs): alice's messages raise bob's
counts in /sync and bob's read receipts clear them, in the main timeline and in a thread, with
bob's client in thread mode as Element runs it (C-S API "Receiving notifications", "Marking
notifications as read", "Receipts" → "Threaded read receipts"; ``unread_thread_notifications``
in the /sync filter)."""

from __future__ import annotations

import json

from tests.support.guard import exempt
from tests.support.harness import Client
from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest


def creds(c: Client) -> str:
    return json.dumps(
        {"user_id": c.user_id, "access_token": c.access_token, "device_id": c.device_id}
    )


def test_unread_counts_rise_and_clear(server, node):
    alice, bob = Client(server.base_url).register(), Client(server.base_url).register()
    exempt(server, alice)  # several messages within a second, by design
    result = run_script(node, "unread.mjs", "counts", server.base_url, creds(alice), creds(bob))
    root = result["root_id"]
    # One notification per message; the mention highlights.
    assert [(r["total"], r["highlight"]) for r in result["rising"]] == [(1, 0), (2, 0), (3, 1)]
    assert (result["read"]["total"], result["read"]["highlight"]) == (0, 0)
    assert result["after_read"]["total"] == 1
    # Thread replies count in the thread; the main timeline keeps its two.
    assert [(r["main"], r[root]) for r in result["thread_rising"]] == [(2, [1, 0]), (2, [2, 1])]
    assert result["thread_rising"][-1]["highlight"] == 1
    # The same counts after a fresh start (initial /sync).
    assert (result["fresh"]["main"], result["fresh"][root]) == (2, [2, 1])
    # A reaction to a reply is in the thread; a threaded receipt on it clears the thread only.
    assert result["reaction_thread"] == root
    assert (result["thread_read"]["main"], result["thread_read"][root]) == (2, [0, 0])
    assert (result["thread_again"]["main"], result["thread_again"][root]) == (2, [1, 0])
    # A threaded receipt naming the main timeline for a reply in the thread is refused.
    assert result["wrong_thread"] == {"status": 400, "errcode": "M_INVALID_PARAM"}
    # An unthreaded receipt clears everything; counting starts again from it.
    assert (result["all_read"]["total"], result["all_read"][root]) == (0, [0, 0])
    assert (result["after_all"]["main"], result["after_all"][root]) == (1, [0, 0])
    assert (result["fresh_end"]["main"], result["fresh_end"][root]) == (1, [0, 0])
    # m.read.private clears counts too (on the first client, through /sync)
    assert (result["private_read"]["total"], result["private_read"]["main"]) == (0, 0)
