"""Pushers and delivery to HTTP push gateways (C-S API "Push Notifications" → "Pushers",
pusher.yaml; "Push Gateway API", push_notifier.yaml).

A user's ``http`` pushers are kept in the ``pushers`` table (migration 0016). When the push rules
notify a user (services/push.py), each of their pushers gets the notification queued; one
background task per pusher sends its queue in order (``POST {url}`` with the spec's payload),
retrying a failed send with exponential back-off (a gateway's 4xx other than 429 is not
retried); a pushkey the gateway lists as ``rejected`` loses its pusher. Nothing here runs on the
send path: the queue is fed after the notifications are stored.

The gateway URL is a URL a user chose, so it goes through the same egress filter as outbound
federation (:mod:`bastion.core.egress_filter`, ``federation_allow_ips`` lifting ranges): an
address literal is checked when the pusher is set and again before each send, and a host name's
addresses are filtered when the connection is made (a name resolving to a refused address, even
after a rebinding, is never connected to). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from bastion.core.canonical_json import canonical_json
from bastion.core.egress_filter import IPNetwork, ip_allowed, parse_networks
from bastion.core.push_rules import summarise
from bastion.core.urls import valid_http_url
from bastion.errors import M_MISSING_PARAM, MatrixError, bad_json, invalid_param
from bastion.services.lifecycle import BackgroundService

if TYPE_CHECKING:
    from bastion.server import HomeServer

log = logging.getLogger(__name__)

NOTIFY_PATH = "/_matrix/push/v1/notify"
MAX_PUSHKEY_BYTES = 512
MAX_APP_ID_CHARS = 64
MAX_TEXT_CHARS = 256
MAX_DATA_BYTES = 4096
#: At most this many pushers per user.
MAX_PUSHERS_PER_USER = 50
#: Notifications waiting per pusher (the oldest go first when a gateway is down for long).
MAX_QUEUE = 100
#: Retries after the first attempt, waiting BACKOFF_S * 2**n (capped) between them.
MAX_RETRIES = 6
BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
REQUEST_TIMEOUT_S = 20.0
MAX_ANSWER_BYTES = 65536


# -- validation (pusher.yaml "POST /pushers/set") ------------------------------------------------


def _text(body: Mapping[str, Any], key: str, limit: int = MAX_TEXT_CHARS) -> str:
    if key not in body or body[key] is None:
        raise MatrixError(M_MISSING_PARAM, f"{key!r} is required", 400)
    value = body[key]
    if not isinstance(value, str):
        raise bad_json(f"{key!r} must be a string")
    if len(value) > limit:
        raise invalid_param(f"{key!r} is longer than {limit} characters")
    return value


def gateway_url_allowed(url: str, allowed: tuple[IPNetwork, ...]) -> bool:
    """An http(s) URL whose path is the gateway's notify path, with no query, and whose host
    is not an address literal (or ``localhost``) that the egress filter refuses."""
    if not valid_http_url(url):
        return False
    parts = urlsplit(url)
    if parts.path != NOTIFY_PATH:
        return False
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return ip_allowed("127.0.0.1", allowed)
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return True  # a name: its addresses are filtered when connecting
    return ip_allowed(addr, allowed)


def validate_pusher(body: Any, allowed: tuple[IPNetwork, ...]) -> dict[str, Any] | None:
    """The pusher a ``POST /pushers/set`` body sets, or None when it deletes (``kind`` null)."""
    if not isinstance(body, dict):
        raise bad_json("the body must be a JSON object")
    if "kind" not in body:
        raise MatrixError(M_MISSING_PARAM, "'kind' is required", 400)
    app_id = _text(body, "app_id", MAX_APP_ID_CHARS)
    pushkey = _text(body, "pushkey", MAX_PUSHKEY_BYTES)
    if len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
        raise invalid_param(f"'pushkey' is longer than {MAX_PUSHKEY_BYTES} bytes")
    if not app_id or not pushkey:
        raise invalid_param("'app_id' and 'pushkey' must not be empty")
    kind = body["kind"]
    append = body.get("append", False)
    if not isinstance(append, bool):
        raise bad_json("'append' must be a boolean")
    if kind is None:
        return None
    if kind != "http":
        raise invalid_param("only 'http' pushers are supported")
    pusher: dict[str, Any] = {
        "app_id": app_id, "pushkey": pushkey, "kind": kind,
        "app_display_name": _text(body, "app_display_name"),
        "device_display_name": _text(body, "device_display_name"),
        "lang": _text(body, "lang", 64),
        "append": append,
    }  # fmt: skip
    if body.get("profile_tag") is not None:
        pusher["profile_tag"] = _text(body, "profile_tag")
    data = body.get("data")
    if data is None:
        raise MatrixError(M_MISSING_PARAM, "'data' is required", 400)
    if not isinstance(data, dict):
        raise bad_json("'data' must be an object")
    try:
        encoded = canonical_json(data)
    except Exception as e:  # noqa: BLE001 - floats, huge integers
        raise bad_json("'data' is not valid canonical JSON") from e
    if len(encoded) > MAX_DATA_BYTES:
        raise invalid_param(f"'data' is larger than {MAX_DATA_BYTES} bytes")
    url = data.get("url")
    if not isinstance(url, str):
        raise invalid_param("'data.url' is required for an http pusher")
    if not gateway_url_allowed(url, allowed):
        raise invalid_param(
            f"'data.url' must be an http(s) URL to a reachable push gateway ending in {NOTIFY_PATH}"
        )
    fmt = data.get("format")
    if fmt is not None and fmt != "event_id_only":
        raise invalid_param("'data.format' must be 'event_id_only' when given")
    pusher["data"] = data
    return pusher


def present(row: Any) -> dict[str, Any]:
    """A stored pusher as ``GET /pushers`` lists it."""
    out: dict[str, Any] = {
        "app_display_name": row["app_display_name"],
        "app_id": row["app_id"],
        "data": orjson.loads(row["data"]),
        "device_display_name": row["device_display_name"],
        "kind": row["kind"],
        "lang": row["lang"],
        "pushkey": row["pushkey"],
    }
    if row["profile_tag"] is not None:
        out["profile_tag"] = row["profile_tag"]
    return out


def notification_payload(
    event: Mapping[str, Any], event_id: str, room_id: str, actions: tuple[Any, ...],
    pusher: Mapping[str, Any], unread: int, *, user_id: str,
    sender_display_name: str | None = None, room_name: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The body of ``POST /_matrix/push/v1/notify`` for one pusher (Push Gateway API)."""
    data = dict(pusher["data"])
    data.pop("url", None)
    _, highlight, tweaks = summarise(actions)
    device = {
        "app_id": pusher["app_id"],
        "pushkey": pusher["pushkey"],
        "pushkey_ts": pusher["pushkey_ts"],
        "data": data,
        "tweaks": tweaks,
    }
    note: dict[str, Any] = {"event_id": event_id, "room_id": room_id}
    if unread:
        note["counts"] = {"unread": unread}
    if data.get("format") != "event_id_only":
        note["type"] = event.get("type")
        note["sender"] = event.get("sender")
        note["prio"] = "high" if highlight or "sound" in tweaks else "low"
        content = event.get("content")
        if isinstance(content, Mapping):
            note["content"] = content
        if event.get("type") == "m.room.member":
            note["user_is_target"] = event.get("state_key") == user_id
        if sender_display_name:
            note["sender_display_name"] = sender_display_name
        if room_name:
            note["room_name"] = room_name
    note["devices"] = [device]
    return {"notification": note}


