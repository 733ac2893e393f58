"""Benchmark of the ledger (issue 8): what recording every event and action costs, and how fast
its proofs and checks are.

(a) appends/s through the real persist path: local message sends through the room service and
    the room engine (build, auth, sign, one write transaction that inserts the event and its
    leaf), in process, no HTTP; one sender in one room (one commit per event), and 16 senders in
    16 rooms at once (the writer's group commit); with the ledger on, and the same with
    ``store.ledger_enabled = False`` as the baseline: two fresh servers in one process, measured
    in alternating rounds; beside them the ledger's own append (an action leaf per transaction,
    16 concurrent writers), the rate a log is usually quoted at;
(b) the cost of a durable commit: one ledger action append per transaction, committed with
    ``synchronous=FULL`` (``store.transaction(fn, durable=True)``, what precedes signing a
    checkpoint) against the default ``NORMAL``, median per commit; and the raw SQLite figures
    (a one-row insert per commit, WAL) beside them;
(c) proof generation and verification at 1M leaves: inclusion proofs for random leaves and
    consistency proofs from random older sizes, with ``bastion.ledger.merkle`` reading the tree
    through ``bastion.ledger.tiles.TileNodeReader`` over tiles built from synthetic leaves by the
    integrator's ``TreeBuilder`` (whose rate is reported too);
(d) the time from a send's commit to the first durably stored checkpoint covering its leaf, with
    the ledger service running (checkpoint interval 1 s, the default): under a steady load and
    for lone events on an idle server (p50, p95, max);
(e) ``bastion ledger verify --data-dir`` (a subprocess, wall clock) of a database of 1M leaves:
    real events (v12 rooms of 5,000 events, built, authorised and signed by the room engine and
    persisted in one write per room, the batch path of createRoom), integrated and signed by the
    ledger service, with the default file anchor checked as pins; ``--quick`` verifies 40,000
    leaves and reports the time scaled to 1M beside it;
(f) bench/server.py's send figures (one sender; ten senders in one room; over HTTP) against two
    Bastion subprocesses, ``ledger_enabled`` true and false, alternating, same run.

Prints a table with the issue's goals, then the figures as one JSON object on the last line.
Each figure is a median over repeats (throughputs) or over operations (times). The on/off
comparisons are medians of alternating rounds in one run; on a shared machine they still move
by several percent from run to run (``--quick``'s few rounds by more: it is a smoke run).
A full run takes six to ten minutes, most of it filling the 1M-leaf database of (e).

Run: python bench/ledger.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bastion.config import Config  # noqa: E402
from bastion.ledger.merkle import (  # noqa: E402
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from bastion.ledger.records import action_record  # noqa: E402
from bastion.ledger.tiles import TILE_HEIGHT, TILE_WIDTH, TileNodeReader  # noqa: E402
from bastion.server import HomeServer  # noqa: E402
from bastion.services.lifecycle import drain  # noqa: E402
from bastion.storage.interface import Requester  # noqa: E402
from bench.server import (  # noqa: E402
    Api,
    Server,
    bench_send_many,
    bench_send_one,
    create_room,
    join,
    percentile,
    register,
    spawn_bastion,
    stop_process,
    wait_ready,
)

GOAL_APPENDS_PER_S = 5000
PROOF_TREE_SIZE = 1_000_000
#: --quick verifies a smaller database and reports the time scaled to 1M leaves beside it.
VERIFY_LEAVES_QUICK = 40_000
SERVER_NAME = "bench.local"
USER = f"@bench:{SERVER_NAME}"


# ----------------------------------------------------------------------------------------------
# (a) appends/s through the room engine
# ----------------------------------------------------------------------------------------------
class InProcess:
    """A homeserver's store and services without its HTTP listeners (the parts a local send
    goes through), on a fresh data directory."""

    def __init__(self, work: Path, ledger: bool, synchronous: str = "NORMAL",
                 **settings: object) -> None:  # fmt: skip
        self.config = Config(
            server_name=SERVER_NAME, data_dir=work, registration="closed",
            sqlite_synchronous=synchronous, guard={"rate_limits": {"enabled": False}},
            **settings,  # type: ignore[arg-type]
        )  # fmt: skip
        self.hs = HomeServer(self.config)
        self.hs.store.ledger_enabled = ledger
        self.rooms: list[str] = []
        self.txns = itertools.count()  # transaction IDs never repeat (a repeat is no append)

    async def __aenter__(self) -> InProcess:
        hs = self.hs
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        # The data directory describes itself, for the tools run on it (bastion ledger verify).
        (self.config.data_dir / "bastion.toml").write_text(
            f'server_name = "{SERVER_NAME}"\nregistration = "closed"\n'
            f'sqlite_synchronous = "{self.config.sqlite_synchronous}"\n'
        )
        hs.store.open()
        loop = asyncio.get_running_loop()
        hs.notifier.attach(loop)
        hs.store.attach_loop(loop)
        hs.store.add_listener(hs.notifier.notify_threadsafe)
        await hs.store.create_user(USER, None, hs.now_ms())
        return self

    async def __aexit__(self, *exc) -> None:
        self.hs.notifier.close()
        self.hs.passwords.close()
        self.hs.media.close()
        self.hs.store.close()

    async def make_rooms(self, n: int) -> None:
        requester = Requester(USER, "BENCH")
        while len(self.rooms) < n:
            room_id, _ = await self.hs.rooms.create_room(requester, {"preset": "public_chat"})
            self.rooms.append(room_id)

    async def send(self, room_id: str, i: int) -> str:
        return await self.hs.rooms.send_message_event(
            USER, "BENCH", room_id, "m.room.message",
            {"msgtype": "m.text", "body": f"message {i} " + "lorem ipsum " * 4}, f"t{i}-{room_id}",
        )  # fmt: skip


async def appends_per_s(srv: InProcess, rooms: int, per_room: int) -> float:
    """Events/s of ``rooms`` senders at once, one per room, ``per_room`` events each."""
    await srv.make_rooms(rooms)
    counter = srv.txns

    async def sender(room_id: str) -> None:
        for _ in range(per_room):
            await srv.send(room_id, next(counter))

    await asyncio.gather(*(srv.send(r, next(counter)) for r in srv.rooms[:rooms]))  # warm-up
    t0 = time.perf_counter()
    await asyncio.gather(*(sender(r) for r in srv.rooms[:rooms]))
    return rooms * per_room / (time.perf_counter() - t0)


async def bench_appends(work: Path, rounds: int, one_n: int, many_n: int) -> dict:
    """Two fresh servers, the ledger on and off, measured in alternating rounds (the order
    swapped each round) so that both see the same machine and the same database growth."""
    rates: dict[str, list[float]] = {
        k: [] for k in ("on_1", "off_1", "on_16", "off_16", "leaves_16")
    }
    async with InProcess(work / "a-on", True) as on, InProcess(work / "a-off", False) as off:
        pair = [("on", on), ("off", off)]
        for r in range(rounds):
            for name, srv in pair if r % 2 == 0 else pair[::-1]:
                rates[f"{name}_1"].append(await appends_per_s(srv, 1, one_n))
            for name, srv in pair if r % 2 == 0 else pair[::-1]:
                rates[f"{name}_16"].append(await appends_per_s(srv, 16, many_n))
            rates["leaves_16"].append(await ledger_appends_per_s(on, 16, many_n))
        leaves = {
            # Event leaves: action records (account creation, the guard's flood warnings about
            # the 16 senders) are written whatever the switch, as the audit trail needs them.
            name: srv.hs.store.db.read_one(
                "SELECT COUNT(*) FROM ledger_entries WHERE kind = 'event'"
            )[0]
            for name, srv in pair
        }
    if leaves["off"] != 0 or leaves["on"] == 0:
        raise RuntimeError(f"the ledger switch did not work: {leaves}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "appends_1_room_ledger_on_per_s": med["on_1"],
        "appends_1_room_ledger_off_per_s": med["off_1"],
        "appends_16_rooms_ledger_on_per_s": med["on_16"],
        "appends_16_rooms_ledger_off_per_s": med["off_16"],
        "ledger_only_appends_16_writers_per_s": med["leaves_16"],
        "append_added_cost_1_room_pct": (med["off_1"] / med["on_1"] - 1) * 100,
        "append_added_cost_16_rooms_pct": (med["off_16"] / med["on_16"] - 1) * 100,
        "appends_rounds": rounds,
    }


async def ledger_appends_per_s(srv: InProcess, writers: int, per_writer: int) -> float:
    """Leaves/s of the ledger's own append (``ledger_append_in``, an action record per write
    transaction) from ``writers`` concurrent callers: the writer's group commit batches them."""
    store = srv.hs.store

    async def writer(k: int) -> None:
        for i in range(per_writer):
            record = action_record(action="admin.request", actor="cli", ts=i, origin="cli",
                                   target=f"writer {k} call {i}")  # fmt: skip
            await store.transaction(lambda conn, r=record: store.ledger_append_in(conn, r))

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    return writers * per_writer / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------
# (b) synchronous=FULL against NORMAL
# ----------------------------------------------------------------------------------------------
async def commit_times(srv: InProcess, n: int, durable: bool) -> list[float]:
    """Seconds per ledger action append, one transaction each, committed one after the other."""
    store = srv.hs.store
    out = []
    for i in range(n):
        record = action_record(action="admin.request", actor="cli", ts=i, origin="cli",
                               target=f"bench {i}")  # fmt: skip
        t0 = time.perf_counter()
        await store.transaction(lambda conn, r=record: store.ledger_append_in(conn, r), durable)
        out.append(time.perf_counter() - t0)
    return out


