"""Unpadded Base64 (appendices, "Unpadded Base64").

Encoders emit no ``=`` padding. Decoders accept padded and unpadded input, as the spec says they
SHOULD. Both the standard and the URL-safe alphabets (RFC 4648 §4 and §5) are provided.
"""

from __future__ import annotations

import base64
import binascii

from bastion.errors import bad_json

_FROM_URLSAFE = str.maketrans("-_", "+/")


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
    if "-" in stripped or "_" in stripped:
        if "+" in stripped or "/" in stripped:
            raise bad_json("invalid base64: mixes the standard and URL-safe alphabets")
        stripped = stripped.translate(_FROM_URLSAFE)
    try:
        return binascii.a2b_base64(stripped + "=" * (-len(stripped) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise bad_json("invalid base64: character outside the alphabet") from None
