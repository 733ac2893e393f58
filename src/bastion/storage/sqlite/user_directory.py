"""The user directory's reads (C-S API "User directory"; the matching, ranking and prefix index
are in :mod:`bastion.core.user_directory`, the rules in :mod:`bastion.services.user_directory`).

No table of its own (only the ``directory_generation`` counter, migration 0018): who the
requester may find is read from the current memberships, the rooms' current join rules and the
accounts; what they are called from the profiles (local users) and their membership events
(remote users). Deactivated and erased accounts are never
found.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from bastion.core.user_directory import DirectoryEntry
from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

#: A room whose join rule is ``public`` (the spec's "those who reside in public rooms"), for a
#: room ID in ``{room}``: its current ``m.room.join_rules`` event says so.
_PUBLIC_ROOM = (
    "EXISTS (SELECT 1 FROM current_state c JOIN events e ON e.event_id = c.event_id"
    " WHERE c.room_id = {room} AND c.type = 'm.room.join_rules' AND c.state_key = ''"
    " AND json_extract(CAST(e.json AS TEXT), '$.content.join_rule') = 'public')"
)

#: The requester (``?1``) may find a user ``u.user_id``: joined to a room the requester is
#: joined to, or to a public room. Checked per candidate, over the candidate's own rooms, so a
#: search costs the rooms of the few candidates it checks, never a scan of every room.
_SHARES_OR_PUBLIC = (
    "EXISTS (SELECT 1 FROM current_membership m WHERE m.user_id = u.user_id"
    " AND m.membership = 'join' AND (EXISTS (SELECT 1 FROM current_membership r"
    "  WHERE r.room_id = m.room_id AND r.user_id = ?1 AND r.membership = 'join')"
    " OR " + _PUBLIC_ROOM.format(room="m.room_id") + "))"
)


def _entry(r) -> DirectoryEntry:
    return DirectoryEntry(
        r[0], r[1] if isinstance(r[1], str) else None, r[2] if isinstance(r[2], str) else None
    )


class UserDirectoryStore(StoreBase):
    def user_directory_generation(self) -> int:
        """Moves whenever an account is created, deleted or (de)activated, a profile field is
        set or removed, or a room membership changes (migration 0018's triggers): for the
        cached index of :meth:`user_directory_remote_memberships`."""
        row = self.db.read_one("SELECT n FROM directory_generation WHERE k = 1")
        return int(row[0]) if row else 0

    def user_directory_local_version(self) -> tuple[int, ...]:
        """Changes whenever a local account is created or a profile field is set or removed
        (deactivation removes the profile), not when memberships change: the row counts and
        highest row IDs of ``users`` and ``profiles`` (a replaced row gets a new, higher row
        ID). For the cached index of :meth:`user_directory_local_entries`."""
        row = self.db.read_one(
            "SELECT (SELECT COUNT(*) FROM users), (SELECT MAX(rowid) FROM users),"
            " (SELECT COUNT(*) FROM profiles), (SELECT MAX(rowid) FROM profiles)"
        )
        return tuple(v or 0 for v in row) if row else (0, 0, 0, 0)

    def user_directory_local_entries(self) -> list[DirectoryEntry]:
        """Every local account not deactivated, with its display name and avatar."""
        return [
            _entry(r)
            for r in self.db.read(
                "SELECT u.user_id, json_extract(d.value, '$'), json_extract(a.value, '$')"
                " FROM users u"
                " LEFT JOIN profiles d ON d.user_id = u.user_id AND d.key = 'displayname'"
                " LEFT JOIN profiles a ON a.user_id = u.user_id AND a.key = 'avatar_url'"
                " WHERE u.deactivated = 0"
            )
        ]

    def user_directory_remote_memberships(
        self, server_name: str
    ) -> list[tuple[DirectoryEntry, str, int]]:
        """Every room membership of a user of another server who is joined: the user as the
        membership event names them, the room, and the membership's stream position."""
        suffix = ":" + server_name
        return [
            (_entry(r), r[3], int(r[4]))
            for r in self.db.read(
                "SELECT m.user_id, json_extract(CAST(e.json AS TEXT), '$.content.displayname'),"
                " json_extract(CAST(e.json AS TEXT), '$.content.avatar_url'),"
                " m.room_id, m.stream_pos"
                " FROM current_membership m JOIN events e ON e.event_id = m.event_id"
                " WHERE m.membership = 'join' AND substr(m.user_id, -length(?1)) != ?1",
                (suffix,),
            )
        ]

    def user_directory_visible_local(
        self, requester: str, user_ids: Sequence[str], all_local: bool
    ) -> set[str]:
        """Those of ``user_ids`` (local) that ``requester`` may find: not deactivated, not
        erased, and joined to a room the requester is joined to or to a room whose join rule is
        ``public`` (with ``all_local``, any local account)."""
        out: set[str] = set()
        ids = list(dict.fromkeys(user_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join(f"?{n}" for n in range(3, 3 + len(chunk)))
            sql = (
                "SELECT u.user_id FROM users u"  # noqa: S608 - marks only
                f" WHERE u.user_id IN ({marks}) AND u.deactivated = 0"
                " AND NOT EXISTS (SELECT 1 FROM erased_users x WHERE x.user_id = u.user_id)"
                f" AND (?2 = 1 OR {_SHARES_OR_PUBLIC})"
            )
            # ?1 the requester, ?2 all_local, ?3... the user IDs.
            out.update(r[0] for r in self.db.read(sql, [requester, int(all_local), *chunk]))
        return out

    def user_directory_visible_rooms(self, requester: str, room_ids: Sequence[str]) -> set[str]:
        """Those of ``room_ids`` whose joined members ``requester`` may find: the rooms the
        requester is joined to and the rooms whose join rule is ``public``."""
        sql = (
            "SELECT k.value FROM json_each(?2) k"
            " WHERE EXISTS (SELECT 1 FROM current_membership r WHERE r.room_id = k.value"
            "  AND r.user_id = ?1 AND r.membership = 'join')"
            " OR " + _PUBLIC_ROOM.format(room="k.value")
        )
        ids = json.dumps(list(dict.fromkeys(room_ids)))
        return {r[0] for r in self.db.read(sql, [requester, ids])}
