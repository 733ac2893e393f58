-- Migration (rooms v3+ "Handling redactions": a redaction received before the event it names):
-- the accepted redactions whose target this server has not stored yet, so the target is stored
-- redacted when it arrives ("Servers SHOULD NOT apply or send redactions to clients until both
-- the redaction event and the redacted event have been seen"). Only event IDs: the redaction
-- itself is an event row; a row goes when its target arrives.
CREATE TABLE pending_redactions (
    target_id TEXT NOT NULL,
    redaction_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (target_id, redaction_id)
) WITHOUT ROWID;
