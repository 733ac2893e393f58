"""Schema migrations (bastion.storage.sqlite.migrations): the runner, and the upgrade of a
database written by commit cbbfc30 (the last schema before versioning), checked through the
Client-Server API of the new code. The fixture is made by ``make_cbbfc30_fixture.py``."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest

from bastion.cli import main as cli
from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.database import Database
from bastion.storage.sqlite.migrations import (
    Migration,
    MigrationFailed,
    SchemaTooNew,
    UnknownSchema,
    migrate,
    sql_migration,
)
from bastion.storage.sqlite.store import SqliteStore
from tests.support.harness import Client, ServerThread

FIXTURE = Path(__file__).parent / "fixtures" / "cbbfc30"
V3 = "/_matrix/client/v3"
MASTER = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"


def restore(data_dir: Path) -> None:
    """The cbbfc30 data directory: database, signing key, media files."""
    data_dir.mkdir(parents=True)
    conn = sqlite3.connect(str(data_dir / "homeserver.db"))
    conn.executescript((FIXTURE / "homeserver.sql").read_text(encoding="utf-8"))
    conn.close()
    (data_dir / "signing.key").write_text((FIXTURE / "signing.key").read_text())
    for rel, b64 in json.loads((FIXTURE / "media.json").read_text()).items():
        path = data_dir / "media" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(b64))


def schema_of(path: Path) -> set[tuple]:
    conn = sqlite3.connect(str(path))
    try:
        return {tuple(r) for r in conn.execute(MASTER) if r[1] != mig.VERSION_TABLE}
    finally:
        conn.close()


def versions(path: Path) -> list[tuple[int, str]]:
    """The recorded migrations; [] when there is no version table."""
    conn = sqlite3.connect(str(path))
    try:
        if (
            conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone()
            is None
        ):
            return []
        return [tuple(r) for r in conn.execute("SELECT version, name FROM schema_version")]
    finally:
        conn.close()


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def number_of(name: str) -> int:
    """The number of the migration named ``name`` (``NNNN_name.sql``)."""
    (m,) = [m for m in mig.migrations() if m.name == name]
    return m.version


def restore_before(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """The cbbfc30 fixture restored under ``tmp_path/data`` and migrated up to the migration
    before ``name``: (data directory, database path)."""
    data = tmp_path / "data"
    restore(data)
    path = data / "homeserver.db"
    n = number_of(name)
    c = connect(path)
    try:
        assert mig.migrate(c, str(path), mig.migrations()[: n - 1]) == n - 1
    finally:
        c.close()
    return data, path


# -- the runner ----------------------------------------------------------------------------------
def test_fresh_database_reaches_the_latest_version(tmp_path):
    store = SqliteStore(tmp_path / "h.db")
    store.open()
    store.close()
    every = mig.migrations()
    assert [m.version for m in every] == list(range(1, len(every) + 1))
    assert versions(tmp_path / "h.db") == [(m.version, m.name) for m in every]


def test_migration_1_is_exactly_the_cbbfc30_schema(tmp_path):
    """Migration 1 must never change: the tables, indexes and their SQL equal what cbbfc30
    created (read from the fixture's dump)."""
    old = tmp_path / "old.db"
    conn = sqlite3.connect(str(old))
    conn.executescript((FIXTURE / "homeserver.sql").read_text(encoding="utf-8"))
    conn.close()
    new = tmp_path / "new.db"
    c = connect(new)
    assert migrate(c, str(new), mig.migrations()[:1]) == 1
    c.close()
    assert schema_of(new) == schema_of(old)
    assert len(schema_of(old)) > 60


def _recording(calls: list, n: int) -> list[Migration]:
    def make(v: int) -> Migration:
        def up(conn: sqlite3.Connection) -> None:
            calls.append(v)
            conn.execute(f"CREATE TABLE t{v} (x INTEGER)")
            conn.execute(f"INSERT INTO t{v} VALUES ({v})")

        return Migration(v, f"make_t{v}", up)

    return [make(v) for v in range(1, n + 1)]


def test_migrations_run_in_order_exactly_once(tmp_path):
    path = tmp_path / "h.db"
    calls: list[int] = []
    c = connect(path)
    assert migrate(c, str(path), _recording(calls, 3)) == 3
    assert calls == [1, 2, 3]
    assert migrate(c, str(path), _recording(calls, 3)) == 3
    assert calls == [1, 2, 3]  # nothing runs twice
    c.close()
    # A later release adds two: only those run, in order, and are recorded.
    c = connect(path)
    assert migrate(c, str(path), _recording(calls, 5)) == 5
    assert calls == [1, 2, 3, 4, 5]
    assert [r[0] for r in c.execute("SELECT x FROM t5")] == [5]
    c.close()
    assert versions(path) == [(v, f"make_t{v}") for v in range(1, 6)]


def test_two_processes_opening_at_once_apply_each_migration_once(tmp_path):
    """The server and an admin command may open a new database together: the version is read
    inside the write transaction, so the second waits and finds the work done."""
    import threading
    import time

    path = tmp_path / "h.db"
    calls: list[int] = []
    started = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        calls.append(1)
        started.set()
        time.sleep(0.3)
        conn.execute("CREATE TABLE t1 (x INTEGER)")

    steps = [Migration(1, "slow", slow), *_recording(calls, 2)[1:]]
    results: list[object] = []

    def opener() -> None:
        c = connect(path)
        try:
            results.append(migrate(c, str(path), steps))
        except Exception as e:  # noqa: BLE001 - reported below
            results.append(e)
        finally:
            c.close()

    first = threading.Thread(target=opener)
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=opener)
    second.start()
    first.join(10)
    second.join(10)
    assert results == [2, 2]
    assert calls == [1, 2]
    assert versions(path) == [(1, "slow"), (2, "make_t2")]


