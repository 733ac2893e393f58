"""Ephemeral data: typing notifications, receipts and read markers, presence (C-S API "Typing
Notifications", "Receipts", "Read and unread markers", "Presence") and their parts of /sync.

- **Typing** lives in memory. ``Typing.serial`` is the typing stream (the second number of a sync
  token): it moves on every change, including expiry. Expiry uses one ``loop.call_later`` timer
  per typing user — no polling.
- **Receipts** are persisted with global stream positions (``receipts`` table); ``m.read.private``
  is only ever shown to its owner. ``m.fully_read`` is the room account data ``m.fully_read``.
- **Presence** is kept in memory and persisted (with a stream position) when the state or status
  message changes, so /sync sends the presence of users sharing a room that changed since the
  token. ``last_active_ts`` moves in memory; a user idle for :data:`IDLE_MS` becomes
  ``unavailable`` (a ``call_later`` timer, no polling).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bastion.core.canonical_json import canonical_json
from bastion.core.relations import MAIN_TIMELINE, THREAD
from bastion.errors import bad_json, forbidden, invalid_param, not_found
from bastion.services.filtering import event_filter_allows, room_allowed
from bastion.services.lifecycle import BackgroundService
from bastion.services.relations import event_thread
from bastion.services.remote import RoomEDUs
from bastion.services.sync_api import SyncContext
from bastion.storage.interface import Txn

if TYPE_CHECKING:
    from bastion.server import HomeServer

log = logging.getLogger(__name__)

#: Typing timeouts are capped at this many milliseconds (clients refresh every 20-30 s).
MAX_TYPING_TIMEOUT_MS = 30_000
DEFAULT_TYPING_TIMEOUT_MS = 30_000
RECEIPT_TYPES = ("m.read", "m.read.private", "m.fully_read")
PRESENCE_STATES = ("online", "offline", "unavailable")
MAX_STATUS_MSG = 1024
#: After this long without activity an ``online`` user is shown as ``unavailable``
#: (Presence → "Idle timeout").
IDLE_MS = 5 * 60 * 1000
#: ``currently_active`` is true when the user was active this recently.
CURRENTLY_ACTIVE_MS = 60 * 1000


def require_joined(hs: HomeServer, room_id: str, user_id: str) -> None:
    """403 ``M_FORBIDDEN`` unless ``user_id`` is currently joined to ``room_id``."""
    if hs.store.get_local_memberships(user_id).get(room_id) != "join":
        raise forbidden("you are not joined to this room")


def _add_ephemeral(room: dict, event: dict) -> None:
    room.setdefault("ephemeral", {}).setdefault("events", []).append(event)


# -- typing ---------------------------------------------------------------------------------


class Typing(BackgroundService):
    """``hs.typing``: who is typing where, in memory (expiry timers through the service
    lifecycle: cancelled at shutdown)."""

    background_name = "typing"

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        #: The other servers in the room (handed in by the homeserver; None: federation off).
        self.room_edus: RoomEDUs | None = None
        self.serial = 0
        self._typing: dict[str, dict[str, asyncio.TimerHandle]] = {}
        self._changed: dict[str, int] = {}  # room_id → serial of its last change

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, ()))

    def _bump(self, room_id: str) -> None:
        self.serial += 1
        self._changed[room_id] = self.serial
        self.hs.notifier.notify([room_id])

    def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        """Start (for ``timeout_ms``, capped) or stop ``user_id`` typing. Call on the loop. A
        local user's typing also goes to the other servers in the room (``m.typing``)."""
        if self.room_edus is not None:
            self.room_edus.local_typing(room_id, user_id, typing)
        users = self._typing.setdefault(room_id, {})
        old = users.pop(user_id, None)
        self.cancel_timer(old)
        if typing:
            delay = min(max(timeout_ms, 0), MAX_TYPING_TIMEOUT_MS) / 1000
            users[user_id] = self.call_later(delay, self._expire, room_id, user_id)
            if old is None:
                self._bump(room_id)
        else:
            if not users:
                self._typing.pop(room_id, None)
            if old is not None:
                self._bump(room_id)

    def remove_user(self, room_id: str, user_id: str) -> None:
        """Stop a user typing (e.g. when they leave the room)."""
        users = self._typing.get(room_id)
        if users and user_id in users:
            self.cancel_timer(users.pop(user_id))
            if not users:
                del self._typing[room_id]
            self._bump(room_id)

    def _expire(self, room_id: str, user_id: str) -> None:
        users = self._typing.get(room_id)
        if users is None or users.pop(user_id, None) is None:
            return
        if not users:
            del self._typing[room_id]
        self._bump(room_id)

    def close(self) -> None:
        for users in self._typing.values():
            for handle in users.values():
                self.cancel_timer(handle)
        self._typing.clear()

    # -- SyncContributor ------------------------------------------------------------------
    def contribute_global(self, ctx: SyncContext, response: dict) -> None:
        return None

    def contribute_room(self, ctx: SyncContext, room_id: str, room: dict) -> None:
        if not room_allowed(ctx.filter, room_id):
            return
        users = self.typing_users(room_id)
        if users:  # a typer who has left since is not shown (their timer expires on its own)
            joined = self.hs.store.get_joined_users(room_id)
            users = [u for u in users if u in joined]
        if ctx.since is None:
            if not users:
                return
        else:
            since = ctx.since.typing
            if since > self.serial:  # a token from before a restart: the serial began again
                since = 0
            if self._changed.get(room_id, 0) <= since:
                return
        event = {"type": "m.typing", "content": {"user_ids": users}}
        if event_filter_allows(ctx.filter["room"]["ephemeral"], event, room_id):
            _add_ephemeral(room, event)

    def rooms_changed(self, ctx: SyncContext) -> set[str] | None:
        if ctx.since is None:
            return None
        since = ctx.since.typing
        if since > self.serial:  # as in contribute_room
            since = 0
        return {room_id for room_id, serial in self._changed.items() if serial > since}


