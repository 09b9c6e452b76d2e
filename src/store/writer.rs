//! The writer: one thread owns the only write connection. Requests arrive as
//! commands on a bounded channel; the writer drains what is queued, runs the
//! batch in one `BEGIN IMMEDIATE` transaction with a savepoint per command,
//! commits once (group commit: one fsync for many messages), then answers each
//! command and hands the resulting events to the sink in commit order.
//! That order is what makes "the echo means committed" and per-room ordering
//! true without locks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::reads::{self, MessageRow};
use crate::model::{Envelope, Event, FileMeta, Message, MessageId, MessageType, Revocation, RoomId, User, UserId};
use crate::time::now_ms;

/// Where committed events go: the hub in the server, nothing in subcommands.
pub trait EventSink: Send + 'static {
    fn publish(&mut self, envelope: Envelope);
    /// Called once per committed batch with its size and commit time.
    fn batch_committed(&mut self, _commands: usize, _commit_seconds: f64) {}
}

/// A sink that drops events (subcommands, store tests).
pub struct NullSink;

impl EventSink for NullSink {
    fn publish(&mut self, _envelope: Envelope) {}
}

pub struct NewUser {
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub avatar_url: Option<String>,
}

pub struct NewMessage {
    pub sender: UserId,
    pub room_id: RoomId,
    pub receiver_id: Option<UserId>,
    pub message_type: MessageType,
    pub content: String,
    pub local_temp_id: Option<String>,
    pub files: Option<Vec<FileMeta>>,
    pub duration: Option<f64>,
}

