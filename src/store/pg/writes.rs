//! The writer's commands on PostgreSQL. The embedded writer runs commands
//! one batch at a time on one connection; here each command is its own
//! transaction on a pooled connection, and commands run side by side (the
//! database orders them). What must stay ordered is ordered by locks: the
//! commands that change a room take its advisory lock first, so a room's
//! message ids, event positions and commits all come in one order; one
//! user's presence changes are applied by one task, in the order the hub
//! reported them.

use std::sync::Arc;

use deadpool_postgres::Transaction;
use tokio::sync::{mpsc, oneshot};

use super::{Pg, Sql, is_unique_violation, reads};
use crate::model::{Envelope, Event, Message, MessageId, MessageType, Revocation, RoomId, User, UserId};
use crate::store::StoreError;
use crate::store::writer::{
    Command, EventSink, LikeState, NewMessage, NewUser, Revoke, SendOutcome, WriterHandle, WriterOptions,
};
use crate::time::now_ms;

/// Starts the executor: commands from the handle run on `pg`, in `lanes`
/// lanes (see `run`). `sink` hears of what is not stored
/// (presence, revoked tokens) and `poke` of every commit that stored an
/// event (the tail then looks at once).
pub fn spawn(
    pg: Arc<Pg>,
    sink: Box<dyn EventSink>,
    options: WriterOptions,
    poke: Arc<dyn Fn() + Send + Sync>,
    lanes: usize,
    thumbnails: Option<crate::thumbnails::Queue>,
) -> WriterHandle {
    let (tx, rx) = mpsc::channel(crate::store::writer::QUEUE);
    let sink = Arc::new(std::sync::Mutex::new(sink));
    let context = Arc::new(Context { pg, sink, options, poke, thumbnails });
    tokio::spawn(run(rx, context, lanes.max(1)));
    WriterHandle::from_sender(tx)
}

struct Context {
    pg: Arc<Pg>,
    sink: Arc<std::sync::Mutex<Box<dyn EventSink>>>,
    options: WriterOptions,
    poke: Arc<dyn Fn() + Send + Sync>,
    /// Images of messages this node stored get their thumbnails here.
    thumbnails: Option<crate::thumbnails::Queue>,
}

impl Context {
    /// Rings the tail's doorbell when a command stored events.
    fn poke_if(&self, stored: bool) {
        if stored {
            (self.poke)();
        }
    }

    fn publish(&self, envelope: Envelope) {
        if let Ok(mut sink) = self.sink.lock() {
            sink.publish(envelope);
        }
    }
}

/// Commands a lane may hold before the dispatcher waits for it.
const LANE_QUEUE: usize = 256;

/// Dispatches commands to `lanes` lanes by the user who made them: one
/// user's commands run one after another, in the order they came (a
/// client's messages are stored in the order it sent them, as the single
/// embedded writer stores them); different users' commands run side by side.
async fn run(mut rx: mpsc::Receiver<Command>, cx: Arc<Context>, lanes: usize) {
    let tasks = tokio_util::task::TaskTracker::new();
    let (presence_tx, presence_rx) = mpsc::unbounded_channel();
    tasks.spawn(presence_task(presence_rx, cx.clone()));
    let lanes: Vec<mpsc::Sender<Lane>> = (0..lanes)
        .map(|_| {
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            tasks.spawn(lane(rx, cx.clone()));
            tx
        })
        .collect();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Presence { user, online } => {
                let _ = presence_tx.send((user, online));
            }
            Command::Barrier(reply) => {
                // Everything dispatched before it has finished.
                let mut done = Vec::with_capacity(lanes.len());
                for lane in &lanes {
                    let (tx, rx) = oneshot::channel();
                    if lane.send(Lane::Barrier(tx)).await.is_ok() {
                        done.push(rx);
                    }
                }
                for rx in done {
                    let _ = rx.await;
                }
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown(done) => {
                drop(presence_tx);
                drop(lanes);
                tasks.close();
                tasks.wait().await;
                let _ = done.send(());
                return;
            }
            cmd => {
                let index = (author(&cmd).unsigned_abs() as usize) % lanes.len();
                if lanes[index].send(Lane::Run(cmd)).await.is_err() {
                    return;
                }
            }
        }
    }
}

