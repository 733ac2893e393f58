"""Text features of the content classifier (pure, deterministic across processes).

A message becomes a sparse vector of hashed features in ``2**HASH_BITS`` buckets:

- ``w:`` word unigrams and ``b:`` word bigrams of the normalised, masked text;
- ``c:`` character 3- to 5-grams of each masked word (with word boundaries), which survive the
  respelling scam campaigns use between copies;
- ``m:`` message-level cues: length, capitals, exclamation marks, how many links, shorteners,
  handles, money amounts, phone numbers, wallet addresses, code.

Normalisation: NFKC (mathematical/"fancy" letters become plain ones), look-alike Cyrillic and
Greek letters inside Latin words folded to Latin, lower case; then links, e-mail addresses,
``@handles``, Matrix IDs, money amounts, phone numbers, wallet addresses and numbers are masked
to placeholder words (``zzurl``, ``zzhandle``, ``zzmoney`` ...) so one campaign with a different
link or amount looks the same. Each link also adds ``u:`` features: its registrable domain, its
TLD and whether it is a shortener.

The hash is CRC-32 of the feature's name (UTF-8) — the same in every process, unlike Python's
``hash``. The low bits pick the bucket, the top bit the sign (signed hashing keeps collisions
from adding up). Each block (words, characters, URL/meta cues) is L2-normalised on its own and
weighted by :data:`BLOCK_WEIGHTS`.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from bastion.guard.classifier.urls import (
    DEFAULT_KNOWN_DOMAINS,
    extract_urls,
    host_of,
    is_known_domain,
    is_shortener,
    registrable_domain,
)

__all__ = [
    "BLOCK_WEIGHTS",
    "FEATURES_VERSION",
    "HASH_BITS",
    "Features",
    "featurize",
    "html_to_text",
    "mask",
    "normalise",
    "stable_hash",
    "tokens",
]

#: Bumped whenever the features change: the shipped weights record the version they need.
FEATURES_VERSION: Final = 1
HASH_BITS: Final = 18
_MASK: Final = (1 << HASH_BITS) - 1
#: Weight of each block after its own L2 normalisation.
BLOCK_WEIGHTS: Final = {"w": 1.0, "c": 0.8, "m": 0.6}

_LATIN_LOOKALIKE: Final = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j",
    "ԁ": "d", "ѕ": "s", "һ": "h", "ӏ": "l", "ԝ": "w", "ɡ": "g", "α": "a", "ο": "o", "ρ": "p",
    "ν": "v", "ι": "i", "κ": "k", "τ": "t", "υ": "u", "ε": "e", "ɑ": "a", "ı": "i",
    # small capitals ("ꜰʀᴇᴇ ᴍᴏɴᴇʏ"): NFKC leaves them as they are
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i",
    "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s",
    "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
}  # fmt: skip

_WS: Final = re.compile(r"\s+")
#: The most HTML read from one ``formatted_body`` (an event is at most 64 KiB anyway).
MAX_HTML: Final = 65_536
_TAG: Final = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9\-]{0,31})([^<>]*)>")
_HREF: Final = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""", re.I)
#: Elements whose content a reader does not see as the message: a reply's quoted fallback.
_SKIP_ELEMENTS: Final = frozenset({"mx-reply", "script", "style"})
_BLOCK_ELEMENTS: Final = frozenset(
    {"br", "p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "blockquote",
     "hr", "pre", "table"}
)  # fmt: skip

# Every repetition is bounded: a hostile message must not make a pattern scan to its end from
# every position (quadratic time).
_EMAIL: Final = re.compile(r"(?<![\w.+\-])[\w.+\-]{1,64}@[\w\-]{1,63}(?:\.[\w\-]{1,63}){1,8}\b")
_MXID: Final = re.compile(r"@[\w.=\-/+]{1,255}:[\w.\-]{1,255}(?::\d{1,5})?")
_HANDLE: Final = re.compile(r"(?<![\w@])@[\w.]{2,64}")
_HASHTAG: Final = re.compile(r"(?<![\w#&])#[^\s#]{2,64}")
_ETH: Final = re.compile(r"\b0x[0-9a-f]{30,64}\b")
_B58: Final = re.compile(r"\b[1-9a-hj-np-z]{32,44}\b")
_MONEY: Final = re.compile(
    r"(?:[$£€₹¥₦]\s?\d[\d,. ]{0,16}(?:k|m|bn|million|billion)?)"
    r"|(?:(?<![\d,.])\d[\d,.]{0,16}\s?(?:usd|usdt|eur|gbp|btc|eth|sol|bnb|dollars?|pounds?|euros?"
    r"|naira|baht)\b)"
)
_PHONE: Final = re.compile(r"(?<![\w+])\+?\d[\d \-()]{7,18}\d(?![\w])")
_NUMBER: Final = re.compile(r"\d+(?:[.,]\d+)*")
_CASHTAG: Final = re.compile(r"\$[a-z][a-z0-9]{1,9}\b")
_WORD: Final = re.compile(r"zz[a-z]+[0-9]?|[a-z][a-z'’]*[a-z]|[a-z]|[^\w\s]")
#: Character n-grams come from at most this many letters of a word (time bound).
_MAX_WORD: Final = 32
_EMOJI: Final = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\U0001f000-\U0001f2ff]")