#[derive(Debug)]
pub enum SendOutcome {
    /// Stored now; the hub delivers the echo.
    Stored(MessageId),
    /// The sender used this `local_temp_id` before: the original message.
    Duplicate(Box<Message>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LikeState {
    pub id: MessageId,
    pub is_liked: bool,
    pub like_count: i64,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Which tokens a logout ends.
#[derive(Debug, Clone)]
pub enum Revoke {
    /// One token, by its id, until it expires (Unix seconds).
    Token { id: String, expires_at: u64 },
    /// Every token of the user (a token without an id can only go this way).
    All,
}

/// What the writer enforces besides the schema.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Most commands committed in one transaction.
    pub batch_max: usize,
    /// Bytes of attachments a user may store, if limited.
    pub user_quota_bytes: Option<u64>,
}

enum Command {
    Register(NewUser, Reply<User>),
    CreateRoom {
        creator: UserId,
        other: UserId,
        reply: Reply<(RoomId, bool)>,
    },
    Send(Box<NewMessage>, Reply<SendOutcome>),
    Edit {
        user: UserId,
        id: MessageId,
        content: String,
        reply: Reply<(Message, bool)>,
    },
    Delete {
        user: UserId,
        id: MessageId,
        reply: Reply<(Message, bool, Vec<String>)>,
    },
    Like {
        user: UserId,
        id: MessageId,
        like: bool,
        reply: Reply<LikeState>,
    },
    MarkRead {
        user: UserId,
        room_id: RoomId,
        reply: Reply<i64>,
    },
    ChangePassword {
        user: UserId,
        password_hash: String,
        reply: Reply<u32>,
    },
    RevokeToken {
        user: UserId,
        revoke: Revoke,
        reply: Reply<u32>,
    },
    Presence {
        user: UserId,
        online: bool,
    },
    /// Answers once everything queued before it is committed and published.
    Barrier(Reply<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The cloneable handle requests use to reach the writer.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Commands that may wait for the writer; senders wait (backpressure) beyond it.
const QUEUE: usize = 8192;

pub fn spawn(conn: Connection, sink: Box<dyn EventSink>, options: WriterOptions) -> Result<WriterHandle, StoreError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut writer = Writer { conn, sink, cache: Cache::default(), batch_max: options.batch_max, options };
    let thread = std::thread::Builder::new()
        .name("chatd-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| StoreError::CommitFailed(format!("cannot start the writer thread: {e}")))?;
    Ok(WriterHandle { tx, thread: Arc::new(Mutex::new(Some(thread))) })
}

impl WriterHandle {
    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }

    pub async fn register(&self, user: NewUser) -> Result<User, StoreError> {
        self.request(|r| Command::Register(user, r)).await
    }

    pub async fn create_room(&self, creator: UserId, other: UserId) -> Result<(RoomId, bool), StoreError> {
        self.request(|reply| Command::CreateRoom { creator, other, reply }).await
    }

    pub async fn send_message(&self, message: NewMessage) -> Result<SendOutcome, StoreError> {
        self.request(|r| Command::Send(Box::new(message), r)).await
    }

    /// Queues a message and returns the receiver of its outcome at once, so a
    /// connection can keep reading while the writer works.
    pub async fn submit_message(
        &self,
        message: NewMessage,
    ) -> Result<oneshot::Receiver<Result<SendOutcome, StoreError>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Send(Box::new(message), reply)).await.map_err(|_| StoreError::Unavailable)?;
        Ok(answer)
    }

    /// The edited message and whether `user` liked it.
    pub async fn edit(&self, user: UserId, id: MessageId, content: String) -> Result<(Message, bool), StoreError> {
        self.request(|reply| Command::Edit { user, id, content, reply }).await
    }

    /// The deleted message, whether `user` liked it, and the files to remove.
    pub async fn delete(&self, user: UserId, id: MessageId) -> Result<(Message, bool, Vec<String>), StoreError> {
        self.request(|reply| Command::Delete { user, id, reply }).await
    }

    pub async fn like(&self, user: UserId, id: MessageId, like: bool) -> Result<LikeState, StoreError> {
        self.request(|reply| Command::Like { user, id, like, reply }).await
    }

    pub async fn mark_read(&self, user: UserId, room_id: RoomId) -> Result<i64, StoreError> {
        self.request(|reply| Command::MarkRead { user, room_id, reply }).await
    }

    /// Stores a new password hash and bumps the token version (every earlier
    /// token stops working); answers the new version.
    pub async fn change_password(&self, user: UserId, password_hash: String) -> Result<u32, StoreError> {
        self.request(|reply| Command::ChangePassword { user, password_hash, reply }).await
    }

    /// Ends one token or all of a user's; answers the user's token version.
    pub async fn revoke_token(&self, user: UserId, revoke: Revoke) -> Result<u32, StoreError> {
        self.request(|reply| Command::RevokeToken { user, revoke, reply }).await
    }

    /// Presence changes come from the hub; they need no answer.
    pub async fn presence(&self, user: UserId, online: bool) -> Result<(), StoreError> {
        self.tx.send(Command::Presence { user, online }).await.map_err(|_| StoreError::Unavailable)
    }

    /// Waits until everything queued before this call is committed and its
    /// events handed to the sink.
    pub async fn barrier(&self) {
        let _ = self.request(Command::Barrier).await;
    }

    /// Finishes queued commands, checkpoints the WAL and stops the thread.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// What the writer remembers between batches. Only the writer changes users,
/// rooms and presence, so its memory of them cannot go stale; it is dropped
/// whenever a commit fails.
#[derive(Default)]
struct Cache {
    users: HashMap<UserId, Arc<User>>,
    rooms: HashMap<RoomId, [UserId; 2]>,
}

struct Writer {
    conn: Connection,
    sink: Box<dyn EventSink>,
    cache: Cache,
    batch_max: usize,
    options: WriterOptions,
}

/// Runs after the commit (or its failure) to answer one command.
type Finish = Box<dyn FnOnce(bool) + Send>;

fn finish<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Finish {
    Box::new(move |committed| {
        let answer = match result {
            Ok(_) if !committed => Err(StoreError::CommitFailed("the transaction was rolled back".into())),
            other => other,
        };
        let _ = reply.send(answer);
    })
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.batch_max);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            if let Some(done) = self.run_batch(&mut batch) {
                let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                let _ = done.send(());
                tracing::info!("writer stopped");
                return;
            }
        }
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    }

    /// Runs and commits one batch; returns the shutdown reply if the batch held one.
    fn run_batch(&mut self, batch: &mut Vec<Command>) -> Option<oneshot::Sender<()>> {
        let started = Instant::now();
        let commands = batch.len();
        let mut finishes: Vec<Finish> = Vec::with_capacity(commands);
        let mut events: Vec<Envelope> = Vec::new();
        let mut shutdown = None;
        let committed = match self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => {
                for cmd in batch.drain(..) {
                    if let Command::Shutdown(reply) = cmd {
                        shutdown = Some(reply);
                        continue;
                    }
                    // A savepoint around each command that writes more than one
                    // statement, so one failing command is rolled back without
                    // sinking the batch. Single-statement commands (a message,
                    // a user) are atomic by themselves and skip it: savepoints
                    // make SQLite copy every touched page to a sub-journal.
                    let guarded = cmd.writes_several_statements();
                    if guarded && let Err(e) = run_cached(&tx, "SAVEPOINT command") {
                        finishes.push(fail(cmd, StoreError::Db(e)));
                        continue;
                    }
                    let mut pending = Vec::new();
                    let (done, ok) = apply(&tx, &mut self.cache, &self.options, cmd, &mut pending);
                    let kept = ok && (!guarded || run_cached(&tx, "RELEASE command").is_ok());
                    if kept {
                        events.append(&mut pending);
                    } else if guarded {
                        let _ = run_cached(&tx, "ROLLBACK TO command");
                        let _ = run_cached(&tx, "RELEASE command");
                    }
                    finishes.push(done);
                }
                match tx.commit() {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "commit failed");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot begin a transaction");
                for cmd in batch.drain(..) {
                    if let Command::Shutdown(reply) = cmd {
                        shutdown = Some(reply);
                    } else {
                        finishes.push(fail(cmd, StoreError::CommitFailed(e.to_string())));
                    }
                }
                false
            }
        };
        if !committed {
            self.cache = Cache::default();
            events.clear();
        }
        self.sink.batch_committed(commands, started.elapsed().as_secs_f64());
        for done in finishes {
            done(committed);
        }
        for envelope in events {
            self.sink.publish(envelope);
        }
        shutdown
    }
}

