//! Message search (SPEC section 10): substring semantics in every script.
//!
//! Queries of three or more characters go through an FTS5 trigram index;
//! every trigram of the query must be in a message, and the message text
//! itself confirms the match (the index keeps no positions, which makes it
//! half the size and quicker to write). Shorter queries, which no trigram
//! can answer, scan a bounded window of the newest messages.
//!
//! The index lives in its own file (`search.sqlite3`, schema in
//! `sql/search.sql`), written by its own thread, the *indexer*, which
//! follows the event stream: it applies `new_message`, `message_update`
//! and `message_delete` in order and stores the position it reached in the
//! same transaction, so each event is applied exactly once, even across a
//! crash. The writer only pokes it after a commit; tokenizing never holds
//! the database's write lock, which is what kept message throughput (see
//! BENCHMARKS.md). Events the indexer has not applied yet are the *tail*:
//! every search reads the tail's messages directly, so a committed message
//! or edit is found at once. The index is derived data: when its file is
//! missing, or retention removed events it had not applied, the indexer
//! rebuilds it from the messages.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::StoreError;
use super::reads::{self, MESSAGE_COLS, MessageRow, PageCache, message_from_row};
use crate::model::{Message, MessageId, RoomId, UserId};

/// Events the indexer applies in one transaction at most.
const STEP: i64 = 16_384;

/// How long the indexer lets events gather after a poke, so that one
/// transaction (one FTS segment) takes many messages: a segment per
/// message costs several times as much.
const GATHER: Duration = Duration::from_millis(100);

/// Unapplied message events beyond which a search stops reading the tail
/// and scans a window instead (the indexer is rebuilding or far behind).
const MAX_TAIL: usize = 10_000;

/// Messages scanned for a query too short for the trigram index.
const SHORT_QUERY_WINDOW: usize = 5_000;

/// Characters of message text a search result shows.
pub const HIGHLIGHT_CHARS: usize = 200;

/// The index file inside the data directory.
pub fn index_path(data_dir: &Path) -> PathBuf {
    data_dir.join("search.sqlite3")
}

/// Creates the index file and its schema if they are missing.
pub fn create(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    conn.execute_batch(include_str!("../../sql/search.sql"))?;
    Ok(())
}

/// Makes the index readable as `search` on a read-only connection.
pub fn attach(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS search", [read_only_uri(path)])?;
    Ok(())
}

/// A `file:` URI opening `path` read-only (`%`, `?` and `#` escaped).
fn read_only_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

/// The writer's handle on the indexer: a poke says "new events committed".
#[derive(Clone)]
pub struct Poke(mpsc::SyncSender<()>);

impl Poke {
    /// Never blocks: one pending poke is as good as many.
    pub fn poke(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the indexer thread on the index at `index` for the database at
/// `db`. It catches up at once, then after each poke; it ends when every
/// `Poke` is dropped (the writer stopped).
pub fn spawn_indexer(index: &Path, db: &Path) -> Result<Poke, StoreError> {
    let mut indexer = Indexer::open(index, db)?;
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("chatd-indexer".into())
        .spawn(move || indexer.run(&rx))
        .map_err(|e| StoreError::CommitFailed(format!("cannot start the indexer thread: {e}")))?;
    Ok(Poke(tx))
}

/// Gives the calling thread the lowest CPU priority (Linux: nice values are
/// per thread), so the indexer runs on the CPU that message delivery leaves
/// idle and catches up when a burst ends; searches read the tail meanwhile.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!(error = %e, "the indexer keeps its priority");
    }
}

/// The only writer of the index: the index file as `main`, the database
/// attached read-only as `chat`.
pub struct Indexer {
    conn: Connection,
}

impl Indexer {
    pub fn open(index: &Path, db: &Path) -> Result<Indexer, StoreError> {
        create(index)?;
        let conn = Connection::open_with_flags(
            index,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(
            "PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864;",
        )?;
        conn.execute("ATTACH DATABASE ?1 AS chat", [read_only_uri(db)])?;
        Ok(Indexer { conn })
    }

    fn run(&mut self, pokes: &mpsc::Receiver<()>) {
        lower_priority();
        loop {
            self.catch_up();
            if pokes.recv().is_err() {
                return;
            }
            std::thread::sleep(GATHER);
            while pokes.try_recv().is_ok() {}
        }
    }

    /// Applies everything committed so far.
    pub fn catch_up(&mut self) {
        loop {
            match self.step() {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot index messages for search; trying again after the next commit");
                    return;
                }
            }
        }
    }

