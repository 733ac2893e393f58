"""Benchmark of the compliance tools (issue 10): a user's export, the retention purge and a
user's erasure, on rooms of many real events.

In process, no HTTP: each measurement gets a fresh data directory whose rooms are built,
authorised, signed and persisted by the room engine (bench/ledger.py's ``fill_rooms``: rooms of
5,000 events sent by one user, each event with its ledger leaf), and a few uploads.

(a) export: the user's whole archive (every event they sent and could see, their files) —
    seconds, events/s and MB/s of archive;
(b) retention: a server policy under which every message has expired, one purge run — events
    stripped/s, and the longest single write the purge held the writer for;
(c) erasure: the same user erased after the export — seconds in all (events stripped,
    rows deleted, then the disk hygiene: WAL truncation and VACUUM), and the database's size.

Synapse has no like-for-like figures: its export is an offline command that leaves media out,
its "erasure" hides events from new joiners only, and its retention deletes events; so only
Bastion's own figures are printed. The last line is the figures as one JSON object.

Run: python bench/compliance.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bastion.services.export import drive  # noqa: E402
from bench.ledger import USER, InProcess, fill_rooms  # noqa: E402

#: Uploads of the benchmark user (bytes each).
UPLOADS = 8
UPLOAD_BYTES = 1024 * 1024


class Server(InProcess):
    """bench/ledger.py's in-process homeserver (ledger on), with ``UPLOADS`` files of its user
    and the given ``[retention]`` table."""

    def __init__(self, work: Path, retention: dict | None = None) -> None:
        super().__init__(work, ledger=True, retention=retention or {})

    async def __aenter__(self) -> Server:
        await super().__aenter__()
        hs = self.hs
        for _ in range(UPLOADS):
            data = os.urandom(UPLOAD_BYTES)

            async def chunks(d: bytes = data):
                yield d

            await hs.media.upload(USER, chunks(), len(data), "application/octet-stream", "f")
        return self


async def bench_export_and_erasure(work: Path, events: int) -> dict:
    async with Server(work / "export") as srv:
        await fill_rooms(srv, events)  # type: ignore[arg-type]
        hs = srv.hs
        out = work / "export.zip"
        t0 = time.perf_counter()
        result = drive(hs.export.steps(USER, out))
        export_s = time.perf_counter() - t0
        sent = result.counts.get("events_sent", 0)
        db = srv.config.database_path
        size_before = db.stat().st_size
        t0 = time.perf_counter()
        summary = await hs.erasure.erase(USER, actor="cli")
        erase_s = time.perf_counter() - t0
    return {
        "export_s": round(export_s, 2),
        "export_events_sent": sent,
        "export_events_per_s": round(sent / export_s),
        "export_archive_mb": round(result.size / 1e6, 1),
        "export_mb_per_s": round(result.size / 1e6 / export_s, 1),
        "erasure_s": round(erase_s, 2),
        "erasure_events_stripped": summary["counts"].get("events_stripped"),
        "erasure_events_per_s": round(summary["counts"].get("events_stripped", 0) / erase_s),
        "erasure_disk_hygiene": summary["disk"],
        "database_mb_before_erasure": round(size_before / 1e6, 1),
    }


async def bench_retention(work: Path, events: int) -> dict:
    policy = {"enabled": True, "default_max_lifetime": 1, "purge_interval": "1d",
              "purge_batch_size": 500}  # fmt: skip
    async with Server(work / "retention", policy) as srv:
        await fill_rooms(srv, events)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # every message is now older than its 1 ms lifetime
        store = srv.hs.store
        longest = 0.0
        original = store.transaction

        async def timed(fn, durable=False):  # each write of the purge, timed on the writer
            def run(conn):
                nonlocal longest
                t = time.perf_counter()
                try:
                    return fn(conn)
                finally:
                    longest = max(longest, time.perf_counter() - t)

            return await original(run, durable)

        store.transaction = timed  # type: ignore[method-assign]
        t0 = time.perf_counter()
        report = await srv.hs.retention.run_once()
        purge_s = time.perf_counter() - t0
        store.transaction = original  # type: ignore[method-assign]
    return {
        "retention_events_stripped": report.events,
        "retention_s": round(purge_s, 2),
        "retention_events_per_s": round(report.events / purge_s) if purge_s else None,
        "retention_longest_write_ms": round(longest * 1000, 1),
    }


async def run(work: Path, events: int) -> dict:
    return {"events": events, **await bench_export_and_erasure(work, events),
            **await bench_retention(work, events)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smaller counts)")
    args = parser.parse_args()
    events = 5_000 if args.quick else 50_000
    with tempfile.TemporaryDirectory(prefix="bench-compliance-") as tmp:
        fig = asyncio.run(run(Path(tmp), events))
    print(f"| figure ({events} events, {UPLOADS} uploads of 1 MiB) | Bastion |")
    print("|---|---|")
    print(
        f"| export | {fig['export_s']} s, {fig['export_events_per_s']} events/s, "
        f"{fig['export_mb_per_s']} MB/s ({fig['export_archive_mb']} MB) |"
    )
    print(
        f"| retention purge | {fig['retention_events_per_s']} events/s, longest write "
        f"{fig['retention_longest_write_ms']} ms |"
    )
    print(f"| erasure | {fig['erasure_s']} s ({fig['erasure_events_stripped']} events, "
          f"{fig['database_mb_before_erasure']} MB database; disk hygiene "
          f"{fig['erasure_disk_hygiene']}) |")  # fmt: skip
    print(json.dumps(fig, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