impl Command {
    /// Whether the command may run more than one writing statement (and so
    /// needs a savepoint to be all or nothing inside the batch). Sending a
    /// text message and registering write one row after read-only checks; a
    /// message with files also counts them against the sender's quota.
    fn writes_several_statements(&self) -> bool {
        match self {
            Command::Send(message, _) => message.files.is_some(),
            Command::Register(..) | Command::Barrier(_) | Command::Shutdown(_) => false,
            _ => true,
        }
    }
}

fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Answers a command that could not run.
fn fail(cmd: Command, error: StoreError) -> Finish {
    match cmd {
        Command::Register(_, r) => finish::<User>(r, Err(error)),
        Command::CreateRoom { reply, .. } => finish(reply, Err(error)),
        Command::Send(_, r) => finish(r, Err(error)),
        Command::Edit { reply, .. } => finish(reply, Err(error)),
        Command::Delete { reply, .. } => finish(reply, Err(error)),
        Command::Like { reply, .. } => finish(reply, Err(error)),
        Command::MarkRead { reply, .. } => finish(reply, Err(error)),
        Command::ChangePassword { reply, .. } => finish(reply, Err(error)),
        Command::RevokeToken { reply, .. } => finish(reply, Err(error)),
        Command::Barrier(reply) => finish(reply, Ok(())),
        Command::Presence { .. } | Command::Shutdown(_) => Box::new(|_| {}),
    }
}

