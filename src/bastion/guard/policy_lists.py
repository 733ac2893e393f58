"""Moderation policy lists (pure): the ``[guard.policy]`` table, policy rules read from a policy
room's state, and a compiled rule set that answers "is this user / server / room banned, and by
which rule".

C-S API "Moderation policy lists" (``modules/moderation_policies.md``): rules are state events
``m.policy.rule.user`` / ``.room`` / ``.server`` with an arbitrary ``state_key`` and content
``entity`` (a glob, appendices "Glob-style matching": ``*`` matches zero or more characters,
``?`` exactly one), ``recommendation`` (only ``m.ban`` is specified) and ``reason``. A rule is
removed by replacing it with empty content. Also read, as the moderation bots in use still
write them: the legacy types ``m.room.rule.*`` (the MSC2313 names) and
``org.matrix.mjolnir.rule.*``, and the recommendation ``org.matrix.mjolnir.ban``; MSC4204's
``m.takedown`` is taken as a ban too (it asks for more than a ban, never less). Every other
recommendation is ignored.

Hashed entities (MSC4205): instead of ``entity`` a rule may carry ``hashes: {"sha256": ...}``
(unstable: ``org.matrix.msc4205.hashes``), the base64 SHA-256 of the entity (a full user ID, a
room ID, a server name). Lists write it padded (the MSC's example) or unpadded; both are read.

Matching, as the spec and the server ACL module say: server rules against the server name
without its port, case-insensitively (DNS names); user rules against the full user ID and room
rules against the room ID, case-sensitively (identifiers are).

Hostile lists: every rule is untrusted input. Entities longer than :data:`MAX_ENTITY_CHARS` are
ignored; globs are matched without regular-expression backtracking (a glob is split on ``*``
into fixed-length pieces, each found leftmost in order: at most one linear scan per piece), so
``*a*a*a*...`` costs no more than its length; at most :data:`MAX_GLOBS_PER_KIND` globs per kind
and list are kept (the rest are counted as dropped); answers are cached per rule set.
"""

from __future__ import annotations

import binascii
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bastion.core.glob import Glob
from bastion.guard.tables import check_keys, get_bool, get_str_list

__all__ = [
    "BAN_RECOMMENDATIONS",
    "KINDS",
    "RULE_EVENT_TYPES",
    "CompiledRules",
    "Glob",
    "PolicyConfig",
    "Rule",
    "compile_rules",
    "entity_sha256",
    "is_glob",
    "parse_policy_config",
    "parse_rule",
    "server_host",
]

#: The three kinds of entity a rule can name.
KINDS: Final = ("user", "room", "server")

#: Policy rule event types (stable and legacy) → the kind of entity they name.
RULE_EVENT_TYPES: Final[Mapping[str, str]] = {
    **{f"m.policy.rule.{k}": k for k in KINDS},
    **{f"m.room.rule.{k}": k for k in KINDS},
    **{f"org.matrix.mjolnir.rule.{k}": k for k in KINDS},
}

#: Recommendations enforced as a ban; every other recommendation is ignored.
BAN_RECOMMENDATIONS: Final = frozenset(
    {"m.ban", "org.matrix.mjolnir.ban", "m.takedown", "org.matrix.msc4204.takedown"}
)

#: Longer entities (a user ID, room ID or server name is at most 255 characters) are ignored.
MAX_ENTITY_CHARS: Final = 512
#: Globs kept per kind and list; more are dropped (and counted).
MAX_GLOBS_PER_KIND: Final = 5000
#: A rule's reason is cut to this many characters (it is shown to users and recorded).
MAX_REASON_CHARS: Final = 500
#: Answers remembered per compiled rule set (the same senders are checked again and again).
CACHE_SIZE: Final = 4096

_HASH_KEYS: Final = ("hashes", "org.matrix.msc4205.hashes")
_POLICY_KEYS: Final = frozenset(
    {"lists", "invites", "joins", "events", "rooms", "federation_origins", "server_acl"}
)


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyConfig:
    """``[guard.policy]``: which lists to trust and what to enforce where.

    ``lists``: policy room IDs trusted from the config file (besides those an admin subscribes
    through the admin API). ``invites``: refuse invites from or to a banned user, from a banned
    server, or into a banned room. ``joins``: refuse joins by banned users and into banned
    rooms. ``events``: refuse (soft-fail) events from banned users and servers in federated
    rooms. ``rooms``: refuse events into banned rooms. ``federation_origins``: refuse inbound
    federation requests from banned servers (403). ``server_acl``: a new server ban is added to
    the ``deny`` list of ``m.room.server_acl`` in every room a local user is joined to and has
    the power to change it, and an event from a banned server asks for the same in its room.
    """

    lists: tuple[str, ...] = ()
    invites: bool = True
    joins: bool = True
    events: bool = True
    rooms: bool = True
    federation_origins: bool = True
    server_acl: bool = False


