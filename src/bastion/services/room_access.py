"""Who may read a room, and which of its events (C-S API "History visibility", server
behaviour; "Leaving rooms": former members read up to their leave)."""

from __future__ import annotations

from bastion.core.state_keys import HISTORY_VISIBILITY_KEY as HV_KEY
from bastion.core.visibility import is_event_visible, normalise_visibility
from bastion.errors import forbidden
from bastion.services.room_engine import RoomEngine
from bastion.storage.interface import EventRow, StateMap, Store


class RoomAccess:
    """Read access and history visibility (``hs.rooms.access``)."""

    def __init__(self, store: Store, engine: RoomEngine) -> None:
        self.store = store
        self.engine = engine

    def state_at_group(self, group: int | None) -> StateMap:
        return self.store.get_state_group(group)

    def history_visibility_now(self, room_id: str) -> str:
        ev = self.engine.current_state_event(room_id, *HV_KEY)
        v = ev["content"].get("history_visibility") if ev else None
        return v if isinstance(v, str) else "shared"

    def read_access(self, user_id: str, room_id: str) -> int | None:
        """Whether ``user_id`` may read the room: returns the stream position reads are capped
        at (None: no cap). Joined: no cap; left or banned after having joined: up to their
        leave; world_readable rooms: no cap. Otherwise 403 (unknown rooms too: nothing about
        their existence leaks)."""
        row = self.store.get_membership(room_id, user_id)
        if row is not None and row["membership"] == "join":
            return None
        if self.engine.head(room_id) is not None and self.history_visibility_now(room_id) == (
            "world_readable"
        ):
            return None
        if row is not None and row["membership"] in ("leave", "ban"):
            history = self.store.get_user_membership_history(user_id, room_id)
            if any(m == "join" for m, _ in history):
                return row["stream_pos"]
        raise forbidden("you are not a member of this room")

    def filter_visible(self, user_id: str, rows: list[EventRow]) -> list[EventRow]:
        """The rows the user may see (C-S "History visibility", server behaviour)."""
        if not rows:
            return rows
        joins: dict[str, list[int]] = {}
        contents: dict[str, dict | None] = {}

        def content_of(eid: str | None) -> dict | None:
            if eid is None:
                return None
            if eid not in contents:
                ev = self.store.get_event(eid)
                contents[eid] = ev.get("content") if ev else None
            return contents[eid]

        out = []
        for row in rows:
            room_id = row.room_id
            if room_id not in joins:
                joins[room_id] = [
                    p
                    for m, p in self.store.get_user_membership_history(user_id, room_id)
                    if m == "join"
                ]
            state = self.state_at_group(row.sg_before)
            hv = content_of(state.get(HV_KEY)) or {}
            vis = [normalise_visibility(hv.get("history_visibility"))]
            mem_c = content_of(state.get(("m.room.member", user_id))) or {}
            mems = [mem_c.get("membership")]
            if row.type == "m.room.history_visibility" and row.state_key == "":
                vis.append(normalise_visibility(row.event["content"].get("history_visibility")))
            if row.type == "m.room.member" and row.state_key == user_id:
                mems.append(row.event["content"].get("membership"))
            joined_later = any(p > row.stream_pos for p in joins[room_id])
            if is_event_visible(tuple(vis), tuple(mems), joined_later):
                out.append(row)
        return out