def raw_sqlite_commits(path: Path, n: int, synchronous: str) -> list[float]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, v BLOB)")
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (v) VALUES (?)", (hashlib.sha256(b"%d" % i).digest(),))
            conn.execute("COMMIT")
            out.append(time.perf_counter() - t0)
        return out
    finally:
        conn.close()


async def bench_durable(work: Path, n: int, rounds: int) -> dict:
    normal: list[float] = []
    full: list[float] = []
    raw_normal: list[float] = []
    raw_full: list[float] = []
    async with InProcess(work / "b", True) as srv:
        await commit_times(srv, 20, False)  # warm-up
        for _ in range(rounds):  # interleaved, so both see the same machine
            normal += await commit_times(srv, n, False)
            full += await commit_times(srv, n, True)
    for r in range(rounds):
        raw_normal += raw_sqlite_commits(work / f"raw{r}.db", n, "NORMAL")
        raw_full += raw_sqlite_commits(work / f"raw{r}.db", n, "FULL")
    ms = 1000
    out = {
        "commit_normal_ms": statistics.median(normal) * ms,
        "commit_full_ms": statistics.median(full) * ms,
        "raw_sqlite_commit_normal_ms": statistics.median(raw_normal) * ms,
        "raw_sqlite_commit_full_ms": statistics.median(raw_full) * ms,
        "commits_measured_each": len(normal),
    }
    out["commit_full_added_ms"] = out["commit_full_ms"] - out["commit_normal_ms"]
    out["raw_sqlite_full_added_ms"] = (
        out["raw_sqlite_commit_full_ms"] - out["raw_sqlite_commit_normal_ms"]
    )
    return out