    /// One transaction: applies up to `STEP` events, or rebuilds the index
    /// when it cannot follow the stream (new file, events pruned before it
    /// applied them, a database older than the index). Returns how many
    /// events remain.
    pub fn step(&mut self) -> Result<i64, StoreError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let position: Option<i64> =
            tx.query_row("SELECT position FROM search_state WHERE id = 1", [], |r| r.get(0)).optional()?;
        let head: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM chat.events", [], |r| r.get(0))?;
        let horizon: i64 =
            tx.query_row("SELECT pruned_through FROM chat.event_horizon WHERE id = 1", [], |r| r.get(0))?;
        let reached = match position {
            Some(position) if position >= horizon && position <= head => {
                let through = head.min(position.saturating_add(STEP));
                apply(&tx, position, through)?;
                through
            }
            _ => {
                tracing::info!("building the search index from the messages");
                tx.execute("INSERT INTO messages_fts (messages_fts) VALUES ('delete-all')", [])?;
                tx.execute(
                    "INSERT INTO messages_fts (rowid, content) SELECT id, content FROM chat.chat_messages
                     WHERE is_deleted = 0 AND content <> ''",
                    [],
                )?;
                head
            }
        };
        tx.execute("INSERT OR REPLACE INTO search_state (id, position) VALUES (1, ?1)", [reached])?;
        tx.commit()?;
        Ok(head - reached)
    }
}

/// Applies the message events in `(after, through]` to the index: every
/// message they touch is taken out (if in) and added with its current text
/// (none once deleted). Touched twice in one step, it is still added once.
fn apply(tx: &Connection, after: i64, through: i64) -> Result<(), StoreError> {
    const TOUCHED: &str = "SELECT json_extract(data, '$.message_id') FROM chat.events WHERE id > ?1 AND id <= ?2";
    tx.prepare_cached(&format!(
        "DELETE FROM messages_fts WHERE rowid IN ({TOUCHED} AND kind IN ('message_update', 'message_delete'))"
    ))?
    .execute(params![after, through])?;
    tx.prepare_cached(
        "DELETE FROM messages_fts WHERE rowid IN (SELECT m.value FROM chat.events e, json_each(e.data, '$.message_ids') m
         WHERE e.id > ?1 AND e.id <= ?2 AND e.kind = 'messages_expired')",
    )?
    .execute(params![after, through])?;
    tx.prepare_cached(&format!(
        "INSERT INTO messages_fts (rowid, content) SELECT id, content FROM chat.chat_messages
         WHERE id IN ({TOUCHED} AND kind IN ('new_message', 'message_update', 'message_delete'))
         AND is_deleted = 0 AND content <> '' ORDER BY id"
    ))?
    .execute(params![after, through])?;
    Ok(())
}

/// One search result: the message (with whether the viewer liked it) and
/// the highlighted text around the match.
pub struct Found {
    pub message: Message,
    pub liked: bool,
    pub highlight: String,
}

/// A search of `viewer`'s rooms (or of one of them).
pub struct Query<'a> {
    pub viewer: UserId,
    /// 1..=200 characters.
    pub text: &'a str,
    pub room_id: Option<RoomId>,
    /// Only messages older than this.
    pub before: Option<MessageId>,
    pub limit: usize,
}

/// Messages whose text contains the query, newest first, at most `limit`;
/// and the id to continue before, if more may follow. Deleted messages are
/// never found. Runs in one read transaction, so the index, its position
/// and the messages are seen at one moment.
pub fn search(conn: &Connection, q: &Query<'_>) -> Result<(Vec<Found>, Option<MessageId>), StoreError> {
    let tx = conn.unchecked_transaction()?;
    let needle = fold(q.text);
    let trigrams = trigram_query(q.text);
    let tail = if trigrams.is_some() { tail(&tx)? } else { None };
    let (rows, next) = match (tail, trigrams) {
        (Some(tail), Some(trigrams)) => indexed(&tx, q, &needle, &tail, &trigrams)?,
        _ => scanned(&tx, q, &needle)?,
    };
    let mut results = Vec::with_capacity(rows.len());
    let mut cache = PageCache::default();
    for row in rows {
        let highlight = highlight(&row.content, q.text);
        let (message, liked) = cache.message(&tx, row)?;
        results.push(Found { message, liked, highlight });
    }
    Ok((results, next))
}

