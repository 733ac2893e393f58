"""Generate ``tests/storage/sqlite/fixtures/cbbfc30/``: a homeserver database as commit cbbfc30
(the last schema before numbered migrations) writes it, for ``test_migrations.py``.

It runs only against the code of cbbfc30 (later code writes a versioned schema, and the script
refuses it), from a copy of that commit with this script added::

    mkdir /tmp/c && git archive cbbfc30 | tar -x -C /tmp/c
    mkdir -p /tmp/c/tests/storage/sqlite && cp tests/storage/__init__.py /tmp/c/tests/storage/
    cp tests/storage/sqlite/__init__.py THIS_FILE /tmp/c/tests/storage/sqlite/
    cd /tmp/c && PYTHONPATH=src:. python -m tests.storage.sqlite.make_cbbfc30_fixture OUT

It starts that server (``tests.server.harness``, where cbbfc30 keeps it), creates through the
Client-Server API (and, for what only the command line offers at cbbfc30, the admin account and a
registration token, through ``bastion admin``) every kind of fact the store keeps, stops it, and writes:

- ``homeserver.sql``: the database as SQL text (``sqlite3`` ``iterdump``);
- ``signing.key``: the server's signing key;
- ``media.json``: every file under the media directory, path -> base64;
- ``manifest.json``: every ID and value the migration test must find again.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path

import nacl.signing
import vodozemac
from PIL import Image

from bastion.cli import main as cli
from bastion.core.base64 import encode_base64
from bastion.core.canonical_json import canonical_json
from tests.server.harness import Client, ServerThread

V3 = "/_matrix/client/v3"
ADMIN_PW = "admin password 1"
BOB_PW = "bob password 22"
TOKEN = "fixture-token-cbbfc30"
BACKUP_ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


def ok(r, what: str) -> dict:
    assert r.status == 200, (what, r.status, r.body)
    return r.body


def login(base: str, user: str, password: str, device_id: str) -> Client:
    r = Client(base).request(
        "POST", f"{V3}/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
         "password": password, "device_id": device_id,
         "initial_device_display_name": f"{device_id} display"},
        token=None,
    )  # fmt: skip
    body = ok(r, "login")
    c = Client(base, body["access_token"])
    c.user_id, c.device_id = body["user_id"], body["device_id"]
    return c


def register_with_token(base: str, username: str, password: str, device_id: str) -> Client:
    """The UIA registration-token flow: token stage, then dummy (C-S API "Token-authenticated
    registration")."""
    c = Client(base)
    body = {"username": username, "password": password, "device_id": device_id,
            "initial_device_display_name": f"{device_id} display"}  # fmt: skip
    r = c.request("POST", f"{V3}/register", {**body, "auth": {}}, token=None)
    assert r.status == 401, r.body
    session = r.body["session"]
    auth = {"type": "m.login.registration_token", "token": TOKEN, "session": session}
    r = c.request("POST", f"{V3}/register", {**body, "auth": auth}, token=None)
    assert r.status == 401 and r.body["completed"] == ["m.login.registration_token"], r.body
    auth = {"type": "m.login.dummy", "session": session}
    out = ok(c.request("POST", f"{V3}/register", {**body, "auth": auth}, token=None), "register")
    reg = Client(base, out["access_token"])
    reg.user_id, reg.device_id = out["user_id"], out["device_id"]
    return reg


def signable(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


class OlmDevice:
    def __init__(self, client: Client) -> None:
        self.c = client
        self.account = vodozemac.Account()

    def sign(self, obj: dict) -> dict:
        sig = self.account.sign(canonical_json(signable(obj))).to_base64()
        out = dict(obj)
        out["signatures"] = {self.c.user_id: {f"ed25519:{self.c.device_id}": sig}}
        return out

    def device_keys(self) -> dict:
        d = self.c.device_id
        return self.sign({
            "user_id": self.c.user_id, "device_id": d,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{d}": self.account.curve25519_key.to_base64(),
                     f"ed25519:{d}": self.account.ed25519_key.to_base64()},
        })  # fmt: skip

    def one_time_keys(self, n: int) -> dict:
        self.account.generate_one_time_keys(n)
        keys = {
            f"signed_curve25519:{kid}": self.sign({"key": k.to_base64()})
            for kid, k in self.account.one_time_keys.items()
        }
        self.account.mark_keys_as_published()
        return keys

    def fallback_keys(self) -> dict:
        self.account.generate_fallback_key()
        keys = {
            f"signed_curve25519:{kid}": self.sign({"key": k.to_base64(), "fallback": True})
            for kid, k in self.account.fallback_key.items()
        }
        self.account.mark_keys_as_published()
        return keys


class CrossSigningKey:
    def __init__(self, user_id: str, usage: str) -> None:
        self.user_id, self.usage = user_id, usage
        self.key = nacl.signing.SigningKey.generate()
        self.pub = encode_base64(bytes(self.key.verify_key))
        self.key_id = f"ed25519:{self.pub}"

    def sign(self, obj: dict) -> dict:
        sig = encode_base64(self.key.sign(canonical_json(signable(obj))).signature)
        out = dict(obj)
        sigs = {u: dict(v) for u, v in obj.get("signatures", {}).items()}
        sigs.setdefault(self.user_id, {})[self.key_id] = sig
        out["signatures"] = sigs
        return out

    def public(self) -> dict:
        return {"user_id": self.user_id, "usage": [self.usage], "keys": {self.key_id: self.pub}}


def png_bytes() -> bytes:
    img = Image.new("RGB", (64, 48))
    for x in range(64):
        for y in range(48):
            img.putpixel((x, y), (x * 4, y * 5, (x + y) * 2))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def send(c: Client, room_id: str, body: str) -> str:
    r = c.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
                  {"msgtype": "m.text", "body": body})  # fmt: skip
    return ok(r, "send")["event_id"]


