"""Helpers for federation tests: a test CA, Bastion servers with the federation listener on
127.0.0.1 (server name ``127.0.0.1:PORT``), and raw HTTPS requests."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
from pathlib import Path

import trustme

from tests.support.harness import ServerThread


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestCA:
    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, name: str, host: str = "127.0.0.1") -> tuple[Path, Path]:
        cert = self.ca.issue_cert(host)
        cert_file, key_file = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        for extra in cert.cert_chain_pems[1:]:
            with open(cert_file, "ab") as f:
                f.write(extra.bytes())
        cert.private_key_pem.write_to_path(str(key_file))
        return cert_file, key_file

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def start_fed_server(tmp: Path, ca: TestCA, label: str, port: int | None = None, **overrides):
    port = port or free_port()
    cert, key = ca.issue(label)
    settings = dict(
        server_name=f"127.0.0.1:{port}",
        federation_listen=f"127.0.0.1:{port}",
        tls_certificate_path=str(cert),
        tls_private_key_path=str(key),
        federation_ca_file=str(ca.ca_file),
        federation_allow_ips=("127.0.0.0/8",),
    )
    settings.update(overrides)
    return ServerThread(tmp / label, **settings).start()


def run(srv: ServerThread, coro, timeout: float = 30):
    """Run a coroutine on the server's loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, srv.loop).result(timeout)


def https(ca: TestCA, port: int, method: str, path: str, body=None, headers=None):
    """(status, json) of a raw HTTPS request to 127.0.0.1:port."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ca.client_context(), timeout=30)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        h = dict(headers or {})
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw
    finally:
        conn.close()
