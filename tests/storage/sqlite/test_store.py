"""The store's commit bookkeeping (storage/sqlite/store.py): stream positions and the calls it
runs on the event loop after a commit."""

from __future__ import annotations

from bastion.storage.sqlite.store import SqliteStore


class _ImmediateLoop:
    """An event loop that runs a call handed to it at once, on the calling thread: the worst
    case of a real loop running the call before the writer thread goes on."""

    def call_soon_threadsafe(self, fn, *args):
        fn(*args)


def test_after_commit_calls_see_the_committed_position(tmp_path):
    """A /sync woken by an after-commit call reads ``current_pos``: it must already be the
    position of the write that woke it, or the sync finds nothing new and waits out its
    timeout (seen as a long poll never woken by a device-list change)."""
    store = SqliteStore(tmp_path / "h.db")
    store.open()
    try:
        store.attach_loop(_ImmediateLoop())  # type: ignore[arg-type]
        seen: list[tuple[int, int]] = []

        def write(conn):
            pos = store.next_stream_pos(conn)
            store.run_after_commit(lambda p: seen.append((p, store.current_pos)), pos)
            return pos

        for _ in range(3):
            pos = store.transaction_sync(write)
            assert seen[-1] == (pos, pos)
    finally:
        store.close()
