"""Room membership across servers (``hs.federation.membership``): S-S API "Joining Rooms",
"Restricted rooms", "Leaving Rooms (Rejecting Invites)", "Inviting to a room", "Knocking upon a
room", and "Backfilling and retrieving missing events" for /messages.

As the *resident* server (a room we are in) it answers ``make_join``/``make_leave``/
``make_knock`` with an event template on top of the room's current state, and accepts
``send_join``/``send_leave``/``send_knock``: the event goes through the inbound checks
(``hs.federation.events.process_incoming_pdu``), is forwarded to the other servers in the room
through the outbound queue, and the joining server gets the state and auth chain. As the
*invitee's* server it checks and countersigns invites (``PUT /v2/invite``) and keeps them, with
their stripped state, for the invitee's /sync.

As the *joining* server it runs the handshakes for a local user who joins, knocks on or leaves
(rejects an invite to) a room this server is not in, sends a remote invite from a local room,
resolves remote aliases (``GET /v1/query/directory``), and backfills a room we joined over
federation when a client paginates past our earliest event.

Every entry point checks the room's ``m.room.server_acl`` and the server-wide allow/deny list
(403 ``M_FORBIDDEN``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bastion.core.auth_rules import JAUVS
from bastion.core.events import (
    compute_event_id,
    compute_room_id_v12,
    sign_event,
    validate_pdu,
    verify_event_signature,
)
from bastion.core.identifiers import (
    is_valid_server_name,
    parse_room_alias,
    parse_user_id,
    server_name_of,
)
from bastion.core.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from bastion.core.signing import SignatureError, signing_key_ids
from bastion.errors import (
    M_FORBIDDEN,
    M_INCOMPATIBLE_ROOM_VERSION,
    M_NOT_FOUND,
    M_UNKNOWN,
    MatrixError,
    bad_json,
    forbidden,
    invalid_param,
    not_found,
)
from bastion.federation.resolver import FederationError
from bastion.services.rooms import STRIPPED_TYPES

if TYPE_CHECKING:
    from bastion.federation.container import Federation
    from bastion.server import HomeServer

log = logging.getLogger("bastion.federation.membership")

#: Room versions we can join over federation (our event building needs v3+ event IDs).
JOINABLE_VERSIONS = tuple(v for v in KNOWN_ROOM_VERSIONS if v not in ("1", "2"))
MAX_CANDIDATE_SERVERS = 10
MAX_INVITE_STATE = 50
HANDSHAKE_TIMEOUT = 60.0
BACKFILL_LIMIT = 100
BACKFILL_RETRY_S = 30.0


def stripped(ev: dict) -> dict:
    """C-S "Stripped state": only sender, type, state_key and content."""
    return {
        "type": ev.get("type"),
        "state_key": ev.get("state_key", ""),
        "sender": ev.get("sender"),
        "content": ev.get("content") if isinstance(ev.get("content"), dict) else {},
    }


class FederationMembership:
    def __init__(self, hs: HomeServer, fed: Federation) -> None:
        self.hs = hs
        self.fed = fed
        self.store = hs.store
        self._backfill_tried: dict[tuple[str, frozenset], float] = {}

    # ------------------------------------------------------------------------------------------
    # Shared checks
    # ------------------------------------------------------------------------------------------
    def is_in_room(self, room_id: str) -> bool:
        """Whether this server is in the room (a local user is joined)."""
        if not self.store.room_exists(room_id):
            return False
        return any(
            server_name_of(u) == self.hs.server_name for u in self.store.get_joined_users(room_id)
        )

    def _resident_room(self, room_id: str):
        if not self.is_in_room(room_id):
            raise not_found("unknown room")
        return self.hs.rooms.require_room(room_id)

    # ------------------------------------------------------------------------------------------
    # Resident server: make_join / make_leave / make_knock
    # ------------------------------------------------------------------------------------------
    def make_membership(
        self, origin: str, room_id: str, user_id: str, membership: str, versions: list[str] | None
    ) -> dict:
        """GET /v1/make_join, /v1/make_leave, /v1/make_knock: an unsigned template of the
        user's membership event on top of the room's current state, built by the room engine
        (its depth from the forward extremities, capped); a restricted join names the
        authoriser chosen by the one restricted-join authoriser
        (``hs.rooms.restricted_join_authoriser``)."""
        try:
            parse_user_id(user_id, historical=True)
        except MatrixError:
            raise invalid_param("invalid user ID") from None
        if server_name_of(user_id) != origin:
            raise forbidden("the user is not on the requesting server")
        head = self._resident_room(room_id)
        self.fed.acl.require_room(room_id, origin)
        version = head.room_version
        rv = get_room_version(version)
        if versions is not None and version not in versions:
            raise MatrixError(
                M_INCOMPATIBLE_ROOM_VERSION,
                "your server does not support this room's version",
                400,
                room_version=version,
            )
        if membership == "knock" and not rv.knock_join_rule:
            raise forbidden("this room version does not allow knocking")
        authoriser = None
        if membership == "join":
            authoriser = self.hs.rooms.restricted_join_authoriser(room_id, user_id)
        ev = self.hs.rooms.engine.membership_template(room_id, user_id, membership, authoriser)
        return {"room_version": version, "event": ev}

    # ------------------------------------------------------------------------------------------
    # Resident server: send_join / send_leave / send_knock
    # ------------------------------------------------------------------------------------------
    async def send_membership(
        self, origin: str, room_id: str, event_id: str, body: dict, membership: str
    ) -> tuple[dict, Any]:
        """PUT /v2/send_join, /v2/send_leave, /v1/send_knock: check the signed event, run it
        through the inbound checks, forward it to the room's other servers. Returns the event
        as accepted (with our signature on an authorised restricted join) and its metadata."""
        head = self._resident_room(room_id)
        self.fed.acl.require_room(room_id, origin)
        version = head.room_version
        ev = self._check_remote_event(body, version, room_id, event_id, membership)
        sender = ev["sender"]
        if server_name_of(sender) != origin or ev.get("state_key") != sender:
            raise invalid_param("the sender must be the state key, on your server")
        await self._verify(ev, version)
        authoriser = ev["content"].get(JAUVS)
        if (
            membership == "join"
            and isinstance(authoriser, str)
            and server_name_of(authoriser) == self.hs.server_name
        ):
            # S-S API "Restricted rooms": we sign for our user only after checking the room's
            # rule ourselves (403/400 when the joiner does not meet it).
            self.hs.rooms.restricted_join_authoriser(room_id, sender)
            sk = self.hs.signing_key
            ev = sign_event(ev, version, self.hs.server_name, sk.key_id, sk.key)
        # Pushed by its origin (not fetched): the guard's per-origin event rate limits apply.
        eid, error = await self.fed.events.process_incoming_pdu(origin, ev, version, pushed=True)
        meta = self.store.get_event_meta([event_id]).get(event_id)
        if error is not None or meta is None or meta.rejected or meta.soft_failed or meta.outlier:
            raise forbidden(f"the event was not accepted: {error or 'not allowed'}")
        await self.fed.sender.enqueue_pdu(ev, event_id, room_id, exclude=(origin,))
        return ev, meta

    def _check_remote_event(
        self, body: object, version: str, room_id: str, event_id: str, membership: str
    ) -> dict:
        if not isinstance(body, dict):
            raise bad_json("the body must be an event")
        ev = {k: v for k, v in body.items() if k != "unsigned"}
        try:
            validate_pdu(ev, version)
            computed = compute_event_id(ev, version)
        except MatrixError as e:
            raise invalid_param(f"malformed event: {e.message}") from None
        if computed != event_id:
            raise invalid_param("the event ID does not match the event")
        if ev.get("room_id") != room_id:
            raise invalid_param("the event is not in this room")
        if ev.get("type") != "m.room.member" or not isinstance(ev.get("state_key"), str):
            raise invalid_param("the event is not a membership event")
        if ev["content"].get("membership") != membership:
            raise invalid_param(f"the membership is not {membership}")
        return ev

    async def _verify(self, ev: dict, version: str) -> None:
        try:
            hash_ok = await self.fed.keyring.verify_event_signatures(ev, version)
        except (SignatureError, MatrixError) as e:
            raise invalid_param(f"signature check failed: {e.message}") from None
        if not hash_ok:
            raise invalid_param("the event's content hash does not match")

    def join_response(self, ev: dict, meta: Any) -> dict:
        """The send_join v2 response: the state before the join and its auth chain."""
        state_ids = list(self.hs.rooms.state_at_group(meta.sg_before).values())
        chain = self.store.get_auth_chain_ids([*state_ids, compute_event_id(ev, self._v(ev))])
        chain -= set(state_ids)
        pdus = self.store.get_pdus([*state_ids, *chain])
        return {
            "origin": self.hs.server_name,
            "state": [pdus[e] for e in state_ids if e in pdus],
            "auth_chain": [pdus[e] for e in chain if e in pdus],
            "event": ev,
            "members_omitted": False,
            "servers_in_room": sorted(self.store.joined_servers(meta.room_id)),
        }

    def _v(self, ev: dict) -> str:
        return self.store.get_room_version(ev["room_id"]) or "10"

    def knock_response(self, room_id: str) -> dict:
        return {"knock_room_state": self.invite_room_state(room_id, None)}

    def invite_room_state(self, room_id: str, extra: dict | None) -> list[dict]:
        """The room's create, join rules, name, avatar, canonical alias, encryption and topic
        events as PDUs (S-S API "Inviting to a room": formatted per room version since 1.16)."""
        state = self.hs.rooms.require_room(room_id).state
        ids = [state[(t, "")] for t in STRIPPED_TYPES if (t, "") in state]
        pdus = self.store.get_pdus(ids)
        out = [pdus[e] for e in ids if e in pdus]
        if extra is not None:
            out.append(extra)
        return out

    # ------------------------------------------------------------------------------------------
    # Invitee's server: PUT /v2/invite
    # ------------------------------------------------------------------------------------------
    async def on_invite(self, origin: str, room_id: str, event_id: str, body: dict) -> dict:
        """PUT /v2/invite/{roomId}/{eventId}: check and countersign an invite of a local user;
        keep it with its stripped state for the user's /sync."""
        self.fed.acl.require_server(origin)
        version = body.get("room_version")
        if not isinstance(version, str):
            raise bad_json("'room_version' must be a string")
        if version not in JOINABLE_VERSIONS:
            raise MatrixError(M_INCOMPATIBLE_ROOM_VERSION, "this server does not support the room's version", 400, room_version=version)  # fmt: skip
        ev = self._check_remote_event(body.get("event"), version, room_id, event_id, "invite")
        if server_name_of(ev["sender"]) != origin:
            raise invalid_param("the inviter is not on your server")
        invitee = ev["state_key"]
        if server_name_of(invitee) != self.hs.server_name:
            raise invalid_param("the invitee is not on this server")
        if not self.store.user_exists(invitee):
            raise not_found("unknown user")
        in_room = self.is_in_room(room_id)
        if in_room:
            self.fed.acl.require_room(room_id, origin)
            if self.hs.rooms.membership_of(room_id, invitee) in ("join", "ban"):
                raise forbidden("the user is already in the room or banned")
        await self._verify(ev, version)
        state = await self._check_invite_state(body.get("invite_room_state"), version, room_id)
        sk = self.hs.signing_key
        signed = sign_event(ev, version, self.hs.server_name, sk.key_id, sk.key)
        if not in_room:
            await self.store.transaction(
                lambda conn: self.store.store_out_of_room_membership_in(
                    conn, signed, event_id, room_id, version, state
                )
            )
        # In the room already: the inviting server also sends the invite in a transaction,
        # where the inbound checks persist it (S-S API invites-v2: "receive the invite twice").
        return {"event": signed}

    async def _check_invite_state(self, raw: object, version: str, room_id: str) -> list[dict]:
        """invite_room_state (S-S API invites-v2, 1.16): PDUs of the room including its
        m.room.create; re-stripped for the client. Stripped entries from older servers are
        accepted in room versions before 12."""
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise invalid_param("'invite_room_state' must be an array")
        strict = version not in ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11")
        out: list[dict] = []
        has_create = False
        for entry in raw[:MAX_INVITE_STATE]:
            if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
                raise invalid_param("invite_room_state entries must be events")
            is_pdu = "signatures" in entry and "hashes" in entry
            if is_pdu:
                try:
                    validate_pdu(entry, version)
                except MatrixError as e:
                    raise invalid_param(f"invite_room_state: {e.message}") from None
                if (
                    entry["type"] == "m.room.create"
                    and get_room_version(version).room_id_is_create_hash
                ):
                    if compute_room_id_v12(entry) != room_id:
                        raise invalid_param("the create event is not this room's")
                elif entry.get("room_id") != room_id:
                    raise invalid_param("an invite_room_state event is in another room")
                await self._verify(entry, version)
            elif strict:
                raise invalid_param("invite_room_state entries must be PDUs")
            has_create = has_create or entry["type"] == "m.room.create"
            out.append(stripped(entry))
        if strict and not has_create:
            raise invalid_param("invite_room_state has no m.room.create event")
        return out

    def out_of_room_stripped_state(self, event_id: str) -> list[dict] | None:
        """For /sync: the stripped state of an invite/knock of a room we are not in, with the
        membership event itself (C-S "Stripped state"), or None."""
        import orjson

        row = self.store.get_out_of_room_membership(event_id)
        if row is None:
            return None
        ev = orjson.loads(row["event"])
        return [*orjson.loads(row["stripped_state"]), stripped(ev)]

    # ------------------------------------------------------------------------------------------
    # Joining server: candidates, aliases
    # ------------------------------------------------------------------------------------------
    def candidate_servers(self, room_id: str, user_id: str, via: list[str] | None) -> list[str]:
        """Servers to try for a handshake: ``via``, the sender of the user's pending invite,
        the room ID's server (before v12), and the servers of members we last saw joined."""
        out: list[str] = []
        for s in via or []:
            if isinstance(s, str) and is_valid_server_name(s):
                out.append(s)
        row = self.store.get_latest_out_of_room_membership(room_id, user_id)
        if row is not None:
            import orjson

            out.append(server_name_of(orjson.loads(row["event"]).get("sender")) or "")
        mem = self.store.get_membership(room_id, user_id)
        if mem is not None:
            ev = self.store.get_event(mem["event_id"])
            if ev is not None:
                out.append(server_name_of(ev.get("sender")) or "")
        if ":" in room_id:
            out.append(server_name_of(room_id) or "")
        if self.store.room_exists(room_id):
            out.extend(sorted(self.store.joined_servers(room_id)))
        seen = []
        for s in out:
            if s and s != self.hs.server_name and s not in seen:
                seen.append(s)
        return seen[:MAX_CANDIDATE_SERVERS]

    async def query_directory(self, alias: str) -> tuple[str, list[str]]:
        """GET /v1/query/directory on the alias's server (S-S API "Querying for information"):
        (room_id, servers). 404 ``M_NOT_FOUND`` when it is unknown or unreachable."""
        server = parse_room_alias(alias).domain
        if not self.fed.sender.destination_allowed(server):
            raise not_found("room alias not found")
        try:
            status, body = await self.fed.client.request(
                "GET", server, "/_matrix/federation/v1/query/directory",
                query={"room_alias": alias}, timeout=30,
            )  # fmt: skip
        except FederationError:
            raise not_found("room alias not found (its server is unreachable)") from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("room_id"), str):
            raise not_found("room alias not found")
        servers = body.get("servers")
        servers = [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []
        return body["room_id"], [server, *servers]

    # ------------------------------------------------------------------------------------------
    # Joining server: the handshakes
    # ------------------------------------------------------------------------------------------
    async def remote_membership(
        self, user_id: str, room_id: str, membership: str, content: dict, servers: list[str]
    ) -> str:
        """Join, knock on or leave a room this server is not in through one of ``servers``
        (make_* then send_*). Returns the event ID."""
        if not servers:
            raise not_found("no server to reach the room through")
        last: MatrixError | None = None
        for server in servers:
            if not self.fed.sender.destination_allowed(server):
                continue
            try:
                return await self._handshake(server, user_id, room_id, membership, content)
            except _TryNext as e:
                last = e.error
                log.info("%s of %s via %s failed: %s", membership, room_id, server, e.error.message)
        if last is not None and last.errcode not in (M_UNKNOWN, M_NOT_FOUND):
            raise last
        raise (
            MatrixError(M_UNKNOWN, f"no server could {membership} the room", 502)
            if last
            else not_found("no server to reach the room through")
        )

    async def _request(self, method: str, server: str, path: str, body=None, query=None):
        try:
            status, resp = await self.fed.client.request(
                method, server, path, body, query, timeout=HANDSHAKE_TIMEOUT
            )
        except FederationError as e:
            raise _TryNext(MatrixError(M_UNKNOWN, f"{server} is unreachable: {e}", 502)) from None
        if status != 200 or not isinstance(resp, dict):
            errcode = resp.get("errcode") if isinstance(resp, dict) else None
            message = resp.get("error") if isinstance(resp, dict) else None
            extra = {}
            if isinstance(resp, dict) and isinstance(resp.get("room_version"), str):
                extra["room_version"] = resp["room_version"]
            code = errcode if isinstance(errcode, str) else M_UNKNOWN
            st = status if 400 <= status < 500 else 502
            raise _TryNext(
                MatrixError(code, str(message or f"{server} answered {status}")[:300], st, **extra)
            )
        return resp

    async def _handshake(
        self, server: str, user_id: str, room_id: str, membership: str, content: dict
    ) -> str:
        q_room, q_user = quote(room_id, safe=""), quote(user_id, safe="")
        make = {"join": "make_join", "leave": "make_leave", "knock": "make_knock"}[membership]
        query = {"ver": list(JOINABLE_VERSIONS)} if membership != "leave" else None
        resp = await self._request(
            "GET", server, f"/_matrix/federation/v1/{make}/{q_room}/{q_user}", query=query
        )
        version = resp.get("room_version", "1")
        template = resp.get("event")
        if version not in JOINABLE_VERSIONS:
            raise _TryNext(MatrixError(M_INCOMPATIBLE_ROOM_VERSION, "unsupported room version", 400, room_version=str(version)))  # fmt: skip
        if not (
            isinstance(template, dict)
            and template.get("room_id") == room_id
            and template.get("sender") == user_id
            and template.get("state_key") == user_id
            and template.get("type") == "m.room.member"
            and isinstance(template.get("content"), dict)
            and template["content"].get("membership") == membership
        ):
            raise _TryNext(
                MatrixError(M_UNKNOWN, f"{server} sent a malformed {make} template", 502)
            )
        ev = {
            k: v for k, v in template.items() if k not in ("signatures", "hashes", "unsigned",
                                                            "event_id")
        }  # fmt: skip
        ev["content"] = {**content, **template["content"]}
        ev["origin"] = self.hs.server_name
        ev["origin_server_ts"] = self.hs.now_ms()
        sk = self.hs.signing_key
        try:
            signed = sign_event(ev, version, self.hs.server_name, sk.key_id, sk.key)
            validate_pdu(signed, version)
            event_id = compute_event_id(signed, version)
        except MatrixError as e:
            raise _TryNext(
                MatrixError(M_UNKNOWN, f"bad {make} template: {e.message}", 502)
            ) from None
        send = {"join": "v2/send_join", "leave": "v2/send_leave", "knock": "v1/send_knock"}[
            membership
        ]
        path = f"/_matrix/federation/{send}/{q_room}/{quote(event_id, safe='')}"
        send_query = {"omit_members": "false"} if membership == "join" else None
        resp = await self._request("PUT", server, path, signed, send_query)
        if membership == "join":
            event = resp.get("event")
            if isinstance(event, dict):
                try:
                    same = compute_event_id(event, version) == event_id
                except MatrixError:
                    same = False
                if same:
                    signed = event
            await self.fed.events.process_room_state(
                server, room_id, version, resp.get("state"), resp.get("auth_chain"), signed
            )
            return event_id
        state: list[dict] = []
        if membership == "knock":
            raw = resp.get("knock_room_state")
            state = [stripped(e) for e in raw[:MAX_INVITE_STATE] if isinstance(e, dict)] if (
                isinstance(raw, list)
            ) else []  # fmt: skip
        await self.store.transaction(
            lambda conn: self.store.store_out_of_room_membership_in(
                conn, signed, event_id, room_id, version, state
            )
        )
        return event_id

    # ------------------------------------------------------------------------------------------
    # Inviting a remote user from a local room
    # ------------------------------------------------------------------------------------------
    async def remote_invite(self, event: dict, event_id: str, room_id: str, version: str) -> dict:
        """PUT /v2/invite to the invitee's server; returns our event with its signature added
        (checked). Errors: 403 when refused, 502 when unreachable or the answer is bad."""
        invitee_server = parse_user_id(event["state_key"], historical=True).server_name
        if not self.fed.sender.destination_allowed(invitee_server):
            raise forbidden("this server does not federate with the invitee's")
        body = {
            "room_version": version,
            "event": event,
            "invite_room_state": self.invite_room_state(room_id, None),
        }
        path = f"/_matrix/federation/v2/invite/{quote(room_id, safe='')}/{quote(event_id, safe='')}"
        try:
            resp = await self._request("PUT", invitee_server, path, body)
        except _TryNext as e:
            if e.error.status >= 500:
                raise e.error from None
            raise MatrixError(e.error.errcode if e.error.errcode != M_UNKNOWN else M_FORBIDDEN,
                      f"the invitee's server refused: {e.error.message}", 403) from None  # fmt: skip
        returned = resp.get("event")
        if not isinstance(returned, dict):
            raise MatrixError(M_UNKNOWN, "the invitee's server sent no event", 502)
        sigs = returned.get("signatures")
        theirs = sigs.get(invitee_server) if isinstance(sigs, dict) else None
        if not isinstance(theirs, dict) or not theirs:
            raise MatrixError(M_UNKNOWN, "the invitee's server did not sign the invite", 502)
        merged = dict(event)
        merged["signatures"] = {**event["signatures"], invitee_server: theirs}
        keys = await self.fed.keyring.get_verify_keys(
            invitee_server, signing_key_ids(merged, invitee_server), self.hs.now_ms()
        )
        for key_id, key in keys.items():
            try:
                verify_event_signature(merged, version, invitee_server, key_id, key.key)
                return merged
            except (SignatureError, MatrixError):
                continue
        raise MatrixError(M_UNKNOWN, "the invitee's server's signature does not verify", 502)

    # ------------------------------------------------------------------------------------------
    # Backfill for /messages
    # ------------------------------------------------------------------------------------------
    async def maybe_backfill(self, room_id: str, from_pos: int | None, limit: int) -> int:
        """S-S API "Backfilling": when fewer than ``limit`` events remain before ``from_pos``
        in a room we share with other servers and our history has gaps (prev events we do not
        hold), ask a server in the room for up to 100 earlier events and run them through the
        inbound checks. Bounded: one attempt per room and gap every 30 s. Returns how many
        events were accepted."""
        inbound = self.fed.events
        if not self.store.room_exists(room_id):
            return 0
        servers = [
            s for s in sorted(self.store.joined_servers(room_id))
            if self.fed.sender.destination_allowed(s)
        ]  # fmt: skip
        if not servers:
            return 0
        have = self.store.get_room_events(room_id, upto=from_pos, limit=limit + 1)
        if len(have) > limit:
            return 0
        gaps = self.store.backward_extremities(room_id)
        if not gaps:
            return 0
        key = (room_id, frozenset(gaps))
        now = time.monotonic()
        if self._backfill_tried.get(key, 0) > now:
            return 0
        if len(self._backfill_tried) > 10000:
            self._backfill_tried.clear()
        self._backfill_tried[key] = now + BACKFILL_RETRY_S
        version = self.store.get_room_version(room_id) or ""
        n = min(BACKFILL_LIMIT, max(limit * 2, 20))
        for server in servers[:3]:
            try:
                status, body = await self.fed.client.request(
                    "GET", server, f"/_matrix/federation/v1/backfill/{quote(room_id, safe='')}",
                    query={"v": gaps, "limit": str(n)}, timeout=30,
                )  # fmt: skip
            except FederationError as e:
                log.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            pdus = body.get("pdus") if status == 200 and isinstance(body, dict) else None
            if not isinstance(pdus, list):
                continue
            candidates: dict[str, dict] = {}
            for pdu in pdus[:n]:
                if not isinstance(pdu, dict) or pdu.get("type") == "m.room.create":
                    continue  # we hold the create event: it is in every state
                try:
                    candidates[compute_event_id(pdu, version)] = pdu
                except MatrixError:
                    continue
            known = self.store.get_event_meta(candidates)
            todo = {e: p for e, p in candidates.items() if e not in known or known[e].outlier}
            # One batch, checked oldest first, positioned so /messages pages through it in order.
            return await inbound.process_backfill(server, version, todo)
        return 0


class _TryNext(Exception):
    def __init__(self, error: MatrixError) -> None:
        super().__init__(error.message)
        self.error = error
