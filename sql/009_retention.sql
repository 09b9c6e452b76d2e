-- chatd schema, version 9: message retention (CHAT_MESSAGE_RETENTION_DAYS).
-- Removing a message must find the replies that quote it (they let go of
-- it) without scanning every message: foreign keys look children up by
-- this index too.
CREATE INDEX chat_messages_by_reply ON chat_messages(reply_to_id) WHERE reply_to_id IS NOT NULL;
