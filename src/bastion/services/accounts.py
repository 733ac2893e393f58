"""Accounts: registration, login, User-Interactive Authentication, devices, password changes,
deactivation, profiles and account moderation (C-S API "Client Authentication", "Account
registration and management", "Device Management", "Profiles", "Server administration").

Policy decisions made here, documented for operators:

- **Usernames** follow the current user ID grammar (``a-z 0-9 . _ = - / +``). A requested
  username is mapped to lower case (the spec lets servers map usernames "in a logical manner");
  anything else outside the grammar is ``M_INVALID_USERNAME``. Login lower-cases the localpart
  the same way.
- **Passwords** must be at least :data:`MIN_PASSWORD_LENGTH` characters (``M_WEAK_PASSWORD``)
  and at most :data:`~bastion.services.passwords.MAX_PASSWORD_LENGTH` (``M_INVALID_PARAM``).
- **Access tokens** are ``bst_`` + 256 random bits (``secrets.token_urlsafe(32)``), stored only as
  SHA-256 hashes. Logging in with an existing ``device_id`` revokes that device's older tokens.
- **Refresh tokens** (``refresh_token: true`` in /login or /register) are ``bsr_`` + 256 random
  bits, stored only as SHA-256 hashes; the access token issued with one expires after
  ``access_token_lifetime_ms`` (default 5 minutes), others never. ``POST /refresh`` rotates
  both: the old access token is revoked at once, the old refresh token when the new pair is
  first used (until then the client may repeat a refresh whose answer it lost, which revokes
  the pair it lost). They go with their device (logout, device deletion, deactivation).
- **Login tokens** (``POST /login/get_token``, off unless ``login_token_enabled``): each needs
  the password again (a UIA session serves one token), at most one a minute per user
  (:data:`LOGIN_TOKEN_PER_MINUTE`); ``bsl_`` + 256 random bits, stored hashed, valid for
  ``login_token_lifetime_ms`` and for one ``m.login.token`` login. They go with logout/all,
  deactivation and erasure.
- **Failed logins** are accounted by the guard's login defence
  (:mod:`bastion.guard.login_defence`, the arithmetic in :mod:`bastion.guard.login_policy`):
  per account across addresses, per known device, per address and per network prefix, with
  progressive waits; a throttled attempt gets 429 ``M_LIMIT_EXCEEDED`` and its password is not
  checked. Each check reserves its slot before the password hash is awaited, so concurrent
  attempts cannot overrun the limits. UIA password stages count too, on the account.
- **Registration** is limited per address, registration-token guesses inside ``POST /register``
  per address and prefix, and usernames confusable with an admin's are refused (the guard's
  ``[guard.registration]``); a registration wave may require a token.
- **New logins** (a device or a network prefix the account has not logged in from) are told to
  the user as a server notice after the login (:meth:`LoginDefence.notify`).
- **Registration-token validity** (``GET /register/m.login.registration_token/validity``) is a
  token oracle, so it is rate-limited per client IP by a token bucket
  (:data:`VALIDITY_BUCKET_CAPACITY` requests, refilled one per :data:`VALIDITY_REFILL_MS`).
- **UIA sessions** live in memory for :data:`UIA_SESSION_TTL_MS`; each is bound to one operation
  and (except registration) one user, and is consumed when the operation succeeds.
- Client IP addresses are the TCP peer; ``X-Forwarded-For`` is not trusted.
- **Ledger records** (:mod:`bastion.services.security_records`): account creation and
  deactivation, moderation, every login (success with its device; failure, also of a UIA
  password stage, with the attempted user ID: the same record and the same work whether the
  account exists or not), password changes, token revocations and device deletions are action
  records written in the transaction of the change (a failed login's record is its only write).
"""

from __future__ import annotations

import logging
import re
import secrets
import string
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.core.canonical_json import canonical_json
from bastion.core.identifiers import UserId, parse_server_name, server_name_of
from bastion.core.rate_limit import TokenBuckets, retry_after_ms
from bastion.errors import (
    M_BAD_JSON,
    M_FORBIDDEN,
    M_GUEST_ACCESS_FORBIDDEN,
    M_INVALID_USERNAME,
    M_KEY_TOO_LARGE,
    M_MISSING_PARAM,
    M_PROFILE_TOO_LARGE,
    M_UNAUTHORIZED,
    M_UNKNOWN,
    M_UNRECOGNIZED,
    M_USER_IN_USE,
    M_USER_LOCKED,
    M_WEAK_PASSWORD,
    MatrixError,
    bad_json,
    forbidden,
    invalid_param,
    limit_exceeded,
    missing_param,
    not_found,
    too_large,
    unknown_token,
)
from bastion.ledger import records
from bastion.services.passwords import MAX_PASSWORD_LENGTH, Passwords
from bastion.services.security_records import admin_request_in, clip, record, record_in
from bastion.storage.interface import Requester, Row, Txn, registration_token_valid

if TYPE_CHECKING:
    from bastion.config import Config
    from bastion.guard.login_defence import LoginDefence, NewLogin
    from bastion.services.e2ee import E2EEService
    from bastion.services.rooms import RoomService
    from bastion.storage.interface import Store

log = logging.getLogger("bastion.accounts")

