"""Account data (C-S API "Client Config") and its part of /sync.

Global account data goes to the top-level ``account_data`` of /sync, room account data to
``rooms.join.{roomId}.account_data``; both carry what changed in ``(since, upto]`` (everything on
an initial sync). ``m.push_rules`` is served from the push-rules service ("Push Rules: Events"):
always on an initial sync, and on an incremental sync when the rules changed.

Stored content is read back without the canonical-JSON number check: the ``m.tag`` content
written by the room-tags service (services/tags.py) carries ``order`` as a fraction ("Room
Tagging"), which canonical JSON has no form for. Content written here is canonical JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core.canonical_json import canonical_json, parse_json
from bastion.core.identifiers import parse_room_id
from bastion.errors import M_BAD_JSON, MatrixError, invalid_param, too_large
from bastion.services.filtering import event_filter_allows, room_allowed
from bastion.services.sync_api import SyncContext

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: Types the server manages; clients may read them but not set them ("Server Behaviour": 405).
SERVER_MANAGED_TYPES = frozenset({"m.fully_read", "m.push_rules"})
#: The longest account-data type accepted.
MAX_TYPE_LENGTH = 255
#: The largest account-data content accepted, in bytes of canonical JSON.
MAX_CONTENT_BYTES = 65536


def check_type(data_type: str) -> None:
    if not data_type:
        raise invalid_param("account data type must not be empty")
    if len(data_type) > MAX_TYPE_LENGTH:
        raise invalid_param(f"account data type is longer than {MAX_TYPE_LENGTH}")


def check_room_id(room_id: str) -> None:
    """account-data.yaml: a room ID that is not valid is 400 ``M_INVALID_PARAM``."""
    try:
        parse_room_id(room_id)
    except MatrixError:
        raise invalid_param(f"{room_id!r} is not a valid room ID") from None


class AccountData:
    """``hs.account_data``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def put(self, user_id: str, room_id: str, data_type: str, content: dict) -> None:
        """Set account data (``room_id`` '' for global). Refuses server-managed types (405)."""
        check_type(data_type)
        if data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(
                M_BAD_JSON, f"{data_type} is managed by the server and cannot be set here", 405
            )
        text = canonical_json(content)
        if len(text) > MAX_CONTENT_BYTES:
            raise too_large(f"account data is larger than {MAX_CONTENT_BYTES} bytes")
        await self.hs.store.set_account_data(user_id, room_id, data_type, text.decode("utf-8"))

    def get(self, user_id: str, room_id: str, data_type: str) -> dict | None:
        check_type(data_type)
        if data_type == "m.push_rules" and room_id == "":
            return self.hs.push_rules.account_data_content(user_id)
        text = self.hs.store.get_account_data(user_id, room_id, data_type)
        return None if text is None else parse_json(text, strict=False)

    # -- SyncContributor --------------------------------------------------------------------
    def contribute_global(self, ctx: SyncContext, response: dict) -> None:
        user_id = ctx.requester.user_id
        since = ctx.since.pos if ctx.since is not None else None
        if since is not None and since >= ctx.upto.pos:
            return  # every change has a stream position: none can be in an empty range
        ad_filter = ctx.filter["account_data"]
        events: list[dict] = []
        for row in self.hs.store.account_data_changes(user_id, "", since, ctx.upto.pos):
            ev = {"type": row["type"], "content": parse_json(row["content"], strict=False)}
            if event_filter_allows(ad_filter, ev):
                events.append(ev)
        if since is None or self.hs.store.push_rules_changed(user_id, since, ctx.upto.pos):
            ev = {
                "type": "m.push_rules",
                "content": self.hs.push_rules.account_data_content(user_id),
            }
            if event_filter_allows(ad_filter, ev):
                events.append(ev)
        if events:
            response.setdefault("account_data", {}).setdefault("events", []).extend(events)

    def contribute_room(self, ctx: SyncContext, room_id: str, room: dict) -> None:
        if not room_allowed(ctx.filter, room_id):
            return
        since = ctx.since.pos if ctx.since is not None else None
        rows = self.hs.store.account_data_changes(
            ctx.requester.user_id, room_id, since, ctx.upto.pos
        )
        room_filter = ctx.filter["room"]["account_data"]
        events = []
        for row in rows:
            ev = {"type": row["type"], "content": parse_json(row["content"], strict=False)}
            if event_filter_allows(room_filter, ev, room_id):
                events.append(ev)
        if events:
            room.setdefault("account_data", {}).setdefault("events", []).extend(events)

    def rooms_changed(self, ctx: SyncContext) -> set[str] | None:
        if ctx.since is None:
            return None
        if ctx.since.pos >= ctx.upto.pos:
            return set()
        return self.hs.store.account_data_rooms_changed(
            ctx.requester.user_id, ctx.since.pos, ctx.upto.pos
        )
