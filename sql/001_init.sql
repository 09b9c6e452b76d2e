-- chatd schema, version 1.
-- Times are INTEGER milliseconds since the Unix epoch (UTC); the API formats
-- them as RFC 3339. Booleans are INTEGER 0/1.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    avatar_url    TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE chat_rooms (
    id         INTEGER PRIMARY KEY,
    name       TEXT,
    room_type  TEXT    NOT NULL DEFAULT 'direct',
    created_by INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    is_active  INTEGER NOT NULL DEFAULT 1,
    -- "<smaller user id>:<larger user id>" for direct rooms: the unique key
    -- that makes room creation idempotent under concurrent requests.
    direct_key TEXT UNIQUE
);

CREATE TABLE chat_participants (
    id           INTEGER PRIMARY KEY,
    room_id      INTEGER NOT NULL REFERENCES chat_rooms(id),
    user_id      INTEGER NOT NULL REFERENCES users(id),
    joined_at    INTEGER NOT NULL,
    last_read_at INTEGER,
    is_active    INTEGER NOT NULL DEFAULT 1,
    UNIQUE (room_id, user_id)
);
-- The rooms of a user (room list, unread counts, contacts for presence).
CREATE INDEX chat_participants_by_user ON chat_participants(user_id, room_id);

CREATE TABLE chat_messages (
    id            INTEGER PRIMARY KEY,
    room_id       INTEGER NOT NULL REFERENCES chat_rooms(id),
    sender_id     INTEGER NOT NULL REFERENCES users(id),
    receiver_id   INTEGER NOT NULL REFERENCES users(id),
    message_type  TEXT    NOT NULL DEFAULT 'text',
    content       TEXT    NOT NULL DEFAULT '',
    -- The seed's single-file columns, filled from the first file.
    file_name     TEXT,
    file_path     TEXT,
    file_size     INTEGER,
    mime_type     TEXT,
    -- JSON array of {file_name, file_path, file_size, mime_type, duration};
    -- file_path is relative to the static directory.
    files_data    TEXT,
    duration      REAL,
    local_temp_id TEXT,
    created_at    INTEGER NOT NULL,
    edited_at     INTEGER,
    is_read       INTEGER NOT NULL DEFAULT 0,
    is_deleted    INTEGER NOT NULL DEFAULT 0,
    like_count    INTEGER NOT NULL DEFAULT 0
);
-- Pages, keyset pagination and the last message of a room.
CREATE INDEX chat_messages_by_room ON chat_messages(room_id, id);
-- Idempotent send: one message per sender and temp id, across restarts.
CREATE UNIQUE INDEX chat_messages_temp_id ON chat_messages(sender_id, local_temp_id)
    WHERE local_temp_id IS NOT NULL;
-- Unread counts and mark-read touch only unread rows.
CREATE INDEX chat_messages_unread ON chat_messages(receiver_id, room_id)
    WHERE is_read = 0;

CREATE TABLE user_presence (
    id        INTEGER PRIMARY KEY,
    user_id   INTEGER NOT NULL UNIQUE REFERENCES users(id),
    is_online INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER NOT NULL
);
CREATE INDEX user_presence_online ON user_presence(user_id) WHERE is_online = 1;

CREATE TABLE message_likes (
    message_id INTEGER NOT NULL REFERENCES chat_messages(id),
    user_id    INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
) WITHOUT ROWID;
