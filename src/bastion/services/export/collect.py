"""What goes into an export: one user's data, kind by kind, read a page at a time.

Each kind is a :class:`Kind` (its folder and file in the archive, and a description for
``manifest.json``); :meth:`Collector.pages` yields the kind's items one page (a list of at most
``page_size`` JSON-able dicts) at a time, reading the store page by page, so nothing ever holds
more than one page of a kind. What the user *could see* is decided by the room-reading service
as for their own client (``/messages``, C-S API "Getting events for a room": read access,
former members up to their leave, and history visibility, C-S API "Room History Visibility"
via :mod:`bastion.core.visibility`): never an event from before they could see it.

What is left out, on purpose: secrets (the password hash, access tokens, registration tokens),
other users' devices, account data and media, who reported the user (a report's decision
names its reporter in ``details.reporter``, which is dropped, as the reported user is never told
who reported them) and who reviewed a guard decision (the review's time and reason are
included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import MatrixError
from bastion.ledger import records

if TYPE_CHECKING:
    from bastion.services.room_access import RoomAccess
    from bastion.services.room_reading import RoomReader
    from bastion.storage.interface import EventRow, Store

#: Rows read per store call (and items per page handed to the archive).
PAGE_SIZE = 500
#: The ledger actions that are login history.
LOGIN_ACTIONS = frozenset({records.ACTION_LOGIN_SUCCESS, records.ACTION_LOGIN_FAILURE})


@dataclass(frozen=True)
class Kind:
    """One kind of data: ``name`` (the manifest key), ``path`` (its JSON file in the archive:
    an array of items, or one object when ``single``) and what it holds."""

    name: str
    path: str
    description: str
    single: bool = False


KINDS: tuple[Kind, ...] = (
    Kind("account", "account/account.json",
         "the account: creation time and flags (admin, deactivated, locked, suspended)", True),
    Kind("profile", "profile/profile.json", "profile fields (displayname, avatar_url, ...)",
         True),
    Kind("presence", "presence/presence.json", "the last presence state set, or null", True),
    Kind("devices", "devices/devices.json",
         "devices: ID, display name, last seen time and IP, published identity keys"),
    Kind("cross_signing_keys", "devices/cross_signing_keys.json",
         "the user's public cross-signing keys"),
    Kind("account_data", "account_data/account_data.json",
         "account data: room_id null for global data, else the room's"),
    Kind("push_rules", "push_rules/push_rules.json",
         "the stored push-rule document: the user's rules and changes to predefined ones", True),
    Kind("filters", "filters/filters.json", "filters uploaded with POST /user/{userId}/filter"),
    Kind("memberships", "rooms/memberships.json",
         "every membership change of the user, oldest first"),
    Kind("events_sent", "events_sent/events.json",
         "every event the user sent, as stored (the signed PDU; redacted ones in redacted form)"),
    Kind("events_visible", "events_visible/events.json",
         "every event the user could see, as their client would (client event format)"),
    Kind("receipts", "receipts/receipts.json", "the user's read receipts"),
    Kind("media", "media/media.json",
         "the user's uploads; each file is media/files/<media_id>"),
    Kind("key_backup_versions", "key_backup/versions.json", "key-backup versions as stored"),
    Kind("key_backup_sessions", "key_backup/sessions.json",
         "backed-up room keys: session_data encrypted as uploaded (never decrypted)"),
    Kind("logins", "logins/logins.json",
         "login history: the ledger's login.success and login.failure records about the user"),
    Kind("ledger", "ledger/records.json",
         "every ledger record whose subject is the user (index and record)"),
    Kind("guard_decisions", "guard/decisions.json", "the guard's decisions about the user"),
)  # fmt: skip

KINDS_BY_NAME = {k.name: k for k in KINDS}


@dataclass(frozen=True)
class _Reader:
    """The export's view of the user as a reader of rooms (what the room reader needs)."""

    user_id: str
    device_id: str | None = None


