"""Push rule evaluation (C-S API "Push Notifications" → "Push Rules", "Conditions",
"Predefined Rules"; appendices "Dot-separated property paths", "Glob-style matching").

Pure: a user's effective ruleset (``services.push_rules.effective_ruleset``: the server-default
rules merged with the user's, in the spec's order) is compiled once into :class:`CompiledRules`
(every condition becomes a small closure; glob patterns are compiled once), then
:meth:`CompiledRules.evaluate` runs against an event and a :class:`PushContext` (what the shell
knows about the room: member count, the user's display name, the sender's power level and the
power levels content). The first enabled rule whose conditions all match gives the actions;
:func:`summarise` turns actions into (notify, highlight, tweaks).

Every input is hostile: events come from other servers and rules from users. Nothing here
raises on any event or rule shape: a malformed condition never matches ("Unrecognised
conditions MUST NOT match any events"), and no pattern is matched by a backtracking regular
expression (a pattern's pieces are fixed-length, found left to right: linear passes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from bastion.core.glob import Glob, _Piece
from bastion.core.power_levels import notification_level
from bastion.core.room_versions import get_room_version

__all__ = [
    "KINDS",
    "CompiledRules",
    "PushContext",
    "body_glob_match",
    "compile_ruleset",
    "parse_dotted_path",
    "property_of",
    "summarise",
]

KINDS = ("override", "content", "room", "sender", "underride")

#: Characters that are *not* word boundaries ("Push Rules": content rules, ``content.body``).
_WORD = "A-Za-z0-9_"
_MISSING = object()
_MAX_SAFE = 2**53


@dataclass(slots=True)
class PushContext:
    """What the evaluation needs to know about the room, besides the event."""

    member_count: int
    #: The user's display name in the room (``contains_display_name``), if any.
    display_name: str | None = None
    #: The sender's power level (``sender_notification_permission``).
    sender_power: float = 0
    #: The ``m.room.power_levels`` content (``None`` if the room has none).
    power_levels: Mapping[str, Any] | None = None
    room_version: str = "10"


Cond = Callable[[Mapping[str, Any], PushContext], bool]


# -- dot-separated property paths -------------------------------------------------------------


def parse_dotted_path(key: str) -> tuple[str, ...]:
    """Split ``key`` on unescaped dots (appendices "Dot-separated property paths"): ``\\.`` is a
    literal dot and ``\\\\`` a literal backslash; any other backslash stands for itself."""
    parts: list[str] = []
    cur: list[str] = []
    i, n = 0, len(key)
    while i < n:
        ch = key[i]
        if ch == "\\" and i + 1 < n and key[i + 1] in ".\\":
            cur.append(key[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return tuple(parts)


def property_of(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``event``, or ``_MISSING`` (every step must be an object)."""
    value: Any = event
    for part in path:
        if not isinstance(value, Mapping):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _same_scalar(a: Any, b: Any) -> bool:
    """Exact match of non-compound canonical JSON values: no casting (``1`` is not ``true``),
    integers only in [-(2**53)+1, (2**53)-1]."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return -_MAX_SAFE < a < _MAX_SAFE and a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def _is_scalar(v: Any) -> bool:
    if v is None or isinstance(v, (str, bool)):
        return True
    return isinstance(v, int) and -_MAX_SAFE < v < _MAX_SAFE


# -- glob matching ------------------------------------------------------------------------------


class _WordGlob:
    """A glob matched against any substring that starts and ends at a word boundary (the
    ``content.body`` rule). Split on ``*``: the head is found at the leftmost start boundary
    (a later start never leaves more room), each middle piece leftmost after it, then the tail
    anywhere after that, followed by an end boundary. Each step is one forward scan."""

    __slots__ = ("head", "middle", "starred", "tail", "whole")

    def __init__(self, pattern: str) -> None:
        parts = pattern.split("*")
        self.starred = len(parts) > 1

        def piece_re(text: str, before: bool, after: bool) -> re.Pattern[str]:
            body = "".join("." if ch == "?" else re.escape(ch) for ch in text)
            lead = f"(?<![{_WORD}])" if before else ""
            trail = f"(?![{_WORD}])" if after else ""
            return re.compile(lead + body + trail, re.DOTALL)

        if not self.starred:
            self.whole = piece_re(parts[0], True, True)
            self.head = self.tail = self.whole
            self.middle: tuple[_Piece, ...] = ()
            return
        self.whole = self.head = piece_re(parts[0], True, False)
        self.tail = piece_re(parts[-1], False, True)
        self.middle = tuple(_Piece(p, True) for p in parts[1:-1] if p)

    def matches(self, value: str) -> bool:
        if not self.starred:
            return self.whole.search(value) is not None
        found = self.head.search(value)
        if found is None:
            return False
        pos, n = found.end(), len(value)
        for piece in self.middle:
            at = piece.find(value, pos, n)
            if at < 0:
                return False
            pos = at + piece.size
        return self.tail.search(value, pos) is not None


def _lower(value: str) -> str:
    return value.lower()


def body_glob_match(pattern: str, body: str) -> bool:
    """Whether the glob ``pattern`` matches a word-bounded substring of ``body``
    (case-insensitive)."""
    return _WordGlob(_lower(pattern)).matches(_lower(body))


# -- compiling conditions -----------------------------------------------------------------------


def _never(_e: Mapping[str, Any], _c: PushContext) -> bool:
    return False


def _event_match(cond: Mapping[str, Any]) -> Cond:
    key, pattern = cond.get("key"), cond.get("pattern")
    if not isinstance(key, str) or not isinstance(pattern, str):
        return _never
    path = parse_dotted_path(key)
    if path == ("content", "body"):
        word = _WordGlob(_lower(pattern))

        def match_body(event: Mapping[str, Any], _c: PushContext) -> bool:
            value = property_of(event, path)
            return isinstance(value, str) and word.matches(_lower(value))

        return match_body
    glob = Glob(_lower(pattern))
    if not glob.starred and "?" not in pattern:
        literal = _lower(pattern)

        def match_literal(event: Mapping[str, Any], _c: PushContext) -> bool:
            value = property_of(event, path)
            return isinstance(value, str) and (value == literal or _lower(value) == literal)

        return match_literal

    def match(event: Mapping[str, Any], _c: PushContext) -> bool:
        value = property_of(event, path)
        return isinstance(value, str) and glob.matches(_lower(value))

    return match


def _property_is(cond: Mapping[str, Any]) -> Cond:
    key = cond.get("key")
    if not isinstance(key, str) or "value" not in cond or not _is_scalar(cond["value"]):
        return _never
    path, want = parse_dotted_path(key), cond["value"]

    def match(event: Mapping[str, Any], _c: PushContext) -> bool:
        value = property_of(event, path)
        return value is not _MISSING and _same_scalar(value, want)

    return match


def _property_contains(cond: Mapping[str, Any]) -> Cond:
    key = cond.get("key")
    if not isinstance(key, str) or "value" not in cond or not _is_scalar(cond["value"]):
        return _never
    path, want = parse_dotted_path(key), cond["value"]

    def match(event: Mapping[str, Any], _c: PushContext) -> bool:
        value = property_of(event, path)
        return isinstance(value, list) and any(_same_scalar(v, want) for v in value)

    return match


_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?([0-9]{1,15})")
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _member_count(cond: Mapping[str, Any]) -> Cond:
    is_ = cond.get("is")
    m = _MEMBER_COUNT.fullmatch(is_) if isinstance(is_, str) else None
    if m is None:
        return _never
    op, number = _COMPARE[m.group(1) or "=="], int(m.group(2))

    def match(_e: Mapping[str, Any], ctx: PushContext) -> bool:
        return op(ctx.member_count, number)

    return match


@lru_cache(maxsize=1024)
def _name_regex(name: str) -> re.Pattern[str]:
    return re.compile(f"(?<![{_WORD}]){re.escape(name)}(?![{_WORD}])")


def _display_name(_cond: Mapping[str, Any]) -> Cond:
    def match(event: Mapping[str, Any], ctx: PushContext) -> bool:
        name = ctx.display_name
        content = event.get("content")
        if not name or not isinstance(content, Mapping):
            return False
        body = content.get("body")
        if not isinstance(body, str):
            return False
        return _name_regex(_lower(name)).search(_lower(body)) is not None

    return match


def _sender_permission(cond: Mapping[str, Any]) -> Cond:
    key = cond.get("key")
    if not isinstance(key, str):
        return _never

    def match(_e: Mapping[str, Any], ctx: PushContext) -> bool:
        try:
            rv = get_room_version(ctx.room_version)
        except Exception:  # noqa: BLE001 - an unknown room version: the condition fails
            return False
        level = notification_level(ctx.power_levels, key, rv)
        return level is not None and ctx.sender_power >= level

    return match


_CONDITIONS: dict[str, Callable[[Mapping[str, Any]], Cond]] = {
    "event_match": _event_match,
    "event_property_is": _property_is,
    "event_property_contains": _property_contains,
    "room_member_count": _member_count,
    "contains_display_name": _display_name,
    "sender_notification_permission": _sender_permission,
}


def compile_condition(cond: Any) -> Cond:
    """A condition as a closure; unknown or malformed conditions never match."""
    if not isinstance(cond, Mapping):
        return _never
    kind = cond.get("kind")
    make = _CONDITIONS.get(kind) if isinstance(kind, str) else None
    if make is None:
        return _never
    try:
        return make(cond)
    except Exception:  # noqa: BLE001 - a malformed condition never matches
        return _never


def _rule_conditions(kind: str, rule: Mapping[str, Any]) -> list[Cond] | None:
    """The conditions of a rule (implicit ones for content, room and sender rules), or
    ``None`` when the rule can never match."""
    if kind in ("override", "underride"):
        conds = rule.get("conditions", [])
        if not isinstance(conds, list):
            return None
        return [compile_condition(c) for c in conds]
    if kind == "content":
        pattern = rule.get("pattern")
        if not isinstance(pattern, str):
            return None
        return [compile_condition({"kind": "event_match", "key": "content.body",
                                   "pattern": pattern})]  # fmt: skip
    rule_id = rule.get("rule_id")
    if not isinstance(rule_id, str):
        return None
    field = "room_id" if kind == "room" else "sender"

    def match(event: Mapping[str, Any], _c: PushContext) -> bool:
        return event.get(field) == rule_id

    return [match]


@dataclass(slots=True, frozen=True)
class _Compiled:
    rule_id: str
    conditions: tuple[Cond, ...]
    actions: tuple[Any, ...]


class CompiledRules:
    """A user's enabled rules in evaluation order, conditions compiled."""

    __slots__ = ("needs_display_name", "rules")

    def __init__(self, rules: tuple[_Compiled, ...], needs_display_name: bool = False) -> None:
        self.rules = rules
        #: Whether a rule has a ``contains_display_name`` condition (the shell then looks up
        #: the user's display name in the room; otherwise it need not).
        self.needs_display_name = needs_display_name

    def match(
        self, event: Mapping[str, Any], ctx: PushContext
    ) -> tuple[str, tuple[Any, ...]] | None:
        """``(rule_id, actions)`` of the first matching rule, or ``None``."""
        if not isinstance(event, Mapping):
            return None
        for rule in self.rules:
            for cond in rule.conditions:
                try:
                    if not cond(event, ctx):
                        break
                except Exception:  # noqa: BLE001 - never fail on a hostile event
                    break
            else:
                return rule.rule_id, rule.actions
        return None

    def evaluate(self, event: Mapping[str, Any], ctx: PushContext) -> tuple[Any, ...]:
        """The actions for ``event`` (empty when no rule matches)."""
        found = self.match(event, ctx)
        return () if found is None else found[1]