enum Lane {
    Run(Command),
    Barrier(oneshot::Sender<()>),
}

async fn lane(mut rx: mpsc::Receiver<Lane>, cx: Arc<Context>) {
    while let Some(item) = rx.recv().await {
        match item {
            Lane::Run(cmd) => {
                let started = std::time::Instant::now();
                execute(&cx, cmd).await;
                // One command, one transaction: the writer metrics count them.
                if let Ok(mut sink) = cx.sink.lock() {
                    sink.batch_committed(1, started.elapsed().as_secs_f64());
                }
            }
            Lane::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// The user a command comes from (its lane); 0 for the server's own.
fn author(cmd: &Command) -> UserId {
    match cmd {
        Command::CreateRoom { creator, .. } => *creator,
        Command::Send(message, _) => message.sender,
        Command::Schedule { message, .. } => message.sender,
        Command::Edit { user, .. }
        | Command::Delete { user, .. }
        | Command::Like { user, .. }
        | Command::React { user, .. }
        | Command::Forward { user, .. }
        | Command::MarkRead { user, .. }
        | Command::ChangePassword { user, .. }
        | Command::RevokeToken { user, .. }
        | Command::RenameRoom { user, .. }
        | Command::AddMembers { user, .. }
        | Command::RemoveMember { user, .. }
        | Command::SetRole { user, .. }
        | Command::CancelScheduled { user, .. } => *user,
        Command::CreateGroup(group, _) => group.creator,
        Command::CreateUpload(upload, _) => upload.user,
        _ => 0,
    }
}

fn answer<T>(reply: oneshot::Sender<Result<T, StoreError>>, result: Result<T, StoreError>) {
    let _ = reply.send(result);
}

async fn execute(cx: &Context, cmd: Command) {
    let pg = &cx.pg;
    match cmd {
        Command::Register(user, reply) => answer(reply, register(pg, user).await),
        Command::CreateRoom { creator, other, reply } => {
            let result = create_room(pg, creator, other).await;
            if matches!(result, Ok((_, true))) {
                (cx.poke)();
            }
            answer(reply, result);
        }
        Command::Send(message, reply) => {
            let files = message.files.clone();
            let result = send_message(pg, &cx.options, *message).await;
            if let Ok(SendOutcome::Stored(id)) = &result {
                (cx.poke)();
                if let Some(queue) = &cx.thumbnails {
                    queue.offer_files(*id, files.iter().flatten());
                }
            }
            answer(reply, result);
        }
        Command::Edit { user, id, content, reply } => {
            let result = edit(pg, user, id, content).await;
            if result.is_ok() {
                (cx.poke)();
            }
            answer(reply, result);
        }
        Command::Delete { user, id, reply } => {
            let result = delete(pg, user, id).await;
            if result.is_ok() {
                (cx.poke)();
            }
            answer(reply, result);
        }
        Command::Like { user, id, like, reply } => {
            let result = like_message(pg, user, id, like).await;
            if result.is_ok() {
                (cx.poke)();
            }
            answer(reply, result);
        }
        Command::MarkRead { user, room_id, reply } => {
            let result = mark_read(pg, user, room_id).await;
            if result.is_ok() {
                (cx.poke)();
            }
            answer(reply, result);
        }
        Command::ChangePassword { user, password_hash, reply } => {
            let result = change_password(pg, user, password_hash).await;
            if let Ok(version) = result {
                cx.publish(Envelope::new(vec![user], Event::TokensRevoked(Revocation::Below(version))));
            }
            answer(reply, result);
        }
        Command::RevokeToken { user, revoke, reply } => {
            let result = revoke_token(pg, user, revoke).await;
            if let Ok((version, revocation)) = &result {
                let revocation = match revocation {
                    Some(token) => Revocation::Token(token.as_str().into()),
                    None => Revocation::Below(*version),
                };
                cx.publish(Envelope::new(vec![user], Event::TokensRevoked(revocation)));
            }
            answer(reply, result.map(|(version, _)| version));
        }
        Command::CreateGroup(group, reply) => {
            let result = super::groups::create_group(pg, &cx.options, group).await;
            cx.poke_if(result.is_ok());
            answer(reply, result);
        }
        Command::RenameRoom { user, room_id, name, reply } => {
            let result = super::groups::rename_room(pg, user, room_id, name).await;
            cx.poke_if(result.is_ok());
            answer(reply, result);
        }
        Command::AddMembers { user, room_id, user_ids, reply } => {
            let result = super::groups::add_members(pg, &cx.options, user, room_id, user_ids).await;
            cx.poke_if(result.is_ok());
            answer(reply, result);
        }
        Command::RemoveMember { user, room_id, target, reply } => {
            let result = super::groups::remove_member(pg, user, room_id, target).await;
            cx.poke_if(result.is_ok());
            answer(reply, result);
        }
        Command::SetRole { user, room_id, target, admin, reply } => {
            let result = super::groups::set_role(pg, user, room_id, target, admin).await;
            cx.poke_if(result.is_ok());
            answer(reply, result);
        }
        Command::React { user, id, emoji, add, reply } => {
            let result = super::extras::react(pg, user, id, emoji, add).await;
            cx.poke_if(result.is_ok());
            answer(reply, result);
        }
        Command::Forward { user, id, room_ids, reply } => {
            let result = super::extras::forward(pg, &cx.options, user, id, room_ids).await;
            cx.poke_if(result.is_ok());
            answer(reply, result);
        }
        Command::SetThumbnails { message_id, thumbnails, reply } => {
            let result = super::extras::set_thumbnails(pg, message_id, thumbnails).await;
            cx.poke_if(matches!(result, Ok(true)));
            answer(reply, result);
        }
        Command::Schedule { message, send_at, reply } => {
            let result = super::later::schedule(pg, &cx.options, *message, send_at).await;
            cx.poke_if(result.is_ok());
            answer(reply, result);
        }
        Command::CancelScheduled { user, id, reply } => {
            answer(reply, super::later::cancel_scheduled(pg, user, id).await);
        }
        Command::DeliverDue { now, reply } => {
            let result = super::later::deliver_due(pg, &cx.options, now).await;
            cx.poke_if(matches!(&result, Ok(due) if due.delivered > 0));
            answer(reply, result);
        }
        Command::CreateUpload(upload, reply) => {
            answer(reply, super::later::create_upload(pg, &cx.options, upload).await)
        }
        Command::FinishUpload { id, passed, reply } => answer(reply, super::later::finish_upload(pg, id, passed).await),
        Command::ExpireUploads { now, reply } => answer(reply, super::later::expire_uploads(pg, now).await),
        Command::PruneEvents { before_ms, reply } => answer(reply, super::later::prune_events(pg, before_ms).await),
        Command::ExpireMessages { before_ms, reply } => {
            answer(reply, super::later::expire_messages(pg, before_ms).await)
        }
        // Handled by `run`.
        Command::Presence { .. } | Command::Barrier(_) | Command::Shutdown(_) => {}
    }
}

const LOCK_ROOM: &str = "SELECT pg_advisory_xact_lock($1)";

/// Serialises a room's changes across every node until the commit.
pub(super) async fn lock_room(tx: &Transaction<'_>, room_id: RoomId) -> Result<(), StoreError> {
    tx.exec(LOCK_ROOM, &[&room_id]).await?;
    Ok(())
}

/// Stores an event row and answers its position. The transaction's id is
/// taken (in the materialised CTE) before the position: the order the
/// safe horizon relies on (see `stream`).
pub(super) async fn emit(
    tx: &Transaction<'_>,
    room_id: Option<RoomId>,
    user_id: Option<UserId>,
    kind: &str,
    data: serde_json::Value,
) -> Result<i64, StoreError> {
    let row = tx
        .row(
            "WITH x AS MATERIALIZED (SELECT pg_current_xact_id() AS xid)
             INSERT INTO events (xid, room_id, user_id, kind, data, created_at)
             SELECT x.xid, $1, $2, $3, $4, $5 FROM x RETURNING position",
            &[&room_id, &user_id, &kind, &data.to_string(), &now_ms()],
        )
        .await?;
    Ok(row.get(0))
}

async fn register(pg: &Pg, user: NewUser) -> Result<User, StoreError> {
    let client = pg.client().await?;
    let inserted = client
        .row(
            "INSERT INTO users (name, email, password_hash, avatar_url, created_at) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
            &[&user.name, &user.email, &user.password_hash, &user.avatar_url, &now_ms()],
        )
        .await;
    let id: UserId = match inserted {
        Ok(row) => row.get(0),
        Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict("Email already registered")),
        Err(e) => return Err(e.into()),
    };
    Ok(User { id, name: user.name, email: user.email, avatar_url: user.avatar_url, is_online: false })
}

async fn create_room(pg: &Pg, creator: UserId, other: UserId) -> Result<(RoomId, bool), StoreError> {
    if creator == other {
        return Err(StoreError::Invalid("Cannot create a room with yourself"));
    }
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    if reads::user_by_id(&tx, other).await?.is_none() {
        return Err(StoreError::NotFound("User not found"));
    }
    let (low, high) = (creator.min(other), creator.max(other));
    let key = format!("{low}:{high}");
    let now = now_ms();
    // Two nodes creating the same room meet at the unique key: the second
    // waits for the first's commit, then finds its room.
    let inserted = tx
        .row_opt(
            "INSERT INTO chat_rooms (room_type, created_by, created_at, updated_at, direct_key)
             VALUES ('direct', $1, $2, $2, $3) ON CONFLICT (direct_key) DO NOTHING RETURNING id",
            &[&creator, &now, &key],
        )
        .await?;
    let Some(row) = inserted else {
        let id: RoomId = tx.row("SELECT id FROM chat_rooms WHERE direct_key = $1", &[&key]).await?.get(0);
        return Ok((id, false));
    };
    let room_id: RoomId = row.get(0);
    lock_room(&tx, room_id).await?;
    for user in [low, high] {
        tx.exec(
            "INSERT INTO chat_participants (room_id, user_id, joined_at) VALUES ($1, $2, $3)",
            &[&room_id, &user, &now],
        )
        .await?;
    }
    let position = emit(&tx, Some(room_id), None, "room_created", serde_json::json!({})).await?;
    tx.exec("UPDATE chat_participants SET joined_event_id = $1 WHERE room_id = $2", &[&position, &room_id]).await?;
    tx.commit().await?;
    Ok((room_id, true))
}

/// An active room's type and members (ordered as `member_ids` orders them).
const ROOM_AND_MEMBERS: &str = "SELECT room_type, ARRAY(SELECT user_id FROM chat_participants WHERE room_id = $1
                                    ORDER BY user_id)
                                FROM chat_rooms WHERE id = $1 AND is_active";

/// The room's members if `user` is one of them (and the room is active),
/// and whether it is a group.
pub(super) async fn room_of_member(
    tx: &Transaction<'_>,
    room_id: RoomId,
    user: UserId,
) -> Result<Option<(Vec<UserId>, bool)>, StoreError> {
    Ok(tx.row_opt(ROOM_AND_MEMBERS, &[&room_id]).await?.and_then(|room| with_member(&room, user)))
}

/// `lock_room`, then `room_of_member`, in one round trip: both statements
/// are prepared first, so the two executions go out together, lock first
/// (tokio-postgres sends a request when its future is first polled, and a
/// `biased` join polls in order), and the database runs them in that
/// order: the room is read with the lock held, in a snapshot taken after
/// it was granted.
pub(super) async fn lock_room_of_member(
    tx: &Transaction<'_>,
    room_id: RoomId,
    user: UserId,
) -> Result<Option<(Vec<UserId>, bool)>, StoreError> {
    let lock = tx.prepare_cached(LOCK_ROOM).await?;
    let read = tx.prepare_cached(ROOM_AND_MEMBERS).await?;
    let room_param: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&room_id];
    let (_, room) = tokio::try_join!(biased; tx.execute(&lock, &room_param), tx.query_opt(&read, &room_param))?;
    Ok(room.and_then(|room| with_member(&room, user)))
}

