"""OpenID (C-S API "OpenID", S-S API "OpenID"): a user's token, exchanged at the federation
listener (no X-Matrix signature) for the user's ID; expiry, other users, deactivation, erasure,
restarts, rate limits and hostile input."""

from __future__ import annotations

import urllib.parse

import pytest

from bastion.core.openid import TOKEN_LIFETIME_MS
from tests.support.accounts import PASSWORD, db_rows, password_auth, run_on_server
from tests.support.federation import https, start_fed_server
from tests.support.harness import Client

V3 = "/_matrix/client/v3"
USERINFO = "/_matrix/federation/v1/openid/userinfo"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def request_token(c: Client, user_id: str | None = None, body: object = None):
    if body is None:
        body = {}
    return c.request("POST", f"{V3}/user/{q(user_id or c.user_id)}/openid/request_token", body)


def userinfo(ca, srv, token: str):
    return https(ca, srv.hs.federation_bound_port, "GET", f"{USERINFO}?access_token={q(token)}")


@pytest.fixture
def fed(tmp_path, test_ca):
    srv = start_fed_server(tmp_path, test_ca, "a")
    yield srv
    srv.stop()


def _unknown(answer) -> None:
    status, body = answer
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN"), answer


def test_request_and_exchange(fed, test_ca):
    alice = Client(fed.base_url).register()
    r = request_token(alice)
    assert r.status == 200, r.body
    assert set(r.body) == {"access_token", "token_type", "matrix_server_name", "expires_in"}
    assert r.body["token_type"] == "Bearer"
    assert r.body["matrix_server_name"] == fed.hs.server_name
    assert r.body["expires_in"] == 3600
    token = r.body["access_token"]
    assert isinstance(token, str) and len(token) >= 32
    assert userinfo(test_ca, fed, token) == (200, {"sub": alice.user_id})
    assert userinfo(test_ca, fed, token) == (200, {"sub": alice.user_id})  # not single-use
    # Stored hashed: the token itself is nowhere in the table.
    rows = db_rows(fed, "SELECT token_hash, user_id FROM openid_tokens")
    assert [r["user_id"] for r in rows] == [alice.user_id]
    assert token.encode() not in bytes(rows[0]["token_hash"])
    # An empty body is accepted too (the spec's body is an empty object); a new token each time.
    r2 = alice.request("POST", f"{V3}/user/{q(alice.user_id)}/openid/request_token")
    assert r2.status == 200 and r2.body["access_token"] != token
    # The OpenID token is not an access token, nor the other way round.
    other = Client(fed.base_url, token)
    assert other.request("GET", f"{V3}/account/whoami").status == 401
    _unknown(userinfo(test_ca, fed, alice.access_token))


def test_only_for_oneself_and_bad_input(fed, test_ca):
    alice = Client(fed.base_url).register()
    bob = Client(fed.base_url).register()
    r = request_token(alice, bob.user_id)
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    r = request_token(alice, "@nobody:elsewhere")
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    r = Client(fed.base_url).request(
        "POST", f"{V3}/user/{q(alice.user_id)}/openid/request_token", {}
    )
    assert (r.status, r.body["errcode"]) == (401, "M_MISSING_TOKEN")
    r = request_token(alice, body=[1, 2])
    assert (r.status, r.body["errcode"]) == (400, "M_BAD_JSON")
    r = alice.request("POST", f"{V3}/user/{q(alice.user_id)}/openid/request_token", raw=b"{nope")
    assert r.status == 400 and r.body["errcode"] == "M_NOT_JSON"
    assert db_rows(fed, "SELECT COUNT(*) FROM openid_tokens")[0][0] == 0
    # userinfo: no token, an empty one, a huge one, a guess; all without a signature.
    port = fed.hs.federation_bound_port
    status, body = https(test_ca, port, "GET", USERINFO)
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    for guess in ("", "x" * 5000, "%00", "abc def"):
        _unknown(userinfo(test_ca, fed, guess))
    # Only GET.
    assert https(test_ca, port, "POST", f"{USERINFO}?access_token=x", {})[0] == 405


