"""The authorisation rules of room versions 1–12 (room versions' "Authorisation rules";
fragments ``v1-auth-rules``, ``v3-auth-rules``, ``v8-auth-rules``; ``v10.md``–``v12.md``; S-S API
"Checks performed on receipt of a PDU" and "Auth events selection").

Pure functions: no I/O, no clock. Three entry points:

* :func:`auth_types_for_event` — the S-S API "Auth events selection" algorithm.
* :func:`check_auth` — PDU check 4: all the rules against the events the event's own
  ``auth_events`` names (including rule 3, the checks on those auth events themselves).
* :func:`check_auth_against_state` — PDU checks 5 and 6 and state resolution's iterative auth
  checks: the rules against a state map, without rule 3.

Both checks return an :class:`AuthResult`, whose ``rule`` is the number of the rule that decided,
*in the numbering of the room version checked*. The code and its comments use the v12 numbering
(the latest text). How older versions number the same rules:

====================  =======  ========  ===========================================
v12                   v6–v11   v1–v5     notes
====================  =======  ========  ===========================================
1 create              1        1         1.2: v12 "no room_id", earlier "room_id domain";
                                         1.4: v12 additional_creators, v1–v10 "no creator"
                                         (v11 has neither: its 1.4 is "allow")
2 room_id = create    —        —         v12 only
3.1–3.5 auth events   2.x      2.x       3.4 "no create among them" is v1–v11 only
4 m.federate          3        3
—                     —        4         ``m.room.aliases`` (v1–v5)
5 m.room.member       4        5         5.2 jauvs signature v8+; 5.7 knock v7+ (v7: 4.6);
                                         5.3.5 restricted v8+ (v1–v7 join has 6 sub-rules)
6 sender joined       5        6
7 third_party_invite  6        7
8 required PL         7        8
9 ``@`` state_key     8        9
10 m.room.power_lvls  9        10        10.1–10.2 v10+, 10.4 v12; v1–v9: x.1 users … x.8
—                     —        11        ``m.room.redaction`` (v1–v2 only)
11 otherwise allow    10       11/12     12 in v1–v2
====================  =======  ========  ===========================================

Malformed input never raises: a wrong type or a missing field is a rejection naming the problem.
Only a non-dict event raises :class:`~bastion.errors.MatrixError` (and an unknown room version,
``M_UNSUPPORTED_ROOM_VERSION``).

Events are treated as immutable: v12 create-event IDs (and, for rule 5.3.1 and rule 3, the IDs of
other auth events in v3+) are computed once and remembered per object identity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.core.events import compute_event_id
from bastion.core.identifiers import server_name_of
from bastion.core.json_types import JsonDict, JsonMapping, StateKey
from bastion.core.power_levels import (
    NAMED_LEVEL_DEFAULTS,
    named_level,
    parse_power_level,
    required_power_level,
    room_creators,
    user_power_level,
)
from bastion.core.room_versions import (
    KNOWN_ROOM_VERSIONS,
    EventIdFormat,
    RoomVersion,
    get_room_version,
)
from bastion.core.signing import verify_key_from_base64, verify_signed_json
from bastion.core.state_keys import CREATE_KEY, JOIN_RULES_KEY, POWER_LEVELS_KEY
from bastion.errors import MatrixError, bad_json

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

JAUVS = "join_authorised_via_users_server"

_NAMED_LEVELS = tuple(NAMED_LEVEL_DEFAULTS)  # users_default, events_default, state_default, ...

#: Verifies ``event`` is validly signed by ``server_name`` (rule 5.2).
SignatureVerifier = Callable[[JsonDict, str], bool]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of an auth check. True when allowed.

    ``rule`` is the rule that decided, numbered as the checked room version numbers it (see the
    module docstring), ``None`` for structural problems outside the numbered rules; ``reason`` is
    a sentence for logs and error messages.
    """

    allowed: bool
    rule: str | None = None
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.allowed


# --- Rule numbering --------------------------------------------------------------------------


def _number(rule: str, rv: RoomVersion) -> str:
    """Translate a v12 rule number (or the pseudo-numbers ``aliases.*``/``redaction.*`` of the
    v1–v5 / v1–v2 only rules) into ``rv``'s numbering."""
    if rv.room_id_is_create_hash:
        return rule
    head, _, tail = rule.partition(".")
    subs = tail.split(".") if tail else []
    old = rv.special_case_aliases_auth  # v1–v5: aliases is rule 4, member 5, ...
    if head == "aliases":
        return ".".join(["4", *subs])
    if head == "redaction":
        return ".".join(["11", *subs])
    top = int(head)
    if top == 1:
        # 1.4/1.5 — v11 has no 1.4 ("creator" gone, additional_creators not yet): allow is 1.4.
        if subs == ["5"] and rv.implicit_room_creator:
            subs = ["4"]
        return ".".join(["1", *subs])
    if old:
        new_top = {3: 2, 4: 3}.get(top, top)
        if top == 11 and rv.redaction_auth_rule:
            new_top = 12
    else:
        new_top = top - 1
    if top == 5 and subs:
        subs = _member_subs(subs, rv)
    elif top == 10 and subs:
        subs = _power_levels_subs(subs, rv)
    return ".".join([str(new_top), *subs])