/// A `ROOM_AND_MEMBERS` row's members and whether it is a group, if `user`
/// is a member.
fn with_member(room: &tokio_postgres::Row, user: UserId) -> Option<(Vec<UserId>, bool)> {
    let members: Vec<UserId> = room.get(1);
    members.contains(&user).then(|| (members, room.get::<_, String>(0) == crate::model::GROUP))
}

async fn send_message(pg: &Pg, options: &WriterOptions, m: NewMessage) -> Result<SendOutcome, StoreError> {
    refuse_nul(&m.content)?;
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let Some((members, group)) = lock_room_of_member(&tx, m.room_id, m.sender).await? else {
        return Err(StoreError::NotFound("Room not found"));
    };
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
    // A temp id this sender used before (on any node) meets the unique
    // index: nothing is inserted and the original is answered.
    let inserted = insert_message(&tx, &m, receiver).await?;
    let Some(id) = inserted else {
        let temp_id = m.local_temp_id.as_deref().unwrap_or_default();
        let row = reads::message_by_temp_id(&tx, m.sender, temp_id)
            .await?
            .ok_or(StoreError::Conflict("Duplicate message"))?;
        return Ok(SendOutcome::Duplicate(Box::new(reads::message_of(&tx, row).await?.0)));
    };
    for upload in &m.uploads {
        let used =
            tx.exec("DELETE FROM uploads WHERE id = $1 AND user_id = $2 AND complete", &[upload, &m.sender]).await?;
        if used == 0 {
            return Err(StoreError::Invalid("upload_id is unknown, unfinished or already used"));
        }
    }
    if let Some(files) = m.files.as_ref().filter(|_| !m.files_counted) {
        let bytes: u64 = files.iter().map(|f| f.file_size).sum();
        let used: i64 = tx
            .row(
                "UPDATE users SET storage_bytes = storage_bytes + $1 WHERE id = $2 RETURNING storage_bytes",
                &[&(bytes as i64), &m.sender],
            )
            .await?
            .get(0);
        if let Some(quota) = options.user_quota_bytes.filter(|quota| used.max(0) as u64 > *quota) {
            return Err(StoreError::QuotaExceeded(quota));
        }
    }
    tx.commit().await?;
    Ok(SendOutcome::Stored(id))
}

