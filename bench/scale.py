"""Benchmark at scale: Bastion against Synapse, the same client load, in one run.

Starts Bastion and Synapse side by side with the helpers of ``bench/server.py`` (fresh SQLite
databases, 127.0.0.1, each in its own session, stopped by PID at the end) and measures:

(a) one user in N rooms (``--rooms``, default 1,000) with M messages each (``--messages``,
    default 50): the initial /sync of a fresh device of that user (default filter; median of
    ``--runs`` devices: each login is a new device, so no server-side response cache is reused),
    and the incremental /sync (``since`` the last batch, ``timeout=0``) right after a message is
    sent into one of the rooms (median of 4 x ``--runs``);
(b) a room with K members (``--members``, default 5,000) of whom S (``--syncers``, default 200)
    long-poll /sync (lazy-loaded members, timeline limit 10, as Element does): the time from the
    start of a send into the big room until every syncing member's /sync has returned the event
    (median and p95 over 4 x ``--runs`` sends, one at a time), and the initial /sync of a fresh
    device of a member that is not syncing, with the default filter (all 5,000 member events) and
    with lazy-loaded members (median of ``--runs``);
(c) memory: the resident set (VmRSS) of each server after both set-ups, and under the sync load
    of (b) (the highest VmRSS sampled every 0.25 s while the sends are measured, and VmHWM reset
    at the start of (b)).

Set-up goes through the Client-Server API only: registration (UIA, ``m.login.dummy``), createRoom,
/join and /send, run concurrently over at most ``--concurrency`` connections (aiohttp). It is not
part of the compared figures, but its duration and rates are reported. Users are created with the
cheapest password hashing each server allows (benchmark only): Bastion argon2id time 1, memory
8 KiB, 1 lane; Synapse ``bcrypt_rounds: 4``. Synapse's rate limits are raised (the same as
``bench/server.py``); both keep their defaults otherwise (presence on, as clients leave it). The
servers are set up and measured one at a time, never both under load at once.

Prints a table (Bastion, Synapse, ratio) with the issue's goals (each time at least 5x faster than
Synapse, memory at most a third of Synapse's), then one JSON object as the last line.

Run: python bench/scale.py [--quick] [--rooms N] [--messages M] [--members K] [--syncers S]
                           [--runs R] [--concurrency C] [--no-synapse]

``--no-synapse`` measures Bastion alone (for iterating on Bastion; no ratios, no goals).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server import (  # noqa: E402
    RATE_LIMITED,
    Api,
    Server,
    User,
    _stop_all,
    create_room,
    join,
    login,
    percentile,
    prepare_synapse,
    register,
    send,
    start_bastion,
    start_synapse,
    stop_process,
    sync,
    timeline_ids,
    wait_ready,
)

CHEAP_ARGON2 = (1, 8, 1)  # time cost, memory KiB, lanes: argon2's minimum
SYNAPSE_EXTRA = {"bcrypt_rounds": 4}  # bcrypt's minimum cost
LAZY = json.dumps(
    {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 10}}},
    separators=(",", ":"),
)
MEASURE_TIMEOUT_S = 120  # one fan-out: every syncer must have the event within this


@dataclass
class Plan:
    rooms: int
    messages: int
    members: int
    syncers: int
    runs: int
    concurrency: int


def cpu_ms(pid: int) -> float:
    """The CPU time (user + system) a process has used so far, in ms (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


async def bounded(n: int, items, fn, label: str = "") -> list:
    """``fn(item)`` for every item, at most ``n`` at a time; results in the items' order. With a
    ``label``, the progress is printed to stderr at every tenth of the items."""
    sem = asyncio.Semaphore(n)
    items = list(items)
    done = [0]
    t0 = time.perf_counter()
    step = max(1, len(items) // 10)

    async def one(item):
        async with sem:
            result = await fn(item)
        done[0] += 1
        if label and (done[0] % step == 0 or done[0] == len(items)):
            elapsed = time.perf_counter() - t0
            print(f"  {label}: {done[0]}/{len(items)} in {elapsed:.0f} s "
                  f"({done[0] / elapsed:.1f}/s)", file=sys.stderr, flush=True)  # fmt: skip
        return result

    return list(await asyncio.gather(*(one(i) for i in items)))


# ----------------------------------------------------------------------------------------------
# Set-up (through the Client-Server API)
# ----------------------------------------------------------------------------------------------
async def new_room(api: Api, user: User, n: int) -> str:
    """A private room; ``creation_content`` makes each create event distinct, so that concurrent
    creates by one user never derive the same room ID (a v12 room's ID is its create event's
    hash, and the create events of one user within one millisecond would otherwise be equal)."""
    _, r = await api.call(
        "POST", "/_matrix/client/v3/createRoom",
        {"preset": "private_chat", "name": f"room {n}", "creation_content": {"bench.n": n}},
        user.token,
    )  # fmt: skip
    return r["room_id"]


async def setup_many_rooms(api: Api, plan: Plan) -> dict:
    """One user, ``plan.rooms`` rooms, ``plan.messages`` messages in each (sent by that user)."""
    t0 = time.perf_counter()
    user = await register(api)
    rooms = await bounded(
        plan.concurrency,
        range(plan.rooms),
        lambda i: new_room(api, user, i),
        f"{api.base} createRoom",
    )
    t_rooms = time.perf_counter() - t0
    t1 = time.perf_counter()
    jobs = [(r, i) for i in range(plan.messages) for r in rooms]  # round-robin over the rooms
    await bounded(
        plan.concurrency,
        jobs,
        lambda j: send(api, user, j[0], f"message {j[1]} " + "lorem " * 8),
        f"{api.base} send",
    )
    t_msgs = time.perf_counter() - t1
    return {
        "user": user, "rooms": rooms,
        "setup_rooms_s": t_rooms, "setup_messages_s": t_msgs,
        "setup_messages_per_s": len(jobs) / t_msgs if t_msgs else 0.0,
    }  # fmt: skip


async def setup_big_room(api: Api, plan: Plan) -> dict:
    """An owner and ``plan.members`` users who join one public room."""
    t0 = time.perf_counter()
    owner = await register(api)
    members = await bounded(
        plan.concurrency, range(plan.members), lambda _: register(api), f"{api.base} register"
    )
    t_reg = time.perf_counter() - t0
    room_id = await create_room(api, owner)
    t1 = time.perf_counter()
    await bounded(plan.concurrency, members, lambda u: join(api, u, room_id), f"{api.base} join")
    t_join = time.perf_counter() - t1
    return {
        "owner": owner, "members": members, "room": room_id,
        "setup_register_s": t_reg, "setup_registers_per_s": (plan.members + 1) / t_reg,
        "setup_joins_s": t_join, "setup_joins_per_s": plan.members / t_join if t_join else 0.0,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------
async def fresh_device(api: Api, user: User) -> User:
    return User(user.user_id, await login(api, user.user_id))


async def timed_initial_sync(
    api: Api, user: User, flt: str | None, expect_room: str
) -> tuple[float, User, dict]:
    """Log in a new device of ``user`` and time its initial /sync."""
    device = await fresh_device(api, user)
    t0 = time.perf_counter()
    resp = await sync(api, device, None, 0, flt)
    elapsed = time.perf_counter() - t0
    if expect_room not in resp.get("rooms", {}).get("join", {}):
        raise RuntimeError("the initial sync lacks a joined room")
    return elapsed, device, resp


async def measure_many_rooms(srv: Server, api: Api, st: dict, plan: Plan) -> dict:
    user, rooms = st["user"], st["rooms"]
    initial: list[float] = []
    for _ in range(plan.runs):
        elapsed, device, resp = await timed_initial_sync(api, user, None, rooms[-1])
        initial.append(elapsed)
        if len(resp["rooms"]["join"]) != len(rooms):
            raise RuntimeError(f"initial sync shows {len(resp['rooms']['join'])} rooms")
    since = resp["next_batch"]
    incremental: list[float] = []
    rng = random.Random(7)
    cpu = 0.0
    for i in range(4 * plan.runs):
        room_id = rng.choice(rooms)
        event_id = await send(api, user, room_id, f"incremental {i}")
        c0 = cpu_ms(srv.pid)
        t0 = time.perf_counter()
        resp = await sync(api, device, since, 0)
        incremental.append(time.perf_counter() - t0)
        cpu += cpu_ms(srv.pid) - c0
        if event_id not in timeline_ids(resp, room_id):
            raise RuntimeError("the incremental sync lacks the new message")
        since = resp["next_batch"]
    return {
        "a_initial_sync_ms": statistics.median(initial) * 1000,
        "a_incremental_sync_ms": statistics.median(incremental) * 1000,
        "a_incremental_sync_cpu_ms": cpu / len(incremental),
    }


class Syncer:
    """A member long-polling /sync; records when each event of the room first reached it."""

    def __init__(self, api: Api, user: User, room_id: str) -> None:
        self.api, self.user, self.room_id = api, user, room_id
        self.seen: dict[str, float] = {}
        self.since = ""

    async def start(self) -> None:
        self.since = (await sync(self.api, self.user, None, 0, LAZY))["next_batch"]

    async def run(self) -> None:
        while True:
            resp = await sync(self.api, self.user, self.since, 30_000, LAZY)
            now = time.perf_counter()
            for event_id in timeline_ids(resp, self.room_id):
                self.seen.setdefault(event_id, now)
            self.since = resp["next_batch"]


async def measure_big_room(srv: Server, api: Api, st: dict, plan: Plan) -> dict:
    room_id, members, owner = st["room"], st["members"], st["owner"]
    out: dict = {}
    # Initial sync of a member who is not one of the syncers (fresh device per round).
    member = members[-1]
    for key, flt in (("b_initial_sync_full_ms", None), ("b_initial_sync_lazy_ms", LAZY)):
        times = [(await timed_initial_sync(api, member, flt, room_id))[0] for _ in range(plan.runs)]
        out[key] = statistics.median(times) * 1000

    syncers = [Syncer(api, u, room_id) for u in members[: plan.syncers]]
    await bounded(plan.concurrency, syncers, lambda s: s.start())
    srv.reset_peak()
    tasks = [asyncio.create_task(s.run()) for s in syncers]
    samples: list[float] = []

    async def sample() -> None:
        while True:
            samples.append(srv.rss_mib())
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.sleep(5)  # every long poll parked; presence of the syncers settled
        latencies: list[float] = []
        cpu = 0.0
        for i in range(4 * plan.runs):
            if any(t.done() for t in tasks):
                next(t for t in tasks if t.done()).result()  # raises the syncer's error
                raise RuntimeError("a syncer stopped")
            c0 = cpu_ms(srv.pid)
            t0 = time.perf_counter()
            event_id = await send(api, owner, room_id, f"fan-out {i}")
            deadline = time.monotonic() + MEASURE_TIMEOUT_S
            while not all(event_id in s.seen for s in syncers):
                if time.monotonic() > deadline:
                    missing = sum(event_id not in s.seen for s in syncers)
                    raise RuntimeError(f"{missing} syncers never got the event")
                await asyncio.sleep(0.002)
            latencies.append(max(s.seen[event_id] for s in syncers) - t0)
            cpu += cpu_ms(srv.pid) - c0
            await asyncio.sleep(0.5)  # let the syncers park again
        out["b_fanout_p50_ms"] = percentile(latencies, 0.5) * 1000
        out["b_fanout_p95_ms"] = percentile(latencies, 0.95) * 1000
        out["b_fanout_sends"] = len(latencies)
        out["b_fanout_cpu_ms"] = cpu / len(latencies)
        out["rss_sync_load_mib"] = max(samples)
        out["rss_peak_sync_load_mib"] = srv.hwm_mib()
    finally:
        sampler.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(sampler, *tasks, return_exceptions=True)
    return out


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
async def run(plan: Plan, work: Path, with_synapse: bool = True) -> tuple[dict, dict | None]:
    """Set up and measure Bastion, and Synapse too unless ``with_synapse`` is false (then the
    Synapse figures are None)."""
    syn_cfg, syn_port = prepare_synapse(work, SYNAPSE_EXTRA) if with_synapse else (None, 0)
    # Unbounded: the S long polls each hold a connection; set-up is bounded by ``bounded``.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bastion = start_bastion(work, CHEAP_ARGON2)
        await wait_ready(session, bastion)
        servers = [bastion]
        if syn_cfg is not None:
            synapse = start_synapse(syn_cfg, syn_port)
            await wait_ready(session, synapse)
            servers.append(synapse)
        apis = {srv.name: Api(session, srv) for srv in servers}
        setup: dict[str, dict] = {}
        for srv in servers:
            api = apis[srv.name]
            t0 = time.perf_counter()
            a = await setup_many_rooms(api, plan)
            b = await setup_big_room(api, plan)
            setup[srv.name] = {"a": a, "b": b}
            for part in (a, b):
                srv.figures.update({k: v for k, v in part.items() if k.startswith("setup_")})
            srv.figures["setup_total_s"] = time.perf_counter() - t0
            print(f"{srv.name}: set-up took {srv.figures['setup_total_s']:.0f} s", file=sys.stderr)
        await asyncio.sleep(3)
        for srv in servers:
            srv.figures["rss_after_setup_mib"] = srv.rss_mib()
        for srv in servers:
            srv.figures.update(
                await measure_many_rooms(srv, apis[srv.name], setup[srv.name]["a"], plan)
            )
        for srv in servers:
            srv.figures.update(
                await measure_big_room(srv, apis[srv.name], setup[srv.name]["b"], plan)
            )
    for srv in servers:
        stop_process(srv.proc)
    return bastion.figures, (servers[1].figures if len(servers) > 1 else None)


ROWS = [
    ("a_initial_sync_ms", "(a) initial /sync, 1 user in {rooms} rooms (ms)", "time"),
    ("a_incremental_sync_ms", "(a) incremental /sync after 1 message (ms)", "time"),
    ("b_fanout_p50_ms", "(b) send -> all {syncers} syncers have it, p50 (ms)", "time"),
    ("b_fanout_p95_ms", "(b) send -> all {syncers} syncers have it, p95 (ms)", "time"),
    ("b_initial_sync_full_ms", "(b) initial /sync in {members}-member room, full (ms)", "time"),
    ("b_initial_sync_lazy_ms", "(b) initial /sync, lazy-loaded members (ms)", "time"),
    ("rss_after_setup_mib", "(c) RSS after set-up (MiB)", "memory"),
    ("rss_sync_load_mib", "(c) RSS under the sync load, highest sample (MiB)", "memory"),
    ("rss_peak_sync_load_mib", "(c) RSS peak under the sync load, VmHWM (MiB)", "memory"),
    ("a_incremental_sync_cpu_ms", "(a) incremental: server CPU per sync (ms; not a goal)", "info"),
    ("b_fanout_cpu_ms", "(b) fan-out: server CPU per send (ms; not a goal)", "info"),
    ("setup_total_s", "set-up, total (s; not a goal)", "info"),
    ("setup_messages_per_s", "set-up: messages/s, {concurrency} connections", "info-up"),
    ("setup_registers_per_s", "set-up: registrations/s", "info-up"),
    ("setup_joins_per_s", "set-up: joins into the big room/s", "info-up"),
]


def report_alone(b: dict, plan: Plan) -> dict:
    """The Bastion figures alone (``--no-synapse``): no ratios, no goals."""
    sizes = {
        "rooms": plan.rooms, "messages": plan.messages, "members": plan.members,
        "syncers": plan.syncers, "concurrency": plan.concurrency,
    }  # fmt: skip
    labels = [label.format(**sizes) for _, label, _ in ROWS]
    width = max(len(label) for label in labels)
    print(f"{'':<{width}}  {'Bastion':>10}")
    for (key, _, _), label in zip(ROWS, labels, strict=True):
        print(f"{label:<{width}}  {b[key]:>10.1f}")
    print(
        f"Sizes: {plan.rooms} rooms x {plan.messages} messages; big room of {plan.members} "
        f"members, {plan.syncers} syncing; {plan.runs} initial syncs per figure, "
        f"{4 * plan.runs} incremental syncs and fan-out sends. Bastion only (--no-synapse)."
    )
    return {
        "sizes": {**sizes, "runs": plan.runs},
        "bastion": {k: round(v, 3) if isinstance(v, float) else v for k, v in b.items()},
    }


def report(b: dict, s: dict, plan: Plan) -> dict:
    ratios: dict[str, float | None] = {}
    goals: dict[str, bool] = {}
    sizes = {
        "rooms": plan.rooms, "messages": plan.messages, "members": plan.members,
        "syncers": plan.syncers, "concurrency": plan.concurrency,
    }  # fmt: skip
    labels = [label.format(**sizes) for _, label, _ in ROWS]
    width = max(len(label) for label in labels)
    print(f"{'':<{width}}  {'Bastion':>10}  {'Synapse':>10}  ratio     goal")
    for (key, _, kind), label in zip(ROWS, labels, strict=True):
        up = kind == "info-up"
        num, den = (b[key], s[key]) if up else (s[key], b[key])
        r = num / den if den else None
        ratios[key] = r
        goal = ""
        if kind == "time":
            goals[f"{key}_5x_faster"] = r is not None and r >= 5
            goal = ">= 5x " + ("met" if goals[f"{key}_5x_faster"] else "MISSED")
        elif kind == "memory":
            goals[f"{key}_a_third"] = r is not None and r >= 3
            goal = ">= 3x " + ("met" if goals[f"{key}_a_third"] else "MISSED")
        what = "B/S" if up else "S/B"
        shown = f"{r:6.2f}x ({what})" if r is not None else "     n/a"
        print(f"{label:<{width}}  {b[key]:>10.1f}  {s[key]:>10.1f}  {shown}  {goal}")
    print(
        f"Sizes: {plan.rooms} rooms x {plan.messages} messages; big room of {plan.members} "
        f"members, {plan.syncers} syncing; {plan.runs} initial syncs per figure, "
        f"{4 * plan.runs} incremental syncs and fan-out sends. Ratios: Synapse / Bastion for "
        "times and memory (higher is better for Bastion)."
    )
    print(
        "Bastion: argon2id t=1 m=8KiB p=1 (benchmark only). Synapse: bcrypt_rounds 4 (benchmark "
        "only), rate limits raised to 1000/s, burst 1000: " + ", ".join(RATE_LIMITED) + ". Both "
        "on SQLite, 127.0.0.1, one aiohttp client process; presence left on."
    )

    def rounded(d: dict) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}

    return {
        "sizes": {**sizes, "runs": plan.runs},
        "bastion": rounded(b),
        "synapse": rounded(s),
        "ratios_synapse_over_bastion": rounded(
            {k: v for k, v in ratios.items() if not k.endswith("_per_s")}
        ),
        "goals": goals,
        "bastion_argon2": "argon2id time_cost=1 memory_cost=8KiB parallelism=1 (benchmark only)",
        "synapse_bcrypt_rounds": 4,
        "synapse_rate_limits_raised_to_1000_per_s": list(RATE_LIMITED),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 20 rooms x 5 messages, 100 members, 20 syncing")  # fmt: skip
    parser.add_argument("--rooms", type=int, help="rooms of the user of (a) (default 1000)")
    parser.add_argument("--messages", type=int, help="messages per room in (a) (default 50)")
    parser.add_argument("--members", type=int, help="members of the big room (default 5000)")
    parser.add_argument("--syncers", type=int, help="members long-polling /sync (default 200)")
    parser.add_argument(
        "--runs", type=int, help="initial syncs per figure; 4x as many incremental syncs and "
        "fan-out sends (default 5; 3 with --quick)",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=16,
                        help="connections used by the set-up (default 16)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--no-synapse", action="store_true",
                        help="measure Bastion alone (no comparison, no goals)")  # fmt: skip
    args = parser.parse_args()
    quick = (20, 5, 100, 20, 3) if args.quick else (1000, 50, 5000, 200, 5)
    plan = Plan(
        rooms=args.rooms or quick[0], messages=args.messages or quick[1],
        members=args.members or quick[2], syncers=args.syncers or quick[3],
        runs=args.runs or quick[4], concurrency=args.concurrency,
    )  # fmt: skip
    if min(plan.rooms, plan.messages, plan.members, plan.syncers, plan.runs) < 1:
        parser.error("every size must be at least 1")
    if plan.syncers >= plan.members:
        parser.error("--syncers must be smaller than --members (one member is kept for the "
                     "initial sync)")  # fmt: skip
    if not 1 <= plan.concurrency <= 256:
        parser.error("--concurrency must be 1 to 256")
    # SIGTERM stops both servers too (the default would leave them running).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="bastion-scale-"))
    t0 = time.monotonic()
    try:
        b, s = asyncio.run(run(plan, work, with_synapse=not args.no_synapse))
    finally:
        _stop_all()
        if args.keep:
            print(f"data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    out = report(b, s, plan) if s is not None else report_alone(b, plan)
    out["wall_clock_s"] = round(time.monotonic() - t0, 1)
    print(f"Whole run: {out['wall_clock_s']:.0f} s.")
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
