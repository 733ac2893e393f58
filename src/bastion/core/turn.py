"""TURN credentials for VoIP (C-S API "Voice over IP" → "GET /voip/turnServer").

The homeserver and the TURN server share a secret; the credentials follow the TURN REST API
convention (draft-uberti-behave-turn-rest, coturn's ``use-auth-secret``): the username is
``<expiry unix seconds>:<user ID>`` and the password is the standard, padded base64 of
HMAC-SHA1(secret, username). The TURN server recomputes the password and checks the expiry,
so nothing is stored. Pure: the caller gives the time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def turn_credentials(
    secret: str, user_id: str, now_ms: int, lifetime_s: int, uris: list[str]
) -> dict[str, object]:
    """The ``/voip/turnServer`` response body: ``username``, ``password``, ``uris``, ``ttl``
    (seconds the credentials stay valid)."""
    expiry = now_ms // 1000 + lifetime_s
    username = f"{expiry}:{user_id}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {
        "username": username,
        "password": base64.b64encode(mac).decode("ascii"),
        "uris": list(uris),
        "ttl": lifetime_s,
    }
