-- chatd schema, version 4: replies (SPEC section 10). The replied message is
-- in the same room; its preview is rendered from its current content.
ALTER TABLE chat_messages ADD COLUMN reply_to_id INTEGER REFERENCES chat_messages(id);