def _member_subs(subs: list[str], rv: RoomVersion) -> list[str]:
    first = int(subs[0])
    if not rv.restricted_join_rule:  # v1–v7: no 5.2 (jauvs signature)
        if first >= 3:
            first -= 1
        if not rv.knock_join_rule and first == 7:  # v1–v6: no knock; "unknown" is 6
            first = 6
        if subs[0] == "3" and len(subs) > 1 and int(subs[1]) >= 6:  # join: no 5.3.5
            return [str(first), str(int(subs[1]) - 1), *subs[2:]]
    return [str(first), *subs[1:]]


def _power_levels_subs(subs: list[str], rv: RoomVersion) -> list[str]:
    n = int(subs[0])
    if not rv.enforce_int_power_levels:  # v1–v9: 10.3 → x.1, 10.5 → x.2, ...
        n = {3: 1, 5: 2, 6: 3, 7: 4, 8: 5, 9: 6, 10: 7, 11: 8}.get(n, n)
    elif n >= 5:  # v10–v11: no 10.4 (creators in users)
        n -= 1
    return [str(n), *subs[1:]]


def _deny(rule: str | None, rv: RoomVersion, reason: str) -> AuthResult:
    return AuthResult(False, _number(rule, rv) if rule else None, reason)


def _allow(rule: str, rv: RoomVersion, reason: str) -> AuthResult:
    return AuthResult(True, _number(rule, rv), reason)


# --- Small helpers ---------------------------------------------------------------------------

_SERVER_NAME = re.compile(
    r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[A-Za-z0-9.-]{1,255})"
    r"(?::[0-9]{1,5})?"
)


def is_valid_user_id(user_id: Any) -> bool:
    """The auth rules' test of a user ID (the ``users`` keys of power levels, v12's
    ``additional_creators``): ``@localpart:server_name``, at most 255 bytes.

    Historical localparts are accepted (any characters but ``:``), but not an empty one; the
    server name is checked against its character grammar only. This is the rule the room's
    history was authorised with, so it stays as it is; everything else uses
    :func:`bastion.core.identifiers.is_valid_user_id`.
    """
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return False
    localpart, sep, server = user_id[1:].partition(":")
    if not sep or not localpart or len(user_id.encode("utf-8")) > 255:
        return False
    return _SERVER_NAME.fullmatch(server) is not None


