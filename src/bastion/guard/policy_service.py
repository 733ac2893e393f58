"""The policy lists the server enforces (``hs.guard.policy``): which lists, their rules kept
current from each policy room's state, and what they say about an event or a server.

C-S API "Moderation policy lists" leaves subscribing and enforcement to the implementation.
Here:

* **Which lists.** The policy rooms named in ``[guard.policy] lists`` (trusted from the config
  file) and those an admin subscribed through ``PUT /_bastion/admin/v1/guard/policy_lists/
  {roomId}`` (table ``guard_policy_lists``). The admin chooses which lists to trust; nothing
  else is read.
* **Holding the room.** Rules are read from the room's current state, so the server must hold
  the room: a local user joined to it (a local policy room, or a remote one a local user
  joined over federation). Subscribing to a room the server does not hold is refused with
  ``M_FORBIDDEN`` naming what to do (join it with a local account first, for example the
  admin's own); the server never joins a room on its own. A list named in the config file
  whose room the server does not hold is listed by the admin API as ``held: false`` and bans
  nothing until a local user joins it.
* **Kept current, cheaply.** A store listener marks a subscribed room dirty after any commit
  that touched it; the next check re-reads that room's rule state events and recompiles the
  list only when they changed. A check is then dict lookups and compiled globs: no database
  read, no work per rule beyond the globs.
* **Signals** (:meth:`PolicyLists.signals`, called by the guard for local and federated events
  and remote membership): invites from or to a banned user, from a banned server or into a
  banned room; joins by banned users and into banned rooms; events from banned users or
  servers in federated rooms (soft-failed); events into banned rooms. Each is a ``block``
  signal with the rule as evidence (``policy.user``, ``policy.server``, ``policy.room``).
  With ``server_acl`` on, a server ban also asks for the ``server_acl`` action (the guard adds
  the server to the room's ``m.room.server_acl`` deny list where a local user has the power);
  a server ban taken off every list is taken out of the deny lists the guard wrote it into.
* **Origins** (:meth:`PolicyLists.origin_banned`): inbound federation requests from a banned
  server are refused with 403 (``HomeServer.federation_authenticate``).

This server's own name is never banned by a server rule (a list cannot cut the server off from
itself): compared whole, port included, so a rule naming a host also bans other servers on the
same host with other ports.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bastion.errors import forbidden
from bastion.guard.policy_lists import (
    RULE_EVENT_TYPES,
    CompiledRules,
    Glob,
    PolicyConfig,
    Rule,
    is_glob,
    rules_from_state,
    server_host,
)
from bastion.guard.signals import Decision, EventContext, Signal

if TYPE_CHECKING:
    from bastion.server import HomeServer

log = logging.getLogger(__name__)

#: Signal sources.
SOURCE_USER = "policy.user"
SOURCE_SERVER = "policy.server"
SOURCE_ROOM = "policy.room"
#: New server bans put into room ACLs per rebuild of a list (an ACL event is at most 64 KiB).
MAX_ACL_SWEEP = 100
#: Rules listed per list by the admin API (the counts are always whole).
MAX_LISTED_BANS = 1000
#: Local aliases resolved per rebuild of a list.
MAX_ALIAS_LOOKUPS = 1000


@dataclass
class PolicyList:
    """One subscribed list and its compiled rules."""

    room_id: str
    #: "config" (the config file) or "admin" (the admin API).
    source: str
    shortcode: str | None = None
    added_by: str | None = None
    added_ts: int | None = None
    rules: CompiledRules | None = None
    #: The rule state (type, state_key, event ID) the rules were compiled from.
    version: tuple[tuple[str, str, str], ...] = ()
    #: Whether the server holds the room (a local user joined).
    held: bool = False

    @property
    def name(self) -> str:
        return self.shortcode or self.room_id

    def describe(self) -> dict[str, Any]:
        rules = self.rules
        out: dict[str, Any] = {
            "room_id": self.room_id, "source": self.source, "shortcode": self.shortcode,
            "held": self.held, "rule_counts": rules.counts() if rules else {},
            "dropped_globs": rules.dropped if rules else 0,
            "bans": [r.describe() for r in rules.rules[:MAX_LISTED_BANS]] if rules else [],
            "bans_truncated": bool(rules and len(rules.rules) > MAX_LISTED_BANS),
        }  # fmt: skip
        if self.added_by is not None:
            out["added_by"] = self.added_by
            out["added_ts"] = self.added_ts
        return out


class PolicyLists:
    """``hs.guard.policy``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config: PolicyConfig = hs.config.guard_config.policy
        self.enabled: bool = hs.config.guard_config.enabled
        self._own_name = hs.server_name
        self._lists: dict[str, PolicyList] = {}
        self._loaded = False
        #: Subscribed rooms whose state may have changed (set by the store listener on the
        #: writer thread, drained on the event loop).
        self._dirty: set[str] = set()
        self._watched: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        hs.store.add_listener(self._on_commit)

    # -- the lists ---------------------------------------------------------------------------
    def _on_commit(self, _pos: int, keys: set[str]) -> None:
        """Store listener (writer thread): mark subscribed rooms that a commit touched."""
        watched = self._watched
        if not watched or not keys:
            return
        touched = watched.intersection(keys)
        if touched:
            with self._lock:
                self._dirty.update(touched)
            loop = self._loop
            if loop is not None and self.config.server_acl:
                # Server ACLs follow new rules without waiting for the next check.
                try:
                    loop.call_soon_threadsafe(self._refresh)
                except RuntimeError:  # the loop is closed
                    pass

    def _load(self) -> None:
        lists: dict[str, PolicyList] = {}
        for room_id in self.config.lists:
            lists[room_id] = PolicyList(room_id, "config")
        for room_id, shortcode, added_by, added_ts in self.hs.store.guard_policy_lists():
            entry = lists.get(room_id)
            if entry is None:
                lists[room_id] = PolicyList(room_id, "admin", shortcode, added_by, added_ts)
            else:  # in the config file and subscribed too: the admin's shortcode is kept
                entry.shortcode, entry.added_by, entry.added_ts = shortcode, added_by, added_ts
        for room_id, entry in lists.items():
            old = self._lists.get(room_id)
            if old is not None:  # its compiled rules are kept (re-read only if they changed)
                entry.rules, entry.version, entry.held = old.rules, old.version, old.held
        self._lists = lists
        self._watched = frozenset(lists)
        with self._lock:
            self._dirty = set(lists)
        self._loaded = True

    def _refresh(self) -> None:
        """Load the lists on first use; re-read the rooms marked dirty."""
        if not self._loaded:
            self._load()
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None
        if not self._dirty:
            return
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for room_id in dirty:
            entry = self._lists.get(room_id)
            if entry is not None:
                self._rebuild(entry)

    def _rebuild(self, entry: PolicyList) -> None:
        store = self.hs.store
        entry.held = self.server_holds(entry.room_id)
        version = (
            tuple(store.guard_policy_rule_state(entry.room_id, RULE_EVENT_TYPES))
            if entry.held
            else ()
        )
        if entry.rules is not None and version == entry.version:
            return
        rows = store.get_event_rows([e for _t, _k, e in version])
        events: list[tuple[str, str, Any]] = []
        for etype, state_key, event_id in version:
            row = rows.get(event_id)
            if row is not None:
                events.append((etype, state_key, row.event.get("content") or {}))
        before = _server_entities(entry.rules)
        entry.rules = rules_from_state(entry.room_id, events)
        entry.version = version
        self._resolve_aliases(entry.rules)
        if self.enabled and self.config.server_acl:
            self._schedule_acl_sweep(entry, before)
            self._schedule_acl_lift(entry, before - _server_entities(entry.rules))
        log.info(
            "policy list %s: %s rules (%d globs dropped)",
            entry.room_id, entry.rules.counts(), entry.rules.dropped,
        )  # fmt: skip

    def _resolve_aliases(self, rules: CompiledRules) -> None:
        """Room rules may name an alias ("the subscriber is responsible for resolving the alias
        to a room ID if desired"): a local alias (no glob) is resolved when the list is
        compiled, and the room it names is banned too. Remote aliases are not resolved (that
        would be a federation query per rule); an alias made after the list changed last is
        seen at its next change."""
        store = self.hs.store
        aliases = [
            r for r in rules.rules
            if r.kind == "room" and r.entity is not None and r.entity.startswith("#")
            and not is_glob(r.entity)
        ][:MAX_ALIAS_LOOKUPS]  # fmt: skip
        for rule in aliases:
            assert rule.entity is not None
            if not self.hs.rooms.is_local(rule.entity):
                continue
            row = store.get_alias(rule.entity)
            if row is not None:
                rules.add(replace(rule, entity=row["room_id"], alias=rule.entity))

    # -- server ACLs ---------------------------------------------------------------------------
    def _schedule_acl_sweep(self, entry: PolicyList, before: set[str]) -> None:
        """``server_acl`` on: the list's new server bans go into the ``deny`` list of
        ``m.room.server_acl`` of every room a local user is joined to, where one has the power
        (S-S API "Server Access Control Lists"; the spec's suggestion for a server rule applied
        to a room). Never a rule that would match this server; never a hashed rule (an ACL
        needs the name). Run as a task: a check never waits for it."""
        assert entry.rules is not None
        own = server_host(self._own_name)
        new = [
            r for r in entry.rules.rules
            if r.kind == "server" and r.entity is not None and r.entity not in before
            and not Glob(r.entity).matches(own)
        ]  # fmt: skip
        if not new:
            return
        if len(new) > MAX_ACL_SWEEP:
            log.warning("policy list %s: %d new server bans, the first %d go into room ACLs",
                        entry.room_id, len(new), MAX_ACL_SWEEP)  # fmt: skip
            new = new[:MAX_ACL_SWEEP]
        self._spawn(lambda: self._acl_sweep(entry, new))

    def _schedule_acl_lift(self, entry: PolicyList, removed: set[str]) -> None:
        """``server_acl`` on: a server ban taken off a list (and on no subscribed list any
        more) is taken out of the ``deny`` lists the guard put it in: only rooms where a
        carried-out decision of the sweep (:meth:`_acl_sweep`) added it, so an entry a room's
        moderators wrote themselves stays. Run as a task."""
        still = set().union(*(_server_entities(e.rules) for e in self._lists.values()))
        lifted = sorted(removed - still)[:MAX_ACL_SWEEP]
        if lifted:
            self._spawn(lambda: self._acl_lift(entry, lifted))

    def _spawn(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``make()`` as a task of the running event loop (kept until done); without one
        (command-line tools) there is nothing to send, and nothing is made."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(make())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _acl_lift(self, entry: PolicyList, servers: list[str]) -> None:
        guard = self.hs.guard
        for server in servers:
            for room_id in self.hs.store.guard_acl_rooms(SOURCE_SERVER, server):
                try:
                    result = await guard.actions.server_acl(room_id, server, deny=False)
                    if not result.get("done"):
                        continue
                    await guard.record(Decision(
                        source=SOURCE_SERVER, outcome="allow",
                        reason=f"the server {server} is no longer banned by the policy list "
                               f"{entry.room_id}",
                        ts=self.hs.now_ms(), room_id=room_id, origin=server,
                        actions=("server_acl",),
                        details={"server_acl": dict(result), "lifted": True},
                    ))  # fmt: skip
                except Exception:  # noqa: BLE001 - one room's failure must not stop the lift
                    log.exception("policy list %s: lifting %s from the ACL of %s",
                                  entry.room_id, server, room_id)  # fmt: skip

    async def _acl_sweep(self, entry: PolicyList, rules: list[Rule]) -> None:
        guard = self.hs.guard
        for room_id in self.hs.store.guard_local_joined_rooms(self.hs.server_name):
            for rule in rules:
                assert rule.entity is not None
                try:
                    result = await guard.actions.server_acl(room_id, rule.entity, deny=True)
                    if not result.get("done"):
                        continue
                    reason = f"the server {rule.entity} is {_banned_by(entry, rule)}"
                    await guard.record(Decision(
                        source=SOURCE_SERVER, outcome="block", reason=reason,
                        ts=self.hs.now_ms(), room_id=room_id, origin=rule.entity,
                        actions=("server_acl",),
                        details={"rule": rule.describe(), "server_acl": dict(result)},
                    ))  # fmt: skip
                except Exception:  # noqa: BLE001 - one room's failure must not stop the sweep
                    log.exception("policy list %s: server ACL of %s", entry.room_id, room_id)

    def server_holds(self, room_id: str) -> bool:
        """Whether a local user is joined to the room (so its current state is kept here)."""
        if not self.hs.store.room_exists(room_id):
            return False
        is_local = self.hs.rooms.is_local
        return any(is_local(u) for u in self.hs.store.get_joined_users(room_id))

    def lists(self) -> list[PolicyList]:
        """The subscribed lists, current."""
        self._refresh()
        return list(self._lists.values())

    def reload(self) -> None:
        """Re-read which lists are subscribed (after the admin API changed them)."""
        self._loaded = False
        self._refresh()

    # -- lookups -----------------------------------------------------------------------------
    def _match(self, kind: str, value: str) -> tuple[PolicyList, Rule] | None:
        for entry in self._lists.values():
            rules = entry.rules
            if rules is None:
                continue
            rule = rules.match(kind, value)
            if rule is not None:
                return entry, rule
        return None

    def banned_user(self, user_id: str) -> tuple[PolicyList, Rule] | None:
        self._refresh()
        return self._match("user", user_id)

    def banned_server(self, server_name: str) -> tuple[PolicyList, Rule] | None:
        self._refresh()
        if not server_name or server_name == self._own_name:
            return None
        return self._match("server", server_name)

    def banned_room(self, room_id: str) -> tuple[PolicyList, Rule] | None:
        self._refresh()
        return self._match("room", room_id)

    def origin_banned(self, server_name: str) -> str | None:
        """The reason inbound federation from ``server_name`` is refused, or None."""
        if not self.enabled or not self.config.federation_origins:
            return None
        hit = self.banned_server(server_name)
        if hit is None:
            return None
        return f"the server {server_host(server_name)} is {_banned_by(*hit)}"

    def require_origin(self, server_name: str) -> None:
        """S-S API requests: 403 ``M_FORBIDDEN`` when the origin is banned by a list."""
        reason = self.origin_banned(server_name)
        if reason is not None:
            raise forbidden(reason)

    # -- signals -----------------------------------------------------------------------------
    def signals(self, ctx: EventContext) -> list[Signal]:
        """What the subscribed lists say about one event (local or federated)."""
        if not self.enabled:
            return []
        self._refresh()
        if not self._lists:
            return []
        cfg = self.config
        out: list[Signal] = []
        membership = ctx.membership
        sender_server = _server_of(ctx.sender)

        def user(user_id: str, what: str) -> None:
            hit = self._match("user", user_id)
            if hit is not None:
                out.append(_signal(SOURCE_USER, what, user_id, *hit))

        def server(server_name: str | None, what: str) -> None:
            if not server_name or server_name == self._own_name:
                return
            hit = self._match("server", server_name)
            if hit is not None:
                action = "server_acl" if cfg.server_acl and not ctx.local else None
                out.append(_signal(SOURCE_SERVER, what, server_host(server_name), *hit,
                                   action=action))  # fmt: skip

        def room(what: str) -> None:
            hit = self._match("room", ctx.room_id)
            if hit is not None:
                out.append(_signal(SOURCE_ROOM, what, ctx.room_id, *hit))

        if membership == "invite":
            if cfg.invites:
                user(ctx.sender, "an invite from")
                if ctx.state_key is not None and ctx.state_key != ctx.sender:
                    user(ctx.state_key, "an invite to")
                server(sender_server, "an invite from")
                if not ctx.local:
                    server(ctx.origin, "an invite from")
                if ctx.state_key is not None:
                    server(_server_of(ctx.state_key), "an invite to")
                room("an invite into")
            return _dedupe(out)
        if membership in ("join", "knock"):
            if cfg.joins:
                user(ctx.sender, "a join by")
                server(sender_server, "a join by")
                room("a join into")
            return _dedupe(out)
        if membership in ("leave", "ban"):
            return []  # leaving, kicking and banning are never refused by a list
        if not ctx.local and cfg.events:
            user(ctx.sender, "an event from")
            server(sender_server, "an event from")
            server(ctx.origin, "an event from")
        if cfg.rooms:
            room("an event into")
        return _dedupe(out)


def _server_entities(rules: CompiledRules | None) -> set[str]:
    if rules is None:
        return set()
    return {r.entity for r in rules.rules if r.kind == "server" and r.entity is not None}


def _server_of(user_id: str) -> str | None:
    _local, sep, server = user_id.partition(":")
    return server if sep and server else None


def _banned_by(entry: PolicyList, rule: Rule) -> str:
    why = f" ({rule.reason})" if rule.reason else ""
    return f"banned by the policy list {entry.name}{why}"


def _signal(
    source: str, what: str, subject: str, entry: PolicyList, rule: Rule,
    *, action: str | None = None,
) -> Signal:  # fmt: skip
    evidence = {"subject": subject, "list": entry.room_id, "rule": rule.describe()}
    reason = f"{what} {subject}: {_banned_by(entry, rule)}"
    return Signal(source, "block", 1.0, reason, evidence, action)


def _dedupe(signals: Iterable[Signal]) -> list[Signal]:
    seen: set[tuple[str, str]] = set()
    out: list[Signal] = []
    for s in signals:
        key = (s.source, str(s.evidence.get("subject")))
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out
