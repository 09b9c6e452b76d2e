-- Message search (SPEC section 10) with pg_trgm standing in for the
-- embedded store's FTS5 trigram index. A trigram GIN index answers
-- `LIKE '%…%'` for any substring of three or more characters.
--
-- The indexed expression lower-cases with ICU ("und-x-icu": Unicode's
-- root rules whatever the database's locale, so Cyrillic or Greek capitals
-- are folded even in a C-locale database) and turns final sigma into
-- sigma, as `store::pg::search::FOLDED` writes it; search confirms each
-- candidate with Rust's own case folding, so the answers are the embedded
-- store's. Deleted messages are never searched and have no text: left out.
--
-- pg_trgm takes only letters and digits *of the database's ctype* into
-- trigrams: in a C-ctype database non-ASCII text has no trigrams and
-- such queries read every row of the index (still correct; slower). A
-- UTF-8 ctype (for instance C.UTF-8) indexes every script.
--
-- pg_trgm is a trusted extension: a database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX chat_messages_text ON chat_messages
    USING gin (translate(lower(content COLLATE "und-x-icu"), 'ς', 'σ') gin_trgm_ops)
    WHERE NOT is_deleted;
