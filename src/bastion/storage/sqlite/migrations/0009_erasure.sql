-- Migration (issue 10, erasure): the accounts erased on deactivation (GDPR Art. 17). An erased
-- account stays deactivated (its user ID is never reused, as for every deactivated account);
-- this row says that what it held was erased too, when, and whether redactions were sent to
-- the other servers of its rooms. (Numbered 0007 in the compliance contract: the number is
-- the next free one when the parts are merged.)
CREATE TABLE IF NOT EXISTS erased_users (
    user_id TEXT PRIMARY KEY,
    erased_ts INTEGER NOT NULL,
    redact_federated INTEGER NOT NULL DEFAULT 0
);
