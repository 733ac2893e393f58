"""Room tags (C-S API "Room Tagging"), kept as the ``m.tag`` room account data of the user.

A tag is added or removed by a read-modify-write of that one account-data entry in a single
write transaction, so two concurrent changes of one room's tags never lose each other. The entry
is the same one the account-data endpoints read and /sync delivers (services/account_data.py):
a change gets a new stream position and appears in ``rooms.join.{roomId}.account_data``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from bastion.core.canonical_json import parse_json
from bastion.core.tags import check_tag_name, tag_info, tags_of, with_tag, without_tag
from bastion.errors import bad_json, too_large
from bastion.services.account_data import MAX_CONTENT_BYTES
from bastion.storage.interface import Txn

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: The account-data type holding a room's tags ("Room Tagging" → "Events").
TAG_TYPE = "m.tag"


def _encode(content: dict[str, Any]) -> str:
    """JSON text of an ``m.tag`` content: sorted keys, compact. Not canonical JSON, which has
    no fractions, and ``order`` is one ("a number between 0 and 1")."""
    try:
        text = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as e:
        raise bad_json(f"cannot encode the tags as JSON: {e}") from None
    if len(text) > MAX_CONTENT_BYTES:
        raise too_large(f"the tags of a room are larger than {MAX_CONTENT_BYTES} bytes")
    return text.decode("utf-8")


class RoomTags:
    """``hs.tags``. The caller checks that the user acts for itself and that the room ID is
    valid; tag names are checked here on :meth:`put`."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    def get(self, user_id: str, room_id: str) -> dict[str, dict[str, Any]]:
        """The user's tags on the room (``{}`` when none)."""
        text = self.hs.store.get_account_data(user_id, room_id, TAG_TYPE)
        return {} if text is None else tags_of(parse_json(text, strict=False))

    async def put(self, user_id: str, room_id: str, tag: str, body: dict[str, Any]) -> None:
        """Add ``tag`` (or replace its object) with the ``order`` of ``body``."""
        check_tag_name(tag)
        info = tag_info(body)
        store = self.hs.store

        def fn(conn: Txn) -> None:
            text = store.get_account_data_in(conn, user_id, room_id, TAG_TYPE)
            content = None if text is None else parse_json(text, strict=False)
            new = with_tag(content, tag, info)
            if new != content:
                store.set_account_data_in(conn, user_id, room_id, TAG_TYPE, _encode(new))

        await store.transaction(fn)

    async def delete(self, user_id: str, room_id: str, tag: str) -> None:
        """Remove ``tag``; removing a tag the room does not carry changes nothing."""
        store = self.hs.store

        def fn(conn: Txn) -> None:
            text = store.get_account_data_in(conn, user_id, room_id, TAG_TYPE)
            if text is None:
                return
            new = without_tag(parse_json(text, strict=False), tag)
            if new is not None:
                store.set_account_data_in(conn, user_id, room_id, TAG_TYPE, _encode(new))

        await store.transaction(fn)
