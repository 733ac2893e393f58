"""Room versions as a table of rules (spec: "Room Versions", ``content/rooms/v1.md`` … ``v12.md``).

Each room version is a combination of algorithm choices. Code asks the version for a rule
(``rv.event_id_format``, ``rv.knock_join_rule`` …) instead of comparing version strings, so adding
a version is adding a row. Field names follow the spec fragment that introduced the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from bastion.errors import M_UNSUPPORTED_ROOM_VERSION, MatrixError


class EventIdFormat(Enum):
    """How an event's ID is formed."""

    #: v1–v2: an opaque ``$localpart:domain`` carried in the event's ``event_id`` field.
    V1_OPAQUE = "v1"
    #: v3: ``$`` + standard unpadded base64 of the reference hash ("v1-event-ids" → v3).
    V3_BASE64 = "v3"
    #: v4+: ``$`` + URL-safe unpadded base64 of the reference hash ("v4-event-ids").
    V4_URLSAFE = "v4"


class RedactionRules(Enum):
    """Which redaction fragment applies."""

    V1 = "v1"  # v1–v5: m.room.aliases keeps `aliases`
    V6 = "v6"  # v6–v7: aliases special case dropped
    V8 = "v8"  # v8: join_rules keeps `allow`
    V9 = "v9"  # v9–v10: member keeps `join_authorised_via_users_server`
    V11 = "v11"  # v11+: origin/membership/prev_state dropped, create keeps all content, ...


class StateResAlgorithm(Enum):
    V1 = "v1"
    V2 = "v2"
    V2_1 = "v2.1"


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    event_id_format: EventIdFormat
    redaction_rules: RedactionRules
    state_res: StateResAlgorithm
    #: v1–v2: events are signed by the event_id's domain as well as the sender's.
    event_id_domain_signs: bool
    #: v1–v5: the `m.room.aliases` auth rule (v1-auth-rules rule 4).
    special_case_aliases_auth: bool
    #: v1–v2: redactions are auth-gated by the redact level or same event_id domain (v1 rule 11).
    redaction_auth_rule: bool
    #: v5+: a signing key is only valid for events up to its valid_until_ts ("v5-signing-requirements").
    enforce_key_validity: bool
    #: v6+: integers in ±(2^53-1), no floats ("v6-canonical-json").
    strict_canonical_json: bool
    #: v6+: the `notifications` key of power levels is auth-checked.
    limit_notifications_power_levels: bool
    #: v7+: the `knock` membership and join rule.
    knock_join_rule: bool
    #: v8+: the `restricted` join rule and `join_authorised_via_users_server`.
    restricted_join_rule: bool
    #: v10+: the `knock_restricted` join rule.
    knock_restricted_join_rule: bool
    #: v10+: power-level values must be integers, not strings ("v1-stringy-power-levels" no more).
    enforce_int_power_levels: bool
    #: v11+: the create event has no `creator`; the creator is its `sender`.
    implicit_room_creator: bool
    #: v11+: `redacts` lives in the content of m.room.redaction.
    redacts_in_content: bool
    #: v12+: room creators (create sender + additional_creators) have infinite power.
    privileged_creators: bool
    #: v12+: the room ID is the create event's reference hash; the create event has no room_id
    #: and is never listed in auth_events.
    room_id_is_create_hash: bool

    @property
    def event_format_uses_hash_ids(self) -> bool:
        return self.event_id_format is not EventIdFormat.V1_OPAQUE


def _v(identifier: str) -> RoomVersion:
    n = int(identifier)
    return RoomVersion(
        identifier=identifier,
        event_id_format=(
            EventIdFormat.V1_OPAQUE
            if n <= 2
            else EventIdFormat.V3_BASE64
            if n == 3
            else EventIdFormat.V4_URLSAFE
        ),
        redaction_rules=(
            RedactionRules.V1
            if n <= 5
            else RedactionRules.V6
            if n <= 7
            else RedactionRules.V8
            if n == 8
            else RedactionRules.V9
            if n <= 10
            else RedactionRules.V11
        ),
        state_res=(
            StateResAlgorithm.V1
            if n == 1
            else StateResAlgorithm.V2
            if n <= 11
            else StateResAlgorithm.V2_1
        ),
        event_id_domain_signs=n <= 2,
        special_case_aliases_auth=n <= 5,
        redaction_auth_rule=n <= 2,
        enforce_key_validity=n >= 5,
        strict_canonical_json=n >= 6,
        limit_notifications_power_levels=n >= 6,
        knock_join_rule=n >= 7,
        restricted_join_rule=n >= 8,
        knock_restricted_join_rule=n >= 10,
        enforce_int_power_levels=n >= 10,
        implicit_room_creator=n >= 11,
        redacts_in_content=n >= 11,
        privileged_creators=n >= 12,
        room_id_is_create_hash=n >= 12,
    )


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {str(n): _v(str(n)) for n in range(1, 13)}

#: What `m.room_versions` advertises as the default for new rooms (spec since v1.16: v12).
DEFAULT_ROOM_VERSION = "12"


def get_room_version(identifier: object) -> RoomVersion:
    """The rules of room version ``identifier``; ``M_UNSUPPORTED_ROOM_VERSION`` if unknown."""
    if not isinstance(identifier, str):
        raise MatrixError(M_UNSUPPORTED_ROOM_VERSION, "room version must be a string")
    rv = KNOWN_ROOM_VERSIONS.get(identifier)
    if rv is None:
        raise MatrixError(
            M_UNSUPPORTED_ROOM_VERSION, f"room version {identifier[:40]!r} is not supported"
        )
    return rv
