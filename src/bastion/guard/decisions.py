"""Carrying out the guard's actions, and a moderator's reviews of its decisions (issue 9,
"Policy lists and actions").

Actions (:data:`bastion.guard.signals.ACTIONS`), carried out after the decision is recorded, each
result kept in the decision's ``details["carried_out"]`` and in a ``guard.decision`` ledger record
with the decision's ID:

* ``redact`` — the event (a federated one) and those a signal names (``evidence["event_ids"]``)
  are redacted (C-S API "Redactions") by the room's **server-side moderator**: the local joined
  user with the highest power level, if it is at least the room's ``redact`` level. When no local
  user has that power, nothing is redacted and the result says so (a soft-failed federated event
  is not served to our clients anyway).
* ``quarantine_media`` — the media the event links (``url``, ``info.thumbnail_url``,
  ``evidence["mxc"]``) is quarantined: no longer served. Local media goes in
  ``guard_quarantined_media``; another server's in ``quarantined_remote_media``, cached here
  or not: never fetched, its cached copy deleted from disk (as the admin API's quarantine does,
  :meth:`bastion.services.admin_directory.AdminDirectory.quarantine`).
* ``suspend`` / ``lock`` — a local sender's account is suspended or locked (the account
  moderation flags of C-S API "Server administration"), with its ``account.suspend`` /
  ``account.lock`` record; server admins are never suspended or locked by the guard.
* ``ban`` — the sender is banned from the room by the server-side moderator (``ban`` level).
* ``server_acl`` — the sender's server is added to the room's ``m.room.server_acl`` deny list
  (S-S API "Server Access Control Lists") by the server-side moderator; never our own server.
* ``cool_room`` — the room cools (``hs.guard.cooling.start``): knock or invite only for a period.

Reviews (``POST /_bastion/admin/v1/guard/decisions/{id}/approve|reject|reverse``), each a
``guard.review`` ledger record written with the status change:

* approve — a ``held`` local event is sent as its sender through the room service, as it would
  have been (same type, state key, content and transaction ID), without asking the guard again;
* reject — a ``held`` event or an ``open`` decision (a report, a held federated event) is closed;
* reverse — a ``done`` decision is undone where it can be: accounts unsuspended / unlocked, bans
  lifted, media unquarantined, the server removed from the ACL again, a cooling room reopened
  (``hs.guard.cooling.lift``: its previous join rule restored now). Redactions cannot be undone
  (the content is gone); the answer lists them.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bastion.core.identifiers import parse_server_name, server_name_of
from bastion.core.media import is_valid_media_id
from bastion.core.power_levels import named_level, required_power_level, user_power_level
from bastion.core.room_versions import get_room_version
from bastion.core.state_keys import CREATE_KEY
from bastion.core.state_keys import POWER_LEVELS_KEY as PL_KEY
from bastion.errors import MatrixError, invalid_param, not_found
from bastion.ledger import records
from bastion.services.security_records import clip, record_in

if TYPE_CHECKING:
    from bastion.guard.service import GuardService
    from bastion.guard.signals import Decision, EventContext
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

log = logging.getLogger(__name__)

__all__ = ["BYPASS", "GuardActions"]

#: More to write in a review's transaction (the admin API call's ``admin.request`` record).
Also = Callable[["Txn"], None]

#: Set while an approved held event is sent: the guard lets it through without a new check.
BYPASS: contextvars.ContextVar[bool] = contextvars.ContextVar("guard_bypass", default=False)

#: How long a room cools when the signal does not say (``evidence["until_ms"]``).
DEFAULT_COOLING_MS = 60 * 60 * 1000
#: The most events one redact action redacts, and media IDs one quarantine covers.
MAX_TARGETS = 100

GUARD_ACTOR = "server"

_FLAG_OF = {"suspend": "suspended", "lock": "locked"}
_SET_ACTION = {"suspended": records.ACTION_ACCOUNT_SUSPEND, "locked": records.ACTION_ACCOUNT_LOCK}
_UNSET_ACTION = {
    "suspended": records.ACTION_ACCOUNT_UNSUSPEND,
    "locked": records.ACTION_ACCOUNT_UNLOCK,
}


def _mxc_ids(values: list[Any], server_name: str) -> list[str]:
    """The media IDs of the ``mxc://<our server>/<id>`` URIs among ``values``."""
    out: list[str] = []
    prefix = f"mxc://{server_name}/"
    for v in values:
        if isinstance(v, str) and v.startswith(prefix):
            media_id = v[len(prefix) :]
            if media_id and "/" not in media_id and media_id not in out:
                out.append(media_id)
    return out[:MAX_TARGETS]


