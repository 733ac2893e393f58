"""What Element Web asks at start-up and for its first screens: /versions, the registration
flows from an empty /register, /thirdparty/protocols, /voip/turnServer, the media config, and
invites named after the inviter (the inviter's member event in ``invite_state``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from tests.support.accounts import assert_error
from tests.support.harness import Client, ServerThread

V3 = "/_matrix/client/v3"


def test_versions_lists_every_version_from_v1_1(client):
    r = client.request("GET", "/_matrix/client/versions", token=None)
    assert r.status == 200
    versions = r.body["versions"]
    # matrix-js-sdk compares exact strings: the old ones it knows and the feature switches.
    assert versions == [f"v1.{n}" for n in range(1, 13)]
    assert {"v1.1", "v1.4", "v1.11"} <= set(versions)
    assert not any(v.startswith("r0") for v in versions)  # no /r0 paths are served


def test_register_with_empty_body_answers_the_flows(client):
    r = client.request("POST", f"{V3}/register", {}, token=None)
    assert r.status == 401, r.body
    assert r.body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert r.body["params"] == {}
    assert isinstance(r.body["session"], str) and r.body["session"]
    assert "errcode" not in r.body
    # The session carries on: the same session with credentials and the dummy stage registers.
    r = client.request("POST", f"{V3}/register", {
        "username": "elle", "password": "correct horse battery",
        "auth": {"type": "m.login.dummy", "session": r.body["session"]},
    }, token=None)  # fmt: skip
    assert r.status == 200 and r.body["user_id"] == "@elle:localhost"


def test_register_with_empty_body_on_a_token_server(tmp_path):
    srv = ServerThread(tmp_path / "tok", registration="token").start()
    try:
        r = Client(srv.base_url).request("POST", f"{V3}/register", {}, token=None)
        assert r.status == 401
        assert r.body["flows"] == [{"stages": ["m.login.registration_token", "m.login.dummy"]}]
        assert r.body["session"]
    finally:
        srv.stop()


def test_register_checks_the_username_before_the_flows(client):
    client.register("taken")
    r = client.request("POST", f"{V3}/register", {"username": "taken"}, token=None)
    assert_error(r, 400, "M_USER_IN_USE")
    # With an auth dict but no password the password is still required.
    r = client.request("POST", f"{V3}/register", {"auth": {"type": "m.login.dummy"}}, token=None)
    assert_error(r, 400, "M_MISSING_PARAM")


def test_thirdparty_protocols_is_empty(client):
    alice = client.register()
    r = alice.request("GET", f"{V3}/thirdparty/protocols")
    assert r.status == 200 and r.body == {}
    assert_error(alice.request("GET", f"{V3}/thirdparty/protocol/irc"), 404, "M_NOT_FOUND")
    assert_error(client.request("GET", f"{V3}/thirdparty/protocols"), 401, "M_MISSING_TOKEN")


def test_turn_server_without_configuration_is_empty(client):
    alice = client.register()
    r = alice.request("GET", f"{V3}/voip/turnServer")
    assert r.status == 200 and r.body == {}
    assert_error(client.request("GET", f"{V3}/voip/turnServer"), 401, "M_MISSING_TOKEN")


def test_turn_server_credentials(tmp_path):
    uris = ("turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349")
    srv = ServerThread(
        tmp_path / "turn", turn_uris=uris, turn_shared_secret="s3cret", turn_user_lifetime=600
    ).start()
    try:
        alice = Client(srv.base_url).register()
        before = int(time.time())
        r = alice.request("GET", f"{V3}/voip/turnServer")
        assert r.status == 200
        body = r.body
        assert body["uris"] == list(uris) and body["ttl"] == 600
        expiry, _, user_id = body["username"].partition(":")
        assert user_id == alice.user_id
        assert before + 600 <= int(expiry) <= int(time.time()) + 600
        mac = hmac.new(b"s3cret", body["username"].encode(), hashlib.sha1).digest()
        assert body["password"] == base64.b64encode(mac).decode()
    finally:
        srv.stop()


@pytest.mark.parametrize("bad", [{"turn_uris": ("http://x",)}, {"turn_user_lifetime": 0}])
def test_turn_configuration_is_validated(tmp_path, bad):
    from bastion.config import Config, ConfigError

    with pytest.raises(ConfigError):
        Config(data_dir=tmp_path, **bad).validate()


def test_media_config_on_both_paths(client, server):
    alice = client.register()
    size = server.config.max_upload_size
    for path in ("/_matrix/client/v1/media/config", "/_matrix/media/v3/config"):
        r = alice.request("GET", path)
        assert r.status == 200 and r.body == {"m.upload.size": size}, path
        assert_error(client.request("GET", path), 401, "M_MISSING_TOKEN")


def test_invite_state_carries_the_inviters_member_event(client):
    alice, bob = client.register("alice"), client.register("bob")
    name = {"displayname": "Alice Liddell"}
    assert alice.request("PUT", f"{V3}/profile/{alice.user_id}/displayname", name).status == 200
    r = alice.request("POST", f"{V3}/createRoom", {
        "preset": "trusted_private_chat", "is_direct": True, "invite": [bob.user_id],
    })  # fmt: skip
    assert r.status == 200, r.body
    room_id = r.body["room_id"]
    body = bob.request("GET", f"{V3}/sync", query={"timeout": "0"}).body
    events = body["rooms"]["invite"][room_id]["invite_state"]["events"]
    members = {e["state_key"]: e for e in events if e["type"] == "m.room.member"}
    assert members[bob.user_id]["content"]["membership"] == "invite"
    assert members[bob.user_id]["content"].get("is_direct") is True
    inviter = members[alice.user_id]
    assert inviter["sender"] == alice.user_id
    assert inviter["content"]["membership"] == "join"
    assert inviter["content"]["displayname"] == "Alice Liddell"
    assert all(set(e) == {"type", "state_key", "sender", "content"} for e in events)
