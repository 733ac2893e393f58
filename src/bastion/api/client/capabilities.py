"""Capabilities negotiation (C-S API "Capabilities negotiation", capabilities.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.room_versions import KNOWN_ROOM_VERSIONS

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def capabilities(req: Request) -> dict:
        """GET /_matrix/client/v3/capabilities — what this server lets the requester do."""
        caps: dict = {
            "m.room_versions": {
                "default": hs.config.default_room_version,
                "available": {v: "stable" for v in KNOWN_ROOM_VERSIONS},
            },
            "m.change_password": {"enabled": True},
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False},
            "m.get_login_token": {"enabled": hs.config.login_token_enabled},
            "m.profile_fields": {"enabled": True},
        }
        if req.requester.is_admin:
            caps["m.account_moderation"] = {"suspend": True, "lock": True}
        return {"capabilities": caps}

    router.add("GET", "/_matrix/client/v3/capabilities", capabilities)
