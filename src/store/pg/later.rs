//! What happens later, on PostgreSQL: scheduled messages (SPEC section 10),
//! HTTP uploads (section 11), event and message retention; their reads;
//! and the `message_scheduled` event's rendering. The maintenance commands
//! run on every node: each must be safe to run by several nodes at once,
//! and each says how it is.
//!
//! Semantics, errors and event rows are those of the embedded writer
//! (`store::writer`); where that writer relies on being the only one, the
//! functions here take a lock instead (a row lock with `SKIP LOCKED`, a
//! room's advisory lock, or a job's advisory lock).

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::Sql;

use super::Pg;
use super::writes::{emit, lock_room, room_of_member};
use crate::model::{Event, FileMeta, MessageId, MessageType, RoomId, Scheduled, UserId};
use crate::store::StoreError;
use crate::store::reads::{StoredEvent, Upload};
use crate::store::writer::{Due, Expired, NewMessage, NewUpload, WriterOptions};
use crate::time::now_ms;

/// The advisory lock key (two-int form, so never a room's) of event
/// retention: one node prunes at a time.
const PRUNE_LOCK: (i32, i32) = (7210, 482);
/// The advisory lock key of message retention: one node expires at a time.
const EXPIRE_LOCK: (i32, i32) = (7210, 483);

/// Items one delivery round posts at most (as the embedded writer).
const DELIVERY_ROUND: usize = 256;
/// The longest a node's scheduler sleeps, even with nothing pending that it
/// knows of: an item scheduled on another node wakes only that node (its
/// `Notify`), so if that node dies before the item is due, the others find
/// it at their next look, at most this late.
const FOREIGN_POLL_MS: i64 = 5_000;
/// When items are due but every one is locked (another node is sending
/// them), look again this soon rather than at once: that node commits in
/// milliseconds, and if it dies its locks go with its connection.
const BUSY_RETRY_MS: i64 = 1_000;

/// Events one retention batch removes at most (as the embedded writer).
const PRUNE_BATCH: i64 = 5_000;
/// Messages one retention batch removes at most (as the embedded writer).
const EXPIRE_BATCH: i64 = 500;

/// Where a new message goes: its room (the sender must be a member) and,
/// in a direct room, the other person (answered); a reply must answer a
/// message of the same room. The checks and errors of `send_message`.
async fn addressed(tx: &Transaction<'_>, m: &NewMessage) -> Result<Option<UserId>, StoreError> {
    let Some((members, group)) = room_of_member(tx, m.room_id, m.sender).await? else {
        return Err(StoreError::NotFound("Room not found"));
    };
    // A direct room's receiver is the other person; a group has none.
    let receiver = if group {
        None
    } else {
        let other = members.iter().copied().find(|u| *u != m.sender).unwrap_or(m.sender);
        if m.receiver_id.is_some_and(|r| r != other) {
            return Err(StoreError::Invalid("receiver_id is not the other participant of this room"));
        }
        Some(other)
    };
    if let Some(id) = m.reply_to_id {
        let room = tx.row_opt("SELECT room_id FROM chat_messages WHERE id = $1", &[&id]).await?;
        if room.map(|r| r.get::<_, RoomId>(0)) != Some(m.room_id) {
            return Err(StoreError::Invalid("reply_to_id must be a message of the same room"));
        }
    }
    Ok(receiver)
}

/// Deletes the rows of the uploads a message uses: each finished upload of
/// its sender, once (the row lock makes a second use, on any node, find
/// nothing).
async fn consume_uploads(tx: &Transaction<'_>, sender: UserId, uploads: &[String]) -> Result<(), StoreError> {
    for upload in uploads {
        let used =
            tx.exec("DELETE FROM uploads WHERE id = $1 AND user_id = $2 AND complete", &[upload, &sender]).await?;
        if used == 0 {
            return Err(StoreError::Invalid("upload_id is unknown, unfinished or already used"));
        }
    }
    Ok(())
}

/// Counts files against their uploader's quota; over it, the error rolls
/// the whole command back (the update and the check are one statement, so
/// two nodes charging the same user at once cannot both slip under it).
async fn charge_files(
    tx: &Transaction<'_>,
    options: &WriterOptions,
    user: UserId,
    files: &[FileMeta],
) -> Result<(), StoreError> {
    let bytes: u64 = files.iter().map(|f| f.file_size).sum();
    let used: i64 = tx
        .row(
            "UPDATE users SET storage_bytes = storage_bytes + $1 WHERE id = $2 RETURNING storage_bytes",
            &[&(bytes as i64), &user],
        )
        .await?
        .get(0);
    match options.user_quota_bytes {
        Some(quota) if used.max(0) as u64 > quota => Err(StoreError::QuotaExceeded(quota)),
        _ => Ok(()),
    }
}

