"""The ledger's HTTP API under ``/_bastion/ledger/v1/`` and the witness API under
``/_bastion/witness/v1/`` (issue 8). Not part of the Matrix spec: the formats are C2SP's
(tlog-checkpoint, signed-note, tlog-tiles, tlog-cosignature, tlog-witness); errors are Matrix
errors like everywhere else.

Access is decided per route, where it is registered:

* public: ``checkpoint``, hash tiles ``tile/<L>/<N>[.p/<W>]``, ``proof/consistency``,
  ``anchors``, ``keys``, and the witness endpoints (tlog-witness: no authentication beyond the
  checkpoint's signature);
* admins only: entry bundles ``tile/entries/<N>[.p/<W>]`` — they hold personal records
  (logins, key changes) and cannot be filtered without breaking the bundle format;
* per record: ``proof/record/{index}`` and ``proof/event/{eventId}`` take an optional access
  token. Admins see every record; a record with a subject is visible to that user; an event's
  record is visible to its sender, and with ``ledger_public_room_events`` to anyone when the
  room's join rule is public. Otherwise an event answers 404 ``M_NOT_FOUND`` (its existence is
  not revealed) and a record 403 ``M_FORBIDDEN``.

Tile paths are parsed only by :func:`bastion.ledger.tiles.parse_tile_path`, on the raw
(still percent-encoded) path: a percent-encoded or non-canonical path is refused.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from bastion.api.http import CORS_HEADERS, SECURITY_HEADERS, Request, Router, bearer_token
from bastion.errors import MatrixError, forbidden, invalid_param, not_found
from bastion.ledger import merkle, tiles
from bastion.storage.interface import LedgerEntryRow, Requester

if TYPE_CHECKING:
    from bastion.ledger.service import LedgerService
    from bastion.server import HomeServer

PREFIX = "/_bastion/ledger/v1"
WITNESS_PREFIX = "/_bastion/witness/v1"
TEXT_PLAIN = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
#: tlog-tiles: the checkpoint is mutable (cache a few seconds at most); full tiles never change.
CHECKPOINT_CACHE = "no-cache, max-age=1"
FULL_TILE_CACHE = "public, max-age=31536000, immutable"
PARTIAL_TILE_CACHE = "public, max-age=10"
MAX_UINT63 = 2**63 - 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _response(body: bytes, content_type: str, cache: str, status: int = 200) -> web.Response:
    headers = {"Content-Type": content_type, "Cache-Control": cache, **CORS_HEADERS,
               **SECURITY_HEADERS}  # fmt: skip
    return web.Response(body=body, status=status, headers=headers)


def parse_uint(value: str | None, name: str) -> int:
    """A canonical non-negative decimal below 2**63; 400 ``M_INVALID_PARAM`` otherwise."""
    if value is None or value == "":
        raise invalid_param(f"{name} is required")
    if (
        not (value.isascii() and value.isdigit())
        or len(value) > 19
        or (len(value) > 1 and value[0] == "0")
    ):
        raise invalid_param(f"{name} must be a non-negative decimal integer")
    n = int(value)
    if n > MAX_UINT63:
        raise invalid_param(f"{name} is too large")
    return n


def _record(row: LedgerEntryRow) -> dict:
    """The record of a leaf ({} when the stored entry is not a JSON object: only admins may
    see such an entry, and ``bastion ledger verify`` reports it)."""
    try:
        record = orjson.loads(row.entry)
    except orjson.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def _raw_tail(req: Request, prefix: str) -> str:
    """The request path after ``prefix``, still percent-encoded (as sent)."""
    raw = req.raw.raw_path.split("?", 1)[0]
    if not raw.startswith(prefix):
        raise not_found("no such tile")
    return raw[len(prefix) :]


def _tile_path(req: Request) -> tuple[int | str, int, int | None]:
    """The tile named by the raw request path; 404 ``M_NOT_FOUND`` when it is not a canonical
    tile path (percent-encoding included: no canonical path has a ``%``)."""
    tail = _raw_tail(req, PREFIX + "/")
    if "%" in tail:
        raise not_found("not a canonical tile path")
    try:
        return tiles.parse_tile_path(tail)
    except ValueError:
        raise not_found("not a canonical tile path") from None


def register(router: Router, hs: HomeServer) -> None:
    ledger = hs.ledger
    if ledger is not None:
        _register_ledger(router, hs, ledger)
    if hs.witness is not None:
        _register_witness(router, hs)


def _register_ledger(router: Router, hs: HomeServer, ledger: LedgerService) -> None:
    store = hs.store
    config = hs.config

    def signed_checkpoint() -> tuple[Any, bytes]:
        cp = ledger.latest
        if cp is None:
            raise not_found("the log has no checkpoint yet")
        return cp, cp.note + b"".join(store.ledger_cosignatures(cp.size))

    async def get_checkpoint(req: Request) -> web.StreamResponse:
        """GET checkpoint — tlog-tiles "Checkpoints": the latest signed checkpoint, with the
        witnesses' cosignature lines collected for it (tlog-witness)."""
        _cp, note = signed_checkpoint()
        return _response(note, TEXT_PLAIN, CHECKPOINT_CACHE)

    async def get_tile(req: Request) -> web.StreamResponse:
        """GET tile/<L>/<N>[.p/<W>] — tlog-tiles "Merkle Tree": hash tiles, public. Full
        tiles are immutable; a tile beyond the integrated tree is 404."""
        level, index, width = _tile_path(req)
        if not isinstance(level, int):
            raise not_found("no such tile")  # entry bundles have a route of their own
        data = ledger.tile(level, index, width)
        if data is None:
            raise not_found("no such tile")
        cache = FULL_TILE_CACHE if width is None else PARTIAL_TILE_CACHE
        return _response(data, OCTETS, cache)

    async def get_entries(req: Request) -> web.StreamResponse:
        """GET tile/entries/<N>[.p/<W>] — tlog-tiles "Log entries": entry bundles, server
        admins only (they hold personal records)."""
        if not req.requester.is_admin:
            raise forbidden("only server administrators may read entry bundles")
        level, index, width = _tile_path(req)
        if level != "entries":
            raise not_found("no such entry bundle")
        data = ledger.entry_bundle(index, width)
        if data is None:
            raise not_found("no such entry bundle")
        return _response(data, OCTETS, "no-store")

    async def optional_requester(req: Request) -> Requester | None:
        token = bearer_token(req.raw)
        return None if token is None else await hs.authenticate(req, token)

    def room_is_public(room_id: object) -> bool:
        if not isinstance(room_id, str):
            return False
        eid = store.get_current_state_ids(room_id).get(("m.room.join_rules", ""))
        event = store.get_event(eid) if eid else None
        content = event.get("content") if isinstance(event, dict) else None
        return isinstance(content, dict) and content.get("join_rule") == "public"

    def may_see(requester: Requester | None, row: LedgerEntryRow, record: dict) -> bool:
        if requester is not None and requester.is_admin:
            return True
        user = requester.user_id if requester is not None else None
        if record.get("kind") == "event":
            if user is not None and record.get("sender") == user:
                return True
            return config.ledger_public_room_events and room_is_public(record.get("room_id"))
        subject = record.get("subject")
        return user is not None and subject is not None and subject == user

    def proof_body(row: LedgerEntryRow) -> dict:
        cp, note = signed_checkpoint()
        if row.idx >= cp.size:
            raise not_found("this record is not covered by a checkpoint yet")
        proof = ledger.inclusion_proof(row.idx, cp.size)
        return {
            "index": row.idx,
            "tree_size": cp.size,
            "leaf_hash": _b64(merkle.leaf_hash(row.entry)),
            "inclusion_proof": [_b64(h) for h in proof],
            "checkpoint": note.decode("utf-8"),
            # The record's canonical JSON, and its exact bytes (what the leaf hash covers).
            "entry": row.entry.decode("utf-8", "replace"),
            "entry_base64": _b64(row.entry),
        }

    async def get_record_proof(req: Request) -> dict:
        """GET proof/record/{index} — the record at ``index`` with its inclusion proof against
        the latest checkpoint (RFC 9162 2.1.3). 403 when the requester may not see it."""
        index = parse_uint(req.params["index"], "index")
        requester = await optional_requester(req)
        row = store.ledger_entry(index)
        if row is None:
            raise not_found("no such record")
        if not may_see(requester, row, _record(row)):
            raise forbidden("you may not see this record")
        return proof_body(row)

    async def get_event_proof(req: Request) -> dict:
        """GET proof/event/{eventId} — the latest record of the event with its inclusion proof.
        404 when there is none or the requester may not see it (its existence stays hidden)."""
        requester = await optional_requester(req)
        row = store.ledger_event_entry(req.params["eventId"])
        if row is None or not may_see(requester, row, _record(row)):
            raise not_found("no such event in the ledger")
        return proof_body(row)

    async def get_consistency(req: Request) -> dict:
        """GET proof/consistency?old=N&new=M — RFC 9162 2.1.4 consistency proof between two
        tree sizes, ``old <= new <= `` the latest checkpoint's size."""
        q = req.query
        old, new = parse_uint(q.get("old"), "old"), parse_uint(q.get("new"), "new")
        cp = ledger.latest
        latest = cp.size if cp is not None else 0
        if old > new:
            raise invalid_param("old must not be larger than new")
        if new > latest:
            raise invalid_param(f"new is larger than the latest checkpoint's size ({latest})")
        proof = [] if old in (0, new) else ledger.consistency_proof(old, new)
        return {"old": old, "new": new, "proof": [_b64(h) for h in proof]}

    async def get_anchors(req: Request) -> dict:
        """GET anchors — the stored anchor receipts, newest first (``limit``, default 100)."""
        limit = req.query_int("limit", 100, minimum=1, maximum=1000)
        return {
            "anchors": [
                {
                    "id": a.id,
                    "anchor": a.anchor,
                    "size": a.size,
                    "root": _b64(a.root),
                    "receipt": a.receipt,
                    "ts": a.ts,
                }  # fmt: skip
                for a in store.ledger_anchors(limit)
            ]
        }

    async def get_keys(req: Request) -> dict:
        """GET keys — every verifier key (C2SP signed-note vkey) the log signs or has signed
        with (``vkey``; ``key_id``: the Matrix server key it is, or ``ml-dsa-44``; ``current``;
        ``expired_ts`` for a retired key), and this server's witness vkey when it witnesses
        other logs (else null)."""
        return {
            "origin": ledger.origin,
            "keys": ledger.all_vkeys(),
            "witness": hs.witness.vkey if hs.witness is not None else None,
        }

    # Entry bundles first: their route needs an access token and an admin.
    router.add("GET", PREFIX + "/tile/entries/{rest*}", get_entries)
    router.add("GET", PREFIX + "/tile/{rest*}", get_tile, auth=False)
    router.add("GET", PREFIX + "/checkpoint", get_checkpoint, auth=False)
    router.add("GET", PREFIX + "/proof/record/{index}", get_record_proof, auth=False)
    router.add("GET", PREFIX + "/proof/event/{eventId}", get_event_proof, auth=False)
    router.add("GET", PREFIX + "/proof/consistency", get_consistency, auth=False)
    router.add("GET", PREFIX + "/anchors", get_anchors, auth=False)
    router.add("GET", PREFIX + "/keys", get_keys, auth=False)


