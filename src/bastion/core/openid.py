"""OpenID tokens (C-S API "OpenID", S-S API "OpenID"): what a token answer holds and when a
token is still good. Pure: the caller passes the time in and makes the token.

A user asks their homeserver for a token (``POST /user/{userId}/openid/request_token``) and
hands it to a third party (a widget, an integration manager), which exchanges it at the
homeserver's federation listener (``GET /_matrix/federation/v1/openid/userinfo``) for the user's
ID. The token proves nothing else: it is not an access token.
"""

from __future__ import annotations

__all__ = [
    "CLEANUP_BATCH",
    "MAX_TOKEN_LENGTH",
    "TOKEN_LIFETIME_MS",
    "is_live",
    "token_answer",
]

#: How long a token is good for: an hour, as Synapse (``expires_in`` 3600).
TOKEN_LIFETIME_MS = 3_600_000

#: Expired tokens deleted, at most, each time a new token is issued (a bounded write).
CLEANUP_BATCH = 100

#: Longer tokens are not ours (ours are 43 characters): refused without a lookup.
MAX_TOKEN_LENGTH = 256


def token_answer(
    token: str, server_name: str, lifetime_ms: int = TOKEN_LIFETIME_MS
) -> dict[str, str | int]:
    """The 200 answer of ``request_token`` (definitions/openid_token.yaml)."""
    return {
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": server_name,
        "expires_in": lifetime_ms // 1000,
    }


def is_live(expires_ts: int, now_ms: int) -> bool:
    """True while a token expiring at ``expires_ts`` (ms) may still be exchanged."""
    return now_ms < expires_ts
