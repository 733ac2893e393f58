"""Robustness: every registered route, fed junk, answers with a Matrix error and never a 5xx.

The test enumerates ``hs.router`` (so it covers every endpoint any module registers, now and
later), fills path parameters with real IDs (a user, device, room, event, filter, media …
created in a fixture) or with junk, and sends

1. a fixed catalogue of bad bodies to every route (empty, not JSON, invalid UTF-8, wrong
   top-level types, non-integral and out-of-range numbers, NaN, deep nesting, huge strings,
   a body over the size limit, and objects whose common field names all carry the wrong type),
2. then Hypothesis-generated requests per route: junk path parameters, JSON bodies built from
   the field names clients use with values of every type, raw bytes, junk query strings, and
   good, missing, unknown or malformed access tokens.

Every response must be below 500, and every error must carry ``errcode`` and ``error``
(C-S API "Standard error response"; a User-Interactive Authentication 401 may carry ``flows``
instead). Afterwards ``/versions`` must still answer. Failures are collected, not raised at the
first one, so one run lists every route that broke.

Runs are deterministic (``derandomize``); set ``BASTION_JUNK_RANDOM=1`` for a random run and
``BASTION_JUNK_SECONDS`` to change the time budget (default 70 s).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support.guard import NO_RATE_LIMITS
from tests.support.harness import Client, ServerThread

BUDGET_S = float(os.environ.get("BASTION_JUNK_SECONDS", "70"))
RANDOM = os.environ.get("BASTION_JUNK_RANDOM") == "1"
MAX_EXAMPLES_PER_ROUTE = 120
MIN_EXAMPLES_PER_ROUTE = 6
REQUEST_TIMEOUT_S = 20

# -- junk ---------------------------------------------------------------------------------------

#: Body field names the Client-Server API uses; junk objects give them values of every type.
FIELDS = [
    "auth", "type", "session", "user", "identifier", "password", "new_password", "username",
    "device_id", "initial_device_display_name", "inhibit_login", "refresh_token", "token",
    "logout_devices", "erase", "id_server", "devices", "display_name", "displayname",
    "avatar_url", "visibility", "room_alias_name", "name", "topic", "invite", "invite_3pid",
    "room_version", "creation_content", "initial_state", "preset", "is_direct",
    "power_level_content_override", "user_id", "reason", "membership", "body", "msgtype",
    "content", "state_key", "event_id", "room_id", "limit", "filter", "from", "to", "dir",
    "event_fields", "event_format", "presentation", "room", "account_data", "presence",
    "timeout", "typing", "m.fully_read", "m.read", "m.read.private", "thread_id", "ts",
    "status_msg", "actions", "conditions", "pattern", "enabled", "before", "after",
    "device_keys", "one_time_keys", "fallback_keys", "algorithms", "keys", "signatures",
    "master_key", "self_signing_key", "user_signing_key", "messages", "version", "algorithm",
    "auth_data", "rooms", "sessions", "first_message_index", "forwarded_count",
    "is_verified", "session_data", "new_version", "server", "search_categories", "order",
    "score", "tags", "locked", "suspended", "m.upload.size", "threepid", "client_secret",
    "sid", "email", "send_attempt", "medium", "address", "org.example",
]  # fmt: skip

QUERY_KEYS = [
    "limit", "from", "to", "dir", "since", "timeout", "timeout_ms", "filter", "full_state",
    "set_presence", "at", "membership", "not_membership", "kind", "access_token", "width",
    "height", "method", "animated", "allow_remote", "filename", "version", "user_id", "ts",
    "server_name", "via", "include", "recurse", "suggested_only", "max_depth", "event_id",
]  # fmt: skip

#: Path segments, already percent-encoded (sent verbatim).
NASTY_SEGMENTS = [
    "", "%00", "%FF%FE", "..", "%2E%2E", "..%2F..%2Fetc%2Fpasswd", "%2F", "%25", "%0D%0A",
    "a" * 2000, "%F0%9F%92%A9", "!x:y", "%21x%3Ay", "@x:y", "%40x%3Ay", "$x", "%24x",
    "#x:y", "%23x%3Ay", "%40%3A", "%40:", "@", "!", "$", "*", "null", "-1", "0",
    "99999999999999999999999", "%C0%AE", "m.room.message", "%E2%80%AE", "%5C",
]  # fmt: skip

NASTY_VALUES = [
    "", "-1", "0", "abc", "9" * 30, "1e3", "1.5", "NaN", "null", "true", "{", "[]", "{}",
    '{"limit":"x"}', '{"room":{"timeline":{"limit":-5}}}', "s", "s-1_x", "s99999999999_0",
    "t1-2_3", "%00", "\x00", "\udcff", "\u202e", "a" * 5000, "!x:y", "@x:y", "$x", "b", "f",
]  # fmt: skip


#: Values that are right for some field somewhere, so generated bodies get past the first check.
PLAUSIBLE_VALUES = [
    "@u:localhost", "!r:localhost", "m.login.dummy", "m.login.password", "m.id.user", "m.text",
    "hi", "join", "leave", "invite", "ban", "public", "private", "private_chat",
    "public_chat", "trusted_private_chat", "m.read", "online", "offline", "unavailable",
    "m.megolm.v1.aes-sha2", "m.olm.v1.curve25519-aes-sha2", "m.megolm_backup.v1.curve25519-aes-sha2",
    "curve25519", "signed_curve25519", "ed25519:DEV", "m.room.message", "m.reaction", "b", "f",
    "global", "override", "content", "room", "sender", "underride", "notify", "dont_notify",
    "event_match", "10", "12", "m.room.member", "m.room.power_levels", "main",
]  # fmt: skip

#: Query strings a route needs to get past its first check (matched on the pattern's end);
#: the catalogue uses them, and generated requests mutate them.
BASELINE_QUERIES = {
    "/messages": "dir=b&limit=5",
    "/register/available": "username=junkname",
    "/registration_token/validity": "token=abc",
    "/keys/changes": "from=s0_0&to=s1_0",
    "/room_keys/keys": "version={version}",
    "/room_keys/keys/{roomId}": "version={version}",
    "/room_keys/keys/{roomId}/{sessionId}": "version={version}",
    "/thumbnail/{serverName}/{mediaId}": "width=32&height=32&method=crop",
    "/sync": "timeout=0",
    "/context/{eventId}": "limit=3",
    "/publicRooms": "limit=5",
    "/hierarchy": "limit=5",
    "/initialSync": "limit=5",
    "/v3/events": "room_id={roomId}&timeout=0",
}


def baseline_query(pattern: str, values: dict[str, str]) -> str:
    for suffix, query in BASELINE_QUERIES.items():
        if pattern.endswith(suffix):
            return query.replace("{version}", quote(values.get("version", "1"), safe="")).replace(
                "{roomId}", quote(values.get("roomId", "!x:localhost"), safe="")
            )
    return ""


def baseline_bodies(v: dict[str, str]) -> dict[tuple[str, str], object]:
    """Well-formed bodies for the main routes (matched on method and the pattern's end):
    generated requests mutate one part of them, which reaches deeper than pure junk."""
    me, bob, room, event, dev = (
        v["userId"],
        v["otherUserId"],
        v["roomId"],
        v["eventId"],
        v["deviceId"],
    )
    localpart = me[1:].split(":", 1)[0]
    session = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False,
               "session_data": {"ephemeral": "a", "ciphertext": "b", "mac": "c"}}  # fmt: skip
    password_auth = {"type": "m.login.password", "password": "correct horse battery",
                     "identifier": {"type": "m.id.user", "user": localpart}}  # fmt: skip
    member = {"user_id": bob, "reason": "r"}
    return {
        ("PUT", "/send/{eventType}/{txnId}"): {"msgtype": "m.text", "body": "hi"},
        ("PUT", "/state/{eventType}"): {"topic": "t"},
        ("PUT", "/state/{eventType}/{stateKey}"): {"topic": "t"},
        ("PUT", "/redact/{eventId}/{txnId}"): {"reason": "r"},
        ("POST", "/createRoom"): {
            "preset": "private_chat", "name": "n", "topic": "t", "invite": [bob],
            "initial_state": [{"type": "m.room.topic", "state_key": "", "content": {"topic": "x"}}],
            "power_level_content_override": {"users": {me: 100}, "events": {"m.room.name": 50}},
            "creation_content": {"m.federate": False}, "room_version": "12", "is_direct": False,
            "visibility": "private", "room_alias_name": "a" + secrets.token_hex(3),
        },
        ("POST", "/invite"): member, ("POST", "/kick"): member, ("POST", "/ban"): member,
        ("POST", "/unban"): member, ("POST", "/join"): {"reason": "r"},
        ("POST", "/join/{roomIdOrAlias}"): {"reason": "r"}, ("POST", "/leave"): {"reason": "r"},
        ("POST", "/knock/{roomIdOrAlias}"): {"reason": "r"},
        ("PUT", "/typing/{userId}"): {"typing": True, "timeout": 1000},
        ("POST", "/receipt/{receiptType}/{eventId}"): {"thread_id": "main"},
        ("POST", "/read_markers"): {"m.fully_read": event, "m.read": event},
        ("PUT", "/presence/{userId}/status"): {"presence": "online", "status_msg": "hi"},
        ("PUT", "/profile/{userId}/{keyName}"): {"displayname": "A"},
        ("PUT", "/pushrules/{scope}/{kind}/{ruleId}"): {
            "actions": ["notify"],
            "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "x"}],
        },
        ("PUT", "/enabled"): {"enabled": True},
        ("PUT", "/actions"): {"actions": ["notify", {"set_tweak": "sound", "value": "d"}]},
        ("POST", "/login"): {**password_auth, "initial_device_display_name": "d"},
        ("POST", "/register"): {"username": "j" + secrets.token_hex(4), "password": "pw",
                                "auth": {"type": "m.login.dummy"}},  # fmt: skip
        ("POST", "/account/password"): {"new_password": "correct horse battery",
                                        "logout_devices": False, "auth": password_auth},  # fmt: skip
        ("POST", "/delete_devices"): {"devices": ["NOPE"], "auth": password_auth},
        ("PUT", "/devices/{deviceId}"): {"display_name": "d"},
        ("POST", "/keys/upload"): {
            "one_time_keys": {"signed_curve25519:AAAA": {"key": "abc", "signatures": {}}},
            "fallback_keys": {"signed_curve25519:BBBB": {"key": "abc", "fallback": True}},
        },
        ("POST", "/keys/query"): {"device_keys": {me: [], bob: [dev]}, "timeout": 10},
        ("POST", "/keys/claim"): {"one_time_keys": {me: {dev: "signed_curve25519"}}},
        ("POST", "/keys/signatures/upload"): {me: {dev: {"user_id": me, "device_id": dev}}},
        ("POST", "/keys/device_signing/upload"): {
            "master_key": {"user_id": me, "usage": ["master"], "keys": {"ed25519:a": "a"}},
            "auth": password_auth,
        },
        ("PUT", "/sendToDevice/{eventType}/{txnId}"): {"messages": {me: {dev: {"a": 1}, "*": {}}}},
        ("POST", "/room_keys/version"): {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                                         "auth_data": {"public_key": "abc"}},  # fmt: skip
        ("PUT", "/room_keys/version/{version}"): {
            "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
            "auth_data": {"public_key": "abc"}, "version": v["version"],
        },
        ("PUT", "/room_keys/keys/{roomId}/{sessionId}"): session,
        ("PUT", "/room_keys/keys/{roomId}"): {"sessions": {"s1": session}},
        ("PUT", "/room_keys/keys"): {"rooms": {room: {"sessions": {"s1": session}}}},
        ("POST", "/filter"): {"room": {"timeline": {"limit": 10, "types": ["m.room.*"]}},
                              "event_fields": ["content.body"]},  # fmt: skip
        ("PUT", "/account_data/{type}"): {"a": 1},
        ("PUT", "/tags/{tag}"): {"order": 0.5},
        ("POST", "/report/{eventId}"): {"reason": "spam"},
        ("POST", "/report"): {"reason": "spam"},
        ("PUT", "/directory/room/{roomAlias}"): {"room_id": room},
        ("PUT", "/directory/list/room/{roomId}"): {"visibility": "public"},
        ("PUT", "/admin/lock/{userId}"): {"locked": False},
        ("PUT", "/admin/suspend/{userId}"): {"suspended": False},
        ("POST", "/publicRooms"): {"limit": 5, "filter": {"generic_search_term": "x"}},
        ("POST", "/upgrade"): {"new_version": "12"},
    }  # fmt: skip


def baseline_body(method: str, pattern: str, v: dict[str, str]):
    for (m, suffix), body in baseline_bodies(v).items():
        if m == method and pattern.endswith(suffix):
            return body
    return None


def _paths(value, prefix=()):
    """Every path (tuple of keys and indices) into a JSON value."""
    out = []
    if isinstance(value, dict):
        for k, x in value.items():
            out.append((*prefix, k))
            out.extend(_paths(x, (*prefix, k)))
    elif isinstance(value, list):
        for i, x in enumerate(value):
            out.append((*prefix, i))
            out.extend(_paths(x, (*prefix, i)))
    return out


def _mutate(template, path, new, delete=False):
    value = json.loads(json.dumps(template))
    target = value
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return value


def mutations(template) -> st.SearchStrategy[bytes]:
    """A well-formed body, or that body with one part replaced by junk or removed."""
    paths = _paths(template)
    if not paths:
        return st.just(_dumps(template))
    return st.one_of(
        st.just(template),
        st.tuples(st.sampled_from(paths), json_value).map(lambda pv: _mutate(template, *pv)),
        st.tuples(st.sampled_from(paths), st.sampled_from(NASTY_VALUES + PLAUSIBLE_VALUES)).map(
            lambda pv: _mutate(template, *pv)
        ),
        st.sampled_from(paths).map(lambda p: _mutate(template, p, None, delete=True)),
    ).map(_dumps)


def _nested(depth: int, leaf: str = "1") -> bytes:
    return ('{"a":' * depth + leaf + "}" * depth).encode()


def _all_fields(value) -> bytes:
    return json.dumps({k: value for k in FIELDS}).encode()


#: The fixed catalogue sent to every route (label, body or None for no body).
BODY_CATALOGUE: list[tuple[str, bytes | None]] = [
    ("no body", None),
    ("empty", b""),
    ("whitespace", b"  \n "),
    ("not json", b"hello"),
    ("truncated", b'{"a": '),
    ("invalid utf-8 in string", b'{"body": "\xff\xfe", "type": "\xc0\xae"}'),
    ("invalid utf-8 bytes", b"\xff\xfe\x00\x01"),
    ("lone surrogate escape", b'{"body": "\\ud800", "\\u0000": "\\udfff"}'),
    ("null", b"null"),
    ("array", b"[]"),
    ("array of objects", b'[{"type": "m.login.dummy"}]'),
    ("number", b"123"),
    ("string", b'"string"'),
    ("true", b"true"),
    ("float", b"1.5"),
    ("empty object", b"{}"),
    ("NaN", b'{"limit": NaN, "timeout": Infinity}'),
    ("fraction", b'{"limit": 1.5, "timeout": 0.1, "ts": 1e400}'),
    ("big ints", b'{"limit": 9007199254740993, "timeout": -9223372036854775809}'),
    ("duplicate keys", b'{"type": 1, "type": "m.login.dummy"}'),
    ("deep array", b"[" * 50000 + b"]" * 50000),
    ("deep object 90", _nested(90)),
    ("deep object 2000", _nested(2000)),
    ("over 1 MiB", b'{"body": "' + b"x" * (1024 * 1024 + 10) + b'"}'),
    ("all fields null", _all_fields(None)),
    ("all fields int", _all_fields(-1)),
    ("all fields big int", _all_fields(2**53 - 1)),
    ("all fields bool", _all_fields(True)),
    ("all fields string", _all_fields("x")),
    ("all fields empty string", _all_fields("")),
    ("all fields list", _all_fields([1, "x", None, {}])),
    ("all fields object", _all_fields({"a": {"b": [1]}})),
    ("all fields nested object", _all_fields(json.loads(_nested(40, '"x"')))),
    ("all fields huge string", _all_fields("\u00e9" * 20000)),
    ("all fields user id", _all_fields("@nobody:localhost")),
    ("all fields room id", _all_fields("!nowhere:localhost")),
    ("all fields event id", _all_fields("$nothing")),
]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(NASTY_VALUES + PLAUSIBLE_VALUES),
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=20,
)
json_object = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=12), json_value, max_size=8
)


def _dumps(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


body_strategy = st.one_of(
    json_object.map(_dumps),
    json_object.map(_dumps),
    json_value.map(_dumps),
    st.binary(max_size=200),
    st.sampled_from([b for _, b in BODY_CATALOGUE if b is None or len(b) < 10000]),
)

query_value = st.one_of(st.sampled_from(NASTY_VALUES), st.text(max_size=20), st.integers().map(str))
query_strategy = st.one_of(
    st.just(""),
    st.lists(
        st.tuples(st.sampled_from(QUERY_KEYS) | st.text(min_size=1, max_size=8), query_value),
        max_size=5,
    ).map(lambda pairs: urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in pairs])),
    st.sampled_from(["%", "%%%&&==;", "a=%ZZ", "a=%FF%FE", "=&=", "limit=1&limit=x", "&" * 50]),
)

segment_strategy = st.one_of(
    st.sampled_from(NASTY_SEGMENTS),
    st.text(max_size=40).map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
)

TOKENS = ["valid", "valid", "valid", "valid", "none", "unknown", "basic", "empty", "query"]
CONTENT_TYPES = ["application/json", "application/json", "text/plain", "", "image/png",
                 "multipart/form-data; boundary=x", "application/json; charset=latin1"]  # fmt: skip


# -- the world the requests run against ---------------------------------------------------------


@dataclass
class World:
    """Real IDs for path parameters, and the token of the user who owns them."""

    token: str
    values: dict[str, str] = field(default_factory=dict)


def _enc(value: str) -> str:
    return quote(value, safe="")


def build_world(server: ServerThread) -> World:
    c = Client(server.base_url)
    alice = c.register()
    bob = c.register()
    # An admin, so the admin endpoints get past their permission check.
    server.hs.store.db.write_sync(
        lambda conn: conn.execute(
            "UPDATE users SET is_admin = 1 WHERE user_id = ?", (alice.user_id,)
        )
    )
    v = {
        "userId": alice.user_id,
        "deviceId": alice.device_id,
        "serverName": server.config.server_name,
        "eventType": "m.room.message",
        "relType": "m.thread",
        "type": "org.example.junk",
        "stateKey": "",
        "keyName": "displayname",
        "scope": "global",
        "kind": "override",
        "ruleId": ".m.rule.master",
        "receiptType": "m.read",
        "sessionId": "junksession",
        "version": "1",
        "fileName": "f.txt",
        "tag": "u.work",
        "roomAlias": f"#junk{secrets.token_hex(3)}:{server.config.server_name}",
        "roomIdOrAlias": "",
        "filterId": "0",
        "eventId": "$unknown",
        "roomId": f"!unknown:{server.config.server_name}",
        "mediaId": "AAAAAAAAAAAAAAAAAAAAAAAA",
        "otherUserId": bob.user_id,
    }
    r = alice.request("POST", "/_matrix/client/v3/createRoom", {"name": "junk", "invite": []})
    if r.status == 200:
        v["roomId"] = v["roomIdOrAlias"] = r.body["room_id"]
        r = alice.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_enc(v['roomId'])}/send/m.room.message/t{secrets.token_hex(4)}",
            {"msgtype": "m.text", "body": "hello"},
        )
        if r.status == 200:
            v["eventId"] = r.body["event_id"]
    r = alice.request("POST", f"/_matrix/client/v3/user/{_enc(alice.user_id)}/filter", {"room": {}})
    if r.status == 200:
        v["filterId"] = r.body["filter_id"]
    png = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(png, format="PNG")
    r = alice.request("POST", "/_matrix/media/v3/upload", raw=png.getvalue(),
                      headers={"Content-Type": "image/png"})  # fmt: skip
    if r.status == 200:
        v["mediaId"] = r.body["content_uri"].rsplit("/", 1)[1]
    r = alice.request("POST", "/_matrix/client/v3/room_keys/version",
                      {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                       "auth_data": {"public_key": "abcdefg"}})  # fmt: skip
    if r.status == 200 and isinstance(r.body.get("version"), str):
        v["version"] = r.body["version"]
    v["roomIdOrAlias"] = v["roomIdOrAlias"] or v["roomId"]
    return World(alice.access_token, v)


def world_is_usable(server: ServerThread, world: World) -> bool:
    c = Client(server.base_url, world.token)
    if c.request("GET", "/_matrix/client/v3/account/whoami").status != 200:
        return False
    room = world.values["roomId"]
    if room.startswith("!unknown"):
        return True
    r = c.request(
        "GET",
        f"/_matrix/client/v3/rooms/{_enc(room)}/state/m.room.member/{_enc(world.values['userId'])}",
    )
    return r.status == 200 and r.body.get("membership") == "join"


# -- sending ------------------------------------------------------------------------------------


@dataclass
class Sender:
    host: str
    port: int
    conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def send(self, method: str, target: str, body: bytes | None, headers: dict[str, str]):
        """(status, body bytes, headers); retries once on a dropped keep-alive connection."""
        for attempt in (1, 2):
            conn = self._connect()
            try:
                conn.putrequest(method, target, skip_accept_encoding=True)
                for k, val in headers.items():
                    conn.putheader(k, val)
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders()
                if body is not None:
                    try:
                        conn.send(body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the server may answer (413) before reading it all
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, data, dict(resp.getheaders())
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                self.close()
                if attempt == 2:
                    raise
            except TimeoutError:
                self.close()
                raise
        raise AssertionError("unreachable")


def _sanitise_query(query: str) -> str:
    """Long polls would stall the sweep: cap timeout/timeout_ms given as plain integers."""
    return re.sub(r"(?<![^&])(timeout(?:_ms)?)=(\d{3,})", r"\1=50", query)


def check_response(status: int, data: bytes) -> str | None:
    """None if the response is acceptable, else what is wrong with it."""
    if status >= 500:
        return f"status {status}"
    if status < 400:
        return None
    try:
        body = json.loads(data)
    except ValueError:
        return f"status {status} with a non-JSON body"
    if not isinstance(body, dict):
        return f"status {status} with a non-object body"
    if status == 401 and "flows" in body:
        return None  # User-Interactive Authentication
    if not isinstance(body.get("errcode"), str) or not isinstance(body.get("error"), str):
        return f"status {status} without errcode/error"
    return None


# -- the test -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def junk_server(tmp_path_factory):
    # Rate limits lifted: thousands of requests from one user are the test's method, and a 429
    # would answer junk before the handler it is meant for sees it.
    srv = ServerThread(tmp_path_factory.mktemp("junk") / "data", guard=NO_RATE_LIMITS).start()
    yield srv
    srv.stop()


def make_run(route, param_strategies: dict, queries, bodies, examples: int, fire):
    """A Hypothesis test that sends generated junk to one route."""

    @settings(
        max_examples=examples, deadline=None, database=None, derandomize=not RANDOM,
        suppress_health_check=list(HealthCheck), phases=[Phase.generate],
    )  # fmt: skip
    @given(
        params=st.fixed_dictionaries(param_strategies),
        body=bodies,
        query=queries,
        token_kind=st.sampled_from(TOKENS),
        content_type=st.sampled_from(CONTENT_TYPES),
    )
    def run(params, body, query, token_kind, content_type):
        fire(route, params, body, query, token_kind, content_type)

    return run


PARAM_RE = re.compile(r"\{(\w+)(\*?)\}")


def route_target(pattern: str, params: dict[str, str]) -> str:
    """The request path for a route pattern with these (already encoded) parameter values."""
    return PARAM_RE.sub(lambda m: params.get(m.group(1), "x"), pattern)


def test_every_route_survives_junk(junk_server):
    srv = junk_server
    routes = [r for r in srv.hs.router.routes if r.method != "HEAD"]
    assert routes, "no routes registered"
    sender = Sender("127.0.0.1", srv.hs.bound_port)
    failures: dict[tuple, dict] = {}
    world = build_world(srv)
    started = time.monotonic()
    sent = 0
    route_time: dict[str, float] = {}
    statuses: dict[int, int] = {}
    ok_routes: set[str] = set()

    def record(route, problem, method, target, body, token_kind, status_body):
        key = (route.method, route.name, problem)
        if key not in failures:
            failures[key] = {
                "route": f"{route.method} {route.name}",
                "problem": problem,
                "request": f"{method} {target[:300]}",
                "body": (body or b"")[:300],
                "token": token_kind,
                "response": status_body[:300],
            }

    def fire(route, params: dict[str, str], body: bytes | None, query: str, token_kind: str,
             content_type: str) -> None:  # fmt: skip
        nonlocal sent
        target = route_target(route.name, params)
        query = _sanitise_query(query)
        headers = {}
        if token_kind == "valid":
            headers["Authorization"] = f"Bearer {world.token}"
        elif token_kind == "unknown":
            headers["Authorization"] = "Bearer " + secrets.token_urlsafe(24)
        elif token_kind == "basic":
            headers["Authorization"] = "Basic YTpi"
        elif token_kind == "empty":
            headers["Authorization"] = "Bearer "
        elif token_kind == "query":
            query = (query + "&" if query else "") + "access_token=" + _enc(world.token)
        if content_type:
            headers["Content-Type"] = content_type
        if query:
            target += "?" + query
        if len(target) > 8000:
            # aiohttp refuses request lines over 8 KiB before any handler (400, not ours).
            target = target[:8000].rsplit("%", 1)[0] if "%" in target[7990:] else target[:8000]
        t0 = time.monotonic()
        try:
            status, data, _ = sender.send(route.method, target, body, headers)
        except TimeoutError:
            record(route, "no answer within the timeout", route.method, target, body,
                   token_kind, b"")  # fmt: skip
            return
        except (ConnectionError, http.client.HTTPException) as e:
            record(route, f"connection failed: {e!r}", route.method, target, body, token_kind,
                   b"")  # fmt: skip
            return
        finally:
            sent += 1
            route_time[route.method + " " + route.name] = (
                route_time.get(route.method + " " + route.name, 0.0) + time.monotonic() - t0
            )
        statuses[status] = statuses.get(status, 0) + 1
        if status < 300:
            ok_routes.add(route.method + " " + route.name)
        problem = check_response(status, data)
        if problem:
            record(route, problem, route.method, target, body, token_kind, data)

    def real_params(route) -> dict[str, str]:
        return {name: _enc(world.values.get(name, "x")) for name, _ in PARAM_RE.findall(route.name)}

    # 1. The catalogue, with real IDs and a valid token, on every route.
    for route in routes:
        base = baseline_query(route.name, world.values)
        template = baseline_body(route.method, route.name, world.values)
        if template is not None:
            fire(route, real_params(route), _dumps(template), base, "valid", "application/json")
        for _, body in BODY_CATALOGUE:
            fire(route, real_params(route), body, base, "valid", "application/json")
        if not world_is_usable(srv, world):
            world = build_world(srv)
    catalogue_time = time.monotonic() - started
    per_request = catalogue_time / max(sent, 1)

    # 2. Generated junk, per route, within the remaining budget.
    # The cost of one generated example (generation included) is learnt as we go, and the
    # remaining budget is shared out among the remaining routes.
    per_example = max(per_request * 3, 0.002)
    generated = 0
    generated_time = 0.0
    for i, route in enumerate(routes):
        remaining = BUDGET_S - (time.monotonic() - started)
        examples = int(remaining / per_example / (len(routes) - i))
        examples = max(MIN_EXAMPLES_PER_ROUTE, min(MAX_EXAMPLES_PER_ROUTE, examples))
        names = [name for name, _ in PARAM_RE.findall(route.name)]
        param_strategies = {
            name: st.one_of(
                st.just(_enc(world.values.get(name, "x"))),
                st.just(_enc(world.values.get(name, "x"))),
                segment_strategy,
                st.sampled_from([_enc(x) for x in world.values.values()]),
            )
            for name in names
        }
        base = baseline_query(route.name, world.values)
        queries = st.one_of(
            query_strategy,
            st.just(base),
            query_strategy.map(lambda q, base=base: "&".join(x for x in (base, q) if x)),
        )
        t0 = time.monotonic()
        template = baseline_body(route.method, route.name, world.values)
        bodies = (
            body_strategy if template is None else st.one_of(mutations(template), body_strategy)
        )
        make_run(route, param_strategies, queries, bodies, examples, fire)()
        generated_time += time.monotonic() - t0
        generated += examples
        per_example = generated_time / generated
        if not world_is_usable(srv, world):
            world = build_world(srv)

    # 3. Paths and methods that match no route.
    for method, path in [
        ("GET", "/"), ("GET", "/_matrix"), ("GET", "/_matrix/client/v3/nonexistent"),
        ("PATCH", "/_matrix/client/versions"), ("DELETE", "/_matrix/client/versions"),
        ("GET", "/_matrix/client/v3/rooms/%00/%FF"),
        ("GET", "/" + "a/" * 2000), ("GET", "/%0D%0ASet-Cookie:%20x"),
    ]:  # fmt: skip
        status, data, _ = sender.send(method, path, None, {})
        assert status in (404, 405), (method, path, status)
        assert check_response(status, data) is None, (method, path, data[:200])

    sender.close()
    # The server is still up and well.
    r = Client(srv.base_url).request("GET", "/_matrix/client/versions")
    assert r.status == 200 and "versions" in r.body
    elapsed = time.monotonic() - started
    print(f"\njunk: {len(routes)} routes, {sent} requests ({generated} generated), "
          f"{elapsed:.1f} s")  # fmt: skip
    if os.environ.get("BASTION_JUNK_PROFILE"):
        print(f"catalogue {catalogue_time:.1f} s; statuses {sorted(statuses.items())}")
        never_ok = sorted({r.method + " " + r.name for r in routes} - ok_routes)
        print(f"routes never answered 2xx: {never_ok}")
        for name, t in sorted(route_time.items(), key=lambda kv: -kv[1])[:25]:
            print(f"{t:7.2f} s  {name}")
    if failures:
        lines = [
            f"- {f['route']}: {f['problem']}\n    request: {f['request']}\n"
            f"    token: {f['token']}  body: {f['body']!r}\n    response: {f['response']!r}"
            for f in failures.values()
        ]
        pytest.fail(f"{len(failures)} route(s) mishandled junk:\n" + "\n".join(lines))
