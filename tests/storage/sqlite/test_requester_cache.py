"""The access-token cache of the store (``RequesterCache`` in storage/sqlite/accounts.py, with
the ``auth_generation`` counter of migration 0011): a token's requester is remembered, and
every way of revoking or restricting it (by the server or by any other writer of the
database) is seen at the very next lookup."""

from __future__ import annotations

import sqlite3

import pytest

from bastion.storage.interface import TokenExpired
from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.accounts import token_hash
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

ALICE = "@alice:localhost"
TOKEN = "syt_alice_token_0123456789"
OTHER = "syt_alice_other_token_9876543210"
NOW = 1_000  # the clock, as the server passes it (tokens here never expire)


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "h.db")
    s.open()

    def setup(conn):
        s.create_user_in(conn, ALICE, None, 1)
        s.add_device_sync(conn, ALICE, "PHONE", None, TOKEN, 1)
        s.add_device_sync(conn, ALICE, "LAPTOP", None, OTHER, 1)

    s.transaction_sync(setup)
    yield s
    s.close()


def _elsewhere(store: SqliteStore, sql: str, args: tuple = ()) -> None:
    """A write by another connection (an admin command on the same database)."""
    conn = sqlite3.connect(str(store.db.path))
    try:
        with conn:
            conn.execute(sql, args)
    finally:
        conn.close()


def _reads(store: SqliteStore, monkeypatch) -> list[str]:
    seen: list[str] = []
    read_one = store.db.read_one

    def counting(sql, args=()):
        seen.append(sql)
        return read_one(sql, args)

    monkeypatch.setattr(store.db, "read_one", counting)
    return seen


def test_a_remembered_token_costs_one_small_read(store, monkeypatch):
    assert store.get_requester(TOKEN, NOW).device_id == "PHONE"
    assert store.account_flags(ALICE) == (False, False)
    seen = _reads(store, monkeypatch)
    for _ in range(3):
        assert store.get_requester(TOKEN, NOW).device_id == "PHONE"
        assert store.account_flags(ALICE) == (False, False)
    assert seen and all("auth_generation" in sql for sql in seen)
    # A request's authentication: the requester and its flags from one read.
    seen.clear()
    requester, locked, suspended = store.authenticate_token(TOKEN, NOW)
    assert (requester.user_id, locked, suspended) == (ALICE, False, False)
    assert len(seen) == 1
    assert store.get_requester("syt_unknown", NOW) is None


