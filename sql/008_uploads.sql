-- chatd schema, version 8: uploads over HTTP (SPEC section 11). The bytes
-- live in <data dir>/uploads/<id> until a message uses them (then they are
-- linked into chat_files/ and the row is deleted in the message's
-- transaction: once only) or the upload expires. `complete` is set when the
-- last byte is in and the content checks passed; the received length is the
-- file's own length on disk.
CREATE TABLE uploads (
    id         TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    file_name  TEXT    NOT NULL,
    mime_type  TEXT    NOT NULL,
    length     INTEGER NOT NULL,
    complete   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX uploads_by_expiry ON uploads(expires_at);
CREATE INDEX uploads_by_user ON uploads(user_id);
