-- Migration 5: the guard (issue 9). Each block belongs to one part of the guard; its store
-- methods live in the storage module named in the block's heading.

-- == decisions and the review queue (storage/sqlite/guard_decisions.py) ==
-- One row per recorded verdict (the ledger holds its guard.decision record too); held events
-- wait here for a moderator, reports (POST /report) join the same queue.
CREATE TABLE IF NOT EXISTS guard_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    source TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    subject TEXT,
    room_id TEXT,
    event_id TEXT,
    origin TEXT,
    score REAL NOT NULL DEFAULT 0,
    actions TEXT NOT NULL DEFAULT '[]',
    signals TEXT NOT NULL DEFAULT '[]',
    held TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    ledger_idx INTEGER,
    reviewed_by TEXT,
    reviewed_ts INTEGER,
    review_reason TEXT
);
CREATE INDEX IF NOT EXISTS guard_decisions_status ON guard_decisions (status, id);
CREATE INDEX IF NOT EXISTS guard_decisions_subject ON guard_decisions (subject, id);
CREATE INDEX IF NOT EXISTS guard_decisions_room ON guard_decisions (room_id, id);
-- Per-room settings (classifier thresholds, detectors off), set by server admins.
CREATE TABLE IF NOT EXISTS guard_room_settings (
    room_id TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    updated_ts INTEGER NOT NULL
);
-- Local media quarantined by a guard action (not served until an admin reverses it).
CREATE TABLE IF NOT EXISTS guard_quarantined_media (
    media_id TEXT PRIMARY KEY,
    decision_id INTEGER,
    reason TEXT NOT NULL,
    ts INTEGER NOT NULL
);

-- == rate-limit overrides (storage/sqlite/guard_limits.py) ==
-- Per-user overrides of the rate limits (bots, bridges): {limit name: {per_second, burst}},
-- or {"*": null} for no limits at all.
CREATE TABLE IF NOT EXISTS guard_rate_overrides (
    user_id TEXT PRIMARY KEY,
    overrides TEXT NOT NULL,
    set_by TEXT NOT NULL,
    updated_ts INTEGER NOT NULL
);

-- == login defence (storage/sqlite/guard_login.py) ==
-- Failed-login accounting that outlives a restart: one row per throttled key (an account, an
-- account's known device, an address, a network prefix).
CREATE TABLE IF NOT EXISTS guard_login_throttles (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    level INTEGER NOT NULL,
    blocked_until INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    updated_ts INTEGER NOT NULL
);
-- What a user's logins have come from before (a device ID, a network prefix), for new-login
-- notices.
CREATE TABLE IF NOT EXISTS guard_known_logins (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind, value)
);

-- == policy lists (storage/sqlite/guard_policy.py) ==
-- The policy rooms whose rules the server enforces (the admin chooses which lists to trust).
CREATE TABLE IF NOT EXISTS guard_policy_lists (
    room_id TEXT PRIMARY KEY,
    shortcode TEXT,
    added_by TEXT NOT NULL,
    added_ts INTEGER NOT NULL
);

-- == join-wave cooling (storage/sqlite/guard_decisions.py) ==
-- A room switched to knock/invite for a cooling period, and the join rule to restore.
CREATE TABLE IF NOT EXISTS guard_room_cooling (
    room_id TEXT PRIMARY KEY,
    previous_join_rule TEXT,
    until_ts INTEGER NOT NULL,
    reason TEXT NOT NULL
);

-- == server notices (storage/sqlite/server_notices.py) ==
-- Each user's server-notices room (C-S API "Server Notices").
CREATE TABLE IF NOT EXISTS server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
