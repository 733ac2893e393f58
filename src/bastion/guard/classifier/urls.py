"""URL rules of the content classifier (pure): finding links in a message, their domains, and
the domain rules that make a link suspicious.

- :func:`extract_urls`: the links in a text, in order: ``http(s)://`` URLs (also written with a
  space after ``://``, as X displays them), ``www.`` hosts and bare ``host.tld/...`` domains
  whose TLD is a common one (``file.py``, ``README.md`` and ``node.js`` are not links).
- :func:`host_of` / :func:`registrable_domain`: the host of a link (lower-cased ASCII, IDNA
  labels kept as ``xn--``) and its registrable part (the last two labels, three under a
  two-level public suffix such as ``co.uk``).
- :func:`domain_findings`: the rules that fire for one host: a homograph (an IDNA label that
  folds to a brand), a look-alike (``paypa1``, ``paypall``), a brand with extra words
  (``paypal-login.example``), a mixed-script IDNA label, a link shortener.
- :func:`is_known_domain`: whether a host is under a list of well-known domains (the
  "unknown domain from a new account" rule is the caller's: it knows the account's age).

Nothing here resolves a name or touches the network.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

__all__ = [
    "DEFAULT_BRANDS",
    "DEFAULT_KNOWN_DOMAINS",
    "SHORTENERS",
    "DomainFinding",
    "domain_findings",
    "extract_urls",
    "fold_confusables",
    "host_of",
    "is_known_domain",
    "is_shortener",
    "registrable_domain",
    "unicode_host",
    "url_findings",
]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: TLDs a bare ``name.tld`` is taken as a link for (no scheme, no ``www.``). Code-like endings
#: that are also country TLDs (``.py``, ``.js`` is not one, ``.sh``, ``.md``, ``.rs``, ``.pl``,
#: ``.ts``) are left out: in developer chat they are file names far more often than hosts.
_BARE_TLDS: Final = _words(
    "com net org info biz io co me ly gl gg tv cc ru uk us de fr nl eu ca au in jp cn br es it "
    "ch se no fi pl be at xyz top site online live club vip link click shop store app dev page "
    "cloud today win bet casino loan work tech space fun icu buzz rest best life world news "
    "finance money trade market exchange wallet network digital email support help services "
    "vc to gy cx ws su id ai am fm im la ms nu pw tk ml ga cf gq example"
)

#: Two-level public suffixes: the registrable domain is then the last three labels.
_TWO_LEVEL_SUFFIXES: Final = _words(
    "co.uk org.uk ac.uk gov.uk me.uk ltd.uk plc.uk com.au net.au org.au co.nz co.jp co.kr "
    "co.in co.za com.br com.cn com.mx com.tr com.sg com.my co.th in.th or.th go.th ac.th "
    "com.hk com.tw co.id com.ar com.ua com.pl com.cy web.app"
)

#: Link shorteners and redirectors (hosts and their subdomains): the destination is hidden.
SHORTENERS: Final = _words(
    "bit.ly bitly.com tinyurl.com t.co goo.gl ow.ly is.gd v.gd buff.ly cutt.ly rebrand.ly "
    "tx.vc shorturl.at rb.gy t.ly tiny.cc bl.ink s.id lnkd.in soo.gd clck.ru qps.ru "
    "shorte.st adf.ly bc.vc ouo.io u.to tiny.one rebrandly.com shrtco.de 2u.pw y2u.be "
    "surl.li urlz.fr short.gy tr.ee linktr.ee lnk.to ln.run"
)

#: The default brand list (official registrable domains): look-alikes of these are flagged.
#: Operators replace it with ``[guard.classifier] brands``.
DEFAULT_BRANDS: Final = (
    "paypal.com", "apple.com", "google.com", "microsoft.com", "amazon.com", "netflix.com",
    "facebook.com", "instagram.com", "whatsapp.com", "telegram.org", "discord.com",
    "steamcommunity.com", "binance.com", "coinbase.com", "metamask.io", "kraken.com",
    "matrix.org", "element.io", "github.com", "usps.com", "fedex.com", "dhl.com",
    "wellsfargo.com", "chase.com", "bankofamerica.com", "royalmail.com", "outlook.com",
)  # fmt: skip

#: Well-known domains a new account's link is not "unknown" on (operators extend it with
#: ``[guard.classifier] known_domains``).
DEFAULT_KNOWN_DOMAINS: Final = (
    "matrix.org", "matrix.to", "element.io", "github.com", "gitlab.com", "wikipedia.org",
    "youtube.com", "youtu.be", "stackoverflow.com", "mozilla.org", "python.org", "google.com",
    "microsoft.com", "apple.com", "w3.org", "npmjs.com", "pypi.org", "readthedocs.io",
    "codepen.io", "jsfiddle.net", "reddit.com", "twitter.com", "x.com", "mastodon.social",
    "archive.org", "imgur.com", "giphy.com", "medium.com", "bbc.co.uk", "nytimes.com",
)  # fmt: skip

# A link: a scheme (optionally followed by one space, as X shows links) or "www.", then the
# host and the rest up to whitespace; or a bare host whose TLD is then checked.
_URL_RE: Final = re.compile(
    r"(?P<scheme>\b(?:https?|hxxps?)://\s?|\bwww\.)(?P<rest>[^\s<>\"'`]+)"
    r"|(?<![@\w.\-/])(?P<bare>(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+(?P<tld>[a-z]{2,12})"
    r"(?:/[^\s<>\"'`]*)?)(?![\w\-@])",
    re.IGNORECASE,
)
_TRAILING: Final = ".,;:!?'\"*_~"
_HOST_RE: Final = re.compile(r"^[a-z0-9\-._~%\u0080-\U0010ffff]+$", re.IGNORECASE)


def _trim(url: str) -> str:
    """Cut the punctuation a sentence or markdown puts after a link (keep balanced parens)."""
    while url:
        last = url[-1]
        unbalanced = (last == ")" and url.count("(") < url.count(")")) or (
            last == "]" and url.count("[") < url.count("]")
        )
        if last not in _TRAILING and not unbalanced:
            break
        url = url[:-1]
    return url


#: What every match of :data:`_URL_RE` contains: ``://``, ``www.``, or a dot before a letter
#: (a TLD), under the same case folding.
_LINK_HINT: Final = re.compile(r"://|www\.|\.[a-z]", re.IGNORECASE)
#: Where a link's authority ends; a link's scheme.
_PATH_START: Final = re.compile(r"[/?#\\]")
_SCHEME: Final = re.compile(r"^[a-z]+://", re.IGNORECASE)


def extract_urls(text: str) -> list[str]:
    """The links in ``text``, in order of appearance (every occurrence). A link found with a
    scheme is returned as written (a space after ``://`` removed); a ``www.`` or bare host link
    as written, without a scheme."""
    if _LINK_HINT.search(text) is None:
        return []  # (what every match of the link pattern has: a cheap search first)
    out: list[str] = []
    for m in _URL_RE.finditer(text):
        if m.group("scheme") is not None:
            scheme = m.group("scheme").replace(" ", "")
            url = _trim(scheme + m.group("rest"))
            if host_of(url):
                out.append(url)
        else:
            if m.group("tld").lower() not in _BARE_TLDS:
                continue
            url = _trim(m.group("bare"))
            if host_of(url):
                out.append(url)
    return out


def host_of(url: str) -> str:
    """The host of a link as :func:`extract_urls` returns it: lower-case, IDNA (``xn--``)
    labels as written, Unicode labels encoded to ``xn--``; ``""`` when there is none."""
    rest = url
    low = rest.lower()
    for prefix in ("https://", "http://", "hxxps://", "hxxp://"):
        if low.startswith(prefix):
            rest = rest[len(prefix) :]
            break
    rest = _PATH_START.split(rest, maxsplit=1)[0]
    rest = rest.rsplit("@", 1)[-1]  # user-info ("https://paypal.com@evil.example/")
    if rest.startswith("["):
        return ""  # an IPv6 literal: no domain rules apply
    rest = rest.split(":", 1)[0].strip(".").lower()
    if not rest or "." not in rest or not _HOST_RE.match(rest):
        return ""
    labels = []
    for label in rest.split("."):
        if not label:
            return ""
        if label.isascii():
            labels.append(label)
        else:
            try:
                labels.append("xn--" + label.encode("punycode").decode("ascii"))
            except UnicodeError:
                return ""
    return ".".join(labels)


def _decode_label(label: str) -> str:
    if label.startswith("xn--"):
        try:
            return label[4:].encode("ascii").decode("punycode")
        except (UnicodeError, ValueError):
            return label
    return label


def unicode_host(host: str) -> str:
    """The host with its ``xn--`` labels decoded (for display and for the homograph rules)."""
    return ".".join(_decode_label(label) for label in host.split("."))


def registrable_domain(host: str) -> str:
    """The registrable part of a host: the last two labels, three under a two-level public
    suffix (``co.uk``, ``com.au``, ``web.app`` ...)."""
    labels = host.split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _TWO_LEVEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _under(host: str, domains: Iterable[str]) -> bool:
    """Whether ``host`` is one of ``domains`` or a subdomain of one: each of its suffixes at a
    dot looked up in the set of them (a tuple's set is built once)."""
    wanted = _domain_set(domains) if isinstance(domains, tuple) else frozenset(domains)
    if host in wanted:
        return True
    dot = host.find(".")
    while dot != -1:
        if host[dot + 1 :] in wanted:
            return True
        dot = host.find(".", dot + 1)
    return False


@lru_cache(maxsize=64)
def _domain_set(domains: tuple[str, ...]) -> frozenset[str]:
    return frozenset(domains)


def is_shortener(host: str) -> bool:
    """Whether the host is a known link shortener (or a subdomain of one)."""
    return _under(host, SHORTENERS)


def is_known_domain(host: str, known: Iterable[str]) -> bool:
    """Whether the host is one of ``known`` or under one of them."""
    return _under(host, known)


# Letters that look like Latin ones (Cyrillic, Greek, and a few others) and digits/letters
# that stand in for letters in look-alike domains. Compared after NFKD without marks.
_CONFUSABLE: Final = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j",
    "ԁ": "d", "ѕ": "s", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ո": "n", "ս": "u",
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "τ": "t", "υ": "u", "ε": "e",
    "ѵ": "v", "ɑ": "a", "ı": "i", "ℓ": "l", "ß": "ss", "æ": "ae", "ø": "o", "đ": "d", "ł": "l",
    "0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "|": "l", "!": "i",
    "@": "a", "$": "s",
}  # fmt: skip
_MULTI: Final = (("rn", "m"), ("vv", "w"), ("cl", "d"))


def fold_confusables(label: str) -> str:
    """A label folded to the Latin letters it looks like: compatibility forms and accents
    removed, confusable letters and digits mapped (``pаypa1`` → ``paypal``). Hyphens kept."""
    text = unicodedata.normalize("NFKD", label.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return "".join(_CONFUSABLE.get(c, c) for c in text)


def _fold_multi(label: str) -> str:
    for a, b in _MULTI:
        label = label.replace(a, b)
    return label


def _scripts(label: str) -> set[str]:
    out = set()
    for c in label:
        if c.isalpha():
            name = unicodedata.name(c, "")
            out.add(name.split(" ", 1)[0] if name else "?")
    return out


def _edit_distance_le1(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by at most one insertion, deletion, substitution or
    transposition of neighbours."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2 and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        )  # fmt: skip
    if la > lb:
        a, b = b, a
    return any(b[:i] + b[i + 1 :] == a for i in range(len(b)))


@dataclass(frozen=True)
class DomainFinding:
    """One URL rule that fired for a host: ``rule`` is ``homograph``, ``lookalike``,
    ``brand_words``, ``mixed_script``, ``shortener`` or ``userinfo``; ``brand`` the brand
    domain concerned."""

    rule: str
    host: str
    brand: str | None = None

    def describe(self) -> str:
        shown = unicode_host(self.host)
        if self.rule == "homograph":
            return f"{shown} imitates {self.brand} with look-alike letters"
        if self.rule == "lookalike":
            return f"{shown} is a look-alike of {self.brand}"
        if self.rule == "brand_words":
            return f"{shown} uses the name of {self.brand} but is not its domain"
        if self.rule == "userinfo":
            return f"the link hides its real host {shown} behind a user name"
        if self.rule == "mixed_script":
            return f"{shown} mixes alphabets in one name"
        return f"{shown} is a link shortener (the destination is hidden)"


_WORD_SPLIT: Final = re.compile(r"[-_.]")

#: Words phishing domains put next to a brand's name (``paypal-login``, ``secure-chase``).
_LURE_WORDS: Final = _words(
    "login log signin sign auth verify verification secure security account accounts update "
    "support help service services billing payment pay wallet claim airdrop gift bonus promo "
    "reward rewards free recover recovery unlock unlocked locked confirm official online web "
    "app id my customer care team center centre alert notice refund delivery parcel track "
    "tracking redelivery reschedule connect validate sync restore nft drop giveaway mint"
)


def _brand_finding(
    host: str, folded_labels: list[str], name_labels: list[str], brand: str, brand_reg: str,
    name: str,
) -> DomainFinding | None:  # fmt: skip
    """The brand rule (if any) that fires for ``host`` against one brand."""
    # The brand's full domain as the left part of another site (paypal.com.evil.example).
    brand_labels = brand_reg.split(".")
    n = len(brand_labels)
    for i in range(len(folded_labels) - n):
        if folded_labels[i : i + n] == brand_labels:
            return DomainFinding("brand_words", host, brand)
    for raw in name_labels:
        ascii_label = raw.isascii()
        folded = fold_confusables(raw)
        if folded == name or _fold_multi(folded) == name:
            if not ascii_label:
                return DomainFinding("homograph", host, brand)
            if raw.lower() != name:
                return DomainFinding("lookalike", host, brand)
            continue  # the brand's own name under another suffix or as a subdomain: not flagged
        words = [w for w in _WORD_SPLIT.split(folded) if w]
        if len(words) > 1 and name in words:
            if not ascii_label:
                return DomainFinding("homograph", host, brand)
            if any(w in _LURE_WORDS for w in words if w != name):
                return DomainFinding("brand_words", host, brand)
        if len(words) > 1 and any(
            w != name and (fold_confusables(w) == name or _fold_multi(w) == name) for w in words
        ):
            return DomainFinding("lookalike" if ascii_label else "homograph", host, brand)
        if not ascii_label and name in folded:
            return DomainFinding("homograph", host, brand)
        if len(name) >= 6 and _edit_distance_le1(folded, name):
            return DomainFinding("lookalike" if ascii_label else "homograph", host, brand)
    return None


def domain_findings(host: str, brands: Iterable[str] = DEFAULT_BRANDS) -> list[DomainFinding]:
    """The URL rules that fire for ``host`` (as :func:`host_of` returns it) against the brand
    list (official domains). A host under a brand's own domain fires none of the brand rules.
    Cached per (host, brand list): hosts recur."""
    return list(_domain_findings(host, tuple(brands)))


@lru_cache(maxsize=4096)
def _domain_findings(host: str, brands: tuple[str, ...]) -> tuple[DomainFinding, ...]:
    if not host:
        return ()
    brand_list = [b.lower().strip(".") for b in brands if b.strip(".")]
    findings: list[DomainFinding] = []
    if is_shortener(host):
        findings.append(DomainFinding("shortener", host))
    official = _under(host, brand_list)
    reg = registrable_domain(host)
    labels = host.split(".")
    decoded = [_decode_label(label) for label in labels]
    idn = any(label.startswith("xn--") for label in labels)
    if idn and any(len(_scripts(d)) > 1 for d in decoded):
        findings.append(DomainFinding("mixed_script", host))
    if official:
        return tuple(findings)
    # The labels that carry the name: everything left of the public suffix.
    suffix_len = len(reg.split(".")) - 1
    name_labels = decoded[: len(decoded) - suffix_len] if suffix_len else decoded
    folded = [fold_confusables(d) for d in decoded]
    seen: set[str] = set()
    for brand in brand_list:
        brand_reg = registrable_domain(brand)
        name = brand_reg.split(".")[0]
        if len(name) < 3 or name in seen:
            continue
        seen.add(name)
        finding = _brand_finding(host, folded, name_labels, brand, brand_reg, name)
        if finding is not None:
            findings.append(finding)
    return tuple(findings)


def url_findings(url: str, brands: Iterable[str] = DEFAULT_BRANDS) -> list[DomainFinding]:
    """The URL rules that fire for one link: :func:`domain_findings` of its host, and a
    user name that looks like a host (``https://paypal.com@evil.example/``)."""
    host = host_of(url)
    findings = domain_findings(host, brands)
    authority = _SCHEME.sub("", url)
    authority = _PATH_START.split(authority, maxsplit=1)[0]
    if host and "@" in authority and "." in authority.rsplit("@", 1)[0]:
        findings.append(DomainFinding("userinfo", host))
    return findings
