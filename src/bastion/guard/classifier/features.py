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
from dataclasses import dataclass
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
_TAG: Final = re.compile(r"<[^>]*>")
_BLOCK_TAG: Final = re.compile(r"<\s*(br|/p|/div|/li|/h\d|/tr|/blockquote|hr)\b[^>]*>", re.I)
_DROP_TAG: Final = re.compile(r"<\s*(mx-reply|script|style)\b[^>]*>.*?<\s*/\s*\1\s*>", re.I | re.S)
_HREF: Final = re.compile(r"""<\s*a\b[^>]*\bhref\s*=\s*["']([^"']*)["'][^>]*>""", re.I)

_EMAIL: Final = re.compile(r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b")
_MXID: Final = re.compile(r"@[\w.=\-/+]+:[\w.\-]+(?::\d+)?")
_HANDLE: Final = re.compile(r"(?<![\w@])@[\w.]{2,}")
_HASHTAG: Final = re.compile(r"(?<![\w#&])#[^\s#]{2,}")
_ETH: Final = re.compile(r"\b0x[0-9a-f]{30,}\b")
_B58: Final = re.compile(r"\b[1-9a-hj-np-z]{32,44}\b")
_MONEY: Final = re.compile(
    r"(?:[$£€₹¥₦]\s?\d[\d,. ]*(?:k|m|bn|million|billion)?)"
    r"|(?:\b\d[\d,.]*\s?(?:usd|usdt|eur|gbp|btc|eth|sol|bnb|dollars?|pounds?|euros?|naira|baht)\b)"
)
_PHONE: Final = re.compile(r"(?<![\w])\+?\d[\d \-()]{7,}\d(?![\w])")
_NUMBER: Final = re.compile(r"\d+(?:[.,]\d+)*")
_CASHTAG: Final = re.compile(r"\$[a-z][a-z0-9]{1,9}\b")
_WORD: Final = re.compile(r"zz[a-z]+[0-9]?|[a-z][a-z'’]*[a-z]|[a-z]|[^\w\s]")
_EMOJI_RANGES: Final = ((0x1F300, 0x1FAFF), (0x2600, 0x27BF), (0x1F000, 0x1F2FF))


def html_to_text(formatted: str) -> str:
    """The text of an HTML ``formatted_body``: replies' quoted fallbacks (``mx-reply``),
    scripts and styles dropped, a link's target kept next to its text (so the URL rules see
    where it points), tags removed, entities decoded."""
    text = _DROP_TAG.sub(" ", formatted)
    text = _HREF.sub(lambda m: f" {m.group(1)} ", text)
    text = _BLOCK_TAG.sub("\n", text)
    text = _TAG.sub(" ", text)
    return html.unescape(text)


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
    return zlib.crc32(name.encode("utf-8"))


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
    emoji = sum(1 for c in raw if any(lo <= ord(c) <= hi for lo, hi in _EMOJI_RANGES))
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


def _add_block(
    acc: dict[int, float], names: dict[int, str] | None, prefix: str, items: list[str]
) -> None:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    if not counts:
        return
    vals = {k: 1.0 + math.log(v) for k, v in counts.items()}
    norm = math.sqrt(sum(v * v for v in vals.values()))
    scale = BLOCK_WEIGHTS[prefix] / norm
    for name, v in vals.items():
        h = stable_hash(prefix + ":" + name)
        idx = h & _MASK
        sign = -1.0 if h >> 31 else 1.0
        acc[idx] = acc.get(idx, 0.0) + sign * v * scale
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
    for w in set(words):
        if w.startswith("zz"):
            continue
        padded = f" {w} "
        for n in (3, 4, 5):
            char_items.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    meta_items = ["m:" + m for m in _meta(text, masked, urls)] + _url_features(urls)
    acc: dict[int, float] = {}
    names: dict[int, str] | None = {} if explain else None
    _add_block(acc, names, "w", word_items)
    _add_block(acc, names, "c", char_items)
    _add_block(acc, names, "m", meta_items)
    order = sorted(acc)
    return Features(tuple(order), tuple(acc[i] for i in order), names or {})