def test_a_failing_migration_leaves_the_previous_version(tmp_path):
    path = tmp_path / "h.db"
    calls: list[int] = []

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t3 (x INTEGER)")
        conn.execute("INSERT INTO t2 VALUES (99)")
        raise RuntimeError("disk says no")

    steps = [*_recording(calls, 2), Migration(3, "broken", broken)]
    c = connect(path)
    with pytest.raises(MigrationFailed) as e:
        migrate(c, str(path), steps)
    assert "migration 3 (broken)" in str(e.value) and "version 2" in str(e.value)
    assert not c.in_transaction
    c.close()
    assert versions(path) == [(1, "make_t1"), (2, "make_t2")]
    c = connect(path)
    assert [r[0] for r in c.execute("SELECT x FROM t2")] == [2]  # the insert was undone
    assert c.execute("SELECT name FROM sqlite_master WHERE name = 't3'").fetchone() is None
    c.close()
    # A broken SQL migration (its second statement fails) is rolled back the same way.
    bad_sql = sql_migration(3, "bad_sql", "CREATE TABLE t3 (x);\nINSERT INTO nowhere VALUES (1);\n")
    c = connect(path)
    with pytest.raises(MigrationFailed):
        migrate(c, str(path), [*_recording([], 2), bad_sql])
    assert c.execute("SELECT name FROM sqlite_master WHERE name = 't3'").fetchone() is None
    c.close()
    assert versions(path)[-1] == (2, "make_t2")


def test_database_open_closes_after_a_failed_migration(tmp_path):
    def boom(conn: sqlite3.Connection) -> None:
        raise RuntimeError("boom")

    db = Database(tmp_path / "h.db")
    with pytest.raises(MigrationFailed):
        db.open([Migration(1, "boom", boom)])
    with pytest.raises(AssertionError):
        db.reader  # noqa: B018 - nothing stays open
    assert versions(tmp_path / "h.db") == []


def test_a_newer_database_is_refused_untouched(tmp_path):
    path = tmp_path / "h.db"
    store = SqliteStore(path)
    store.open()
    store.close()
    newest = mig.migrations()[-1].version
    c = connect(path)
    c.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)", (newest + 1,))
    c.close()
    before = schema_of(path)
    with pytest.raises(SchemaTooNew) as e:
        SqliteStore(path).open()
    msg = str(e.value)
    assert f"schema version {newest + 1}" in msg and f"up to {newest}" in msg
    assert "newer Bastion" in msg
    assert schema_of(path) == before
    assert versions(path)[-1] == (newest + 1, "from the future")


def test_an_unversioned_cbbfc30_database_is_stamped_version_1(tmp_path):
    restore(tmp_path / "d")
    path = tmp_path / "d" / "homeserver.db"
    c = connect(path)
    assert mig.current_version(c) is None
    assert migrate(c, str(path), mig.migrations()[:1]) == 1
    assert mig.current_version(c) == 1
    c.close()
    assert versions(path) == [(1, "initial")]


