"""The HTTP shell: routing on the raw path, JSON bodies, and Matrix errors.

Routes are matched segment by segment on the *raw* (still percent-encoded) request path, each
segment then decoded: event IDs of room versions 3+ may contain ``/``, which clients send as
``%2F`` (matrix-nio encodes every segment). Every error leaves as ``{"errcode", "error"}`` with
its status (C-S API "Standard error response"); an unknown endpoint is 404 ``M_UNRECOGNIZED``
and a known path with an unknown method is 405 ``M_UNRECOGNIZED`` ("Unsupported endpoints").
Nothing escapes as a 500 page: an unexpected exception is logged and answered with
``M_UNKNOWN`` so the client sees a Matrix error.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, overload
from urllib.parse import parse_qsl, unquote

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bastion.core.canonical_json import parse_json
from bastion.errors import (
    M_LIMIT_EXCEEDED,
    M_TOO_LARGE,
    M_UNKNOWN,
    M_UNRECOGNIZED,
    MatrixError,
    bad_json,
    invalid_param,
    not_json,
    too_large,
    unrecognized,
)

log = logging.getLogger("bastion.http")

Handler = Callable[["Request"], Awaitable[web.StreamResponse | dict | list | tuple[int, dict]]]

MAX_JSON_BODY = 1024 * 1024  # JSON request bodies (events are at most 64 KiB)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization, Date",
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: The ``Server`` header: the product only, no library or interpreter versions to fingerprint.
SERVER_HEADER = "Bastion"
#: Responses to authenticated requests are private to the requester: no cache may store them.
NO_STORE = {"Cache-Control": "no-store"}


class Request:
    """What a handler sees: path parameters, query, body and the authenticated requester."""

    __slots__ = ("raw", "params", "requester", "_json", "app", "route")

    def __init__(
        self, raw: web.Request, params: dict[str, str], app: Any, route: Route | None = None
    ) -> None:
        self.raw = raw
        self.params = params
        #: The matched route table entry: what the request may do is read from it (its flags),
        #: never from the path.
        self.route = route
        self.requester: Any = None
        self._json: Any = None
        self.app = app

    @property
    def method(self) -> str:
        return self.raw.method

    @property
    def query(self) -> dict[str, str]:
        """The query string; for repeated keys the last value (see ``query_all``)."""
        return dict(parse_qsl(self.raw.query_string, keep_blank_values=True))

    def query_all(self, key: str) -> list[str]:
        return [v for k, v in parse_qsl(self.raw.query_string, keep_blank_values=True) if k == key]

    @overload
    def query_int(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int: ...

    @overload
    def query_int(
        self, key: str, default: None = None, *, minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None: ...  # fmt: skip

    def query_int(self, key: str, default: int | None = None, *, minimum: int | None = None,
                  maximum: int | None = None) -> int | None:  # fmt: skip
        value = self.query.get(key)
        if value is None or value == "":
            return default
        try:
            n = int(value)
        except ValueError:
            raise invalid_param(f"query parameter {key!r} must be an integer") from None
        if minimum is not None and n < minimum:
            n = minimum
        if maximum is not None and n > maximum:
            n = maximum
        return n

    async def body_bytes(self, limit: int = MAX_JSON_BODY) -> bytes:
        length = self.raw.content_length
        if length is not None and length > limit:
            raise too_large(f"request body is larger than {limit} bytes")
        data = bytearray()
        async for chunk in self.raw.content.iter_chunked(65536):
            data += chunk
            if len(data) > limit:
                raise too_large(f"request body is larger than {limit} bytes")
        return bytes(data)

    async def json(self, *, allow_empty: bool = False, limit: int = MAX_JSON_BODY) -> dict:
        """The body as a JSON object (``M_NOT_JSON`` / ``M_BAD_JSON`` otherwise); bodies larger
        than ``limit`` bytes are refused (413 ``M_TOO_LARGE``)."""
        if self._json is None:
            data = await self.body_bytes(limit)
            if not data.strip():
                if allow_empty:
                    self._json = {}
                    return self._json
                raise not_json("request body is empty; a JSON object is required")
            value = parse_json(data)
            if not isinstance(value, dict):
                raise bad_json("request body must be a JSON object")
            self._json = value
        return self._json


@dataclass
class Route:
    """One route table entry. Access decisions that depend on the endpoint are flags here, set
    where the route is registered: ``allow_locked`` (C-S API "Account locking": a locked account
    may still log out) and ``allow_suspended`` (C-S API "Account suspension": the writes a
    suspended account may still make). They are never inferred from the request path, whose
    parameters (transaction IDs, state keys) are chosen by the client."""

    method: str
    pattern: tuple[str, ...]
    handler: Handler
    auth: bool
    name: str = ""
    allow_locked: bool = False
    allow_suspended: bool = False


class _Node:
    """A node of the routes' segment tree: the routes whose pattern ends here, those whose
    ``{name*}`` starts here, and the next segment, literal or ``{name}``."""

    __slots__ = ("end", "literal", "param", "rest")

    def __init__(self) -> None:
        self.end: list[int] = []
        self.rest: list[int] = []
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None


@dataclass
class Router:
    """Routes by method and segment pattern. ``{name}`` matches one segment; a final ``{name*}``
    matches the rest (possibly empty). Patterns may be registered under several prefixes.

    The first route registered whose pattern matches (and whose method is the request's) wins.
    A tree of the patterns' segments narrows the routes to try to those a path can match, so a
    request costs a walk down its segments, not a try of every route. The tree is rebuilt
    whenever the route list is no longer the one it was built from (routes may be inserted
    directly, as tests do)."""

    routes: list[Route] = field(default_factory=list)
    _tree: _Node | None = field(default=None, init=False, repr=False, compare=False)
    _tree_of: list[Route] = field(default_factory=list, init=False, repr=False, compare=False)

    def add(self, method: str, path: str, handler: Handler, *, auth: bool = True,
            allow_locked: bool = False, allow_suspended: bool = False) -> None:  # fmt: skip
        segs = tuple(s for s in path.split("/") if s != "")
        self.routes.append(
            Route(method.upper(), segs, handler, auth, path, allow_locked, allow_suspended)
        )

    def _build(self) -> _Node:
        root = _Node()
        for index, route in enumerate(self.routes):
            node = root
            for p in route.pattern:
                if p.startswith("{") and p.endswith("*}"):
                    node.rest.append(index)
                    break
                if p.startswith("{"):
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    node = node.literal.setdefault(p, _Node())
            else:
                node.end.append(index)
        self._tree, self._tree_of = root, list(self.routes)
        return root

    def _candidates(self, segs: list[str], trailing_empty: bool) -> list[int]:
        """The indexes, in registration order, of the routes whose pattern may match ``segs``
        (every route :func:`_match` accepts is among them)."""
        found: list[int] = []
        tree = self._tree
        if tree is None or self._tree_of != self.routes:  # (identical routes compare fast)
            tree = self._build()
        stack = [(tree, 0)]
        n = len(segs)
        while stack:
            node, i = stack.pop()
            found += node.rest
            if i == n:
                found += node.end
                if trailing_empty and node.param is not None:
                    # An optional trailing segment may be empty (as in :func:`_match`).
                    found += node.param.end
                continue
            child = node.literal.get(segs[i])
            if child is not None:
                stack.append((child, i + 1))
            if node.param is not None:
                stack.append((node.param, i + 1))
        found.sort()
        return found

    def match(self, method: str, raw_path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, params, path_known). path_known is True when some method matches the path."""
        raw_segs = raw_path.split("/")[1:]
        if raw_segs and raw_segs[-1] == "":
            trailing_empty = True
            raw_segs = raw_segs[:-1]
        else:
            trailing_empty = False
        path_known = False
        routes = self.routes
        for index in self._candidates(raw_segs, trailing_empty):
            route = routes[index]
            params = _match(route.pattern, raw_segs, trailing_empty)
            if params is None:
                continue
            path_known = True
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params, True
        return None, {}, path_known


def _match(
    pattern: tuple[str, ...], segs: list[str], trailing_empty: bool
) -> dict[str, str] | None:
    params: dict[str, str] = {}
    n = len(pattern)
    for i, p in enumerate(pattern):
        if p.startswith("{") and p.endswith("*}"):
            rest = segs[i:]
            params[p[1:-2]] = "/".join(unquote(s) for s in rest) + (
                "/" if trailing_empty and rest else ""
            )
            return params
        if i >= len(segs):
            # An optional trailing segment may be empty: `/state/{type}/` has an empty state key.
            if i == len(segs) and i == n - 1 and trailing_empty and p.startswith("{"):
                params[p[1:-1]] = ""
                return params
            return None
        seg = segs[i]
        if p.startswith("{"):
            params[p[1:-1]] = unquote(seg)
        elif seg != p:
            return None
    if len(segs) != n:
        return None
    return params


_ACCESS_TOKEN_RE = re.compile(r"Bearer\s+(\S+)\s*$", re.IGNORECASE)


def bearer_token(raw: web.Request) -> str | None:
    """The access token from ``Authorization: Bearer`` (C-S API "Using access tokens").

    The query-string ``access_token`` is not accepted: the spec removes it (MSC4127) and it leaks
    into logs and Referer headers.
    """
    header = raw.headers.get("Authorization")
    if not header:
        return None
    m = _ACCESS_TOKEN_RE.match(header)
    return m.group(1) if m else ""


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    h = {"Content-Type": "application/json", **CORS_HEADERS, **SECURITY_HEADERS}
    if headers:
        h.update(headers)
    return web.Response(body=orjson.dumps(body), status=status, headers=h)


def error_response(e: MatrixError) -> web.Response:
    headers = {}
    retry_after_ms = e.extra.get("retry_after_ms")
    if e.errcode == M_LIMIT_EXCEEDED and isinstance(retry_after_ms, int):
        # Whole seconds, rounded up: a client that waits Retry-After is not refused again.
        headers["Retry-After"] = str(max(1, -(-retry_after_ms // 1000)))
    return json_response(e.to_json(), e.status, headers)


def _client_gone(raw: web.Request, e: BaseException) -> bool:
    """True when ``e`` is the client's connection failing (reset, closed): an error from
    anything else (a file, a socket to another server) is answered as a Matrix error."""
    if not isinstance(e, ConnectionError):
        return False
    transport = raw.transport
    return transport is None or transport.is_closing()


def make_dispatcher(
    router: Router,
    app: Any,
    authenticate: Callable[[Request, str | None], Awaitable[Any]],
    limits: ConnectionLimits | None = None,
):
    """The single aiohttp handler: route, authenticate, run, and turn errors into Matrix errors.

    Every failure is answered as a Matrix error (C-S API "Standard error response"), an
    ``OSError`` included; only a client that has closed its connection gets no answer. The
    request body must arrive within ``limits`` (see ``ConnectionLimits``)."""

    async def dispatch(raw: web.Request) -> web.StreamResponse:
        if raw.method == "OPTIONS":
            return web.Response(status=204, headers=CORS_HEADERS)
        raw_path = raw.raw_path.split("?", 1)[0]
        route, params, known = router.match(raw.method, raw_path)
        if route is None:
            if known:
                return error_response(MatrixError(M_UNRECOGNIZED, "method not allowed here", 405))
            return error_response(unrecognized("unrecognized request"))
        req = Request(raw, params, app, route)
        watchdog = _BodyWatchdog(raw, limits) if limits is not None else None
        try:
            if route.auth:
                req.requester = await authenticate(req, bearer_token(raw))
            result = await route.handler(req)
        except MatrixError as e:
            return _private(error_response(e), route)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            # aiohttp's own errors (a body over client_max_size…) leave as Matrix errors too.
            errcode = M_TOO_LARGE if e.status == 413 else M_UNKNOWN
            return _private(error_response(MatrixError(errcode, e.reason, e.status)), route)
        except Exception as e:  # noqa: BLE001
            if _client_gone(raw, e):
                # The client closed the connection: there is nobody left to answer.
                log.info("client went away during %s %s: %s", raw.method, route.name, e)
                raise
            log.exception("unexpected error handling %s %s", raw.method, route.name)
            return _private(error_response(MatrixError(M_UNKNOWN, "internal error", 500)), route)
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, tuple):
            status, body = result
            return _private(json_response(body, status), route)
        return _private(json_response(result), route)

    return dispatch


def _private(resp: web.Response, route: Route) -> web.Response:
    """``Cache-Control: no-store`` on every JSON answer to an authenticated request: access
    tokens, keys and messages must not stay in a browser or proxy cache."""
    if route.auth:
        resp.headers.update(NO_STORE)
    return resp


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on how long a connection may hold a socket without making progress.

    ``keepalive_timeout``: an idle keep-alive connection is closed after it; it also bounds the
    time a request's line and headers may take to arrive (aiohttp's keep-alive timer runs from
    the connection's start or the last response until a whole request head is parsed).
    ``body_timeout``: the whole request body must arrive within it once the head is in.
    ``body_idle_timeout``: the body may not stall longer than this between reads."""

    keepalive_timeout: float = 60.0
    body_timeout: float = 300.0
    body_idle_timeout: float = 30.0


class _BodyWatchdog:
    """Closes the connection of a request whose body does not arrive in time (slow-body
    "slowloris" clients). It checks on a timer; a body that is complete (or absent) is done.
    A handler still reading then sees its connection reset, like any client that goes away."""

    __slots__ = ("_raw", "_limits", "_deadline", "_seen", "_last_progress", "_handle")

    def __init__(self, raw: web.Request, limits: ConnectionLimits) -> None:
        self._raw = raw
        self._limits = limits
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._deadline = now + limits.body_timeout
        self._seen = -1
        self._last_progress = now
        self._handle: asyncio.TimerHandle | None = None
        if not raw.content.is_eof():
            self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        step = min(self._limits.body_idle_timeout, self._limits.body_timeout) / 2
        self._handle = loop.call_later(max(step, 0.05), self._check)

    def _check(self) -> None:
        self._handle = None
        content = self._raw.content
        if content.is_eof():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        received = content.total_bytes
        if received != self._seen:
            self._seen, self._last_progress = received, now
        stalled = now - self._last_progress >= self._limits.body_idle_timeout
        if now >= self._deadline or stalled:
            log.info("closing a connection whose request body is too slow (%d bytes)", received)
            protocol = self._raw.protocol
            if protocol is not None:
                protocol.force_close()
            return
        self._schedule(loop)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _Protocol(RequestHandler):
    """aiohttp's connection handler with Bastion's answer to a request it cannot parse: a
    Matrix JSON error that never repeats the request (its text/plain page echoes the offending
    line back, an ``Authorization`` header included)."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The exception's text quotes the bad line: log its kind only.
        if status >= 500:
            log.error("error handling a request from %s: %s", request.remote, type(exc).__name__)
        else:
            log.info("malformed request from %s: %s", request.remote, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if status >= 500:
            errcode, text = M_UNKNOWN, "internal error"
        elif status in (413, 431):
            errcode, text = M_TOO_LARGE, "request line or headers too large"
        else:
            errcode, text = M_UNKNOWN, "malformed HTTP request"
        resp = json_response({"errcode": errcode, "error": text}, status)
        resp.headers["Server"] = SERVER_HEADER
        resp.force_close()
        return resp


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """aiohttp's AppRunner with Bastion's connection handling: bounded keep-alive (which also
    bounds slow request heads), JSON answers to unparsable requests, and a ``Server`` header
    naming no versions. Used for both the client and the federation listener."""

    def __init__(self, app: web.Application, limits: ConnectionLimits) -> None:
        super().__init__(
            app, access_log=None, handle_signals=False, keepalive_timeout=limits.keepalive_timeout
        )
        app.on_response_prepare.append(_set_server_header)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The same server, creating _Protocol connections instead of aiohttp's RequestHandler.
        server.__class__ = _Server
        return server


async def _set_server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER
