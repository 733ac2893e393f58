-- Migration (issue 11, C-S API "Client Authentication" > "Refreshing access tokens" and
-- "POST /login/get_token"): access tokens may expire, refresh tokens exchange for new ones, and
-- single-use login tokens (m.login.token) let a logged-in user sign in another device.
--
-- access_tokens.expires_ts: when the token stops being accepted (ms); NULL: never (every token
-- issued before this migration, and every token of a client that asked for no refresh token).
-- An expired token answers 401 M_UNKNOWN_TOKEN with soft_logout; its row stays until the
-- client refreshes, logs out or the device goes. Expiry is a matter of time, not of a write,
-- so the auth_generation triggers (0011) do not cover it: the store checks it on every use.
--
-- refresh_tokens: stored as the SHA-256 of the token, like access tokens. access_hash is the
-- access token issued with it (revoked when this refresh token is used). When it is used, the
-- new pair is recorded in next_hash / next_access_hash and the row stays until the new access
-- token or the new refresh token is first used (the spec's rule: a client that lost the
-- answer can refresh again; doing so revokes the pair it lost). Rows go with their device
-- (logout, logout/all, device deletion, deactivation, erasure).
ALTER TABLE access_tokens ADD COLUMN expires_ts INTEGER;
CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    access_hash BLOB NOT NULL,
    next_hash BLOB,
    next_access_hash BLOB,
    created_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_next_access ON refresh_tokens (next_access_hash)
    WHERE next_access_hash IS NOT NULL;
--
-- login_tokens: from POST /login/get_token, hashed like the others; a login deletes the row it
-- uses (single use); expired rows are deleted, a bounded number at a time, when new tokens are
-- issued (by expires_ts); a user's rows go with logout/all, deactivation and erasure.
CREATE TABLE login_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX login_tokens_expiry ON login_tokens (expires_ts);
CREATE INDEX login_tokens_user ON login_tokens (user_id);
