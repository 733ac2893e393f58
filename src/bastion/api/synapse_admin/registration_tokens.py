"""Synapse admin API "Registration Tokens": list, details, create, update, delete.

Difference from Synapse, on purpose: Bastion stores only a SHA-256 hash of each token and its
first four characters (a copy of the database yields no usable token), so

- the full token appears once, in the answer of ``POST .../registration_tokens/new`` (and of an
  update addressed by the full token);
- the listing and the details show, in ``token``, a **handle**: the stored prefix, ``:`` (a
  character no token contains) and the first 12 hex digits of the token's hash, e.g.
  ``abcd:0f3c9a61b2d4``;
- ``GET``, ``PUT`` and ``DELETE .../registration_tokens/{token}`` accept either the full token
  or the handle, so ``synadm regtok details/update/delete`` work with what ``synadm regtok
  list`` printed;
- ``pending`` is always 0: Bastion counts a use only when the registration completes, in the
  same transaction that creates the account.

Creating, updating and deleting are ``registration_token.create/update/delete`` ledger records
naming the token by its prefix only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.admin_access import admin_request, record_admin_read, require_admin
from bastion.api.http import Request, Router
from bastion.errors import invalid_param

if TYPE_CHECKING:
    from bastion.server import HomeServer

BASE = "/_synapse/admin/v1/registration_tokens"


def register(router: Router, hs: HomeServer) -> None:
    directory = hs.admin_directory

    def target(ident: str) -> str:
        """What the ledger names: never more of a token than its stored prefix."""
        return ident if ":" in ident else ident[:4] + "…"

    async def list_tokens(req: Request) -> dict:
        """GET /_synapse/admin/v1/registration_tokens — Synapse admin API "Registration
        Tokens", "List all tokens" (``valid``); admins only; recorded."""
        require_admin(req)
        valid = req.query.get("valid")
        if valid not in (None, "", "true", "false"):
            raise invalid_param("'valid' must be 'true' or 'false'")
        out = directory.list_tokens(None if not valid else valid == "true")
        await record_admin_read(hs, req, target=None)
        return out

    async def details(req: Request) -> dict:
        """GET /_synapse/admin/v1/registration_tokens/{token} — Synapse admin API
        "Registration Tokens", "Get one token" (by token or handle); admins only; recorded."""
        require_admin(req)
        ident = req.params["token"]
        out = directory.token_details(ident)
        await record_admin_read(hs, req, target=target(ident))
        return out

    async def new(req: Request) -> dict:
        """POST /_synapse/admin/v1/registration_tokens/new — Synapse admin API "Registration
        Tokens", "Create token" (``token``, ``length``, ``uses_allowed``, ``expiry_time``);
        admins only; recorded with the change."""
        admin = require_admin(req)
        body = await req.json(allow_empty=True)
        audit = admin_request(hs, req, target=None)
        return await directory.new_token(admin, body, audit, req.raw.remote)

    async def update(req: Request) -> dict:
        """PUT /_synapse/admin/v1/registration_tokens/{token} — Synapse admin API "Registration
        Tokens", "Update token" (``uses_allowed``, ``expiry_time``; null: unlimited); admins
        only; recorded with the change."""
        admin = require_admin(req)
        ident = req.params["token"]
        body = await req.json(allow_empty=True)
        audit = admin_request(hs, req, target=target(ident))
        return await directory.update_token(admin, ident, body, audit, req.raw.remote)

    async def delete(req: Request) -> dict:
        """DELETE /_synapse/admin/v1/registration_tokens/{token} — Synapse admin API
        "Registration Tokens", "Delete token"; admins only; recorded with the change."""
        admin = require_admin(req)
        ident = req.params["token"]
        audit = admin_request(hs, req, target=target(ident))
        await directory.delete_token(admin, ident, audit, req.raw.remote)
        return {}

    router.add("GET", BASE, list_tokens)
    router.add("POST", f"{BASE}/new", new)
    router.add("GET", f"{BASE}/{{token}}", details)
    router.add("PUT", f"{BASE}/{{token}}", update)
    router.add("DELETE", f"{BASE}/{{token}}", delete)