def test_an_unversioned_database_that_is_not_bastions_is_refused(tmp_path):
    restore(tmp_path / "d")
    path = tmp_path / "d" / "homeserver.db"
    c = connect(path)
    c.execute("ALTER TABLE events DROP COLUMN soft_failed")
    c.execute("DROP TABLE receipts")
    before = schema_of(path)
    with pytest.raises(UnknownSchema) as e:
        migrate(c, str(path))
    assert "receipts" in str(e.value) and "events.soft_failed" in str(e.value)
    c.close()
    assert schema_of(path) == before
    assert versions(path) == []  # no version table was created


def test_load_refuses_gaps_and_reads_sql_and_python(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_migrations_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "0001_first.sql").write_text("-- a comment\nCREATE TABLE a (x);\n")
    (pkg / "0002_second.py").write_text("def up(conn):\n    conn.execute('CREATE TABLE b (y)')\n")
    (pkg / "README.txt").write_text("not a migration")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = mig.load("fake_migrations_pkg")
    assert [(m.version, m.name) for m in loaded] == [(1, "first"), (2, "second")]
    path = tmp_path / "h.db"
    c = connect(path)
    assert migrate(c, str(path), loaded) == 2
    c.close()
    (pkg / "0004_gap.sql").write_text("CREATE TABLE d (x);\n")
    with pytest.raises(RuntimeError, match="without gaps"):
        mig.load("fake_migrations_pkg")


# -- the cbbfc30 database, upgraded and served ---------------------------------------------------
@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FIXTURE / "manifest.json").read_text())


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    data = tmp_path_factory.mktemp("cbbfc30") / "data"
    restore(data)
    srv = ServerThread(data, registration="token").start()
    yield srv
    srv.stop()


def as_device(srv: ServerThread, m: dict, user: str, device: str) -> Client:
    c = Client(srv.base_url, m["users"][user]["devices"][device])
    c.user_id, c.device_id = m["users"][user]["user_id"], device
    return c


def ok(r) -> dict:
    assert r.status == 200, (r.status, r.body)
    return r.body


def test_upgrade_is_recorded(upgraded):
    assert versions(upgraded.config.database_path) == [
        (m.version, m.name) for m in mig.migrations()
    ]


def test_accounts_log_in_and_old_tokens_work(upgraded, manifest):
    for user in manifest["users"].values():
        r = Client(upgraded.base_url).request(
            "POST", f"{V3}/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user",
             "user": user["user_id"]}, "password": user["password"]},
            token=None,
        )  # fmt: skip
        assert ok(r)["user_id"] == user["user_id"]
        r = Client(upgraded.base_url).request(
            "POST", f"{V3}/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user",
             "user": user["user_id"]}, "password": user["password"] + "x"},
            token=None,
        )  # fmt: skip
        assert r.status == 403
        for device, token in user["devices"].items():
            who = ok(Client(upgraded.base_url, token).request("GET", f"{V3}/account/whoami"))
            assert (who["user_id"], who["device_id"]) == (user["user_id"], device)
    ada = as_device(upgraded, manifest, "ada", "ADADESK")
    devices = ok(ada.request("GET", f"{V3}/devices"))["devices"]
    # The logins above added a device; the stored one keeps its display name.
    assert ("ADADESK", "ADADESK display") in [
        (d["device_id"], d.get("display_name")) for d in devices
    ]
    # The admin flag survived: the admin-only whois answers.
    bob_id = manifest["users"]["bob"]["user_id"]
    assert ok(ada.request("GET", f"{V3}/admin/whois/{bob_id}"))["user_id"] == bob_id
    bob = as_device(upgraded, manifest, "bob", "BOBPHONE")
    ada_id = manifest["users"]["ada"]["user_id"]
    assert bob.request("GET", f"{V3}/admin/whois/{ada_id}").status == 403


def _timeline(sync: dict, room_id: str, section: str = "join") -> list[dict]:
    return sync["rooms"][section][room_id]["timeline"]["events"]


