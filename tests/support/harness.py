"""Test harness: a Bastion homeserver on 127.0.0.1 in a background thread, and a small client."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from bastion.config import Config
from bastion.server import HomeServer
from tests.support import at_rest


class ServerThread:
    """Runs a HomeServer on its own event loop in a thread; ``base_url`` once started."""

    def __init__(self, data_dir: Path, **overrides) -> None:
        settings = dict(
            server_name="localhost",
            data_dir=data_dir,
            listen_host="127.0.0.1",
            listen_port=0,
            registration="open",
            argon2_time_cost=1,
            argon2_memory_cost=8192,
        )
        settings.update(at_rest.server_settings(data_dir))
        settings.update(overrides)
        self.config = Config(**settings)
        self.hs: HomeServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.hs = HomeServer(self.config)
            self.loop.run_until_complete(self.hs.start())
        except BaseException as e:  # noqa: BLE001
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.hs.stop())
        self.loop.close()

    @property
    def base_url(self) -> str:
        assert self.hs is not None
        return f"http://127.0.0.1:{self.hs.bound_port}"

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)


@dataclass
class Response:
    status: int
    body: dict
    headers: dict


class Client:
    """A minimal synchronous Matrix client for tests (urllib only)."""

    def __init__(self, base_url: str, access_token: str | None = None) -> None:
        self.base_url = base_url
        self.access_token = access_token
        self.user_id: str | None = None
        self.device_id: str | None = None

    def request(self, method: str, path: str, body: object = None, *, raw: bytes | None = None,
                token: str | None = "default", query: dict | None = None,
                headers: dict | None = None, timeout: float = 30) -> Response:  # fmt: skip
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None and raw is None:
            req.add_header("Content-Type", "application/json")
        tok = self.access_token if token == "default" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = resp.read()
                status, hdrs = resp.status, dict(resp.headers)
        except urllib.error.HTTPError as e:
            payload, status, hdrs = e.read(), e.code, dict(e.headers)
        try:
            parsed = json.loads(payload) if payload else {}
        except ValueError:
            parsed = {"_raw": payload}
        return Response(status, parsed, hdrs)

    def register(
        self, username: str | None = None, password: str = "correct horse battery"
    ) -> Client:
        """Register with m.login.dummy (the server must run with registration = open)."""
        username = username or "u" + uuid.uuid4().hex[:10]
        r = self.request(
            "POST", "/_matrix/client/v3/register",
            {"username": username, "password": password, "auth": {"type": "m.login.dummy"}},
            token=None,
        )  # fmt: skip
        assert r.status == 200, r.body
        c = Client(self.base_url, r.body["access_token"])
        c.user_id, c.device_id = r.body["user_id"], r.body["device_id"]
        return c