# ----------------------------------------------------------------------------------------------
# (c) proofs at 1M leaves
# ----------------------------------------------------------------------------------------------
def build_tiles(size: int) -> tuple[dict[int, bytearray], bytes, float]:
    """Integrate ``size`` synthetic leaves with the integrator's TreeBuilder, keeping the
    hashes of tree levels 0, 8, 16, ... (the tile levels); returns them, the root and the
    seconds the integration took."""
    builder = TreeBuilder()
    levels: dict[int, bytearray] = {}
    t0 = time.perf_counter()
    for i in range(size):
        entry = b'{"kind":"event","event_id":"$%d","v":1}' % i
        for level, _k, h in builder.append(leaf_hash(entry)):
            if level % TILE_HEIGHT == 0:
                levels.setdefault(level, bytearray()).extend(h)
    return levels, builder.root(), time.perf_counter() - t0


def bench_proofs(size: int, samples: int, seed: int = 8) -> dict:
    levels, root, integrate_s = build_tiles(size)
    tiles_read = [0]

    def read_tile(tile_level: int, index: int, width: int) -> bytes:
        tiles_read[0] += 1
        row = levels[tile_level * TILE_HEIGHT]
        start = index * TILE_WIDTH * 32
        return bytes(row[start : start + width * 32])

    rng = random.Random(seed)
    if tree_root(size, TileNodeReader(read_tile, size)) != root:
        raise RuntimeError("the tiles do not give the integrator's root")
    gen_inc, ver_inc, gen_con, ver_con = [], [], [], []
    for _ in range(samples):
        index = rng.randrange(size)
        leaf = levels[0][index * 32 : index * 32 + 32]
        reader = TileNodeReader(read_tile, size)  # a fresh reader: no tile cached
        t0 = time.perf_counter()
        proof = inclusion_proof(index, size, reader)
        t1 = time.perf_counter()
        ok = verify_inclusion(bytes(leaf), index, size, proof, root)
        t2 = time.perf_counter()
        if not ok:
            raise RuntimeError(f"inclusion proof of leaf {index} did not verify")
        gen_inc.append(t1 - t0)
        ver_inc.append(t2 - t1)
        old = rng.randrange(1, size)
        reader = TileNodeReader(read_tile, size)
        old_root = tree_root(old, TileNodeReader(read_tile, old))  # a stored checkpoint's
        t0 = time.perf_counter()
        proof = consistency_proof(old, size, reader)
        t1 = time.perf_counter()
        ok = verify_consistency(old, size, old_root, root, proof)
        t2 = time.perf_counter()
        if not ok:
            raise RuntimeError(f"consistency proof {old} -> {size} did not verify")
        gen_con.append(t1 - t0)
        ver_con.append(t2 - t1)
    ms = 1000
    return {
        "proof_tree_size": size,
        "proof_samples": samples,
        "integrate_leaves_per_s": size / integrate_s,
        "inclusion_proof_generate_ms": statistics.median(gen_inc) * ms,
        "inclusion_proof_verify_ms": statistics.median(ver_inc) * ms,
        "consistency_proof_generate_ms": statistics.median(gen_con) * ms,
        "consistency_proof_verify_ms": statistics.median(ver_con) * ms,
    }


