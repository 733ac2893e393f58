"""The homeserver process: configuration, store, services and the HTTP listener."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import time

from aiohttp import web

from bastion.api.http import (
    MAX_JSON_BODY,
    AppRunner,
    ConnectionLimits,
    Request,
    Router,
    make_dispatcher,
)
from bastion.config import Config
from bastion.errors import (
    M_USER_LOCKED,
    M_USER_SUSPENDED,
    MatrixError,
    missing_token,
    unknown_token,
)
from bastion.federation.container import Federation
from bastion.federation.tls import generate_self_signed, server_ssl_context
from bastion.guard.service import GuardService
from bastion.ledger.service import LedgerService
from bastion.ledger.witnessing import WitnessRole
from bastion.services.account_data import AccountData
from bastion.services.accounts import AccountService
from bastion.services.admin_directory import AdminDirectory
from bastion.services.e2ee import E2EEService
from bastion.services.ephemeral import Presence, Receipts, Typing
from bastion.services.erasure import Erasure
from bastion.services.export import ExportService
from bastion.services.filtering import Filters
from bastion.services.lifecycle import BackgroundService, drain
from bastion.services.media import MediaService
from bastion.services.notifier import Notifier
from bastion.services.openid import OpenIdTokens
from bastion.services.passwords import Passwords
from bastion.services.push import Notifications
from bastion.services.push_rules import PushRules
from bastion.services.pushers import Pushers
from bastion.services.reporting import Reporting
from bastion.services.retention import RetentionService
from bastion.services.rooms import RoomService
from bastion.services.search import Search
from bastion.services.server_notices import ServerNotices
from bastion.services.sliding_sync import SlidingSyncService
from bastion.services.space_hierarchy import SpaceHierarchy
from bastion.services.sync import SyncService
from bastion.services.sync_api import SyncContributor
from bastion.services.tags import RoomTags
from bastion.services.user_directory import UserDirectory
from bastion.signing_key import load_or_create_signing_key
from bastion.storage.interface import Requester, Store, TokenExpired
from bastion.storage.sqlite.store import SqliteStore

log = logging.getLogger("bastion")

#: Client-Server API modules, one per spec section; each has ``register(router, hs)``.
CLIENT_API_MODULES = [
    "bastion.api.client.rooms",
    "bastion.api.client.room_membership",
    "bastion.api.client.room_directory",
    "bastion.api.client.sync",
    "bastion.api.client.discovery",
    "bastion.api.client.registration",
    "bastion.api.client.login",
    "bastion.api.client.account",
    "bastion.api.client.devices",
    "bastion.api.client.profile",
    "bastion.api.client.capabilities",
    "bastion.api.client.admin",
    "bastion.api.client.filter",
    "bastion.api.client.account_data",
    "bastion.api.client.tags",
    "bastion.api.client.typing",
    "bastion.api.client.receipts",
    "bastion.api.client.presence",
    "bastion.api.client.push_rules",
    "bastion.api.client.notifications",
    "bastion.api.client.pushers",
    "bastion.api.client.report_content",
    "bastion.api.client.user_directory",
    "bastion.api.client.mutual_rooms",
    "bastion.api.client.sliding_sync",  # issue 11: MSC4186 simplified sliding sync
    "bastion.api.client.media",
    "bastion.api.client.keys",
    "bastion.api.client.to_device",
    "bastion.api.client.room_keys",
    "bastion.api.client.voip",
    "bastion.api.client.openid",  # issue 11: OpenID tokens for widgets
    "bastion.api.client.room_summary",  # issue 11: GET /v1/room_summary (local rooms)
    "bastion.api.client.room_previews",  # issue 11: /rooms/{roomId}/initialSync, /events
    "bastion.api.client.spaces",  # issue 11: GET /v1/rooms/{roomId}/hierarchy
    "bastion.api.client.export",
    "bastion.api.client.relations",
    "bastion.api.client.room_upgrades",  # issue 11: POST /rooms/{roomId}/upgrade
    "bastion.api.client.room_event_by_timestamp",  # issue 11: GET /v1/.../timestamp_to_event
    "bastion.api.client.search",  # issue 11: POST /search (server-side search)
    "bastion.api.bastion_admin.export",
    "bastion.api.bastion_admin.legal_holds",  # issue 10: /_bastion/admin/v1/legal_holds
    "bastion.api.synapse_admin",
]

#: Server-Server API modules (bastion/api/federation), served on the federation listener only.
FEDERATION_API_MODULES = [
    "bastion.api.federation.server_implementation",
    "bastion.api.federation.server_keys",
    "bastion.api.federation.server_discovery",
    "bastion.api.federation.query",
    "bastion.api.federation.user_keys",
    "bastion.api.federation.public_rooms",
    "bastion.api.federation.transactions",
    "bastion.api.federation.events",
    "bastion.api.federation.membership",
    "bastion.api.federation.openid",  # issue 11: OpenID userinfo (not X-Matrix authenticated)
    "bastion.api.federation.space_hierarchy",  # issue 11: GET /v1/hierarchy/{roomId}
    "bastion.api.federation.media",  # issue 11: federated media (our media for other servers)
]

#: The guard's admin API (/_bastion/admin/v1/guard/...) and metrics, one module per part.
GUARD_API_MODULES: list[str] = [
    "bastion.api.guard.decisions",
    "bastion.api.guard.policy_lists",
    "bastion.api.guard.throttles",
    "bastion.api.metrics",
    "bastion.api.guard.rate_limits",
    "bastion.api.bastion_admin.audit",  # issue 10: the audit trail
]

#: The route of inbound transactions, whose bodies may be larger (decided on the matched route,
#: never on the path).
FEDERATION_SEND_ROUTE = "/_matrix/federation/v1/send/{txnId}"


class HomeServer:
    """Everything a handler needs: config, store, services. One per process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.server_name: str = config.server_name
        store = SqliteStore(config.database_path, config.sqlite_synchronous, config.database_key)
        if not config.ledger_enabled:
            store.ledger_enabled = False  # benchmarks only: no leaves are appended
        self.store: Store = store
        self.signing_key = load_or_create_signing_key(config.signing_key_path)
        self.notifier = Notifier()
        self.passwords = Passwords(
            config.argon2_time_cost, config.argon2_memory_cost, config.argon2_parallelism,
            threads=config.password_hash_threads, queue=config.password_hash_queue,
        )  # fmt: skip
        self.router = Router()
        self.filters = Filters(self)
        self.rooms = RoomService(self)
        self.sync = SyncService(self)
        #: Simplified sliding sync (MSC4186), built on /sync's pieces.
        self.sliding_sync = SlidingSyncService(self)
        self.account_data = AccountData(self)
        #: Room tags, kept as m.tag room account data (C-S API "Room Tagging").
        self.tags = RoomTags(self)
        self.push_rules = PushRules(self)
        #: Push rule evaluation and notification counts (C-S API "Push Notifications").
        self.notifications = Notifications(self)
        self.rooms.engine.on_persisted = self.notifications.events_persisted
        #: HTTP pushers and delivery to push gateways (C-S API "Pushers", Push Gateway API).
        self.pushers = Pushers(self)
        self.typing = Typing(self)
        self.receipts = Receipts(self)
        self.presence = Presence(self)
        self.reporting = Reporting(self)
        self.media = MediaService(self)
        self.e2ee = E2EEService(self)
        #: The server-notices rooms (C-S API "Server Notices").
        self.server_notices = ServerNotices(self)
        #: Exports of users' data (issue 10, GDPR Art. 15/20).
        self.export = ExportService(self)
        #: OpenID tokens for widgets and integration managers (C-S and S-S API "OpenID").
        self.openid = OpenIdTokens(self)
        #: The guard (issue 9): login defence, rate limits, detectors, the classifier, policy
        #: lists, actions and alerts; the one entry point the rest of the server calls.
        self.guard = GuardService(self)
        #: The retention purge job (issue 10; runs when ``[retention] enabled``).
        self.retention = RetentionService(self)
        self.accounts = AccountService(
            self.store, config, self.passwords, self.now_ms, self.e2ee, self.rooms,
            login_defence=self.guard.login,
        )  # fmt: skip
        #: The Synapse-compatible admin API's listings and changes (api/synapse_admin).
        self.admin_directory = AdminDirectory(self)
        #: Erasure on deactivation (issue 10, GDPR Art. 17).
        self.erasure = Erasure(self)
        #: The user directory (C-S API "User directory").
        self.user_directory = UserDirectory(self)
        #: Space hierarchies (C-S and S-S API "Spaces").
        self.space_hierarchy = SpaceHierarchy(self.rooms, self.now_ms)
        #: Server-side search (C-S API "Server Side Search").
        self.search = Search(self)
        #: What /sync gathers besides rooms (services/sync_api.py).
        self.sync_contributors: list[SyncContributor] = [
            self.account_data, self.typing, self.receipts, self.presence, self.e2ee,
        ]  # fmt: skip
        #: The federation parts, or None when no federation listener is configured: the one
        #: place where "is federation on" is decided. The services get the interfaces they use.
        self.federation: Federation | None = None
        if config.federation_address is not None:
            fed = self.federation = Federation(self)
            self.rooms.remote = fed.membership
            self.rooms.engine.outbox = fed.sender
            self.typing.room_edus = self.receipts.room_edus = self.presence.room_edus = fed.edus
            self.e2ee.remote_devices = fed.device_lists
            self.e2ee.to_device_outbox = fed.edus
            self.space_hierarchy.remote = fed.hierarchy
            self.media.remote_media = fed.media
        #: The ledger (issue 8), or None when ``ledger_enabled`` is false (benchmarks): then the
        #: store appends no leaves either.
        self.ledger: LedgerService | None = LedgerService(self) if config.ledger_enabled else None
        #: This server as a witness for other logs (tlog-witness), when it is configured with
        #: their keys (``ledger_witness_for``).
        self.witness: WitnessRole | None = WitnessRole(self) if config.ledger_witness_for else None
        self._runner: web.AppRunner | None = None
        self._federation_runner: web.AppRunner | None = None
        #: Bounds on idle and slow connections, for both listeners.
        self.connection_limits = ConnectionLimits(
            keepalive_timeout=config.http_keepalive_timeout,
            body_timeout=config.http_body_timeout,
            body_idle_timeout=config.http_body_idle_timeout,
        )
        self.bound_port: int | None = None
        self.federation_bound_port: int | None = None

    def require_federation(self) -> Federation:
        """The federation parts, for what exists only with a federation listener (its routes)."""
        if self.federation is None:
            raise RuntimeError("no federation listener is configured")
        return self.federation

    # The shell's clock: the core never reads it.
    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    async def authenticate(self, req: Request, token: str | None) -> Requester:
        """C-S API "Using access tokens": 401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN; account
        moderation: 401 M_USER_LOCKED (soft logout) and 403 M_USER_SUSPENDED for writes; "Refreshing
        access tokens": an expired token is 401 M_UNKNOWN_TOKEN with soft_logout."""
        if token is None:
            raise missing_token()
        try:
            found = self.store.check_access_token(token, self.now_ms()) if token else None
        except TokenExpired:
            # C-S API "Refreshing access tokens": the client refreshes (soft logout).
            raise unknown_token("the access token has expired", soft_logout=True) from None
        if found is None:
            raise unknown_token()
        requester, locked, suspended, first_use = found
        if first_use:
            # The first use of a refreshed token retires the refresh token it replaced.
            await self.accounts.retire_refreshed(token)
        # What a restricted account may still do is a flag of the matched route (api/http.py
        # Route), never a test on the request path.
        route = req.route
        if locked and not (route is not None and route.allow_locked):
            raise MatrixError(M_USER_LOCKED, "this account has been locked", 401, soft_logout=True)
        if (
            suspended
            and req.method in ("POST", "PUT", "DELETE")
            and not (route is not None and route.allow_suspended)
        ):
            raise MatrixError(M_USER_SUSPENDED, "this account is suspended", 403)
        return requester

    async def federation_authenticate(self, req: Request, _token: str | None) -> str:
        """S-S API "Request Authentication": verify the X-Matrix header over method, raw URI
        (path and query as sent), origin, destination and, for PUT/POST, the JSON body. Returns
        the origin server name (a handler finds it in ``req.requester``); 401 on any mismatch."""
        limit = MAX_JSON_BODY
        if req.route is not None and req.route.name == FEDERATION_SEND_ROUTE:
            limit = self.config.federation_max_transaction_bytes  # 50 PDUs and 100 EDUs
        content = await req.json(limit=limit) if req.method in ("PUT", "POST") else None
        fed = self.require_federation()
        origin = await fed.keyring.verify_request(
            req.method, req.raw.raw_path, content, req.raw.headers.get("Authorization")
        )
        # The server-wide origin allow/deny list (federation_domain_allow / _deny).
        fed.acl.require_server(origin)
        self.guard.policy.require_origin(origin)  # banned by a policy list: 403 M_FORBIDDEN
        await fed.sender.destination_is_up(origin)  # end its back-off
        return origin

    def build_federation_app(self) -> web.Application:
        fed = self.require_federation()
        for name in FEDERATION_API_MODULES:
            importlib.import_module(name).register(fed.router, self)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route(
            "*",
            "/{tail:[\\s\\S]*}",
            make_dispatcher(fed.router, self, self.federation_authenticate, self.connection_limits),
        )
        return app

    async def _start_federation(self) -> None:
        address = self.config.federation_address
        if address is None:
            return
        cert, key = self.config.tls_certificate_file, self.config.tls_private_key_file
        if self.config.tls_self_signed and not cert.exists():
            generate_self_signed(self.server_name, cert, key)
            log.warning("created a self-signed federation certificate at %s", cert)
        ssl_context = server_ssl_context(cert, key)
        self._federation_runner = AppRunner(self.build_federation_app(), self.connection_limits)
        await self._federation_runner.setup()
        site = web.TCPSite(self._federation_runner, address[0], address[1], ssl_context=ssl_context)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001
        self.federation_bound_port = sockets[0].getsockname()[1] if sockets else address[1]
        log.info(
            "serving the Server-Server API on https://%s:%d", address[0], self.federation_bound_port
        )

    def build_app(self) -> web.Application:
        for name in CLIENT_API_MODULES:
            importlib.import_module(name).register(self.router, self)
        # /.well-known/matrix/server (when configured) is also served where clients connect.
        importlib.import_module("bastion.api.federation.server_discovery").register(
            self.router, self
        )
        # The ledger's and the witness's endpoints (/_bastion/ledger/v1, /_bastion/witness/v1).
        importlib.import_module("bastion.api.ledger").register(self.router, self)
        for name in GUARD_API_MODULES:
            importlib.import_module(name).register(self.router, self)
        app = web.Application(client_max_size=self.config.max_upload_size + 1024)
        app.router.add_route(
            "*",
            "/{tail:[\\s\\S]*}",
            make_dispatcher(self.router, self, self.authenticate, self.connection_limits),
        )
        return app

    def background_services(self) -> list[BackgroundService]:
        """Every service with work in the background, drained together at shutdown (the
        ledger, which records what they do, is drained after them)."""
        fed = self.federation
        guard = [self.guard.login, self.guard.cooling.background, self.guard.alerts]
        if fed is None:
            return [self.e2ee, self.typing, self.presence, self.media, *guard]
        return [self.e2ee, fed.device_lists, fed.edus, self.typing, self.presence, self.media,
                fed.sender, *guard]  # fmt: skip

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store.open()
        loop = asyncio.get_running_loop()
        self.notifier.attach(loop)
        self.store.attach_loop(loop)
        self.store.add_listener(self.notifier.notify_threadsafe)
        for service in self.background_services():
            service.start()  # the federation sender also resumes its queued destinations
        self.retention.start()  # the purge job (issue 10), drained with the services
        # Push rule evaluation and gateway delivery, drained with the services too.
        self.notifications.start()
        self.pushers.start()
        if self.ledger is not None:
            # Started after the others and drained after them (stop): it integrates and signs
            # the leaves their last work appends.
            self.ledger.start()
        app = self.build_app()
        self._runner = AppRunner(app, self.connection_limits)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.listen_host, self.config.listen_port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.config.listen_port
        log.info(
            "Bastion is ready: %s serving the Client-Server API on http://%s:%d",
            self.server_name, self.config.listen_host, self.bound_port,
        )  # fmt: skip
        await self._start_federation()

    async def stop(self) -> None:
        """Stop accepting requests (pending long polls answer at once; requests in flight
        finish), then drain every background service (their tasks finish, up to
        ``shutdown_drain_seconds``), then stop federation, and only then close the store."""
        self.notifier.close()  # end pending /sync long polls now rather than at their timeout
        for runner in (self._federation_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._federation_runner = self._runner = None
        await drain([*self.background_services(), self.retention, self.notifications,
                     self.pushers], self.config.shutdown_drain_seconds)  # fmt: skip
        if self.ledger is not None:
            await drain([self.ledger], self.config.shutdown_drain_seconds)
        if self.federation is not None:
            await self.federation.sender.stop()
            await self.federation.client.close()
        if self.ledger is not None:
            await self.ledger.close()
        await self.pushers.close()
        self.passwords.close()
        self.media.close()
        self.store.close()


async def serve(config: Config) -> None:
    hs = HomeServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await hs.start()
    try:
        await stop.wait()
    finally:
        log.info("Bastion is stopping")
        await hs.stop()
