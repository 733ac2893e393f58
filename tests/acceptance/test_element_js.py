"""Element Web's start-up through matrix-js-sdk (tests/js/element.mjs), the library Element is
built on: the homeserver check behind "Your Element is misconfigured … homeserver is too old",
the version switches, the registration flows from ``registerRequest({})``, the calls made once
logged in, and a direct-message invite named after the inviter from ``invite_state``."""

from __future__ import annotations

import pytest

from tests.support.harness import ServerThread
from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest

TURN_URIS = ("turn:turn.example.com:3478?transport=udp",)


@pytest.fixture
def turn_server(tmp_path):
    srv = ServerThread(
        tmp_path / "data", turn_uris=TURN_URIS, turn_shared_secret="s3cret", turn_user_lifetime=900
    ).start()
    yield srv
    srv.stop()


def test_element_startup(turn_server, node):
    result = run_script(node, "element.mjs", "startup", turn_server.base_url)
    # Element's homeserver check passes (it failed with "homeserver is too old").
    assert result["discovery_state"] == "SUCCESS", result["discovery_error"]
    assert set(result["versions"]) & set(result["sdk_supported_versions"])
    # Element 1.12.7 bundles an SDK that knows at most v1.9: one of v1.1…v1.9 must be listed.
    assert {f"v1.{n}" for n in range(1, 10)} <= set(result["versions"])
    assert result["switches"] == {"v1.1": True, "v1.4": True, "v1.11": True, "v1.13": False}
    assert result["threads"]["threads"] == 2  # FeatureSupport.Stable
    # registerRequest({}) gets the flows and a session, and that session registers.
    flows = result["flows"]
    assert flows["flows"] == [{"stages": ["m.login.dummy"]}] and flows["session"]
    assert result["user_id"].endswith(":localhost")
    size = turn_server.config.max_upload_size
    assert result["media_config"] == {"m.upload.size": size}
    assert result["legacy_media_config"] == {"m.upload.size": size}
    assert result["protocols"] == {}
    turn = result["turn"]
    assert turn["uris"] == list(TURN_URIS) and turn["ttl"] == 900
    assert turn["username"].endswith(":" + result["user_id"]) and turn["password"]


def test_element_names_a_dm_invite_after_the_inviter(server, node):
    result = run_script(node, "element.mjs", "invite", server.base_url)
    assert result["name"] == "Alice Liddell", result
    assert result["inviter_name"] == "Alice Liddell"
    assert result["dm_inviter"] == result["alice"]


def test_element_finds_people_in_the_user_directory_and_starts_a_dm(server, node):
    result = run_script(node, "element.mjs", "directory", server.base_url)
    assert result["search"] == {
        "limited": False,
        "results": [{"user_id": result["alice"], "display_name": "Alice Liddell"}],
    }
    assert result["hidden"] == {"limited": False, "results": []}  # only in a private room
    assert result["dm_inviter"] == result["bob"]
    assert result["joined"] == sorted([result["alice"], result["bob"]])
