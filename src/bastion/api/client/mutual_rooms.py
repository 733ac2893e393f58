"""Rooms in common with another user: MSC2666, stabilised as ``GET
/_matrix/client/v1/mutual_rooms`` (advertised in ``/versions`` as
``uk.half-shot.msc2666.query_mutual_rooms.stable``, as Synapse does), and its unstable path
``/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms`` (flag
``uk.half-shot.msc2666.query_mutual_rooms``) that current matrix-js-sdk still calls. Element
shows the result in a user's profile.

Only rooms both users are joined to are listed: the requester is a member of each, so nothing
is revealed that the room's member list does not already show them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.identifiers import is_valid_user_id, parse_room_id
from bastion.core.mutual_rooms import mutual_rooms_page
from bastion.errors import MatrixError, invalid_param, missing_param

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: The ``/versions`` unstable features this module serves.
UNSTABLE_FEATURES = (
    "uk.half-shot.msc2666.query_mutual_rooms",
    "uk.half-shot.msc2666.query_mutual_rooms.stable",
)


def register(router: Router, hs: HomeServer) -> None:
    def answer(req: Request, token_param: str) -> dict:
        other = req.query.get("user_id")
        if other is None:
            raise missing_param("user_id is required")
        if not is_valid_user_id(other):
            raise invalid_param("user_id is not a valid user ID")
        me = req.requester.user_id
        if other == me:
            raise invalid_param("you cannot ask for the rooms you share with yourself")
        after = req.query.get(token_param)
        if after is not None:
            try:
                parse_room_id(after)
            except MatrixError:
                raise invalid_param(
                    f"{token_param} is not a batch token of this endpoint"
                ) from None
        store = hs.store
        joined, token = mutual_rooms_page(
            store.get_rooms_for_user(me), store.get_rooms_for_user(other), after
        )
        body: dict = {"joined": joined}
        if token is not None:
            body["next_batch_token"] = token
        return body

    async def mutual_rooms(req: Request) -> dict:
        """GET /_matrix/client/v1/mutual_rooms?user_id=&from= — MSC2666 (stable): the rooms
        the requester and ``user_id`` are both joined to, in pages of at most 100."""
        return answer(req, "from")

    async def mutual_rooms_unstable(req: Request) -> dict:
        """GET /_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id=
        &batch_token= — MSC2666's unstable path (the same answer)."""
        return answer(req, "batch_token")

    router.add("GET", "/_matrix/client/v1/mutual_rooms", mutual_rooms)
    router.add(
        "GET", "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms",
        mutual_rooms_unstable,
    )  # fmt: skip