/// Gives `bytes` of stored files back to a user's quota (never below zero).
async fn give_back_quota(tx: &Transaction<'_>, user: UserId, bytes: i64) -> Result<(), StoreError> {
    tx.exec("UPDATE users SET storage_bytes = GREATEST(storage_bytes - $1, 0) WHERE id = $2", &[&bytes, &user]).await?;
    Ok(())
}

/// Messages let go of their files; answers those no message uses any more
/// (the caller removes them from disk after the commit). `file_refs` rows
/// are updated with `RETURNING`, so two transactions releasing the same
/// shared file count down one after the other.
async fn release_files(tx: &Transaction<'_>, files: Vec<String>) -> Result<Vec<String>, StoreError> {
    let mut unused = Vec::new();
    for path in files {
        let left =
            tx.row_opt("UPDATE file_refs SET refs = refs - 1 WHERE file_path = $1 RETURNING refs", &[&path]).await?;
        match left.map(|r| r.get::<_, i64>(0)) {
            // Still shared; with one user left it goes back to having no row.
            Some(left) if left <= 1 => {
                tx.exec("DELETE FROM file_refs WHERE file_path = $1", &[&path]).await?;
            }
            Some(_) => {}
            None => unused.push(path),
        }
    }
    Ok(unused)
}

/// Stores a message to be posted at `send_at` (SPEC section 10), checked as
/// a message sent now would be (room, receiver, reply, uploads, quota), and
/// tells the sender's connections with `message_scheduled` (a personal
/// event: `user_id` set, no room). No room lock: nothing is posted to the
/// room yet, and delivery checks the room again under its lock.
pub async fn schedule(pg: &Pg, options: &WriterOptions, m: NewMessage, send_at: i64) -> Result<Scheduled, StoreError> {
    super::writes::refuse_nul(&m.content)?;
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let receiver = addressed(&tx, &m).await?;
    consume_uploads(&tx, m.sender, &m.uploads).await?;
    if let Some(files) = &m.files {
        charge_files(&tx, options, m.sender, files).await?;
    }
    let files_json = super::writes::files_json(&m.files)?;
    let id: i64 = tx
        .row(
            "INSERT INTO scheduled_messages (sender_id, room_id, receiver_id, message_type, content, files_data,
                 duration, reply_to_id, local_temp_id, send_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            &[
                &m.sender,
                &m.room_id,
                &receiver,
                &m.message_type.as_str(),
                &m.content,
                &files_json,
                &m.duration,
                &m.reply_to_id,
                &m.local_temp_id,
                &send_at,
                &now_ms(),
            ],
        )
        .await?
        .get(0);
    emit(&tx, None, Some(m.sender), "message_scheduled", serde_json::json!({"scheduled_id": id})).await?;
    tx.commit().await?;
    Ok(Scheduled {
        id,
        room_id: m.room_id,
        message_type: m.message_type,
        content: m.content,
        send_at,
        local_temp_id: m.local_temp_id,
    })
}

/// Removes one of `user`'s pending items and gives its files' bytes back;
/// answers the files (only the item used them). An item being delivered
/// right now is row-locked by the delivery: the delete waits for it and
/// then finds nothing (404, as for an item already sent).
pub async fn cancel_scheduled(pg: &Pg, user: UserId, id: i64) -> Result<Vec<String>, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let row = tx
        .row_opt("DELETE FROM scheduled_messages WHERE id = $1 AND sender_id = $2 RETURNING files_data", &[&id, &user])
        .await?;
    let Some(row) = row else { return Err(StoreError::NotFound("Scheduled message not found")) };
    let files: Vec<FileMeta> =
        row.get::<_, Option<String>>(0).and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_default();
    let bytes: u64 = files.iter().map(|f| f.file_size).sum();
    if bytes > 0 {
        give_back_quota(&tx, user, bytes as i64).await?;
    }
    tx.commit().await?;
    Ok(files.into_iter().map(|f| f.file_path).collect())
}

