"""The outbound transaction queue (S-S API "Transactions"): batching, deletion on 200, keyed
EDUs, back-off on a dead destination, and durability across restarts of either side."""

from __future__ import annotations

import time

import pytest

from tests.support.federation import free_port, run, start_fed_server

FAST_RETRY = {"federation_retry_min_ms": 200, "federation_retry_max_ms": 800}


def capture(srv, status: int = 200) -> list[dict]:
    """Replace the receiving server's /send with one that records transactions."""
    got: list[dict] = []

    async def send(req):
        body = await req.json()
        got.append({"origin": req.requester, "txn": req.params["txnId"], **body})
        return status, ({"pdus": {}} if status == 200 else {"errcode": "M_UNKNOWN", "error": "x"})

    srv.hs.federation.router.routes.insert(0, _route(srv, send))
    return got


def _route(srv, handler):
    from bastion.api.http import Router

    r = Router()
    r.add("PUT", "/_matrix/federation/v1/send/{txnId}", handler, auth=True)
    return r.routes[0]


def wait_for(cond, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def fake_pdu(n: int) -> dict:
    return {"type": "m.room.message", "content": {"body": f"m{n}"}, "n": n}


def enqueue(srv, dest: str, n: int):
    return run(srv, srv.hs.federation.sender.enqueue_pdu(fake_pdu(n), f"$e{n}", "!r:x", [dest]))


def delivered(got: list[dict]) -> list[int]:
    return [p["n"] for t in got for p in t["pdus"]]


def test_batches_in_order_and_deletes_on_200(tmp_path, test_ca):
    a = start_fed_server(tmp_path, test_ca, "a", **FAST_RETRY)
    b = start_fed_server(tmp_path, test_ca, "b")
    try:
        got = capture(b)
        dest = b.hs.server_name

        async def many():
            # One write with 120 PDUs and 3 EDUs: sent as 50 + 50 + 20.
            sender = a.hs.federation.sender

            def fn(conn):
                for i in range(120):
                    sender.enqueue_pdu_in(conn, fake_pdu(i), f"$e{i}", "!r:x", [dest])
                for i in range(3):
                    sender.send_edu_in(conn, dest, "m.test", {"i": i})

            await a.hs.store.db.write(fn)

        run(a, many())
        wait_for(lambda: len(delivered(got)) == 120, what="120 PDUs")
        assert delivered(got) == list(range(120))
        assert all(len(t["pdus"]) <= 50 for t in got) and len(got) >= 3
        assert [e["content"]["i"] for t in got for e in t["edus"]] == [0, 1, 2]
        assert {t["origin"] for t in got} == {a.hs.server_name}
        assert all(t["origin"] == a.hs.server_name for t in got)
        wait_for(lambda: a.hs.store.queue_length(dest) == 0, what="empty queue")
        # Never to ourselves, never to a denied server.
        assert run(a, a.hs.federation.sender.enqueue_pdu(fake_pdu(0), "$s", "!r:x",
                                                         [a.hs.server_name])) == []  # fmt: skip
        assert a.hs.store.queue_length(a.hs.server_name) == 0
    finally:
        a.stop()
        b.stop()


def test_keyed_edus_replace_and_dead_destination_backs_off(tmp_path, test_ca):
    a = start_fed_server(tmp_path, test_ca, "a", **FAST_RETRY)
    try:
        dead = f"127.0.0.1:{free_port()}"
        sender = a.hs.federation.sender

        async def edus():
            await sender.send_edu(dead, "m.typing", {"v": 1}, key="!room")
            await sender.send_edu(dead, "m.typing", {"v": 2}, key="!room")
            await sender.send_edu(dead, "m.typing", {"v": 3}, key="!other")

        run(a, edus())
        assert a.hs.store.queue_length(dead) == 2
        _, edus_q = a.hs.store.next_outbound_batch(dead)
        assert sorted(e["content"]["v"] for _, e in edus_q) == [2, 3]
        wait_for(lambda: a.hs.store.get_destination_retry(dead)[0] >= 3, what="3 failures")
        failures, interval, retry_at = a.hs.store.get_destination_retry(dead)
        assert interval == 800  # 200 → 400 → 800 (the maximum)
        assert retry_at > a.hs.now_ms() - 1000
        assert a.hs.store.queue_length(dead) == 2  # nothing dropped
    finally:
        a.stop()


def test_receiver_down_then_back_is_delivered(tmp_path, test_ca):
    a = start_fed_server(tmp_path, test_ca, "a", **FAST_RETRY)
    port = free_port()
    b = start_fed_server(tmp_path, test_ca, "b", port=port)
    dest = b.hs.server_name
    b.stop()
    try:
        enqueue(a, dest, 1)
        wait_for(lambda: a.hs.store.get_destination_retry(dest)[0] >= 1, what="a failure")
        assert a.hs.store.queue_length(dest) == 1
        b = start_fed_server(tmp_path, test_ca, "b", port=port)
        got = capture(b)
        wait_for(lambda: delivered(got) == [1], what="delivery after B restarts")
        wait_for(lambda: a.hs.store.get_destination_retry(dest)[0] == 0, what="back-off reset")
        assert a.hs.store.queue_length(dest) == 0
    finally:
        a.stop()
        b.stop()


def test_sender_restart_resumes_the_queue(tmp_path, test_ca):
    a_port, b_port = free_port(), free_port()
    a = start_fed_server(tmp_path, test_ca, "a", port=a_port, **FAST_RETRY)
    b = start_fed_server(tmp_path, test_ca, "b", port=b_port)
    dest = b.hs.server_name
    b.stop()
    try:
        for i in range(3):
            enqueue(a, dest, i)
        a.stop()
        b = start_fed_server(tmp_path, test_ca, "b", port=b_port)
        got = capture(b)
        time.sleep(0.3)
        assert got == []  # A is down: nothing sent
        a = start_fed_server(tmp_path, test_ca, "a", port=a_port, **FAST_RETRY)
        wait_for(lambda: delivered(got) == [0, 1, 2], what="delivery after A restarts")
        wait_for(lambda: a.hs.store.queue_length(dest) == 0, what="empty queue")
    finally:
        a.stop()
        b.stop()


def test_refused_transaction_is_dropped_not_retried(tmp_path, test_ca):
    a = start_fed_server(tmp_path, test_ca, "a", **FAST_RETRY)
    b = start_fed_server(tmp_path, test_ca, "b")
    try:
        got = capture(b, status=400)
        enqueue(a, b.hs.server_name, 7)
        wait_for(lambda: len(got) == 1, what="one attempt")
        wait_for(lambda: a.hs.store.queue_length(b.hs.server_name) == 0, what="dropped")
        time.sleep(0.5)
        assert len(got) == 1
    finally:
        a.stop()
        b.stop()


def test_denied_destination_gets_nothing(tmp_path, test_ca):
    a = start_fed_server(tmp_path, test_ca, "a", federation_domain_deny=("127.0.0.*",))
    try:
        assert run(a, a.hs.federation.sender.enqueue_pdu(fake_pdu(1), "$d", "!r:x",
                                                         ["127.0.0.1:1"])) == []  # fmt: skip

        async def edu():
            return await a.hs.federation.sender.send_edu("127.0.0.1:1", "m.x", {})

        assert run(a, edu()) is False
    finally:
        a.stop()