def _content(event: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if event is None:
        return {}
    content = event.get("content")
    return content if isinstance(content, Mapping) else {}


def _membership(state: Mapping[tuple[str, str], Any], user_id: str) -> str | None:
    member = state.get((MEMBER, user_id))
    if member is None:
        return None
    membership = _content(member).get("membership")
    return membership if isinstance(membership, str) else None


# Event IDs of events checked against, remembered per object (events are immutable).
def _event_id_of(event: Mapping[str, Any], rv: RoomVersion) -> str | None:
    """The event ID of an event (computed for v3+), or None if it cannot be computed.

    Hot callers (state resolution, the room engine) pass ``create_event_id`` so that the v12
    create event is not hashed on every check; the core keeps no cache of its own.
    """
    if rv.event_id_format is EventIdFormat.V1_OPAQUE:
        eid = event.get("event_id")
        return eid if isinstance(eid, str) else None
    try:
        return compute_event_id(event, rv.identifier)
    except MatrixError:
        return None


def _referenced_ids(refs: Any, rv: RoomVersion) -> list[str] | None:
    """The IDs of a ``prev_events``/``auth_events`` list: strings in v3+, ``[id, hashes]`` pairs
    in v1–v2. None if malformed."""
    if not isinstance(refs, list):
        return None
    out = []
    for ref in refs:
        if rv.event_id_format is EventIdFormat.V1_OPAQUE:
            if not isinstance(ref, list) or not ref or not isinstance(ref[0], str):
                return None
            out.append(ref[0])
        else:
            if not isinstance(ref, str):
                return None
            out.append(ref)
    return out


def _check_shape(event: Any) -> str | None:
    """The structural problem of ``event`` the rules cannot be applied to, if any."""
    if not isinstance(event.get("type"), str):
        return "event has no string 'type'"
    if not isinstance(event.get("sender"), str) or server_name_of(event["sender"]) is None:
        return "event has no valid 'sender'"
    if not isinstance(event.get("content"), Mapping):
        return "event 'content' is not an object"
    if "state_key" in event and not isinstance(event["state_key"], str):
        return "event 'state_key' is not a string"
    return None


# --- Auth events selection (S-S API) ---------------------------------------------------------


def auth_types_for_event(event: JsonDict, room_version: str) -> list[tuple[str, str]]:
    """The ``(type, state_key)`` pairs an event's ``auth_events`` may name (S-S API "Auth events
    selection"): none for ``m.room.create``; else the create event (not in v12, where the room ID
    implies it), the power levels, the sender's membership, and for ``m.room.member`` the target's
    membership, the join rules (join/invite/knock), the ``m.room.third_party_invite`` named by
    ``content.third_party_invite.signed.token`` (invite) and, in v8+, the membership of
    ``content.join_authorised_via_users_server`` (join). Malformed fields add nothing.
    """
    if not isinstance(event, Mapping):
        raise bad_json("an event must be a JSON object")
    rv = get_room_version(room_version)
    return _auth_types(event, rv)


def _auth_types(event: Mapping[str, Any], rv: RoomVersion) -> list[tuple[str, str]]:
    etype = event.get("type")
    if etype == CREATE:
        return []
    out: list[tuple[str, str]] = []
    if not rv.room_id_is_create_hash:
        out.append(CREATE_KEY)
    out.append(POWER_LEVELS_KEY)
    sender = event.get("sender")
    if isinstance(sender, str):
        out.append((MEMBER, sender))
    if etype == MEMBER:
        content = _content(event)
        membership = content.get("membership")
        state_key = event.get("state_key")
        if isinstance(state_key, str):
            out.append((MEMBER, state_key))
        if membership in ("join", "invite", "knock"):
            out.append(JOIN_RULES_KEY)
        if membership == "invite" and "third_party_invite" in content:
            tpi = content["third_party_invite"]
            signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
            token = signed.get("token") if isinstance(signed, Mapping) else None
            if isinstance(token, str):
                out.append((THIRD_PARTY_INVITE, token))
        if membership == "join" and rv.restricted_join_rule:
            authoriser = content.get(JAUVS)
            if isinstance(authoriser, str):
                out.append((MEMBER, authoriser))
    return list(dict.fromkeys(out))


# --- Entry points ----------------------------------------------------------------------------


def check_auth(
    event: JsonDict,
    auth_events: list[JsonDict],
    room_version: str,
    *,
    rejected: Collection[str] = (),
    verify_signature: SignatureVerifier | None = None,
) -> AuthResult:
    """PDU check 4: does ``event`` pass the auth rules based on its auth events?

    ``auth_events`` are the events ``event["auth_events"]`` names (in v12 the caller also supplies
    the room's ``m.room.create`` event, which is never listed); extra events are ignored.
    ``rejected`` holds the IDs of events rejected on receipt (rule 3.3). ``verify_signature``
    checks rule 5.2; see :func:`check_auth_against_state`.

    Beyond the numbered rules, an ID in ``event["auth_events"]`` that is not among the supplied
    events is a rejection: the rules cannot be applied without it.
    """
    if not isinstance(event, Mapping):
        raise bad_json("an event must be a JSON object")
    rv = get_room_version(room_version)
    problem = _check_shape(event)
    if problem:
        return _deny(None, rv, problem)
    if event["type"] == CREATE:
        return _check_create(event, rv)
    if not isinstance(auth_events, list | tuple):
        return _deny(None, rv, "auth_events must be a list of events")
    supplied: list[Mapping[str, Any]] = [e for e in auth_events if isinstance(e, Mapping)]

    # Rule 2 (v12): the room ID is the ID of an accepted m.room.create event, "!" for "$".
    create_event_id = None
    create: Mapping[str, Any] | None = None
    if rv.room_id_is_create_hash:
        result, create, create_event_id = _find_v12_create(event, supplied, rv, rejected)
        if result is not None:
            return result
    listed = _referenced_ids(event.get("auth_events"), rv)
    if listed is None:
        return _deny("3", rv, "the event's auth_events is malformed")
    by_id: dict[str, Mapping[str, Any]] = {}
    for e in supplied:
        eid = _event_id_of(e, rv)
        if eid is not None:
            by_id.setdefault(eid, e)
    entries = []
    for eid in listed:
        found = by_id.get(eid)
        if found is None:
            return _deny("3", rv, f"auth event {eid[:80]} was not supplied")
        entries.append((eid, found))

    # Rule 3.1: no duplicate (type, state_key) entries.
    state: dict[tuple[str, str], Mapping[str, Any]] = {}
    keys = []
    for eid, e in entries:
        etype, skey = e.get("type"), e.get("state_key")
        if not isinstance(etype, str) or not isinstance(skey, str):
            return _deny("3.2", rv, f"auth event {eid[:80]} is not a state event")
        key = (etype, skey)
        if key in state:
            return _deny("3.1", rv, f"auth_events has two entries for {key!r}")
        state[key] = e
        keys.append((eid, key))
    # Rule 3.2: only the entries of the auth events selection (v12: never m.room.create).
    allowed_types = set(_auth_types(event, rv))
    for eid, key in keys:
        if key not in allowed_types:
            return _deny("3.2", rv, f"auth event {eid[:80]} {key!r} is not one the event may cite")
    # Rule 3.3: no entry rejected on receipt.
    for eid, _ in keys:
        if eid in rejected:
            return _deny("3.3", rv, f"auth event {eid[:80]} was rejected")
    # Rule 3.4 (v1–v11): an m.room.create among the entries.
    if not rv.room_id_is_create_hash and CREATE_KEY not in state:
        return _deny("3.4", rv, "auth_events has no m.room.create event")
    # Rule 3.5: every entry in the same room.
    room_id = event.get("room_id")
    for eid, e in entries:
        if e.get("room_id") != room_id:
            return _deny("3.5", rv, f"auth event {eid[:80]} belongs to another room")
    if create is not None:  # v12: the create event found by rule 2
        state[CREATE_KEY] = create
    return _check_state_rules(event, state, rv, verify_signature, create_event_id)


def check_auth_against_state(
    event: JsonDict,
    state: Mapping[StateKey, JsonMapping],
    room_version: str,
    *,
    verify_signature: SignatureVerifier | None = None,
    create_event_id: str | None = None,
) -> AuthResult:
    """PDU checks 5 and 6, and state resolution's iterative auth checks: does ``event`` pass the
    auth rules (all but rule 3) against ``state``, a map ``(type, state_key) -> event`` of the
    room state (entries the rules do not need are ignored)?

    ``verify_signature(event, server_name)`` decides rule 5.2 (v8+: a membership event carrying
    ``join_authorised_via_users_server`` must be validly signed by that user's server). When it is
    ``None`` only the *presence* of a signature by that server in ``event["signatures"]`` is
    checked — the caller is then expected to have verified all signatures on the event (PDU
    check 2) with keys it trusts.

    ``create_event_id`` may give the ID of ``state``'s create event (v12 rule 2, rule 5.3.1) so it
    is not computed; it is computed once per create object otherwise.
    """
    if not isinstance(event, Mapping):
        raise bad_json("an event must be a JSON object")
    rv = KNOWN_ROOM_VERSIONS.get(room_version) if type(room_version) is str else None
    if rv is None:
        rv = get_room_version(room_version)
    problem = _check_shape(event)
    if problem:
        return _deny(None, rv, problem)
    if event["type"] == CREATE:
        return _check_create(event, rv)
    if rv.room_id_is_create_hash:
        # Rule 2 (v12): the room ID is the create event's ID with "!" for "$".
        create = state.get(CREATE_KEY)
        if not isinstance(create, Mapping):
            return _deny("2", rv, "the room state has no m.room.create event")
        if create_event_id is None:
            create_event_id = _event_id_of(create, rv)
        if create_event_id is None or event.get("room_id") != "!" + create_event_id[1:]:
            return _deny("2", rv, "room_id is not the ID of the room's m.room.create event")
    return _check_state_rules(event, state, rv, verify_signature, create_event_id)


# --- Rule 1: m.room.create -------------------------------------------------------------------


def _check_create(event: Mapping[str, Any], rv: RoomVersion) -> AuthResult:
    """Rule 1 (all versions): the create event."""
    content = event["content"]
    # 1.1: no prev_events.
    if event.get("prev_events"):
        return _deny("1.1", rv, "m.room.create must not have prev_events")
    # 1.2: v12 — no room_id at all; v1–v11 — room_id's domain is the sender's.
    if rv.room_id_is_create_hash:
        if "room_id" in event:
            return _deny("1.2", rv, "m.room.create must not have a room_id in this room version")
    elif server_name_of(event.get("room_id")) != server_name_of(event["sender"]):
        return _deny("1.2", rv, "the room_id's domain does not match the sender's")
    # 1.3: content.room_version, if present, is a known version.
    if "room_version" in content and content["room_version"] not in KNOWN_ROOM_VERSIONS:
        return _deny("1.3", rv, "content.room_version is not a recognised room version")
    if rv.privileged_creators:
        # 1.4 (v12): additional_creators is an array of valid user IDs.
        if "additional_creators" in content:
            extra = content["additional_creators"]
            if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
                return _deny("1.4", rv, "additional_creators is not an array of user IDs")
    elif not rv.implicit_room_creator and "creator" not in content:
        # 1.4 (v1–v10): content has a creator.
        return _deny("1.4", rv, "m.room.create content has no creator")
    return _allow("1.5", rv, "m.room.create passes rule 1")


def _find_v12_create(
    event: Mapping[str, Any],
    supplied: list[Mapping[str, Any]],
    rv: RoomVersion,
    rejected: Collection[str],
) -> tuple[AuthResult | None, Mapping[str, Any] | None, str | None]:
    """Rule 2 (v12): find the supplied create event whose ID the room ID is, accepted."""
    room_id = event.get("room_id")
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        return _deny("2", rv, "room_id is not a room ID"), None, None
    for e in supplied:
        if e.get("type") == CREATE and e.get("state_key") == "":
            eid = _event_id_of(e, rv)
            if eid is not None and room_id == "!" + eid[1:]:
                if eid in rejected:
                    return _deny("2", rv, "the room's m.room.create event was rejected"), None, None
                return None, e, eid
    return _deny("2", rv, "room_id is not the ID of a supplied m.room.create event"), None, None


# --- Rules 4–11 against a state map ----------------------------------------------------------


def _check_state_rules(
    event: JsonDict,
    state: Mapping[tuple[str, str], Any],
    rv: RoomVersion,
    verify_signature: SignatureVerifier | None,
    create_event_id: str | None,
) -> AuthResult:
    create = state.get(CREATE_KEY)
    if not isinstance(create, Mapping):
        # v1–v11 rule 3.4 (the create event is needed by every later rule); v12 rule 2.
        return _deny("2" if rv.room_id_is_create_hash else "3.4", rv, "no m.room.create event")
    sender = event["sender"]
    etype = event["type"]

    # Rule 4: m.federate false → only the creating server's users.
    if _content(create).get("m.federate") is False and server_name_of(sender) != server_name_of(
        create.get("sender")
    ):
        return _deny("4", rv, "the room is not federated and the sender is from another server")

    # v1–v5 rule 4: m.room.aliases.
    if etype == ALIASES and rv.special_case_aliases_auth:
        return _check_aliases(event, rv)

    pl_event = state.get(POWER_LEVELS_KEY)
    pl = _content(pl_event) if pl_event is not None else None

    # Rule 5: m.room.member.
    if etype == MEMBER:
        return _check_member(event, state, create, pl, rv, verify_signature, create_event_id)

    # Rule 6: the sender must be joined.
    if _membership(state, sender) != "join":
        return _deny("6", rv, "the sender is not joined to the room")

    sender_level = user_power_level(sender, create, pl, rv)

    # Rule 7: m.room.third_party_invite needs the invite level.
    if etype == THIRD_PARTY_INVITE:
        if sender_level >= named_level(pl, "invite", rv):
            return _allow("7.1", rv, "the sender has the invite level")
        return _deny("7.1", rv, "the sender's power level is below the invite level")

    # Rule 8: the event type's required power level.
    state_key = event.get("state_key")
    if required_power_level(etype, state_key is not None, pl, rv) > sender_level:
        return _deny("8", rv, f"the sender's power level is too low to send {etype[:80]}")

    # Rule 9: a state_key starting with @ is the sender's own.
    if isinstance(state_key, str) and state_key.startswith("@") and state_key != sender:
        return _deny("9", rv, "a state_key starting with '@' must be the sender's user ID")

    # Rule 10: m.room.power_levels.
    if etype == POWER_LEVELS:
        return _check_power_levels(event, create, pl, sender_level, rv)

    # v1–v2 rule 11: m.room.redaction needs the redact level or the same event-ID domain.
    if etype == REDACTION and rv.redaction_auth_rule:
        return _check_redaction_v1(event, sender_level, pl, rv)

    # Rule 11: otherwise allow.
    return _allow("11", rv, "the event passes the auth rules")


def _check_aliases(event: Mapping[str, Any], rv: RoomVersion) -> AuthResult:
    """v1–v5 rule 4: ``m.room.aliases`` — the state_key is the sender's server."""
    state_key = event.get("state_key")
    if state_key is None:  # 4.1
        return _deny("aliases.1", rv, "m.room.aliases must have a state_key")
    if state_key != server_name_of(event["sender"]):  # 4.2
        return _deny("aliases.2", rv, "m.room.aliases state_key must be the sender's server")
    return _allow("aliases.3", rv, "m.room.aliases for the sender's own server")


def _check_redaction_v1(
    event: Mapping[str, Any],
    sender_level: int | float,
    pl: Mapping[str, Any] | None,
    rv: RoomVersion,
) -> AuthResult:
    """v1–v2 rule 11: ``m.room.redaction``."""
    if sender_level >= named_level(pl, "redact", rv):  # 11.1
        return _allow("redaction.1", rv, "the sender has the redact level")
    redacts = event.get("redacts")
    own = server_name_of(event.get("event_id"))
    if own is not None and server_name_of(redacts) == own:  # 11.2
        return _allow("redaction.2", rv, "the redacted event is from the redacting server")
    return _deny("redaction.3", rv, "the sender may not redact events of other servers")


# --- Rule 5: m.room.member -------------------------------------------------------------------


def _check_member(
    event: JsonDict,
    state: Mapping[tuple[str, str], Any],
    create: Mapping[str, Any],
    pl: Mapping[str, Any] | None,
    rv: RoomVersion,
    verify_signature: SignatureVerifier | None,
    create_event_id: str | None,
) -> AuthResult:
    """Rule 5 (v12 numbering; v6–v11 rule 4, v1–v5 rule 5)."""
    content = event["content"]
    target = event.get("state_key")
    # 5.1: a state_key and a membership.
    if target is None or "membership" not in content:
        return _deny("5.1", rv, "m.room.member needs a state_key and content.membership")
    membership = content["membership"]
    sender = event["sender"]

    # 5.2 (v8+): join_authorised_via_users_server → signed by that user's server.
    if rv.restricted_join_rule and JAUVS in content:
        authoriser_server = server_name_of(content[JAUVS])
        if authoriser_server is None:
            return _deny("5.2.1", rv, f"{JAUVS} is not a user ID")
        if verify_signature is not None:
            signed = bool(verify_signature(event, authoriser_server))
        else:
            sigs = event.get("signatures")
            by_key = sigs.get(authoriser_server) if isinstance(sigs, Mapping) else None
            signed = isinstance(by_key, Mapping) and bool(by_key)
        if not signed:
            return _deny("5.2.1", rv, f"the event is not signed by {authoriser_server[:80]}")

    if membership == "join":
        return _check_join(event, state, create, pl, rv, create_event_id)
    if membership == "invite":
        return _check_invite(event, state, create, pl, rv)

    sender_membership = _membership(state, sender)
    target_membership = _membership(state, target)
    if membership == "leave":
        # 5.5.1: leaving oneself — from invite, join (or knock, v7+).
        if sender == target:
            ok = ("invite", "join", "knock") if rv.knock_join_rule else ("invite", "join")
            if sender_membership in ok:
                return _allow("5.5.1", rv, "the user leaves or declines")
            return _deny("5.5.1", rv, f"a user with membership {sender_membership} cannot leave")
        # 5.5.2
        if sender_membership != "join":
            return _deny("5.5.2", rv, "the sender is not joined to the room")
        sender_level = user_power_level(sender, create, pl, rv)
        # 5.5.3: unbanning needs the ban level.
        if target_membership == "ban" and sender_level < named_level(pl, "ban", rv):
            return _deny("5.5.3", rv, "the sender's power level is below the ban level")
        # 5.5.4
        if (
            sender_level >= named_level(pl, "kick", rv)
            and user_power_level(target, create, pl, rv) < sender_level
        ):
            return _allow("5.5.4", rv, "the sender may kick the target")
        return _deny("5.5.5", rv, "the sender may not kick the target")
    if membership == "ban":
        # 5.6.1
        if sender_membership != "join":
            return _deny("5.6.1", rv, "the sender is not joined to the room")
        sender_level = user_power_level(sender, create, pl, rv)
        # 5.6.2
        if (
            sender_level >= named_level(pl, "ban", rv)
            and user_power_level(target, create, pl, rv) < sender_level
        ):
            return _allow("5.6.2", rv, "the sender may ban the target")
        return _deny("5.6.3", rv, "the sender may not ban the target")
    if membership == "knock" and rv.knock_join_rule:
        join_rule = _join_rule(state)
        # 5.7.1 (v7–v9: knock only; v10+: also knock_restricted)
        knockable = ("knock", "knock_restricted") if rv.knock_restricted_join_rule else ("knock",)
        if join_rule not in knockable:
            return _deny("5.7.1", rv, "the join rule does not allow knocking")
        # 5.7.2
        if sender != target:
            return _deny("5.7.2", rv, "a user can only knock for themselves")
        # 5.7.3
        if sender_membership not in ("ban", "invite", "join"):
            return _allow("5.7.3", rv, "the user knocks")
        return _deny("5.7.4", rv, f"a user with membership {sender_membership} cannot knock")
    # 5.8: unknown membership.
    return _deny("5.8", rv, f"unknown membership {str(membership)[:40]!r}")


def _join_rule(state: Mapping[tuple[str, str], Any]) -> str | None:
    jr = _content(state.get(JOIN_RULES_KEY)).get("join_rule")
    return jr if isinstance(jr, str) else None


def _check_join(
    event: Mapping[str, Any],
    state: Mapping[tuple[str, str], Any],
    create: Mapping[str, Any],
    pl: Mapping[str, Any] | None,
    rv: RoomVersion,
    create_event_id: str | None,
) -> AuthResult:
    """Rule 5.3: ``membership: join``."""
    sender = event["sender"]
    target = event["state_key"]
    # 5.3.1: the creator's first join right after the create event (v1–v10: content.creator,
    # v11+: the create event's sender).
    prev = _referenced_ids(event.get("prev_events"), rv)
    if prev is not None and len(prev) == 1:
        creator = (
            create.get("sender") if rv.implicit_room_creator else _content(create).get("creator")
        )
        if target == creator:
            if create_event_id is None:
                create_event_id = _event_id_of(create, rv)
            if create_event_id is not None and prev[0] == create_event_id:
                return _allow("5.3.1", rv, "the room creator joins the new room")
    # 5.3.2
    if sender != target:
        return _deny("5.3.2", rv, "a user can only join themselves")
    membership = _membership(state, sender)
    # 5.3.3
    if membership == "ban":
        return _deny("5.3.3", rv, "the user is banned")
    join_rule = _join_rule(state)
    # 5.3.4: invite (v7+: or knock) → invited or already joined.
    if join_rule == "invite" or (join_rule == "knock" and rv.knock_join_rule):
        if membership in ("invite", "join"):
            return _allow("5.3.4", rv, "the user was invited or is already joined")
    # 5.3.5 (v8+: restricted; v10+: knock_restricted)
    elif (join_rule == "restricted" and rv.restricted_join_rule) or (
        join_rule == "knock_restricted" and rv.knock_restricted_join_rule
    ):
        if membership in ("invite", "join"):  # 5.3.5.1
            return _allow("5.3.5.1", rv, "the user was invited or is already joined")
        authoriser = event["content"].get(JAUVS)
        if not isinstance(authoriser, str) or _membership(state, authoriser) != "join":
            return _deny("5.3.5.2", rv, f"{JAUVS} is not a joined member of the room")
        if user_power_level(authoriser, create, pl, rv) < named_level(pl, "invite", rv):
            return _deny("5.3.5.2", rv, f"{JAUVS} may not invite users")
        return _allow("5.3.5.3", rv, "the join was authorised by a member who may invite")
    # 5.3.6
    elif join_rule == "public":
        return _allow("5.3.6", rv, "the room is public")
    # 5.3.7
    return _deny("5.3.7", rv, f"the join rule {str(join_rule)[:40]!r} does not let the user join")


def _check_invite(
    event: Mapping[str, Any],
    state: Mapping[tuple[str, str], Any],
    create: Mapping[str, Any],
    pl: Mapping[str, Any] | None,
    rv: RoomVersion,
) -> AuthResult:
    """Rule 5.4: ``membership: invite``."""
    content = event["content"]
    sender = event["sender"]
    target = event["state_key"]
    target_membership = _membership(state, target)
    # 5.4.1: third-party invites.
    if "third_party_invite" in content:
        return _check_third_party_invite(event, state, target_membership, rv)
    # 5.4.2
    if _membership(state, sender) != "join":
        return _deny("5.4.2", rv, "the sender is not joined to the room")
    # 5.4.3
    if target_membership in ("join", "ban"):
        return _deny("5.4.3", rv, f"the target's membership is {target_membership}")
    # 5.4.4
    if user_power_level(sender, create, pl, rv) >= named_level(pl, "invite", rv):
        return _allow("5.4.4", rv, "the sender has the invite level")
    return _deny("5.4.5", rv, "the sender's power level is below the invite level")


def _check_third_party_invite(
    event: Mapping[str, Any],
    state: Mapping[tuple[str, str], Any],
    target_membership: str | None,
    rv: RoomVersion,
) -> AuthResult:
    """Rule 5.4.1: an invite carrying ``content.third_party_invite``."""
    # 5.4.1.1
    if target_membership == "ban":
        return _deny("5.4.1.1", rv, "the target is banned")
    tpi = event["content"]["third_party_invite"]
    # 5.4.1.2
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    if not isinstance(signed, Mapping):
        return _deny("5.4.1.2", rv, "third_party_invite has no signed object")
    # 5.4.1.3
    if "mxid" not in signed or "token" not in signed:
        return _deny("5.4.1.3", rv, "third_party_invite.signed lacks mxid or token")
    # 5.4.1.4
    if signed["mxid"] != event["state_key"]:
        return _deny("5.4.1.4", rv, "third_party_invite.signed.mxid is not the state_key")
    # 5.4.1.5
    token = signed["token"]
    tpi_event = state.get((THIRD_PARTY_INVITE, token)) if isinstance(token, str) else None
    if not isinstance(tpi_event, Mapping):
        return _deny("5.4.1.5", rv, "no m.room.third_party_invite for this token")
    # 5.4.1.6
    if tpi_event.get("sender") != event["sender"]:
        return _deny("5.4.1.6", rv, "the sender did not send the m.room.third_party_invite")
    # 5.4.1.7: a signature in `signed` by one of the invite's public keys.
    if _signed_by_any(signed, _public_keys(_content(tpi_event))):
        return _allow("5.4.1.7", rv, "the third-party invite is signed by its identity server")
    return _deny("5.4.1.8", rv, "no signature in signed matches the invite's public keys")


def _public_keys(content: Mapping[str, Any]) -> list[str]:
    """5.4.1.7.1–2: ``public_key`` and each ``public_keys[].public_key``."""
    keys = []
    if isinstance(content.get("public_key"), str):
        keys.append(content["public_key"])
    extra = content.get("public_keys")
    if isinstance(extra, list):
        for entry in extra:
            if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str):
                keys.append(entry["public_key"])
    return keys


