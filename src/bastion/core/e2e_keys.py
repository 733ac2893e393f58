"""Pure checks for end-to-end encryption keys (C-S API "End-to-End Encryption").

Device keys ("Device keys", "Uploading keys"), one-time and fallback keys ("One-time and fallback
keys"), cross-signing keys ("Cross-signing") and the server-side backup replacement rule
("Server-side key backups"). Everything here is a function of its inputs; errors are
:class:`~bastion.errors.MatrixError` with the spec's errcodes.
"""

from __future__ import annotations

from nacl.signing import VerifyKey

from bastion.core.canonical_json import canonical_json
from bastion.core.json_types import JsonDict
from bastion.core.signing import verify_key_from_base64, verify_signed_json
from bastion.errors import M_INVALID_SIGNATURE, MatrixError, invalid_param
from bastion.errors import bad_json as bad_json  # re-exported: services/e2ee.py imports it here

CROSS_SIGNING_USAGES = ("master", "self_signing", "user_signing")
MAX_KEY_ID_LENGTH = 255


#: 400 ``M_INVALID_PARAM`` (the name the E2EE service imports).
invalid = invalid_param


def invalid_signature(message: str) -> MatrixError:
    """400 ``M_INVALID_SIGNATURE``: a key's signature is missing or does not verify."""
    return MatrixError(M_INVALID_SIGNATURE, message, 400)


def signable(obj: JsonDict) -> bytes:
    """The bytes a signature covers: the object without ``signatures`` and ``unsigned``."""
    return canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


def ed25519_key(public_key: object, what: str) -> VerifyKey:
    if not isinstance(public_key, str):
        raise bad_json(f"{what} must be a string")
    try:
        return verify_key_from_base64(public_key)
    except MatrixError:
        raise invalid(f"{what} is not an unpadded-base64 Ed25519 public key") from None


def check_signature(obj: JsonDict, user_id: str, key_id: str, key: VerifyKey, what: str) -> None:
    """Raise 400 ``M_INVALID_SIGNATURE`` unless ``obj`` carries a valid signature by the key."""
    try:
        verify_signed_json(obj, user_id, key_id, key)
    except MatrixError:
        raise invalid_signature(f"{what}: missing or invalid signature by {key_id}") from None


def _check_signatures_shape(obj: JsonDict, what: str) -> None:
    sigs = obj.get("signatures", {})
    if not isinstance(sigs, dict) or not all(
        isinstance(u, str) and isinstance(by_key, dict) and all(
            isinstance(k, str) and isinstance(s, str) for k, s in by_key.items()
        )
        for u, by_key in sigs.items()
    ):  # fmt: skip
        raise bad_json(f"{what}: 'signatures' must map user IDs to key IDs to strings")
    if "unsigned" in obj and not isinstance(obj["unsigned"], dict):
        raise bad_json(f"{what}: 'unsigned' must be an object")


def check_device_keys(keys: object, user_id: str, device_id: str) -> VerifyKey:
    """Validate uploaded ``device_keys`` (definitions/device_keys.yaml) for the caller's device.

    ``user_id``/``device_id`` must be the caller's, ``algorithms`` a list of strings, ``keys`` a
    map of ``<algorithm>:<device_id>`` to strings including the device's Ed25519 key, and the
    object must carry that key's valid self-signature. Returns the device's Ed25519 key.
    """
    if not isinstance(keys, dict):
        raise bad_json("device_keys must be an object")
    if keys.get("user_id") != user_id:
        raise invalid("device_keys.user_id must be the user ID of the access token")
    if keys.get("device_id") != device_id:
        raise invalid("device_keys.device_id must be the device ID of the access token")
    algorithms = keys.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise bad_json("device_keys.algorithms must be a list of strings")
    key_map = keys.get("keys")
    if not isinstance(key_map, dict) or not key_map:
        raise bad_json("device_keys.keys must be a non-empty object")
    for key_id, value in key_map.items():
        algorithm, sep, kid = key_id.partition(":")
        if not sep or not algorithm or kid != device_id:
            raise invalid(f"device key ID {key_id!r} must be <algorithm>:{device_id}")
        if not isinstance(value, str) or not value:
            raise bad_json(f"device key {key_id!r} must be a non-empty string")
    if not isinstance(keys.get("signatures"), dict):
        raise invalid_signature("device_keys must be signed by the device's Ed25519 key")
    _check_signatures_shape(keys, "device_keys")
    ed_id = f"ed25519:{device_id}"
    if ed_id not in key_map:
        raise invalid(f"device_keys.keys must contain {ed_id}")
    verify_key = ed25519_key(key_map[ed_id], f"device key {ed_id}")
    check_signature(keys, user_id, ed_id, verify_key, "device_keys")
    return verify_key