/// Runs one command inside its savepoint. Returns its answer and whether it
/// succeeded (a failed command's savepoint is rolled back).
fn apply(
    tx: &Connection,
    cache: &mut Cache,
    options: &WriterOptions,
    cmd: Command,
    events: &mut Vec<Envelope>,
) -> (Finish, bool) {
    fn done<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> (Finish, bool) {
        let ok = result.is_ok();
        (finish(reply, result), ok)
    }
    match cmd {
        Command::Register(user, r) => done(r, register(tx, cache, user)),
        Command::CreateRoom { creator, other, reply } => done(reply, create_room(tx, cache, creator, other)),
        Command::Send(m, r) => done(r, send_message(tx, cache, options, *m, events)),
        Command::Edit { user, id, content, reply } => done(reply, edit(tx, cache, user, id, content, events)),
        Command::Delete { user, id, reply } => done(reply, delete(tx, cache, user, id, events)),
        Command::Like { user, id, like, reply } => done(reply, like_message(tx, cache, user, id, like, events)),
        Command::MarkRead { user, room_id, reply } => done(reply, mark_read(tx, cache, user, room_id, events)),
        Command::ChangePassword { user, password_hash, reply } => {
            done(reply, change_password(tx, user, password_hash, events))
        }
        Command::RevokeToken { user, revoke, reply } => done(reply, revoke_token(tx, user, revoke, events)),
        Command::Presence { user, online } => match presence(tx, cache, user, online, events) {
            Ok(()) => (Box::new(|_| {}), true),
            Err(e) => {
                tracing::warn!(error = %e, user, "presence not stored");
                (Box::new(|_| {}), false)
            }
        },
        Command::Barrier(reply) => done(reply, Ok(())),
        Command::Shutdown(_) => (Box::new(|_| {}), true),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn register(tx: &Connection, cache: &mut Cache, user: NewUser) -> Result<User, StoreError> {
    let now = now_ms();
    let inserted = tx.execute(
        "INSERT INTO users (name, email, password_hash, avatar_url, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user.name, user.email, user.password_hash, user.avatar_url, now],
    );
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict("Email already registered")),
        Err(e) => return Err(e.into()),
    }
    let stored = User {
        id: tx.last_insert_rowid(),
        name: user.name,
        email: user.email,
        avatar_url: user.avatar_url,
        is_online: false,
    };
    cache.users.insert(stored.id, Arc::new(stored.clone()));
    Ok(stored)
}

fn cached_user(tx: &Connection, cache: &mut Cache, id: UserId) -> Result<Option<Arc<User>>, StoreError> {
    if let Some(user) = cache.users.get(&id) {
        return Ok(Some(user.clone()));
    }
    let user = reads::user_by_id(tx, id)?.map(Arc::new);
    if let Some(user) = &user {
        cache.users.insert(id, user.clone());
    }
    Ok(user)
}

fn user_or_placeholder(tx: &Connection, cache: &mut Cache, id: UserId) -> Result<Arc<User>, StoreError> {
    cached_user(tx, cache, id)?.ok_or(StoreError::NotFound("User not found"))
}

/// The two participants of a direct room.
fn room_members(tx: &Connection, cache: &mut Cache, room_id: RoomId) -> Result<Option<[UserId; 2]>, StoreError> {
    if let Some(members) = cache.rooms.get(&room_id) {
        return Ok(Some(*members));
    }
    let mut stmt = tx.prepare_cached("SELECT user_id FROM chat_participants WHERE room_id = ?1 ORDER BY user_id")?;
    let ids = stmt.query_map([room_id], |r| r.get::<_, UserId>(0))?.collect::<Result<Vec<_>, _>>()?;
    let members = match ids.as_slice() {
        [a, b] => [*a, *b],
        [a] => [*a, *a],
        _ => return Ok(None),
    };
    cache.rooms.insert(room_id, members);
    Ok(Some(members))
}

/// The other participant, if `user` is in the room.
fn other_member(
    tx: &Connection,
    cache: &mut Cache,
    room_id: RoomId,
    user: UserId,
) -> Result<Option<UserId>, StoreError> {
    Ok(room_members(tx, cache, room_id)?.and_then(|[a, b]| match user {
        u if u == a => Some(b),
        u if u == b => Some(a),
        _ => None,
    }))
}