def test_rooms_state_messages_and_redaction_are_served(upgraded, manifest):
    ada = as_device(upgraded, manifest, "ada", "ADADESK")
    bob = as_device(upgraded, manifest, "bob", "BOBPHONE")
    full = json.dumps({"room": {"timeline": {"limit": 100}, "include_leave": True}})
    ada_sync = ok(ada.request("GET", f"{V3}/sync", query={"filter": full}))
    bob_sync = ok(bob.request("GET", f"{V3}/sync", query={"filter": full}))
    for key, room in manifest["rooms"].items():
        rid = room["room_id"]
        create = ok(ada.request("GET", f"{V3}/rooms/{rid}/state/m.room.create"))
        assert create["room_version"] == room["version"]
        assert ok(ada.request("GET", f"{V3}/rooms/{rid}/state/m.room.name")) == {
            "name": room["name"]
        }
        assert (
            ok(ada.request("GET", f"{V3}/rooms/{rid}/state/m.room.topic"))["topic"]
            == (room["topic"])
        )
        # Membership, as the room's state says it.
        for user_id, membership in room["members"].items():
            ev = ok(ada.request("GET", f"{V3}/rooms/{rid}/state/m.room.member/{user_id}"))
            assert ev["membership"] == membership, (key, user_id)
        # /messages, newest first, holds every message in order.
        r = ok(ada.request("GET", f"{V3}/rooms/{rid}/messages", query={"dir": "b",
                                                                       "limit": "100"}))  # fmt: skip
        chunk = [e for e in r["chunk"] if e["type"] == "m.room.message"]
        ids = [e["event_id"] for e in reversed(chunk)]
        want = [msg["event_id"] for msg in room["messages"]]
        assert [i for i in ids if i in want] == want, key
        # /sync: the timeline in the joined (ada) and left (bob, v10) sections.
        timeline = [e["event_id"] for e in _timeline(ada_sync, rid)]
        assert set(want) <= set(timeline), key
        section = "join" if room["members"][bob.user_id] == "join" else "leave"
        assert rid in bob_sync["rooms"][section], key
    lobby = manifest["rooms"]["v12"]
    rid = lobby["room_id"]
    by_id = {e["event_id"]: e for e in _timeline(ada_sync, rid)}
    redacted = by_id[lobby["redacted"]]
    assert redacted["content"] == {}
    assert redacted["unsigned"]["redacted_because"]["event_id"] == lobby["redaction"]
    redaction = by_id[lobby["redaction"]]
    assert redaction["type"] == "m.room.redaction"
    assert redaction["content"]["redacts"] == lobby["redacted"]  # v11+: in the content
    for msg in lobby["messages"]:
        if msg["event_id"] != lobby["redacted"]:
            assert by_id[msg["event_id"]]["content"]["body"] == msg["body"]
            assert by_id[msg["event_id"]]["sender"] == msg["sender"]
    cs = lobby["custom_state"]
    assert (
        ok(ada.request("GET", f"{V3}/rooms/{rid}/state/{cs['type']}/{cs['state_key']}"))
        == (cs["content"])
    )
    joined = ok(ada.request("GET", f"{V3}/rooms/{rid}/joined_members"))["joined"]
    assert set(joined) == set(lobby["members"])
    # bob's read receipt is in the room's ephemeral events.
    receipts = [
        e for e in ada_sync["rooms"]["join"][rid]["ephemeral"]["events"] if e["type"] == "m.receipt"
    ]
    rc = lobby["receipt"]
    assert any(
        rc["user"] in e["content"].get(rc["event_id"], {}).get("m.read", {}) for e in receipts
    )


def test_new_events_follow_the_old_ones(upgraded, manifest):
    """Stream positions continue after the stored ones: an incremental sync and /messages see a
    new message after the upgrade."""
    ada = as_device(upgraded, manifest, "ada", "ADADESK")
    bob = as_device(upgraded, manifest, "bob", "BOBPHONE")
    rid = manifest["rooms"]["v12"]["room_id"]
    since = ok(bob.request("GET", f"{V3}/sync"))["next_batch"]
    r = ada.request("PUT", f"{V3}/rooms/{rid}/send/m.room.message/after-upgrade",
                    {"msgtype": "m.text", "body": "after the upgrade"})  # fmt: skip
    new_id = ok(r)["event_id"]
    inc = ok(bob.request("GET", f"{V3}/sync", query={"since": since, "timeout": "5000"}))
    assert [e["event_id"] for e in _timeline(inc, rid)] == [new_id]
    r = ok(bob.request("GET", f"{V3}/rooms/{rid}/messages", query={"dir": "b", "limit": "1"}))
    assert r["chunk"][0]["event_id"] == new_id


