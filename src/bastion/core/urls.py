"""Checks of URLs the operator configures (webhooks, witnesses, chain RPC, the support page).
Pure."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["valid_http_url"]


def valid_http_url(url: str, *, query: bool = False) -> bool:
    """An absolute http(s) URL with a host, a valid port and no credentials; with ``query``
    it may carry a query and a fragment (a web page), without them not (an endpoint)."""
    if not url.isascii() or any(c.isspace() or ord(c) < 0x20 for c in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and parts.username is None
        and parts.password is None
        and (query or (not parts.query and not parts.fragment))
        and "@" not in parts.netloc
        and (port is None or 0 < port < 65536)
    )
