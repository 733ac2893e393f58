-- Migration (issue 10, the cost of encryption at rest): a counter that every change able to
-- revoke or restrict an access token moves, so the store can keep the requester of a token in
-- memory (storage/sqlite/accounts.py) and still see a revocation at the very next request.
-- Triggers move it, so it moves whoever writes: the server, or an admin command on the same
-- database. What moves it: an access token deleted (logout, device deletion, deactivation,
-- password change with logout) or changed; a user's admin, deactivated, locked or suspended
-- flag changed; a user row deleted. A new token does not (nothing is remembered about a token
-- before it exists).
CREATE TABLE auth_generation (
    k INTEGER PRIMARY KEY CHECK (k = 1),
    n INTEGER NOT NULL
);
INSERT INTO auth_generation (k, n) VALUES (1, 0);
CREATE TRIGGER auth_generation_token_deleted AFTER DELETE ON access_tokens
BEGIN
    UPDATE auth_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER auth_generation_token_changed AFTER UPDATE ON access_tokens
BEGIN
    UPDATE auth_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER auth_generation_user_flags AFTER UPDATE OF is_admin, deactivated, locked, suspended
    ON users
BEGIN
    UPDATE auth_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER auth_generation_user_deleted AFTER DELETE ON users
BEGIN
    UPDATE auth_generation SET n = n + 1 WHERE k = 1;
END;
