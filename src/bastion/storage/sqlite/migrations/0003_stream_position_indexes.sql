-- /sync asks "which of a user's rooms changed since a stream position" with one short range
-- read per stream (services/sync.py): membership changes and receipts are found by their
-- stream position, as events already are (events.stream_pos is UNIQUE, so indexed).
CREATE INDEX IF NOT EXISTS membership_events_pos ON membership_events (stream_pos);
CREATE INDEX IF NOT EXISTS receipts_pos ON receipts (stream_pos);
