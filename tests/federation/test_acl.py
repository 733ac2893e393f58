"""The one server access check (federation/acl.py): the server-wide allow/deny list and the
room's m.room.server_acl, together (S-S API "Server Access Control Lists")."""

from __future__ import annotations

import pytest

from bastion.config import Config
from bastion.errors import MatrixError
from bastion.federation.acl import FederationACL

ROOM = "!r:us.example"


def _acl(tmp_path, room_acl: dict | None, **config) -> FederationACL:
    cfg = Config(server_name="us.example", data_dir=tmp_path, **config)

    def state(room_id: str, etype: str, state_key: str) -> dict | None:
        assert (etype, state_key) == ("m.room.server_acl", "")
        return {"content": room_acl} if room_id == ROOM and room_acl is not None else None

    return FederationACL(cfg, cfg.server_name, state)


def test_the_room_acl_and_the_server_list_both_apply(tmp_path):
    acl = _acl(tmp_path, {"allow": ["*"], "deny": ["bad.example"]},
               federation_domain_deny=("denied.example",))  # fmt: skip
    assert acl.room_allows(ROOM, "good.example")
    assert not acl.room_allows(ROOM, "bad.example")  # the room's ACL
    assert not acl.room_allows(ROOM, "denied.example")  # the server-wide list, in every room
    assert not acl.room_allows("!other:us.example", "denied.example")
    assert acl.room_allows("!other:us.example", "bad.example")  # no ACL in that room
    with pytest.raises(MatrixError) as e:
        acl.require_room(ROOM, "bad.example")
    assert (e.value.status, e.value.errcode) == (403, "M_FORBIDDEN")
    with pytest.raises(MatrixError):
        acl.require_server("denied.example")
    acl.require_server("bad.example")


def test_destinations_exclude_ourselves_and_the_denied(tmp_path):
    acl = _acl(tmp_path, None, federation_domain_allow=("*.example",))
    assert acl.destination_allowed("them.example")
    assert not acl.destination_allowed("us.example")
    assert not acl.destination_allowed("")
    assert not acl.destination_allowed("them.org")
    assert not acl.server_allowed("them.org")
