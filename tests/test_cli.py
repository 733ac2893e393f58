"""`bastion admin create-user` and `bastion admin registration-token …` against a temporary data
directory: exit codes, output, clear messages for bad input, and what reaches the database."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest

from bastion.cli import main


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    (d).mkdir()
    # Cheap argon2 parameters keep the tests fast.
    (d / "bastion.toml").write_text(
        'server_name = "example.org"\nargon2_time_cost = 1\nargon2_memory_cost = 8192\n'
    )
    return d


def rows(data_dir, sql, args=()):
    conn = sqlite3.connect(str(data_dir / "homeserver.db"))
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def run(data_dir, *args):
    return main(["admin", *args, "--data-dir", str(data_dir)])


def test_create_user(data_dir, capsys):
    assert run(data_dir, "create-user", "Alice", "--password", "long enough pw") == 0
    assert capsys.readouterr().out.strip() == "@alice:example.org"
    (u,) = rows(data_dir, "SELECT * FROM users")
    assert u["user_id"] == "@alice:example.org" and u["is_admin"] == 0
    assert u["password_hash"].startswith("$argon2id$")
    (audit,) = rows(data_dir, "SELECT * FROM admin_audit")
    assert (audit["actor"], audit["action"], audit["target"]) == (
        "cli", "account.create", "@alice:example.org")  # fmt: skip
    (p,) = rows(data_dir, "SELECT * FROM profiles")
    assert json.loads(p["value"]) == "alice"


def test_create_admin_from_stdin(data_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin pw\n"))
    assert run(data_dir, "create-user", "@root:example.org", "--admin") == 0
    (u,) = rows(data_dir, "SELECT * FROM users")
    assert u["is_admin"] == 1


def test_create_user_bad_input(data_dir, capsys, monkeypatch):
    cases = [
        (["create-user", "bad name", "--password", "long enough pw"], 2, "localpart"),
        (
            ["create-user", "@bob:other.org", "--password", "long enough pw"],
            2,
            "not on this server",
        ),
        (["create-user", "@Bob:example.org", "--password", "long enough pw"], 2, "localpart"),
        (["create-user", "bob", "--password", "short"], 2, "password must be"),
        (["create-user", "bob", "--password", ""], 2, "password is required"),
    ]
    for args, code, message in cases:
        assert run(data_dir, *args) == code, args
        assert message in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run(data_dir, "create-user", "bob") == 2
    assert "password is required" in capsys.readouterr().err
    # Bad input is refused before the database is touched.
    assert not (data_dir / "homeserver.db").exists()


def test_create_user_twice(data_dir, capsys):
    assert run(data_dir, "create-user", "carol", "--password", "long enough pw") == 0
    assert run(data_dir, "create-user", "CAROL", "--password", "long enough pw") == 1
    assert "already exists" in capsys.readouterr().err
    assert len(rows(data_dir, "SELECT * FROM admin_audit")) == 1


def test_registration_tokens(data_dir, capsys):
    assert run(data_dir, "registration-token", "create", "--uses", "2", "--expires-in", "3600") == 0
    token = capsys.readouterr().out.strip()
    assert 16 <= len(token) <= 64
    assert run(data_dir, "registration-token", "create", "--token", "my-token") == 0
    assert capsys.readouterr().out.strip() == "my-token"
    assert run(data_dir, "registration-token", "list") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [t["prefix"] for t in listed] == [token[:4], "my-t"]
    assert listed[0]["uses_allowed"] == 2 and listed[0]["valid"] is True
    assert listed[0]["expiry_ts"] is not None and listed[1]["expiry_ts"] is None
    # Only hashes are stored.
    db = (data_dir / "homeserver.db").read_bytes()
    assert token.encode() not in db and b"my-token" not in db
    assert run(data_dir, "registration-token", "revoke", "my-token") == 0
    assert "revoked" in capsys.readouterr().out
    assert run(data_dir, "registration-token", "list") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed[1]["revoked"] is True and listed[1]["valid"] is False
    actions = [r["action"] for r in rows(data_dir, "SELECT action FROM admin_audit ORDER BY id")]
    assert actions == ["registration_token.create"] * 2 + ["registration_token.delete"]
    details = rows(data_dir, "SELECT target, details FROM admin_audit")
    assert all(b"my-token" not in (r["target"] + r["details"]).encode() for r in details)


def test_registration_token_bad_input(data_dir, capsys):
    cases = [
        (["create", "--token", "has space"], 2, "1-64 characters"),
        (["create", "--token", "x" * 65], 2, "1-64 characters"),
        (["create", "--uses", "0"], 2, "--uses"),
        (["create", "--expires-in", "0"], 2, "--expires-in"),
        (["create", "--expires-in", "-5"], 2, "--expires-in"),
        (["revoke", "no-such-token"], 1, "no such token"),
    ]
    for args, code, message in cases:
        assert run(data_dir, "registration-token", *args) == code, args
        assert message in capsys.readouterr().err
    assert run(data_dir, "registration-token", "create", "--token", "dup") == 0
    assert run(data_dir, "registration-token", "create", "--token", "dup") == 1
    assert "already exists" in capsys.readouterr().err


def test_argparse_errors_exit_2(data_dir, capsys):
    with pytest.raises(SystemExit) as e:
        run(data_dir, "registration-token", "create", "--uses", "many")
    assert e.value.code == 2
    assert "invalid int value" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["admin"])
    assert e.value.code == 2


def test_bad_config_is_reported(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "bastion.toml").write_text("no_such_key = 1\n")
    assert main(["admin", "registration-token", "list", "--data-dir", str(d)]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_cli_user_can_log_in(data_dir, capsys):
    """A user created by the CLI logs in through the server (same database, same hashing)."""
    from tests.support.harness import Client, ServerThread

    assert run(data_dir, "create-user", "dora", "--password", "long enough pw") == 0
    srv = ServerThread(data_dir, server_name="example.org").start()
    try:
        r = Client(srv.base_url).request(
            "POST", "/_matrix/client/v3/login",
            {"type": "m.login.password", "user": "dora", "password": "long enough pw"},
            token=None,
        )  # fmt: skip
        assert r.status == 200 and r.body["user_id"] == "@dora:example.org"
    finally:
        srv.stop()


def test_serve_reports_a_busy_port_without_a_traceback(tmp_path, capsys):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        rc = main(["serve", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{port}"])
    finally:
        sock.close()
    err = capsys.readouterr().err
    assert rc == 1
    assert "cannot start" in err and "Traceback" not in err


def _make_newer(data_dir) -> int:
    """A database written by a future Bastion: one schema version beyond the newest migration."""
    from bastion.storage.sqlite.migrations import migrations

    assert run(data_dir, "create-user", "erin", "--password", "long enough pw") == 0
    future = migrations()[-1].version + 1
    conn = sqlite3.connect(str(data_dir / "homeserver.db"))
    with conn:
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_ts) VALUES (?, 'future', 0)",
            (future,),
        )
    conn.close()
    return future


def _unchanged(data_dir, future: int) -> None:
    assert [tuple(r) for r in rows(data_dir, "SELECT MAX(version) FROM schema_version")] == [
        (future,)
    ]
    assert [r["user_id"] for r in rows(data_dir, "SELECT user_id FROM users")] == [
        "@erin:example.org"
    ]
    assert len(rows(data_dir, "SELECT * FROM admin_audit")) == 1


def test_serve_refuses_a_newer_database(data_dir, capsys):
    import socket

    future = _make_newer(data_dir)
    capsys.readouterr()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"schema version {future}" in err and "newer Bastion" in err
    assert "Traceback" not in err
    _unchanged(data_dir, future)


def test_admin_commands_refuse_a_newer_database(data_dir, capsys):
    from bastion.signing_key import load_or_create_signing_key

    future = _make_newer(data_dir)
    load_or_create_signing_key(data_dir / "signing.key")
    key_before = (data_dir / "signing.key").read_text()
    capsys.readouterr()
    for args in (
        ["create-user", "frank", "--password", "long enough pw"],
        ["registration-token", "create", "--token", "abc"],
        ["registration-token", "list"],
        ["registration-token", "revoke", "abc"],
        ["rotate-signing-key"],
    ):
        assert run(data_dir, *args) == 1, args
        out = capsys.readouterr()
        assert f"schema version {future}" in out.err and "Traceback" not in out.err, args
        assert out.out == "", args
    _unchanged(data_dir, future)
    assert rows(data_dir, "SELECT * FROM registration_tokens") == []
    assert (data_dir / "signing.key").read_text() == key_before


def test_admin_command_on_a_foreign_database_is_refused(data_dir, capsys):
    conn = sqlite3.connect(str(data_dir / "homeserver.db"))
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    assert run(data_dir, "registration-token", "list") == 1
    err = capsys.readouterr().err
    assert "no schema version" in err and "Traceback" not in err
    tables = [r["name"] for r in rows(data_dir, "SELECT name FROM sqlite_master")]
    assert tables == ["users"]
