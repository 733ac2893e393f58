"""Server-side key backups (C-S API "Server-side key backups", key_backup.yaml). Session data is
real ``m.megolm_backup.v1.curve25519-aes-sha2`` ciphertext (vodozemac PkEncryption)."""

from __future__ import annotations

import json

import vodozemac

from tests.support.e2ee import V3, new_device

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
RK = f"{V3}/room_keys"
ROOM = "!room:localhost"


class Backup:
    def __init__(self) -> None:
        self.decryption = vodozemac.PkDecryption()
        self.encryption = vodozemac.PkEncryption.from_key(self.decryption.public_key)

    def auth_data(self) -> dict:
        return {"public_key": self.decryption.public_key.to_base64()}

    def key(self, session_key: str, fmi: int = 0, fwd: int = 0, verified: bool = False) -> dict:
        eph, mac, ct = self.encryption.encrypt(
            json.dumps({"session_key": session_key}).encode()
        ).to_base64()
        return {
            "first_message_index": fmi,
            "forwarded_count": fwd,
            "is_verified": verified,
            "session_data": {"ephemeral": eph, "ciphertext": ct, "mac": mac},
        }

    def open(self, data: dict) -> str:
        sd = data["session_data"]
        msg = vodozemac.Message.from_base64(sd["ciphertext"], sd["mac"], sd["ephemeral"])
        return json.loads(self.decryption.decrypt(msg))["session_key"]


def create(dev, backup: Backup) -> str:
    r = dev.request("POST", f"{RK}/version", {"algorithm": ALG, "auth_data": backup.auth_data()})
    assert r.status == 200, r.body
    return r.body["version"]


def test_version_lifecycle(client):
    alice = new_device(client)
    r = alice.request("GET", f"{RK}/version")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    b = Backup()
    v1 = create(alice, b)
    r = alice.request("GET", f"{RK}/version")
    assert r.status == 200
    assert r.body == {
        "algorithm": ALG,
        "auth_data": b.auth_data(),
        "count": 0,
        "etag": r.body["etag"],
        "version": v1,
    }
    assert isinstance(r.body["etag"], str)
    assert alice.request("GET", f"{RK}/version/{v1}").body["version"] == v1
    # Another user sees nothing.
    bob = new_device(client)
    assert bob.request("GET", f"{RK}/version").status == 404
    assert bob.request("GET", f"{RK}/version/{v1}").status == 404
    # Update auth_data only.
    b2 = Backup()
    r = alice.request("PUT", f"{RK}/version/{v1}", {"algorithm": ALG, "auth_data": b2.auth_data()})
    assert r.status == 200, r.body
    assert alice.request("GET", f"{RK}/version").body["auth_data"] == b2.auth_data()
    for body, status, errcode in (
        ({"algorithm": "other", "auth_data": {}}, 400, "M_INVALID_PARAM"),
        ({"algorithm": ALG, "auth_data": {}, "version": "7"}, 400, "M_INVALID_PARAM"),
        ({"algorithm": ALG}, 400, "M_BAD_JSON"),
        ({"auth_data": {}}, 400, "M_BAD_JSON"),
    ):
        r = alice.request("PUT", f"{RK}/version/{v1}", body)
        assert (r.status, r.body["errcode"]) == (status, errcode), (body, r.body)
    r = alice.request("PUT", f"{RK}/version/99", {"algorithm": ALG, "auth_data": {}})
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    # A new version becomes current; deleting it makes the older one current again.
    v2 = create(alice, b)
    assert v2 != v1
    assert alice.request("GET", f"{RK}/version").body["version"] == v2
    assert alice.request("DELETE", f"{RK}/version/{v2}").status == 200
    assert alice.request("DELETE", f"{RK}/version/{v2}").status == 200  # already deleted: ok
    assert alice.request("GET", f"{RK}/version/{v2}").status == 404
    assert alice.request("GET", f"{RK}/version").body["version"] == v1
    r = alice.request("DELETE", f"{RK}/version/99")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    assert alice.request("DELETE", f"{RK}/version/abc").status == 404
    for body in ({}, {"algorithm": ALG, "auth_data": "x"}, {"algorithm": 5, "auth_data": {}}):
        r = alice.request("POST", f"{RK}/version", body)
        assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON", r.body