def compile_ruleset(ruleset: Mapping[str, Any]) -> CompiledRules:
    """Compile an effective ruleset (``{kind: [rule, ...]}``, kinds evaluated in the spec's
    order: override, content, room, sender, underride). Disabled rules are left out."""
    out: list[_Compiled] = []
    needs_name = False
    if not isinstance(ruleset, Mapping):
        return CompiledRules(())
    for kind in KINDS:
        rules = ruleset.get(kind)
        if not isinstance(rules, list):
            continue
        for rule in rules:
            if not isinstance(rule, Mapping) or rule.get("enabled", True) is not True:
                continue
            conds = _rule_conditions(kind, rule)
            actions = rule.get("actions")
            if conds is None or not isinstance(actions, list):
                continue
            rule_id = rule.get("rule_id")
            conditions = rule.get("conditions")
            if isinstance(conditions, list) and any(
                isinstance(c, Mapping) and c.get("kind") == "contains_display_name"
                for c in conditions
            ):
                needs_name = True
            out.append(_Compiled(rule_id if isinstance(rule_id, str) else "", tuple(conds),
                                 tuple(actions)))  # fmt: skip
    return CompiledRules(tuple(out), needs_name)


def summarise(actions: tuple[Any, ...] | list[Any]) -> tuple[bool, bool, dict[str, Any]]:
    """``(notify, highlight, tweaks)`` of a rule's actions. ``highlight`` is a tweak whose
    value defaults to true; historical actions (``dont_notify``, ``coalesce``) are ignored."""
    notify = False
    tweaks: dict[str, Any] = {}
    for a in actions:
        if a == "notify":
            notify = True
        elif isinstance(a, Mapping):
            name = a.get("set_tweak")
            if isinstance(name, str) and name:
                tweaks[name] = a.get("value", True) if name == "highlight" else a.get("value")
    highlight = tweaks.get("highlight") is True
    return notify, notify and highlight, tweaks
