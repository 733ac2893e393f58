"""The user directory's reads (C-S API "User directory"; the matching, ranking and prefix index
are in :mod:`bastion.core.user_directory`, the rules in :mod:`bastion.services.user_directory`).

No table of its own: who the requester may find is read from the current memberships, the
rooms' current join rules and the accounts; what they are called from the profiles (local
users) and their membership events (remote users). Deactivated and erased accounts are never
found.
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion.core.user_directory import DirectoryEntry
from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

#: The rooms whose joined members the requester may find: the rooms they are joined to
#: (``?1``), and the rooms whose join rule is ``public`` (the spec's "those who reside in public
#: rooms"). Materialised once per search: a few rows, each candidate is checked against them.
_ROOMS = (
    "mine(room_id) AS MATERIALIZED (SELECT room_id FROM current_membership"
    "  WHERE user_id = ?1 AND membership = 'join'),"
    " pub(room_id) AS MATERIALIZED (SELECT r.room_id FROM rooms r"
    "  CROSS JOIN current_state c ON c.room_id = r.room_id AND c.type = 'm.room.join_rules'"
    "   AND c.state_key = ''"
    "  JOIN events e ON e.event_id = c.event_id"
    "  WHERE json_extract(CAST(e.json AS TEXT), '$.content.join_rule') = 'public'),"
    " seen(room_id) AS MATERIALIZED (SELECT room_id FROM mine UNION SELECT room_id FROM pub)"
)

#: Remote users joined to one of those rooms (not of this server: ``?3`` is ``:server_name``),
#: named by their membership event, in whose user ID or display name every word starts a word
#: (``{remote_filter}``). One row per room: the caller keeps the latest.
_REMOTE = (
    "SELECT m.user_id, json_extract(CAST(e.json AS TEXT), '$.content.displayname'),"
    " json_extract(CAST(e.json AS TEXT), '$.content.avatar_url')"
    " FROM seen s JOIN current_membership m ON m.room_id = s.room_id AND m.membership = 'join'"
    " JOIN events e ON e.event_id = m.event_id"
    " WHERE substr(m.user_id, -length(?3)) != ?3{remote_filter}"
    " ORDER BY m.stream_pos DESC"
)


def _starts_a_word(word: str) -> str:
    """A GLOB pattern matching a text, lower-cased and with a space before it, in which
    ``word`` (lower-case ASCII) starts a word: after a character that is not an ASCII letter or
    digit. ``*``, ``?`` and ``[`` of the word are matched literally (each as a one-character
    class)."""
    escaped = "".join(f"[{c}]" if c in "*?[" else c for c in word)
    return f"*[^a-z0-9]{escaped}*"


def _contains(word: str) -> str:
    """A LIKE pattern (``ESCAPE '\\'``) for "contains ``word``", ASCII case folded."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _matches(expr: str, n: int) -> str:
    """SQL: ``expr`` contains word ``?n`` (a cheap test first), where it starts a word
    (``?n+1``)."""
    return f"({expr} LIKE ?{n} ESCAPE '\\' AND (' ' || lower({expr})) GLOB ?{n + 1})"


def _entry(r) -> DirectoryEntry:
    return DirectoryEntry(
        r[0], r[1] if isinstance(r[1], str) else None, r[2] if isinstance(r[2], str) else None
    )


class UserDirectoryStore(StoreBase):
    def user_directory_local_version(self) -> tuple[int, ...]:
        """Changes whenever a local account is created or a profile field is set or removed
        (deactivation removes the profile): the row counts and highest row IDs of ``users`` and
        ``profiles`` (a replaced row gets a new, higher row ID). For the cached index of
        :meth:`user_directory_local_entries`."""
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
                f"WITH {_ROOMS} SELECT u.user_id FROM users u"  # noqa: S608 - marks only
                f" WHERE u.user_id IN ({marks}) AND u.deactivated = 0"
                " AND NOT EXISTS (SELECT 1 FROM erased_users x WHERE x.user_id = u.user_id)"
                " AND (?2 = 1 OR EXISTS (SELECT 1 FROM current_membership m"
                "  WHERE m.user_id = u.user_id AND m.membership = 'join'"
                "  AND m.room_id IN seen))"
            )
            # ?1 the requester, ?2 all_local, ?3... the user IDs.
            out.update(r[0] for r in self.db.read(sql, [requester, int(all_local), *chunk]))
        return out

    def user_directory_remote_candidates(
        self, requester: str, words: Sequence[str], server_name: str
    ) -> list[DirectoryEntry]:
        """Remote users joined to a room ``requester`` is joined to or to a room whose join
        rule is ``public``, named by their latest such membership event, narrowed to those in
        whose user ID or display name every ASCII word of ``words`` starts a word (SQLite's
        ``lower`` and ``GLOB`` know ASCII only: a non-ASCII word is left out, a non-ASCII
        character counts as a separator), so a superset of the matches of
        :class:`bastion.core.user_directory.Matcher`, which the caller applies."""
        # ?1 the requester, ?2 unused here, ?3 ":server_name", then two patterns per word.
        params: list[object] = [requester, 0, ":" + server_name]
        remote_filter = ""
        remote_name = "json_extract(CAST(e.json AS TEXT), '$.content.displayname')"
        for word in (w for w in words if w.isascii()):
            params += [_contains(word), _starts_a_word(word)]
            n = len(params) - 1
            remote_filter += f" AND ({_matches('m.user_id', n)} OR {_matches(remote_name, n)})"
        sql = f"WITH {_ROOMS} " + _REMOTE.format(remote_filter=remote_filter)
        out: dict[str, DirectoryEntry] = {}
        for r in self.db.read(sql, params):
            out.setdefault(r[0], _entry(r))  # the first row: the latest membership
        return list(out.values())
