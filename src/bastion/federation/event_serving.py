"""Serving events to other servers (S-S API "Retrieving events", "Backfilling and retrieving
missing events", "Server Access Control Lists (ACLs)"; C-S module "History visibility", "Server
behaviour").

Rules for every read: the room's server ACL must allow the requesting server (403); the server
must be in the room — a user of it joined in the state at the event asked about (or in the
room's current state for room-wide reads) — otherwise 403 ``M_FORBIDDEN``; rejected events are
never served (404, and left out of lists); an event the server may not see under the history
visibility at that event is served redacted, so the DAG stays walkable without leaking content.
"""

from __future__ import annotations

from bastion.core.events import redact
from bastion.core.identifiers import server_name_of
from bastion.core.pdu_checks import server_may_see
from bastion.core.room_versions import get_room_version
from bastion.core.state_keys import HISTORY_VISIBILITY_KEY as HV_KEY
from bastion.errors import forbidden, not_found
from bastion.federation.acl import FederationACL
from bastion.storage.interface import Store

MAX_BACKFILL = 100
MAX_MISSING = 50


class EventServing:
    def __init__(self, store: Store, acl: FederationACL) -> None:
        self.store = store
        self.acl = acl

    # -- access ---------------------------------------------------------------------------------
    def _memberships_of_server(self, state: dict, server: str) -> list[str | None]:
        ids = [eid for (t, k), eid in state.items()
               if t == "m.room.member" and server_name_of(k) == server]  # fmt: skip
        evs = self.store.get_pdus(ids)
        return [e.get("content", {}).get("membership") for e in evs.values()]

    def require_room_access(self, room_id: str, origin: str) -> str:
        """The room's version, after the ACL and "server is in the room" checks."""
        version = self.store.get_room_version(room_id)
        if version is None:
            raise forbidden("this server is not in that room")
        self.acl.require_room(room_id, origin)
        state = self.store.get_current_state_ids(room_id)
        if "join" not in self._memberships_of_server(state, origin):
            raise forbidden("your server is not in this room")
        return version

    def _event_and_state(self, event_id: str, room_id: str | None = None):
        meta = self.store.get_event_meta([event_id]).get(event_id)
        if meta is None or meta.rejected or (room_id is not None and meta.room_id != room_id):
            raise not_found("event not found")
        ev = self.store.get_pdus([event_id]).get(event_id)
        if ev is None:
            raise not_found("event not found")
        return meta, ev

    def _may_see(self, ev: dict, state_before: dict, origin: str) -> bool:
        """Whether ``origin`` may see the whole event (history visibility at the event)."""
        hv = self.store.get_pdus([state_before[HV_KEY]]).get(state_before[HV_KEY]) if (
            HV_KEY in state_before
        ) else None  # fmt: skip
        vis = [(hv or {}).get("content", {}).get("history_visibility")]
        if ev.get("type") == "m.room.history_visibility" and ev.get("state_key") == "":
            vis.append(ev.get("content", {}).get("history_visibility"))
        mems = self._memberships_of_server(state_before, origin)
        return any(server_may_see(v, mems) for v in vis)

    def _visible(self, ev: dict, state_before: dict, origin: str, version: str) -> dict:
        """The event as ``origin`` may see it: whole, or redacted."""
        if self._may_see(ev, state_before, origin):
            return ev
        return redact(ev, version)

    def _auth_chain(self, event_ids: list[str], room_id: str, version: str) -> set[str]:
        """The auth chain of the events; in v12 the create event, never listed in
        ``auth_events``, is part of every chain."""
        chain = self.store.get_auth_chain_ids(event_ids)
        create_id = "$" + room_id[1:]
        if get_room_version(version).room_id_is_create_hash and event_ids != [create_id]:
            chain.add(create_id)
        return chain

    # -- endpoints -----------------------------------------------------------------------------
    def get_event(self, origin: str, event_id: str) -> dict:
        meta, ev = self._event_and_state(event_id)
        version = self.require_room_access(meta.room_id, origin)
        state = self.store.get_state_group(meta.sg_before)
        if meta.outlier:
            state = self.store.get_current_state_ids(meta.room_id)
        return self._visible(ev, state, origin, version)

    #: timestamp_to_event looks at most this many events (pages of 50) for a visible one.
    TS_SCAN_PAGES = 20

    def timestamp_to_event(
        self, origin: str, room_id: str, ts: int, forwards: bool
    ) -> tuple[str, int] | None:
        """GET /v1/timestamp_to_event/{roomId}: (event ID, origin_server_ts) of the event
        closest to ``ts`` in the direction asked that ``origin`` may see whole — the rule
        :meth:`get_event` serves events unredacted by — after the ACL and "server is in the
        room" checks; None when there is none (among the first ``TS_SCAN_PAGES`` pages)."""
        self.require_room_access(room_id, origin)
        key: tuple[int, int] | None = None
        for _ in range(self.TS_SCAN_PAGES):
            rows = self.store.get_room_events_by_ts(room_id, ts, forwards=forwards, after=key)
            if not rows:
                return None
            metas = self.store.get_event_meta([r.event_id for r in rows])
            for r in rows:
                meta = metas.get(r.event_id)
                if meta is None or meta.outlier:
                    continue  # the state at an outlier is not known here
                if self._may_see(r.event, self.store.get_state_group(r.sg_before), origin):
                    return r.event_id, r.event.get("origin_server_ts", 0)
            key = (rows[-1].event.get("origin_server_ts", 0), rows[-1].stream_pos)
            if len(rows) < 50:
                return None
        return None

    def state_ids(self, origin: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        """The state before ``event_id`` and the auth chain of that state (IDs)."""
        version = self.require_room_access(room_id, origin)
        meta, _ = self._event_and_state(event_id, room_id)
        if meta.outlier:
            raise not_found("the state at that event is not known here")
        state = self.store.get_state_group(meta.sg_before)
        ids = list(state.values())
        chain = self._auth_chain(ids, room_id, version) if ids else set()
        rejected = {e for e, m in self.store.get_event_meta(chain).items() if m.rejected}
        return ids, sorted(chain - rejected)

    def state(self, origin: str, room_id: str, event_id: str) -> tuple[list[dict], list[dict]]:
        ids, chain = self.state_ids(origin, room_id, event_id)
        evs = self.store.get_pdus(ids)
        chain_evs = self.store.get_pdus(chain)
        return [evs[i] for i in ids if i in evs], [chain_evs[i] for i in chain if i in chain_evs]

    def event_auth(self, origin: str, room_id: str, event_id: str) -> list[dict]:
        version = self.require_room_access(room_id, origin)
        self._event_and_state(event_id, room_id)
        chain = self._auth_chain([event_id], room_id, version)
        evs = self.store.get_pdus(chain)
        return sorted(evs.values(), key=lambda e: (e.get("depth", 0), e.get("origin_server_ts", 0)))

    def _walk_back(
        self, room_id: str, starts: list[str], stop: set[str], limit: int, min_depth: int,
        include_starts: bool,
    ) -> list[str]:  # fmt: skip
        """Events reached backwards over prev_events from ``starts``, deepest first, at most
        ``limit``; never through ``stop`` or below ``min_depth``; rejected ones never."""
        import heapq

        metas = self.store.get_event_meta(starts)
        heap: list[tuple[int, str]] = []
        seen: set[str] = set()
        if include_starts:
            for s in starts:
                m = metas.get(s)
                if m is not None and m.room_id == room_id and s not in seen:
                    seen.add(s)
                    heapq.heappush(heap, (-m.depth, s))
        else:
            for s, prevs in self.store.get_prev_ids(starts).items():
                if s not in metas or metas[s].room_id != room_id:
                    continue
                pm = self.store.get_event_meta(prevs)
                for p, m in pm.items():
                    if p not in seen and p not in stop and m.room_id == room_id:
                        seen.add(p)
                        heapq.heappush(heap, (-m.depth, p))
        out: list[str] = []
        while heap and len(out) < limit:
            negd, eid = heapq.heappop(heap)
            if -negd < min_depth:
                continue
            meta = self.store.get_event_meta([eid]).get(eid)
            if meta is None or meta.rejected:
                continue
            out.append(eid)
            prevs = self.store.get_prev_ids([eid]).get(eid, [])
            for p, prev_meta in self.store.get_event_meta(prevs).items():
                if p not in seen and p not in stop and prev_meta.room_id == room_id:
                    seen.add(p)
                    heapq.heappush(heap, (-prev_meta.depth, p))
        return out

    def _serve(self, origin: str, ids: list[str], version: str) -> list[dict]:
        evs = self.store.get_pdus(ids)
        metas = self.store.get_event_meta(ids)
        out = []
        for eid in ids:
            ev, m = evs.get(eid), metas.get(eid)
            if ev is None or m is None:
                continue
            state = self.store.get_state_group(m.sg_before) if not m.outlier else {}
            out.append(self._visible(ev, state, origin, version))
        return out

    def backfill(self, origin: str, room_id: str, from_ids: list[str], limit: int) -> list[dict]:
        version = self.require_room_access(room_id, origin)
        ids = self._walk_back(room_id, from_ids, set(), min(limit, MAX_BACKFILL), 0, True)
        return self._serve(origin, ids, version)

    def get_missing_events(
        self, origin: str, room_id: str, earliest: list[str], latest: list[str], limit: int,
        min_depth: int,
    ) -> list[dict]:  # fmt: skip
        version = self.require_room_access(room_id, origin)
        ids = self._walk_back(
            room_id, latest, set(earliest), min(limit, MAX_MISSING), min_depth, False
        )
        ids.reverse()  # oldest first
        return self._serve(origin, ids, version)
