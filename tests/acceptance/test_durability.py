"""Durability: nothing acknowledged is lost when the server is killed (DESIGN.md principle 4).

``bastion serve`` runs as a real subprocess. Several threads send messages to a room (and one
uploads media) as fast as the server answers; the process is SIGKILLed in the middle of that
load; the server is started again on the same data directory. Every message that was answered
200 must be in the room's history (``/messages``) with the event ID it was acknowledged with,
every acknowledged upload must download with the same bytes, and the access token issued before
the crash must still work. The ledger holds exactly the events: every acknowledged event has its
leaf, every ``events`` row has a leaf and every event leaf has its row (a leaf is written in the
transaction of its event), and the leaf indexes are dense from 0.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.harness import Client

SENDERS = 6
LOAD_SECONDS = 1.5
MIN_ACKED = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m bastion.cli serve`` on a data directory, with its output in a log file."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        self.port = free_port()
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2] / "src")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion.cli", "serve", "--data-dir", str(self.data_dir),
             "--listen", f"127.0.0.1:{self.port}", "--registration", "open"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                r = Client(self.base_url).request("GET", "/_matrix/client/versions", timeout=2)
                if r.status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    # Small argon2 parameters: registration is not what this test measures. The load is bulk
    # traffic by design (several senders as fast as they can in one room, as a benchmark): rate
    # limits and the flood detector are lifted, as for the benchmarks.
    (d / "bastion.toml").write_text(
        'server_name = "localhost"\nregistration = "open"\n'
        "argon2_time_cost = 1\nargon2_memory_cost = 8192\nargon2_parallelism = 1\n"
        "[guard.rate_limits]\nenabled = false\n"
        "[guard.detectors.message_flood]\nenabled = false\n"
    )
    return d


def _room_history(c: Client, room_id: str) -> dict[str, dict]:
    """Every event of the room by event ID, paginating /messages backwards from the end."""
    events: dict[str, dict] = {}
    path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages"
    query = {"dir": "b", "limit": "1000"}
    for _ in range(1000):
        r = c.request("GET", path, query=query)
        assert r.status == 200, r.body
        for ev in r.body.get("chunk", []):
            events[ev["event_id"]] = ev
        end = r.body.get("end")
        if not r.body.get("chunk") or not end or end == query.get("from"):
            break
        query = {**query, "from": end}
    return events


def _ledger_matches_events(db_path: Path, acked: dict[str, str]) -> int:
    """The ledger's event leaves against the ``events`` table (read beside the running server:
    WAL); returns the number of leaves."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = {r[0] for r in conn.execute("SELECT event_id FROM events")}
        leaves = [r[0] for r in conn.execute(
            "SELECT event_id FROM ledger_entries WHERE kind = 'event' ORDER BY idx")]  # fmt: skip
        count, top = conn.execute("SELECT COUNT(*), MAX(idx) FROM ledger_entries").fetchone()
    finally:
        conn.close()
    assert count == top + 1, "the leaf indexes have a gap"
    assert len(leaves) == len(set(leaves)), "an event has two leaves"
    assert not set(acked) - set(leaves), "an acknowledged event has no leaf"
    assert not rows - set(leaves), "an event row has no leaf"
    assert not set(leaves) - rows, "an event leaf has no event row"
    return count


def test_acknowledged_writes_survive_sigkill(tmp_path, data_dir):
    server = ServerProcess(data_dir, tmp_path / "server.log").start()
    try:
        alice = Client(server.base_url).register()
        r = alice.request("POST", "/_matrix/client/v3/createRoom", {"name": "durability"})
        assert r.status == 200, r.body
        room_id = r.body["room_id"]
        send_path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/"

        acked: dict[str, str] = {}  # event ID -> body
        acked_media: dict[str, str] = {}  # media ID -> sha256
        lock = threading.Lock()
        stop = threading.Event()

        def sender(n: int) -> None:
            c = Client(server.base_url, alice.access_token)
            i = 0
            while not stop.is_set():
                body = f"sender {n} message {i}"
                try:
                    r = c.request("PUT", send_path + uuid.uuid4().hex,
                                  {"msgtype": "m.text", "body": body}, timeout=10)  # fmt: skip
                except OSError:
                    return  # the server is gone
                if r.status == 200:
                    with lock:
                        acked[r.body["event_id"]] = body
                i += 1

        def uploader() -> None:
            c = Client(server.base_url, alice.access_token)
            i = 0
            while not stop.is_set():
                data = os.urandom(1000 + 37 * i)
                try:
                    r = c.request("POST", "/_matrix/media/v3/upload", raw=data,
                                  headers={"Content-Type": "application/octet-stream"},
                                  timeout=10)  # fmt: skip
                except OSError:
                    return
                if r.status == 200:
                    with lock:
                        acked_media[r.body["content_uri"].rsplit("/", 1)[1]] = hashlib.sha256(
                            data
                        ).hexdigest()
                i += 1

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
        threads.append(threading.Thread(target=uploader))
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        started = time.monotonic()
        while time.monotonic() < deadline:
            with lock:
                enough = len(acked) >= MIN_ACKED
            if enough and time.monotonic() - started >= LOAD_SECONDS:
                break
            time.sleep(0.02)
        # Kill it mid-load: the senders are still sending.
        server.kill()
        stop.set()
        for t in threads:
            t.join(30)
        with lock:
            acked_now, media_now = dict(acked), dict(acked_media)
        assert len(acked_now) >= MIN_ACKED, "the load produced too few acknowledged messages"

        server.start()
        # The token issued before the crash still works; the history holds every acked message.
        alice = Client(server.base_url, alice.access_token)
        assert alice.request("GET", "/_matrix/client/v3/account/whoami").status == 200
        history = _room_history(alice, room_id)
        missing = [eid for eid in acked_now if eid not in history]
        assert not missing, f"{len(missing)} of {len(acked_now)} acknowledged events were lost"
        for eid, body in acked_now.items():
            assert history[eid]["content"]["body"] == body
        for media_id, digest in media_now.items():
            r = alice.request("GET", f"/_matrix/client/v1/media/download/localhost/{media_id}")
            assert r.status == 200, (media_id, r.body)
            raw = r.body.get("_raw", b"")
            assert hashlib.sha256(raw).hexdigest() == digest, media_id
        leaves = _ledger_matches_events(data_dir / "homeserver.db", acked_now)

        # And the server goes on working: a new message lands after the old ones.
        r = alice.request(
            "PUT", send_path + "after-restart", {"msgtype": "m.text", "body": "after"}
        )
        assert r.status == 200, r.body
        history = _room_history(alice, room_id)
        assert r.body["event_id"] in history
        print(
            f"\ndurability: {len(acked_now)} messages and {len(media_now)} uploads acknowledged "
            f"before SIGKILL; all present after restart, each with its ledger leaf ({leaves} leaves)"
        )
    finally:
        server.stop()
