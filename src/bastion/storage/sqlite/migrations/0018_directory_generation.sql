-- Migration (the user directory's cost): a counter that every change to what the user
-- directory shows moves, so the directory can keep its indexes of local and remote users in
-- memory (services/user_directory.py) and rebuild them only when something changed, without
-- counting rows on every search. Triggers move it, whoever writes (the server, or an admin
-- command on the same database). What moves it: an account created, deleted, or its
-- deactivated flag changed; a profile field set, changed or removed; a room membership
-- recorded, changed or removed (joins, leaves and display-name changes in rooms; not a room
-- being forgotten).
CREATE TABLE directory_generation (
    k INTEGER PRIMARY KEY CHECK (k = 1),
    n INTEGER NOT NULL
);
INSERT INTO directory_generation (k, n) VALUES (1, 0);
CREATE TRIGGER directory_generation_user_added AFTER INSERT ON users
BEGIN
    UPDATE directory_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER directory_generation_user_deactivated AFTER UPDATE OF deactivated ON users
BEGIN
    UPDATE directory_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER directory_generation_user_deleted AFTER DELETE ON users
BEGIN
    UPDATE directory_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER directory_generation_profile_added AFTER INSERT ON profiles
BEGIN
    UPDATE directory_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER directory_generation_profile_changed AFTER UPDATE ON profiles
BEGIN
    UPDATE directory_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER directory_generation_profile_removed AFTER DELETE ON profiles
BEGIN
    UPDATE directory_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER directory_generation_membership_added AFTER INSERT ON current_membership
BEGIN
    UPDATE directory_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER directory_generation_membership_changed
    AFTER UPDATE OF membership, event_id, user_id, room_id ON current_membership
BEGIN
    UPDATE directory_generation SET n = n + 1 WHERE k = 1;
END;
CREATE TRIGGER directory_generation_membership_removed AFTER DELETE ON current_membership
BEGIN
    UPDATE directory_generation SET n = n + 1 WHERE k = 1;
END;
