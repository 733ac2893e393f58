"""Server access control: room server ACLs and the server-wide origin allow/deny list.

C-S API module "Server Access Control Lists (ACLs) for rooms" (``m.room.server_acl``) and S-S
API "Server Access Control Lists (ACLs)": a server name is checked, port ignored, against the
room's ``m.room.server_acl`` content in this order — no ACL allows; an IP literal is denied when
``allow_ip_literals`` is false; a match in ``deny`` denies; a match in ``allow`` allows;
otherwise deny (a missing ``allow`` allows nobody). Matching is case-insensitive globbing
(appendices "Glob-style matching": ``*`` any run of characters, ``?`` exactly one).

Pure functions; every other federation entry point uses :func:`server_acl_allows`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from bastion.core.glob import glob_match

__all__ = ["domain_allowed", "glob_matches", "host_of", "is_ip_literal", "server_acl_allows"]


def glob_matches(pattern: str, value: str) -> bool:
    """Appendices "Glob-style matching", case-insensitive, over the whole of ``value``; linear
    (:mod:`bastion.core.glob`): an ACL's patterns are chosen by a room's moderators."""
    return glob_match(pattern.lower(), value.lower())


def host_of(server_name: str) -> str:
    """The server name without its port (``[::1]:8448`` → ``[::1]``, ``a.b:80`` → ``a.b``)."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    host, sep, port = server_name.rpartition(":")
    if sep and port.isdigit() and host:
        return host
    return server_name


def is_ip_literal(host: str) -> bool:
    """An IPv4 dotted quad or a bracketed IPv6 address (appendices "Server Name")."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _patterns(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [p for p in value if isinstance(p, str)]


def server_acl_allows(acl_content: Mapping[str, Any] | None, server_name: str) -> bool:
    """May ``server_name`` take part in a room whose ``m.room.server_acl`` content is
    ``acl_content`` (``None``: the room has no ACL)? The port is ignored."""
    if acl_content is None:
        return True
    if not isinstance(acl_content, Mapping):
        return True
    host = host_of(server_name)
    allow_ip = acl_content.get("allow_ip_literals", True)
    if not isinstance(allow_ip, bool):
        allow_ip = True
    if not allow_ip and is_ip_literal(host):
        return False
    if any(glob_matches(p, host) for p in _patterns(acl_content.get("deny"))):
        return False
    return any(glob_matches(p, host) for p in _patterns(acl_content.get("allow")))


def domain_allowed(server_name: str, allow: Iterable[str], deny: Iterable[str]) -> bool:
    """The server-wide origin list (config ``federation_domain_allow`` /
    ``federation_domain_deny``): deny wins; an empty allow list allows every server. The port is
    ignored; patterns are case-insensitive globs."""
    host = host_of(server_name)
    if any(glob_matches(p, host) for p in deny):
        return False
    allow = list(allow)
    return not allow or any(glob_matches(p, host) for p in allow)
