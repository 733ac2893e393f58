"""Threads, reactions, edits and search through matrix-js-sdk (tests/js/threads.mjs), between
two users on one Bastion: a thread with replies and a reaction seen live and, from scratch,
through the thread list, /relations and the bundled thread summaries (C-S API "Threading",
"Event annotations and reactions"); an edit shown as edited live and from the bundled
``m.replace`` of a new device's initial /sync ("Event replacements", "Aggregations of child
events"); server-side search with context ("Server Side Search")."""

from __future__ import annotations

from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest


def test_thread_with_replies_and_a_reaction(server, node):
    result = run_script(node, "threads.mjs", "thread", server.base_url)
    root, replies, reaction = result["root_id"], result["replies"], result["reaction_id"]
    assert result["relation"]["rel_type"] == "m.thread" and result["relation"]["event_id"] == root

    def check(view):
        assert view["length"] == 2 and view["participated"] is True
        # (where the SDK puts a live reaction among the replies is its own affair)
        messages = [(e["id"], e["body"]) for e in view["events"] if e["id"] != reaction]
        assert messages == [
            (root, "where shall we eat?"), (replies[0], "the noodle bar"),
            (replies[1], "or the pier"),
        ]  # fmt: skip
        assert len(view["events"]) == 4 and reaction in [e["id"] for e in view["events"]]
        assert all(e["thread_root"] == root for e in view["events"])
        assert view["reactions"] == [{"key": "👍", "senders": [result["alice"]]}]

    check(result["live"])
    # The new device: none of the thread in its initial sync, found through the thread list.
    assert result["thread_events_in_window"] == []
    assert result["listed"] == [root] and result["mine"] == [root]
    assert result["summary"] == {
        "count": 2, "latest_event": replies[1], "current_user_participated": True,
    }  # fmt: skip
    check(result["scratch"])


def test_edit_shown_as_edited(server, node):
    result = run_script(node, "threads.mjs", "edit", server.base_url)
    text_edit, file_edit = result["text_edit_id"], result["file_edit_id"]
    live = result["live"]
    assert (live["body"], live["replaced_by"], live["original_body"]) == (
        "lunch at one", text_edit, "lunch at noon",
    )  # fmt: skip
    # A new device: the original comes with its bundled replacement (and the edit itself too).
    fresh = result["from_sync"]
    assert (fresh["body"], fresh["bundled_replace"], fresh["replacing_event"]) == (
        "lunch at one", text_edit, text_edit,
    )  # fmt: skip
    assert result["edit_in_window"] is True
    # The files device never gets the caption's edit: the bundle alone shows it.
    assert result["files_window_has_edit"] is False and result["files_window_has_text"] is False
    files = result["file_view"]
    assert (files["body"], files["bundled_replace"], files["original_body"]) == (
        "Q3, final", file_edit, "Q3",
    )  # fmt: skip


def test_search_finds_the_message_with_context(server, node):
    result = run_script(node, "threads.mjs", "search", server.base_url)
    before, match, after = result["ids"]
    found = result["found"]
    assert found["count"] == 1 and "pier" in found["highlights"]
    (hit,) = found["results"]
    assert (hit["event_id"], hit["room_id"]) == (match, result["room_id"])
    assert hit["body"] == "shall we meet at the foo bar or the pier?"
    assert hit["context"] == ["good morning", hit["body"], "see you"]
    # Full-text query syntax in the term is plain words: no error, the same message.
    syntax = result["syntax"]
    assert syntax["count"] == 1 and [h["event_id"] for h in syntax["results"]] == [match]
    assert {"foo", "bar"} <= set(syntax["highlights"])
    assert result["none"] == {"count": 0, "results": 0}
