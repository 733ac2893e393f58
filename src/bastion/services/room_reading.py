"""Reading rooms for clients: the state a reader sees, /messages pagination, /context, /members
and /joined_members (C-S API "Getting events for a room", "Room membership"), with read access
and history visibility applied (:mod:`bastion.services.room_access`)."""

from __future__ import annotations

from bastion.errors import forbidden, not_found
from bastion.services.room_access import RoomAccess
from bastion.storage.interface import EventRow, StateMap, Store


class RoomReader:
    """State, messages, context and members as clients read them (``hs.rooms.reader``)."""

    def __init__(self, store: Store, access: RoomAccess) -> None:
        self.store = store
        self.access = access

    def state_for_reader(self, user_id: str, room_id: str) -> StateMap:
        """The state a reader sees: current for members, at their leave for former members."""
        cap = self.access.read_access(user_id, room_id)
        if cap is None:
            return self.store.get_current_state_ids(room_id)
        return self.store.get_state_group(self.store.room_group_at(room_id, cap))

    def state_events(self, state: StateMap) -> list[EventRow]:
        rows = self.store.get_event_rows(list(state.values()))
        return sorted(rows.values(), key=lambda r: r.stream_pos)

    def paginate(
        self, requester, room_id: str, from_pos: int | None, to_pos: int | None,
        backwards: bool, limit: int, event_filter: dict | None,
    ) -> tuple[list[EventRow], int | None, int]:  # fmt: skip
        """GET /messages: visible events from ``from_pos`` in the direction asked. Returns
        (rows, end position or None when the end was reached, start position)."""
        from bastion.services.filtering import event_filter_allows

        cap = self.access.read_access(requester.user_id, room_id)
        top = self.store.current_pos if cap is None else cap
        if from_pos is None:
            from_pos = top if backwards else 0
        start = from_pos
        out: list[EventRow] = []
        cursor = min(from_pos, top) if backwards else from_pos
        reached_end = False
        for _ in range(20):
            need = limit - len(out)
            batch = max(need * 2, 20)
            if backwards:
                lower = to_pos if to_pos is not None else None
                rows = self.store.get_room_events(room_id, after=lower, upto=cursor, limit=batch)
            else:
                upper = top if to_pos is None else min(to_pos, top)
                rows = self.store.get_room_events(
                    room_id, after=cursor, upto=upper, limit=batch, backwards=False
                )
            if not rows:
                reached_end = True
                break
            visible = {r.event_id for r in self.access.filter_visible(requester.user_id, rows)}
            for r in rows:
                cursor = r.stream_pos - 1 if backwards else r.stream_pos
                if r.event_id not in visible:
                    continue
                if event_filter is not None and not event_filter_allows(
                    event_filter, r.event, room_id
                ):
                    continue
                out.append(r)
                if len(out) >= limit:
                    break
            if len(out) >= limit:
                break
            if len(rows) < batch:
                reached_end = True
                break
        return out, (None if reached_end else cursor), start

    def context(
        self, requester, room_id: str, event_id: str, limit: int, event_filter: dict | None
    ) -> dict:
        """GET /rooms/{roomId}/context/{eventId} pieces: the event, events before and after,
        and the state at the last returned event."""
        cap = self.access.read_access(requester.user_id, room_id)
        row = self.store.get_event_row(event_id, served=True)
        if row is None or row.room_id != room_id or (cap is not None and row.stream_pos > cap):
            raise not_found("event not found")
        if not self.access.filter_visible(requester.user_id, [row]):
            raise not_found("event not found")
        before_n = limit // 2
        after_n = limit - before_n
        before, b_end, _ = self.paginate(
            requester, room_id, row.stream_pos - 1, None, True, before_n, event_filter
        )
        after, a_end, _ = self.paginate(
            requester, room_id, row.stream_pos, None, False, after_n, event_filter
        )
        last = after[-1] if after else row
        start = b_end if b_end is not None else (before[-1].stream_pos - 1 if before else
                                                 row.stream_pos - 1)  # fmt: skip
        end = a_end if a_end is not None else last.stream_pos
        return {
            "event": row,
            "before": before,
            "after": after,
            "start": start,
            "end": end,
            "state": self.state_events(self.store.get_state_group(last.sg_after)),
        }

    #: timestamp_to_event looks at most this many events (pages of 50) for a visible one.
    TS_SCAN_PAGES = 20

    def timestamp_to_event(
        self, user_id: str, room_id: str, ts: int, forwards: bool
    ) -> EventRow | None:
        """GET /v1/rooms/{roomId}/timestamp_to_event: the event the user may see (read access
        and history visibility, as for /messages and /context) closest to ``ts`` — the first at
        or after it when ``forwards``, else the last at or before it; None when there is none
        (among the first ``TS_SCAN_PAGES`` pages of candidates). 403 for a non-member."""
        cap = self.access.read_access(user_id, room_id)
        key: tuple[int, int] | None = None
        for _ in range(self.TS_SCAN_PAGES):
            rows = self.store.get_room_events_by_ts(room_id, ts, forwards=forwards, after=key)
            if not rows:
                return None
            last = rows[-1]
            key = (last.event.get("origin_server_ts", 0), last.stream_pos)
            readable = [r for r in rows if cap is None or r.stream_pos <= cap]
            visible = {r.event_id for r in self.access.filter_visible(user_id, readable)}
            for r in readable:
                if r.event_id in visible:
                    return r
            if len(rows) < 50:
                return None
        return None

    def members(
        self, requester, room_id: str, at_pos: int | None, membership: str | None,
        not_membership: str | None,
    ) -> list[EventRow]:  # fmt: skip
        cap = self.access.read_access(requester.user_id, room_id)
        pos = at_pos
        if cap is not None:
            pos = cap if pos is None else min(pos, cap)
        if pos is None:
            state = self.store.get_current_state_ids(room_id)
        else:
            state = self.store.get_state_group(self.store.room_group_at(room_id, pos))
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        out = []
        for r in self.store.get_event_rows(ids).values():
            m = r.event.get("content", {}).get("membership")
            if membership is not None and m != membership:
                continue
            if not_membership is not None and m == not_membership:
                continue
            out.append(r)
        out.sort(key=lambda r: r.stream_pos)
        return out

    def joined_members(self, requester, room_id: str) -> dict:
        row = self.store.get_membership(room_id, requester.user_id)
        if row is None or row["membership"] != "join":
            raise forbidden("you are not joined to this room")
        state = self.store.get_current_state_ids(room_id)
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        joined = {}
        for r in self.store.get_event_rows(ids).values():
            c = r.event.get("content", {})
            if c.get("membership") != "join":
                continue
            info = {}
            if isinstance(c.get("displayname"), str):
                info["display_name"] = c["displayname"]
            if isinstance(c.get("avatar_url"), str):
                info["avatar_url"] = c["avatar_url"]
            joined[r.state_key] = info
        return joined
