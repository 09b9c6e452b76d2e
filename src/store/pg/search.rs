//! Search and export on PostgreSQL: the message search of SPEC section 10
//! (`pg_trgm` standing in for FTS5's trigram index) and a user's export.
//!
//! Search answers what `store::search::search` answers: a message is found
//! when its text, lower-cased a character at a time as Rust does it,
//! contains the query lower-cased the same way. The database cannot apply
//! Rust's rule, so it only picks *candidates*: `FOLDED` (the text lowered by
//! ICU, whatever the database's locale, final sigma made plain sigma) must
//! contain the query lowered alike. That is a superset of the matches (ICU's
//! root lower-casing is Rust's but for the final sigma, folded away on both
//! sides), found through the `pg_trgm` index on `FOLDED`
//! (`sql/postgres/002_search.sql`), and every candidate is confirmed in Rust.
//! There is no index to catch up with, so no tail: a committed message or
//! edit is found at once.

use std::io::{BufWriter, Seek};
use std::path::PathBuf;

use super::Sql;
use futures_util::future::try_join_all;

use super::reads;
use crate::model::{MessageId, RoomId, User, UserId};
use crate::store::StoreError;
use crate::store::export::{PAGE, Zip};
use crate::store::reads::PageQuery;
use crate::store::search::{Found, highlight};

/// The indexed expression: must be written exactly as the index in
/// `002_search.sql` is, or the planner will not use it.
const FOLDED: &str = r#"translate(lower(m.content COLLATE "und-x-icu"), 'ς', 'σ')"#;

/// The caller's rooms (`$1`), or the one asked for (`$3`).
const ROOMS: &str = "m.room_id IN (SELECT room_id FROM chat_participants WHERE user_id = $1)
    AND ($3::bigint IS NULL OR m.room_id = $3)";

/// Messages scanned for a query too short for trigrams: the embedded
/// store's window (`store::search`), so both page alike.
const SHORT_QUERY_WINDOW: i64 = 5_000;

/// Candidates read per query at most (more when the Rust check refuses
/// some, which only the rare sigma and ICU corner cases make it do).
const MAX_BATCH: i64 = 1_000;

/// Case-folded text for substring comparison: `store::search`'s rule.
fn fold(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

/// The LIKE pattern of the candidates for `needle` (already folded): its
/// `%`, `_` and `\` escaped (LIKE's default escape is `\`), final sigma
/// folded as in `FOLDED`. A NUL, which no PostgreSQL text can hold, becomes
/// a wildcard (still a superset; the Rust check refuses the candidates).
fn like_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        match c {
            '%' | '_' | '\\' => {
                pattern.push('\\');
                pattern.push(c);
            }
            'ς' => pattern.push('σ'),
            '\0' => pattern.push('%'),
            c => pattern.push(c),
        }
    }
    pattern.push('%');
    pattern
}

/// Whether the embedded store answers `text` through its trigram index
/// (`store::search::trigram_query` is `Some`): 3+ characters with a window
/// of three free of NUL. Otherwise it scans a window of messages, and so
/// does this one, so that `next_before_id` means the same in both.
fn indexable(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 3 {
        return false;
    }
    let last = chars.len() - 3;
    (0..last).step_by(3).chain(std::iter::once(last)).any(|i| !chars[i..i + 3].contains(&'\0'))
}

