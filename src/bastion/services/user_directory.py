"""The user directory (C-S API "User directory": ``POST /user_directory/search``).

Who may be found: the spec asks that the server "MUST at a minimum consider the users the
requesting user shares a room with and those who reside in public rooms"; Bastion searches
exactly those (as Synapse does by default): users joined to a room the requester is joined
to, and users joined to a room whose join rule is ``public``, local and remote. With
``user_directory_search_all_users`` every local account may be found too. Deactivated and
erased accounts never are. The requester may find themselves (Synapse includes them).

Remote users are not queried over federation (the spec's SHOULD): the servers of other
people's rooms do not offer a directory to search; remote users are found by what this
server knows of them, their membership in shared or public rooms.

How a search runs: the names of local accounts, and of remote users under each of their room
memberships, are kept in two :class:`~bastion.core.user_directory.PrefixIndex` es: the local
one rebuilt when an account or a profile changes (:meth:`Store.user_directory_local_version`),
the remote one when a membership does too (:meth:`Store.user_directory_generation`),
so a search looks at the entries its words can match, not at every account. A remote user is
found under their latest membership that matches, among the rooms the requester may see them
in (the requester's rooms and public rooms, checked for the matching memberships' rooms only):
a display name they use only in a room the requester is not in is never shown. The matches are
ranked; then, in rank order, only as many local users as the response needs are checked
against the rules above (a few reads), so a broad term costs its ranking, not a check of every
match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.core.user_directory import (
    DirectoryEntry,
    Folded,
    Matcher,
    PrefixIndex,
    result_json,
    search_words,
)

if TYPE_CHECKING:
    from bastion.server import HomeServer


@dataclass(frozen=True, slots=True)
class _RemoteIndex:
    """Remote users' room memberships: ``index.entries[i]`` is a user as named in room
    ``rooms[i]`` by their membership at stream position ``positions[i]``."""

    index: PrefixIndex
    rooms: list[str]
    positions: list[int]


class UserDirectory:
    """``hs.user_directory``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._local_version: tuple[int, ...] | None = None
        self._local: PrefixIndex | None = None
        self._generation: int | None = None
        self._remote: _RemoteIndex | None = None

    def _indexes(self) -> tuple[PrefixIndex, _RemoteIndex]:
        """The two indexes, each rebuilt only when what it holds may have changed: the local
        one when an account or a profile did, not at every join or leave of a room."""
        store = self.hs.store
        version = store.user_directory_local_version()
        if self._local is None or version != self._local_version:
            self._local = PrefixIndex(store.user_directory_local_entries())
            self._local_version = version
        generation = store.user_directory_generation()
        if self._remote is None or generation != self._generation:
            memberships = store.user_directory_remote_memberships(self.hs.server_name)
            self._remote = _RemoteIndex(
                PrefixIndex(e for e, _, _ in memberships),
                [room for _, room, _ in memberships],
                [pos for _, _, pos in memberships],
            )
            self._generation = generation
        return self._local, self._remote

    def _remote_matches(
        self, remote: _RemoteIndex, requester: str, words: list[str], matcher: Matcher
    ) -> list[tuple[DirectoryEntry, Folded]]:
        """The remote users the requester may find, each under their latest matching
        membership in a room the requester may see them in."""
        folded = remote.index.folded
        hits = [p for p in remote.index.positions(words) if matcher.matches_folded(folded[p])]
        if not hits:
            return []
        visible = self.hs.store.user_directory_visible_rooms(
            requester, [remote.rooms[p] for p in hits]
        )
        best: dict[str, int] = {}
        for p in hits:
            if remote.rooms[p] not in visible:
                continue
            uid = remote.index.entries[p].user_id
            if uid not in best or remote.positions[p] > remote.positions[best[uid]]:
                best[uid] = p
        return [(remote.index.entries[p], folded[p]) for p in best.values()]

    def search(self, requester: str, term: str, limit: int) -> dict:
        """The response body of a search for ``term`` by ``requester``: at most ``limit``
        results (already checked and clamped by the handler), best first, and whether more
        matched."""
        words = search_words(term)
        if not words:  # a blank term matches nobody
            return {"limited": False, "results": []}
        store, matcher = self.hs.store, Matcher(term)
        local_index, remote_index = self._indexes()
        local = [
            (local_index.entries[p], local_index.folded[p])
            for p in local_index.positions(words)
            if matcher.matches_folded(local_index.folded[p])
        ]
        remote = self._remote_matches(remote_index, requester, words, matcher)
        both = local + remote
        both.sort(key=lambda ef: matcher.sort_key_folded(ef[1], ef[0].user_id))
        ranked = [e for e, _ in both]
        remote_ids = {e.user_id for e, _ in remote}
        all_local = self.hs.config.user_directory_search_all_users
        found: list[DirectoryEntry] = []
        want = limit + 1  # one more than shown tells whether the list is limited
        start = 0
        while len(found) < want and start < len(ranked):
            batch = ranked[start : start + max(2 * want, 20)]
            start += len(batch)
            visible = store.user_directory_visible_local(
                requester, [e.user_id for e in batch if e.user_id not in remote_ids], all_local
            )
            found += [e for e in batch if e.user_id in visible or e.user_id in remote_ids]
        return {
            "limited": len(found) > limit,
            "results": [result_json(e) for e in found[:limit]],
        }
