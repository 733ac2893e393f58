"""OpenID tokens (C-S API "OpenID", S-S API "OpenID"): issuing a token to a user and exchanging
one for the user's ID. The rules are :mod:`bastion.core.openid`; the rows are
:mod:`bastion.storage.sqlite.openid` (hashed, never the token itself).

Expired tokens are deleted where they are met (a lookup) and, at most
:data:`~bastion.core.openid.CLEANUP_BATCH` at a time, in the write that issues a new token: the
table holds about an hour of tokens, with no timer. A deactivated or erased account's tokens are
deleted by the deactivation (storage/sqlite/accounts.py); a token of a deactivated or locked
account found anyway is refused like an unknown one.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from bastion.core.openid import CLEANUP_BATCH, MAX_TOKEN_LENGTH, TOKEN_LIFETIME_MS, is_live
from bastion.core.openid import token_answer as _token_answer

if TYPE_CHECKING:
    from bastion.server import HomeServer


class OpenIdTokens:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        #: The clock tokens expire by (the server's; a test may move it alone).
        self.now_ms = hs.now_ms

    async def issue(self, user_id: str) -> dict:
        """A new token for ``user_id`` (the authenticated requester): the request_token answer.
        The token is 256 random bits; only its hash is stored."""
        token = secrets.token_urlsafe(32)
        now = self.now_ms()
        store = self.hs.store

        def write(conn) -> None:
            store.delete_expired_openid_tokens_in(conn, now, CLEANUP_BATCH)
            store.add_openid_token_in(conn, token, user_id, now + TOKEN_LIFETIME_MS)

        await store.transaction(write)
        return _token_answer(token, self.hs.server_name, TOKEN_LIFETIME_MS)

    async def user_of(self, token: str) -> str | None:
        """The user a token vouches for, or None: unknown, expired (deleted now), or its
        account deactivated or locked. The caller answers every None alike (401)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        store = self.hs.store
        found = store.get_openid_token(token)
        if found is None:
            return None
        user_id, expires_ts, usable = found
        if not is_live(expires_ts, self.now_ms()):
            # Only a party that once held the token can tell this path from an unknown token
            # (by its timing), and it learns nothing it did not know: that it had expired.
            await store.transaction(lambda conn: store.delete_openid_token_in(conn, token))
            return None
        return user_id if usable else None
