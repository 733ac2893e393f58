"""Synapse's admin API (``/_synapse/admin/``), the part that overlaps with what Bastion does, with
Synapse's request and response shapes, so that tools written for Synapse (``synadm``,
synapse-admin) administer Bastion too. One module per page of Synapse's admin API
documentation; every route is for server admins only (``require_admin`` on the route) and every
call is an ``admin.request`` ledger record (reads: committed before the answer; changes: in the
change's transaction). Bastion's own admin API lives under ``/_bastion/admin/v1/``.

Where Bastion differs on purpose, each module says so in its docstring: registration tokens are
stored hashed (registration_tokens.py), an admin cannot log in as a user (users.py), rooms are
deleted before the v2 delete call answers (rooms.py), notices are ``m.server_notice`` messages
(server_notices.py)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import invalid_param

if TYPE_CHECKING:
    from bastion.server import HomeServer

MODULES = ("users", "rooms", "media", "registration_tokens", "server_notices", "server_version",
           "deactivate")  # fmt: skip

#: Synapse's default and largest page size of its listings.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def paging(req: Request) -> tuple[int, int]:
    """``from`` and ``limit`` of a listing (400 ``M_INVALID_PARAM`` when negative)."""
    offset = req.query_int("from", 0)
    limit = req.query_int("limit", DEFAULT_LIMIT)
    if offset < 0 or limit < 0:
        raise invalid_param("'from' and 'limit' must not be negative")
    return offset, min(limit, MAX_LIMIT)


def register(router: Router, hs: HomeServer) -> None:
    for name in MODULES:
        importlib.import_module(f"bastion.api.synapse_admin.{name}").register(router, hs)
