"""Migration ``media_file_keys``: ``local_media`` gains ``file_key`` (encryption at rest). A
database from before keeps every row, its media have no key (stored in plain) and are still
served, by a server with encryption at rest on as well as off."""

from __future__ import annotations

import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.at_rest import rekey_database, write_new_key
from bastion.storage.sqlite.migrations import migrate
from tests.storage.sqlite.test_migrations import connect, restore_before
from tests.support.accounts import make_user
from tests.support.harness import ServerThread

MEDIA_ID = "61isx63VZdiutkzWWn8CNTUb"  # the fixture's one upload
NUMBER = next(m.version for m in mig.migrations() if m.name == "media_file_keys")


def _before(tmp_path):
    return restore_before(tmp_path, "media_file_keys")


def _rows(path) -> list[tuple]:
    conn = sqlite3.connect(str(path))
    try:
        return [tuple(r) for r in conn.execute("SELECT * FROM local_media ORDER BY media_id")]
    finally:
        conn.close()


def test_rows_are_kept_and_have_no_key(tmp_path):
    _, path = _before(tmp_path)
    before = _rows(path)
    assert [r[0] for r in before] == [MEDIA_ID]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:NUMBER]) == NUMBER
    cols = [r[1] for r in c.execute("PRAGMA table_info(local_media)")]
    c.close()
    assert cols[-1] == "file_key"
    assert _rows(path) == [(*r, None) for r in before]


def test_old_media_are_served_with_encryption_at_rest_on(tmp_path):
    data, path = _before(tmp_path)
    stored = next(p for p in (data / "media").rglob(MEDIA_ID) if p.is_file()).read_bytes()
    key = tmp_path / "k"
    rekey_database(path, None, write_new_key(key))
    srv = ServerThread(data, at_rest_key=f"file:{key}").start()
    try:
        c = make_user(srv)
        r = c.request("GET", f"/_matrix/client/v1/media/download/localhost/{MEDIA_ID}")
        assert r.status == 200
        assert r.body["_raw"] == stored
    finally:
        srv.stop()
