"""The user directory's matching and ranking (C-S API "User directory",
``POST /user_directory/search``): pure functions over candidates the store found.

The spec leaves the matching to the server ("performed case-insensitively on user IDs and
display names"); Bastion's rule, close to what clients expect from Synapse:

* the search term is split on white space into words; every word must match (case-folded)
  the beginning of a word of the display name, the beginning of a word of the user ID's
  localpart, or the beginning of the full user ID (with or without its ``@``). A word of a
  name starts at its start or after a character that is neither a letter nor a digit, so
  ``smi`` finds "Alice Smith", ``ali`` finds ``@alice.smith:example.org`` and
  ``@alice:exa`` finds ``@alice:example.org``;
* results are ordered by rank, then by whether profile information is available (as the spec
  asks), then by display name (the localpart when there is none), then by user ID. The rank:
  the whole term equal to the display name, the localpart or the user ID first; then the
  whole term a prefix of one of them; then the rest.

Nothing here is SQL: user input is never a pattern, every word is matched literally.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

#: Longest search term accepted (characters): a person types a name, not a document.
MAX_SEARCH_TERM = 256
#: Most words of a search term that are used: a longer term matches fewer users, never more,
#: so refusing it changes nothing a person would see; past this the request is refused.
MAX_SEARCH_WORDS = 16
#: Results given when the request names no limit, and the most given whatever it names.
DEFAULT_LIMIT = 10
MAX_LIMIT = 50


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """A user the requester may find, with the profile the directory shows."""

    user_id: str
    display_name: str | None
    avatar_url: str | None


def search_words(term: str) -> list[str]:
    """The case-folded words of a search term (none for a blank term)."""
    return [w.casefold() for w in term.split()]


def _localpart(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id


def _starts_a_word_in(word: str, text: str) -> bool:
    """True when ``word`` occurs in ``text`` where a word may start: at the start, or after a
    character that is not a letter or digit (``str.isalnum``)."""
    i = text.find(word)
    while i >= 0:
        if i == 0 or not text[i - 1].isalnum():
            return True
        i = text.find(word, i + 1)
    return False


@dataclass(frozen=True, slots=True)
class Folded:
    """An entry's texts as a search compares them, case-folded once (a
    :class:`PrefixIndex` keeps them beside its entries): the display name (empty when none),
    the user ID, its localpart, the user ID without its ``@``, and whether the user has
    profile information."""

    name: str
    uid: str
    local: str
    bare: str
    has_profile: bool

    @classmethod
    def of(cls, entry: DirectoryEntry) -> Folded:
        uid = entry.user_id.casefold()
        return cls(
            (entry.display_name or "").casefold(), uid, _localpart(uid),
            uid[1:] if uid.startswith("@") else uid,
            bool(entry.display_name or entry.avatar_url),
        )  # fmt: skip


class Matcher:
    """The words of one search, applied to every candidate."""

    def __init__(self, term: str) -> None:
        self.words = search_words(term)
        self.term = " ".join(self.words)

    def matches(self, entry: DirectoryEntry) -> bool:
        return self.matches_folded(Folded.of(entry))

    def matches_folded(self, f: Folded) -> bool:
        if not self.words:
            return False
        for word in self.words:
            if _starts_a_word_in(word, f.name) or _starts_a_word_in(word, f.local):
                continue
            if f.uid.startswith(word) or f.bare.startswith(word):
                continue
            return False
        return True

    def sort_key(self, entry: DirectoryEntry) -> tuple[int, int, str, str]:
        return self.sort_key_folded(Folded.of(entry), entry.user_id)

    def sort_key_folded(self, f: Folded, user_id: str) -> tuple[int, int, str, str]:
        term = self.term
        if term in (f.name, f.local, f.uid):
            rank = 0
        elif f.name.startswith(term) or f.local.startswith(term) or f.uid.startswith(term):
            rank = 1
        else:
            rank = 2
        return (rank, 0 if f.has_profile else 1, f.name or f.local, user_id)


def rank_results(
    term: str, candidates: Iterable[DirectoryEntry], limit: int
) -> tuple[list[DirectoryEntry], bool]:
    """The candidates that match ``term``, best first, at most ``limit`` of them, and whether
    more matched (the response's ``limited``)."""
    matcher = Matcher(term)
    found = [c for c in candidates if matcher.matches(c)]
    found.sort(key=matcher.sort_key)
    return found[:limit], len(found) > limit


def result_json(entry: DirectoryEntry) -> dict[str, str]:
    """One entry of the response's ``results``: ``display_name`` and ``avatar_url`` only when
    the user has them."""
    out: dict[str, str] = {"user_id": entry.user_id}
    if entry.display_name:
        out["display_name"] = entry.display_name
    if entry.avatar_url:
        out["avatar_url"] = entry.avatar_url
    return out


def _word_starts(text: str) -> list[int]:
    """Where a word of ``text`` may start for :class:`Matcher`: at 0, and after every
    character that is not a letter or digit."""
    return [0] + [i for i in range(1, len(text)) if not text[i - 1].isalnum()]


class PrefixIndex:
    """Directory entries, searchable by word prefix without a scan.

    Its keys are, for each entry, the case-folded display name and localpart from every
    position where :class:`Matcher` lets a word start, and the case-folded user ID with and
    without its ``@`` from their start, each cut to :data:`KEY_CHARS` characters; sorted, so the
    entries a word can match are one range (:meth:`positions`). Words longer than a key match
    every key their first characters match: :class:`Matcher` then decides. The same user may be
    in ``entries`` more than once (a remote user under each of their room memberships)."""

    KEY_CHARS = 24

    def __init__(self, entries: Iterable[DirectoryEntry]) -> None:
        self.entries: list[DirectoryEntry] = list(entries)
        #: ``folded[i]``: ``entries[i]`` as a search compares it.
        self.folded: list[Folded] = [Folded.of(e) for e in self.entries]
        pairs: list[tuple[str, int]] = []
        n = self.KEY_CHARS
        for pos, f in enumerate(self.folded):
            keys = {f.uid[:n], f.uid[1:][:n]}
            for text in (f.name, f.local):
                keys.update(text[i : i + n] for i in _word_starts(text) if i < len(text))
            pairs.extend((k, pos) for k in keys if k)
        pairs.sort()
        self._keys = [k for k, _ in pairs]
        self._positions = [p for _, p in pairs]

    def _range(self, word: str) -> tuple[int, int]:
        w = word[: self.KEY_CHARS]
        return bisect_left(self._keys, w), bisect_left(self._keys, w + "\U0010ffff")

    def positions(self, words: list[str]) -> list[int]:
        """The positions in ``entries`` of those every one of ``words`` may match (a superset
        of :class:`Matcher`'s matches), from the narrowest word's range, each once."""
        if not words:
            return []
        lo, hi = min((self._range(w) for w in words), key=lambda r: r[1] - r[0])
        return list(dict.fromkeys(self._positions[lo:hi]))

    def candidates(self, words: list[str]) -> list[DirectoryEntry]:
        """The entries every one of ``words`` may match (see :meth:`positions`)."""
        return [self.entries[p] for p in self.positions(words)]
