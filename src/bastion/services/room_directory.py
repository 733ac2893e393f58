"""The room directory: this server's published rooms (C-S API "Listing rooms"; S-S API
"Public Room Directory")."""

from __future__ import annotations

from bastion.errors import invalid_param
from bastion.storage.interface import Store


class RoomDirectory:
    """Published rooms and their summaries (``hs.rooms.directory``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def public_rooms(self, limit: int | None, since: str | None, term: str | None) -> dict:
        """This server's published rooms, largest first, optionally filtered by a search term,
        paged with ``since`` tokens ``o<offset>`` (C-S API "Listing rooms"; also served to other
        servers, S-S API "Public Room Directory")."""
        chunk = [self.room_summary_fields(r) for r in self.store.get_public_room_ids()]
        if term:
            t = term.casefold()
            chunk = [
                c for c in chunk
                if any(t in str(c.get(k, "")).casefold()
                       for k in ("name", "topic", "canonical_alias", "room_id"))
            ]  # fmt: skip
        chunk.sort(key=lambda c: (-c["num_joined_members"], c["room_id"]))
        total = len(chunk)
        offset = 0
        if since:
            if not since.startswith("o") or not since[1:].isdigit() or len(since) > 12:
                raise invalid_param("invalid 'since' token")
            offset = int(since[1:])
        end = total if limit is None else offset + limit
        out: dict = {"chunk": chunk[offset:end], "total_room_count_estimate": total}
        if end < total:
            out["next_batch"] = f"o{end}"
        if offset > 0:
            out["prev_batch"] = f"o{max(0, offset - (limit or offset))}"
        return out

    def room_summary_fields(self, room_id: str) -> dict:
        """For the public room directory: name, topic, alias, avatar, counts, join rule."""
        state = self.store.get_current_state_ids(room_id)
        rows = self.store.get_event_rows(
            [
                eid
                for k, eid in state.items()
                if k[1] == ""
                and k[0]
                in (
                    "m.room.name",
                    "m.room.topic",
                    "m.room.canonical_alias",
                    "m.room.avatar",
                    "m.room.join_rules",
                    "m.room.history_visibility",
                    "m.room.guest_access",
                    "m.room.create",
                )  # fmt: skip
            ]
        )
        c = {r.type: r.event.get("content", {}) for r in rows.values()}
        out: dict = {
            "room_id": room_id,
            "num_joined_members": len(self.store.get_joined_users(room_id)),
            "world_readable": c.get("m.room.history_visibility", {}).get("history_visibility")
            == "world_readable",
            "guest_can_join": c.get("m.room.guest_access", {}).get("guest_access") == "can_join",
            "join_rule": c.get("m.room.join_rules", {}).get("join_rule", "invite"),
        }
        for key, etype, field_ in (
            ("name", "m.room.name", "name"),
            ("topic", "m.room.topic", "topic"),
            ("canonical_alias", "m.room.canonical_alias", "alias"),
            ("avatar_url", "m.room.avatar", "url"),
            ("room_type", "m.room.create", "type"),
        ):
            v = c.get(etype, {}).get(field_)
            if isinstance(v, str):
                out[key] = v
        return out
