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
use super::search::Poke;
use crate::model::{
    Envelope, Event, FileMeta, ForwardedFrom, GROUP, MAX_REACTIONS, Message, MessageId, MessageType, Reaction,
    Revocation, RoomId, Scheduled, User, UserId,
};
use crate::time::now_ms;

/// Where committed events go: the hub in the server, nothing in subcommands.
pub trait EventSink: Send + 'static {
    fn publish(&mut self, envelope: Envelope);
    /// Called once per committed batch with its size and commit time.
    fn batch_committed(&mut self, _commands: usize, _commit_seconds: f64) {}
    /// Called once per committed batch, after the commit and before any
    /// command is answered (so a client that sees its answer never reads
    /// a copy from before it), for caches of what readers see.
    fn committed(&mut self, _batch: &Committed<'_>) {}
}

/// A committed batch: its events, and the changes that may leave none.
pub struct Committed<'a> {
    pub events: &'a [Envelope],
    /// Rooms where a read mark may have moved: a mark that passed only the
    /// reader's own or deleted messages has no event.
    pub read_marks: Vec<RoomId>,
    /// Users whose presence was stored: nobody is told when nobody shares
    /// a room with them.
    pub presence: Vec<UserId>,
    /// Retention removed messages (never an event).
    pub messages_expired: bool,
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

pub struct NewGroup {
    pub creator: UserId,
    /// Trimmed, 1..=100 characters.
    pub name: String,
    pub member_ids: Vec<UserId>,
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
    /// A message of the same room this one answers.
    pub reply_to_id: Option<MessageId>,
    /// Set by `forward` only: the copy's origin.
    pub forwarded_from: Option<ForwardedFrom>,
    /// The files are already counted against whoever uploaded them (a
    /// forwarded copy, a scheduled message being delivered).
    pub files_counted: bool,
    /// Uploads of the sender this message uses: consumed in its transaction,
    /// so each is used once.
    pub uploads: Vec<String>,
}

/// A new upload's row.
pub struct NewUpload {
    pub id: String,
    pub user: UserId,
    pub file_name: String,
    pub mime_type: String,
    pub length: u64,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
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

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Which tokens a logout ends.
#[derive(Debug, Clone)]
pub enum Revoke {
    /// One token, by its id, until it expires (Unix seconds).
    Token { id: String, expires_at: u64 },
    /// Every token of the user (a token without an id can only go this way).
    All,
}

/// What the writer enforces besides the schema.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Most commands committed in one transaction.
    pub batch_max: usize,
    /// Bytes of attachments a user may store, if limited.
    pub user_quota_bytes: Option<u64>,
    /// Members of a group, its creator included.
    pub max_group_members: usize,
    /// The WAL file, watched while idle (none: not watched).
    pub wal_path: Option<std::path::PathBuf>,
    /// Past this, an idle writer checkpoints and truncates the WAL.
    pub wal_limit_bytes: u64,
}

pub(crate) enum Command {
    Register(NewUser, Reply<User>),
    CreateRoom {
        creator: UserId,
        other: UserId,
        reply: Reply<(RoomId, bool)>,
    },
    CreateGroup(NewGroup, Reply<RoomId>),
    RenameRoom {
        user: UserId,
        room_id: RoomId,
        name: String,
        reply: Reply<()>,
    },
    AddMembers {
        user: UserId,
        room_id: RoomId,
        user_ids: Vec<UserId>,
        reply: Reply<Vec<User>>,
    },
    RemoveMember {
        user: UserId,
        room_id: RoomId,
        target: UserId,
        reply: Reply<()>,
    },
    SetRole {
        user: UserId,
        room_id: RoomId,
        target: UserId,
        admin: bool,
        reply: Reply<()>,
    },
    PruneEvents {
        before_ms: i64,
        reply: Reply<usize>,
    },
    ExpireMessages {
        before_ms: i64,
        reply: Reply<Expired>,
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
    React {
        user: UserId,
        id: MessageId,
        emoji: String,
        add: bool,
        reply: Reply<Vec<Reaction>>,
    },
    Forward {
        user: UserId,
        id: MessageId,
        room_ids: Vec<RoomId>,
        reply: Reply<Vec<(Message, bool)>>,
    },
    CreateUpload(NewUpload, Reply<()>),
    /// Thumbnails made for a message's images: `(file_path, thumbnail_path)`.
    SetThumbnails {
        message_id: MessageId,
        thumbnails: Vec<(String, String)>,
        reply: Reply<bool>,
    },
    /// Marks an upload checked (`true`) or removes it (`false`).
    FinishUpload {
        id: String,
        passed: bool,
        reply: Reply<()>,
    },
    /// Removes the uploads expired at `now`; answers their ids.
    ExpireUploads {
        now: i64,
        reply: Reply<Vec<String>>,
    },
    Schedule {
        message: Box<NewMessage>,
        send_at: i64,
        reply: Reply<Scheduled>,
    },
    CancelScheduled {
        user: UserId,
        id: i64,
        reply: Reply<Vec<String>>,
    },
    DeliverDue {
        now: i64,
        reply: Reply<Due>,
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
    schedule_changed: Arc<tokio::sync::Notify>,
}

/// What one retention batch removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    pub removed: usize,
    /// Files of the removed messages that no message uses now.
    pub unused_files: Vec<String>,
}

/// What one delivery round did, and when the next item is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub delivered: usize,
    /// Files of dropped items, which nothing uses now (the caller removes them).
    pub unused_files: Vec<String>,
    /// More items were due than one round takes.
    pub more: bool,
    /// The soonest pending `send_at` (ms), if any.
    pub next: Option<i64>,
}

/// Commands that may wait for the writer; senders wait (backpressure) beyond it.
pub(crate) const QUEUE: usize = 8192;

/// Starts the writer thread; `indexer`, if given, is poked after every
/// commit that stored events.
pub fn spawn(
    conn: Connection,
    sink: Box<dyn EventSink>,
    options: WriterOptions,
    indexer: Option<Poke>,
) -> Result<WriterHandle, StoreError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut writer = Writer { conn, sink, cache: Cache::default(), batch_max: options.batch_max, options, indexer };
    let thread = std::thread::Builder::new()
        .name("chatd-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| StoreError::CommitFailed(format!("cannot start the writer thread: {e}")))?;
    Ok(WriterHandle {
        tx,
        thread: Arc::new(Mutex::new(Some(thread))),
        schedule_changed: Arc::new(tokio::sync::Notify::new()),
    })
}

impl WriterHandle {
    /// A handle on another executor of the same commands (PostgreSQL).
    pub(crate) fn from_sender(tx: mpsc::Sender<Command>) -> WriterHandle {
        WriterHandle { tx, thread: Arc::new(Mutex::new(None)), schedule_changed: Arc::new(tokio::sync::Notify::new()) }
    }

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

    pub async fn create_group(&self, group: NewGroup) -> Result<RoomId, StoreError> {
        self.request(|reply| Command::CreateGroup(group, reply)).await
    }

    pub async fn rename_room(&self, user: UserId, room_id: RoomId, name: String) -> Result<(), StoreError> {
        self.request(|reply| Command::RenameRoom { user, room_id, name, reply }).await
    }

    /// Adds users to a group; answers those who were not in it already.
    pub async fn add_members(
        &self,
        user: UserId,
        room_id: RoomId,
        user_ids: Vec<UserId>,
    ) -> Result<Vec<User>, StoreError> {
        self.request(|reply| Command::AddMembers { user, room_id, user_ids, reply }).await
    }

