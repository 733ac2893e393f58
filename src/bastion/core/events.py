"""Events: hashes, IDs, redaction, signing and verification (server-server API, "Signing Events",
"Calculating the content hash for an event", "Calculating the reference hash for an event";
room versions' "Redactions" and "Event IDs" fragments).

Events are plain ``dict`` objects in their federation (PDU) form. Every function here is pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from nacl.signing import SigningKey, VerifyKey

from bastion.core.base64 import decode_base64, encode_base64
from bastion.core.canonical_json import _OPTS, _check, _plain
from bastion.core.identifiers import (
    MAX_ID_BYTES,
    parse_event_id,
    parse_room_id,
    parse_user_id,
    server_name_of,
)
from bastion.core.json_types import JsonDict, JsonMapping
from bastion.core.room_versions import (
    EventIdFormat,
    RedactionRules,
    RoomVersion,
    get_room_version,
)
from bastion.core.signing import SignatureError, signature_of, verify_signature_bytes
from bastion.errors import MatrixError, bad_json, too_large

#: Size limits ("Size limits" in the Client-Server API; PDU checks step 1).
MAX_PDU_SIZE = 65536

# --- Redaction (rooms/fragments/v1-, v6-, v9-, v11-redactions; v8.md) --------------------------

_KEEP_TOP_LEVEL_V1 = frozenset(
    {
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures",
        "depth", "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts",
        "membership",
    }
)  # fmt: skip
_KEEP_TOP_LEVEL_V11 = _KEEP_TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}

_PL_KEYS_V1 = ("ban", "events", "events_default", "kick", "redact", "state_default", "users",
               "users_default")  # fmt: skip


def _content_keys(rules: RedactionRules) -> dict[str, tuple[str, ...] | None]:
    """Per event type, the content keys the redaction algorithm keeps (None = all of them)."""
    keep: dict[str, tuple[str, ...] | None] = {
        "m.room.member": ("membership",),
        "m.room.create": ("creator",),
        "m.room.join_rules": ("join_rule",),
        "m.room.power_levels": _PL_KEYS_V1,
        "m.room.history_visibility": ("history_visibility",),
    }
    if rules is RedactionRules.V1:
        keep["m.room.aliases"] = ("aliases",)
    if rules in (RedactionRules.V8, RedactionRules.V9, RedactionRules.V11):
        keep["m.room.join_rules"] = ("join_rule", "allow")
    if rules in (RedactionRules.V9, RedactionRules.V11):
        keep["m.room.member"] = ("membership", "join_authorised_via_users_server")
    if rules is RedactionRules.V11:
        keep["m.room.create"] = None
        keep["m.room.power_levels"] = _PL_KEYS_V1 + ("invite",)
        keep["m.room.redaction"] = ("redacts",)
    return keep


_CONTENT_KEYS = {rules: _content_keys(rules) for rules in RedactionRules}


def _redact(event: Mapping[str, Any], rv: RoomVersion) -> dict[str, Any]:
    rules = rv.redaction_rules
    keep_top = _KEEP_TOP_LEVEL_V11 if rules is RedactionRules.V11 else _KEEP_TOP_LEVEL_V1
    out = {k: v for k, v in event.items() if k in keep_top}
    etype = event.get("type")
    content = event.get("content")
    if not isinstance(content, Mapping):
        if "content" in event:
            raise bad_json("event content must be an object")
        return out
    keep = _CONTENT_KEYS[rules].get(etype, ()) if isinstance(etype, str) else ()
    if keep is None:
        new_content = dict(content)
    else:
        new_content = {k: content[k] for k in keep if k in content}
        if rules is RedactionRules.V11 and etype == "m.room.member":
            # "allows the `signed` key of the `third_party_invite` key": an object without
            # `signed` is kept as an empty object, as Synapse does, so that hashes and event IDs
            # agree across servers (the spec text leaves this case open; DIVERGENCES.md E2).
            tpi = content.get("third_party_invite")
            if isinstance(tpi, Mapping):
                new_content["third_party_invite"] = (
                    {"signed": tpi["signed"]} if "signed" in tpi else {}
                )
    out["content"] = new_content
    return out


def redact(event: JsonDict, room_version: str) -> JsonDict:
    """The event as the redaction algorithm of ``room_version`` leaves it.

    Top-level keys outside the version's list and content keys outside the per-type list are
    removed; ``unsigned`` goes too (servers may re-add their own ``unsigned.redacted_because``).
    """
    if not isinstance(event, Mapping):
        raise bad_json("an event must be a JSON object")
    return _redact(event, get_room_version(room_version))


# --- Hashes and IDs -----------------------------------------------------------------------------


def _checked(event: Any) -> JsonDict:
    """Validate ``event`` for canonical JSON once; return a dict safe to encode without checks."""
    if not isinstance(event, Mapping):
        raise bad_json("an event must be a JSON object")
    if _check(event if type(event) is dict else dict(event)):
        event = _plain(event)
    return event if type(event) is dict else dict(event)


def _encode(obj: JsonDict) -> bytes:
    try:
        return orjson.dumps(obj, option=_OPTS)
    except orjson.JSONEncodeError as e:
        raise bad_json(f"cannot encode event: {e}") from None


def _content_hash_bytes(event: JsonDict) -> bytes:
    body = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(_encode(body)).digest()


def compute_content_hash(event: JsonDict) -> str:
    """``hashes.sha256`` of an event: SHA-256 of its canonical JSON without ``unsigned``,
    ``signatures`` and ``hashes``, in unpadded base64 (S-S API "Calculating the content hash")."""
    return encode_base64(_content_hash_bytes(_checked(event)))


def check_content_hash(event: JsonDict) -> bool:
    """True if ``event["hashes"]["sha256"]`` matches its content (PDU check 3)."""
    ev = _checked(event)
    hashes = ev.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        return False
    try:
        expected = decode_base64(hashes["sha256"])
    except MatrixError:
        return False
    return expected == _content_hash_bytes(ev)


def _reference_hash_bytes(event: JsonDict, rv: RoomVersion) -> bytes:
    redacted = _redact(event, rv)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(_encode(redacted)).digest()


def compute_reference_hash(event: JsonDict, room_version: str) -> bytes:
    """The event's reference hash (S-S API "Calculating the reference hash for an event")."""
    return _reference_hash_bytes(_checked(event), get_room_version(room_version))


