//! Reactions, forwarding and thumbnails on PostgreSQL (SPEC section 10),
//! and the `message_reaction` event's rendering. Each command is one
//! transaction holding the advisory lock of every room it changes, so a
//! room's changes commit in one order across nodes (see `writes`); the
//! answers, errors and event rows are the embedded writer's
//! (`store::writer`), so either store serves the same API.

use super::Sql;

use super::writes::{emit, lock_room, room_of_member, visible_message};
use super::{Pg, reads};
use crate::model::{Event, FileMeta, ForwardedFrom, MAX_REACTIONS, Message, MessageId, Reaction, RoomId, UserId};
use crate::store::StoreError;
use crate::store::reads::StoredEvent;
use crate::store::writer::WriterOptions;
use crate::time::now_ms;

/// The reactions of one message, in order of first use (the row id is the
/// order reactions were added in), each with its users in that order too.
async fn reactions(c: &impl Sql, message: MessageId) -> Result<Vec<Reaction>, StoreError> {
    let rows =
        c.rows("SELECT emoji, user_id FROM message_reactions WHERE message_id = $1 ORDER BY id", &[&message]).await?;
    let mut out: Vec<Reaction> = Vec::new();
    for row in &rows {
        let (emoji, user): (String, UserId) = (row.get(0), row.get(1));
        match out.iter_mut().find(|r| r.emoji == emoji) {
            Some(known) => known.users.push(user),
            None => out.push(Reaction { emoji, users: vec![user] }),
        }
    }
    Ok(out)
}

/// Adds or removes `user`'s reaction (idempotent: a change that changes
/// nothing stores no event); answers the message's reactions.
pub async fn react(
    pg: &Pg,
    user: UserId,
    id: MessageId,
    emoji: String,
    add: bool,
) -> Result<Vec<Reaction>, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    // Takes the message's room lock: the 20-emoji count below cannot be
    // raced past by a reaction on another node.
    let row = visible_message(&tx, user, id).await?;
    if add && row.is_deleted {
        return Err(StoreError::Invalid("Cannot react to a deleted message"));
    }
    let current = reactions(&tx, id).await?;
    if add && current.len() >= MAX_REACTIONS && !current.iter().any(|r| r.emoji == emoji) {
        return Err(StoreError::TooManyReactions(MAX_REACTIONS));
    }
    let changed = if add {
        tx.exec(
            "INSERT INTO message_reactions (message_id, emoji, user_id, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&id, &emoji, &user, &now_ms()],
        )
        .await?
    } else {
        tx.exec(
            "DELETE FROM message_reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3",
            &[&id, &emoji, &user],
        )
        .await?
    };
    if changed == 0 {
        // Nothing to store; dropping the transaction rolls back only the lock.
        return Ok(current);
    }
    let reactions = reactions(&tx, id).await?;
    let data = serde_json::json!({"message_id": id, "user_id": user, "emoji": emoji, "added": add});
    emit(&tx, Some(row.room_id), None, "message_reaction", data).await?;
    tx.commit().await?;
    Ok(reactions)
}