    /// Removes `target` from a group (`target == user`: leaves it).
    pub async fn remove_member(&self, user: UserId, room_id: RoomId, target: UserId) -> Result<(), StoreError> {
        self.request(|reply| Command::RemoveMember { user, room_id, target, reply }).await
    }

    pub async fn set_role(&self, user: UserId, room_id: RoomId, target: UserId, admin: bool) -> Result<(), StoreError> {
        self.request(|reply| Command::SetRole { user, room_id, target, admin, reply }).await
    }

    /// Removes stored events older than `before_ms` (a batch at a time);
    /// answers how many went.
    pub async fn prune_events(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.request(|reply| Command::PruneEvents { before_ms, reply }).await
    }

    /// Removes up to a batch of messages created before `before_ms` (the
    /// oldest first) with their likes, reactions and quotes; answers how many
    /// went and the files no message uses any more (the caller removes them).
    pub async fn expire_messages(&self, before_ms: i64) -> Result<Expired, StoreError> {
        self.request(|reply| Command::ExpireMessages { before_ms, reply }).await
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

    /// Adds or removes `user`'s reaction (idempotent); answers the message's
    /// reactions.
    pub async fn react(
        &self,
        user: UserId,
        id: MessageId,
        emoji: String,
        add: bool,
    ) -> Result<Vec<Reaction>, StoreError> {
        self.request(|reply| Command::React { user, id, emoji, add, reply }).await
    }

    /// Records thumbnails made for a message's images and sends
    /// `message_update`; `false` when the message is gone or deleted.
    pub async fn set_thumbnails(
        &self,
        message_id: MessageId,
        thumbnails: Vec<(String, String)>,
    ) -> Result<bool, StoreError> {
        self.request(|reply| Command::SetThumbnails { message_id, thumbnails, reply }).await
    }

    /// Records a new upload, if the user's quota has room for it beside
    /// what they store and their other unused uploads.
    pub async fn create_upload(&self, upload: NewUpload) -> Result<(), StoreError> {
        self.request(|reply| Command::CreateUpload(upload, reply)).await
    }

    /// Marks an upload complete and checked, or removes it (failed checks).
    pub async fn finish_upload(&self, id: String, passed: bool) -> Result<(), StoreError> {
        self.request(|reply| Command::FinishUpload { id, passed, reply }).await
    }

    /// Removes the uploads expired at `now` (ms); answers their ids.
    pub async fn expire_uploads(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.request(|reply| Command::ExpireUploads { now, reply }).await
    }

    /// Stores `message` to be sent at `send_at` (ms), its files already on
    /// disk; the scheduler is woken to look at the new soonest item.
    pub async fn schedule(&self, message: NewMessage, send_at: i64) -> Result<Scheduled, StoreError> {
        let item = self.request(|reply| Command::Schedule { message: Box::new(message), send_at, reply }).await?;
        self.schedule_changed.notify_one();
        Ok(item)
    }

    /// Cancels one of the user's pending items; returns its files, which no
    /// message uses (the caller removes them).
    pub async fn cancel_scheduled(&self, user: UserId, id: i64) -> Result<Vec<String>, StoreError> {
        let files = self.request(|reply| Command::CancelScheduled { user, id, reply }).await?;
        self.schedule_changed.notify_one();
        Ok(files)
    }

    /// Posts the items due at `now` (a batch at a time).
    pub async fn deliver_due(&self, now: i64) -> Result<Due, StoreError> {
        self.request(|reply| Command::DeliverDue { now, reply }).await
    }

    /// Notified whenever the schedule changes (the scheduler's wake-up).
    pub fn schedule_changes(&self) -> Arc<tokio::sync::Notify> {
        self.schedule_changed.clone()
    }

    /// Copies message `id` into each of `room_ids` (distinct, all the
    /// user's) as the user's messages: all of them or none.
    pub async fn forward(
        &self,
        user: UserId,
        id: MessageId,
        room_ids: Vec<RoomId>,
    ) -> Result<Vec<(Message, bool)>, StoreError> {
        self.request(|reply| Command::Forward { user, id, room_ids, reply }).await
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
    rooms: HashMap<RoomId, RoomInfo>,
}

struct Writer {
    conn: Connection,
    sink: Box<dyn EventSink>,
    cache: Cache,
    batch_max: usize,
    options: WriterOptions,
    indexer: Option<Poke>,
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
                self.truncate_wal();
                let _ = done.send(());
                tracing::info!("writer stopped");
                return;
            }
            if rx.is_empty() {
                self.bound_wal();
            }
        }
        self.truncate_wal();
    }

    /// While idle: when the WAL has grown past `options.wal_limit_bytes`,
    /// checkpoints and truncates it. Under steady writes a PASSIVE
    /// checkpoint never catches up with the end of the log, so the log
    /// never restarts and grows without bound (6 GiB for 1M messages);
    /// only a checkpoint that waits for readers cuts it. The wait is
    /// short (busy after 50 ms: try again at the next idle moment), and
    /// the writer is idle, so no command waits for it.
    fn bound_wal(&mut self) {
        let Some(wal) = self.options.wal_path.as_ref() else { return };
        let size = std::fs::metadata(wal).map_or(0, |m| m.len());
        if size <= self.options.wal_limit_bytes {
            return;
        }
        let _ = self.conn.busy_timeout(std::time::Duration::from_millis(50));
        let result: rusqlite::Result<i64> = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0));
        let _ = self.conn.busy_timeout(std::time::Duration::from_secs(5));
        match result {
            Ok(0) => tracing::debug!(bytes = size, "WAL checkpointed and truncated"),
            Ok(_) => tracing::debug!(bytes = size, "WAL busy; truncating at the next idle moment"),
            Err(e) => tracing::warn!(error = %e, "cannot checkpoint the WAL"),
        }
    }

    /// Checkpoints the whole WAL into the database and empties it. The
    /// background checkpointer may hold the checkpoint lock for a moment
    /// (then SQLite answers "busy" at once): try again, for up to a second.
    fn truncate_wal(&self) {
        for _ in 0..50 {
            let busy: rusqlite::Result<i64> = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0));
            match busy {
                Ok(0) => return,
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot checkpoint the WAL");
                    return;
                }
            }
        }
        tracing::warn!("the WAL stayed busy; it is checkpointed at the next start");
    }

    /// Runs and commits one batch; returns the shutdown reply if the batch held one.
    fn run_batch(&mut self, batch: &mut Vec<Command>) -> Option<oneshot::Sender<()>> {
        let started = Instant::now();
        let commands = batch.len();
        // Retention writes no envelope, but the index must forget what went.
        let expiring = batch.iter().any(|c| matches!(c, Command::ExpireMessages { .. }));
        let (mut read_marks, mut presence) = (Vec::new(), Vec::new());
        for cmd in batch.iter() {
            match cmd {
                Command::MarkRead { room_id, .. } => read_marks.push(*room_id),
                Command::Presence { user, .. } => presence.push(*user),
                _ => {}
            }
        }
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
        if committed {
            self.sink.committed(&Committed { events: &events, read_marks, presence, messages_expired: expiring });
        }
        if let Some(indexer) = self.indexer.as_ref().filter(|_| !events.is_empty() || (committed && expiring)) {
            indexer.poke();
        }
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
        Command::CreateGroup(_, reply) => finish(reply, Err(error)),
        Command::RenameRoom { reply, .. } => finish(reply, Err(error)),
        Command::AddMembers { reply, .. } => finish(reply, Err(error)),
        Command::RemoveMember { reply, .. } => finish(reply, Err(error)),
        Command::SetRole { reply, .. } => finish(reply, Err(error)),
        Command::PruneEvents { reply, .. } => finish(reply, Err(error)),
        Command::ExpireMessages { reply, .. } => finish(reply, Err(error)),
        Command::Send(_, r) => finish(r, Err(error)),
        Command::Edit { reply, .. } => finish(reply, Err(error)),
        Command::Delete { reply, .. } => finish(reply, Err(error)),
        Command::Like { reply, .. } => finish(reply, Err(error)),
        Command::React { reply, .. } => finish(reply, Err(error)),
        Command::Forward { reply, .. } => finish(reply, Err(error)),
        Command::Schedule { reply, .. } => finish(reply, Err(error)),
        Command::CreateUpload(_, reply) => finish(reply, Err(error)),
        Command::SetThumbnails { reply, .. } => finish(reply, Err(error)),
        Command::FinishUpload { reply, .. } => finish(reply, Err(error)),
        Command::ExpireUploads { reply, .. } => finish(reply, Err(error)),
        Command::CancelScheduled { reply, .. } => finish(reply, Err(error)),
        Command::DeliverDue { reply, .. } => finish(reply, Err(error)),
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
        Command::CreateRoom { creator, other, reply } => done(reply, create_room(tx, cache, creator, other, events)),
        Command::CreateGroup(group, reply) => done(reply, create_group(tx, cache, options, group, events)),
        Command::RenameRoom { user, room_id, name, reply } => {
            done(reply, rename_room(tx, cache, user, room_id, name, events))
        }
        Command::AddMembers { user, room_id, user_ids, reply } => {
            done(reply, add_members(tx, cache, options, user, room_id, user_ids, events))
        }
        Command::RemoveMember { user, room_id, target, reply } => {
            done(reply, remove_member(tx, cache, user, room_id, target, events))
        }
        Command::SetRole { user, room_id, target, admin, reply } => {
            done(reply, set_role(tx, cache, user, room_id, target, admin, events))
        }
        Command::PruneEvents { before_ms, reply } => done(reply, prune_events(tx, before_ms)),
        Command::ExpireMessages { before_ms, reply } => done(reply, expire_messages(tx, before_ms)),
        Command::Send(m, r) => done(r, send_message(tx, cache, options, *m, events)),
        Command::Edit { user, id, content, reply } => done(reply, edit(tx, cache, user, id, content, events)),
        Command::Delete { user, id, reply } => done(reply, delete(tx, cache, user, id, events)),
        Command::Like { user, id, like, reply } => done(reply, like_message(tx, cache, user, id, like, events)),
        Command::React { user, id, emoji, add, reply } => done(reply, react(tx, cache, user, id, emoji, add, events)),
        Command::Forward { user, id, room_ids, reply } => {
            done(reply, forward(tx, cache, options, user, id, room_ids, events))
        }
        Command::CreateUpload(upload, reply) => done(reply, create_upload(tx, options, upload)),
        Command::SetThumbnails { message_id, thumbnails, reply } => {
            done(reply, set_thumbnails(tx, cache, message_id, thumbnails, events))
        }
        Command::FinishUpload { id, passed, reply } => done(reply, finish_upload(tx, &id, passed)),
        Command::ExpireUploads { now, reply } => done(reply, expire_uploads(tx, now)),
        Command::Schedule { message, send_at, reply } => {
            done(reply, schedule(tx, cache, options, *message, send_at, events))
        }
        Command::CancelScheduled { user, id, reply } => done(reply, cancel_scheduled(tx, user, id)),
        Command::DeliverDue { now, reply } => done(reply, deliver_due(tx, cache, options, now, events)),
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

/// What the writer keeps of a room: its kind and its members (sorted). Only
/// the writer changes membership, so this cannot go stale.
#[derive(Clone, Debug)]
struct RoomInfo {
    group: bool,
    members: Arc<[UserId]>,
}

impl RoomInfo {
    fn has(&self, user: UserId) -> bool {
        self.members.binary_search(&user).is_ok()
    }
}

/// The room's kind and members; `None` when it does not exist or is inactive.
fn room_info(tx: &Connection, cache: &mut Cache, room_id: RoomId) -> Result<Option<RoomInfo>, StoreError> {
    if let Some(info) = cache.rooms.get(&room_id) {
        return Ok(Some(info.clone()));
    }
    let kind: Option<(String, bool)> = tx
        .prepare_cached("SELECT room_type, is_active FROM chat_rooms WHERE id = ?1")?
        .query_row([room_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((kind, true)) = kind else { return Ok(None) };
    let members: Arc<[UserId]> = reads::member_ids(tx, room_id)?.into();
    let info = RoomInfo { group: kind == GROUP, members };
    cache.rooms.insert(room_id, info.clone());
    Ok(Some(info))
}

/// The room, if `user` is a member of it.
fn room_of_member(
    tx: &Connection,
    cache: &mut Cache,
    room_id: RoomId,
    user: UserId,
) -> Result<Option<RoomInfo>, StoreError> {
    Ok(room_info(tx, cache, room_id)?.filter(|info| info.has(user)))
}

/// Where a stored event goes: to a room's members, or to one user.
#[derive(Clone, Copy)]
enum Scope {
    Room(RoomId),
    User(UserId),
}

/// Stores an event in the same transaction as its change and queues it for
/// the hub with its position. `data` holds the ids the replay renders from.
fn emit(
    tx: &Connection,
    events: &mut Vec<Envelope>,
    scope: Scope,
    audience: impl Into<Arc<[UserId]>>,
    event: Event,
    data: serde_json::Value,
) -> Result<i64, StoreError> {
    let (room_id, user_id) = match scope {
        Scope::Room(room) => (Some(room), None),
        Scope::User(user) => (None, Some(user)),
    };
    tx.prepare_cached("INSERT INTO events (room_id, user_id, kind, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![room_id, user_id, event_kind(&event), data.to_string(), now_ms()])?;
    let position = tx.last_insert_rowid();
    let mut envelope = Envelope::new(audience, event);
    envelope.position = Some(position);
    events.push(envelope);
    Ok(position)
}

/// The stored name of an event's kind (the frame's `type`).
fn event_kind(event: &Event) -> &'static str {
    match event {
        Event::NewMessage(_) => "new_message",
        Event::MessageUpdate { .. } => "message_update",
        Event::MessageDelete { .. } => "message_delete",
        Event::MessageLike { .. } => "message_like",
        Event::MessageReaction { .. } => "message_reaction",
        Event::MessageRead { .. } => "message_read",
        Event::RoomCreated(_) => "room_created",
        Event::RoomUpdated(_) => "room_updated",
        Event::MemberAdded { .. } => "member_added",
        Event::MemberRemoved { .. } => "member_removed",
        Event::RoomRemoved { .. } => "room_removed",
        Event::MessageScheduled(_) => "message_scheduled",
        Event::Typing { .. } | Event::Presence { .. } | Event::TokensRevoked(_) => "ephemeral",
    }
}

/// `room_created` or `room_updated` for every member.
fn emit_room(
    tx: &Connection,
    cache: &mut Cache,
    events: &mut Vec<Envelope>,
    room_id: RoomId,
    actor: UserId,
    created: bool,
) -> Result<i64, StoreError> {
    let Some(info) = room_info(tx, cache, room_id)? else { return Err(StoreError::NotFound("Room not found")) };
    let view = reads::room_view(tx, actor, room_id)?.ok_or(StoreError::NotFound("Room not found"))?;
    let event = if created { Event::RoomCreated(view) } else { Event::RoomUpdated(view) };
    emit(tx, events, Scope::Room(room_id), info.members, event, serde_json::json!({}))
}

fn set_joined(tx: &Connection, room_id: RoomId, users: &[UserId], position: i64) -> Result<(), StoreError> {
    let mut stmt =
        tx.prepare_cached("UPDATE chat_participants SET joined_event_id = ?1 WHERE room_id = ?2 AND user_id = ?3")?;
    for user in users {
        stmt.execute(params![position, room_id, user])?;
    }
    Ok(())
}

fn create_room(
    tx: &Connection,
    cache: &mut Cache,
    creator: UserId,
    other: UserId,
    events: &mut Vec<Envelope>,
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
    let position = emit_room(tx, cache, events, room_id, creator, true)?;
    set_joined(tx, room_id, &[low, high], position)?;
    Ok((room_id, true))
}

/// Every id of `ids` that is a user, deduplicated and without `except`;
/// `NotFound` when one is not.
fn existing_users(
    tx: &Connection,
    cache: &mut Cache,
    ids: &[UserId],
    except: UserId,
) -> Result<Vec<UserId>, StoreError> {
    let mut wanted: Vec<UserId> = ids.iter().copied().filter(|id| *id != except).collect();
    wanted.sort_unstable();
    wanted.dedup();
    for id in &wanted {
        if *id <= 0 || cached_user(tx, cache, *id)?.is_none() {
            return Err(StoreError::NotFound("User not found"));
        }
    }
    Ok(wanted)
}

fn create_group(
    tx: &Connection,
    cache: &mut Cache,
    options: &WriterOptions,
    group: NewGroup,
    events: &mut Vec<Envelope>,
) -> Result<RoomId, StoreError> {
    let members = existing_users(tx, cache, &group.member_ids, group.creator)?;
    if members.len() + 1 > options.max_group_members {
        return Err(StoreError::TooManyMembers(options.max_group_members));
    }
    let now = now_ms();
    tx.prepare_cached(
        "INSERT INTO chat_rooms (name, room_type, created_by, created_at, updated_at) VALUES (?1, 'group', ?2, ?3, ?3)",
    )?
    .execute(params![group.name, group.creator, now])?;
    let room_id = tx.last_insert_rowid();
    let mut add =
        tx.prepare_cached("INSERT INTO chat_participants (room_id, user_id, joined_at, role) VALUES (?1, ?2, ?3, ?4)")?;
    add.execute(params![room_id, group.creator, now, "admin"])?;
    for member in &members {
        add.execute(params![room_id, member, now, "member"])?;
    }
    let position = emit_room(tx, cache, events, room_id, group.creator, true)?;
    let mut everyone = members;
    everyone.push(group.creator);
    set_joined(tx, room_id, &everyone, position)?;
    Ok(room_id)
}

/// The group `user` administers; 400 for a direct room, 403 for a member.
fn administered_group(
    tx: &Connection,
    cache: &mut Cache,
    room_id: RoomId,
    user: UserId,
) -> Result<RoomInfo, StoreError> {
    let info = room_of_member(tx, cache, room_id, user)?.ok_or(StoreError::NotFound("Room not found"))?;
    if !info.group {
        return Err(StoreError::Invalid("Direct rooms have no members to manage"));
    }
    if !is_admin(tx, room_id, user)? {
        return Err(StoreError::Forbidden("Only an admin of the group can do that"));
    }
    Ok(info)
}

fn is_admin(tx: &Connection, room_id: RoomId, user: UserId) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM chat_participants WHERE room_id = ?1 AND user_id = ?2 AND role = 'admin'")?
        .exists(params![room_id, user])?)
}

fn rename_room(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    room_id: RoomId,
    name: String,
    events: &mut Vec<Envelope>,
) -> Result<(), StoreError> {
    administered_group(tx, cache, room_id, user)?;
    tx.prepare_cached("UPDATE chat_rooms SET name = ?1, updated_at = ?2 WHERE id = ?3")?.execute(params![
        name,
        now_ms(),
        room_id
    ])?;
    emit_room(tx, cache, events, room_id, user, false)?;
    Ok(())
}

fn add_members(
    tx: &Connection,
    cache: &mut Cache,
    options: &WriterOptions,
    user: UserId,
    room_id: RoomId,
    user_ids: Vec<UserId>,
    events: &mut Vec<Envelope>,
) -> Result<Vec<User>, StoreError> {
    let info = administered_group(tx, cache, room_id, user)?;
    let wanted = existing_users(tx, cache, &user_ids, user)?;
    let new: Vec<UserId> = wanted.into_iter().filter(|id| !info.has(*id)).collect();
    if new.is_empty() {
        return Ok(Vec::new());
    }
    if info.members.len() + new.len() > options.max_group_members {
        return Err(StoreError::TooManyMembers(options.max_group_members));
    }
    // Old history is there to read, not unread: a new member starts read
    // up to the room's newest message.
    let newest: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM chat_messages WHERE room_id = ?1")?
        .query_row([room_id], |r| r.get(0))?;
    let now = now_ms();
    let mut add = tx.prepare_cached(
        "INSERT INTO chat_participants (room_id, user_id, joined_at, last_read_id) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for member in &new {
        add.execute(params![room_id, member, now, newest])?;
    }
    cache.rooms.remove(&room_id);
    let info = room_info(tx, cache, room_id)?.ok_or(StoreError::NotFound("Room not found"))?;
    let mut users = Vec::with_capacity(new.len());
    for member in &new {
        users.push(User::clone(&*user_or_placeholder(tx, cache, *member)?));
    }
    let data = serde_json::json!({"user_ids": new, "by": user});
    let event = Event::MemberAdded { room_id, users: users.clone(), by: user };
    let position = emit(tx, events, Scope::Room(room_id), info.members, event, data)?;
    set_joined(tx, room_id, &new, position)?;
    Ok(users)
}

fn remove_member(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    room_id: RoomId,
    target: UserId,
    events: &mut Vec<Envelope>,
) -> Result<(), StoreError> {
    let info = room_of_member(tx, cache, room_id, user)?.ok_or(StoreError::NotFound("Room not found"))?;
    if !info.group {
        return Err(StoreError::Invalid("Direct rooms have no members to manage"));
    }
    if target != user && !is_admin(tx, room_id, user)? {
        return Err(StoreError::Forbidden("Only an admin of the group can do that"));
    }
    if !info.has(target) {
        return Err(StoreError::NotFound("Member not found"));
    }
    tx.prepare_cached("DELETE FROM chat_participants WHERE room_id = ?1 AND user_id = ?2")?
        .execute(params![room_id, target])?;
    cache.rooms.remove(&room_id);
    let remaining = reads::member_ids(tx, room_id)?;
    emit(
        tx,
        events,
        Scope::User(target),
        vec![target],
        Event::RoomRemoved { room_id },
        serde_json::json!({"room_id": room_id}),
    )?;
    if remaining.is_empty() {
        // Nobody is left to see it.
        tx.prepare_cached("UPDATE chat_rooms SET is_active = 0, updated_at = ?1 WHERE id = ?2")?
            .execute(params![now_ms(), room_id])?;
        return Ok(());
    }
    let event = Event::MemberRemoved { room_id, user_id: target, by: user };
    emit(tx, events, Scope::Room(room_id), remaining, event, serde_json::json!({"user_id": target, "by": user}))?;
    let admins: i64 = tx
        .prepare_cached("SELECT count(*) FROM chat_participants WHERE room_id = ?1 AND role = 'admin'")?
        .query_row([room_id], |r| r.get(0))?;
    if admins == 0 {
        // The longest-standing member takes over.
        tx.prepare_cached(
            "UPDATE chat_participants SET role = 'admin' WHERE id =
                 (SELECT id FROM chat_participants WHERE room_id = ?1 ORDER BY id LIMIT 1)",
        )?
        .execute([room_id])?;
        emit_room(tx, cache, events, room_id, user, false)?;
    }
    Ok(())
}

fn set_role(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    room_id: RoomId,
    target: UserId,
    admin: bool,
    events: &mut Vec<Envelope>,
) -> Result<(), StoreError> {
    let info = administered_group(tx, cache, room_id, user)?;
    if !info.has(target) {
        return Err(StoreError::NotFound("Member not found"));
    }
    let role = if admin { "admin" } else { "member" };
    let changed = tx
        .prepare_cached("UPDATE chat_participants SET role = ?1 WHERE room_id = ?2 AND user_id = ?3 AND role != ?1")?
        .execute(params![role, room_id, target])?;
    if changed > 0 {
        let admins: i64 = tx
            .prepare_cached("SELECT count(*) FROM chat_participants WHERE room_id = ?1 AND role = 'admin'")?
            .query_row([room_id], |r| r.get(0))?;
        if admins == 0 {
            return Err(StoreError::Invalid("A group needs at least one admin"));
        }
        emit_room(tx, cache, events, room_id, user, false)?;
    }
    Ok(())
}

fn message_from(tx: &Connection, cache: &mut Cache, row: MessageRow) -> Result<(Message, bool), StoreError> {
    let mut people = HashMap::with_capacity(2);
    for id in std::iter::once(row.sender_id).chain(row.receiver_id) {
        people.insert(id, user_or_placeholder(tx, cache, id)?);
    }
    let reads = reads::read_state(tx, row.room_id)?;
    let replies = reads::replies_of(tx, std::slice::from_ref(&row))?;
    let mut reactions = reads::reactions_of(tx, std::slice::from_ref(&row))?;
    Ok(row.into_message(&people, &reads, &replies, &mut reactions))
}

fn send_message(
    tx: &Connection,
    cache: &mut Cache,
    options: &WriterOptions,
    m: NewMessage,
    events: &mut Vec<Envelope>,
) -> Result<SendOutcome, StoreError> {
    let (room, receiver) = addressed(tx, cache, &m)?;
    let reply_to = match m.reply_to_id {
        None => None,
        Some(id) => reads::reply_to(tx, id)?,
    };
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
                 file_size, mime_type, files_data, duration, local_temp_id, created_at, reply_to_id,
                 forwarded_from_id, forwarded_from_name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) ON CONFLICT DO NOTHING",
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
            m.reply_to_id,
            m.forwarded_from.as_ref().map(|f| f.message_id),
            m.forwarded_from.as_ref().map(|f| &f.sender_name),
        ])?;
    if inserted == 0 {
        let temp_id = m.local_temp_id.as_deref().unwrap_or_default();
        let row = reads::message_by_temp_id(tx, m.sender, temp_id)?.ok_or(StoreError::Conflict("Duplicate message"))?;
        return Ok(SendOutcome::Duplicate(Box::new(message_from(tx, cache, row)?.0)));
    }
    let id = tx.last_insert_rowid();
    consume_uploads(tx, m.sender, &m.uploads)?;
    if let Some(files) = m.files.as_ref().filter(|_| !m.files_counted) {
        // Inside the command's savepoint: over the quota, the insert above
        // is rolled back with it.
        charge_files(tx, options, m.sender, files)?;
    }
    let message = Message {
        id,
        room_id: m.room_id,
        sender: user_or_placeholder(tx, cache, m.sender)?,
        receiver: match receiver {
            Some(r) => Some(user_or_placeholder(tx, cache, r)?),
            None => None,
        },
        message_type: m.message_type,
        content: m.content,
        files: m.files,
        duration: m.duration,
        local_temp_id: m.local_temp_id,
        created_at: now,
        edited_at: None,
        is_read: false,
        read_count: 0,
        is_deleted: false,
        like_count: 0,
        reply_to,
        reactions: Vec::new(),
        forwarded_from: m.forwarded_from,
    };
    let data = serde_json::json!({"message_id": id});
    emit(tx, events, Scope::Room(m.room_id), room.members, Event::NewMessage(message), data)?;
    Ok(SendOutcome::Stored(id))
}