def build(data: Path) -> dict:
    """Fill a fresh server in ``data``; returns the manifest."""
    data.mkdir(parents=True)
    (data / "bastion.toml").write_text(
        'server_name = "localhost"\nargon2_time_cost = 1\nargon2_memory_cost = 8192\n'
    )
    # What only the command line offers at cbbfc30: an admin account and a registration token.
    assert cli(["admin", "create-user", "ada", "--admin", "--password", ADMIN_PW,
                "--data-dir", str(data)]) == 0  # fmt: skip
    assert cli(["admin", "registration-token", "create", "--token", TOKEN, "--uses", "5",
                "--data-dir", str(data)]) == 0  # fmt: skip
    m: dict = {"server_name": "localhost"}
    srv = ServerThread(data, registration="token").start()
    try:
        base = srv.base_url
        ada = login(base, "ada", ADMIN_PW, "ADADESK")
        bob = register_with_token(base, "bob", BOB_PW, "BOBPHONE")
        bob_laptop = login(base, "bob", BOB_PW, "BOBLAPTOP")
        m["users"] = {
            "ada": {"user_id": ada.user_id, "password": ADMIN_PW, "admin": True,
                    "devices": {"ADADESK": ada.access_token}},
            "bob": {"user_id": bob.user_id, "password": BOB_PW, "admin": False,
                    "devices": {"BOBPHONE": bob.access_token,
                                "BOBLAPTOP": bob_laptop.access_token}},
        }  # fmt: skip
        m["registration_token"] = {"token": TOKEN, "uses_allowed": 5, "completed": 1}

        # Media: a small PNG and one thumbnail of it.
        png = png_bytes()
        r = ada.request("POST", "/_matrix/media/v3/upload", raw=png,
                        headers={"Content-Type": "image/png"}, query={"filename": "pixel.png"})  # fmt: skip
        mxc = ok(r, "upload")["content_uri"]
        media_id = mxc.rsplit("/", 1)[1]
        r = ada.request("GET", f"/_matrix/client/v1/media/thumbnail/localhost/{media_id}",
                        query={"width": "32", "height": "32", "method": "crop"})  # fmt: skip
        assert r.status == 200, r.status
        m["media"] = {"mxc": mxc, "media_id": media_id, "content_type": "image/png",
                      "filename": "pixel.png", "base64": base64.b64encode(png).decode()}  # fmt: skip

        # Profile.
        ok(ada.request("PUT", f"{V3}/profile/{ada.user_id}/displayname",
                       {"displayname": "Ada Admin"}), "displayname")  # fmt: skip
        ok(ada.request("PUT", f"{V3}/profile/{ada.user_id}/avatar_url",
                       {"avatar_url": mxc}), "avatar")  # fmt: skip
        ok(bob.request("PUT", f"{V3}/profile/{bob.user_id}/displayname",
                       {"displayname": "Bob B."}), "displayname")  # fmt: skip
        ok(bob.request("PUT", f"{V3}/presence/{bob.user_id}/status",
                       {"presence": "unavailable", "status_msg": "at lunch"}), "presence")  # fmt: skip
        m["presence"] = {"user": bob.user_id, "presence": "unavailable", "status_msg": "at lunch"}
        m["profiles"] = {ada.user_id: {"displayname": "Ada Admin", "avatar_url": mxc},
                         bob.user_id: {"displayname": "Bob B."}}  # fmt: skip

        # A v12 public room in the directory, with an alias, state, messages and a redaction.
        r = ada.request("POST", f"{V3}/createRoom", {
            "preset": "public_chat", "room_version": "12", "name": "Lobby",
            "topic": "the lobby topic", "room_alias_name": "lobby", "visibility": "public",
        })  # fmt: skip
        lobby = ok(r, "createRoom v12")["room_id"]
        ok(bob.request("POST", f"{V3}/join/%23lobby:localhost", {}), "join by alias")
        custom = {"colour": "teal", "n": 3}
        ok(ada.request("PUT", f"{V3}/rooms/{lobby}/state/org.example.decor/wall", custom),
           "state")  # fmt: skip
        msgs = []
        for i, (c, text) in enumerate([(ada, "welcome"), (bob, "hello ada"), (bob, "oops"),
                                       (ada, "third"), (bob, "last words")]):  # fmt: skip
            msgs.append({"event_id": send(c, lobby, text), "sender": c.user_id, "body": text,
                         "index": i})  # fmt: skip
        redacted = msgs[2]["event_id"]
        r = ada.request("PUT", f"{V3}/rooms/{lobby}/redact/{redacted}/{uuid.uuid4().hex}",
                        {"reason": "typo"})  # fmt: skip
        redaction = ok(r, "redact")["event_id"]
        ok(bob.request("POST", f"{V3}/rooms/{lobby}/receipt/m.read/{msgs[3]['event_id']}", {}),
           "receipt")  # fmt: skip

        # A v10 private room: invite, join, leave; a second alias.
        r = ada.request("POST", f"{V3}/createRoom", {
            "preset": "private_chat", "room_version": "10", "name": "Back office",
            "topic": "v10 topic", "invite": [bob.user_id],
        })  # fmt: skip
        office = ok(r, "createRoom v10")["room_id"]
        ok(bob.request("POST", f"{V3}/join/{office}", {}), "join v10")
        office_msgs = [{"event_id": send(bob, office, "in the office"), "sender": bob.user_id,
                        "body": "in the office"},
                       {"event_id": send(ada, office, "see you"), "sender": ada.user_id,
                        "body": "see you"}]  # fmt: skip
        ok(bob.request("POST", f"{V3}/rooms/{office}/leave", {}), "leave")
        ok(ada.request("PUT", f"{V3}/directory/room/%23office:localhost", {"room_id": office}),
           "alias")  # fmt: skip
        m["rooms"] = {
            "v12": {"room_id": lobby, "version": "12", "name": "Lobby",
                    "topic": "the lobby topic", "alias": "#lobby:localhost", "public": True,
                    "custom_state": {"type": "org.example.decor", "state_key": "wall",
                                     "content": custom},
                    "messages": msgs, "redacted": redacted, "redaction": redaction,
                    "members": {ada.user_id: "join", bob.user_id: "join"},
                    "receipt": {"user": bob.user_id, "event_id": msgs[3]["event_id"]}},
            "v10": {"room_id": office, "version": "10", "name": "Back office",
                    "topic": "v10 topic", "alias": "#office:localhost", "public": False,
                    "messages": office_msgs,
                    "members": {ada.user_id: "join", bob.user_id: "leave"}},
        }  # fmt: skip

        # Account data (global and per room), a push rule change, a filter.
        glob = {"theme": "dark", "lines": [1, 2]}
        per_room = {"pinned": True}
        ok(ada.request("PUT", f"{V3}/user/{ada.user_id}/account_data/org.example.settings", glob),
           "account data")  # fmt: skip
        ok(ada.request("PUT",
                       f"{V3}/user/{ada.user_id}/rooms/{lobby}/account_data/org.example.pin",
                       per_room), "room account data")  # fmt: skip
        rule = {"actions": ["dont_notify"],
                "conditions": [{"kind": "event_match", "key": "content.body",
                                "pattern": "spam*"}]}  # fmt: skip
        ok(ada.request("PUT", f"{V3}/pushrules/global/override/org.example.nospam", rule),
           "push rule")  # fmt: skip
        ok(ada.request("PUT", f"{V3}/pushrules/global/override/.m.rule.suppress_notices/enabled",
                       {"enabled": False}), "push rule enabled")  # fmt: skip
        flt = {"room": {"timeline": {"limit": 7}}, "presence": {"not_types": ["*"]}}
        filter_id = ok(bob.request("POST", f"{V3}/user/{bob.user_id}/filter", flt),
                       "filter")["filter_id"]  # fmt: skip
        m["account_data"] = {
            "user": ada.user_id,
            "global": {"type": "org.example.settings", "content": glob},
            "room": {"room_id": lobby, "type": "org.example.pin", "content": per_room},
        }
        m["push_rules"] = {"user": ada.user_id, "rule_id": "org.example.nospam", "rule": rule,
                           "disabled": ".m.rule.suppress_notices"}  # fmt: skip
        m["filter"] = {"user": bob.user_id, "filter_id": filter_id, "filter": flt}

        # E2EE: device keys, one-time keys, a fallback key, cross-signing, a signature.
        laptop = OlmDevice(bob_laptop)
        dk = laptop.device_keys()
        otks = laptop.one_time_keys(3)
        fbk = laptop.fallback_keys()
        ok(bob_laptop.request("POST", f"{V3}/keys/upload",
                              {"device_keys": dk, "one_time_keys": otks, "fallback_keys": fbk}),
           "keys upload")  # fmt: skip
        desk = OlmDevice(ada)
        ada_dk = desk.device_keys()
        ok(ada.request("POST", f"{V3}/keys/upload", {"device_keys": ada_dk}), "keys upload")
        msk = CrossSigningKey(ada.user_id, "master")
        ssk = CrossSigningKey(ada.user_id, "self_signing")
        usk = CrossSigningKey(ada.user_id, "user_signing")
        cs = {"master_key": msk.public(), "self_signing_key": msk.sign(ssk.public()),
              "user_signing_key": msk.sign(usk.public())}  # fmt: skip
        ok(ada.request("POST", f"{V3}/keys/device_signing/upload", cs), "cross-signing")
        signed_dk = ssk.sign(ada_dk)
        r = ada.request("POST", f"{V3}/keys/signatures/upload",
                        {ada.user_id: {"ADADESK": signed_dk}})  # fmt: skip
        assert ok(r, "signatures")["failures"] == {}, r.body
        m["keys"] = {
            "bob_device": {"user_id": bob.user_id, "device_id": "BOBLAPTOP",
                           "device_keys": dk, "one_time_keys": otks, "fallback_keys": fbk},
            "ada_device": {"user_id": ada.user_id, "device_id": "ADADESK",
                           "device_keys": ada_dk,
                           "ssk_signature": {ssk.key_id: signed_dk["signatures"][ada.user_id][
                               ssk.key_id]}},
            "ada_cross_signing": cs,
        }  # fmt: skip

        # A key backup version with one session.
        dec = vodozemac.PkDecryption()
        enc = vodozemac.PkEncryption.from_key(dec.public_key)
        auth_data = {"public_key": dec.public_key.to_base64()}
        version = ok(ada.request("POST", f"{V3}/room_keys/version",
                                 {"algorithm": BACKUP_ALG, "auth_data": auth_data}),
                     "backup version")["version"]  # fmt: skip
        eph, mac, ct = enc.encrypt(json.dumps({"session_key": "fixture"}).encode()).to_base64()
        session = {"first_message_index": 2, "forwarded_count": 1, "is_verified": True,
                   "session_data": {"ephemeral": eph, "ciphertext": ct, "mac": mac}}  # fmt: skip
        session_id = "fixtureSessionId0123"
        ok(ada.request("PUT", f"{V3}/room_keys/keys/{lobby}/{session_id}", session,
                       query={"version": version}), "backup key")  # fmt: skip
        m["backup"] = {"user": ada.user_id, "version": version, "algorithm": BACKUP_ALG,
                       "auth_data": auth_data, "room_id": lobby, "session_id": session_id,
                       "session": session}  # fmt: skip

        # A to-device message waiting for a device that has not synced since.
        td = {"n": 1, "note": "pending since cbbfc30"}
        ok(ada.request("PUT", f"{V3}/sendToDevice/org.example.ping/{uuid.uuid4().hex}",
                       {"messages": {bob.user_id: {"BOBLAPTOP": td}}}), "to-device")  # fmt: skip
        m["to_device"] = {"sender": ada.user_id, "type": "org.example.ping", "content": td,
                          "user": bob.user_id, "device_id": "BOBLAPTOP"}  # fmt: skip
    finally:
        srv.stop()
    return m


def dump(data: Path, out: Path, manifest: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(data / "homeserver.db"))
    try:
        sql = "\n".join(conn.iterdump()) + "\n"
    finally:
        conn.close()
    # Later code writes a versioned schema: this script only means something at cbbfc30.
    assert "schema_version" not in sql, "run this from a checkout of commit cbbfc30"
    (out / "homeserver.sql").write_text(sql, encoding="utf-8")
    shutil.copyfile(data / "signing.key", out / "signing.key")
    media_root = data / "media"
    files = {
        p.relative_to(media_root).as_posix(): base64.b64encode(p.read_bytes()).decode()
        for p in sorted(media_root.rglob("*"))
        if p.is_file() and "tmp" not in p.relative_to(media_root).parts
    }
    (out / "media.json").write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).parent / "fixtures" / "cbbfc30"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        manifest = build(data)
        dump(data, out, manifest)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
