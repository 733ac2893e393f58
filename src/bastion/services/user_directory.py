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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core.user_directory import rank_results, result_json, search_words

if TYPE_CHECKING:
    from bastion.server import HomeServer


class UserDirectory:
    """``hs.user_directory``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    def search(self, requester: str, term: str, limit: int) -> dict:
        """The response body of a search for ``term`` by ``requester``: at most ``limit``
        results (already checked and clamped by the handler), best first."""
        words = search_words(term)
        if not words:  # a blank term matches nobody
            return {"limited": False, "results": []}
        candidates = self.hs.store.user_directory_candidates(
            requester, words, self.hs.config.user_directory_search_all_users, self.hs.server_name
        )
        found, limited = rank_results(term, candidates, limit)
        return {"limited": limited, "results": [result_json(e) for e in found]}
