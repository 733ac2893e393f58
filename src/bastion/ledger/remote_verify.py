"""``bastion ledger verify --remote URL``: check a server's published log from the outside.

Without any access to the database, from the log's public endpoints under
``/_bastion/ledger/v1/`` (tlog-tiles):

1. the checkpoint (tlog-checkpoint signed note) and its signature by the log's key: ``--key``
   vkeys, or else the key of a ``--checkpoint-pin`` (a key the ``keys`` endpoint lists is used
   only when it also verifies the pin: that endpoint is informational);
2. every hash tile of the checkpoint's tree (``tiles_for_size``): each of the exact size, each
   higher tile agreeing with the tiles below it, the whole hashing to the signed root;
3. with an admin's access token, every entry bundle: each entry's leaf hash against the
   level-0 tile;
4. each ``--witness-key``'s cosignature (tlog-cosignature) on the checkpoint;
5. each pinned checkpoint: the log is not smaller than it (*rolled back*) and consistent with it
   (RFC 9162 2.1.4; else *forked*);
6. the anchors' receipts: offline checks of each receipt against its checkpoint note (file
   anchor lines carry it), and each anchored root against the tree.

A hostile or broken server (huge, truncated or malformed answers, timeouts) yields findings,
never a crash: every answer is read with a size cap and a timeout.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable
from dataclasses import dataclass, field

import aiohttp
import orjson

from bastion.ledger.checkpoint import Checkpoint, parse_checkpoint
from bastion.ledger.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    leaf_hash,
    root,
    tree_root,
    verify_consistency,
)
from bastion.ledger.note import Note, NoteError, Verifier, format_note, parse_note, parse_vkey
from bastion.ledger.tiles import (
    TILE_WIDTH,
    TileNodeReader,
    decode_entry_bundle,
    entries_path,
    split_tile,
    tile_path,
    tiles_for_size,
)
from bastion.ledger.verify import (
    CHANGED,
    FORKED,
    INVALID,
    ROLLED_BACK,
    Finding,
    Progress,
    Report,
    UsageError,
    anchor_note,
    parse_pin,
    signature_problem,
)

PREFIX = "/_bastion/ledger/v1/"
#: Caps on what is read from the server.
MAX_CHECKPOINT_BYTES = 1 << 20
MAX_TILE_BYTES = TILE_WIDTH * 32
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + 0xFFFF)
MAX_JSON_BYTES = 16 << 20
#: Requests in flight at once.
CONCURRENCY = 8
#: The largest tree this tool fetches (2**32 leaves: 16 million tiles), and how many failed
#: requests end the fetching.
MAX_TREE_SIZE = 1 << 32
MAX_FAILURES = 20


@dataclass
class RemoteOptions:
    url: str
    keys: list[str] = field(default_factory=list)
    witness_keys: list[str] = field(default_factory=list)
    pins: list[tuple[str, bytes]] = field(default_factory=list)
    access_token: str | None = None
    timeout: float = 30.0
    progress: bool = False


class FetchError(Exception):
    """An answer that could not be had: a network error, a timeout, an error status, too big."""


class GaveUp(Exception):
    """A request not sent: enough of the others failed."""


class _Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session = session
        self.base = base
        self.token = token
        self.sem = asyncio.Semaphore(CONCURRENCY)

    async def get(
        self, path: str, cap: int, *, auth: bool = False, failed: list[str] | None = None
    ) -> bytes:
        """The body of a 200 answer to GET ``path``, at most ``cap`` bytes (FetchError
        otherwise); GaveUp, without a request, once ``failed`` holds MAX_FAILURES."""
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        async with self.sem:
            if failed is not None and len(failed) >= MAX_FAILURES:
                raise GaveUp(path)
            try:
                async with self.session.get(
                    self.base + PREFIX + path, headers=headers, allow_redirects=False
                ) as resp:
                    if resp.status != 200:
                        raise FetchError(f"GET {path}: HTTP {resp.status}")
                    if resp.content_length is not None and resp.content_length > cap:
                        raise FetchError(f"GET {path}: {resp.content_length} bytes, over {cap}")
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(65536):
                        body += chunk
                        if len(body) > cap:
                            raise FetchError(f"GET {path}: more than {cap} bytes")
                    return bytes(body)
            except (TimeoutError, aiohttp.ClientError, UnicodeError) as e:
                raise FetchError(f"GET {path}: {type(e).__name__}: {e}") from None


def _vkeys(values: list[str], what: str) -> list[Verifier]:
    out = []
    for v in values:
        try:
            out.append(parse_vkey(v))
        except (NoteError, ValueError) as e:
            raise UsageError(f"bad {what} {v!r}: {e}") from None
    return out


async def verify_remote(opts: RemoteOptions) -> Report:
    """Run the checks of the module docstring; :class:`UsageError` for bad keys or pins."""
    log_keys = _vkeys(opts.keys, "--key")
    witnesses = _vkeys(opts.witness_keys, "--witness-key")
    pins = [(name, *parse_pin(name, data)) for name, data in opts.pins]
    timeout = aiohttp.ClientTimeout(total=opts.timeout, sock_connect=min(opts.timeout, 10))
    report = Report()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = _Client(session, opts.url, opts.access_token)
        await _RemoteVerifier(client, opts, report, log_keys, witnesses, pins).run()
    return report


class _RemoteVerifier:
    def __init__(
        self, client: _Client, opts: RemoteOptions, report: Report, log_keys: list[Verifier],
        witnesses: list[Verifier], pins: list[tuple[str, Note, Checkpoint]],
    ) -> None:  # fmt: skip
        self.client = client
        self.opts = opts
        self.report = report
        self.log_keys = log_keys
        self.witnesses = witnesses
        self.pins = pins
        self.tiles: dict[tuple[int, int], bytes] = {}

    def add(self, kind: str, table: str, key: str | None, message: str,
            leaf: int | None = None) -> None:  # fmt: skip
        self.report.add(Finding(kind, table, key, message, leaf))

    async def run(self) -> None:
        try:
            data = await self.client.get("checkpoint", MAX_CHECKPOINT_BYTES)
        except FetchError as e:
            self.add(INVALID, "checkpoint", None, f"cannot fetch the checkpoint: {e}")
            return
        try:
            note = parse_note(data)
            cp = parse_checkpoint(note.text)
        except ValueError as e:
            self.add(INVALID, "checkpoint", None, f"the checkpoint is malformed: {e}")
            return
        self.report.stats.update({"origin": cp.origin, "size": cp.size,
                                  "root": base64.b64encode(cp.root).decode()})  # fmt: skip
        for name, _, pin_cp in self.pins:
            if pin_cp.origin != cp.origin:
                raise UsageError(f"{name}: a checkpoint of {pin_cp.origin!r}, not {cp.origin!r}")
        keys = [k for k in self.log_keys if k.name == cp.origin]
        if self.log_keys and not keys:
            self.add(INVALID, "checkpoint", str(cp.size),
                     f"the log's origin is {cp.origin!r}; no given key has that name")  # fmt: skip
            return
        if not keys:
            keys = await self._keys_from_pins(cp.origin)
            if not keys:
                self.add(INVALID, "checkpoint", str(cp.size),
                         "no key of the log verifies the pinned checkpoint")  # fmt: skip
                return
        problem = signature_problem(note, keys)
        if problem is not None:
            # Nothing the log serves is worth checking against a checkpoint it did not sign.
            self.add(INVALID, "checkpoint", str(cp.size), problem)
            return
        if cp.size > MAX_TREE_SIZE:
            self.add(INVALID, "checkpoint", str(cp.size),
                     f"a tree of {cp.size} leaves is more than this tool fetches "
                     f"({MAX_TREE_SIZE})")  # fmt: skip
            return
        for w in self.witnesses:
            if not any(w.verify(note.text, s) for s in note.signatures):
                self.add(
                    INVALID,
                    "cosignatures",
                    w.name,
                    f"no valid cosignature by witness {w.name} on checkpoint {cp.size}",
                )
        reader = await self._check_tiles(cp)
        if reader is None:
            return
        for name, pin_note, pin_cp in self.pins:
            pin_problem = signature_problem(pin_note, keys)
            if pin_problem is not None:
                self.add(INVALID, "pin", name, f"the pinned checkpoint: {pin_problem}")
            self._against(pin_cp, cp, reader, "pin", name, f"pinned checkpoint {pin_cp.size}")
        if self.opts.access_token:
            await self._check_entries(cp)
        await self._check_anchors(cp, note, keys, reader)

    async def _keys_from_pins(self, origin: str) -> list[Verifier]:
        """The keys the ``keys`` endpoint lists that verify every pin (the endpoint alone is
        not trusted: a pin kept from earlier vouches for the key)."""
        if not self.pins:
            return []
        try:
            body = orjson.loads(await self.client.get("keys", MAX_JSON_BYTES))
        except (FetchError, orjson.JSONDecodeError) as e:
            self.add(INVALID, "keys", None, f"cannot read the log's keys: {e}")
            return []
        listed = body.get("keys") if isinstance(body, dict) else None
        found: list[Verifier] = []
        for item in listed if isinstance(listed, list) else []:
            vkey = item.get("vkey") if isinstance(item, dict) else item
            if not isinstance(vkey, str):
                continue
            try:
                v = parse_vkey(vkey)
            except (NoteError, ValueError):
                continue
            if v.name != origin:
                continue
            if all(any(v.verify(n.text, s) for s in n.signatures) for _, n, _ in self.pins):
                found.append(v)
        return found

    async def _check_tiles(self, cp: Checkpoint) -> TileNodeReader | None:
        """Fetch every tile of the tree; check sizes, levels and the root. The reader over
        them, or None when the tree cannot be checked."""
        if cp.size == 0:
            if cp.root != EMPTY_ROOT:
                self.add(FORKED, "tiles", "0", "an empty tree with a non-empty root")
            return None
        wanted = tiles_for_size(cp.size)
        bar = Progress(self.opts.progress, len(wanted), "tiles")
        failed: list[str] = []

        async def one(level: int, index: int, width: int) -> None:
            path = tile_path(level, index, width if width < TILE_WIDTH else None)
            try:
                data = await self.client.get(path, MAX_TILE_BYTES, failed=failed)
            except FetchError as e:
                failed.append(str(e))
                return
            except GaveUp:
                return
            finally:
                bar.update(1)
            if len(data) != width * 32:
                self.add(INVALID, "tiles", path, f"{len(data)} bytes, a width-{width} tile is "
                         f"{width * 32}")  # fmt: skip
                failed.append(path)
                return
            self.tiles[(level, index)] = data

        await _gather([one(*t) for t in wanted])
        bar.close()
        self.report.stats["tiles"] = len(self.tiles)
        if failed:
            self.add(INVALID, "tiles", None, f"{len(failed)} tile(s) could not be had: "
                     + "; ".join(failed[:5]))  # fmt: skip
            return None
        # Each hash of a higher tile is the root of the full tile below it.
        for (level, index), data in sorted(self.tiles.items()):
            if level == 0:
                continue
            for j, h in enumerate(split_tile(data)):
                child = self.tiles.get((level - 1, index * TILE_WIDTH + j))
                if child is None or len(child) != MAX_TILE_BYTES or root(split_tile(child)) != h:
                    self.add(
                        FORKED,
                        "tiles",
                        f"{level}/{index}",
                        f"hash {j} does not match tile {level - 1}/{index * TILE_WIDTH + j}",
                    )
        reader = TileNodeReader(lambda lv, ix, w: self.tiles[(lv, ix)], size=cp.size)
        if tree_root(cp.size, reader) != cp.root:
            self.add(
                FORKED, "tiles", None, f"the tiles do not hash to the root of checkpoint {cp.size}"
            )
            return None
        return reader

    async def _check_entries(self, cp: Checkpoint) -> None:
        """Every entry bundle against the level-0 tiles (an admin's token)."""
        count = (cp.size + TILE_WIDTH - 1) // TILE_WIDTH
        bar = Progress(self.opts.progress, count, "entries")
        failed: list[str] = []
        checked = [0]

        async def one(n: int) -> None:
            width = min(TILE_WIDTH, cp.size - n * TILE_WIDTH)
            path = entries_path(n, width if width < TILE_WIDTH else None)
            try:
                data = await self.client.get(path, MAX_BUNDLE_BYTES, auth=True, failed=failed)
            except FetchError as e:
                failed.append(str(e))
                return
            except GaveUp:
                return
            finally:
                bar.update(1)
            try:
                entries = decode_entry_bundle(data)
            except ValueError as e:
                self.add(INVALID, "entries", path, f"a malformed entry bundle: {e}")
                return
            if len(entries) != width:
                self.add(INVALID, "entries", path, f"{len(entries)} entries, expected {width}")
                return
            hashes = split_tile(self.tiles[(0, n)])
            for j, entry in enumerate(entries):
                checked[0] += 1
                if leaf_hash(entry) != hashes[j]:
                    leaf = n * TILE_WIDTH + j
                    self.add(
                        CHANGED,
                        "entries",
                        str(leaf),
                        "the entry does not hash to the leaf in the tiles",
                        leaf,
                    )

        await _gather([one(n) for n in range(count)])
        bar.close()
        self.report.stats["entries_checked"] = checked[0]
        if failed:
            self.add(INVALID, "entries", None, f"{len(failed)} entry bundle(s) could not be "
                     "had: " + "; ".join(failed[:5]))  # fmt: skip

    def _against(self, old: Checkpoint, cp: Checkpoint, reader: TileNodeReader, table: str,
                 key: str, what: str) -> None:  # fmt: skip
        if old.size > cp.size:
            self.add(ROLLED_BACK, table, key,
                     f"the log's checkpoint has {cp.size} leaves, fewer than the {what}: "
                     "the log was rolled back")  # fmt: skip
            return
        if old.size == cp.size:
            ok = old.root == cp.root
        elif old.size == 0:
            ok = old.root == EMPTY_ROOT
        else:
            proof = consistency_proof(old.size, cp.size, reader)
            ok = verify_consistency(old.size, cp.size, old.root, cp.root, proof)
        if not ok:
            self.add(FORKED, table, key, f"the log is not consistent with the {what}")

    async def _check_anchors(self, cp: Checkpoint, note: Note, keys: list[Verifier],
                             reader: TileNodeReader) -> None:  # fmt: skip
        from bastion.ledger.anchors import verify_receipt

        try:
            body = orjson.loads(await self.client.get("anchors?limit=1000", MAX_JSON_BYTES))
        except (FetchError, orjson.JSONDecodeError) as e:
            self.add(INVALID, "anchors", None, f"cannot read the anchors: {e}")
            return
        listed = body.get("anchors") if isinstance(body, dict) else None
        if not isinstance(listed, list):
            self.add(INVALID, "anchors", None, "the anchors answer is not a list")
            return
        # The note the log signed for the current checkpoint: its own signature lines only.
        own_sigs = tuple(
            s
            for s in note.signatures
            if any(k.name == s.name and k.key_id == s.key_id for k in keys)
        )
        own = format_note(Note(note.text, own_sigs)) if own_sigs else None
        checked = 0
        for item in listed:
            receipt = item.get("receipt") if isinstance(item, dict) else None
            key = f"{item.get('anchor')} {item.get('id')}" if isinstance(item, dict) else "?"
            if not isinstance(receipt, dict):
                self.add(INVALID, "anchors", key, "an anchor without a receipt")
                continue
            data = anchor_note(receipt)
            if data is None and receipt.get("size") == cp.size:
                data = own
            if data is None:
                continue  # a receipt for an older checkpoint whose note is not at hand
            try:
                anchored_note = parse_note(data)
                anchored = parse_checkpoint(anchored_note.text)
            except ValueError:
                self.add(INVALID, "anchors", key, "the receipt's checkpoint is malformed")
                continue
            checked += 1
            if not verify_receipt(receipt, data):
                self.add(INVALID, "anchors", key, "the receipt does not hold its checkpoint")
            problem = signature_problem(anchored_note, keys)
            if problem is not None:
                self.add(INVALID, "anchors", key, f"the anchored checkpoint: {problem}")
            self._against(anchored, cp, reader, "anchors", key,
                          f"anchored checkpoint {anchored.size}")  # fmt: skip
        self.report.stats["anchors_checked"] = checked


async def _gather(jobs: list[Awaitable[None]]) -> None:
    """Await the jobs (each bounded by the client's semaphore)."""
    await asyncio.gather(*jobs)
