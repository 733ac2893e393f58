"""Erasure of one local user (GDPR Art. 17, issue 10): what the erasure service
(:mod:`bastion.services.erasure`) reads and deletes, and the disk hygiene after it.

Every table of the schema (migrations 0001-0005 and this part's ``erased_users``), with what an
erasure does to the rows of the erased user and why:

=============================== ===============================================================
table                           what happens
=============================== ===============================================================
users                           kept, ``deactivated = 1``, no password (deactivation): the user
                                ID is never reused; the ledger's records name it
devices, access_tokens          deleted by the deactivation (device by device, with their keys
                                and a ``device.delete`` record each); devices hold display names
profiles                        deleted by the deactivation (display name, avatar URL)
registration_tokens             nothing about a user
admin_audit                     a view over the ledger's action leaves (no content)
rooms                           the room's, not the user's
events                          every event the user sent, and every ``m.room.member`` event
                                about them (an invite carries their display name), rewritten to
                                the redacted form (``strip_event_contents_in``): ID, hashes,
                                signatures and the keys a room needs stay, so the graph and
                                every signature still verify; each listed in a
                                ``compliance.erase`` ledger record. Not the room's settings
                                (the service's ``KEPT_STATE_TYPES``: encryption, server ACL,
                                ...), which hold no words of the user and which the redaction
                                algorithm would empty
event_edges, event_auth,        event IDs and positions only: the room's graph and state
forward_extremities,
state_groups, state_group_
entries, current_state,
room_state_history
membership_events,              who was a member when: the room's history (kept; the events
current_membership              they name are stripped)
event_txns                      deleted (the user's client transaction IDs)
room_aliases                    kept: an alias the user created is the room's address, which
                                its other members use
e2e_device_keys,                deleted with each device by the deactivation
e2e_one_time_keys,
e2e_fallback_keys
e2e_cross_signing_keys          deleted (a device-list change tells the user's contacts)
e2e_signatures                  deleted: those made by the user's keys and those on them
e2e_device_list_changes         user IDs and positions only (kept: other servers and clients
                                learn from them that the devices are gone)
device_inbox                    deleted: to-device messages to the user and from them
device_inbox_top                a number
device_inbox_cursors,           deleted (the user's)
to_device_txns
e2e_backup_versions,            deleted: every key-backup version and its session data
e2e_backup_keys
local_media                     deleted, with the files and thumbnails (by the service, before
                                this transaction: a failure leaves rows without files, which a
                                second erasure deletes, never files without rows)
user_filters                    deleted
account_data                    deleted (global and per-room)
receipts                        deleted (the user's read receipts)
push_rules                      deleted (keywords the user chose)
presence                        deleted (status message)
content_reports                 the ``reason`` of the reports the user filed is set to NULL (the
                                report stays: a moderation record); reports about the user were
                                written by others and stay
server_signing_keys,            servers' keys
server_key_responses,
local_old_signing_keys
device_list_outbound            user and device IDs only
remote_device_lists,            remote users only
remote_device_list_seen,
remote_devices,
remote_cross_signing_keys,
federation_to_device_seen
federation_outbound_pdus        the user's queued PDUs are stripped with their events
event_relations                 the rows of the user's events go when they are stripped (the
                                redacted form has no ``m.relates_to``; an annotation key is
                                words of the user); rows of others' events naming the user's
                                events as parents hold only event IDs
federation_outbound_edus        queued EDUs from the user (to-device messages, typing) are
                                deleted; their entries are taken out of presence and receipt
                                EDUs (device-list updates stay: they say the devices are gone)
federation_destinations         servers
out_of_room_memberships         deleted (invites the user received from other servers, with the
                                stripped state of those rooms)
federation_inbound_txns         responses to other servers (no content)
ledger_entries and the other    no content (a leaf holds hashes and IDs, never what was
ledger_* tables, witness_logs   written); kept, so the ledger still verifies
guard_decisions                 decisions about the user: the held event's content (``held``)
                                goes, a still-held one is closed as ``rejected``, and the
                                evidence of every signal is emptied (it may name words and links
                                of their messages); reports the user filed: the reason text goes
                                from ``reason``, the signals and ``details``
guard_room_settings             the room's
guard_quarantined_media         deleted for the user's media (the media is gone)
remote_media,                   other servers' files (the cache, and the quarantine of
quarantined_remote_media        remote mxc:// URIs): no local user's data; untouched
guard_rate_overrides            deleted (the account sends nothing any more)
guard_login_throttles           failure counters keyed by account or address, forgotten a while
                                after the last failure; kept (no content)
guard_known_logins              deleted (where the user logged in from)
guard_policy_lists,             rooms
guard_room_cooling
server_notice_system_users      the server's own accounts
server_notice_rooms             kept; the events of the user's notices room are stripped: the
                                server's notices to them name their logins' devices (display
                                names they chose) and network addresses
erased_users                    the user's row is added
openid_tokens                   deleted by the deactivation (and here again): tokens that
                                vouched for the user's ID to widgets and integration managers
event_search, event_search_     the index rows of the user's events go when they are stripped
events, event_search_pending    (storage/sqlite/search.py); the index is then rewritten
                                (FTS5 ``optimize``) before the compaction below, so no old
                                segment of it keeps their words
pushers                         deleted by the deactivation (and here again): the push
                                gateway URLs and push keys of the user's devices
push_notifications, push_counts deleted (which events notified the user)
=============================== ===============================================================

Disk hygiene: every connection runs with ``PRAGMA secure_delete=ON``
(:func:`bastion.storage.sqlite.database.connection_pragmas`), so what these writes delete or
overwrite is zeroed in its page; :meth:`ErasureStore.compact_database` then checkpoints the
write-ahead log into the database and truncates it (frames in the WAL would hold pages from
before the erasure), runs ``VACUUM`` (the database is rebuilt: no free page or slack space keeps
old bytes) and truncates the WAL again. It runs on the writer thread between two write
batches, outside a transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import orjson

from bastion.storage.sqlite.base import StoreBase
from bastion.storage.sqlite.media import MediaStore
from bastion.storage.sqlite.search import optimize_search_in

STREAMS: list[tuple[str, str]] = []

#: Event types never redacted over federation by an erasure: the room's creation (its content
#: is what the room is) and redactions themselves.
_NOT_REDACTED = ("m.room.create", "m.room.redaction")

#: Tries of a truncating checkpoint while a reader still holds a snapshot of the WAL.
_CHECKPOINT_TRIES = 50


def _server_of(user_id_column: str) -> str:
    return f"substr({user_id_column}, instr({user_id_column}, ':') + 1)"


class ErasureStore(StoreBase):
    # -- what to erase ----------------------------------------------------------------------------
    def erasure_redaction_targets(
        self, user_id: str, server_name: str, kept_state_types: Sequence[str] = ()
    ) -> list[tuple[str, str]]:
        """(room ID, event ID) of the user's events, oldest first, in the rooms they are joined
        to that have a joined member on another server: what a redaction must reach. Events
        already redacted, rejected, soft-failed or outliers, creations, redactions and state
        events of ``kept_state_types`` are left out."""
        not_redacted = (*_NOT_REDACTED, *kept_state_types)
        marks = ",".join("?" * len(not_redacted))
        rows = self.db.read(
            "SELECT e.room_id, e.event_id FROM events e"
            " WHERE e.sender = ? AND e.rejected = 0 AND e.soft_failed = 0"
            f" AND e.redacted_because IS NULL AND NOT (e.type IN ({marks})"
            "  AND (e.state_key IS NOT NULL OR e.type = 'm.room.redaction'))"
            " AND e.room_id IN (SELECT room_id FROM current_membership"
            "  WHERE user_id = ? AND membership = 'join')"
            " AND EXISTS (SELECT 1 FROM current_membership m WHERE m.room_id = e.room_id"
            f"  AND m.membership = 'join' AND {_server_of('m.user_id')} != ?)"
            " ORDER BY e.stream_pos",  # noqa: S608
            (user_id, *not_redacted, user_id, server_name),
        )
        return [(r[0], r[1]) for r in rows]

    def erasure_event_ids(self, user_id: str, kept_state_types: Sequence[str] = ()) -> list[str]:
        """Every stored event the user sent, every membership event about them, and every event
        of their server-notices room (what the server told them: their logins' devices and
        addresses), oldest first (one scan of ``events``), but for state events of
        ``kept_state_types``."""
        marks = ",".join("?" * len(kept_state_types))
        kept = f" AND NOT (state_key IS NOT NULL AND type IN ({marks}))" if marks else ""
        rows = self.db.read(
            f"SELECT event_id FROM events WHERE (sender = ?{kept})"  # noqa: S608
            " OR (type = 'm.room.member' AND state_key = ?)"
            " OR (room_id IN (SELECT room_id FROM server_notice_rooms WHERE user_id = ?"
            f"  AND purpose = 'notices'){kept}) ORDER BY stream_pos",
            (user_id, *kept_state_types, user_id, user_id, *kept_state_types),
        )
        return [r[0] for r in rows]

    def erasure_media_ids(self, user_id: str) -> list[str]:
        """The IDs of every local media the user uploaded (or reserved)."""
        rows = self.db.read(
            "SELECT media_id FROM local_media WHERE user_id = ? ORDER BY created_ts", (user_id,)
        )
        return [r[0] for r in rows]

    def is_user_erased(self, user_id: str) -> bool:
        return (
            self.db.read_one("SELECT 1 FROM erased_users WHERE user_id = ?", (user_id,)) is not None
        )

    # -- the erasure's writes -----------------------------------------------------------------------
    @staticmethod
    def erase_user_rows_in(conn: sqlite3.Connection, user_id: str, *, now_ms: int, actor: str,
                           media_ids: list[str]) -> dict[str, int]:  # fmt: skip
        """Inside a write: delete or clear every row that holds what the user wrote or
        uploaded, beyond their events (the table in the module docstring); the number of rows
        per kind."""
        counts: dict[str, int] = {}

        def run(kind: str, sql: str, args: tuple) -> None:
            counts[kind] = counts.get(kind, 0) + conn.execute(sql, args).rowcount

        u = (user_id,)
        run("profile", "DELETE FROM profiles WHERE user_id = ?", u)
        run("account_data", "DELETE FROM account_data WHERE user_id = ?", u)
        run("filters", "DELETE FROM user_filters WHERE user_id = ?", u)
        run("push_rules", "DELETE FROM push_rules WHERE user_id = ?", u)
        run("receipts", "DELETE FROM receipts WHERE user_id = ?", u)
        run("presence", "DELETE FROM presence WHERE user_id = ?", u)
        run("key_backup_versions", "DELETE FROM e2e_backup_versions WHERE user_id = ?", u)
        run("key_backup_sessions", "DELETE FROM e2e_backup_keys WHERE user_id = ?", u)
        run("to_device", "DELETE FROM device_inbox WHERE user_id = ? OR sender = ?", u * 2)
        run("to_device_state", "DELETE FROM device_inbox_cursors WHERE user_id = ?", u)
        run("to_device_state", "DELETE FROM to_device_txns WHERE user_id = ?", u)
        run("event_txns", "DELETE FROM event_txns WHERE user_id = ?", u)
        run("devices", "DELETE FROM devices WHERE user_id = ?", u)
        run("devices", "DELETE FROM access_tokens WHERE user_id = ?", u)
        run("devices", "DELETE FROM refresh_tokens WHERE user_id = ?", u)
        run("devices", "DELETE FROM login_tokens WHERE user_id = ?", u)
        run("openid_tokens", "DELETE FROM openid_tokens WHERE user_id = ?", u)
        run("pushers", "DELETE FROM pushers WHERE user_id = ?", u)
        run("notifications", "DELETE FROM push_notifications WHERE user_id = ?", u)
        run("notifications", "DELETE FROM push_counts WHERE user_id = ?", u)
        run("device_keys", "DELETE FROM e2e_device_keys WHERE user_id = ?", u)
        run("device_keys", "DELETE FROM e2e_one_time_keys WHERE user_id = ?", u)
        run("device_keys", "DELETE FROM e2e_fallback_keys WHERE user_id = ?", u)
        run("cross_signing_keys", "DELETE FROM e2e_cross_signing_keys WHERE user_id = ?", u)
        run("signatures", "DELETE FROM e2e_signatures WHERE target_user_id = ?"
            " OR signer_user_id = ?", u * 2)  # fmt: skip
        run("remote_invites", "DELETE FROM out_of_room_memberships WHERE user_id = ?", u)
        run("known_logins", "DELETE FROM guard_known_logins WHERE user_id = ?", u)
        run("rate_overrides", "DELETE FROM guard_rate_overrides WHERE user_id = ?", u)
        run("content_reports", "UPDATE content_reports SET reason = NULL"
            " WHERE reporter = ? AND reason IS NOT NULL", u)  # fmt: skip
        counts["media"] = MediaStore.delete_local_media_in(conn, media_ids)
        counts.update(_erase_guard_decisions_in(conn, user_id, now_ms=now_ms, actor=actor))
        counts["federation_edus"] = _erase_queued_edus_in(conn, user_id)
        return counts

    @staticmethod
    def mark_user_erased_in(
        conn: sqlite3.Connection, user_id: str, ts: int, redact_federated: bool
    ) -> None:
        conn.execute(
            "INSERT INTO erased_users (user_id, erased_ts, redact_federated) VALUES (?,?,?)"
            " ON CONFLICT (user_id) DO UPDATE SET erased_ts = excluded.erased_ts,"
            " redact_federated = MAX(redact_federated, excluded.redact_federated)",
            (user_id, ts, int(redact_federated)),
        )

    # -- disk hygiene ---------------------------------------------------------------------------
    def drop_event_caches(self) -> None:
        """On the event loop's thread, after an erasure committed: empty the read caches that
        hold parsed events (their entries from before the commit are unreachable already, but
        would stay in memory until evicted)."""
        caches = self.room_caches  # type: ignore[attr-defined]
        caches.event_rows.clear()
        caches.slices.clear()

    async def compact_database(self) -> dict[str, Any]:
        """Rewrite the search index (FTS5 ``optimize``), checkpoint and truncate the WAL,
        ``VACUUM``, truncate the WAL again (on the writer thread, between two batches); what it
        measured (seconds, sizes)."""
        return await self.db.maintain(_compact)

    def compact_database_sync(self) -> dict[str, Any]:
        """:meth:`compact_database` for command-line tools."""
        return self.db.maintain_sync(_compact)


def _checkpoint(conn: sqlite3.Connection) -> None:
    """``wal_checkpoint(TRUNCATE)`` until it completes (a reader holding a snapshot makes it
    report busy); raises if it never does."""
    for _ in range(_CHECKPOINT_TRIES):
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy == 0:
            return
        time.sleep(0.02)
    raise sqlite3.OperationalError("the write-ahead log could not be checkpointed: readers busy")


def _compact(conn: sqlite3.Connection) -> dict[str, Any]:
    t0 = time.perf_counter()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    before = conn.execute("PRAGMA page_count").fetchone()[0] * page_size
    optimize_search_in(conn)  # (autocommit: no transaction is open here)
    _checkpoint(conn)
    t1 = time.perf_counter()
    conn.execute("VACUUM")
    t2 = time.perf_counter()
    _checkpoint(conn)
    t3 = time.perf_counter()
    after = conn.execute("PRAGMA page_count").fetchone()[0] * page_size
    return {
        "checkpoint_s": round((t1 - t0) + (t3 - t2), 4),
        "vacuum_s": round(t2 - t1, 4),
        "bytes_before": before,
        "bytes_after": after,
    }


def _erase_guard_decisions_in(conn: sqlite3.Connection, user_id: str, *, now_ms: int,
                              actor: str) -> dict[str, int]:  # fmt: skip
    """The guard's copies of what the user wrote: held events and the evidence of decisions
    about them; the reason text of reports they filed."""
    held = evidence = reports = 0
    rows = conn.execute(
        "SELECT id, status, held, signals FROM guard_decisions WHERE subject = ?", (user_id,)
    ).fetchall()
    for r in rows:
        signals = orjson.loads(r["signals"]) if r["signals"] else []
        cleared = [
            {**s, "evidence": {}} if isinstance(s, dict) and s.get("evidence") else s
            for s in signals
        ]
        changed_signals = cleared != signals
        if r["held"] is None and not changed_signals:
            continue
        if r["held"] is not None:
            held += 1
        if changed_signals:
            evidence += 1
        if r["status"] == "held":
            conn.execute(
                "UPDATE guard_decisions SET held = NULL, signals = ?, status = 'rejected',"
                " reviewed_by = ?, reviewed_ts = ?, review_reason = ? WHERE id = ?",
                (orjson.dumps(cleared).decode(), actor, now_ms, "the sender's account was erased",
                 r["id"]),
            )  # fmt: skip
        else:
            conn.execute(
                "UPDATE guard_decisions SET held = NULL, signals = ? WHERE id = ?",
                (orjson.dumps(cleared).decode(), r["id"]),
            )
    rows = conn.execute(
        "SELECT id, reason, signals, details FROM guard_decisions WHERE source = 'report'"
        " AND json_extract(details, '$.reporter') = ?",
        (user_id,),
    ).fetchall()
    for r in rows:
        details = orjson.loads(r["details"]) if r["details"] else {}
        if details.get("report_reason") is None and ": " not in (r["reason"] or ""):
            continue
        details["report_reason"] = None
        signals = [
            {**s, "reason": str(s.get("reason", "")).split(": ", 1)[0]} if isinstance(s, dict)
            else s
            for s in (orjson.loads(r["signals"]) if r["signals"] else [])
        ]  # fmt: skip
        conn.execute(
            "UPDATE guard_decisions SET reason = ?, signals = ?, details = ? WHERE id = ?",
            ((r["reason"] or "").split(": ", 1)[0], orjson.dumps(signals).decode(),
             orjson.dumps(details).decode(), r["id"]),
        )  # fmt: skip
        reports += 1
    return {"guard_held_events": held, "guard_evidence": evidence, "guard_reports": reports}


def _erase_queued_edus_in(conn: sqlite3.Connection, user_id: str) -> int:
    """Queued EDUs from or about the user (not yet sent): deleted, or the user's entries taken
    out of the presence and receipt EDUs that carry other users' too. The number changed."""
    changed = 0
    rows = conn.execute(
        "SELECT id, edu_type, content FROM federation_outbound_edus"
        " WHERE instr(CAST(content AS BLOB), ?) > 0",
        (user_id.encode(),),
    ).fetchall()
    for r in rows:
        content = orjson.loads(r["content"])
        etype = r["edu_type"]
        new: Any = content
        sender = content.get("sender" if etype == "m.direct_to_device" else "user_id")
        if etype in ("m.direct_to_device", "m.typing") and sender == user_id:
            new = None
        elif etype == "m.presence" and isinstance(content.get("push"), list):
            push = [p for p in content["push"] if not (isinstance(p, dict)
                                                       and p.get("user_id") == user_id)]  # fmt: skip
            new = {**content, "push": push} if push else None
        elif etype == "m.receipt" and isinstance(content, dict):
            new = {}
            for room_id, by_type in content.items():
                if not isinstance(by_type, dict):
                    continue
                kept = {t: {u: v for u, v in users.items() if u != user_id}
                        for t, users in by_type.items() if isinstance(users, dict)}  # fmt: skip
                kept = {t: users for t, users in kept.items() if users}
                if kept:
                    new[room_id] = kept
            new = new or None
        if new == content:
            continue
        changed += 1
        if new is None:
            conn.execute("DELETE FROM federation_outbound_edus WHERE id = ?", (r["id"],))
        else:
            conn.execute(
                "UPDATE federation_outbound_edus SET content = ? WHERE id = ?",
                (orjson.dumps(new), r["id"]),
            )
    return changed