/// Copies a message the user can see into rooms of theirs: each copy is the
/// user's new message with the original's text and files (shared on disk,
/// counted in `file_refs`, not charged again) and `forwarded_from` naming
/// the first original. All copies or none (one transaction).
///
/// Every room involved (the original's and the targets) is locked before
/// anything is read, in ascending id order: two forwards between the same
/// rooms in opposite directions then wait for each other instead of
/// deadlocking (locking the original's room first and the targets after
/// would let A hold 5 and want 3 while B holds 3 and wants 5). The copies
/// are still inserted in the order asked, as the embedded writer does.
pub async fn forward(
    pg: &Pg,
    _options: &WriterOptions,
    user: UserId,
    id: MessageId,
    room_ids: Vec<RoomId>,
) -> Result<Vec<(Message, bool)>, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    // A message never changes rooms: reading its room before the lock is safe.
    let source: RoomId = tx
        .row_opt("SELECT room_id FROM chat_messages WHERE id = $1", &[&id])
        .await?
        .ok_or(StoreError::NotFound("Message not found"))?
        .get(0);
    let mut locks: Vec<RoomId> = room_ids.iter().copied().chain(std::iter::once(source)).collect();
    locks.sort_unstable();
    locks.dedup();
    for room in locks {
        lock_room(&tx, room).await?;
    }
    let row = visible_message(&tx, user, id).await?;
    if row.is_deleted {
        return Err(StoreError::Invalid("A deleted message cannot be forwarded"));
    }
    let origin = match &row.forwarded_from {
        Some(first) => first.clone(),
        None => {
            let sender = reads::user_by_id(&tx, row.sender_id).await?.ok_or(StoreError::NotFound("User not found"))?;
            ForwardedFrom { message_id: row.id, sender_name: sender.name }
        }
    };
    let files_json = match &row.files {
        Some(files) => {
            Some(serde_json::to_string(files).map_err(|_| StoreError::Invalid("files_data cannot be stored"))?)
        }
        None => None,
    };
    let first: Option<&FileMeta> = row.files.as_ref().and_then(|f| f.first());
    let mut copies = Vec::with_capacity(room_ids.len());
    for room_id in room_ids {
        let Some((members, group)) = room_of_member(&tx, room_id, user).await? else {
            return Err(StoreError::NotFound("Room not found"));
        };
        // A direct room's receiver is the other person; a group has none.
        let receiver = if group { None } else { Some(members.iter().copied().find(|u| *u != user).unwrap_or(user)) };
        let copy_id: MessageId = tx
            .row(
                "INSERT INTO chat_messages (room_id, sender_id, receiver_id, message_type, content, file_name,
                     file_path, file_size, mime_type, files_data, duration, created_at, forwarded_from_id,
                     forwarded_from_name)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
                &[
                    &room_id,
                    &user,
                    &receiver,
                    &row.message_type.as_str(),
                    &row.content,
                    &first.map(|f| &f.file_name),
                    &first.map(|f| &f.file_path),
                    &first.map(|f| f.file_size as i64),
                    &first.map(|f| &f.mime_type),
                    &files_json,
                    &row.duration,
                    &now_ms(),
                    &origin.message_id,
                    &origin.sender_name,
                ],
            )
            .await?
            .get(0);
        emit(&tx, Some(room_id), None, "new_message", serde_json::json!({"message_id": copy_id})).await?;
        // A file without a row has one user; the first copy makes it two.
        for file in row.files.iter().flatten() {
            tx.exec(
                "INSERT INTO file_refs (file_path, refs) VALUES ($1, 2)
                 ON CONFLICT (file_path) DO UPDATE SET refs = file_refs.refs + 1",
                &[&file.file_path],
            )
            .await?;
        }
        let stored = reads::message_row(&tx, user, copy_id).await?.ok_or(StoreError::NotFound("Message not found"))?;
        copies.push(reads::message_of(&tx, stored).await?);
    }
    tx.commit().await?;
    Ok(copies)
}

/// Sets `thumbnail_path` on the message's files that have one now and tells
/// the room with `message_update` (rendered by the tail from the stored
/// message); `false` when the message is gone, deleted or already had them.
pub async fn set_thumbnails(
    pg: &Pg,
    message_id: MessageId,
    thumbnails: Vec<(String, String)>,
) -> Result<bool, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let Some(room) = tx.row_opt("SELECT room_id FROM chat_messages WHERE id = $1", &[&message_id]).await? else {
        return Ok(false);
    };
    let room_id: RoomId = room.get(0);
    // Under the room's lock a delete or another thumbnail update cannot
    // slip between the read and the write of `files_data`.
    lock_room(&tx, room_id).await?;
    let stored =
        tx.row_opt("SELECT files_data FROM chat_messages WHERE id = $1 AND NOT is_deleted", &[&message_id]).await?;
    let Some(Some(json)) = stored.map(|r| r.get::<_, Option<String>>(0)) else { return Ok(false) };
    let mut files: Vec<FileMeta> =
        serde_json::from_str(&json).map_err(|_| StoreError::Invalid("files_data cannot be read"))?;
    let mut changed = false;
    for file in &mut files {
        if let Some((_, thumb)) = thumbnails.iter().find(|(path, _)| *path == file.file_path)
            && file.thumbnail_path.as_ref() != Some(thumb)
        {
            file.thumbnail_path = Some(thumb.clone());
            changed = true;
        }
    }
    if !changed {
        return Ok(false);
    }
    let json = serde_json::to_string(&files).map_err(|_| StoreError::Invalid("files_data cannot be stored"))?;
    tx.exec("UPDATE chat_messages SET files_data = $1 WHERE id = $2", &[&json, &message_id]).await?;
    // As the embedded writer: a room nobody is left in keeps the thumbnails
    // but hears of no update.
    let active: bool = tx.row("SELECT is_active FROM chat_rooms WHERE id = $1", &[&room_id]).await?.get(0);
    if active {
        emit(&tx, Some(room_id), None, "message_update", serde_json::json!({"message_id": message_id})).await?;
    }
    tx.commit().await?;
    Ok(active)
}

/// `message_reaction` rebuilt from a stored event: the change it recorded
/// and the message's reactions now (a replay shows the current state).
pub async fn event_of(c: &impl Sql, stored: &StoredEvent) -> Result<Option<Event>, StoreError> {
    let id = |key: &str| stored.data.get(key).and_then(serde_json::Value::as_i64).unwrap_or(0);
    let room_id = stored.room_id.unwrap_or_else(|| id("room_id"));
    let message = id("message_id");
    let emoji = stored.data.get("emoji").and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
    let added = stored.data.get("added").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let reactions = reactions(c, message).await?;
    Ok(Some(Event::MessageReaction { id: message, room_id, user_id: id("user_id"), emoji, added, reactions }))
}
