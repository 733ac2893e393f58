"""Benchmark of the running homeserver against Synapse, with the same client load, in one run.

Starts Bastion (``python -m bastion.cli serve``) and Synapse (``python -m synapse.app.homeserver``)
as subprocesses on 127.0.0.1, each in its own session (setsid) with a fresh SQLite database, and
drives both with the same aiohttp client load, one server at a time (alternating):

1. messages/s: one sender (sequential ``PUT /rooms/{id}/send/m.room.message/{txn}``), and ten
   senders in one room concurrently;
2. /sync wake-up latency: B long-polls ``/sync?since=…``, A sends; time from the start of A's send
   to B's sync returning with the event (p50, p95);
3. initial /sync of a fresh member of a room holding 1,000 messages, with a timeline limit of 10
   and with the default filter;
4. registration (UIA with ``m.login.dummy``: the 401 round trip and the dummy stage, as clients
   do it) and password login;
5. resident memory (VmRSS of the server process from /proc): idle after startup, peak (VmHWM) and
   after the load;
6. user-directory search on 10,000 users (``POST /user_directory/search``), on a second pair of
   servers started for it, both with every local user searchable (Bastion's
   ``user_directory_search_all_users``, Synapse's ``user_directory.search_all_users``): the users
   are created with a display name through the Synapse admin API both servers serve
   (``PUT /_synapse/admin/v2/users/{userId}``, no password, so no password hash: 10,000
   registrations would take most of the run), by an admin made with each server's own tool
   (``bastion admin create-user --admin``; Synapse's shared-secret ``/_synapse/admin/v1/register``).
   Timed: a search for a number prefix that ten users' display names start a word with
   ("person0123"), and a search for a first name 500 users have ("anna": ranked, limit 10),
   once both directories have stopped changing, each server in one block of back-to-back
   searches.
7. message search (``POST /search``, room events) over 100,000 messages (``--search-messages``
   sets another count; the table names the count measured), on a third pair of servers: ten
   users each send a tenth of the messages into their own room (concurrently, through the
   client API, the one way both servers accept messages from their users), and an eleventh
   user joined to all ten rooms searches. Each message has eight words from a vocabulary of
   400, a tag word that ten messages share, and every tenth the word "harbour". Timed: the rare
   tag (10 hits, ``order_by`` rank), "harbour" by rank (a tenth of the messages match: all are
   ranked to give the best ten) and "harbour" by recent, limit 10 each, the two servers taking
   turns search by search (which costs the faster server: see figure 6; the ratios are
   conservative). Synapse accepts about 60 messages/s this way on a 2-core machine, so 100,000
   take it about half an hour to an hour (Bastion: under five minutes); ``--quick`` uses
   10,000.
8. sending with push-rule evaluation on, in a room of 100 members (the sender and 99 others,
   each registered through the client API and joined, so every message is evaluated against the
   push rules of 99 members), on a fourth pair of servers: one sender sends 1,000 messages one
   after the other (``--quick``: 200); timed: messages/s and the median per-send latency, and
   "sends + evaluation finished": messages/s counted until a member's ``/sync`` shows
   ``unread_notifications.notification_count`` grown by every message sent (Bastion evaluates
   after the commit, on a background queue; Synapse before it persists the event), so the work
   done after the response is counted.
9. Simplified Sliding Sync (MSC4186, ``POST /_matrix/client/unstable/org.matrix.simplified_msc3575
   /sync``; Synapse serves it by default), on a fifth pair of servers: a user in 50 named rooms
   (``--quick``: 20), each with two other members, ten messages and a member's read receipt;
   every request has one list (range 0-19, timeline_limit 10, Element X's required_state) and
   the to_device, e2ee, account_data, receipts and typing extensions on. Timed: a new
   connection (a new ``conn_id``, no ``pos``: the median of 30 rounds, ``--quick`` 10), the
   time from the start of another member's send to the connection's long poll (``pos``,
   timeout 30 s) returning with the message (p50, p95 of 50 rounds, ``--quick`` 20), and an
   incremental request with nothing new (``pos``, timeout 0; median). Every response is
   checked (the list's count, the window's rooms with their names, timelines and state, the
   receipts; the message woken for as an update of a known room; no room when nothing is new),
   so both servers are timed doing the same work. Each server is timed in one block of rounds.

Bastion runs with its production password hashing (argon2id, time 3, memory 64 MiB, lanes 1 —
the Config defaults); Synapse with its defaults (bcrypt, 12 rounds) and its generated log
config, with the rate limits rc_message, rc_registration, rc_login, rc_joins, rc_joins_per_room,
rc_invites, rc_room_creation and rc_user_directory raised to per_second 1000 / burst_count 1000
so that they do not throttle the load. Every loop is bounded in count and in time. Both servers are stopped by PID
at the end, on error too.

Prints a table, then the figures of both servers and the ratios as one JSON object on the last
line. Times are medians (or percentiles) over rounds; throughputs are medians of repeated runs.

``--at-rest``: Bastion runs with encryption at rest on (``at_rest_key``, issue 10: the database
encrypted with SQLCipher, media files with a key each), so every figure is measured with it;
``bench/at_rest.py`` measures the same send and sync figures with it on and off in one run.

Run: python bench/server.py [--quick] [--runs N] [--at-rest] [--only-directory] [--only-search]
     [--only-push] [--only-sliding-sync] [--search-messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=90)
RATE_LIMITED = (
    "rc_message", "rc_registration", "rc_login", "rc_joins", "rc_joins_per_room",
    "rc_invites", "rc_room_creation", "rc_user_directory",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    base_url: str
    proc: subprocess.Popen
    log_path: Path
    spawned_at: float = field(default_factory=time.monotonic)
    figures: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"{key} not in /proc/{self.pid}/status")

    def rss_mib(self) -> float:
        return self.status_kib("VmRSS") / 1024

    def hwm_mib(self) -> float:
        return self.status_kib("VmHWM") / 1024

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux clear_refs ``5``), so that the peak of one
        phase can be read alone."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


_STARTED: list[subprocess.Popen] = []


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process by its PID, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _stop_all() -> None:
    for proc in list(_STARTED):
        stop_process(proc)
        _STARTED.remove(proc)


atexit.register(_stop_all)


def spawn(args: list[str], log_path: Path, cwd: Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the child
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
        start_new_session=True,  # setsid: its own session and process group
    )  # fmt: skip
    log.close()
    _STARTED.append(proc)
    return proc


def spawn_bastion(work: Path, name: str, config: str) -> Server:
    """A Bastion subprocess for a benchmark that compares two of them (guard or ledger on and
    off): ``work/name`` as its data directory, argon2's cheapest costs (no figure times a
    password hash), ``NORMAL`` sync, warnings only, open registration; ``config``: the TOML
    lines that differ."""
    data = work / name
    data.mkdir()
    port = free_port()
    (data / "bastion.toml").write_text(
        'server_name = "localhost"\n'
        "argon2_time_cost = 1\nargon2_memory_cost = 8192\nargon2_parallelism = 1\n"
        'sqlite_synchronous = "NORMAL"\nlog_level = "WARNING"\n' + config
    )
    proc = spawn(
        [sys.executable, "-m", "bastion.cli", "serve", "--data-dir", str(data),
         "--listen", f"127.0.0.1:{port}", "--registration", "open"],
        data / "server.log", data,
    )  # fmt: skip
    return Server(name, f"http://127.0.0.1:{port}", proc, data / "server.log")


#: The environment variable an encrypted benchmark Bastion reads its database key from.
AT_REST_KEY_ENV = "BASTION_BENCH_AT_REST_KEY"


def start_bastion(work: Path, argon2: tuple[int, int, int] = (3, 65536, 1),
                  at_rest: bool = False) -> Server:  # fmt: skip
    """Start Bastion; ``argon2`` is (time cost, memory cost in KiB, lanes): by default the
    production costs, written out so the measurement states them; ``at_rest``: encryption at
    rest on (a random key for the run, from the environment)."""
    if at_rest:
        os.environ.setdefault(AT_REST_KEY_ENV, os.urandom(32).hex())
    data = work / "bastion"
    data.mkdir()
    port = free_port()
    t, m, p = argon2
    (data / "bastion.toml").write_text(
        'server_name = "localhost"\n'
        f"argon2_time_cost = {t}\nargon2_memory_cost = {m}\nargon2_parallelism = {p}\n"
        'sqlite_synchronous = "NORMAL"\nlog_level = "INFO"\n'
        + (f'at_rest_key = "env:{AT_REST_KEY_ENV}"\n' if at_rest else "")
        # Rate limits lifted, as the Synapse it is compared with runs (SYNAPSE_RATE_LIMITS),
        # with the per-address registration limit (the benchmark registers its users from one
        # address); the rest of the guard (detectors, classifier, login defence) stays on.
        + "[guard.rate_limits]\nenabled = false\n"
        "[guard.registration]\nper_address_burst = 0\n"
    )
    proc = spawn(
        [sys.executable, "-m", "bastion.cli", "serve", "--data-dir", str(data),
         "--listen", f"127.0.0.1:{port}", "--registration", "open"],
        data / "server.log", data,
    )  # fmt: skip
    return Server("bastion", f"http://127.0.0.1:{port}", proc, data / "server.log")


def prepare_synapse(work: Path, extra: dict | None = None) -> tuple[Path, int]:
    """Generate Synapse's config and signing key; return the config path and the port.
    ``extra`` is merged into the config last (e.g. ``bcrypt_rounds``)."""
    import yaml

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.synapse_config import SYNAPSE_RATE_LIMITS, generate_synapse_config

    data = work / "synapse"
    data.mkdir()
    port = free_port()
    cfg_path = generate_synapse_config(data, f"127.0.0.1:{port}")
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update(
        {
            "listeners": [
                {
                    "port": port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],  # fmt: skip
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            **SYNAPSE_RATE_LIMITS,
            **(extra or {}),
        }
    )
    cfg_path.write_text(yaml.safe_dump(cfg))
    # The signing key was generated with the config; --generate-keys fills any that is missing.
    subprocess.run(
        [sys.executable, "-m", "synapse.app.homeserver", "-c", str(cfg_path), "--generate-keys"],
        check=True, cwd=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    return cfg_path, port


def start_synapse(cfg_path: Path, port: int) -> Server:
    data = cfg_path.parent
    proc = spawn(
        [sys.executable, "-m", "synapse.app.homeserver", "-c", str(cfg_path)],
        data / "stdout.log", data,
    )  # fmt: skip
    return Server("synapse", f"http://127.0.0.1:{port}", proc, data / "homeserver.log")


BARE_AIOHTTP = """
import asyncio, sys
from aiohttp import web
async def ok(_request):
    return web.json_response({"versions": []})