/// The files of a message as stored (`files_data`).
pub(super) fn files_json(files: &Option<Vec<crate::model::FileMeta>>) -> Result<Option<String>, StoreError> {
    match files {
        Some(files) => {
            Ok(Some(serde_json::to_string(files).map_err(|_| StoreError::Invalid("files_data cannot be stored"))?))
        }
        None => Ok(None),
    }
}

/// Inserts a message (the seed's single-file columns from its first file)
/// and its `new_message` event, in one statement (one round trip); `None`
/// when the sender used its temp id before: nothing inserted. As in `emit`,
/// the transaction's id is taken before the event's position: the event
/// row is made from the inserted message's row, by then written.
pub(super) async fn insert_message(
    tx: &Transaction<'_>,
    m: &NewMessage,
    receiver: Option<UserId>,
) -> Result<Option<MessageId>, StoreError> {
    let files_json = files_json(&m.files)?;
    let first = m.files.as_ref().and_then(|f| f.first());
    let inserted = tx
        .row_opt(
            "WITH m AS (
                 INSERT INTO chat_messages (room_id, sender_id, receiver_id, message_type, content, file_name,
                     file_path, file_size, mime_type, files_data, duration, local_temp_id, created_at, reply_to_id,
                     forwarded_from_id, forwarded_from_name)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 ON CONFLICT DO NOTHING RETURNING id, room_id, created_at),
             x AS MATERIALIZED (SELECT pg_current_xact_id() AS xid),
             e AS (
                 INSERT INTO events (xid, room_id, kind, data, created_at)
                 SELECT x.xid, m.room_id, 'new_message', '{\"message_id\":' || m.id || '}', m.created_at FROM m, x)
             SELECT id FROM m",
            &[
                &m.room_id,
                &m.sender,
                &receiver,
                &m.message_type.as_str(),
                &m.content,
                &first.map(|f| &f.file_name),
                &first.map(|f| &f.file_path),
                &first.map(|f| f.file_size as i64),
                &first.map(|f| &f.mime_type),
                &files_json,
                &m.duration,
                &m.local_temp_id,
                &now_ms(),
                &m.reply_to_id,
                &m.forwarded_from.as_ref().map(|f| f.message_id),
                &m.forwarded_from.as_ref().map(|f| &f.sender_name),
            ],
        )
        .await?;
    Ok(inserted.map(|row| row.get(0)))
}

