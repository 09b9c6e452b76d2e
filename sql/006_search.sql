-- chatd schema, version 6: search (SPEC section 10). A trigram index over
-- message text answers substring queries of 3+ characters in any script
-- (case-folded); triggers keep it in step with chat_messages inside the
-- writer's own transaction (insert, edit, delete).
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content = 'chat_messages', content_rowid = 'id', tokenize = 'trigram'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON chat_messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON chat_messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON chat_messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
