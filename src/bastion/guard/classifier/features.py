"""Text features of the content classifier (pure, deterministic across processes).

A message becomes a sparse vector of hashed features in ``2**HASH_BITS`` buckets:

- ``w:`` word unigrams and ``b:`` word bigrams of the normalised, masked text;
- character 3- to 5-grams of each distinct masked word (with word boundaries), which survive
  the respelling scam campaigns use between copies;
- ``m:`` message-level cues: length, capitals, exclamation marks, how many links, shorteners,
  handles, money amounts, phone numbers, wallet addresses, code; and ``u:`` link features:
  each link's registrable domain, its TLD, whether it is a shortener, an IDN, a well-known
  domain.

Normalisation: NFKC (mathematical/"fancy" letters become plain ones), look-alike Cyrillic and
Greek letters inside Latin words folded to Latin, lower case; then links, e-mail addresses,
``@handles``, Matrix IDs, money amounts, phone numbers, wallet addresses and numbers are masked
to placeholder words (``zzurl``, ``zzhandle``, ``zzmoney`` ...) so one campaign with a different
link or amount looks the same.

Every feature is binary (a distinct name, or an n-gram of a distinct word: repeating words
adds nothing). Each block (words, characters, cues) is scaled by its weight in
:data:`BLOCK_WEIGHTS` over the square root of its number of features (its L2 norm).
A named feature's bucket is the low bits of CRC-32 of its name (UTF-8); a character n-gram's
bucket is the top bits of a polynomial hash of its code points, computed for all n-grams of
many words at once with numpy (:func:`word_gram_buckets`). Both are the same in every process,
unlike Python's ``hash``.

Scoring (:meth:`bastion.guard.classifier.model.Model.model_score`) needs only :func:`analyse`
(the names and words) and sums the weights block by block, keeping each name's weight and each
word's summed n-gram weights; :func:`featurize` builds the vector itself, for training and
explanations. Both give one score.
"""

from __future__ import annotations

import html
import math
import re
import string
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

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
    "CHAR_NGRAMS",
    "FEATURES_VERSION",
    "HASH_BITS",
    "Analysed",
    "Features",
    "analyse",
    "block_scales",
    "char_grams",
    "char_words",
    "featurize",
    "gram_bucket",
    "gram_names",
    "name_bucket",
    "word_gram_buckets",
    "html_to_text",
    "mask",
    "normalise",
    "stable_hash",
    "tokens",
]

#: Bumped whenever the features change: the shipped weights record the version they need.
FEATURES_VERSION: Final = 3
HASH_BITS: Final = 18
_MASK: Final = (1 << HASH_BITS) - 1
#: The lengths of the character n-grams (within words).
CHAR_NGRAMS: Final = (3, 4, 5)
_M64: Final = (1 << 64) - 1
#: The character n-gram hash: seed, multiplier (the 64-bit FNV prime) and the Fibonacci mixer.
_GRAM_SEED: Final = 0x243F6A8885A308D3
_GRAM_P: Final = 1099511628211
_GRAM_MIX: Final = 0x9E3779B97F4A7C15
_GRAM_P_U64: Final = np.uint64(_GRAM_P)
_GRAM_SEED_P_U64: Final = np.uint64((_GRAM_SEED * _GRAM_P) & _M64)
_GRAM_MIX_U64: Final = np.uint64(_GRAM_MIX)
_GRAM_SHIFT: Final = np.uint64(64 - HASH_BITS)
_EMPTY: Final[npt.NDArray[np.int64]] = np.zeros(0, dtype=np.int64)
_EMPTY_F: Final[npt.NDArray[np.float64]] = np.zeros(0, dtype=np.float64)
#: Weight of each block after its own L2 normalisation.
BLOCK_WEIGHTS: Final = {"w": 1.0, "c": 1.0, "m": 1.0}