fn create_room(
    tx: &Connection,
    cache: &mut Cache,
    creator: UserId,
    other: UserId,
) -> Result<(RoomId, bool), StoreError> {
    if creator == other {
        return Err(StoreError::Invalid("Cannot create a room with yourself"));
    }
    if cached_user(tx, cache, other)?.is_none() {
        return Err(StoreError::NotFound("User not found"));
    }
    let (low, high) = (creator.min(other), creator.max(other));
    let key = format!("{low}:{high}");
    let now = now_ms();
    let inserted = tx
        .prepare_cached(
            "INSERT INTO chat_rooms (room_type, created_by, created_at, updated_at, direct_key)
             VALUES ('direct', ?1, ?2, ?2, ?3) ON CONFLICT (direct_key) DO NOTHING",
        )?
        .execute(params![creator, now, key])?;
    if inserted == 0 {
        let id =
            tx.prepare_cached("SELECT id FROM chat_rooms WHERE direct_key = ?1")?.query_row([&key], |r| r.get(0))?;
        return Ok((id, false));
    }
    let room_id = tx.last_insert_rowid();
    let mut add =
        tx.prepare_cached("INSERT INTO chat_participants (room_id, user_id, joined_at) VALUES (?1, ?2, ?3)")?;
    add.execute(params![room_id, low, now])?;
    add.execute(params![room_id, high, now])?;
    cache.rooms.insert(room_id, [low, high]);
    Ok((room_id, true))
}

fn message_from(tx: &Connection, cache: &mut Cache, row: MessageRow) -> Result<(Message, bool), StoreError> {
    let mut people = HashMap::with_capacity(2);
    for id in [row.sender_id, row.receiver_id] {
        people.insert(id, user_or_placeholder(tx, cache, id)?);
    }
    Ok(row.into_message(&people))
}

fn send_message(
    tx: &Connection,
    cache: &mut Cache,
    options: &WriterOptions,
    m: NewMessage,
    events: &mut Vec<Envelope>,
) -> Result<SendOutcome, StoreError> {
    let Some(receiver) = other_member(tx, cache, m.room_id, m.sender)? else {
        return Err(StoreError::NotFound("Room not found"));
    };
    if m.receiver_id.is_some_and(|r| r != receiver) {
        return Err(StoreError::Invalid("receiver_id is not the other participant of this room"));
    }
    let files_json = match &m.files {
        Some(files) => {
            Some(serde_json::to_string(files).map_err(|_| StoreError::Invalid("files_data cannot be stored"))?)
        }
        None => None,
    };
    let first = m.files.as_ref().and_then(|f| f.first());
    let now = now_ms();
    // A temp id this sender used before hits the unique index: the insert
    // does nothing and the original is answered (a retry, not a new message).
    let inserted = tx
        .prepare_cached(
            "INSERT INTO chat_messages (room_id, sender_id, receiver_id, message_type, content, file_name, file_path,
                 file_size, mime_type, files_data, duration, local_temp_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            m.room_id,
            m.sender,
            receiver,
            m.message_type.as_str(),
            m.content,
            first.map(|f| &f.file_name),
            first.map(|f| &f.file_path),
            first.map(|f| f.file_size as i64),
            first.map(|f| &f.mime_type),
            files_json,
            m.duration,
            m.local_temp_id,
            now,
        ])?;
    if inserted == 0 {
        let temp_id = m.local_temp_id.as_deref().unwrap_or_default();
        let row = reads::message_by_temp_id(tx, m.sender, temp_id)?.ok_or(StoreError::Conflict("Duplicate message"))?;
        return Ok(SendOutcome::Duplicate(Box::new(message_from(tx, cache, row)?.0)));
    }
    let id = tx.last_insert_rowid();
    if let Some(files) = &m.files {
        // Inside the command's savepoint: over the quota, the insert above
        // is rolled back with it.
        let bytes: u64 = files.iter().map(|f| f.file_size).sum();
        let used: i64 = tx
            .prepare_cached(
                "UPDATE users SET storage_bytes = storage_bytes + ?1 WHERE id = ?2 RETURNING storage_bytes",
            )?
            .query_row(params![bytes as i64, m.sender], |r| r.get(0))?;
        if let Some(quota) = options.user_quota_bytes
            && used.max(0) as u64 > quota
        {
            return Err(StoreError::QuotaExceeded(quota));
        }
    }
    let message = Message {
        id,
        room_id: m.room_id,
        sender: user_or_placeholder(tx, cache, m.sender)?,
        receiver: user_or_placeholder(tx, cache, receiver)?,
        message_type: m.message_type,
        content: m.content,
        files: m.files,
        duration: m.duration,
        local_temp_id: m.local_temp_id,
        created_at: now,
        edited_at: None,
        is_read: false,
        is_deleted: false,
        like_count: 0,
    };
    events.push(Envelope::new(vec![m.sender, receiver], Event::NewMessage(message)));
    Ok(SendOutcome::Stored(id))
}