def _event_id(event: JsonDict, rv: RoomVersion) -> str:
    fmt = rv.event_id_format
    if fmt is EventIdFormat.V1_OPAQUE:
        eid = event.get("event_id")
        if not isinstance(eid, str):
            raise bad_json("events of this room version carry their event_id")
        return eid
    digest = _reference_hash_bytes(event, rv)
    return "$" + encode_base64(digest, urlsafe=fmt is EventIdFormat.V4_URLSAFE)


def compute_event_id(event: JsonMapping, room_version: str) -> str:
    """The event ID: ``event_id`` itself in v1–v2, else ``$`` + the reference hash in unpadded
    base64 (standard alphabet in v3, URL-safe from v4; rooms/fragments/v1-event-ids,
    v4-event-ids).

    Non-integral floats, which room versions 1–5 tolerate in content, cannot be hashed: such
    events raise ``M_BAD_JSON`` here (v1–v2 events still return the ID they carry)."""
    rv = get_room_version(room_version)
    if rv.event_id_format is EventIdFormat.V1_OPAQUE and isinstance(event, Mapping):
        return _event_id(event if type(event) is dict else dict(event), rv)
    return _event_id(_checked(event), rv)


def compute_room_id_v12(create_event: JsonDict) -> str:
    """A v12 room's ID: the create event's ID with ``!`` instead of ``$`` (v12 "Event format")."""
    return "!" + compute_event_id(create_event, "12")[1:]


# --- Signing and verification (S-S API "Signing Events", "Validating hashes and signatures") ----