/// Ids of the messages created or changed by events the index has not
/// applied; `None` when there is no index yet or the tail is too long.
fn tail(tx: &Connection) -> Result<Option<Vec<MessageId>>, StoreError> {
    let position: Option<i64> =
        tx.query_row("SELECT position FROM search.search_state WHERE id = 1", [], |r| r.get(0)).optional()?;
    let Some(position) = position else { return Ok(None) };
    let mut stmt = tx.prepare_cached(
        "SELECT DISTINCT json_extract(data, '$.message_id') FROM events WHERE id > ?1
         AND kind IN ('new_message', 'message_update') LIMIT ?2",
    )?;
    let mut ids: Vec<MessageId> =
        stmt.query_map(params![position, MAX_TAIL as i64 + 1], |r| r.get(0))?.collect::<Result<_, _>>()?;
    if ids.len() > MAX_TAIL {
        return Ok(None);
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(Some(ids))
}

/// The caller's rooms, or the one asked for. `+m.room_id` keeps SQLite
/// from trading the id order for the room index.
const ROOMS: &str = "+m.room_id IN (SELECT room_id FROM chat_participants WHERE user_id = ?1)
    AND (?3 IS NULL OR m.room_id = ?3)";

/// Through the index (`trigrams` is the FTS5 query), merged with the tail
/// (newest first, each message judged once, by its current text).
fn indexed(
    tx: &Connection,
    q: &Query<'_>,
    needle: &str,
    tail: &[MessageId],
    trigrams: &str,
) -> Result<(Vec<MessageRow>, Option<MessageId>), StoreError> {
    let before = q.before.unwrap_or(MessageId::MAX);
    let rooms: HashSet<RoomId> = match q.room_id {
        Some(room) => reads::room_ids(tx, q.viewer)?.into_iter().filter(|r| *r == room).collect(),
        None => reads::room_ids(tx, q.viewer)?.into_iter().collect(),
    };
    let mut recent = Vec::new();
    for &id in tail.iter().filter(|id| **id < before) {
        if let Some(row) = reads::message_row(tx, q.viewer, id)?
            && !row.is_deleted
            && rooms.contains(&row.room_id)
            && fold(&row.content).contains(needle)
        {
            recent.push(row);
        }
    }
    let in_tail: HashSet<MessageId> = tail.iter().copied().collect();
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM search.messages_fts f JOIN chat_messages m ON m.id = f.rowid
         WHERE f.messages_fts MATCH ?4 AND f.rowid < ?2 AND m.is_deleted = 0 AND {ROOMS} ORDER BY f.rowid DESC"
    ))?;
    let mut candidates = stmt.query(params![q.viewer, before, q.room_id, trigrams])?;
    let mut recent = recent.into_iter().peekable();
    let mut rows = Vec::new();
    let mut next_indexed = || -> Result<Option<MessageRow>, StoreError> {
        while let Some(row) = candidates.next()? {
            let row = message_from_row(row)?;
            if !in_tail.contains(&row.id) && fold(&row.content).contains(needle) {
                return Ok(Some(row));
            }
        }
        Ok(None)
    };
    let mut pending = next_indexed()?;
    while rows.len() <= q.limit {
        let take_recent = match (recent.peek(), &pending) {
            (Some(r), Some(p)) => r.id > p.id,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_recent {
            rows.extend(recent.next());
        } else if let Some(row) = pending.take() {
            rows.push(row);
            pending = next_indexed()?;
        }
    }
    Ok(page(rows, q.limit, None))
}