/// The message `user` may act on, with the room's other member.
fn visible_message(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    id: MessageId,
) -> Result<(MessageRow, UserId), StoreError> {
    let row = reads::message_row(tx, user, id)?.ok_or(StoreError::NotFound("Message not found"))?;
    let other = other_member(tx, cache, row.room_id, user)?.ok_or(StoreError::NotFound("Message not found"))?;
    Ok((row, other))
}

fn likers(tx: &Connection, id: MessageId) -> Result<Vec<UserId>, StoreError> {
    let mut stmt = tx.prepare_cached("SELECT user_id FROM message_likes WHERE message_id = ?1")?;
    Ok(stmt.query_map([id], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?)
}

fn edit(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    id: MessageId,
    content: String,
    events: &mut Vec<Envelope>,
) -> Result<(Message, bool), StoreError> {
    let (row, other) = visible_message(tx, cache, user, id)?;
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
    tx.prepare_cached("UPDATE chat_messages SET content = ?1, edited_at = ?2 WHERE id = ?3")?
        .execute(params![content, now, id])?;
    let liked = row.liked;
    let (mut message, _) = message_from(tx, cache, row)?;
    message.content = content;
    message.edited_at = Some(now);
    message.local_temp_id = None;
    let liked_by = likers(tx, id)?;
    events.push(Envelope::new(vec![user, other], Event::MessageUpdate { message: message.clone(), liked_by }));
    Ok((message, liked))
}

fn delete(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    id: MessageId,
    events: &mut Vec<Envelope>,
) -> Result<(Message, bool, Vec<String>), StoreError> {
    let (row, other) = visible_message(tx, cache, user, id)?;
    if row.sender_id != user {
        return Err(StoreError::Forbidden("Only the sender can delete this message"));
    }
    let liked = row.liked;
    let room_id = row.room_id;
    let already = row.is_deleted;
    let files: Vec<String> = row.files.iter().flatten().map(|f| f.file_path.clone()).collect();
    let bytes: u64 = row.files.iter().flatten().map(|f| f.file_size).sum();
    let (mut message, _) = message_from(tx, cache, row)?;
    if !already && bytes > 0 {
        tx.prepare_cached("UPDATE users SET storage_bytes = max(storage_bytes - ?1, 0) WHERE id = ?2")?
            .execute(params![bytes as i64, user])?;
    }
    if !already {
        tx.prepare_cached(
            "UPDATE chat_messages SET content = '', files_data = NULL, file_name = NULL, file_path = NULL,
                 file_size = NULL, mime_type = NULL, duration = NULL, is_deleted = 1 WHERE id = ?1",
        )?
        .execute([id])?;
        events.push(Envelope::new(vec![user, other], Event::MessageDelete { id, room_id }));
    }
    message.content.clear();
    message.files = None;
    message.duration = None;
    message.is_deleted = true;
    message.local_temp_id = None;
    Ok((message, liked, if already { Vec::new() } else { files }))
}

fn like_message(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    id: MessageId,
    like: bool,
    events: &mut Vec<Envelope>,
) -> Result<LikeState, StoreError> {
    let (row, other) = visible_message(tx, cache, user, id)?;
    if like && row.is_deleted {
        return Err(StoreError::Invalid("Cannot like a deleted message"));
    }
    let changed = if like {
        tx.prepare_cached(
            "INSERT INTO message_likes (message_id, user_id, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![id, user, now_ms()])?
    } else {
        tx.prepare_cached("DELETE FROM message_likes WHERE message_id = ?1 AND user_id = ?2")?
            .execute(params![id, user])?
    };
    let mut like_count = row.like_count;
    if changed > 0 {
        let delta = if like { 1 } else { -1 };
        like_count = tx
            .prepare_cached("UPDATE chat_messages SET like_count = like_count + ?1 WHERE id = ?2 RETURNING like_count")?
            .query_row(params![delta, id], |r| r.get(0))?;
        events.push(Envelope::new(
            vec![user, other],
            Event::MessageLike { id, room_id: row.room_id, user_id: user, like_count },
        ));
    }
    Ok(LikeState { id, is_liked: like, like_count })
}

fn mark_read(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    room_id: RoomId,
    events: &mut Vec<Envelope>,
) -> Result<i64, StoreError> {
    let Some(other) = other_member(tx, cache, room_id, user)? else {
        return Err(StoreError::NotFound("Room not found"));
    };
    let marked = tx
        .prepare_cached("UPDATE chat_messages SET is_read = 1 WHERE receiver_id = ?1 AND room_id = ?2 AND is_read = 0")?
        .execute(params![user, room_id])?;
    tx.prepare_cached("UPDATE chat_participants SET last_read_at = ?1 WHERE room_id = ?2 AND user_id = ?3")?
        .execute(params![now_ms(), room_id, user])?;
    if marked > 0 {
        let user_name = user_or_placeholder(tx, cache, user)?.name.clone();
        events.push(Envelope::new(vec![user, other], Event::MessageRead { room_id, user_id: user, user_name }));
    }
    Ok(marked as i64)
}

fn presence(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    online: bool,
    events: &mut Vec<Envelope>,
) -> Result<(), StoreError> {
    let Some(current) = cached_user(tx, cache, user)? else { return Ok(()) };
    let mut stored = User::clone(&current);
    tx.prepare_cached(
        "INSERT INTO user_presence (user_id, is_online, last_seen) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET is_online = excluded.is_online, last_seen = excluded.last_seen",
    )?
    .execute(params![user, online, now_ms()])?;
    stored.is_online = online;
    let user_name = stored.name.clone();
    cache.users.insert(user, Arc::new(stored));
    let contacts = reads::contacts(tx, user)?;
    if !contacts.is_empty() {
        events.push(Envelope::new(contacts, Event::Presence { user_id: user, user_name, is_online: online }));
    }
    Ok(())
}

fn change_password(
    tx: &Connection,
    user: UserId,
    password_hash: String,
    events: &mut Vec<Envelope>,
) -> Result<u32, StoreError> {
    let version = tx
        .prepare_cached(
            "UPDATE users SET password_hash = ?1, token_version = token_version + 1 WHERE id = ?2 RETURNING token_version",
        )?
        .query_row(params![password_hash, user], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound("User not found"))?;
    events.push(Envelope::new(vec![user], Event::TokensRevoked(Revocation::Below(version))));
    Ok(version)
}

/// Ends one token or all of a user's; the committed event closes the
/// WebSockets opened with them.
fn revoke_token(tx: &Connection, user: UserId, revoke: Revoke, events: &mut Vec<Envelope>) -> Result<u32, StoreError> {
    let revocation = match &revoke {
        Revoke::Token { id, .. } => Revocation::Token(id.as_str().into()),
        Revoke::All => Revocation::Below(0),
    };
    let version = revoke_rows(tx, user, revoke)?;
    let revocation = match revocation {
        Revocation::Below(_) => Revocation::Below(version),
        token => token,
    };
    events.push(Envelope::new(vec![user], Event::TokensRevoked(revocation)));
    Ok(version)
}

fn revoke_rows(tx: &Connection, user: UserId, revoke: Revoke) -> Result<u32, StoreError> {
    match revoke {
        Revoke::Token { id, expires_at } => {
            let now = crate::auth::jwt::unix_now() as i64;
            // Tokens past their expiry are dead anyway: their rows can go.
            tx.prepare_cached("DELETE FROM revoked_tokens WHERE expires_at <= ?1")?.execute([now])?;
            tx.prepare_cached(
                "INSERT INTO revoked_tokens (token_id, user_id, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?
            .execute(params![id, user, expires_at as i64])?;
            reads::token_version(tx, user)?.ok_or(StoreError::NotFound("User not found"))
        }
        Revoke::All => tx
            .prepare_cached("UPDATE users SET token_version = token_version + 1 WHERE id = ?1 RETURNING token_version")?
            .query_row([user], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::NotFound("User not found")),
    }
}

/// The last time a user was seen, for tests and tools.
pub fn last_seen(conn: &Connection, user: UserId) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row("SELECT last_seen FROM user_presence WHERE user_id = ?1", [user], |r| r.get(0)).optional()?)
}
