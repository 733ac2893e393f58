"""End-to-end encryption with matrix-js-sdk and its Rust crypto (the stack Element Web uses)
through Bastion, driven as a Node.js program (tests/js/e2ee.mjs), and a mixed room where a
js-sdk client and a matrix-nio client talk.

- ``test_js_sdk_pair``: two js-sdk clients register, one creates a room with
  ``m.room.encryption`` in ``initial_state`` (room versions 12, 11 and 10) and invites the other,
  who joins; each sends an encrypted message and each decrypts the other's. The database holds
  neither plaintext.
- ``test_js_sdk_and_nio_in_one_room``: a nio user creates an encrypted room (the server's default
  room version) and invites a js-sdk user; the js-sdk client logs in as a new device, joins and
  sends; nio decrypts it and answers; the js-sdk client decrypts the answer.

The Node dependencies are pinned in tests/js/package-lock.json and installed with ``npm ci`` when
tests/js/node_modules is missing. Without Node.js >= 20 and npm on PATH the tests fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time

import pytest

nio = pytest.importorskip("nio")

from tests.support.harness import Client  # noqa: E402
from tests.support.js_sdk import JS_DIR, node  # noqa: E402
from tests.support.nio_clients import (  # noqa: E402
    ENCRYPTION,
    PASSWORD,
    new_client,
    raw_database_bytes,
    send,
    sync,
    upload_keys,
)

__all__ = ["node"]  # the fixture, imported for pytest

SCRIPT = JS_DIR / "e2ee.mjs"
NODE_TIMEOUT = 90


def _result(stdout: str) -> dict:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert lines and "result" in lines[-1], stdout
    return lines[-1]["result"]


def _assert_decrypted(seen: dict, sender: str, body: str) -> None:
    assert seen["sender"] == sender
    assert seen["body"] == body
    assert seen["type"] == "m.room.message"
    assert seen["wire_type"] == "m.room.encrypted"  # it came over the wire encrypted
    assert seen["algorithm"] == "m.megolm.v1.aes-sha2"
    assert seen["decryption_failure"] is False


#: The only error answers the SDK meets, all of which it handles: the registration probe (401 with
#: the UIA session), no key backup yet, no MatrixRTC transports (CLIENT-NOTES).
TOLERATED = {
    ("POST", "/_matrix/client/v3/register", 401),
    ("GET", "/_matrix/client/v3/room_keys/version", 404),
    ("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", 404),
}


def _check_requests(requests: list, devices: int) -> None:
    """What the SDK asked, from its own fetch: no error but the tolerated ones; the calls its sync
    and crypto depend on all succeeded; a fallback key was uploaded; one-time keys were not
    re-uploaded after every sync (``device_one_time_keys_count`` is in every sync)."""
    failed = [(m, p, s) for m, p, s, _ in requests if s >= 400 and (m, p, s) not in TOLERATED]
    assert not failed, failed

    def ok(method: str, fragment: str) -> list:
        return [r for r in requests if r[0] == method and fragment in r[1] and r[2] == 200]

    assert ok("GET", "/v3/pushrules/") and ok("POST", "/filter") and ok("GET", "/members")
    assert ok("POST", "/keys/query") and ok("POST", "/keys/claim")
    assert ok("PUT", "/sendToDevice/m.room.encrypted/")
    assert ok("PUT", "/send/m.room.encrypted/")
    uploads = ok("POST", "/keys/upload")
    assert sum(1 for r in uploads if r[3]) == devices  # each device's fallback key
    syncs = ok("GET", "/v3/sync")
    assert len(syncs) >= 2 * devices and len(uploads) <= 2 * devices, (len(syncs), uploads)


@pytest.mark.parametrize("room_version", ["12", "11", "10"])
def test_js_sdk_pair(server, node, room_version):
    tag = secrets.token_hex(6)
    hello, reply = f"js-hello-{tag}", f"js-reply-{tag}"
    t0 = time.monotonic()
    r = subprocess.run(
        [node, str(SCRIPT), "pair", server.base_url, room_version, hello, reply],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        cwd=JS_DIR,
    )
    result = _result(r.stdout)
    assert result["ok"], result.get("error", "") + "\n" + r.stderr[-4000:]
    assert r.returncode == 0
    assert result["room_version"] == room_version
    _assert_decrypted(result["bob_saw"], result["alice"], hello)
    _assert_decrypted(result["alice_saw"], result["bob"], reply)
    for who in ("alice_messages", "bob_messages"):
        assert not any(m["decryption_failure"] for m in result[who]), result[who]
    _check_requests(result["requests"], devices=2)
    raw = raw_database_bytes(server.config.database_path)
    assert hello.encode() not in raw and reply.encode() not in raw
    assert result["room_id"].encode() in raw  # the scan does see the room's rows
    assert time.monotonic() - t0 < NODE_TIMEOUT


async def _mixed(base_url: str, node: str, tmp_path) -> tuple[dict, list, list, str]:
    tag = secrets.token_hex(6)
    from_js, from_nio = f"from-js-{tag}", f"from-nio-{tag}"
    js_account = Client(base_url).register(f"js{tag}", PASSWORD)
    nina = new_client(base_url, "nina", tmp_path / "nina")
    proc = None
    try:
        assert isinstance(await nina.register(f"nina{tag}", PASSWORD), nio.RegisterResponse)
        await upload_keys(nina)
        r = await nina.room_create(invite=[js_account.user_id], initial_state=[ENCRYPTION])
        assert isinstance(r, nio.RoomCreateResponse), r
        room_id = r.room_id
        await sync(nina)
        proc = await asyncio.create_subprocess_exec(
            node, str(SCRIPT), "join", base_url, js_account.user_id, PASSWORD, room_id,
            from_js, from_nio,
            cwd=JS_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out_task = asyncio.ensure_future(proc.stdout.read())
        err_task = asyncio.ensure_future(proc.stderr.read())
        deadline = time.monotonic() + 60
        # nio syncs until it has decrypted the js-sdk client's message, then answers.
        while (js_account.user_id, from_js) not in nina.messages:
            assert proc.returncode is None, "the js-sdk client stopped early"
            assert time.monotonic() < deadline, "nio never decrypted the js-sdk message"
            await sync(nina)
        await send(nina, room_id, from_nio)
        try:
            await asyncio.wait_for(proc.wait(), NODE_TIMEOUT)
        finally:
            stdout, stderr = (await out_task).decode(), (await err_task).decode()
        messages, undecrypted = list(nina.messages), list(nina.undecrypted)
        return (
            {"result": _result(stdout), "stderr": stderr, "from_js": from_js, "from_nio": from_nio,
             "js_user": js_account.user_id, "nio_user": nina.user_id, "room_id": room_id},
            messages, undecrypted, room_id,
        )  # fmt: skip
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nina.close()


def test_js_sdk_and_nio_in_one_room(server, node, tmp_path):
    t0 = time.monotonic()
    out, nio_messages, nio_undecrypted, room_id = asyncio.run(
        _mixed(server.base_url, node, tmp_path)
    )
    result = out["result"]
    assert result["ok"], result.get("error", "") + "\n" + out["stderr"][-4000:]
    # The js-sdk client decrypted nio's answer, nio decrypted the js-sdk message.
    _assert_decrypted(result["saw"], out["nio_user"], out["from_nio"])
    assert (out["js_user"], out["from_js"]) in nio_messages
    assert nio_undecrypted == []
    _check_requests(result["requests"], devices=1)
    # The room has the server's default version, the one both clients are shown to handle.
    raw = Client(server.base_url)
    r = raw.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": out["js_user"]},
        "password": PASSWORD,
    }, token=None)  # fmt: skip
    assert r.status == 200, r.body
    raw.access_token = r.body["access_token"]
    state = raw.request("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.create/")
    assert state.status == 200, state.body
    assert state.body["room_version"] == server.config.default_room_version == "12"
    db = raw_database_bytes(server.config.database_path)
    assert out["from_js"].encode() not in db and out["from_nio"].encode() not in db
    assert time.monotonic() - t0 < NODE_TIMEOUT
    assert os.path.exists(JS_DIR / "package-lock.json")
