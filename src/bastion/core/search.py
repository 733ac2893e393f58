"""Server-side search (C-S API "Server Side Search", ``POST /search``): what is indexed, how a
search term becomes a full-text query, highlights, and the ``next_batch`` token. Pure
functions; the index itself is SQLite's FTS5 (:mod:`bastion.storage.sqlite.search`).

What is searchable: the spec's ``keys`` — ``content.body`` of ``m.room.message``,
``content.name`` of ``m.room.name``, ``content.topic`` of ``m.room.topic`` (the events that
carry those keys, as Synapse indexes them). Each key is one column of the index.

How a term is matched (the spec lets the server "process the search_term however it
wishes"): the term is split into words the way the index's tokenizer splits text (letters and
digits; everything else separates), case-folded; every word must begin a word of the text
(prefix match, as Synapse does; a word shorter than :data:`MIN_PREFIX` must be a whole word:
"a" as a prefix would expand to most of the index's vocabulary), in one of the searched keys. The query is built here from
those words, each one quoted: nothing the user types is ever FTS5 query syntax (``"``, ``*``,
``NEAR``, ``AND``, ``-``, ``:``, ``{`` are words or separators, never operators).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

#: key -> (event type, content field, index column).
KEYS: dict[str, tuple[str, str, str]] = {
    "content.body": ("m.room.message", "body", "body"),
    "content.name": ("m.room.name", "name", "name"),
    "content.topic": ("m.room.topic", "topic", "topic"),
}
#: The event types whose events may be indexed, and the column of each.
COLUMN_OF_TYPE = {etype: column for etype, _, column in KEYS.values()}
_FIELD_OF_TYPE = {etype: field for etype, field, _ in KEYS.values()}

#: Longest search term accepted (characters), most words used from it.
MAX_SEARCH_TERM = 1000
MAX_WORDS = 16
#: Results per page: the filter's ``limit`` (default 10), clamped.
DEFAULT_LIMIT = 10
MAX_LIMIT = 50
#: Context around each result: ``before_limit``/``after_limit`` (default 5), clamped.
DEFAULT_CONTEXT = 5
MAX_CONTEXT = 20
#: Shortest word matched as a prefix; shorter ones match whole words only.
MIN_PREFIX = 3
#: Longest ``next_batch`` token accepted.
MAX_TOKEN = 2048

#: A word: a run of letters and digits (the unicode61 tokenizer's token characters; ``_`` and
#: punctuation separate).
_WORD = re.compile(r"[^\W_]+")


def searchable_text(event: dict[str, Any]) -> tuple[str, str] | None:
    """(index column, text) of an event whose type carries a searchable key with a non-empty
    string, else None (two dict lookups for every other event)."""
    field = _FIELD_OF_TYPE.get(event.get("type"))  # type: ignore[arg-type]
    if field is None:
        return None
    content = event.get("content")
    text = content.get(field) if isinstance(content, dict) else None
    if not isinstance(text, str) or not text.strip():
        return None
    return COLUMN_OF_TYPE[event["type"]], text


def search_words(term: str) -> list[str]:
    """The distinct words of a search term, case-folded, in order, at most :data:`MAX_WORDS`."""
    out: list[str] = []
    for w in _WORD.findall(term):
        w = w.casefold()
        if w not in out:
            out.append(w)
        if len(out) == MAX_WORDS:
            break
    return out


def fts_query(words: Sequence[str], columns: Iterable[str]) -> str:
    """The FTS5 query: every word a quoted prefix term, all required, in ``columns``. Words
    come from :func:`search_words` (letters and digits only); quotes are doubled anyway."""
    terms = " AND ".join(
        '"' + w.replace('"', '""') + ('"*' if len(w) >= MIN_PREFIX else '"') for w in words
    )
    return "{" + " ".join(sorted(columns)) + "} : (" + terms + ")"


def highlights(words: Sequence[str], texts: Iterable[str]) -> list[str]:
    """The words of ``texts`` that a search word begins (what clients highlight), with the
    search words themselves; sorted."""
    found = set(words)
    for text in texts:
        for w in _WORD.findall(text):
            f = w.casefold()
            if f not in found and any(len(s) >= MIN_PREFIX and f.startswith(s) for s in words):
                found.add(f)
    return sorted(found)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: after the result at stream position ``pos`` (with index
    score ``score`` when ordered by rank), within one group when ``room_id``/``sender`` is
    set (a group's own ``next_batch``)."""

    order: str  # "rank" | "recent"
    pos: int
    score: float = 0.0
    room_id: str | None = None
    sender: str | None = None

    def token(self) -> str:
        obj: dict[str, Any] = {"o": self.order, "p": self.pos}
        if self.order == "rank":
            obj["s"] = self.score
        if self.room_id is not None:
            obj["r"] = self.room_id
        if self.sender is not None:
            obj["u"] = self.sender
        return base64.urlsafe_b64encode(orjson.dumps(obj)).decode().rstrip("=")


def parse_cursor(token: str) -> Cursor | None:
    """A ``next_batch`` token of :meth:`Cursor.token`, or None when it is not one."""
    if not token or len(token) > MAX_TOKEN or not token.isascii():
        return None
    try:
        obj = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(obj, dict) or obj.get("o") not in ("rank", "recent"):
        return None
    pos, score = obj.get("p"), obj.get("s", 0.0)
    if type(pos) is not int or not -(2**62) < pos < 2**62:
        return None
    if type(score) not in (int, float) or not math.isfinite(score):
        return None
    room_id, sender = obj.get("r"), obj.get("u")
    if not (room_id is None or isinstance(room_id, str)):
        return None
    if not (sender is None or isinstance(sender, str)):
        return None
    return Cursor(obj["o"], pos, float(score), room_id, sender)
