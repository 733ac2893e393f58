"""A user with something of every kind, beside a second user whose data must stay out of the
first user's export; and reading an export archive back."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from dataclasses import dataclass, field

import vodozemac

from tests.api.client.test_room_keys import ALG, Backup
from tests.support.accounts import PASSWORD, login, password_auth
from tests.support.harness import Client, Response
from tests.support.rooms import V3, create_room, join, send

EXPORT = "/_bastion/client/v1/export"
HOSTILE_NAME = '<script>alert("name")</script>'
HOSTILE_BODY = "alice <img src=x onerror=alert(1)> & </td></table>"


@dataclass
class World:
    alice: Client
    alice2: Client  # alice's second device
    bob: Client
    plain_room: str
    e2e_room: str
    alice_media: dict[str, bytes] = field(default_factory=dict)  # media ID -> bytes
    bob_media: dict[str, bytes] = field(default_factory=dict)
    backup_version: str = ""
    bob_before: str = ""  # the text of bob's message from before alice joined
    bob_after: str = ""


def _upload(c: Client, data: bytes, name: str) -> str:
    r = c.request(
        "POST", "/_matrix/media/v3/upload", raw=data,
        headers={"Content-Type": "application/octet-stream"}, query={"filename": name},
    )  # fmt: skip
    assert r.status == 200, r.body
    return r.body["content_uri"].rsplit("/", 1)[1]


def build_world(client: Client) -> World:
    alice = client.register("alice")
    alice2 = login(client, alice.user_id)
    bob = client.register("bob")
    r = alice.request(
        "PUT", f"{V3}/profile/{alice.user_id}/displayname", {"displayname": HOSTILE_NAME}
    )
    assert r.status == 200, r.body
    # An unencrypted room of bob's, history visible to members from their join only.
    plain = create_room(
        bob,
        initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                        "content": {"history_visibility": "joined"}}],
    )  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    w = World(alice, alice2, bob, plain, "", bob_before=f"bob-before-join-{tag}",
              bob_after=f"bob-after-join-{tag}")  # fmt: skip
    send(bob, plain, w.bob_before)
    join(alice, plain)
    send(bob, plain, w.bob_after)
    send(alice, plain, HOSTILE_BODY)
    send(alice2, plain, "from the second device")
    # An encrypted room: a real Megolm ciphertext.
    w.e2e_room = create_room(
        alice,
        initial_state=[{"type": "m.room.encryption", "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
    )  # fmt: skip
    join(bob, w.e2e_room)
    session = vodozemac.GroupSession()
    for text in ("secret one", "secret two"):
        r = alice.request(
            "PUT", f"{V3}/rooms/{w.e2e_room}/send/m.room.encrypted/{uuid.uuid4().hex}",
            {"algorithm": "m.megolm.v1.aes-sha2", "sender_key": "k" * 43,
             "ciphertext": session.encrypt(text.encode()).to_base64(),
             "session_id": session.session_id, "device_id": alice.device_id},
        )  # fmt: skip
        assert r.status == 200, r.body
    send(bob, w.e2e_room, "bob in the encrypted room")
    # Uploads.
    for i in range(2):
        data = f"alice file {i} {tag}".encode() * 50
        w.alice_media[_upload(alice, data, f"a{i}.bin")] = data
    data = f"bob file {tag}".encode()
    w.bob_media[_upload(bob, data, "b.bin")] = data
    # Key backup: a version and two sessions (real curve25519 backup ciphertext).
    backup = Backup()
    r = alice.request("POST", f"{V3}/room_keys/version",
                      {"algorithm": ALG, "auth_data": backup.auth_data()})  # fmt: skip
    assert r.status == 200, r.body
    w.backup_version = r.body["version"]
    for sid in ("session-a", "session-b"):
        r = alice.request(
            "PUT", f"{V3}/room_keys/keys/{w.e2e_room}/{sid}",
            backup.key(session.session_key.to_base64()), query={"version": w.backup_version},
        )  # fmt: skip
        assert r.status == 200, r.body
    # Account data, global and per room; a filter; the same for bob.
    for c, who in ((alice, "alice"), (bob, "bob")):
        r = c.request("PUT", f"{V3}/user/{c.user_id}/account_data/org.example.{who}",
                      {"marker": f"{who}-account-data-{tag}"})  # fmt: skip
        assert r.status == 200, r.body
        r = c.request(
            "PUT", f"{V3}/user/{c.user_id}/rooms/{plain}/account_data/org.example.room",
            {"marker": f"{who}-room-data-{tag}"},
        )  # fmt: skip
        assert r.status == 200, r.body
        r = c.request("POST", f"{V3}/user/{c.user_id}/filter",
                      {"room": {"timeline": {"limit": 7}}, "event_fields": [who]})  # fmt: skip
        assert r.status == 200, r.body
    return w


def request_export(c: Client, password: str = PASSWORD) -> Response:
    """The user's export through UIA: the 401 with its session, then the password."""
    r = c.request("POST", EXPORT, {})
    assert r.status == 401, r.body
    return c.request("POST", EXPORT, {"auth": password_auth(c.user_id, r.body["session"],
                                                            password)})  # fmt: skip


class Archive:
    """An export read back."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.zip = zipfile.ZipFile(io.BytesIO(data))
        self.manifest = self.json("manifest.json")

    def names(self) -> list[str]:
        return self.zip.namelist()

    def read(self, name: str) -> bytes:
        return self.zip.read(name)

    def json(self, name: str):
        return json.loads(self.zip.read(name))

    def kind(self, name: str):
        return self.json(self.manifest["kinds"][name]["path"])

    def all_bytes(self) -> bytes:
        """Every entry, decompressed, concatenated (for absence checks)."""
        return b"\n".join(self.zip.read(n) for n in self.zip.namelist())
