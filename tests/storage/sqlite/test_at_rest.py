"""Encryption at rest (issue 10): the database encrypted with SQLCipher, the key from a file or
the environment (never the config file), ``bastion admin rekey`` to turn it on, change the key
and turn it off, and ``bastion ledger verify`` on an encrypted database."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import pytest

from bastion.cli import main
from bastion.config import Config, ConfigError
from bastion.storage.sqlite.at_rest import (
    DatabaseInUse,
    KeyError_,
    load_key,
    rekey_database,
    write_new_key,
)
from bastion.storage.sqlite.driver import (
    CIPHER_SETTINGS,
    LEGACY_CIPHER_SETTINGS,
    WrongKey,
    key_statements,
    open_sqlcipher,
)
from tests.support.accounts import db_rows
from tests.support.harness import Client, ServerThread

V3 = "/_matrix/client/v3"
SECRET = "plain-words-nobody-else-wrote-4417"
HEX = "ab" * 32


def _scan(data: Path, needle: bytes) -> list[str]:
    """The files under ``data`` whose bytes contain ``needle``."""
    return [str(p) for p in data.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _key_file(tmp_path: Path, name: str = "at-rest.key") -> Path:
    path = tmp_path / name
    write_new_key(path)
    return path


def _chat(srv: ServerThread, text: str) -> tuple[Client, str]:
    alice = Client(srv.base_url).register("alice", "correct horse battery")
    r = alice.request("POST", f"{V3}/createRoom", {"preset": "private_chat", "topic": text})
    assert r.status == 200, r.body
    room = r.body["room_id"]
    r = alice.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/t1",
                      {"msgtype": "m.text", "body": text})  # fmt: skip
    assert r.status == 200, r.body
    return alice, room


# -- where the key comes from ---------------------------------------------------------------------
def test_key_from_env_and_file(tmp_path):
    assert load_key("env:K", environ={"K": f" {HEX}\n"}) == bytes.fromhex(HEX)
    path = tmp_path / "k"
    path.write_text(HEX)
    path.chmod(0o600)
    assert load_key(f"file:{path}") == bytes.fromhex(HEX)


@pytest.mark.parametrize(("spec", "env", "message"), [
    ("env:K", {}, "is not set"),
    ("env:K", {"K": "abc"}, "64 hexadecimal digits"),
    ("env:", {}, "needs the variable's name"),
    (HEX, {}, "never goes in the config file"),
    ("file:/nonexistent/key", {}, "cannot read the key file"),
])  # fmt: skip
def test_bad_keys_are_refused_clearly(spec, env, message):
    with pytest.raises(KeyError_, match=message):
        load_key(spec, environ=env)


def test_key_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "k"
    path.write_text(HEX)
    path.chmod(0o644)
    with pytest.raises(KeyError_, match="chmod 600"):
        load_key(f"file:{path}")


def test_config_refuses_a_literal_key(tmp_path):
    with pytest.raises(ConfigError, match="never goes in the config file"):
        Config(data_dir=tmp_path, at_rest_key=HEX).validate()
    assert Config(data_dir=tmp_path, at_rest_key="env:X").validate().at_rest_key == "env:X"


def test_new_key_files_are_private_and_never_overwritten(tmp_path):
    path = _key_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_new_key(path)


# -- the encrypted server -------------------------------------------------------------------------
def test_encrypted_server_writes_no_plaintext_and_verifies(tmp_path, capsys):
    key = _key_file(tmp_path)
    data = tmp_path / "data"
    srv = ServerThread(data, at_rest_key=f"file:{key}").start()
    try:
        alice, room = _chat(srv, SECRET)
        r = alice.request("POST", "/_matrix/media/v3/upload", raw=SECRET.encode() * 100,
                          headers={"Content-Type": "text/plain"},
                          query={"filename": SECRET + ".txt"})  # fmt: skip
        assert r.status == 200, r.body
        r = alice.request("PUT", f"{V3}/profile/{alice.user_id}/displayname",
                          {"displayname": SECRET})  # fmt: skip
        assert r.status == 200, r.body
        # Everything works as usual (reads go through the same keyed connections).
        r = alice.request("GET", f"{V3}/rooms/{room}/messages?dir=b")
        assert SECRET in json.dumps(r.body)
        assert _scan(data, SECRET.encode()) == []  # (the -wal file too, while running)
    finally:
        srv.stop()
    assert _scan(data, SECRET.encode()) == []
    assert _scan(data, b"SQLite format 3") == []
    # The ledger's auditor reads it with the configured key.
    (data / "bastion.toml").write_text(f'at_rest_key = "file:{key}"\n')
    capsys.readouterr()
    assert main(["ledger", "verify", "--data-dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []


def test_wrong_or_missing_key_is_refused_without_a_traceback(tmp_path, capsys):
    key = _key_file(tmp_path)
    data = tmp_path / "data"
    ServerThread(data, at_rest_key=f"file:{key}").start().stop()
    other = _key_file(tmp_path, "other.key")
    for config in (f'at_rest_key = "file:{other}"\n', ""):
        (data / "bastion.toml").write_text(config)
        capsys.readouterr()
        code = main(["admin", "registration-token", "list", "--data-dir", str(data)])
        err = capsys.readouterr().err
        assert code == 1
        assert "cannot open the database" in err and "cannot be read with" in err
        assert "Traceback" not in err


# -- rekey ------------------------------------------------------------------------------------------
def test_rekey_on_change_off_keeps_everything(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    srv = ServerThread(data, at_rest_key="").start()
    try:
        alice, room = _chat(srv, SECRET)
    finally:
        srv.stop()
    assert _scan(data, SECRET.encode())  # plaintext before
    first = tmp_path / "first.key"
    assert main(["admin", "rekey", "--data-dir", str(data), "--generate", str(first)]) == 0
    assert f'at_rest_key = "file:{first}"' in capsys.readouterr().out
    assert _scan(data, SECRET.encode()) == []
    # Another key, from the environment.
    (data / "bastion.toml").write_text(f'at_rest_key = "file:{first}"\n')
    monkeypatch.setenv("BASTION_TEST_KEY", HEX)
    assert (
        main(["admin", "rekey", "--data-dir", str(data), "--new-key", "env:BASTION_TEST_KEY"]) == 0
    )
    with pytest.raises(WrongKey):
        ServerThread(data, at_rest_key=f"file:{first}").start()
    srv = ServerThread(data, at_rest_key="env:BASTION_TEST_KEY").start()
    try:
        alice = Client(srv.base_url, alice.access_token)
        r = alice.request("GET", f"{V3}/rooms/{room}/messages?dir=b")
        assert r.status == 200 and SECRET in json.dumps(r.body)
        # Not while a server has the database open.
        with pytest.raises(DatabaseInUse):
            rekey_database(data / "homeserver.db", bytes.fromhex(HEX), None)
    finally:
        srv.stop()
    assert _scan(data, SECRET.encode()) == []
    # And off again; every change is in the ledger, which still verifies.
    (data / "bastion.toml").write_text('at_rest_key = "env:BASTION_TEST_KEY"\n')
    assert main(["admin", "rekey", "--data-dir", str(data), "--decrypt"]) == 0
    (data / "bastion.toml").write_text("")
    capsys.readouterr()
    assert main(["ledger", "verify", "--data-dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []
    import sqlite3

    conn = sqlite3.connect(data / "homeserver.db")
    try:
        rekeys = [json.loads(r[0])["details"] for r in conn.execute(
            "SELECT entry FROM ledger_entries WHERE action = 'at_rest.rekey' ORDER BY idx")]  # fmt: skip
    finally:
        conn.close()
    assert rekeys == [{"from": "plaintext", "to": "encrypted"},
                      {"from": "encrypted", "to": "encrypted"},
                      {"from": "encrypted", "to": "plaintext"}]  # fmt: skip
    assert not (data / "homeserver.db.rekey").exists()
    assert os.listdir(data)  # (the data directory is still there, with the database)


def _opens_with(path: Path, key: bytes, settings: tuple[str, ...]) -> int | None:
    """The page size of the database at ``path`` when ``key`` in format ``settings`` opens it."""
    import sqlcipher3.dbapi2 as sqlcipher

    conn = sqlcipher.connect(str(path))
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        for statement in key_statements(key, settings):
            conn.execute(statement)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    except sqlcipher.DatabaseError:
        return None
    finally:
        conn.close()


def _history_is_served(data: Path, key_spec: str, alice: Client, room: str) -> None:
    """A server on ``data`` with the key ``key_spec`` serves the room's history (the secret)."""
    srv = ServerThread(data, at_rest_key=key_spec).start()
    try:
        r = Client(srv.base_url, alice.access_token).request(
            "GET", f"{V3}/rooms/{room}/messages?dir=b"
        )
        assert r.status == 200 and SECRET in json.dumps(r.body)
    finally:
        srv.stop()


