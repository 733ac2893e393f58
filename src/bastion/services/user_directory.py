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

How a search runs: the local accounts' names are kept in a
:class:`~bastion.core.user_directory.PrefixIndex`, rebuilt when an account is created or a
profile changes (:meth:`Store.user_directory_local_version`), so a search looks at the
entries its words can match, not at every account. The matches are ranked; then, in rank
order, only as many as the response needs are checked against the rules above (a few reads),
so a broad term costs its ranking, not a check of every match.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core.user_directory import (
    DirectoryEntry,
    Matcher,
    PrefixIndex,
    result_json,
    search_words,
)

if TYPE_CHECKING:
    from bastion.server import HomeServer


class UserDirectory:
    """``hs.user_directory``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self._index: PrefixIndex | None = None
        self._version: tuple[int, ...] | None = None

    def _local_index(self) -> PrefixIndex:
        store = self.hs.store
        version = store.user_directory_local_version()
        if self._index is None or version != self._version:
            self._index = PrefixIndex(store.user_directory_local_entries())
            self._version = version
        return self._index

    def search(self, requester: str, term: str, limit: int) -> dict:
        """The response body of a search for ``term`` by ``requester``: at most ``limit``
        results (already checked and clamped by the handler), best first, and whether more
        matched."""
        words = search_words(term)
        if not words:  # a blank term matches nobody
            return {"limited": False, "results": []}
        store, matcher = self.hs.store, Matcher(term)
        local = [e for e in self._local_index().candidates(words) if matcher.matches(e)]
        remote = [
            e
            for e in store.user_directory_remote_candidates(requester, words, self.hs.server_name)
            if matcher.matches(e)
        ]
        ranked = sorted(local + remote, key=matcher.sort_key)
        remote_ids = {e.user_id for e in remote}
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
