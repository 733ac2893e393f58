"""Refresh-token rotation through matrix-js-sdk (tests/js/refresh.mjs): a login with
``refresh_token: true``, the access token expiring as a soft logout, ``MatrixClient.refreshToken``
(POST /v3/refresh) rotating both tokens, the client going on with the new one, and the old
tokens refused (C-S API "Refreshing access tokens")."""

from __future__ import annotations

import pytest

from tests.support.harness import ServerThread
from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest

LIFETIME_MS = 4000  # long enough for the steps after a refresh on a loaded machine


@pytest.fixture
def short_lived(tmp_path):
    srv = ServerThread(tmp_path / "data", access_token_lifetime_ms=LIFETIME_MS).start()
    yield srv
    srv.stop()


def test_refresh_token_rotation(short_lived, node):
    result = run_script(node, "refresh.mjs", "rotation", short_lived.base_url, str(LIFETIME_MS))
    assert result["expires_in_ms"] == LIFETIME_MS and result["has_refresh_token"]
    assert result["before"] == {"ok": True}
    soft = {"ok": False, "status": 401, "errcode": "M_UNKNOWN_TOKEN", "soft_logout": True}
    assert result["expired"] == soft
    assert result["logged_out"] == [{"errcode": "M_UNKNOWN_TOKEN", "soft_logout": True}]
    assert result["rotated"] and result["refreshed_expires_in_ms"] == LIFETIME_MS
    assert result["whoami"] == {"user_id": result["user_id"], "device_id": result["device_id"]}
    assert result["synced"]
    assert result["old_access"] == {
        "ok": False, "status": 401, "errcode": "M_UNKNOWN_TOKEN", "soft_logout": False
    }  # fmt: skip
    assert result["old_refresh"] == soft
    assert result["after_second"] == {"ok": True}
    assert result["first_again"] == soft
