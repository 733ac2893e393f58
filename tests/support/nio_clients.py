"""Helpers for the real-client E2EE tests: a recording matrix-nio client and direct reads of
the server's SQLite database file (what an attacker with the disk would see)."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path

import nio

PASSWORD = "correct horse battery"
ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


class RecordingClient(nio.AsyncClient):
    """A nio client that keeps, per sync, the to-device events as the server sent them (before
    nio decrypts them) and the ``device_lists.changed`` users."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.raw_to_device: list[list[dict]] = []
        self.changed: list[list[str]] = []
        self.messages: list[tuple[str, str]] = []  # (sender, body) of decrypted messages
        self.undecrypted: list = []
        self.add_event_callback(self._on_message, (nio.RoomMessageText, nio.MegolmEvent))

    def _on_message(self, _room, event) -> None:
        if isinstance(event, nio.MegolmEvent):
            self.undecrypted.append(event)
        else:
            self.messages.append((event.sender, event.body))

    async def receive_response(self, response) -> None:
        if isinstance(response, nio.SyncResponse):
            self.raw_to_device.append([copy.deepcopy(e.source) for e in response.to_device_events])
            self.changed.append(list(response.device_list.changed))
        await super().receive_response(response)


def new_client(base_url: str, user: str, store) -> RecordingClient:
    store.mkdir()
    cfg = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    return RecordingClient(base_url, user, store_path=str(store), config=cfg)


async def sync(c: RecordingClient) -> nio.SyncResponse:
    r = await c.sync(timeout=300)
    assert isinstance(r, nio.SyncResponse), r
    return r


async def sync_until(c: RecordingClient, pred, rounds: int = 40) -> bool:
    for _ in range(rounds):
        if pred():
            return True
        await sync(c)
    return pred()


async def upload_keys(c: RecordingClient) -> None:
    await sync(c)
    assert c.should_upload_keys
    r = await c.keys_upload()
    assert isinstance(r, nio.KeysUploadResponse), r
    assert r.signed_curve25519_count > 0


async def send(c: RecordingClient, room_id: str, body: str) -> None:
    content = {"msgtype": "m.text", "body": body}
    r = await c.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)
    assert isinstance(r, nio.RoomSendResponse), r


def database_texts(db_path) -> list[tuple[str, str, str]]:
    """Every value of every column of every table, as text: (table, column, value)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = []
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            cols = [d[0] for d in cur.description]
            for row in cur:
                for col, value in zip(cols, row, strict=True):
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    found.append((table, col, str(value)))
        return found
    finally:
        conn.close()


def room_events(db_path, room_id: str) -> list[tuple[str, str | None, bytes]]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT type, state_key, json FROM events WHERE room_id = ? ORDER BY stream_pos",
            (room_id,),
        ).fetchall()
    finally:
        conn.close()


def raw_database_bytes(db_path: Path) -> bytes:
    """The bytes of ``homeserver.db`` and, when present, its write-ahead log. When the suite
    runs with encryption at rest on (tests/support/at_rest.py) the files are ciphertext
    through and through, so what the server stored is read through the key instead: every
    value of every table."""
    from tests.support import at_rest

    with open(db_path, "rb") as f:
        encrypted = at_rest.enabled() and f.read(16) != b"SQLite format 3\0"
    if encrypted:
        return "\n".join(v for _, _, v in database_texts(db_path)).encode()
    raw = b""
    for suffix in ("", "-wal"):
        path = db_path.with_name(db_path.name + suffix)
        if path.exists():
            raw += path.read_bytes()
    return raw
