"""# Bastion data export, schema version 1

This archive holds everything a Bastion homeserver keeps about one user (GDPR Art. 15, the
right of access; Art. 20, the right to data portability). It is a ZIP file:

- `manifest.json` — `format` (`"bastion-export"`), `schema_version` (1), `user_id`,
  `server_name`, `created_ts` (ms since 1970, UTC), `kinds` (for each kind: its `path`, the
  number of items, `count` — for an object, its number of fields — and a `description`) and `media_files` (`count`, `bytes`).
- `index.html` — the same data for a person to read in a browser, offline (no script, no
  external resource).
- `schema.md` — this file.
- One folder per kind, each holding a JSON file (UTF-8). A file is a JSON array of items, one
  item per line, unless it is marked *object* below. Times are ms since 1970 (UTC). Matrix
  identifiers and event formats follow the Matrix specification (spec.matrix.org).

## Kinds

| kind | file | an item |
|---|---|---|
| account | `account/account.json` (object) | `user_id`, `created_ts`, `is_admin`, `deactivated`, `locked`, `suspended` |
| profile | `profile/profile.json` (object) | profile field name → value (`displayname`, `avatar_url`, ...) |
| presence | `presence/presence.json` (object or null) | `state`, `status_msg`, `last_active_ts` |
| devices | `devices/devices.json` | `device_id`, `display_name`, `last_seen_ts`, `last_seen_ip`, `keys` (the device's published identity keys, or null). Access tokens are never exported. |
| cross_signing_keys | `devices/cross_signing_keys.json` | `usage` (`master`, `self_signing`, `user_signing`), `key` (as uploaded) |
| account_data | `account_data/account_data.json` | `room_id` (null: global), `type`, `content` |
| push_rules | `push_rules/push_rules.json` (object or null) | the stored push-rule document: the user's own rules and their changes to the predefined rules |
| filters | `filters/filters.json` | `filter_id`, `filter` |
| memberships | `rooms/memberships.json` | `room_id`, `membership`, `event_id`, `stream_pos`, `sender` (who made the change), oldest first |
| events_sent | `events_sent/events.json` | `room_id`, `event_id`, `stream_pos`, `event` (the event as stored: the signed PDU; a redacted event in its redacted form), `redacted_because`, `rejected`, `soft_failed` |
| events_visible | `events_visible/events.json` | an event the user could see, in the client event format (the C-S API's "Room event format", as `/messages` serves it; `unsigned.age` left out) |
| receipts | `receipts/receipts.json` | `room_id`, `receipt_type`, `thread_id`, `event_id`, `ts` |
| media | `media/media.json` | `media_id`, `created_ts`, `upload_ts`, `content_type`, `upload_name`, `size`, `sha256` (hex), `file` (its path in the archive), `file_present` |
| key_backup_versions | `key_backup/versions.json` | `version`, `algorithm`, `auth_data`, `etag`, `deleted` |
| key_backup_sessions | `key_backup/sessions.json` | `version`, `room_id`, `session_id`, `first_message_index`, `forwarded_count`, `is_verified`, `session_data` (encrypted by the user's client, as uploaded; the server cannot read it) |
| logins | `logins/logins.json` | `index`, `record`: a ledger record of a login (`login.success`, `login.failure`) about the user; the devices' last-seen addresses are in `devices` |
| ledger | `ledger/records.json` | `index` (the leaf index in the server's ledger), `record` (the action record as logged, with its `nonce`) for every record whose subject is the user |
| guard_decisions | `guard/decisions.json` | a decision of the server's guard about the user: `id`, `ts`, `source`, `outcome`, `status`, `reason`, `room_id`, `event_id`, `origin`, `score`, `actions`, `signals`, `held`, `details`, `ledger_idx`, `reviewed_ts`, `review_reason` |

Uploaded files are in `media/files/<media_id>`, byte for byte as uploaded (their SHA-256 is
the `sha256` of their `media` item).

## What is not in the archive

Secrets (the password hash, access tokens), other users' data beyond the events the user could
see in their rooms (never an event from before the user could see it, as the room's history
visibility decides), who reported the user, and the identity of the moderator who reviewed a
guard decision.
End-to-end encrypted messages and key backups are exported as stored: encrypted, readable only
with the user's own keys.
"""

#: The text of ``schema.md`` in every archive.
SCHEMA_MD = __doc__ or ""