# -- receipts and read markers --------------------------------------------------------------


class Receipts:
    """``hs.receipts``: read receipts and the fully-read marker."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        #: The other servers in the room (handed in by the homeserver; None: federation off).
        self.room_edus: RoomEDUs | None = None

    def _check_event(self, room_id: str, event_id: str) -> dict:
        if not isinstance(event_id, str) or not event_id.startswith("$"):
            raise invalid_param(f"{event_id!r} is not an event ID")
        event = self.hs.store.get_event(event_id)
        if event is None or event.get("room_id") != room_id:
            raise not_found("unknown event in this room")
        return event

    def _check_thread(self, room_id: str, event: dict, event_id: str, thread_id: str) -> None:
        """A threaded receipt's event must be related to its ``thread_id`` (C-S API "Receipts":
        400 ``M_INVALID_PARAM`` otherwise; "Threaded read receipts"): for ``main`` an event of
        the main timeline; for a thread an event in it, or its root or an event related to the
        root by other relations (in the main timeline themselves, but named after the thread
        by clients that show the root atop the thread)."""
        root, path = event_thread(self.hs.store, room_id, event_id, event)
        if thread_id == MAIN_TIMELINE:
            if root is None:
                return
            raise invalid_param(f"the event is in the thread {root}, not the main timeline")
        if root == thread_id:
            return
        if thread_id in path and self.hs.store.relation_children(
            room_id, [thread_id], rel_type=THREAD, limit=1
        ):
            return
        raise invalid_param("the event is not in the thread given by thread_id")

    async def set_markers(
        self, user_id: str, room_id: str, markers: dict[str, str], thread_id: str | None = None
    ) -> None:
        """Set receipts and/or the fully-read marker (``markers``: receipt type → event ID) in
        one write. The user must be joined and every event must be in the room."""
        require_joined(self.hs, room_id, user_id)
        for rtype, event_id in markers.items():
            if rtype not in RECEIPT_TYPES:
                raise invalid_param(f"unknown receipt type {rtype!r}")
            event = self._check_event(room_id, event_id)
            if thread_id is not None:
                if rtype == "m.fully_read":
                    raise invalid_param("thread_id cannot be used with m.fully_read")
                self._check_thread(room_id, event, event_id, thread_id)
        store = self.hs.store
        now = self.hs.now_ms()
        # A read receipt clears the notifications it covers ("Receiving notifications"): the
        # events up to it are evaluated first, so none is counted after it.
        read_upto: int | None = None
        for rtype in ("m.read", "m.read.private"):
            if rtype in markers:
                row = store.get_event_row(markers[rtype])
                if row is not None:
                    read_upto = max(read_upto or 0, row.stream_pos)
        if read_upto is not None:
            await self.hs.notifications.settle(store.current_pos)

        def fn(conn: Txn) -> None:
            for rtype, event_id in markers.items():
                if rtype == "m.fully_read":
                    content = canonical_json({"event_id": event_id}).decode("utf-8")
                    store.set_account_data_in(conn, user_id, room_id, "m.fully_read", content)
                else:
                    store.set_receipt_in(
                        conn, room_id, rtype, user_id, thread_id or "", event_id, now
                    )
            if read_upto is not None:
                store.mark_notifications_read_in(conn, user_id, room_id, read_upto, thread_id)

        await store.transaction(fn)
        if "m.read" in markers and self.room_edus is not None:  # public, to the other servers
            await self.room_edus.local_receipt(room_id, user_id, markers["m.read"], now, thread_id)

    def receipt_event(
        self, user_id: str, room_id: str, since: int | None, upto: int
    ) -> dict | None:
        """The ``m.receipt`` event for ``room_id`` with receipts in ``(since, upto]`` as
        ``user_id`` may see them (other users' private receipts left out)."""
        return self._event(user_id, self.hs.store.receipts_for_room(room_id, since, upto))

    def receipt_event_on(
        self, user_id: str, room_id: str, event_ids: list[str], upto: int
    ) -> dict | None:
        """The ``m.receipt`` event for ``room_id`` as of ``upto`` with only the receipts on
        ``event_ids`` and ``user_id``'s own (sliding sync's receipts for a room new to the
        client: MSC3960 sends the receipts of the events it is sent, not the whole room's)."""
        rows = self.hs.store.receipts_for_events(room_id, event_ids, user_id, upto)
        return self._event(user_id, rows)

    @staticmethod
    def _event(user_id: str, rows) -> dict | None:
        content: dict[str, dict[str, dict[str, dict]]] = {}
        for row in rows:
            rtype = row["receipt_type"]
            if rtype == "m.read.private" and row["user_id"] != user_id:
                continue
            data: dict[str, Any] = {"ts": row["ts"]}
            if row["thread_id"]:
                data["thread_id"] = row["thread_id"]
            content.setdefault(row["event_id"], {}).setdefault(rtype, {})[row["user_id"]] = data
        if not content:
            return None
        return {"type": "m.receipt", "content": content}

    # -- SyncContributor ------------------------------------------------------------------
    def contribute_global(self, ctx: SyncContext, response: dict) -> None:
        return None

    def contribute_room(self, ctx: SyncContext, room_id: str, room: dict) -> None:
        if not room_allowed(ctx.filter, room_id):
            return
        since = ctx.since.pos if ctx.since is not None else None
        event = self.receipt_event(ctx.requester.user_id, room_id, since, ctx.upto.pos)
        if event is not None and event_filter_allows(
            ctx.filter["room"]["ephemeral"], event, room_id
        ):
            _add_ephemeral(room, event)

    def rooms_changed(self, ctx: SyncContext) -> set[str] | None:
        if ctx.since is None:
            return None
        return self.hs.store.receipt_rooms_changed(ctx.joined_room_ids, ctx.since.pos, ctx.upto.pos)


# -- presence -------------------------------------------------------------------------------


class Presence(BackgroundService):
    """``hs.presence``. Idle timers and the idle updates they persist go through the service
    lifecycle."""

    background_name = "presence"

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        self._state: dict[str, dict] = {}
        self._loaded = False
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        #: Where a local user's presence changes go out to the other servers (S-S API
        #: "Presence"); None without federation.
        self.room_edus: RoomEDUs | None = None

    def forget(self, user_id: str) -> None:
        """Drop what is kept in memory about a user (an erased account: its status message)."""
        self._state.pop(user_id, None)
        self.cancel_timer(self._idle_timers.pop(user_id, None))

    def _load(self) -> None:
        if not self._loaded:
            for row in self.hs.store.load_presence():
                self._state[row["user_id"]] = {
                    "presence": row["state"],
                    "status_msg": row["status_msg"],
                    "last_active_ts": row["last_active_ts"],
                }
            self._loaded = True

    def _current(self, user_id: str) -> dict:
        self._load()
        return self._state.get(
            user_id, {"presence": "offline", "status_msg": None, "last_active_ts": 0}
        )

    def content(self, user_id: str, state: dict | None = None) -> dict:
        """The ``m.presence`` content (and GET /presence/{userId}/status body) for a user."""
        st = state or self._current(user_id)
        now = self.hs.now_ms()
        out: dict[str, Any] = {"presence": st["presence"]}
        if st["last_active_ts"]:
            ago = max(0, now - st["last_active_ts"])
            out["last_active_ago"] = ago
            if st["presence"] == "online":
                out["currently_active"] = ago < CURRENTLY_ACTIVE_MS
        if st.get("status_msg") is not None:
            out["status_msg"] = st["status_msg"]
        return out

    def can_see(self, viewer: str, user_id: str) -> bool:
        """Presence is visible to the user and to users sharing a room with them."""
        return viewer == user_id or user_id in self.hs.store.get_users_sharing_room_with(viewer)

    async def _persist(self, user_id: str, state: dict) -> None:
        store = self.hs.store
        rooms = store.get_rooms_for_user(user_id)

        def fn(conn: Txn) -> None:
            store.set_presence_in(
                conn, user_id, state["presence"], state["status_msg"], state["last_active_ts"],
                rooms,
            )  # fmt: skip

        await store.transaction(fn)
        self._state[user_id] = state
        if self.room_edus is not None and rooms:
            self.room_edus.local_presence(user_id, rooms, self.content(user_id, state))

    def _arm_idle(self, user_id: str) -> None:
        self.cancel_timer(self._idle_timers.pop(user_id, None))
        self._idle_timers[user_id] = self.call_later(IDLE_MS / 1000, self._on_idle, user_id)

    def _on_idle(self, user_id: str) -> None:
        self._idle_timers.pop(user_id, None)
        st = self._current(user_id)
        if st["presence"] == "online" and self.hs.now_ms() - st["last_active_ts"] >= IDLE_MS:
            new = {**st, "presence": "unavailable"}
            self.spawn(self._persist(user_id, new))

    async def set_status(self, user_id: str, presence: str, status_msg: Any = None,
                         *, has_status_msg: bool = True) -> None:  # fmt: skip
        """PUT /presence/{userId}/status."""
        if not isinstance(presence, str) or presence not in PRESENCE_STATES:
            raise invalid_param("presence must be one of online, offline, unavailable")
        if status_msg is not None and not isinstance(status_msg, str):
            raise bad_json("status_msg must be a string")
        if status_msg is not None and len(status_msg) > MAX_STATUS_MSG:
            raise invalid_param(f"status_msg is longer than {MAX_STATUS_MSG}")
        cur = self._current(user_id)
        now = self.hs.now_ms()
        new = {
            "presence": presence,
            "status_msg": status_msg if has_status_msg else cur["status_msg"],
            "last_active_ts": now if presence == "online" else cur["last_active_ts"],
        }
        await self._persist(user_id, new)
        if presence == "online":
            self._arm_idle(user_id)

    async def set_from_sync(self, user_id: str, state: str | None) -> None:
        """/sync's ``set_presence``: ``online`` (the default, ``None``) marks the user active and
        online; ``unavailable`` sets that state; ``offline`` leaves presence unchanged. Writes
        only when the state changes."""
        state = state or "online"
        if state not in PRESENCE_STATES:
            raise invalid_param("set_presence must be one of online, offline, unavailable")
        if state == "offline":
            return
        cur = self._current(user_id)
        now = self.hs.now_ms()
        if state == "online":
            if cur["presence"] != "online":
                await self._persist(
                    user_id, {"presence": "online", "status_msg": cur["status_msg"],
                              "last_active_ts": now}
                )  # fmt: skip
            else:
                cur["last_active_ts"] = now
                self._state[user_id] = cur
            self._arm_idle(user_id)
        elif cur["presence"] != "unavailable":
            await self._persist(user_id, {**cur, "presence": "unavailable"})

    async def set_remote(
        self, user_id: str, presence: str, status_msg: str | None, last_active_ts: int
    ) -> None:
        """A remote user's presence (an ``m.presence`` EDU): persisted when the state or status
        message changes, else only ``last_active_ts`` moves (in memory)."""
        cur = self._current(user_id)
        new = {"presence": presence, "status_msg": status_msg, "last_active_ts": last_active_ts}
        if cur["presence"] == presence and cur.get("status_msg") == status_msg:
            self._state[user_id] = new
            return
        await self._persist(user_id, new)

    def bump_active(self, user_id: str) -> None:
        """Note activity (e.g. sending an event) for ``last_active_ago``."""
        cur = self._current(user_id)
        if cur["presence"] == "online":
            cur["last_active_ts"] = self.hs.now_ms()
            self._state[user_id] = cur

    def close(self) -> None:
        for handle in self._idle_timers.values():
            self.cancel_timer(handle)
        self._idle_timers.clear()

    # -- SyncContributor ------------------------------------------------------------------
    def contribute_global(self, ctx: SyncContext, response: dict) -> None:
        user_id = ctx.requester.user_id
        users = self.hs.store.get_users_sharing_room_with(user_id)
        users.add(user_id)
        since = ctx.since.pos if ctx.since is not None else None
        pfilter = ctx.filter["presence"]
        events = []
        for row in self.hs.store.presence_changes(users, since, ctx.upto.pos):
            uid = row["user_id"]
            self._load()
            st = self._state.get(uid) or {
                "presence": row["state"], "status_msg": row["status_msg"],
                "last_active_ts": row["last_active_ts"],
            }  # fmt: skip
            ev = {"type": "m.presence", "sender": uid, "content": self.content(uid, st)}
            if event_filter_allows(pfilter, ev):
                events.append(ev)
        if events:
            response.setdefault("presence", {}).setdefault("events", []).extend(events)

    def contribute_room(self, ctx: SyncContext, room_id: str, room: dict) -> None:
        return None

    def rooms_changed(self, ctx: SyncContext) -> set[str] | None:
        return set()