/// Posts the items due at `now`, soonest first, each as a normal message
/// (`new_message` with its `local_temp_id`), and removes them: each item
/// in a transaction of its own that takes it with `FOR UPDATE SKIP
/// LOCKED`, takes its room's lock, inserts the message and deletes the
/// item. Nodes running this at the same moment therefore take different
/// items, and an item is sent exactly once (a crash rolls back both the
/// message and the delete). One item per transaction means a transaction
/// holds one room lock only, so two nodes can never deadlock on rooms.
///
/// An item that can no longer be sent (its sender left the room, its temp
/// id was used, ...) is dropped and logged, its bytes given back, as the
/// embedded writer does, so it cannot block the ones behind it; an error
/// of the database itself (unreachable, deadlock, serialisation) leaves it
/// for the next round.
///
/// `next` is never `None` here, unlike the embedded writer: it is at most
/// `FOREIGN_POLL_MS` away, because the scheduler task sleeps until `next`
/// or its own node's `Notify`, and items scheduled on another node notify
/// only that node.
pub async fn deliver_due(pg: &Pg, options: &WriterOptions, now: i64) -> Result<Due, StoreError> {
    let mut client = pg.client().await?;
    let (mut delivered, mut unused_files, mut taken, mut exhausted) = (0, Vec::new(), 0, false);
    while taken < DELIVERY_ROUND {
        match deliver_one(&mut client, options, now).await {
            Ok(None) => {
                exhausted = true;
                break;
            }
            Ok(Some(None)) => delivered += 1,
            Ok(Some(Some(files))) => unused_files.extend(files),
            Err(e) if taken == 0 => return Err(e),
            // Items before it are committed: answer them (the files of
            // dropped ones must still be removed, the tail poked), and let
            // the next round, at once, meet the error again.
            Err(e) => {
                tracing::warn!(error = %e, "scheduled delivery stopped early; going on in a moment");
                return Ok(Due { delivered, unused_files, more: true, next: Some(now_ms()) });
            }
        }
        taken += 1;
    }
    let row = client
        .row(
            "SELECT min(send_at), EXISTS (SELECT 1 FROM scheduled_messages WHERE send_at <= $1)
             FROM scheduled_messages",
            &[&now],
        )
        .await?;
    let (soonest, due_left): (Option<i64>, bool) = (row.get(0), row.get(1));
    // Items still due after a round that found none free are another
    // node's, in flight: look again shortly, not at once.
    let more = !exhausted && due_left;
    let clock = now_ms();
    let next = if exhausted && due_left {
        clock + BUSY_RETRY_MS
    } else {
        soonest.map_or(clock + FOREIGN_POLL_MS, |at| at.min(clock + FOREIGN_POLL_MS))
    };
    Ok(Due { delivered, unused_files, more, next: Some(next) })
}

/// Sends the soonest due item no other node holds. `None`: there is none;
/// `Some(None)`: sent; `Some(Some(files))`: dropped, with its files, which
/// nothing uses now.
async fn deliver_one(
    client: &mut deadpool_postgres::Client,
    options: &WriterOptions,
    now: i64,
) -> Result<Option<Option<Vec<String>>>, StoreError> {
    let mut tx = client.transaction().await?;
    let row = tx
        .row_opt(
            "SELECT id, sender_id, room_id, receiver_id, message_type, content, files_data, duration, reply_to_id,
                 local_temp_id FROM scheduled_messages WHERE send_at <= $1 ORDER BY send_at, id LIMIT 1
             FOR UPDATE SKIP LOCKED",
            &[&now],
        )
        .await?;
    // Dropping the transaction rolls it back.
    let Some(row) = row else { return Ok(None) };
    let id: i64 = row.get(0);
    let sender: UserId = row.get(1);
    let room_id: RoomId = row.get(2);
    let kind: String = row.get(4);
    let files: Option<Vec<FileMeta>> =
        row.get::<_, Option<String>>(6).and_then(|json| serde_json::from_str(&json).ok());
    let message = NewMessage {
        sender,
        room_id,
        receiver_id: row.get(3),
        message_type: MessageType::parse(&kind).unwrap_or(MessageType::Text),
        content: row.get(5),
        local_temp_id: row.get(9),
        files: files.clone(),
        duration: row.get(7),
        reply_to_id: row.get(8),
        forwarded_from: None,
        // Counted when it was scheduled; its uploads were consumed then.
        files_counted: true,
        uploads: Vec::new(),
    };
    lock_room(&tx, room_id).await?;
    let item = tx.savepoint("item").await?;
    let refused = match post(&item, options, message).await {
        Ok(true) => None,
        Ok(false) => Some(StoreError::Conflict("its local_temp_id was used by another message")),
        Err(e) if transient(&e) => return Err(e),
        Err(e) => Some(e),
    };
    let outcome = match refused {
        None => {
            item.commit().await?;
            None
        }
        Some(e) => {
            item.rollback().await?;
            tracing::warn!(item = id, error = %e, "a scheduled message could not be sent; dropped");
            let files = files.unwrap_or_default();
            let bytes: u64 = files.iter().map(|f| f.file_size).sum();
            if bytes > 0 {
                give_back_quota(&tx, sender, bytes as i64).await?;
            }
            Some(files.into_iter().map(|f| f.file_path).collect())
        }
    };
    tx.exec("DELETE FROM scheduled_messages WHERE id = $1", &[&id]).await?;
    tx.commit().await?;
    Ok(Some(outcome))
}

