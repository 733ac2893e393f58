"""Synapse's event hashing and redaction functions, used as an oracle (test-only)."""

from __future__ import annotations

import copy
import hashlib

from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.crypto.event_signing import compute_content_hash, compute_event_reference_hash
from synapse.events import make_event_from_dict
from synapse.synapse_rust.events import redact_event_dict
from unpaddedbase64 import encode_base64


def content_hash(event: dict) -> str:
    _, digest = compute_content_hash(copy.deepcopy(event), hashlib.sha256)
    return encode_base64(digest)


def event_id(event: dict, room_version: str) -> str:
    return make_event_from_dict(copy.deepcopy(event), KNOWN_ROOM_VERSIONS[room_version]).event_id


def reference_hash(event: dict, room_version: str) -> bytes:
    ev = make_event_from_dict(copy.deepcopy(event), KNOWN_ROOM_VERSIONS[room_version])
    return compute_event_reference_hash(ev)[1]


def redact(event: dict, room_version: str) -> dict:
    return redact_event_dict(KNOWN_ROOM_VERSIONS[room_version], copy.deepcopy(event))