_LATIN_LOOKALIKE: Final = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j",
    "ԁ": "d", "ѕ": "s", "һ": "h", "ӏ": "l", "ԝ": "w", "ɡ": "g", "α": "a", "ο": "o", "ρ": "p",
    "ν": "v", "ι": "i", "κ": "k", "τ": "t", "υ": "u", "ε": "e", "ɑ": "a", "ı": "i",
    # small capitals ("ꜰʀᴇᴇ ᴍᴏɴᴇʏ"): NFKC leaves them as they are
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i",
    "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s",
    "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
}  # fmt: skip

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
#: A base58 address after lower-casing (its ``I``, ``L`` and ``O`` become ``i``, ``l``, ``o``:
#: every letter), 32–44 characters; :func:`_wallet` decides.
_B58: Final = re.compile(r"\b[1-9a-z]{32,44}\b")
_MONEY: Final = re.compile(
    r"(?:[$£€₹¥₦]\s?\d[\d,. ]{0,16}(?:k|m|bn|million|billion)?)"
    r"|(?:(?<![\d,.])\d[\d,.]{0,16}\s?(?:usd|usdt|eur|gbp|btc|eth|sol|bnb|dollars?|pounds?|euros?"
    r"|naira|baht)\b)"
)
_PHONE: Final = re.compile(r"(?<![\w+])\+?\d[\d \-()]{7,18}\d(?![\w])")
_DIGIT: Final = re.compile(r"\d")
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
    return " ".join(text.split())


_HEX_DIGITS: Final = frozenset("0123456789abcdef")


def _wallet(m: re.Match[str]) -> str:
    """A base58 run (32–44 characters) is a wallet address when it has a digit and is not all
    hexadecimal: an all-hex run is a hash or an ID (a commit, a UUID), which people paste
    alone in chat; a base58 address is all-hex about once in 10^18."""
    run = m.group()
    if not any(c.isdigit() for c in run) or _HEX_DIGITS.issuperset(run):
        return run
    return " zzwallet "


def mask(text: str, links: list[str] | None = None) -> tuple[str, list[str]]:
    """The normalised text with links, addresses, handles, amounts and numbers replaced by
    placeholder words, and the links found (as :func:`extract_urls` returns them). A pattern
    is run only when the character it needs is in the text (a link needs a dot, an address or
    handle ``@``, an amount or number a digit; no placeholder has a digit).

    ``links``: the links of ``text`` itself (``extract_urls(text)``), when the caller has them.
    Normalising an ASCII text without ``@`` whose spaces are single only lower-cases it, and
    the link pattern ignores case, so its links are then those, lower-cased: not searched
    again."""
    norm = normalise(text)
    at = "@" in norm
    if at:
        norm = _MXID.sub(" zzmxid ", norm)
    if links is not None and not at and text.isascii() and norm == text.lower():
        urls = [u.lower() for u in links]
    else:
        urls = extract_urls(norm) if "." in norm else []
    for url in sorted(set(urls), key=len, reverse=True):
        norm = norm.replace(url, " zzurl ")
    if "// " in norm:
        norm = norm.replace("https:// ", " zzurl ").replace("http:// ", " zzurl ")
    if at:
        norm = _EMAIL.sub(" zzemail ", norm)
        norm = _HANDLE.sub(" zzhandle ", norm)
    if "#" in norm:
        norm = _HASHTAG.sub(" zzhashtag ", norm)
    digit = _DIGIT.search(norm) is not None
    if digit:
        if "0x" in norm:
            norm = _ETH.sub(" zzwallet ", norm)
        norm = _B58.sub(_wallet, norm)
    if "$" in norm:
        norm = _CASHTAG.sub(" zzcashtag ", norm)
    if digit:
        norm = _MONEY.sub(" zzmoney ", norm)
        norm = _PHONE.sub(" zzphone ", norm)
        norm = _NUMBER.sub(lambda m: f" zznum{min(len(m.group()), 5)} ", norm)
    return " ".join(norm.split()), urls