/// Without the index: the newest `SHORT_QUERY_WINDOW` messages before
/// `q.before`, read one by one. When the window ends first, the page says
/// where to go on.
fn scanned(tx: &Connection, q: &Query<'_>, needle: &str) -> Result<(Vec<MessageRow>, Option<MessageId>), StoreError> {
    let before = q.before.unwrap_or(MessageId::MAX);
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.id < ?2 AND m.is_deleted = 0 AND {ROOMS}
         ORDER BY m.id DESC"
    ))?;
    let mut scanned = stmt.query(params![q.viewer, before, q.room_id])?;
    let (mut rows, mut seen, mut last, mut go_on) = (Vec::new(), 0, None, None);
    while rows.len() <= q.limit {
        let Some(row) = scanned.next()? else { break };
        if seen == SHORT_QUERY_WINDOW {
            go_on = last;
            break;
        }
        seen += 1;
        let row = message_from_row(row)?;
        last = Some(row.id);
        if fold(&row.content).contains(needle) {
            rows.push(row);
        }
    }
    Ok(page(rows, q.limit, go_on))
}

/// At most `limit` rows, and where the next page starts: before the last
/// row when more matched, else `go_on`.
fn page(mut rows: Vec<MessageRow>, limit: usize, go_on: Option<MessageId>) -> (Vec<MessageRow>, Option<MessageId>) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more { rows.last().map(|r| r.id) } else { go_on };
    (rows, next)
}

/// The FTS5 query asking for every trigram of `text`: windows at every
/// third character and the last three, each a quoted string (the index has
/// no positions, so no phrases). FTS5 reads a query only up to a NUL, so a
/// window holding one is left out (every candidate's text is checked
/// anyway). `None` when no window is left: under 3 characters, or NULs
/// everywhere; such a query scans instead.
fn trigram_query(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 3 {
        return None;
    }
    let last = chars.len() - 3;
    let starts = (0..last).step_by(3).chain(std::iter::once(last));
    let terms: Vec<String> = starts
        .map(|i| &chars[i..i + 3])
        .filter(|gram| !gram.contains(&'\0'))
        .map(|gram| format!("\"{}\"", gram.iter().collect::<String>().replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" AND "))
}

