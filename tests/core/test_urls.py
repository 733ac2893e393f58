"""Configured URL checks (core/urls.py)."""

from __future__ import annotations

import pytest

from bastion.core.urls import valid_http_url


@pytest.mark.parametrize("url", ["https://example.org", "http://10.0.0.1:8080/hook"])
def test_endpoints_are_accepted(url):
    assert valid_http_url(url) and valid_http_url(url, query=True)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.org", "https://", "https://u:p@example.org", "https://example.org:0",
     "https://example.org:99999", "https://exa mple.org", "https://example.org/\x01",
     "https://bücher.example", "//example.org", ""],
)  # fmt: skip
def test_bad_urls_are_refused(url):
    assert not valid_http_url(url) and not valid_http_url(url, query=True)


def test_a_query_and_fragment_only_where_allowed():
    page = "https://example.org/support?lang=en#contact"
    assert valid_http_url(page, query=True)
    assert not valid_http_url(page)
