"""Join-wave cooling (``hs.guard.cooling``): a room that had a wave of joins is closed to new
joins for a cooling period, then reopened.

:meth:`RoomCooling.start` (the ``cool_room`` action of the join-wave detector,
:func:`bastion.guard.detectors.join_wave`):

1. records the cooling (table ``guard_room_cooling``, migration 0005: the room, the previous
   ``m.room.join_rules`` content as JSON, the end, the reason) with a ``guard.throttle`` ledger
   record in the same transaction;
2. switches the room's join rule to ``knock`` (room versions 7+, C-S API "Knocking on a room")
   or ``invite`` (older versions), sent as the room's local member with the highest power level
   who may change ``m.room.join_rules`` (C-S API "m.room.join_rules"; the auth rules decide, as
   for any event of that user). Only a room that lets anyone in (``public``; ``restricted`` and
   ``knock_restricted``, whose allow list lets members of other rooms in) is switched;
3. tells the room's local admins (a server notice each, C-S API "Server Notices") and raises an
   alert;
4. reopens it when the period ends (a timer; after a restart the table re-arms it): the previous
   join rule is restored if the room still has the one cooling set (an admin who changed it
   meanwhile is not overridden), with a ``guard.throttle_lift`` record, and the admins are told.
   :meth:`RoomCooling.lift` does the same at once (a reversed ``cool_room`` decision).

While a room cools, :meth:`refuses_join` refuses joins through this server (local joins, and
make_join/send_join from other servers) of users who are not invited.

**When no local user may change the join rule** (the room's admins are all on other servers),
the room cannot be closed: only this server's own doors are shut (:meth:`refuses_join`), and
users of other servers can still join through their servers. The notice and the alert say so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bastion.core.room_versions import get_room_version
from bastion.core.state_keys import JOIN_RULES_KEY
from bastion.ledger import records
from bastion.services.lifecycle import BackgroundService
from bastion.services.security_records import clip, record_in

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

log = logging.getLogger(__name__)

__all__ = ["NOTICE_TYPE", "OPEN_RULES", "RoomCooling"]

#: The join rules that let people in without an invite: the ones cooling closes.
OPEN_RULES = ("public", "restricted", "knock_restricted")
#: ``server_notice_type`` of the notices to the room's admins.
NOTICE_TYPE = "org.bastion.guard.room_cooling"
#: The actor of the cooling's records.
ACTOR = "server"


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def _previous(text: object) -> dict[str, Any] | None:
    """The stored previous join rules content (JSON; a bare rule name is accepted too)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"join_rule": text}
    return value if isinstance(value, dict) and isinstance(value.get("join_rule"), str) else None


class CoolingTimers(BackgroundService):
    """The reopening timers and tasks of :class:`RoomCooling` (drained at shutdown with the
    other background services; started at server start, when the table is loaded)."""

    background_name = "room cooling"

    def __init__(self, cooling: RoomCooling) -> None:
        super().__init__()
        self.cooling = cooling

    def start(self) -> None:
        super().start()
        self.cooling.load(arm=True)


