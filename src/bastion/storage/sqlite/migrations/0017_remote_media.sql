-- Migration (issue 11, federated media): the cache of other servers' media fetched for our
-- users (C-S API "Content repository", S-S API "Content Repository"). One row per remote
-- mxc:// URI: its content type and file name as checked on arrival, its size and SHA-256, the
-- file it is stored in (a path relative to the media directory, chosen by this server, never
-- built from remote input), the key it is encrypted with when encryption at rest is on (NULL:
-- stored in plain), when it was fetched and when it was last served (by last_access_ts: the
-- oldest go first when the cache is trimmed).
CREATE TABLE remote_media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    upload_name TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    file_path TEXT NOT NULL,
    file_key BLOB,
    fetched_ts INTEGER NOT NULL,
    last_access_ts INTEGER NOT NULL,
    PRIMARY KEY (server_name, media_id)
) WITHOUT ROWID;
CREATE INDEX remote_media_last_access ON remote_media (last_access_ts);