def sign_event(
    event: JsonDict, room_version: str, signing_name: str, key_id: str, key: SigningKey
) -> JsonDict:
    """Return a copy of ``event`` with its content hash set and ``signing_name``'s signature added.

    The content hash is computed over the full event, then the redacted event is signed and the
    signature copied onto the full event, as S-S API "Signing Events" prescribes.
    """
    rv = get_room_version(room_version)
    ev = _checked(event)
    hashes = ev.get("hashes") or {}
    sigs_in = ev.get("signatures") or {}
    if not isinstance(hashes, dict) or not isinstance(sigs_in, dict):
        raise bad_json("'hashes' and 'signatures' must be objects")
    if not all(isinstance(v, dict) for v in sigs_in.values()):
        raise bad_json("each server's signatures must be an object")
    out = dict(ev)
    out["hashes"] = {**hashes, "sha256": encode_base64(_content_hash_bytes(ev))}
    redacted = _redact(out, rv)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    signature = encode_base64(key.sign(_encode(redacted)).signature)
    sigs = {name: dict(v) for name, v in sigs_in.items()}
    sigs.setdefault(signing_name, {})[key_id] = signature
    out["signatures"] = sigs
    return out


def domain_of(identifier: object) -> str:
    """The server name of a ``@user:server``-style identifier (everything after the first ``:``)."""
    server_name = server_name_of(identifier)
    if server_name is None:
        raise bad_json(f"identifier {str(identifier)[:80]!r} has no server name")
    return server_name


def required_signers(event: JsonDict, room_version: str) -> set[str]:
    """The servers whose signatures an event must carry (S-S API "Validating hashes and
    signatures on received events"): the sender's server, and in v1–v2 the event ID's server.

    The ``join_authorised_via_users_server`` signature of a restricted join is checked by the auth
    rules (rule 4.2 of v8+), not here.
    """
    rv = get_room_version(room_version)
    signers = {domain_of(event.get("sender"))}
    if rv.event_id_domain_signs:
        signers.add(domain_of(event.get("event_id")))
    return signers


def verify_event_signature(
    event: JsonDict, room_version: str, server_name: str, key_id: str, key: VerifyKey
) -> None:
    """Check one server's signature on an event (over its redacted form). Raises SignatureError."""
    rv = get_room_version(room_version)
    ev = _checked(event)
    signature = signature_of(ev, server_name, key_id)
    redacted = _redact(ev, rv)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    verify_signature_bytes(_encode(redacted), signature, key, server_name)


def verify_event(
    event: JsonDict,
    room_version: str,
    verify_keys: Mapping[str, Mapping[str, VerifyKey]],
) -> bool:
    """Verify an event's signatures and content hash (PDU checks 2 and 3).

    ``verify_keys`` maps each server to the keys known for it, ``{key_id: VerifyKey}``. Every
    server named by :func:`required_signers` must have signed the redacted event with one of its
    known keys; otherwise :class:`~bastion.core.signing.SignatureError` is raised (the PDU is
    dropped). Returns whether the content hash matches: when it does not, the caller must carry on
    with the redacted event.
    """
    rv = get_room_version(room_version)
    ev = _checked(event)
    redacted = _redact(ev, rv)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    message = _encode(redacted)
    sigs = ev.get("signatures")
    if not isinstance(sigs, dict):
        raise SignatureError("event has no signatures")
    for server in required_signers(ev, room_version):
        keys = verify_keys.get(server) or {}
        by_key = sigs.get(server)
        if not isinstance(by_key, dict):
            raise SignatureError(f"event is not signed by {server}")
        candidates = [k for k in by_key if k in keys]
        if not candidates:
            raise SignatureError(f"event is not signed by a known key of {server}")
        key_id = candidates[0]
        verify_signature_bytes(message, signature_of(ev, server, key_id), keys[key_id], server)
    hashes = ev.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        return False
    try:
        return decode_base64(hashes["sha256"]) == _content_hash_bytes(ev)
    except MatrixError:
        return False


def check_event_size(event: JsonDict) -> None:
    """PDU check 1 / C-S "Size limits": the whole event at most 65536 bytes of canonical JSON,
    and ``sender``, ``room_id``, ``state_key``, ``type`` and ``event_id`` at most 255 bytes."""
    ev = _checked(event)
    for key in ("sender", "room_id", "state_key", "type", "event_id"):
        v = ev.get(key)
        if isinstance(v, str) and len(v.encode("utf-8")) > MAX_ID_BYTES:
            raise too_large(f"'{key}' is longer than {MAX_ID_BYTES} bytes")
    if len(_encode(ev)) > MAX_PDU_SIZE:
        raise too_large(f"event is larger than {MAX_PDU_SIZE} bytes")