async def main():
    app = web.Application()
    app.router.add_get("/_matrix/client/versions", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


def start_bare_aiohttp(work: Path) -> Server:
    """The floor for an aiohttp server on this Python: one JSON route, nothing else."""
    port = free_port()
    proc = spawn([sys.executable, "-c", BARE_AIOHTTP, str(port)], work / "bare.log", work)
    return Server("bare-aiohttp", f"http://127.0.0.1:{port}", proc, work / "bare.log")


async def wait_ready(
    session: aiohttp.ClientSession, server: Server, timeout_s: float = 90
) -> float:
    """Poll /versions until it answers; return the seconds since the process was spawned."""
    t0 = server.spawned_at
    while time.monotonic() - t0 < timeout_s:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
        try:
            async with session.get(server.base_url + "/_matrix/client/versions") as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{server.name} did not start within {timeout_s} s")


# ----------------------------------------------------------------------------------------------
# A tiny client
# ----------------------------------------------------------------------------------------------
class Api:
    def __init__(self, session: aiohttp.ClientSession, server: Server) -> None:
        self.s = session
        self.base = server.base_url

    async def call(self, method: str, path: str, body=None, token: str | None = None,
                   params: dict | None = None, ok=(200,)) -> tuple[int, dict]:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.s.request(
            method, self.base + path, json=body, headers=headers, params=params,
            timeout=REQUEST_TIMEOUT,
        ) as r:  # fmt: skip
            data = await r.read()
            status = r.status
        parsed = json.loads(data) if data else {}
        if ok and status not in ok:
            raise RuntimeError(f"{method} {path} -> {status} {str(parsed)[:300]}")
        return status, parsed


@dataclass
class User:
    user_id: str
    token: str


async def register(api: Api, username: str | None = None) -> User:
    """UIA registration as clients do it: the 401 with a session, then the dummy stage."""
    username = username or "u" + uuid.uuid4().hex[:12]
    body = {"username": username, "password": PASSWORD, "initial_device_display_name": "bench"}
    status, first = await api.call("POST", "/_matrix/client/v3/register", body, ok=(401,))
    body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
    _, done = await api.call("POST", "/_matrix/client/v3/register", body)
    return User(done["user_id"], done["access_token"])


async def login(api: Api, user_id: str) -> str:
    _, r = await api.call(
        "POST", "/_matrix/client/v3/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id},
         "password": PASSWORD},
    )  # fmt: skip
    return r["access_token"]


async def create_room(api: Api, user: User, public: bool = True) -> str:
    _, r = await api.call(
        "POST", "/_matrix/client/v3/createRoom",
        {"preset": "public_chat" if public else "private_chat", "name": "bench"}, user.token,
    )  # fmt: skip
    return r["room_id"]


async def join(api: Api, user: User, room_id: str) -> None:
    await api.call("POST", f"/_matrix/client/v3/join/{room_id}", {}, user.token)


async def send(api: Api, user: User, room_id: str, body: str) -> str:
    txn = uuid.uuid4().hex
    _, r = await api.call(
        "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
        {"msgtype": "m.text", "body": body}, user.token,
    )  # fmt: skip
    return r["event_id"]


async def sync(api: Api, user: User, since: str | None = None, timeout_ms: int = 0,
               flt: str | None = None) -> dict:  # fmt: skip
    params: dict = {"timeout": str(timeout_ms)}
    if since:
        params["since"] = since
    if flt:
        params["filter"] = flt
    _, r = await api.call("GET", "/_matrix/client/v3/sync", None, user.token, params)
    return r


def timeline_ids(resp: dict, room_id: str) -> list[str]:
    room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e.get("event_id") for e in room.get("timeline", {}).get("events", [])]


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ----------------------------------------------------------------------------------------------
# One helper per figure
# ----------------------------------------------------------------------------------------------
async def bench_send_one(api: Api, user: User, room_id: str, n: int, budget_s: float) -> float:
    """Messages/s of one sender sending ``n`` messages one after the other."""
    for i in range(5):  # warm-up
        await send(api, user, room_id, f"warm-up {i}")
    deadline = time.monotonic() + budget_s
    t0 = time.perf_counter()
    done = 0
    for i in range(n):
        await send(api, user, room_id, f"message {i} from one sender")
        done += 1
        if time.monotonic() > deadline:
            break
    return done / (time.perf_counter() - t0)


async def bench_send_many(
    api: Api, users: list[User], room_id: str, per_user: int, budget_s: float
) -> float:
    """Messages/s of ``len(users)`` concurrent senders in one room, ``per_user`` each."""
    deadline = time.monotonic() + budget_s
    counts = [0] * len(users)

    async def sender(k: int, user: User) -> None:
        for i in range(per_user):
            await send(api, user, room_id, f"message {i} from sender {k}")
            counts[k] += 1
            if time.monotonic() > deadline:
                return

    await asyncio.gather(*(send(api, u, room_id, "warm-up") for u in users))
    t0 = time.perf_counter()
    await asyncio.gather(*(sender(k, u) for k, u in enumerate(users)))
    return sum(counts) / (time.perf_counter() - t0)


async def bench_sync_wake(
    api: Api, a: User, b: User, room_id: str, rounds: int, budget_s: float
) -> list[float]:
    """Seconds from the start of A's send to B's long-poll returning with the event."""
    since = (await sync(api, b))["next_batch"]
    out: list[float] = []
    deadline = time.monotonic() + budget_s
    for i in range(rounds):
        if time.monotonic() > deadline:
            break
        # Drain anything pending (presence, receipts) so the poll below is parked.
        since = (await sync(api, b, since, 0))["next_batch"]
        poll = asyncio.create_task(sync(api, b, since, 30_000))
        await asyncio.sleep(0.15)  # let the long poll park on the server
        if poll.done():  # woken by something else; start over
            since = poll.result()["next_batch"]
            continue
        t0 = time.perf_counter()
        event_id = await send(api, a, room_id, f"wake {i}")
        resp = await poll
        polls = 0
        while event_id not in timeline_ids(resp, room_id) and polls < 20:
            resp = await sync(api, b, resp["next_batch"], 30_000)
            polls += 1
        if event_id not in timeline_ids(resp, room_id):
            raise RuntimeError("the message never reached the other user's /sync")
        out.append(time.perf_counter() - t0)
        since = resp["next_batch"]
    return out


async def fill_room(api: Api, users: list[User], room_id: str, n: int, budget_s: float) -> int:
    """Send ``n`` messages into a room, spread over ``users`` sending concurrently."""
    deadline = time.monotonic() + budget_s
    sent = [0]

    async def sender(k: int, user: User) -> None:
        for i in range(k, n, len(users)):
            if time.monotonic() > deadline:
                return
            await send(api, user, room_id, f"history message {i} " + "lorem ipsum " * 4)
            sent[0] += 1

    await asyncio.gather(*(sender(k, u) for k, u in enumerate(users)))
    return sent[0]


