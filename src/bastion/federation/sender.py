"""The outbound transaction queue (S-S API "Transactions", "PDUs", "EDUs").

``hs.federation.sender``:

* Every event this server creates in a room is queued, *in the write that persists it*
  (:meth:`FederationSender.enqueue_events_in`, called by the room engine), for every other
  server with a joined member in the room, and for the target's server of an invite, knock,
  leave or ban. So an event acknowledged to a client is on disk in the queue as well.
* :meth:`send_edu` queues an EDU (``key``: an unsent EDU of the same type and key for the same
  destination is replaced, e.g. typing in one room); :meth:`send_edu_in` does it inside a
  caller's write.
* One asyncio task per destination, started on demand, sends the queue in order in
  transactions of at most 50 PDUs and 100 EDUs (``PUT /_matrix/federation/v1/send/{txnId}``)
  and deletes what was sent once the destination answers 200. A failure (unreachable, 5xx, 429,
  401) backs off exponentially (``federation_retry_min_ms`` doubling up to
  ``federation_retry_max_ms``, ±20 % jitter); the back-off is persisted, and a request from the
  destination (it is up again) ends it early. A transaction the destination refuses outright
  (400, 403, 404, 413) is not retried (it never would succeed) and is logged. The queue
  survives a restart: :meth:`start` resumes every destination with something queued.
* Never to ourselves, never to a server the server-wide allow/deny list refuses.
Client requests never wait for a remote server: queueing is a row in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING
from urllib.parse import quote

from bastion.core.identifiers import server_name_of
from bastion.federation.resolver import FederationError
from bastion.services.lifecycle import BackgroundService, drain

if TYPE_CHECKING:
    from bastion.federation.acl import FederationACL
    from bastion.federation.client import FederationClient
    from bastion.server import HomeServer

log = logging.getLogger("bastion.federation.sender")

TXN_TIMEOUT = 60.0
#: Statuses after which a transaction is dropped rather than retried.
PERMANENT_FAILURES = frozenset({400, 403, 404, 413})
_MEMBERSHIP_TARGETS = frozenset({"invite", "knock", "leave", "ban"})


class FederationSender(BackgroundService):
    """Per-destination sending loops, and EDUs being queued (spawned through the service
    lifecycle, so shutdown lets them reach the queue before the store closes)."""

    background_name = "federation sender"

    def __init__(self, hs: HomeServer, client: FederationClient, acl: FederationACL) -> None:
        super().__init__()
        self.hs = hs
        self.client = client
        self.acl = acl
        self.store = hs.store
        self._tasks: dict[str, asyncio.Task] = {}
        self._reset: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_wakeups: list[str] = []  # written on the writer thread
        self._counter = 0
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Attach to the running loop and resume every destination with a non-empty queue."""
        super().start()
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self.store.add_listener(self._after_commit)
        for destination in self.store.queued_destinations():
            self.wake(destination)

    async def stop(self, timeout: float = 10.0) -> None:
        """Let EDUs being queued reach the queue, then end every sending loop (what is queued
        is sent after the next start)."""
        await drain([self], timeout)
        self._stopping = True
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001, S110
                pass
        self._tasks.clear()

    # -- who receives what -----------------------------------------------------------------------
    def destination_allowed(self, destination: str) -> bool:
        """Not ourselves, and allowed by the server-wide allow/deny list."""
        return self.acl.destination_allowed(destination)

    def pdu_destinations_in(self, conn, event: dict, room_id: str) -> list[str]:
        """The servers an event of ours goes to: every server with a joined member in the room
        (read inside the write, after the event is persisted), and the target's server of an
        invite, knock, leave or ban."""
        servers = self.store.joined_servers_in(conn, room_id)
        if event.get("type") == "m.room.member" and isinstance(event.get("state_key"), str):
            content = event.get("content") or {}
            target_server = server_name_of(event["state_key"])
            if content.get("membership") in _MEMBERSHIP_TARGETS and target_server is not None:
                servers.add(target_server)
        return sorted(s for s in servers if self.destination_allowed(s))

    def destinations_for_room(self, room_id: str) -> list[str]:
        """The other servers with a joined member in a room (for EDUs about the room)."""
        return sorted(s for s in self.store.joined_servers(room_id) if self.destination_allowed(s))

    def destinations_for_user(self, user_id: str) -> list[str]:
        """The other servers sharing a joined room with ``user_id`` (for presence, device-list
        updates)."""
        servers: set[str] = set()
        for room_id in self.store.get_rooms_for_user(user_id, "join"):
            servers |= self.store.joined_servers(room_id)
        return sorted(s for s in servers if self.destination_allowed(s))

    # -- queueing --------------------------------------------------------------------------------
    def enqueue_events_in(self, conn, events) -> None:
        """Queue this server's new events (``NewEvent`` objects just persisted in this write)
        for the servers in their rooms. Call only inside a write function."""
        for ne in events:
            ev = ne.event
            sender = ev.get("sender", "")
            if server_name_of(sender) != self.hs.server_name:
                continue
            self.enqueue_pdu_in(conn, ev, ne.event_id, ne.room_id)

    def enqueue_pdu_in(
        self, conn, event: dict, event_id: str, room_id: str, destinations=None,
        exclude: tuple[str, ...] = (),
    ) -> list[str]:  # fmt: skip
        """Queue one PDU inside a write (to ``destinations``, default: the room's servers)."""
        if destinations is None:
            destinations = self.pdu_destinations_in(conn, event, room_id)
        dests = [d for d in destinations if d not in exclude and self.destination_allowed(d)]
        if dests:
            pdu = {k: v for k, v in event.items() if k != "unsigned"}
            self.store.enqueue_pdu_in(conn, dests, event_id, pdu)
            self._pending_wakeups.extend(dests)
        return dests

    async def enqueue_pdu(
        self, event: dict, event_id: str, room_id: str, destinations=None,
        exclude: tuple[str, ...] = (),
    ) -> list[str]:  # fmt: skip
        """Queue a PDU in a write of its own (e.g. a remote join we accepted, for the other
        servers in the room)."""
        return await self.store.transaction(
            lambda conn: self.enqueue_pdu_in(conn, event, event_id, room_id, destinations, exclude)
        )

    def send_edu_in(
        self, conn, destination: str, edu_type: str, content: dict, key: str | None = None
    ) -> bool:
        """Queue an EDU inside a caller's write. Returns False when the destination is refused
        (ourselves, or the server-wide deny list)."""
        if not self.destination_allowed(destination):
            return False
        self.store.enqueue_edu_in(conn, destination, edu_type, content, key)
        self._pending_wakeups.append(destination)
        return True

    def send_edu(
        self, destination: str, edu_type: str, content: dict, key: str | None = None
    ) -> asyncio.Task:
        """Queue an EDU for ``destination`` (S-S API "EDUs"). Returns a task that completes once
        the EDU is durably queued (awaiting it is optional; it runs either way). ``key``: an
        unsent EDU with the same type and key for this destination is replaced."""

        async def go() -> bool:
            return await self.store.transaction(
                lambda conn: self.send_edu_in(conn, destination, edu_type, content, key)
            )

        return self.spawn(go())

    # -- waking senders --------------------------------------------------------------------------
    def _after_commit(self, _pos: int, _keys: set[str]) -> None:
        # Writer thread, after a commit: wake the destinations queued in that batch.
        if not self._pending_wakeups or self._loop is None:
            return
        dests, self._pending_wakeups = self._pending_wakeups, []
        try:
            self._loop.call_soon_threadsafe(self._wake_many, list(dict.fromkeys(dests)))
        except RuntimeError:  # the loop is closed: the queue is resumed at the next start
            pass

    def _wake_many(self, destinations: list[str]) -> None:
        for d in destinations:
            self.wake(d)

    def wake(self, destination: str) -> None:
        """Make sure a sender task runs for ``destination`` (event-loop thread)."""
        if self._stopping or self._loop is None:
            return
        task = self._tasks.get(destination)
        if task is None or task.done():
            self._tasks[destination] = self._loop.create_task(self._run(destination))

    async def destination_is_up(self, destination: str) -> None:
        """A request came from ``destination``: end its back-off and send what is queued."""
        if self.store.get_destination_retry(destination)[0] == 0:
            return
        await self.store.transaction(
            lambda conn: self.store.set_destination_retry_in(conn, destination, 0, 0, 0)
        )
        event = self._reset.get(destination)
        if event is not None:
            event.set()
        self.wake(destination)

    def is_sending(self, destination: str) -> bool:
        task = self._tasks.get(destination)
        return task is not None and not task.done()

    # -- the per-destination loop ----------------------------------------------------------------
    async def _run(self, destination: str) -> None:
        reset = self._reset.setdefault(destination, asyncio.Event())
        try:
            while not self._stopping:
                failures, interval, retry_at = self.store.get_destination_retry(destination)
                now = self.hs.now_ms()
                if failures and retry_at > now:
                    reset.clear()
                    try:
                        await asyncio.wait_for(reset.wait(), (retry_at - now) / 1000)
                    except TimeoutError:
                        pass
                    continue
                pdus, edus = self.store.next_outbound_batch(destination)
                if not pdus and not edus:
                    return
                outcome = await self._send_transaction(destination, pdus, edus)
                if outcome == "retry":
                    await self._record_failure(destination, failures, interval)
                    continue
                pdu_ids, edu_ids = [i for i, _ in pdus], [i for i, _ in edus]

                def done(conn, pdu_ids=pdu_ids, edu_ids=edu_ids, failures=failures) -> None:
                    self.store.delete_outbound_in(conn, pdu_ids, edu_ids)
                    if failures:
                        self.store.set_destination_retry_in(conn, destination, 0, 0, 0)

                await self.store.transaction(done)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep the queue; the next wake retries
            log.exception("federation sender for %s failed", destination)
        finally:
            if self._tasks.get(destination) is asyncio.current_task():
                del self._tasks[destination]

    async def _record_failure(self, destination: str, failures: int, interval: int) -> None:
        config = self.hs.config
        low = max(1, config.federation_retry_min_ms)
        high = max(low, config.federation_retry_max_ms)
        interval = low if interval <= 0 else min(high, interval * 2)
        jitter = secrets.SystemRandom().uniform(0.8, 1.2)
        retry_at = self.hs.now_ms() + int(interval * jitter)
        log.info(
            "federation: %s unreachable (%d failures); retrying in %d ms",
            destination, failures + 1, int(interval * jitter),
        )  # fmt: skip
        await self.store.transaction(
            lambda conn: self.store.set_destination_retry_in(
                conn, destination, failures + 1, interval, retry_at
            )
        )

    async def _send_transaction(self, destination: str, pdus: list, edus: list) -> str:
        """PUT one transaction; "ok", "dropped" (refused for good) or "retry"."""
        self._counter += 1
        txn_id = f"{self.hs.now_ms()}.{self._counter}"
        body = {
            "origin": self.hs.server_name,
            "origin_server_ts": self.hs.now_ms(),
            "pdus": [p for _, p in pdus],
            "edus": [e for _, e in edus],
        }
        path = "/_matrix/federation/v1/send/" + quote(txn_id, safe="")
        try:
            status, resp = await self.client.request(
                "PUT", destination, path, body, timeout=TXN_TIMEOUT
            )
        except (FederationError, OSError, ValueError) as e:
            log.info("federation: transaction to %s failed: %s", destination, e)
            return "retry"
        if status == 200:
            results = resp.get("pdus") if isinstance(resp, dict) else None
            if isinstance(results, dict):
                for event_id, result in results.items():
                    if isinstance(result, dict) and result.get("error"):
                        log.info(
                            "federation: %s refused %s: %s",
                            destination, event_id, str(result["error"])[:200],
                        )  # fmt: skip
            return "ok"
        if status in PERMANENT_FAILURES:
            log.warning(
                "federation: %s refused a transaction of %d PDUs and %d EDUs with %d: %s",
                destination, len(pdus), len(edus), status, str(resp)[:200],
            )  # fmt: skip
            return "dropped"
        log.info("federation: transaction to %s: HTTP %d", destination, status)
        return "retry"
