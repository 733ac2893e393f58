"""The ledger's HTTP API (/_bastion/ledger/v1/): checkpoint, tiles and entry bundles
(C2SP tlog-tiles), inclusion and consistency proofs, anchors and keys — their formats, caching,
access rules, and hostile paths and numbers (always a Matrix error, never a 500)."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request

import pytest

from bastion.ledger import anchors, merkle, tiles
from bastion.ledger.checkpoint import parse_checkpoint
from bastion.ledger.note import parse_note, parse_vkey, verify_note
from bastion.ledger.records import action_record
from tests.support.accounts import make_user
from tests.support.federation import run
from tests.support.harness import Client, ServerThread

L = "/_bastion/ledger/v1"
V3 = "/_matrix/client/v3"


def raw_get(srv: ServerThread, path: str, token: str | None = None):
    """(status, headers, body bytes) of a GET with the path sent exactly as given."""
    req = urllib.request.Request(srv.base_url + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def append(srv: ServerThread, n: int, subject: str | None = None) -> int:
    store = srv.hs.store

    def write(conn) -> int:
        last = -1
        for i in range(n):
            record = action_record(action="test.action", actor="server", ts=i, subject=subject)
            last = store.ledger_append_in(conn, record)
        return last + 1

    return run(srv, store.transaction(write))


def wait_checkpoint(srv: ServerThread, size: int):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cp = srv.hs.ledger.latest
        if cp is not None and cp.size >= size:
            return cp
        time.sleep(0.02)
    pytest.fail("no checkpoint")


def b64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerThread(
        tmp_path_factory.mktemp("ledger") / "d",
        ledger_checkpoint_interval=0.2, ledger_anchor_interval=0.2,
    ).start()  # fmt: skip
    yield s
    s.stop()


@pytest.fixture(scope="module")
def filled(srv):
    """300 leaves (one full tile and a partial one), the last 10 about alice, all covered."""
    alice = make_user(srv, "alice")
    bob = make_user(srv, "bob")
    admin = make_user(srv, "root", admin=True)
    append(srv, 290)
    size = append(srv, 10, subject=alice.user_id)
    wait_checkpoint(srv, size)
    return alice, bob, admin, size


def test_checkpoint_before_any_leaf_is_404(tmp_path):
    s = ServerThread(tmp_path / "d").start()
    try:
        status, _h, body = raw_get(s, L + "/checkpoint")
        assert status == 404 and b"M_NOT_FOUND" in body
    finally:
        s.stop()


def test_checkpoint_is_a_signed_note_with_short_caching(srv, filled):
    status, headers, body = raw_get(srv, L + "/checkpoint")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert "no-cache" in headers["Cache-Control"]
    note = parse_note(body)
    cp = parse_checkpoint(note.text)
    assert cp.origin == "localhost/bastion-ledger" and cp.size >= filled[3]
    keys = Client(srv.base_url).request("GET", L + "/keys").body
    verifiers = [parse_vkey(k["vkey"]) for k in keys["keys"]]
    assert keys["origin"] == cp.origin and keys["witness"] is None
    assert verify_note(note, verifiers)


def test_tiles_rebuild_the_checkpoint_root(srv, filled):
    status, _h, body = raw_get(srv, L + "/checkpoint")
    cp = parse_checkpoint(parse_note(body).text)
    fetched = {}

    def read_tile(level: int, index: int, width: int) -> bytes:
        path = tiles.tile_path(level, index, None if width == tiles.TILE_WIDTH else width)
        status, headers, data = raw_get(srv, f"{L}/{path}")
        assert status == 200, (path, data)
        assert headers["Content-Type"] == "application/octet-stream"
        fetched[path] = headers["Cache-Control"]
        return data

    reader = tiles.TileNodeReader(read_tile, size=cp.size)
    assert merkle.tree_root(cp.size, reader) == cp.root
    assert set(fetched) == {"tile/1/000.p/1", "tile/0/001.p/44"}
    assert all("immutable" not in c for c in fetched.values())
    # Level 0 holds the leaf hashes of the entries; a full tile is immutable; level 1 holds
    # the roots of the full level-0 tiles.
    entries = srv.hs.store.ledger_entries(0, 256)
    _s, headers, tile0 = raw_get(srv, L + "/tile/0/000")
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert tiles.split_tile(tile0) == [merkle.leaf_hash(e) for e in entries]
    _s, _h, tile1 = raw_get(srv, L + "/tile/1/000.p/1")
    assert tile1 == merkle.root(tiles.split_tile(tile0))


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/001",  # beyond the integrated tree (a full one)
        "tile/0/009.p/3",
        "tile/3/000",
        "tile/0/x000/000",  # non-canonical index
        "tile/00/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/01",
        "tile/0/0",
        "tile/64/000",
        "tile/-1/000",
        "tile/0/-01",
        "tile/0/%30%30%30",  # percent-encoded
        "tile/%30/000",
        "tile/%65ntries/000",  # entry bundles may not be reached through the public route
        "tile/entries%2F000",
        "tile//entries/000",
        "tile/0/x999/x999/x999/x999/x999/x999/x999/000",  # beyond uint64
        "tile/0/000/..",
        "tile/" + "x001/" * 60 + "000",
        "tile",
        "tile/",
    ],
)
def test_hostile_tile_paths_get_a_matrix_error(srv, filled, path):
    status, headers, body = raw_get(srv, f"{L}/{path}")
    assert status in (400, 404), (path, status, body)
    assert headers["Content-Type"] == "application/json"
    assert b'"errcode"' in body


def test_entry_bundles_are_for_admins_only(srv, filled):
    alice, _bob, admin, _size = filled
    status, _h, body = raw_get(srv, L + "/tile/entries/000")
    assert status == 401 and b"M_MISSING_TOKEN" in body
    status, _h, body = raw_get(srv, L + "/tile/entries/000", alice.access_token)
    assert status == 403 and b"M_FORBIDDEN" in body
    status, headers, body = raw_get(srv, L + "/tile/entries/000", admin.access_token)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert tiles.decode_entry_bundle(body) == srv.hs.store.ledger_entries(0, 256)
    status, _h, body = raw_get(srv, L + "/tile/entries/001.p/10", admin.access_token)
    assert status == 200
    assert tiles.decode_entry_bundle(body) == srv.hs.store.ledger_entries(256, 266)
    for bad in ("tile/entries/009", "tile/entries/001", "tile/entries/000.p/0",
                "tile/entries/%30%30%30", "tile/entries/x000/000"):  # fmt: skip
        status, _h, body = raw_get(srv, f"{L}/{bad}", admin.access_token)
        assert status in (400, 404) and b'"errcode"' in body, bad


def _check_inclusion(body: dict) -> None:
    note = parse_note(body["checkpoint"].encode())
    cp = parse_checkpoint(note.text)
    assert cp.size == body["tree_size"]
    leaf = merkle.leaf_hash(body["entry"].encode())
    assert b64(body["entry_base64"]) == body["entry"].encode()
    assert b64(body["leaf_hash"]) == leaf
    proof = [b64(h) for h in body["inclusion_proof"]]
    assert merkle.verify_inclusion(leaf, body["index"], cp.size, proof, cp.root)


def test_record_proofs_and_who_sees_them(srv, filled):
    alice, bob, admin, size = filled
    anonymous = Client(srv.base_url)
    mine = size - 1  # a record about alice
    r = alice.request("GET", f"{L}/proof/record/{mine}")
    assert r.status == 200, r.body
    _check_inclusion(r.body)
    assert r.body["index"] == mine and '"subject"' in r.body["entry"]
    for who in (bob, anonymous):
        r = who.request("GET", f"{L}/proof/record/{mine}")
        assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    # A record without a subject: admins only.
    assert alice.request("GET", f"{L}/proof/record/3").status == 403
    r = admin.request("GET", f"{L}/proof/record/3")
    assert r.status == 200
    _check_inclusion(r.body)
    # A bad token is refused, not treated as anonymous.
    r = Client(srv.base_url, "not-a-token").request("GET", f"{L}/proof/record/3")
    assert r.status == 401


@pytest.mark.parametrize(
    "index", ["-1", "01", "1e3", "abc", "1.0", "+1", "%201", "1%00", "9223372036854775808",
              "99999999999999999999999", "%D9%A1"],
)  # fmt: skip
def test_hostile_record_indexes(srv, filled, index):
    admin = filled[2]
    r = admin.request("GET", f"{L}/proof/record/{index}")
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM", (index, r.body)


def test_record_beyond_the_log_is_404(srv, filled):
    admin = filled[2]
    r = admin.request("GET", f"{L}/proof/record/9223372036854775807")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"


def test_event_proofs_for_the_sender_and_admins_only(srv, filled):
    alice, bob, admin, _size = filled
    r = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    assert r.status == 200, r.body
    room_id = r.body["room_id"]
    # (a body with a space: no hash or ID in the leaf can contain it by chance)
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/t1",
                      {"msgtype": "m.text", "body": "hi there"})  # fmt: skip
    event_id = r.body["event_id"]
    wait_checkpoint(srv, srv.hs.store.ledger_size())
    for who in (alice, admin):
        r = who.request("GET", f"{L}/proof/event/{event_id}")
        assert r.status == 200, r.body
        _check_inclusion(r.body)
        assert event_id in r.body["entry"] and "hi there" not in r.body["entry"]
    # Others do not learn whether the event exists (ledger_public_room_events is off).
    for who in (bob, Client(srv.base_url)):
        r = who.request("GET", f"{L}/proof/event/{event_id}")
        assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = admin.request("GET", f"{L}/proof/event/$nosuchevent")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"


def test_public_room_events_may_be_public(tmp_path):
    s = ServerThread(tmp_path / "d", ledger_checkpoint_interval=0.2,
                     ledger_public_room_events=True).start()  # fmt: skip
    try:
        alice = make_user(s, "alice")
        ids = {}
        for preset in ("public_chat", "private_chat"):
            room_id = alice.request("POST", f"{V3}/createRoom", {"preset": preset}).body["room_id"]
            ids[preset] = alice.request(
                "PUT", f"{V3}/rooms/{room_id}/send/m.room.message/t", {"msgtype": "m.text",
                                                                       "body": "x"}
            ).body["event_id"]  # fmt: skip
        wait_checkpoint(s, s.hs.store.ledger_size())
        anonymous = Client(s.base_url)
        r = anonymous.request("GET", f"{L}/proof/event/{ids['public_chat']}")
        assert r.status == 200, r.body
        _check_inclusion(r.body)
        r = anonymous.request("GET", f"{L}/proof/event/{ids['private_chat']}")
        assert r.status == 404
    finally:
        s.stop()


def test_consistency_proofs(srv, filled):
    c = Client(srv.base_url)
    sizes = [cp for cp in srv.hs.store.ledger_iter_checkpoints()]
    old, new = sizes[0], sizes[-1]
    r = c.request("GET", f"{L}/proof/consistency", query={"old": old.size, "new": new.size})
    assert r.status == 200, r.body
    proof = [b64(h) for h in r.body["proof"]]
    assert merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    for o, n in ((0, new.size), (new.size, new.size)):
        r = c.request("GET", f"{L}/proof/consistency", query={"old": o, "new": n})
        assert r.status == 200 and r.body["proof"] == []


@pytest.mark.parametrize(
    "query",
    ["old=-1&new=5", "old=abc&new=5", "old=1.5&new=5", "old=5&new=4", "old=0&new=99999999",
     "old=0&new=9223372036854775808", "old=0&new=18446744073709551616", "new=5", "old=1",
     "old=&new=5", "old=01&new=5", "old=0x1&new=5", ""],
)  # fmt: skip
def test_hostile_consistency_numbers(srv, filled, query):
    status, _h, body = raw_get(srv, f"{L}/proof/consistency?{query}")
    assert status == 400 and b"M_INVALID_PARAM" in body, (query, body)


def test_anchors_serve_stored_receipts(srv, filled):
    deadline = time.monotonic() + 10
    while True:
        got = Client(srv.base_url).request("GET", f"{L}/anchors").body["anchors"]
        if got or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got and got[0]["anchor"] == "file"
    receipt = got[0]["receipt"]
    note = srv.hs.store.ledger_checkpoint(got[0]["size"]).note
    assert anchors.verify_receipt(receipt, note)


def test_routes_absent_when_the_ledger_is_off(tmp_path):
    s = ServerThread(tmp_path / "d", ledger_enabled=False).start()
    try:
        status, _h, body = raw_get(s, L + "/checkpoint")
        assert status == 404 and b"M_UNRECOGNIZED" in body
    finally:
        s.stop()


def test_a_leaf_that_is_not_json_is_refused_not_a_500(tmp_path):
    import sqlite3

    s = ServerThread(tmp_path / "d", ledger_checkpoint_interval=0.2).start()
    try:
        admin = make_user(s, "root", admin=True)
        alice = make_user(s, "alice")
        wait_checkpoint(s, append(s, 5))
        conn = sqlite3.connect(s.config.database_path)
        with conn:
            conn.execute("UPDATE ledger_entries SET entry = ? WHERE idx = 1", (b"\xff not json",))
        conn.close()
        r = alice.request("GET", f"{L}/proof/record/1")
        assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
        status, _h, body = raw_get(s, f"{L}/proof/record/1", admin.access_token)
        assert status == 200
        # The served proof does not verify: the leaf was changed after it was signed.
        import json

        got = json.loads(body)
        assert b64(got["entry_base64"]) == b"\xff not json"
        cp = parse_checkpoint(parse_note(got["checkpoint"].encode()).text)
        proof = [b64(h) for h in got["inclusion_proof"]]
        assert not merkle.verify_inclusion(b64(got["leaf_hash"]), 1, cp.size, proof, cp.root)
    finally:
        s.stop()
