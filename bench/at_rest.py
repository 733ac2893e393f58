"""Benchmark of encryption at rest (issue 10): what SQLCipher costs bench/server.py's figures.

Two Bastion subprocesses started as bench/server.py starts one (rate limits lifted), one with
``at_rest_key`` (the database encrypted with SQLCipher, the key from an environment variable)
and one without, measured in alternating rounds in the same run:

(a) messages/s, one sender in one room (one commit per message);
(b) messages/s, ten senders at once in one room (the writer's group commit);
(c) a fresh member's initial /sync of a room of a few hundred messages (seconds, median).

Synapse has no encryption at rest of its own (its operators encrypt the disk), so there is no
Synapse figure beside these. Goal (issue 10): under 15 % added cost. Prints a table, then the
figures as one JSON object on the last line. Each figure is the median over the rounds; on a
shared machine the on/off ratio still moves by several percent from run to run.

Run: python bench/at_rest.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.server import (  # noqa: E402
    Api,
    Server,
    bench_initial_sync,
    bench_send_many,
    bench_send_one,
    create_room,
    join,
    register,
    send,
    spawn_bastion,
    stop_process,
    wait_ready,
)

#: The environment variable the encrypted server reads its key from (a benchmark key).
KEY_ENV = "BASTION_BENCH_AT_REST_KEY"


def start_bastion(work: Path, name: str, encrypted: bool) -> Server:
    """A Bastion subprocess as bench/server.py starts one, encrypted at rest or not."""
    return spawn_bastion(
        work, name,
        (f'at_rest_key = "env:{KEY_ENV}"\n' if encrypted else "")
        + "[guard.rate_limits]\nenabled = false\n"  # as bench/server.py
        "[guard.registration]\nper_address_burst = 0\n",
    )  # fmt: skip


async def run(work: Path, rounds: int, one_n: int, per_sender: int, fill: int) -> dict:
    os.environ[KEY_ENV] = os.urandom(32).hex()
    servers = [start_bastion(work, "encrypted", True), start_bastion(work, "plain", False)]
    figs: dict[str, dict[str, list[float]]] = {
        s.name: {"one": [], "ten": [], "sync": []} for s in servers
    }
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
                sync_room = await create_room(api, users[0])
                for i in range(fill):
                    await send(api, users[0], sync_room, f"history message {i}")
                fresh = [await register(api) for _ in range(rounds * 3)]
                setup[srv.name] = (api, users, one_room, many_room, sync_room, fresh)
            for r in range(rounds):
                order = servers if r % 2 == 0 else servers[::-1]
                for srv in order:
                    api, users, one_room, many_room, sync_room, fresh = setup[srv.name]
                    f = figs[srv.name]
                    f["one"].append(await bench_send_one(api, users[0], one_room, one_n, 120))
                    f["ten"].append(await bench_send_many(api, users, many_room, per_sender, 120))
                    f["sync"] += await bench_initial_sync(
                        api, sync_room, fresh[r * 3 : r * 3 + 3], None, 120
                    )
    finally:
        for srv in servers:
            stop_process(srv.proc)
    med = {name: {k: statistics.median(v) for k, v in f.items()} for name, f in figs.items()}
    enc, plain = med["encrypted"], med["plain"]
    return {
        "rounds": rounds,
        "send_1_sender_encrypted_msgs_per_s": round(enc["one"], 1),
        "send_1_sender_plain_msgs_per_s": round(plain["one"], 1),
        "send_10_senders_encrypted_msgs_per_s": round(enc["ten"], 1),
        "send_10_senders_plain_msgs_per_s": round(plain["ten"], 1),
        "initial_sync_encrypted_s": round(enc["sync"], 4),
        "initial_sync_plain_s": round(plain["sync"], 4),
        "added_cost_1_sender_pct": round((plain["one"] / enc["one"] - 1) * 100, 1),
        "added_cost_10_senders_pct": round((plain["ten"] / enc["ten"] - 1) * 100, 1),
        "added_cost_initial_sync_pct": round((enc["sync"] / plain["sync"] - 1) * 100, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smaller counts)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-at-rest-") as tmp:
        if args.quick:
            fig = asyncio.run(run(Path(tmp), rounds=2, one_n=100, per_sender=20, fill=100))
        else:
            fig = asyncio.run(run(Path(tmp), rounds=6, one_n=500, per_sender=100, fill=400))
    worst = max(fig["added_cost_1_sender_pct"], fig["added_cost_10_senders_pct"],
                fig["added_cost_initial_sync_pct"])  # fmt: skip
    print("| figure | encrypted | plain | added cost |")
    print("|---|---|---|---|")
    for label, key, unit in (("send, 1 sender", "send_1_sender", "msgs/s"),
                             ("send, 10 senders", "send_10_senders", "msgs/s")):  # fmt: skip
        print(f"| {label} | {fig[key + '_encrypted_msgs_per_s']} {unit} | "
              f"{fig[key + '_plain_msgs_per_s']} {unit} | "
              f"{fig['added_cost_' + key.replace('send_', '') + '_pct']} % |")  # fmt: skip
    print(
        f"| initial sync | {fig['initial_sync_encrypted_s'] * 1000:.1f} ms | "
        f"{fig['initial_sync_plain_s'] * 1000:.1f} ms | {fig['added_cost_initial_sync_pct']} % |"
    )
    print(f"goal: added cost under 15 %: {'met' if worst < 15 else 'NOT met'} (worst {worst} %)")
    print(json.dumps({**fig, "goal_lt_15pct": worst < 15}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
