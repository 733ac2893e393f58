"""Glob-style matching (appendices "Glob-style matching"): ``*`` matches zero or more
characters, ``?`` exactly one; every other character stands for itself.

Patterns come from rooms and users (server ACLs, policy lists, filters), so matching must not be
a backtracking regular expression: ``*a*a*a*a*a*a*b`` against a 60-character name takes seconds
with ``re`` and doubles with each ``*a``. :class:`Glob` splits the pattern on ``*`` into
fixed-length pieces (literals and ``?``): the first is anchored at the start, the last at the end,
and each middle piece is found leftmost after the one before (for pieces separated by ``*``,
leftmost is always a correct choice). A piece is found with ``str.find`` or, when it holds a
``?``, with a regular expression of literals and ``.`` only (no quantifier, no alternation:
nothing to backtrack over). The cost is at most the pattern's length times the value's.

Pure; case-sensitive (callers that match case-insensitively lower both sides).
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["Glob", "glob_match", "star_match"]


class _Piece:
    """A fixed-length piece of a glob (literal characters and ``?``)."""

    __slots__ = ("size", "text", "wild")

    def __init__(self, text: str, question: bool) -> None:
        self.text = text
        self.size = len(text)
        # Only literals and ``.``: a pattern without quantifiers or alternation cannot backtrack.
        self.wild: re.Pattern[str] | None = None
        if question and "?" in text:
            regex = "".join("." if ch == "?" else re.escape(ch) for ch in text)
            self.wild = re.compile(regex, re.DOTALL)

    def at(self, value: str, pos: int) -> bool:
        if pos < 0 or pos + self.size > len(value):
            return False
        if self.wild is None:
            return value.startswith(self.text, pos)
        return self.wild.match(value, pos) is not None

    def find(self, value: str, start: int, end: int) -> int:
        """The leftmost position in ``value[start:end]`` where the piece fits, or -1."""
        if self.wild is None:
            return value.find(self.text, start, end)
        found = self.wild.search(value, start, end)
        return -1 if found is None else found.start()


class Glob:
    """A glob (appendices "Glob-style matching") matched in linear passes, never by a
    backtracking regular expression: split on ``*``, the first piece is anchored at the start,
    the last at the end, and each middle piece is found leftmost after the one before (leftmost
    is always a correct choice for pieces separated by ``*``)."""

    __slots__ = ("head", "middle", "minimum", "pattern", "starred", "tail")

    def __init__(self, pattern: str, *, question: bool = True) -> None:
        """``question`` False: ``?`` is a literal (only ``*`` is a wildcard)."""
        self.pattern = pattern
        parts = pattern.split("*")
        self.starred = len(parts) > 1
        self.head = _Piece(parts[0], question)
        self.tail = _Piece(parts[-1], question) if self.starred else _Piece("", question)
        self.middle = tuple(_Piece(p, question) for p in parts[1:-1] if p)
        self.minimum = self.head.size + self.tail.size + sum(p.size for p in self.middle)

    def matches(self, value: str) -> bool:
        n = len(value)
        if not self.starred:
            return n == self.head.size and self.head.at(value, 0)
        if n < self.minimum or not self.head.at(value, 0):
            return False
        end = n - self.tail.size
        if not self.tail.at(value, end):
            return False
        pos = self.head.size
        for piece in self.middle:
            found = piece.find(value, pos, end)
            if found < 0:
                return False
            pos = found + piece.size
        return pos <= end


@lru_cache(maxsize=4096)
def _compiled(pattern: str, question: bool) -> Glob:
    return Glob(pattern, question=question)


def glob_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the glob ``pattern`` as a whole (case-sensitive)."""
    return _compiled(pattern, True).matches(value)


def star_match(pattern: str, value: str) -> bool:
    """:func:`glob_match` where only ``*`` is a wildcard (``?`` stands for itself)."""
    return _compiled(pattern, False).matches(value)