def html_to_text(formatted: str) -> str:
    """The text of an HTML ``formatted_body`` (at most :data:`MAX_HTML` characters, in linear
    time: a tag's pattern stops at the next ``<``): replies' quoted fallbacks (``mx-reply``),
    scripts and styles dropped, a link's target kept next to its text (so the URL rules see
    where it points), tags removed, entities decoded."""
    text = formatted[:MAX_HTML]
    out: list[str] = []
    pos = 0
    skip = 0
    for m in _TAG.finditer(text):
        if not skip:
            out.append(text[pos : m.start()])
        pos = m.end()
        closing, name, attrs = m.group(1), m.group(2).lower(), m.group(3)
        if name in _SKIP_ELEMENTS:
            skip = max(0, skip - 1) if closing else skip + 1
            continue
        if skip:
            continue
        if name in _BLOCK_ELEMENTS:
            out.append("\n")
        elif name == "a" and not closing:
            href = _HREF.search(attrs)
            if href is not None:
                out.append(" " + next(g for g in href.groups() if g is not None) + " ")
    if not skip:
        out.append(text[pos:])
    return html.unescape("".join(out))


def _fold_letter(c: str) -> str:
    return _LATIN_LOOKALIKE.get(c, c)


def normalise(text: str) -> str:
    """NFKC, look-alike letters folded to Latin, accents on Latin letters removed, lower case,
    whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    if not text.isascii():
        text = "".join(_fold_letter(c) for c in text)
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _WS.sub(" ", text).strip()


def mask(text: str) -> tuple[str, list[str]]:
    """The normalised text with links, addresses, handles, amounts and numbers replaced by
    placeholder words, and the links found (as :func:`extract_urls` returns them)."""
    norm = _MXID.sub(" zzmxid ", normalise(text))
    urls = extract_urls(norm)
    for url in sorted(set(urls), key=len, reverse=True):
        norm = norm.replace(url, " zzurl ")
    norm = norm.replace("https:// ", " zzurl ").replace("http:// ", " zzurl ")
    norm = _EMAIL.sub(" zzemail ", norm)
    norm = _HANDLE.sub(" zzhandle ", norm)
    norm = _HASHTAG.sub(" zzhashtag ", norm)
    norm = _ETH.sub(" zzwallet ", norm)
    norm = _B58.sub(
        lambda m: " zzwallet " if any(c.isdigit() for c in m.group()) else m.group(), norm
    )
    norm = _CASHTAG.sub(" zzcashtag ", norm)
    norm = _MONEY.sub(" zzmoney ", norm)
    norm = _PHONE.sub(" zzphone ", norm)
    norm = _NUMBER.sub(lambda m: f" zznum{min(len(m.group()), 5)} ", norm)
    return _WS.sub(" ", norm).strip(), urls


def tokens(masked: str) -> list[str]:
    """The word tokens of a masked text (words, placeholders, single punctuation marks)."""
    return _WORD.findall(masked)


def stable_hash(name: str) -> int:
    """CRC-32 of the feature name: the same in every process and on every platform."""
    # (surrogatepass: a lone surrogate, which no event can carry, hashes instead of raising)
    return zlib.crc32(name.encode("utf-8", "surrogatepass"))


def _bucket(n: int) -> str:
    return "0" if n == 0 else "1" if n == 1 else "2" if n == 2 else "3+"


def _meta(raw: str, masked: str, urls: list[str]) -> list[str]:
    out: list[str] = []
    n = len(raw)
    out.append("len:" + ("<20" if n < 20 else "<60" if n < 60 else "<160" if n < 160 else "160+"))
    letters = [c for c in raw if c.isalpha()]
    if len(letters) >= 10:
        caps = sum(1 for c in letters if c.isupper()) / len(letters)
        out.append("caps:" + ("lo" if caps < 0.2 else "mid" if caps < 0.5 else "hi"))
    out.append("excl:" + _bucket(min(raw.count("!"), 3)))
    out.append("urls:" + _bucket(len(urls)))
    hosts = [host_of(u) for u in urls]
    if any(is_shortener(h) for h in hosts if h):
        out.append("shortener")
    if any(u.lower().startswith("http://") for u in urls):
        out.append("http")
    for place in ("zzhandle", "zzmoney", "zzphone", "zzwallet", "zzemail", "zzcashtag", "zzmxid"):
        if place in masked:
            out.append("has:" + place)
    if "`" in raw or "{" in raw or "=>" in raw or "();" in raw:
        out.append("code")
    emoji = len(_EMOJI.findall(raw))
    out.append("emoji:" + _bucket(min(emoji, 3)))
    return out


def _url_features(urls: list[str]) -> list[str]:
    out: list[str] = []
    for url in urls:
        host = host_of(url)
        if not host:
            continue
        reg = registrable_domain(host)
        out.append("u:dom:" + reg)
        out.append("u:tld:" + host.rsplit(".", 1)[-1])
        if is_shortener(host):
            out.append("u:shortener")
        if "xn--" in host:
            out.append("u:idn")
        out.append("u:known" if is_known_domain(host, DEFAULT_KNOWN_DOMAINS) else "u:unknown")
    return out


@dataclass(frozen=True)
class Features:
    """A sparse feature vector: bucket indices (sorted, unique) and their values, and — when
    asked for — the name of one feature behind each bucket (for explanations)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]
    names: dict[int, str]


