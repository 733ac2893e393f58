"""The guard in tests: lifting rate limits for test traffic that is bulk by design, as an
operator lifts them for a bot or a bridge (a ``{"*": null}`` override, the admin API's
``PUT /_bastion/admin/v1/guard/users/{userId}/rate_limits``), and the ``[guard]`` table that
lifts every rate limit (benchmarks)."""

from __future__ import annotations

from tests.support.accounts import run_on_server
from tests.support.harness import Client, ServerThread

#: ``ServerThread(..., guard=NO_RATE_LIMITS)``: ``[guard.rate_limits] enabled = false``.
NO_RATE_LIMITS = {"rate_limits": {"enabled": False}}


def exempt(server: ServerThread, user: Client | str, reason: str = "bulk test traffic") -> None:
    """Lift every rate limit for ``user`` on ``server`` (recorded like an admin's override)."""
    hs = server.hs
    assert hs is not None
    user_id = user if isinstance(user, str) else user.user_id
    assert user_id is not None
    run_on_server(server, hs.guard.limits.set_overrides(
        "cli", user_id, {"*": None}, route="tests/support/guard.exempt", reason=reason, ip=None,
    ))  # fmt: skip
