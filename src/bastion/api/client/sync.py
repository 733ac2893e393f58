"""GET /_matrix/client/v3/sync (C-S API "Syncing"; sync.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import invalid_param
from bastion.services.sync_api import SyncToken

if TYPE_CHECKING:
    from bastion.server import HomeServer


def _bool(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise invalid_param(f"'{name}' must be true or false")


def register(router: Router, hs: HomeServer) -> None:
    async def sync(req: Request) -> dict:
        """GET /_matrix/client/v3/sync — C-S API "Syncing": ``since``, ``timeout`` (long
        poll), ``filter`` (an ID or inline JSON), ``full_state``, ``set_presence``,
        ``use_state_after``."""
        q = req.query
        since = SyncToken.parse(q["since"]) if q.get("since") else None
        timeout = req.query_int("timeout", 0, minimum=0)
        full_state = _bool(q.get("full_state"), "full_state")
        use_state_after = _bool(
            q.get("use_state_after") or q.get("org.matrix.msc4222.use_state_after"),
            "use_state_after",
        )
        presence = q.get("set_presence")
        if presence is not None and presence not in ("offline", "online", "unavailable"):
            raise invalid_param("'set_presence' must be offline, online or unavailable")
        flt = hs.filters.resolve(req.requester, q.get("filter"))
        return await hs.sync.sync(
            req.requester, since, timeout or 0, full_state, flt, use_state_after
        )

    router.add("GET", "/_matrix/client/v3/sync", sync)