/// Sets `thumbnail_path` on the message's files that have one now, and
/// tells the room with `message_update` (rendered from the stored message).
fn set_thumbnails(
    tx: &Connection,
    cache: &mut Cache,
    message_id: MessageId,
    thumbnails: Vec<(String, String)>,
    events: &mut Vec<Envelope>,
) -> Result<bool, StoreError> {
    let stored: Option<(RoomId, Option<String>)> = tx
        .prepare_cached("SELECT room_id, files_data FROM chat_messages WHERE id = ?1 AND is_deleted = 0")?
        .query_row([message_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((room_id, Some(json))) = stored else { return Ok(false) };
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
    tx.prepare_cached("UPDATE chat_messages SET files_data = ?1 WHERE id = ?2")?.execute(params![json, message_id])?;
    let Some(room) = room_info(tx, cache, room_id)? else { return Ok(false) };
    // Rendered as everyone else reads it: no viewer's like.
    let row = reads::message_row(tx, 0, message_id)?.ok_or(StoreError::NotFound("Message not found"))?;
    let liked_by = likers(tx, message_id)?;
    let (mut message, _) = message_from(tx, cache, row)?;
    message.local_temp_id = None;
    let event = Event::MessageUpdate { message, liked_by };
    emit(tx, events, Scope::Room(room_id), room.members, event, serde_json::json!({"message_id": message_id}))?;
    Ok(true)
}

/// Deletes the rows of the uploads a message uses: each finished upload of
/// its sender, once.
fn consume_uploads(tx: &Connection, sender: UserId, uploads: &[String]) -> Result<(), StoreError> {
    for upload in uploads {
        let used = tx
            .prepare_cached("DELETE FROM uploads WHERE id = ?1 AND user_id = ?2 AND complete = 1")?
            .execute(params![upload, sender])?;
        if used == 0 {
            return Err(StoreError::Invalid("upload_id is unknown, unfinished or already used"));
        }
    }
    Ok(())
}

fn create_upload(tx: &Connection, options: &WriterOptions, u: NewUpload) -> Result<(), StoreError> {
    if let Some(quota) = options.user_quota_bytes {
        let (stored, pending): (i64, i64) = tx
            .prepare_cached(
                "SELECT storage_bytes, (SELECT COALESCE(SUM(length), 0) FROM uploads WHERE user_id = ?1)
                 FROM users WHERE id = ?1",
            )?
            .query_row([u.user], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if stored.max(0) as u64 + pending.max(0) as u64 + u.length > quota {
            return Err(StoreError::QuotaExceeded(quota));
        }
    }
    tx.prepare_cached(
        "INSERT INTO uploads (id, user_id, file_name, mime_type, length, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![u.id, u.user, u.file_name, u.mime_type, u.length as i64, now_ms(), u.expires_at])?;
    Ok(())
}

fn finish_upload(tx: &Connection, id: &str, passed: bool) -> Result<(), StoreError> {
    let sql =
        if passed { "UPDATE uploads SET complete = 1 WHERE id = ?1" } else { "DELETE FROM uploads WHERE id = ?1" };
    match tx.prepare_cached(sql)?.execute([id])? {
        0 => Err(StoreError::NotFound("Upload not found")),
        _ => Ok(()),
    }
}

fn expire_uploads(tx: &Connection, now: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare_cached("DELETE FROM uploads WHERE expires_at <= ?1 RETURNING id")?;
    Ok(stmt.query_map([now], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?)
}

/// Where a new message goes: its room (the sender must be a member) and,
/// in a direct room, the other person; a reply must answer a message of
/// the same room.
fn addressed(tx: &Connection, cache: &mut Cache, m: &NewMessage) -> Result<(RoomInfo, Option<UserId>), StoreError> {
    let Some(room) = room_of_member(tx, cache, m.room_id, m.sender)? else {
        return Err(StoreError::NotFound("Room not found"));
    };
    // A direct room's receiver is the other person; a group has none (a
    // receiver_id sent for a group is ignored).
    let receiver = if room.group {
        None
    } else {
        let other = room.members.iter().copied().find(|u| *u != m.sender).unwrap_or(m.sender);
        if m.receiver_id.is_some_and(|r| r != other) {
            return Err(StoreError::Invalid("receiver_id is not the other participant of this room"));
        }
        Some(other)
    };
    if let Some(id) = m.reply_to_id {
        let room: Option<RoomId> = tx
            .prepare_cached("SELECT room_id FROM chat_messages WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if room != Some(m.room_id) {
            return Err(StoreError::Invalid("reply_to_id must be a message of the same room"));
        }
    }
    Ok((room, receiver))
}

/// Counts files against their uploader's quota (inside the command's
/// savepoint: over the quota, the command is rolled back whole).
fn charge_files(tx: &Connection, options: &WriterOptions, user: UserId, files: &[FileMeta]) -> Result<(), StoreError> {
    let bytes: u64 = files.iter().map(|f| f.file_size).sum();
    let used: i64 = tx
        .prepare_cached("UPDATE users SET storage_bytes = storage_bytes + ?1 WHERE id = ?2 RETURNING storage_bytes")?
        .query_row(params![bytes as i64, user], |r| r.get(0))?;
    match options.user_quota_bytes {
        Some(quota) if used.max(0) as u64 > quota => Err(StoreError::QuotaExceeded(quota)),
        _ => Ok(()),
    }
}

/// Stores a message to be posted at `send_at` (SPEC section 10), checked as
/// a message sent now would be (room, receiver, reply, quota), and tells
/// the sender's connections with `message_scheduled`.
fn schedule(
    tx: &Connection,
    cache: &mut Cache,
    options: &WriterOptions,
    m: NewMessage,
    send_at: i64,
    events: &mut Vec<Envelope>,
) -> Result<Scheduled, StoreError> {
    let (_, receiver) = addressed(tx, cache, &m)?;
    consume_uploads(tx, m.sender, &m.uploads)?;
    if let Some(files) = &m.files {
        charge_files(tx, options, m.sender, files)?;
    }
    let files_json = match &m.files {
        Some(files) => {
            Some(serde_json::to_string(files).map_err(|_| StoreError::Invalid("files_data cannot be stored"))?)
        }
        None => None,
    };
    tx.prepare_cached(
        "INSERT INTO scheduled_messages (sender_id, room_id, receiver_id, message_type, content, files_data, duration,
             reply_to_id, local_temp_id, send_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        m.sender,
        m.room_id,
        receiver,
        m.message_type.as_str(),
        m.content,
        files_json,
        m.duration,
        m.reply_to_id,
        m.local_temp_id,
        send_at,
        now_ms()
    ])?;
    let item = Scheduled {
        id: tx.last_insert_rowid(),
        room_id: m.room_id,
        message_type: m.message_type,
        content: m.content,
        send_at,
        local_temp_id: m.local_temp_id,
    };
    let data = serde_json::json!({"scheduled_id": item.id});
    emit(tx, events, Scope::User(m.sender), vec![m.sender], Event::MessageScheduled(item.clone()), data)?;
    Ok(item)
}

/// Removes one of `user`'s pending items and gives its files' bytes back;
/// returns the files (only the item used them).
fn cancel_scheduled(tx: &Connection, user: UserId, id: i64) -> Result<Vec<String>, StoreError> {
    let files: Option<Option<String>> = tx
        .prepare_cached("DELETE FROM scheduled_messages WHERE id = ?1 AND sender_id = ?2 RETURNING files_data")?
        .query_row(params![id, user], |r| r.get(0))
        .optional()?;
    let Some(files) = files else { return Err(StoreError::NotFound("Scheduled message not found")) };
    let files: Vec<FileMeta> = files.and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_default();
    let bytes: u64 = files.iter().map(|f| f.file_size).sum();
    if bytes > 0 {
        give_back_quota(tx, user, bytes as i64)?;
    }
    Ok(files.into_iter().map(|f| f.file_path).collect())
}

/// Items one delivery round posts at most.
const DELIVERY_ROUND: usize = 256;

/// Posts the items due at `now`, soonest first, each as a normal message
/// (`new_message` with its `local_temp_id`) and removes them, in the same
/// transaction: delivered exactly once, even across a crash. An item that
/// can no longer be sent (its sender left the room, ...) is dropped and
/// logged, so it cannot block the ones behind it.
fn deliver_due(
    tx: &Connection,
    cache: &mut Cache,
    options: &WriterOptions,
    now: i64,
    events: &mut Vec<Envelope>,
) -> Result<Due, StoreError> {
    type Row = (
        i64,
        UserId,
        RoomId,
        Option<UserId>,
        String,
        String,
        Option<String>,
        Option<f64>,
        Option<MessageId>,
        Option<String>,
    );
    let due: Vec<Row> = tx
        .prepare_cached(
            "SELECT id, sender_id, room_id, receiver_id, message_type, content, files_data, duration, reply_to_id,
                 local_temp_id FROM scheduled_messages WHERE send_at <= ?1 ORDER BY send_at, id LIMIT ?2",
        )?
        .query_map(params![now, DELIVERY_ROUND as i64 + 1], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let more = due.len() > DELIVERY_ROUND;
    let (mut delivered, mut unused_files) = (0, Vec::new());
    for (id, sender, room_id, receiver_id, kind, content, files, duration, reply_to_id, local_temp_id) in
        due.into_iter().take(DELIVERY_ROUND)
    {
        let files: Option<Vec<FileMeta>> = files.and_then(|json| serde_json::from_str(&json).ok());
        let message = NewMessage {
            sender,
            room_id,
            receiver_id,
            message_type: MessageType::parse(&kind).unwrap_or(MessageType::Text),
            content,
            local_temp_id,
            files: files.clone(),
            duration,
            reply_to_id,
            forwarded_from: None,
            files_counted: true,
            uploads: Vec::new(),
        };
        run_cached(tx, "SAVEPOINT item")?;
        let mut posted = Vec::new();
        let refused = match send_message(tx, cache, options, message, &mut posted) {
            Ok(SendOutcome::Stored(_)) => None,
            Ok(SendOutcome::Duplicate(_)) => {
                Some(StoreError::Conflict("its local_temp_id was used by another message"))
            }
            Err(e) => Some(e),
        };
        match refused {
            None => {
                run_cached(tx, "RELEASE item")?;
                events.append(&mut posted);
                delivered += 1;
            }
            Some(e) => {
                run_cached(tx, "ROLLBACK TO item")?;
                run_cached(tx, "RELEASE item")?;
                tracing::warn!(item = id, error = %e, "a scheduled message could not be sent; dropped");
                let files = files.unwrap_or_default();
                let bytes: u64 = files.iter().map(|f| f.file_size).sum();
                if bytes > 0 {
                    give_back_quota(tx, sender, bytes as i64)?;
                }
                unused_files.extend(files.into_iter().map(|f| f.file_path));
            }
        }
        tx.prepare_cached("DELETE FROM scheduled_messages WHERE id = ?1")?.execute([id])?;
    }
    let next: Option<i64> = tx.query_row("SELECT MIN(send_at) FROM scheduled_messages", [], |r| r.get(0))?;
    Ok(Due { delivered, unused_files, more, next })
}

/// The message `user` may act on, with its room's members.
fn visible_message(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    id: MessageId,
) -> Result<(MessageRow, RoomInfo), StoreError> {
    let row = reads::message_row(tx, user, id)?.ok_or(StoreError::NotFound("Message not found"))?;
    let room = room_of_member(tx, cache, row.room_id, user)?.ok_or(StoreError::NotFound("Message not found"))?;
    Ok((row, room))
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
    let (row, room) = visible_message(tx, cache, user, id)?;
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
    let event = Event::MessageUpdate { message: message.clone(), liked_by };
    emit(tx, events, Scope::Room(message.room_id), room.members, event, serde_json::json!({"message_id": id}))?;
    Ok((message, liked))
}

fn delete(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    id: MessageId,
    events: &mut Vec<Envelope>,
) -> Result<(Message, bool, Vec<String>), StoreError> {
    let (row, room) = visible_message(tx, cache, user, id)?;
    if row.sender_id != user {
        return Err(StoreError::Forbidden("Only the sender can delete this message"));
    }
    let liked = row.liked;
    let room_id = row.room_id;
    let already = row.is_deleted;
    let files: Vec<String> = row.files.iter().flatten().map(|f| f.file_path.clone()).collect();
    // A forwarded copy's files count against whoever uploaded them.
    let bytes: u64 =
        if row.forwarded_from.is_some() { 0 } else { row.files.iter().flatten().map(|f| f.file_size).sum() };
    let (mut message, _) = message_from(tx, cache, row)?;
    if !already && bytes > 0 {
        give_back_quota(tx, user, bytes as i64)?;
    }
    if !already {
        tx.prepare_cached(
            "UPDATE chat_messages SET content = '', files_data = NULL, file_name = NULL, file_path = NULL,
                 file_size = NULL, mime_type = NULL, duration = NULL, is_deleted = 1 WHERE id = ?1",
        )?
        .execute([id])?;
        let event = Event::MessageDelete { id, room_id };
        emit(tx, events, Scope::Room(room_id), room.members, event, serde_json::json!({"message_id": id}))?;
    }
    message.content.clear();
    message.files = None;
    message.duration = None;
    message.is_deleted = true;
    message.local_temp_id = None;
    let unused = if already { Vec::new() } else { release_files(tx, files)? };
    Ok((message, liked, unused))
}

/// Gives `bytes` of stored files back to a user's quota (never below zero).
fn give_back_quota(tx: &Connection, user: UserId, bytes: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE users SET storage_bytes = max(storage_bytes - ?1, 0) WHERE id = ?2")?
        .execute(params![bytes, user])?;
    Ok(())
}

/// A deleted message lets go of its files; returns those no message uses
/// any more (the caller removes them from disk after the commit).
fn release_files(tx: &Connection, files: Vec<String>) -> Result<Vec<String>, StoreError> {
    let mut unused = Vec::new();
    for path in files {
        let left: Option<i64> = tx
            .prepare_cached("UPDATE file_refs SET refs = refs - 1 WHERE file_path = ?1 RETURNING refs")?
            .query_row([&path], |r| r.get(0))
            .optional()?;
        match left {
            // Still shared; with one user left it goes back to having no row.
            Some(left) => {
                if left <= 1 {
                    tx.prepare_cached("DELETE FROM file_refs WHERE file_path = ?1")?.execute([&path])?;
                }
            }
            None => unused.push(path),
        }
    }
    Ok(unused)
}

/// Copies a message the user can see into rooms of theirs (SPEC section
/// 10): each copy is the user's new message, with the original's text and
/// files (shared on disk, counted in `file_refs`) and `forwarded_from`
/// naming the first original.
fn forward(
    tx: &Connection,
    cache: &mut Cache,
    options: &WriterOptions,
    user: UserId,
    id: MessageId,
    room_ids: Vec<RoomId>,
    events: &mut Vec<Envelope>,
) -> Result<Vec<(Message, bool)>, StoreError> {
    let (row, _) = visible_message(tx, cache, user, id)?;
    if row.is_deleted {
        return Err(StoreError::Invalid("A deleted message cannot be forwarded"));
    }
    let origin = match &row.forwarded_from {
        Some(first) => first.clone(),
        None => {
            let sender = user_or_placeholder(tx, cache, row.sender_id)?;
            ForwardedFrom { message_id: row.id, sender_name: sender.name.clone() }
        }
    };
    let mut copies = Vec::with_capacity(room_ids.len());
    for room_id in room_ids {
        let copy = NewMessage {
            sender: user,
            room_id,
            receiver_id: None,
            message_type: row.message_type,
            content: row.content.clone(),
            local_temp_id: None,
            files: row.files.clone(),
            duration: row.duration,
            reply_to_id: None,
            forwarded_from: Some(origin.clone()),
            files_counted: true,
            uploads: Vec::new(),
        };
        let SendOutcome::Stored(copy_id) = send_message(tx, cache, options, copy, events)? else {
            return Err(StoreError::Conflict("Duplicate message"));
        };
        for file in row.files.iter().flatten() {
            tx.prepare_cached(
                "INSERT INTO file_refs (file_path, refs) VALUES (?1, 2)
                 ON CONFLICT (file_path) DO UPDATE SET refs = refs + 1",
            )?
            .execute([&file.file_path])?;
        }
        let stored = reads::message_row(tx, user, copy_id)?.ok_or(StoreError::NotFound("Message not found"))?;
        copies.push(message_from(tx, cache, stored)?);
    }
    Ok(copies)
}

fn like_message(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    id: MessageId,
    like: bool,
    events: &mut Vec<Envelope>,
) -> Result<LikeState, StoreError> {
    let (row, room) = visible_message(tx, cache, user, id)?;
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
        let event = Event::MessageLike { id, room_id: row.room_id, user_id: user, like_count };
        let data = serde_json::json!({"message_id": id, "user_id": user});
        emit(tx, events, Scope::Room(row.room_id), room.members, event, data)?;
    }
    Ok(LikeState { id, is_liked: like, like_count })
}

fn react(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    id: MessageId,
    emoji: String,
    add: bool,
    events: &mut Vec<Envelope>,
) -> Result<Vec<Reaction>, StoreError> {
    let (row, room) = visible_message(tx, cache, user, id)?;
    if add && row.is_deleted {
        return Err(StoreError::Invalid("Cannot react to a deleted message"));
    }
    let current = reads::reactions(tx, id)?;
    if add && current.len() >= MAX_REACTIONS && !current.iter().any(|r| r.emoji == emoji) {
        return Err(StoreError::TooManyReactions(MAX_REACTIONS));
    }
    let changed = if add {
        tx.prepare_cached(
            "INSERT INTO message_reactions (message_id, emoji, user_id, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![id, emoji, user, now_ms()])?
    } else {
        tx.prepare_cached("DELETE FROM message_reactions WHERE message_id = ?1 AND emoji = ?2 AND user_id = ?3")?
            .execute(params![id, emoji, user])?
    };
    if changed == 0 {
        return Ok(current);
    }
    let reactions = reads::reactions(tx, id)?;
    let data = serde_json::json!({"message_id": id, "user_id": user, "emoji": emoji, "added": add});
    let event = Event::MessageReaction {
        id,
        room_id: row.room_id,
        user_id: user,
        emoji,
        added: add,
        reactions: reactions.clone(),
    };
    emit(tx, events, Scope::Room(row.room_id), room.members, event, data)?;
    Ok(reactions)
}

/// Moves the member's `last_read_id` to the room's newest message; answers
/// how many messages of others that marked read.
fn mark_read(
    tx: &Connection,
    cache: &mut Cache,
    user: UserId,
    room_id: RoomId,
    events: &mut Vec<Envelope>,
) -> Result<i64, StoreError> {
    let Some(room) = room_of_member(tx, cache, room_id, user)? else {
        return Err(StoreError::NotFound("Room not found"));
    };
    let (last_read, newest): (i64, i64) = tx
        .prepare_cached(
            "SELECT cp.last_read_id, (SELECT COALESCE(MAX(id), 0) FROM chat_messages WHERE room_id = ?1)
             FROM chat_participants cp WHERE cp.room_id = ?1 AND cp.user_id = ?2",
        )?
        .query_row(params![room_id, user], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let marked: i64 = tx
        .prepare_cached(
            "SELECT count(*) FROM chat_messages WHERE room_id = ?1 AND id > ?2 AND id <= ?3
                 AND sender_id != ?4 AND is_deleted = 0",
        )?
        .query_row(params![room_id, last_read, newest, user], |r| r.get(0))?;
    let last_read_id = newest.max(last_read);
    tx.prepare_cached(
        "UPDATE chat_participants SET last_read_at = ?1, last_read_id = ?2 WHERE room_id = ?3 AND user_id = ?4",
    )?
    .execute(params![now_ms(), last_read_id, room_id, user])?;
    // SPEC: a read always tells the room, also when nothing was unread.
    let user_name = user_or_placeholder(tx, cache, user)?.name.clone();
    let event = Event::MessageRead { room_id, user_id: user, user_name, last_read_id };
    let data = serde_json::json!({"user_id": user, "last_read_id": last_read_id});
    emit(tx, events, Scope::Room(room_id), room.members, event, data)?;
    Ok(marked)
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

/// Removes up to a batch of events older than `before_ms`, oldest first, and
/// moves the horizon past them (positions only grow, so "older" is a prefix).
fn prune_events(tx: &Connection, before_ms: i64) -> Result<usize, StoreError> {
    // Walk from the oldest and stop at the first young one: a scan of the
    // batch, never of the table.
    let mut through = None;
    {
        let mut stmt = tx.prepare_cached("SELECT id, created_at FROM events ORDER BY id LIMIT 5000")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (id, created_at): (i64, i64) = (row.get(0)?, row.get(1)?);
            if created_at >= before_ms {
                break;
            }
            through = Some(id);
        }
    }
    let Some(through) = through else { return Ok(0) };
    let removed = tx.prepare_cached("DELETE FROM events WHERE id <= ?1")?.execute([through])?;
    tx.prepare_cached("UPDATE event_horizon SET pruned_through = max(pruned_through, ?1) WHERE id = 1")?
        .execute([through])?;
    Ok(removed)
}

/// Messages one retention batch removes at most: a short write, so other
/// commands wait little behind it.
const EXPIRE_BATCH: usize = 500;

/// Removes up to a batch of messages created before `before_ms`, oldest
/// first, stopping at the first younger one (so what goes is a prefix of
/// the ids). With them go their likes and reactions; replies that quote
/// them keep their text and lose the quote; their files are released (and
/// their bytes given back to the sender's quota, as a delete does). The
/// search index learns of it through a `messages_expired` event that no
/// client receives: the messages are gone from history, not deleted by
/// someone, and a replay skips a `new_message` whose message is gone.
fn expire_messages(tx: &Connection, before_ms: i64) -> Result<Expired, StoreError> {
    struct Old {
        id: MessageId,
        sender: UserId,
        forwarded: bool,
        indexed: bool,
        files_data: Option<String>,
    }
    let mut old = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, created_at, sender_id, forwarded_from_id IS NOT NULL, is_deleted = 0 AND content <> '',
                    files_data
             FROM chat_messages ORDER BY id LIMIT ?1",
        )?;
        let mut rows = stmt.query([EXPIRE_BATCH as i64])?;
        while let Some(row) = rows.next()? {
            if row.get::<_, i64>(1)? >= before_ms {
                break;
            }
            old.push(Old {
                id: row.get(0)?,
                sender: row.get(2)?,
                forwarded: row.get(3)?,
                indexed: row.get(4)?,
                files_data: row.get(5)?,
            });
        }
    }
    let Some(through) = old.last().map(|m| m.id) else { return Ok(Expired::default()) };
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
            give_back_quota(tx, message.sender, bytes)?;
        }
    }
    tx.prepare_cached("UPDATE chat_messages SET reply_to_id = NULL WHERE reply_to_id <= ?1")?.execute([through])?;
    tx.prepare_cached("DELETE FROM message_likes WHERE message_id <= ?1")?.execute([through])?;
    tx.prepare_cached("DELETE FROM message_reactions WHERE message_id <= ?1")?.execute([through])?;
    let removed = tx.prepare_cached("DELETE FROM chat_messages WHERE id <= ?1")?.execute([through])?;
    let indexed: Vec<MessageId> = old.iter().filter(|m| m.indexed).map(|m| m.id).collect();
    if !indexed.is_empty() {
        tx.prepare_cached(
            "INSERT INTO events (room_id, user_id, kind, data, created_at) VALUES (NULL, NULL, 'messages_expired', ?1, ?2)",
        )?
        .execute(params![serde_json::json!({ "message_ids": indexed }).to_string(), now_ms()])?;
    }
    let unused_files = release_files(tx, files)?;
    Ok(Expired { removed, unused_files })
}

/// The last time a user was seen, for tests and tools.
pub fn last_seen(conn: &Connection, user: UserId) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row("SELECT last_seen FROM user_presence WHERE user_id = ?1", [user], |r| r.get(0)).optional()?)
}
