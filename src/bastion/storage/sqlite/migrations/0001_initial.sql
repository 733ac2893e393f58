-- Migration 1: the schema of commit cbbfc30, the last before numbered migrations (the union of
-- the storage mixins' SCHEMA strings, in the store's order). A database written by that code has
-- exactly these tables and no schema_version table; opening it stamps it as version 1.
-- == accounts (the tables of storage/sqlite/accounts.py at cbbfc30) ==
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    created_ts INTEGER NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    locked INTEGER NOT NULL DEFAULT 0,
    suspended INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts INTEGER,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);
-- Access tokens are stored as SHA-256 hashes: a copy of the database yields no usable token.
CREATE TABLE IF NOT EXISTS access_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS access_tokens_device ON access_tokens (user_id, device_id);
-- Registration tokens, also hashed; `prefix` (first 4 characters) lets an admin tell them apart.
CREATE TABLE IF NOT EXISTS registration_tokens (
    token_hash BLOB PRIMARY KEY,
    prefix TEXT NOT NULL,
    uses_allowed INTEGER,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_ts INTEGER,
    created_ts INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
-- Profile fields (C-S API "Profiles"): one row per key, the value as JSON.
CREATE TABLE IF NOT EXISTS profiles (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
-- Every admin action, with who, what, on what, when and details (never secrets).
CREATE TABLE IF NOT EXISTS admin_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT NOT NULL
);

-- == rooms (the tables of storage/sqlite/rooms.py at cbbfc30) ==
CREATE TABLE IF NOT EXISTS rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    is_public INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    stream_pos INTEGER NOT NULL UNIQUE,
    depth INTEGER NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts INTEGER NOT NULL,
    json BLOB NOT NULL,
    sg_before INTEGER,
    sg_after INTEGER,
    replaces_state TEXT,
    redacted_because TEXT,
    txn_user TEXT,
    txn_device TEXT,
    txn_id TEXT,
    rejected INTEGER NOT NULL DEFAULT 0,
    soft_failed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_room_pos ON events (room_id, stream_pos);
CREATE TABLE IF NOT EXISTS event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX IF NOT EXISTS event_edges_prev ON event_edges (prev_event_id);
CREATE TABLE IF NOT EXISTS event_auth (
    event_id TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
);
CREATE TABLE IF NOT EXISTS forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
CREATE TABLE IF NOT EXISTS state_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    prev_group INTEGER,
    chain_len INTEGER NOT NULL
);
-- A group's entries: the whole state when prev_group is NULL, else the delta over prev_group.
CREATE TABLE IF NOT EXISTS state_group_entries (
    group_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (group_id, type, state_key)
);
CREATE TABLE IF NOT EXISTS current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE TABLE IF NOT EXISTS membership_events (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_pos INTEGER NOT NULL,
    sender TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS membership_events_user ON membership_events (user_id, stream_pos);
CREATE INDEX IF NOT EXISTS membership_events_room ON membership_events (room_id, stream_pos);
CREATE TABLE IF NOT EXISTS current_membership (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_pos INTEGER NOT NULL,
    forgotten INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX IF NOT EXISTS current_membership_user ON current_membership (user_id, membership);
CREATE TABLE IF NOT EXISTS event_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
CREATE TABLE IF NOT EXISTS room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS room_aliases_room ON room_aliases (room_id);

-- == e2ee (the tables of storage/sqlite/e2ee.py at cbbfc30) ==
CREATE TABLE IF NOT EXISTS e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE IF NOT EXISTS e2e_one_time_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    UNIQUE (user_id, device_id, algorithm, key_id)
);
CREATE INDEX IF NOT EXISTS e2e_one_time_keys_order
    ON e2e_one_time_keys (user_id, device_id, algorithm, seq);
CREATE TABLE IF NOT EXISTS e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);
-- key_type: master | self_signing | user_signing; public_key: the unpadded-base64 Ed25519 key.
CREATE TABLE IF NOT EXISTS e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    stream_pos INTEGER NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
-- Verified signatures from /keys/signatures/upload. target_key_id: a device ID or the public
-- key of a master key (cross-signing keys may not equal a device ID of their owner).
CREATE TABLE IF NOT EXISTS e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE INDEX IF NOT EXISTS e2e_signatures_signer ON e2e_signatures (signer_user_id, signer_key_id);
-- One row per change of a user's device list or cross-signing keys, at a global stream position.
CREATE TABLE IF NOT EXISTS e2e_device_list_changes (
    stream_pos INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS e2e_device_list_changes_user
    ON e2e_device_list_changes (user_id, stream_pos);
CREATE TABLE IF NOT EXISTS device_inbox (
    stream_pos INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    content_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS device_inbox_device ON device_inbox (user_id, device_id, stream_pos);
-- The highest position ever given to a to-device message: delivered messages are deleted, and
-- the store must not hand out their positions again after a restart.
CREATE TABLE IF NOT EXISTS device_inbox_top (
    k INTEGER PRIMARY KEY CHECK (k = 1),
    stream_pos INTEGER NOT NULL
);
-- When a sync response could not carry every pending message, the position of the last one it
-- carried, keyed by the response's next_batch position.
CREATE TABLE IF NOT EXISTS device_inbox_cursors (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    token_pos INTEGER NOT NULL,
    last_pos INTEGER NOT NULL,
    stream_pos INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, token_pos)
);
CREATE TABLE IF NOT EXISTS to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE TABLE IF NOT EXISTS e2e_backup_versions (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE IF NOT EXISTS e2e_backup_keys (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count INTEGER NOT NULL,
    is_verified INTEGER NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- == media (the tables of storage/sqlite/media.py at cbbfc30) ==
-- One row per local media ID. upload_ts IS NULL while an asynchronous upload is pending.
CREATE TABLE IF NOT EXISTS local_media (
    media_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    unused_expires_at INTEGER,
    upload_ts INTEGER,
    content_type TEXT,
    upload_name TEXT,
    size INTEGER,
    sha256 TEXT
);
CREATE INDEX IF NOT EXISTS local_media_pending ON local_media (user_id, unused_expires_at)
    WHERE upload_ts IS NULL;
CREATE TABLE IF NOT EXISTS media_thumbnails (
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    animated INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    file_name TEXT NOT NULL,
    PRIMARY KEY (media_id, width, height, method, animated)
);

-- == account_data (the tables of storage/sqlite/account_data.py at cbbfc30) ==
CREATE TABLE IF NOT EXISTS user_filters (
    user_id TEXT NOT NULL,
    filter_id INTEGER NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
CREATE INDEX IF NOT EXISTS user_filters_json ON user_filters (user_id, filter_json);
-- room_id is '' for global account data.
CREATE TABLE IF NOT EXISTS account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_pos INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX IF NOT EXISTS account_data_stream ON account_data (user_id, stream_pos);
-- The latest receipt of each (room, type, user, thread); thread_id '' is unthreaded.
CREATE TABLE IF NOT EXISTS receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    stream_pos INTEGER NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX IF NOT EXISTS receipts_stream ON receipts (room_id, stream_pos);
-- A user's push rules as one JSON document (their own rules and their changes to the
-- predefined ones); see bastion.services.push_rules.
CREATE TABLE IF NOT EXISTS push_rules (
    user_id TEXT PRIMARY KEY,
    rules_json TEXT NOT NULL,
    stream_pos INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS push_rules_stream ON push_rules (stream_pos);
CREATE TABLE IF NOT EXISTS presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts INTEGER NOT NULL,
    stream_pos INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS presence_stream ON presence (stream_pos);
CREATE TABLE IF NOT EXISTS content_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    reporter TEXT NOT NULL,
    kind TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    target_user_id TEXT,
    reason TEXT,
    target_exists INTEGER NOT NULL
);

-- == federation (the tables of storage/sqlite/federation.py at cbbfc30) ==
-- One row per (server, key). valid_until_ts is the effective validity (capped at 7 days after
-- the fetch); for a key from old_verify_keys it is its expired_ts and is_old = 1.
CREATE TABLE IF NOT EXISTS server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts INTEGER NOT NULL,
    is_old INTEGER NOT NULL,
    fetched_ts INTEGER NOT NULL,
    from_server TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
-- The latest /_matrix/key/v2/server response fetched directly from each server, as received.
CREATE TABLE IF NOT EXISTS server_key_responses (
    server_name TEXT PRIMARY KEY,
    valid_until_ts INTEGER NOT NULL,
    fetched_ts INTEGER NOT NULL,
    response_json TEXT NOT NULL
);
-- Our own retired signing keys.
CREATE TABLE IF NOT EXISTS local_old_signing_keys (
    key_id TEXT PRIMARY KEY,
    verify_key TEXT NOT NULL,
    expired_ts INTEGER NOT NULL
);

-- == device_lists (the tables of storage/sqlite/device_lists.py at cbbfc30) ==
CREATE TABLE IF NOT EXISTS device_list_outbound (
    stream_id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS device_list_outbound_user ON device_list_outbound (user_id, stream_id);
CREATE TABLE IF NOT EXISTS remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id INTEGER NOT NULL,
    synced_pos INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS remote_device_list_seen (
    user_id TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, stream_id)
);
CREATE TABLE IF NOT EXISTS remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    keys_json TEXT,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE IF NOT EXISTS remote_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
CREATE TABLE IF NOT EXISTS federation_to_device_seen (
    origin TEXT NOT NULL,
    message_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (origin, message_id)
);
CREATE INDEX IF NOT EXISTS federation_to_device_seen_ts ON federation_to_device_seen (ts);

-- == federation_queue (the tables of storage/sqlite/federation_queue.py at cbbfc30) ==
CREATE TABLE IF NOT EXISTS federation_outbound_pdus (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    pdu BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS federation_outbound_pdus_dest ON federation_outbound_pdus
    (destination, id);
CREATE TABLE IF NOT EXISTS federation_outbound_edus (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    edu_key TEXT,
    content BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS federation_outbound_edus_dest ON federation_outbound_edus
    (destination, id);
CREATE UNIQUE INDEX IF NOT EXISTS federation_outbound_edus_key ON federation_outbound_edus
    (destination, edu_type, edu_key) WHERE edu_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS federation_destinations (
    destination TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    retry_interval_ms INTEGER NOT NULL DEFAULT 0,
    retry_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS out_of_room_memberships (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    room_version TEXT NOT NULL,
    stream_pos INTEGER NOT NULL,
    event BLOB NOT NULL,
    stripped_state BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS out_of_room_memberships_user ON out_of_room_memberships
    (user_id, room_id);

-- == federation_inbound (the tables of storage/sqlite/federation_inbound.py at cbbfc30) ==
CREATE TABLE IF NOT EXISTS federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json BLOB NOT NULL,
    received_ts INTEGER NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE TABLE IF NOT EXISTS room_state_history (
    room_id TEXT NOT NULL,
    stream_pos INTEGER NOT NULL,
    group_id INTEGER,
    PRIMARY KEY (room_id, stream_pos)
);
