-- chatd schema, version 2: what the abuse limits need.

-- A password change (or a logout of a token without an id) bumps the
-- version; tokens carry the version they were issued at.
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;

-- Bytes of attachments the user has stored (not deleted): the quota.
ALTER TABLE users ADD COLUMN storage_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE users SET storage_bytes = (
    SELECT COALESCE(SUM(json_extract(f.value, '$.file_size')), 0)
    FROM chat_messages m, json_each(m.files_data) f
    WHERE m.sender_id = users.id AND m.is_deleted = 0 AND m.files_data IS NOT NULL
);

-- Tokens logged out before their expiry; rows past expires_at (Unix
-- seconds) are useless and removed.
CREATE TABLE revoked_tokens (
    token_id   TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
