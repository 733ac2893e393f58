"""Two (or three) Bastion servers federating over TLS on loopback with a test CA: key
publication, direct and notary key fetches, X-Matrix in and out, routing on the federation
listener, egress filter, key rotation through the CLI."""

from __future__ import annotations

import json
import ssl
import urllib.parse

import pytest
from nacl.signing import SigningKey

from bastion.cli import main as cli_main
from bastion.core.server_keys import check_notary_signature, validate_key_response
from bastion.core.signing import encode_verify_key
from bastion.core.x_matrix import authorization_header
from bastion.federation.client import EgressDenied, FederationError
from tests.support.federation import https, run, start_fed_server

ECHO = "/_matrix/federation/v1/test_echo/{thing}"


def add_echo(srv):
    """An authenticated route for the tests, answering with what it authenticated."""

    async def echo(req):
        body = await req.json() if req.method in ("PUT", "POST") else None
        return {"origin": req.requester, "thing": req.params["thing"], "body": body}

    for method in ("GET", "PUT", "POST"):
        srv.hs.federation.router.add(method, ECHO, echo, auth=True)


def signed(srv_from, dest_name, method, uri, body=None, key=None, key_id=None, origin=None):
    sk = srv_from.hs.signing_key
    return {
        "Authorization": authorization_header(
            method, uri, origin or srv_from.hs.server_name, dest_name,
            key_id or sk.key_id, key or sk.key, body,
        )
    }  # fmt: skip


def test_keys_version_and_routing(fed_pair, test_ca):
    a, _ = fed_pair
    port = a.hs.federation_bound_port
    status, body = https(test_ca, port, "GET", "/_matrix/key/v2/server")
    assert status == 200
    keys = validate_key_response(body, a.hs.server_name, a.hs.now_ms())
    assert encode_verify_key(keys.verify_keys[a.hs.signing_key.key_id].key) == encode_verify_key(
        a.hs.signing_key.key
    )
    assert body["valid_until_ts"] > a.hs.now_ms() + 3600_000
    assert https(test_ca, port, "GET", "/_matrix/federation/v1/version") == (
        200, {"server": {"name": "Bastion", "version": "0.1.0"}},
    )  # fmt: skip
    s, b = https(test_ca, port, "GET", "/_matrix/federation/v1/nonexistent")
    assert (s, b["errcode"]) == (404, "M_UNRECOGNIZED")
    s, b = https(test_ca, port, "POST", "/_matrix/federation/v1/version", {})
    assert (s, b["errcode"]) == (405, "M_UNRECOGNIZED")
    # Only federation paths on this listener; no Client-Server API, no .well-known unconfigured.
    for path in (
        "/_matrix/client/versions",
        "/.well-known/matrix/server",
        "/.well-known/matrix/client",
    ):
        assert https(test_ca, port, "GET", path)[0] == 404
    # And no federation on the client listener.
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(a.base_url + "/_matrix/key/v2/server", timeout=10)
    assert e.value.code == 404


def test_plain_http_is_refused_on_federation_listener(fed_pair):
    import http.client

    a, _ = fed_pair
    conn = http.client.HTTPConnection("127.0.0.1", a.hs.federation_bound_port, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/_matrix/federation/v1/version")
        conn.getresponse().read()
    conn.close()


def test_untrusted_certificate_is_refused(tmp_path, fed_pair, test_ca):
    a, b = fed_pair
    # A server trusting only the system store (not the test CA) cannot reach b.
    c = start_fed_server(tmp_path, test_ca, "c", federation_ca_file="")
    try:
        with pytest.raises(FederationError):
            run(
                c,
                c.hs.federation.client.request(
                    "GET", b.hs.server_name, "/_matrix/federation/v1/version"
                ),
            )
    finally:
        c.stop()


def test_direct_key_fetch_and_outbound_signed_request(fed_pair):
    a, b = fed_pair
    keys = run(
        b,
        b.hs.federation.keyring.get_verify_keys(
            a.hs.server_name, [a.hs.signing_key.key_id], b.hs.now_ms()
        ),
    )
    assert keys[a.hs.signing_key.key_id].key == a.hs.signing_key.key.verify_key
    add_echo(a)
    status, body = run(b, b.hs.federation.client.request(
        "PUT", a.hs.server_name, "/_matrix/federation/v1/test_echo/x%2Fy", {"hello": ["w", 1]},
        query={"v": ["1", "2"], "q": "a b"},
    ))  # fmt: skip
    assert status == 200, body
    assert body == {"origin": b.hs.server_name, "thing": "x/y", "body": {"hello": ["w", 1]}}
    status, body = run(
        b,
        b.hs.federation.client.request(
            "GET", a.hs.server_name, "/_matrix/federation/v1/test_echo/g"
        ),
    )
    assert (status, body["origin"], body["body"]) == (200, b.hs.server_name, None)


def test_inbound_x_matrix_rejections(fed_pair, test_ca):
    a, b = fed_pair
    add_echo(a)
    port, dest = a.hs.federation_bound_port, a.hs.server_name
    uri = "/_matrix/federation/v1/test_echo/t?x=1"
    body = {"k": "v"}

    def put(headers, uri=uri, body=body, method="PUT"):
        return https(test_ca, port, method, uri, body, headers)

    ok = put(signed(b, dest, "PUT", uri, body))
    assert ok[0] == 200 and ok[1]["origin"] == b.hs.server_name
    rejections = {
        "missing": {},
        "bearer": {"Authorization": "Bearer abc"},
        "garbage": {"Authorization": "X-Matrix origin"},
        "wrong destination": signed(b, "127.0.0.1:1", "PUT", uri, body),
        "port-less destination": signed(b, "127.0.0.1", "PUT", uri, body),
        "forged key": signed(b, dest, "PUT", uri, body, key=SigningKey.generate()),
        "unknown key id": signed(b, dest, "PUT", uri, body, key_id="ed25519:nope"),
        "body tampered": signed(b, dest, "PUT", uri, {"k": "other"}),
        "uri tampered": signed(b, dest, "PUT", uri + "&y=2", body),
        "method changed": signed(b, dest, "POST", uri, body),
        "claims to be a": signed(b, dest, "PUT", uri, body, origin=dest),
        "claims another origin": signed(b, dest, "PUT", uri, body, origin="127.0.0.1:2"),
    }
    for what, headers in rejections.items():
        status, resp = put(headers)
        assert status == 401, (what, status, resp)
        assert resp["errcode"] == "M_UNAUTHORIZED", what
    # GET with a signature that included content: refused (GET has no content).
    g = "/_matrix/federation/v1/test_echo/g"
    assert https(test_ca, port, "GET", g, None, signed(b, dest, "GET", g, {"a": 1}))[0] == 401
    assert https(test_ca, port, "GET", g, None, signed(b, dest, "GET", g))[0] == 200
    # Case-insensitive names, unquoted values with ':' and the 'signature' spelling are fine.
    h = signed(b, dest, "GET", g)["Authorization"]
    h = (
        h.replace('origin="', "ORIGIN=")
        .replace('",destination', ",destination")
        .replace("sig=", "signature=")
    )
    assert https(test_ca, port, "GET", g, None, {"Authorization": h})[0] == 200
    # No destination parameter: accepted (and taken to be us).
    h = signed(b, dest, "GET", g)["Authorization"]
    no_dest = ",".join(p for p in h.split(",") if not p.startswith("destination="))
    assert https(test_ca, port, "GET", g, None, {"Authorization": no_dest})[0] == 200
    # Unknown endpoint is 404 before authentication; bad JSON body is a 400.
    assert https(test_ca, port, "PUT", "/_matrix/federation/v1/nope", body, {})[0] == 404
    assert put(signed(b, dest, "PUT", uri, body), body=b"{not json")[0] == 400


def test_notary_get_and_post(fed_pair, test_ca):
    a, b = fed_pair
    now = a.hs.now_ms()
    sn_a = a.hs.server_name
    path = "/_matrix/key/v2/query/" + urllib.parse.quote(sn_a, safe="")
    status, body = https(test_ca, b.hs.federation_bound_port, "GET", path)
    assert status == 200 and len(body["server_keys"]) == 1
    entry = body["server_keys"][0]
    validate_key_response(entry, sn_a, now)
    check_notary_signature(
        entry, b.hs.server_name, {b.hs.signing_key.key_id: b.hs.signing_key.key.verify_key}
    )
    status, body = https(test_ca, b.hs.federation_bound_port, "POST", "/_matrix/key/v2/query", {
        "server_keys": {sn_a: {a.hs.signing_key.key_id: {"minimum_valid_until_ts": now}},
                        b.hs.server_name: {}, "bad name!": {}}
    })  # fmt: skip
    assert status == 200
    names = sorted(e["server_name"] for e in body["server_keys"])
    assert names == sorted([sn_a, b.hs.server_name])
    # Bad input.
    port = b.hs.federation_bound_port
    assert https(test_ca, port, "POST", "/_matrix/key/v2/query", {"server_keys": []})[0] == 400
    assert (
        https(test_ca, port, "POST", "/_matrix/key/v2/query", {"server_keys": {sn_a: 1}})[0] == 400
    )
    assert (
        https(
            test_ca,
            port,
            "POST",
            "/_matrix/key/v2/query",
            {"server_keys": {sn_a: {"k": {"minimum_valid_until_ts": "x"}}}},
        )[0]
        == 400
    )
    assert https(test_ca, port, "POST", "/_matrix/key/v2/query", b"nope")[0] == 400
    assert https(test_ca, port, "GET", path + "?minimum_valid_until_ts=abc")[0] == 400
    assert https(test_ca, port, "GET", "/_matrix/key/v2/query/bad%20name")[0] == 400
    # An unreachable server: empty list.
    assert https(test_ca, port, "GET", "/_matrix/key/v2/query/127.0.0.1:1")[1] == {
        "server_keys": []
    }


def test_keyring_uses_notary_when_origin_is_offline(tmp_path, test_ca, fed_pair):
    _, b = fed_pair
    c = start_fed_server(tmp_path, test_ca, "c")
    c_name, c_key_id = c.hs.server_name, c.hs.signing_key.key_id
    c_verify = c.hs.signing_key.key.verify_key
    # b (the notary) learns c's keys, then c goes away.
    status, _ = https(test_ca, b.hs.federation_bound_port, "GET", "/_matrix/key/v2/query/" + c_name)
    assert status == 200
    c.stop()
    a = start_fed_server(
        tmp_path, test_ca, "a2", federation_trusted_key_servers=(b.hs.server_name,)
    )
    try:
        keys = run(
            a, a.hs.federation.keyring.get_verify_keys(c_name, [c_key_id], a.hs.now_ms()), 60
        )
        assert keys[c_key_id].key == c_verify
        row = a.hs.store.get_server_keys(c_name)[0]
        assert row["key_id"] == c_key_id
    finally:
        a.stop()


def test_egress_filter_blocks_loopback_unless_allowed(tmp_path, test_ca, fed_pair):
    _, b = fed_pair
    c = start_fed_server(tmp_path, test_ca, "c", federation_allow_ips=())
    try:
        with pytest.raises(EgressDenied):
            run(
                c,
                c.hs.federation.client.request(
                    "GET", b.hs.server_name, "/_matrix/federation/v1/version"
                ),
            )
        assert (
            run(
                c,
                c.hs.federation.keyring.get_verify_keys(
                    b.hs.server_name, [b.hs.signing_key.key_id], 0
                ),
            )
            == {}
        )
        # Also through the notary endpoint: no fetch from a private address.
        s, body = https(
            test_ca, c.hs.federation_bound_port, "GET", "/_matrix/key/v2/query/" + b.hs.server_name
        )
        assert (s, body) == (200, {"server_keys": []})
    finally:
        c.stop()


def test_banned_signing_key(tmp_path, test_ca, fed_pair):
    _, b = fed_pair
    banned = encode_verify_key(b.hs.signing_key.key)
    c = start_fed_server(tmp_path, test_ca, "c", federation_banned_signing_keys=(banned,))
    try:
        assert (
            run(
                c,
                c.hs.federation.keyring.get_verify_keys(
                    b.hs.server_name, [b.hs.signing_key.key_id], 0
                ),
            )
            == {}
        )
        add_echo(c)
        status, _ = run(
            b,
            b.hs.federation.client.request(
                "GET", c.hs.server_name, "/_matrix/federation/v1/test_echo/z"
            ),
        )
        assert status == 401
    finally:
        c.stop()


def test_rotate_signing_key_cli(tmp_path, test_ca, fed_pair):
    a, _ = fed_pair
    from tests.support.federation import free_port
    from tests.support.federation import start_fed_server as start

    port = free_port()
    b = start(tmp_path, test_ca, "rot", port=port)
    data_dir = b.config.data_dir
    old_id, old_key = b.hs.signing_key.key_id, b.hs.signing_key.key
    b.stop()
    assert cli_main(["admin", "rotate-signing-key", "--data-dir", str(data_dir)]) == 0
    b = start(tmp_path, test_ca, "rot", port=port)
    try:
        new_id = b.hs.signing_key.key_id
        assert new_id != old_id
        status, body = https(test_ca, port, "GET", "/_matrix/key/v2/server")
        assert status == 200
        assert list(body["verify_keys"]) == [new_id]
        old = body["old_verify_keys"][old_id]
        assert old["key"] == encode_verify_key(old_key) and isinstance(old["expired_ts"], int)
        keys = validate_key_response(body, b.hs.server_name, b.hs.now_ms())
        assert keys.old_verify_keys[old_id].valid_until_ts == old["expired_ts"]
        # a (which never saw b before) learns both; the old key signs events, not requests.
        add_echo(a)
        dest, uri = a.hs.server_name, "/_matrix/federation/v1/test_echo/r"
        status, body = https(test_ca, a.hs.federation_bound_port, "GET", uri, None,
                             signed(b, dest, "GET", uri, key=old_key, key_id=old_id))  # fmt: skip
        assert status == 401
        status, body = https(
            test_ca, a.hs.federation_bound_port, "GET", uri, None, signed(b, dest, "GET", uri)
        )
        assert (status, body["origin"]) == (200, b.hs.server_name)
        got = run(a, a.hs.federation.keyring.get_verify_keys(b.hs.server_name, [old_id], 0))
        assert got[old_id].old and got[old_id].key == old_key.verify_key
        # The audit trail has the rotation.
        rows = b.hs.store.db.read("SELECT actor, target FROM admin_audit WHERE action = ?",
                                  ("signing_key.rotate",))  # fmt: skip
        assert [(r["actor"], r["target"]) for r in rows] == [("cli", old_id)]
    finally:
        b.stop()


def test_event_signatures_with_current_and_old_keys(fed_pair):
    from bastion.core.events import sign_event
    from bastion.core.signing import SignatureError

    a, b = fed_pair
    now = b.hs.now_ms()
    ev = {
        "type": "m.room.message", "room_id": "!r:" + b.hs.server_name, "sender": f"@u:{b.hs.server_name}",
        "content": {"body": "hi"}, "origin_server_ts": now, "depth": 3, "prev_events": [], "auth_events": [],
    }  # fmt: skip
    sk = b.hs.signing_key
    signed_ev = sign_event(ev, "10", b.hs.server_name, sk.key_id, sk.key)
    assert run(a, a.hs.federation.keyring.verify_event_signatures(signed_ev, "10")) is True
    tampered = dict(signed_ev, content={"body": "changed"})
    assert (
        run(a, a.hs.federation.keyring.verify_event_signatures(tampered, "10")) is False
    )  # hash mismatch
    forged = sign_event(ev, "10", b.hs.server_name, sk.key_id, SigningKey.generate())
    with pytest.raises(SignatureError):
        run(a, a.hs.federation.keyring.verify_event_signatures(forged, "10"))
    # v5+: a key must be valid at origin_server_ts; our cap is 7 days from the fetch.
    late = sign_event(
        dict(ev, origin_server_ts=now + 8 * 86400_000), "10", b.hs.server_name, sk.key_id, sk.key
    )
    with pytest.raises(SignatureError):
        run(a, a.hs.federation.keyring.verify_event_signatures(late, "10"))
    # v4 ignores validity.
    late_v4 = sign_event(
        dict(ev, origin_server_ts=now + 8 * 86400_000), "4", b.hs.server_name, sk.key_id, sk.key
    )
    assert run(a, a.hs.federation.keyring.verify_event_signatures(late_v4, "4")) is True


def test_well_known_server_served_when_configured(tmp_path, test_ca):
    c = start_fed_server(
        tmp_path, test_ca, "wk", federation_well_known_server="matrix.example.org:443"
    )
    try:
        assert https(test_ca, c.hs.federation_bound_port, "GET", "/.well-known/matrix/server") == (
            200, {"m.server": "matrix.example.org:443"},
        )  # fmt: skip
        import urllib.request

        with urllib.request.urlopen(c.base_url + "/.well-known/matrix/server", timeout=10) as r:
            assert json.loads(r.read()) == {"m.server": "matrix.example.org:443"}
    finally:
        c.stop()


def test_self_signed_certificate(tmp_path, test_ca):
    from tests.support.federation import free_port
    from tests.support.harness import ServerThread

    port = free_port()
    srv = ServerThread(
        tmp_path / "ss", server_name=f"127.0.0.1:{port}", federation_listen=f"127.0.0.1:{port}",
        tls_self_signed=True,
    ).start()  # fmt: skip
    try:
        cert = srv.config.tls_certificate_file
        assert cert.exists()
        ctx = ssl.create_default_context(cafile=str(cert))
        import http.client

        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        conn.request("GET", "/_matrix/federation/v1/version")
        assert conn.getresponse().status == 200
        conn.close()
        # Verification is on: the test CA does not vouch for it.
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, context=test_ca.client_context(), timeout=10
        )
        with pytest.raises(ssl.SSLError):
            conn.request("GET", "/_matrix/federation/v1/version")
        conn.close()
    finally:
        srv.stop()