def _register_witness(router: Router, hs: HomeServer) -> None:
    from bastion.ledger.witnessing import MAX_REQUEST_BYTES

    witness = hs.witness
    assert witness is not None

    async def add_checkpoint(req: Request) -> web.StreamResponse:
        """POST add-checkpoint — C2SP tlog-witness "add-checkpoint": 200 with the cosignature
        line, or 400/403/404/409 (``text/x.tlog.size``)/422 as the spec says."""
        body = await req.body_bytes(MAX_REQUEST_BYTES)
        answer = await witness.add_checkpoint(body)
        return _response(answer.body, answer.content_type, "no-store", answer.status)

    async def get_latest(req: Request) -> web.StreamResponse:
        """GET {originHash}/checkpoint — tlog-witness "Monitor Retrieval Mechanism": the latest
        checkpoint cosigned for the log, with this witness's cosignature."""
        note = witness.latest(req.params["originHash"])
        if note is None:
            raise MatrixError("M_NOT_FOUND", "this witness never cosigned that log", 404)
        return _response(note, TEXT_PLAIN, CHECKPOINT_CACHE)

    router.add("POST", WITNESS_PREFIX + "/add-checkpoint", add_checkpoint, auth=False)
    router.add("GET", WITNESS_PREFIX + "/{originHash}/checkpoint", get_latest, auth=False)
