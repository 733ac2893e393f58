"""The pure parts of Simplified Sliding Sync (MSC4186): the extension request fields
(``to_device.limit``, the room-scoped extensions' ``lists`` and ``rooms``), the rooms an
extension covers, and what a connection remembers having sent of each room."""

from __future__ import annotations

import pytest

from bastion.core.sliding_sync import (
    ALL,
    MAX_TO_DEVICE_LIMIT,
    ExtensionScope,
    extension_rooms,
    parse_request,
    sent_after,
)
from bastion.errors import MatrixError


def parse(body: dict):
    return parse_request(body, lambda r: r.startswith("!"))


def test_to_device_limit_and_since():
    ext = parse({"extensions": {"to_device": {"enabled": True}}}).extensions
    assert ext.to_device and ext.to_device_since is None
    assert ext.to_device_limit == MAX_TO_DEVICE_LIMIT
    ext = parse({"extensions": {"to_device": {"enabled": True, "since": "42", "limit": 7}}})
    assert (ext.extensions.to_device_since, ext.extensions.to_device_limit) == (42, 7)
    for limit, clamped in ((0, 1), (10**9, MAX_TO_DEVICE_LIMIT)):
        body = {"extensions": {"to_device": {"enabled": True, "limit": limit}}}
        assert parse(body).extensions.to_device_limit == clamped
    for bad in ({"limit": "5"}, {"limit": -1}, {"limit": True}, {"since": 5}, {"since": "s1"}):
        with pytest.raises(MatrixError):
            parse({"extensions": {"to_device": {"enabled": True, **bad}}})
    # enabled: null is off (as Synapse's model).
    assert not parse({"extensions": {"e2ee": {"enabled": None}}}).extensions.e2ee


def test_extension_scopes():
    def scope(spec):
        return parse({"extensions": {"receipts": {"enabled": True, **spec}}}).extensions.scope(
            "receipts"
        )

    assert scope({}) == ExtensionScope(frozenset({ALL}), frozenset({ALL}))
    assert scope({"lists": None, "rooms": []}) == ExtensionScope(frozenset(), frozenset())
    assert scope({"lists": ["a"], "rooms": ["!r"]}) == ExtensionScope(
        frozenset({"a"}), frozenset({"!r"})
    )
    # Not enabled: the default scope (it is not used).
    assert parse({}).extensions.scope("typing") == ExtensionScope()
    for bad in ({"lists": "a"}, {"rooms": [1]}, {"lists": ["x"] * 101}, {"rooms": ["x" * 300]}):
        with pytest.raises(MatrixError):
            scope(bad)


def test_extension_rooms():
    windows = {"a": ["!1", "!2"], "b": ["!3"]}
    subs = ["!9", "!2"]
    everything = {"!1", "!2", "!3", "!9"}
    assert extension_rooms(ExtensionScope(), windows, subs) == everything
    only_b = ExtensionScope(frozenset({"b", "missing"}), frozenset())
    assert extension_rooms(only_b, windows, subs) == {"!3"}
    named = ExtensionScope(frozenset(), frozenset({"!9", "!not-subscribed"}))
    assert extension_rooms(named, windows, subs) == {"!9"}
    assert extension_rooms(ExtensionScope(frozenset(), frozenset()), windows, subs) == set()


def test_sent_after():
    before: dict[str, int | None] = {"live": None, "owed": 5, "quiet": None}
    # Nothing changes: the very same map (positions share it).
    assert sent_after(before, ["live"], [], 9) is before
    # A live room with updates it was not sent becomes owed from the request's position; an
    # owed room stays owed from its own; rooms brought up to date become live.
    after = sent_after(before, ["new", "owed"], ["live", "owed"], 9, dropped=["quiet"])
    assert after == {"live": 9, "owed": None, "new": None}
    assert before == {"live": None, "owed": 5, "quiet": None}  # not changed in place
    # A room both missed and brought up to date (cannot happen, but) ends up live.
    assert sent_after({"r": None}, ["r"], ["r"], 9) == {"r": None}
    # No position to owe from (a new connection): nothing is marked owed.
    assert sent_after({}, ["a"], ["b"], None) == {"a": None}
