"""``bastion admin export-user USER_ID -o FILE`` on a stopped server's data directory."""

from __future__ import annotations

import hashlib
import json
import zipfile

import orjson

from bastion.cli import main
from tests.services.export.scenario import build_world
from tests.support.harness import Client, ServerThread


def test_export_user_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "data"
    srv = ServerThread(data).start()
    try:
        w = build_world(Client(srv.base_url))
    finally:
        srv.stop()
    out = tmp_path / "alice.zip"
    assert main(["admin", "export-user", w.alice.user_id, "-o", str(out),
                 "--data-dir", str(data)]) == 0  # fmt: skip
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["path"] == str(out)
    blob = out.read_bytes()
    assert summary["bytes"] == len(blob) and summary["sha256"] == hashlib.sha256(blob).hexdigest()
    for kind in ("account", "events_sent", "events_visible", "media", "key_backup_sessions"):
        assert f"export: {kind}:" in captured.err
    with zipfile.ZipFile(out) as z:
        manifest = json.loads(z.read("manifest.json"))
        assert manifest["user_id"] == w.alice.user_id
        assert summary["counts"]["events_sent"] == manifest["kinds"]["events_sent"]["count"] > 0
        for media_id, content in w.alice_media.items():
            assert z.read(f"media/files/{media_id}") == content
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    # The export's ledger record, by the command line.
    import sqlite3

    conn = sqlite3.connect(data / "homeserver.db")
    try:
        (entry,) = conn.execute(
            "SELECT entry FROM ledger_entries WHERE action = 'compliance.export'"
        ).fetchone()
    finally:
        conn.close()
    record = orjson.loads(bytes(entry))
    assert record["actor"] == "cli" and record["subject"] == w.alice.user_id
    assert record["details"]["sha256"] == summary["sha256"]
    # The ledger still verifies with the export's record in it.
    assert main(["ledger", "verify", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    # Never over an existing file; unknown users and missing databases are errors.
    assert main(["admin", "export-user", w.alice.user_id, "-o", str(out),
                 "--data-dir", str(data)]) == 2  # fmt: skip
    assert "not overwriting" in capsys.readouterr().err
    other = tmp_path / "nobody.zip"
    assert main(["admin", "export-user", "@nobody:localhost", "-o", str(other),
                 "--data-dir", str(data)]) == 1  # fmt: skip
    assert "no such user" in capsys.readouterr().err
    assert not other.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    assert main(["admin", "export-user", w.alice.user_id, "-o", str(other),
                 "--data-dir", str(tmp_path / "empty")]) == 2  # fmt: skip
    assert "no database" in capsys.readouterr().err


def test_export_of_a_server_encrypted_at_rest_holds_the_plain_files(tmp_path, capsys):
    """With encryption at rest the archive still holds the uploads as uploaded (decrypted),
    and the stored files are not what the archive holds."""
    from bastion.storage.sqlite.at_rest import write_new_key

    key = tmp_path / "at-rest.key"
    write_new_key(key)
    data = tmp_path / "data"
    srv = ServerThread(data, at_rest_key=f"file:{key}").start()
    try:
        w = build_world(Client(srv.base_url))
    finally:
        srv.stop()
    (data / "bastion.toml").write_text(f'at_rest_key = "file:{key}"\n')
    out = tmp_path / "alice.zip"
    assert main(["admin", "export-user", w.alice.user_id, "-o", str(out),
                 "--data-dir", str(data)]) == 0  # fmt: skip
    capsys.readouterr()
    assert w.alice_media
    with zipfile.ZipFile(out) as z:
        for media_id, content in w.alice_media.items():
            assert z.read(f"media/files/{media_id}") == content
            stored = next(p for p in (data / "media").rglob(media_id) if p.is_file())
            assert stored.read_bytes() != content