/// PostgreSQL's text cannot hold U+0000 (the embedded store can): such a
/// message is refused as bad input (400) rather than failing in the database.
pub(super) fn refuse_nul(content: &str) -> Result<(), StoreError> {
    match content.contains('\0') {
        true => Err(StoreError::Invalid("content cannot contain a NUL character on this server")),
        false => Ok(()),
    }
}

/// The message (locked until the commit) and its room, if `user` is in it.
pub(super) async fn visible_message(
    tx: &Transaction<'_>,
    user: UserId,
    id: MessageId,
) -> Result<crate::store::reads::MessageRow, StoreError> {
    let room: RoomId = tx
        .row_opt("SELECT room_id FROM chat_messages WHERE id = $1", &[&id])
        .await?
        .ok_or(StoreError::NotFound("Message not found"))?
        .get(0);
    lock_room(tx, room).await?;
    if room_of_member(tx, room, user).await?.is_none() {
        return Err(StoreError::NotFound("Message not found"));
    }
    reads::message_row(tx, user, id).await?.ok_or(StoreError::NotFound("Message not found"))
}

async fn edit(pg: &Pg, user: UserId, id: MessageId, content: String) -> Result<(Message, bool), StoreError> {
    refuse_nul(&content)?;
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let row = visible_message(&tx, user, id).await?;
    if row.sender_id != user {
        return Err(StoreError::Forbidden("Only the sender can edit this message"));
    }
    if row.is_deleted {
        return Err(StoreError::Invalid("Cannot edit a deleted message"));
    }
    if row.message_type != MessageType::Text {
        return Err(StoreError::Invalid("Only text messages can be edited"));
    }
    let now = now_ms();
    tx.exec("UPDATE chat_messages SET content = $1, edited_at = $2 WHERE id = $3", &[&content, &now, &id]).await?;
    let room_id = row.room_id;
    let liked = row.liked;
    let (mut message, _) = reads::message_of(&tx, row).await?;
    message.content = content;
    message.edited_at = Some(now);
    message.local_temp_id = None;
    emit(&tx, Some(room_id), None, "message_update", serde_json::json!({"message_id": id})).await?;
    tx.commit().await?;
    Ok((message, liked))
}

