"""Identifiers (appendices, "Identifier Grammar").

Parsers return small value objects and raise :class:`~bastion.errors.MatrixError`
(``M_INVALID_PARAM``) with a message naming the rule an invalid identifier breaks.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TypeGuard

from bastion.core.room_versions import EventIdFormat, get_room_version
from bastion.errors import MatrixError, invalid_param

MAX_ID_BYTES = 255

_DNS_NAME = re.compile(r"[A-Za-z0-9.-]{1,255}")
_PORT = re.compile(r"[0-9]{1,5}")
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_USER_LOCALPART = re.compile(r"[a-z0-9._=/+\-]+")
_NAMESPACED = re.compile(r"[a-z][a-z0-9._\-]{0,254}")
_STD_HASH = re.compile(r"[A-Za-z0-9+/]{43}")
_URLSAFE_HASH = re.compile(r"[A-Za-z0-9_\-]{43}")


def _invalid(kind: str, value: object, rule: str) -> MatrixError:
    shown = repr(value)[:80]
    return invalid_param(f"invalid {kind} {shown}: {rule}")


@dataclass(frozen=True, slots=True)
class ServerName:
    """A parsed server name: ``host`` (brackets kept for IPv6) and optional explicit ``port``."""

    host: str
    port: int | None

    @property
    def is_ip_literal(self) -> bool:
        return self.host.startswith("[") or bool(_IPV4.fullmatch(self.host))

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def parse_server_name(value: object) -> ServerName:
    """Parse ``hostname [":" port]`` per "Server Name": IPv4 dotted quad (0–255 each), bracketed
    IPv6 (RFC 3513 §2.2), or a DNS name of letters, digits, ``-`` and ``.``; port of 1–5 digits."""
    if not isinstance(value, str) or not value:
        raise _invalid("server name", value, "must be a non-empty string")
    host, port_s = value, None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise _invalid("server name", value, "IPv6 literal lacks its closing ']'")
        host, rest = value[: end + 1], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise _invalid("server name", value, "only ':port' may follow an IPv6 literal")
            port_s = rest[1:]
        inner = host[1:-1]
        if not _IPV6_CHARS.fullmatch(inner):
            raise _invalid("server name", value, "IPv6 literal has characters outside the grammar")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise _invalid("server name", value, "not a valid IPv6 address (RFC 3513)") from None
    else:
        if ":" in value:
            host, _, port_s = value.rpartition(":")
        if _IPV4.fullmatch(host):
            if any(int(part) > 255 for part in host.split(".")):
                raise _invalid("server name", value, "IPv4 literal parts must be 0 to 255")
        elif not _DNS_NAME.fullmatch(host):
            raise _invalid("server name", value, "a DNS name has only letters, digits, '-' and '.'")
    port = None
    if port_s is not None:
        if not _PORT.fullmatch(port_s) or not 0 < int(port_s) <= 65535:
            raise _invalid("server name", value, "port must be 1 to 5 digits, 1 to 65535")
        port = int(port_s)
    return ServerName(host, port)


def is_valid_server_name(value: object) -> bool:
    try:
        parse_server_name(value)
    except MatrixError:
        return False
    return True


def _check_length(kind: str, value: str) -> None:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise _invalid(kind, value, f"longer than {MAX_ID_BYTES} bytes")


def _check_historical_localpart(kind: str, value: str, localpart: str) -> None:
    # Historical grammar: any non-surrogate code point except ':' and NUL.
    if "\x00" in localpart:
        raise _invalid(kind, value, "localpart contains NUL")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in localpart):
        raise _invalid(kind, value, "localpart contains a surrogate code point")


@dataclass(frozen=True, slots=True)
class UserId:
    """A user ID parsed once ("User Identifiers"): ``@localpart:domain``.

    ``domain`` is the server name of the homeserver that allocated the account (also available
    as ``server_name``). Build one with :meth:`parse` (or :func:`parse_user_id`); ``str()`` gives
    the user ID back.
    """

    localpart: str
    domain: str

    @classmethod
    def parse(cls, value: object, historical: bool = False) -> UserId:
        """Parse ``value`` (see :func:`parse_user_id`); ``M_INVALID_PARAM`` if it is not one."""
        return parse_user_id(value, historical)

    @property
    def server_name(self) -> str:
        """The server name part (the same as ``domain``)."""
        return self.domain

    def is_local_to(self, server_name: str) -> bool:
        """Whether the account belongs to the homeserver named ``server_name``."""
        return self.domain == server_name

    def __str__(self) -> str:
        return f"@{self.localpart}:{self.domain}"


#: The former name of :class:`UserId`.
UserID = UserId


def parse_user_id(value: object, historical: bool = False) -> UserId:
    """Parse ``@localpart:domain`` ("User Identifiers").

    By default the current grammar applies: a non-empty localpart of ``a-z 0-9 . _ = - / +``.
    With ``historical=True`` the "Historical User IDs" grammar is accepted too (any non-surrogate
    code point but ``:`` and NUL, even empty), as servers MUST for events over federation.
    """
    if not isinstance(value, str):
        raise _invalid("user ID", value, "must be a string")
    if not value.startswith("@"):
        raise _invalid("user ID", value, "must start with '@'")
    localpart, sep, domain = value[1:].partition(":")
    if not sep:
        raise _invalid("user ID", value, "must be '@localpart:domain'")
    _check_length("user ID", value)
    if historical:
        _check_historical_localpart("user ID", value, localpart)
    elif not _USER_LOCALPART.fullmatch(localpart):
        raise _invalid("user ID", value, "localpart must be non-empty and only a-z, 0-9, '._=-/+'")
    parse_server_name(domain)
    return UserId(localpart, domain)


def is_valid_user_id(value: object, historical: bool = False) -> TypeGuard[str]:
    """Whether ``value`` is a user ID (:func:`parse_user_id`'s grammar; ``historical=True`` for
    IDs received over federation, which servers MUST accept in the historical grammar)."""
    try:
        parse_user_id(value, historical)
    except MatrixError:
        return False
    return True


def server_name_of(identifier: object) -> str | None:
    """The server name of a ``@user:server`` ID (likewise ``!room:server``, ``#alias:server`` and
    v1–v2 ``$event:server``): everything after the first ``:``, which no localpart may contain.

    Nothing is validated: ``None`` for a non-string or a string without ``:``. Use it on IDs
    already validated (an event that passed its format checks, a stored user ID); for untrusted
    input, :func:`parse_user_id` first. Comparing the result with our own server name is how an ID
    is known to be local.
    """
    if not isinstance(identifier, str):
        return None
    _, sep, server_name = identifier.partition(":")
    return server_name if sep else None


@dataclass(frozen=True, slots=True)
class RoomID:
    opaque: str
    domain: str | None

    def __str__(self) -> str:
        return f"!{self.opaque}" if self.domain is None else f"!{self.opaque}:{self.domain}"


def parse_room_id(value: object, room_version: str | None = None) -> RoomID:
    """Parse a room ID ("Room IDs"): ``!opaque:domain``, or in room versions whose room ID is the
    create event's hash (v12) ``!`` + 43 URL-safe base64 characters with no domain. Without a
    room version either form is accepted."""
    if not isinstance(value, str):
        raise _invalid("room ID", value, "must be a string")
    if not value.startswith("!"):
        raise _invalid("room ID", value, "must start with '!'")
    _check_length("room ID", value)
    hash_form = (
        None if room_version is None else get_room_version(room_version).room_id_is_create_hash
    )
    body = value[1:]
    if hash_form or (hash_form is None and ":" not in body):
        if not _URLSAFE_HASH.fullmatch(body):
            raise _invalid("room ID", value, "must be '!' + a 43-character URL-safe base64 hash")
        return RoomID(body, None)
    opaque, sep, domain = body.partition(":")
    if not sep:
        raise _invalid("room ID", value, "must be '!opaque_id:domain' in this room version")
    _check_historical_localpart("room ID", value, opaque)
    parse_server_name(domain)
    return RoomID(opaque, domain)


@dataclass(frozen=True, slots=True)
class RoomAlias:
    localpart: str
    domain: str

    def __str__(self) -> str:
        return f"#{self.localpart}:{self.domain}"


def parse_room_alias(value: object) -> RoomAlias:
    """Parse ``#alias:domain`` ("Room Aliases"): any non-surrogate code point but ``:`` and NUL
    in the localpart, at most 255 bytes in all."""
    if not isinstance(value, str):
        raise _invalid("room alias", value, "must be a string")
    if not value.startswith("#"):
        raise _invalid("room alias", value, "must start with '#'")
    localpart, sep, domain = value[1:].partition(":")
    if not sep:
        raise _invalid("room alias", value, "must be '#alias:domain'")
    _check_length("room alias", value)
    _check_historical_localpart("room alias", value, localpart)
    parse_server_name(domain)
    return RoomAlias(localpart, domain)


def parse_event_id(value: object, room_version: str | None = None) -> str:
    """Validate an event ID ("Event IDs"): ``$`` + at most 255 bytes in all; in v1–v2
    ``$opaque:domain``, in v3 a 43-character standard base64 hash, in v4+ URL-safe base64."""
    if not isinstance(value, str):
        raise _invalid("event ID", value, "must be a string")
    if not value.startswith("$") or len(value) < 2:
        raise _invalid("event ID", value, "must be '$' followed by an opaque ID")
    _check_length("event ID", value)
    if "\x00" in value:
        raise _invalid("event ID", value, "contains NUL")
    if room_version is not None:
        fmt = get_room_version(room_version).event_id_format
        body = value[1:]
        if fmt is EventIdFormat.V1_OPAQUE:
            opaque, sep, domain = body.partition(":")
            if not sep:
                raise _invalid(
                    "event ID", value, "must be '$opaque_id:domain' in this room version"
                )
            parse_server_name(domain)
        elif fmt is EventIdFormat.V3_BASE64:
            if not _STD_HASH.fullmatch(body):
                raise _invalid("event ID", value, "must be '$' + 43 standard base64 characters")
        elif not _URLSAFE_HASH.fullmatch(body):
            raise _invalid("event ID", value, "must be '$' + 43 URL-safe base64 characters")
    return value


def is_valid_namespaced_identifier(value: object) -> bool:
    """The Common Namespaced Identifier Grammar: 1–255 of ``[a-z0-9._-]``, starting ``[a-z]``."""
    return isinstance(value, str) and bool(_NAMESPACED.fullmatch(value))