/// Messages of `viewer`'s rooms containing `text`, newest first; and the id
/// to continue before, when the search stopped early.
pub async fn search(
    c: &impl Sql,
    viewer: UserId,
    text: &str,
    room_id: Option<RoomId>,
    before: Option<MessageId>,
    limit: usize,
) -> Result<(Vec<Found>, Option<MessageId>), StoreError> {
    let needle = fold(text);
    let pattern = like_pattern(&needle);
    let before = before.unwrap_or(MessageId::MAX);
    // A short query looks only at the newest window of messages: the
    // oldest of the window bounds the candidates, and the one after it
    // says whether there is more beyond.
    let (floor, beyond) = if indexable(text) {
        (None, false)
    } else {
        let edge = c
            .rows(
                &format!(
                    "SELECT m.id FROM chat_messages m WHERE m.id < $2 AND NOT m.is_deleted AND {ROOMS}
                     ORDER BY m.id DESC OFFSET $4 LIMIT 2"
                ),
                &[&viewer, &before, &room_id, &(SHORT_QUERY_WINDOW - 1)],
            )
            .await?;
        (edge.first().map(|r| r.get::<_, MessageId>(0)), edge.len() == 2)
    };
    let sql = format!(
        "SELECT m.id, m.content FROM chat_messages m
         WHERE m.id < $2 AND m.id >= $4 AND NOT m.is_deleted AND {ROOMS} AND {FOLDED} LIKE $5
         ORDER BY m.id DESC LIMIT $6"
    );
    let want = limit + 1;
    let mut batch = (want as i64).min(MAX_BATCH);
    let mut below = before;
    let mut rows: Vec<(MessageId, String)> = Vec::with_capacity(want);
    while rows.len() < want {
        let found = c.rows(&sql, &[&viewer, &below, &room_id, &floor.unwrap_or(0), &pattern, &batch]).await?;
        let Some(last) = found.last() else { break };
        below = last.get(0);
        let full = found.len() as i64 == batch;
        for row in &found {
            let (id, content): (MessageId, String) = (row.get(0), row.get(1));
            if rows.len() < want && fold(&content).contains(&needle) {
                rows.push((id, content));
            }
        }
        if !full {
            break;
        }
        batch = (batch * 4).min(MAX_BATCH);
    }
    let more = rows.len() > limit;
    rows.truncate(limit);
    // The window ended before `limit + 1` matches: go on from its oldest.
    let next = if more { rows.last().map(|(id, _)| *id) } else { floor.filter(|_| beyond) };
    // Rendered side by side: tokio-postgres pipelines the queries of one
    // connection, so a page of results costs a few round trips, not one
    // per message.
    let rendered = try_join_all(rows.iter().map(|(id, _)| async move {
        match reads::message_row(c, viewer, *id).await? {
            Some(row) if !row.is_deleted => reads::message_of(c, row).await.map(Some),
            _ => Ok(None),
        }
    }))
    .await?;
    let results = rows
        .iter()
        .zip(rendered)
        .filter_map(|((_, content), found)| {
            // Gone between the two reads (no snapshot spans them): left out.
            let (message, liked) = found?;
            Some(Found { highlight: highlight(content, text), message, liked })
        })
        .collect();
    Ok((results, next))
}

/// `user`'s export (a zip, as `store::export` writes it) in an unnamed
/// temporary file under `dir`, rewound; and how many messages it holds.
///
/// Only a shared reference to the connection comes here, so the reads
/// cannot share one transaction (a `BEGIN` sent by hand would stay open on
/// the pooled connection if the request were dropped half-way). Instead
/// the export stops at the newest message there was when it started:
/// later messages are left out of every room, as the embedded store's one
/// snapshot leaves them out; an edit or delete made meanwhile may show.
pub async fn export(
    c: &impl Sql,
    user: UserId,
    static_dir: PathBuf,
    dir: PathBuf,
) -> Result<(std::fs::File, u64), StoreError> {
    let io = |e: std::io::Error| StoreError::CommitFailed(format!("cannot write the export: {e}"));
    let newest: MessageId = c.row("SELECT COALESCE(max(id), 0) FROM chat_messages", &[]).await?.get(0);
    let file = tempfile::tempfile_in(&dir).map_err(io)?;
    // Buffered: the messages are written from this (async) thread in many
    // small pieces.
    let mut zip = Zip::new(BufWriter::new(file), user);
    let rooms = reads::rooms(c, user).await?;
    let mut listed = Vec::with_capacity(rooms.len());
    for room in &rooms {
        let ids = reads::member_ids(c, room.id).await?;
        let mut people = reads::users_by_id(c, &ids).await?;
        let members: Vec<User> = ids.iter().filter_map(|id| people.remove(id)).map(|u| User::clone(&u)).collect();
        listed.push(zip.room_json(room, members));
    }
    zip.rooms(&listed)?;
    for room in &rooms {
        zip.start_room(room.id)?;
        let mut after = 0;
        'pages: loop {
            let query = PageQuery::After { id: after, limit: PAGE };
            let Some(page) = reads::messages_page(c, user, room.id, query).await? else { break };
            let Some(last) = page.messages.last().map(|(m, _)| m.id) else { break };
            for (message, liked) in &page.messages {
                if message.id > newest {
                    break 'pages;
                }
                zip.message(message, *liked)?;
            }
            after = last;
            if !page.has_more {
                break;
            }
        }
        zip.end_room()?;
    }
    // The files are copied whole: on a blocking thread.
    let (out, messages) = tokio::task::spawn_blocking(move || zip.finish(&static_dir))
        .await
        .map_err(|e| StoreError::CommitFailed(format!("cannot write the export: {e}")))??;
    let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.rewind().map_err(io)?;
    Ok((file, messages))
}
