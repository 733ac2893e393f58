"""Migration 2 (``0002_drop_media_thumbnails.sql``): the thumbnail index table goes; media and
their thumbnails are still served from a database at version 1 with rows in it."""

from __future__ import annotations

import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from tests.storage.sqlite.test_migrations import FIXTURE, connect


def _tables(path) -> set[str]:
    conn = sqlite3.connect(str(path))
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_version_1_database_with_thumbnail_rows_loses_only_that_table(tmp_path):
    path = tmp_path / "h.db"
    conn = sqlite3.connect(str(path))
    conn.executescript((FIXTURE / "homeserver.sql").read_text(encoding="utf-8"))
    assert conn.execute("SELECT COUNT(*) FROM media_thumbnails").fetchone()[0] > 0
    media_before = conn.execute("SELECT * FROM local_media ORDER BY media_id").fetchall()
    conn.close()
    before = _tables(path)

    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:1]) == 1  # the cbbfc30 database, stamped
    assert migrate(c, str(path), mig.migrations()[:2]) == 2
    c.close()

    assert _tables(path) == (before - {"media_thumbnails"}) | {"schema_version"}
    conn = sqlite3.connect(str(path))
    assert conn.execute("SELECT * FROM local_media ORDER BY media_id").fetchall() == media_before
    conn.close()


def test_fresh_database_has_no_thumbnail_table(tmp_path):
    path = tmp_path / "h.db"
    c = connect(path)
    migrate(c, str(path), mig.migrations())
    c.close()
    assert "media_thumbnails" not in _tables(path)
