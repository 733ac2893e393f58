"""Bastion's one typed configuration: a TOML file under the data directory, defaults for the
embedded single-machine mode (SQLite, no other service), and command-line overrides."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.core.identifiers import parse_server_name
from bastion.core.media import DEFAULT_THUMBNAIL_SIZES, ThumbnailSize, parse_thumbnail_sizes
from bastion.core.retention import RetentionConfig, parse_retention_config
from bastion.core.room_versions import KNOWN_ROOM_VERSIONS
from bastion.core.support import check_support
from bastion.core.urls import valid_http_url

if TYPE_CHECKING:
    from bastion.guard.config import GuardConfig

REGISTRATION_MODES = ("open", "token", "closed")


class ConfigError(Exception):
    """A configuration value is invalid; the message names the key."""


@dataclass(frozen=True)
class Config:
    #: The server name: the domain of user IDs and room aliases (appendices, "Server Name").
    server_name: str = "localhost"
    #: Where the database, signing key, media and config file live.
    data_dir: Path = Path("bastion-data")
    #: Client-Server API listener.
    listen_host: str = "127.0.0.1"
    listen_port: int = 8008
    #: open = anyone may register (m.login.dummy); token = a registration token is needed
    #: (m.login.registration_token); closed = only `bastion admin create-user`.
    registration: str = "token"
    #: Room version of rooms created without one.
    default_room_version: str = "12"
    #: Public base URL advertised in /.well-known/matrix/client (default: from listen address).
    public_baseurl: str = ""
    #: Largest media upload, in bytes.
    max_upload_size: int = 50 * 1024 * 1024
    #: The user directory (C-S API "User directory"): false = a user finds the users who share
    #: a room with them or are joined to a public room (the spec's minimum); true = every local
    #: account too. Deactivated accounts are never found.
    user_directory_search_all_users: bool = False
    #: Argon2id parameters for password hashing (memory in KiB).
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    argon2_parallelism: int = 1
    #: SQLite `synchronous` pragma: NORMAL survives a killed process (WAL); FULL also survives
    #: power loss at some cost in write latency.
    sqlite_synchronous: str = "NORMAL"
    #: Encryption at rest (off when empty): where the database key is, ``"file:PATH"`` or
    #: ``"env:NAME"`` — never the key itself (:mod:`bastion.storage.sqlite.at_rest`).
    at_rest_key: str = ""
    #: Logging level.
    log_level: str = "INFO"
    #: Federation listener "HOST:PORT" (HTTPS). Empty: federation is off.
    federation_listen: str = ""
    #: TLS certificate chain and private key (PEM) of the federation listener
    #: (default: federation.crt / federation.key in the data directory).
    tls_certificate_path: str = ""
    tls_private_key_path: str = ""
    #: Create a self-signed certificate for the server name when the certificate file is absent
    #: (test deployments only: other servers will not trust it unless told to).
    tls_self_signed: bool = False
    #: Trust this CA bundle (PEM) for outbound federation instead of the system store.
    federation_ca_file: str = ""
    #: CIDR ranges outbound federation may reach although the egress filter denies them.
    federation_allow_ips: tuple[str, ...] = ()
    #: Served at /.well-known/matrix/server as {"m.server": ...} when set.
    federation_well_known_server: str = ""
    #: Notary servers asked for keys a server does not give us itself.
    federation_trusted_key_servers: tuple[str, ...] = ()
    #: Ed25519 public keys (unpadded base64) never accepted from any server.
    federation_banned_signing_keys: tuple[str, ...] = ()
    #: Origin servers accepted for inbound federation and reached by outbound federation (glob
    #: patterns, port ignored, case-insensitive); empty allows every server. Deny wins.
    federation_domain_allow: tuple[str, ...] = ()
    federation_domain_deny: tuple[str, ...] = ()
    #: Inbound /send transactions per origin: a token bucket (per second, burst). The defaults
    #: of the guard's ``federation_send`` rate limit (``[guard.rate_limits.federation_send]``,
    #: when set, wins; ``[guard.rate_limits] enabled = false`` lifts it).
    federation_send_per_second: int = 10
    federation_send_burst: int = 50
    #: Largest /send request body, in bytes.
    federation_max_transaction_bytes: int = 10 * 1024 * 1024
    #: Events fetched from other servers (missing auth/prev events, state) for one PDU, and for
    #: one transaction.
    federation_max_fetch_per_pdu: int = 100
    federation_max_fetch_per_txn: int = 500
    #: Largest room state accepted from /state_ids or a join (entries).
    federation_max_state_size: int = 100_000
    #: Outbound transaction retries: the first back-off after a failure, doubling up to the
    #: maximum (milliseconds; ±20 % jitter).
    federation_retry_min_ms: int = 5000
    federation_retry_max_ms: int = 3_600_000
    #: Seconds an idle keep-alive connection stays open; also the longest a request's line and
    #: headers may take to arrive (both listeners).
    http_keepalive_timeout: int = 60
    #: Seconds a request body may take to arrive in full, and may stall between reads; a slower
    #: client's connection is closed (both listeners).
    http_body_timeout: int = 300
    http_body_idle_timeout: int = 30
    #: TURN server(s) for VoIP ("turn:host:3478?transport=udp", "turns:…"), the secret shared
    #: with them (coturn ``static-auth-secret``) and how long the credentials given to a client
    #: stay valid (seconds). Without URIs and a secret /voip/turnServer answers ``{}``.
    turn_uris: tuple[str, ...] = ()
    turn_shared_secret: str = field(default="", repr=False)  # never in a logged repr
    turn_user_lifetime: int = 3600
    #: Lifetime (milliseconds) of an access token issued with a refresh token (``refresh_token:
    #: true`` in /login or /register, and by /refresh); tokens issued without one never expire.
    access_token_lifetime_ms: int = 5 * 60 * 1000
    #: POST /login/get_token (C-S API, spec v1.7): a logged-in user, after re-entering their
    #: password, gets a single-use ``m.login.token`` to sign in another device. Off by default
    #: (a session that can mint logins is worth more to a thief); the token lives this long (ms).
    login_token_enabled: bool = False
    login_token_lifetime_ms: int = 120_000
    #: Served at /.well-known/matrix/support (C-S API "Server Discovery"): the contacts, tables
    #: of ``role`` (m.role.admin, m.role.security or a namespaced role of your own) and at least
    #: one of ``matrix_id`` and ``email_address``; and an http(s) ``support_page``. With neither
    #: the endpoint answers 404, as the spec says.
    support_contacts: tuple = ()
    support_page: str = ""
    #: Password hashing runs on threads of its own: how many (0: half the CPUs, at least one)
    #: and how many more password checks may wait; past that a login is refused (429).
    password_hash_threads: int = 0
    password_hash_queue: int = 16
    #: The only thumbnail sizes generated, each at most once per media (tables of width,
    #: height and method "crop" or "scale"); a request gets the configured size that fits best.
    thumbnail_sizes: tuple = tuple(
        {"width": s.width, "height": s.height, "method": s.method} for s in DEFAULT_THUMBNAIL_SIZES
    )
    #: Shutdown: seconds background work may take to finish before it is cancelled.
    shutdown_drain_seconds: int = 10
    #: The ledger (tamper-evident Merkle log of events and security actions, served under
    #: /_bastion/ledger/v1/). Off only for benchmarks: nothing is recorded then.
    ledger_enabled: bool = True
    #: Seconds between signed checkpoints while there are new leaves (at most one per interval).
    ledger_checkpoint_interval: float = 1.0
    #: Also sign each checkpoint with ML-DSA-44 (post-quantum), with a key created on first start
    #: (DATA_DIR/ledger-mldsa44.key, mode 0600).
    ledger_pq_signing: bool = False
    #: Witnesses this log submits each new checkpoint to (tlog-witness): tables of ``url`` (the
    #: witness's submission prefix, http or https) and ``vkey`` (its cosignature verifier key).
    ledger_witnesses: tuple = ()
    #: Verifier keys (signed-note vkeys) of the logs this server witnesses; the witness role
    #: (POST /_bastion/witness/v1/add-checkpoint) is on when the list is not empty.
    ledger_witness_for: tuple[str, ...] = ()
    #: The witness's cosigning key (Ed25519), created on first start (default:
    #: DATA_DIR/ledger-witness.key).
    ledger_witness_key: str = ""
    #: The file anchor: an append-only JSON-lines file of checkpoints for the operator to ship
    #: elsewhere (default, when unset: DATA_DIR/ledger-anchors.jsonl; an empty string turns it
    #: off), written every ``ledger_anchor_interval`` seconds when there is a newer checkpoint.
    ledger_anchor_file: str | None = None
    ledger_anchor_interval: float = 60.0
    #: The Ethereum anchor (optional): a table of ``rpc`` (an http(s) JSON-RPC URL, or
    #: "eth-tester" for an in-process test chain), then either ``account`` (a 0x address the
    #: node signs for) or ``key_file`` (a file holding a private key in hex, signed with
    #: locally), and ``interval`` (seconds, default 3600).
    ledger_ethereum: dict = field(default_factory=dict)
    #: Inclusion proofs of events in rooms whose join rule is public may be fetched by anyone
    #: (with the event's record); otherwise only admins and the event's sender see them.
    ledger_public_room_events: bool = False
    #: The guard (issue 9): the ``[guard]`` table, typed by :attr:`guard_config`.
    guard: dict = field(default_factory=dict, repr=False)  # guard.alerts.webhook_secret
    #: Message and media retention (issue 10): the ``[retention]`` table, typed by
    #: :attr:`retention_config` (:mod:`bastion.core.retention`).
    retention: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @cached_property
    def guard_config(self) -> GuardConfig:
        """The ``[guard]`` table, typed (checked by :meth:`validate`)."""
        from bastion.guard.config import parse_guard_config

        try:
            return parse_guard_config(self.guard)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @cached_property
    def retention_config(self) -> RetentionConfig:
        """The ``[retention]`` table, typed (checked by :meth:`validate`)."""
        try:
            return parse_retention_config(self.retention)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "homeserver.db"

    @property
    def database_key(self) -> bytes | None:
        """The database key when encryption at rest is on (read from its file or variable
        each time: ConfigError when it cannot be), else None."""
        if not self.at_rest_key:
            return None
        from bastion.storage.sqlite.at_rest import KeyError_, load_key

        try:
            return load_key(self.at_rest_key)
        except KeyError_ as e:
            raise ConfigError(str(e)) from None

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / "signing.key"

    @property
    def media_path(self) -> Path:
        return self.data_dir / "media"

    @property
    def ledger_witness_key_path(self) -> Path:
        return Path(self.ledger_witness_key) if self.ledger_witness_key else (
            self.data_dir / "ledger-witness.key"
        )  # fmt: skip

    @property
    def ledger_pq_key_path(self) -> Path:
        return self.data_dir / "ledger-mldsa44.key"

    @property
    def ledger_anchor_path(self) -> Path | None:
        """The file anchor's path, or None when it is off."""
        if self.ledger_anchor_file is None:
            return self.data_dir / "ledger-anchors.jsonl"
        return Path(self.ledger_anchor_file) if self.ledger_anchor_file else None

    @property
    def federation_address(self) -> tuple[str, int] | None:
        """(host, port) of the federation listener, or None when federation is off."""
        if not self.federation_listen:
            return None
        host, sep, port = self.federation_listen.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigError("federation_listen must be HOST:PORT")
        return host.strip("[]"), int(port)

    @property
    def tls_certificate_file(self) -> Path:
        return (
            Path(self.tls_certificate_path)
            if self.tls_certificate_path
            else (self.data_dir / "federation.crt")
        )

    @property
    def tls_private_key_file(self) -> Path:
        return (
            Path(self.tls_private_key_path)
            if self.tls_private_key_path
            else (self.data_dir / "federation.key")
        )

    @property
    def base_url(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl.rstrip("/")
        host = self.listen_host if ":" not in self.listen_host else f"[{self.listen_host}]"
        return f"http://{host}:{self.listen_port}"

    def validate(self) -> Config:
        try:
            parse_server_name(self.server_name)
        except Exception as e:
            raise ConfigError(f"server_name: {e}") from None
        if self.registration not in REGISTRATION_MODES:
            raise ConfigError(f"registration must be one of {', '.join(REGISTRATION_MODES)}")
        if self.default_room_version not in KNOWN_ROOM_VERSIONS:
            raise ConfigError(f"default_room_version {self.default_room_version!r} is not known")
        if not 0 < self.listen_port < 65536:
            raise ConfigError("listen_port must be 1 to 65535")
        if self.sqlite_synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError("sqlite_synchronous must be NORMAL, FULL or EXTRA")
        if not isinstance(self.at_rest_key, str) or (
            self.at_rest_key and not self.at_rest_key.startswith(("file:", "env:"))
        ):
            raise ConfigError(
                "at_rest_key must be 'file:PATH' or 'env:NAME' (the key itself never goes in "
                "the config file)"
            )
        if self.max_upload_size <= 0:
            raise ConfigError("max_upload_size must be positive")
        for key in ("http_keepalive_timeout", "http_body_timeout", "http_body_idle_timeout"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{key} must be a positive integer (seconds)")
        if not isinstance(self.turn_uris, tuple | list) or not all(
            isinstance(u, str) and u.startswith(("turn:", "turns:", "stun:"))
            for u in self.turn_uris
        ):
            raise ConfigError("turn_uris must be a list of turn:, turns: or stun: URIs")
        if not isinstance(self.turn_shared_secret, str):
            raise ConfigError("turn_shared_secret must be a string")
        if (
            not isinstance(self.turn_user_lifetime, int)
            or isinstance(self.turn_user_lifetime, bool)
            or self.turn_user_lifetime <= 0
        ):
            raise ConfigError("turn_user_lifetime must be a positive integer (seconds)")
        if (
            not isinstance(self.access_token_lifetime_ms, int)
            or isinstance(self.access_token_lifetime_ms, bool)
            or not 1000 <= self.access_token_lifetime_ms <= 365 * 24 * 3600 * 1000
        ):
            raise ConfigError("access_token_lifetime_ms must be 1000 ms to one year")
        if not isinstance(self.login_token_enabled, bool):
            raise ConfigError("login_token_enabled must be true or false")
        if (
            not isinstance(self.login_token_lifetime_ms, int)
            or isinstance(self.login_token_lifetime_ms, bool)
            or not 1000 <= self.login_token_lifetime_ms <= 3_600_000
        ):
            raise ConfigError("login_token_lifetime_ms must be 1000 ms to one hour")
        try:
            check_support(self.support_contacts, self.support_page)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self._validate_federation()
        for key in ("password_hash_threads", "password_hash_queue", "shutdown_drain_seconds"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{key} must be a non-negative integer")
        try:
            parse_thumbnail_sizes(self.thumbnail_sizes)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self._validate_ledger()
        _ = self.guard_config  # the [guard] table, parsed once: ConfigError if it is wrong
        _ = self.retention_config  # the [retention] table, likewise
        return self

    def _validate_ledger(self) -> None:
        """The ledger keys. Vkeys and URLs are checked here, at load, so a hostile or mistyped
        value stops the server before it runs rather than failing later in the background."""
        from bastion.ledger.note import parse_vkey

        for key in ("ledger_enabled", "ledger_pq_signing", "ledger_public_room_events"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be true or false")
        for key in ("ledger_checkpoint_interval", "ledger_anchor_interval"):
            if not _positive_seconds(getattr(self, key)):
                raise ConfigError(f"{key} must be a positive number of seconds (at most a day)")
        if not isinstance(self.ledger_witness_key, str):
            raise ConfigError("ledger_witness_key must be a string")
        if self.ledger_anchor_file is not None and not isinstance(self.ledger_anchor_file, str):
            raise ConfigError("ledger_anchor_file must be a string")
        witnesses = self.ledger_witnesses
        if not isinstance(witnesses, tuple | list):
            raise ConfigError("ledger_witnesses must be a list of {url, vkey} tables")
        seen: set[str] = set()
        for w in witnesses:
            if not isinstance(w, dict) or set(w) != {"url", "vkey"}:
                raise ConfigError("each of ledger_witnesses must be a table of url and vkey")
            url, vkey = w["url"], w["vkey"]
            if not isinstance(url, str) or not valid_http_url(url):
                raise ConfigError(f"ledger_witnesses: {url!r} is not an http(s) URL")
            try:
                verifier = parse_vkey(vkey) if isinstance(vkey, str) else None
            except ValueError:
                verifier = None
            if verifier is None or verifier.sig_type not in (0x04, 0x06):
                raise ConfigError(f"ledger_witnesses: {vkey!r} is not a cosignature vkey")
            if vkey in seen:
                raise ConfigError(f"ledger_witnesses: {vkey!r} is listed twice")
            seen.add(vkey)
        logs = self.ledger_witness_for
        if not isinstance(logs, tuple | list) or not all(isinstance(v, str) for v in logs):
            raise ConfigError("ledger_witness_for must be a list of vkeys")
        for vkey in logs:
            try:
                verifier = parse_vkey(vkey)
            except ValueError:
                raise ConfigError(f"ledger_witness_for: {vkey!r} is not a vkey") from None
            if verifier.sig_type != 0x01:
                raise ConfigError(f"ledger_witness_for: {vkey!r} is not an Ed25519 log key")
        self._validate_ethereum()

    def _validate_ethereum(self) -> None:
        eth = self.ledger_ethereum
        if not isinstance(eth, dict):
            raise ConfigError("ledger_ethereum must be a table")
        if not eth:
            return
        unknown = set(eth) - {"rpc", "account", "key_file", "interval"}
        if unknown:
            raise ConfigError(f"ledger_ethereum: unknown key(s) {', '.join(sorted(unknown))}")
        rpc = eth.get("rpc")
        if not isinstance(rpc, str) or not (rpc == "eth-tester" or valid_http_url(rpc)):
            raise ConfigError('ledger_ethereum.rpc must be an http(s) URL or "eth-tester"')
        account = eth.get("account")
        if account is not None and not (
            isinstance(account, str)
            and len(account) == 42
            and account[:2] == "0x"
            and all(c in "0123456789abcdefABCDEF" for c in account[2:])
        ):
            raise ConfigError("ledger_ethereum.account must be a 0x-prefixed 20-byte address")
        if "key_file" in eth and not (isinstance(eth["key_file"], str) and eth["key_file"]):
            raise ConfigError("ledger_ethereum.key_file must be a path")
        if rpc != "eth-tester" and (account is None) == ("key_file" not in eth):
            raise ConfigError(
                "ledger_ethereum needs exactly one of account (the node signs) and key_file"
            )
        if "interval" in eth and not _positive_seconds(eth["interval"]):
            raise ConfigError("ledger_ethereum.interval must be a positive number of seconds")

    @property
    def thumbnail_size_set(self) -> tuple[ThumbnailSize, ...]:
        """``thumbnail_sizes`` parsed (validated by :meth:`validate`)."""
        return parse_thumbnail_sizes(self.thumbnail_sizes)

    def _validate_federation(self) -> None:
        import ipaddress

        from bastion.core.base64 import decode_base64
        from bastion.core.identifiers import is_valid_server_name

        for key in ("federation_listen", "tls_certificate_path", "tls_private_key_path",
                    "federation_ca_file", "federation_well_known_server"):  # fmt: skip
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"{key} must be a string")
        if not isinstance(self.tls_self_signed, bool):
            raise ConfigError("tls_self_signed must be true or false")
        addr = self.federation_address
        if addr is not None and not 0 <= addr[1] < 65536:
            raise ConfigError("federation_listen port must be 0 to 65535")
        for key in ("federation_allow_ips", "federation_trusted_key_servers",
                    "federation_banned_signing_keys", "federation_domain_allow",
                    "federation_domain_deny"):  # fmt: skip
            value = getattr(self, key)
            if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{key} must be a list of strings")
        for key in ("federation_send_per_second", "federation_send_burst",
                    "federation_max_transaction_bytes", "federation_max_fetch_per_pdu",
                    "federation_max_fetch_per_txn", "federation_max_state_size"):  # fmt: skip
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{key} must be a positive integer")
        for cidr in self.federation_allow_ips:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"federation_allow_ips: {cidr!r} is not a CIDR range") from None
        for name in (*self.federation_trusted_key_servers,
                     *([self.federation_well_known_server]
                       if self.federation_well_known_server else [])):  # fmt: skip
            if not is_valid_server_name(name):
                raise ConfigError(f"{name!r} is not a valid server name")
        if not (0 < self.federation_retry_min_ms <= self.federation_retry_max_ms):
            raise ConfigError("federation_retry_min_ms must be positive and at most the maximum")
        for key in self.federation_banned_signing_keys:
            try:
                ok = len(decode_base64(key)) == 32
            except Exception:  # noqa: BLE001
                ok = False
            if not ok:
                raise ConfigError(f"federation_banned_signing_keys: {key!r} is not an Ed25519 key")

    def with_overrides(self, **overrides: Any) -> Config:
        """A copy with the given fields replaced (``None`` leaves a field as it is); checked
        like any configuration."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _positive_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 < value <= 86400
        and value == value  # not NaN
    )


_KEYS = {f.name: f for f in fields(Config) if f.name != "extra"}


def load_config(path: Path) -> Config:
    """Read a TOML config file. Unknown keys are an error (a typo must not pass silently)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    values: dict = {}
    for key, value in data.items():
        if key not in _KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}")
        if key == "data_dir":
            value = Path(value)
        if isinstance(value, list):
            value = tuple(value)
        expected = int if _KEYS[key].type in ("int", int) else None
        if expected is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{path}: {key} must be an integer")
        values[key] = value
    return Config(**values)


DEFAULT_CONFIG_TEXT = """\
# Bastion configuration (TOML). Command-line flags override these values.

# The server name: the domain part of user IDs (@alice:SERVER_NAME) and room aliases.
# It cannot be changed once users exist.
server_name = "{server_name}"

# Client-Server API listener.
listen_host = "{listen_host}"
listen_port = {listen_port}

# Registration: "open" (anyone, m.login.dummy), "token" (needs a token from
# `bastion admin registration-token create`), or "closed" (`bastion admin create-user` only).
registration = "{registration}"

# Room version for new rooms that do not ask for one.
default_room_version = "{default_room_version}"

# Public base URL clients use (served at /.well-known/matrix/client). Empty: the listen address.
public_baseurl = "{public_baseurl}"

# Largest media upload, in bytes.
max_upload_size = {max_upload_size}

# Password hashing (argon2id): passes, memory in KiB, lanes.
argon2_time_cost = {argon2_time_cost}
argon2_memory_cost = {argon2_memory_cost}
argon2_parallelism = {argon2_parallelism}

# SQLite durability: NORMAL (WAL) keeps every acknowledged write across a killed process;
# FULL also across power loss, at some cost in latency.
sqlite_synchronous = "{sqlite_synchronous}"

# Encryption at rest (off by default): the database encrypted with SQLCipher. Name where the
# key is, never the key: "file:/etc/bastion/at-rest.key" (64 hex digits, mode 600; make one
# with `bastion admin rekey --generate FILE`) or "env:BASTION_AT_REST_KEY".
# at_rest_key = ""

log_level = "{log_level}"

# Connections (both listeners), in seconds: idle keep-alive (also bounds slow request headers),
# whole request body, and longest stall while a body is read.
http_keepalive_timeout = {http_keepalive_timeout}
http_body_timeout = {http_body_timeout}
http_body_idle_timeout = {http_body_idle_timeout}

# VoIP relay (TURN REST API credentials, e.g. coturn with use-auth-secret). Off when empty.
# turn_uris = ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"]
# turn_shared_secret = "…"
# turn_user_lifetime = 3600

# Lifetime (ms) of access tokens issued to clients that ask for a refresh token (they refresh
# before it ends); tokens of clients that do not ask never expire.
# access_token_lifetime_ms = 300000

# POST /login/get_token: a logged-in user (after re-entering the password) gets a single-use
# m.login.token to sign in another device, valid for login_token_lifetime_ms.
# login_token_enabled = false
# login_token_lifetime_ms = 120000

# Support information, served at /.well-known/matrix/support (404 when neither is set). Roles:
# m.role.admin, m.role.security, or one of your own (org.example.billing); each contact needs a
# matrix_id (it may be on another server) or an email_address.
# support_contacts = [{{role = "m.role.admin", matrix_id = "@admin:example.org"}},
#                     {{role = "m.role.security", email_address = "security@example.org"}}]
# support_page = "https://example.org/support"

# Federation (Server-Server API) is off unless federation_listen is set. Keys:
# federation_listen = "0.0.0.0:8448"            # HTTPS listener for /_matrix/federation, /_matrix/key
# tls_certificate_path = "/path/fullchain.pem"  # default: DATA_DIR/federation.crt
# tls_private_key_path = "/path/privkey.pem"    # default: DATA_DIR/federation.key
# tls_self_signed = false                       # create a self-signed certificate if absent (tests)
# federation_ca_file = ""                       # trust this CA bundle instead of the system store
# federation_allow_ips = []                     # CIDRs the egress filter lets through
# federation_well_known_server = ""             # serve /.well-known/matrix/server with m.server
# federation_trusted_key_servers = []           # notaries to ask for keys
# federation_banned_signing_keys = []           # Ed25519 public keys never accepted
# federation_retry_min_ms = 5000                # outbound back-off: first wait after a failure,
# federation_retry_max_ms = 3600000             # doubling up to this
# federation_domain_allow = []                  # origin globs allowed in and out (empty: all)
# federation_domain_deny = []                   # origin globs refused (deny wins)
# federation_send_per_second = 10               # inbound /send per origin (token bucket rate)
# federation_send_burst = 50                    # ... and burst ([guard.rate_limits.federation_send]
#                                               # overrides both; these are its defaults)
# federation_max_transaction_bytes = 10485760   # largest /send body
# federation_max_fetch_per_pdu = 100            # events fetched to check one received event
# federation_max_fetch_per_txn = 500            # ... and one received transaction
# federation_max_state_size = 100000            # largest room state accepted from a server

# Password hashing threads (0: half the CPUs) and how many password checks may wait for one;
# past that, logins are refused with 429 until the queue drains.
# password_hash_threads = 0
# password_hash_queue = 16

# The only thumbnail sizes generated (each once per media); requests get the best fit.
# thumbnail_sizes = [{{width = 32, height = 32, method = "crop"}},
#                    {{width = 96, height = 96, method = "crop"}},
#                    {{width = 320, height = 240, method = "scale"}},
#                    {{width = 640, height = 480, method = "scale"}},
#                    {{width = 800, height = 600, method = "scale"}}]

# Seconds background work may take to finish at shutdown before it is cancelled.
# shutdown_drain_seconds = 10

# The ledger: every event and security action in a Merkle log whose signed checkpoints are
# served under /_bastion/ledger/v1/ (checkpoint, tiles, proofs, anchors, keys). Entry bundles
# (tile/entries/...) are served to server admins only: they hold personal records.
# ledger_enabled = true                        # false only for benchmarks
# ledger_checkpoint_interval = 1.0             # seconds between checkpoints while leaves arrive
# ledger_pq_signing = false                    # also sign with ML-DSA-44 (key in the data dir)
# ledger_public_room_events = false            # anyone may prove events of public rooms
# ledger_anchor_file = ""                      # default DATA_DIR/ledger-anchors.jsonl; "" = off
# ledger_anchor_interval = 60                  # seconds between file anchor lines
# Witnesses this log submits its checkpoints to (tlog-witness), and the logs this server
# witnesses (their vkeys; the witness role is on when the list is not empty):
# ledger_witnesses = [{{url = "https://witness.example/_bastion/witness/v1", vkey = "..."}}]
# ledger_witness_for = ["other.example/bastion-ledger+1234abcd+AbC..."]
# ledger_witness_key = ""                      # default DATA_DIR/ledger-witness.key
# Ethereum anchor (optional, needs web3): transaction data carries the checkpoint's hash.
# [ledger_ethereum]
# rpc = "https://rpc.example"                  # or "eth-tester" (in-process test chain)
# account = "0x..."                           # an account the node signs for, or
# key_file = "/path/eth.key"                   # a private key (hex) to sign with here
# interval = 3600

# The guard (README "The guard"): login defence, rate limits, detectors, the content classifier,
# policy lists and alerts. On by default; every key has a default. A few of them:
# [guard]
# mode = "enforce"                             # "shadow": verdicts recorded, not enforced
# [guard.rate_limits.message]
# per_second = 0.2                             # Synapse's rc_message
# burst = 10
# [guard.classifier]
# hold = 0.98                                  # hold for a moderator above this score
# block = 0.997                                # refuse above it (default: the model's own)
# [guard.policy]
# lists = ["!policyroom:example.org"]          # policy rooms whose rules are enforced
# [guard.alerts]
# webhook_url = "https://alerts.example/hook"  # POSTed a JSON alert (webhook_secret: HMAC)

# Retention (off by default): expired messages are stripped to their redacted skeleton, expired
# local media deleted; never a room's current state, never what a legal hold covers. Rooms may
# set their own policy (m.room.retention), clamped into the allowed range. Durations: "30m",
# "1d", "1y" or milliseconds.
# [retention]
# enabled = true
# default_max_lifetime = "1y"                  # rooms without a policy (unset: kept for ever)
# default_min_lifetime = "1d"
# allowed_lifetime_min = "1d"                  # room policies are clamped into this range
# allowed_lifetime_max = "1y"
# purge_interval = "1d"
# purge_batch_size = 500                       # events (or media) per write
# local_media_max_lifetime = "90d"             # unset: media is kept
# remote_media_max_lifetime = "30d"            # cached remote media unused this long
"""


def render_config(config: Config) -> str:
    return DEFAULT_CONFIG_TEXT.format(**{k: getattr(config, k) for k in _KEYS if k != "data_dir"})