def parse_policy_config(table: Mapping[str, Any]) -> PolicyConfig:
    """The ``[guard.policy]`` table (:class:`ValueError` naming ``guard.policy.<key>``)."""
    where = "guard.policy"
    check_keys(table, _POLICY_KEYS, where)
    lists = get_str_list(table, "lists", (), where)
    for room_id in lists:
        if not _looks_like_room_id(room_id):
            raise ValueError(f"{where}.lists: {room_id!r} is not a room ID")
    return PolicyConfig(
        lists=tuple(dict.fromkeys(lists)),
        invites=get_bool(table, "invites", True, where),
        joins=get_bool(table, "joins", True, where),
        events=get_bool(table, "events", True, where),
        rooms=get_bool(table, "rooms", True, where),
        federation_origins=get_bool(table, "federation_origins", True, where),
        server_acl=get_bool(table, "server_acl", False, where),
    )


def _looks_like_room_id(value: str) -> bool:
    return value.startswith("!") and 1 < len(value) <= 255 and value.isprintable()


# -- rules -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One ban rule of one list."""

    kind: str
    #: The glob or literal entity, or None for a hashed rule.
    entity: str | None
    #: The unpadded base64 SHA-256 of the entity (hashed rules), else None.
    sha256: str | None
    recommendation: str
    reason: str
    event_type: str
    state_key: str
    #: The policy room the rule comes from ("" when not known).
    list_id: str = ""
    #: For a room rule naming an alias: the alias, when ``entity`` is the room ID it resolved to.
    alias: str | None = None

    def describe(self) -> dict[str, Any]:
        """The rule as JSON (admin API, evidence of a signal)."""
        out: dict[str, Any] = {"kind": self.kind, "recommendation": self.recommendation,
                               "reason": self.reason, "type": self.event_type,
                               "state_key": self.state_key, "list": self.list_id}  # fmt: skip
        if self.alias is not None:
            out["alias"] = self.alias
        if self.entity is not None:
            out["entity"] = self.entity
        else:
            out["sha256"] = self.sha256
        return out


