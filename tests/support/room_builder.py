"""Build rooms of any room version for auth-rule tests: signed events with correct hashes and IDs.

A :class:`Room` keeps the state map and the last event; :meth:`Room.build` makes a signed PDU
(``prev_events`` = the last event, ``auth_events`` = the auth events selection from the current
state), :meth:`Room.add` builds it and applies it to the state without any auth check (tests
decide themselves what to check). :func:`standard_room` makes a typical room in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from nacl.signing import SigningKey

from bastion.core.auth_rules import auth_types_for_event
from bastion.core.events import compute_event_id, compute_room_id_v12, sign_event
from bastion.core.room_versions import EventIdFormat, get_room_version

KEY_ID = "ed25519:test"


def server_key(server_name: str) -> SigningKey:
    """A deterministic signing key per server name (tests only)."""
    return SigningKey(hashlib.sha256(b"bastion-test:" + server_name.encode()).digest())


def domain(user_id: str) -> str:
    return user_id.split(":", 1)[1]


class Room:
    """A room under construction. ``state`` maps ``(type, state_key)`` to event dicts."""

    def __init__(
        self,
        version: str = "12",
        creator: str = "@alice:a.example",
        *,
        create_content: Mapping[str, Any] | None = None,
        room_id: str | None = None,
        ts: int = 1_700_000_000_000,
    ) -> None:
        self.version = version
        self.rv = get_room_version(version)
        self.creator = creator
        self.ts = ts
        self.counter = 0
        self.state: dict[tuple[str, str], dict] = {}
        self.events: dict[str, dict] = {}
        self.last: dict | None = None
        content: dict[str, Any] = {"room_version": version}
        if not self.rv.implicit_room_creator:
            content["creator"] = creator
        content.update(create_content or {})
        create: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
        }
        if not self.rv.room_id_is_create_hash:
            self.room_id = room_id or f"!room:{domain(creator)}"
            create["room_id"] = self.room_id
        self.create = self._finish(create, prev=[], auth=[])
        if self.rv.room_id_is_create_hash:
            self.room_id = compute_room_id_v12(self.create)
        self.apply(self.create)

    # --- building -----------------------------------------------------------------------------

    def event_id(self, event: dict) -> str:
        if self.rv.event_id_format is EventIdFormat.V1_OPAQUE:
            return event["event_id"]
        return compute_event_id(event, self.version)

    def _ref(self, event_id: str) -> Any:
        if self.rv.event_id_format is EventIdFormat.V1_OPAQUE:
            return [event_id, {"sha256": "AAAA"}]
        return event_id

    def _finish(
        self, event: dict, *, prev: list[dict], auth: list[dict], sign: bool = True
    ) -> dict:
        self.counter += 1
        event.setdefault("origin_server_ts", self.ts + self.counter)
        event.setdefault("depth", self.counter)
        event.setdefault("prev_events", [self._ref(self.event_id(p)) for p in prev])
        event.setdefault("auth_events", [self._ref(self.event_id(a)) for a in auth])
        if self.rv.event_id_format is EventIdFormat.V1_OPAQUE:
            event.setdefault("event_id", f"${self.counter}:{domain(event['sender'])}")
        server = domain(event["sender"])
        if sign:
            signed = sign_event(event, self.version, server, KEY_ID, server_key(server))
        else:  # e.g. v1–v5 floats, which canonical JSON (and so signing) refuses
            signed = dict(event, hashes={"sha256": "AAAA"}, signatures={server: {KEY_ID: "AAAA"}})
        self.events[self.event_id(signed)] = signed
        return signed

    def auth_events_for(self, event: dict) -> list[dict]:
        """The current state's events for the auth events selection of ``event``."""
        return [self.state[k] for k in auth_types_for_event(event, self.version) if k in self.state]

    def build(
        self,
        etype: str,
        content: Mapping[str, Any],
        sender: str | None = None,
        state_key: str | None = None,
        *,
        prev: Iterable[dict] | None = None,
        auth: Iterable[dict] | None = None,
        extra_signers: Iterable[str] = (),
        sign: bool = True,
        **fields: Any,
    ) -> dict:
        """A signed event on top of the room (not applied). ``fields`` are extra top-level keys;
        ``sign=False`` leaves placeholder hashes and signatures (for non-canonical content)."""
        event: dict[str, Any] = {
            "type": etype,
            "sender": sender or self.creator,
            "room_id": self.room_id,
            "content": dict(content),
            **fields,
        }
        if state_key is not None:
            event["state_key"] = state_key
        prev_list = list(prev) if prev is not None else ([self.last] if self.last else [])
        auth_list = list(auth) if auth is not None else self.auth_events_for(event)
        signed = self._finish(event, prev=prev_list, auth=auth_list, sign=sign)
        for server in extra_signers:
            signed = sign_event(signed, self.version, server, KEY_ID, server_key(server))
        return signed

    def apply(self, event: dict) -> dict:
        """Make ``event`` the room's last event and, if it is a state event, current state."""
        if "state_key" in event:
            self.state[(event["type"], event["state_key"])] = event
        self.last = event
        return event

    def add(self, *args: Any, **kwargs: Any) -> dict:
        """:meth:`build` then :meth:`apply` (no auth check)."""
        return self.apply(self.build(*args, **kwargs))

    # --- shorthands ---------------------------------------------------------------------------

    def member(
        self, user: str, membership: str = "join", sender: str | None = None, **content: Any
    ) -> dict:
        return self.build(
            "m.room.member", {"membership": membership, **content}, sender or user, user
        )

    def set_member(self, user: str, membership: str = "join", sender: str | None = None) -> dict:
        return self.apply(self.member(user, membership, sender))

    def set_power_levels(self, content: Mapping[str, Any], sender: str | None = None) -> dict:
        return self.add("m.room.power_levels", content, sender, "")

    def set_join_rule(self, rule: str, sender: str | None = None, **extra: Any) -> dict:
        return self.add("m.room.join_rules", {"join_rule": rule, **extra}, sender, "")

    def auth_events_of(self, event: dict) -> list[dict]:
        """The events ``event["auth_events"]`` names (plus, in v12, the create event)."""
        ids = [r[0] if isinstance(r, list) else r for r in event.get("auth_events", [])]
        out = [self.events[i] for i in ids if i in self.events]
        if self.rv.room_id_is_create_hash:
            out.append(self.create)
        return out


def standard_room(
    version: str = "12",
    creator: str = "@alice:a.example",
    *,
    join_rule: str | None = "invite",
    power_levels: Mapping[str, Any] | None = None,
    members: Mapping[str, str] | None = None,
    create_content: Mapping[str, Any] | None = None,
    room_id: str | None = None,
) -> Room:
    """create → creator joins → power levels → join rules → each of ``members`` (user →
    membership, set as state without auth checks)."""
    room = Room(version, creator, create_content=create_content, room_id=room_id)
    room.set_member(creator)
    if power_levels is not None:
        room.set_power_levels(power_levels)
    if join_rule is not None:
        room.set_join_rule(join_rule)
    for user, membership in (members or {}).items():
        room.set_member(user, membership)
    return room


def default_power_levels(room: Room, **overrides: Any) -> dict[str, Any]:
    """The content a server sends at room creation: the creator at 100 (not in v12)."""
    content: dict[str, Any] = {
        "users": {} if room.rv.privileged_creators else {room.creator: 100},
        "users_default": 0,
        "events": {},
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
    }
    content.update(overrides)
    return content
