-- Migration 8 of issue 10 (numbered by the lead at merge): retention and legal holds
-- (storage/sqlite/retention.py, services/retention.py).

-- == legal holds ==
-- A user (their events and uploads) or a room (its events and the media they reference) that
-- retention must not touch while the hold stands; set and lifted by admins, each change a
-- compliance.legal_hold / compliance.legal_hold_lift ledger record.
CREATE TABLE IF NOT EXISTS legal_holds (
    kind TEXT NOT NULL CHECK (kind IN ('user', 'room')),
    target TEXT NOT NULL,
    reason TEXT,
    set_by TEXT NOT NULL,
    set_ts INTEGER NOT NULL,
    PRIMARY KEY (kind, target)
);

-- == the purge job's progress ==
-- Per room: every event with origin_server_ts < done_ts and stream_pos <= done_pos has been
-- handled (stripped, or listed in retention_deferred), so a run reads only what is new.
CREATE TABLE IF NOT EXISTS retention_rooms (
    room_id TEXT PRIMARY KEY,
    done_ts INTEGER NOT NULL,
    done_pos INTEGER NOT NULL
);
-- Expired events kept because they were current state or their sender was held: checked again
-- on every run, stripped once neither holds.
CREATE TABLE IF NOT EXISTS retention_deferred (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS retention_deferred_room ON retention_deferred (room_id, event_id);
-- A room's events by age (the purge job's range scan).
CREATE INDEX IF NOT EXISTS events_room_ts ON events (room_id, origin_server_ts, stream_pos);
-- Local media by age.
CREATE INDEX IF NOT EXISTS local_media_created ON local_media (created_ts, media_id);
