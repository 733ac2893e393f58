"""Anchors: the ledger's checkpoints published outside the server (issue 8, "Anchors").

An anchor takes a signed checkpoint note (C2SP tlog-checkpoint, opaque bytes here) with its tree
size and root, publishes it somewhere the server cannot quietly rewrite, and returns a receipt: a
JSON-able dict that the ledger stores and serves and that an auditor checks offline
(:func:`verify_receipt`) or against the outside record (:func:`read_file_anchor`,
:func:`verify_ethereum_receipt`). A database rolled back to an older copy is then caught by a
receipt for a newer checkpoint than the database holds.

Two anchors:

* :class:`FileAnchor` (the default): an append-only file, one canonical JSON line per checkpoint,
  each line carrying the SHA-256 of the line before it (a hash chain), so an edited, deleted or
  reordered line is detected; the operator ships the file elsewhere (another host, WORM storage).
* :class:`EthereumAnchor`: a transaction whose data is ``b"BSTN" + b"\\x01"`` followed by the
  SHA-256 of the signed checkpoint note, through web3.py, an optional extra
  (``pip install 'bastion[ethereum]'``) imported only when this anchor is configured.

Anchors read no clock: the file anchor's timestamp comes from a clock the caller injects.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fcntl
import hashlib
import importlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson

from bastion.core.canonical_json import canonical_json

if TYPE_CHECKING:
    from web3 import Web3
    from web3.types import Wei

log = logging.getLogger(__name__)

#: The version of the file anchor's line format and of both receipt formats.
ANCHOR_FORMAT_VERSION = 1
#: What the Ethereum anchor's transaction data starts with: a magic and a version byte, then the
#: 32-byte SHA-256 of the signed checkpoint note.
ETHEREUM_DATA_PREFIX = b"BSTN" + bytes([ANCHOR_FORMAT_VERSION])
#: How far back from the end of the file the writer looks for the last complete line at first.
_TAIL_CHUNK = 64 * 1024


class AnchorConfigError(Exception):
    """An anchor cannot be configured (a missing optional dependency, a bad setting)."""


class Anchor(Protocol):
    """Publishes checkpoints outside the server; ``publish`` returns the receipt."""

    name: str

    async def publish(self, checkpoint: bytes, size: int, root: bytes) -> dict[str, Any]: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def note_sha256(checkpoint: bytes) -> bytes:
    """The SHA-256 of a signed checkpoint note: what every anchor commits to."""
    return hashlib.sha256(checkpoint).digest()


def _note_head(checkpoint: bytes) -> tuple[str, int, bytes]:
    """The origin, size and root that open a checkpoint note (C2SP tlog-checkpoint: the
    first three lines of the note's text); ValueError when the note does not start so."""
    lines = checkpoint.split(b"\n", 3)
    if len(lines) < 4 or not lines[0]:
        raise ValueError("the checkpoint note does not start with origin, size and root lines")
    try:
        origin = lines[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the checkpoint note's origin line is not UTF-8") from None
    size_text = lines[1].decode("ascii", "replace")
    if not size_text.isdigit() or (size_text.startswith("0") and size_text != "0"):
        raise ValueError("the checkpoint note's size line is not a decimal number")
    root = _unb64(lines[2].decode("ascii", "replace"))
    if root is None or len(root) != 32:
        raise ValueError("the checkpoint note's root line is not a base64 SHA-256 hash")
    return origin, int(size_text), root


def _check_note(checkpoint: bytes, size: int, root: bytes) -> str:
    """The note's origin, once its size and root are checked against the caller's."""
    origin, note_size, note_root = _note_head(checkpoint)
    if note_size != size or note_root != root:
        raise ValueError("the checkpoint note is for another size or root than the one given")
    return origin


def _matches_note(checkpoint: bytes, size: object, root: object) -> bool:
    try:
        _, note_size, note_root = _note_head(checkpoint)
    except ValueError:
        return False
    return size == note_size and root == _b64(note_root)


# --- The file anchor -----------------------------------------------------------------------------


class TornLineError(ValueError):
    """The file ends with a partial line (a write torn by a crash). ``entries`` are the receipts
    of the complete lines before it; ``line`` is the torn line's number (1-based)."""

    def __init__(self, line: int, entries: list[dict[str, Any]]) -> None:
        super().__init__(f"line {line}: partial last line (a torn write), not a complete record")
        self.line = line
        self.entries = entries


@dataclass(frozen=True)
class _Tail:
    """What the writer needs from the end of the file."""

    lines: int  # physical lines (complete ones and recovered fragments) before the tail
    last_n: int  # the number of the last complete record's line (0 for none)
    last_hash: bytes | None  # SHA-256 of the last complete line
    end: int  # file size
    torn: bytes  # a partial last line (no newline yet), or b""


def _line_hash(line: bytes) -> bytes:
    """A line's hash: SHA-256 of its bytes without the newline."""
    return hashlib.sha256(line).digest()


def _receipt_for_line(line: bytes, record: Mapping[str, Any], offset: int) -> dict[str, Any]:
    return {
        "anchor": "file",
        "v": ANCHOR_FORMAT_VERSION,
        "line": record["n"],
        "offset": offset,
        "line_sha256": _b64(_line_hash(line)),
        "entry": line.decode("utf-8"),
        "size": record["size"],
        "root": record["root"],
        "note_sha256": record["note_sha256"],
        "ts": record["ts"],
    }


def _parse_line(line: bytes) -> dict[str, Any] | None:
    """A record line, or None when it is not one (checked field by field, canonical form)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    fields = {"v", "n", "origin", "size", "root", "note_sha256", "note", "ts", "prev"}
    if not (set(value) == fields or set(value) == fields | {"torn"}):
        return None
    try:
        if canonical_json(value) != line:
            return None
    except Exception:
        return None
    ints = (value["v"], value["n"], value["size"], value["ts"])
    if any(type(i) is not int or i < 0 for i in ints) or value["v"] != ANCHOR_FORMAT_VERSION:
        return None
    if not isinstance(value["origin"], str):
        return None
    root = _unb64(value["root"])
    digest = _unb64(value["note_sha256"])
    note = _unb64(value["note"])
    if root is None or len(root) != 32 or digest is None or note is None:
        return None
    if note_sha256(note) != digest:
        return None
    if value["prev"] is not None:
        prev = _unb64(value["prev"])
        if prev is None or len(prev) != 32:
            return None
    if "torn" in value:
        torn = value["torn"]
        if not isinstance(torn, dict) or set(torn) != {"line", "sha256"}:
            return None
        if type(torn["line"]) is not int or _unb64(torn["sha256"]) is None:
            return None
    return value


def read_file_anchor(path: Path) -> list[dict[str, Any]]:
    """Read and check a file anchor; returns the receipt of every record, in order.

    Checks each line's form, that line N says it is line N, and the hash chain: each record's
    ``prev`` is the SHA-256 of the record line before it (``null`` only on line 1), so an edited,
    deleted, inserted or reordered line, or a file cut at the front, is named (ValueError with the
    line number). A fragment left by a torn write is accepted only where the writer recovered
    from it: the next record names it (``torn``: its line and hash) and chains past it. A partial
    last line raises :class:`TornLineError` (a ValueError) carrying the complete records before
    it. Cutting whole lines off the end cannot be seen in the file alone: a stored receipt for a
    later line shows it (compare receipts with this list).
    """
    data = Path(path).read_bytes()
    entries: list[dict[str, Any]] = []
    pieces = data.split(b"\n")
    tail = pieces.pop()  # b"" when the file ends with a newline
    offset = 0
    prev_hash: bytes | None = None
    pending: tuple[int, bytes] | None = None  # an unparseable line awaiting its recovery record
    for number, line in enumerate(pieces, start=1):
        line_offset = offset
        offset += len(line) + 1
        record = _parse_line(line)
        if record is None:
            if pending is not None:
                raise ValueError(f"line {pending[0]}: not a valid anchor record")
            pending = (number, line)
            continue
        if record["n"] != number:
            raise ValueError(f"line {number}: the record says it is line {record['n']}")
        if pending is not None:
            torn = record.get("torn")
            if torn is None or torn["line"] != pending[0]:
                raise ValueError(f"line {pending[0]}: not a valid anchor record")
            if _unb64(torn["sha256"]) != _line_hash(pending[1]):
                raise ValueError(
                    f"line {pending[0]}: the fragment differs from what line {number} recorded"
                )
            pending = None
        elif "torn" in record:
            raise ValueError(
                f"line {number}: names a torn line {record['torn']['line']} that is not there"
            )
        expected = None if prev_hash is None else _b64(prev_hash)
        if record["prev"] != expected:
            raise ValueError(
                f"line {number}: the hash chain is broken (the line before it was changed, "
                "removed or inserted)"
            )
        prev_hash = _line_hash(line)
        entries.append(_receipt_for_line(line, record, line_offset))
    if pending is not None:
        raise ValueError(f"line {pending[0]}: not a valid anchor record")
    if tail:
        raise TornLineError(len(pieces) + 1, entries)
    return entries


def _read_tail(fd: int) -> _Tail:
    """The last complete record of the file open on ``fd``, without reading the whole file."""
    end = os.fstat(fd).st_size
    if end == 0:
        return _Tail(0, 0, None, 0, b"")
    chunk = _TAIL_CHUNK
    while True:
        start = max(0, end - chunk)
        data = os.pread(fd, end - start, start)
        last_nl = data.rfind(b"\n")
        if last_nl < 0 and start > 0:
            chunk *= 2
            continue
        torn = data[last_nl + 1 :]
        body = data[: last_nl + 1] if last_nl >= 0 else b""
        prev_nl = body.rfind(b"\n", 0, len(body) - 1) if body else -1
        if body and prev_nl < 0 and start > 0:
            chunk *= 2
            continue
        if not body:
            return _Tail(0, 0, None, end, torn)
        line = body[prev_nl + 1 : -1]
        record = _parse_line(line)
        if record is None:
            # The line before a torn tail is a fragment the writer never recovered from, or the
            # file was damaged: never chain onto what cannot be checked.
            raise ValueError(
                "the file anchor's last complete line is not a valid record; "
                "check the file with read_file_anchor"
            )
        return _Tail(record["n"], record["n"], _line_hash(line), end, torn)


class FileAnchor:
    """An append-only file, one canonical JSON line per anchored checkpoint.

    A line: ``{"v": 1, "n": <its line number>, "origin", "size", "root" (base64),
    "note_sha256" (base64), "note" (the signed note, base64), "ts" (ms, from the injected clock),
    "prev" (base64 SHA-256 of the previous line, null on line 1)}``. Written with ``O_APPEND``
    and fsync, under a thread lock (writers in this process) and ``flock`` (other processes).
    After a crash that tore the last line, the next write starts a new line and records the
    fragment (``"torn": {"line", "sha256"}``), so the chain still covers every byte.
    """

    name = "file"

    def __init__(self, path: Path, *, clock: Callable[[], int]) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()

    async def publish(self, checkpoint: bytes, size: int, root: bytes) -> dict[str, Any]:
        """Append the checkpoint's line, durably, and return its receipt. File I/O and fsync
        run in a thread so the event loop never waits on the disk."""
        return await asyncio.to_thread(self.append, checkpoint, size, root, self._clock())

    def append(self, checkpoint: bytes, size: int, root: bytes, ts: int) -> dict[str, Any]:
        """The synchronous append behind :meth:`publish`."""
        if ts < 0:
            raise ValueError("a timestamp is non-negative")
        origin = _check_note(checkpoint, size, root)
        with self._lock:
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                tail = _read_tail(fd)
                prefix = b""
                record: dict[str, Any] = {
                    "v": ANCHOR_FORMAT_VERSION,
                    "origin": origin,
                    "size": size,
                    "root": _b64(root),
                    "note_sha256": _b64(note_sha256(checkpoint)),
                    "note": _b64(checkpoint),
                    "ts": ts,
                    "prev": None if tail.last_hash is None else _b64(tail.last_hash),
                }
                number = tail.lines + 1
                if tail.torn:
                    log.warning(
                        "file anchor %s: line %d is a partial line left by a torn write; "
                        "recording it and starting a new line",
                        self.path,
                        number,
                    )
                    prefix = b"\n"
                    record["torn"] = {"line": number, "sha256": _b64(_line_hash(tail.torn))}
                    number += 1
                record["n"] = number
                line = canonical_json(record)
                offset = tail.end + len(prefix)
                _write_all(fd, prefix + line + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.path.parent)
        return _receipt_for_line(line, record, offset)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable too."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _verify_file_receipt(receipt: Mapping[str, Any], checkpoint: bytes) -> bool:
    entry = receipt.get("entry")
    if not isinstance(entry, str):
        return False
    line = entry.encode("utf-8")
    record = _parse_line(line)
    if record is None:
        return False
    digest = _b64(note_sha256(checkpoint))
    return (
        _matches_note(checkpoint, record["size"], record["root"])
        and _unb64(receipt.get("line_sha256")) == _line_hash(line)
        and _unb64(record["note"]) == checkpoint
        and record["note_sha256"] == digest
        and receipt.get("note_sha256") == digest
        and receipt.get("line") == record["n"]
        and receipt.get("size") == record["size"]
        and receipt.get("root") == record["root"]
        and receipt.get("ts") == record["ts"]
        and type(receipt.get("offset")) is int
    )


# --- The Ethereum anchor -------------------------------------------------------------------------


def load_web3() -> ModuleType:
    """Import web3.py for the Ethereum anchor, or fail with what to install (at configuration
    time; anchors.py itself never imports it)."""
    try:
        return importlib.import_module("web3")
    except ImportError as e:
        raise AnchorConfigError(
            "the Ethereum anchor needs web3.py: install the extra with "
            "pip install 'bastion[ethereum]'"
        ) from e


def ethereum_data(checkpoint: bytes) -> bytes:
    """The transaction data that anchors ``checkpoint``."""
    return ETHEREUM_DATA_PREFIX + note_sha256(checkpoint)


def _hex(value: Any) -> str:
    """A 0x-prefixed lowercase hex string of bytes-like or hex-string web3 values."""
    if isinstance(value, str):
        text = value.lower()
        return text if text.startswith("0x") else "0x" + text
    return "0x" + bytes(value).hex()


def _unhex(value: object) -> bytes | None:
    if not isinstance(value, str) or not value.startswith("0x"):
        return None
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        return None


class EthereumAnchor:
    """Anchors each checkpoint in an Ethereum transaction from ``account`` (an address the node
    signs for, or one whose key a web3 signing middleware holds: see
    :func:`make_ethereum_anchor`) to ``to`` (default: itself), value 0, data
    :func:`ethereum_data`. Waits for the transaction's receipt; the anchor receipt records the
    chain id, transaction hash, block number and hash, sender and data.

    web3 calls block, so each runs in a thread, bounded by ``timeout`` seconds.
    """

    name = "ethereum"

    def __init__(
        self,
        web3: Web3,
        account: str,
        *,
        to: str | None = None,
        timeout: float = 120.0,
        poll_latency: float = 0.1,
    ) -> None:
        self.web3 = web3
        self.account = web3.to_checksum_address(account)
        self.to = web3.to_checksum_address(to) if to is not None else self.account
        self.timeout = timeout
        self.poll_latency = poll_latency

    async def publish(self, checkpoint: bytes, size: int, root: bytes) -> dict[str, Any]:
        """Send the anchoring transaction and wait for it to be mined (in a thread, with a
        timeout: TimeoutError past it; the transaction may still be mined later)."""
        return await asyncio.wait_for(
            asyncio.to_thread(self.send, checkpoint, size, root), timeout=self.timeout
        )

    def send(self, checkpoint: bytes, size: int, root: bytes) -> dict[str, Any]:
        """The blocking send behind :meth:`publish`."""
        _check_note(checkpoint, size, root)
        data = ethereum_data(checkpoint)
        eth = self.web3.eth
        chain_id = eth.chain_id
        tx_hash = eth.send_transaction(
            {"from": self.account, "to": self.to, "value": cast("Wei", 0), "data": data}
        )
        mined = eth.wait_for_transaction_receipt(
            tx_hash, timeout=self.timeout, poll_latency=self.poll_latency
        )
        if mined["status"] != 1:
            raise RuntimeError(f"the anchoring transaction {_hex(tx_hash)} failed")
        return {
            "anchor": "ethereum",
            "v": ANCHOR_FORMAT_VERSION,
            "chain_id": chain_id,
            "tx_hash": _hex(tx_hash),
            "block_number": mined["blockNumber"],
            "block_hash": _hex(mined["blockHash"]),
            "from": self.account,
            "to": self.to,
            "data": _hex(data),
            "size": size,
            "root": _b64(root),
            "note_sha256": _b64(note_sha256(checkpoint)),
        }


def make_ethereum_anchor(
    rpc_url: str,
    *,
    account: str | None = None,
    private_key: str | None = None,
    to: str | None = None,
    timeout: float = 120.0,
) -> EthereumAnchor:
    """Configure the Ethereum anchor from settings: a JSON-RPC endpoint and either an account the
    node signs for or a private key (hex) that web3 signs with locally. Raises
    :class:`AnchorConfigError` when web3 is missing or the settings do not fit."""
    web3_mod = load_web3()
    if (account is None) == (private_key is None):
        raise AnchorConfigError("the Ethereum anchor needs exactly one of account, private_key")
    w3 = web3_mod.Web3(web3_mod.Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    if private_key is not None:
        middleware = importlib.import_module("web3.middleware")
        eth_account = importlib.import_module("eth_account")
        try:
            local = eth_account.Account.from_key(private_key)
        except (ValueError, TypeError) as e:
            raise AnchorConfigError(f"the Ethereum anchor's private key is invalid: {e}") from e
        w3.middleware_onion.inject(middleware.SignAndSendRawMiddlewareBuilder.build(local), layer=0)
        account = local.address
    assert account is not None
    if not w3.is_address(account):
        raise AnchorConfigError(f"not an Ethereum address: {account!r}")
    return EthereumAnchor(w3, account, to=to, timeout=timeout)


def _verify_ethereum_offline(receipt: Mapping[str, Any], checkpoint: bytes) -> bool:
    data = _unhex(receipt.get("data"))
    return (
        _matches_note(checkpoint, receipt.get("size"), receipt.get("root"))
        and data is not None
        and data == ethereum_data(checkpoint)
        and receipt.get("note_sha256") == _b64(note_sha256(checkpoint))
        and _unhex(receipt.get("tx_hash")) is not None
        and _unhex(receipt.get("block_hash")) is not None
        and type(receipt.get("block_number")) is int
        and type(receipt.get("chain_id")) is int
    )


def verify_ethereum_receipt(
    web3: Web3, receipt: Mapping[str, Any], checkpoint: bytes, *, min_confirmations: int = 0
) -> bool:
    """Check an Ethereum anchor receipt against a chain (blocking: the caller runs it in a
    thread when on an event loop): the offline checks, then that the chain is the recorded one,
    the transaction is there with the recorded sender and data, succeeded, and sits in the
    recorded block, which is on the chain's canonical history, with ``min_confirmations`` blocks
    after it. False on any mismatch or a transaction the chain does not know; connection errors
    propagate (nothing can be said then)."""
    if not _verify_ethereum_offline(receipt, checkpoint):
        return False
    exceptions = importlib.import_module("web3.exceptions")
    eth = web3.eth
    if eth.chain_id != receipt["chain_id"]:
        return False
    try:
        tx = eth.get_transaction(receipt["tx_hash"])
        mined = eth.get_transaction_receipt(receipt["tx_hash"])
    except (exceptions.TransactionNotFound, exceptions.BlockNotFound):
        return False
    if tx["blockNumber"] is None or mined["status"] != 1:
        return False
    if bytes(tx["input"]) != _unhex(receipt["data"]):
        return False
    if str(tx["from"]).lower() != str(receipt.get("from", "")).lower():
        return False
    if tx["blockNumber"] != receipt["block_number"]:
        return False
    if _hex(tx["blockHash"]) != receipt["block_hash"].lower():
        return False
    try:
        block = eth.get_block(receipt["block_number"])
    except exceptions.BlockNotFound:
        return False
    if _hex(block["hash"]) != receipt["block_hash"].lower():
        return False
    return bool(eth.block_number - receipt["block_number"] >= min_confirmations)


# --- Offline checks ------------------------------------------------------------------------------


def verify_receipt(receipt: Mapping[str, Any], checkpoint: bytes) -> bool:
    """The checks of an anchor receipt that need no outside record: a file receipt's line
    matches its hash and carries exactly this checkpoint note; an Ethereum receipt's data is the
    anchoring data of this note; and in both the size and root are the note's own (its second
    and third lines). Never raises on a malformed receipt (False)."""
    if not isinstance(receipt, Mapping) or receipt.get("v") != ANCHOR_FORMAT_VERSION:
        return False
    kind = receipt.get("anchor")
    if kind == "file":
        return _verify_file_receipt(receipt, checkpoint)
    if kind == "ethereum":
        return _verify_ethereum_offline(receipt, checkpoint)
    return False
