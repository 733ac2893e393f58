"""``bastion ledger status`` and the ledger subcommand's usage errors: status reads the database
of a stopped server (size, last checkpoint, halt, witnesses, anchors, the log's keys) and never
writes it; bad invocations exit 2 with a message."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from bastion.cli import main
from bastion.ledger.note import parse_note, parse_vkey, verify_note
from bastion.ledger.records import ACTION_LEDGER_CHECKPOINT_HALT, action_record, entry_bytes
from tests.ledger.test_verify import build_synthetic
from tests.ledger.test_verify_tamper import build_scenario


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return build_scenario(tmp_path_factory.mktemp("status"))


def status(d, capsys, *extra) -> dict:
    capsys.readouterr()
    assert main(["ledger", "status", "--data-dir", str(d), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_of_a_stopped_server(scenario, capsys):
    db = scenario["data"] / "homeserver.db"
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    s = status(scenario["data"], capsys)
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    conn = sqlite3.connect(db)
    size = conn.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()[0]
    note = conn.execute("SELECT note FROM ledger_checkpoints ORDER BY size DESC").fetchone()[0]
    conn.close()
    assert s["origin"] == "localhost/bastion-ledger"
    assert s["size"] == size == s["checkpoint"]["size"] == s["integrated_size"]
    assert s["checkpoint"]["age_s"] >= 0 and s["halted"] is None
    assert [a["anchor"] for a in s["anchors"]] == ["file"]
    assert s["anchors"][0]["size"] == size
    assert s["witnesses"] == []
    # The vkey status prints is the one the checkpoints verify with.
    (vkey,) = s["vkeys"]
    assert verify_note(parse_note(bytes(note)), [parse_vkey(vkey)])


def test_status_text(scenario, capsys):
    capsys.readouterr()
    assert main(["ledger", "status", "--data-dir", str(scenario["data"])]) == 0
    out = capsys.readouterr().out
    assert "origin: localhost/bastion-ledger" in out and "halted: no" in out
    assert "last checkpoint: size " in out and "anchor file: last receipt" in out


def test_status_shows_a_halt_and_witnesses(tmp_path, capsys):
    d = tmp_path / "data"
    info = build_synthetic(d, 10)
    conn = sqlite3.connect(d / "homeserver.db")
    halt = action_record(action=ACTION_LEDGER_CHECKPOINT_HALT, actor="server",
                         ts=2_000_000_000_000, reason="the tree does not match")  # fmt: skip
    conn.execute(
        "INSERT INTO ledger_entries (idx, kind, action, ts, entry) VALUES (?,?,?,?,?)",
        (info["size"], "action", ACTION_LEDGER_CHECKPOINT_HALT, halt["ts"], entry_bytes(halt)),
    )
    conn.execute("INSERT INTO ledger_witness_sizes (witness, size) VALUES ('w.example', 7)")
    conn.execute("INSERT INTO ledger_cosignatures (size, witness, line, ts) VALUES (?,?,?,?)",
                 (info["size"], "v.example", b"- v.example AAAA\n", 5))  # fmt: skip
    conn.commit()
    conn.close()
    s = status(d, capsys)
    assert s["halted"] == {"leaf": info["size"], "ts": halt["ts"],
                           "reason": "the tree does not match"}  # fmt: skip
    assert s["witnesses"] == [
        {"name": "v.example", "size": None, "cosigned_last": True,
         "last_cosigned_size": info["size"], "last_cosigned_ts": 5},
        {"name": "w.example", "size": 7, "cosigned_last": False,
         "last_cosigned_size": None, "last_cosigned_ts": None},
    ]  # fmt: skip
    assert s["size"] == info["size"] + 1


def test_usage_errors(tmp_path, capsys):
    assert main(["ledger", "status", "--data-dir", str(tmp_path / "none")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["ledger", "status", "--data-dir", str(tmp_path / "empty")]) == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "homeserver.db").write_bytes(b"this is not sqlite" * 100)
    assert main(["ledger", "status", "--data-dir", str(bad)]) == 2
    assert main(["ledger", "verify", "--data-dir", str(bad)]) == 2
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "bastion.toml").write_text("no_such_key = 1\n")
    assert main(["ledger", "verify", "--data-dir", str(tmp_path / "cfg")]) == 2
    err = capsys.readouterr().err
    assert "no data directory" in err and "no database" in err and "unknown key" in err
    with pytest.raises(SystemExit) as e:
        main(["ledger"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["ledger", "verify", "--no-such-flag"])
    assert e.value.code == 2


def test_verify_needs_a_data_dir_or_remote(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["ledger", "verify"]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_remote_only_flags_with_a_data_dir(tmp_path, capsys):
    d = tmp_path / "data"
    build_synthetic(d, 3)
    assert main(["ledger", "verify", "--data-dir", str(d), "--key", "x"]) == 2
    shutil.rmtree(d)


def test_verify_with_a_config_file(tmp_path, capsys):
    d = tmp_path / "data"
    build_synthetic(d, 3)
    cfg = tmp_path / "elsewhere.toml"
    (d / "bastion.toml").rename(cfg)
    # Without its config the server name is the default one: not this log's origin.
    assert main(["ledger", "verify", "--data-dir", str(d)]) == 1
    assert "expected 'localhost/bastion-ledger'" in capsys.readouterr().out
    assert main(["ledger", "verify", "--data-dir", str(d), "--config", str(cfg)]) == 0
