"""History visibility rules (C-S module "Room History Visibility", server behaviour)."""

from bastion.core.visibility import is_event_visible, normalise_visibility


def test_rules():
    assert is_event_visible(("world_readable",), (None,), False)
    assert is_event_visible(("joined",), ("join",), False)
    assert not is_event_visible(("joined",), ("leave",), True)
    assert is_event_visible(("shared",), (None,), True)
    assert not is_event_visible(("shared",), (None,), False)
    assert is_event_visible(("invited",), ("invite",), False)
    assert not is_event_visible(("joined",), ("invite",), False)
    # Before-or-after for the visibility event and the user's own membership event.
    assert is_event_visible(("joined", "world_readable"), (None,), False)
    assert is_event_visible(("joined",), (None, "join"), False)
    assert not is_event_visible(("joined",), (None, "invite"), False)


def test_unknown_visibility_is_shared():
    assert normalise_visibility("bogus") == "shared"
    assert normalise_visibility(None) == "shared"
    assert is_event_visible(("bogus",), (None,), True)