def tokens(masked: str) -> list[str]:
    """The word tokens of a masked text (words, placeholders, single punctuation marks)."""
    return _WORD.findall(masked)


def stable_hash(name: str) -> int:
    """CRC-32 of a feature name: the same in every process and on every platform."""
    # (surrogatepass: a lone surrogate, which no event can carry, hashes instead of raising)
    return zlib.crc32(name.encode("utf-8", "surrogatepass"))


@lru_cache(maxsize=32_768)
def name_bucket(name: str) -> int:
    """The bucket of a named feature (word, bigram, cue): the low bits of its
    :func:`stable_hash` (cached: names recur from message to message)."""
    return stable_hash(name) & _MASK


def gram_bucket(gram: str) -> int:
    """The bucket of one character n-gram, computed as :func:`char_buckets` computes it for
    every n-gram of a text at once: a polynomial hash of the code points modulo 2**64
    (seeded by :data:`_GRAM_SEED`), mixed by a Fibonacci multiplication, its top bits."""
    h = _GRAM_SEED
    for ch in gram:
        h = (h * _GRAM_P + ord(ch)) & _M64
    return ((h * _GRAM_MIX) & _M64) >> (64 - HASH_BITS)


def char_words(words: list[str]) -> list[str]:
    """The words whose character n-grams are features: each distinct word once (at most
    :data:`_MAX_WORD` letters of it), placeholders (``zz...``) left out."""
    out = [w for w in dict.fromkeys(words) if w[:2] != "zz"]
    if out and max(map(len, out)) > _MAX_WORD:
        out = list(dict.fromkeys([w[:_MAX_WORD] for w in out]))
    return out


def _gram_buckets_of(words: list[str]) -> list[npt.NDArray[np.int64]]:
    """For each word, the distinct buckets of the n-grams (:data:`CHAR_NGRAMS`) of the word
    between two spaces, vectorised over all the words at once: the rolling form of
    :func:`gram_bucket` over the code points of ``" w1 w2 ... "``, n-grams with a space inside
    dropped, each n-gram given to the word it starts in."""
    text = " " + " ".join(words) + " "
    # UTF-32 code points (surrogatepass: a lone surrogate is hashed, never raised on)
    a = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    size = len(a)
    space = np.cumsum(a == 32)
    h = a + _GRAM_SEED_P_U64
    parts = []
    owners = []
    for n in range(2, min(CHAR_NGRAMS[-1], size) + 1):
        h = h[:-1] * _GRAM_P_U64 + a[n - 1 :]
        if n >= CHAR_NGRAMS[0]:
            # spaces strictly inside the n-gram starting at i: positions i+1 .. i+n-2
            keep = space[n - 2 : size - 1] == space[: size - n + 1]
            parts.append(h[keep])
            # the word an n-gram starting at i belongs to: the spaces up to i+1, minus one
            owners.append(space[1 : size - n + 2][keep])
    if not parts:
        return [_EMPTY for _ in words]
    buckets = ((np.concatenate(parts) * _GRAM_MIX_U64) >> _GRAM_SHIFT).astype(np.int64)
    owner = np.concatenate(owners).astype(np.int64) - 1
    # sort by (word, bucket), drop repeats, cut per word
    key = owner * (1 << HASH_BITS) + buckets
    key.sort()
    if len(key) > 1:
        key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    owner = key >> HASH_BITS
    cuts = np.searchsorted(owner, np.arange(1, len(words)))
    return [part & _MASK for part in np.split(key, cuts)]


#: Per word, the buckets of its n-grams (bounded: cleared when full; words recur).
_WORD_GRAMS: dict[str, npt.NDArray[np.int64]] = {}
_MAX_WORD_GRAMS: Final = 32_768