class RoomCooling:
    """``hs.guard.cooling``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        #: Its timers and tasks (``HomeServer.background_services``).
        self.background = CoolingTimers(self)
        #: room → (until_ms, reason): the rooms cooling now (the table, in memory).
        self._cooling: dict[str, tuple[int, str]] = {}
        self._timers: dict[str, Any] = {}
        self._loaded = False
        self._armed = False

    # ------------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------------
    def load(self, *, arm: bool) -> None:
        """Load the rooms cooling from the table (once); ``arm``: arm their reopening (at
        server start: a cooling outlives a restart)."""
        if not self._loaded:
            self._loaded = True
            for row in self.hs.store.list_room_cooling():
                self._cooling[row["room_id"]] = (int(row["until_ts"]), str(row["reason"]))
        if arm and not self._armed:
            self._armed = True
            for room_id, (until, _) in list(self._cooling.items()):
                if room_id not in self._timers:
                    self._arm(room_id, until)

    def _arm(self, room_id: str, until_ms: int) -> None:
        bg = self.background
        bg.cancel_timer(self._timers.pop(room_id, None))
        delay = max(0.0, (until_ms - self.hs.now_ms()) / 1000)
        self._timers[room_id] = bg.call_later(delay, self._due, room_id)

    def _due(self, room_id: str) -> None:
        self._timers.pop(room_id, None)
        self.background.spawn(self.restore(room_id))

    # ------------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------------
    def cooling_until(self, room_id: str, now_ms: int) -> int | None:
        """When the room's cooling ends (None: not cooling)."""
        self.load(arm=False)
        entry = self._cooling.get(room_id)
        if entry is None or now_ms >= entry[0]:
            return None
        return entry[0]

    def refuses_join(self, room_id: str, user_id: str, now_ms: int) -> str | None:
        """Why ``user_id`` may not join ``room_id`` now (the room cools and they are not
        invited), or None."""
        until = self.cooling_until(room_id, now_ms)
        if until is None:
            return None
        if self.hs.rooms.membership_of(room_id, user_id) == "invite":
            return None
        return (
            f"this room is closed to new joins until {_utc(until)} after a wave of joins; "
            "ask one of its members for an invite"
        )

    def admins(self, room_id: str) -> list[str]:
        """The room's joined local members who may change its join rule, highest power level
        first."""
        return self.hs.guard.actions.moderators(room_id, ("state", JOIN_RULES_KEY[0]))

    def _join_rules(self, room_id: str) -> dict[str, Any]:
        ev = self.hs.rooms.current_state_event(room_id, *JOIN_RULES_KEY)
        content = ev.get("content") if ev else None
        return dict(content) if isinstance(content, dict) else {"join_rule": "invite"}

    # ------------------------------------------------------------------------------------------
    # Cooling and reopening
    # ------------------------------------------------------------------------------------------
    async def cool(self, room_id: str, until_ms: int, reason: str) -> bool:
        """Close ``room_id`` to new joins until ``until_ms``; whether its join rule was
        changed (False: already cooling — the end is moved later — or no local user may
        change it, or it was not open)."""
        self.load(arm=False)
        now = self.hs.now_ms()
        store = self.hs.store
        head = self.hs.rooms.engine.head(room_id)
        if head is None:
            return False
        reason = clip(reason, 1000)
        current = self._cooling.get(room_id)
        if current is not None and now < current[0]:
            if until_ms > current[0]:
                await store.transaction(lambda conn: self._write_start(
                    conn, room_id, None, until_ms, reason, now, extended=True))  # fmt: skip
                self._cooling[room_id] = (until_ms, reason)
                self._arm(room_id, until_ms)
            return False
        previous = self._join_rules(room_id)
        rule = previous.get("join_rule")
        admins = self.admins(room_id)
        rv = get_room_version(head.room_version)
        new_rule = "knock" if rv.knock_join_rule else "invite"
        change = rule in OPEN_RULES and bool(admins)
        stored_prev = json.dumps(previous, sort_keys=True) if change else None
        await store.transaction(lambda conn: self._write_start(
            conn, room_id, stored_prev, until_ms, reason, now, new_rule=new_rule if change
            else None))  # fmt: skip
        self._cooling[room_id] = (until_ms, reason)
        self._arm(room_id, until_ms)
        changed = False
        if change:
            try:
                await self.hs.rooms.engine.append_local_event(
                    room_id, admins[0], JOIN_RULES_KEY[0], {"join_rule": new_rule},
                    JOIN_RULES_KEY[1],
                )  # fmt: skip
                changed = True
            except Exception as e:  # noqa: BLE001 - the auth rules may refuse; doors stay shut
                log.warning("cooling %s: could not change its join rule: %s", room_id, e)
        if changed:
            how = f"Its join rule is now '{new_rule}' (it was '{rule}')"
        elif rule not in OPEN_RULES:
            how = f"Its join rule ('{rule}') already requires an invite"
        else:
            how = ("No user of this server may change its join rule, so only joins through "
                   "this server are refused; users of other servers can still join")  # fmt: skip
        body = (
            f"Join wave in {room_id}: {reason}. The room is closed to new joins until "
            f"{_utc(until_ms)}. {how}. Invited users can still join"
            + ("; people may knock and be invited" if changed and new_rule == "knock" else "")
            + "."
        )
        details = {"room_id": room_id, "until_ms": until_ms, "previous_join_rule": rule,
                   "join_rule": new_rule if changed else rule, "changed": changed,
                   "admins": admins[:20]}  # fmt: skip
        await self._tell(room_id, admins, body, "guard.room_cooling", details)
        return changed

    async def start(self, room_id: str, until_ms: int, reason: str) -> None:
        """The ``cool_room`` action: :meth:`cool`."""
        await self.cool(room_id, until_ms, reason)

    def _write_start(
        self, conn: Txn, room_id: str, previous: str | None, until_ms: int, reason: str,
        now: int, *, new_rule: str | None = None, extended: bool = False,
    ) -> None:  # fmt: skip
        store = self.hs.store
        store.set_room_cooling_in(conn, room_id, previous, until_ms, reason)
        record_in(
            store, conn, records.ACTION_GUARD_THROTTLE, actor=ACTOR, ts=now, target=room_id,
            reason=reason,
            details={"kind": "room_cooling", "until_ms": until_ms, "extended": extended,
                     "join_rule": new_rule},
        )  # fmt: skip

    async def restore(self, room_id: str) -> bool:
        """Reopen ``room_id`` if its cooling has ended; whether its join rule was restored."""
        now = self.hs.now_ms()
        row = self.hs.store.get_room_cooling(room_id)
        if row is None:
            self._cooling.pop(room_id, None)
            return False
        if now < int(row["until_ts"]):
            self._cooling[room_id] = (int(row["until_ts"]), str(row["reason"]))
            self._arm(room_id, int(row["until_ts"]))
            return False
        return await self._reopen(room_id, row, now, ACTOR, "the cooling period ended")

    async def lift(self, room_id: str, *, actor: str = ACTOR,
                   reason: str = "the cooling was lifted") -> bool | None:  # fmt: skip
        """End ``room_id``'s cooling now (a reversed ``cool_room`` decision): the same path as
        the timer's (the previous join rule restored if the room still has the one cooling set,
        a ``guard.throttle_lift`` record by ``actor``, the admins told). Whether its join rule
        was restored; None when the room is not cooling."""
        self.load(arm=False)
        row = self.hs.store.get_room_cooling(room_id)
        if row is None:
            self._cooling.pop(room_id, None)
            return None
        self.background.cancel_timer(self._timers.pop(room_id, None))
        return await self._reopen(room_id, row, self.hs.now_ms(), actor, clip(reason, 1000))

    async def _reopen(self, room_id: str, row: Any, now: int, actor: str, why: str) -> bool:
        store = self.hs.store
        previous = _previous(row["previous_join_rule"])
        restored = False
        admins: list[str] = []
        if self.hs.rooms.engine.head(room_id) is not None:
            admins = self.admins(room_id)
            current = self._join_rules(room_id).get("join_rule")
            if previous is not None and current in ("knock", "invite") and admins:
                try:
                    await self.hs.rooms.engine.append_local_event(
                        room_id, admins[0], JOIN_RULES_KEY[0], previous, JOIN_RULES_KEY[1]
                    )
                    restored = True
                except Exception as e:  # noqa: BLE001 - logged; the cooling still ends
                    log.warning("reopening %s: could not restore its join rule: %s", room_id, e)

        def lift(conn: Txn) -> None:
            if store.delete_room_cooling_in(conn, room_id):
                record_in(
                    store, conn, records.ACTION_GUARD_THROTTLE_LIFT, actor=actor, ts=now,
                    target=room_id, reason=why,
                    details={"kind": "room_cooling", "restored": restored,
                             "join_rule": previous.get("join_rule") if previous else None},
                )  # fmt: skip

        await store.transaction(lift)
        self._cooling.pop(room_id, None)
        rule = previous.get("join_rule") if previous else None
        body = f"The join-wave cooling of {room_id} has ended" + (
            f": its join rule is '{rule}' again." if restored else "; its join rule was left as is."
        )  # fmt: skip
        await self._tell(
            room_id,
            admins,
            body,
            "guard.room_cooling_end",
            {"room_id": room_id, "restored": restored, "join_rule": rule},
        )
        return restored

    async def _tell(self, room_id: str, admins: list[str], body: str, kind: str,
                    details: Mapping[str, Any]) -> None:  # fmt: skip
        """A server notice to each local admin of the room, and an alert (neither may fail the
        cooling)."""
        for user_id in admins[:20]:
            try:
                await self.hs.server_notices.send_notice(
                    user_id, body, notice_type=NOTICE_TYPE, extra={"room_id": room_id}
                )
            except Exception as e:  # noqa: BLE001 - a notice must not stop the cooling
                log.warning("cooling %s: no notice to %s: %s", room_id, user_id, e)
        try:
            await self.hs.guard.alerts.alert(kind, body, details)
        except Exception as e:  # noqa: BLE001
            log.warning("cooling %s: alert failed: %s", room_id, e)
