"""The server's Ed25519 signing key, stored as one line ``ed25519 <version> <seed>``
(the format Synapse uses, so keys can be moved between implementations)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from bastion.core.base64 import decode_base64, encode_base64


@dataclass(frozen=True)
class ServerKey:
    version: str
    key: SigningKey

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.version}"


def load_or_create_signing_key(path: Path) -> ServerKey:
    if path.exists():
        algorithm, version, seed = path.read_text(encoding="ascii").split()[:3]
        if algorithm != "ed25519":
            raise ValueError(f"{path}: unsupported key algorithm {algorithm!r}")
        return ServerKey(version, SigningKey(decode_base64(seed)))
    path.parent.mkdir(parents=True, exist_ok=True)
    version, key = _new_version(), SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"ed25519 {version} {encode_base64(bytes(key))}\n")
    return ServerKey(version, key)


def _new_version() -> str:
    return "a_" + secrets.token_urlsafe(4).replace("-", "x").replace("_", "y")


def new_signing_key(old: ServerKey) -> ServerKey:
    """A fresh key under a version other than ``old``'s (not yet written anywhere)."""
    version = _new_version()
    while version == old.version:
        version = _new_version()
    return ServerKey(version, SigningKey.generate())


def rotate_signing_key(path: Path, new: ServerKey | None = None) -> ServerKey:
    """Replace the key file with ``new`` (default: a new key under a new version), written
    beside it and renamed, so the file is never half-written."""
    old = load_or_create_signing_key(path)
    if new is None:
        new = new_signing_key(old)
    if new.version == old.version:
        raise ValueError("the new signing key needs a new version")
    version, key = new.version, new.key
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"ed25519 {version} {encode_base64(bytes(key))}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return ServerKey(version, key)