/// An error of the database rather than of the item: the unreachable
/// database, and the SQLSTATE classes that go away on a retry
/// (08 connection, 40 rollback (deadlock, serialisation), 53 resources,
/// 57 operator intervention (a cancelled statement, a shutdown)).
fn transient(e: &StoreError) -> bool {
    match e {
        StoreError::Down(_) => true,
        StoreError::Database(text) => ["08", "40", "53", "57"].iter().any(|class| text.starts_with(class)),
        _ => false,
    }
}

/// Inserts a due item's message as `send_message` does, in the caller's
/// transaction, which holds the room's lock: answers whether it was stored
/// (false: the sender already used its temp id, nothing stored).
async fn post(tx: &Transaction<'_>, options: &WriterOptions, m: NewMessage) -> Result<bool, StoreError> {
    let receiver = addressed(tx, &m).await?;
    if super::writes::insert_message(tx, &m, receiver).await?.is_none() {
        return Ok(false);
    }
    consume_uploads(tx, m.sender, &m.uploads).await?;
    if let Some(files) = m.files.as_ref().filter(|_| !m.files_counted) {
        charge_files(tx, options, m.sender, files).await?;
    }
    Ok(true)
}

/// Stores a new upload's row, if the user's stored files, unfinished
/// uploads and this one fit the quota. The user's row is locked first, so
/// two uploads of one user starting on two nodes are checked one after
/// the other (each sees the other's row).
pub async fn create_upload(pg: &Pg, options: &WriterOptions, u: NewUpload) -> Result<(), StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    if let Some(quota) = options.user_quota_bytes {
        let stored: i64 = tx
            .row_opt("SELECT storage_bytes FROM users WHERE id = $1 FOR NO KEY UPDATE", &[&u.user])
            .await?
            .ok_or(StoreError::NotFound("User not found"))?
            .get(0);
        let pending: i64 =
            tx.row("SELECT COALESCE(sum(length), 0)::bigint FROM uploads WHERE user_id = $1", &[&u.user]).await?.get(0);
        if stored.max(0) as u64 + pending.max(0) as u64 + u.length > quota {
            return Err(StoreError::QuotaExceeded(quota));
        }
    }
    tx.exec(
        "INSERT INTO uploads (id, user_id, file_name, mime_type, length, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&u.id, &u.user, &u.file_name, &u.mime_type, &(u.length as i64), &now_ms(), &u.expires_at],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Marks an upload complete and checked, or removes it (failed checks).
pub async fn finish_upload(pg: &Pg, id: String, passed: bool) -> Result<(), StoreError> {
    let client = pg.client().await?;
    let sql =
        if passed { "UPDATE uploads SET complete = true WHERE id = $1" } else { "DELETE FROM uploads WHERE id = $1" };
    match client.exec(sql, &[&id]).await? {
        0 => Err(StoreError::NotFound("Upload not found")),
        _ => Ok(()),
    }
}

/// Removes the uploads expired at `now`; answers their ids (the caller
/// removes their files). One statement: two nodes running it at once
/// each delete (and answer) a row at most once, the second waiting on the
/// first's row locks and then skipping the rows it removed.
pub async fn expire_uploads(pg: &Pg, now: i64) -> Result<Vec<String>, StoreError> {
    let client = pg.client().await?;
    let rows = client.rows("DELETE FROM uploads WHERE expires_at <= $1 RETURNING id", &[&now]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Removes up to a batch of events older than `before_ms`, oldest first, and
/// moves the horizon past them (so what goes is a prefix of the positions).
///
/// Only positions this node has released are candidates: positions are
/// taken before commit, so below an unreleased position a transaction may
/// still commit a lower one, which would then sit under the horizon (and
/// its young age would stop every later batch). Nodes prune one at a time
/// (an advisory lock held to the commit; the second then sees what the
/// first removed), and both statements are idempotent besides.
pub async fn prune_events(pg: &Pg, before_ms: i64) -> Result<usize, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    tx.exec("SELECT pg_advisory_xact_lock($1, $2)", &[&PRUNE_LOCK.0, &PRUNE_LOCK.1]).await?;
    // Walk from the oldest and stop at the first young one: a scan of the
    // batch, never of the table.
    let rows = tx
        .rows(
            "SELECT position, created_at FROM events WHERE position <= $1 ORDER BY position LIMIT $2",
            &[&pg.released(), &PRUNE_BATCH],
        )
        .await?;
    let through = rows
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .take_while(|(_, created_at)| *created_at < before_ms)
        .last()
        .map(|(position, _)| position);
    let Some(through) = through else { return Ok(0) };
    let removed = tx.exec("DELETE FROM events WHERE position <= $1", &[&through]).await?;
    tx.exec("UPDATE event_horizon SET pruned_through = GREATEST(pruned_through, $1) WHERE id = 1", &[&through]).await?;
    tx.commit().await?;
    Ok(removed as usize)
}

/// One message a retention batch removes.
struct Old {
    id: MessageId,
    sender: UserId,
    forwarded: bool,
    /// Whether the search index holds it (not deleted, some text).
    indexed: bool,
    files_data: Option<String>,
}

fn old_from(row: &Row) -> Old {
    Old { id: row.get(0), sender: row.get(1), forwarded: row.get(2), indexed: row.get(3), files_data: row.get(4) }
}

/// Removes up to a batch of messages created before `before_ms`, oldest
/// first, stopping at the first younger one (so what goes is a prefix of
/// the ids). With them go their likes and reactions; replies that quote
/// them keep their text and lose the quote; their files are released (and
/// their bytes given back to the sender's quota, as a delete does). The
/// search index learns of it through a `messages_expired` event (no room,
/// no user: no client ever receives it): the messages are gone from
/// history, not deleted by someone, and a replay skips a `new_message`
/// whose message is gone.
///
/// Several nodes: one expires at a time (an advisory lock to the commit;
/// the next then starts from what is left). Against live commands, the
/// batch's rooms are locked (in id order) before any row is touched, so a
/// like, reaction, reply or delete of one of these messages either commits
/// before (and is read here) or runs after and finds the message gone; the
/// messages are then read again under those locks.
pub async fn expire_messages(pg: &Pg, before_ms: i64) -> Result<Expired, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    tx.exec("SELECT pg_advisory_xact_lock($1, $2)", &[&EXPIRE_LOCK.0, &EXPIRE_LOCK.1]).await?;
    let rows =
        tx.rows("SELECT id, created_at, room_id FROM chat_messages ORDER BY id LIMIT $1", &[&EXPIRE_BATCH]).await?;
    let batch: Vec<(MessageId, RoomId)> = rows
        .iter()
        .take_while(|r| r.get::<_, i64>(1) < before_ms)
        .map(|r| (r.get::<_, MessageId>(0), r.get::<_, RoomId>(2)))
        .collect();
    if batch.is_empty() {
        return Ok(Expired::default());
    }
    let mut rooms: Vec<RoomId> = batch.iter().map(|(_, room)| *room).collect();
    rooms.sort_unstable();
    rooms.dedup();
    for room in rooms {
        lock_room(&tx, room).await?;
    }
    let ids: Vec<MessageId> = batch.iter().map(|(id, _)| *id).collect();
    let old: Vec<Old> = tx
        .rows(
            "SELECT id, sender_id, forwarded_from_id IS NOT NULL, NOT is_deleted AND content <> '', files_data
             FROM chat_messages WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?
        .iter()
        .map(old_from)
        .collect();
    let mut files = Vec::new();
    for message in &old {
        let Some(json) = message.files_data.as_deref() else { continue };
        let stored: Vec<serde_json::Value> =
            serde_json::from_str(json).map_err(|_| StoreError::Invalid("files_data cannot be read"))?;
        let mut bytes = 0;
        for file in &stored {
            if let Some(path) = file.get("file_path").and_then(serde_json::Value::as_str) {
                files.push(path.to_owned());
            }
            bytes += file.get("file_size").and_then(serde_json::Value::as_i64).unwrap_or(0);
        }
        // A forwarded copy's files count against whoever uploaded them.
        if !message.forwarded && bytes > 0 {
            give_back_quota(&tx, message.sender, bytes).await?;
        }
    }
    let ids: Vec<MessageId> = old.iter().map(|m| m.id).collect();
    tx.exec("UPDATE chat_messages SET reply_to_id = NULL WHERE reply_to_id = ANY($1)", &[&ids]).await?;
    tx.exec("DELETE FROM message_likes WHERE message_id = ANY($1)", &[&ids]).await?;
    tx.exec("DELETE FROM message_reactions WHERE message_id = ANY($1)", &[&ids]).await?;
    let removed = tx.exec("DELETE FROM chat_messages WHERE id = ANY($1)", &[&ids]).await?;
    let indexed: Vec<MessageId> = old.iter().filter(|m| m.indexed).map(|m| m.id).collect();
    if !indexed.is_empty() {
        emit(&tx, None, None, "messages_expired", serde_json::json!({ "message_ids": indexed })).await?;
    }
    let unused_files = release_files(&tx, files).await?;
    tx.commit().await?;
    Ok(Expired { removed: removed as usize, unused_files })
}

const SCHEDULED_COLS: &str = "id, room_id, message_type, content, send_at, local_temp_id";

fn scheduled_from(row: &Row) -> Scheduled {
    let kind: String = row.get(2);
    Scheduled {
        id: row.get(0),
        room_id: row.get(1),
        message_type: MessageType::parse(&kind).unwrap_or(MessageType::Text),
        content: row.get(3),
        send_at: row.get(4),
        local_temp_id: row.get(5),
    }
}

/// `user`'s pending scheduled messages, soonest first.
pub async fn scheduled_of(c: &impl Sql, user: UserId) -> Result<Vec<Scheduled>, StoreError> {
    let sql = format!("SELECT {SCHEDULED_COLS} FROM scheduled_messages WHERE sender_id = $1 ORDER BY send_at, id");
    Ok(c.rows(&sql, &[&user]).await?.iter().map(scheduled_from).collect())
}

async fn scheduled_item(c: &impl Sql, user: UserId, id: i64) -> Result<Option<Scheduled>, StoreError> {
    let sql = format!("SELECT {SCHEDULED_COLS} FROM scheduled_messages WHERE id = $1 AND sender_id = $2");
    Ok(c.row_opt(&sql, &[&id, &user]).await?.as_ref().map(scheduled_from))
}

/// An upload as stored (its bytes are in `<data dir>/uploads/<id>`).
pub async fn upload(c: &impl Sql, id: &str) -> Result<Option<Upload>, StoreError> {
    let row = c
        .row_opt(
            "SELECT id, user_id, file_name, mime_type, length, complete, expires_at FROM uploads WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| Upload {
        id: r.get(0),
        user_id: r.get(1),
        file_name: r.get(2),
        mime_type: r.get(3),
        length: r.get::<_, i64>(4).max(0) as u64,
        complete: r.get(5),
        expires_at: r.get(6),
    }))
}

