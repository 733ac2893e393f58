-- Migration (the admin API for other servers' media): the remote mxc:// URIs quarantined on
-- this server (Synapse admin API "Media Admin API", "Quarantine media"), by an admin or by a
-- guard action (decision_id, as in guard_quarantined_media). A quarantined remote file is never
-- served to our users and never fetched, whether it was cached or not; quarantining it drops
-- the cached copy (its remote_media row and key, its file and thumbnails), keeping here what the
-- cache knew of it (content type, file name, size, SHA-256, when it was fetched and last
-- served; NULL when it was never cached) so the admin API can still show what was quarantined.
-- A row here and a row of remote_media for the same URI never exist together.
CREATE TABLE quarantined_remote_media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    decision_id INTEGER,
    reason TEXT NOT NULL,
    ts INTEGER NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size INTEGER,
    sha256 TEXT,
    fetched_ts INTEGER,
    last_access_ts INTEGER,
    PRIMARY KEY (server_name, media_id)
) WITHOUT ROWID;