def _normalise_hash(value: object) -> str | None:
    """A base64 SHA-256 (padded or not, standard alphabet) as unpadded base64, or None."""
    if not isinstance(value, str) or not 42 <= len(value) <= 44:
        return None
    stripped = value.rstrip("=")
    try:
        raw = binascii.a2b_base64(stripped + "=" * (-len(stripped) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 32:
        return None
    return binascii.b2a_base64(raw, newline=False).decode("ascii").rstrip("=")


def entity_sha256(entity: str) -> str:
    """MSC4205: the unpadded base64 SHA-256 of an entity's UTF-8 bytes."""
    digest = hashlib.sha256(entity.encode("utf-8", "surrogatepass")).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii").rstrip("=")


def parse_rule(
    event_type: str, state_key: str, content: Mapping[str, Any], list_id: str = ""
) -> Rule | None:
    """The ban rule in one policy state event, or None: not a rule type, removed (empty
    content), a recommendation other than a ban, or malformed (no usable entity or hash).
    Never raises on hostile content."""
    kind = RULE_EVENT_TYPES.get(event_type)
    if kind is None or not isinstance(content, Mapping) or not content:
        return None
    recommendation = content.get("recommendation")
    if not isinstance(recommendation, str) or recommendation not in BAN_RECOMMENDATIONS:
        return None
    reason = content.get("reason")
    reason = reason[:MAX_REASON_CHARS] if isinstance(reason, str) else ""
    entity = content.get("entity")
    sha256: str | None = None
    if isinstance(entity, str):
        if not entity or len(entity) > MAX_ENTITY_CHARS or "\x00" in entity:
            return None
        if kind == "server":
            entity = entity.lower()
    else:
        entity = None
        for key in _HASH_KEYS:
            hashes = content.get(key)
            if isinstance(hashes, Mapping):
                sha256 = _normalise_hash(hashes.get("sha256"))
                if sha256 is not None:
                    break
        if sha256 is None:
            return None
    return Rule(kind, entity, sha256, recommendation, reason, event_type, state_key, list_id)


# -- globs -----------------------------------------------------------------------------------
def is_glob(entity: str) -> bool:
    return "*" in entity or "?" in entity


def server_host(server_name: str) -> str:
    """A server name without its port, lower-cased (``[::1]:8448`` → ``[::1]``)."""
    if server_name.startswith("["):
        end = server_name.find("]")
        host = server_name[: end + 1] if end != -1 else server_name
    else:
        host, sep, port = server_name.rpartition(":")
        if not (sep and port.isdigit() and host):
            host = server_name
    return host.lower()


# -- compiled rule sets ----------------------------------------------------------------------
@dataclass
class _KindRules:
    exact: dict[str, Rule] = field(default_factory=dict)
    hashed: dict[str, Rule] = field(default_factory=dict)
    globs: list[tuple[Glob, Rule]] = field(default_factory=list)


class CompiledRules:
    """The ban rules of one or more lists, ready for lookups: exact entities and hashes in
    dicts, globs compiled once; :meth:`match` answers with the first rule that bans."""

    def __init__(self) -> None:
        self._kinds: dict[str, _KindRules] = {k: _KindRules() for k in KINDS}
        self.rules: list[Rule] = []
        #: Globs not kept (over :data:`MAX_GLOBS_PER_KIND` per kind and list).
        self.dropped = 0
        self._cache: OrderedDict[tuple[str, str], Rule | None] = OrderedDict()

    def add(self, rule: Rule, *, glob_budget: dict[str, int] | None = None) -> bool:
        """Add one rule; False when it was dropped (a glob over the budget)."""
        rules = self._kinds[rule.kind]
        if rule.entity is None:
            assert rule.sha256 is not None
            rules.hashed.setdefault(rule.sha256, rule)
        elif is_glob(rule.entity):
            if glob_budget is not None:
                if glob_budget.get(rule.kind, 0) >= MAX_GLOBS_PER_KIND:
                    self.dropped += 1
                    return False
                glob_budget[rule.kind] = glob_budget.get(rule.kind, 0) + 1
            rules.globs.append((Glob(_collapse_stars(rule.entity)), rule))
        else:
            key = server_host(rule.entity) if rule.kind == "server" else rule.entity
            rules.exact.setdefault(key, rule)
        self.rules.append(rule)
        self._cache.clear()
        return True

    def counts(self) -> dict[str, int]:
        """How many rules of each kind."""
        return {k: len(r.exact) + len(r.hashed) + len(r.globs) for k, r in self._kinds.items()}

    def match(self, kind: str, value: str) -> Rule | None:
        """The rule banning ``value`` (a user ID, room ID or server name), or None."""
        if kind == "server":
            value = server_host(value)
        key = (kind, value)
        cache = self._cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        rule = self._match(kind, value)
        cache[key] = rule
        if len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
        return rule

    def _match(self, kind: str, value: str) -> Rule | None:
        rules = self._kinds.get(kind)
        if rules is None or not value or len(value) > MAX_ENTITY_CHARS:
            return None
        hit = rules.exact.get(value)
        if hit is not None:
            return hit
        if rules.hashed:
            hit = rules.hashed.get(entity_sha256(value))
            if hit is not None:
                return hit
        for glob, rule in rules.globs:
            if glob.matches(value):
                return rule
        return None


def _collapse_stars(pattern: str) -> str:
    while "**" in pattern:
        pattern = pattern.replace("**", "*")
    return pattern


def compile_rules(rules: Iterable[Rule]) -> CompiledRules:
    """One compiled set from rules (of one list: the glob budget is per list)."""
    out = CompiledRules()
    budget: dict[str, int] = {}
    for rule in rules:
        out.add(rule, glob_budget=budget)
    return out


def rules_from_state(
    list_id: str, state: Iterable[tuple[str, str, Mapping[str, Any]]]
) -> CompiledRules:
    """A list's compiled rules from its policy room's current state events
    (``(type, state_key, content)``; other types are skipped)."""
    parsed = (parse_rule(t, k, c, list_id) for t, k, c in state)
    return compile_rules(r for r in parsed if r is not None)
