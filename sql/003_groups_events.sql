-- chatd schema, version 3: group rooms, per-member read state, and the
-- stored event stream (SPEC sections 8 and 9).

-- A member's role, how far it has read, and the event that let it in (its
-- replay starts there).
ALTER TABLE chat_participants ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
ALTER TABLE chat_participants ADD COLUMN last_read_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chat_participants ADD COLUMN joined_event_id INTEGER NOT NULL DEFAULT 0;
-- Read state moves from the message (is_read, one receiver) to the member:
-- mark-read always marked everything, so what was read is a prefix.
UPDATE chat_participants SET last_read_id = COALESCE((
    SELECT MAX(m.id) FROM chat_messages m
    WHERE m.room_id = chat_participants.room_id AND m.receiver_id = chat_participants.user_id AND m.is_read = 1
), 0);
-- Members of a room in the order they joined (the oldest becomes admin
-- when the last admin leaves), and the readers of a room.
CREATE INDEX chat_participants_by_room ON chat_participants(room_id, id);

-- Group messages have no receiver: the column becomes nullable. SQLite
-- cannot drop NOT NULL in place, so the table is rebuilt (migrations run
-- with foreign keys off and checked after).
CREATE TABLE chat_messages_v3 (
    id            INTEGER PRIMARY KEY,
    room_id       INTEGER NOT NULL REFERENCES chat_rooms(id),
    sender_id     INTEGER NOT NULL REFERENCES users(id),
    receiver_id   INTEGER REFERENCES users(id),
    message_type  TEXT    NOT NULL DEFAULT 'text',
    content       TEXT    NOT NULL DEFAULT '',
    file_name     TEXT,
    file_path     TEXT,
    file_size     INTEGER,
    mime_type     TEXT,
    files_data    TEXT,
    duration      REAL,
    local_temp_id TEXT,
    created_at    INTEGER NOT NULL,
    edited_at     INTEGER,
    -- Kept from the seed's schema; read state lives in
    -- chat_participants.last_read_id since version 3.
    is_read       INTEGER NOT NULL DEFAULT 0,
    is_deleted    INTEGER NOT NULL DEFAULT 0,
    like_count    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO chat_messages_v3 SELECT id, room_id, sender_id, receiver_id, message_type, content, file_name,
    file_path, file_size, mime_type, files_data, duration, local_temp_id, created_at, edited_at, is_read,
    is_deleted, like_count FROM chat_messages;
DROP TABLE chat_messages;
ALTER TABLE chat_messages_v3 RENAME TO chat_messages;
CREATE INDEX chat_messages_by_room ON chat_messages(room_id, id);
CREATE UNIQUE INDEX chat_messages_temp_id ON chat_messages(sender_id, local_temp_id)
    WHERE local_temp_id IS NOT NULL;

-- Every change a user can see, in commit order: one row per change (not
-- per recipient). `id` is the cursor's position; AUTOINCREMENT so that a
-- position is never used twice, even after retention removed the newest.
-- A room event (room_id) goes to the room's members; a personal one
-- (user_id: room_removed) to one user. `data` holds the ids needed to
-- render the event from the current state of its objects.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id    INTEGER,
    user_id    INTEGER,
    kind       TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_by_room ON events(room_id, id) WHERE room_id IS NOT NULL;
CREATE INDEX events_by_user ON events(user_id, id) WHERE user_id IS NOT NULL;

-- Positions at or below `pruned_through` were removed by retention: a
-- cursor there can no longer be served gaplessly.
CREATE TABLE event_horizon (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL
);
INSERT INTO event_horizon (id, pruned_through) VALUES (1, 0);
