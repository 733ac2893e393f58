"""The federation parts of a homeserver, built together or not at all.

``hs.federation`` is a :class:`Federation` when a federation listener is configured and ``None``
otherwise: that one decision is the only "is federation on" test. The parts find each other
through this container (``fed.sender``, ``fed.keyring``…); the services see only the interfaces
of :mod:`bastion.services.remote`, handed to them by the homeserver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.api.http import Router
from bastion.config import Config
from bastion.federation.acl import FederationACL
from bastion.federation.client import FederationClient
from bastion.federation.device_lists import DeviceLists
from bastion.federation.edus import FederationEDUs
from bastion.federation.hierarchy import FederationHierarchy
from bastion.federation.keyring import Keyring
from bastion.federation.media import FederationMedia
from bastion.federation.membership import FederationMembership
from bastion.federation.pdu import FederationEventHandler
from bastion.federation.queries import FederationQueries
from bastion.federation.sender import FederationSender
from bastion.services.rooms import RoomService
from bastion.storage.interface import Store

if TYPE_CHECKING:
    from bastion.guard.service import GuardService
    from bastion.server import HomeServer

#: An inbound EDU handler: ``async fn(origin, content)``.
EduHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class InboundContext:
    """What the inbound PDU pipeline reads: the store, the configuration, the room service (its
    engine appends the events), the keyring and client (fetching), the one server access check
    and the EDU handlers."""

    store: Store
    config: Config
    server_name: str
    now_ms: Callable[[], int]
    rooms: RoomService
    keyring: Keyring
    federation_client: FederationClient
    acl: FederationACL
    federation_edu_handlers: dict[str, EduHandler] = field(default_factory=dict)
    #: The guard (issue 9), asked about each federated event after checks 5-6 (None: off).
    guard: GuardService | None = None


class Federation:
    """Every federation part of one homeserver (S-S API): the outbound client and keyring, the
    one access check, the inbound pipeline and EDU handlers, the sender, memberships across
    servers, device lists and queries, and the router of the federation listener."""

    def __init__(self, hs: HomeServer) -> None:
        self.router = Router()
        self.edu_handlers: dict[str, EduHandler] = {}
        self.acl = FederationACL(hs.config, hs.server_name, hs.rooms.current_state_event)
        self.client = FederationClient(hs, self.acl)
        self.keyring = Keyring(hs, self.client)
        self.inbound = InboundContext(
            store=hs.store, config=hs.config, server_name=hs.server_name, now_ms=hs.now_ms,
            rooms=hs.rooms, keyring=self.keyring, federation_client=self.client, acl=self.acl,
            federation_edu_handlers=self.edu_handlers, guard=hs.guard,
        )  # fmt: skip
        self.events = FederationEventHandler(self.inbound)
        self.sender = FederationSender(hs, self.client, self.acl)
        self.membership = FederationMembership(hs, self)
        self.device_lists: DeviceLists = DeviceLists(hs, self)
        self.edus = FederationEDUs(hs, self)  # registers its EDU handlers
        self.queries = FederationQueries(hs, self.client)
        #: Space hierarchies asked of other servers (S-S API "Spaces").
        self.hierarchy = FederationHierarchy(self.client)
        #: Other servers' media, fetched for our users (S-S API "Content Repository").
        self.media = FederationMedia(hs, self.client)
