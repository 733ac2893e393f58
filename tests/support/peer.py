"""A scripted test federation peer: an in-process HTTPS server (test CA) with its own signing
key. It publishes its keys, answers /event, /state_ids, /event_auth and /get_missing_events from
what the test scripts, and signs events and X-Matrix requests to a Bastion under test."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from nacl.signing import SigningKey

from bastion.core.auth_rules import auth_types_for_event
from bastion.core.events import compute_event_id, sign_event
from bastion.core.server_keys import server_key_response
from bastion.core.x_matrix import authorization_header
from tests.support.federation import TestCA, free_port, https, run, start_fed_server
from tests.support.harness import Client

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


def on_server(srv, fn):
    """Run ``fn()`` on the server's event loop thread (its store connections live there)."""

    async def call():
        return fn()

    return run(srv, call())


class FakePeer:
    def __init__(self, ca: TestCA, label: str = "peer") -> None:
        self.ca = ca
        self.port = free_port()
        self.server_name = f"127.0.0.1:{self.port}"
        self.key = SigningKey.generate()
        self.key_id = "ed25519:peer"
        #: Events this peer serves on /event and /event_auth, by ID.
        self.events: dict[str, dict] = {}
        #: Scripted answers: get_missing_events → list of events; state_ids → (pdu_ids, chain).
        self.missing_events: list[dict] = []
        self.state_ids: dict[str, tuple[list[str], list[str]]] = {}
        #: Answer /state_ids for events of ``events`` not scripted above, from the peer's DAG.
        self.serve_state_ids = False
        self.requests: list[tuple[str, str]] = []
        #: PUT /v2/invite: ``async fn(body) -> (status, json)`` scripted by a test (None: 404).
        self.invite_handler = None
        #: Media requests (``/_matrix/federation/v1/media/…``, ``/_matrix/media/…``):
        #: ``async fn(request) -> response`` scripted by a test (None: 404 M_UNRECOGNIZED).
        self.media_handler = None
        self._label = label
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    # -- the HTTPS server -----------------------------------------------------------------------
    def start(self) -> FakePeer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            fut.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _run(self) -> None:
        import ssl

        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        cert, key = self.ca.issue(self._label)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert), str(key))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ctx)
        loop.run_until_complete(site.start())
        self._ready.set()
        loop.run_forever()

    async def _handle(self, req: web.Request) -> web.StreamResponse:
        path = req.raw_path.split("?", 1)[0]
        segs = [urllib.parse.unquote(s) for s in path.split("/")]
        self.requests.append((req.method, path))
        if path == "/_matrix/key/v2/server":
            now = int(__import__("time").time() * 1000)
            body = server_key_response(self.server_name, self.key_id, self.key, now + 24 * 3600_000)
            return web.json_response(body)
        if path.startswith(V1 + "/event/"):
            ev = self.events.get(segs[-1])
            if ev is None:
                return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
            return web.json_response({"origin": self.server_name, "origin_server_ts": 1,
                                      "pdus": [ev]})  # fmt: skip
        if path.startswith(V1 + "/event_auth/"):
            ev = self.events.get(segs[-1])
            if ev is None:
                return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
            return web.json_response({"auth_chain": self._auth_chain(ev)})
        if path.startswith(V1 + "/get_missing_events/"):
            return web.json_response({"events": self.missing_events})
        if path.startswith(V1 + "/state_ids/"):
            eid = req.query.get("event_id", "")
            if eid not in self.state_ids and self.serve_state_ids and eid in self.events:
                state = list(self.state_before(eid).values())
                chain = {a for s in state for a in self._auth_chain_ids(s)}
                return web.json_response({"pdu_ids": state, "auth_chain_ids": sorted(chain)})
            if eid not in self.state_ids:
                return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
            ids, chain = self.state_ids[eid]
            return web.json_response({"pdu_ids": ids, "auth_chain_ids": chain})
        if path.startswith(V2 + "/invite/") and self.invite_handler is not None:
            status, out = await self.invite_handler(await req.json())
            return web.json_response(out, status=status)
        if self.media_handler is not None and (
            path.startswith(V1 + "/media/") or path.startswith("/_matrix/media/")
        ):
            return await self.media_handler(req)
        if path.startswith(V1 + "/backfill/"):
            limit = int(req.query.get("limit", "10"))
            pdus = self._walk_back(req.query.getall("v", []), limit)
            return web.json_response({"origin": self.server_name, "origin_server_ts": 1,
                                      "pdus": pdus})  # fmt: skip
        return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "no"}, status=404)

    def _auth_chain(self, ev: dict) -> list[dict]:
        out: dict[str, dict] = {}
        stack = list(ev.get("auth_events", []))
        while stack:
            a = stack.pop()
            if a in out or a not in self.events:
                continue
            out[a] = self.events[a]
            stack.extend(self.events[a].get("auth_events", []))
        return list(out.values())

    def _auth_chain_ids(self, eid: str) -> set[str]:
        out: set[str] = set()
        stack = list(self.events.get(eid, {}).get("auth_events", []))
        while stack:
            a = stack.pop()
            if a in out or a not in self.events:
                continue
            out.add(a)
            stack.extend(self.events[a].get("auth_events", []))
        return out

    def state_before(self, eid: str) -> dict:
        """The state before one of the peer's events: the union of the states after its prev
        events (the test DAGs are linear or forks without conflicts on the keys asked about)."""
        state: dict = {}
        todo = [eid]
        order: list[str] = []
        seen: set[str] = set()
        while todo:  # iterative: the DAG may be long
            e = todo.pop()
            if e in seen or e not in self.events:
                continue
            seen.add(e)
            order.append(e)
            todo.extend(self.events[e].get("prev_events", []))
        for e in sorted(order, key=lambda i: self.events[i].get("depth", 0)):
            ev = self.events[e]
            if e != eid and isinstance(ev.get("state_key"), str):
                state[(ev["type"], ev["state_key"])] = e
        return state

    def _walk_back(self, starts: list[str], limit: int) -> list[dict]:
        """/backfill: the events from ``starts`` back over prev_events, deepest first."""
        out: list[dict] = []
        seen: set[str] = set()
        frontier = [s for s in starts if s in self.events]
        while frontier and len(out) < limit:
            frontier.sort(key=lambda i: self.events[i].get("depth", 0), reverse=True)
            e = frontier.pop(0)
            if e in seen:
                continue
            seen.add(e)
            out.append(self.events[e])
            frontier.extend(p for p in self.events[e].get("prev_events", []) if p not in seen)
        return out

    # -- events ---------------------------------------------------------------------------------
    def build(
        self, version: str, room_id: str, sender: str, etype: str, content: dict,
        state_key: str | None = None, *, prev_events: list[str], auth_events: list[str],
        depth: int, ts: int = 1_700_000_000_000, key: SigningKey | None = None,
    ) -> tuple[str, dict]:  # fmt: skip
        ev: dict[str, Any] = {
            "type": etype, "sender": sender, "content": content, "room_id": room_id,
            "origin_server_ts": ts, "depth": depth, "prev_events": prev_events,
            "auth_events": auth_events,
        }  # fmt: skip
        if state_key is not None:
            ev["state_key"] = state_key
        signed = sign_event(ev, version, self.server_name, self.key_id, key or self.key)
        eid = compute_event_id(signed, version)
        self.events[eid] = signed
        return eid, signed

    def build_on(
        self, srv, room_id: str, sender: str, etype: str, content: dict,
        state_key: str | None = None, *, state: dict | None = None,
        prev_events: list[str] | None = None, depth: int | None = None, **kw,
    ) -> tuple[str, dict]:  # fmt: skip
        """An event on top of the Bastion room's current state and extremities (or the given
        state / prev events), as a server in the room would build it."""
        head = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id))
        version = head.room_version
        state = dict(head.state) if state is None else state
        probe = {"type": etype, "sender": sender, "content": content, "room_id": room_id}
        if state_key is not None:
            probe["state_key"] = state_key
        auth = [state[k] for k in auth_types_for_event(probe, version) if k in state]
        prevs = list(head.extremities) if prev_events is None else prev_events
        if depth is None:
            metas = on_server(srv, lambda: srv.hs.store.get_event_meta(prevs))
            depth = max((m.depth for m in metas.values()), default=0) + 1
        return self.build(
            version, room_id, sender, etype, content, state_key,
            prev_events=prevs, auth_events=auth, depth=depth, **kw,
        )  # fmt: skip

    # -- requests to the server under test ------------------------------------------------------
    def request(self, srv, method: str, path: str, body=None, *, sign: bool = True,
                headers: dict | None = None):  # fmt: skip
        h = dict(headers or {})
        if sign:
            h["Authorization"] = authorization_header(
                method, path, self.server_name, srv.hs.server_name, self.key_id, self.key, body
            )
        return https(self.ca, srv.hs.federation_bound_port, method, path, body, h)

    def join(self, srv, room_id: str, user: str, versions: str = "ver=10&ver=12") -> str:
        """A remote join of ``user`` through make_join / send_join v2, as a joining server runs
        it; returns the join's event ID."""
        q_room, q_user = urllib.parse.quote(room_id, safe=""), urllib.parse.quote(user, safe="")
        status, body = self.request(srv, "GET", f"{V1}/make_join/{q_room}/{q_user}?{versions}")
        assert status == 200, body
        version = body["room_version"]
        signed = sign_event(body["event"], version, self.server_name, self.key_id, self.key)
        eid = compute_event_id(signed, version)
        path = f"{V2}/send_join/{q_room}/{urllib.parse.quote(eid, safe='')}"
        status, resp = self.request(srv, "PUT", path, signed)
        assert status == 200, resp
        self.events[eid] = signed
        return eid

    def send(self, srv, txn_id: str, pdus: list[dict], edus: list[dict] | None = None):
        body = {"origin": self.server_name, "origin_server_ts": 1, "pdus": pdus}
        if edus is not None:
            body["edus"] = edus
        return self.request(srv, "PUT", f"{V1}/send/{txn_id}", body)


@contextlib.contextmanager
def bastion_and_peer(tmp, test_ca: TestCA) -> Iterator[tuple[Any, FakePeer, Any]]:
    """A federating Bastion with open registration, a scripted peer server named ``peer`` and
    an admin account on the Bastion: ``(server, peer, admin)``; both servers stopped after.
    The account drives a whole module of tests (a room or more each): its rate limits are
    lifted, as an operator lifts a bot's."""
    from tests.support.guard import exempt

    srv = start_fed_server(tmp, test_ca, "bastion", registration="open")
    peer = FakePeer(test_ca, "peer").start()
    try:
        admin = Client(srv.base_url).register("admin" + uuid.uuid4().hex[:6])
        exempt(srv, admin, "drives a module of tests")
        yield srv, peer, admin
    finally:
        peer.stop()
        srv.stop()
