-- The search index (SPEC section 10), in its own file beside the database
-- (search.sqlite3). It is derived data: chatd builds it from the messages
-- when the file is missing or cannot follow the event stream any more, and
-- keeps it in step by applying the stream's message events in order.
--
-- A trigram index answers substring queries of 3+ characters in any script
-- (case-folded). It keeps neither the text (contentless: the messages table
-- has it) nor positions (detail = none): a query asks for each of its
-- trigrams, and the message text itself confirms the match.
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content, content = '', contentless_delete = 1, tokenize = 'trigram', detail = 'none'
);
-- The last event of the database's stream applied to the index, written in
-- the same transaction as the index changes it stands for.
CREATE TABLE IF NOT EXISTS search_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);
