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

#: Local accounts in whose user ID or display name the most selective word starts a word
#: (``{narrow_uid}``, ``{narrow_name}``: one scan of each table, most searches stop there),
#: then those of them never deactivated or erased in whose user ID or display name every word
#: starts a word (``{local_filter}``) and who are joined to one of those rooms (or to any, with
#: ``?2`` = 1: the ``user_directory_search_all_users`` switch).
_LOCAL = (
    ", cand(user_id) AS MATERIALIZED ("
    "SELECT user_id FROM users WHERE 1{narrow_uid}"
    " UNION SELECT user_id FROM profiles WHERE key = 'displayname'{narrow_name})"
    " SELECT u.user_id, json_extract(p.value, '$'),"
    " (SELECT json_extract(a.value, '$') FROM profiles a WHERE a.user_id = u.user_id"
    "  AND a.key = 'avatar_url')"
    " FROM cand k CROSS JOIN users u ON u.user_id = k.user_id"
    " LEFT JOIN profiles p ON p.user_id = u.user_id AND p.key = 'displayname'"
    " WHERE u.deactivated = 0{local_filter}"
    " AND (?2 = 1 OR EXISTS (SELECT 1 FROM current_membership m WHERE m.user_id = u.user_id"
    "  AND m.membership = 'join' AND m.room_id IN seen))"
    " AND NOT EXISTS (SELECT 1 FROM erased_users x WHERE x.user_id = u.user_id)"
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


class UserDirectoryStore(StoreBase):
    def user_directory_candidates(
        self, requester: str, words: Sequence[str], all_local: bool, server_name: str
    ) -> list[DirectoryEntry]:
        """Users ``requester`` may find: local and remote users joined to a room the requester
        is joined to or to a room whose join rule is ``public`` (with ``all_local``, every
        local account too); never a deactivated or erased account. Narrowed to those whose user
        ID or display name every ASCII word of ``words`` starts a word (SQLite's ``lower`` and
        ``GLOB`` know ASCII only: a non-ASCII word is left out, and a non-ASCII character counts
        as a word's separator), so a superset of the matches of
        :class:`bastion.core.user_directory.Matcher`, which the caller applies and ranks by."""
        # ?1 the requester, ?2 all_local, ?3 ":server_name", then two patterns per word.
        params: list[object] = [requester, int(all_local), ":" + server_name]
        local_filter, remote_filter, narrow_uid, narrow_name = "", "", "", ""
        usable = [w for w in words if w.isascii()]
        name = "json_extract(p.value, '$')"
        remote_name = "json_extract(CAST(e.json AS TEXT), '$.content.displayname')"
        for word in usable:
            params += [_contains(word), _starts_a_word(word)]
            n = len(params) - 1
            local_filter += f" AND ({_matches('u.user_id', n)} OR {_matches(name, n)})"
            remote_filter += f" AND ({_matches('m.user_id', n)} OR {_matches(remote_name, n)})"
        if usable:
            longest = max(usable, key=len)  # the most selective, as a rule
            n = 3 + 2 * usable.index(longest) + 1
            narrow_uid = " AND " + _matches("user_id", n)
            narrow_name = " AND " + _matches("json_extract(value, '$')", n)
        sql = (
            f"WITH {_ROOMS}"  # noqa: S608 - fixed SQL; the values are bound
            + _LOCAL.format(
                narrow_uid=narrow_uid, narrow_name=narrow_name, local_filter=local_filter
            )
            + " UNION ALL SELECT * FROM ("
            + _REMOTE.format(remote_filter=remote_filter)
            + ")"
        )
        out: dict[str, DirectoryEntry] = {}
        for r in self.db.read(sql, params):
            if r[0] in out:
                continue  # a remote user's earlier (older) membership
            out[r[0]] = DirectoryEntry(
                r[0],
                r[1] if isinstance(r[1], str) else None,
                r[2] if isinstance(r[2], str) else None,
            )
        return list(out.values())
