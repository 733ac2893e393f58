"""Federation keys (S-S API "Retrieving server keys"): other servers' public keys as we
verified them, the last key response each server gave us directly (so we can serve it as a
notary, and keep serving it when the server is unreachable, as keys_server.yaml asks), and our
own retired signing keys (published as ``old_verify_keys``).
"""

from __future__ import annotations

import sqlite3

import orjson

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


class FederationStore(StoreBase):
    # -- remote servers' keys -------------------------------------------------------------------
    def get_server_keys(self, server_name: str) -> list[sqlite3.Row]:
        return self.db.read(
            "SELECT key_id, verify_key, valid_until_ts, is_old FROM server_signing_keys "
            "WHERE server_name = ?",
            (server_name,),
        )

    def store_server_keys_in(
        self,
        conn: sqlite3.Connection,
        server_name: str,
        keys: list[tuple[str, str, int, bool]],
        fetched_ts: int,
        from_server: str,
    ) -> None:
        """Record verified keys: (key_id, base64 key, effective valid_until_ts, is_old).

        A key's public part never changes under the same ID: a row whose key differs is left as it
        was (the first verified binding wins). Validity only grows, except that a key the server now
        lists as old stays old.
        """
        for key_id, b64, valid_until, is_old in keys:
            row = conn.execute(
                "SELECT verify_key, valid_until_ts, is_old FROM server_signing_keys "
                "WHERE server_name = ? AND key_id = ?",
                (server_name, key_id),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO server_signing_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (server_name, key_id, b64, valid_until, int(is_old), fetched_ts, from_server),
                )
            elif row["verify_key"] == b64:
                if is_old and not row["is_old"]:
                    new_until, new_old = valid_until, 1
                else:
                    new_until, new_old = max(row["valid_until_ts"], valid_until), row["is_old"]
                conn.execute(
                    "UPDATE server_signing_keys SET valid_until_ts = ?, is_old = ?, "
                    "fetched_ts = ?, from_server = ? WHERE server_name = ? AND key_id = ?",
                    (new_until, new_old, fetched_ts, from_server, server_name, key_id),
                )

    def store_server_key_response_in(
        self, conn: sqlite3.Connection, server_name: str, response: dict, fetched_ts: int
    ) -> None:
        conn.execute(
            "INSERT INTO server_key_responses VALUES (?, ?, ?, ?) ON CONFLICT (server_name) DO "
            "UPDATE SET valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts, "
            "response_json = excluded.response_json",
            (server_name, response["valid_until_ts"], fetched_ts, orjson.dumps(response).decode()),
        )

    def get_server_key_response(self, server_name: str) -> tuple[dict, int] | None:
        """(response, fetched_ts) of the last direct fetch from ``server_name``."""
        row = self.db.read_one(
            "SELECT response_json, fetched_ts FROM server_key_responses WHERE server_name = ?",
            (server_name,),
        )
        return (orjson.loads(row["response_json"]), row["fetched_ts"]) if row else None

    # -- our own retired keys -------------------------------------------------------------------
    def get_local_old_signing_keys(self) -> list[tuple[str, str, int]]:
        rows = self.db.read(
            "SELECT key_id, verify_key, expired_ts FROM local_old_signing_keys ORDER BY expired_ts"
        )
        return [(r["key_id"], r["verify_key"], r["expired_ts"]) for r in rows]

    def add_local_old_signing_key_in(
        self, conn: sqlite3.Connection, key_id: str, verify_key: str, expired_ts: int
    ) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO local_old_signing_keys VALUES (?, ?, ?)",
            (key_id, verify_key, expired_ts),
        )