def _signed_by_any(signed: Mapping[str, Any], public_keys: list[str]) -> bool:
    sigs = signed.get("signatures")
    if not isinstance(sigs, Mapping) or not public_keys:
        return False
    verify_keys = []
    for key in public_keys:
        try:
            verify_keys.append(verify_key_from_base64(key))
        except (MatrixError, ValueError):
            continue
    obj = dict(signed)
    for server, by_key in sigs.items():
        if not isinstance(by_key, Mapping):
            continue
        for key_id in by_key:
            if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                continue
            for vk in verify_keys:
                try:
                    verify_signed_json(obj, server, key_id, vk)
                    return True
                except (MatrixError, ValueError, TypeError):
                    continue
    return False


# --- Rule 10: m.room.power_levels ------------------------------------------------------------


def _check_power_levels(
    event: Mapping[str, Any],
    create: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    sender_level: int | float,
    rv: RoomVersion,
) -> AuthResult:
    """Rule 10 (v12 numbering; v6–v11 rule 9, v1–v5 rule 10)."""
    new = event["content"]
    # 10.1 (v10+): the named levels are integers. v1–v9: each may be a stringy (v1–v5: floaty)
    # integer ("v1-stringy-power-levels"); anything else is rejected (rule 10 of those versions).
    for name in _NAMED_LEVELS:
        if name in new and parse_power_level(new[name], rv) is None:
            return _deny(
                "10.1" if rv.enforce_int_power_levels else "10",
                rv,
                f"power level {name!r} is not an integer",
            )
    # 10.2 (v10+): events and notifications are objects of integers (same caveat for v1–v9).
    for name in ("events", "notifications"):
        if name in new and not _is_level_map(new[name], rv):
            return _deny(
                "10.2" if rv.enforce_int_power_levels else "10",
                rv,
                f"{name!r} is not an object of integer power levels",
            )
    # 10.3: users is an object of user IDs to integers (v1–v9: or stringy integers).
    users = new.get("users", {})
    if not _is_level_map(users, rv) or not all(is_valid_user_id(u) for u in users):
        return _deny("10.3", rv, "'users' is not an object of user IDs to integer power levels")
    # 10.4 (v12): the room creators may not be listed in users.
    if rv.privileged_creators and not room_creators(create, rv).isdisjoint(users):
        return _deny("10.4", rv, "the room creators cannot be given a power level in 'users'")
    # 10.5: the first power-levels event is allowed.
    if old is None:
        return _allow("10.5", rv, "there is no previous m.room.power_levels event")

    def level(content: Mapping[str, Any], key: str) -> int | None:
        return parse_power_level(content[key], rv) if key in content else None

    # 10.6: named levels added, changed or removed — old and new within the sender's level.
    for name in _NAMED_LEVELS:
        before, after = level(old, name), level(new, name)
        if before == after:
            continue
        if before is not None and before > sender_level:
            return _deny("10.6.1", rv, f"the current {name!r} is above the sender's level")
        if after is not None and after > sender_level:
            return _deny("10.6.2", rv, f"the new {name!r} is above the sender's level")
    # 10.7/10.8: events (v6+: and notifications) entries changed or removed, then added or
    # changed.
    maps = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
    changes = []
    for name in maps:
        before_map, after_map = _level_map(old.get(name)), _level_map(new.get(name))
        for key in sorted(before_map.keys() | after_map.keys()):
            before, after = level(before_map, key), level(after_map, key)
            if before != after:
                changes.append((f"{name}[{key[:60]!r}]", before, after))
    for what, before, _ in changes:  # 10.7.1
        if before is not None and before > sender_level:
            return _deny("10.7.1", rv, f"the current {what} is above the sender's level")
    for what, _, after in changes:  # 10.8.1
        if after is not None and after > sender_level:
            return _deny("10.8.1", rv, f"the new {what} is above the sender's level")
    # 10.9/10.10: users entries changed or removed (but the sender's own), then added or changed.
    before_users = _level_map(old.get("users"))
    sender = event["sender"]
    changes = []
    for user in sorted(before_users.keys() | users.keys()):
        before, after = level(before_users, user), level(users, user)
        if before != after:
            changes.append((user, before, after))
    for user, before, _ in changes:  # 10.9.1
        if user != sender and before is not None and before >= sender_level:
            return _deny(
                "10.9.1", rv, "the sender cannot change the level of a user at or above their own"
            )
    for _, _, after in changes:  # 10.10.1
        if after is not None and after > sender_level:
            return _deny("10.10.1", rv, "the sender cannot give a level above their own")
    return _allow("10.11", rv, "the power levels change is within the sender's level")


def _is_level_map(value: Any, rv: RoomVersion) -> bool:
    return isinstance(value, Mapping) and all(
        parse_power_level(v, rv) is not None for v in value.values()
    )


def _level_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


__all__ = [
    "AuthResult",
    "SignatureVerifier",
    "auth_types_for_event",
    "check_auth",
    "check_auth_against_state",
    "is_valid_user_id",
]
