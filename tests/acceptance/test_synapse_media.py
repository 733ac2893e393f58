"""Federated media with a real Synapse (setup per SYNAPSE-PEER.md): an image uploaded by a
Synapse user is downloaded and thumbnailed by a Bastion user through Bastion's authenticated
client endpoints (fetched from Synapse with the S-S API "Content Repository" endpoints), and an
image uploaded by a Bastion user is downloaded and thumbnailed by a Synapse user (Synapse
fetching it from Bastion's federation endpoints)."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from PIL import Image

from tests.acceptance.test_synapse_peer import _client, synapse_process
from tests.support.federation import start_fed_server
from tests.support.harness import Client

pytest.importorskip("synapse")

MEDIA = "/_matrix/client/v1/media"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), colour).save(buf, format="PNG")
    return buf.getvalue()


def _raw(method: str, url: str, token: str, data: bytes | None = None,
         ctype: str | None = None) -> tuple[int, dict, bytes]:  # fmt: skip
    req = urllib.request.Request(url, method=method, data=data)
    req.add_header("Authorization", f"Bearer {token}")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def env(tmp_path_factory, test_ca):
    tmp = tmp_path_factory.mktemp("synapse-media")
    ours = start_fed_server(tmp, test_ca, "bastion-media", registration="open")
    try:
        with synapse_process(tmp / "synapse", test_ca, label="synapse-media",
                             client_resources=("client", "media")) as syn:  # fmt: skip
            yield ours, syn
    finally:
        ours.stop()


def test_synapse_image_shown_to_a_bastion_user(env):
    ours, syn = env
    status, reg = _client("POST", syn["client"] + "/_matrix/client/v3/register",
                          {"username": "sam", "password": "pw-123456789",
                           "auth": {"type": "m.login.dummy"}})  # fmt: skip
    assert status == 200, reg
    data = _png((10, 120, 200))
    status, _h, body = _raw("POST", syn["client"] + "/_matrix/media/v3/upload?filename=s.png",
                            reg["access_token"], data, "image/png")  # fmt: skip
    assert status == 200, body
    server, media_id = json.loads(body)["content_uri"][len("mxc://") :].split("/")
    bea = Client(ours.base_url).register()
    r = bea.request("GET", f"{MEDIA}/download/{q(server)}/{media_id}")
    assert r.status == 200, r.body
    assert r.body["_raw"] == data and r.headers["Content-Type"] == "image/png"
    r = bea.request("GET", f"{MEDIA}/thumbnail/{q(server)}/{media_id}",
                    query={"width": "64", "height": "64", "method": "crop"})  # fmt: skip
    assert r.status == 200, r.body
    assert Image.open(io.BytesIO(r.body["_raw"])).size == (96, 96)
    row = ours.hs.store.get_remote_media(server, media_id)
    assert row is not None and row["size"] == len(data)


def test_bastion_image_shown_to_a_synapse_user(env):
    ours, syn = env
    status, reg = _client("POST", syn["client"] + "/_matrix/client/v3/register",
                          {"username": "tom", "password": "pw-123456789",
                           "auth": {"type": "m.login.dummy"}})  # fmt: skip
    assert status == 200, reg
    token = reg["access_token"]
    amy = Client(ours.base_url).register()
    data = _png((220, 40, 40))
    r = amy.request("POST", "/_matrix/media/v3/upload", raw=data, query={"filename": "a.png"},
                    headers={"Content-Type": "image/png"})  # fmt: skip
    assert r.status == 200, r.body
    server, media_id = r.body["content_uri"][len("mxc://") :].split("/")
    status, headers, body = _raw("GET", f"{syn['client']}{MEDIA}/download/{q(server)}/{media_id}",
                                 token)  # fmt: skip
    assert status == 200, body[:300]
    assert body == data and headers["Content-Type"] == "image/png"
    url = f"{syn['client']}{MEDIA}/thumbnail/{q(server)}/{media_id}?width=32&height=32&method=scale"
    status, _h, body = _raw("GET", url, token)
    assert status == 200, body[:300]
    assert max(Image.open(io.BytesIO(body)).size) < 400