def _remote_mxcs(values: list[Any], server_name: str) -> list[tuple[str, str]]:
    """(server name, media ID) of the well-formed ``mxc://`` URIs of other servers among
    ``values``."""
    out: list[tuple[str, str]] = []
    for v in values:
        if not isinstance(v, str) or not v.startswith("mxc://"):
            continue
        origin, _, media_id = v[len("mxc://") :].partition("/")
        if origin == server_name or not is_valid_media_id(media_id):
            continue
        try:
            parse_server_name(origin)
        except MatrixError:
            continue
        if (origin, media_id) not in out:
            out.append((origin, media_id))
    return out[:MAX_TARGETS]


class GuardActions:
    """``hs.guard.actions``."""

    def __init__(self, hs: HomeServer, guard: GuardService) -> None:
        self.hs = hs
        self.guard = guard

    # ------------------------------------------------------------------------------------------
    # The server-side moderator
    # ------------------------------------------------------------------------------------------
    def moderator(self, room_id: str, needed: str | tuple[str, str]) -> str | None:
        """The local joined user with the highest power level in the room, if it reaches the
        level ``needed`` (a named level such as ``"ban"``, or ``("state", event type)``)."""
        found = self.moderators(room_id, needed)
        return found[0] if found else None

    def moderators(self, room_id: str, needed: str | tuple[str, str]) -> list[str]:
        """The room's joined local members whose power level reaches ``needed``, highest
        first (ties by user ID). Only users the power levels name (and, v12, the room's
        creators) can reach the level unless ``users_default`` does: a large room's members
        are not each looked at."""
        rooms = self.hs.rooms
        head = rooms.engine.head(room_id)
        if head is None:
            return []
        rv = get_room_version(head.room_version)
        pl = rooms.current_state_event(room_id, *PL_KEY)
        plc = pl["content"] if pl else None
        if isinstance(needed, tuple):
            level = required_power_level(needed[1], True, plc, rv)
        else:
            level = named_level(plc, needed, rv)
        create = rooms.current_state_event(room_id, *CREATE_KEY)
        joined = self.hs.store.room_members_cached(room_id).joined
        candidates: Iterable[str] = joined
        if plc is not None and named_level(plc, "users_default", rv) < level:
            users = plc.get("users")
            named = set(users) if isinstance(users, dict) else set()
            if create is not None:
                extra = create.get("content", {}).get("additional_creators")
                named.add(create.get("sender"))
                named.update(u for u in (extra if isinstance(extra, list) else [])
                             if isinstance(u, str))  # fmt: skip
            candidates = [u for u in named if u in joined]
        out: list[tuple[float, str]] = []
        for user in candidates:
            if not isinstance(user, str) or not rooms.is_local(user):
                continue
            power = user_power_level(user, create, plc, rv)
            if power >= level:
                out.append((float(power), user))
        out.sort(key=lambda p: (-p[0], p[1]))
        return [u for _, u in out]

    # ------------------------------------------------------------------------------------------
    # Carrying out
    # ------------------------------------------------------------------------------------------
    async def carry_out(
        self, decision_id: int, decision: Decision, ctx: EventContext
    ) -> dict[str, Any]:
        """Carry out the decision's actions; their results (action -> what was done or why
        not), stored with the decision and recorded in the ledger."""
        results: dict[str, Any] = {}
        for action in decision.actions:
            try:
                results[action] = await self._one(action, decision_id, decision, ctx)
            except MatrixError as e:
                results[action] = {"done": False, "error": e.message}
            except Exception as e:  # noqa: BLE001 - one failing action must not stop the others
                log.exception("guard action %s of decision %d failed", action, decision_id)
                results[action] = {"done": False, "error": type(e).__name__}
        await self._store_results(decision_id, decision, results)
        return results

    async def _store_results(
        self, decision_id: int, decision: Decision, results: dict[str, Any]
    ) -> None:
        store = self.hs.store
        now = self.hs.now_ms()

        def fn(conn: Txn) -> None:
            current = store.guard_decision_in(conn, decision_id)
            if current is None:
                return
            details = {**current["details"], "carried_out": results}
            store.set_guard_decision_details_in(conn, decision_id, details)
            record_in(
                store, conn, records.ACTION_GUARD_DECISION, actor=GUARD_ACTOR, ts=now,
                target=clip(decision.event_id or decision.room_id or decision.subject or ""),
                subject=decision.subject if (decision.subject or "").startswith("@") else None,
                details={"decision_id": decision_id, "carried_out": _ledger_safe(results)},
            )  # fmt: skip

        await store.transaction(fn)

    async def _one(
        self, action: str, decision_id: int, decision: Decision, ctx: EventContext
    ) -> dict[str, Any]:
        guard = self.guard
        reason = f"guard decision {decision_id}: {decision.reason}"[:500]
        evidence = [s.evidence for s in decision.signals if s.action == action]
        if action == "redact":
            ids = [ctx.event_id] if ctx.event_id else []
            for ev in evidence:
                extra = ev.get("event_ids")
                if isinstance(extra, list | tuple):
                    ids += [e for e in extra if isinstance(e, str) and e not in ids]
            return await self.redact(ctx.room_id, ids[:MAX_TARGETS], reason)
        if action == "quarantine_media":
            values: list[Any] = [ctx.content.get("url")]
            info = ctx.content.get("info")
            if isinstance(info, Mapping):
                values.append(info.get("thumbnail_url"))
            for ev in evidence:
                mxc = ev.get("mxc")
                values += list(mxc) if isinstance(mxc, list | tuple) else [mxc]
            return await self.quarantine(
                _mxc_ids(values, self.hs.server_name), decision_id, reason,
                _remote_mxcs(values, self.hs.server_name),
            )  # fmt: skip
        if action in _FLAG_OF:
            return await self.set_account_flag(ctx.sender, _FLAG_OF[action], True, decision_id,
                                               GUARD_ACTOR, reason)  # fmt: skip
        if action == "ban":
            return await self.ban(ctx.room_id, ctx.sender, reason)
        if action == "server_acl":
            return await self.server_acl(ctx.room_id, server_name_of(ctx.sender) or ctx.origin,
                                         deny=True)  # fmt: skip
        if action == "cool_room":
            until = next(
                (e["until_ms"] for e in evidence if type(e.get("until_ms")) is int),
                ctx.now_ms + DEFAULT_COOLING_MS,
            )
            await guard.cooling.start(ctx.room_id, until, decision.reason)
            return {"done": True, "until_ms": until}
        return {"done": False, "error": f"unknown action {action}"}

    async def redact(self, room_id: str, event_ids: list[str], reason: str) -> dict[str, Any]:
        if not event_ids:
            return {"done": False, "error": "no event to redact"}
        mod = self.moderator(room_id, "redact")
        if mod is None:
            return {"done": False,
                    "error": "no user of this server has the power to redact in the room"}  # fmt: skip
        redacted: list[str] = []
        for eid in event_ids:
            row = self.hs.store.get_event_row(eid)
            if row is None or row.room_id != room_id or row.redacted_because:
                continue
            await self.hs.rooms.redact_event(mod, None, room_id, eid, reason)
            redacted.append(eid)
        return {"done": bool(redacted), "moderator": mod, "event_ids": redacted}

    async def quarantine(self, media_ids: list[str], decision_id: int | None, reason: str,
                         remote: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:  # fmt: skip
        """Quarantine local ``media_ids`` and other servers' ``remote`` media (their cached
        copies deleted); the result names those newly quarantined (``media_ids``, and
        ``remote`` as ``mxc://`` URIs) for a reversal."""
        if not media_ids and not remote:
            return {"done": False, "error": "no media to quarantine"}
        store = self.hs.store
        now = self.hs.now_ms()
        dropped: list[str] = []

        def fn(conn: Txn) -> tuple[list[str], list[str]]:
            dropped.clear()
            local = [m for m in media_ids if store.quarantine_media_in(conn, m, decision_id,
                                                                        reason, now)]  # fmt: skip
            others = []
            for origin, media_id in remote:
                new, file_path = store.quarantine_remote_media_in(
                    conn, origin, media_id, decision_id, reason, now
                )
                if new:
                    others.append(f"mxc://{origin}/{media_id}")
                if file_path is not None:
                    dropped.append(file_path)
            return local, others

        done, others = await store.transaction(fn)
        await self.hs.media.drop_remote_copies(dropped)
        out: dict[str, Any] = {"done": bool(done or others), "media_ids": done}
        if others:
            out["remote"] = others
        return out

    async def set_account_flag(
        self, user_id: str, flag: str, value: bool, decision_id: int, actor: str,
        reason: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        """Suspend/lock (or lift) a local account, with its ``account.*`` record."""
        store = self.hs.store
        if not self.hs.rooms.is_local(user_id):
            return {"done": False, "error": "the user is not on this server"}
        row = store.get_user(user_id)
        if row is None or row["deactivated"]:
            return {"done": False, "error": "no such user"}
        if value and row["is_admin"]:
            return {"done": False, "error": "server admins are not moderated by the guard"}
        if bool(row[flag]) == value:
            return {
                "done": False,
                "error": f"the account is already {'' if value else 'not '}{flag}",
            }
        now = self.hs.now_ms()
        action = (_SET_ACTION if value else _UNSET_ACTION)[flag]

        def fn(conn: Txn) -> None:
            store.set_user_flag_in(conn, user_id, flag, value)
            record_in(
                store, conn, action, actor=actor, ts=now, target=user_id, subject=user_id,
                reason=None if reason is None else clip(reason, 1000),
                details={flag: value, "guard_decision": decision_id},
            )  # fmt: skip

        await store.transaction(fn)
        return {"done": True, "user_id": user_id}

    async def ban(self, room_id: str, user_id: str, reason: str) -> dict[str, Any]:
        mod = self.moderator(room_id, "ban")
        if mod is None:
            return {"done": False,
                    "error": "no user of this server has the power to ban in the room"}  # fmt: skip
        if mod == user_id:
            return {"done": False, "error": "the sender is the room's most powerful local user"}
        await self.hs.rooms.update_membership(mod, room_id, user_id, "ban", reason=reason)
        return {"done": True, "moderator": mod, "user_id": user_id}

    async def server_acl(self, room_id: str, server: str, *, deny: bool) -> dict[str, Any]:
        """Add ``server`` to (``deny``) or remove it from the room's server ACL deny list."""
        if not server or server == self.hs.server_name:
            return {"done": False, "error": "this server is never put on a room's ACL"}
        mod = self.moderator(room_id, ("state", "m.room.server_acl"))
        if mod is None:
            return {"done": False,
                    "error": "no user of this server has the power to change the room's ACL"}  # fmt: skip
        current = self.hs.rooms.current_state_event(room_id, "m.room.server_acl", "")
        content: dict[str, Any] = dict(current["content"]) if current else {
            "allow": ["*"], "allow_ip_literals": True}  # fmt: skip
        denied = [d for d in content.get("deny", []) if isinstance(d, str)]
        if deny == (server in denied):
            return {"done": False, "error": "the ACL already says so", "server": server}
        content["deny"] = [*denied, server] if deny else [d for d in denied if d != server]
        await self.hs.rooms.engine.append_local_event(
            room_id, mod, "m.room.server_acl", content, ""
        )
        return {"done": True, "moderator": mod, "server": server}

    # ------------------------------------------------------------------------------------------
    # Reviews
    # ------------------------------------------------------------------------------------------
    def _require(self, decision_id: int) -> dict[str, Any]:
        decision = self.hs.store.get_guard_decision(decision_id)
        if decision is None:
            raise not_found("no such decision")
        return decision

    async def _review(
        self, decision_id: int, expected: tuple[str, ...], status: str, admin: str,
        reason: str | None, review: str, details: Mapping[str, Any] | None = None,
        ip: str | None = None, also: Also | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Move the decision from one of ``expected`` to ``status`` with its ``guard.review``
        record (and ``also(conn)``: the admin call's record); 400 ``M_INVALID_PARAM`` when it
        is not in an expected status."""
        store = self.hs.store
        now = self.hs.now_ms()

        def fn(conn: Txn) -> dict[str, Any]:
            current = store.guard_decision_in(conn, decision_id)
            if current is None:
                raise not_found("no such decision")
            if current["status"] not in expected:
                raise invalid_param(
                    f"decision {decision_id} is {current['status']}: only a decision that is "
                    f"{' or '.join(expected)} can be given the review {review!r}"
                )
            merged = {**current["details"], **(details or {})}
            store.review_guard_decision_in(
                conn, decision_id, expected_status=current["status"], status=status,
                reviewed_by=admin, reviewed_ts=now, review_reason=reason, details=merged,
            )  # fmt: skip
            subject = current["subject"]
            record_in(
                store, conn, records.ACTION_GUARD_REVIEW, actor=admin, ts=now,
                target=str(decision_id),
                subject=subject if isinstance(subject, str) and subject.startswith("@") else None,
                reason=reason, origin=ip,
                details={"decision_id": decision_id, "review": review, "from": current["status"],
                         "to": status, **_ledger_safe(dict(details or {}))},
            )  # fmt: skip
            if also is not None:
                also(conn)
            return {**current, "status": status, "reviewed_by": admin, "reviewed_ts": now,
                    "review_reason": reason, "details": merged}  # fmt: skip

        return await store.transaction(fn)

    async def approve(
        self, decision_id: int, admin: str, reason: str | None, ip: str | None = None, *,
        also: Also | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Send a held local event as its sender; the decision becomes ``approved`` (with the
        sent event's ID). If sending fails (the room refuses it now), it stays held."""
        decision = self._require(decision_id)
        held = decision["held"]
        if decision["status"] != "held" or not isinstance(held, dict):
            raise invalid_param(
                f"decision {decision_id} is {decision['status']}: only a held event can be approved"
            )
        sender = decision["subject"]
        user = self.hs.store.get_user(sender) if isinstance(sender, str) else None
        if user is None or user["deactivated"] or user["locked"] or user["suspended"]:
            raise invalid_param(
                f"decision {decision_id}: the sender's account is deactivated, locked or "
                "suspended; the event cannot be sent as them"
            )
        claimed = await self._review(decision_id, ("held",), "approved", admin, reason,
                                     "approve", ip=ip, also=also)  # fmt: skip
        try:
            event_id = await self._send_held(decision["subject"], held)
        except MatrixError as e:
            await self._review(decision_id, ("approved",), "held", admin, reason, "unapprove",
                               {"approve_failed": e.message}, ip=ip)  # fmt: skip
            raise
        store = self.hs.store

        def fn(conn: Txn) -> None:
            store.set_guard_decision_event_id_in(conn, decision_id, event_id)

        await store.transaction(fn)
        return {**claimed, "event_id": event_id}

    async def _send_held(self, sender: str, held: Mapping[str, Any]) -> str:
        rooms = self.hs.rooms
        room_id, etype = held["room_id"], held["type"]
        state_key, content = held.get("state_key"), held.get("content") or {}
        txn = held.get("txn")
        token = BYPASS.set(True)
        try:
            if state_key is None:
                device_id = txn[1] if isinstance(txn, list) and len(txn) == 4 else None
                txn_id = txn[3] if isinstance(txn, list) and len(txn) == 4 else None
                return await rooms.send_message_event(
                    sender, device_id, room_id, etype, dict(content), txn_id
                )
            return await rooms.send_state_event(sender, room_id, etype, state_key, dict(content))
        finally:
            BYPASS.reset(token)

    async def reject(
        self, decision_id: int, admin: str, reason: str | None, ip: str | None = None, *,
        also: Also | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Close a held event (it is never sent) or an open decision."""
        self._require(decision_id)
        return await self._review(decision_id, ("held", "open"), "rejected", admin, reason,
                                  "reject", ip=ip, also=also)  # fmt: skip

    async def reverse(
        self, decision_id: int, admin: str, reason: str | None, ip: str | None = None, *,
        also: Also | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Undo a carried-out decision where it can be; the answer says what was undone and
        what cannot be."""
        decision = self._require(decision_id)
        if decision["status"] != "done":
            raise invalid_param(
                f"decision {decision_id} is {decision['status']}: only a decision that was "
                "carried out (done) can be reversed"
            )
        done = decision["details"].get("carried_out") or {}
        undone: dict[str, Any] = {}
        cannot: dict[str, str] = {}
        if decision["origin"] not in (None, self.hs.server_name) and decision["event_id"]:
            cannot["soft_fail"] = (
                'the federated event stays soft-failed (S-S API "Soft failure": it is never '
                "served); its server may send it again"
            )
        subject = decision["subject"]
        room_id = decision["room_id"]
        why = f"reversal of guard decision {decision_id}" + (f": {reason}" if reason else "")
        for action, result in done.items():
            if not isinstance(result, Mapping) or not result.get("done"):
                continue
            try:
                if action in _FLAG_OF:
                    undone[action] = await self.set_account_flag(
                        result.get("user_id", subject), _FLAG_OF[action], False, decision_id,
                        admin, why,
                    )  # fmt: skip
                elif action == "ban":
                    undone[action] = await self.unban(room_id, result.get("user_id", subject), why)
                elif action == "quarantine_media":
                    undone[action] = await self.unquarantine(
                        list(result.get("media_ids", [])), list(result.get("remote", []))
                    )
                elif action == "server_acl":
                    undone[action] = await self.server_acl(room_id, result.get("server", ""),
                                                           deny=False)  # fmt: skip
                elif action == "redact":
                    cannot[action] = "a redaction cannot be undone: the content is gone"
                elif action == "cool_room":
                    restored = await self.guard.cooling.lift(room_id, actor=admin, reason=why)
                    undone[action] = (
                        {"done": False, "error": "the room is no longer cooling"}
                        if restored is None
                        else {"done": True, "join_rule_restored": restored}
                    )
            except MatrixError as e:
                undone[action] = {"done": False, "error": e.message}
        return await self._review(
            decision_id, ("done",), "reversed", admin, reason, "reverse",
            {"reversed": undone, "not_reversible": cannot}, ip=ip, also=also,
        )  # fmt: skip

    async def unban(self, room_id: str, user_id: str, reason: str) -> dict[str, Any]:
        mod = self.moderator(room_id, "ban")
        if mod is None:
            return {"done": False,
                    "error": "no user of this server has the power to unban in the room"}  # fmt: skip
        if self.hs.rooms.membership_of(room_id, user_id) != "ban":
            return {"done": False, "error": "the user is no longer banned"}
        await self.hs.rooms.update_membership(mod, room_id, user_id, "leave", reason=reason)
        return {"done": True, "moderator": mod, "user_id": user_id}

    async def unquarantine(self, media_ids: list[str],
                           remote: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """Release local ``media_ids`` and other servers' ``remote`` media (``mxc://`` URIs,
        fetched again on the next request)."""
        store = self.hs.store
        keys = _remote_mxcs(list(remote or []), self.hs.server_name)

        def fn(conn: Txn) -> tuple[list[str], list[str]]:
            local = [m for m in media_ids if isinstance(m, str)
                     and store.unquarantine_media_in(conn, m)]  # fmt: skip
            others = [f"mxc://{o}/{m}" for o, m in keys
                      if store.unquarantine_remote_media_in(conn, o, m)]  # fmt: skip
            return local, others

        done, others = await store.transaction(fn)
        out: dict[str, Any] = {"done": bool(done or others), "media_ids": done}
        if others:
            out["remote"] = others
        return out


def _ledger_safe(value: Any) -> Any:
    """``value`` with what canonical JSON cannot carry (floats) made strings, strings clipped."""
    if isinstance(value, Mapping):
        return {str(k)[:100]: _ledger_safe(v) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        return [_ledger_safe(v) for v in list(value)[:MAX_TARGETS]]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**53) < value < 2**53 else str(value)
    if isinstance(value, str):
        return clip(value, 500)
    return str(value)[:100]