def word_gram_buckets(words: list[str], *, cache: bool = True) -> list[npt.NDArray[np.int64]]:
    """For each word (as :func:`char_words` gives them), the distinct buckets of its
    character n-grams: from the cache, the words not in it computed together (and kept,
    unless ``cache`` is false: a caller keeping its own sums per word)."""
    if not cache:
        return _gram_buckets_of(words) if words else []
    kept = _WORD_GRAMS
    if len(kept) + len(words) > _MAX_WORD_GRAMS:
        kept.clear()
    # (read once into this call's own dict: another thread may empty the cache meanwhile)
    found = {w: b for w in words if (b := kept.get(w)) is not None}
    missing = [w for w in words if w not in found]
    if missing:
        for w, buckets in zip(missing, _gram_buckets_of(missing), strict=True):
            found[w] = kept[w] = buckets
    return [found[w] for w in words]


def char_grams(word: str) -> list[str]:
    """The n-grams of one word between two spaces (:func:`_gram_buckets_of` hashes them), as
    strings, for explanations and tests."""
    text = f" {word} "
    return [text[i : i + n] for n in CHAR_NGRAMS for i in range(len(text) - n + 1)]


_COUNT: Final = ("0", "1", "2", "3+")
#: The cues' names, built once.
_LEN: Final = tuple("m:len:" + b for b in ("<20", "<60", "<160", "160+"))
_CAPS: Final = tuple("m:caps:" + b for b in ("lo", "mid", "hi"))
_EXCL: Final = tuple("m:excl:" + c for c in _COUNT)
_URLS: Final = tuple("m:urls:" + c for c in _COUNT)
_EMOJIS: Final = tuple("m:emoji:" + c for c in _COUNT)
_PLACES: Final = ("zzhandle", "zzmoney", "zzphone", "zzwallet", "zzemail", "zzcashtag", "zzmxid")
_HAS: Final = {place: "m:has:" + place for place in _PLACES}
_ASCII_LETTERS: Final = string.ascii_letters.encode("ascii")
_ASCII_UPPER: Final = string.ascii_uppercase.encode("ascii")


def _meta(raw: str, masked: str, urls: list[str], hosts: list[str]) -> list[str]:
    """The message-level cues, as feature names (``m:...``)."""
    n = len(raw)
    out = [_LEN[0 if n < 20 else 1 if n < 60 else 2 if n < 160 else 3]]
    ascii_only = raw.isascii()
    if ascii_only:  # counted in C: the bytes left after deleting the letters
        b = raw.encode("ascii")
        letters = n - len(b.translate(None, _ASCII_LETTERS))
        upper = n - len(b.translate(None, _ASCII_UPPER)) if letters >= 10 else 0
    else:
        letters = sum(map(str.isalpha, raw))
        upper = sum(map(str.isupper, raw)) if letters >= 10 else 0
    if letters >= 10:
        caps = upper / letters
        out.append(_CAPS[0 if caps < 0.2 else 1 if caps < 0.5 else 2])
    out.append(_EXCL[min(raw.count("!"), 3)])
    out.append(_URLS[min(len(urls), 3)])
    if urls:
        if any(is_shortener(h) for h in hosts if h):
            out.append("m:shortener")
        if any(u.lower().startswith("http://") for u in urls):
            out.append("m:http")
    if "zz" in masked:
        out += [_HAS[place] for place in _PLACES if place in masked]
    if "`" in raw or "{" in raw or "=>" in raw or "();" in raw:
        out.append("m:code")
    out.append(_EMOJIS[0 if ascii_only else min(len(_EMOJI.findall(raw)), 3)])
    return out


def _url_features(hosts: list[str]) -> list[str]:
    out: list[str] = []
    for host in hosts:
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


@dataclass(frozen=True, slots=True)
class Analysed:
    """One message's features before they are weighed: the distinct names of its word and
    bigram features and of its message and URL cues, and the distinct words whose character
    n-grams are features (:func:`word_gram_buckets`)."""

    word_names: list[str]
    meta_names: list[str]
    char_words: list[str]


