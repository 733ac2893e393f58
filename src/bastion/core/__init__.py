"""The Matrix protocol core: pure functions, no I/O.

Public API (room versions are strings ``"1"`` … ``"12"``; keys are PyNaCl ``SigningKey`` /
``VerifyKey``). Every bad input raises :class:`bastion.errors.MatrixError`.
"""

from bastion.core.auth_rules import (
    AuthResult,
    auth_types_for_event,
    check_auth,
    check_auth_against_state,
)
from bastion.core.base64 import decode_base64, encode_base64
from bastion.core.canonical_json import canonical_json, parse_json
from bastion.core.events import (
    check_content_hash,
    check_event_size,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    compute_room_id_v12,
    redact,
    sign_event,
    validate_pdu,
    verify_event,
)
from bastion.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from bastion.core.signing import (
    SignatureError,
    sign_json,
    signing_key_from_seed,
    verify_key_from_base64,
    verify_signed_json,
)
from bastion.core.state_res import resolve_state
from bastion.errors import MatrixError

__all__ = [
    "AuthResult",
    "auth_types_for_event",
    "check_auth",
    "check_auth_against_state",
    "resolve_state",
    "validate_pdu",
    "KNOWN_ROOM_VERSIONS",
    "MatrixError",
    "RoomVersion",
    "SignatureError",
    "canonical_json",
    "check_content_hash",
    "check_event_size",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
    "compute_room_id_v12",
    "decode_base64",
    "encode_base64",
    "get_room_version",
    "parse_json",
    "redact",
    "sign_event",
    "sign_json",
    "signing_key_from_seed",
    "verify_event",
    "verify_key_from_base64",
    "verify_signed_json",
]
