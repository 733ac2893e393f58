"""Account management (C-S API "Current account information", "Password management",
"Account deactivation", "Adding Account Administrative Contact Information")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import M_THREEPID_MEDIUM_NOT_SUPPORTED, MatrixError, missing_param
from bastion.services.accounts import bad_json, check_password_strength

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    accounts = hs.accounts

    async def whoami(req: Request) -> dict:
        """GET /_matrix/client/v3/account/whoami — C-S API "Current account information"."""
        r = req.requester
        return {"user_id": r.user_id, "device_id": r.device_id, "is_guest": False}

    async def change_password(req: Request) -> dict:
        """POST /_matrix/client/v3/account/password — C-S API "Password management" (UIA with
        ``m.login.password``; ``logout_devices`` defaults to true and deletes the user's other
        devices, keeping the one making the request)."""
        body = await req.json()
        if body.get("new_password") is None:
            raise missing_param("'new_password' is required")
        new_password = check_password_strength(body["new_password"], "new_password")
        logout_devices = body.get("logout_devices", True)
        if not isinstance(logout_devices, bool):
            raise bad_json("'logout_devices' must be a boolean")
        session = await accounts.require_password_uia(
            body, req.requester, "account/password", req.raw.remote
        )
        accounts.end_uia(session)
        await accounts.change_password(req.requester, new_password, logout_devices, req.raw.remote)
        return {}

    async def deactivate(req: Request) -> dict:
        """POST /_matrix/client/v3/account/deactivate — C-S API "Account deactivation" (UIA
        with ``m.login.password``): every token and device goes, the password and profile are
        wiped, the user leaves their rooms, and the user ID is never reused. With ``erase:
        true`` everything the user wrote and uploaded is erased as well (``hs.erasure``; no
        redactions are sent to other servers: only an admin asks for those). No identity server
        is used, so ``id_server_unbind_result`` is ``no-support``."""
        body = await req.json(allow_empty=True)
        if body.get("erase") is not None and not isinstance(body["erase"], bool):
            raise bad_json("'erase' must be a boolean")
        if body.get("id_server") is not None and not isinstance(body["id_server"], str):
            raise bad_json("'id_server' must be a string")
        session = await accounts.require_password_uia(
            body, req.requester, "account/deactivate", req.raw.remote
        )
        accounts.end_uia(session)
        if body.get("erase") is True:
            await hs.erasure.erase(req.requester.user_id, actor=req.requester.user_id,
                                   origin=req.raw.remote)  # fmt: skip
        else:
            await accounts.deactivate(req.requester, req.raw.remote)
        return {"id_server_unbind_result": "no-support"}

    async def get_3pids(req: Request) -> dict:
        """GET /_matrix/client/v3/account/3pid — no third-party identifiers are kept here."""
        return {"threepids": []}

    async def threepid_request_token(req: Request) -> dict:
        """POST /_matrix/client/v3/account/3pid/{email,msisdn}/requestToken — this server does
        not associate third-party identifiers with accounts (capability ``m.3pid_changes`` is
        false), so adding one is refused with ``M_THREEPID_MEDIUM_NOT_SUPPORTED``."""
        await req.json()
        raise MatrixError(
            M_THREEPID_MEDIUM_NOT_SUPPORTED,
            "this server does not associate third-party identifiers with accounts",
        )

    router.add("GET", "/_matrix/client/v3/account/whoami", whoami)
    router.add("POST", "/_matrix/client/v3/account/password", change_password)
    router.add("POST", "/_matrix/client/v3/account/deactivate", deactivate, allow_suspended=True)
    router.add("GET", "/_matrix/client/v3/account/3pid", get_3pids)
    for medium in ("email", "msisdn"):
        router.add(
            "POST", f"/_matrix/client/v3/account/3pid/{medium}/requestToken",
            threepid_request_token,
        )  # fmt: skip