def test_new_databases_use_the_current_format_and_legacy_ones_still_open(tmp_path, monkeypatch):
    """The format Bastion writes (HMAC-SHA256, 2 KiB pages) is what a new encrypted database
    has; a database in SQLCipher's default format (what earlier versions wrote) is still served,
    and ``bastion admin rekey`` rewrites it in the current one."""
    key = bytes.fromhex(HEX)
    monkeypatch.setenv("BASTION_TEST_KEY", HEX)
    fresh = tmp_path / "fresh"
    srv = ServerThread(fresh, at_rest_key="env:BASTION_TEST_KEY").start()
    srv.stop()
    assert _opens_with(fresh / "homeserver.db", key, CIPHER_SETTINGS) == 2048
    assert _opens_with(fresh / "homeserver.db", key, LEGACY_CIPHER_SETTINGS) is None

    # A plaintext server's database, exported into SQLCipher's default format.
    data = tmp_path / "data"
    srv = ServerThread(data, at_rest_key="").start()
    try:
        alice, room = _chat(srv, SECRET)
    finally:
        srv.stop()
    db = data / "homeserver.db"
    legacy = tmp_path / "legacy.db"
    conn = open_sqlcipher(str(db), None, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute(f"ATTACH DATABASE ? AS old KEY \"x'{HEX}'\"", (str(legacy),))
        for statement in key_statements(key, LEGACY_CIPHER_SETTINGS, schema="old"):
            conn.execute(statement)
        conn.execute("SELECT sqlcipher_export('old')")
        version = conn.execute("PRAGMA main.user_version").fetchone()[0]
        conn.execute(f"PRAGMA old.user_version = {int(version)}")
        conn.execute("DETACH DATABASE old")
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    legacy.rename(db)
    assert _opens_with(db, key, LEGACY_CIPHER_SETTINGS) == 4096
    assert _scan(data, SECRET.encode()) == []

    _history_is_served(data, "env:BASTION_TEST_KEY", alice, room)
    (data / "bastion.toml").write_text('at_rest_key = "env:BASTION_TEST_KEY"\n')
    monkeypatch.setenv("BASTION_TEST_KEY_2", "cd" * 32)
    assert (
        main(["admin", "rekey", "--data-dir", str(data), "--new-key", "env:BASTION_TEST_KEY_2"])
        == 0
    )
    assert _opens_with(db, bytes.fromhex("cd" * 32), CIPHER_SETTINGS) == 2048
    assert _opens_with(db, bytes.fromhex("cd" * 32), LEGACY_CIPHER_SETTINGS) is None
    _history_is_served(data, "env:BASTION_TEST_KEY_2", alice, room)


def test_erasure_on_an_encrypted_server(tmp_path, capsys):
    """Erasure with encryption at rest on: the media row, and so the file's key, goes (the file
    with it); the compaction (VACUUM, WAL truncation) runs on the encrypted database, which
    still opens and verifies with its key."""
    from tests.support.accounts import make_user
    from tests.support.ledger import wait_covered

    key = _key_file(tmp_path)
    data = tmp_path / "data"
    srv = ServerThread(data, at_rest_key=f"file:{key}", ledger_checkpoint_interval=0.2).start()
    try:
        alice, room = _chat(srv, SECRET)
        r = alice.request("POST", "/_matrix/media/v3/upload", raw=SECRET.encode() * 50,
                          headers={"Content-Type": "text/plain"})  # fmt: skip
        assert r.status == 200, r.body
        admin = make_user(srv, "root", admin=True)
        user = urllib.parse.quote(alice.user_id, safe="")
        r = admin.request("POST", f"/_synapse/admin/v1/deactivate/{user}", {"erase": True})
        assert r.status == 200, r.body
        assert db_rows(srv, "SELECT 1 FROM local_media") == []
        assert [p for p in srv.config.media_path.rglob("*") if p.is_file()] == []
        ids = [row[0] for row in db_rows(srv, "SELECT event_id FROM events WHERE sender = ?",
                                         (alice.user_id,))]  # fmt: skip
        texts = [row[0] for row in db_rows(srv, "SELECT json FROM events")]
        assert ids and not any(SECRET.encode() in bytes(t) for t in texts)
        wait_covered(srv)
    finally:
        srv.stop()
    (data / "bastion.toml").write_text(f'at_rest_key = "file:{key}"\n')
    capsys.readouterr()
    assert main(["ledger", "verify", "--data-dir", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["findings"] == [] and report["stats"]["events_stripped_by_records"] > 0
