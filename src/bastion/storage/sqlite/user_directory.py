"""The user directory's candidates (C-S API "User directory"; the matching and ranking are in
:mod:`bastion.core.user_directory`, the rules in :mod:`bastion.services.user_directory`).

No table of its own: who the requester may find is read from the current memberships, the
rooms' current join rules and the accounts; what they are called from the profiles (local
users) and their membership events (remote users). Deactivated and erased accounts are never
candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion.core.user_directory import DirectoryEntry
from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

#: Users who share a room with the requester (``?1``), and users joined to a room whose join
#: rule is ``public`` (the spec's "those who reside in public rooms").
_VISIBLE = (
    "SELECT m2.user_id FROM current_membership m1"
    " JOIN current_membership m2 ON m2.room_id = m1.room_id AND m2.membership = 'join'"
    " WHERE m1.user_id = ?1 AND m1.membership = 'join'"
    " UNION"
    " SELECT m.user_id FROM rooms r"
    " JOIN current_state c ON c.room_id = r.room_id AND c.type = 'm.room.join_rules'"
    "  AND c.state_key = ''"
    " JOIN events e ON e.event_id = c.event_id"
    " JOIN current_membership m ON m.room_id = r.room_id AND m.membership = 'join'"
    " WHERE json_extract(CAST(e.json AS TEXT), '$.content.join_rule') = 'public'"
)
#: Every local account (the ``user_directory_search_all_users`` switch).
_ALL_LOCAL = " UNION SELECT user_id FROM users"

#: A local user's profile field, a remote user's from their latest join event.
_LOCAL_FIELD = (
    "(SELECT json_extract(p.value, '$') FROM profiles p WHERE p.user_id = v.user_id"
    " AND p.key = '{key}')"
)
_REMOTE_FIELD = (
    "(SELECT json_extract(CAST(e.json AS TEXT), '$.content.{key}') FROM current_membership cm"
    " JOIN events e ON e.event_id = cm.event_id"
    " WHERE cm.user_id = v.user_id AND cm.membership = 'join'"
    " ORDER BY cm.stream_pos DESC LIMIT 1)"
)


def _field(key: str) -> str:
    return (
        f"CASE WHEN u.user_id IS NOT NULL THEN {_LOCAL_FIELD.format(key=key)}"
        f" ELSE {_REMOTE_FIELD.format(key=key)} END"
    )


def _contains(word: str) -> str:
    """``word`` as a LIKE pattern for "contains", with ``%``, ``_`` and ``\\`` escaped."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class UserDirectoryStore(StoreBase):
    def user_directory_candidates(
        self, requester: str, words: Sequence[str], all_local: bool
    ) -> list[DirectoryEntry]:
        """Users ``requester`` may find (sharing a room, or joined to a public room; with
        ``all_local`` every local account too), never deactivated or erased ones, narrowed to
        those whose user ID or display name contains every ASCII word of ``words`` (SQLite's
        ``LIKE`` folds ASCII case only, so other words are left to the caller's matching,
        which this never narrows past). The caller matches and ranks them exactly."""
        visible = _VISIBLE + (_ALL_LOCAL if all_local else "")
        sql = (
            f"WITH visible(user_id) AS ({visible}),"  # noqa: S608 - fixed SQL, values bound
            " named AS (SELECT v.user_id AS user_id,"
            f" {_field('displayname')} AS display_name, {_field('avatar_url')} AS avatar_url"
            " FROM visible v LEFT JOIN users u ON u.user_id = v.user_id"
            " WHERE (u.user_id IS NULL OR u.deactivated = 0)"
            " AND NOT EXISTS (SELECT 1 FROM erased_users x WHERE x.user_id = v.user_id))"
            " SELECT user_id, display_name, avatar_url FROM named"
        )
        params: list[str] = [requester]
        clauses = []
        for word in words:
            if not word.isascii():
                continue
            clauses.append("(user_id LIKE ? ESCAPE '\\' OR display_name LIKE ? ESCAPE '\\')")
            pattern = _contains(word)
            params += [pattern, pattern]
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return [
            DirectoryEntry(
                r[0],
                r[1] if isinstance(r[1], str) else None,
                r[2] if isinstance(r[2], str) else None,
            )
            for r in self.db.read(sql, params)
        ]