# ----------------------------------------------------------------------------------------------
# (d) from append to covering checkpoint
# ----------------------------------------------------------------------------------------------
async def bench_covering(work: Path, load_s: float, rate: float, sporadic: int) -> dict:
    """Seconds from a send's commit to the first durably stored checkpoint that covers its leaf,
    with the ledger service running (``ledger_checkpoint_interval``: the default, 1 s): under a
    steady load of ``rate`` events/s for ``load_s`` seconds, and for ``sporadic`` lone events
    sent at random moments on an otherwise idle server."""
    async with InProcess(work / "d", True) as srv:
        service = srv.hs.ledger
        if service is None:
            raise RuntimeError("the ledger service is off")
        interval = service.interval
        service.start()
        try:
            await srv.make_rooms(1)
            room = srv.rooms[0]
            seen: list[tuple[float, int]] = []  # (time, size) of each new checkpoint
            stop = asyncio.Event()

            async def watch() -> None:
                last = None
                while not stop.is_set():
                    cp = service.latest
                    if cp is not None and cp is not last:
                        seen.append((time.perf_counter(), cp.size))
                        last = cp
                    await asyncio.sleep(0.001)

            watcher = asyncio.create_task(watch())
            sent: list[tuple[str, float, str]] = []  # (phase, commit time, event ID)
            t_end = time.perf_counter() + load_s
            while time.perf_counter() < t_end:
                event_id = await srv.send(room, next(srv.txns))
                sent.append(("load", time.perf_counter(), event_id))
                await asyncio.sleep(1 / rate)
            rng = random.Random(4)
            for _ in range(sporadic):
                await asyncio.sleep(interval * (1 + rng.random()))
                event_id = await srv.send(room, next(srv.txns))
                sent.append(("sporadic", time.perf_counter(), event_id))
            await asyncio.sleep(interval * 2 + 0.5)
            stop.set()
            await watcher
        finally:
            await drain([service], 10)
            await service.close()
        delays: dict[str, list[float]] = {"load": [], "sporadic": []}
        for phase, t_sent, event_id in sent:
            row = srv.hs.store.ledger_event_entry(event_id)
            if row is None:
                raise RuntimeError(f"no leaf for {event_id}")
            covered = next((t for t, size in seen if size > row.idx and t >= t_sent), None)
            if covered is None:
                raise RuntimeError(f"no checkpoint covered the leaf of {event_id}")
            delays[phase].append(covered - t_sent)
    ms = 1000
    return {
        "checkpoint_interval_s": interval,
        "covering_events_under_load": len(delays["load"]),
        "covering_load_events_per_s": len(delays["load"]) / load_s,
        "covering_under_load_p50_ms": statistics.median(delays["load"]) * ms,
        "covering_under_load_p95_ms": percentile(delays["load"], 0.95) * ms,
        "covering_under_load_max_ms": max(delays["load"]) * ms,
        "covering_sporadic_events": len(delays["sporadic"]),
        "covering_sporadic_p50_ms": statistics.median(delays["sporadic"]) * ms,
        "covering_sporadic_max_ms": max(delays["sporadic"]) * ms,
    }


