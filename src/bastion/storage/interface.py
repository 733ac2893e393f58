"""The storage interface: every method the rest of the homeserver calls on its store, as typing
Protocols, one per area, composed into :class:`Store`.

Services, federation and handlers are typed against :class:`Store`, never against a backend;
:class:`~bastion.storage.sqlite.store.SqliteStore` is the one backend today and is checked to
satisfy it (``bastion.storage.sqlite.store``). Writes go through :meth:`Store.transaction`: the
function it runs gets a :data:`Txn`, an open transaction that the caller only hands back to the
store's ``…_in(txn, …)`` methods (and ``…_sync(txn, …)``, the older name for the same thing).
Rows handed out are the plain types below, or a :class:`Row` (read-only, columns by name).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar

from bastion.core.relations import Relation
from bastion.core.user_directory import DirectoryEntry

T = TypeVar("T")

#: An open write transaction, given to the function run by :meth:`Store.transaction`. Opaque
#: outside the backend: it is only passed on to the store's ``…_in`` methods (the SQLite
#: backend's is its writer connection). Nothing outside :mod:`bastion.storage` may use it for
#: anything else (``tests/test_layering.py`` checks there is no SQL and no ``sqlite3`` there).
Txn: TypeAlias = Any

#: Room state: (event type, state key) → event ID.
StateMap = dict[tuple[str, str], str]


class Row(Protocol):
    """A stored record, read by column name only (``row["user_id"]``, ``row.keys()``,
    ``dict(row)``): the read-only part of ``Mapping[str, Any]`` that a ``dict`` and the SQLite
    backend's row both have. Not by position and not by iteration (a ``dict`` iterates its
    keys, an SQLite row its values), so a backend may hand out either."""

    def keys(self) -> Iterable[str]: ...
    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Requester:
    """Who made an authenticated request."""

    user_id: str
    device_id: str
    is_admin: bool = False
    is_guest: bool = False


class TokenExpired(Exception):
    """An access token that exists but whose lifetime is over (C-S API "Refreshing access
    tokens"): 401 ``M_UNKNOWN_TOKEN`` with ``soft_logout``."""


def registration_token_valid(row: Row | None, now_ms: int) -> bool:
    """A registration token is valid if it exists, is not revoked, has not expired and has uses
    left (C-S API "Token-authenticated registration")."""
    if row is None or row["revoked"]:
        return False
    if row["expiry_ts"] is not None and row["expiry_ts"] <= now_ms:
        return False
    return row["uses_allowed"] is None or row["completed"] < row["uses_allowed"]


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event as stored, with the metadata the client format needs."""

    event: dict  # the PDU (redacted if it was redacted)
    event_id: str
    room_id: str
    stream_pos: int
    depth: int
    sg_before: int | None
    sg_after: int | None
    replaces_state: str | None
    redacted_because: str | None
    txn_user: str | None
    txn_device: str | None
    txn_id: str | None

    @property
    def type(self) -> str:
        return self.event["type"]

    @property
    def state_key(self) -> str | None:
        return self.event.get("state_key")

    @property
    def sender(self) -> str:
        return self.event["sender"]


@dataclass
class NewEvent:
    """One event to persist, built and authorised by the room service."""

    event: dict
    event_id: str
    room_id: str
    depth: int
    #: The full state after this event when it is a state event (for snapshots), else None.
    state_after: StateMap | None = None
    replaces_state: str | None = None
    txn: tuple[str, str, str, str] | None = None  # (user_id, device_id, scope, txn_id)
    #: The event this redaction applies to, and its redacted PDU (C-S "Redactions").
    redaction_target: tuple[str, dict] | None = None
    wake: tuple[str, ...] = ()
    # Filled in by the write: the stream position and state groups.
    stream_pos: int = 0
    sg_before: int | None = None
    sg_after: int | None = None


@dataclass
class RoomHeadRow:
    room_version: str
    state: StateMap
    group: int | None
    chain_len: int
    extremities: list[str] = field(default_factory=list)
    #: event ID → depth of each forward extremity.
    ext_depths: dict[str, int] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """The deepest forward extremity (never a rejected, soft-failed or outlier event)."""
        return max(self.ext_depths.values(), default=0)


@dataclass(eq=False, slots=True)
class RoomMembers:
    """The current members of one room, as the store keeps them in memory (shared: never
    change them)."""

    gen: int  # the membership generation this is valid at
    members: dict[str, str]  # user_id → membership
    _joined: frozenset[str] | None = None
    _sorted: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    @property
    def joined(self) -> frozenset[str]:
        if self._joined is None:
            self._joined = frozenset(u for u, m in self.members.items() if m == "join")
        return self._joined

    def sorted_joined_invited(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(joined, invited) user IDs, each sorted."""
        if self._sorted is None:
            self._sorted = (
                tuple(sorted(self.joined)),
                tuple(sorted(u for u, m in self.members.items() if m == "invite")),
            )
        return self._sorted


@dataclass(frozen=True, slots=True)
class EventMeta:
    room_id: str
    depth: int
    rejected: bool
    soft_failed: bool
    outlier: bool
    sg_before: int | None
    sg_after: int | None
    stream_pos: int


@dataclass
class RemoteEvent:
    """One received event to persist (built by the federation event handler)."""

    event: dict
    event_id: str
    room_id: str
    rejected: bool = False
    soft_failed: bool = False
    outlier: bool = False
    backfilled: bool = False
    #: The state before the event (None for outliers) and, when known, a group holding it.
    state_before: StateMap | None = None
    sg_before: int | None = None
    #: The room's current state before and after this event (None: current state unchanged).
    old_current: StateMap | None = None
    new_current: StateMap | None = None
    #: The room's forward extremities after this event (None: unchanged).
    extremities: list[str] | None = None
    #: A backfilled event's stream position, reserved for its batch (None: the next one down).
    backfill_pos: int | None = None
    #: Events (id → PDU) the new current state names, for the membership rows.
    state_events: dict = field(default_factory=dict)
    #: An accepted redaction that applies to a stored event: (target ID, its redacted form).
    redaction_target: tuple[str, dict] | None = None
    #: An accepted redaction whose target is not stored yet: the target's ID, kept until it
    #: arrives (rooms v3+ "Handling redactions").
    pending_redaction: str | None = None
    #: This event arrives after a redaction that applies to it: (the redaction's ID, this
    #: event's redacted form), stored instead of the event's content.
    redacted_on_arrival: tuple[str, dict] | None = None
    # Filled in by the write.
    stream_pos: int = 0
    sg_after: int | None = None
    head_group: int | None = None
    head_chain: int = 0


@dataclass(frozen=True, slots=True)
class LedgerEntryRow:
    """One leaf of the ledger: its 0-based index, the fields copied out of its record for the
    indexed reads, and the entry (the record's canonical JSON, what the leaf hash covers)."""

    idx: int
    kind: str  # "event" | "action"
    event_id: str | None
    subject: str | None
    action: str | None
    ts: int
    entry: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A checkpoint the ledger signed: tree size, root hash, the signed note, when (ms)."""

    size: int
    root: bytes
    note: bytes
    ts: int


@dataclass(frozen=True, slots=True)
class AnchorRow:
    id: int
    anchor: str  # "file", "ethereum", ...
    size: int
    root: bytes
    receipt: dict
    ts: int


@dataclass(frozen=True, slots=True)
class WitnessLogRow:
    """As a witness: the latest checkpoint this server cosigned for a log."""

    origin: str
    size: int
    root: bytes
    note: bytes
    ts: int


class AccountsStore(Protocol):
    """Users, devices, access tokens, registration tokens, profiles, the admin audit log."""

    def get_user(self, user_id: str) -> Row | None: ...
    def user_exists(self, user_id: str) -> bool: ...
    def create_user_in(
        self,
        conn: Txn,
        user_id: str,
        password_hash: str | None,
        now_ms: int,
        is_admin: bool = False,
        displayname: str | None = None,
    ) -> bool: ...
    def set_password_hash_in(self, conn: Txn, user_id: str, password_hash: str) -> None: ...
    def set_user_flag_in(self, conn: Txn, user_id: str, flag: str, value: bool) -> None: ...
    def deactivate_user_in(self, conn: Txn, user_id: str) -> None: ...
    def get_requester(self, token: str, now_ms: int) -> Requester | None: ...
    def authenticate_token(
        self, token: str, now_ms: int
    ) -> tuple[Requester, bool, bool] | None: ...
    def check_access_token(
        self, token: str, now_ms: int
    ) -> tuple[Requester, bool, bool, bool] | None: ...
    def account_flags(self, user_id: str) -> tuple[bool, bool]: ...
    def add_device_sync(
        self,
        conn: Txn,
        user_id: str,
        device_id: str,
        display_name: str | None,
        token: str,
        now_ms: int,
        ip: str | None = None,
        expires_ts: int | None = None,
    ) -> bool: ...
    def add_refresh_token_in(
        self, conn: Txn, token: str, user_id: str, device_id: str, access_token: str, now_ms: int
    ) -> None: ...
    def rotate_refresh_token_in(
        self,
        conn: Txn,
        token: str,
        access_token: str,
        refresh_token: str,
        expires_ts: int,
        now_ms: int,
    ) -> tuple[str, str] | None: ...
    def retire_refreshed_in(self, conn: Txn, access_token: str) -> int: ...
    def add_login_token_in(
        self, conn: Txn, token: str, user_id: str, expires_ts: int, now_ms: int, sweep: int = 100
    ) -> None: ...
    def take_login_token_in(self, conn: Txn, token: str, now_ms: int) -> str | None: ...
    def login_token_count(self, user_id: str) -> int: ...
    def refresh_token_owner(self, token: str) -> str | None: ...
    def refresh_token_count(self, user_id: str) -> int: ...
    def get_devices(self, user_id: str) -> Sequence[Row]: ...
    def get_device(self, user_id: str, device_id: str) -> Row | None: ...
    def device_exists_in(self, conn: Txn, user_id: str, device_id: str) -> bool: ...
    def device_ids_in(self, conn: Txn, user_id: str) -> list[str]: ...
    def set_device_display_name_in(
        self, conn: Txn, user_id: str, device_id: str, display_name: str
    ) -> bool: ...
    def revoke_device_tokens_in(self, conn: Txn, user_id: str, device_id: str) -> int: ...
    def revoke_user_tokens_in(self, conn: Txn, user_id: str) -> None: ...
    def delete_device_in(self, conn: Txn, user_id: str, device_id: str) -> bool: ...
    def get_registration_token(self, token: str) -> Row | None: ...
    def list_registration_tokens(self) -> Sequence[Row]: ...
    def create_registration_token_in(
        self, conn: Txn, token: str, uses_allowed: int | None, expiry_ts: int | None, now_ms: int
    ) -> bool: ...
    def revoke_registration_token_in(self, conn: Txn, token: str) -> bool: ...
    def use_registration_token_in(self, conn: Txn, token: str, now_ms: int) -> bool: ...
    def get_profile(self, user_id: str) -> dict: ...
    def profile_in(self, conn: Txn, user_id: str) -> dict: ...
    def set_profile_field_in(self, conn: Txn, user_id: str, key: str, value) -> None: ...
    def delete_profile_field_in(self, conn: Txn, user_id: str, key: str) -> None: ...


class RoomsStore(Protocol):
    """Rooms, events, state groups, memberships, aliases, the directory."""

    def get_room_version(self, room_id: str) -> str | None: ...
    def room_exists(self, room_id: str) -> bool: ...
    def load_room_head(self, room_id: str) -> RoomHeadRow | None: ...
    async def set_room_public(self, room_id: str, public: bool) -> None: ...
    def set_room_public_sync(self, conn: Txn, room_id: str, public: bool) -> None: ...
    def is_room_public(self, room_id: str) -> bool: ...
    def get_public_room_ids(self) -> list[str]: ...
    def get_event(self, event_id: str) -> dict | None: ...
    def get_event_row(self, event_id: str, *, served: bool = False) -> EventRow | None: ...
    def get_event_rows(self, event_ids: list[str]) -> dict[str, EventRow]: ...
    def get_event_rows_cached(self, event_ids: Iterable[str]) -> dict[str, EventRow]: ...
    def rooms_with_events_between(
        self, room_ids: Iterable[str], after: int, upto: int
    ) -> set[str]: ...
    def get_room_events(
        self,
        room_id: str,
        *,
        after: int | None = None,
        upto: int | None = None,
        limit: int = 10,
        backwards: bool = True,
    ) -> list[EventRow]: ...
    def get_room_events_by_ts(
        self,
        room_id: str,
        ts: int,
        *,
        forwards: bool,
        after: tuple[int, int] | None = None,
        limit: int = 50,
    ) -> list[EventRow]: ...
    def room_group_at(self, room_id: str, pos: int | None = None) -> int | None: ...
    def get_room_events_cached(
        self, room_id: str, *, after: int, upto: int, limit: int
    ) -> tuple[EventRow, ...]: ...
    def room_group_at_cached(self, room_id: str, pos: int) -> int | None: ...
    def get_txn_event(
        self, user_id: str, device_id: str, scope: str, txn_id: str
    ) -> str | None: ...
    def get_state_group(self, group: int | None) -> StateMap: ...
    def get_current_state_ids(self, room_id: str) -> StateMap: ...
    def get_joined_users(self, room_id: str) -> set[str]: ...
    def get_room_members(self, room_id: str) -> dict[str, str]: ...
    def room_members_cached(self, room_id: str) -> RoomMembers: ...
    def get_rooms_for_user(self, user_id: str, membership: str = "join") -> set[str]: ...
    def get_users_sharing_room_with(self, user_id: str) -> set[str]: ...
    def get_local_memberships(self, user_id: str) -> dict[str, str]: ...
    def get_membership(self, room_id: str, user_id: str) -> Row | None: ...
    def get_memberships_at(self, user_id: str, pos: int) -> dict[str, tuple[str, str, int]]: ...
    def get_user_membership_history(self, user_id: str, room_id: str) -> list[tuple[str, int]]: ...
    def get_membership_changes_in_rooms(
        self, room_ids, since_pos: int, upto_pos: int
    ) -> list[tuple[str, str, str, int]]: ...
    def is_forgotten(self, room_id: str, user_id: str) -> bool: ...
    async def forget_room(self, room_id: str, user_id: str) -> None: ...
    def get_alias(self, alias: str) -> Row | None: ...
    def get_aliases_for_room(self, room_id: str) -> list[str]: ...
    def add_alias_sync(
        self, conn: Txn, alias: str, room_id: str, creator: str, now_ms: int
    ) -> bool: ...
    async def add_alias(self, alias: str, room_id: str, creator: str, now_ms: int) -> bool: ...
    async def delete_alias(self, alias: str) -> bool: ...
    def delete_alias_in(self, conn: Txn, alias: str) -> bool: ...
    def create_room_sync(
        self, conn: Txn, room_id: str, room_version: str, creator: str, now_ms: int, public: bool
    ) -> None: ...
    def persist_events_sync(
        self, conn: Txn, events: list[NewEvent], group: int | None, chain_len: int
    ) -> tuple[int | None, int]: ...
    def last_room_pos(self, room_id: str, upto: int | None = None) -> int | None: ...
    def get_current_state_event(
        self,
        room_id: str,
        type: str,
        state_key: str,  # noqa: A002
    ) -> dict | None: ...


class E2EEStore(Protocol):
    """Device and one-time keys, cross-signing, to-device messages, key backups."""

    def get_device_keys(self, user_id: str, device_ids: Iterable[str] | None = None) -> dict: ...
    def get_device_keys_one(self, user_id: str, device_id: str) -> dict | None: ...
    def get_device_keys_in(self, conn: Txn, user_id: str, device_id: str) -> dict | None: ...
    def set_device_keys_in(
        self, conn: Txn, user_id: str, device_id: str, keys: dict, now_ms: int
    ) -> None: ...
    def get_one_time_key_in(
        self, conn: Txn, user_id: str, device_id: str, algorithm: str, key_id: str
    ) -> dict | str | None: ...
    def add_one_time_key_in(
        self, conn: Txn, user_id: str, device_id: str, algorithm: str, key_id: str, key: object
    ) -> None: ...
    def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]: ...
    def count_one_time_keys_in(self, conn: Txn, user_id: str, device_id: str) -> dict: ...
    def claim_one_time_key_in(
        self, conn: Txn, user_id: str, device_id: str, algorithm: str
    ) -> tuple[str, object, bool] | None: ...
    def get_fallback_key_in(
        self, conn: Txn, user_id: str, device_id: str, algorithm: str
    ) -> tuple[str, object] | None: ...
    def set_fallback_key_in(
        self, conn: Txn, user_id: str, device_id: str, algorithm: str, key_id: str, key: object
    ) -> None: ...
    def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]: ...
    def get_cross_signing_keys(self, user_id: str) -> dict[str, dict]: ...
    def set_cross_signing_key_in(
        self, conn: Txn, user_id: str, key_type: str, public_key: str, key: dict, stream_pos: int
    ) -> str | None: ...
    def get_signatures(self, target_user_id: str, target_key_ids: Iterable[str]) -> dict: ...
    def add_signature_in(
        self,
        conn: Txn,
        target_user_id: str,
        target_key_id: str,
        signer_user_id: str,
        signer_key_id: str,
        signature: str,
    ) -> None: ...
    def delete_signatures_by_signer_in(
        self, conn: Txn, signer_user_id: str, signer_key_id: str
    ) -> None: ...
    def delete_signatures_on_in(
        self, conn: Txn, target_user_id: str, target_key_id: str
    ) -> None: ...
    def add_device_list_change_in(self, conn: Txn, user_id: str) -> int: ...
    def device_list_changes(self, since_pos: int, upto_pos: int) -> set[str]: ...
    def to_device_txn_seen_in(
        self, conn: Txn, user_id: str, device_id: str, txn_id: str, now_ms: int
    ) -> bool: ...
    def add_to_device_in(
        self, conn: Txn, user_id: str, device_id: str, sender: str, type_: str, content: dict
    ) -> int: ...
    def get_to_device(
        self, user_id: str, device_id: str, after_pos: int, upto_pos: int, limit: int
    ) -> list[tuple[int, dict]]: ...
    def has_to_device_upto(self, user_id: str, device_id: str, upto_pos: int) -> bool: ...
    def delete_to_device_upto_in(
        self, conn: Txn, user_id: str, device_id: str, upto_pos: int, token_pos: int
    ) -> int: ...
    def get_inbox_cursor(self, user_id: str, device_id: str, token_pos: int) -> int | None: ...
    def set_inbox_cursor_in(
        self, conn: Txn, user_id: str, device_id: str, token_pos: int, last_pos: int
    ) -> int: ...
    def delete_device_e2e_in(self, conn: Txn, user_id: str, device_id: str) -> bool: ...
    def get_backup_version(self, user_id: str, version: int | None = None): ...
    def current_backup_version_in(self, conn: Txn, user_id: str) -> Row | None: ...
    def backup_version_in(self, conn: Txn, user_id: str, version: int) -> Row | None: ...
    def create_backup_version_in(
        self, conn: Txn, user_id: str, algorithm: str, auth_data: dict
    ) -> int: ...
    def update_backup_auth_data_in(
        self, conn: Txn, user_id: str, version: int, auth_data: dict
    ) -> None: ...
    def delete_backup_version_in(self, conn: Txn, user_id: str, version: int) -> None: ...
    def bump_backup_etag_in(self, conn: Txn, user_id: str, version: int) -> None: ...
    def count_backup_keys(self, user_id: str, version: int) -> int: ...
    def count_backup_keys_in(self, conn: Txn, user_id: str, version: int) -> int: ...
    def get_backup_key_in(
        self, conn: Txn, user_id: str, version: int, room_id: str, session_id: str
    ) -> Row | None: ...
    def put_backup_key_in(
        self, conn: Txn, user_id: str, version: int, room_id: str, session_id: str, key: dict
    ) -> None: ...
    def get_backup_keys(
        self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None
    ) -> dict: ...
    def delete_backup_keys_in(
        self,
        conn: Txn,
        user_id: str,
        version: int,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> int: ...


class MediaStore(Protocol):
    """Local media records, and the cache of remote media."""

    def get_local_media(self, media_id: str) -> Row | None: ...
    def count_pending_uploads_in(self, conn: Txn, user_id: str, now_ms: int) -> int: ...
    def insert_local_media_in(
        self,
        conn: Txn,
        media_id: str,
        user_id: str,
        now_ms: int,
        *,
        unused_expires_at: int | None = None,
        content_type: str | None = None,
        upload_name: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
        uploaded: bool = True,
        file_key: bytes | None = None,
    ) -> None: ...
    def complete_pending_upload_in(
        self,
        conn: Txn,
        media_id: str,
        now_ms: int,
        content_type: str,
        upload_name: str | None,
        size: int,
        sha256: str,
        file_key: bytes | None = None,
    ) -> bool: ...
    def delete_local_media_in(self, conn: Txn, media_ids: Sequence[str]) -> int: ...
    # The remote media cache (migration 0017).
    def get_remote_media(self, server_name: str, media_id: str) -> Row | None: ...
    def insert_remote_media_in(
        self,
        conn: Txn,
        server_name: str,
        media_id: str,
        now_ms: int,
        *,
        content_type: str,
        upload_name: str | None,
        size: int,
        sha256: str,
        file_path: str,
        file_key: bytes | None,
    ) -> None: ...
    def touch_remote_media_in(
        self, conn: Txn, server_name: str, media_id: str, now_ms: int
    ) -> None: ...
    def remote_media_accessed_before(self, before_ms: int, limit: int) -> Sequence[Row]: ...
    def delete_remote_media_in(self, conn: Txn, keys: Sequence[tuple[str, str]]) -> int: ...
    # Quarantined remote media (migration 0020).
    def remote_media_quarantine(self, server_name: str, media_id: str) -> Row | None: ...
    def remote_media_quarantined_in(self, conn: Txn, server_name: str, media_id: str) -> bool: ...
    def quarantine_remote_media_in(
        self, conn: Txn, server_name: str, media_id: str, decision_id: int | None, reason: str,
        now_ms: int,
    ) -> tuple[bool, str | None]: ...  # fmt: skip
    def unquarantine_remote_media_in(self, conn: Txn, server_name: str, media_id: str) -> bool: ...


class AccountDataStore(Protocol):
    """Account data, push rules, filters, receipts, presence, reports."""

    async def add_filter(self, user_id: str, filter_json: str) -> str: ...
    def get_filter(self, user_id: str, filter_id: str) -> str | None: ...
    def set_account_data_in(
        self, conn: Txn, user_id: str, room_id: str, data_type: str, content: str
    ) -> int: ...
    async def set_account_data(
        self, user_id: str, room_id: str, data_type: str, content: str
    ) -> int: ...
    def get_account_data(self, user_id: str, room_id: str, data_type: str) -> str | None: ...
    def get_account_data_in(
        self, conn: Txn, user_id: str, room_id: str, data_type: str
    ) -> str | None: ...
    def account_data_changes(
        self, user_id: str, room_id: str, since: int | None, upto: int
    ) -> Sequence[Row]: ...
    def set_receipt_in(
        self,
        conn: Txn,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: str,
        event_id: str,
        ts: int,
    ) -> int: ...
    def receipts_for_room(self, room_id: str, since: int | None, upto: int) -> Sequence[Row]: ...
    def receipts_for_events(
        self, room_id: str, event_ids: Iterable[str], user_id: str, upto: int
    ) -> Sequence[Row]: ...
    def get_push_rules_doc(self, user_id: str) -> str | None: ...
    def get_push_rules_doc_in(self, conn: Txn, user_id: str) -> str | None: ...
    def put_push_rules_doc_in(self, conn: Txn, user_id: str, doc: str) -> int: ...
    def push_rules_changed(self, user_id: str, since: int, upto: int) -> bool: ...
    def load_presence(self) -> Sequence[Row]: ...
    def set_presence_in(
        self,
        conn: Txn,
        user_id: str,
        state: str,
        status_msg: str | None,
        last_active_ts: int,
        wake: Iterable[str],
    ) -> int: ...
    def presence_changes(
        self, user_ids: Iterable[str], since: int | None, upto: int
    ) -> Sequence[Row]: ...
    def account_data_rooms_changed(self, user_id: str, since: int, upto: int) -> set[str]: ...
    def receipt_rooms_changed(self, room_ids: Iterable[str], since: int, upto: int) -> set[str]: ...
    def add_content_report_in(
        self, conn: Txn, reporter: str, kind: str, room_id: str | None,
        event_id: str | None, target_user_id: str | None, reason: str | None,
        target_exists: bool, now_ms: int,
    ) -> int: ...  # fmt: skip
    async def add_content_report(
        self,
        reporter: str,
        kind: str,
        room_id: str | None,
        event_id: str | None,
        target_user_id: str | None,
        reason: str | None,
        target_exists: bool,
        now_ms: int,
    ) -> int: ...


class FederationKeysStore(Protocol):
    """Server signing keys (remote keys fetched, this server's old keys)."""

    def get_server_keys(self, server_name: str) -> Sequence[Row]: ...
    def store_server_keys_in(
        self,
        conn: Txn,
        server_name: str,
        keys: list[tuple[str, str, int, bool]],
        fetched_ts: int,
        from_server: str,
    ) -> None: ...
    def store_server_key_response_in(
        self, conn: Txn, server_name: str, response: dict, fetched_ts: int
    ) -> None: ...
    def get_server_key_response(self, server_name: str) -> tuple[dict, int] | None: ...
    def get_local_old_signing_keys(self) -> list[tuple[str, str, int]]: ...
    def add_local_old_signing_key_in(
        self, conn: Txn, key_id: str, verify_key: str, expired_ts: int
    ) -> None: ...


class DeviceListsStore(Protocol):
    """Device-list changes, local outbound and remote device lists."""

    def add_outbound_device_change_in(
        self, conn: Txn, stream_id: int, user_id: str, device_id: str
    ) -> None: ...
    def outbound_device_changes_after(self, after: int, limit: int = 1000) -> list[tuple]: ...
    def last_outbound_device_change(self, user_id: str | None = None) -> int: ...
    def last_outbound_device_change_in(self, conn: Txn) -> int: ...
    def get_remote_device_list(self, user_id: str) -> Row | None: ...
    def remote_device_list_in(self, conn: Txn, user_id: str) -> tuple | None: ...
    def remote_stream_ids_seen_in(
        self, conn: Txn, user_id: str, stream_ids: list[int]
    ) -> set[int]: ...
    def mark_remote_stream_id_in(self, conn: Txn, user_id: str, stream_id: int) -> None: ...
    def replace_remote_device_list_in(
        self,
        conn: Txn,
        user_id: str,
        stream_id: int,
        synced_pos: int,
        devices: list[tuple[str, str | None, dict | None]],
        cross_signing: dict[str, dict],
    ) -> None: ...
    def delete_remote_device_list_in(self, conn: Txn, user_id: str) -> None: ...
    def set_remote_device_in(
        self, conn: Txn, user_id: str, device_id: str, display_name: str | None, keys: dict | None
    ) -> None: ...
    def delete_remote_device_in(self, conn: Txn, user_id: str, device_id: str) -> None: ...
    def count_remote_devices_in(self, conn: Txn, user_id: str) -> int: ...
    def remote_device_exists_in(self, conn: Txn, user_id: str, device_id: str) -> bool: ...
    def get_remote_devices(self, user_id: str) -> dict[str, tuple[dict | None, str | None]]: ...
    def set_remote_cross_signing_key_in(
        self, conn: Txn, user_id: str, key_type: str, key: dict
    ) -> None: ...
    def get_remote_cross_signing_keys(self, user_id: str) -> dict[str, dict]: ...
    def last_join_pos_in_rooms_of(self, user_id: str, local_server: str) -> int: ...
    def federation_to_device_seen_in(
        self, conn: Txn, origin: str, message_id: str, now_ms: int, keep_ms: int
    ) -> bool: ...


class FederationQueueStore(Protocol):
    """The outbound federation queue and per-destination back-off."""

    def enqueue_pdu_in(
        self, conn: Txn, destinations: list[str], event_id: str, pdu: dict
    ) -> None: ...
    def enqueue_edu_in(
        self, conn: Txn, destination: str, edu_type: str, content: dict, key: str | None
    ) -> None: ...
    def next_outbound_batch(
        self, destination: str
    ) -> tuple[list[tuple[int, dict]], list[tuple[int, dict]]]: ...
    def delete_outbound_in(self, conn: Txn, pdu_ids: list[int], edu_ids: list[int]) -> None: ...
    def queued_destinations(self) -> list[str]: ...
    def get_destination_retry(self, destination: str) -> tuple[int, int, int]: ...
    def set_destination_retry_in(
        self, conn: Txn, destination: str, failures: int, interval_ms: int, retry_at_ms: int
    ) -> None: ...
    def joined_servers_in(self, conn: Txn, room_id: str) -> set[str]: ...
    def joined_servers(self, room_id: str) -> set[str]: ...
    def backward_extremities(self, room_id: str, limit: int = 20) -> list[str]: ...
    def store_out_of_room_membership_in(
        self,
        conn: Txn,
        event: dict,
        event_id: str,
        room_id: str,
        room_version: str,
        stripped_state: list[dict],
    ) -> int: ...
    def get_out_of_room_membership(self, event_id: str) -> Row | None: ...
    def get_latest_out_of_room_membership(self, room_id: str, user_id: str) -> Row | None: ...


class FederationInboundStore(Protocol):
    """Received events, transactions, auth chains, out-of-room memberships."""

    def get_federation_txn(self, origin: str, txn_id: str) -> dict | None: ...
    def store_federation_txn_in(
        self, conn: Txn, origin: str, txn_id: str, response: dict, now_ms: int
    ) -> None: ...
    def get_event_meta(self, event_ids: Iterable[str]) -> dict[str, EventMeta]: ...
    def get_pdus(
        self, event_ids: Iterable[str], *, with_rejected: bool = False
    ) -> dict[str, dict]: ...
    def get_auth_chain_ids(self, event_ids: Iterable[str], limit: int = 200000) -> set[str]: ...
    def get_prev_ids(self, event_ids: Iterable[str]) -> dict[str, list[str]]: ...
    def persist_outliers_sync(
        self, conn: Txn, events: list[tuple[str, str, dict, bool]]
    ) -> None: ...
    def reserve_backfill_positions(self, n: int) -> int: ...
    def persist_remote_event_sync(self, conn: Txn, p: RemoteEvent) -> None: ...
    def pending_redactions_of(self, target_id: str) -> list[str]: ...
    def persist_joined_room_sync(
        self,
        conn: Txn,
        room_id: str,
        room_version: str,
        creator: str,
        now_ms: int,
        outliers: list[tuple[str, str, dict, bool]],
        state: StateMap,
        join: RemoteEvent,
    ) -> None: ...


class LedgerStore(Protocol):
    """The ledger (issue 8): leaves written in the transaction of what they record, tiles, the
    integrator's tree state, checkpoints (stored durably), cosignatures, witnesses, anchors,
    and, as a witness for other logs, their latest checkpoints."""

    def ledger_append_in(self, conn: Txn, record: Mapping[str, Any]) -> int: ...
    def ledger_size(self) -> int: ...
    def ledger_entries(self, start: int, end: int) -> list[bytes]: ...
    def ledger_entry(self, index: int) -> LedgerEntryRow | None: ...
    def ledger_event_entry(self, event_id: str) -> LedgerEntryRow | None: ...
    def ledger_iter_entries(
        self, start: int = 0, batch: int = 10000
    ) -> Iterator[LedgerEntryRow]: ...
    def ledger_store_tiles_in(self, conn: Txn, tiles: Sequence[tuple[int, int, bytes]]) -> None: ...
    def ledger_tile(self, level: int, index: int) -> bytes | None: ...
    def ledger_tree_state(self) -> tuple[int, list[bytes]] | None: ...
    def ledger_save_tree_state_in(self, conn: Txn, size: int, edge: Sequence[bytes]) -> None: ...
    async def ledger_add_checkpoint(self, size: int, root: bytes, note: bytes, ts: int) -> None: ...
    def ledger_latest_checkpoint(self) -> CheckpointRow | None: ...
    def ledger_checkpoint(self, size: int) -> CheckpointRow | None: ...
    def ledger_iter_checkpoints(self) -> Iterator[CheckpointRow]: ...
    async def ledger_add_cosignature(
        self, size: int, witness: str, line: bytes, ts: int
    ) -> None: ...
    def ledger_cosignatures(self, size: int) -> list[bytes]: ...
    def ledger_witness_size(self, witness: str) -> int | None: ...
    async def ledger_set_witness_size(self, witness: str, size: int) -> None: ...
    async def ledger_add_anchor(
        self, anchor: str, size: int, root: bytes, receipt: Mapping, ts: int
    ) -> int: ...
    def ledger_anchors(self, limit: int = 100) -> list[AnchorRow]: ...
    def witness_log_state(self, origin: str) -> WitnessLogRow | None: ...
    def witness_update_log_in(
        self, conn: Txn, origin: str, expect_size: int | None, size: int, root: bytes,
        note: bytes, ts: int,
    ) -> bool: ...  # fmt: skip


class LedgerAuditStore(Protocol):
    """Read-only reads of the ledger's auditor (``bastion ledger verify``; see
    :mod:`bastion.storage.sqlite.ledger_audit` for the row shapes)."""

    def audit_schema_version(self) -> int: ...
    def audit_tables(self) -> set[str]: ...
    def audit_leaf_batches(self, batch: int = 50_000) -> Iterator[list[tuple]]: ...
    def audit_leaf_count(self) -> int: ...
    def audit_tile_keys(self) -> list[tuple[int, int, int]]: ...
    def audit_tiles(self, level: int, first: int, last: int) -> list[tuple[int, bytes]]: ...
    def audit_latest_action(self, action: str) -> tuple[int, bytes] | None: ...
    def audit_cosignatures(self, size: int) -> list[tuple[str, bytes, int]]: ...
    def audit_last_cosignatures(self) -> list[tuple[str, int, int]]: ...
    def audit_anchor_rows(self) -> list[tuple[int, str, int, bytes, str]]: ...
    def audit_witness_sizes(self) -> list[tuple[str, int]]: ...
    def audit_event_rowid_bounds(self) -> tuple[int, int, int]: ...
    def audit_event_batches(
        self, first_rowid: int, last_rowid: int, batch: int = 20_000
    ) -> Iterator[list[tuple]]: ...
    def audit_event_ledger_idx(self, event_ids: Sequence[str]) -> dict[str, int | None]: ...
    def audit_event_leaves_without_row(self) -> list[tuple[int, str]]: ...
    def audit_event_types(self, event_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]: ...
    def audit_current_state(self) -> list[tuple]: ...
    def audit_current_membership(self) -> list[tuple]: ...
    def audit_membership_events(self) -> list[tuple]: ...
    def audit_device_keys(self) -> list[tuple[str, str, str]]: ...
    def audit_cross_signing_keys(self) -> list[tuple[str, str, str, str]]: ...
    def audit_local_old_signing_keys(self) -> list[tuple[str, str]]: ...


class AuditTrailStore(Protocol):
    """The audit trail's boundary reads (issue 10; :mod:`bastion.storage.sqlite.audit`)."""

    def audit_last_action_before(self, ts: int, below: int) -> int | None: ...
    def audit_first_action_after(self, ts: int, start: int, below: int) -> int | None: ...


class GuardDecisionsStore(Protocol):
    """The guard's decisions, review queue, per-room settings, room cooling and quarantined
    media (core part). Decisions are dicts with their JSON columns decoded."""

    def insert_guard_decision_in(
        self, conn: Txn, *, ts: int, source: str, outcome: str, status: str, reason: str,
        subject: str | None, room_id: str | None, event_id: str | None, origin: str | None,
        score: float, actions: Sequence[str], signals: Sequence[Mapping[str, Any]],
        held: Mapping[str, Any] | None, details: Mapping[str, Any],
    ) -> int: ...  # fmt: skip
    def set_guard_decision_ledger_idx_in(
        self, conn: Txn, decision_id: int, ledger_idx: int
    ) -> None: ...
    def set_guard_decision_details_in(
        self, conn: Txn, decision_id: int, details: Mapping[str, Any]
    ) -> None: ...
    def set_guard_decision_event_id_in(
        self, conn: Txn, decision_id: int, event_id: str
    ) -> None: ...
    def get_guard_decision(self, decision_id: int) -> dict[str, Any] | None: ...
    def guard_decision_in(self, conn: Txn, decision_id: int) -> dict[str, Any] | None: ...
    def list_guard_decisions(
        self, *, status: str | None = None, subject: str | None = None,
        room_id: str | None = None, before: int | None = None, limit: int = 50,
    ) -> list[dict[str, Any]]: ...  # fmt: skip
    def guard_acl_rooms(self, source: str, server: str) -> list[str]: ...
    def held_guard_txn_keys(self) -> set[tuple[str, ...]]: ...
    def held_guard_decision_for_txn(
        self, subject: str, txn: Sequence[str]
    ) -> dict[str, Any] | None: ...
    def review_guard_decision_in(
        self, conn: Txn, decision_id: int, *, expected_status: str, status: str,
        reviewed_by: str, reviewed_ts: int, review_reason: str | None,
        details: Mapping[str, Any] | None = None,
    ) -> bool: ...  # fmt: skip
    def get_guard_room_settings(self, room_id: str) -> dict[str, Any] | None: ...
    def set_guard_room_settings_in(
        self, conn: Txn, room_id: str, settings: Mapping[str, Any], now_ms: int
    ) -> None: ...
    def get_room_cooling(self, room_id: str) -> dict[str, Any] | None: ...
    def list_room_cooling(self) -> list[dict[str, Any]]: ...
    def set_room_cooling_in(
        self, conn: Txn, room_id: str, previous_join_rule: str | None, until_ts: int,
        reason: str,
    ) -> None: ...  # fmt: skip
    def delete_room_cooling_in(self, conn: Txn, room_id: str) -> bool: ...
    def media_quarantined(self, media_id: str) -> bool: ...
    def quarantine_media_in(
        self, conn: Txn, media_id: str, decision_id: int | None, reason: str, now_ms: int
    ) -> bool: ...
    def unquarantine_media_in(self, conn: Txn, media_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class RateOverrideRow:
    """One user's rate-limit overrides (``guard_rate_overrides``)."""

    user_id: str
    #: ``{limit name: {"per_second", "burst"} | null}`` as JSON text
    #: (:func:`bastion.guard.limits.overrides_json`).
    overrides: str
    set_by: str
    updated_ts: int


class GuardLimitsStore(Protocol):
    """Per-user rate-limit overrides (rate-limit part): bots and bridges an admin lets send
    more. Read once by the rate limiter, which keeps them in memory."""

    def get_rate_overrides(self) -> list[RateOverrideRow]: ...
    def get_rate_override(self, user_id: str) -> RateOverrideRow | None: ...
    def set_rate_override_in(
        self, conn: Txn, user_id: str, overrides: str, set_by: str, ts: int
    ) -> None:
        """Replace ``user_id``'s overrides, inside a write function."""
        ...

    def delete_rate_override_in(self, conn: Txn, user_id: str) -> bool:
        """Remove ``user_id``'s overrides, inside a write function; whether there were any."""
        ...


class GuardLoginStore(Protocol):
    """Failed-login throttles and the logins a user is known to have made (login part)."""

    def guard_login_throttles(self) -> Sequence[Row]: ...
    def guard_login_throttle_put_in(
        self, conn: Txn, key: str, failures: int, level: int, blocked_until: int,
        last_failure: int, now_ms: int,
    ) -> None: ...  # fmt: skip
    def guard_login_throttle_delete_in(self, conn: Txn, key: str) -> bool: ...
    def guard_login_throttles_prune_in(
        self, conn: Txn, forgotten_before: int, now_ms: int
    ) -> int: ...
    def guard_known_logins_any_in(self, conn: Txn, user_id: str) -> bool: ...
    def guard_known_login_note_in(
        self, conn: Txn, user_id: str, kind: str, value: str, now_ms: int
    ) -> bool: ...
    def guard_admin_user_ids(self) -> list[str]: ...
    def guard_all_user_ids(self) -> list[str]: ...


class GuardPolicyStore(Protocol):
    """The policy lists the server enforces (policy part)."""

    def guard_policy_lists(self) -> list[tuple[str, str | None, str, int]]: ...
    def guard_policy_rule_state(
        self, room_id: str, types: Iterable[str]
    ) -> list[tuple[str, str, str]]: ...
    def add_guard_policy_list_in(
        self, conn: Txn, room_id: str, shortcode: str | None, added_by: str, now_ms: int
    ) -> bool: ...
    def remove_guard_policy_list_in(self, conn: Txn, room_id: str) -> bool: ...
    def guard_local_joined_rooms(self, server_name: str) -> list[str]: ...


class ServerNoticesStore(Protocol):
    """The notices user and the rooms it owns: each user's server-notices room, the guard's
    alerts room (notices part)."""

    def is_server_notice_system_user(self, user_id: str) -> bool: ...
    @staticmethod
    def create_server_notice_system_user_in(
        conn: Txn, user_id: str, displayname: str, now_ms: int
    ) -> bool: ...
    def get_server_notice_room(self, user_id: str, purpose: str = "notices") -> str | None: ...
    def server_notice_room_owner(self, room_id: str) -> tuple[str, str] | None: ...
    @staticmethod
    def add_server_notice_room_in(
        conn: Txn, user_id: str, room_id: str, now_ms: int, purpose: str = "notices"
    ) -> None: ...
    def server_admins(self) -> list[str]: ...


class ExportStore(Protocol):
    """Paged reads of one user's data for an export (storage/sqlite/export.py)."""

    def export_account(self, user_id: str) -> dict[str, Any] | None: ...
    def export_profile(self, user_id: str) -> dict[str, Any]: ...
    def export_devices(self, user_id: str) -> list[dict[str, Any]]: ...
    def export_device_keys(self, user_id: str, device_id: str) -> dict[str, Any] | None: ...
    def export_cross_signing_keys(self, user_id: str) -> list[dict[str, Any]]: ...
    def export_account_data_page(
        self, user_id: str, after: tuple[str, str] | None, limit: int
    ) -> list[dict[str, Any]]: ...
    def export_filters_page(self, user_id: str, after: int, limit: int) -> list[dict[str, Any]]: ...
    def export_push_rules(self, user_id: str) -> Any: ...
    def export_presence(self, user_id: str) -> dict[str, Any] | None: ...
    def export_memberships_page(
        self, user_id: str, after: int, limit: int
    ) -> list[dict[str, Any]]: ...
    def export_room_ids_page(self, user_id: str, after: str, limit: int) -> list[str]: ...
    def export_sent_events_page(
        self, room_id: str, sender: str, after: int, limit: int
    ) -> list[dict[str, Any]]: ...
    def export_receipts_page(
        self, user_id: str, after: int, limit: int
    ) -> list[dict[str, Any]]: ...
    def export_media_page(self, user_id: str, after: str, limit: int) -> list[dict[str, Any]]: ...
    def export_backup_versions(self, user_id: str) -> list[dict[str, Any]]: ...
    def export_backup_keys_page(
        self, user_id: str, after: tuple[int, str, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], tuple[int, str, str] | None]: ...
    def export_ledger_page(self, subject: str, after: int, limit: int) -> list[dict[str, Any]]: ...
    def export_last_action_ts(self, subject: str, action: str, actor: str) -> int | None: ...
    def export_guard_decisions_page(
        self, subject: str, after: int, limit: int
    ) -> list[dict[str, Any]]: ...


class AdminDirectoryStore(Protocol):
    """The Synapse-compatible admin API's listings, room purges, blocked rooms, room-deletion
    statuses, media deletion and registration tokens by handle (migration 0006)."""

    def forget_room_caches(self) -> None: ...

    def admin_list_users(
        self, *, name: str | None, user_id: str | None, deactivated: bool, locked: bool,
        admins: bool | None, order_by: str, backwards: bool, offset: int, limit: int,
    ) -> tuple[Sequence[Row], int]: ...  # fmt: skip
    def admin_user_last_seen(self, user_id: str) -> int | None: ...
    def admin_room_summaries(self, room_id: str | None = None) -> list[dict[str, Any]]: ...
    def admin_room_state_jsons(self, room_id: str) -> list[tuple[str, bytes]]: ...
    def admin_room_media_refs(self, room_id: str) -> list[str]: ...
    def admin_user_media_refs(self, user_id: str) -> list[str]: ...
    def purge_room_in(self, conn: Txn, room_id: str) -> tuple[list[str], int]: ...
    def get_blocked_room(self, room_id: str) -> Row | None: ...
    def room_blocked(self, room_id: str) -> bool: ...
    def block_room_in(self, conn: Txn, room_id: str, user_id: str, now_ms: int) -> bool: ...
    def unblock_room_in(self, conn: Txn, room_id: str) -> bool: ...
    def put_room_deletion_in(
        self, conn: Txn, delete_id: str, room_id: str, status: str, now_ms: int, result: str,
        top_stream_pos: int = 0,
    ) -> None: ...  # fmt: skip
    def get_room_deletion(self, delete_id: str) -> Row | None: ...
    def room_deletions_of(self, room_id: str) -> Sequence[Row]: ...
    def admin_list_user_media(
        self, user_id: str, *, order_by: str, backwards: bool, offset: int, limit: int
    ) -> tuple[Sequence[Row], int]: ...
    def admin_local_media_ids_before(self, before_ts: int, size_gt: int) -> list[str]: ...
    def admin_profile_media_refs(self) -> set[str]: ...
    def admin_media_quarantine_reason(self, media_id: str) -> str | None: ...
    def protected_media_ids(self, media_ids: list[str]) -> set[str]: ...
    def protect_media_in(
        self, conn: Txn, media_id: str, user_id: str, now_ms: int, protect: bool
    ) -> bool: ...
    def list_registration_tokens_hashed(self) -> Sequence[Row]: ...
    def find_registration_tokens(self, prefix: str, hash_hex: str) -> Sequence[Row]: ...
    def get_registration_token_hashed(self, token: str) -> Row | None: ...
    def update_registration_token_in(
        self, conn: Txn, hash_hex: str, changes: dict[str, int | None]
    ) -> bool: ...
    def registration_token_by_hash_in(self, conn: Txn, hash_hex: str) -> Row | None: ...
    def delete_registration_token_in(self, conn: Txn, hash_hex: str) -> bool: ...


class StreamsStore(Protocol):
    """Lifecycle, transactions, the global stream position and the after-commit hooks."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    async def transaction(self, fn: Callable[[Txn], T], durable: bool = False) -> T:
        """Run ``fn(txn)`` in one write transaction; return its result once committed. An
        exception from ``fn`` undoes its writes and is raised here. ``durable``: committed so
        that it (and every earlier write) survives a power loss, not only a killed process."""
        ...

    def transaction_sync(self, fn: Callable[[Txn], T], durable: bool = False) -> T:
        """:meth:`transaction` for command-line tools without an event loop."""
        ...

    @property
    def current_pos(self) -> int: ...
    def add_listener(self, fn: Callable[[int, set[str]], None]) -> None: ...
    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def run_after_commit(self, fn: Callable[..., None], *args: object) -> None: ...
    def wake(self, *keys: str) -> None: ...


class EventContentsStore(Protocol):
    """Removing what people wrote, keeping the room graph (issue 10: erasure, retention)."""

    def strip_event_contents_in(self, txn: Txn, event_ids: Sequence[str]) -> list[str]:
        """Inside a write: rewrite the events to the redacted form of their room version (and
        their copies queued for federation); the IDs whose stored JSON changed."""
        ...


class RetentionStore(Protocol):
    """Legal holds and the retention purge job's reads (issue 10; storage/sqlite/retention.py)."""

    def list_legal_holds(self) -> list[dict]: ...
    def legal_holds_for(self, user_id: str | None, room_id: str | None) -> list[dict]:
        """The holds covering ``user_id`` (kind user) or ``room_id`` (kind room)."""
        ...

    def legal_hold_targets_in(self, conn: Txn) -> tuple[set[str], set[str]]: ...
    def set_legal_hold_in(self, conn: Txn, kind: str, target: str, reason: str | None,
                          set_by: str, set_ts: int) -> bool: ...  # fmt: skip
    def lift_legal_hold_in(self, conn: Txn, kind: str, target: str) -> bool: ...
    def retention_room_ids(self) -> list[str]: ...
    def retention_progress(self, room_id: str) -> tuple[int, int] | None: ...
    def set_retention_progress_in(self, conn: Txn, room_id: str, done_ts: int,
                                  done_pos: int) -> None: ...  # fmt: skip
    def retention_aged_in(self, conn: Txn, room_id: str, from_ts: int, before_ts: int,
                          upto_pos: int, after: tuple[int, int] | None,
                          limit: int) -> Sequence[Row]: ...  # fmt: skip
    def retention_new_in(self, conn: Txn, room_id: str, after_pos: int, upto_pos: int,
                         before_ts: int, limit: int) -> tuple[Sequence[Row], int]: ...  # fmt: skip
    def retention_deferred_in(self, conn: Txn, room_id: str, after_event_id: str,
                              limit: int) -> Sequence[Row]: ...  # fmt: skip
    def defer_retention_in(self, conn: Txn, room_id: str, event_ids: Iterable[str]) -> None: ...
    def undefer_retention_in(self, conn: Txn, event_ids: Iterable[str]) -> None: ...
    def local_media_created_before_in(self, conn: Txn, before_ts: int,
                                      after_media_id: tuple[int, str] | None,
                                      limit: int) -> Sequence[Row]: ...  # fmt: skip
    def media_referenced_in_rooms(self, room_ids: Iterable[str], server_name: str) -> set[str]: ...


class OpenIdStore(Protocol):
    """OpenID tokens (C-S API "OpenID", S-S API "OpenID"; storage/sqlite/openid.py)."""

    def get_openid_token(self, token: str) -> tuple[str, int, bool] | None: ...
    def add_openid_token_in(self, conn: Txn, token: str, user_id: str, expires_ts: int) -> None: ...
    def delete_openid_token_in(self, conn: Txn, token: str) -> bool: ...
    def delete_expired_openid_tokens_in(self, conn: Txn, now_ms: int, limit: int) -> int: ...
    def delete_user_openid_tokens_in(self, conn: Txn, user_id: str) -> int: ...
    def openid_token_count(self, user_id: str | None = None) -> int: ...


class PushStore(Protocol):
    """Notifications and pushers (C-S API "Push Notifications"; storage/sqlite/push.py)."""

    def add_notifications_in(
        self, conn: Txn, rows: Sequence[tuple[str, int, str, str, str, int, bool, str]]
    ) -> int: ...
    def mark_notifications_read_in(
        self, conn: Txn, user_id: str, room_id: str, upto_pos: int, thread_id: str | None
    ) -> None: ...
    def prune_notifications_in(self, conn: Txn, room_id: str, before_ts: int) -> int: ...
    def get_push_counts(self, user_id: str, room_id: str) -> dict[str, tuple[int, int]]: ...
    def get_read_positions(self, user_id: str, room_id: str) -> dict[str, int]: ...
    def get_room_notifications(
        self, user_id: str, room_id: str, before_pos: int | None, limit: int, scan: int,
        only_highlight: bool,
    ) -> tuple[list[dict[str, Any]], int | None]: ...  # fmt: skip
    def unread_notification_total(self, user_id: str) -> int: ...
    def set_pusher_in(
        self, conn: Txn, user_id: str, pusher: dict[str, object], data_json: str,
        pushkey_ts: int, append: bool,
    ) -> None: ...  # fmt: skip
    def delete_pusher_in(self, conn: Txn, user_id: str, app_id: str, pushkey: str) -> int: ...
    def get_pushers(self, user_id: str) -> Sequence[Row]: ...
    def get_pushers_for_users(self, user_ids: Sequence[str]) -> Sequence[Row]: ...
    def has_pushers(self) -> bool: ...


class ErasureStore(Protocol):
    """One local user's erasure (issue 10, GDPR Art. 17; storage/sqlite/erasure.py)."""

    def erasure_redaction_targets(
        self, user_id: str, server_name: str, kept_state_types: Sequence[str] = ()
    ) -> list[tuple[str, str]]: ...
    def erasure_event_ids(
        self, user_id: str, kept_state_types: Sequence[str] = ()
    ) -> list[str]: ...
    def erasure_media_ids(self, user_id: str) -> list[str]: ...
    def is_user_erased(self, user_id: str) -> bool: ...
    def erase_user_rows_in(
        self, txn: Txn, user_id: str, *, now_ms: int, actor: str, media_ids: list[str]
    ) -> dict[str, int]: ...
    def mark_user_erased_in(
        self, txn: Txn, user_id: str, ts: int, redact_federated: bool
    ) -> None: ...
    def drop_event_caches(self) -> None: ...
    async def compact_database(self) -> dict[str, Any]: ...
    def compact_database_sync(self) -> dict[str, Any]: ...


class RelationsStore(Protocol):
    """The index of event relations (issue 11; C-S API "Relationships", "Threading";
    storage/sqlite/relations.py)."""

    def relation_of_event(self, room_id: str, event_id: str) -> Relation | None: ...
    def relation_children(
        self, room_id: str, parent_ids: Sequence[str], *, rel_type: str | None = None,
        event_type: str | None = None, after: int | None = None, upto: int | None = None,
        backwards: bool = True, limit: int = 50,
    ) -> list[tuple[str, int]]: ...  # fmt: skip
    def relation_descendants(
        self, room_id: str, parent_id: str, depth: int, *, rel_type: str | None = None,
        event_type: str | None = None, after: int | None = None, upto: int | None = None,
        backwards: bool = True, limit: int = 50,
    ) -> list[tuple[str, int]]: ...  # fmt: skip
    def thread_roots(
        self, room_id: str, *, upto: int | None, cap: int | None, participant: str | None,
        limit: int,
    ) -> list[tuple[str, int]]: ...  # fmt: skip
    def thread_summaries(
        self, parents: Mapping[str, str], user_id: str, cap: int | None
    ) -> dict[str, tuple[int, str, bool]]: ...
    def relations_of_types(
        self, parents: Mapping[str, str], rel_types: Sequence[str], cap: int | None,
        limit: int,
    ) -> list[tuple[str, str, str]]: ...  # fmt: skip
    def related_parents(self, parent_ids: Sequence[str], rel_types: Sequence[str]) -> set[str]: ...


class UserDirectoryStore(Protocol):
    """Who a user may find in the user directory (C-S API "User directory";
    storage/sqlite/user_directory.py)."""

    def user_directory_generation(self) -> int: ...
    def user_directory_local_entries(self) -> list[DirectoryEntry]: ...
    def user_directory_remote_memberships(
        self, server_name: str
    ) -> list[tuple[DirectoryEntry, str, int]]: ...
    def user_directory_visible_local(
        self, requester: str, user_ids: Sequence[str], all_local: bool
    ) -> set[str]: ...
    def user_directory_visible_rooms(self, requester: str, room_ids: Sequence[str]) -> set[str]: ...


class SearchStore(Protocol):
    """The full-text index of server-side search (issue 11; C-S API "Server Side Search";
    storage/sqlite/search.py)."""

    async def flush_search_index(self) -> None: ...
    async def optimize_search_index(self) -> None: ...
    def search_events(
        self, query: str, rooms: Mapping[str, int | None], *, senders: Sequence[str] | None,
        not_senders: Sequence[str], recent: bool, after: tuple[float, int] | None, limit: int,
    ) -> list[tuple[str, int, float]]: ...  # fmt: skip
    def search_count(
        self, query: str, rooms: Mapping[str, int | None], *, senders: Sequence[str] | None,
        not_senders: Sequence[str],
    ) -> int: ...  # fmt: skip


class Store(
    AccountsStore,
    RoomsStore,
    E2EEStore,
    MediaStore,
    AccountDataStore,
    FederationKeysStore,
    DeviceListsStore,
    FederationQueueStore,
    FederationInboundStore,
    LedgerStore,
    LedgerAuditStore,
    AuditTrailStore,
    GuardDecisionsStore,
    GuardLimitsStore,
    GuardLoginStore,
    GuardPolicyStore,
    ServerNoticesStore,
    EventContentsStore,
    ExportStore,
    RetentionStore,
    AdminDirectoryStore,
    ErasureStore,
    RelationsStore,
    OpenIdStore,
    UserDirectoryStore,
    SearchStore,
    StreamsStore,
    PushStore,
    Protocol,
):
    """The whole store, as the homeserver uses it."""