@dataclass(frozen=True, slots=True)
class Features:
    """A sparse feature vector: bucket indices (sorted, unique) and their values, and — when
    asked for — the name of one named feature behind each bucket (for explanations; character
    n-grams are named on demand by :func:`gram_names`).

    Every feature is binary: a distinct name, or an n-gram of a distinct word. Each block is
    scaled by its weight over the square root of its number of features
    (:func:`block_scales`; the L2 norm when no two features share a bucket); features that
    share a bucket add up (the hashing trick)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]
    names: dict[int, str]
    #: The words whose character n-grams are features (:func:`gram_names` names them).
    char_words: tuple[str, ...] = ()


_UNIGRAM: Final = "w:".__add__
_BIGRAM: Final = "b:{} {}".format


def analyse(text: str, links: list[str] | None = None) -> Analysed:
    """Normalise, mask and tokenise one message's text into :class:`Analysed` (``links``: as
    :func:`mask` takes them)."""
    if not text.strip():
        return Analysed([], [], [])
    masked, urls = mask(text, links)
    toks = _WORD.findall(masked)
    words = [t for t in toks if t[0].isalpha()]
    # (built by C-level maps: this runs for every message)
    word_names = list(map(_UNIGRAM, dict.fromkeys(toks)))
    word_names += dict.fromkeys(map(_BIGRAM, words, words[1:]))
    hosts = [host_of(u) for u in urls]
    meta_names = _meta(text, masked, urls, hosts)
    if urls:
        meta_names = list(dict.fromkeys(meta_names + _url_features(hosts)))
    return Analysed(word_names, meta_names, char_words(words))


def block_scales(n_words: int, n_chars: int, n_meta: int) -> tuple[float, float, float]:
    """The value of each feature of the word, character and cue blocks of a message with
    that many features in each: the block's weight over the square root of the count."""
    return (
        BLOCK_WEIGHTS["w"] / math.sqrt(n_words) if n_words else 0.0,
        BLOCK_WEIGHTS["c"] / math.sqrt(n_chars) if n_chars else 0.0,
        BLOCK_WEIGHTS["m"] / math.sqrt(n_meta) if n_meta else 0.0,
    )


def featurize(text: str, *, explain: bool = False) -> Features:
    """The feature vector of one message's text (empty for blank text)."""
    an = analyse(text)
    grams = word_gram_buckets(an.char_words)
    n_chars = sum(len(g) for g in grams)
    n_words, n_meta = len(an.word_names), len(an.meta_names)
    if not (n_words or n_meta or n_chars):
        return Features((), (), {})
    sw, sc, sm = block_scales(n_words, n_chars, n_meta)
    buckets = np.concatenate(
        [np.array([name_bucket(n) for n in an.word_names], dtype=np.int64), *grams,
         np.array([name_bucket(n) for n in an.meta_names], dtype=np.int64)]
    )  # fmt: skip
    values = np.repeat([sw, sc, sm], [n_words, n_chars, n_meta])
    order, inverse = np.unique(buckets, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(order))
    names: dict[int, str] = {}
    if explain:
        for name in an.meta_names + an.word_names:
            names.setdefault(name_bucket(name), name)
    return Features(tuple(order.tolist()), tuple(sums.tolist()), names, tuple(an.char_words))


def gram_names(words: Sequence[str], wanted: set[int]) -> dict[int, str]:
    """A name (``chars:...``) for each of the ``wanted`` buckets that is an n-gram of one of
    the words: only the words whose n-grams fall in a wanted bucket are hashed one n-gram at
    a time (an explanation names a message's top features, not all of them)."""
    out: dict[int, str] = {}
    if not wanted or not words:
        return out
    probe = np.fromiter(wanted, dtype=np.int64, count=len(wanted))
    for word, buckets in zip(words, word_gram_buckets(list(words)), strict=True):
        if not np.isin(probe, buckets).any():
            continue
        for gram in char_grams(word):
            b = gram_bucket(gram)
            if b in wanted and b not in out:
                out[b] = "chars:" + gram.replace(" ", "_")
    return out