def test_aliases_and_directory(upgraded, manifest):
    c = Client(upgraded.base_url)
    for room in manifest["rooms"].values():
        alias = room["alias"].replace("#", "%23")
        r = ok(c.request("GET", f"{V3}/directory/room/{alias}", token=None))
        assert r["room_id"] == room["room_id"]
        vis = ok(c.request("GET", f"{V3}/directory/list/room/{room['room_id']}", token=None))
        assert vis["visibility"] == ("public" if room["public"] else "private")
    chunk = ok(c.request("GET", f"{V3}/publicRooms", token=None))["chunk"]
    lobby = manifest["rooms"]["v12"]
    assert [(p["room_id"], p["name"], p.get("canonical_alias")) for p in chunk] == [
        (lobby["room_id"], lobby["name"], lobby["alias"])
    ]


def test_keys_are_served_and_claimed(upgraded, manifest):
    ada = as_device(upgraded, manifest, "ada", "ADADESK")
    keys = manifest["keys"]
    bob_dev = keys["bob_device"]
    bob_id, ada_id = bob_dev["user_id"], manifest["users"]["ada"]["user_id"]
    r = ok(ada.request("POST", f"{V3}/keys/query", {"device_keys": {bob_id: [], ada_id: []}}))
    served = r["device_keys"][bob_id]["BOBLAPTOP"]
    assert {k: v for k, v in served.items() if k != "unsigned"} == bob_dev["device_keys"]
    mine = r["device_keys"][ada_id]["ADADESK"]
    want = keys["ada_device"]
    assert {k: v for k, v in mine.items() if k not in ("unsigned", "signatures")} == {
        k: v for k, v in want["device_keys"].items() if k != "signatures"
    }
    # The device's own signature and the self-signing key's signature are both served.
    assert mine["signatures"][ada_id] == {
        **want["device_keys"]["signatures"][ada_id],
        **want["ssk_signature"],
    }
    cs = keys["ada_cross_signing"]
    assert r["master_keys"][ada_id] == cs["master_key"]
    assert r["self_signing_keys"][ada_id] == cs["self_signing_key"]
    assert r["user_signing_keys"][ada_id] == cs["user_signing_key"]
    # Every one-time key is claimed once, then the fallback key.
    claimed = {}
    for _ in range(len(bob_dev["one_time_keys"])):
        r = ok(ada.request("POST", f"{V3}/keys/claim",
                           {"one_time_keys": {bob_id: {"BOBLAPTOP": "signed_curve25519"}}}))  # fmt: skip
        claimed.update(r["one_time_keys"][bob_id]["BOBLAPTOP"])
    assert claimed == bob_dev["one_time_keys"]
    r = ok(ada.request("POST", f"{V3}/keys/claim",
                       {"one_time_keys": {bob_id: {"BOBLAPTOP": "signed_curve25519"}}}))  # fmt: skip
    assert r["one_time_keys"][bob_id]["BOBLAPTOP"] == bob_dev["fallback_keys"]


def test_key_backup_is_served(upgraded, manifest):
    ada = as_device(upgraded, manifest, "ada", "ADADESK")
    b = manifest["backup"]
    r = ok(ada.request("GET", f"{V3}/room_keys/version"))
    assert (r["version"], r["algorithm"], r["auth_data"], r["count"]) == (
        b["version"], b["algorithm"], b["auth_data"], 1)  # fmt: skip
    r = ok(ada.request("GET", f"{V3}/room_keys/keys/{b['room_id']}/{b['session_id']}",
                       query={"version": b["version"]}))  # fmt: skip
    assert r == b["session"]
    r = ok(ada.request("GET", f"{V3}/room_keys/keys", query={"version": b["version"]}))
    assert r == {"rooms": {b["room_id"]: {"sessions": {b["session_id"]: b["session"]}}}}


def test_media_is_served_with_the_same_bytes(upgraded, manifest):
    ada = as_device(upgraded, manifest, "ada", "ADADESK")
    media = manifest["media"]
    r = ada.request("GET", f"/_matrix/client/v1/media/download/localhost/{media['media_id']}")
    assert r.status == 200
    assert r.body["_raw"] == base64.b64decode(media["base64"])
    assert r.headers["Content-Type"] == media["content_type"]
    assert media["filename"] in r.headers["Content-Disposition"]
    r = ada.request("GET", f"/_matrix/client/v1/media/thumbnail/localhost/{media['media_id']}",
                    query={"width": "32", "height": "32", "method": "crop"})  # fmt: skip
    assert r.status == 200 and r.body["_raw"].startswith(b"\x89PNG")