def test_expired_tokens_are_refused_and_deleted(fed, test_ca):
    alice = Client(fed.base_url).register()
    hs = fed.hs
    token = request_token(alice).body["access_token"]
    tokens = hs.openid
    real_now = tokens.now_ms
    try:
        # One millisecond before the end of its hour it answers; at the end it does not.
        start = db_rows(fed, "SELECT expires_ts FROM openid_tokens")[0][0] - TOKEN_LIFETIME_MS
        tokens.now_ms = lambda: start + TOKEN_LIFETIME_MS - 1
        assert userinfo(test_ca, fed, token) == (200, {"sub": alice.user_id})
        tokens.now_ms = lambda: start + TOKEN_LIFETIME_MS
        _unknown(userinfo(test_ca, fed, token))
        assert hs.store.openid_token_count() == 0  # deleted on that lookup
        _unknown(userinfo(test_ca, fed, token))  # and then unknown, answered alike
    finally:
        tokens.now_ms = real_now
    # Issuing a token deletes expired ones (a bounded batch), whoever they belonged to.
    store = hs.store
    now = hs.now_ms()

    def old_tokens(conn) -> None:
        for i in range(5):
            store.add_openid_token_in(conn, f"old{i}", "@someone:elsewhere", now - 1000 + i)
        store.add_openid_token_in(conn, "live", alice.user_id, now + 60_000)

    run_on_server(fed, store.transaction(old_tokens))
    assert store.openid_token_count() == 6
    assert request_token(alice).status == 200
    assert store.openid_token_count() == 2  # the live one and the new one
    assert userinfo(test_ca, fed, "live") == (200, {"sub": alice.user_id})


def test_deactivation_kills_tokens(fed, test_ca):
    alice = Client(fed.base_url).register()
    bob = Client(fed.base_url).register()
    token = request_token(alice).body["access_token"]
    bob_token = request_token(bob).body["access_token"]
    assert userinfo(test_ca, fed, token)[0] == 200
    path = f"{V3}/account/deactivate"
    r = alice.request("POST", path, {"erase": False})
    assert r.status == 401
    auth = password_auth(alice.user_id, r.body["session"], PASSWORD)
    assert alice.request("POST", path, {"erase": False, "auth": auth}).status == 200
    _unknown(userinfo(test_ca, fed, token))
    assert fed.hs.store.openid_token_count(alice.user_id) == 0
    assert userinfo(test_ca, fed, bob_token) == (200, {"sub": bob.user_id})


def test_locked_account_token_refused(fed, test_ca):
    alice = Client(fed.base_url).register()
    token = request_token(alice).body["access_token"]
    store = fed.hs.store

    def lock(value: bool):
        return store.transaction(
            lambda conn: store.set_user_flag_in(conn, alice.user_id, "locked", value)
        )

    run_on_server(fed, lock(True))
    _unknown(userinfo(test_ca, fed, token))
    run_on_server(fed, lock(False))
    assert userinfo(test_ca, fed, token) == (200, {"sub": alice.user_id})


def test_token_survives_a_restart(tmp_path, test_ca):
    srv = start_fed_server(tmp_path, test_ca, "a")
    port = srv.hs.federation_bound_port
    try:
        alice = Client(srv.base_url).register()
        token = request_token(alice).body["access_token"]
        assert userinfo(test_ca, srv, token) == (200, {"sub": alice.user_id})
    finally:
        srv.stop()
    srv = start_fed_server(tmp_path, test_ca, "a", port=port)
    try:
        assert userinfo(test_ca, srv, token) == (200, {"sub": alice.user_id})
    finally:
        srv.stop()


def test_rate_limits(fed, test_ca):
    alice = Client(fed.base_url).register()
    codes = [request_token(alice).status for _ in range(25)]
    assert codes[:20] == [200] * 20 and 429 in codes[20:]
    r = request_token(alice)
    assert r.status == 429 and r.body["retry_after_ms"] > 0
    # Another user has their own allowance.
    assert request_token(Client(fed.base_url).register()).status == 200
    answers = [userinfo(test_ca, fed, f"guess{i}")[0] for i in range(60)]
    assert answers[:50] == [401] * 50 and 429 in answers[50:]