MIN_PASSWORD_LENGTH = 8
VALIDITY_BUCKET_CAPACITY = 10
VALIDITY_REFILL_MS = 6000
UIA_SESSION_TTL_MS = 15 * 60 * 1000
UIA_MAX_SESSIONS = 10000
MAX_DEVICE_ID_BYTES = 255
MAX_DISPLAYNAME_LENGTH = 256
MAX_PROFILE_BYTES = 64 * 1024
MAX_PROFILE_KEY_BYTES = 255
ACCESS_TOKEN_PREFIX = "bst_"
REFRESH_TOKEN_PREFIX = "bsr_"
LOGIN_TOKEN_PREFIX = "bsl_"
#: Login tokens a user may get per minute (the spec encourages "1 request per minute").
LOGIN_TOKEN_PER_MINUTE = 1
#: Longer refresh tokens than this are not looked up (ours are 47 characters).
MAX_REFRESH_TOKEN_LENGTH = 255
#: The actor of a failed login whose identifier is empty.
ANONYMOUS = "anonymous"
#: Profile fields copied into m.room.member events.
MEMBER_PROFILE_KEYS = ("displayname", "avatar_url")

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REG_TOKEN = "m.login.registration_token"
TOKEN_LOGIN = "m.login.token"

_LOCALPART = re.compile(r"[a-z0-9._=/+\-]+")
_PROFILE_KEY = re.compile(r"avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_MXC = re.compile(r"mxc://([^/]+)/([A-Za-z0-9_\-]+)")
_DEVICE_ALPHABET = string.ascii_uppercase


def _opt(body: dict, key: str, kind: type | tuple, what: str) -> Any:
    """An optional body field of the given JSON type (``M_BAD_JSON`` otherwise)."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise bad_json(f"'{key}' must be {what}")
    return value


def generate_access_token() -> str:
    return ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def generate_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def generate_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(10))


def check_device_id(value: object) -> str:
    if not isinstance(value, str):
        raise bad_json("'device_id' must be a string")
    if not value or len(value.encode("utf-8", "surrogatepass")) > MAX_DEVICE_ID_BYTES:
        raise invalid_param("device_id must be 1 to 255 bytes")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise invalid_param("device_id must not contain spaces or controls")
    return value


def check_password_strength(password: object, key: str = "password") -> str:
    if not isinstance(password, str):
        raise bad_json(f"'{key}' must be a string")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise MatrixError(
            M_WEAK_PASSWORD, f"password must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise invalid_param(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def check_profile_key(key: str) -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_PROFILE_KEY_BYTES:
        raise MatrixError(M_KEY_TOO_LARGE, "profile keys are at most 255 bytes")
    if not _PROFILE_KEY.fullmatch(key):
        raise invalid_param(
            "invalid profile key: use displayname, avatar_url, m.tz or a namespaced key"
            " such as com.example.field"
        )


def is_mxc_uri(value: str) -> bool:
    m = _MXC.fullmatch(value)
    if not m:
        return False
    try:
        parse_server_name(m.group(1))
    except MatrixError:
        return False
    return True


def check_profile_value(key: str, value: Any) -> None:
    """Value rules of ``PUT /profile/{userId}/{keyName}``."""
    if key == "displayname":
        if not isinstance(value, str):
            raise bad_json("displayname must be a string")
        if len(value) > MAX_DISPLAYNAME_LENGTH:
            raise invalid_param(f"displayname is longer than {MAX_DISPLAYNAME_LENGTH}")
    elif key == "avatar_url":
        if not isinstance(value, str):
            raise bad_json("avatar_url must be a string")
        if value != "" and not is_mxc_uri(value):
            raise invalid_param("avatar_url must be an mxc:// URI")
    elif key == "m.tz" and not isinstance(value, str):
        raise bad_json("m.tz must be a string (an IANA time zone identifier)")


# -- User-Interactive Authentication ------------------------------------------------------------
class UiaRequired(MatrixError):
    """The 401 of the User-Interactive Authentication API: ``flows``, ``params``, ``session``,
    ``completed``, and ``errcode``/``error`` only when a stage attempt failed."""

    def __init__(self, body: dict, errcode: str | None = None, message: str | None = None):
        super().__init__(errcode or M_UNAUTHORIZED, message or "authentication required", 401)
        self.body = body
        self.failed = errcode is not None

    def to_json(self) -> dict:
        body = dict(self.body)
        if self.failed:
            body["errcode"] = self.errcode
            body["error"] = self.message
        return body


@dataclass
class UiaSession:
    session_id: str
    operation: str
    user_id: str | None
    flows: list[list[str]]
    created_ms: int
    completed: list[str] = field(default_factory=list)
    #: Stage results needed later (e.g. the registration token to count).
    data: dict = field(default_factory=dict)

    def body(self) -> dict:
        body: dict = {
            "flows": [{"stages": list(f)} for f in self.flows],
            "params": {},
            "session": self.session_id,
        }
        if self.completed:
            body["completed"] = list(self.completed)
        return body

    def done(self) -> bool:
        return any(self.completed == f for f in self.flows)


# -- the service --------------------------------------------------------------------------------
class AccountService:
    def __init__(
        self, store: Store, config: Config, passwords: Passwords, now_ms: Callable[[], int],
        e2ee: E2EEService, rooms: RoomService, *, login_defence: LoginDefence,
    ) -> None:  # fmt: skip
        self.store = store
        self.config = config
        self.server_name = config.server_name
        self.passwords = passwords
        self.now_ms = now_ms
        self.e2ee = e2ee  # device keys follow the devices
        self.rooms = rooms  # deactivation leaves rooms; profile changes update memberships
        self._uia: OrderedDict[str, UiaSession] = OrderedDict()
        #: The guard's login and registration defence (``hs.guard.login``).
        self.defence = login_defence
        self.validity_bucket = TokenBuckets(1000 / VALIDITY_REFILL_MS, VALIDITY_BUCKET_CAPACITY)
        self.login_token_bucket = TokenBuckets(LOGIN_TOKEN_PER_MINUTE / 60, LOGIN_TOKEN_PER_MINUTE)

    # -- hooks into other services ------------------------------------------------------------
    def _device_added_in(self, conn: Txn, user_id: str, device_id: str) -> None:
        self.e2ee.on_device_added(conn, user_id, device_id)

    def _delete_devices_in(
        self, conn: Txn, user_id: str, device_ids: list[str], *, cause: str, ts: int,
        origin: str | None,
    ) -> list[str]:  # fmt: skip
        """Delete devices with their tokens and (through the E2EE hook) their keys; each
        deletion is a ``device.delete`` record (``cause``: logout, logout_all, delete,
        password_change, deactivate) saying whether the device's published keys went too."""
        deleted = []
        for device_id in device_ids:
            if self.store.delete_device_in(conn, user_id, device_id):
                deleted.append(device_id)
                had_keys = self.e2ee.on_device_deleted(conn, user_id, device_id)
                record_in(
                    self.store, conn, records.ACTION_DEVICE_DELETE, actor=user_id, ts=ts,
                    target=user_id, subject=user_id, origin=origin,
                    details={"device_id": device_id, "cause": cause, "device_keys": had_keys},
                )  # fmt: skip
        return deleted

    # -- User-Interactive Authentication --------------------------------------------------------
    def _new_session(self, operation: str, user_id: str | None, flows: list[list[str]]):
        now = self.now_ms()
        self._expire_sessions(now)
        s = UiaSession(secrets.token_urlsafe(24), operation, user_id, flows, now)
        self._uia[s.session_id] = s
        while len(self._uia) > UIA_MAX_SESSIONS:
            self._uia.popitem(last=False)
        return s

    def _expire_sessions(self, now: int) -> None:
        while self._uia:
            first = next(iter(self._uia.values()))
            if first.created_ms > now - UIA_SESSION_TTL_MS:
                break
            self._uia.popitem(last=False)

    def end_uia(self, session: UiaSession) -> None:
        self._uia.pop(session.session_id, None)

    async def check_uia(
        self, body: dict, *, operation: str, flows: list[list[str]],
        user_id: str | None = None, ip: str | None = None,
    ) -> UiaSession:  # fmt: skip
        """C-S API "User-Interactive Authentication API": return the session once a flow is
        complete, otherwise raise the 401 (with ``errcode`` when a stage attempt failed)."""
        auth = body.get("auth")
        if auth is None:
            raise UiaRequired(self._new_session(operation, user_id, flows).body())
        if not isinstance(auth, dict):
            raise bad_json("'auth' must be an object")
        sid = auth.get("session")
        stage = auth.get("type")
        if sid is not None and not isinstance(sid, str):
            raise bad_json("'auth.session' must be a string")
        if stage is not None and not isinstance(stage, str):
            raise bad_json("'auth.type' must be a string")
        self._expire_sessions(self.now_ms())
        if sid is None:
            session = self._new_session(operation, user_id, flows)
        else:
            session = self._uia.get(sid)
            if session is None or session.operation != operation or session.user_id != user_id:
                raise MatrixError(M_UNKNOWN, "unknown or expired authentication session", 400)
        if stage is None:
            # Checking on a session (or nio's first register_with_token request).
            if session.done():
                return session
            raise UiaRequired(session.body())
        if stage in session.completed:
            if session.done():
                return session
            raise UiaRequired(session.body())
        attempt = [*session.completed, stage]
        if not any(f[: len(attempt)] == attempt for f in session.flows):
            known = any(stage in f for f in session.flows)
            raise UiaRequired(
                session.body(),
                M_FORBIDDEN if known else M_UNRECOGNIZED,
                f"stage {stage} is not the next stage of any flow"
                if known
                else f"unsupported authentication type {stage}",
            )
        await self._run_stage(session, stage, auth, ip)
        session.completed.append(stage)
        if session.done():
            return session
        raise UiaRequired(session.body())

    async def _run_stage(self, session: UiaSession, stage: str, auth: dict, ip: str | None):
        if stage == DUMMY:
            return
        if stage == REG_TOKEN:
            # Each guess is counted per address and prefix (429 once throttled, unchecked).
            attempt = self.defence.begin_token(ip)
            token = auth.get("token")
            valid = (
                isinstance(token, str) and 0 < len(token) <= 64
                and registration_token_valid(self.store.get_registration_token(token),
                                             self.now_ms())
            )  # fmt: skip
            if not valid:
                await self.defence.failed(attempt)
                raise UiaRequired(session.body(), M_FORBIDDEN, "invalid registration token")
            self.defence.succeed(attempt)
            session.data["registration_token"] = token
            return
        if stage == PASSWORD:
            user_id = session.user_id
            identifier = auth.get("identifier")
            claimed = None
            if isinstance(identifier, dict) and identifier.get("type") == "m.id.user":
                claimed = identifier.get("user")
            elif identifier is None:
                claimed = auth.get("user")  # legacy form
            password = auth.get("password")
            if not isinstance(claimed, str) or not isinstance(password, str):
                raise UiaRequired(
                    session.body(), M_BAD_JSON, "m.login.password needs identifier and password"
                )
            if user_id is None or self.normalise_login_user(claimed) != user_id:
                raise UiaRequired(session.body(), M_FORBIDDEN, "identifier is not this account")
            row = self.store.get_user(user_id)
            # Counted on the account (whoever holds the session's token guesses the account's
            # password: a stolen token gets no budget of its own). The slot is reserved before
            # the hash is awaited; a throttled attempt is refused unchecked.
            attempt = self.defence.begin(user_id, ip, real=row is not None)
            try:
                ok = await self.passwords.verify_async(
                    row["password_hash"] if row else None, password[:MAX_PASSWORD_LENGTH]
                )
            except BaseException:
                self.defence.abort(attempt)
                raise
            if not ok or len(password) > MAX_PASSWORD_LENGTH:
                failure = self.defence.fail(attempt, password)

                def fn(conn: Txn) -> None:
                    record_in(
                        self.store, conn, records.ACTION_LOGIN_FAILURE, actor=user_id,
                        ts=self.now_ms(), target=user_id, subject=user_id, origin=ip,
                        details={"uia": session.operation},
                    )  # fmt: skip
                    self.defence.write_in(conn, failure)

                await self.store.transaction(fn)
                raise UiaRequired(session.body(), M_FORBIDDEN, "invalid password")
            self.defence.succeed(attempt)
            return
        raise UiaRequired(session.body(), M_UNRECOGNIZED, f"unsupported stage {stage}")

    async def require_password_uia(self, body: dict, requester: Requester, operation: str,
                                   ip: str | None) -> UiaSession:  # fmt: skip
        return await self.check_uia(
            body, operation=operation, flows=[[PASSWORD]], user_id=requester.user_id, ip=ip
        )

    # -- identifiers ----------------------------------------------------------------------------
    def user_id_for_username(self, username: str) -> str:
        """Map a requested username onto a user ID (``M_INVALID_USERNAME`` if impossible)."""
        localpart = username.lower()
        if not _LOCALPART.fullmatch(localpart):
            raise MatrixError(
                M_INVALID_USERNAME, "usernames may contain only a-z, 0-9 and . _ = - / +"
            )
        user_id = str(UserId(localpart, self.server_name))
        if len(user_id.encode()) > 255:
            raise MatrixError(M_INVALID_USERNAME, "username is too long")
        return user_id

    def normalise_login_user(self, user: str) -> str | None:
        """A login identifier (localpart or full user ID) as one of our user IDs, or None."""
        if user.startswith("@"):
            localpart, sep, domain = user[1:].partition(":")
            if not sep or domain != self.server_name:
                return None
        else:
            localpart = user
        localpart = localpart.lower()
        if not _LOCALPART.fullmatch(localpart):
            return None
        return str(UserId(localpart, self.server_name))

    def check_username_available(self, username: object) -> str:
        if not isinstance(username, str):
            raise bad_json("'username' must be a string")
        user_id = self.user_id_for_username(username)
        notices = self.config.guard_config.alerts.server_notices_localpart  # the server's own
        if self.store.user_exists(user_id) or user_id == f"@{notices}:{self.server_name}":
            raise MatrixError(M_USER_IN_USE, "that user ID is already taken")
        self.defence.check_username(user_id)
        return user_id

    # -- registration ---------------------------------------------------------------------------
    def registration_flows(self) -> list[list[str]]:
        if self.config.registration == "token" or self.defence.registration_requires_token():
            return [[REG_TOKEN, DUMMY]]
        return [[DUMMY]]

    async def register(self, body: dict, kind: str, ip: str | None) -> dict:
        """POST /register — see bastion.api.client.registration."""
        if kind not in ("user", "guest"):
            raise invalid_param("kind must be 'user' or 'guest'")
        if kind == "guest":
            raise MatrixError(M_GUEST_ACCESS_FORBIDDEN, "guest accounts are not supported", 403)
        if self.config.registration == "closed":
            raise forbidden("registration is disabled on this server")
        # Checks that MUST come before UIA (registration.yaml, 400 responses).
        username = body.get("username")
        user_id = None if username is None else self.check_username_available(username)
        if body.get("password") is None:
            if "auth" not in body:
                # A client's first request (Element sends ``{}``) learns the flows: the
                # User-Interactive Authentication API answers 401 with ``flows``, ``params``
                # and a ``session`` before any credential is asked for.
                await self.check_uia(
                    body, operation="register", flows=self.registration_flows(), ip=ip
                )
            raise missing_param("a password is required")
        password = check_password_strength(body["password"])
        device_id = body.get("device_id")
        if device_id is not None:
            check_device_id(device_id)
        display = _opt(body, "initial_device_display_name", str, "a string")
        inhibit = _opt(body, "inhibit_login", bool, "a boolean") or False
        wants_refresh = _opt(body, "refresh_token", bool, "a boolean") or False

        session = await self.check_uia(
            body, operation="register", flows=self.registration_flows(), ip=ip
        )
        self.end_uia(session)
        reg_token = session.data.get("registration_token")

        try:
            # The per-address limit (and a wave's spacing) before any work.
            self.defence.require_registration(ip)
            pw_hash = await self.passwords.hash_async(password)
        except MatrixError:  # (PasswordHashingBusy too)
            # Refused before any work (no await in between): the completed session stays
            # usable, so the client's retry after retry_after_ms does not start over.
            self._uia[session.session_id] = session
            raise
        now = self.now_ms()
        if user_id is None:
            user_id = f"@u{secrets.token_hex(6)}:{self.server_name}"
        device_id = device_id or generate_device_id()
        access_token = None if inhibit else generate_access_token()
        refresh_token = generate_refresh_token() if wants_refresh and not inhibit else None
        expires_ts = None if refresh_token is None else now + self.config.access_token_lifetime_ms
        localpart = user_id[1 : user_id.index(":")]

        details: dict[str, Any] = {"device_id": None if inhibit else device_id}
        if reg_token is not None:
            details["registration_token"] = reg_token[:4] + "…"  # the stored prefix

        def fn(conn: Txn) -> str | None:
            if not self.store.create_user_in(conn, user_id, pw_hash, now, displayname=localpart):
                return M_USER_IN_USE
            if reg_token is not None and not self.store.use_registration_token_in(
                conn, reg_token, now
            ):
                raise _TokenExhausted
            if access_token is not None and self.store.add_device_sync(
                conn, user_id, device_id, display, access_token, now, ip, expires_ts
            ):
                self._device_added_in(conn, user_id, device_id)
            if access_token is not None and refresh_token is not None:
                self.store.add_refresh_token_in(
                    conn, refresh_token, user_id, device_id, access_token, now
                )
            if access_token is not None:
                # Registration's login is the account's first: its device and prefix are known.
                self.defence.note_registration_in(conn, user_id, device_id, ip, now)
            # One record for the account and its first device (the registration's login).
            record_in(
                self.store, conn, records.ACTION_ACCOUNT_CREATE, actor=user_id, ts=now,
                target=user_id, subject=user_id, origin=ip, details=details,
            )  # fmt: skip
            return None

        try:
            problem = await self.store.transaction(fn)
        except _TokenExhausted:
            raise forbidden("the registration token is no longer valid") from None
        if problem:
            raise MatrixError(M_USER_IN_USE, "that user ID is already taken")
        log.info("registered %s", user_id)
        await self.defence.registered(user_id, ip)
        if inhibit:
            return {"user_id": user_id}
        answer = {"user_id": user_id, "access_token": access_token, "device_id": device_id}
        return self._with_refresh(answer, refresh_token)

    def _with_refresh(self, answer: dict, refresh_token: str | None) -> dict:
        """Add ``refresh_token`` and ``expires_in_ms`` to a login's answer, if one was issued."""
        if refresh_token is not None:
            answer["refresh_token"] = refresh_token
            answer["expires_in_ms"] = self.config.access_token_lifetime_ms
        return answer

    def check_registration_token_validity(self, token: object, ip: str | None) -> bool:
        wait = self.validity_bucket.take(ip or "", self.now_ms() / 1000)
        if wait:
            raise limit_exceeded(retry_after_ms(wait))
        if self.config.registration != "token":
            raise forbidden("registration tokens are not used on this server")
        if not isinstance(token, str) or not token:
            raise missing_param("query parameter 'token' is required")
        if len(token) > 64:
            return False
        return registration_token_valid(self.store.get_registration_token(token), self.now_ms())

    # -- login and logout -----------------------------------------------------------------------
    async def login(self, body: dict, ip: str | None) -> dict:
        """POST /login with ``m.login.password`` — see bastion.api.client.login."""
        login_type = body.get("type")
        if not isinstance(login_type, str):
            raise MatrixError(M_MISSING_PARAM if login_type is None else M_BAD_JSON,
                              "'type' must be a login type string")  # fmt: skip
        if login_type == TOKEN_LOGIN and self.config.login_token_enabled:
            return await self._login_with_token(body, ip)
        if login_type != PASSWORD:
            raise MatrixError(M_UNKNOWN, f"unsupported login type {login_type}")
        identifier = body.get("identifier")
        if identifier is not None:
            if not isinstance(identifier, dict):
                raise bad_json("'identifier' must be an object")
            id_type = identifier.get("type")
            if id_type == "m.id.user":
                user = identifier.get("user")
            elif id_type in ("m.id.thirdparty", "m.id.phone"):
                raise forbidden("no third-party identifiers are known on this server")
            else:
                raise MatrixError(M_UNKNOWN, "unsupported identifier type")
        elif "medium" in body or "address" in body:
            raise forbidden("no third-party identifiers are known on this server")
        else:
            user = body.get("user")
        if user is None:
            raise missing_param("identifier.user is required")
        if not isinstance(user, str):
            raise bad_json("the user must be a string")
        password = body.get("password")
        if password is None:
            raise missing_param("'password' is required")
        if not isinstance(password, str):
            raise bad_json("'password' must be a string")
        device_id, display, wants_refresh = self._login_options(body)

        user_id = self.normalise_login_user(user)
        row = self.store.get_user(user_id) if user_id else None
        known = None
        if device_id is not None and user_id is not None:
            # A device the account already has gets its own budget (the owner logging in
            # again on their device is not locked out by guesses from elsewhere).
            known = device_id if self.store.get_device(user_id, device_id) else None
        # Unknown names are accounted exactly like real accounts (the same keys and back-off);
        # the slot is reserved before the hash is awaited, and a throttled attempt is refused
        # (429) without checking the password.
        attempt = self.defence.begin(
            user_id or clip(user.lower()), ip, known_device=known, real=row is not None
        )
        pw_hash = row["password_hash"] if row is not None and not row["deactivated"] else None
        if len(password) > MAX_PASSWORD_LENGTH:
            pw_hash = None  # no stored password is that long; still pay for one verification
        try:
            ok = await self.passwords.verify_async(pw_hash, password[:MAX_PASSWORD_LENGTH])
        except BaseException:
            self.defence.abort(attempt)
            raise
        # (a verified password implies a stored hash, so an account row and a user ID)
        if not ok or row is None or user_id is None or pw_hash is None:
            failure = self.defence.fail(attempt, password)
            # The same record (and the same work) whether the account exists or not: the
            # attempted ID is the target, and the subject when it names a local user.
            attempted = user_id or clip(user)
            now = self.now_ms()

            def failed(conn: Txn) -> None:
                record_in(
                    self.store, conn, records.ACTION_LOGIN_FAILURE,
                    actor=attempted or ANONYMOUS, ts=now, target=attempted or None,
                    subject=user_id, origin=ip, details={"device_id": device_id},
                )  # fmt: skip
                self.defence.write_in(conn, failure)

            await self.store.transaction(failed)
            raise forbidden("invalid username or password")
        self.defence.succeed(attempt)
        if row["locked"]:
            await record(
                self.store, records.ACTION_LOGIN_FAILURE, actor=user_id, ts=self.now_ms(),
                target=user_id, subject=user_id, origin=ip,
                details={"device_id": device_id, "locked": True},
            )  # fmt: skip
            raise MatrixError(M_USER_LOCKED, "this account has been locked", 401, soft_logout=True)
        if self.passwords.needs_rehash(pw_hash):
            new_hash = await self.passwords.hash_async(password)
        else:
            new_hash = None
        return await self._finish_login(
            user_id, device_id, display, wants_refresh, ip, new_hash=new_hash
        )

    @staticmethod
    def _login_options(body: dict) -> tuple[str | None, str | None, bool]:
        """A login's ``device_id``, ``initial_device_display_name`` and ``refresh_token``."""
        device_id = body.get("device_id")
        if device_id is not None:
            check_device_id(device_id)
        display = _opt(body, "initial_device_display_name", str, "a string")
        wants_refresh = _opt(body, "refresh_token", bool, "a boolean") or False
        return device_id, display, wants_refresh

    async def _login_with_token(self, body: dict, ip: str | None) -> dict:
        """POST /login with ``m.login.token`` (a token from POST /login/get_token): 403 when it
        is unknown, used or expired; it serves once, whatever the outcome."""
        token = body.get("token")
        if token is None:
            raise missing_param("'token' is required")
        if not isinstance(token, str):
            raise bad_json("'token' must be a string")
        device_id, display, wants_refresh = self._login_options(body)
        now = self.now_ms()
        user_id = None
        if token.startswith(LOGIN_TOKEN_PREFIX) and len(token) <= MAX_REFRESH_TOKEN_LENGTH:
            user_id = await self.store.transaction(
                lambda conn: self.store.take_login_token_in(conn, token, now)
            )
        row = self.store.get_user(user_id) if user_id is not None else None
        if user_id is None or row is None or row["deactivated"]:
            raise forbidden("invalid or expired login token")
        if row["locked"]:
            raise MatrixError(M_USER_LOCKED, "this account has been locked", 401, soft_logout=True)
        return await self._finish_login(
            user_id, device_id, display, wants_refresh, ip, login_type=TOKEN_LOGIN
        )

    async def _finish_login(
        self, user_id: str, device_id: str | None, display: str | None, wants_refresh: bool,
        ip: str | None, *, new_hash: str | None = None, login_type: str = PASSWORD,
    ) -> dict:  # fmt: skip
        """A verified login: the device (reused or new) and its tokens, recorded."""
        device_id = device_id or generate_device_id()
        access_token = generate_access_token()
        refresh_token = generate_refresh_token() if wants_refresh else None
        now = self.now_ms()
        expires_ts = None if refresh_token is None else now + self.config.access_token_lifetime_ms

        account = user_id

        def fn(conn: Txn) -> NewLogin | None:
            store = self.store
            # Reusing a device ID invalidates the device's earlier tokens.
            if store.revoke_device_tokens_in(conn, account, device_id):
                record_in(
                    store, conn, records.ACTION_TOKEN_REVOKE, actor=account, ts=now,
                    target=account, subject=account, origin=ip,
                    details={"device_id": device_id, "cause": "login"},
                )  # fmt: skip
            new_device = store.add_device_sync(
                conn, account, device_id, display, access_token, now, ip, expires_ts
            )
            if refresh_token is not None:
                store.add_refresh_token_in(
                    conn, refresh_token, account, device_id, access_token, now
                )
            if new_device:
                self._device_added_in(conn, account, device_id)
            if new_hash:
                store.set_password_hash_in(conn, account, new_hash)
            details: dict[str, Any] = {"device_id": device_id, "new_device": new_device}
            if login_type != PASSWORD:
                details["login_type"] = login_type
            record_in(
                store, conn, records.ACTION_LOGIN_SUCCESS, actor=account, ts=now, target=account,
                subject=account, origin=ip, details=details,
            )  # fmt: skip
            return self.defence.note_login_in(conn, account, device_id, display, ip, now)

        new_login = await self.store.transaction(fn)
        # After the login's transaction, in the background: a notice never delays the answer.
        self.defence.notify(new_login)
        answer = {"user_id": user_id, "access_token": access_token, "device_id": device_id}
        return self._with_refresh(answer, refresh_token)

    async def refresh(self, body: dict) -> dict:
        """POST /refresh — see bastion.api.client.login. An unknown, retired or malformed
        refresh token is 401 ``M_UNKNOWN_TOKEN`` with ``soft_logout`` (the spec's answer: the
        client logs in again, keeping its device and keys)."""
        token = body.get("refresh_token")
        if token is None:
            raise missing_param("'refresh_token' is required")
        if not isinstance(token, str):
            raise bad_json("'refresh_token' must be a string")
        if not token.startswith(REFRESH_TOKEN_PREFIX) or len(token) > MAX_REFRESH_TOKEN_LENGTH:
            raise unknown_token("unknown refresh token", soft_logout=True)
        owner = self.store.refresh_token_owner(token)
        if owner is None:
            raise unknown_token("unknown refresh token", soft_logout=True)
        if self.store.account_flags(owner)[0]:
            raise MatrixError(M_USER_LOCKED, "this account has been locked", 401, soft_logout=True)
        access_token = generate_access_token()
        refresh_token = generate_refresh_token()
        now = self.now_ms()
        lifetime = self.config.access_token_lifetime_ms
        found = await self.store.transaction(
            lambda conn: self.store.rotate_refresh_token_in(
                conn, token, access_token, refresh_token, now + lifetime, now
            )
        )
        if found is None:  # retired or revoked meanwhile
            raise unknown_token("unknown refresh token", soft_logout=True)
        return {"access_token": access_token, "refresh_token": refresh_token,
                "expires_in_ms": lifetime}  # fmt: skip

    async def get_login_token(self, requester: Requester, body: dict, ip: str | None) -> dict:
        """POST /login/get_token — see bastion.api.client.login."""
        if not self.config.login_token_enabled:
            raise MatrixError(M_FORBIDDEN, "login tokens are not offered on this server", 400)
        session = await self.require_password_uia(body, requester, "get_login_token", ip)
        wait = self.login_token_bucket.take(requester.user_id, self.now_ms() / 1000)
        if wait:
            # The completed session stays: the retry after retry_after_ms needs no new stage.
            raise limit_exceeded(retry_after_ms(wait))
        self.end_uia(session)  # one token per verification (the spec: always re-prompt)
        token = LOGIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.now_ms()
        lifetime = self.config.login_token_lifetime_ms
        await self.store.transaction(
            lambda conn: self.store.add_login_token_in(
                conn, token, requester.user_id, now + lifetime, now
            )
        )
        return {"login_token": token, "expires_in_ms": lifetime}

    async def retire_refreshed(self, access_token: str) -> None:
        """The first use of an access token issued by POST /refresh: the refresh token it
        replaced is no longer valid (C-S API "Refreshing access tokens")."""
        await self.store.transaction(
            lambda conn: self.store.retire_refreshed_in(conn, access_token)
        )

    async def logout(self, requester: Requester, ip: str | None = None) -> None:
        """POST /logout: the token is invalidated and its device deleted (with its keys)."""
        now = self.now_ms()
        await self.store.transaction(
            lambda conn: self._delete_devices_in(
                conn, requester.user_id, [requester.device_id], cause="logout", ts=now, origin=ip
            )
        )

    async def logout_all(self, requester: Requester, ip: str | None = None) -> None:
        """POST /logout/all: every token and every device of the user."""
        now = self.now_ms()

        def fn(conn: Txn) -> None:
            uid = requester.user_id
            self._delete_devices_in(
                conn, uid, self.store.device_ids_in(conn, uid), cause="logout_all", ts=now,
                origin=ip,
            )  # fmt: skip
            # (every token belongs to a device, so the deletions above revoked them all)
            self.store.revoke_user_tokens_in(conn, uid)

        await self.store.transaction(fn)

    # -- devices --------------------------------------------------------------------------------
    async def update_device(self, requester: Requester, device_id: str, body: dict) -> None:
        display = _opt(body, "display_name", str, "a string")
        if display is not None and len(display) > 100 * 1024:
            raise too_large("display_name is too long", 400)
        if self.store.get_device(requester.user_id, device_id) is None:
            raise not_found("no such device")
        if display is None:
            return

        def fn(conn: Txn) -> None:
            self.store.set_device_display_name_in(conn, requester.user_id, device_id, display)
            # A new name is a device-list change (S-S API "Device Management").
            self.e2ee.on_device_renamed(conn, requester.user_id, device_id)

        await self.store.transaction(fn)

    async def delete_devices(
        self, requester: Requester, device_ids: list[str], ip: str | None = None
    ) -> list[str]:
        now = self.now_ms()
        return await self.store.transaction(
            lambda conn: self._delete_devices_in(
                conn, requester.user_id, device_ids, cause="delete", ts=now, origin=ip
            )
        )

    # -- password and deactivation --------------------------------------------------------------
    async def change_password(
        self, requester: Requester, new_password: str, logout_devices: bool,
        ip: str | None = None,
    ) -> None:  # fmt: skip
        pw_hash = await self.passwords.hash_async(new_password)
        uid = requester.user_id
        now = self.now_ms()

        def fn(conn: Txn) -> None:
            self.store.set_password_hash_in(conn, uid, pw_hash)
            record_in(
                self.store, conn, records.ACTION_PASSWORD_CHANGE, actor=uid, ts=now, target=uid,
                subject=uid, origin=ip,
                details={"device_id": requester.device_id, "logout_devices": logout_devices},
            )  # fmt: skip
            if logout_devices:
                others = [
                    d for d in self.store.device_ids_in(conn, uid) if d != requester.device_id
                ]
                self._delete_devices_in(
                    conn, uid, others, cause="password_change", ts=now, origin=ip
                )

        await self.store.transaction(fn)

    async def deactivate(
        self, requester: Requester, ip: str | None = None, *, actor: str | None = None,
        also_in: Callable[[Txn], None] | None = None,
    ) -> None:  # fmt: skip
        """Deactivate ``requester``'s account. ``actor``: who asked (default: the user);
        ``also_in``: more writes for the same transaction (an admin call's record)."""
        uid = requester.user_id
        now = self.now_ms()
        by = actor or uid

        def fn(conn: Txn) -> None:
            self._delete_devices_in(
                conn, uid, self.store.device_ids_in(conn, uid), cause="deactivate", ts=now,
                origin=ip,
            )  # fmt: skip
            self.store.deactivate_user_in(conn, uid)
            record_in(
                self.store, conn, records.ACTION_ACCOUNT_DEACTIVATE, actor=by, ts=now,
                target=uid, subject=uid, origin=ip,
            )  # fmt: skip
            if also_in is not None:
                also_in(conn)

        await self.store.transaction(fn)
        log.info("deactivated %s", uid)
        await self._leave_all_rooms(uid)

    async def _leave_all_rooms(self, user_id: str) -> None:
        """After deactivation: leave every joined room and reject pending invites and knocks."""
        rooms = self.rooms
        room_ids: set[str] = set()
        for membership in ("join", "invite", "knock"):
            room_ids |= self.store.get_rooms_for_user(user_id, membership)
        for room_id in sorted(room_ids):
            try:
                await rooms.update_membership(user_id, room_id, user_id, "leave")
            except MatrixError as e:
                log.warning("deactivation of %s: could not leave %s: %s", user_id, room_id, e)

    async def _propagate_profile(self, user_id: str) -> None:
        """C-S API "Events on Change of Profile Information": a new ``m.room.member`` join event
        in every joined room, carrying the current display name and avatar."""
        rooms = self.rooms
        for room_id in sorted(self.store.get_rooms_for_user(user_id)):
            try:
                # A self-join takes displayname/avatar_url from the stored profile.
                await rooms.update_membership(user_id, room_id, user_id, "join")
            except MatrixError as e:
                log.warning("profile change of %s not sent to %s: %s", user_id, room_id, e)

    # -- profiles -------------------------------------------------------------------------------
    def get_profile(self, user_id: str) -> dict:
        """The profile of a local user, ``M_NOT_FOUND`` for unknown or deactivated users."""
        row = self.store.get_user(user_id)
        if row is None or row["deactivated"]:
            raise not_found("profile not found")
        return self.store.get_profile(user_id)

    async def set_profile_field(self, user_id: str, key: str, value: Any) -> None:
        check_profile_key(key)
        check_profile_value(key, value)

        def fn(conn: Txn) -> bool:
            profile = self.store.profile_in(conn, user_id)
            changed = key not in profile or profile[key] != value
            profile[key] = value
            if len(canonical_json(profile)) > MAX_PROFILE_BYTES:
                raise MatrixError(M_PROFILE_TOO_LARGE, "the profile would exceed its 64 KiB limit")
            self.store.set_profile_field_in(conn, user_id, key, value)
            return changed

        if await self.store.transaction(fn) and key in MEMBER_PROFILE_KEYS:
            await self._propagate_profile(user_id)

    async def delete_profile_field(self, user_id: str, key: str) -> None:
        check_profile_key(key)

        def fn(conn: Txn) -> bool:
            existed = key in self.store.profile_in(conn, user_id)
            self.store.delete_profile_field_in(conn, user_id, key)
            return existed

        if await self.store.transaction(fn) and key in MEMBER_PROFILE_KEYS:
            await self._propagate_profile(user_id)

    # -- administration -------------------------------------------------------------------------
    def whois(self, user_id: str) -> dict:
        devices = {}
        for d in self.store.get_devices(user_id):
            conn = {}
            if d["last_seen_ip"] is not None:
                conn["ip"] = d["last_seen_ip"]
            if d["last_seen_ts"] is not None:
                conn["last_seen"] = d["last_seen_ts"]
            devices[d["device_id"]] = {"sessions": [{"connections": [conn] if conn else []}]}
        return {"user_id": user_id, "devices": devices}

    def moderation_target(self, user_id: str) -> Row:
        """admin.yaml: 400 M_INVALID_PARAM for remote users, 404 for unknown/deactivated."""
        if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
            raise invalid_param("not a user ID")
        if server_name_of(user_id) != self.server_name:
            raise invalid_param("the user is not on this server")
        row = self.store.get_user(user_id)
        if row is None or row["deactivated"]:
            raise not_found("no such user")
        return row

    async def set_moderation_flag(
        self, admin: Requester, user_id: str, flag: str, value: bool, *, route: str,
        reason: str | None = None, ip: str | None = None,
    ) -> None:  # fmt: skip
        """Lock/unlock or suspend/unsuspend an account. The admin API call (``admin.request``,
        ``route``) and the change (``account.lock``, ...) are recorded in the same transaction
        as the change."""
        row = self.moderation_target(user_id)
        if row["is_admin"] and user_id != admin.user_id:
            raise forbidden("server admins cannot be moderated this way")
        now = self.now_ms()
        action = _MODERATION_ACTIONS[flag, value]
        store = self.store

        def fn(conn: Txn) -> None:
            store.set_user_flag_in(conn, user_id, flag, value)
            admin_request_in(
                store, conn, actor=admin.user_id, route=route, ts=now, target=user_id,
                subject=user_id, reason=reason, origin=ip,
            )  # fmt: skip
            record_in(
                store, conn, action, actor=admin.user_id, ts=now, target=user_id,
                subject=user_id, reason=reason, origin=ip, details={flag: value},
            )  # fmt: skip

        await store.transaction(fn)


_MODERATION_ACTIONS = {
    ("locked", True): records.ACTION_ACCOUNT_LOCK,
    ("locked", False): records.ACTION_ACCOUNT_UNLOCK,
    ("suspended", True): records.ACTION_ACCOUNT_SUSPEND,
    ("suspended", False): records.ACTION_ACCOUNT_UNSUSPEND,
}


class _TokenExhausted(Exception):
    """The registration token was used up between the UIA stage and the final write."""