def same_signed_content(a: JsonDict, b: JsonDict) -> bool:
    """True if the two objects are equal apart from ``signatures`` and ``unsigned``."""
    return signable(a) == signable(b)


def check_one_time_keys(
    keys: object, user_id: str, device_id: str, device_key: VerifyKey | None, *, fallback: bool
) -> list[tuple[str, str, object]]:
    """Validate ``one_time_keys`` or ``fallback_keys``; returns [(algorithm, key_id, key)] in
    request order.

    Keys are ``<algorithm>:<key_id>``. Keys of ``signed_*`` algorithms are objects with a ``key``
    string and a valid signature by the device's Ed25519 key (rejected with
    ``M_INVALID_SIGNATURE`` otherwise: a forged key would break the Olm session it starts);
    fallback keys of those algorithms must also say ``"fallback": true``. Other algorithms may
    be a string or an object.
    """
    what = "fallback_keys" if fallback else "one_time_keys"
    if not isinstance(keys, dict):
        raise bad_json(f"{what} must be an object")
    out: list[tuple[str, str, object]] = []
    seen_algorithms: set[str] = set()
    for full_id, value in keys.items():
        algorithm, sep, key_id = full_id.partition(":")
        if not sep or not algorithm or not key_id or len(full_id) > MAX_KEY_ID_LENGTH:
            raise invalid(f"{what}: key ID {full_id!r} must be <algorithm>:<key ID>")
        if fallback:
            if algorithm in seen_algorithms:
                raise invalid(f"{what}: at most one fallback key per algorithm")
            seen_algorithms.add(algorithm)
        if algorithm.startswith("signed_"):
            if not isinstance(value, dict):
                raise bad_json(f"{what}: {full_id} must be an object")
            if not isinstance(value.get("key"), str) or not value["key"]:
                raise bad_json(f"{what}: {full_id} must have a 'key' string")
            if fallback and value.get("fallback") is not True:
                raise invalid(f'{what}: {full_id} must have "fallback": true')
            _check_signatures_shape(value, f"{what}: {full_id}")
            if device_key is None:
                raise invalid(f"{what}: upload device_keys before signed keys")
            check_signature(value, user_id, f"ed25519:{device_id}", device_key, full_id)
        elif not isinstance(value, str | dict):
            raise bad_json(f"{what}: {full_id} must be a string or an object")
        out.append((algorithm, key_id, value))
    return out


def check_cross_signing_key(key: object, user_id: str, usage: str) -> tuple[str, VerifyKey]:
    """Validate a cross-signing key (definitions/cross_signing_key.yaml) of ``usage``; returns
    (public key, verify key). Exactly one Ed25519 key ``ed25519:<pub>`` whose value is <pub>."""
    what = f"{usage}_key"
    if not isinstance(key, dict):
        raise bad_json(f"{what} must be an object")
    if key.get("user_id") != user_id:
        raise invalid(f"{what}.user_id must be your user ID")
    usages = key.get("usage")
    if not isinstance(usages, list) or not all(isinstance(u, str) for u in usages):
        raise bad_json(f"{what}.usage must be a list of strings")
    if usage not in usages:
        raise invalid(f"{what}.usage must contain {usage!r}")
    key_map = key.get("keys")
    if not isinstance(key_map, dict) or len(key_map) != 1:
        raise invalid(f"{what}.keys must contain exactly one key")
    ((key_id, public_key),) = key_map.items()
    if not key_id.startswith("ed25519:") or key_id[len("ed25519:") :] != public_key:
        raise invalid(f"{what}: key ID must be ed25519:<public key>")
    verify_key = ed25519_key(public_key, f"{what} public key")
    _check_signatures_shape(key, what)
    return public_key, verify_key


def backup_key_replaces(existing: JsonDict, new: JsonDict) -> bool:
    """The server-side backup rule: keep the key with ``is_verified``, then the lower
    ``first_message_index``, then the lower ``forwarded_count``. True if ``new`` wins."""
    if bool(existing["is_verified"]) != bool(new["is_verified"]):
        return bool(new["is_verified"])
    if existing["first_message_index"] != new["first_message_index"]:
        return bool(new["first_message_index"] < existing["first_message_index"])
    return bool(new["forwarded_count"] < existing["forwarded_count"])


def check_backup_key(data: object, where: str) -> JsonDict:
    """Validate a KeyBackupData object (definitions/key_backup_data.yaml)."""
    if not isinstance(data, dict):
        raise bad_json(f"{where} must be an object")
    for field in ("first_message_index", "forwarded_count"):
        v = data.get(field)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad_json(f"{where}.{field} must be a non-negative integer")
    if not isinstance(data.get("is_verified"), bool):
        raise bad_json(f"{where}.is_verified must be a boolean")
    if not isinstance(data.get("session_data"), dict):
        raise bad_json(f"{where}.session_data must be an object")
    return data
