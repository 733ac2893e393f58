-- Migration (issue 11, C-S API "OpenID" and S-S API "OpenID"): the OpenID tokens a user asks
-- for (POST /user/{userId}/openid/request_token) and another server exchanges for the user's ID
-- (GET /_matrix/federation/v1/openid/userinfo). Stored as the SHA-256 of the token, like access
-- tokens: the database never holds one a reader could replay. Expired rows are deleted when
-- looked up and, a bounded number at a time, when new tokens are issued (by expires_ts); a
-- user's rows go when the account is deactivated or erased (by user_id).
CREATE TABLE openid_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
CREATE INDEX openid_tokens_user ON openid_tokens (user_id);
