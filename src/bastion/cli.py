"""Command line: ``bastion serve`` and ``bastion admin …`` (``bastion admin audit``: the
audit trail of issue 10, :func:`admin_audit`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import time
from pathlib import Path

from bastion.config import Config, ConfigError, load_config, render_config
from bastion.storage.interface import Store

log = logging.getLogger("bastion")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (default: DATA_DIR/bastion.toml)")
    p.add_argument("--data-dir", type=Path, help="data directory (default: ./bastion-data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bastion", description="Bastion, a security-first Matrix homeserver."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the homeserver",
        description="Run the homeserver on SQLite under the data directory. On first start it "
        "creates the server's signing key and a commented config file there. Flags override the "
        "config file.",
    )
    _add_common(serve)
    serve.add_argument(
        "--server-name", help="the server name: the domain of user IDs (default: localhost)"
    )
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="Client-Server API address (default: 127.0.0.1:8008)"
    )
    serve.add_argument(
        "--registration", choices=["open", "token", "closed"],
        help="open: anyone may register (m.login.dummy); token: a registration token is needed; "
        "closed: accounts only via `bastion admin create-user` (default: token)",
    )  # fmt: skip
    serve.add_argument(
        "--default-room-version", metavar="N", help="room version for new rooms (default: 12)"
    )
    fed = serve.add_argument_group("federation (off unless --federation-listen is given)")
    fed.add_argument(
        "--federation-listen", metavar="HOST:PORT", help="Server-Server API address (HTTPS)"
    )
    fed.add_argument("--tls-cert", metavar="FILE", help="federation TLS certificate chain (PEM)")
    fed.add_argument("--tls-key", metavar="FILE", help="federation TLS private key (PEM)")
    fed.add_argument(
        "--tls-self-signed", action="store_true", default=None,
        help="create a self-signed certificate for the server name if the file is absent (tests)",
    )  # fmt: skip
    fed.add_argument(
        "--federation-ca", metavar="FILE",
        help="trust this CA bundle for outbound federation instead of the system store",
    )  # fmt: skip
    fed.add_argument(
        "--federation-allow-ip", metavar="CIDR", action="append",
        help="let outbound federation reach this range despite the egress filter (repeatable; "
        "loopback must be allowed explicitly)",
    )  # fmt: skip

    admin = sub.add_parser(
        "admin", help="administration commands (run beside or instead of the server)"
    )
    asub = admin.add_subparsers(dest="admin_command", required=True)
    cu = asub.add_parser("create-user", help="create a user account")
    _add_common(cu)
    cu.add_argument("username", help="localpart or full user ID")
    cu.add_argument("--password", help="password (default: read from standard input)")
    cu.add_argument("--admin", action="store_true", help="make the user a server admin")

    rk = asub.add_parser(
        "rotate-signing-key",
        help="replace the server's signing key; the old one is published as an old_verify_key "
        "(restart the server to start using the new key)",
    )
    _add_common(rk)

    ak = asub.add_parser(
        "rekey",
        help="encrypt the database at rest, change its key, or decrypt it (server stopped); "
        "the current key is the config's at_rest_key",
    )
    _add_common(ak)
    new = ak.add_mutually_exclusive_group(required=True)
    new.add_argument("--new-key", metavar="SPEC", help="the new key: file:PATH or env:NAME")
    new.add_argument(
        "--generate", metavar="FILE", type=Path,
        help="write a new random key to FILE (mode 600) and use it",
    )  # fmt: skip
    new.add_argument("--decrypt", action="store_true", help="store the database unencrypted")
    eu = asub.add_parser(
        "erase-user",
        help="deactivate a user and erase what they wrote and uploaded (GDPR Art. 17); "
        "run with the server stopped",
    )
    _add_common(eu)
    eu.add_argument("user_id", help="localpart or full user ID")
    eu.add_argument(
        "--redact-federated", action="store_true",
        help="first send a redaction of each of the user's events to the other servers of "
        "their rooms (queued; sent when the server next starts)",
    )  # fmt: skip
    eu.add_argument("--reason", help="why (recorded in the ledger)")

    rt = asub.add_parser("registration-token", help="manage registration tokens")
    rsub = rt.add_subparsers(dest="token_command", required=True)
    rc = rsub.add_parser("create", help="create a token")
    _add_common(rc)
    rc.add_argument(
        "--uses", type=int, help="how many registrations it allows (default: unlimited)"
    )
    rc.add_argument("--expires-in", type=int, metavar="SECONDS", help="lifetime (default: none)")
    rc.add_argument("--token", help="the token itself (default: random)")
    rl = rsub.add_parser("list", help="list tokens")
    _add_common(rl)
    rr = rsub.add_parser("revoke", help="revoke a token")
    _add_common(rr)
    rr.add_argument("token")

    au = asub.add_parser(
        "audit",
        help="the audit trail of a time range (every ledger action record) with the ledger "
        "proofs that it is complete (read only: the server may run)",
        description="Times are ISO 8601 (2026-12-06T19:00:00Z; no offset: UTC) or ms since the "
        "epoch. JSON carries the proofs (check them with `bastion ledger verify-audit`); CSV "
        "lists the records only, each cell safe to open in a spreadsheet.",
    )
    _add_common(au)
    au.add_argument("--since", required=True, help="start of the range (included)")
    au.add_argument("--until", help="end of the range (included; default: now)")
    au.add_argument("--actor", help="only records of this actor (a user ID, or cli)")
    au.add_argument("--subject", help="only records about this user")
    au.add_argument("--format", choices=["json", "csv"], default="json")
    au.add_argument("--since-checkpoint-size", type=int, metavar="N",
                    help="prove the log grew from the checkpoint of size N the last audit saw")  # fmt: skip
    au.add_argument("-o", "--output", type=Path, help="write here (default: standard output)")
    ex = asub.add_parser(
        "export-user",
        help="write everything the server holds about a user to a ZIP archive (GDPR Art. 15/20;"
        " run with the server stopped)",
    )
    _add_common(ex)
    ex.add_argument("user_id", help="the full user ID (@name:server)")
    ex.add_argument("-o", "--output", type=Path, required=True, help="the archive to write")

    from bastion.ledger.cli import add_ledger_parser

    add_ledger_parser(sub)
    from bastion.guard.cli import add_guard_parser

    add_guard_parser(sub)
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    data_dir = args.data_dir
    config_path = args.config
    if config_path is not None:
        config = load_config(config_path)
        if data_dir is not None:
            config = config.with_overrides(data_dir=data_dir)
    else:
        data_dir = data_dir or Config().data_dir
        default_path = data_dir / "bastion.toml"
        config = load_config(default_path) if default_path.exists() else Config()
        config = config.with_overrides(data_dir=data_dir)
        config_path = default_path
    overrides: dict = {}
    if getattr(args, "server_name", None):
        overrides["server_name"] = args.server_name
    if getattr(args, "listen", None):
        host, sep, port = args.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError("--listen must be HOST:PORT")
        overrides["listen_host"] = host.strip("[]")
        overrides["listen_port"] = int(port)
    if getattr(args, "registration", None):
        overrides["registration"] = args.registration
    if getattr(args, "default_room_version", None):
        overrides["default_room_version"] = args.default_room_version
    if getattr(args, "federation_listen", None):
        overrides["federation_listen"] = args.federation_listen
    if getattr(args, "tls_cert", None):
        overrides["tls_certificate_path"] = args.tls_cert
    if getattr(args, "tls_key", None):
        overrides["tls_private_key_path"] = args.tls_key
    if getattr(args, "tls_self_signed", None):
        overrides["tls_self_signed"] = True
    if getattr(args, "federation_ca", None):
        overrides["federation_ca_file"] = args.federation_ca
    if getattr(args, "federation_allow_ip", None):
        overrides["federation_allow_ips"] = (
            *config.federation_allow_ips,
            *args.federation_allow_ip,
        )
    config = config.with_overrides(**overrides).validate()
    if args.command == "serve" and not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(render_config(config), encoding="utf-8")
    return config


def _open_store(config: Config) -> Store:
    from bastion.storage.sqlite.store import SqliteStore

    store = SqliteStore(config.database_path, config.sqlite_synchronous, config.database_key)
    store.open()
    return store


def admin_create_user(config: Config, args: argparse.Namespace) -> int:
    from bastion.core.identifiers import UserId, parse_user_id
    from bastion.errors import MatrixError
    from bastion.ledger import records
    from bastion.services.accounts import MIN_PASSWORD_LENGTH
    from bastion.services.passwords import MAX_PASSWORD_LENGTH, Passwords
    from bastion.services.security_records import CLI, record_in

    user_id = (
        args.username
        if args.username.startswith("@")
        else str(UserId(args.username.lower(), config.server_name))
    )
    try:
        parsed = parse_user_id(user_id)
    except MatrixError as e:
        print(f"bastion: {e.message}", file=sys.stderr)
        return 2
    if parsed.domain != config.server_name:
        print(f"bastion: {user_id} is not on this server ({config.server_name})", file=sys.stderr)
        return 2
    password = args.password if args.password is not None else sys.stdin.readline().rstrip("\n")
    if not password:
        print("bastion: a password is required (--password or one line on stdin)", file=sys.stderr)
        return 2
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        print(
            f"bastion: a password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            file=sys.stderr,
        )
        return 2
    pw_hash = Passwords(
        config.argon2_time_cost, config.argon2_memory_cost, config.argon2_parallelism
    ).hash(password)
    store = _open_store(config)
    try:
        now = int(time.time() * 1000)

        def fn(conn) -> bool:
            # The user, its initial display name and the ledger record commit together.
            if not store.create_user_in(
                conn, user_id, pw_hash, now, is_admin=args.admin, displayname=parsed.localpart
            ):
                return False
            record_in(
                store, conn, records.ACTION_ACCOUNT_CREATE, actor=CLI, origin=CLI, ts=now,
                target=user_id, subject=user_id, details={"admin": bool(args.admin)},
            )  # fmt: skip
            return True

        if not store.transaction_sync(fn):
            print(f"bastion: {user_id} already exists", file=sys.stderr)
            return 1
    finally:
        store.close()
    print(user_id)
    return 0


def admin_registration_token(config: Config, args: argparse.Namespace) -> int:
    from bastion.ledger import records
    from bastion.services.security_records import CLI, record_in
    from bastion.storage.interface import registration_token_valid

    if args.token_command == "create":
        # Check the arguments before touching the database.
        if args.token is not None and (
            not (0 < len(args.token) <= 64) or any(c not in _TOKEN_CHARS for c in args.token)
        ):
            print("bastion: a token is 1-64 characters of A-Z a-z 0-9 . _ ~ -", file=sys.stderr)
            return 2
        if args.uses is not None and args.uses < 1:
            print("bastion: --uses must be at least 1", file=sys.stderr)
            return 2
        if args.expires_in is not None and args.expires_in < 1:
            print("bastion: --expires-in must be at least 1 second", file=sys.stderr)
            return 2
    store = _open_store(config)
    now = int(time.time() * 1000)
    try:
        if args.token_command == "create":
            token = args.token or secrets.token_urlsafe(18)
            expiry = now + args.expires_in * 1000 if args.expires_in is not None else None

            def create(conn) -> bool:
                if not store.create_registration_token_in(conn, token, args.uses, expiry, now):
                    return False
                # Only the prefix the store keeps in the clear names the token.
                record_in(
                    store, conn, records.ACTION_REGISTRATION_TOKEN_CREATE, actor=CLI, origin=CLI,
                    ts=now, target=token[:4] + "…", details={"uses": args.uses, "expiry_ts": expiry},
                )  # fmt: skip
                return True

            if not store.transaction_sync(create):
                print("bastion: that token already exists", file=sys.stderr)
                return 1
            # Shown once: only a hash of the token is stored.
            print(token)
        elif args.token_command == "list":
            for r in store.list_registration_tokens():
                print(json.dumps({
                    "prefix": r["prefix"], "uses_allowed": r["uses_allowed"],
                    "completed": r["completed"], "expiry_ts": r["expiry_ts"],
                    "revoked": bool(r["revoked"]), "valid": registration_token_valid(r, now),
                }))  # fmt: skip
        elif args.token_command == "revoke":

            def revoke(conn) -> bool:
                if not store.revoke_registration_token_in(conn, args.token):
                    return False
                # A revoked token can never be used again: its deletion.
                record_in(
                    store, conn, records.ACTION_REGISTRATION_TOKEN_DELETE, actor=CLI, origin=CLI,
                    ts=now, target=args.token[:4] + "…", details={"revoked": True},
                )  # fmt: skip
                return True

            if not store.transaction_sync(revoke):
                print("bastion: no such token", file=sys.stderr)
                return 1
            print(f"revoked {args.token[:4]}…")
    finally:
        store.close()
    return 0


def admin_rotate_signing_key(config: Config, args: argparse.Namespace) -> int:
    """Replace the signing key; the old key goes to ``old_verify_keys`` with ``expired_ts`` now
    (S-S API "Publishing Keys": old keys stay valid for checking events they signed)."""
    from bastion.core.signing import encode_verify_key
    from bastion.ledger import records
    from bastion.services.security_records import CLI, record_in
    from bastion.signing_key import load_or_create_signing_key, new_signing_key, rotate_signing_key

    path = config.signing_key_path
    if not path.exists():
        print(f"bastion: no signing key at {path}", file=sys.stderr)
        return 1
    old = load_or_create_signing_key(path)
    new = new_signing_key(old)
    store = _open_store(config)
    try:
        now = int(time.time() * 1000)

        def retire(conn) -> None:
            # The old key and the rotation's record are stored before the file changes: a
            # crash in between leaves the old key both current and listed, never lost (and a
            # record of a rotation that a rerun of this command then makes again).
            store.add_local_old_signing_key_in(conn, old.key_id, encode_verify_key(old.key), now)
            record_in(
                store, conn, records.ACTION_SIGNING_KEY_ROTATE, actor=CLI, origin=CLI, ts=now,
                target=old.key_id,
                details={"old_key_id": old.key_id, "new_key_id": new.key_id,
                         "new_public_key": encode_verify_key(new.key), "expired_ts": now},
            )  # fmt: skip

        store.transaction_sync(retire)
        rotate_signing_key(path, new)
    finally:
        store.close()
    print(json.dumps({"old_key_id": old.key_id, "new_key_id": new.key_id, "expired_ts": now}))
    print("restart the server to sign with the new key", file=sys.stderr)
    return 0


def admin_export_user(config: Config, args: argparse.Namespace) -> int:
    """``bastion admin export-user USER_ID -o FILE``: the export of :mod:`bastion.services.export`
    written to FILE (progress on stderr, a summary on stdout) and its ``compliance.export``
    ledger record (actor ``cli``)."""
    import os

    from bastion.errors import MatrixError
    from bastion.server import HomeServer
    from bastion.services.export import drive
    from bastion.services.export.archive import Progress, new_part_path
    from bastion.services.security_records import CLI

    out: Path = args.output
    if not config.database_path.exists():
        print(f"bastion: no database at {config.database_path}", file=sys.stderr)
        return 2
    if out.exists():
        print(f"bastion: {out} exists; not overwriting it", file=sys.stderr)
        return 2
    if not out.parent.is_dir():
        print(f"bastion: no directory {out.parent}", file=sys.stderr)
        return 2
    hs = HomeServer(config)
    hs.store.open()
    part = new_part_path(out.parent, "." + out.name)
    try:
        try:
            user_id = hs.export.require_local_user(args.user_id)
        except MatrixError as e:
            print(f"bastion: {args.user_id}: {e.message}", file=sys.stderr)
            return 1
        shown: list = ["", 0.0]  # the kind shown last, and when

        def progress(p: Progress) -> None:
            now = time.monotonic()
            if p.kind != shown[0] or now - shown[1] >= 2:
                shown[:] = [p.kind, now]
                extra = f" ({p.media_bytes} bytes)" if p.kind == "media_files" else ""
                print(f"export: {p.kind}: {p.counts.get(p.kind, 0)}{extra}", file=sys.stderr)

        result = drive(hs.export.steps(user_id, part, progress))
        ts = int(time.time() * 1000)
        hs.store.transaction_sync(
            lambda conn: hs.export.record_in(
                conn, result, user_id=user_id, actor=CLI, origin=CLI, ts=ts
            )
        )
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
        hs.media.close()
        hs.passwords.close()
        hs.store.close()
    print(json.dumps({"path": str(out), "bytes": result.size, "sha256": result.sha256,
                      "counts": result.counts}))  # fmt: skip
    return 0


def _database_in_use(config: Config) -> bool:
    """Whether a server (or another command) has the database open: it holds the database's
    lock file (:func:`bastion.storage.sqlite.at_rest.shared_lock`) while it does."""
    from bastion.storage.sqlite.at_rest import DatabaseInUse, exclusive_lock

    try:
        with exclusive_lock(config.database_path):
            return False
    except DatabaseInUse:
        return True


def admin_erase_user(config: Config, args: argparse.Namespace) -> int:
    """Deactivate and erase a user (:mod:`bastion.services.erasure`) with the server stopped:
    the leaves and redactions it sends are queued for the other servers and go out when the
    server next starts."""
    from bastion.core.identifiers import UserId
    from bastion.errors import MatrixError
    from bastion.server import HomeServer
    from bastion.services.security_records import CLI

    user_id = (
        args.user_id
        if args.user_id.startswith("@")
        else str(UserId(args.user_id.lower(), config.server_name))
    )
    if args.reason is not None and len(args.reason) > 1000:
        print("bastion: --reason is at most 1000 characters", file=sys.stderr)
        return 2
    if _database_in_use(config):
        # A second process sending events beside the server would hand out the same stream
        # positions: refuse (the admin API erases a user while the server runs).
        print(
            "bastion: a server has the database open: stop it first, or use "
            "POST /_synapse/admin/v1/deactivate/{userId} with erase",
            file=sys.stderr,
        )
        return 1

    async def run() -> dict:
        hs = HomeServer(config)
        hs.store.open()
        hs.store.attach_loop(asyncio.get_running_loop())
        try:
            hs.erasure.check_target(user_id)
            return await hs.erasure.erase(
                user_id, actor=CLI, redact_federated=args.redact_federated, reason=args.reason,
                origin=CLI,
            )  # fmt: skip
        finally:
            if hs.federation is not None:
                await hs.federation.client.close()
            hs.passwords.close()
            hs.media.close()
            hs.store.close()

    try:
        summary = asyncio.run(run())
    except MatrixError as e:
        print(f"bastion: {user_id}: {e.message}", file=sys.stderr)
        return 1
    print(json.dumps({"user_id": user_id, **summary}))
    return 0


_TOKEN_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")


def admin_rekey(config: Config, args: argparse.Namespace) -> int:
    """``bastion admin rekey``: encryption at rest turned on, its key changed, or turned off
    (issue 10); recorded in the ledger (``at_rest.rekey``) with the new key. The config's
    ``at_rest_key`` must then name the new key (the command says what to write)."""
    from bastion.ledger.records import ACTION_AT_REST_REKEY
    from bastion.services.security_records import CLI, record_in
    from bastion.storage.sqlite.at_rest import (
        DatabaseInUse,
        KeyError_,
        load_key,
        rekey_database,
        write_new_key,
    )
    from bastion.storage.sqlite.store import SqliteStore

    if not config.database_path.is_file():
        print(f"bastion: no database at {config.database_path}", file=sys.stderr)
        return 1
    old = config.database_key
    spec = ""
    try:
        if args.decrypt:
            new = None
        elif args.generate is not None:
            spec = f"file:{args.generate.resolve()}"
            new = write_new_key(args.generate)
        else:
            spec = args.new_key
            new = load_key(spec)
    except FileExistsError:
        print(f"bastion: {args.generate} exists already (never overwritten)", file=sys.stderr)
        return 2
    except (KeyError_, OSError) as e:
        print(f"bastion: {e}", file=sys.stderr)
        return 2
    if old == new:
        print("bastion: the new key is the current one", file=sys.stderr)
        return 2
    try:
        rekey_database(config.database_path, old, new)
    except DatabaseInUse as e:
        print(f"bastion: {e}", file=sys.stderr)
        return 1
    store = SqliteStore(config.database_path, config.sqlite_synchronous, new)
    store.open()
    try:
        now = int(time.time() * 1000)
        details = {"from": "plaintext" if old is None else "encrypted",
                   "to": "plaintext" if new is None else "encrypted"}  # fmt: skip
        store.transaction_sync(
            lambda conn: record_in(
                store, conn, ACTION_AT_REST_REKEY, actor=CLI, ts=now, origin=CLI, details=details
            ),  # fmt: skip
            durable=True,
        )
    finally:
        store.close()
    if new is None:
        print("the database is now unencrypted: remove at_rest_key from the config")
    else:
        print(f'the database is encrypted: set at_rest_key = "{spec}" in the config')
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "ledger":
        from bastion.ledger.cli import run_ledger

        return run_ledger(args)
    if args.command == "guard":
        from bastion.guard.cli import run_guard

        return run_guard(args)
    try:
        config = resolve_config(args)
    except ConfigError as e:
        print(f"bastion: configuration error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from bastion.storage.sqlite.driver import WrongKey
    from bastion.storage.sqlite.migrations import SchemaError

    try:
        return _run(config, args)
    except (SchemaError, WrongKey) as e:
        # A database newer than this code (or not written by Bastion, or a failed migration),
        # or one the configured key does not open: refuse with the reason, never a traceback,
        # and leave the database as it is.
        print(f"bastion: cannot open the database: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"bastion: configuration error: {e}", file=sys.stderr)
        return 2


def _run(config: Config, args: argparse.Namespace) -> int:
    if args.command == "serve":
        from bastion.server import serve

        try:
            asyncio.run(serve(config))
        except KeyboardInterrupt:
            pass
        except OSError as e:  # e.g. the address is already in use
            print(f"bastion: cannot start: {e.strerror or e}", file=sys.stderr)
            return 1
        return 0
    if args.admin_command == "create-user":
        return admin_create_user(config, args)
    if args.admin_command == "rotate-signing-key":
        return admin_rotate_signing_key(config, args)
    if args.admin_command == "audit":
        return admin_audit(config, args)
    if args.admin_command == "export-user":
        return admin_export_user(config, args)
    if args.admin_command == "rekey":
        return admin_rekey(config, args)
    if args.admin_command == "erase-user":
        return admin_erase_user(config, args)
    return admin_registration_token(config, args)


def admin_audit(config: Config, args: argparse.Namespace) -> int:
    """``bastion admin audit``: the trail of ``--since``..``--until`` from the data directory's
    database opened read-only (:func:`bastion.services.audit.build_trail`, no page bounds),
    over the stored tiles and leaves and the latest stored checkpoint. Exit 2 on bad input."""
    import csv

    from bastion.core.audit import csv_rows, parse_range
    from bastion.ledger.service import checkpoint_origin
    from bastion.ledger.tiles import TileNodeReader
    from bastion.ledger.verify import _read_tile_from, log_vkeys
    from bastion.services.audit import TrailError, TrailQuery, build_trail, trail_records
    from bastion.storage.sqlite.ledger_audit import AuditReadError, open_readonly_store

    try:
        since, until = parse_range(args.since, args.until, int(time.time() * 1000))
    except ValueError as e:
        print(f"bastion: {e}", file=sys.stderr)
        return 2
    old = args.since_checkpoint_size
    if old is not None and old < 1:
        print(
            "bastion: --since-checkpoint-size is a checkpoint's size (1 or more)", file=sys.stderr
        )
        return 2
    try:
        store = open_readonly_store(config.database_path)
    except (FileNotFoundError, ValueError) as e:
        print(f"bastion: {e}", file=sys.stderr)
        return 2
    try:
        cp = store.ledger_latest_checkpoint()
        text = old_text = None
        if cp is not None:
            text = (cp.note + b"".join(store.ledger_cosignatures(cp.size))).decode("utf-8")
        if old is not None:
            old_cp = store.ledger_checkpoint(old)
            if old_cp is not None:
                old_text = (old_cp.note + b"".join(store.ledger_cosignatures(old))).decode()
        node = TileNodeReader(
            lambda lv, ix, w: _read_tile_from(store, lv, ix, w),
            size=cp.size if cp is not None else None,
        )
        keys = log_vkeys(store, config.data_dir, config.signing_key_path,
                         checkpoint_origin(config.server_name))  # fmt: skip
        query = TrailQuery(since=since, until=until, actor=args.actor, subject=args.subject,
                           limit=None, max_leaves=None, since_checkpoint_size=old)  # fmt: skip
        trail = build_trail(store, query, checkpoint=cp, checkpoint_text=text, node=node,
                            log_keys=keys, old_checkpoint_text=old_text)  # fmt: skip
    except (TrailError, AuditReadError) as e:
        print(f"bastion: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    proof = trail["proof"]
    if proof is None:
        print("bastion: the ledger has no signed checkpoint yet: nothing can be proven",
              file=sys.stderr)  # fmt: skip
    elif proof["end_reason"] == "checkpoint":
        print(f"bastion: the trail ends at leaf {proof['end']}, the last one a signed checkpoint "
              "covers; later records are not listed", file=sys.stderr)  # fmt: skip
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        if args.format == "csv":
            csv.writer(out).writerows(csv_rows(trail_records(trail)))
        else:
            out.write(json.dumps(trail, indent=1) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
