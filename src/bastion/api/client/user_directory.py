"""The user directory (C-S API "User directory": users.yaml, ``POST /user_directory/search``).
The rules of who may be found are in :mod:`bastion.services.user_directory`, the matching and
ranking in :mod:`bastion.core.user_directory`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.user_directory import DEFAULT_LIMIT, MAX_LIMIT, MAX_SEARCH_TERM, MAX_SEARCH_WORDS
from bastion.errors import bad_json, invalid_param

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    directory = hs.user_directory

    async def search(req: Request) -> dict:
        """POST /_matrix/client/v3/user_directory/search — C-S API "User directory". The body:
        ``search_term`` (a string, required) and ``limit`` (an integer, default 10, clamped to
        0..50 as Synapse does). Anything else in the body is ignored."""
        body = await req.json()
        term = body.get("search_term")
        if not isinstance(term, str):
            raise bad_json("'search_term' must be a string")
        if len(term) > MAX_SEARCH_TERM or len(term.split()) > MAX_SEARCH_WORDS:
            raise invalid_param(
                f"'search_term' is longer than {MAX_SEARCH_TERM} characters"
                f" or {MAX_SEARCH_WORDS} words"
            )
        limit = body.get("limit", DEFAULT_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise bad_json("'limit' must be an integer")
        limit = max(0, min(limit, MAX_LIMIT))
        return directory.search(req.requester.user_id, term, limit)

    router.add("POST", "/_matrix/client/v3/user_directory/search", search)