@pytest.mark.parametrize("by_server", [True, False])
def test_revocations_are_seen_at_the_next_lookup(store, by_server):
    def write(sql: str, args: tuple) -> None:
        if by_server:
            store.transaction_sync(lambda conn: conn.execute(sql, args))
        else:
            _elsewhere(store, sql, args)

    assert (
        store.get_requester(TOKEN, NOW) is not None and store.get_requester(OTHER, NOW) is not None
    )
    assert store.account_flags(ALICE) == (False, False)
    # Locked, then suspended, then made an admin: each seen at once.
    write("UPDATE users SET locked = 1 WHERE user_id = ?", (ALICE,))
    assert store.account_flags(ALICE) == (True, False)
    assert store.authenticate_token(TOKEN, NOW)[1:] == (True, False)
    write("UPDATE users SET suspended = 1 WHERE user_id = ?", (ALICE,))
    assert store.authenticate_token(OTHER, NOW)[1:] == (True, True)
    assert store.account_flags(ALICE) == (True, True)
    assert not store.get_requester(TOKEN, NOW).is_admin
    write("UPDATE users SET is_admin = 1 WHERE user_id = ?", (ALICE,))
    assert store.get_requester(TOKEN, NOW).is_admin
    # One device logged out: its token is refused, the other one still works.
    write("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (ALICE, "PHONE"))
    assert store.get_requester(TOKEN, NOW) is None
    assert store.get_requester(OTHER, NOW) is not None
    # Deactivated: every token refused.
    write("UPDATE users SET deactivated = 1 WHERE user_id = ?", (ALICE,))
    assert store.get_requester(OTHER, NOW) is None


def test_the_server_paths_that_revoke_move_the_generation(store):
    assert store.get_requester(TOKEN, NOW) is not None
    store.transaction_sync(lambda conn: store.delete_device_in(conn, ALICE, "PHONE"))
    assert store.get_requester(TOKEN, NOW) is None
    assert store.get_requester(OTHER, NOW) is not None
    store.transaction_sync(lambda conn: store.deactivate_user_in(conn, ALICE))
    assert store.get_requester(OTHER, NOW) is None


def test_a_new_token_does_not_empty_the_cache(store):
    store.get_requester(TOKEN, NOW)
    before = store.requester_cache.generation
    store.transaction_sync(lambda conn: store.add_device_sync(conn, ALICE, "TABLET", None,
                                                              "syt_new_token_555", 2))  # fmt: skip
    assert store.get_requester("syt_new_token_555", NOW).device_id == "TABLET"
    assert store.requester_cache.generation == before


def test_the_cache_is_bounded(store, monkeypatch):
    monkeypatch.setattr(type(store.requester_cache), "MAX_ENTRIES", 1)
    assert (
        store.get_requester(TOKEN, NOW) is not None and store.get_requester(OTHER, NOW) is not None
    )
    assert len(store.requester_cache.requesters) == 1


def test_an_expired_token_is_refused_though_its_requester_is_remembered(store, monkeypatch):
    store.transaction_sync(lambda conn: store.add_device_sync(
        conn, ALICE, "TABLET", None, "syt_expiring", 1, expires_ts=5_000))  # fmt: skip
    assert store.authenticate_token("syt_expiring", 4_999)[0].device_id == "TABLET"
    assert token_hash("syt_expiring") in store.requester_cache.requesters  # remembered
    seen = _reads(store, monkeypatch)
    with pytest.raises(TokenExpired):  # the expiry is checked on the hit: no lookup
        store.authenticate_token("syt_expiring", 5_000)
    assert len(seen) == 1 and "auth_generation" in seen[0]
    assert store.get_requester("syt_expiring", 10**12) is None
    assert store.get_requester(TOKEN, 10**12) is not None  # tokens without expiry never expire
    # Not remembered yet (a new generation): the lookup checks it too.
    store.requester_cache.valid_for(-1)
    with pytest.raises(TokenExpired):
        store.authenticate_token("syt_expiring", 5_000)


def test_a_rotated_away_token_is_refused_at_once(store):
    def issue(conn):
        store.add_device_sync(conn, ALICE, "TABLET", None, "syt_a1", 1, expires_ts=9_000)
        store.add_refresh_token_in(conn, "bsr_r1", ALICE, "TABLET", "syt_a1", 1)

    store.transaction_sync(issue)
    assert store.check_access_token("syt_a1", NOW)[3] is False  # remembered
    assert token_hash("syt_a1") in store.requester_cache.requesters
    owner = store.transaction_sync(
        lambda conn: store.rotate_refresh_token_in(conn, "bsr_r1", "syt_a2", "bsr_r2", 9_500, 2)
    )
    assert owner == (ALICE, "TABLET")
    assert store.check_access_token("syt_a1", NOW) is None  # gone from the cache with the row
    # The new token's first use says so (and is not remembered until the old one is retired).
    assert store.check_access_token("syt_a2", NOW)[3] is True
    assert token_hash("syt_a2") not in store.requester_cache.requesters
    assert store.refresh_token_owner("bsr_r1") == ALICE
    assert store.transaction_sync(lambda conn: store.retire_refreshed_in(conn, "syt_a2")) == 1
    assert store.check_access_token("syt_a2", NOW)[3] is False
    assert store.refresh_token_owner("bsr_r1") is None
    assert store.transaction_sync(
        lambda conn: store.rotate_refresh_token_in(conn, "bsr_r1", "syt_x", "bsr_x", 9_500, 3)
    ) is None  # fmt: skip
    assert store.check_access_token("syt_x", NOW) is None


# -- the migration ---------------------------------------------------------------------------
def test_migration_keeps_rows_and_adds_the_counter(tmp_path):
    name = "auth_generation"
    _, path = restore_before(tmp_path, name)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    before = _dump(path, tables)
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(name)]) == number_of(name)
    c.close()
    assert _dump(path, tables) == before
    assert _dump(path, ["auth_generation"]) == {"auth_generation": [(1, 0)]}
    conn = sqlite3.connect(str(path))
    try:
        triggers = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")}  # fmt: skip
        user = conn.execute("SELECT user_id FROM access_tokens LIMIT 1").fetchone()[0]
        with conn:
            conn.execute("UPDATE users SET locked = 1 WHERE user_id = ?", (user,))
            conn.execute("UPDATE users SET created_ts = created_ts WHERE user_id = ?", (user,))
            conn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user,))
        tokens = conn.execute("SELECT changes()").fetchone()[0]
        n = conn.execute("SELECT n FROM auth_generation").fetchone()[0]
    finally:
        conn.close()
    assert triggers >= {"auth_generation_token_deleted", "auth_generation_user_flags"}
    assert n == 1 + tokens  # the lock, then one per token deleted; not the other update
