"""What the services need from other servers, as interfaces.

``services/`` never imports ``bastion.federation``: the federation shell implements these
protocols and the homeserver hands its parts to the services at wiring time (``None`` when no
federation listener is configured, so a service decides "is federation on" by whether it holds
one). This keeps the dependency one way: federation → services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.storage.interface import Txn


class EventOutbox(Protocol):
    """Queues this server's new events for the other servers in their rooms."""

    def enqueue_events_in(self, conn: Txn, events: Sequence[Any]) -> None:
        """Inside the write that persists ``events`` (``NewEvent`` objects)."""


class RemoteMembership(Protocol):
    """Memberships that need another server: joining, knocking on or leaving a room this server
    is not in, inviting a remote user, and invites or knocks of rooms we are not in."""

    def is_in_room(self, room_id: str) -> bool: ...

    def candidate_servers(self, room_id: str, user_id: str, via: list[str] | None) -> list[str]: ...

    async def remote_membership(
        self, user_id: str, room_id: str, membership: str, content: dict, servers: list[str]
    ) -> str: ...

    async def remote_invite(
        self, event: dict, event_id: str, room_id: str, version: str
    ) -> dict: ...

    def out_of_room_stripped_state(self, event_id: str) -> list[dict] | None: ...


class RoomEDUs(Protocol):
    """Ephemeral events of local users sent to the other servers in the room."""

    def local_typing(self, room_id: str, user_id: str, typing: bool) -> None: ...

    async def local_receipt(
        self, room_id: str, user_id: str, event_id: str, ts: int, thread_id: str | None
    ) -> None: ...

    def local_presence(self, user_id: str, rooms: set[str], content: dict) -> None: ...


class ToDeviceOutbox(Protocol):
    """To-device messages for remote users, queued in the write that accepts them."""

    def send_to_device_in(
        self,
        conn: Txn,
        sender: str,
        event_type: str,
        remote: dict[str, dict[str, dict]],
    ) -> None: ...


class RemoteDevices(Protocol):
    """Device lists across servers: local changes announced, remote keys queried and claimed."""

    def local_change_in(self, conn: Txn, user_id: str, device_id: str, stream_id: int) -> None: ...

    def signing_keys_changed_in(self, conn: Txn, user_id: str) -> None: ...

    async def query_remote(self, wanted: dict[str, list[str]], timeout: float) -> dict: ...

    async def claim_remote(self, wanted: dict[str, dict[str, str]], timeout: float) -> dict: ...


class RemoteHierarchy(Protocol):
    """Space hierarchies of rooms this server is not in (S-S API "Spaces")."""

    async def room_hierarchy(
        self, server: str, room_id: str, suggested_only: bool, timeout: float
    ) -> dict | None:
        """``GET /_matrix/federation/v1/hierarchy/{roomId}`` on ``server``: its answer, or None
        when it could not be had (unreachable, refused, an error, not JSON, too slow)."""


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A media file arriving from another server: what it says about itself (checked by the
    media service as an upload's would be) and its bytes, as they arrive."""

    content_type: str | None
    filename: str | None
    #: The length the sender announced, if any (a file announced too large is refused unread).
    content_length: int | None
    chunks: AsyncIterator[bytes]


class RemoteMediaSource(Protocol):
    """Other servers' media (S-S API "Content Repository"), fetched for our users."""

    def fetch(self, server_name: str, media_id: str) -> AbstractAsyncContextManager[RemoteFile]:
        """The file of ``mxc://server_name/media_id``, open for the body of the ``async with``.
        Raises a ``MatrixError``: 404 when the server has no such media, 502 when it cannot be
        reached or answers something unusable."""
        ...