async def bench_initial_sync(
    api: Api, room_id: str, fresh: list[User], flt: str | None, budget_s: float
) -> list[float]:
    """Seconds for a fresh member of the room (registered beforehand, one per round) to join
    and then do its initial /sync; only the /sync is timed."""
    out: list[float] = []
    deadline = time.monotonic() + budget_s
    for user in fresh:
        if time.monotonic() > deadline:
            break
        await join(api, user, room_id)
        t0 = time.perf_counter()
        resp = await sync(api, user, None, 0, flt)
        out.append(time.perf_counter() - t0)
        if not timeline_ids(resp, room_id):
            raise RuntimeError("the initial sync did not return the room's timeline")
    return out


async def bench_register(api: Api, rounds: int, budget_s: float) -> tuple[list[float], list[str]]:
    out: list[float] = []
    users: list[str] = []
    deadline = time.monotonic() + budget_s
    for _ in range(rounds):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        user = await register(api)
        out.append(time.perf_counter() - t0)
        users.append(user.user_id)
    return out, users


async def bench_login(api: Api, user_ids: list[str], rounds: int, budget_s: float) -> list[float]:
    out: list[float] = []
    deadline = time.monotonic() + budget_s
    for i in range(rounds):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        await login(api, user_ids[i % len(user_ids)])
        out.append(time.perf_counter() - t0)
    return out


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
@dataclass
class Plan:
    one_sender_msgs: int
    senders: int
    per_sender_msgs: int
    throughput_repeats: int
    wake_rounds: int
    history_msgs: int
    initial_sync_rounds: int
    auth_rounds: int
    directory_users: int = 10_000
    directory_rounds: int = 200
    search_messages: int = 100_000
    search_rounds: int = 30
    push_msgs: int = 1000
    sliding_rooms: int = 50
    sliding_rounds: int = 30
    sliding_wake_rounds: int = 50

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(100, 10, 20, 1, 20, 300, 3, 5, directory_rounds=100,
                       search_messages=10_000, search_rounds=10, push_msgs=200,
                       sliding_rooms=20, sliding_rounds=10, sliding_wake_rounds=20)  # fmt: skip
        return cls(500, 10, 200, 3, 100, 1000, 5, 20)