async fn delete(pg: &Pg, user: UserId, id: MessageId) -> Result<(Message, bool, Vec<String>), StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let row = visible_message(&tx, user, id).await?;
    if row.sender_id != user {
        return Err(StoreError::Forbidden("Only the sender can delete this message"));
    }
    let (liked, room_id, already) = (row.liked, row.room_id, row.is_deleted);
    let files: Vec<String> = row.files.iter().flatten().map(|f| f.file_path.clone()).collect();
    let bytes: u64 =
        if row.forwarded_from.is_some() { 0 } else { row.files.iter().flatten().map(|f| f.file_size).sum() };
    let (mut message, _) = reads::message_of(&tx, row).await?;
    let mut unused = Vec::new();
    if !already {
        if bytes > 0 {
            tx.exec(
                "UPDATE users SET storage_bytes = GREATEST(storage_bytes - $1, 0) WHERE id = $2",
                &[&(bytes as i64), &user],
            )
            .await?;
        }
        tx.exec(
            "UPDATE chat_messages SET content = '', files_data = NULL, file_name = NULL, file_path = NULL,
                 file_size = NULL, mime_type = NULL, duration = NULL, is_deleted = true WHERE id = $1",
            &[&id],
        )
        .await?;
        emit(&tx, Some(room_id), None, "message_delete", serde_json::json!({"message_id": id})).await?;
        for path in files {
            let left = tx
                .row_opt("UPDATE file_refs SET refs = refs - 1 WHERE file_path = $1 RETURNING refs", &[&path])
                .await?;
            match left.map(|r| r.get::<_, i64>(0)) {
                Some(left) if left <= 1 => {
                    tx.exec("DELETE FROM file_refs WHERE file_path = $1", &[&path]).await?;
                }
                Some(_) => {}
                None => unused.push(path),
            }
        }
    }
    tx.commit().await?;
    message.content.clear();
    message.files = None;
    message.duration = None;
    message.is_deleted = true;
    message.local_temp_id = None;
    Ok((message, liked, unused))
}

