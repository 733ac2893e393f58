"""Benchmark of the guard's content classifier: quality on the held-out split, decision latency,
and the added cost per message send.

1. Quality: per source, recall and precision at 1 % false positives (the source's own
   threshold) and at the shipped ``hold``/``block`` thresholds, on the held-out split (by
   source and near-duplicate group; the split is read from the shipped ``eval.json``), with the
   shipped scoring function. Needs the shared datasets (``--datasets``).
2. Decision latency per message (p50, p99, max), measured in-process:
   - the classifier: ``ContentClassifier.signals(ctx)`` on every held-out message as an
     ``m.room.message`` (text extraction, the model, the URL signals);
   - the whole ``GuardService.before_local_event`` on a running server (its event loop, its
     store), for held-out messages sent by 20 users into 20 rooms (at most a few messages per
     user and room, so the flood detectors do not turn the run into a record-writing one);
     messages the guard refuses (403) are timed too (their decision is recorded).
3. Added cost per message send: two ``bastion serve`` processes, the guard on and off
   (``guard.enabled``), both with ``[guard.rate_limits] enabled = false`` and the detectors
   switched off in the benchmark room (room settings), as the Synapse comparison lifts its
   rate limits; the two loads of bench/server.py's message benchmark — one sender, and ten
   senders at once in one room — each sender sending harmless messages (chat with links, code,
   prices) one after the other; runs alternate between the two servers (10 runs each, in pairs); the
   figures are the median messages/s, the added milliseconds per send, the added cost as the
   median over the pairs of runs, and the servers' own CPU time per send (read from ``/proc``:
   what the guard costs the server, less moved by other load on the machine).

Goals: classifier p99 <= 5 ms; added send cost < 10 %. Prints a table, then every figure as
one JSON object on the last line.

Run: python bench/guard.py [--quick] [--datasets DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bastion.guard.classifier import train as T  # noqa: E402
from bastion.guard.classifier.model import shipped_model  # noqa: E402
from bastion.guard.config import parse_guard_config  # noqa: E402
from bastion.guard.content import ContentClassifier  # noqa: E402
from bastion.guard.signals import EventContext  # noqa: E402
from bench.server import (  # noqa: E402
    PASSWORD,
    Api,
    Server,
    User,
    create_room,
    login,
    percentile,
    register,
    send,
    spawn_bastion,
    stop_process,
    wait_ready,
)

WEIGHTS = ROOT / "src" / "bastion" / "guard" / "classifier" / "weights"
#: The detectors by name (bastion.guard.detectors), switched off in the send benchmark's room.
DETECTORS = (
    "message_flood", "mention_spam", "join_wave", "invite_fanout", "membership_churn",
    "first_message", "link_blast", "density", "length", "origin_flood",
)  # fmt: skip
#: Harmless chat of the kinds the classifier must let through (links, code, prices), written
#: for this benchmark.
CHAT = (
    "morning all, standup in 10 minutes",
    "has anyone tried the new release? notes at https://github.com/example/project/releases",
    "the build fails with `TypeError: cannot read property 'map' of undefined` on line 42",
    "lunch was $12.50 each, I'll send the split later",
    "try `git rebase -i HEAD~3` and squash the fixups",
    "docs for that are on https://developer.mozilla.org/en-US/docs/Web/API/fetch",
    "meetup moved to thursday 7pm, same place",
    "I pushed a fix, can you review https://gitlab.com/example/app/-/merge_requests/318 ?",
    "the server has 64 GB of RAM and 8 cores, should be plenty",
    "thanks! that worked",
)


def rate_limits_off() -> dict[str, Any]:
    """``[guard.rate_limits] enabled = false`` when this tree's rate-limit part knows the key
    (the merged guard); ``{}`` otherwise (the skeleton's rate limits limit nothing)."""
    try:
        parse_guard_config({"rate_limits": {"enabled": False}})
    except ValueError:
        return {}
    return {"rate_limits": {"enabled": False}}


def pct(values: list[float], p: float) -> float:
    return round(percentile(values, p), 4) if values else 0.0


# ----------------------------------------------------------------------------------------------
# 1 and 2a: quality and the classifier's latency (in-process, no server)
# ----------------------------------------------------------------------------------------------
def held_out(datasets: Path) -> list[T.Row]:
    rows = T.load_rows(datasets)
    T.apply_bitmap(rows, json.loads((WEIGHTS / "eval.json").read_text())["split_bitmap"])
    return [r for r in rows if r.test]


def quality(rows: list[T.Row]) -> dict[str, Any]:
    model = shipped_model()
    scores = T.shipped_scores(None, rows)
    return T.evaluate(rows, scores, model.hold, model.block)


def classifier_latency(rows: list[T.Row], limit: int) -> dict[str, Any]:
    hs = SimpleNamespace(config=SimpleNamespace(guard_config=parse_guard_config({})))
    hs.guard = SimpleNamespace(room_settings=lambda room_id: {})
    clf = ContentClassifier(hs)  # type: ignore[arg-type]
    step = max(1, len(rows) // limit)
    sample = rows[::step][:limit]
    times: list[float] = []
    now = int(time.time() * 1000)
    for r in sample:
        ctx = EventContext(
            sender="@bench:localhost", room_id="!bench:localhost", etype="m.room.message",
            content={"msgtype": "m.text", "body": r.text}, state_key=None, now_ms=now,
            local=True, origin="localhost", sender_created_ms=now - 86_400_000 * 30,
        )  # fmt: skip
        t0 = time.perf_counter()
        clf.signals(ctx)
        times.append((time.perf_counter() - t0) * 1000)
    return {"messages": len(times), "p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99),
            "max_ms": round(max(times), 3) if times else 0.0}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# 2b: the whole before_local_event on a running server
# ----------------------------------------------------------------------------------------------
def guard_latency(rows: list[T.Row], limit: int, work: Path) -> dict[str, Any]:
    from bastion.errors import MatrixError
    from tests.support.harness import ServerThread

    server = ServerThread(work / "inproc", guard=rate_limits_off()).start()
    try:
        hs = server.hs
        assert hs is not None and server.loop is not None

        async def setup() -> tuple[list[str], list[str]]:
            users, rooms = [], []
            async with aiohttp.ClientSession() as s:
                api = Api(s, SimpleNamespace(base_url=server.base_url))  # type: ignore[arg-type]
                made = [await register(api) for _ in range(20)]
                for i in range(20):
                    rooms.append(await create_room(api, made[i]))
                for k, u in enumerate(made):
                    for j, room in enumerate(rooms):
                        if j != k:  # the creator is in already
                            await api.call("POST", f"/_matrix/client/v3/join/{room}", {}, u.token)
                users = [u.user_id for u in made]
            return users, rooms

        users, rooms = asyncio.run_coroutine_threadsafe(setup(), server.loop).result(600)
        step = max(1, len(rows) // limit)
        sample = rows[::step][:limit]

        async def run() -> tuple[list[float], list[float], int]:
            ok_t: list[float] = []
            refused_t: list[float] = []
            errors = 0
            for i, r in enumerate(sample):
                sender = users[i % len(users)]
                room = rooms[(i // len(users)) % len(rooms)]
                content = {"msgtype": "m.text", "body": r.text}
                t0 = time.perf_counter()
                try:
                    await hs.guard.before_local_event(sender, room, "m.room.message", content)
                    ok_t.append((time.perf_counter() - t0) * 1000)
                except MatrixError:
                    refused_t.append((time.perf_counter() - t0) * 1000)
                    errors += 1
            return ok_t, refused_t, errors

        ok_t, refused_t, refused = asyncio.run_coroutine_threadsafe(run(), server.loop).result(900)
    finally:
        server.stop()
    both = ok_t + refused_t
    return {
        "messages": len(both), "refused": refused,
        "p50_ms": pct(both, 0.5), "p99_ms": pct(both, 0.99),
        "allowed_p50_ms": pct(ok_t, 0.5), "allowed_p99_ms": pct(ok_t, 0.99),
        "refused_p50_ms": pct(refused_t, 0.5), "refused_p99_ms": pct(refused_t, 0.99),
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# 3: added cost per send (two servers, guard on/off, same run)
# ----------------------------------------------------------------------------------------------
def start_server(work: Path, name: str, guard_on: bool) -> Server:
    """A Bastion subprocess with the guard on or off, and an admin (who owns the benchmark
    room) made before it starts."""
    data = work / name
    server = spawn_bastion(
        work, name,
        f"[guard]\nenabled = {'true' if guard_on else 'false'}\n"
        + ("[guard.rate_limits]\nenabled = false\n" if rate_limits_off() else ""),
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "bastion.cli", "admin", "create-user", "--data-dir", str(data),
         "--admin", "--password", PASSWORD, "benchadmin"],
        check=True, capture_output=True, cwd=data, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    return server


#: Concurrent senders in the second send benchmark (as bench/server.py's "ten senders").
SENDERS = 10


async def prepare(api: Api) -> tuple[list[User], str]:
    """The room of the send benchmark, its detectors off, and its senders: the admin and
    :data:`SENDERS` - 1 members."""
    token = await login(api, "@benchadmin:localhost")
    user = User("@benchadmin:localhost", token)
    room = await create_room(api, user)
    settings = {"detectors": dict.fromkeys(DETECTORS, False)}
    path = f"/_bastion/admin/v1/guard/rooms/{urllib.parse.quote(room, safe='')}/settings"
    await api.call("PUT", path, settings, token)
    users = [user]
    for _ in range(SENDERS - 1):
        member = await register(api)
        await api.call("POST", f"/_matrix/client/v3/join/{room}", {}, member.token)
        users.append(member)
    return users, room


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def send_rate(
    api: Api, users: list[User], room: str, n: int, pid: int
) -> tuple[float, float]:
    """Messages per second of ``len(users)`` concurrent senders sending ``n`` messages in all,
    each one after the other, and the server's CPU milliseconds per message."""
    await asyncio.gather(*(send(api, u, room, "warm-up") for u in users))
    per_user = n // len(users)

    async def sender(k: int, user: User) -> None:
        for i in range(per_user):
            await send(api, user, room, CHAT[(i + k) % len(CHAT)])

    c0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(sender(k, u) for k, u in enumerate(users)))
    rate = per_user * len(users) / (time.perf_counter() - t0)
    return rate, (cpu_seconds(pid) - c0) * 1000 / (per_user * len(users))


async def send_cost(work: Path, n: int, runs: int) -> dict[str, Any]:
    """Both loads of bench/server.py's message benchmark, guard on and off, in paired runs."""
    on = start_server(work, "guard-on", True)
    off = start_server(work, "guard-off", False)
    out: dict[str, Any] = {"messages_per_run": n, "runs": runs}
    try:
        async with aiohttp.ClientSession() as s:
            apis = {srv.name: Api(s, srv) for srv in (on, off)}
            for srv in (on, off):
                await wait_ready(s, srv)
            ctx = {name: await prepare(api) for name, api in apis.items()}
            pids = {on.name: on.proc.pid, off.name: off.proc.pid}
            for load, senders in (("one_sender", 1), ("ten_senders", SENDERS)):
                rates: dict[str, list[float]] = {"guard-on": [], "guard-off": []}
                cpu: dict[str, list[float]] = {"guard-on": [], "guard-off": []}
                for i in range(runs):
                    order = ("guard-on", "guard-off") if i % 2 == 0 else ("guard-off", "guard-on")
                    for name in order:
                        users, room = ctx[name]
                        rate, cpu_ms = await send_rate(
                            apis[name], users[:senders], room, n, pids[name]
                        )
                        rates[name].append(rate)
                        cpu[name].append(cpu_ms)
                out[load] = _cost(rates, cpu, runs)
    finally:
        stop_process(on.proc)
        stop_process(off.proc)
    return out


def _cost(rates: dict[str, list[float]], cpu: dict[str, list[float]], runs: int) -> dict[str, Any]:
    m_on = statistics.median(rates["guard-on"])
    m_off = statistics.median(rates["guard-off"])
    c_on = statistics.median(cpu["guard-on"])
    c_off = statistics.median(cpu["guard-off"])
    # Each run of one server is paired with the other's run next to it (the machine's load
    # drifts; a pair shares it): the added cost is the median over the pairs.
    pairs = [(rates["guard-off"][i] / rates["guard-on"][i] - 1) for i in range(runs)]
    cpu_pairs = [(cpu["guard-on"][i] / cpu["guard-off"][i] - 1) for i in range(runs)]
    return {
        "guard_on_msgs_per_s": round(m_on, 1), "guard_off_msgs_per_s": round(m_off, 1),
        "added_ms_per_send": round(1000 / m_on - 1000 / m_off, 3),
        "added_cost_pct": round(100 * statistics.median(pairs), 1),
        "added_cost_pct_per_pair": [round(100 * x, 1) for x in pairs],
        "server_cpu_ms_per_send_on": round(c_on, 3), "server_cpu_ms_per_send_off": round(c_off, 3),
        "added_server_cpu_pct": round(100 * statistics.median(cpu_pairs), 1),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smaller counts)")
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    args = parser.parse_args()
    datasets = args.datasets
    if not datasets.is_dir():
        datasets = ROOT.parent.parent / "shared" / "datasets"
    rows = held_out(datasets)
    q = quality(rows)
    print(T.markdown_table({"test": q}))
    lat = classifier_latency(rows, 2000 if args.quick else len(rows))
    print(f"classifier.signals: {lat}")
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        work = Path(tmp)
        whole = guard_latency(rows, 400 if args.quick else 2000, work)
        print(f"before_local_event: {whole}")
        cost = asyncio.run(send_cost(work, 100 if args.quick else 400, 2 if args.quick else 10))
        print(f"send cost: {cost}")
    model = shipped_model()
    out = {
        "rate_limits_lifted": bool(rate_limits_off()),
        "thresholds": {"hold": model.hold, "block": model.block},
        "quality": q,
        "classifier_latency": lat,
        "before_local_event_latency": whole,
        "send_cost": cost,
        "goals": {
            "classifier_p99_le_5ms": lat["p99_ms"] <= 5.0,
            "before_local_event_p99_le_5ms": whole["p99_ms"] <= 5.0,
            "added_send_cost_lt_10pct": max(
                cost["one_sender"]["added_cost_pct"], cost["ten_senders"]["added_cost_pct"]
            )
            < 10.0,
        },
    }
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
