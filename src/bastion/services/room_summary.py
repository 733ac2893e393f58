"""Room summaries (C-S API "Room Summaries", ``GET /v1/room_summary/{roomIdOrAlias}``): what a
user may learn about a room before joining it. Who may see it is
:func:`bastion.core.room_summary.summary_visible`; the fields are the published room directory's
(:meth:`bastion.services.room_directory.RoomDirectory.room_summary_fields`) with the room's
version, encryption, allowed rooms and the requester's membership.

A room this server is not joined to (a room on another server, one every local user has left, an
invite received over federation) is asked of the ``via`` servers over federation, through their
space hierarchy endpoint, as Synapse does
(:meth:`bastion.services.space_hierarchy.SpaceHierarchy.remote_room_summary`: bounded requests
per user, answers checked, trimmed and cached); with no ``via``, or no answer, it is 404. An
alias of another server is not resolved (404): the client gives the room ID.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.core.room_summary import allowed_room_ids, summary_visible
from bastion.core.room_versions import get_room_version
from bastion.errors import not_found

if TYPE_CHECKING:
    from bastion.services.rooms import RoomService
    from bastion.services.space_hierarchy import SpaceHierarchy

#: The rooms of a join rule's ``allow`` list looked at, at most (a hostile list may be long).
MAX_ALLOWED_ROOMS = 50


class RoomSummaries:
    def __init__(self, rooms: RoomService, hierarchy: SpaceHierarchy) -> None:
        self.rooms = rooms
        self.store = rooms.store
        self.hierarchy = hierarchy

    async def summary(self, user_id: str, room_id_or_alias: str, via: list[str]) -> dict[str, Any]:
        """The summary of a room ``user_id`` may see; 404 ``M_NOT_FOUND`` alike for a room
        that does not exist, one no server asked knows, and one the user may not see."""
        rooms = self.rooms
        room_id = rooms.resolve_room(room_id_or_alias)  # 400 for neither an ID nor an alias
        version = self.store.get_room_version(room_id)
        if version is None or not any(
            rooms.is_local(u) for u in self.store.get_joined_users(room_id)
        ):
            remote = await self.hierarchy.remote_room_summary(user_id, room_id, via)
            if remote is None:
                raise not_found("room not found")
            # The spec's enum; no membership event here: "leave", as for local rooms.
            return {**remote, "membership": rooms.membership_of(room_id, user_id) or "leave"}
        rv = get_room_version(version)
        membership = rooms.membership_of(room_id, user_id)
        jr = rooms.current_state_event(room_id, "m.room.join_rules", "")
        jr_content = jr.get("content", {}) if jr else {}
        jr_content = jr_content if isinstance(jr_content, dict) else {}
        hv = rooms.current_state_event(room_id, "m.room.history_visibility", "")
        hv_content = hv.get("content", {}) if hv else {}
        visibility = hv_content.get("history_visibility") if isinstance(hv_content, dict) else None
        allowed = allowed_room_ids(jr_content, rv)
        in_allowed = any(
            rooms.membership_of(r, user_id) == "join" for r in allowed[:MAX_ALLOWED_ROOMS]
        )
        if not summary_visible(
            membership=membership,
            join_rule=jr_content.get("join_rule"),
            history_visibility=visibility,
            rv=rv,
            joined_to_an_allowed_room=in_allowed,
        ):
            raise not_found("room not found")
        out = rooms.directory.room_summary_fields(room_id)
        out["room_version"] = version
        enc = rooms.current_state_event(room_id, "m.room.encryption", "")
        algorithm = (enc.get("content") or {}).get("algorithm") if enc else None
        if isinstance(algorithm, str):
            out["encryption"] = algorithm
        if allowed:
            out["allowed_room_ids"] = allowed
        # The spec's enum; a user with no membership event gets "leave", as Synapse answers.
        out["membership"] = membership or "leave"
        return out
