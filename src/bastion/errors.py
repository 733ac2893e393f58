"""The one error type of Bastion.

Every refusal — bad input to the protocol core, a bad request to the Client-Server or federation
API — is a :class:`MatrixError` carrying the spec's ``errcode`` and the HTTP status it maps to
(Client-Server API, "Standard error response"). The core raises it for malformed input; the HTTP
shell turns it into ``{"errcode": ..., "error": ...}`` unchanged.
"""

from __future__ import annotations


class MatrixError(Exception):
    """A refusal with a Matrix ``errcode``, an HTTP status and a message naming the problem."""

    def __init__(self, errcode: str, message: str, status: int = 400, **extra: object) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message
        self.status = status
        self.extra = extra

    def to_json(self) -> dict:
        body: dict = {"errcode": self.errcode, "error": self.message}
        body.update(self.extra)
        return body

    def __repr__(self) -> str:
        return f"MatrixError({self.errcode!r}, {self.message!r}, status={self.status})"


# The spec's error codes used by the core (Client-Server API, "Common error codes").
M_BAD_JSON = "M_BAD_JSON"
M_NOT_JSON = "M_NOT_JSON"
M_INVALID_PARAM = "M_INVALID_PARAM"
M_TOO_LARGE = "M_TOO_LARGE"
M_FORBIDDEN = "M_FORBIDDEN"
M_UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"


def bad_json(message: str) -> MatrixError:
    """Input that is JSON but not of the shape or type required."""
    return MatrixError(M_BAD_JSON, message, 400)
