-- Migration (issue 11, C-S API "Push Notifications", "Push Gateway API"):
-- push_notifications: one row per event a user's push rules said to notify for (what
--   GET /notifications lists, newest first; the event's ID and time are read from events by
--   its stream position, so a row holds only what differs between users). Keyed by (room, stream position, user), so the rows
--   of one event are written next to each other: one event notifying 100 members touches a page
--   or two, not 100 (an index by user would touch one page per member and multiply the cost of
--   a send; the list by user is read room by room instead). thread_id is "main" or the root.
-- push_counts: per (room, user, thread) the unread notification and highlight counts /sync
--   serves, and read_pos, the stream position the user's read receipts cover in that thread:
--   a notification above it is unread. Kept by the notification writes (added) and by receipts
--   (counted again above the new position).
-- pushers: the HTTP pushers a user set (POST /pushers/set), keyed by (app_id, pushkey, user_id)
--   as the spec keys them; data is the pusher's JSON "data" object.
-- A user's rows go when the account is deactivated (pushers) or erased (all three).
CREATE TABLE push_notifications (
    room_id TEXT NOT NULL,
    stream_pos INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    highlight INTEGER NOT NULL,
    actions TEXT NOT NULL,
    PRIMARY KEY (room_id, stream_pos, user_id)
) WITHOUT ROWID;

CREATE TABLE push_counts (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notifications INTEGER NOT NULL,
    highlights INTEGER NOT NULL,
    read_pos INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id, thread_id)
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
