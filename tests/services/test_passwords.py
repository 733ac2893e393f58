"""A login flood must not slow the rest of the server. Password hashing (argon2id, deliberately
expensive) runs on a bounded pool of its own with a bounded queue: media and other file I/O never
wait behind it, and a login that finds the queue full is refused at once with 429
``M_LIMIT_EXCEEDED`` and ``retry_after_ms`` (C-S API "Rate limiting")."""

from __future__ import annotations

import threading
import time
import uuid

from tests.support.harness import Client, ServerThread

LOGIN = "/_matrix/client/v3/login"
UPLOAD = "/_matrix/media/v3/upload"
DOWNLOAD = "/_matrix/client/v1/media/download"
#: These tests flood logins from one address on purpose to load the hashing pool: the guard's
#: per-address login limits and stuffing detection (tested in tests/guard) are lifted for them,
#: as an operator would for a load test.
FLOOD_GUARD = {"login": {"address": {"free_failures": 1000}, "prefix": {"free_failures": 1000},
                         "stuffing_accounts": 0, "stuffing_prefix_accounts": 0}}  # fmt: skip


def _login(base_url: str, username: str, password: str = "wrong password"):
    return Client(base_url).request(
        "POST", LOGIN,
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": username},
         "password": password},
        token=None, timeout=120,
    )  # fmt: skip


def _flood(base_url: str, n: int) -> tuple[list, list[threading.Thread]]:
    """``n`` concurrent logins with random user names from one client; returns at once."""
    results: list = []
    start = threading.Barrier(n + 1)

    def one() -> None:
        start.wait()
        results.append(_login(base_url, "flood" + uuid.uuid4().hex[:12]))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    start.wait()
    return results, threads


def _check_answers(results: list) -> int:
    """Every answer is a wrong-password 403 or a 429 with retry_after_ms; returns the 429s."""
    busy = 0
    for r in results:
        if r.status == 429:
            assert r.body["errcode"] == "M_LIMIT_EXCEEDED", r.body
            assert isinstance(r.body["retry_after_ms"], int) and r.body["retry_after_ms"] > 0
            busy += 1
        else:
            assert (r.status, r.body.get("errcode")) == (403, "M_FORBIDDEN"), r.body
    return busy


def test_login_flood_does_not_slow_media(tmp_path):
    # The production argon2 cost (about 0.15 s a hash here), not the tests' cheap one.
    srv = ServerThread(
        tmp_path / "data", argon2_time_cost=3, argon2_memory_cost=65536, guard=FLOOD_GUARD
    ).start()
    try:
        alice = Client(srv.base_url).register()
        payload = bytes(range(256)) * 4  # 1 KiB
        results, threads = _flood(srv.base_url, 50)
        time.sleep(0.1)  # the logins are in
        t0 = time.monotonic()
        r = alice.request(
            "POST", UPLOAD, raw=payload, headers={"Content-Type": "application/octet-stream"}
        )
        assert r.status == 200, r.body
        media_id = r.body["content_uri"].rsplit("/", 1)[1]
        r = alice.request("GET", f"{DOWNLOAD}/localhost/{media_id}")
        elapsed = time.monotonic() - t0
        assert r.status == 200 and r.body["_raw"] == payload
        for t in threads:
            t.join(120)
        assert len(results) == 50
        _check_answers(results)
        assert elapsed < 1.0, f"a 1 KiB upload and download took {elapsed:.2f} s during the flood"
        # The pool drains: a real login works afterwards.
        assert srv.hs.passwords.in_flight == 0
        r = _login(srv.base_url, alice.user_id, "correct horse battery")
        assert r.status == 200, r.body
    finally:
        srv.stop()


def test_full_hashing_queue_refuses_with_429(tmp_path):
    srv = ServerThread(
        tmp_path / "data", argon2_time_cost=2, argon2_memory_cost=32768,
        password_hash_threads=1, password_hash_queue=2, guard=FLOOD_GUARD,
    ).start()  # fmt: skip
    try:
        results, threads = _flood(srv.base_url, 20)
        for t in threads:
            t.join(120)
        assert len(results) == 20
        busy = _check_answers(results)
        # At most one running and two waiting at any moment: most of 20 at once are refused.
        assert busy >= 10, busy
        r = next(r for r in results if r.status == 429)
        assert int(r.headers["Retry-After"]) >= 1
        assert srv.hs.passwords.in_flight == 0
    finally:
        srv.stop()


def test_registration_refused_while_busy_keeps_its_session(tmp_path):
    """A registration whose UIA is complete but finds the hashing queue full gets 429; retried
    with the same session after ``retry_after_ms``, it succeeds (the flow does not restart)."""
    srv = ServerThread(
        tmp_path / "data", argon2_time_cost=8, argon2_memory_cost=65536,
        password_hash_threads=1, password_hash_queue=0,
    ).start()  # fmt: skip
    try:
        c = Client(srv.base_url)
        body: dict = {"username": "carol", "password": "correct horse battery"}
        r = c.request("POST", "/_matrix/client/v3/register", body, token=None)
        assert r.status == 401, r.body
        body["auth"] = {"type": "m.login.dummy", "session": r.body["session"]}
        busy = threading.Thread(target=_login, args=(srv.base_url, "someone"))
        busy.start()  # takes the one hashing thread for a while
        deadline = time.monotonic() + 10
        while srv.hs.passwords.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        r = c.request("POST", "/_matrix/client/v3/register", body, token=None)
        assert r.status == 429 and r.body["errcode"] == "M_LIMIT_EXCEEDED", r.body
        busy.join(60)
        r = c.request("POST", "/_matrix/client/v3/register", body, token=None)
        assert r.status == 200 and r.body["user_id"] == "@carol:localhost", r.body
    finally:
        srv.stop()