async fn like_message(pg: &Pg, user: UserId, id: MessageId, like: bool) -> Result<LikeState, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let row = visible_message(&tx, user, id).await?;
    if like && row.is_deleted {
        return Err(StoreError::Invalid("Cannot like a deleted message"));
    }
    let changed = if like {
        tx.exec(
            "INSERT INTO message_likes (message_id, user_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&id, &user, &now_ms()],
        )
        .await?
    } else {
        tx.exec("DELETE FROM message_likes WHERE message_id = $1 AND user_id = $2", &[&id, &user]).await?
    };
    let mut like_count = row.like_count;
    if changed > 0 {
        let delta: i64 = if like { 1 } else { -1 };
        like_count = tx
            .row(
                "UPDATE chat_messages SET like_count = like_count + $1 WHERE id = $2 RETURNING like_count",
                &[&delta, &id],
            )
            .await?
            .get(0);
        emit(&tx, Some(row.room_id), None, "message_like", serde_json::json!({"message_id": id, "user_id": user}))
            .await?;
    }
    tx.commit().await?;
    Ok(LikeState { id, is_liked: like, like_count })
}

async fn mark_read(pg: &Pg, user: UserId, room_id: RoomId) -> Result<i64, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    lock_room(&tx, room_id).await?;
    if room_of_member(&tx, room_id, user).await?.is_none() {
        return Err(StoreError::NotFound("Room not found"));
    }
    let row = tx
        .row(
            "SELECT cp.last_read_id, (SELECT COALESCE(MAX(id), 0) FROM chat_messages WHERE room_id = $1)
             FROM chat_participants cp WHERE cp.room_id = $1 AND cp.user_id = $2",
            &[&room_id, &user],
        )
        .await?;
    let (last_read, newest): (i64, i64) = (row.get(0), row.get(1));
    let marked: i64 = tx
        .row(
            "SELECT count(*) FROM chat_messages WHERE room_id = $1 AND id > $2 AND id <= $3
                 AND sender_id != $4 AND NOT is_deleted",
            &[&room_id, &last_read, &newest, &user],
        )
        .await?
        .get(0);
    let last_read_id = newest.max(last_read);
    tx.exec(
        "UPDATE chat_participants SET last_read_at = $1, last_read_id = $2 WHERE room_id = $3 AND user_id = $4",
        &[&now_ms(), &last_read_id, &room_id, &user],
    )
    .await?;
    // SPEC: a read always tells the room, also when nothing was unread.
    let data = serde_json::json!({"user_id": user, "last_read_id": last_read_id});
    emit(&tx, Some(room_id), None, "message_read", data).await?;
    tx.commit().await?;
    Ok(marked)
}

async fn change_password(pg: &Pg, user: UserId, password_hash: String) -> Result<u32, StoreError> {
    let client = pg.client().await?;
    let row = client
        .row_opt(
            "UPDATE users SET password_hash = $1, token_version = token_version + 1 WHERE id = $2
             RETURNING token_version",
            &[&password_hash, &user],
        )
        .await?
        .ok_or(StoreError::NotFound("User not found"))?;
    Ok(row.get::<_, i32>(0).max(0) as u32)
}

/// Ends one token (answers its id) or all of a user's; and the version.
async fn revoke_token(pg: &Pg, user: UserId, revoke: Revoke) -> Result<(u32, Option<String>), StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let (version, token) = match revoke {
        Revoke::Token { id, expires_at } => {
            let now = crate::auth::jwt::unix_now() as i64;
            tx.exec("DELETE FROM revoked_tokens WHERE expires_at <= $1", &[&now]).await?;
            tx.exec(
                "INSERT INTO revoked_tokens (token_id, user_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&id, &user, &(expires_at as i64)],
            )
            .await?;
            (reads::token_version(&tx, user).await?.ok_or(StoreError::NotFound("User not found"))?, Some(id))
        }
        Revoke::All => {
            let row = tx
                .row_opt(
                    "UPDATE users SET token_version = token_version + 1 WHERE id = $1 RETURNING token_version",
                    &[&user],
                )
                .await?
                .ok_or(StoreError::NotFound("User not found"))?;
            (row.get::<_, i32>(0).max(0) as u32, None)
        }
    };
    tx.commit().await?;
    Ok((version, token))
}

