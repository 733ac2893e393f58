"""The export reads a page at a time: no store read returns more than a page's rows, and the
archive grows page by page (issue 10: "they never hold the whole archive in memory")."""

from __future__ import annotations

import functools
import json
import zipfile

from bastion.services.export import drive
from tests.support.accounts import call_on_server
from tests.support.guard import exempt
from tests.support.rooms import create_room, join, send

PAGE = 4
PAGED_READS = (
    "export_sent_events_page", "export_memberships_page", "export_room_ids_page",
    "export_ledger_page", "export_media_page", "export_account_data_page", "get_room_events",
)  # fmt: skip


def test_an_export_reads_and_writes_page_by_page(server, client, tmp_path):
    alice = client.register()
    bob = client.register()
    room = create_room(alice)
    join(bob, room)
    exempt(server, alice)
    exempt(server, bob)
    for i in range(30):
        send(alice, room, f"alice message {i}")
        send(bob, room, f"bob message {i}")
    hs = server.hs
    store = hs.store
    hs.export.page_size = PAGE
    reads: dict[str, list[int]] = {name: [] for name in PAGED_READS}

    def counting(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            rows = out[0] if isinstance(out, tuple) else out
            reads[name].append(len(rows))
            return out

        return wrapper

    for name in PAGED_READS:
        setattr(store, name, counting(name, getattr(store, name)))
    steps: list[dict[str, int]] = []
    path = tmp_path / "alice.zip"
    try:
        result = call_on_server(
            server,
            lambda: drive(hs.export.steps(alice.user_id, path,
                                          lambda p: steps.append(dict(p.counts)))),
        )  # fmt: skip
    finally:
        for name in PAGED_READS:
            delattr(store, name)
    # Every event arrived; no read returned more than a page (the room reader reads batches of
    # twice a page, at least 20 rows, as for /messages).
    assert result.counts["events_sent"] > 30
    assert result.counts["events_visible"] > 60
    assert max(reads["export_sent_events_page"]) == PAGE
    assert len(reads["export_sent_events_page"]) > result.counts["events_sent"] // PAGE
    assert max(reads["get_room_events"]) <= max(2 * PAGE, 20)
    assert len(reads["get_room_events"]) >= result.counts["events_visible"] // 20
    for name in ("export_memberships_page", "export_room_ids_page", "export_ledger_page"):
        assert max(reads[name]) <= PAGE, name
    # The archive grew a page at a time: each step added at most a page of events.
    sent = [s.get("events_sent", 0) for s in steps]
    assert all(0 <= b - a <= PAGE for a, b in zip(sent, sent[1:], strict=False))
    visible = [s.get("events_visible", 0) for s in steps]
    assert all(0 <= b - a <= PAGE for a, b in zip(visible, visible[1:], strict=False))
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert (
            z.read("events_sent/events.json").count(b'"event_id"') >= result.counts["events_sent"]
        )


def test_an_export_cut_off_leaves_nothing_on_disk(server, client, tmp_path):
    """A cancelled export (the client went away, the server stops) removes its partial
    archive and its spooled HTML: they hold personal data."""
    alice = client.register()
    room = create_room(alice)
    send(alice, room, "partial")
    hs = server.hs
    hs.export.page_size = 1
    out = tmp_path / "out"
    out.mkdir()
    path = out / "part.zip"

    def cut_off() -> list[str]:
        steps = hs.export.steps(alice.user_id, path)
        for _ in range(5):
            next(steps)
        during = sorted(p.name for p in out.iterdir())
        steps.close()
        return during

    during = call_on_server(server, cut_off)
    assert during == ["part.zip", "part.zip.html.part"]
    assert list(out.iterdir()) == []


def test_pages_of_one_give_the_same_archive(server, client, tmp_path):
    """Every paged read resumes exactly where the previous page ended: with pages of one row
    each kind holds the same items as with the default page size."""
    from tests.services.export.scenario import build_world

    w = build_world(client)
    hs = server.hs
    archives = {}
    for size in (500, 1):
        hs.export.page_size = size
        path = tmp_path / f"{size}.zip"
        call_on_server(server, lambda p=path: drive(hs.export.steps(w.alice.user_id, p)))
        archives[size] = zipfile.ZipFile(path)
    big, small = archives[500], archives[1]
    manifest = json.loads(big.read("manifest.json"))
    assert all(info["count"] > 0 for name, info in manifest["kinds"].items()
               if name not in ("presence", "cross_signing_keys", "push_rules", "receipts",
                               "guard_decisions"))  # fmt: skip
    for info in manifest["kinds"].values():
        assert json.loads(small.read(info["path"])) == json.loads(big.read(info["path"]))
    assert sorted(big.namelist()) == sorted(small.namelist())
