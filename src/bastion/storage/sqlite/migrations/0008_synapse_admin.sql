-- Migration 6: what the Synapse-compatible admin API (/_synapse/admin/, api/synapse_admin/)
-- keeps (storage/sqlite/admin_directory.py).
-- Rooms an admin blocked (Synapse admin API "Rooms": "Block Room API", and ``block`` of
-- "Delete Room API"): no local user may join or be invited to them again.
CREATE TABLE IF NOT EXISTS blocked_rooms (
    room_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    ts INTEGER NOT NULL
);
-- One row per room deletion ("Delete Room API", v1 and v2): its status for
-- ``GET /_synapse/admin/v2/rooms/.../delete_status`` and, in ``top_stream_pos``, the highest
-- stream position the purged room held, so that positions are never handed out again after a
-- restart (the store's highest position is read from the STREAMS columns).
CREATE TABLE IF NOT EXISTS room_deletions (
    delete_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    status TEXT NOT NULL,
    ts INTEGER NOT NULL,
    result TEXT NOT NULL,
    top_stream_pos INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS room_deletions_room ON room_deletions (room_id, ts);
-- Local media an admin protected from quarantine ("Media Admin API", "Protecting media from
-- being quarantined"): a room's or a user's bulk quarantine passes it by.
CREATE TABLE IF NOT EXISTS protected_media (
    media_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    ts INTEGER NOT NULL
);
