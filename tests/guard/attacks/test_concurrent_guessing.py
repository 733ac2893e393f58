"""Attack simulation: 200 concurrent wrong passwords from one address against one account, on
POST /login and on the password stage of User-Interactive Authentication.

Before the guard, the limiter checked before awaiting the password hash and counted the failure
after it, so 200 concurrent attempts got about 200 checks against a policy of 5. Each attempt
now reserves its slot before the hash is awaited: the checks stay within the policy."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from bastion.guard.login_policy import LoginConfig
from tests.guard.attacks.common import count_password_checks, password_login, request
from tests.support.harness import ServerThread

N = 200
FREE = LoginConfig().account.free


@pytest.fixture
def roomy_server(tmp_path):
    # A hashing queue that holds every attempt, so none is refused for being busy: only the
    # login defence stands between the attempts and the password checks.
    srv = ServerThread(tmp_path / "data", password_hash_threads=2, password_hash_queue=N).start()
    yield srv
    srv.stop()


def test_concurrent_wrong_passwords_on_login(roomy_server):
    srv = roomy_server
    from tests.support.harness import Client

    Client(srv.base_url).register("target")
    checks = count_password_checks(srv)
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(
            lambda i: password_login(srv.base_url, "target", f"wrong {i}", source="127.0.0.77"),
            range(N),
        ))  # fmt: skip
    statuses = [a.status for a in answers]
    print(f"\n{N} concurrent wrong passwords: {checks[0]} checked, "
          f"{statuses.count(429)} refused with 429")  # fmt: skip
    assert checks[0] <= FREE
    assert statuses.count(403) == checks[0]
    assert statuses.count(429) == N - checks[0]


def test_concurrent_wrong_passwords_on_uia(roomy_server):
    srv = roomy_server
    from tests.support.harness import Client

    user = Client(srv.base_url).register("uiatarget")
    path = f"/_matrix/client/v3/devices/{user.device_id}"
    session = user.request("DELETE", path).body["session"]
    checks = count_password_checks(srv)

    def attempt(i: int):
        auth = {"type": "m.login.password", "password": f"wrong {i}", "session": session,
                "identifier": {"type": "m.id.user", "user": "uiatarget"}}  # fmt: skip
        return request(srv.base_url, "DELETE", path, {"auth": auth}, token=user.access_token)

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(attempt, range(N)))
    statuses = [a.status for a in answers]
    assert checks[0] <= FREE
    assert statuses.count(401) == checks[0]
    assert statuses.count(429) == N - checks[0]
