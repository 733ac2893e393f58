"""Push rules (C-S API "Push Notifications" → "Push Rules", "Predefined Rules", "Push Rules: API",
"Push Rules: Events"; pushrules.yaml).

Pure part: the predefined (server-default) ruleset for a user, validation of rules, actions and
conditions, and edits of a user's *rules document*:

.. code-block:: python

    {"user": {kind: [rule, ...]},              # the user's own rules, most important first
     "defaults": {rule_id: {"enabled": bool, "actions": [...]}}}   # changes to default rules

The effective ruleset (``effective_ruleset``) is ``.m.rule.master``, then the user's rules of each
kind, then the other server-default rules of that kind ("Predefined Rules": server-default rules
rank below user-defined rules, except ``.m.rule.master`` which ranks above every rule).

Shell part: :class:`PushRules` (``hs.push_rules``) reads and writes the document (one write per
request, read-modify-write on the writer thread) and serves the effective rules as the
``m.push_rules`` account data.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from bastion.core.canonical_json import canonical_json, parse_json
from bastion.errors import (
    M_RESOURCE_LIMIT_EXCEEDED,
    M_UNKNOWN,
    MatrixError,
    bad_json,
    invalid_param,
    not_found,
)
from bastion.storage.interface import Txn

if TYPE_CHECKING:
    from bastion.server import HomeServer

KINDS = ("override", "content", "room", "sender", "underride")
#: At most this many user-defined rules per user (all kinds).
MAX_USER_RULES = 500
MAX_RULE_ID_LENGTH = 255
MAX_CONDITIONS = 50
MAX_ACTIONS = 50
_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?[0-9]{1,15}")
#: Historical actions: clients and homeservers MUST ignore them ("Historical Actions").
HISTORICAL_ACTIONS = ("dont_notify", "coalesce")


# -- the predefined rules ("Predefined Rules", spec v1.17+) ---------------------------------


def _ev(key: str, pattern: str) -> dict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def default_override_rules(user_id: str) -> list[dict]:
    return [
        {"rule_id": ".m.rule.master", "enabled": False, "conditions": [], "actions": []},
        {"rule_id": ".m.rule.suppress_notices", "enabled": True,
         "conditions": [_ev("content.msgtype", "m.notice")], "actions": []},
        {"rule_id": ".m.rule.invite_for_me", "enabled": True,
         "conditions": [_ev("type", "m.room.member"), _ev("content.membership", "invite"),
                        _ev("state_key", user_id)],
         "actions": ["notify", _SOUND_DEFAULT]},
        {"rule_id": ".m.rule.member_event", "enabled": True,
         "conditions": [_ev("type", "m.room.member")], "actions": []},
        {"rule_id": ".m.rule.is_user_mention", "enabled": True,
         "conditions": [{"kind": "event_property_contains",
                         "key": "content.m\\.mentions.user_ids", "value": user_id}],
         "actions": ["notify", _SOUND_DEFAULT, _HIGHLIGHT]},
        {"rule_id": ".m.rule.is_room_mention", "enabled": True,
         "conditions": [{"kind": "event_property_is", "key": "content.m\\.mentions.room",
                         "value": True},
                        {"kind": "sender_notification_permission", "key": "room"}],
         "actions": ["notify", _HIGHLIGHT]},
        {"rule_id": ".m.rule.tombstone", "enabled": True,
         "conditions": [_ev("type", "m.room.tombstone"), _ev("state_key", "")],
         "actions": ["notify", _HIGHLIGHT]},
        {"rule_id": ".m.rule.reaction", "enabled": True,
         "conditions": [_ev("type", "m.reaction")], "actions": []},
        {"rule_id": ".m.rule.room.server_acl", "enabled": True,
         "conditions": [_ev("type", "m.room.server_acl"), _ev("state_key", "")], "actions": []},
        {"rule_id": ".m.rule.suppress_edits", "enabled": True,
         "conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type",
                         "value": "m.replace"}],
         "actions": []},
    ]  # fmt: skip


def default_underride_rules() -> list[dict]:
    return [
        {"rule_id": ".m.rule.call", "enabled": True,
         "conditions": [_ev("type", "m.call.invite")],
         "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]},
        {"rule_id": ".m.rule.encrypted_room_one_to_one", "enabled": True,
         "conditions": [{"kind": "room_member_count", "is": "2"},
                        _ev("type", "m.room.encrypted")],
         "actions": ["notify", _SOUND_DEFAULT]},
        {"rule_id": ".m.rule.room_one_to_one", "enabled": True,
         "conditions": [{"kind": "room_member_count", "is": "2"},
                        _ev("type", "m.room.message")],
         "actions": ["notify", _SOUND_DEFAULT]},
        {"rule_id": ".m.rule.message", "enabled": True,
         "conditions": [_ev("type", "m.room.message")], "actions": ["notify"]},
        {"rule_id": ".m.rule.encrypted", "enabled": True,
         "conditions": [_ev("type", "m.room.encrypted")], "actions": ["notify"]},
    ]  # fmt: skip


def default_rules(user_id: str) -> dict[str, list[dict]]:
    """The server-default rules by kind (no default ``content``, ``room`` or ``sender`` rules
    since v1.17 removed the body-matching ones)."""
    return {
        "override": default_override_rules(user_id),
        "content": [],
        "room": [],
        "sender": [],
        "underride": default_underride_rules(),
    }


def empty_document() -> dict:
    return {"user": {k: [] for k in KINDS}, "defaults": {}}


def _present(kind: str, rule: dict, default: bool) -> dict:
    out: dict[str, Any] = {
        "rule_id": rule["rule_id"],
        "default": default,
        "enabled": rule.get("enabled", True),
        "actions": rule["actions"],
    }
    if kind in ("override", "underride"):
        out["conditions"] = rule.get("conditions", [])
    elif kind == "content":
        out["pattern"] = rule["pattern"]
    return out


def effective_ruleset(user_id: str, doc: dict) -> dict[str, list[dict]]:
    """The ruleset a client sees (``push_ruleset.yaml``), every kind present."""
    defaults = default_rules(user_id)
    changes = doc.get("defaults", {})
    out: dict[str, list[dict]] = {}
    for kind in KINDS:
        rules: list[dict] = []
        defs = []
        for rule in defaults[kind]:
            r = dict(rule)
            change = changes.get(rule["rule_id"], {})
            if "enabled" in change:
                r["enabled"] = change["enabled"]
            if "actions" in change:
                r["actions"] = change["actions"]
            defs.append(_present(kind, r, True))
        user_rules = [_present(kind, r, False) for r in doc.get("user", {}).get(kind, [])]
        if kind == "override" and defs and defs[0]["rule_id"] == ".m.rule.master":
            rules = [defs[0], *user_rules, *defs[1:]]
        else:
            rules = [*user_rules, *defs]
        out[kind] = copy.deepcopy(rules)
    return out


# -- validation -----------------------------------------------------------------------------


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise invalid_param(f"unknown push rule kind {kind!r}; expected one of {', '.join(KINDS)}")


def validate_actions(actions: Any) -> list:
    """Validate an ``actions`` array; historical actions (``dont_notify``, ``coalesce``) are
    stripped ("Historical Actions")."""
    if not isinstance(actions, list):
        raise bad_json("'actions' must be an array")
    if len(actions) > MAX_ACTIONS:
        raise invalid_param(f"at most {MAX_ACTIONS} actions are allowed")
    out: list[str | dict[str, Any]] = []
    for a in actions:
        if isinstance(a, str):
            if a in HISTORICAL_ACTIONS:
                continue
            if a != "notify":
                raise invalid_param(f"unknown push rule action {a!r}")
            out.append(a)
        elif isinstance(a, dict):
            tweak = a.get("set_tweak")
            if not isinstance(tweak, str) or not tweak:
                raise invalid_param(
                    "an object action must be a 'set_tweak' with a string tweak name"
                )
            if tweak == "highlight" and "value" in a and not isinstance(a["value"], bool):
                raise invalid_param("the 'highlight' tweak value must be a boolean")
            if tweak == "sound" and not isinstance(a.get("value"), str):
                raise invalid_param("the 'sound' tweak value must be a string")
            out.append(a)
        else:
            raise bad_json("each action must be a string or an object")
    return out


def _scalar(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -(2**53) < value < 2**53


def validate_condition(cond: Any) -> dict:
    """Validate one push condition (``push_condition.yaml``). Unknown kinds are kept: they never
    match ("Unrecognised conditions MUST NOT match any events")."""
    if not isinstance(cond, dict):
        raise bad_json("each condition must be an object")
    kind = cond.get("kind")
    if not isinstance(kind, str) or not kind:
        raise bad_json("a condition needs a string 'kind'")
    needs_key = kind in (
        "event_match", "event_property_is", "event_property_contains",
        "sender_notification_permission",
    )  # fmt: skip
    if needs_key and not isinstance(cond.get("key"), str):
        raise invalid_param(f"a {kind} condition needs a string 'key'")
    if kind == "event_match" and not isinstance(cond.get("pattern"), str):
        raise invalid_param("an event_match condition needs a string 'pattern'")
    if kind in ("event_property_is", "event_property_contains") and (
        "value" not in cond or not _scalar(cond["value"])
    ):
        raise invalid_param(f"a {kind} condition needs a 'value': string, integer, boolean or null")
    if kind == "room_member_count":
        is_ = cond.get("is")
        if not isinstance(is_, str) or not _MEMBER_COUNT.fullmatch(is_):
            raise invalid_param("a room_member_count condition needs 'is' like '2', '>=10'")
    return cond


def validate_rule_id(kind: str, rule_id: str) -> None:
    if not rule_id:
        raise invalid_param("the rule ID must not be empty")
    if len(rule_id) > MAX_RULE_ID_LENGTH:
        raise invalid_param(f"the rule ID is longer than {MAX_RULE_ID_LENGTH}")
    if rule_id.startswith("."):
        raise invalid_param("rule IDs starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise invalid_param("rule IDs may not contain '/' or '\\'")
    if kind == "room" and not rule_id.startswith("!"):
        raise invalid_param("the rule ID of a room rule is the room ID")
    if kind == "sender" and not rule_id.startswith("@"):
        raise invalid_param("the rule ID of a sender rule is the user ID")


def make_rule(kind: str, rule_id: str, body: Any) -> dict:
    """A user rule from a PUT body (validated)."""
    if not isinstance(body, dict):
        raise bad_json("the push rule must be a JSON object")
    if "actions" not in body:
        raise bad_json("'actions' is required")
    rule: dict[str, Any] = {"rule_id": rule_id, "actions": validate_actions(body["actions"])}
    if kind in ("override", "underride"):
        conditions = body.get("conditions", [])
        if not isinstance(conditions, list):
            raise bad_json("'conditions' must be an array")
        if len(conditions) > MAX_CONDITIONS:
            raise invalid_param(f"at most {MAX_CONDITIONS} conditions are allowed")
        rule["conditions"] = [validate_condition(c) for c in conditions]
    elif kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise bad_json("content rules need a string 'pattern'")
        rule["pattern"] = pattern
    return rule


# -- edits of the document (pure) -----------------------------------------------------------


def _find_default(user_id: str, kind: str, rule_id: str) -> dict | None:
    for rule in default_rules(user_id)[kind]:
        if rule["rule_id"] == rule_id:
            return rule
    return None


def put_rule(
    doc: dict, kind: str, rule_id: str, body: Any, before: str | None, after: str | None
) -> dict:
    """Add or replace a user rule (pushrules.yaml PUT). A new rule is enabled and, without
    ``before``/``after``, the most important user rule of its kind; an updated rule keeps its
    place and enabled state unless ``before``/``after`` move it. ``before`` wins over ``after``.
    Returns the new document."""
    check_kind(kind)
    validate_rule_id(kind, rule_id)
    rule = make_rule(kind, rule_id, body)
    doc = copy.deepcopy(doc)
    rules: list[dict] = doc.setdefault("user", {}).setdefault(kind, [])
    index = next((i for i, r in enumerate(rules) if r["rule_id"] == rule_id), None)
    if index is not None:
        rule["enabled"] = rules[index].get("enabled", True)
    else:
        rule["enabled"] = True
        if sum(len(v) for v in doc["user"].values()) >= MAX_USER_RULES:
            raise MatrixError(M_RESOURCE_LIMIT_EXCEEDED, "too many push rules", 400)
    anchor = before if before is not None else after
    if anchor is not None:
        if anchor.startswith("."):
            raise MatrixError(
                M_UNKNOWN, "rules cannot be placed relative to a server-default rule", 400
            )
        if anchor == rule_id:
            raise MatrixError(M_UNKNOWN, "a rule cannot be placed relative to itself", 400)
        if index is not None:
            del rules[index]
        pos = next((i for i, r in enumerate(rules) if r["rule_id"] == anchor), None)
        if pos is None:
            raise MatrixError(M_UNKNOWN, f"before/after rule not found: {anchor}", 400)
        rules.insert(pos if before is not None else pos + 1, rule)
    elif index is not None:
        rules[index] = rule
    else:
        rules.insert(0, rule)
    return doc


def _names_room(rule: dict, room_id: str) -> bool:
    """Whether a rule applies to ``room_id`` only: an ``event_match`` condition on the
    ``room_id`` key with exactly that pattern."""
    return any(
        isinstance(c, dict) and c.get("kind") == "event_match" and c.get("key") == "room_id"
        and c.get("pattern") == room_id
        for c in rule.get("conditions") or ()
    )  # fmt: skip


def copy_room_rules(doc: dict, old_room_id: str, new_room_id: str) -> dict | None:
    """The user's rules for ``old_room_id`` copied for ``new_room_id``, which replaces it (C-S
    API "Room Upgrades": "the server should automatically transfer ... the user's personalized
    settings"; Synapse copies room push rules as here): the ``room`` rule named after the old
    room, and every ``override`` and ``underride`` rule whose conditions name it (its rule ID
    and conditions rewritten to name the new room). A copy keeps the rule's actions and
    enabled state and goes first among the user's rules of its kind; a rule the user already
    has for the new room is kept, and a rule whose ID does not name the old room is not copied
    (it could not be named apart). None when nothing was copied (the document stays as it is).
    """
    doc = copy.deepcopy(doc)
    user = doc.setdefault("user", {})
    copied = False
    for kind in ("override", "room", "underride"):
        rules: list[dict] = user.setdefault(kind, [])
        have = {r.get("rule_id") for r in rules}
        new_rules = []
        for rule in rules:
            rule_id = rule.get("rule_id")
            if not isinstance(rule_id, str) or old_room_id not in rule_id:
                continue
            if kind == "room" and rule_id != old_room_id:
                continue
            if kind != "room" and not _names_room(rule, old_room_id):
                continue
            new_id = rule_id.replace(old_room_id, new_room_id)
            if new_id in have:
                continue
            new = copy.deepcopy(rule)
            new["rule_id"] = new_id
            if "conditions" in new:
                new["conditions"] = [
                    {**c, "pattern": new_room_id}
                    if isinstance(c, dict) and c.get("key") == "room_id"
                    and c.get("pattern") == old_room_id
                    else c
                    for c in new["conditions"]
                ]  # fmt: skip
            new_rules.append(new)
            have.add(new_id)
        room_left = MAX_USER_RULES - sum(len(v) for v in user.values())
        new_rules = new_rules[: max(room_left, 0)]
        if new_rules:
            rules[:0] = new_rules
            copied = True
    return doc if copied else None


def delete_rule(doc: dict, user_id: str, kind: str, rule_id: str) -> dict:
    check_kind(kind)
    if _find_default(user_id, kind, rule_id) is not None:
        raise invalid_param("server-default rules cannot be deleted")
    doc = copy.deepcopy(doc)
    rules = doc.setdefault("user", {}).setdefault(kind, [])
    index = next((i for i, r in enumerate(rules) if r["rule_id"] == rule_id), None)
    if index is None:
        raise not_found("the push rule was not found")
    del rules[index]
    return doc


def set_attribute(doc: dict, user_id: str, kind: str, rule_id: str, attr: str, value: Any) -> dict:
    """Set ``enabled`` or ``actions`` of a user or server-default rule."""
    check_kind(kind)
    if attr == "enabled":
        if not isinstance(value, bool):
            raise bad_json("'enabled' must be a boolean")
    else:
        value = validate_actions(value)
    doc = copy.deepcopy(doc)
    if _find_default(user_id, kind, rule_id) is not None:
        doc.setdefault("defaults", {}).setdefault(rule_id, {})[attr] = value
        return doc
    for rule in doc.setdefault("user", {}).setdefault(kind, []):
        if rule["rule_id"] == rule_id:
            rule[attr] = value
            return doc
    raise not_found("the push rule was not found")


def find_rule(ruleset: dict[str, list[dict]], kind: str, rule_id: str) -> dict:
    check_kind(kind)
    for rule in ruleset[kind]:
        if rule["rule_id"] == rule_id:
            return rule
    raise not_found("the push rule was not found")


# -- the service ----------------------------------------------------------------------------


class PushRules:
    """``hs.push_rules``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    def _doc(self, user_id: str) -> dict:
        text = self.hs.store.get_push_rules_doc(user_id)
        return empty_document() if text is None else parse_json(text)

    def is_default(self, user_id: str) -> bool:
        """Whether the user's rules are the server-default rules, unchanged."""
        text = self.hs.store.get_push_rules_doc(user_id)
        return text is None or parse_json(text) == empty_document()

    def ruleset(self, user_id: str) -> dict[str, list[dict]]:
        """The user's effective global ruleset."""
        return effective_ruleset(user_id, self._doc(user_id))

    def account_data_content(self, user_id: str) -> dict:
        """The content of the ``m.push_rules`` account data ("Push Rules: Events")."""
        return {"global": self.ruleset(user_id)}

    async def _edit(self, user_id: str, edit) -> None:
        """Apply ``edit(doc) -> doc`` in one write (read-modify-write on the writer thread)."""
        store = self.hs.store

        def fn(conn: Txn) -> None:
            text = store.get_push_rules_doc_in(conn, user_id)
            doc = empty_document() if text is None else parse_json(text)
            new = edit(doc)
            store.put_push_rules_doc_in(conn, user_id, canonical_json(new).decode("utf-8"))

        await store.transaction(fn)
        self.hs.notifications.forget_rules(user_id)

    async def put(self, user_id: str, kind: str, rule_id: str, body: Any,
                  before: str | None, after: str | None) -> None:  # fmt: skip
        # Validate before queueing the write, so bad input never reaches the writer.
        check_kind(kind)
        validate_rule_id(kind, rule_id)
        make_rule(kind, rule_id, body)
        await self._edit(user_id, lambda d: put_rule(d, kind, rule_id, body, before, after))

    async def delete(self, user_id: str, kind: str, rule_id: str) -> None:
        check_kind(kind)
        find_rule(self.ruleset(user_id), kind, rule_id)
        await self._edit(user_id, lambda d: delete_rule(d, user_id, kind, rule_id))

    async def set_attribute(self, user_id: str, kind: str, rule_id: str, attr: str,
                            value: Any) -> None:  # fmt: skip
        check_kind(kind)
        find_rule(self.ruleset(user_id), kind, rule_id)
        await self._edit(user_id, lambda d: set_attribute(d, user_id, kind, rule_id, attr, value))
