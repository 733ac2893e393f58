"""Usernames that impersonate others by confusable characters (pure).

A localpart may use only ``a-z 0-9 . _ = - / +`` (C-S API "User Identifiers"), so the
confusables are few and known: digits that read as letters (``0``/``o``, ``1``/``l``/``i``,
``5``/``s`` ...), letter pairs that read as one letter (``rn``/``m``, ``vv``/``w``,
``cl``/``d``) and separators, which a reader skips (``a.dmin``, ``ad-min``). :func:`skeleton`
maps a localpart to a canonical form under which confusable names are equal, and
:class:`SkeletonIndex` answers "does any existing name have this skeleton?" with one dictionary
look-up, never a scan of the users.

Unicode confusables (Cyrillic ``а`` for Latin ``a``) cannot occur in a localpart; display names
are not checked here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["SkeletonIndex", "impersonates", "skeleton"]

#: Single characters that read as another (after lower-casing), mapped to the one they read as.
_SINGLE: Final = str.maketrans({
    "0": "o", "1": "l", "i": "l", "|": "l", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
    "9": "g", "2": "z",
})  # fmt: skip
#: Sequences that read as one letter, replaced first (longest first).
_SEQUENCES: Final = (("rn", "m"), ("vv", "w"), ("cl", "d"), ("nn", "m"))
#: Separators a reader skips.
_SEPARATORS: Final = str.maketrans("", "", "._=-/+")


def skeleton(localpart: str) -> str:
    """The canonical form of a localpart: separators dropped, confusable letter sequences and
    characters replaced (``Adm1n``, ``a.dmin``, ``adrnin`` -> ``admln``)."""
    s = localpart.lower().translate(_SEPARATORS)
    for seq, letter in _SEQUENCES:
        s = s.replace(seq, letter)
    return s.translate(_SINGLE)


def impersonates(candidate: str, existing: str) -> bool:
    """Whether a new localpart ``candidate`` is a confusable of ``existing`` (and not it)."""
    return candidate != existing and skeleton(candidate) == skeleton(existing)


class SkeletonIndex:
    """Skeleton -> the localparts that have it (a dictionary; adding a name is one insert)."""

    def __init__(self, localparts: Iterable[str] = ()) -> None:
        self._index: dict[str, set[str]] = {}
        for lp in localparts:
            self.add(lp)

    def __len__(self) -> int:
        return len(self._index)

    def add(self, localpart: str) -> None:
        self._index.setdefault(skeleton(localpart), set()).add(localpart)

    def confusable_with(self, candidate: str) -> str | None:
        """An existing localpart the candidate is confusable with (not itself), or None."""
        names = self._index.get(skeleton(candidate))
        if not names:
            return None
        others = sorted(n for n in names if n != candidate)
        return others[0] if others else None
