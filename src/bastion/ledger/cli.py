"""``bastion ledger …``: verify, prove, check-proof and status (issue 8, "Tools").

* ``verify --data-dir DIR`` checks a database against its ledger (:mod:`bastion.ledger.verify`);
  ``verify --remote URL`` checks a server's published log (:mod:`bastion.ledger.remote_verify`).
* ``prove EVENT_ID --data-dir DIR -o FILE`` (or ``--record INDEX``) writes a self-contained
  C2SP tlog-proof@v1 bundle; ``check-proof FILE`` verifies one offline, with no database.
* ``verify-audit FILE`` checks an audit trail (``bastion admin audit --format json``, ``GET
  /_bastion/admin/v1/audit``) offline: :func:`bastion.ledger.audit_trail.verify_trail`.
* ``status`` shows the ledger's size, last checkpoint, halt, witnesses and anchors from the
  database (the server may be stopped).

Exit codes: 0 clean, 1 a finding (or a proof that does not verify), 2 a usage error (missing
directory, no database, a bad pin or key file).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bastion.config import Config, ConfigError, load_config

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def add_ledger_parser(subparsers: Any) -> None:
    """Register ``bastion ledger …`` on the top-level subparsers."""
    ledger = subparsers.add_parser(
        "ledger",
        help="verify the ledger, make and check proofs, show its status",
        description="The ledger: a tamper-evident Merkle log of every event and security action.",
    )
    lsub = ledger.add_subparsers(dest="ledger_command", required=True)

    v = lsub.add_parser(
        "verify",
        help="check a database (--data-dir) or a server's published log (--remote) against the "
        "ledger; exit 1 on any finding",
        description="Check a Bastion database against its ledger (read only: the server may run "
        "or be stopped), or a server's published log from outside. Every finding names the "
        "table, the row, the leaf and the event, and what happened to it (changed, deleted, "
        "inserted, reordered, rolled_back, forked, invalid). Exit 0 clean, 1 on any finding, "
        "2 on a usage error.",
    )
    v.add_argument("--data-dir", type=Path, help="the server's data directory (read only)")
    v.add_argument("--config", type=Path, help="TOML config file (default: DATA_DIR/bastion.toml)")
    v.add_argument("--remote", metavar="URL", help="a server's base URL: verify its published log")
    v.add_argument("--key", metavar="VKEY", action="append", default=[],
                   help="the log's verifier key (remote; repeatable)")  # fmt: skip
    v.add_argument("--witness-key", metavar="VKEY", action="append", default=[],
                   help="a witness's cosignature verifier key that must have cosigned "
                   "(remote; repeatable)")  # fmt: skip
    v.add_argument(
        "--access-token",
        metavar="T",
        help="an admin's access token: also fetch and check every entry (remote)",
    )
    v.add_argument("--checkpoint-pin", metavar="FILE", type=Path, action="append", default=[],
                   help="a checkpoint saved earlier (from a witness or an earlier run): the "
                   "database must not be smaller than or inconsistent with it")  # fmt: skip
    v.add_argument(
        "--anchor-file",
        metavar="FILE",
        type=Path,
        help="a copy of the file anchor: its checkpoints are checked like pins",
    )
    v.add_argument("--json", action="store_true", help="print a machine-readable report")
    v.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (remote)")

    p = lsub.add_parser("prove", help="write a proof bundle (C2SP tlog-proof@v1) for an event")
    p.add_argument("event_id", nargs="?", help="the event ID")
    p.add_argument("--record", type=int, metavar="INDEX", help="prove the leaf at INDEX instead")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--config", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="the proof file to write")

    c = lsub.add_parser("check-proof", help="verify a proof bundle offline")
    c.add_argument("file", type=Path)
    c.add_argument("--key", metavar="VKEY", action="append", default=[],
                   help="the log's verifier key (default: the keys the bundle carries, which "
                   "proves only that the bundle is self-consistent)")  # fmt: skip
    c.add_argument(
        "--witness-key",
        metavar="VKEY",
        action="append",
        default=[],
        help="a witness key whose cosignature must be on the checkpoint",
    )
    c.add_argument("--json", action="store_true")

    va = lsub.add_parser(
        "verify-audit",
        help="verify an audit trail (JSON) offline: its records are every action of its leaf "
        "range, bound to the log's signed checkpoint",
    )
    va.add_argument("file", type=Path, nargs="+",
                    help="the trail (JSON); several: the pages of one trail, in order")  # fmt: skip
    va.add_argument("--key", metavar="VKEY", action="append", default=[],
                    help="the log's verifier key (default: the keys the trail carries, which "
                    "only shows it is self-consistent)")  # fmt: skip
    va.add_argument("--previous-checkpoint", type=Path, metavar="FILE",
                    help="the signed checkpoint the previous audit saw (its proof.checkpoint): "
                    "the trail must prove the log grew from it")  # fmt: skip
    va.add_argument("--json", action="store_true")

    s = lsub.add_parser("status", help="the ledger's size, last checkpoint, witnesses, anchors")
    s.add_argument("--data-dir", type=Path, default=None)
    s.add_argument("--config", type=Path)
    s.add_argument("--json", action="store_true")


def _usage(message: str) -> int:
    print(f"bastion ledger: {message}", file=sys.stderr)
    return EXIT_USAGE


def _config(args: argparse.Namespace) -> Config:
    """The configuration of the data directory (its bastion.toml unless --config)."""
    data_dir = args.data_dir if args.data_dir is not None else Config().data_dir
    if args.config is not None:
        config = load_config(args.config)
        return config.with_overrides(data_dir=data_dir) if args.data_dir is not None else config
    default_path = data_dir / "bastion.toml"
    config = load_config(default_path) if default_path.exists() else Config()
    return config.with_overrides(data_dir=data_dir)


def _database_key(config: Config) -> bytes | None:
    """The database key when it is encrypted at rest; UsageError when it cannot be read."""
    from bastion.ledger.verify import UsageError

    try:
        return config.database_key
    except ConfigError as e:
        raise UsageError(f"configuration error: {e}") from None


def _local_config(args: argparse.Namespace) -> Config:
    """The config for a command on a data directory; UsageError when there is none."""
    from bastion.ledger.verify import UsageError

    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UsageError(f"no data directory at {args.data_dir}")
    try:
        config = _config(args)
    except ConfigError as e:
        raise UsageError(f"configuration error: {e}") from None
    if not config.data_dir.is_dir():
        raise UsageError(f"no data directory at {config.data_dir}")
    if not config.database_path.is_file():
        raise UsageError(f"no database at {config.database_path}")
    return config


def run_ledger(args: argparse.Namespace) -> int:
    """Run ``bastion ledger …``; returns the exit code."""
    from bastion.ledger.verify import UsageError

    try:
        if args.ledger_command == "verify":
            if args.remote:
                return _verify_remote(args)
            return _verify_local(args)
        if args.ledger_command == "prove":
            return _prove(args)
        if args.ledger_command == "check-proof":
            return _check_proof(args)
        if args.ledger_command == "verify-audit":
            return _verify_audit(args)
        return _status(args)
    except UsageError as e:
        return _usage(str(e))


# -- verify -----------------------------------------------------------------------------------


def _progress_wanted(args: argparse.Namespace) -> bool:
    return not args.json and sys.stderr.isatty()


def _read_pins(paths: list[Path]) -> list[tuple[str, bytes]]:
    from bastion.ledger.verify import UsageError, parse_pin

    pins = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read the pin {path}: {e.strerror or e}") from None
        parse_pin(str(path), data)
        pins.append((str(path), data))
    return pins


def _verify_local(args: argparse.Namespace) -> int:
    from bastion.ledger.verify import LocalOptions, UsageError, render_text, verify_local

    if args.data_dir is None and args.config is None:
        raise UsageError("give --data-dir DIR (or --remote URL)")
    if args.key or args.witness_key or args.access_token:
        raise UsageError("--key, --witness-key and --access-token go with --remote")
    config = _local_config(args)
    pins = _read_pins(args.checkpoint_pin)
    if args.anchor_file is not None and not args.anchor_file.is_file():
        raise UsageError(f"no anchor file at {args.anchor_file}")
    opts = LocalOptions(
        data_dir=config.data_dir, database=config.database_path, server_name=config.server_name,
        signing_key_path=config.signing_key_path, pins=pins, anchor_file=args.anchor_file,
        progress=_progress_wanted(args), witnesses=_configured_witnesses(config),
        database_key=_database_key(config),
    )  # fmt: skip
    report = verify_local(opts)
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(), indent=1) + "\n")
    else:
        render_text(report, print)
    return EXIT_OK if report.ok else EXIT_FINDINGS


def _configured_witnesses(config: Config) -> list[Any]:
    from bastion.ledger.note import parse_vkey

    out = []
    for w in config.ledger_witnesses:
        try:
            out.append(parse_vkey(w["vkey"]))
        except (KeyError, TypeError, ValueError):
            continue  # the config's own check refuses these at load
    return out


def _verify_remote(args: argparse.Namespace) -> int:
    import asyncio

    from bastion.ledger.remote_verify import RemoteOptions, verify_remote
    from bastion.ledger.verify import UsageError, render_text

    if args.data_dir is not None or args.anchor_file is not None:
        raise UsageError("--data-dir and --anchor-file are for a local verify, not --remote")
    if not args.remote.startswith(("http://", "https://")):
        raise UsageError("--remote must be an http(s) URL")
    if not args.key and not args.checkpoint_pin:
        raise UsageError("--remote needs the log's key (--key VKEY) or a --checkpoint-pin")
    pins = _read_pins(args.checkpoint_pin)
    opts = RemoteOptions(
        url=args.remote.rstrip("/"), keys=list(args.key), witness_keys=list(args.witness_key),
        pins=pins, access_token=args.access_token, timeout=args.timeout,
        progress=_progress_wanted(args),
    )  # fmt: skip
    report = asyncio.run(verify_remote(opts))
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(), indent=1) + "\n")
    else:
        render_text(report, print)
    return EXIT_OK if report.ok else EXIT_FINDINGS


# -- prove and check-proof ----------------------------------------------------------------------


def _prove(args: argparse.Namespace) -> int:
    from bastion.ledger.verify import ProveError, UsageError, make_proof

    if (args.event_id is None) == (args.record is None):
        raise UsageError("give an EVENT_ID or --record INDEX (one of them)")
    if args.record is not None and args.record < 0:
        raise UsageError("--record is a leaf index (0 or more)")
    config = _local_config(args)
    try:
        bundle = make_proof(
            database=config.database_path, data_dir=config.data_dir,
            signing_key_path=config.signing_key_path, server_name=config.server_name,
            event_id=args.event_id, index=args.record, database_key=_database_key(config),
        )  # fmt: skip
    except ProveError as e:
        print(f"bastion ledger: {e}", file=sys.stderr)
        return EXIT_FINDINGS
    try:
        args.output.write_bytes(bundle)
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e.strerror or e}") from None
    print(f"wrote {args.output}")
    return EXIT_OK


def _check_proof(args: argparse.Namespace) -> int:
    from bastion.ledger.verify import UsageError, check_proof

    try:
        data = args.file.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {args.file}: {e.strerror or e}") from None
    return _report(check_proof(data, keys=args.key, witness_keys=args.witness_key), args.json)


def _report(result: Any, as_json: bool) -> int:
    """A check's result (``as_json()``, ``lines()``, ``ok``) on standard output; the exit
    code."""
    if as_json:
        sys.stdout.write(json.dumps(result.as_json(), indent=1) + "\n")
    else:
        for line in result.lines():
            print(line)
    return EXIT_OK if result.ok else EXIT_FINDINGS


def _verify_audit(args: argparse.Namespace) -> int:
    from bastion.ledger.audit_trail import verify_pages
    from bastion.ledger.note import NoteError, parse_vkey
    from bastion.ledger.verify import UsageError

    name = ""
    try:
        docs = []
        for path in args.file:
            name = str(path)
            docs.append(orjson.loads(path.read_bytes()))
        previous = (args.previous_checkpoint.read_bytes()
                    if args.previous_checkpoint is not None else None)  # fmt: skip
    except OSError as e:
        raise UsageError(f"cannot read {e.filename}: {e.strerror or e}") from None
    except orjson.JSONDecodeError:
        raise UsageError(f"{name} is not JSON") from None
    if previous is not None and previous.lstrip().startswith(b"{"):
        try:  # a previous trail: its checkpoint
            previous = orjson.loads(previous)["proof"]["checkpoint"].encode()
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise UsageError("--previous-checkpoint is neither a checkpoint nor a trail") from None
    keys, notes = [], []
    values = list(args.key)
    if not values:
        carried = docs[0].get("log_keys") if isinstance(docs[0], dict) else None
        values = [v for v in carried if isinstance(v, str)] if isinstance(carried, list) else []
        notes.append("no --key given: the checkpoint's signature was checked with the keys the "
                     "trail itself carries (this shows the trail is consistent, not that the "
                     "log is the one you trust)")  # fmt: skip
    for v in values:
        try:
            keys.append(parse_vkey(v))
        except (NoteError, ValueError) as e:
            if args.key:
                raise UsageError(f"bad --key {v!r}: {e}") from None
    result = verify_pages(docs, keys, previous)
    result.notes[:0] = notes
    return _report(result, args.json)


# -- status -------------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from bastion.ledger.verify import UsageError, checkpoint_origin
    from bastion.storage.sqlite.ledger_audit import AuditReadError, open_readonly_store

    config = _local_config(args)
    try:
        store = open_readonly_store(config.database_path, _database_key(config))
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    try:
        if "ledger_entries" not in store.audit_tables():
            raise UsageError(f"{config.database_path} has no ledger (schema before version 4)")
        status = ledger_status(store, config, checkpoint_origin(config.server_name))
    except AuditReadError as e:
        print(f"bastion ledger: cannot read the ledger: {e}", file=sys.stderr)
        return EXIT_FINDINGS
    finally:
        store.close()
    if args.json:
        sys.stdout.write(json.dumps(status, indent=1) + "\n")
        return EXIT_OK
    cp = status["checkpoint"]
    print(f"origin: {status['origin']}")
    for vkey in status["vkeys"]:
        print(f"log key: {vkey}")
    print(f"size: {status['size']} leaves (integrated: {status['integrated_size']})")
    if cp is None:
        print("last checkpoint: none")
    else:
        print(f"last checkpoint: size {cp['size']}, {cp['age_s']:.1f} s ago, root {cp['root']}")
    halt = status["halted"]
    print("halted: " + (f"yes, at leaf {halt['leaf']}: {halt['reason']}" if halt else "no"))
    for w in status["witnesses"]:
        cos = "cosigned the last checkpoint" if w["cosigned_last"] else "no cosignature on it"
        print(f"witness {w['name']}: knows size {w['size']}, {cos}, last cosigned size "
              f"{w['last_cosigned_size']}")  # fmt: skip
    for a in status["anchors"]:
        print(f"anchor {a['anchor']}: last receipt for size {a['size']}, {a['age_s']:.1f} s ago")
    return EXIT_OK


def ledger_status(store: Any, config: Config, origin: str) -> dict[str, Any]:
    """The status of the ledger in ``store`` (read-only)."""
    from bastion.ledger.note import format_vkey
    from bastion.ledger.records import ACTION_LEDGER_CHECKPOINT_HALT
    from bastion.ledger.verify import read_pq_verifier, read_signing_public_key

    now = int(time.time() * 1000)
    size = store.ledger_size()
    state = store.ledger_tree_state()
    cp = store.ledger_latest_checkpoint()
    vkeys = []
    current = read_signing_public_key(config.signing_key_path)
    if current is not None:
        vkeys.append(format_vkey(origin, 0x01, current[1]))
    pq = read_pq_verifier(config.data_dir / "ledger-mldsa44.key", origin)
    if pq is not None:
        vkeys.append(_vkey_of(pq))
    halt = None
    latest_halt = store.audit_latest_action(ACTION_LEDGER_CHECKPOINT_HALT)
    if latest_halt is not None:
        idx, entry = latest_halt
        rec = orjson.loads(entry)
        if cp is None or rec.get("ts", 0) >= cp.ts:
            halt = {"leaf": idx, "ts": rec.get("ts"), "reason": rec.get("reason")}
    cosigners = {w for w, _, _ in store.audit_cosignatures(cp.size)} if cp is not None else set()
    last = {w: (size, ts) for w, size, ts in store.audit_last_cosignatures()}
    sizes = dict(store.audit_witness_sizes())
    witnesses = [
        {
            "name": name, "size": sizes.get(name), "cosigned_last": name in cosigners,
            "last_cosigned_size": last[name][0] if name in last else None,
            "last_cosigned_ts": last[name][1] if name in last else None,
        }
        for name in sorted(set(sizes) | set(last))
    ]  # fmt: skip
    anchors: dict[str, dict[str, Any]] = {}
    for row in store.ledger_anchors(limit=1000):
        if row.anchor not in anchors:
            anchors[row.anchor] = {
                "anchor": row.anchor, "size": row.size, "ts": row.ts,
                "age_s": max(0, now - row.ts) / 1000,
                "root": base64.b64encode(row.root).decode(),
            }  # fmt: skip
    return {
        "origin": origin,
        "vkeys": vkeys,
        "size": size,
        "integrated_size": state[0] if state is not None else 0,
        "checkpoint": None if cp is None else {
            "size": cp.size, "ts": cp.ts, "age_s": max(0, now - cp.ts) / 1000,
            "root": base64.b64encode(cp.root).decode(),
        },
        "halted": halt,
        "witnesses": witnesses,
        "anchors": list(anchors.values()),
    }  # fmt: skip


def _vkey_of(verifier: Any) -> str:
    from bastion.ledger.note import format_vkey

    return format_vkey(verifier.name, verifier.sig_type, verifier.public_key)