# ----------------------------------------------------------------------------------------------
# (e) bastion ledger verify of a database with 1M leaves
# ----------------------------------------------------------------------------------------------
async def fill_rooms(srv: InProcess, leaves: int, per_room: int = 5000) -> float:
    """Grow the ledger to ``leaves`` leaves with real events: rooms of ``per_room`` events each,
    built, authorised and signed by the room engine and persisted in one write per room (the
    engine's batch path, as createRoom's events are), each event with its leaf. Returns the
    events/s."""
    engine = srv.hs.rooms.engine
    store = srv.hs.store
    t0 = time.perf_counter()
    made = 0
    while (have := store.ledger_size()) < leaves:
        n = min(per_room, leaves - have)
        batch = engine.new_room("", "12")
        batch.add(USER, "m.room.create", {"room_version": "12"})
        batch.add(USER, "m.room.member", {"membership": "join"}, USER)
        batch.add(USER, "m.room.join_rules", {"join_rule": "public"})
        for i in range(max(0, n - 3)):
            body = f"history message {i} " + "lorem ipsum " * 4
            batch.add(USER, "m.room.message", {"msgtype": "m.text", "body": body}, None)
        room_id, now = batch.room_id, srv.hs.now_ms()
        await engine.append_new_room(
            batch,
            lambda conn, r=room_id, t=now: store.create_room_sync(conn, r, "12", USER, t, True),
        )
        made += len(batch.events)
    return made / (time.perf_counter() - t0)


async def wait_covered(srv: InProcess, size: int, timeout: float) -> float:
    """Seconds until the ledger service has signed a checkpoint covering ``size`` leaves."""
    service = srv.hs.ledger
    assert service is not None
    t0 = time.perf_counter()
    while service.latest is None or service.latest.size < size:
        if service.halted is not None:
            raise RuntimeError(f"the ledger halted: {service.halted}")
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"no checkpoint covered {size} leaves within {timeout} s")
        service.wake()
        await asyncio.sleep(0.05)
    return time.perf_counter() - t0


async def bench_verify(work: Path, leaves: int) -> dict:
    """Fill a data directory to ``leaves`` leaves (real events), let the ledger service
    integrate and sign them, stop the server, then time ``bastion ledger verify --data-dir``
    (a subprocess, wall clock, Python's start-up included) and check it found nothing."""
    data = work / "e"
    async with InProcess(data, True) as srv:
        service = srv.hs.ledger
        assert service is not None
        service.start()
        try:
            rate = await fill_rooms(srv, leaves)
            size = srv.hs.store.ledger_size()
            catch_up = await wait_covered(srv, size, 600)
        finally:
            await drain([service], 10)
            await service.close()
    cmd = [sys.executable, "-m", "bastion.cli", "ledger", "verify", "--data-dir", str(data),
           "--json"]  # fmt: skip
    anchor_file = data / "ledger-anchors.jsonl"  # the default file anchor: checked as pins
    if anchor_file.exists():
        cmd += ["--anchor-file", str(anchor_file)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    verify_s = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"verify exited {done.returncode}: {done.stdout[-800:]}"
                           f"{done.stderr[-800:]}")  # fmt: skip
    stats = json.loads(done.stdout)["stats"]
    if stats["leaves"] != size or stats["events_checked"] < size - 1:
        raise RuntimeError(f"verify did not check every leaf and event: {stats}")
    # The command's start-up (Python, imports, worker processes) does not grow with the log:
    # the time per 1M leaves is scaled from the command's own elapsed time.
    return {
        "verify_leaves": size,
        "verify_s": verify_s,
        "verify_own_elapsed_s": stats["elapsed_s"],
        "verify_s_per_1m_leaves": verify_s
        if size == PROOF_TREE_SIZE
        else verify_s - stats["elapsed_s"] + stats["elapsed_s"] * PROOF_TREE_SIZE / size,
        "verify_checked_anchor_file": anchor_file.exists(),
        "verify_fill_events_per_s": rate,
        "verify_integrate_and_sign_catch_up_s": catch_up,
    }


