"""Space hierarchies (C-S API "Spaces", ``GET /v1/rooms/{roomId}/hierarchy``; S-S API "Spaces",
``GET /v1/hierarchy/{roomId}``).

For a user (:meth:`SpaceHierarchy.client_page`): a depth-first walk (the spec's word, as Synapse
walks) of the ``m.space.child`` events from the space, in the order of
:func:`bastion.core.space_hierarchy.order_children`; each room returned with its summary when
the user may see it — the rules of :func:`bastion.core.room_summary.summary_visible`, the ones
``GET /v1/room_summary`` applies — and its children walked only then, and only below
``max_depth``. A room seen once is not walked again (loops in the space graph end there).

A room this server is not in is asked of the servers of its ``via`` (at most
:data:`MAX_VIA_TRIED` of them, through the federation's
:class:`~bastion.services.remote.RemoteHierarchy`): at most :data:`MAX_REMOTE_CALLS` requests
and :data:`REMOTE_BUDGET_S` seconds per page, :data:`REMOTE_PER_USER_RATE` a second per user. An
unreachable room is skipped; a room the page has no budget left for is the next page's. The
answers, checked and trimmed by :func:`bastion.core.space_hierarchy.sanitize_summary`, are kept
for :data:`REMOTE_CACHE_MS` (at most :data:`REMOTE_CACHE_BYTES` of them), as the spec suggests;
the children an answer describes are kept with it and not asked for again. The user sees a
remote room under the same rules, on the join rule and ``world_readable`` the answer gives.

Pagination: the rest of the walk is kept in memory under a random token (``next_batch``) for
:data:`SESSION_TTL_MS`, bound to the user, the room, ``suggested_only`` and ``max_depth``; a
``from`` that is unknown, expired or given with other parameters is 400 ``M_INVALID_PARAM``. A
token may be used again (a client retrying a page gets the same continuation).

For a server (:meth:`SpaceHierarchy.server_answer`): the room and its children this server is
in, each as the asking server may see it (world-readable, public or knockable rooms, rooms it has
a joined member in, restricted rooms allowing a room it has a joined member in); the children it
may not see listed in ``inaccessible_children``, those this server is not in left out.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from bastion.core.identifiers import is_valid_server_name, server_name_of
from bastion.core.rate_limit import TokenBuckets
from bastion.core.room_summary import allowed_room_ids, summary_visible
from bastion.core.room_versions import get_room_version
from bastion.core.space_hierarchy import (
    MAX_CHILDREN,
    SPACE_CHILD,
    child_via,
    is_suggested,
    order_children,
    remote_summary_visible,
    sanitize_summary,
    stripped_child,
)
from bastion.errors import forbidden, invalid_param, limit_exceeded, not_found
from bastion.services.remote import RemoteHierarchy

if TYPE_CHECKING:
    from bastion.services.rooms import RoomService

log = logging.getLogger("bastion.space_hierarchy")

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
DEFAULT_MAX_DEPTH = 10
MAX_MAX_DEPTH = 50
#: The rooms one walk (all its pages together) looks at, at most.
MAX_WALK_ROOMS = 1000
#: The rooms of a join rule's ``allow`` list looked at, at most (as for room summaries).
MAX_ALLOWED_ROOMS = 50
#: Federation requests made for one page, at most, and the time they may take together.
MAX_REMOTE_CALLS = 10
REMOTE_BUDGET_S = 20.0
#: The federation requests of one user's walks: per second, and at most at once.
REMOTE_PER_USER_RATE = 0.5
REMOTE_PER_USER_BURST = 30
#: One federation request's timeout.
REMOTE_TIMEOUT_S = 10.0
#: The ``via`` servers of one room asked, at most (this server may be among those kept).
MAX_VIA_TRIED = 3
VIA_KEPT = MAX_VIA_TRIED + 1
#: How long another server's answer is kept, and how many are.
REMOTE_CACHE_MS = 60_000
REMOTE_CACHE_BYTES = 16 * 1024 * 1024
#: How long a pagination token lives, how many live at once, and how many per user.
SESSION_TTL_MS = 5 * 60_000
MAX_SESSIONS = 200
MAX_SESSIONS_PER_USER = 5
#: The rooms waiting in one walk, at most (children beyond are not walked).
MAX_STACK = 2000


@dataclass(frozen=True)
class _Entry:
    """A room waiting in the walk: its ID, the servers to ask for it, its depth."""

    room_id: str
    via: tuple[str, ...]
    depth: int


@dataclass
class _Walk:
    """Where a walk stands: the rooms still to visit (a stack: the next is the last, at most
    :data:`MAX_STACK`) and the rooms visited."""

    params: tuple[str, str, bool, int]
    stack: list[_Entry]
    seen: set[str] = field(default_factory=set)
    expires_ms: int = 0

    def copy(self) -> _Walk:
        return _Walk(self.params, list(self.stack), set(self.seen))


@dataclass
class _LocalRoom:
    summary: dict[str, Any]  # the published-directory fields, version, encryption, allowed
    join_rule: str | None
    history_visibility: str | None
    allowed: list[str]
    children: list[dict[str, Any]]  # the ordered child events (space rooms only)


class SpaceHierarchy:
    def __init__(self, rooms: RoomService, now_ms: Callable[[], int]) -> None:
        self.rooms = rooms
        self.store = rooms.store
        self.server_name: str = rooms.hs.server_name
        self.now_ms = now_ms
        #: Set at wiring time when federation is on.
        self.remote: RemoteHierarchy | None = None
        self._sessions: OrderedDict[str, _Walk] = OrderedDict()
        #: Other servers' summaries: (room ID, suggested_only) -> (expiry, summary, size).
        self._remote_cache: OrderedDict[tuple[str, bool], tuple[int, dict | None, int]] = (
            OrderedDict()
        )
        self._remote_cache_bytes = 0
        #: The federation requests each user's walks may make (a space of made-up children
        #: would otherwise turn each page into requests to whatever server its via names).
        self._remote_buckets = TokenBuckets(REMOTE_PER_USER_RATE, REMOTE_PER_USER_BURST, 10_000)

    # -- local rooms ----------------------------------------------------------------------------
    def _local_room(self, room_id: str) -> _LocalRoom | None:
        """The room as this server knows it, or None when no local user is joined to it."""
        store, rooms = self.store, self.rooms
        version = store.get_room_version(room_id)
        if version is None or not any(rooms.is_local(u) for u in store.get_joined_users(room_id)):
            return None
        rv = get_room_version(version)
        jr = rooms.current_state_event(room_id, "m.room.join_rules", "")
        jr_content = jr.get("content") if jr else None
        jr_content = jr_content if isinstance(jr_content, dict) else {}
        hv = rooms.current_state_event(room_id, "m.room.history_visibility", "")
        hv_content = hv.get("content") if hv else None
        visibility = hv_content.get("history_visibility") if isinstance(hv_content, dict) else None
        allowed = allowed_room_ids(jr_content, rv)
        summary = rooms.directory.room_summary_fields(room_id)
        summary["room_version"] = version
        enc = rooms.current_state_event(room_id, "m.room.encryption", "")
        algorithm = (enc.get("content") or {}).get("algorithm") if enc else None
        if isinstance(algorithm, str):
            summary["encryption"] = algorithm
        if allowed:
            summary["allowed_room_ids"] = allowed
        children: list[dict[str, Any]] = []
        if summary.get("room_type") == "m.space":  # "If the room is not a space-room, ... empty"
            ids = [eid for (t, _), eid in store.get_current_state_ids(room_id).items()
                   if t == SPACE_CHILD]  # fmt: skip
            rows = store.get_event_rows(ids[: MAX_CHILDREN * 2])
            ordered = order_children(r.event for r in rows.values())
            children = [stripped_child(e) for e in ordered[:MAX_CHILDREN]]
        join_rule = jr_content.get("join_rule")
        return _LocalRoom(
            summary, join_rule if isinstance(join_rule, str) else None, visibility, allowed,
            children,
        )  # fmt: skip

    def _user_may_see(self, room: _LocalRoom, room_id: str, user_id: str) -> bool:
        rooms = self.rooms
        version = room.summary["room_version"]
        return summary_visible(
            membership=rooms.membership_of(room_id, user_id),
            join_rule=room.join_rule,
            history_visibility=room.history_visibility,
            rv=get_room_version(version),
            joined_to_an_allowed_room=any(
                rooms.membership_of(r, user_id) == "join" for r in room.allowed[:MAX_ALLOWED_ROOMS]
            ),
        )

    def _server_joined(self, room_id: str, server: str) -> bool:
        return any(server_name_of(u) == server for u in self.store.get_joined_users(room_id))

    def _server_may_see(self, room: _LocalRoom, room_id: str, server: str) -> bool:
        """As :meth:`_user_may_see`, for a server: a joined member counts as being joined."""
        return summary_visible(
            membership="join" if self._server_joined(room_id, server) else None,
            join_rule=room.join_rule,
            history_visibility=room.history_visibility,
            rv=get_room_version(room.summary["room_version"]),
            joined_to_an_allowed_room=any(
                self._server_joined(r, server) for r in room.allowed[:MAX_ALLOWED_ROOMS]
            ),
        )

    @staticmethod
    def _children_of(children: list[dict[str, Any]], suggested_only: bool) -> list[dict]:
        return [c for c in children if not suggested_only or is_suggested(c["content"])]

    # -- serving other servers ------------------------------------------------------------------
    def server_answer(
        self, origin: str, room_id: str, suggested_only: bool,
        room_allows: Callable[[str, str], bool],
    ) -> dict[str, Any]:  # fmt: skip
        """The S-S answer for ``origin``: ``room``, ``children``, ``inaccessible_children``;
        404 ``M_NOT_FOUND`` for a room this server is not in or ``origin`` may not see.
        ``room_allows(room_id, server)`` is the server access check (ACLs) of each child."""
        room = self._local_room(room_id)
        if room is None or not self._server_may_see(room, room_id, origin):
            raise not_found("room not found")
        children: list[dict[str, Any]] = []
        inaccessible: list[str] = []
        listed = self._children_of(room.children, suggested_only)
        for child in listed:
            cid = child["state_key"]
            local = self._local_room(cid)
            if local is None:
                continue  # not this server's to describe
            if room_allows(cid, origin) and self._server_may_see(local, cid, origin):
                children.append({
                    **local.summary,
                    "children_state": self._children_of(local.children, suggested_only),
                })  # fmt: skip
            else:
                inaccessible.append(cid)
        return {
            "room": {**room.summary, "children_state": listed},
            "children": children,
            "inaccessible_children": inaccessible,
        }

    # -- other servers' rooms -------------------------------------------------------------------
    def _cached(self, room_id: str, suggested_only: bool) -> tuple[bool, dict | None]:
        """(found, summary) from the cache of other servers' answers (None: a room they would
        not or could not describe)."""
        entry = self._remote_cache.get((room_id, suggested_only))
        if entry is None or entry[0] <= self.now_ms():
            return False, None
        return True, entry[1]

    def _cache(self, room_id: str, suggested_only: bool, summary: dict | None) -> None:
        key = (room_id, suggested_only)
        old = self._remote_cache.pop(key, None)
        if old is not None:
            self._remote_cache_bytes -= old[2]
        size = 200 + (len(orjson.dumps(summary)) if summary is not None else 0)
        self._remote_cache[key] = (self.now_ms() + REMOTE_CACHE_MS, summary, size)
        self._remote_cache_bytes += size
        while self._remote_cache_bytes > REMOTE_CACHE_BYTES and self._remote_cache:
            self._remote_cache_bytes -= self._remote_cache.popitem(last=False)[1][2]

    async def _ask_remote(
        self, entry: _Entry, suggested_only: bool, budget: _Budget
    ) -> dict | None | object:
        """The summary another server gives of ``entry``'s room (checked and trimmed), None
        when none would, :data:`_RETRY` when no request could be made for want of budget; what
        the answer says of the room's children is cached too."""
        if self.remote is None:
            return None
        answer: dict | None = None
        summary: dict | None = None
        tried = 0
        for server in entry.via:
            if server == self.server_name or tried == MAX_VIA_TRIED:
                continue
            timeout = budget.take()
            if timeout is None:
                if tried == 0:
                    return _RETRY  # not cached: a later page asks
                break
            tried += 1
            body = await self.remote.room_hierarchy(server, entry.room_id, suggested_only, timeout)
            summary = sanitize_summary(body.get("room"), entry.room_id) if body else None
            if summary is not None:
                answer = body
                break
        self._cache(entry.room_id, suggested_only, summary)
        if answer is not None and summary is not None:
            self._learn(answer, summary, suggested_only)
        return summary

    def _learn(self, answer: dict, summary: dict, suggested_only: bool) -> None:
        """Cache what an answer says of the room's children (only of its listed children: a
        server describes no other rooms through it)."""
        listed = {c["state_key"] for c in summary["children_state"]}
        children = answer.get("children")
        for child in children[: MAX_CHILDREN * 2] if isinstance(children, list) else []:
            clean = sanitize_summary(child)
            if clean is None or clean["room_id"] not in listed:
                continue
            if clean.get("room_type") == "m.space" and not (
                isinstance(child, dict) and "children_state" in child
            ):
                continue  # a space whose children were not given: asked for when reached
            listed.discard(clean["room_id"])
            self._cache(clean["room_id"], suggested_only, clean)
        hidden = answer.get("inaccessible_children")
        for rid in hidden[: MAX_CHILDREN * 2] if isinstance(hidden, list) else []:
            if isinstance(rid, str) and rid in listed:
                listed.discard(rid)
                self._cache(rid, suggested_only, None)

    def _user_may_see_remote(self, summary: dict, user_id: str) -> bool:
        rooms = self.rooms
        return remote_summary_visible(
            summary,
            membership=rooms.membership_of(summary["room_id"], user_id),
            joined_to_an_allowed_room=any(
                rooms.membership_of(r, user_id) == "join"
                for r in summary.get("allowed_room_ids", [])[:MAX_ALLOWED_ROOMS]
            ),
        )

    async def remote_room_summary(
        self, user_id: str, room_id: str, via: list[str]
    ) -> dict[str, Any] | None:
        """The summary of a room this server is not in, as one of the ``via`` servers gives it
        over federation (``GET /_matrix/federation/v1/hierarchy/{roomId}``, the root room of
        its answer; as Synapse serves room summaries of other servers' rooms), checked and
        trimmed like the walk's, under the same per-user allowance and cache; None when no
        server gives one or the user may not see it. 429 when the user's allowance is spent."""
        servers = tuple(dict.fromkeys(v for v in via if is_valid_server_name(v)))[:VIA_KEPT]
        found, summary = self._cached(room_id, False)
        if not found:
            if not servers or self.remote is None:
                return None
            budget = _Budget(lambda: self._remote_buckets.take(user_id, time.monotonic()) == 0)
            asked = await self._ask_remote(_Entry(room_id, servers, 0), False, budget)
            if asked is _RETRY:
                raise limit_exceeded(
                    int(1000 / REMOTE_PER_USER_RATE), "too many requests to other servers"
                )
            summary = asked if isinstance(asked, dict) else None
        if summary is None or not self._user_may_see_remote(summary, user_id):
            return None
        return {k: v for k, v in summary.items() if k != "children_state"}

    # -- the client walk ------------------------------------------------------------------------
    def _take_session(self, token: str, params: tuple[str, str, bool, int]) -> _Walk:
        now = self.now_ms()
        walk = self._sessions.get(token)
        if walk is None or walk.expires_ms <= now:
            raise invalid_param("unknown or expired pagination token")
        if walk.params != params:
            raise invalid_param("suggested_only and max_depth cannot change on paginated requests")
        return walk.copy()

    def _keep_session(self, walk: _Walk) -> str:
        now = self.now_ms()
        for token in [t for t, w in self._sessions.items() if w.expires_ms <= now]:
            del self._sessions[token]
        user = walk.params[0]
        mine = [t for t, w in self._sessions.items() if w.params[0] == user]
        for token in mine[: max(0, len(mine) - MAX_SESSIONS_PER_USER + 1)]:
            del self._sessions[token]
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        token = secrets.token_urlsafe(18)
        walk.expires_ms = now + SESSION_TTL_MS
        self._sessions[token] = walk
        return token

    async def client_page(
        self, user_id: str, room_id: str, *, suggested_only: bool, max_depth: int, limit: int,
        from_token: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        """One page of the hierarchy for ``user_id`` (see the module); 403 ``M_FORBIDDEN`` when
        the space is not a room this server is in that the user may see."""
        params = (user_id, room_id, suggested_only, max_depth)
        if from_token is not None:
            walk = self._take_session(from_token, params)
        else:
            root = self._local_room(room_id)
            if root is None or not self._user_may_see(root, room_id, user_id):
                raise forbidden("You are not allowed to view this room.")
            walk = _Walk(params, [_Entry(room_id, (), 0)])
        budget = _Budget(lambda: self._remote_buckets.take(user_id, time.monotonic()) == 0)
        out: list[dict[str, Any]] = []
        while walk.stack and len(out) < limit and len(walk.seen) < MAX_WALK_ROOMS:
            entry = walk.stack.pop()
            if entry.room_id in walk.seen:
                continue
            summary = await self._summary_for(entry, user_id, suggested_only, budget)
            if summary is _RETRY:
                walk.stack.append(entry)  # out of remote budget: the next page asks
                break
            walk.seen.add(entry.room_id)
            if summary is None:
                continue
            assert isinstance(summary, dict)
            children = self._children_of(summary["children_state"], suggested_only)
            # children_state as the walk sees it: only the suggested ones with suggested_only.
            out.append({**summary, "children_state": children})
            if entry.depth >= max_depth:
                continue
            for child in reversed(children):
                if child["state_key"] not in walk.seen and len(walk.stack) < MAX_STACK:
                    via = tuple(child_via(child["content"])[:VIA_KEPT])
                    walk.stack.append(_Entry(child["state_key"], via, entry.depth + 1))
        body: dict[str, Any] = {"rooms": out}
        if walk.stack and len(walk.seen) < MAX_WALK_ROOMS:
            body["next_batch"] = self._keep_session(walk)
        return body

    async def _summary_for(
        self, entry: _Entry, user_id: str, suggested_only: bool, budget: _Budget
    ) -> dict | None | object:
        """The room's summary with ``children_state`` when the user may see it; None when it is
        hidden or unknown; :data:`_RETRY` when it needs a federation request the page has no
        budget left for. No lock is held across the request."""
        rid = entry.room_id
        local = self._local_room(rid)
        if local is not None:
            if not self._user_may_see(local, rid, user_id):
                return None
            return {**local.summary, "children_state": local.children}
        found, summary = self._cached(rid, suggested_only)
        if not found:
            asked = await self._ask_remote(entry, suggested_only, budget)
            if asked is _RETRY:
                return _RETRY
            summary = asked if isinstance(asked, dict) else None
        if summary is None or not self._user_may_see_remote(summary, user_id):
            return None
        if summary.get("room_type") != "m.space":
            summary = {**summary, "children_state": []}
        return summary


#: :meth:`SpaceHierarchy._summary_for`'s "ask again on the next page".
_RETRY = object()


class _Budget:
    """The federation requests one page may still make (the user's own allowance permitting),
    and the time they may still take."""

    def __init__(self, user_allows: Callable[[], bool]) -> None:
        self.calls = MAX_REMOTE_CALLS
        self.deadline = time.monotonic() + REMOTE_BUDGET_S
        self.user_allows = user_allows

    def take(self) -> float | None:
        """The timeout of one more request, or None when the page has no budget left."""
        if self.calls <= 0 or self.deadline - time.monotonic() <= 0.5 or not self.user_allows():
            return None
        self.calls -= 1
        return min(REMOTE_TIMEOUT_S, self.deadline - time.monotonic())
