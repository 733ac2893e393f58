"""Unpadded Base64 (appendices, "Unpadded Base64").

Encoders emit no ``=`` padding. Decoders accept padded and unpadded input, as the spec says they
SHOULD. Both the standard and the URL-safe alphabets (RFC 4648 §4 and §5) are provided.
"""

from __future__ import annotations

import base64
import binascii
import re

from bastion.errors import bad_json

_STD = re.compile(r"[A-Za-z0-9+/]*")
_URLSAFE = re.compile(r"[A-Za-z0-9_-]*")


def encode_base64(data: bytes, urlsafe: bool = False) -> str:
    """Encode ``data`` as unpadded base64 (URL-safe alphabet when ``urlsafe``)."""
    enc = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return enc.rstrip(b"=").decode("ascii")


def decode_base64(text: str) -> bytes:
    """Decode padded or unpadded base64 in either alphabet.

    Raises :class:`~bastion.errors.MatrixError` (``M_BAD_JSON``) for anything that is not base64.
    """
    if not isinstance(text, str):
        raise bad_json("base64 value must be a string")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise bad_json("invalid base64: impossible length")
    padded = stripped + "=" * (-len(stripped) % 4)
    if _STD.fullmatch(stripped):
        altchars = None
    elif _URLSAFE.fullmatch(stripped):
        altchars = b"-_"
    else:
        raise bad_json("invalid base64: character outside the alphabet")
    try:
        return base64.b64decode(padded.encode("ascii"), altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as e:  # pragma: no cover - the regexes exclude these
        raise bad_json(f"invalid base64: {e}") from None