/// Case-folded text for substring comparison.
fn fold(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

/// At most `HIGHLIGHT_CHARS` characters of `content` around the first
/// case-insensitive match of `query`, HTML-escaped, with the match wrapped
/// in `<mark>`…`</mark>`. Empty when there is no match.
pub fn highlight(content: &str, query: &str) -> String {
    let chars: Vec<char> = content.chars().collect();
    let needle: Vec<char> = query.chars().flat_map(char::to_lowercase).collect();
    if needle.is_empty() {
        return String::new();
    }
    // The first position where the lower-cased text starts with the needle;
    // `len` is how many original characters the match covers.
    let found = (0..chars.len()).find_map(|start| {
        let mut matched = 0;
        for (len, c) in chars[start..].iter().enumerate() {
            for lower in c.to_lowercase() {
                if needle.get(matched) != Some(&lower) {
                    return None;
                }
                matched += 1;
            }
            if matched == needle.len() {
                return Some((start, len + 1));
            }
        }
        None
    });
    let Some((start, len)) = found else { return String::new() };
    let context = HIGHLIGHT_CHARS.saturating_sub(len) / 2;
    let from = start.saturating_sub(context);
    let to = (start + len + context).min(chars.len());
    format!(
        "{}<mark>{}</mark>{}",
        escape(&chars[from..start]),
        escape(&chars[start..start + len]),
        escape(&chars[start + len..to])
    )
}

fn escape(text: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(*c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlights_mark_the_first_match_and_escape_the_rest() {
        assert_eq!(
            highlight("Say <b>Hello</b> & hello", "hello"),
            "Say &lt;b&gt;<mark>Hello</mark>&lt;/b&gt; &amp; hello"
        );
        assert_eq!(highlight("Привет, МИР", "мир"), "Привет, <mark>МИР</mark>");
        assert_eq!(highlight("你好世界", "世界"), "你好<mark>世界</mark>");
        assert_eq!(highlight("party 🎉 time", "🎉"), "party <mark>🎉</mark> time");
        assert_eq!(highlight("nothing here", "zzz"), "");
        let long = format!("{}needle{}", "a".repeat(500), "b".repeat(500));
        let shown = highlight(&long, "needle");
        assert_eq!(shown.chars().count(), HIGHLIGHT_CHARS + "<mark></mark>".len());
        assert!(shown.contains("<mark>needle</mark>"));
    }

    #[test]
    fn trigram_queries_cover_the_whole_text() {
        let check = |text: &str, query: Option<&str>| assert_eq!(trigram_query(text).as_deref(), query, "{text:?}");
        check("abc", Some("\"abc\""));
        check("weekend", Some("\"wee\" AND \"ken\" AND \"end\""));
        check("abcdef", Some("\"abc\" AND \"def\""));
        check("a\"b\"c", Some("\"a\"\"b\" AND \"b\"\"c\""));
        check("привет", Some("\"при\" AND \"вет\""));
        check("ab", None);
        check("abc\0def", Some("\"abc\" AND \"def\""));
        check("a\0b", None);
    }

    /// A database and its index in a temporary directory, with the writer's
    /// part played by hand: each change writes its row and its event.
    struct Fixture {
        dir: tempfile::TempDir,
        db: Connection,
        reader: Connection,
        indexer: Indexer,
    }

    impl Fixture {
        fn new() -> Result<Fixture, StoreError> {
            let dir = tempfile::tempdir().map_err(|e| StoreError::CommitFailed(e.to_string()))?;
            let mut db = Connection::open(dir.path().join("chat.db"))?;
            db.execute_batch("PRAGMA journal_mode = WAL;")?;
            crate::store::migrate::apply(&mut db)?;
            db.execute_batch(
                "INSERT INTO users (id, name, email, password_hash, created_at) VALUES (1, 'a', 'a@x', 'h', 0);
                 INSERT INTO chat_rooms (id, created_by, created_at, updated_at) VALUES (1, 1, 0, 0);
                 INSERT INTO chat_participants (room_id, user_id, joined_at) VALUES (1, 1, 0);",
            )?;
            let indexer = Indexer::open(&dir.path().join("search.db"), &dir.path().join("chat.db"))?;
            let reader = Connection::open(dir.path().join("chat.db"))?;
            attach(&reader, &dir.path().join("search.db"))?;
            Ok(Fixture { dir, db, reader, indexer })
        }

        fn event(&self, kind: &str, id: MessageId) -> Result<(), StoreError> {
            self.db.execute(
                "INSERT INTO events (room_id, kind, data, created_at) VALUES (1, ?1, json_object('message_id', ?2), 0)",
                params![kind, id],
            )?;
            Ok(())
        }

        fn say(&self, text: &str) -> Result<MessageId, StoreError> {
            self.db.execute(
                "INSERT INTO chat_messages (room_id, sender_id, message_type, content, created_at)
                 VALUES (1, 1, 'text', ?1, 0)",
                [text],
            )?;
            let id = self.db.last_insert_rowid();
            self.event("new_message", id)?;
            Ok(id)
        }

        fn edit(&self, id: MessageId, text: &str) -> Result<(), StoreError> {
            self.db.execute("UPDATE chat_messages SET content = ?1 WHERE id = ?2", params![text, id])?;
            self.event("message_update", id)
        }

        fn delete(&self, id: MessageId) -> Result<(), StoreError> {
            self.db.execute("UPDATE chat_messages SET content = '', is_deleted = 1 WHERE id = ?1", [id])?;
            self.event("message_delete", id)
        }

        fn find(&self, text: &str) -> Result<Vec<String>, StoreError> {
            let q = Query { viewer: 1, text, room_id: None, before: None, limit: 10 };
            Ok(search(&self.reader, &q)?.0.into_iter().map(|f| f.message.content).collect())
        }

        /// Rows the index itself holds for a query (no tail, no check).
        fn indexed(&self, text: &str) -> Result<i64, StoreError> {
            Ok(self.reader.query_row(
                "SELECT count(*) FROM search.messages_fts WHERE messages_fts MATCH ?1",
                [trigram_query(text).unwrap_or_default()],
                |r| r.get(0),
            )?)
        }
    }

    /// Searches answer the same before and after the indexer applies the
    /// events, through new messages, edits and deletes, and the index holds
    /// exactly what it should.
    #[test]
    fn the_index_follows_the_event_stream() -> Result<(), StoreError> {
        let mut f = Fixture::new()?;
        let first = f.say("Привет, как дела?")?;
        assert_eq!(f.find("как дела")?, ["Привет, как дела?"], "no index yet: the window scan");
        assert_eq!(f.indexer.step()?, 0, "a new index is built from the messages");
        assert_eq!((f.indexed("как дела")?, f.find("КАК ДЕЛА")?), (1, vec!["Привет, как дела?".to_owned()]));
        let second = f.say("как дела у тебя")?;
        assert_eq!(f.indexed("как дела")?, 1, "not applied yet");
        assert_eq!(f.find("как дела")?, ["как дела у тебя", "Привет, как дела?"], "the tail, then the index");
        f.edit(first, "всё хорошо")?;
        assert_eq!(f.find("как дела")?, ["как дела у тебя"], "the old text of an edit is not found");
        assert_eq!(f.find("хорошо")?, ["всё хорошо"], "its new text is, from the tail");
        assert_eq!(f.indexer.step()?, 0);
        assert_eq!((f.indexed("как дела")?, f.indexed("хорошо")?), (1, 1));
        assert_eq!(f.find("хорошо")?, ["всё хорошо"]);
        f.delete(second)?;
        assert_eq!(f.find("как дела")?, Vec::<String>::new(), "a deleted message is never found");
        // Written and deleted before the indexer saw either event.
        let gone = f.say("ephemeral words")?;
        f.delete(gone)?;
        assert_eq!(f.indexer.step()?, 0);
        assert_eq!((f.indexed("как дела")?, f.indexed("ephemeral")?), (0, 0));
        f.indexer.conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')", [])?;
        Ok(())
    }

    /// Losing the index file, or events it had not applied, rebuilds it.
    #[test]
    fn a_lost_index_is_rebuilt() -> Result<(), StoreError> {
        let mut f = Fixture::new()?;
        f.say("the itinerary for Samarqand")?;
        f.indexer.step()?;
        let later = f.say("Samarqand again")?;
        // Retention removed the event before the indexer applied it.
        f.db.execute("DELETE FROM events WHERE id <= 2", [])?;
        f.db.execute("UPDATE event_horizon SET pruned_through = 2", [])?;
        f.say("Samarqand, third")?;
        assert_eq!(f.indexer.step()?, 0);
        assert_eq!(f.indexed("samarqand")?, 3, "rebuilt, the unapplied message included");
        // A new file: built again from the messages.
        drop(f.indexer);
        f.reader.execute("DETACH DATABASE search", [])?;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(f.dir.path().join(format!("search.db{suffix}")));
        }
        f.indexer = Indexer::open(&f.dir.path().join("search.db"), &f.dir.path().join("chat.db"))?;
        attach(&f.reader, &f.dir.path().join("search.db"))?;
        f.edit(later, "Samarqand, edited")?;
        assert_eq!(f.indexer.step()?, 0);
        assert_eq!(f.indexed("samarqand")?, 3);
        assert_eq!(f.find("samarqand")?, ["Samarqand, third", "Samarqand, edited", "the itinerary for Samarqand"]);
        Ok(())
    }

    /// A one-character query scans a bounded window, then says where to go on.
    #[test]
    fn short_queries_scan_a_window_and_page_on() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        crate::store::migrate::apply(&mut conn)?;
        conn.execute_batch(
            "INSERT INTO users (id, name, email, password_hash, created_at) VALUES (1, 'a', 'a@x', 'h', 0);
             INSERT INTO chat_rooms (id, created_by, created_at, updated_at) VALUES (1, 1, 0, 0);
             INSERT INTO chat_participants (room_id, user_id, joined_at) VALUES (1, 1, 0);
             INSERT INTO chat_messages (room_id, sender_id, message_type, content, created_at)
                 VALUES (1, 1, 'text', 'Ω is here', 0);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
             INSERT INTO chat_messages (room_id, sender_id, message_type, content, created_at)
                 SELECT 1, 1, 'text', 'filler', 0 FROM n;",
        )?;
        let q = Query { viewer: 1, text: "ω", room_id: None, before: None, limit: 10 };
        let (found, next) = search(&conn, &q)?;
        assert!(found.is_empty());
        let next = next.expect("the window ended before the oldest message");
        assert_eq!(next, 6001 - SHORT_QUERY_WINDOW as i64 + 1);
        let (found, next) = search(&conn, &Query { before: Some(next), ..q })?;
        assert_eq!(found.iter().map(|f| f.message.content.as_str()).collect::<Vec<_>>(), ["Ω is here"]);
        assert_eq!(found[0].highlight, "<mark>Ω</mark> is here");
        assert_eq!(next, None);
        Ok(())
    }
}
