"""``bastion ledger verify --remote`` (bastion.ledger.remote_verify) against a log served on
127.0.0.1: a scripted log whose answers the tests change (a changed tile or entry, a missing
cosignature, a smaller or forked tree than a pin, hostile answers: huge, malformed, slow), and
a real Bastion server's published log (see test_verify_tamper.py for the server's data)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web

from bastion.cli import main
from bastion.ledger.anchors import FileAnchor
from bastion.ledger.checkpoint import Checkpoint, sign_checkpoint
from bastion.ledger.cosignature import Ed25519Cosigner
from bastion.ledger.merkle import MemoryNodeReader, leaf_hash, tree_root
from bastion.ledger.note import Ed25519Signer, format_signature_line, format_vkey, parse_note
from bastion.ledger.records import action_record
from bastion.ledger.remote_verify import RemoteOptions, verify_remote
from bastion.ledger.tiles import encode_entry_bundle, parse_tile_path
from bastion.ledger.verify import (
    CHANGED,
    FORKED,
    INVALID,
    ROLLED_BACK,
    checkpoint_origin,
    read_signing_public_key,
)
from tests.ledger.test_verify_tamper import _wait_covered
from tests.support.accounts import make_admin
from tests.support.federation import run as run_on
from tests.support.harness import Client, ServerThread

ORIGIN = "log.example/bastion-ledger"
TOKEN = "admin-token"


class FakeLog:
    """A tlog-tiles log of ``size`` entries served by aiohttp; attributes change its answers."""

    def __init__(self, size: int, tmp: Path) -> None:
        self.entries = [json.dumps({"n": i, "kind": "action"}).encode() for i in range(size)]
        self.signer = Ed25519Signer(ORIGIN, b"\x11" * 32)
        self.witness = Ed25519Cosigner("witness.example", b"\x22" * 32)
        self.tile_overrides: dict[str, bytes] = {}
        self.entry_overrides: dict[int, bytes] = {}
        self.checkpoint_override: bytes | None = None
        self.delay = 0.0
        self.anchor = FileAnchor(tmp / "anchors.jsonl", clock=lambda: 1_700_000_000_000)
        self.receipts: list[dict] = []
        self.with_cosignature = True
        self.rebuild()

    def rebuild(self, size: int | None = None) -> None:
        entries = self.entries if size is None else self.entries[:size]
        self.size = len(entries)
        self.reader = MemoryNodeReader([leaf_hash(e) for e in entries])
        self.root = tree_root(self.size, self.reader)
        self.note = sign_checkpoint(Checkpoint(ORIGIN, self.size, self.root), [self.signer])

    def checkpoint_at(self, size: int) -> bytes:
        return sign_checkpoint(Checkpoint(ORIGIN, size, tree_root(size, self.reader)),
                               [self.signer])  # fmt: skip

    def served_note(self) -> bytes:
        if self.checkpoint_override is not None:
            return self.checkpoint_override
        if not self.with_cosignature:
            return self.note
        text = parse_note(self.note).text
        return self.note + format_signature_line(self.witness.cosign(text, 1_700_000_000)).encode()

    def tile(self, level: int, index: int, width: int) -> bytes:
        nodes = self.reader.levels[level * 8]
        return b"".join(nodes[index * 256 : index * 256 + width])

    async def handle(self, req: web.Request) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        rest = req.match_info["rest"]
        if rest == "checkpoint":
            return web.Response(body=self.served_note(), content_type="text/plain")
        if rest == "keys":
            return web.json_response({"origin": ORIGIN, "keys": [{"vkey": self.signer.vkey()}]})
        if rest == "anchors":
            return web.json_response({"anchors": [
                {"id": n, "anchor": "file", "receipt": r} for n, r in enumerate(self.receipts)
            ]})  # fmt: skip
        if not rest.startswith("tile/"):
            raise web.HTTPNotFound()
        if rest in self.tile_overrides:
            return web.Response(body=self.tile_overrides[rest])
        level, index, width = parse_tile_path(rest)
        w = 256 if width is None else width
        if level == "entries":
            if req.headers.get("Authorization") != f"Bearer {TOKEN}":
                raise web.HTTPForbidden()
            entries = [self.entry_overrides.get(i, self.entries[i])
                       for i in range(index * 256, index * 256 + w)]  # fmt: skip
            return web.Response(body=encode_entry_bundle(entries))
        return web.Response(body=self.tile(level, index, w))


async def _serve(log: FakeLog, opts: RemoteOptions):
    app = web.Application()
    app.router.add_get("/_bastion/ledger/v1/{rest:.*}", log.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    opts.url = f"http://127.0.0.1:{port}"
    try:
        return await verify_remote(opts)
    finally:
        await runner.cleanup()


def run(log: FakeLog, **kw) -> list:
    kw.setdefault("keys", [log.signer.vkey()])
    report = asyncio.run(_serve(log, RemoteOptions(url="", **kw)))
    return report.findings


@pytest.fixture
def log(tmp_path):
    return FakeLog(70_000, tmp_path)  # two tile levels and partial tiles on both


def test_a_clean_log_verifies(log):
    pin = log.checkpoint_at(1000)
    log.receipts.append(log.anchor.append(log.note, log.size, log.root, 1))
    findings = run(log, witness_keys=[log.witness.vkey()], access_token=TOKEN,
                   pins=[("pin", pin)])  # fmt: skip
    assert findings == []


def test_a_changed_tile_is_a_fork(log):
    log.tile_overrides["tile/0/005"] = b"\x00" * 8192
    findings = run(log)
    assert (FORKED, "tiles", "1/0") in {(f.kind, f.table, f.key) for f in findings}


def test_a_changed_entry_is_named(log):
    log.entry_overrides[600] = b'{"n": 600, "kind": "forged"}'
    findings = run(log, access_token=TOKEN)
    assert [(f.kind, f.leaf) for f in findings] == [(CHANGED, 600)]


def test_entries_need_the_token(log):
    findings = run(log, access_token="not-an-admin")
    assert [(f.kind, f.table) for f in findings] == [(INVALID, "entries")]
    assert "HTTP 403" in findings[0].message


def test_missing_cosignature_and_wrong_key(log):
    log.with_cosignature = False
    findings = run(log, witness_keys=[log.witness.vkey()])
    assert [(f.kind, f.table) for f in findings] == [(INVALID, "cosignatures")]
    other = Ed25519Signer(ORIGIN, b"\x33" * 32).vkey()
    findings = run(log, keys=[other])
    assert [(f.kind, f.table) for f in findings] == [(INVALID, "checkpoint")]


def test_rollback_and_fork_against_pins(log):
    newer = log.note
    log.rebuild(60_000)  # the log now serves a smaller tree
    findings = run(log, pins=[("newer", newer)])
    assert [(f.kind, f.key) for f in findings] == [(ROLLED_BACK, "newer")]
    forked = sign_checkpoint(Checkpoint(ORIGIN, 500, b"\x01" * 32), [log.signer])
    findings = run(log, pins=[("forked", forked)])
    assert [(f.kind, f.key) for f in findings] == [(FORKED, "forked")]


def test_the_pin_vouches_for_the_listed_key(log):
    pin = log.checkpoint_at(10)
    assert run(log, keys=[], pins=[("pin", pin)]) == []
    stranger = sign_checkpoint(Checkpoint(ORIGIN, 10, tree_root(10, log.reader)),
                               [Ed25519Signer(ORIGIN, b"\x44" * 32)])  # fmt: skip
    findings = run(log, keys=[], pins=[("pin", stranger)])
    assert [(f.kind, f.table) for f in findings] == [(INVALID, "checkpoint")]


def test_an_anchor_of_a_bigger_tree(log):
    big = log.note
    receipt = log.anchor.append(big, log.size, log.root, 1)
    log.rebuild(65_000)
    log.receipts.append(receipt)
    findings = run(log)
    assert [(f.kind, f.table) for f in findings] == [(ROLLED_BACK, "anchors")]


def test_hostile_answers_are_findings(log):
    log.checkpoint_override = b"x" * (2 << 20)
    assert [f.kind for f in run(log)] == [INVALID]
    log.checkpoint_override = b"\xff\xfe not a note"
    assert [f.kind for f in run(log)] == [INVALID]
    log.checkpoint_override = None
    log.tile_overrides["tile/0/003"] = b"short"
    kinds = {(f.kind, f.table) for f in run(log)}
    assert kinds == {(INVALID, "tiles")}
    log.tile_overrides.clear()
    log.delay = 2
    findings = run(log, timeout=0.5)
    assert [f.kind for f in findings] == [INVALID] and "Timeout" in findings[0].message


def test_a_log_that_serves_no_tiles_or_claims_a_huge_tree(log):
    requests = []
    handle = log.handle

    async def counting(req):
        requests.append(req.path)
        if "/tile/" in req.path:
            raise web.HTTPNotFound()
        return await handle(req)

    log.handle = counting
    findings = run(log)
    assert [(f.kind, f.table) for f in findings] == [(INVALID, "tiles")]
    assert len(requests) < 60  # it gave up instead of asking for all 275 tiles
    log.handle = handle
    log.checkpoint_override = sign_checkpoint(Checkpoint(ORIGIN, 2**40, b"\x00" * 32),
                                              [log.signer])  # fmt: skip
    findings = run(log)
    assert [(f.kind, f.table) for f in findings] == [(INVALID, "checkpoint")]
    assert "more than this tool fetches" in findings[0].message


def test_cli_usage(tmp_path, capsys):
    assert main(["ledger", "verify", "--remote", "http://127.0.0.1:9"]) == 2
    assert main(["ledger", "verify", "--remote", "ftp://x", "--key", "k"]) == 2
    assert main(["ledger", "verify", "--remote", "http://127.0.0.1:9", "--key", "bad"]) == 2
    # An unreachable server is a finding, not a usage error.
    vkey = Ed25519Signer(ORIGIN, b"\x11" * 32).vkey()
    assert main(["ledger", "verify", "--remote", "http://127.0.0.1:9", "--key", vkey,
                 "--timeout", "2"]) == 1  # fmt: skip
    err = capsys.readouterr()
    assert "needs the log's key" in err.err and "cannot fetch the checkpoint" in err.out


# -- a real server's published log ------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data = tmp_path_factory.mktemp("live") / "data"
    srv = ServerThread(data, ledger_checkpoint_interval=0.2, ledger_anchor_interval=0.2).start()
    try:
        c = Client(srv.base_url)
        admin = c.register("admin")
        make_admin(srv, admin.user_id)
        store = srv.hs.store

        def write(conn) -> None:  # more than one full tile of leaves
            for i in range(300):
                record = action_record(action="test.action", actor="server", ts=1000 + i)
                store.ledger_append_in(conn, record)

        run_on(srv, store.transaction(write))
        early = _wait_covered(srv)
        room = admin.request("POST", "/_matrix/client/v3/createRoom", {}).body["room_id"]
        for i in range(3):
            admin.request("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}",
                          {"msgtype": "m.text", "body": str(i)})  # fmt: skip
        _wait_covered(srv)
        run_on(srv, srv.hs.ledger.anchor_all())
        _, public = read_signing_public_key(data / "signing.key")
        pin = data.parent / "early.checkpoint"
        pin.write_bytes(early)
        yield {"srv": srv, "data": data, "token": admin.access_token, "pin": pin,
               "vkey": format_vkey(checkpoint_origin("localhost"), 0x01, public)}  # fmt: skip
    finally:
        srv.stop()


def remote(live, capsys, *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["ledger", "verify", "--remote", live["srv"].base_url, "--key", live["vkey"],
                 "--json", *extra])  # fmt: skip
    return code, json.loads(capsys.readouterr().out)


def test_a_real_servers_log_verifies(live, capsys):
    code, report = remote(live, capsys, "--access-token", live["token"],
                          "--checkpoint-pin", str(live["pin"]))  # fmt: skip
    assert (code, report["findings"]) == (0, []), report
    stats = report["stats"]
    assert stats["size"] > 300 and stats["entries_checked"] == stats["size"]
    assert stats["anchors_checked"] >= 1


def _patch(live, sql: str, args: tuple, restore: tuple):
    conn = sqlite3.connect(live["data"] / "homeserver.db")
    try:
        conn.execute(sql, args)
        conn.commit()
        yield
    finally:
        conn.execute(sql, restore)
        conn.commit()
        conn.close()


def test_a_changed_entry_on_a_real_server(live, capsys):
    conn = sqlite3.connect(live["data"] / "homeserver.db")
    (entry,) = conn.execute("SELECT entry FROM ledger_entries WHERE idx = 5").fetchone()
    conn.close()
    forged = entry.replace(b"test.action", b"test.forged")
    for _ in _patch(live, "UPDATE ledger_entries SET entry = ? WHERE idx = 5", (forged,),
                    (entry,)):  # fmt: skip
        code, report = remote(live, capsys, "--access-token", live["token"])
        assert code == 1
        assert [(f["kind"], f["table"], f["leaf"]) for f in report["findings"]] == [
            (CHANGED, "entries", 5)
        ]


def test_a_changed_tile_on_a_real_server(live, capsys):
    conn = sqlite3.connect(live["data"] / "homeserver.db")
    (tile,) = conn.execute("SELECT data FROM ledger_tiles WHERE level = 0 AND idx = 0").fetchone()
    conn.close()
    forged = bytes(32) + tile[32:]
    for _ in _patch(live, "UPDATE ledger_tiles SET data = ? WHERE level = 0 AND idx = 0",
                    (forged,), (tile,)):  # fmt: skip
        code, report = remote(live, capsys)
        assert code == 1
        assert {(f["kind"], f["table"]) for f in report["findings"]} == {(FORKED, "tiles")}


def test_the_running_servers_database_verifies_locally(live, capsys):
    """While the server runs (its write-ahead log open), a local verify reads one snapshot."""
    assert (live["data"] / "homeserver.db-wal").exists()
    capsys.readouterr()
    assert main(["ledger", "verify", "--data-dir", str(live["data"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []
