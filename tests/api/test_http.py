"""The HTTP shell (api/http.py): every error a Matrix JSON error, bounded idle and slow
connections, private caching of authenticated answers, no version fingerprint, and no echo of
a malformed request."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.accounts import assert_error
from tests.support.harness import Client, ServerThread

V3 = "/_matrix/client/v3"


@pytest.fixture
def fast_server(tmp_path):
    """A server with short connection limits so the tests measure them in seconds."""
    srv = ServerThread(
        tmp_path / "data", http_keepalive_timeout=1, http_body_timeout=3,
        http_body_idle_timeout=1,
    ).start()  # fmt: skip
    yield srv
    srv.stop()


def connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.hs.bound_port), timeout=10)
    return sock


def trickle(sock: socket.socket, chunks) -> bool:
    """Send ``chunks`` one every 0.3 s; True as soon as the server closes the connection."""
    sock.settimeout(0.3)
    for chunk in chunks:
        try:
            sock.sendall(chunk)
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response (Content-Length bodies): (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return status, headers, rest[:length]


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes the connection (None if it is still open after
    ``seconds``). Anything the server sends first is read and ignored."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


# Defect 5: an OSError in a handler is a Matrix error, not aiohttp's text/plain 500 page.


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), ConnectionResetError()])
def test_oserror_in_handler_is_a_matrix_error(client, server, monkeypatch, exc):
    alice = client.register("alice")

    def broken(*_a, **_k):
        raise exc

    monkeypatch.setattr(server.hs.filters, "get", broken)
    r = alice.request("GET", f"{V3}/user/{alice.user_id}/filter/0")
    assert_error(r, 500, "M_UNKNOWN")
    assert r.headers["Content-Type"] == "application/json"
    # The server keeps answering.
    assert alice.request("GET", f"{V3}/account/whoami").status == 200


# Defect 10: connection and header hygiene.


def test_idle_keepalive_connection_is_closed(fast_server):
    sock = connect(fast_server)
    sock.sendall(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n\r\n")
    status, headers, _ = read_response(sock)
    assert status == 200 and headers.get("connection", "").lower() != "close"
    elapsed = closed_within(sock, 6)
    assert elapsed is not None, "an idle keep-alive connection was never closed"
    sock.close()


def test_trickled_request_headers_are_cut_off(fast_server):
    sock = connect(fast_server)
    sock.sendall(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n")
    start = time.monotonic()
    # a header line every 0.3 s for up to 12 s: never a complete head
    closed = trickle(sock, (f"X-Slow-{i}: a\r\n".encode() for i in range(40)))
    assert closed, "a client trickling its headers was never cut off"
    assert time.monotonic() - start < 6
    sock.close()


def test_trickled_request_body_is_cut_off(fast_server):
    client = Client(fast_server.base_url)
    alice = client.register("alice")
    sock = connect(fast_server)
    head = (
        f"POST {V3}/user/{alice.user_id}/filter HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {alice.access_token}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode())
    start = time.monotonic()
    # a byte every 0.3 s: never stalls a whole second, never finishes
    closed = trickle(sock, (b" " for _ in range(60)))
    assert closed, "a client trickling its body was never cut off"
    assert time.monotonic() - start < 8
    sock.close()


def test_stalled_request_body_is_cut_off(fast_server):
    client = Client(fast_server.base_url)
    alice = client.register("alice")
    sock = connect(fast_server)
    head = (
        f"POST {V3}/user/{alice.user_id}/filter HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {alice.access_token}\r\nContent-Length: 100\r\n\r\n{{"
    )
    sock.sendall(head.encode())
    assert closed_within(sock, 5) is not None, "a stalled request body was never cut off"
    sock.close()


def test_slow_but_steady_body_within_the_limit_is_served(fast_server):
    client = Client(fast_server.base_url)
    alice = client.register("alice")
    body = json.dumps({"room": {"timeline": {"limit": 5}}}).encode()
    sock = connect(fast_server)
    head = (
        f"POST {V3}/user/{alice.user_id}/filter HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {alice.access_token}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:10])
    time.sleep(0.5)
    sock.sendall(body[10:])
    status, _, payload = read_response(sock)
    assert status == 200 and "filter_id" in json.loads(payload)
    sock.close()


def test_authenticated_json_is_not_cached(client):
    alice = client.register("alice")
    r = alice.request("GET", f"{V3}/account/whoami")
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    r = alice.request("GET", f"{V3}/rooms/!nope:localhost/state")
    assert r.status in (403, 404) and r.headers["Cache-Control"] == "no-store"
    r = client.request("GET", "/_matrix/client/versions")
    assert "no-store" not in r.headers.get("Cache-Control", "")


def test_server_header_names_no_versions(client, server):
    for path in ("/_matrix/client/versions", "/nope", f"{V3}/account/whoami"):
        r = client.request("GET", path)
        assert r.headers["Server"] == "Bastion", r.headers
    sock = connect(server)
    sock.sendall(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    status, headers, _ = read_response(sock)
    assert status == 400 and headers["server"] == "Bastion"
    sock.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        # A header line without a colon, after the token.
        b"GET /_matrix/client/v3/account/whoami HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer syt_SECRETTOKEN_abc\r\nBroken header syt_SECRETTOKEN_abc\r\n\r\n",
        # A malformed header value carrying the token (control character).
        b"GET /_matrix/client/v3/account/whoami HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer syt_SECRETTOKEN_abc\x01\r\n\r\n",
        # A request line that is not HTTP.
        b"GET /syt_SECRETTOKEN_abc BROKEN/9\r\nHost: x\r\n\r\n",
    ],
)
def test_malformed_request_gets_json_400_without_echo(server, request_bytes):
    sock = connect(server)
    sock.sendall(request_bytes)
    status, headers, body = read_response(sock)
    sock.close()
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert b"SECRETTOKEN" not in body
    assert json.loads(body)["errcode"] == "M_UNKNOWN"


def test_federation_listener_has_the_same_hygiene(tmp_path):
    """The federation listener is built by the same runner: version-free Server header and a
    JSON 400 for a malformed request, over TLS."""
    import ssl

    srv = ServerThread(
        tmp_path / "data", federation_listen="127.0.0.1:0", tls_self_signed=True,
    ).start()  # fmt: skip
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", srv.hs.federation_bound_port), timeout=10)
        sock = ctx.wrap_socket(raw)
        sock.sendall(b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["server"] == "Bastion"
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Key syt_SECRETTOKEN_abc\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 400 and b"SECRETTOKEN" not in body
        assert json.loads(body)["errcode"] == "M_UNKNOWN"
        sock.close()
    finally:
        srv.stop()


# The router: the first route registered that matches wins, found through the segment tree.


def _try_every_route(router, method: str, raw_path: str):
    """The router's rule written the slow way: every route in registration order."""
    from bastion.api.http import _match

    segs = raw_path.split("/")[1:]
    trailing = bool(segs) and segs[-1] == ""
    if trailing:
        segs = segs[:-1]
    known = False
    for route in router.routes:
        params = _match(route.pattern, segs, trailing)
        if params is None:
            continue
        known = True
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            return route, params, True
    return None, {}, known


def test_router_first_registered_route_wins():
    from bastion.api.http import Router

    async def h(_req):
        return {}

    r = Router()
    r.add("GET", "/a/{x}", h)
    r.add("GET", "/a/b", h)
    r.add("POST", "/a/b", h)
    r.add("GET", "/s/{type}/{key}", h)
    r.add("GET", "/m/{path*}", h)
    r.add("GET", "/m/fixed", h)
    route, params, _ = r.match("GET", "/a/b")
    assert route is r.routes[0] and params == {"x": "b"}
    assert r.match("POST", "/a/b")[0] is r.routes[2]
    assert r.match("HEAD", "/a/%2Fz")[1] == {"x": "/z"}
    # A known path with another method: no route, but the path is known (405).
    assert r.match("DELETE", "/a/b") == (None, {}, True)
    assert r.match("GET", "/a") == (None, {}, False)
    assert r.match("GET", "/a/b/c") == (None, {}, False)
    # An empty trailing segment is an empty state key.
    assert r.match("GET", "/s/m.room.name/")[1] == {"type": "m.room.name", "key": ""}
    assert r.match("GET", "/s/m.room.name")[0] is None
    # The rest of the path, possibly empty, and registered first.
    assert r.match("GET", "/m/fixed")[1] == {"path": "fixed"}
    assert r.match("GET", "/m/")[1] == {"path": ""}
    assert r.match("GET", "/m/a/b%2Fc/")[1] == {"path": "a/b/c/"}
    # Routes added or inserted after a match are found too.
    r.add("GET", "/late", h)
    assert r.match("GET", "/late")[0] is r.routes[-1]
    first = Router()
    first.add("GET", "/a/b", h)
    r.routes.insert(0, first.routes[0])
    assert r.match("GET", "/a/b")[0] is first.routes[0]


def test_router_agrees_with_trying_every_route(server):
    """Every path shape the server's routes accept (parameters plain, percent-encoded with a
    slash, empty; trailing slashes; longer and shorter paths), with every method, is matched
    to the same route and parameters as trying the routes one by one would."""
    fed = getattr(server.hs, "federation", None)
    routers = [server.hs.router] + ([fed.router] if fed is not None and fed.router.routes else [])
    checked = 0
    for router in routers:
        paths: set[str] = set()
        for route in router.routes:
            for fill in ("x", "a%2Fb", "!r:localhost"):
                segs = [fill if p.startswith("{") else p for p in route.pattern]
                path = "/" + "/".join(segs)
                paths.update({path, path + "/", path + "/extra", path + "/x/y"})
                if segs:
                    paths.add("/" + "/".join(segs[:-1]))
                    paths.add("/" + "/".join(segs[:-1]) + "/")
        for path in sorted(paths):
            for method in ("GET", "HEAD", "PUT", "POST", "DELETE"):
                assert router.match(method, path) == _try_every_route(router, method, path), (
                    method,
                    path,
                )
                checked += 1
    assert checked > 5000