/// Applies presence changes one after another (a user's `online` must not
/// overtake the `offline` before it), each in its own transaction.
async fn presence_task(mut rx: mpsc::UnboundedReceiver<(UserId, bool)>, cx: Arc<Context>) {
    while let Some((user, online)) = rx.recv().await {
        match presence(&cx.pg, user, online).await {
            Ok(Some(envelope)) => cx.publish(envelope),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, user, "presence not stored"),
        }
    }
}

/// Records that this node holds (or no longer holds) a connection of
/// `user`; when that changes whether the user is online anywhere, stores
/// it and answers the event for the user's contacts.
pub async fn presence(pg: &Pg, user: UserId, online: bool) -> Result<Option<Envelope>, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    // One user's presence changes one at a time, whichever nodes report them.
    let Some(me) = tx.row_opt("SELECT name FROM users WHERE id = $1 FOR NO KEY UPDATE", &[&user]).await? else {
        return Ok(None);
    };
    if online {
        tx.exec(
            "INSERT INTO presence_sessions (node_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&pg.node_id(), &user],
        )
        .await?;
    } else {
        tx.exec("DELETE FROM presence_sessions WHERE node_id = $1 AND user_id = $2", &[&pg.node_id(), &user]).await?;
    }
    let envelope = settle_presence(&tx, user, me.get(0)).await?;
    tx.commit().await?;
    Ok(envelope)
}

/// Stores whether `user` has a session on any node; the event, if that changed.
pub async fn settle_presence(
    tx: &Transaction<'_>,
    user: UserId,
    user_name: String,
) -> Result<Option<Envelope>, StoreError> {
    let online: bool =
        tx.row("SELECT EXISTS (SELECT 1 FROM presence_sessions WHERE user_id = $1)", &[&user]).await?.get(0);
    let was = tx.row_opt("SELECT is_online FROM user_presence WHERE user_id = $1", &[&user]).await?;
    tx.exec(
        "INSERT INTO user_presence (user_id, is_online, last_seen) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET is_online = excluded.is_online, last_seen = excluded.last_seen",
        &[&user, &online, &now_ms()],
    )
    .await?;
    let was = was.map(|r| r.get::<_, bool>(0));
    if was == Some(online) || (was.is_none() && !online) {
        return Ok(None);
    }
    let contacts = reads::contacts(tx, user).await?;
    if contacts.is_empty() {
        return Ok(None);
    }
    Ok(Some(Envelope::new(contacts, Event::Presence { user_id: user, user_name, is_online: online })))
}

/// One heartbeat of this node (and the sweep of nodes silent for
/// `node_timeout`): answers the presence events of users whose last node died.
pub async fn beat(pg: &Pg, node_timeout: std::time::Duration) -> Result<Vec<Envelope>, StoreError> {
    let now = crate::time::now_ms();
    let cutoff = now - node_timeout.as_millis() as i64;
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    tx.exec(
        "INSERT INTO cluster_nodes (node_id, seen_at) VALUES ($1, $2)
         ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at",
        &[&pg.node_id(), &now],
    )
    .await?;
    // SKIP LOCKED: two nodes sweeping at once share the work.
    let dead: Vec<String> = tx
        .rows("SELECT node_id FROM cluster_nodes WHERE seen_at < $1 FOR UPDATE SKIP LOCKED", &[&cutoff])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut envelopes = Vec::new();
    if !dead.is_empty() {
        let users: Vec<(UserId, String)> = tx
            .rows(
                "SELECT DISTINCT s.user_id, u.name FROM presence_sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.node_id = ANY($1)",
                &[&dead],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        tx.exec("DELETE FROM cluster_nodes WHERE node_id = ANY($1)", &[&dead]).await?;
        for (user, name) in users {
            tx.row_opt("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", &[&user]).await?;
            envelopes.extend(settle_presence(&tx, user, name).await?);
        }
        tracing::info!(nodes = dead.len(), "removed nodes whose heartbeat stopped");
    }
    tx.commit().await?;
    Ok(envelopes)
}
