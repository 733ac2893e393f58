"""The classifier's URL rules (pure): links found in text, hosts, brand look-alikes,
homographs, shorteners, unknown domains."""

from __future__ import annotations

import pytest

from bastion.guard.classifier.urls import (
    DEFAULT_BRANDS,
    domain_findings,
    extract_urls,
    fold_confusables,
    host_of,
    is_known_domain,
    is_shortener,
    registrable_domain,
    unicode_host,
    url_findings,
)

BRANDS = (*DEFAULT_BRANDS, "brand.example")


def rules(url: str) -> set[str]:
    return {f.rule for f in url_findings(url, BRANDS)}


def test_extract_urls_in_order_with_trailing_punctuation_cut() -> None:
    text = "see https://a.example/x, then (https://bit.ly/abc). and www.b.example! ok"
    assert extract_urls(text) == ["https://a.example/x", "https://bit.ly/abc", "www.b.example"]


def test_extract_urls_markdown_and_spaced_scheme() -> None:
    assert extract_urls("[docs](https://developer.mozilla.org/en-US/docs/Web)") == [
        "https://developer.mozilla.org/en-US/docs/Web"
    ]
    assert extract_urls("claim at https:// weex.com/abc now") == ["https://weex.com/abc"]


def test_extract_urls_bare_domains_but_not_file_names() -> None:
    assert extract_urls("open example.com/x or shop.xyz") == ["example.com/x", "shop.xyz"]
    assert extract_urls("edit main.py, README.md, app.js, run.sh; e.g. v1.2.3 costs 3.50") == []
    assert extract_urls("mail me at someone@mail.com") == []


def test_extract_urls_every_occurrence() -> None:
    assert extract_urls("x.com x.com") == ["x.com", "x.com"]


def test_host_of() -> None:
    assert host_of("https://WWW.Example.COM:8443/path?q=1") == "www.example.com"
    assert host_of("https://paypal.com@evil.example/") == "evil.example"
    assert host_of("https://pаypal.com/") == "xn--pypal-4ve.com"
    assert host_of("https://[::1]/") == ""
    assert host_of("notalink") == ""
    assert unicode_host("xn--pypal-4ve.com") == "pаypal.com"


def test_registrable_domain() -> None:
    assert registrable_domain("a.b.example.com") == "example.com"
    assert registrable_domain("www.bbc.co.uk") == "bbc.co.uk"


def test_digit_lookalike() -> None:
    assert "lookalike" in rules("https://paypa1.com/login")
    assert "lookalike" in rules("http://gooogle.com")
    assert "lookalike" in rules("http://rnicrosoft.com")


def test_punycode_homograph() -> None:
    assert "homograph" in rules("www.xn--pypal-4ve.com")
    assert "homograph" in rules("https://pаypal.com")  # Cyrillic a, as typed
    assert "mixed_script" in rules("www.xn--pypal-4ve.com")
    assert fold_confusables("pаypa1") == "paypal"


def test_brand_with_lure_words() -> None:
    assert "brand_words" in rules("brand-login.example")
    assert "brand_words" in rules("https://secure-paypal-verify.example/")
    assert "brand_words" in rules("paypal.com.evil.example/x")
    assert "userinfo" in rules("https://paypal.com@evil.example/")


def test_official_and_unrelated_hosts_fire_nothing() -> None:
    for url in (
        "https://www.paypal.com/x", "https://brand.example/login", "https://google.co.uk",
        "https://github-pages-demo.herokuapp.com", "https://matrix.mozilla.org",
        "https://developer.mozilla.org/", "https://pineapple.example",
    ):  # fmt: skip
        assert rules(url) == set(), url


def test_brand_list_is_configurable() -> None:
    assert domain_findings("acrne.example", ["acme.example"])
    assert not domain_findings("acrne.example", ["paypal.com"])


@pytest.mark.parametrize("url", ["https://bit.ly/x", "tinyurl.com/abc", "https://tx.vc/q"])
def test_shorteners(url: str) -> None:
    assert is_shortener(host_of(url))
    assert "shortener" in rules(url)


def test_known_domains() -> None:
    assert is_known_domain("docs.github.com", ["github.com"])
    assert not is_known_domain("notgithub.com", ["github.com"])


def test_the_cheap_link_search_finds_whatever_the_link_pattern_finds() -> None:
    # extract_urls runs its pattern only where the cheap search finds a hint of a link.
    from bastion.guard.classifier.urls import _LINK_HINT, _URL_RE

    texts = ["www.123", "WWW.X", "ſ.ſſ", "a.K", "x.İstanbul", "hxxps://a", "see bit.ly/x",
             "HTTP:// example.com", "mail me at a@b.co", "no link. Here", "$12.50 each"]  # fmt: skip
    for text in texts:
        if _URL_RE.search(text):
            assert _LINK_HINT.search(text), text
    assert extract_urls("$12.50 each. Next time") == []
    assert extract_urls("WWW.Example.COM/x") == ["WWW.Example.COM/x"]
