-- chatd schema, version 7: scheduled messages (SPEC section 10). A pending
-- item holds everything its message will carry (files already on disk and
-- counted against the sender's quota); delivery inserts the message and
-- deletes the item in one transaction, so it happens exactly once.
CREATE TABLE scheduled_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_id     INTEGER NOT NULL REFERENCES users(id),
    room_id       INTEGER NOT NULL REFERENCES chat_rooms(id),
    receiver_id   INTEGER REFERENCES users(id),
    message_type  TEXT    NOT NULL,
    content       TEXT    NOT NULL,
    files_data    TEXT,
    duration      REAL,
    reply_to_id   INTEGER,
    local_temp_id TEXT,
    send_at       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
-- The scheduler's next due item; a user's pending list, soonest first.
CREATE INDEX scheduled_by_time ON scheduled_messages(send_at, id);
CREATE INDEX scheduled_by_sender ON scheduled_messages(sender_id, send_at);
