"""The one server access check of the federation shell (S-S API "Server Access Control Lists
(ACLs)", plus the server-wide ``federation_domain_allow`` / ``federation_domain_deny`` lists).

Every federation path asks here: the inbound request authentication (the origin), the room-scoped
endpoints, inbound EDUs about a room, the sender choosing destinations and the client refusing
egress. The decisions themselves are the core's pure functions
(:func:`bastion.core.server_acl.domain_allowed` and :func:`~bastion.core.server_acl.server_acl_allows`);
this class only reads the inputs: the configuration and the room's current ``m.room.server_acl``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bastion.config import Config
from bastion.core.server_acl import domain_allowed, server_acl_allows
from bastion.core.state_keys import SERVER_ACL_KEY
from bastion.errors import forbidden

#: Reads a room's current state event: ``(room_id, type, state_key) -> event or None``.
StateReader = Callable[[str, str, str], Mapping[str, Any] | None]


class FederationACL:
    """The server-wide allow/deny list and each room's server ACL, checked in one place."""

    def __init__(self, config: Config, server_name: str, current_state_event: StateReader) -> None:
        self.config = config
        self.server_name = server_name
        self._state = current_state_event

    def server_allowed(self, server_name: str) -> bool:
        """The server-wide list (config ``federation_domain_allow`` / ``_deny``); it applies to
        requests in both directions."""
        return domain_allowed(
            server_name, self.config.federation_domain_allow, self.config.federation_domain_deny
        )

    def destination_allowed(self, destination: str) -> bool:
        """A server we may send to: not ourselves, and allowed by the server-wide list."""
        if not destination or destination == self.server_name:
            return False
        return self.server_allowed(destination)

    def room_allows(self, room_id: str, server_name: str) -> bool:
        """The server-wide list and the room's ``m.room.server_acl`` both allow ``server_name``."""
        if not self.server_allowed(server_name):
            return False
        acl = self._state(room_id, *SERVER_ACL_KEY)
        content = acl.get("content") if acl is not None else None
        return server_acl_allows(content if isinstance(content, Mapping) else None, server_name)

    def require_server(self, server_name: str) -> None:
        """403 ``M_FORBIDDEN`` unless the server-wide list allows ``server_name``."""
        if not self.server_allowed(server_name):
            raise forbidden("this server does not federate with yours")

    def require_room(self, room_id: str, server_name: str) -> None:
        """403 ``M_FORBIDDEN`` unless :meth:`room_allows` (every room-scoped federation endpoint
        calls this)."""
        self.require_server(server_name)
        if not self.room_allows(room_id, server_name):
            raise forbidden("server is denied by the room's server ACL")
