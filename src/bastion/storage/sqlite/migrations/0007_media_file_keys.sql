-- Encryption at rest (issue 10): the key each media file is encrypted with
-- (bastion.core.media_encryption); NULL for a file stored in plain (encryption at rest off, or
-- uploaded before it was turned on). Deleting the row deletes the key: every copy of the file,
-- backups included, is then unreadable.
ALTER TABLE local_media ADD COLUMN file_key BLOB;