@lru_cache(maxsize=65_536)
def _slot(name: str) -> tuple[int, float]:
    """The bucket and the sign of a feature (cached: names recur from message to message)."""
    h = stable_hash(name)
    return h & _MASK, (-1.0 if h >> 31 else 1.0)


@lru_cache(maxsize=32_768)
def _char_grams(word: str) -> tuple[str, ...]:
    """The character 3- to 5-grams of a word padded with spaces (at most :data:`_MAX_WORD`
    letters of it)."""
    padded = f" {word[:_MAX_WORD]} "
    return tuple(padded[i : i + n] for n in (3, 4, 5) for i in range(len(padded) - n + 1))


#: Per block prefix, each feature name's (bucket, sign): :func:`_slot` without building the
#: prefixed name again (names recur from message to message; bounded).
_SLOTS: dict[str, dict[str, tuple[int, float]]] = {}
_MAX_SLOTS_PER_BLOCK: Final = 200_000


def _add_block(
    acc: dict[int, float], names: dict[int, str] | None, prefix: str, items: list[str]
) -> None:
    # Dicts keep insertion order: every sum below runs in the same order in every process
    # (never iterate a set here: its order follows the per-process string hash seed). A
    # Counter is a dict counting in C, in the order items first appear.
    counts = Counter(items)
    if not counts:
        return
    log = math.log
    vals = [(k, 1.0 + log(v) if v > 1 else 1.0) for k, v in counts.items()]
    norm = math.sqrt(sum([v * v for _, v in vals]))
    scale = BLOCK_WEIGHTS[prefix] / norm
    head = prefix + ":"
    get = acc.get
    slots = _SLOTS.setdefault(prefix, {})
    for name, v in vals:
        slot = slots.get(name)
        if slot is None:
            slot = _slot(head + name)
            if len(slots) < _MAX_SLOTS_PER_BLOCK:
                slots[name] = slot
        idx, sign = slot
        acc[idx] = get(idx, 0.0) + sign * v * scale
        if names is not None and idx not in names:
            names[idx] = f"chars:{name.replace(' ', '_')}" if prefix == "c" else name


def featurize(text: str, *, explain: bool = False) -> Features:
    """The feature vector of one message's text (empty for blank text)."""
    if not text.strip():
        return Features((), (), {})
    masked, urls = mask(text)
    toks = tokens(masked)
    words = [t for t in toks if t[0].isalpha()]
    word_items = ["w:" + t for t in toks]
    word_items += ["b:" + a + " " + b for a, b in zip(words, words[1:], strict=False)]
    char_items: list[str] = []
    for w in dict.fromkeys(words):  # each distinct word once, in order of appearance
        if not w.startswith("zz"):
            char_items.extend(_char_grams(w))
    meta_items = ["m:" + m for m in _meta(text, masked, urls)] + _url_features(urls)
    acc: dict[int, float] = {}
    names: dict[int, str] | None = {} if explain else None
    _add_block(acc, names, "w", word_items)
    _add_block(acc, names, "c", char_items)
    _add_block(acc, names, "m", meta_items)
    order = sorted(acc)
    return Features(tuple(order), tuple([acc[i] for i in order]), names or {})