# -- the connection: the egress filter on every address -----------------------------------------


class FilteringResolver(ThreadedResolver):
    """Resolves gateway host names and keeps only the addresses the egress filter allows."""

    def __init__(self, allowed: tuple[IPNetwork, ...]) -> None:
        super().__init__()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        out = [r for r in results if ip_allowed(r["host"], self._allowed)]
        if not out:
            raise OSError(f"every address of {host} is refused by the egress filter")
        return out


class _Queue:
    __slots__ = ("items", "task")

    def __init__(self) -> None:
        self.items: deque[dict[str, Any]] = deque()
        self.task: asyncio.Task | None = None


class Pushers(BackgroundService):
    """``hs.pushers``."""

    background_name = "pushers"

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        self.allowed: tuple[IPNetwork, ...] = parse_networks(hs.config.federation_allow_ips)
        self._queues: dict[tuple[str, str, str], _Queue] = {}
        self._session: aiohttp.ClientSession | None = None
        #: The first retry's wait; each next one doubles (capped at MAX_BACKOFF_S).
        self.backoff_s = BACKOFF_S
        #: Sends made and failed (tests, metrics).
        self.sent = 0
        self.failures = 0

    # -- the API --------------------------------------------------------------------------------
    def list_pushers(self, user_id: str) -> list[dict[str, Any]]:
        return [present(r) for r in self.hs.store.get_pushers(user_id)]

    async def set(self, user_id: str, body: Any) -> None:
        pusher = validate_pusher(body, self.allowed)
        store = self.hs.store
        if pusher is None:
            app_id, pushkey = body["app_id"], body["pushkey"]
            await store.transaction(lambda c: store.delete_pusher_in(c, user_id, app_id, pushkey))
            self._queues.pop((user_id, app_id, pushkey), None)
            return
        existing = {(r["app_id"], r["pushkey"]) for r in store.get_pushers(user_id)}
        key = (pusher["app_id"], pusher["pushkey"])
        if key not in existing and len(existing) >= MAX_PUSHERS_PER_USER:
            raise invalid_param(f"at most {MAX_PUSHERS_PER_USER} pushers per user")
        data_json = canonical_json(pusher["data"]).decode("utf-8")
        now = self.hs.now_ms()
        await store.transaction(
            lambda c: store.set_pusher_in(c, user_id, pusher, data_json, now, pusher["append"])
        )

    # -- delivery ---------------------------------------------------------------------------------
    def notified(self, items: list[tuple[str, dict, str, str, int, tuple[Any, ...]]]) -> None:
        """Queue ``(user_id, event, event_id, room_id, stream_pos, actions)`` notifications to
        the users' pushers (called after they are stored; no network here)."""
        if self.stopped or not items:
            return
        store = self.hs.store
        if not store.has_pushers():
            return
        users = sorted({i[0] for i in items})
        by_user: dict[str, list[dict[str, Any]]] = {}
        for row in store.get_pushers_for_users(users):
            by_user.setdefault(row["user_id"], []).append(dict(row))
        for user_id, event, event_id, room_id, _pos, actions in items:
            for row in by_user.get(user_id, ()):
                row_data = orjson.loads(row["data"])
                key = (user_id, row["app_id"], row["pushkey"])
                q = self._queues.setdefault(key, _Queue())
                if len(q.items) >= MAX_QUEUE:
                    q.items.popleft()
                q.items.append({"user_id": user_id, "event": event, "event_id": event_id,
                                "room_id": room_id, "actions": actions,
                                "pusher": {**row, "data": row_data}})  # fmt: skip
                if q.task is None or q.task.done():
                    q.task = self.spawn(self._drain(key, q), cancel_on_stop=True)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=FilteringResolver(self.allowed),
                                             use_dns_cache=False)  # fmt: skip
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                trust_env=False,
            )  # fmt: skip
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _payload(self, item: dict[str, Any]) -> dict[str, Any]:
        engine = self.hs.rooms.engine
        event, room_id = item["event"], item["room_id"]
        sender_name = room_name = None
        member = engine.current_state_event(room_id, "m.room.member", str(event.get("sender")))
        if isinstance(member, Mapping) and isinstance(member.get("content"), Mapping):
            name = member["content"].get("displayname")
            sender_name = name if isinstance(name, str) else None
        name_ev = engine.current_state_event(room_id, "m.room.name")
        if isinstance(name_ev, Mapping) and isinstance(name_ev.get("content"), Mapping):
            name = name_ev["content"].get("name")
            room_name = name if isinstance(name, str) else None
        unread = self.hs.store.unread_notification_total(item["user_id"])
        return notification_payload(
            event, item["event_id"], room_id, item["actions"], item["pusher"], unread,
            user_id=item["user_id"], sender_display_name=sender_name, room_name=room_name,
        )  # fmt: skip

    async def _drain(self, key: tuple[str, str, str], q: _Queue) -> None:
        # Stops when the pusher is deleted (its queue is dropped) or rejected.
        while q.items and self._queues.get(key) is q:
            item = q.items[0]
            delivered = await self._send_with_retries(key, item, q)
            if q.items and q.items[0] is item:
                q.items.popleft()
            if delivered is None:  # the pusher is gone
                q.items.clear()
        if self._queues.get(key) is q and not q.items:
            del self._queues[key]

    async def _send_with_retries(
        self, key: tuple[str, str, str], item: dict, q: _Queue
    ) -> bool | None:
        """True: delivered; False: given up; None: the pusher was removed (rejected, or
        deleted by its user: its queue was dropped, so no retry is made)."""
        url = item["pusher"]["data"].get("url")
        if not isinstance(url, str) or not gateway_url_allowed(url, self.allowed):
            return False
        body = self._payload(item)
        for attempt in range(MAX_RETRIES + 1):
            if attempt:
                await asyncio.sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
                if self._queues.get(key) is not q:
                    return None
            try:
                async with self._get_session().post(
                    url, data=orjson.dumps(body), allow_redirects=False,
                    headers={"Content-Type": "application/json"},
                ) as resp:  # fmt: skip
                    status = resp.status
                    # A gateway's answer is small: read no more than MAX_ANSWER_BYTES of it.
                    answer = await resp.content.read(MAX_ANSWER_BYTES) if status == 200 else b""
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                self.failures += 1
                log.info("push gateway %s: %s (attempt %d)", urlsplit(url).hostname, e, attempt + 1)
                continue
            if status == 200:
                self.sent += 1
                return await self._rejected(key, answer)
            self.failures += 1
            if 400 <= status < 500 and status != 429:
                log.info("push gateway %s refused a notification: HTTP %d",
                         urlsplit(url).hostname, status)  # fmt: skip
                return False
        return False

    async def _rejected(self, key: tuple[str, str, str], answer: bytes) -> bool | None:
        """The gateway's ``rejected`` pushkeys: their pushers go (Push Gateway API)."""
        try:
            rejected = orjson.loads(answer).get("rejected", [])
        except (orjson.JSONDecodeError, AttributeError):
            return True
        user_id, app_id, pushkey = key
        if not isinstance(rejected, list) or pushkey not in rejected:
            return True
        store = self.hs.store
        await store.transaction(lambda c: store.delete_pusher_in(c, user_id, app_id, pushkey))
        log.info("push gateway rejected a pushkey of %s (app %s): pusher removed", user_id, app_id)
        return None
