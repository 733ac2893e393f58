"""Server signing keys (S-S API "Retrieving server keys", keys.yaml, keys_query.yaml, and the
key-validity rules of room versions 5+, ``rooms/fragments/v5-signing-requirements.md``).

Pure rules, no I/O:

* :func:`validate_key_response` checks one ``/_matrix/key/v2/server`` object, whether it came
  directly from its server or through a notary: ``server_name`` exactly the server asked about,
  key IDs ``ed25519:[a-zA-Z0-9_]+``, 32-byte keys, ``valid_until_ts`` an integer, and signed by
  the server itself with one of its ``verify_keys`` (every such signature must verify). A notary's
  own signature is checked with :func:`check_notary_signature`.
* :func:`effective_valid_until` caps ``valid_until_ts`` at 7 days after the fetch ("Servers MUST use
  the lesser of this field and 7 days into the future").
* :func:`key_valid_for_event` / :func:`key_valid_for_request`: ``old_verify_keys`` sign events
  only, never requests; in room versions 5+ a key counts for an event only if it was valid at
  the event's ``origin_server_ts``; versions 1–4 ignore ``valid_until_ts``.
* :func:`server_key_response` builds and signs our own published object.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeGuard

from nacl.signing import SigningKey, VerifyKey

from bastion.core.json_types import JsonDict
from bastion.core.signing import (
    encode_verify_key,
    sign_json,
    signing_key_ids,
    verify_key_from_base64,
    verify_signed_json,
)
from bastion.errors import MatrixError

#: "Servers MUST use the lesser of this field and 7 days into the future".
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000
KEY_ID_RE = re.compile(r"ed25519:[a-zA-Z0-9_]+")


class KeyResponseError(ValueError):
    """A key response breaks a rule; the message says which."""


@dataclass(frozen=True, slots=True)
class ServerVerifyKey:
    """One public key of a server as we know it.

    ``valid_until_ts`` is the effective validity (capped); for a key from ``old_verify_keys`` it is
    its ``expired_ts`` and ``old`` is set (valid for events only).
    """

    server_name: str
    key_id: str
    key: VerifyKey
    valid_until_ts: int
    old: bool = False

    @property
    def key_base64(self) -> str:
        return encode_verify_key(self.key)


@dataclass(frozen=True)
class ServerKeys:
    """A validated key response."""

    server_name: str
    valid_until_ts: int  # as published (not capped)
    verify_keys: dict[str, ServerVerifyKey] = field(default_factory=dict)
    old_verify_keys: dict[str, ServerVerifyKey] = field(default_factory=dict)

    def all_keys(self) -> list[ServerVerifyKey]:
        return [*self.verify_keys.values(), *self.old_verify_keys.values()]


def effective_valid_until(valid_until_ts: int, fetched_at_ms: int) -> int:
    """``min(valid_until_ts, fetched_at + 7 days)``."""
    return min(valid_until_ts, fetched_at_ms + MAX_KEY_VALIDITY_MS)


def _int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_key(server: str, key_id: object, entry: object, what: str) -> VerifyKey:
    if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
        raise KeyResponseError(f"{what}: key ID {str(key_id)[:64]!r} is not ed25519:[a-zA-Z0-9_]+")
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        raise KeyResponseError(f"{what} {key_id}: 'key' must be a string")
    try:
        return verify_key_from_base64(entry["key"])
    except MatrixError:
        raise KeyResponseError(f"{what} {key_id}: not a 32-byte unpadded-base64 key") from None


def validate_key_response(
    response: object,
    expected_server: str,
    fetched_at_ms: int,
    banned_keys: Iterable[str] = (),
) -> ServerKeys:
    """Check a ``/_matrix/key/v2/server`` object for ``expected_server``; raise KeyResponseError.

    ``banned_keys`` are unpadded-base64 public keys we refuse whatever the server: a response
    whose ``verify_keys`` hold one is refused outright; a banned old key is left out.
    """
    if not isinstance(response, dict):
        raise KeyResponseError("key response is not a JSON object")
    name = response.get("server_name")
    if name != expected_server:
        raise KeyResponseError(f"server_name {str(name)[:80]!r} is not {expected_server!r}")
    valid_until = response.get("valid_until_ts")
    if not _int(valid_until):
        raise KeyResponseError("valid_until_ts must be an integer")
    vks = response.get("verify_keys")
    if not isinstance(vks, dict) or not vks:
        raise KeyResponseError("verify_keys must be a non-empty object")
    old = response.get("old_verify_keys", {})
    if not isinstance(old, dict):
        raise KeyResponseError("old_verify_keys must be an object")
    banned = set(banned_keys)
    effective = effective_valid_until(valid_until, fetched_at_ms)
    current: dict[str, ServerVerifyKey] = {}
    for key_id, entry in vks.items():
        key = _parse_key(expected_server, key_id, entry, "verify_keys")
        if encode_verify_key(key) in banned:
            raise KeyResponseError(f"verify key {key_id} of {expected_server} is banned")
        current[key_id] = ServerVerifyKey(expected_server, key_id, key, effective)
    # Self-signature: at least one signature by a listed verify key, and none of those bad.
    signed_by = [k for k in signing_key_ids(response, expected_server) if k in current]
    if not signed_by:
        raise KeyResponseError(f"key response is not signed by {expected_server} with its keys")
    for key_id in signed_by:
        try:
            verify_signed_json(response, expected_server, key_id, current[key_id].key)
        except MatrixError:
            raise KeyResponseError(f"bad self-signature with {key_id}") from None
    olds: dict[str, ServerVerifyKey] = {}
    for key_id, entry in old.items():
        key = _parse_key(expected_server, key_id, entry, "old_verify_keys")
        expired = entry.get("expired_ts")
        if not _int(expired):
            raise KeyResponseError(f"old_verify_keys {key_id}: expired_ts must be an integer")
        if key_id in current or encode_verify_key(key) in banned:
            continue
        olds[key_id] = ServerVerifyKey(
            expected_server, key_id, key, min(expired, effective), old=True
        )
    return ServerKeys(expected_server, valid_until, current, olds)


def check_notary_signature(
    response: JsonDict, notary: str, notary_keys: Mapping[str, VerifyKey]
) -> None:
    """A notary's answer carries the notary's own signature (keys_query.yaml: "The receiving
    (notary) server must sign the keys"). Raises KeyResponseError if none of ``notary_keys``
    signed it validly."""
    for key_id in signing_key_ids(response, notary):
        key = notary_keys.get(key_id)
        if key is None:
            continue
        try:
            verify_signed_json(response, notary, key_id, key)
        except MatrixError:
            raise KeyResponseError(f"bad signature by notary {notary} ({key_id})") from None
        return
    raise KeyResponseError(f"response is not signed by notary {notary}")


def key_valid_for_request(key: ServerVerifyKey, now_ms: int) -> bool:
    """Requests are signed with current keys only (``old_verify_keys`` are for events), and
    within their validity."""
    return not key.old and key.valid_until_ts >= now_ms


def key_valid_for_event(
    key: ServerVerifyKey, origin_server_ts: object, enforce_validity: bool
) -> bool:
    """Room versions 5+ ("enforce_validity"): the key must be valid at ``origin_server_ts``.
    Versions 1–4 ignore ``valid_until_ts``, so any key we know counts."""
    if not enforce_validity:
        return True
    return _int(origin_server_ts) and key.valid_until_ts >= origin_server_ts


def server_key_response(
    server_name: str,
    key_id: str,
    key: SigningKey,
    valid_until_ts: int,
    old_keys: Iterable[tuple[str, str, int]] = (),
) -> JsonDict:
    """Our published keys (keys.yaml), self-signed. ``old_keys`` are (key_id, base64, expired_ts)."""
    body = {
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {key_id: {"key": encode_verify_key(key)}},
        "old_verify_keys": {
            kid: {"key": b64, "expired_ts": ts} for kid, b64, ts in old_keys if kid != key_id
        },
    }
    return sign_json(body, server_name, key_id, key)
