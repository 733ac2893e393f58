"""Simplified Sliding Sync, MSC4186: ``POST /_matrix/client/unstable/org.matrix.simplified_msc3575
/sync`` (Element X's sync). Advertised in ``/versions`` as ``org.matrix.simplified_msc3575``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_room_id
from bastion.core.sliding_sync import parse_request
from bastion.errors import MatrixError
from bastion.services.sliding_sync import unknown_pos

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: The ``/versions`` unstable features this module serves.
UNSTABLE_FEATURES = ("org.matrix.simplified_msc3575",)

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


def _is_room_id(value: str) -> bool:
    try:
        parse_room_id(value)
    except MatrixError:
        return False
    return True


def register(router: Router, hs: HomeServer) -> None:
    async def sliding_sync(req: Request) -> dict:
        """POST .../org.matrix.simplified_msc3575/sync?pos=&timeout= — MSC4186 "Simplified
        Sliding Sync": ``conn_id``, ``lists`` (ranges over the rooms by latest activity,
        ``timeline_limit``, ``required_state``, ``filters``), ``room_subscriptions`` and the
        extensions: ``to_device`` (MSC3885: ``since``, ``limit``, ``next_batch``), ``e2ee``
        (MSC3884), and ``account_data``, ``receipts`` and ``typing`` (MSC3959, MSC3960,
        MSC3961; each with ``lists`` and ``rooms``). An unknown ``pos`` is 400
        ``M_UNKNOWN_POS``."""
        body = await req.json(allow_empty=True)
        parsed = parse_request(body, _is_room_id)
        pos = req.query.get("pos") or None
        if pos is not None and (len(pos) > 20 or not pos.isdigit()):
            raise unknown_pos()
        timeout = req.query_int("timeout", 0, minimum=0)
        return await hs.sliding_sync.sync(req.requester, parsed, pos, timeout)

    router.add("POST", PATH, sliding_sync)
