"""The kill test for security-action records (issue 8: "A crash never leaves one without the
other").

``bastion serve`` runs as a real subprocess. Several threads log in as new devices, upload
device keys and log out every other device, as fast as the server answers; the process is
SIGKILLed in the middle of that load and started again. Replaying the ledger's action records
from the start must then give exactly the devices and the device keys the database holds (each
key object with the SHA-256 its record names: key transparency), and every acknowledged login,
key upload and logout must have its record.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bastion.services.security_records import key_sha256
from tests.acceptance.test_durability import ServerProcess
from tests.support.accounts import PASSWORD
from tests.support.e2ee import V3, Device
from tests.support.harness import Client

WORKERS = 4
LOAD_SECONDS = 1.5
MIN_ACKED = 12


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "bastion.toml").write_text(
        'server_name = "localhost"\nregistration = "open"\n'
        "argon2_time_cost = 1\nargon2_memory_cost = 8192\nargon2_parallelism = 1\n"
    )
    return d


def replay(db_path: Path) -> tuple[dict, dict, dict, set, set]:
    """(devices, device keys, acked-able facts) from the ledger's action records, and the
    devices and device keys in the database."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        entries = [json.loads(r[0]) for r in conn.execute(
            "SELECT entry FROM ledger_entries WHERE kind = 'action' ORDER BY idx")]  # fmt: skip
        count, top = conn.execute("SELECT COUNT(*), MAX(idx) FROM ledger_entries").fetchone()
        db_devices = {(u, d) for u, d in conn.execute("SELECT user_id, device_id FROM devices")}
        db_keys = {
            (u, d): key_sha256(json.loads(k))
            for u, d, k in conn.execute("SELECT user_id, device_id, key_json FROM e2e_device_keys")
        }
    finally:
        conn.close()
    assert count == top + 1, "the leaf indexes have a gap"
    devices: dict[tuple[str, str], int] = {}
    keys: dict[tuple[str, str], str] = {}
    seen: dict[str, set] = {"login": set(), "keys": set(), "logout": set()}
    for rec in entries:
        user, details = rec.get("target"), rec.get("details") or {}
        if rec["action"] == "account.create" and details.get("device_id"):
            devices[user, details["device_id"]] = 1
        elif rec["action"] == "login.success":
            devices[user, details["device_id"]] = 1
            seen["login"].add((user, details["device_id"]))
        elif rec["action"] == "device_keys.upload":
            keys[user, details["device_id"]] = details["keys_sha256"]
            seen["keys"].add((user, details["device_id"]))
        elif rec["action"] == "device.delete":
            devices.pop((user, details["device_id"]), None)
            keys.pop((user, details["device_id"]), None)
            seen["logout"].add((user, details["device_id"]))
    return devices, keys, seen, db_devices, set(db_keys.items())


def test_action_records_survive_sigkill_with_their_changes(tmp_path, data_dir):
    server = ServerProcess(data_dir, tmp_path / "server.log").start()
    try:
        users = [Client(server.base_url).register(password=PASSWORD) for _ in range(WORKERS)]
        acked: dict[str, set] = {"login": set(), "keys": set(), "logout": set()}
        lock = threading.Lock()
        stop = threading.Event()

        def worker(user: Client) -> None:
            base = Client(server.base_url)
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = base.request("POST", f"{V3}/login", {
                        "type": "m.login.password", "user": user.user_id,
                        "password": PASSWORD}, token=None, timeout=10)  # fmt: skip
                    if r.status != 200:
                        continue
                    c = Client(server.base_url, r.body["access_token"])
                    c.user_id, c.device_id = r.body["user_id"], r.body["device_id"]
                    device = (c.user_id, c.device_id)
                    with lock:
                        acked["login"].add(device)
                    dev = Device(c)
                    if dev.upload(device_keys=dev.device_keys()).status == 200:
                        with lock:
                            acked["keys"].add(device)
                    if i % 2:
                        continue  # every other device stays, with its keys
                    if c.request("POST", f"{V3}/logout", {}, timeout=10).status == 200:
                        with lock:
                            acked["logout"].add(device)
                except OSError:
                    return  # the server is gone

        threads = [threading.Thread(target=worker, args=(u,)) for u in users]
        for t in threads:
            t.start()
        started = time.monotonic()
        deadline = started + 30
        while time.monotonic() < deadline:
            with lock:
                enough = len(acked["keys"]) >= MIN_ACKED
            if enough and time.monotonic() - started >= LOAD_SECONDS:
                break
            time.sleep(0.02)
        server.kill()  # mid-load: the workers are still logging in and uploading
        stop.set()
        for t in threads:
            t.join(30)
        assert len(acked["keys"]) >= MIN_ACKED, "the load produced too few acknowledged uploads"

        server.start()
        devices, keys, seen, db_devices, db_keys = replay(data_dir / "homeserver.db")
        # The ledger replays to exactly the database's devices and published device keys.
        assert set(devices) == db_devices
        assert set(keys.items()) == db_keys
        # Every acknowledged action has its record.
        for kind in ("login", "keys", "logout"):
            assert not acked[kind] - seen[kind], f"an acknowledged {kind} has no record"
        # The server goes on working and recording.
        c = Client(server.base_url)
        r = c.request("POST", f"{V3}/login", {"type": "m.login.password",
                                              "user": users[0].user_id, "password": PASSWORD},
                      token=None)  # fmt: skip
        assert r.status == 200, r.body
        devices, _keys, _seen, db_devices, _db_keys = replay(data_dir / "homeserver.db")
        assert (users[0].user_id, r.body["device_id"]) in devices and set(devices) == db_devices
        print(
            f"\naction durability: {len(acked['login'])} logins, {len(acked['keys'])} key "
            f"uploads, {len(acked['logout'])} logouts acknowledged before SIGKILL; the ledger "
            f"replays to the database's {len(db_devices)} devices and {len(db_keys)} device keys"
        )
    finally:
        server.stop()
