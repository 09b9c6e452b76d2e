-- chatd schema, version 6: forwarding (SPEC section 10). A copy names the
-- message it was forwarded from (the first original, when forwarding a
-- forward) and that message's sender as they were named then, so the
-- label survives the original's deletion.
ALTER TABLE chat_messages ADD COLUMN forwarded_from_id INTEGER;
ALTER TABLE chat_messages ADD COLUMN forwarded_from_name TEXT;
-- Files used by more than one message (a forward shares the file on disk):
-- how many live messages use each. A file without a row has one user, so
-- deleting that message removes it; with a row, only the last one does.
CREATE TABLE file_refs (
    file_path TEXT PRIMARY KEY,
    refs      INTEGER NOT NULL
) WITHOUT ROWID;