async def run(plan: Plan, work: Path, at_rest: bool = False) -> tuple[dict, dict]:
    syn_cfg, syn_port = prepare_synapse(work)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Reference: the idle RSS of a bare aiohttp server (the floor of Bastion's stack).
        bare = start_bare_aiohttp(work)
        await wait_ready(session, bare)
        await asyncio.sleep(3)
        bare_rss = bare.rss_mib()
        stop_process(bare.proc)
        # One after the other, so that neither start competes with the other for the CPU.
        bastion = start_bastion(work, at_rest=at_rest)
        bastion.figures["startup_s"] = await wait_ready(session, bastion)
        synapse = start_synapse(syn_cfg, syn_port)
        synapse.figures["startup_s"] = await wait_ready(session, synapse)
        servers = [bastion, synapse]
        await asyncio.sleep(3)  # settle after startup
        for srv in servers:
            srv.figures["rss_idle_mib"] = srv.rss_mib()
            srv.figures["rss_peak_startup_mib"] = srv.hwm_mib()
        bastion.figures["reference_bare_aiohttp_server_rss_idle_mib"] = bare_rss
        apis = {srv.name: Api(session, srv) for srv in servers}

        # Set-up (not timed): the users and rooms each figure needs. Registering hashes a
        # password, so the fresh users of figure 3 are registered here too.
        setup: dict[str, dict] = {}
        for srv in servers:
            api = apis[srv.name]
            users = [await register(api) for _ in range(plan.senders)]
            fresh = [await register(api) for _ in range(2 * plan.initial_sync_rounds)]
            owner = users[0]
            one_room = await create_room(api, owner)
            many_room = await create_room(api, owner)
            wake_room = await create_room(api, owner)
            history_room = await create_room(api, owner)
            for u in users[1:]:
                await join(api, u, many_room)
                await join(api, u, history_room)
            await join(api, users[1], wake_room)
            setup[srv.name] = {"users": users, "fresh": fresh, "one": one_room,
                               "many": many_room, "wake": wake_room,
                               "history": history_room}  # fmt: skip
        peak_reset = all(srv.reset_peak() for srv in servers)

        # 1. throughput, alternating servers, median of repeats.
        rates: dict[str, dict[str, list[float]]] = {
            s.name: {"one": [], "many": []} for s in servers
        }
        for _ in range(plan.throughput_repeats):
            for srv in servers:
                api, st = apis[srv.name], setup[srv.name]
                rates[srv.name]["one"].append(
                    await bench_send_one(api, st["users"][0], st["one"], plan.one_sender_msgs, 180)
                )
            for srv in servers:
                api, st = apis[srv.name], setup[srv.name]
                rates[srv.name]["many"].append(
                    await bench_send_many(api, st["users"], st["many"], plan.per_sender_msgs, 240)
                )
        for srv in servers:
            srv.figures["send_1_sender_msgs_per_s"] = statistics.median(rates[srv.name]["one"])
            srv.figures["send_10_senders_msgs_per_s"] = statistics.median(rates[srv.name]["many"])

        # 2. /sync wake-up latency.
        for srv in servers:
            st = setup[srv.name]
            lat = await bench_sync_wake(
                apis[srv.name], st["users"][0], st["users"][1], st["wake"], plan.wake_rounds, 180
            )
            srv.figures["sync_wake_rounds"] = len(lat)
            srv.figures["sync_wake_p50_ms"] = percentile(lat, 0.5) * 1000
            srv.figures["sync_wake_p95_ms"] = percentile(lat, 0.95) * 1000

        # 3. initial sync of a fresh member of a room with history.
        limit10 = json.dumps({"room": {"timeline": {"limit": 10}}}, separators=(",", ":"))
        for srv in servers:
            st = setup[srv.name]
            srv.figures["history_msgs"] = await fill_room(
                apis[srv.name], st["users"], st["history"], plan.history_msgs, 300
            )
        for srv in servers:
            st = setup[srv.name]
            n = plan.initial_sync_rounds
            for key, flt, fresh in (("limit10", limit10, st["fresh"][:n]),
                                    ("default", None, st["fresh"][n:])):  # fmt: skip
                times = await bench_initial_sync(apis[srv.name], st["history"], fresh, flt, 120)
                srv.figures[f"initial_sync_{key}_ms"] = statistics.median(times) * 1000

        # Memory after the message and sync load (figures 1-3: no password hashing).
        await asyncio.sleep(1)
        for srv in servers:
            srv.figures["rss_after_msg_sync_load_mib"] = srv.rss_mib()
            srv.figures["rss_peak_msg_sync_load_mib"] = srv.hwm_mib()
            srv.reset_peak()

        # 4. registration and login.
        for srv in servers:
            times, user_ids = await bench_register(apis[srv.name], plan.auth_rounds, 120)
            srv.figures["register_ms"] = statistics.median(times) * 1000
            times = await bench_login(apis[srv.name], user_ids, plan.auth_rounds, 120)
            srv.figures["login_ms"] = statistics.median(times) * 1000

        # 5. memory after all the load.
        await asyncio.sleep(1)
        for srv in servers:
            srv.figures["rss_peak_auth_mib"] = srv.hwm_mib()
            srv.figures["rss_after_load_mib"] = srv.rss_mib()
            srv.figures["peak_reset_worked"] = peak_reset
    for srv in servers:
        stop_process(srv.proc)
    return bastion.figures, synapse.figures


# ----------------------------------------------------------------------------------------------
# 6. User-directory search
# ----------------------------------------------------------------------------------------------
DIRECTORY_FIRST_NAMES = (
    "Anna", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas",
    "Kira", "Liam", "Mona", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tara",
)  # fmt: skip


def directory_name(i: int) -> str:
    return f"{DIRECTORY_FIRST_NAMES[i % len(DIRECTORY_FIRST_NAMES)]} Person{i:05d}"


async def bastion_admin_token(api: Api, server: Server, data: Path) -> User:
    """An admin made with ``bastion admin create-user --admin`` (beside the running server),
    logged in."""
    subprocess.run(
        [sys.executable, "-m", "bastion.cli", "admin", "create-user", "--data-dir", str(data),
         "--admin", "--password", PASSWORD, "diradmin"],
        check=True, cwd=data, stdout=subprocess.DEVNULL, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    user_id = "@diradmin:localhost"
    return User(user_id, await login(api, user_id))


async def synapse_admin_token(api: Api, secret: str) -> User:
    """An admin made with Synapse's shared-secret registration (``/_synapse/admin/v1/register``:
    an HMAC-SHA1 over nonce, user, password and "admin")."""
    _, first = await api.call("GET", "/_synapse/admin/v1/register")
    nonce = first["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(f"{nonce}\0diradmin\0{PASSWORD}\0admin".encode())
    body = {"nonce": nonce, "username": "diradmin", "password": PASSWORD, "admin": True,
            "mac": mac.hexdigest()}  # fmt: skip
    _, r = await api.call("POST", "/_synapse/admin/v1/register", body)
    return User(r["user_id"], r["access_token"])


async def populate_directory(api: Api, admin: User, n: int, budget_s: float) -> int:
    """``n`` users with display names (``directory_name``), created through
    ``PUT /_synapse/admin/v2/users/{userId}``, eight at a time; the count created."""
    domain = admin.user_id.split(":", 1)[1]
    next_i = 0
    done = 0
    deadline = time.monotonic() + budget_s

    async def worker() -> None:
        nonlocal next_i, done
        while next_i < n and time.monotonic() < deadline:
            i, next_i = next_i, next_i + 1
            await api.call(
                "PUT", f"/_synapse/admin/v2/users/@dir{i:05d}:{domain}",
                {"displayname": directory_name(i)}, admin.token, ok=(200, 201),
            )  # fmt: skip
            done += 1

    await asyncio.gather(*(worker() for _ in range(8)))
    return done


async def directory_search(api: Api, user: User, term: str) -> dict:
    _, r = await api.call(
        "POST", "/_matrix/client/v3/user_directory/search", {"search_term": term, "limit": 10},
        user.token,
    )  # fmt: skip
    return r


async def bench_directory(pairs: dict[str, tuple[Api, User]], n: int, rounds: int) -> dict:
    """Median latency of the two searches on each server (each round a different number
    prefix), once each server's directory has stopped changing: two passes over every number
    prefix, two seconds apart, find as many users (Synapse indexes its users in the
    background: timing while it still works would time its indexing too, and slow the other
    server beside it; it may also never list a few of the users created at once). Each server
    is timed in one block of back-to-back searches: taking turns search by search was tried and
    is unfair to the faster server, which then waits idle through each of the other's searches
    and answers the next one from cold (Bastion's narrow search: 0.8 ms alone, 1.5 ms taking
    turns with Synapse, 1.9 ms with a 20 ms pause before each search)."""
    rng = random.Random(11)
    terms = [f"person{rng.randrange(n // 10):04d}" for _ in range(rounds)]  # users ...N0-N9
    prefixes = [f"person{i:04d}" for i in range(n // 10)]
    for api, user in pairs.values():
        deadline = time.monotonic() + 600
        last: list[int] | None = None
        while True:
            counts = [len((await directory_search(api, user, t))["results"]) for t in prefixes]
            if counts == last:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{api.base}: the directory kept changing for 10 minutes")
            last = counts
            await asyncio.sleep(2)
    times = {name: {"narrow": [], "broad": []} for name in pairs}
    found = {name: {"narrow": 0, "broad": 0} for name in pairs}
    for name, (api, user) in pairs.items():
        for term in terms:
            for kind, t_term in (("narrow", term), ("broad", "anna")):
                t = time.perf_counter()
                r = await directory_search(api, user, t_term)
                times[name][kind].append(time.perf_counter() - t)
                found[name][kind] += len(r["results"])
    return {
        name: {
            "directory_users": n,
            "directory_search_narrow_ms": statistics.median(times[name]["narrow"]) * 1000,
            "directory_search_broad_ms": statistics.median(times[name]["broad"]) * 1000,
            "directory_narrow_results_per_search": found[name]["narrow"] / rounds,
            "directory_broad_results_per_search": found[name]["broad"] / rounds,
        }
        for name in pairs
    }


async def run_directory(plan: Plan, work: Path) -> tuple[dict, dict]:
    """Figure 6 on its own pair of servers (see the module's docstring)."""
    work = work / "directory"
    work.mkdir()
    secret = secrets.token_hex(16)
    syn_cfg, syn_port = prepare_synapse(
        work, {"registration_shared_secret": secret,
               "user_directory": {"enabled": True, "search_all_users": True}},
    )  # fmt: skip
    out: dict[str, dict] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bastion = spawn_bastion(
            work, "bastion", "user_directory_search_all_users = true\n"
            "[guard.rate_limits]\nenabled = false\n",
        )  # fmt: skip
        await wait_ready(session, bastion)
        synapse = start_synapse(syn_cfg, syn_port)
        await wait_ready(session, synapse)
        admins = {
            "bastion": await bastion_admin_token(Api(session, bastion), bastion, work / "bastion"),
            "synapse": await synapse_admin_token(Api(session, synapse), secret),
        }
        for srv in (bastion, synapse):
            api = Api(session, srv)
            t = time.monotonic()
            made = await populate_directory(api, admins[srv.name], plan.directory_users, 1200)
            if made != plan.directory_users:
                raise RuntimeError(f"{srv.name}: {made} of {plan.directory_users} users in time")
            out[srv.name] = {"directory_populate_s": time.monotonic() - t}
        figures = await bench_directory(
            {srv.name: (Api(session, srv), admins[srv.name]) for srv in (bastion, synapse)},
            plan.directory_users, plan.directory_rounds,
        )  # fmt: skip
        for name, values in figures.items():
            out[name].update(values)
        for srv in (bastion, synapse):
            stop_process(srv.proc)
    return out["bastion"], out["synapse"]


# ----------------------------------------------------------------------------------------------
# 7. Message search
# ----------------------------------------------------------------------------------------------
SEARCH_SENDERS = 10
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "so", "ta", "vi", "we", "zu", "bre", "dor", "fen",
              "gal", "hut", "jor", "kel", "mur", "pax", "quo")  # fmt: skip
SEARCH_VOCABULARY = [a + b for a in _SYLLABLES for b in _SYLLABLES]  # 400 words


def search_body(i: int, n: int) -> str:
    """Message ``i`` of ``n``: eight vocabulary words, the tag ten messages share, and every
    tenth message the word "harbour"."""
    rng = random.Random(i)
    words = [rng.choice(SEARCH_VOCABULARY) for _ in range(8)]
    words.append(f"tag{i % max(n // 10, 1):05d}")
    if i % 10 == 0:
        words.insert(rng.randrange(len(words)), "harbour")
    return " ".join(words)


async def populate_search(api: Api, senders: list[User], rooms: list[str], n: int,
                          budget_s: float) -> int:  # fmt: skip
    """``n`` messages, sender k sending messages k, k + 10, ... into room k; the count sent."""
    deadline = time.monotonic() + budget_s
    done = 0

    async def sender(k: int) -> None:
        nonlocal done
        for i in range(k, n, SEARCH_SENDERS):
            if time.monotonic() > deadline:
                return
            await send(api, senders[k], rooms[k], search_body(i, n))
            done += 1

    await asyncio.gather(*(sender(k) for k in range(SEARCH_SENDERS)))
    return done


async def message_search(api: Api, user: User, term: str, order: str) -> dict:
    body = {"search_categories": {"room_events": {
        "search_term": term, "order_by": order, "filter": {"limit": 10}}}}  # fmt: skip
    _, r = await api.call("POST", "/_matrix/client/v3/search", body, user.token)
    return r["search_categories"]["room_events"]


async def bench_search(pairs: dict[str, tuple[Api, User]], n: int, rounds: int) -> dict:
    """Median latency of the three searches on each server, once the last message is found;
    the servers take turns search by search, so a load elsewhere on the machine falls on both
    alike (at a cost to the faster server, which answers each search after idling through the
    other's: see :func:`bench_directory`; the ratios are conservative)."""
    last = f"tag{(n - 1) % max(n // 10, 1):05d}"
    for api, user in pairs.values():
        deadline = time.monotonic() + 300
        while len((await message_search(api, user, last, "recent"))["results"]) < 10:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{api.base}: the search never found {last}")
            await asyncio.sleep(0.5)
    rng = random.Random(7)
    kinds = ("rare", "common_rank", "common_recent")
    times = {name: {k: [] for k in kinds} for name in pairs}
    hits = {name: dict.fromkeys(kinds, 0) for name in pairs}
    for _ in range(rounds):
        for key, term, order in (
            ("rare", f"tag{rng.randrange(max(n // 10, 1)):05d}", "rank"),
            ("common_rank", "harbour", "rank"),
            ("common_recent", "harbour", "recent"),
        ):
            for name, (api, user) in pairs.items():
                t = time.perf_counter()
                r = await message_search(api, user, term, order)
                times[name][key].append(time.perf_counter() - t)
                hits[name][key] += len(r["results"])
    out: dict = {}
    for name in pairs:
        out[name] = {"search_messages": n}
        for key in kinds:
            out[name][f"search_{key}_ms"] = statistics.median(times[name][key]) * 1000
            out[name][f"search_{key}_results_per_search"] = hits[name][key] / rounds
    return out


async def run_search(plan: Plan, work: Path) -> tuple[dict, dict]:
    """Figure 7 on its own pair of servers (see the module's docstring)."""
    work = work / "search"
    work.mkdir()
    syn_cfg, syn_port = prepare_synapse(work)
    out: dict[str, dict] = {}
    n = plan.search_messages
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bastion = spawn_bastion(work, "bastion", "[guard.rate_limits]\nenabled = false\n"
                                "[guard.registration]\nper_address_burst = 0\n")  # fmt: skip
        await wait_ready(session, bastion)
        synapse = start_synapse(syn_cfg, syn_port)
        await wait_ready(session, synapse)
        readers: dict[str, User] = {}
        for srv in (bastion, synapse):
            api = Api(session, srv)
            reader = readers[srv.name] = await register(api)
            senders = [await register(api) for _ in range(SEARCH_SENDERS)]
            rooms = [await create_room(api, reader, public=True) for _ in senders]
            for user, room in zip(senders, rooms, strict=True):
                await join(api, user, room)
            t = time.monotonic()
            made = await populate_search(api, senders, rooms, n, 3600)
            if made != n:
                raise RuntimeError(f"{srv.name}: {made} of {n} messages in time")
            out[srv.name] = {"search_populate_s": time.monotonic() - t}
        figures = await bench_search(
            {srv.name: (Api(session, srv), readers[srv.name]) for srv in (bastion, synapse)},
            n, plan.search_rounds,
        )  # fmt: skip
        for name, values in figures.items():
            out[name].update(values)
        for srv in (bastion, synapse):
            stop_process(srv.proc)
    return out["bastion"], out["synapse"]


# ----------------------------------------------------------------------------------------------
# 8. Sending with push-rule evaluation in a room of 100 members
# ----------------------------------------------------------------------------------------------
#: Members of figure 8's room: the sender and the others (push rules evaluated for each).
PUSH_MEMBERS = 100


def push_count_filter(room_id: str, k: int) -> str:
    """A /sync filter for the one room, its last event and no member list (the counts are what
    figure 8 reads). ``k`` makes each poll's filter differ (an event type no event has): Synapse
    answers a /sync identical to one of the last two minutes from its response cache
    (``caches.sync_response_cache_duration``), which would hide a changed count."""
    return json.dumps(
        {"room": {"rooms": [room_id], "timeline": {"limit": 1, "not_types": [f"bench.poll.{k}"]},
                  "state": {"lazy_load_members": True}, "ephemeral": {"not_types": ["*"]},
                  "account_data": {"not_types": ["*"]}},
         "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
        separators=(",", ":"),
    )  # fmt: skip


_polls = itertools.count()


async def notification_count(api: Api, user: User, room_id: str) -> int:
    """The member's ``unread_notifications.notification_count`` in the room (an initial /sync
    with :func:`push_count_filter`; -1 if the room is not in it)."""
    flt = push_count_filter(room_id, next(_polls))
    room = (await sync(api, user, None, 0, flt)).get("rooms", {}).get("join", {}).get(room_id)
    if room is None:
        return -1
    return int(room.get("unread_notifications", {}).get("notification_count", 0))


async def populate_push_room(api: Api, n_members: int) -> tuple[User, list[User], str]:
    """The sender, the other members and their room: every member registered through the client
    API (UIA, ``m.login.dummy``) and joined to the sender's public room, eight at a time."""
    sender = await register(api)
    room_id = await create_room(api, sender, public=True)
    others: list[User] = []
    todo = n_members - 1

    async def worker() -> None:
        nonlocal todo
        while todo > 0:
            todo -= 1
            user = await register(api)
            await join(api, user, room_id)
            others.append(user)

    await asyncio.gather(*(worker() for _ in range(8)))
    _, members = await api.call(
        "GET", f"/_matrix/client/v3/rooms/{room_id}/joined_members", None, sender.token
    )
    if len(members["joined"]) != n_members:
        raise RuntimeError(f"{api.base}: {len(members['joined'])} of {n_members} members joined")
    return sender, others, room_id


async def bench_push_send(
    api: Api, sender: User, others: list[User], room_id: str, n: int, budget_s: float
) -> dict:
    """One sender sends ``n`` messages one after the other into the room (timed: messages/s
    and the median per-send latency); then the first other member's /sync is polled until its
    ``notification_count`` has grown by the ``n`` messages, and that time is counted too
    ("sends + evaluation finished"), so that evaluation done after the response is not left
    out. Then (not timed) every other member's count is checked to be the same."""
    reader = others[0]
    for i in range(5):  # warm-up
        await send(api, sender, room_id, f"warm-up {i}")
    deadline = time.monotonic() + 120
    base = await notification_count(api, reader, room_id)
    while base < 5:  # the warm-up counted (both servers must count every message)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{api.base}: the warm-up messages were never counted ({base})")
        await asyncio.sleep(0.1)
        base = await notification_count(api, reader, room_id)
    latencies: list[float] = []
    deadline = time.monotonic() + budget_s
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await send(api, sender, room_id, f"message {i} to the hundred members")
        latencies.append(time.perf_counter() - t)
        if time.monotonic() > deadline:
            break
    sent = len(latencies)
    t_sent = time.perf_counter()
    polls = 0
    deadline = time.monotonic() + 300
    while (count := await notification_count(api, reader, room_id)) < base + sent:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{api.base}: {count - base} of {sent} messages counted in time")
        polls += 1
        await asyncio.sleep(0.005)
    t_done = time.perf_counter()
    if count != base + sent:
        raise RuntimeError(f"{api.base}: {count - base} messages counted, {sent} sent")
    counts: list[int] = []

    async def check(users: list[User]) -> None:
        for user in users:
            counts.append(await notification_count(api, user, room_id))

    await asyncio.gather(*(check(others[k::8]) for k in range(8)))
    if counts.count(count) != len(others):
        raise RuntimeError(f"{api.base}: members' counts differ: {sorted(set(counts))}")
    return {
        "push_members": PUSH_MEMBERS,
        "push_msgs": sent,
        "push_send_msgs_per_s": sent / (t_sent - t0),
        "push_send_p50_ms": statistics.median(latencies) * 1000,
        "push_send_evaluated_msgs_per_s": sent / (t_done - t0),
        "push_drain_ms": (t_done - t_sent) * 1000,
        "push_drain_polls": polls,
        "push_members_counted": len(counts),
    }


async def run_push(plan: Plan, work: Path) -> tuple[dict, dict]:
    """Figure 8 on its own pair of servers (see the module's docstring)."""
    work = work / "push"
    work.mkdir()
    # bcrypt's cheapest cost, as Bastion's argon2 below: no figure times a password hash, and
    # 99 registrations at 12 rounds would only lengthen the set-up.
    syn_cfg, syn_port = prepare_synapse(work, {"bcrypt_rounds": 4})
    out: dict[str, dict] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # The guard's join-wave detector stays on, with room for the 99 joins (by default a
        # room closes to new joins after 50 in an hour).
        bastion = spawn_bastion(
            work, "bastion", "[guard.rate_limits]\nenabled = false\n"
            "[guard.registration]\nper_address_burst = 0\n"
            "[guard.detectors.join_wave]\nmax_joins = 1000\n",
        )  # fmt: skip
        await wait_ready(session, bastion)
        synapse = start_synapse(syn_cfg, syn_port)
        await wait_ready(session, synapse)
        rooms: dict[str, tuple[User, list[User], str]] = {}
        for srv in (bastion, synapse):
            t = time.monotonic()
            rooms[srv.name] = await populate_push_room(Api(session, srv), PUSH_MEMBERS)
            out[srv.name] = {"push_populate_s": time.monotonic() - t}
        await asyncio.sleep(2)  # settle after the joins
        for srv in (bastion, synapse):
            sender, others, room_id = rooms[srv.name]
            out[srv.name].update(
                await bench_push_send(
                    Api(session, srv), sender, others, room_id, plan.push_msgs, 600
                )  # fmt: skip
            )
        for srv in (bastion, synapse):
            stop_process(srv.proc)
    return out["bastion"], out["synapse"]


# ----------------------------------------------------------------------------------------------
# 9. Simplified Sliding Sync (MSC4186)
# ----------------------------------------------------------------------------------------------
SLIDING_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
#: The list's window (Element X's first range) and each room's timeline limit.
SLIDING_WINDOW = 20
SLIDING_TIMELINE = 10
#: Messages in each room of figure 9 (the last one orders the rooms), its other members, and
#: the most recently active rooms figure 9's wake-ups send into (all inside the window).
SLIDING_MSGS_PER_ROOM = 10
SLIDING_OTHERS = 2
SLIDING_WAKE_ROOMS = 5
#: Element X's room-list ``required_state`` (matrix-rust-sdk's RoomListService).
SLIDING_REQUIRED_STATE = [
    ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"], ["m.room.topic", ""], ["m.room.avatar", ""],
    ["m.room.canonical_alias", ""], ["m.room.power_levels", ""],
    ["org.matrix.msc3401.call.member", "*"], ["m.room.join_rules", ""],
    ["m.room.tombstone", ""], ["m.room.create", ""], ["m.room.history_visibility", ""],
    ["io.element.functional_members", ""],
]  # fmt: skip


def sliding_body(conn_id: str, to_device_since: str | None = None) -> dict:
    """The request body: one list over every room (its first ``SLIDING_WINDOW``), the
    ``required_state`` above, and the to-device, E2EE, account-data, receipts and typing
    extensions on (``to_device_since``: the last response's ``to_device.next_batch``)."""
    to_device: dict = {"enabled": True}
    if to_device_since is not None:
        to_device["since"] = to_device_since
    return {
        "conn_id": conn_id,
        "lists": {"all": {
            "ranges": [[0, SLIDING_WINDOW - 1]], "timeline_limit": SLIDING_TIMELINE,
            "required_state": SLIDING_REQUIRED_STATE,
        }},
        "extensions": {
            "to_device": to_device, "e2ee": {"enabled": True},
            "account_data": {"enabled": True},
            "receipts": {"enabled": True, "lists": ["*"], "rooms": ["*"]},
            "typing": {"enabled": True, "lists": ["*"], "rooms": ["*"]},
        },
    }  # fmt: skip


async def sliding_sync(api: Api, user: User, body: dict, pos: str | None = None,
                       timeout_ms: int = 0) -> dict:  # fmt: skip
    params: dict = {"timeout": str(timeout_ms)}
    if pos is not None:
        params["pos"] = pos
    _, r = await api.call("POST", SLIDING_PATH, body, user.token, params)
    return r


@dataclass
class SlidingRooms:
    """Figure 9's set-up on one server: the user who syncs, a member who sends, the rooms from
    least to most recently active, their names and each one's latest message."""

    user: User
    sender: User
    rooms: list[str]
    names: dict[str, str]
    latest: dict[str, str]


async def populate_sliding(api: Api, n_rooms: int) -> SlidingRooms:
    """``n_rooms`` named public rooms of the user, each joined by ``SLIDING_OTHERS`` others and
    holding ``SLIDING_MSGS_PER_ROOM`` messages from the three (four rooms at a time); then the
    last message of each room one room after the other, so room k is the k-th least recently
    active, and a read receipt of a member on it (the receipts extension has one to send)."""
    user = await register(api)
    others = [await register(api) for _ in range(SLIDING_OTHERS)]
    members = [user, *others]
    rooms: list[str | None] = [None] * n_rooms
    names = {}
    todo = iter(range(n_rooms))

    async def worker() -> None:
        for k in todo:
            name = f"Room {k:03d}"
            _, r = await api.call(
                "POST", "/_matrix/client/v3/createRoom",
                {"preset": "public_chat", "name": name, "topic": f"the topic of {name}"},
                user.token,
            )  # fmt: skip
            room_id = r["room_id"]
            for other in others:
                await join(api, other, room_id)
            for i in range(SLIDING_MSGS_PER_ROOM - 1):
                await send(api, members[i % len(members)], room_id, f"message {i} in {name}")
            rooms[k] = room_id
            names[room_id] = name

    await asyncio.gather(*(worker() for _ in range(4)))
    ordered = [r for r in rooms if r is not None]
    latest = {}
    for room_id in ordered:
        latest[room_id] = await send(api, others[0], room_id, f"the latest in {names[room_id]}")
    for room_id in ordered:
        await api.call(
            "POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{latest[room_id]}", {},
            others[1].token,
        )  # fmt: skip
    return SlidingRooms(user, others[0], ordered, names, latest)


def check_sliding_initial(api: Api, resp: dict, st: SlidingRooms) -> None:
    """The response of a fresh connection holds what was asked, the same on both servers: the
    list's count, the window's rooms (the most recently active), each with its name, a full
    timeline ending with its latest message, its creation and the user's membership in its
    state."""
    count = resp.get("lists", {}).get("all", {}).get("count")
    if count != len(st.rooms):
        raise RuntimeError(f"{api.base}: list count {count}, {len(st.rooms)} rooms")
    rooms = resp.get("rooms", {})
    window = st.rooms[::-1][:SLIDING_WINDOW]
    if set(rooms) != set(window):
        raise RuntimeError(f"{api.base}: {len(set(rooms) & set(window))} of the window's rooms")
    for room_id in window:
        room = rooms[room_id]
        timeline = [e.get("event_id") for e in room.get("timeline", [])]
        state = {(e.get("type"), e.get("state_key")) for e in room.get("required_state", [])}
        if (
            room.get("name") != st.names[room_id]
            or len(timeline) != SLIDING_TIMELINE
            or timeline[-1] != st.latest[room_id]
            or ("m.room.create", "") not in state
            or ("m.room.member", st.user.user_id) not in state
            or ("m.room.name", "") not in state
        ):
            raise RuntimeError(f"{api.base}: room {room_id} is not as asked: {str(room)[:300]}")
    ext = resp.get("extensions", {})
    if "to_device" not in ext or "e2ee" not in ext:
        raise RuntimeError(f"{api.base}: extensions missing: {sorted(ext)}")
    receipts = ext.get("receipts", {}).get("rooms", {})
    if set(receipts) != set(window):
        raise RuntimeError(f"{api.base}: receipts for {len(receipts)} of the window's rooms")


async def bench_sliding_initial(api: Api, st: SlidingRooms, round_: int) -> float:
    """One fresh connection (a new ``conn_id``, no ``pos``, timeout 0): its seconds."""
    body = sliding_body(f"initial-{round_}")
    t = time.perf_counter()
    resp = await sliding_sync(api, st.user, body)
    took = time.perf_counter() - t
    check_sliding_initial(api, resp, st)
    return took


class SlidingConnection:
    """One connection's ``pos`` and to-device token, carried from response to response."""

    def __init__(self, api: Api, user: User, conn_id: str) -> None:
        self.api, self.user, self.conn_id = api, user, conn_id
        self.pos: str | None = None
        self.to_device: str | None = None

    async def request(self, timeout_ms: int = 0) -> dict:
        body = sliding_body(self.conn_id, self.to_device)
        resp = await sliding_sync(self.api, self.user, body, self.pos, timeout_ms)
        self.advance(resp)
        return resp

    def advance(self, resp: dict) -> None:
        self.pos = resp["pos"]
        nb = resp.get("extensions", {}).get("to_device", {}).get("next_batch")
        if nb is not None:
            self.to_device = nb


def sliding_timeline(resp: dict, room_id: str) -> list[str]:
    room = resp.get("rooms", {}).get(room_id, {})
    return [e.get("event_id") for e in room.get("timeline", [])]


async def bench_sliding_wake(
    conn: SlidingConnection, st: SlidingRooms, round_: int
) -> float | None:
    """Seconds from the start of the sender's message to the connection's long poll (``pos``,
    timeout 30 s) returning with it, as an update of a room the client has (not ``initial``);
    None if the poll was woken by something else first (the round is not counted)."""
    await conn.request(0)  # drain anything pending so the poll below is parked
    body = sliding_body(conn.conn_id, conn.to_device)
    poll = asyncio.create_task(sliding_sync(conn.api, conn.user, body, conn.pos, 30_000))
    await asyncio.sleep(0.15)  # let the long poll park on the server
    if poll.done():
        conn.advance(poll.result())
        return None
    room_id = st.rooms[-1 - round_ % SLIDING_WAKE_ROOMS]
    t0 = time.perf_counter()
    event_id = await send(conn.api, st.sender, room_id, f"wake {round_}")
    resp = await poll
    conn.advance(resp)
    polls = 0
    while event_id not in sliding_timeline(resp, room_id) and polls < 20:
        resp = await conn.request(30_000)
        polls += 1
    took = time.perf_counter() - t0
    if event_id not in sliding_timeline(resp, room_id):
        raise RuntimeError(f"{conn.api.base}: the message never reached the sliding sync")
    if resp["rooms"][room_id].get("initial"):
        raise RuntimeError(f"{conn.api.base}: the woken room came as initial, not as an update")
    return took


async def bench_sliding_quiet(conn: SlidingConnection, n_rooms: int) -> float:
    """One incremental request with nothing new (``pos``, timeout 0): its seconds; the response
    is checked to hold no room and the list's count."""
    t = time.perf_counter()
    resp = await conn.request(0)
    took = time.perf_counter() - t
    if resp.get("rooms") or resp.get("lists", {}).get("all", {}).get("count") != n_rooms:
        raise RuntimeError(f"{conn.api.base}: an incremental sync with nothing new: {resp}")
    return took


async def run_sliding_sync(plan: Plan, work: Path) -> tuple[dict, dict]:
    """Figure 9 on its own pair of servers (see the module's docstring). Each server is timed in
    one block of back-to-back rounds (taking turns makes the faster server answer from idle:
    see :func:`bench_directory`)."""
    work = work / "sliding"
    work.mkdir()
    syn_cfg, syn_port = prepare_synapse(work, {"bcrypt_rounds": 4})
    out: dict[str, dict] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bastion = spawn_bastion(work, "bastion", "[guard.rate_limits]\nenabled = false\n"
                                "[guard.registration]\nper_address_burst = 0\n")  # fmt: skip
        await wait_ready(session, bastion)
        synapse = start_synapse(syn_cfg, syn_port)
        await wait_ready(session, synapse)
        servers = (bastion, synapse)
        apis = {srv.name: Api(session, srv) for srv in servers}
        setup: dict[str, SlidingRooms] = {}
        for srv in servers:
            t = time.monotonic()
            setup[srv.name] = await populate_sliding(apis[srv.name], plan.sliding_rooms)
            out[srv.name] = {"sliding_rooms": len(setup[srv.name].rooms),
                             "sliding_populate_s": time.monotonic() - t}  # fmt: skip
        await asyncio.sleep(2)  # settle after the set-up
        times: dict[str, dict[str, list[float]]] = {
            srv.name: {"initial": [], "wake": [], "quiet": []} for srv in servers
        }
        for srv in servers:  # warm-up: one fresh connection each, not counted
            await bench_sliding_initial(apis[srv.name], setup[srv.name], -1)
        for srv in servers:
            for i in range(plan.sliding_rounds):
                took = await bench_sliding_initial(apis[srv.name], setup[srv.name], i)
                times[srv.name]["initial"].append(took)
        conns = {
            srv.name: SlidingConnection(apis[srv.name], setup[srv.name].user, "incremental")
            for srv in servers
        }
        for srv in servers:
            await conns[srv.name].request(0)
        for srv in servers:
            deadline = time.monotonic() + 300
            for i in range(plan.sliding_wake_rounds):
                if time.monotonic() > deadline:
                    break
                woke = await bench_sliding_wake(conns[srv.name], setup[srv.name], i)
                if woke is not None:
                    times[srv.name]["wake"].append(woke)
        for srv in servers:
            for _ in range(3):  # settle: the wake-ups' last updates sent
                await conns[srv.name].request(0)
        for srv in servers:
            for _ in range(plan.sliding_wake_rounds):
                took = await bench_sliding_quiet(conns[srv.name], len(setup[srv.name].rooms))
                times[srv.name]["quiet"].append(took)
        for srv in servers:
            t = times[srv.name]
            if len(t["wake"]) < plan.sliding_wake_rounds // 2:
                raise RuntimeError(f"{srv.name}: {len(t['wake'])} wake-up rounds counted")
            out[srv.name].update({
                "sliding_initial_ms": statistics.median(t["initial"]) * 1000,
                "sliding_wake_p50_ms": percentile(t["wake"], 0.5) * 1000,
                "sliding_wake_p95_ms": percentile(t["wake"], 0.95) * 1000,
                "sliding_incremental_quiet_ms": statistics.median(t["quiet"]) * 1000,
                "sliding_initial_rounds": len(t["initial"]),
                "sliding_wake_rounds": len(t["wake"]),
                "sliding_quiet_rounds": len(t["quiet"]),
            })  # fmt: skip
        for srv in servers:
            stop_process(srv.proc)
    return out["bastion"], out["synapse"]


ROWS = [
    ("send_1_sender_msgs_per_s", "send, 1 sender (msg/s)", "up"),
    ("send_10_senders_msgs_per_s", "send, 10 senders in 1 room (msg/s)", "up"),
    ("sync_wake_p50_ms", "/sync wake-up p50 (ms)", "down"),
    ("sync_wake_p95_ms", "/sync wake-up p95 (ms)", "down"),
    ("initial_sync_limit10_ms", "initial /sync, 1k-msg room, limit 10 (ms)", "down"),
    ("initial_sync_default_ms", "initial /sync, 1k-msg room, default (ms)", "down"),
    ("register_ms", "register, m.login.dummy UIA (ms)", "down"),
    ("login_ms", "login, m.login.password (ms)", "down"),
    ("rss_idle_mib", "RSS idle after startup (MiB)", "down"),
    ("rss_peak_startup_mib", "RSS peak by idle, VmHWM (MiB)", "down"),
    ("rss_peak_msg_sync_load_mib", "RSS peak, figures 1-3 (MiB)", "down"),
    ("rss_after_msg_sync_load_mib", "RSS after figures 1-3 (MiB)", "down"),
    ("rss_peak_auth_mib", "RSS peak, figure 4 register/login (MiB)", "down"),
    ("rss_after_load_mib", "RSS after all load (MiB)", "down"),
    ("startup_s", "startup to first /versions (s)", "down"),
    ("directory_search_narrow_ms", "user-directory search on 10,000 users, 10 hits (ms)", "down"),
    ("directory_search_broad_ms", "user-directory search on 10,000 users, 500 hits (ms)", "down"),
    ("search_rare_ms", "message search on {search_messages:,} msgs, 10 hits, rank (ms)", "down"),
    (
        "search_common_rank_ms",
        "message search on {search_messages:,} msgs, 10% hit, rank (ms)",
        "down",
    ),
    (
        "search_common_recent_ms",
        "message search on {search_messages:,} msgs, 10% hit, recent (ms)",
        "down",
    ),
    ("push_send_msgs_per_s", "send, 1 sender, 100-member room, push rules (msg/s)", "up"),
    ("push_send_p50_ms", "send, 100-member room, push rules, p50 (ms)", "down"),
    (
        "push_send_evaluated_msgs_per_s",
        "send + evaluation finished, 100-member room (msg/s)",
        "up",
    ),
    ("sliding_initial_ms", "sliding sync, new connection, {sliding_rooms} rooms (ms)", "down"),
    ("sliding_wake_p50_ms", "sliding sync wake-up p50 (ms)", "down"),
    ("sliding_wake_p95_ms", "sliding sync wake-up p95 (ms)", "down"),
    ("sliding_incremental_quiet_ms", "sliding sync, incremental, nothing new (ms)", "down"),
]


def ratio_key(key: str, direction: str) -> str:
    base = key.rsplit("_", 1)[0] if key.endswith(("_ms", "_s", "_mib")) else key
    if direction == "up":
        return f"{base.removesuffix('_msgs_per')}_bastion_over_synapse"
    return f"{base}_synapse_over_bastion"


#: Goals: the ratios (each "how many times better than Synapse") and the least each must be.
GOALS: dict[str, tuple[tuple[str, ...], float]] = {
    "send_3x_synapse": (
        ("send_1_sender_bastion_over_synapse", "send_10_senders_bastion_over_synapse"), 3
    ),
    "sync_wake_at_most_half_of_synapse": (
        ("sync_wake_p50_synapse_over_bastion", "sync_wake_p95_synapse_over_bastion"), 2
    ),
    "memory_at_most_a_third_of_synapse": (
        ("rss_idle_synapse_over_bastion", "rss_peak_msg_sync_load_synapse_over_bastion",
         "rss_after_load_synapse_over_bastion"), 3,
    ),
    "user_directory_3x_synapse": (
        ("directory_search_narrow_synapse_over_bastion",
         "directory_search_broad_synapse_over_bastion"), 3,
    ),
    "message_search_3x_synapse": (
        ("search_rare_synapse_over_bastion", "search_common_rank_synapse_over_bastion",
         "search_common_recent_synapse_over_bastion"), 3,
    ),
    "push_send_5x_synapse": (
        ("push_send_bastion_over_synapse", "push_send_evaluated_bastion_over_synapse"), 5
    ),
    "sliding_sync_3x_synapse": (
        ("sliding_initial_synapse_over_bastion", "sliding_wake_p50_synapse_over_bastion",
         "sliding_incremental_quiet_synapse_over_bastion"), 3,
    ),
}  # fmt: skip


def report(b: dict, s: dict, plan: Plan, quick: bool, runs: int) -> dict:
    """Print the table of the figures both servers have (all of them, or figure 6, 7, 8 or 9
    alone with ``--only-directory``, ``--only-search``, ``--only-push`` or
    ``--only-sliding-sync``) and the goals they decide; return the JSON summary."""
    rows = [(key, label.format(search_messages=b.get("search_messages", 0),
                               sliding_rooms=b.get("sliding_rooms", 0)), direction)
            for key, label, direction in ROWS if key in b and key in s]  # fmt: skip
    ratios = {}
    for key, _, direction in rows:
        num, den = (b[key], s[key]) if direction == "up" else (s[key], b[key])
        ratios[ratio_key(key, direction)] = num / den if den else None
    goals = {
        goal: min(ratios[k] or 0 for k in keys) >= least
        for goal, (keys, least) in GOALS.items()
        if all(k in ratios for k in keys)
    }
    width = max(len(label) for _, label, _ in rows)
    print(f"{'':<{width}}  {'Bastion':>10}  {'Synapse':>10}  ratio")
    for key, label, direction in rows:
        r = ratios[ratio_key(key, direction)]
        what = "B/S" if direction == "up" else "S/B"
        print(f"{label:<{width}}  {b[key]:>10.1f}  {s[key]:>10.1f}  {r:6.2f}x ({what})")
    if "sync_wake_rounds" in b:
        print(
            f"(sync wake rounds: {b['sync_wake_rounds']} / {s['sync_wake_rounds']}; history: "
            f"{b['history_msgs']} / {s['history_msgs']} messages; throughput: median of "
            f"{plan.throughput_repeats} repeats; every figure: median over {runs} whole run(s))"
        )
    if "directory_users" in b:
        print(
            f"(user directory: {b['directory_users']} / {s['directory_users']} users, created "
            f"in {b['directory_populate_s']:.0f} / {s['directory_populate_s']:.0f} s; results "
            f"per search, narrow {b['directory_narrow_results_per_search']:.1f} / "
            f"{s['directory_narrow_results_per_search']:.1f}, broad "
            f"{b['directory_broad_results_per_search']:.1f} / "
            f"{s['directory_broad_results_per_search']:.1f}; median of {plan.directory_rounds} "
            "searches each; every local user searchable on both)"
        )
    if "search_messages" in b:
        print(
            f"(message search: {b['search_messages']} / {s['search_messages']} messages in 10 "
            f"rooms, sent in {b['search_populate_s']:.0f} / {s['search_populate_s']:.0f} s; "
            f"results per search, rare {b['search_rare_results_per_search']:.1f} / "
            f"{s['search_rare_results_per_search']:.1f}, common "
            f"{b['search_common_rank_results_per_search']:.1f} / "
            f"{s['search_common_rank_results_per_search']:.1f}; median of {plan.search_rounds} "
            "searches each)"
        )
    if "register_ms" in b:
        print(
            "Bastion: argon2id t=3 m=64MiB p=1 (production defaults). Synapse 1.163 defaults "
            "(bcrypt 12 rounds, generated log config) with rate limits raised to 1000/s, burst "
            "1000: " + ", ".join(RATE_LIMITED) + ". Both on SQLite, 127.0.0.1, one client process "
            "(aiohttp)."
        )
    if "directory_users" in b:
        print(
            "Figure 6: Bastion with argon2's cheapest costs and its rate limits off, Synapse with "
            "the same raised rate limits; every local user searchable on both; no password hashed."
        )
    if "search_messages" in b:
        print(
            "Figure 7: Bastion with argon2's cheapest costs and its rate limits off, Synapse with "
            "the same raised rate limits; the messages sent through the client API on both."
        )
    if "push_msgs" in b:
        print(
            f"(push: {b['push_members']} / {s['push_members']} members joined, set up in "
            f"{b['push_populate_s']:.0f} / {s['push_populate_s']:.0f} s; {b['push_msgs']} / "
            f"{s['push_msgs']} messages sent one after the other; evaluation finished "
            f"{b['push_drain_ms']:.0f} / {s['push_drain_ms']:.0f} ms after the last send, read "
            "from a member's /sync notification_count; then every one of the "
            f"{b['push_members_counted']} / {s['push_members_counted']} other members' count "
            "checked equal)"
        )
        print(
            "Figure 8: Bastion with argon2's cheapest costs, its rate limits off and the join-wave "
            "detector's limit raised to 1,000 joins (push rules "
            "evaluated after the commit, off the request path), Synapse with bcrypt 4 rounds and "
            "the same raised rate limits (push rules evaluated before the event is persisted); "
            "every member with the default push rules."
        )
    if "sliding_rooms" in b:
        print(
            f"(sliding sync: {b['sliding_rooms']} / {s['sliding_rooms']} rooms of "
            f"{SLIDING_OTHERS + 1} members and {SLIDING_MSGS_PER_ROOM} messages each, set up in "
            f"{b['sliding_populate_s']:.0f} / {s['sliding_populate_s']:.0f} s; one list, window "
            f"{SLIDING_WINDOW}, timeline {SLIDING_TIMELINE}, Element X's required_state, "
            "to_device/e2ee/account_data/receipts/typing on; medians of "
            f"{b['sliding_initial_rounds']} / {s['sliding_initial_rounds']} new connections, "
            f"{b['sliding_wake_rounds']} / {s['sliding_wake_rounds']} wake-ups, "
            f"{b['sliding_quiet_rounds']} / {s['sliding_quiet_rounds']} empty incrementals; "
            "every response checked)"
        )
        print(
            "Figure 9: Bastion with argon2's cheapest costs and its rate limits off, Synapse with "
            "bcrypt 4 rounds and the same raised rate limits (its sliding sync on by default); "
            "each server timed in one block of rounds."
        )
    if "reference_bare_aiohttp_server_rss_idle_mib" in b:
        print(
            "Reference: a bare aiohttp server (one JSON route) idles at "
            f"{b['reference_bare_aiohttp_server_rss_idle_mib']:.1f} MiB RSS on this Python; a "
            f"third of Synapse's idle RSS is {s['rss_idle_mib'] / 3:.1f} MiB."
        )
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'MISSED'}")

    def rounded(d: dict) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}

    return {
        "quick": quick,
        "runs": runs,
        "bastion": rounded(b),
        "synapse": rounded(s),
        "ratios": rounded(ratios),
        "goals": goals,
        "synapse_rate_limits_raised_to_1000_per_s": list(RATE_LIMITED),
        "bastion_argon2": "argon2id time_cost=3 memory_cost=65536KiB parallelism=1 (defaults)",
    }


def median_figures(runs: list[dict]) -> dict:
    """Per figure, the median over whole runs (booleans: all of them)."""
    out: dict = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(first, bool):
            out[key] = all(values)
        elif isinstance(first, int | float):
            out[key] = statistics.median(values)
        else:
            out[key] = first
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smaller counts)")
    parser.add_argument(
        "--runs", type=int, default=1, metavar="N",
        help="repeat the whole measurement N times with fresh servers and report per-figure "
        "medians (the machine may be shared; default 1)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--only-directory", action="store_true",
                        help="figure 6 (user-directory search) alone")  # fmt: skip
    parser.add_argument("--only-search", action="store_true",
                        help="figure 7 (message search) alone")  # fmt: skip
    parser.add_argument("--only-push", action="store_true",
                        help="figure 8 (sending with push rules, 100 members) alone")  # fmt: skip
    parser.add_argument("--only-sliding-sync", action="store_true",
                        help="figure 9 (simplified sliding sync latencies) alone")  # fmt: skip
    parser.add_argument("--search-messages", type=int, metavar="N",
                        help="messages figure 7 searches (default 100,000; --quick 10,000)")  # fmt: skip
    parser.add_argument("--at-rest", action="store_true",
                        help="Bastion with encryption at rest on (issue 10)")  # fmt: skip
    args = parser.parse_args()
    if not 1 <= args.runs <= 9:
        parser.error("--runs must be 1 to 9")
    if args.only_directory + args.only_search + args.only_push + args.only_sliding_sync > 1:
        parser.error(
            "--only-directory, --only-search, --only-push and --only-sliding-sync exclude each other"
        )
    plan = Plan.make(args.quick)
    if args.search_messages is not None:
        if not 100 <= args.search_messages <= 1_000_000:
            parser.error("--search-messages must be 100 to 1,000,000")
        plan.search_messages = args.search_messages
    results: list[tuple[dict, dict]] = []
    for i in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
        try:
            only = (
                args.only_directory or args.only_search or args.only_push or args.only_sliding_sync
            )
            b, s = ({}, {}) if only else asyncio.run(run(plan, work, args.at_rest))
            bd, sd = (
                asyncio.run(run_directory(plan, work))
                if args.only_directory or not only
                else ({}, {})
            )
            bs, ss = (
                asyncio.run(run_search(plan, work)) if args.only_search or not only else ({}, {})
            )
            bp, sp = asyncio.run(run_push(plan, work)) if args.only_push or not only else ({}, {})
            bl, sl = (
                asyncio.run(run_sliding_sync(plan, work))
                if args.only_sliding_sync or not only
                else ({}, {})
            )
            results.append(({**b, **bd, **bs, **bp, **bl}, {**s, **sd, **ss, **sp, **sl}))
        finally:
            _stop_all()
            if args.keep:
                print(f"data kept in {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
        if args.runs > 1:
            b, s = results[-1]
            print(f"run {i + 1}/{args.runs}: " + json.dumps({"bastion": b, "synapse": s}),
                  file=sys.stderr)  # fmt: skip
    b = median_figures([r[0] for r in results])
    s = median_figures([r[1] for r in results])
    out = report(b, s, plan, args.quick, args.runs)
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
