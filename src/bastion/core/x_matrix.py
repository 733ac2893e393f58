"""Request authentication with the ``X-Matrix`` scheme (S-S API "Request Authentication").

Pure functions, no I/O:

* :func:`signable_request` builds the JSON object a request's signature covers
  (``method``, ``uri``, ``origin``, ``destination`` and, for a request with a body, ``content``);
* :func:`authorization_header` signs it and formats the header the way the spec asks senders to
  (one space after ``X-Matrix``, lower-case names, quoted values, no spaces around commas);
* :func:`parse_authorization` reads a received header by the RFC 9110 §11.4 ``auth-param``
  grammar: names are case-insensitive and in any order, values are a ``token`` or a
  ``quoted-string`` with backslash escapes, optional whitespace around the commas, unknown
  parameters ignored. For older senders an unquoted value may also contain ``:``.
* :func:`verify_request` checks the signature with a key the caller found for the origin.

The spec's parameter list calls the signature ``signature`` while its example and sample code
use ``sig`` (what every implementation sends): we send ``sig`` and accept either. A parameter
given twice makes the header invalid (which one was signed would be ambiguous).
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.signing import SigningKey, VerifyKey

from bastion.core.base64 import decode_base64
from bastion.core.canonical_json import canonical_json
from bastion.core.identifiers import is_valid_server_name
from bastion.core.json_types import JsonDict
from bastion.core.signing import sign_json, verify_signature_bytes
from bastion.errors import M_UNAUTHORIZED, MatrixError

#: RFC 9110 §5.6.2 ``tchar``.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
#: Unquoted values may also hold ``:`` (S-S API: "for compatibility with older servers").
_VALUE_CHAR = _TCHAR | {":"}
_OWS = " \t"
_SCHEME = "x-matrix"


class XMatrixError(MatrixError):
    """The request is not authenticated: 401 ``M_UNAUTHORIZED``."""

    def __init__(self, message: str) -> None:
        super().__init__(M_UNAUTHORIZED, message, 401)


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    """The parameters of one ``X-Matrix`` header. ``destination`` is ``None`` when absent."""

    origin: str
    key: str
    sig: str
    destination: str | None = None


def signable_request(
    method: str, uri: str, origin: str, destination: str, content: object | None = None
) -> JsonDict:
    """The object whose signature authenticates a request (step 1 of "Request Authentication").

    ``uri`` is the request target from ``/_matrix/...`` with its ``?query``, no scheme or host;
    server names are those *before* delegation.
    """
    obj: JsonDict = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def authorization_header(
    method: str,
    uri: str,
    origin: str,
    destination: str,
    key_id: str,
    key: SigningKey,
    content: object | None = None,
) -> str:
    """The ``Authorization`` header value for a request (step 2 of "Request Authentication")."""
    signed = sign_json(
        signable_request(method, uri, origin, destination, content), origin, key_id, key
    )
    sig = signed["signatures"][origin][key_id]
    return format_authorization(XMatrixAuth(origin, key_id, sig, destination))


def format_authorization(auth: XMatrixAuth) -> str:
    """Format the header as the spec recommends senders do (lower-case names, quoted values)."""
    parts = [f'origin="{_quote(auth.origin)}"']
    if auth.destination is not None:
        parts.append(f'destination="{_quote(auth.destination)}"')
    parts.append(f'key="{_quote(auth.key)}"')
    parts.append(f'sig="{_quote(auth.sig)}"')
    return "X-Matrix " + ",".join(parts)


def _quote(value: str) -> str:
    if any(c in value for c in '"\\\r\n'):
        raise ValueError(
            "X-Matrix parameter values must not contain quotes, backslashes or newlines"
        )
    return value


def parse_auth_params(text: str) -> dict[str, str]:
    """Parse ``auth-param *( OWS "," OWS auth-param )`` (RFC 9110 §11.4) into lower-cased names.

    Empty list elements (``a=1,,b=2``) are allowed as RFC 9110 §5.6.1 asks recipients to.
    Raises :class:`XMatrixError` on a syntax error or a repeated name.
    """
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and (text[i] in _OWS or text[i] == ","):
            i += 1
        if i >= n:
            return params
        start = i
        while i < n and text[i] in _TCHAR:
            i += 1
        name = text[start:i].lower()
        if not name:
            raise XMatrixError(f"X-Matrix: expected a parameter name at offset {start}")
        while i < n and text[i] in _OWS:  # BWS
            i += 1
        if i >= n or text[i] != "=":
            raise XMatrixError(f"X-Matrix: parameter {name!r} has no value")
        i += 1
        while i < n and text[i] in _OWS:  # BWS
            i += 1
        if i < n and text[i] == '"':
            i += 1
            out: list[str] = []
            while True:
                if i >= n:
                    raise XMatrixError(f"X-Matrix: unterminated quoted value for {name!r}")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n:
                        raise XMatrixError(f"X-Matrix: dangling backslash in {name!r}")
                    c = text[i + 1]
                    i += 1
                if c in "\r\n\x00" or (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F:
                    raise XMatrixError(f"X-Matrix: control character in {name!r}")
                out.append(c)
                i += 1
            value = "".join(out)
        else:
            start = i
            while i < n and text[i] in _VALUE_CHAR:
                i += 1
            value = text[start:i]
            if not value:
                raise XMatrixError(f"X-Matrix: parameter {name!r} has an empty value")
        if name in params:
            raise XMatrixError(f"X-Matrix: parameter {name!r} is given twice")
        params[name] = value
        while i < n and text[i] in _OWS:
            i += 1
        if i < n and text[i] != ",":
            raise XMatrixError(f"X-Matrix: expected ',' after parameter {name!r}")


def parse_authorization(header: str | None) -> XMatrixAuth:
    """Read an ``Authorization: X-Matrix ...`` header. Raises :class:`XMatrixError` (401)."""
    if not header:
        raise XMatrixError("missing Authorization header")
    scheme, sep, rest = header.partition(" ")
    if scheme.lower() != _SCHEME or not sep:
        raise XMatrixError("Authorization header does not use the X-Matrix scheme")
    params = parse_auth_params(rest)
    if "sig" in params and "signature" in params and params["sig"] != params["signature"]:
        raise XMatrixError("X-Matrix: 'sig' and 'signature' differ")
    sig = params.get("sig", params.get("signature"))
    origin, key = params.get("origin"), params.get("key")
    if origin is None or key is None or sig is None:
        raise XMatrixError("X-Matrix: origin, key and sig are required")
    if not is_valid_server_name(origin):
        raise XMatrixError("X-Matrix: origin is not a valid server name")
    destination = params.get("destination")
    if destination is not None and not is_valid_server_name(destination):
        raise XMatrixError("X-Matrix: destination is not a valid server name")
    return XMatrixAuth(origin=origin, key=key, sig=sig, destination=destination)


def check_destination(auth: XMatrixAuth, our_server_name: str) -> None:
    """A ``destination`` that is present must be our exact server name (401 otherwise)."""
    if auth.destination is not None and auth.destination != our_server_name:
        raise XMatrixError("X-Matrix: the request is addressed to another server")


def verify_request(
    auth: XMatrixAuth,
    method: str,
    uri: str,
    our_server_name: str,
    content: object | None,
    verify_key: VerifyKey,
) -> None:
    """Check the request's signature with ``verify_key`` (the origin's key ``auth.key``).

    The signed object names ``destination`` as the header does when present, else our name
    (a sender that omits the parameter still signs its destination). Raises :class:`XMatrixError`.
    """
    check_destination(auth, our_server_name)
    obj = signable_request(method, uri, auth.origin, auth.destination or our_server_name, content)
    try:
        signature = decode_base64(auth.sig)
    except MatrixError:
        raise XMatrixError("X-Matrix: signature is not base64") from None
    try:
        verify_signature_bytes(canonical_json(obj), signature, verify_key, auth.origin)
    except MatrixError:
        raise XMatrixError(f"X-Matrix: invalid signature from {auth.origin}") from None
