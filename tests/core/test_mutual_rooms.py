"""The paging of rooms in common (core/mutual_rooms.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.core.mutual_rooms import mutual_rooms_page


def test_common_rooms_in_order_with_a_token_for_the_next_page():
    mine = {"!c:x", "!a:x", "!b:x", "!d:x"}
    theirs = {"!b:x", "!d:x", "!a:x", "!z:x"}
    assert mutual_rooms_page(mine, theirs, None, 2) == (["!a:x", "!b:x"], "!b:x")
    assert mutual_rooms_page(mine, theirs, "!b:x", 2) == (["!d:x"], None)
    assert mutual_rooms_page(mine, theirs, None, 3) == (["!a:x", "!b:x", "!d:x"], None)
    assert mutual_rooms_page(mine, set(), None) == ([], None)


@given(st.sets(st.sampled_from([f"!{i:02}:x" for i in range(30)])),
       st.sets(st.sampled_from([f"!{i:02}:x" for i in range(30)])),
       st.integers(1, 7))  # fmt: skip
def test_following_the_tokens_lists_every_common_room_once(mine, theirs, limit):
    seen: list[str] = []
    token = None
    while True:
        page, token = mutual_rooms_page(mine, theirs, token, limit)
        assert len(page) <= limit
        seen += page
        if token is None:
            break
    assert seen == sorted(mine & theirs)
