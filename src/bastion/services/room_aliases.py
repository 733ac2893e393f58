"""Room aliases as rooms use them (C-S API "Room aliases"): resolving an alias of ours to its
room, and checking the aliases an ``m.room.canonical_alias`` event names."""

from __future__ import annotations

from bastion.core.identifiers import parse_room_alias
from bastion.errors import M_BAD_ALIAS, MatrixError, invalid_param, not_found
from bastion.storage.interface import Store


class RoomAliases:
    """Alias lookups for rooms (``hs.rooms.aliases``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def resolve_room(self, room_id_or_alias: str) -> str:
        """A room ID, or the room an alias of ours points to (404 otherwise)."""
        if room_id_or_alias.startswith("#"):
            try:
                parse_room_alias(room_id_or_alias)
            except MatrixError:
                raise invalid_param("invalid room alias") from None
            row = self.store.get_alias(room_id_or_alias)
            if row is None:
                raise not_found("room alias not found")
            return row["room_id"]
        if not room_id_or_alias.startswith("!"):
            raise invalid_param("expected a room ID or a room alias")
        return room_id_or_alias

    def check_canonical_alias(self, room_id: str, content: dict) -> None:
        aliases = []
        alias = content.get("alias")
        if alias is not None:
            aliases.append(alias)
        alt = content.get("alt_aliases")
        if alt is not None:
            if not isinstance(alt, list):
                raise invalid_param("'alt_aliases' must be an array")
            aliases.extend(alt)
        for a in aliases:
            try:
                parse_room_alias(a)
            except MatrixError:
                raise invalid_param(f"invalid room alias {str(a)[:80]!r}") from None
            row = self.store.get_alias(a)
            if row is None or row["room_id"] != room_id:
                raise MatrixError(M_BAD_ALIAS, f"{a} does not point to this room")