class Collector:
    """The pages of each kind for one user."""

    def __init__(
        self, store: Store, reader: RoomReader, access: RoomAccess,
        client_event: Callable[..., dict], media_path: Callable[[str], Path], user_id: str,
        *, page_size: int = PAGE_SIZE, now_ms: int,
        media_chunks: Callable[[str], Iterator[bytes]] | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.reader = reader
        self.access = access
        self.client_event = client_event
        self.media_path = media_path
        #: A media ID's plaintext in pieces (decrypted when it is encrypted at rest); default:
        #: the file as stored.
        self.media_chunks = media_chunks or self._file_chunks
        self.user_id = user_id
        self.page_size = page_size
        self.now_ms = now_ms

    def pages(self, kind: str) -> Iterator[list[dict[str, Any]]]:
        """The items of ``kind``, a page at a time (a ``single`` kind: one page of one item)."""
        return getattr(self, "_" + kind)()

    # -- small kinds: one read each ---------------------------------------------------------
    def _account(self) -> Iterator[list[dict[str, Any]]]:
        yield [self.store.export_account(self.user_id) or {}]

    def _profile(self) -> Iterator[list[dict[str, Any]]]:
        yield [self.store.export_profile(self.user_id)]

    def _presence(self) -> Iterator[list[Any]]:
        yield [self.store.export_presence(self.user_id)]

    def _push_rules(self) -> Iterator[list[Any]]:
        yield [self.store.export_push_rules(self.user_id)]

    def _devices(self) -> Iterator[list[dict[str, Any]]]:
        devices = self.store.export_devices(self.user_id)
        for d in devices:
            d["keys"] = self.store.export_device_keys(self.user_id, d["device_id"])
        yield devices

    def _cross_signing_keys(self) -> Iterator[list[dict[str, Any]]]:
        yield self.store.export_cross_signing_keys(self.user_id)

    # -- paged kinds -------------------------------------------------------------------------
    def _account_data(self) -> Iterator[list[dict[str, Any]]]:
        after: tuple[str, str] | None = None
        while page := self.store.export_account_data_page(self.user_id, after, self.page_size):
            yield page
            after = (page[-1]["room_id"] or "", page[-1]["type"])

    def _filters(self) -> Iterator[list[dict[str, Any]]]:
        after = -1
        while page := self.store.export_filters_page(self.user_id, after, self.page_size):
            yield page
            after = int(page[-1]["filter_id"])

    def _memberships(self) -> Iterator[list[dict[str, Any]]]:
        after = -1
        while page := self.store.export_memberships_page(self.user_id, after, self.page_size):
            yield page
            after = page[-1]["stream_pos"]

    def _rooms(self) -> Iterator[str]:
        """Every room the user has a membership event in (room ID order, paged)."""
        after = ""
        while page := self.store.export_room_ids_page(self.user_id, after, self.page_size):
            yield from page
            after = page[-1]

    def _events_sent(self) -> Iterator[list[dict[str, Any]]]:
        for room_id in self._rooms():
            after = -1
            while page := self.store.export_sent_events_page(
                room_id, self.user_id, after, self.page_size
            ):
                after = page[-1]["stream_pos"]
                yield [{"room_id": room_id, **item} for item in page]

    def _events_visible(self) -> Iterator[list[dict[str, Any]]]:
        reader = _Reader(self.user_id)
        for room_id in self._rooms():
            cursor: int | None = 0
            while cursor is not None:
                try:
                    rows, cursor, _ = self.reader.paginate(
                        reader, room_id, cursor, None, False, self.page_size, None
                    )
                except MatrixError:
                    break  # never joined (an invite, a knock): nothing of the room to see
                if rows:
                    yield [self._client_event(r, reader) for r in rows]

    def _client_event(self, row: EventRow, reader: _Reader) -> dict[str, Any]:
        ev = self.client_event(row, reader, self.now_ms)
        ev["unsigned"].pop("age", None)  # relative to the time of the export: meaningless
        return ev

    def _receipts(self) -> Iterator[list[dict[str, Any]]]:
        after = 0
        while page := self.store.export_receipts_page(self.user_id, after, self.page_size):
            after = page[-1].pop("rowid")
            for item in page:
                item.pop("rowid", None)
            yield page

    def _file_chunks(self, media_id: str) -> Iterator[bytes]:
        with open(self.media_path(media_id), "rb") as f:
            while chunk := f.read(1024 * 1024):
                yield chunk

    def media_rows(self) -> Iterator[list[dict[str, Any]]]:
        """The user's uploads (rows), a page at a time."""
        after = ""
        while page := self.store.export_media_page(self.user_id, after, self.page_size):
            yield page
            after = page[-1]["media_id"]

    def _media(self) -> Iterator[list[dict[str, Any]]]:
        for page in self.media_rows():
            yield [
                {**m, "file": f"media/files/{m['media_id']}",
                 "file_present": self.media_path(m["media_id"]).is_file()}
                for m in page
            ]  # fmt: skip

    def _key_backup_versions(self) -> Iterator[list[dict[str, Any]]]:
        yield self.store.export_backup_versions(self.user_id)

    def _key_backup_sessions(self) -> Iterator[list[dict[str, Any]]]:
        after: tuple[int, str, str] | None = None
        while True:
            page, after = self.store.export_backup_keys_page(self.user_id, after, self.page_size)
            if not page:
                return
            yield page

    def _ledger_pages(self) -> Iterator[list[dict[str, Any]]]:
        after = -1
        while page := self.store.export_ledger_page(self.user_id, after, self.page_size):
            yield page
            after = page[-1]["index"]

    def _logins(self) -> Iterator[list[dict[str, Any]]]:
        for page in self._ledger_pages():
            logins = [r for r in page if r["record"].get("action") in LOGIN_ACTIONS]
            if logins:
                yield logins

    def _ledger(self) -> Iterator[list[dict[str, Any]]]:
        return self._ledger_pages()

    def _guard_decisions(self) -> Iterator[list[dict[str, Any]]]:
        after = 0
        while page := self.store.export_guard_decisions_page(self.user_id, after, self.page_size):
            after = page[-1]["id"]
            for d in page:
                if isinstance(d["details"], dict):
                    # Who reported the user is never told to them (services/reporting.py).
                    d["details"].pop("reporter", None)
            yield page