/// Every upload id still stored (the start-up sweep keeps their files).
pub async fn upload_ids(c: &impl Sql) -> Result<Vec<String>, StoreError> {
    Ok(c.rows("SELECT id FROM uploads", &[]).await?.iter().map(|r| r.get(0)).collect())
}

/// `message_scheduled` rebuilt from a stored event for `viewer` (the sender),
/// only while the item is pending: once sent, its `new_message` follows.
pub async fn event_of(c: &impl Sql, viewer: UserId, stored: &StoredEvent) -> Result<Option<Event>, StoreError> {
    let id = stored.data.get("scheduled_id").and_then(serde_json::Value::as_i64).unwrap_or(0);
    Ok(scheduled_item(c, viewer, id).await?.map(Event::MessageScheduled))
}

/// Against a real PostgreSQL (`CHATD_IT_POSTGRES`, as the integration
/// suite; ignored in a plain `cargo test`, run by `.ci/cluster.sh`): two
/// nodes (two pools on one fresh database) run each maintenance step at
/// the same moment.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn options() -> WriterOptions {
        WriterOptions {
            batch_max: 1,
            user_quota_bytes: None,
            max_group_members: 100,
            wal_path: None,
            wal_limit_bytes: 0,
        }
    }

    /// Two nodes on a fresh database of the `CHATD_IT_POSTGRES` server.
    async fn two_nodes() -> Option<(Arc<Pg>, Arc<Pg>)> {
        let db = crate::store::pg::testing::fresh_database("later").await;
        Some((Pg::open(&db, 8).await.expect("open a"), Pg::open(&db, 8).await.expect("open b")))
    }

    async fn one(pg: &Pg, sql: &str) -> i64 {
        pg.client().await.expect("client").row(sql, &[]).await.expect(sql).get(0)
    }

    async fn exec(pg: &Pg, sql: &str) {
        pg.client().await.expect("client").batch_execute(sql).await.expect(sql);
    }

    /// Ann and bob in a direct room, carl alone in another: (ann, bob, room, carl's room).
    async fn people(pg: &Pg) -> (UserId, UserId, RoomId, RoomId) {
        exec(
            pg,
            "INSERT INTO users (name, email, password_hash, created_at) VALUES
                 ('ann', 'ann@x', 'x', 0), ('bob', 'bob@x', 'x', 0), ('carl', 'carl@x', 'x', 0);
             INSERT INTO chat_rooms (room_type, created_by, created_at, updated_at, direct_key)
                 VALUES ('direct', 1, 0, 0, '1:2'), ('direct', 3, 0, 0, '3:3');
             INSERT INTO chat_participants (room_id, user_id, joined_at) VALUES (1, 1, 0), (1, 2, 0), (2, 3, 0);",
        )
        .await;
        (1, 2, 1, 2)
    }

    fn text(sender: UserId, room_id: RoomId, temp: String) -> NewMessage {
        NewMessage {
            sender,
            room_id,
            receiver_id: None,
            message_type: MessageType::Text,
            content: format!("text of {temp}"),
            local_temp_id: Some(temp),
            files: None,
            duration: None,
            reply_to_id: None,
            forwarded_from: None,
            files_counted: false,
            uploads: Vec::new(),
        }
    }

    /// Delivers until this node finds nothing more to take: (sent, files).
    async fn drain(pg: Arc<Pg>) -> (usize, Vec<String>) {
        let (mut sent, mut files) = (0, Vec::new());
        loop {
            let due = deliver_due(&pg, &options(), now_ms()).await.expect("deliver");
            sent += due.delivered;
            files.extend(due.unused_files);
            if !due.more {
                return (sent, files);
            }
        }
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (CHATD_IT_POSTGRES): run by .ci/cluster.sh"]
    async fn two_nodes_deliver_every_due_item_exactly_once() {
        let (a, b) = two_nodes().await.expect("two nodes");
        let (ann, _bob, room, carl_room) = people(&a).await;
        let past = now_ms() - 1;
        for i in 0..600 {
            schedule(&a, &options(), text(ann, room, format!("s{i}")), past).await.expect("schedule");
        }
        // One that cannot be sent any more (ann is not in carl's room): dropped,
        // its bytes given back, its file answered as unused.
        exec(
            &a,
            &format!(
                "UPDATE users SET storage_bytes = 100 WHERE id = {ann};
                 INSERT INTO scheduled_messages (sender_id, room_id, message_type, content, files_data, send_at,
                     created_at) VALUES ({ann}, {carl_room}, 'image', '',
                     '[{{\"file_name\":\"a.png\",\"file_path\":\"chat_files/images/a.png\",\"file_size\":100,
                        \"mime_type\":\"image/png\",\"duration\":null}}]', {past}, 0);"
            ),
        )
        .await;
        let (one_node, other_node) = tokio::join!(tokio::spawn(drain(a.clone())), tokio::spawn(drain(b.clone())));
        let ((sent_a, files_a), (sent_b, files_b)) = (one_node.expect("a"), other_node.expect("b"));
        assert_eq!(sent_a + sent_b, 600, "{sent_a} + {sent_b}");
        assert_eq!([files_a, files_b].concat(), ["chat_files/images/a.png"]);
        assert_eq!(one(&a, "SELECT count(*) FROM chat_messages").await, 600);
        assert_eq!(one(&a, "SELECT count(DISTINCT local_temp_id) FROM chat_messages").await, 600);
        assert_eq!(one(&a, "SELECT count(*) FROM events WHERE kind = 'new_message'").await, 600);
        assert_eq!(one(&a, "SELECT count(*) FROM scheduled_messages").await, 0);
        assert_eq!(one(&a, &format!("SELECT storage_bytes FROM users WHERE id = {ann}")).await, 0);
        // Nothing pending: the next look is still at most a poll away.
        let due = deliver_due(&b, &options(), now_ms()).await.expect("deliver");
        let next = due.next.expect("a next look") - now_ms();
        assert!(next > 0 && next <= FOREIGN_POLL_MS, "{next}");
        // A pending item is looked at when due (or sooner).
        let soon = now_ms() + 1_000;
        schedule(&a, &options(), text(ann, room, "later".into()), soon).await.expect("schedule");
        assert_eq!(deliver_due(&b, &options(), now_ms()).await.expect("deliver").next, Some(soon));
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (CHATD_IT_POSTGRES): run by .ci/cluster.sh"]
    async fn two_nodes_expire_a_prefix_of_old_messages_once() {
        let (a, b) = two_nodes().await.expect("two nodes");
        let (ann, bob, room, _) = people(&a).await;
        let old = now_ms() - 40 * 86_400_000;
        exec(
            &a,
            &format!(
                "INSERT INTO chat_messages (room_id, sender_id, receiver_id, content, created_at)
                     SELECT {room}, {ann}, {bob}, 'm' || g, {old} FROM generate_series(1, 1200) g;
                 UPDATE chat_messages SET created_at = {now} WHERE id = 701 OR id > 1100;
                 UPDATE chat_messages SET files_data =
                     '[{{\"file_name\":\"a.png\",\"file_path\":\"chat_files/images/a.png\",\"file_size\":100,
                        \"mime_type\":\"image/png\",\"duration\":null}}]' WHERE id = 2;
                 UPDATE chat_messages SET files_data =
                     '[{{\"file_name\":\"s.png\",\"file_path\":\"chat_files/images/s.png\",\"file_size\":50,
                        \"mime_type\":\"image/png\",\"duration\":null}}]' WHERE id IN (3, 1101);
                 UPDATE chat_messages SET forwarded_from_id = 3 WHERE id = 1101;
                 INSERT INTO file_refs (file_path, refs) VALUES ('chat_files/images/s.png', 2);
                 UPDATE users SET storage_bytes = 150 WHERE id = {ann};
                 UPDATE chat_messages SET is_deleted = true, content = '' WHERE id = 4;
                 UPDATE chat_messages SET reply_to_id = 1 WHERE id = 1150;
                 INSERT INTO message_likes (message_id, user_id, created_at) VALUES (1, {bob}, 0);
                 INSERT INTO message_reactions (message_id, emoji, user_id, created_at) VALUES (1, 'x', {bob}, 0);",
                now = now_ms()
            ),
        )
        .await;
        let cutoff = now_ms() - 30 * 86_400_000;
        let expire_all = |pg: Arc<Pg>| async move {
            let (mut removed, mut files) = (Vec::new(), Vec::new());
            loop {
                let expired = expire_messages(&pg, cutoff).await.expect("expire");
                if expired.removed == 0 {
                    return (removed, files);
                }
                removed.push(expired.removed);
                files.extend(expired.unused_files);
            }
        };
        let (one_node, other_node) =
            tokio::join!(tokio::spawn(expire_all(a.clone())), tokio::spawn(expire_all(b.clone())));
        let ((removed_a, files_a), (removed_b, files_b)) = (one_node.expect("a"), other_node.expect("b"));
        let mut batches = [removed_a, removed_b].concat();
        batches.sort_unstable();
        assert_eq!(batches, [200, 500], "at most 500 a batch; the young one stops it");
        assert_eq!([files_a, files_b].concat(), ["chat_files/images/a.png"], "the shared file stays");
        assert_eq!(one(&a, "SELECT min(id) FROM chat_messages").await, 701);
        assert_eq!(one(&a, "SELECT count(*) FROM chat_messages").await, 500);
        assert_eq!(one(&a, "SELECT count(*) FROM message_likes").await, 0);
        assert_eq!(one(&a, "SELECT count(*) FROM message_reactions").await, 0);
        assert_eq!(one(&a, "SELECT count(*) FROM chat_messages WHERE reply_to_id IS NOT NULL").await, 0);
        assert_eq!(one(&a, "SELECT count(*) FROM file_refs").await, 0, "one user left: no row");
        assert_eq!(one(&a, &format!("SELECT storage_bytes FROM users WHERE id = {ann}")).await, 0);
        // The indexer hears of every removed message it indexed (not the deleted one).
        let expired = one(
            &a,
            "SELECT COALESCE(sum(json_array_length((data::json)->'message_ids')), 0)::bigint FROM events
             WHERE kind = 'messages_expired' AND room_id IS NULL AND user_id IS NULL",
        )
        .await;
        assert_eq!(expired, 699);
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (CHATD_IT_POSTGRES): run by .ci/cluster.sh"]
    async fn two_nodes_prune_released_events_once() {
        let (a, b) = two_nodes().await.expect("two nodes");
        exec(
            &a,
            &format!(
                "INSERT INTO events (kind, data, created_at) SELECT 'x', '{{}}', 0 FROM generate_series(1, 7000);
                 INSERT INTO events (kind, data, created_at) VALUES ('x', '{{}}', {now});
                 INSERT INTO events (kind, data, created_at) SELECT 'x', '{{}}', 0 FROM generate_series(1, 3);",
                now = now_ms()
            ),
        )
        .await;
        // Released (final) up to 7,001 only: the three old ones after it wait.
        for pg in [&a, &b] {
            pg.release(7_001);
        }
        let prune_all = |pg: Arc<Pg>| async move {
            let mut removed = Vec::new();
            loop {
                match prune_events(&pg, now_ms() - 1_000).await.expect("prune") {
                    0 => return removed,
                    n => removed.push(n),
                }
            }
        };
        let (one_node, other_node) =
            tokio::join!(tokio::spawn(prune_all(a.clone())), tokio::spawn(prune_all(b.clone())));
        let mut batches = [one_node.expect("a"), other_node.expect("b")].concat();
        batches.sort_unstable();
        assert_eq!(batches, [2_000, 5_000]);
        assert_eq!(one(&a, "SELECT pruned_through FROM event_horizon").await, 7_000);
        assert_eq!(one(&a, "SELECT min(position) FROM events").await, 7_001);
    }
}
