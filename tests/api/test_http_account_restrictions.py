"""Locked and suspended accounts (C-S API "Account locking", "Account suspension").

What such an account may still do is a flag of the route (``allow_locked``, ``allow_suspended``
in api/http.py), never a test on the request path: the path carries client-chosen segments
(transaction IDs, state keys, event types) that may spell ``/logout`` or ``/keys/`` once decoded.
"""

from __future__ import annotations

import re

import pytest

from tests.support.accounts import assert_error, db_rows, on_server

V3 = "/_matrix/client/v3"

#: Path parameters that, decoded, end with or contain what a path-substring test once allowed.
TRICKS = ("x%2Flogout", "%2Fleave", "a%2Fkeys%2Fb", "x%2Faccount_data%2Fy", "x%2Flogout%2Fall")

WRITE_METHODS = ("POST", "PUT", "DELETE")


def set_flag(server, user_id: str, flag: str) -> None:
    hs = server.hs
    on_server(server, hs.store.db.write(
        lambda conn: hs.store.set_user_flag_in(conn, user_id, flag, True)))  # fmt: skip


def fill(route_name: str, trick: str) -> str:
    """The route's path with every parameter (``{x}`` or a final ``{x*}``) set to ``trick``."""
    return re.sub(r"\{[^}]+\}", trick, route_name)


def test_locked_user_cannot_send_with_logout_txn_id(client, server):
    alice = client.register("alice")
    room_id = alice.request("POST", f"{V3}/createRoom", {}).body["room_id"]
    set_flag(server, alice.user_id, "locked")
    path = f"{V3}/rooms/{room_id}/send/m.room.message/x%2Flogout"
    r = alice.request("PUT", path, {"msgtype": "m.text", "body": "sent while locked"})
    assert_error(r, 401, "M_USER_LOCKED")
    assert r.body["soft_logout"] is True
    rows = db_rows(
        server,
        "SELECT event_id FROM events WHERE room_id = ? AND type = 'm.room.message'",
        (room_id,),
    )
    assert rows == []


def test_suspended_user_cannot_send_with_keys_txn_id_or_leave_state_key(client, server):
    bob = client.register("bob")
    room_id = bob.request("POST", f"{V3}/createRoom", {}).body["room_id"]
    set_flag(server, bob.user_id, "suspended")
    r = bob.request(
        "PUT", f"{V3}/rooms/{room_id}/send/m.room.message/a%2Fkeys%2Fb",
        {"msgtype": "m.text", "body": "sent while suspended"},
    )  # fmt: skip
    assert_error(r, 403, "M_USER_SUSPENDED")
    r = bob.request("PUT", f"{V3}/rooms/{room_id}/state/org.example.state/%2Fleave", {"a": 1})
    assert_error(r, 403, "M_USER_SUSPENDED")
    # What the route allows still works: leaving the room.
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {}).status == 200


@pytest.mark.parametrize("flag", ["locked", "suspended"])
def test_every_route_follows_its_flag(client, server, flag):
    """Walk the whole route table: each authenticated route, with percent-encoded trick segments,
    is refused or allowed exactly as its flag says."""
    routes = [r for r in server.hs.router.routes if r.auth]
    assert len(routes) > 50  # the whole client API is registered
    user = client.register()
    set_flag(server, user.user_id, flag)
    checked_refused = checked_allowed = 0
    for route in routes:
        allowed = route.allow_locked if flag == "locked" else route.allow_suspended
        restricted = flag == "locked" or route.method in WRITE_METHODS
        if restricted and allowed:
            # An allowed route runs its handler (logout, deactivate…): a fresh account each.
            fresh = client.register()
            set_flag(server, fresh.user_id, flag)
            r = fresh.request(route.method, fill(route.name, TRICKS[0]), {})
            assert r.body.get("errcode") not in ("M_USER_LOCKED", "M_USER_SUSPENDED"), (
                route.method, route.name, r.status, r.body,
            )  # fmt: skip
            checked_allowed += 1
            continue
        tricks = TRICKS if "{" in route.name else ("",)
        for trick in tricks:
            body = {} if route.method in WRITE_METHODS else None
            r = user.request(route.method, fill(route.name, trick), body)
            where = (route.method, route.name, trick, r.status, r.body)
            if flag == "locked":
                assert (r.status, r.body.get("errcode")) == (401, "M_USER_LOCKED"), where
            elif restricted:
                assert (r.status, r.body.get("errcode")) == (403, "M_USER_SUSPENDED"), where
            else:
                assert r.body.get("errcode") not in ("M_USER_LOCKED", "M_USER_SUSPENDED"), where
            checked_refused += restricted
    assert checked_refused > 20 and checked_allowed >= 2