# --- Format (S-S API "Checks performed on receipt of a PDU", step 1; data/.../pdu_v*.yaml) ------

MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
MAX_DEPTH_V6 = 2**53 - 1
MAX_DEPTH_V1 = 2**63 - 1


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise bad_json(message)


def validate_pdu(event: object, room_version: str) -> None:
    """Check that ``event`` is a well-formed PDU of ``room_version`` (PDU check 1).

    Checks the required keys and their types per the version's PDU schema, the reference lists
    (at most 20 ``prev_events`` and 10 ``auth_events``, ID format per version), ``depth`` bounds,
    the v12 rule that only ``m.room.create`` lacks ``room_id``, identifier grammar (historical
    user IDs allowed, as servers MUST accept them over federation) and the size limits.
    Raises :class:`~bastion.errors.MatrixError` (``M_BAD_JSON`` or ``M_TOO_LARGE``) naming the
    problem.
    """
    rv = get_room_version(room_version)
    _require(isinstance(event, dict), "an event must be a JSON object")
    assert isinstance(event, dict)
    ev = _checked(event) if rv.strict_canonical_json else event
    etype = ev.get("type")
    _require(isinstance(etype, str), "'type' must be a string")
    _require(isinstance(ev.get("content"), dict), "'content' must be an object")
    _require(isinstance(ev.get("sender"), str), "'sender' must be a string")
    parse_user_id(ev["sender"], historical=True)
    ts = ev.get("origin_server_ts")
    _require(type(ts) is int, "'origin_server_ts' must be an integer")
    depth = ev.get("depth")
    max_depth = MAX_DEPTH_V6 if rv.strict_canonical_json else MAX_DEPTH_V1
    _require(type(depth) is int and 0 <= depth <= max_depth, "'depth' must be an integer in range")
    if "state_key" in ev:
        _require(isinstance(ev["state_key"], str), "'state_key' must be a string")
    hashes = ev.get("hashes")
    _require(
        isinstance(hashes, dict) and isinstance(hashes.get("sha256"), str),
        "'hashes' must be an object with a 'sha256' string",
    )
    sigs = ev.get("signatures")
    if not isinstance(sigs, dict):
        raise bad_json("'signatures' must be an object")
    for server, by_key in sigs.items():
        _require(isinstance(by_key, dict), f"signatures of {server!r} must be an object")
        for key_id, sig in by_key.items():
            _require(isinstance(sig, str), f"signature {server}/{key_id} must be a string")
    if "unsigned" in ev:
        _require(isinstance(ev["unsigned"], dict), "'unsigned' must be an object")

    # room_id: required, except that a v12 create event must not have one.
    if rv.room_id_is_create_hash and etype == "m.room.create":
        _require("room_id" not in ev, "a v12 m.room.create event has no 'room_id'")
    else:
        _require(isinstance(ev.get("room_id"), str), "'room_id' must be a string")
        parse_room_id(ev["room_id"], room_version)

    # prev_events / auth_events per event format.
    for key, limit in (("prev_events", MAX_PREV_EVENTS), ("auth_events", MAX_AUTH_EVENTS)):
        refs = ev.get(key)
        if not isinstance(refs, list):
            raise bad_json(f"'{key}' must be an array")
        _require(len(refs) <= limit, f"'{key}' has more than {limit} entries")
        for ref in refs:
            if rv.event_id_format is EventIdFormat.V1_OPAQUE:
                _require(
                    isinstance(ref, list) and len(ref) == 2 and isinstance(ref[1], dict),
                    f"'{key}' entries must be [event_id, hashes] pairs in this room version",
                )
                parse_event_id(ref[0], room_version)
            else:
                parse_event_id(ref, room_version)
    if rv.event_id_format is EventIdFormat.V1_OPAQUE:
        parse_event_id(ev.get("event_id"), room_version)
    if etype == "m.room.redaction":
        redacts = ev["content"].get("redacts") if rv.redacts_in_content else ev.get("redacts")
        if redacts is not None or not rv.redacts_in_content:
            parse_event_id(redacts, None)
    check_event_size(ev)


def event_ref_ids(refs: list[Any]) -> list[str]:
    """The event IDs of a ``prev_events``/``auth_events`` list in any event format."""
    return [r[0] if isinstance(r, list) else r for r in refs]