def test_profile_account_data_filters_push_rules_presence(upgraded, manifest):
    ada = as_device(upgraded, manifest, "ada", "ADADESK")
    bob = as_device(upgraded, manifest, "bob", "BOBPHONE")
    for user_id, profile in manifest["profiles"].items():
        assert ok(ada.request("GET", f"{V3}/profile/{user_id}")) == profile
    ad = manifest["account_data"]
    g, rm = ad["global"], ad["room"]
    assert (
        ok(ada.request("GET", f"{V3}/user/{ad['user']}/account_data/{g['type']}")) == (g["content"])
    )
    r = ada.request(
        "GET", f"{V3}/user/{ad['user']}/rooms/{rm['room_id']}/account_data/{rm['type']}"
    )
    assert ok(r) == rm["content"]
    s = ok(ada.request("GET", f"{V3}/sync"))
    assert {"type": g["type"], "content": g["content"]} in s["account_data"]["events"]
    room_ad = s["rooms"]["join"][rm["room_id"]]["account_data"]["events"]
    assert {"type": rm["type"], "content": rm["content"]} in room_ad
    f = manifest["filter"]
    assert ok(bob.request("GET", f"{V3}/user/{f['user']}/filter/{f['filter_id']}")) == f["filter"]
    pr = manifest["push_rules"]
    rule = ok(ada.request("GET", f"{V3}/pushrules/global/override/{pr['rule_id']}"))
    assert (rule["conditions"], rule["enabled"]) == (pr["rule"]["conditions"], True)
    # "dont_notify" is served as the equivalent empty list (C-S API "Push Rules: Actions").
    assert rule["actions"] in (pr["rule"]["actions"], [])
    r = ada.request("GET", f"{V3}/pushrules/global/override/{pr['disabled']}/enabled")
    assert ok(r) == {"enabled": False}
    # bob never changed a rule: his predefined rule is still on.
    r = bob.request("GET", f"{V3}/pushrules/global/override/{pr['disabled']}/enabled")
    assert ok(r) == {"enabled": True}
    p = manifest["presence"]
    r = ok(ada.request("GET", f"{V3}/presence/{p['user']}/status"))
    assert (r["presence"], r["status_msg"]) == (p["presence"], p["status_msg"])


def test_pending_to_device_message_arrives(upgraded, manifest):
    td = manifest["to_device"]
    laptop = as_device(upgraded, manifest, "bob", td["device_id"])
    events = ok(laptop.request("GET", f"{V3}/sync"))["to_device"]["events"]
    assert {"sender": td["sender"], "type": td["type"], "content": td["content"]} in events
    # Only that device had one.
    phone = as_device(upgraded, manifest, "bob", "BOBPHONE")
    assert ok(phone.request("GET", f"{V3}/sync")).get("to_device", {}).get("events", []) == []


def test_registration_token_is_listed_and_usable(upgraded, manifest, capsys):
    tok = manifest["registration_token"]
    data_dir = str(upgraded.config.data_dir)

    def listed() -> dict:
        capsys.readouterr()
        assert cli(["admin", "registration-token", "list", "--data-dir", data_dir]) == 0
        (line,) = capsys.readouterr().out.splitlines()
        return json.loads(line)

    t = listed()
    assert (t["prefix"], t["uses_allowed"], t["completed"], t["valid"]) == (
        tok["token"][:4], tok["uses_allowed"], tok["completed"], True)  # fmt: skip
    c = Client(upgraded.base_url)
    body = {"username": "carol", "password": "carol password 3"}
    r = c.request("POST", f"{V3}/register", {**body, "auth": {}}, token=None)
    assert r.status == 401
    session = r.body["session"]
    auth = {"type": "m.login.registration_token", "token": tok["token"], "session": session}
    r = c.request("POST", f"{V3}/register", {**body, "auth": auth}, token=None)
    assert r.status == 401 and r.body["completed"] == ["m.login.registration_token"], r.body
    auth = {"type": "m.login.dummy", "session": session}
    r = c.request("POST", f"{V3}/register", {**body, "auth": auth}, token=None)
    assert ok(r)["user_id"] == "@carol:localhost"
    assert listed()["completed"] == tok["completed"] + 1
