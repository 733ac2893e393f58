"""Small room helpers for the ephemeral / account-data tests (over HTTP)."""

from __future__ import annotations

import uuid

from tests.support.harness import Client

V3 = "/_matrix/client/v3"


def create_room(c: Client, **body) -> str:
    r = c.request("POST", V3 + "/createRoom", {"preset": "public_chat", **body})
    assert r.status == 200, r.body
    return r.body["room_id"]


def join(c: Client, room_id: str) -> None:
    r = c.request("POST", f"{V3}/join/{room_id}", {})
    assert r.status == 200, r.body


def send(c: Client, room_id: str, body: str = "hi", **content) -> str:
    r = c.request(
        "PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
        {"msgtype": "m.text", "body": body, **content},
    )  # fmt: skip
    assert r.status == 200, r.body
    return r.body["event_id"]


def sync(c: Client, since: str | None = None, timeout: int = 0, **query) -> dict:
    q = {"timeout": str(timeout), **query}
    if since:
        q["since"] = since
    r = c.request("GET", V3 + "/sync", query=q)
    assert r.status == 200, r.body
    return r.body


def ephemeral(resp: dict, room_id: str, etype: str) -> list[dict]:
    room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == etype]