def test_keys_store_replace_count_etag(client):
    alice = new_device(client)
    b = Backup()
    v = create(alice, b)
    path = f"{RK}/keys/{ROOM}/sess1"
    r = alice.request("PUT", path, b.key("K-fmi5", fmi=5), query={"version": v})
    assert r.status == 200, r.body
    assert r.body["count"] == 1
    etag1 = r.body["etag"]
    info = alice.request("GET", f"{RK}/version").body
    assert info["count"] == 1 and info["etag"] == etag1
    # Worse (higher first_message_index): kept the old one, etag unchanged.
    r = alice.request("PUT", path, b.key("K-fmi9", fmi=9), query={"version": v})
    assert r.body == {"etag": etag1, "count": 1}
    got = alice.request("GET", path, query={"version": v}).body
    assert b.open(got) == "K-fmi5"
    # Better (lower index) replaces; then verified beats a lower index; then forwarded_count.
    r = alice.request("PUT", path, b.key("K-fmi1", fmi=1, fwd=3), query={"version": v})
    assert r.body["etag"] != etag1
    assert b.open(alice.request("GET", path, query={"version": v}).body) == "K-fmi1"
    r = alice.request("PUT", path, b.key("K-ver", fmi=4, verified=True), query={"version": v})
    assert b.open(alice.request("GET", path, query={"version": v}).body) == "K-ver"
    r = alice.request("PUT", path, b.key("K-unver", fmi=0), query={"version": v})
    assert b.open(alice.request("GET", path, query={"version": v}).body) == "K-ver"
    r = alice.request("PUT", path, b.key("K-ver0", fmi=4, verified=True, fwd=0),
                      query={"version": v})  # fmt: skip
    assert b.open(alice.request("GET", path, query={"version": v}).body) == "K-ver"  # equal
    # Bulk forms.
    body = {"rooms": {ROOM: {"sessions": {"sess2": b.key("A")}}, "!other:localhost": {
        "sessions": {"s3": b.key("B"), "s4": b.key("C")}}}}  # fmt: skip
    r = alice.request("PUT", f"{RK}/keys", body, query={"version": v})
    assert r.status == 200 and r.body["count"] == 4, r.body
    r = alice.request(
        "PUT", f"{RK}/keys/{ROOM}", {"sessions": {"sess5": b.key("D")}}, query={"version": v}
    )
    assert r.body["count"] == 5
    everything = alice.request("GET", f"{RK}/keys", query={"version": v}).body
    assert set(everything["rooms"]) == {ROOM, "!other:localhost"}
    assert set(everything["rooms"][ROOM]["sessions"]) == {"sess1", "sess2", "sess5"}
    room = alice.request("GET", f"{RK}/keys/{ROOM}", query={"version": v}).body
    assert b.open(room["sessions"]["sess5"]) == "D"
    empty = alice.request("GET", f"{RK}/keys/!none:localhost", query={"version": v}).body
    assert empty == {"sessions": {}}
    r = alice.request("GET", f"{RK}/keys/{ROOM}/nope", query={"version": v})
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    # Deleting keys changes count and etag.
    before = alice.request("GET", f"{RK}/version").body["etag"]
    r = alice.request("DELETE", f"{RK}/keys/{ROOM}/sess1", query={"version": v})
    assert r.status == 200 and r.body["count"] == 4 and r.body["etag"] != before
    r = alice.request("DELETE", f"{RK}/keys/{ROOM}", query={"version": v})
    assert r.body["count"] == 2
    r = alice.request("DELETE", f"{RK}/keys", query={"version": v})
    assert r.body["count"] == 0
    assert alice.request("GET", f"{RK}/keys", query={"version": v}).body == {"rooms": {}}


def test_wrong_version_and_bad_input(client):
    alice = new_device(client)
    b = Backup()
    path = f"{RK}/keys/{ROOM}/s"
    r = alice.request("PUT", path, b.key("x"), query={"version": "1"})
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"  # no backup at all
    v1 = create(alice, b)
    assert alice.request("PUT", path, b.key("old"), query={"version": v1}).status == 200
    v2 = create(alice, b)
    for version in (v1, "42", "abc"):
        r = alice.request("PUT", path, b.key("x"), query={"version": version})
        assert r.status == 403, r.body
        assert r.body["errcode"] == "M_WRONG_ROOM_KEYS_VERSION"
        assert r.body["current_version"] == v2
    # Older versions can still be read.
    r = alice.request("GET", path, query={"version": v1})
    assert r.status == 200 and b.open(r.body) == "old"
    r = alice.request("GET", path, query={"version": "42"})
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("PUT", path, b.key("x"))
    assert r.status == 400 and r.body["errcode"] == "M_MISSING_PARAM"
    r = alice.request("GET", f"{RK}/keys")
    assert r.status == 400 and r.body["errcode"] == "M_MISSING_PARAM"
    good = b.key("x")
    for body in (
        {**good, "is_verified": "yes"},
        {**good, "first_message_index": -1},
        {**good, "forwarded_count": "0"},
        {k: v for k, v in good.items() if k != "session_data"},
        {**good, "session_data": "abc"},
    ):
        r = alice.request("PUT", path, body, query={"version": v2})
        assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON", (body, r.body)
    r = alice.request("PUT", f"{RK}/keys", {"rooms": {ROOM: []}}, query={"version": v2})
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = alice.request("PUT", f"{RK}/keys/{ROOM}", {"sessions": []}, query={"version": v2})
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = client.request("GET", f"{RK}/version", token=None)
    assert r.status == 401
    # Bob cannot read Alice's keys.
    bob = new_device(client)
    r = bob.request("GET", path, query={"version": v1})
    assert r.status == 404
