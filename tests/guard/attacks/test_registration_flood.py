"""Attack simulation: a registration flood from one address, and registration-token guessing
inside POST /register (the m.login.registration_token stage of User-Interactive
Authentication). Before the guard, one address registered about 900 accounts a minute and
guessed about 7,900 tokens a second; now both are limited per address."""

from __future__ import annotations

from bastion.guard.login_policy import RegistrationConfig
from tests.guard.attacks.common import REGISTER, request
from tests.support.accounts import PASSWORD, add_registration_token
from tests.support.harness import ServerThread

SOURCE = "127.0.0.66"


def _register(base_url: str, name: str, source: str = SOURCE):
    body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    return request(base_url, "POST", REGISTER, body, source=source)


def test_registration_flood_from_one_address(server):
    cfg = RegistrationConfig()
    answers = [_register(server.base_url, f"bot{i}") for i in range(100)]
    statuses = [a.status for a in answers]
    made = statuses.count(200)
    print(f"\nregistration flood: {made} of 100 accounts made from one address")
    # The burst, and at most one more for the refill during the test.
    assert cfg.per_address_burst <= made <= cfg.per_address_burst + 1
    assert statuses.count(429) == 100 - made
    refused = next(a for a in answers if a.status == 429).body
    assert refused["errcode"] == "M_LIMIT_EXCEEDED" and refused["retry_after_ms"] > 0
    # Someone at another address registers as usual.
    assert _register(server.base_url, "human", source="127.0.0.67").status == 200


def test_registration_token_guessing(tmp_path):
    srv = ServerThread(tmp_path / "data", registration="token").start()
    try:
        add_registration_token(srv, "s3cret-token")
        first = request(srv.base_url, "POST", REGISTER, {}, source=SOURCE)
        session = first.body["session"]
        statuses = []
        for i in range(100):
            r = request(srv.base_url, "POST", REGISTER, {
                "username": "intruder", "password": PASSWORD, "auth": {
                    "type": "m.login.registration_token", "token": f"guess-{i}",
                    "session": session}}, source=SOURCE)  # fmt: skip
            statuses.append(r.status)
        checked = statuses.count(401)
        print(f"\nregistration-token guessing: {checked} of 100 guesses checked")
        assert checked == RegistrationConfig().token.free
        assert statuses.count(429) == 100 - checked
        # The right token from the same address is not checked either while throttled.
        r = request(srv.base_url, "POST", REGISTER, {
            "username": "intruder", "password": PASSWORD, "auth": {
                "type": "m.login.registration_token", "token": "s3cret-token",
                "session": session}}, source=SOURCE)  # fmt: skip
        assert r.status == 429
    finally:
        srv.stop()
