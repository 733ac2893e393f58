"""Interoperability with a real Synapse over TLS on loopback (setup per SYNAPSE-PEER.md):

* Synapse, as a notary, fetches and validates our ``/_matrix/key/v2/server``;
* Synapse verifies our outbound X-Matrix requests (and refuses a forged one with 401);
* we fetch and validate Synapse's keys, and verify Synapse's X-Matrix on a request it makes to us
  (a remote profile query).

Skipped when Synapse is not installed. The Synapse process is always stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from nacl.signing import SigningKey

from bastion.core.server_keys import check_notary_signature, validate_key_response
from bastion.core.signing import encode_verify_key, signing_key_ids
from tests.support.federation import free_port, run, start_fed_server
from tests.support.harness import Client
from tests.support.synapse_config import generate_synapse_config

yaml = pytest.importorskip("yaml")
pytest.importorskip("synapse")

DEFAULT_BLACKLIST = [
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
    "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8",
    "fec0::/10",
]  # fmt: skip


@contextlib.contextmanager
def synapse_process(data, test_ca, extra_config: dict | None = None, label: str = "synapse",
                    client_resources: tuple[str, ...] = ("client",)):  # fmt: skip
    """A Synapse on 127.0.0.1 (client API on plain HTTP, federation and keys on TLS with a
    certificate of the test CA) in its own process group, stopped on exit; yields its name,
    client base URL, federation port and data directory. ``extra_config`` is merged into
    homeserver.yaml (e.g. raised rate limits, trusted key servers); ``client_resources``: what
    the plain-HTTP client listener serves (``media`` for uploads)."""
    data.mkdir(parents=True)
    client_port, fed_port = free_port(), free_port()
    name = f"127.0.0.1:{fed_port}"
    cfg_path = generate_synapse_config(data, name)
    cert, key = test_ca.issue(label)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update({
        "listeners": [
            {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
             "x_forwarded": False,
             "resources": [{"names": list(client_resources), "compress": False}]},
            {"port": fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
             "resources": [{"names": ["federation", "keys"], "compress": False}]},
        ],
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(key),
        "federation_verify_certificates": True,
        "federation_custom_ca_list": [str(test_ca.ca_file)],
        "ip_range_blacklist": DEFAULT_BLACKLIST,
        "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "report_stats": False,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "federation": {"destination_min_retry_interval": "2s", "destination_max_retry_interval": "10s",
                       "max_short_retry_delay": "1s", "max_long_retry_delay": "5s"},
    })  # fmt: skip
    cfg.update(extra_config or {})
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = open(data / "stdout.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "synapse.app.homeserver", "-c", str(cfg_path)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"synapse exited: {(data / 'stdout.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{client_port}/_matrix/client/versions", timeout=2
                ):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail("synapse did not start within 60 s")
                time.sleep(0.1)
        yield {"name": name, "client": f"http://127.0.0.1:{client_port}", "fed_port": fed_port,
               "data": data}  # fmt: skip
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def synapse(tmp_path, test_ca):
    with synapse_process(tmp_path / "synapse", test_ca) as syn:
        yield syn


def _client(method, url, body=None, token=None):
    req = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None
    )
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_synapse_interop(tmp_path, test_ca, synapse):
    ours = start_fed_server(tmp_path, test_ca, "bastion")
    try:
        hs = ours.hs
        # 1. Synapse as notary fetches and checks our published keys (it fetches on demand only
        #    for named key IDs).
        status, body = run(ours, hs.federation.client.request(
            "POST", synapse["name"], "/_matrix/key/v2/query",
            {"server_keys": {hs.server_name: {hs.signing_key.key_id: {"minimum_valid_until_ts": 0}}}},
        ))  # fmt: skip
        assert status == 200, body
        [entry] = body["server_keys"]
        validate_key_response(entry, hs.server_name, hs.now_ms())
        assert entry["verify_keys"][hs.signing_key.key_id]["key"] == encode_verify_key(
            hs.signing_key.key
        )
        # 2. We fetch and validate Synapse's keys (directly) and check its notary signature.
        syn_key_ids = signing_key_ids(entry, synapse["name"])
        syn_keys = run(
            ours, hs.federation.keyring.get_verify_keys(synapse["name"], syn_key_ids, hs.now_ms())
        )
        assert syn_keys and set(syn_keys) == set(syn_key_ids)
        check_notary_signature(entry, synapse["name"], {k: v.key for k, v in syn_keys.items()})
        assert hs.store.get_server_key_response(synapse["name"]) is not None
        # 3. Synapse verifies our X-Matrix on an authenticated endpoint (a profile query about an
        #    unknown user: 404 once authenticated, 401 otherwise).
        path = "/_matrix/federation/v1/query/profile"
        q = {"user_id": f"@nobody:{synapse['name']}"}
        status, body = run(
            ours, hs.federation.client.request("GET", synapse["name"], path, query=q)
        )
        assert status == 404 and body.get("errcode") == "M_NOT_FOUND", (status, body)
        real_key = hs.signing_key
        object.__setattr__(
            hs, "signing_key", type(real_key)(real_key.version, SigningKey.generate())
        )
        try:
            status, body = run(
                ours, hs.federation.client.request("GET", synapse["name"], path, query=q)
            )
        finally:
            hs.signing_key = real_key
        assert status == 401, (status, body)

        # 4. Synapse calls us with X-Matrix: a remote profile query from its client API (our
        # /query/profile answers only requests whose X-Matrix signature verifies).
        bob = Client(ours.base_url).register("bob")
        r = bob.request("PUT", f"/_matrix/client/v3/profile/{urllib.parse.quote(bob.user_id)}"
                        "/displayname", {"displayname": "Bob on Bastion"})  # fmt: skip
        assert r.status == 200, r.body
        status, reg = _client("POST", synapse["client"] + "/_matrix/client/v3/register",
                              {"username": "alice", "password": "pw-123456789", "auth": {"type": "m.login.dummy"}})  # fmt: skip
        assert status == 200, reg
        user = urllib.parse.quote(f"@bob:{hs.server_name}", safe="")
        status, body = _client("GET", synapse["client"] + f"/_matrix/client/v3/profile/{user}",
                               token=reg["access_token"])  # fmt: skip
        assert status == 200, body
        assert body.get("displayname") == "Bob on Bastion"
        # Synapse also answered /version to us.
        status, body = run(
            ours,
            hs.federation.client.request("GET", synapse["name"], "/_matrix/federation/v1/version"),
        )
        assert status == 200 and body["server"]["name"] == "Synapse"
    finally:
        ours.stop()
