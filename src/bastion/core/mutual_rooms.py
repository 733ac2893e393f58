"""Rooms in common with another user (MSC2666, stabilised as ``GET
/_matrix/client/v1/mutual_rooms``): the page of a sorted room list after a batch token. Pure."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PAGE_SIZE", "mutual_rooms_page"]

#: The most room IDs in one answer.
PAGE_SIZE = 100


def mutual_rooms_page(
    mine: Iterable[str], theirs: Iterable[str], after: str | None, limit: int = PAGE_SIZE
) -> tuple[list[str], str | None]:
    """The rooms in both ``mine`` and ``theirs``, in room ID order, after the room ID ``after``
    (the batch token: the last room of the previous page), at most ``limit`` of them; and the
    token of the next page (None on the last one)."""
    common = sorted(set(mine) & set(theirs))
    if after is not None:
        common = [r for r in common if r > after]
    page = common[:limit]
    return page, (page[-1] if len(common) > limit else None)