# ----------------------------------------------------------------------------------------------
# (f) bench/server.py's sends with the ledger on and off
# ----------------------------------------------------------------------------------------------
def start_bastion(work: Path, name: str, ledger: bool) -> Server:
    """A Bastion subprocess as bench/server.py starts one, with ``ledger_enabled`` set."""
    return spawn_bastion(
        work, name,
        f"ledger_enabled = {'true' if ledger else 'false'}\n"
        "[guard.rate_limits]\nenabled = false\n"  # as bench/server.py
        "[guard.registration]\nper_address_burst = 0\n",
    )  # fmt: skip


async def bench_sends(work: Path, repeats: int, one_n: int, per_sender: int) -> dict:
    """bench/server.py's figure 1 (one sender; ten senders in one room) against two Bastions,
    the ledger on and off, alternating, median of ``repeats``."""
    servers = [start_bastion(work, "f-on", True), start_bastion(work, "f-off", False)]
    rates: dict[str, list[float]] = {k: [] for k in ("on_1", "off_1", "on_10", "off_10")}
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            setup = {}
            for srv in servers:
                await wait_ready(session, srv)
                api = Api(session, srv)
                users = [await register(api) for _ in range(10)]
                one_room = await create_room(api, users[0])
                many_room = await create_room(api, users[0])
                for u in users[1:]:
                    await join(api, u, many_room)
                setup[srv.name] = (api, users, one_room, many_room)
            for r in range(repeats):
                order = servers if r % 2 == 0 else servers[::-1]
                for srv in order:
                    api, users, one_room, _ = setup[srv.name]
                    key = ("on" if srv.name == "f-on" else "off") + "_1"
                    rates[key].append(await bench_send_one(api, users[0], one_room, one_n, 120))
                for srv in order:
                    api, users, _, many_room = setup[srv.name]
                    key = ("on" if srv.name == "f-on" else "off") + "_10"
                    rates[key].append(await bench_send_many(api, users, many_room, per_sender, 120))
            # The server with the ledger on did record and sign what was sent.
            await asyncio.sleep(2)
            url = servers[0].base_url + "/_bastion/ledger/v1/checkpoint"
            async with session.get(url) as resp:
                note = await resp.text()
            lines = note.split("\n")
            if resp.status != 200 or len(lines) < 2 or int(lines[1]) < repeats * one_n:
                raise RuntimeError(f"no checkpoint covers the sends: {resp.status} {note[:200]}")
    finally:
        for srv in servers:
            stop_process(srv.proc)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "send_1_sender_ledger_on_msgs_per_s": med["on_1"],
        "send_1_sender_ledger_off_msgs_per_s": med["off_1"],
        "send_10_senders_ledger_on_msgs_per_s": med["on_10"],
        "send_10_senders_ledger_off_msgs_per_s": med["off_10"],
        "send_added_cost_1_sender_pct": (med["off_1"] / med["on_1"] - 1) * 100,
        "send_added_cost_10_senders_pct": (med["off_10"] / med["on_10"] - 1) * 100,
        "send_repeats": repeats,
    }


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
def fmt(value: float | None, unit: str) -> str:
    return (
        "n/a" if value is None else f"{value:,.3f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    )


def report(fig: dict, quick: bool) -> dict:
    rows = [
        ("appends/s, 1 room, ledger on", fig["appends_1_room_ledger_on_per_s"], "/s"),
        ("appends/s, 1 room, ledger off", fig["appends_1_room_ledger_off_per_s"], "/s"),
        ("appends/s, 16 rooms, ledger on", fig["appends_16_rooms_ledger_on_per_s"], "/s"),
        ("appends/s, 16 rooms, ledger off", fig["appends_16_rooms_ledger_off_per_s"], "/s"),
        ("ledger appends/s alone, 16 writers", fig["ledger_only_appends_16_writers_per_s"], "/s"),
        ("events/s, engine batch path, ledger on", fig["verify_fill_events_per_s"], "/s"),
        ("append cost of the ledger, 1 room", fig["append_added_cost_1_room_pct"], "%"),
        ("append cost of the ledger, 16 rooms", fig["append_added_cost_16_rooms_pct"], "%"),
        ("commit, synchronous=NORMAL (store)", fig["commit_normal_ms"], "ms"),
        ("commit, synchronous=FULL (store)", fig["commit_full_ms"], "ms"),
        ("commit, NORMAL (raw SQLite)", fig["raw_sqlite_commit_normal_ms"], "ms"),
        ("commit, FULL (raw SQLite)", fig["raw_sqlite_commit_full_ms"], "ms"),
        ("integrate 1M leaves (TreeBuilder)", fig["integrate_leaves_per_s"], "/s"),
        ("inclusion proof at 1M, generate", fig["inclusion_proof_generate_ms"], "ms"),
        ("inclusion proof at 1M, verify", fig["inclusion_proof_verify_ms"], "ms"),
        ("consistency proof to 1M, generate", fig["consistency_proof_generate_ms"], "ms"),
        ("consistency proof to 1M, verify", fig["consistency_proof_verify_ms"], "ms"),
        (f"verify --data-dir, {fig['verify_leaves']:,} leaves", fig["verify_s"], "s"),
        ("verify --data-dir, 1M leaves (scaled if --quick)", fig["verify_s_per_1m_leaves"], "s"),
        ("append -> covering checkpoint, load, p50", fig["covering_under_load_p50_ms"], "ms"),
        ("append -> covering checkpoint, load, p95", fig["covering_under_load_p95_ms"], "ms"),
        ("append -> covering checkpoint, load, max", fig["covering_under_load_max_ms"], "ms"),
        ("append -> covering checkpoint, lone, p50", fig["covering_sporadic_p50_ms"], "ms"),
        ("append -> covering checkpoint, lone, max", fig["covering_sporadic_max_ms"], "ms"),
        ("send msg/s, 1 sender, ledger on", fig["send_1_sender_ledger_on_msgs_per_s"], "/s"),
        ("send msg/s, 1 sender, ledger off", fig["send_1_sender_ledger_off_msgs_per_s"], "/s"),
        ("send msg/s, 10 senders, ledger on", fig["send_10_senders_ledger_on_msgs_per_s"], "/s"),
        ("send msg/s, 10 senders, ledger off", fig["send_10_senders_ledger_off_msgs_per_s"], "/s"),
        ("send cost of the ledger, 1 sender", fig["send_added_cost_1_sender_pct"], "%"),
        ("send cost of the ledger, 10 senders", fig["send_added_cost_10_senders_pct"], "%"),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value, unit in rows:
        print(f"{label:<{width}}  {fmt(value, unit)}")
    goals = {
        # The ledger's own append (the leaf and its transaction), as a log is usually measured.
        "ledger_appends_per_s_at_least_5000": fig["ledger_only_appends_16_writers_per_s"]
        >= GOAL_APPENDS_PER_S,
        # Events persisted with their leaves through the room engine's batch path (createRoom's
        # RoomBatch: build, auth, sign, persist). Single sends through the engine (the rows
        # "appends/s, N rooms") are bounded by building and signing each event, at the same
        # rate with the ledger off; they are figures, not this goal.
        "persist_path_events_per_s_at_least_5000": fig["verify_fill_events_per_s"]
        >= GOAL_APPENDS_PER_S,
        "send_added_cost_under_5_pct": max(
            fig["send_added_cost_1_sender_pct"], fig["send_added_cost_10_senders_pct"]
        )
        < 5,
        # Measured at 1M leaves; --quick scales its smaller database's time to 1M.
        "local_verify_1m_leaves_under_30_s": fig["verify_s_per_1m_leaves"] < 30,
        "covering_checkpoint_within_1_s": max(
            fig["covering_under_load_max_ms"], fig["covering_sporadic_max_ms"]
        )
        <= 1000,
    }
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'MISSED'}")

    def rounded(d: dict) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}

    return {"quick": quick, "figures": rounded(fig), "goals": goals}


async def run(work: Path, quick: bool) -> dict:
    fig: dict = {}
    if quick:
        fig |= await bench_appends(work, 3, 200, 30)
        fig |= await bench_durable(work, 100, 2)
    else:
        fig |= await bench_appends(work, 10, 1000, 150)
        fig |= await bench_durable(work, 300, 5)
    fig |= bench_proofs(PROOF_TREE_SIZE, 50 if quick else 500)
    fig |= await bench_verify(work, VERIFY_LEAVES_QUICK if quick else PROOF_TREE_SIZE)
    if quick:
        fig |= await bench_covering(work, 2, 100, 2)
        fig |= await bench_sends(work, 2, 100, 15)
    else:
        fig |= await bench_covering(work, 15, 200, 10)
        fig |= await bench_sends(work, 9, 300, 60)
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bastion-bench-ledger-"))
    t0 = time.perf_counter()
    try:
        fig = asyncio.run(run(work, args.quick))
        fig["bench_run_s"] = time.perf_counter() - t0
    finally:
        if args.keep:
            print(f"data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    out = report(fig, args.quick)
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
