"""The one error type of Bastion, its error codes and the common refusals.

Every refusal — bad input to the protocol core, a bad request to the Client-Server or federation
API — is a :class:`MatrixError` carrying the spec's ``errcode`` and the HTTP status it maps to
(Client-Server API, "Standard error response"). The core raises it for malformed input; the HTTP
shell turns it into ``{"errcode": ..., "error": ...}`` unchanged.

Every error code Bastion sends is a constant here (Client-Server API, "Common error codes" and
"Other error codes"; the endpoint that introduces a code is named next to it), and the refusals
that recur across the server have a constructor that fixes their status.
"""

from __future__ import annotations

from typing import Any, Final


class MatrixError(Exception):
    """A refusal with a Matrix ``errcode``, an HTTP status and a message naming the problem."""

    def __init__(self, errcode: str, message: str, status: int = 400, **extra: object) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message
        self.status = status
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errcode": self.errcode, "error": self.message}
        body.update(self.extra)
        return body

    def __repr__(self) -> str:
        return f"MatrixError({self.errcode!r}, {self.message!r}, status={self.status})"


# --- Error codes (C-S API "Standard error response"; S-S API where noted) ----------------------

# Common error codes.
M_FORBIDDEN: Final = "M_FORBIDDEN"
M_UNKNOWN_TOKEN: Final = "M_UNKNOWN_TOKEN"
M_MISSING_TOKEN: Final = "M_MISSING_TOKEN"
M_USER_LOCKED: Final = "M_USER_LOCKED"
M_USER_SUSPENDED: Final = "M_USER_SUSPENDED"
#: Rejecting the invite to one's server-notices room (C-S API "Server Notices").
M_CANNOT_LEAVE_SERVER_NOTICE_ROOM: Final = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
M_BAD_JSON: Final = "M_BAD_JSON"
M_NOT_JSON: Final = "M_NOT_JSON"
M_NOT_FOUND: Final = "M_NOT_FOUND"
M_LIMIT_EXCEEDED: Final = "M_LIMIT_EXCEEDED"
M_UNRECOGNIZED: Final = "M_UNRECOGNIZED"
M_UNKNOWN: Final = "M_UNKNOWN"

# Other error codes.
M_UNAUTHORIZED: Final = "M_UNAUTHORIZED"
M_USER_IN_USE: Final = "M_USER_IN_USE"
M_INVALID_USERNAME: Final = "M_INVALID_USERNAME"
M_ROOM_IN_USE: Final = "M_ROOM_IN_USE"
M_INVALID_PARAM: Final = "M_INVALID_PARAM"
M_MISSING_PARAM: Final = "M_MISSING_PARAM"
#: A sliding-sync position the server does not know (MSC4186): the client starts afresh.
M_UNKNOWN_POS: Final = "M_UNKNOWN_POS"
M_TOO_LARGE: Final = "M_TOO_LARGE"
M_UNSUPPORTED_ROOM_VERSION: Final = "M_UNSUPPORTED_ROOM_VERSION"
M_INCOMPATIBLE_ROOM_VERSION: Final = "M_INCOMPATIBLE_ROOM_VERSION"
M_BAD_ALIAS: Final = "M_BAD_ALIAS"
M_GUEST_ACCESS_FORBIDDEN: Final = "M_GUEST_ACCESS_FORBIDDEN"
M_RESOURCE_LIMIT_EXCEEDED: Final = "M_RESOURCE_LIMIT_EXCEEDED"
M_THREEPID_MEDIUM_NOT_SUPPORTED: Final = "M_THREEPID_MEDIUM_NOT_SUPPORTED"
M_WEAK_PASSWORD: Final = "M_WEAK_PASSWORD"
# Profile fields ("PUT /profile/{userId}/{keyName}": a key, the whole profile) and key backup
# ("Server-side key backups").
M_PROFILE_TOO_LARGE: Final = "M_PROFILE_TOO_LARGE"
M_KEY_TOO_LARGE: Final = "M_KEY_TOO_LARGE"
M_WRONG_ROOM_KEYS_VERSION: Final = "M_WRONG_ROOM_KEYS_VERSION"
# Content repository ("Client behaviour" of the content repository module).
M_CANNOT_OVERWRITE_MEDIA: Final = "M_CANNOT_OVERWRITE_MEDIA"
M_NOT_YET_UPLOADED: Final = "M_NOT_YET_UPLOADED"
# S-S API: signatures on requests and events, restricted joins ("make_join", "send_join").
M_INVALID_SIGNATURE: Final = "M_INVALID_SIGNATURE"
M_UNABLE_TO_AUTHORISE_JOIN: Final = "M_UNABLE_TO_AUTHORISE_JOIN"
M_UNABLE_TO_GRANT_JOIN: Final = "M_UNABLE_TO_GRANT_JOIN"


# --- Constructors for the refusals that recur ----------------------------------------------------


def bad_json(message: str) -> MatrixError:
    """400 ``M_BAD_JSON``: input that is JSON but not of the shape or type required."""
    return MatrixError(M_BAD_JSON, message, 400)


def not_json(message: str) -> MatrixError:
    """400 ``M_NOT_JSON``: a body that is not JSON at all."""
    return MatrixError(M_NOT_JSON, message, 400)


def invalid_param(message: str) -> MatrixError:
    """400 ``M_INVALID_PARAM``: a parameter present but not acceptable (e.g. a bad identifier)."""
    return MatrixError(M_INVALID_PARAM, message, 400)


def missing_param(message: str) -> MatrixError:
    """400 ``M_MISSING_PARAM``: a required parameter is absent."""
    return MatrixError(M_MISSING_PARAM, message, 400)


def forbidden(message: str) -> MatrixError:
    """403 ``M_FORBIDDEN``: the requester may not do this."""
    return MatrixError(M_FORBIDDEN, message, 403)


def not_found(message: str) -> MatrixError:
    """404 ``M_NOT_FOUND``: no such resource (or one the requester may not know exists)."""
    return MatrixError(M_NOT_FOUND, message, 404)


def too_large(message: str, status: int = 413) -> MatrixError:
    """``M_TOO_LARGE``, 413 by default ("Size limits"); some endpoints answer 400."""
    return MatrixError(M_TOO_LARGE, message, status)


def limit_exceeded(retry_after_ms: int, message: str = "too many requests") -> MatrixError:
    """429 ``M_LIMIT_EXCEEDED`` ("Rate limiting") with ``retry_after_ms`` (at least 1 ms)."""
    return MatrixError(M_LIMIT_EXCEEDED, message, 429, retry_after_ms=max(1, int(retry_after_ms)))


def missing_token(message: str = "missing access token") -> MatrixError:
    """401 ``M_MISSING_TOKEN``: no access token was given ("Using access tokens")."""
    return MatrixError(M_MISSING_TOKEN, message, 401)


def unknown_token(
    message: str = "unknown or expired access token", *, soft_logout: bool = False
) -> MatrixError:
    """401 ``M_UNKNOWN_TOKEN`` with ``soft_logout`` ("Soft logout"): the token is not recognised."""
    return MatrixError(M_UNKNOWN_TOKEN, message, 401, soft_logout=soft_logout)


def unrecognized(message: str, status: int = 404) -> MatrixError:
    """``M_UNRECOGNIZED``: an unknown endpoint (404) or a known one with the wrong method (405)."""
    return MatrixError(M_UNRECOGNIZED, message, status)
