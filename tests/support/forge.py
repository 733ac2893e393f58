"""Events a misbehaving server would send: built by a Bastion under test on its current state,
signed with its own key, without its own auth checks, and pushed in a /send transaction outside
its queue."""

from __future__ import annotations

import uuid

from bastion.core.auth_rules import auth_types_for_event
from bastion.core.events import compute_event_id, sign_event
from tests.support.federation import run
from tests.support.peer import V1, on_server


def forge(srv, room_id: str, sender: str, etype: str, content: dict, state_key=None):
    """(event_id, event) of ``sender`` (a local user of ``srv``) on ``srv``'s current state."""
    head = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id))
    version = head.room_version
    probe = {"type": etype, "sender": sender, "content": content, "room_id": room_id}
    if state_key is not None:
        probe["state_key"] = state_key
    auth = [head.state[k] for k in auth_types_for_event(probe, version) if k in head.state]
    metas = on_server(srv, lambda: srv.hs.store.get_event_meta(list(head.extremities)))
    ev = {**probe, "origin_server_ts": srv.hs.now_ms(), "prev_events": list(head.extremities),
          "auth_events": auth, "depth": max(m.depth for m in metas.values()) + 1}  # fmt: skip
    sk = srv.hs.signing_key
    signed = sign_event(ev, version, srv.hs.server_name, sk.key_id, sk.key)
    return compute_event_id(signed, version), signed


def push(srv, destination: str, pdus: list[dict]):
    """(status, body) of PUT /send from ``srv`` to ``destination`` (X-Matrix signed)."""
    body = {"origin": srv.hs.server_name, "origin_server_ts": srv.hs.now_ms(), "pdus": pdus}
    return run(srv, srv.hs.federation.client.request(
        "PUT", destination, f"{V1}/send/forged-{uuid.uuid4().hex}", body))  # fmt: skip
