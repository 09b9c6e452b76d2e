-- chatd schema, version 5: reactions (SPEC section 10). One row per user
-- and emoji on a message; `id` orders a message's emoji by first use (two
-- reactions may share a millisecond).
CREATE TABLE message_reactions (
    id         INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES chat_messages(id),
    emoji      TEXT    NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    UNIQUE (message_id, emoji, user_id)
);
CREATE INDEX message_reactions_by_message ON message_reactions(message_id, id);
