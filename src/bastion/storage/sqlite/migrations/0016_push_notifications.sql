-- Migration (issue 11, C-S API "Push Notifications", "Push Gateway API"):
-- push_notifications: one row per event a user's push rules said to notify for (the list that
--   GET /notifications pages through, newest first by stream position); "unread" goes to 0 when
--   the user's read receipt covers the event (thread-aware: thread_id is "main" or a thread
--   root). A user's rows go when the account is deactivated or erased.
-- push_counts: per (user, room, thread) the unread notification and highlight counts /sync
--   serves, kept up to date with the rows (incremented on insert, recomputed on a receipt).
-- pushers: the HTTP pushers a user set (POST /pushers/set), keyed by (app_id, pushkey, user_id)
--   as the spec keys them; data is the pusher's JSON "data" object.
CREATE TABLE push_notifications (
    user_id TEXT NOT NULL,
    stream_pos INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    highlight INTEGER NOT NULL,
    actions TEXT NOT NULL,
    unread INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (user_id, stream_pos)
) WITHOUT ROWID;
CREATE INDEX push_notifications_unread
    ON push_notifications (user_id, room_id, thread_id, stream_pos) WHERE unread = 1;

CREATE TABLE push_counts (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notifications INTEGER NOT NULL,
    highlights INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
) WITHOUT ROWID;

CREATE TABLE pushers (
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    pushkey_ts INTEGER NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
) WITHOUT ROWID;
CREATE INDEX pushers_user ON pushers (user_id);
