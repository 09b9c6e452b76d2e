//! One WebSocket connection: a reader (this task) that parses frames and
//! turns them into writes, and a writer task that first replays stored
//! events from the client's cursor, then drains the bounded outbox, pings on
//! a timer and closes with the right code. The hub only ever `try_send`s
//! into the outbox; when it is full the hub tells us to close (1013) instead
//! of waiting — or, while we replay, drops the frame for us to read from
//! storage.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};

use super::metered::Metered;
use super::protocol::{self, ClientCommand, FileIn, SendMessage, UploadRef};
use crate::attach::{self, FileMessageKind, IncomingFile, StoredFile};
use crate::hub::outbox::{self, OutboxReceiver, OutboxSender};
use crate::hub::{CatchUp, CloseReason, ConnId, ConnectionEntry, Outgoing};
use crate::limits::{Meter, retry_after_secs};
use crate::metrics::Limit;
use crate::model::{
    Cursor, Envelope, Event, FileMeta, MAX_SCHEDULE_AHEAD_MS, MessageType, RESYNC_REQUIRED, RoomId, TempId, UserId,
    error_frame, synced_frame,
};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::api::{EventsPage, StreamBounds};
use crate::store::writer::{NewMessage, SendOutcome};
use crate::time::now_ms;

type Socket = WebSocketStream<Metered<TokioIo<Upgraded>>>;

/// Who is on the other end, settled by the upgrade.
pub struct Session {
    pub user: UserId,
    pub user_name: String,
    /// Token expiry, Unix seconds: the connection closes with 1008 then.
    pub expires_at: u64,
    /// The token's version and id: a revocation that names them closes the
    /// connection with 1008.
    pub token_version: u32,
    pub token_id: Option<String>,
    /// The current room (`join_room`), used when a request leaves out `room_id`.
    pub room: Option<RoomId>,
    /// Where the replay of stored events starts.
    pub replay_from: ReplayFrom,
}

/// Where a connection's replay starts (the `cursor` of the upgrade).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayFrom {
    /// No cursor: nothing to replay, `synced` with the current cursor.
    Now,
    Cursor(Cursor),
    /// A cursor the server cannot read: `resync_required`, then as `Now`.
    Unreadable,
}

/// What the write side needs to replay stored events before going live.
struct Replay {
    state: Arc<AppState>,
    user: UserId,
    from: ReplayFrom,
    /// The stream's head and horizon before the connection registered.
    now: StreamBounds,
    catch_up: Arc<CatchUp>,
}

/// Events read from storage per round trip of a replay.
const REPLAY_PAGE: u32 = 256;

impl Replay {
    /// Sends every stored event after the cursor, then `synced` (without a
    /// cursor: `synced` first, with the head read before registering, then
    /// whatever committed since, from storage, as live frames); answers the
    /// position sent up to (live frames at or below it are duplicates).
    async fn run(&self, sink: &mut SplitSink<Socket, WsMessage>) -> Result<i64, Ending> {
        let gone = |_| Ending::Gone;
        let head = self.now.head;
        let (mut sent, synced_first) = match self.from {
            ReplayFrom::Now => (head, true),
            ReplayFrom::Cursor(cursor) if self.now.serves(cursor) => (cursor.0, false),
            ReplayFrom::Cursor(_) | ReplayFrom::Unreadable => {
                // Retention removed what follows this cursor (or it is from
                // another database): the client reloads over REST.
                sink.send(WsMessage::text(RESYNC_REQUIRED)).await.map_err(gone)?;
                (head, true)
            }
        };
        if synced_first {
            sink.send(WsMessage::text(synced_frame(Cursor(head)))).await.map_err(gone)?;
        }
        loop {
            loop {
                let (user, after, links) = (self.user, sent, self.state.links.clone());
                let page = match self.state.reader.events_after(user, after, REPLAY_PAGE, links).await {
                    Ok(page) => page,
                    Err(e) => {
                        // Never skip a gap: the client resumes from its cursor.
                        tracing::warn!(error = %e, "replay read failed");
                        return Err(Ending::Close(CloseCode::Error, "storage unavailable; reconnect with your cursor"));
                    }
                };
                let EventsPage { frames, through, has_more } = page;
                for frame in frames {
                    sink.feed(WsMessage::text(frame)).await.map_err(gone)?;
                }
                sink.flush().await.map_err(gone)?;
                sent = through.max(sent);
                if !has_more {
                    break;
                }
            }
            // A live frame dropped while replaying is in storage: read on.
            if self.catch_up.finish_replay() {
                break;
            }
        }
        if !synced_first {
            sink.send(WsMessage::text(synced_frame(Cursor(sent)))).await.map_err(gone)?;
        }
        Ok(sent)
    }
}

/// How the writer side should end.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Close(CloseCode, &'static str),
    /// The peer is gone or the socket failed: nothing more to send.
    Gone,
}

/// A `send_message` the writer is working on.
type Pending = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// A connection registered with the hub before its handshake is answered,
/// so that everything committed after the 101 reaches it.
pub struct Registration {
    conn_id: ConnId,
    outbox_tx: OutboxSender<Outgoing>,
    outbox_rx: OutboxReceiver<Outgoing>,
    kill_rx: oneshot::Receiver<CloseReason>,
    catch_up: Arc<CatchUp>,
    /// The stream's head and horizon before registering: every event after
    /// it is replayed or arrives live (or both, and the copy is dropped).
    now: StreamBounds,
}

impl Registration {
    /// Registers `session`'s connection-to-be with the hub (answered once its
    /// shard has it). Live events wait in the outbox from then on.
    pub async fn new(state: &AppState, session: &Session) -> Result<Registration, StoreError> {
        let now = state.reader.stream_bounds().await?;
        let (outbox_tx, outbox_rx) = outbox::bounded::<Outgoing>(state.config.ws_outbox);
        let (kill_tx, kill_rx) = oneshot::channel();
        let conn_id = state.hub.next_conn_id();
        let catch_up = Arc::new(CatchUp::default());
        let registered = state.hub.register(
            session.user,
            ConnectionEntry {
                id: conn_id,
                outbox: outbox_tx.clone(),
                kill: kill_tx,
                token_version: session.token_version,
                token_id: session.token_id.as_deref().map(Box::from),
                catch_up: catch_up.clone(),
            },
        );
        registered.await.map_err(|_| StoreError::Unavailable)?;
        Ok(Registration { conn_id, outbox_tx, outbox_rx, kill_rx, catch_up, now })
    }

    /// The handshake failed: the hub forgets the connection.
    pub fn cancel(self, state: &AppState, user: UserId) {
        state.hub.unregister(user, self.conn_id);
    }
}

pub async fn run(
    state: Arc<AppState>,
    socket: Socket,
    session: Session,
    meter: Arc<Meter>,
    registration: Registration,
) {
    let (sink, stream) = socket.split();
    let Registration { conn_id, outbox_tx, outbox_rx, kill_rx, catch_up, now } = registration;
    let (end_tx, end_rx) = oneshot::channel::<Ending>();
    let last_heard = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let replay = Replay { state: state.clone(), user: session.user, from: session.replay_from, now, catch_up };
    let writer = tokio::spawn(write_loop(
        sink,
        outbox_rx,
        kill_rx,
        end_rx,
        WriterTimers {
            ping_every: state.config.ws_ping_interval,
            idle_timeout: state.config.ws_idle_timeout,
            expires_at: session.expires_at,
            last_heard: last_heard.clone(),
            started,
        },
        replay,
    ));
    let user = session.user;
    let mut reader = Reader { state: state.clone(), session, outbox: outbox_tx, meter, last_typing: None };
    let ending = reader.read_loop(stream, writer, last_heard, started).await;
    if let Some((ending, writer)) = ending {
        let _ = end_tx.send(ending);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }
    state.hub.unregister(user, conn_id);
}

struct WriterTimers {
    ping_every: Duration,
    idle_timeout: Duration,
    expires_at: u64,
    last_heard: Arc<AtomicU64>,
    started: Instant,
}

fn close_frame(code: CloseCode, reason: &'static str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

async fn write_loop(
    mut sink: SplitSink<Socket, WsMessage>,
    mut outbox: OutboxReceiver<Outgoing>,
    mut kill: oneshot::Receiver<CloseReason>,
    mut end: oneshot::Receiver<Ending>,
    timers: WriterTimers,
    replay: Replay,
) {
    let replayed = tokio::select! {
        biased;
        reason = &mut kill => Err(kill_ending(reason)),
        ending = &mut end => Err(ending.unwrap_or(Ending::Gone)),
        // Boxed: the replay awaits the store (on PostgreSQL a pooled
        // client and its queries, kilobytes of future), and inline it would
        // size the writer task for the connection's whole life.
        sent = Box::pin(replay.run(&mut sink)) => sent,
    };
    drop(replay);
    let ending = match replayed {
        Ok(sent) => live(&mut sink, &mut outbox, &mut kill, &mut end, &timers, sent).await,
        Err(ending) => ending,
    };
    if let Ending::Close(code, reason) = ending {
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(close_frame(code, reason))).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
}

fn kill_ending(reason: Result<CloseReason, oneshot::error::RecvError>) -> Ending {
    match reason {
        Ok(CloseReason::SlowConsumer) => {
            Ending::Close(CloseCode::Again, "too slow to keep up; reconnect with your cursor")
        }
        Ok(CloseReason::Revoked) => Ending::Close(CloseCode::Policy, "token revoked"),
        Ok(CloseReason::Shutdown) => Ending::Close(CloseCode::Away, "server shutting down"),
        Err(_) => Ending::Gone,
    }
}

/// Drains the outbox to the socket (skipping stored events at or below
/// `replayed`, which the replay sent), pings, and ends on a kill, the
/// reader's word, the idle timeout or the token's expiry.
async fn live(
    sink: &mut SplitSink<Socket, WsMessage>,
    outbox: &mut OutboxReceiver<Outgoing>,
    kill: &mut oneshot::Receiver<CloseReason>,
    end: &mut oneshot::Receiver<Ending>,
    timers: &WriterTimers,
    replayed: i64,
) -> Ending {
    let fresh = |item: &Outgoing| item.position.is_none_or(|p| p.get() > replayed);
    let mut ping = tokio::time::interval_at(Instant::now() + timers.ping_every, timers.ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let until_expiry = timers.expires_at.saturating_sub(crate::auth::jwt::unix_now());
    let expiry = tokio::time::sleep(Duration::from_secs(until_expiry));
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            biased;
            reason = &mut *kill => {
                if let Ok(CloseReason::Shutdown) = reason {
                    // Frames already queued were committed: send them first.
                    while let Some(item) = outbox.try_recv() {
                        if fresh(&item) && sink.feed(WsMessage::Text(item.frame)).await.is_err() {
                            break;
                        }
                    }
                }
                return kill_ending(reason);
            }
            ending = &mut *end => return ending.unwrap_or(Ending::Gone),
            item = outbox.recv() => {
                let Some(item) = item else { return Ending::Gone };
                let write = std::pin::pin!(async {
                    if fresh(&item) {
                        sink.feed(WsMessage::Text(item.frame)).await?;
                    }
                    // Batch whatever else is queued into one flush.
                    while let Some(item) = outbox.try_recv() {
                        if fresh(&item) {
                            sink.feed(WsMessage::Text(item.frame)).await?;
                        }
                    }
                    sink.flush().await
                });
                // A peer that accepts no bytes for the idle timeout is gone.
                // The timer is armed only when the socket does not take the
                // frames at once: arming one per write cost a timer-wheel
                // insert and removal per delivered copy.
                if !matches!(write_within(write, timers.idle_timeout).await, Some(Ok(()))) {
                    return Ending::Gone;
                }
            }
            _ = ping.tick() => {
                let heard = Duration::from_millis(timers.last_heard.load(Ordering::Relaxed));
                if timers.started.elapsed().saturating_sub(heard) >= timers.idle_timeout {
                    return Ending::Close(CloseCode::Away, "no answer to pings");
                }
                // A ping waits for the socket like any frame, and no longer.
                let send = std::pin::pin!(sink.send(WsMessage::Ping(Default::default())));
                if !matches!(write_within(send, timers.idle_timeout).await, Some(Ok(()))) {
                    return Ending::Gone;
                }
            }
            _ = &mut expiry => return Ending::Close(CloseCode::Policy, "token expired"),
        }
    }
}

/// Runs `write`, giving up after `limit` once it has to wait: the first
/// poll runs without a timer (a socket with room takes the bytes at once).
async fn write_within<T>(mut write: Pin<&mut impl Future<Output = T>>, limit: Duration) -> Option<T> {
    if let Poll::Ready(done) = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        return Some(done);
    }
    tokio::time::timeout(limit, write).await.ok()
}

struct Reader {
    state: Arc<AppState>,
    session: Session,
    outbox: OutboxSender<Outgoing>,
    /// This connection's share of the frame budget.
    meter: Arc<Meter>,
    /// The last typing state sent on: repeats within `TYPING_REPEAT` merge.
    last_typing: Option<(RoomId, bool, Instant)>,
}

/// A client repeats `typing: true` every few seconds while the user types;
/// the same state for the same room within this window is merged into the
/// one already sent.
const TYPING_REPEAT: Duration = Duration::from_secs(2);

/// The shortest time between two typing events a connection passes on.
const TYPING_GAP: Duration = Duration::from_millis(250);

/// A file whose base64 stays inside the frame: only its byte range is kept,
/// so the blocking decoder can read it without a copy.
struct FileJob {
    data: FileData,
    file_name: String,
    file_size: i64,
    mime_type: String,
    duration: Option<f64>,
}

enum FileData {
    InFrame(Range<usize>),
    Owned(String),
}

impl Reader {
    /// Reads until the peer leaves or the writer ends. Returns how the writer
    /// should end if it is still running.
    async fn read_loop(
        &mut self,
        mut stream: futures_util::stream::SplitStream<Socket>,
        mut writer: tokio::task::JoinHandle<()>,
        last_heard: Arc<AtomicU64>,
        started: Instant,
    ) -> Option<(Ending, tokio::task::JoinHandle<()>)> {
        let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
        loop {
            tokio::select! {
                _ = &mut writer => return None,
                Some(reply) = pending.next(), if !pending.is_empty() => {
                    if let Some(frame) = reply {
                        self.send(frame).await;
                    }
                }
                frame = stream.next() => {
                    last_heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    // A whole message (or the end): its bytes leave the budget.
                    self.meter.release();
                    match frame {
                        Some(Ok(WsMessage::Text(text))) => {
                            // Boxed: inline, the handler's state (~2.7 KiB)
                            // would sit in every idle connection's task.
                            if let Some(job) = Box::pin(self.handle(text)).await {
                                pending.push(job);
                            }
                        }
                        Some(Ok(WsMessage::Binary(_))) => {
                            self.send(error_frame("Binary frames are not supported; send JSON text", None)).await;
                        }
                        Some(Ok(WsMessage::Close(_))) | None => break,
                        Some(Ok(_)) => {}
                        Some(Err(WsError::Capacity(_))) => {
                            return Some((Ending::Close(CloseCode::Size, "message too big"), writer));
                        }
                        Some(Err(_)) if self.meter.refused() => {
                            if self.state.metrics.limited(Limit::FrameBudget) {
                                tracing::warn!(user = self.session.user, "WebSocket closed: the budget for unfinished frames is spent");
                            }
                            return Some((Ending::Close(CloseCode::Again, "server busy: too much unfinished data, retry later"), writer));
                        }
                        Some(Err(_)) => return Some((Ending::Gone, writer)),
                    }
                }
            }
        }
        // The peer closed: let the writer answer in-flight sends before it ends.
        let drain = async {
            while let Some(reply) = pending.next().await {
                if let Some(frame) = reply {
                    self.send(frame).await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        Some((Ending::Close(CloseCode::Normal, ""), writer))
    }

    /// Queues a frame for this connection only (replies, errors).
    async fn send(&self, frame: String) {
        let _ = self.outbox.send(Outgoing::reply(frame)).await;
    }

    /// The members of `room_id`, if this user is one of them. Asked each
    /// time: membership changes while a connection lives.
    async fn members_of(&self, room_id: RoomId) -> Result<Option<Vec<UserId>>, StoreError> {
        let user = self.session.user;
        let members = self.state.reader.member_ids(room_id).await?;
        Ok(members.contains(&user).then_some(members))
    }

    fn room_or_current(&self, room_id: Option<RoomId>) -> Option<RoomId> {
        room_id.or(self.session.room)
    }

    async fn handle(&mut self, text: Utf8Bytes) -> Option<Pending> {
        let command = match protocol::parse(text.as_str()) {
            Ok(c) => c,
            Err(e) => {
                self.send(error_frame(&e.message, e.local_temp_id.as_deref())).await;
                return None;
            }
        };
        match command {
            ClientCommand::Ping => self.send(r#"{"type":"pong"}"#.to_owned()).await,
            ClientCommand::JoinRoom { room_id } => match self.members_of(room_id).await {
                Ok(Some(_)) => {
                    self.session.room = Some(room_id);
                    self.send(format!(r#"{{"type":"room_joined","data":{{"room_id":{room_id}}}}}"#)).await;
                }
                Ok(None) => self.send(error_frame("Room not found", None)).await,
                Err(e) => self.send(error_frame(&store_message(&e), None)).await,
            },
            ClientCommand::LeaveRoom => {
                let left = self.session.room.take();
                self.send(serde_json::json!({"type": "room_left", "data": {"room_id": left}}).to_string()).await;
            }
            ClientCommand::Typing { room_id, is_typing } => {
                let Some(room_id) = self.room_or_current(room_id) else {
                    self.send(error_frame("room_id is required", None)).await;
                    return None;
                };
                if self.typing_is_repeat(room_id, is_typing) {
                    return None;
                }
                if self.state.limiter.ws_typing.check(self.session.user).is_err() {
                    // Typing is a hint: the excess is dropped without a word.
                    let _ = self.state.metrics.limited(Limit::WsTyping);
                    return None;
                }
                match self.members_of(room_id).await {
                    Ok(Some(mut members)) => {
                        self.last_typing = Some((room_id, is_typing, Instant::now()));
                        members.retain(|m| *m != self.session.user);
                        if !members.is_empty() {
                            let event = Event::Typing {
                                room_id,
                                user_id: self.session.user,
                                user_name: self.session.user_name.clone(),
                                is_typing,
                            };
                            self.state.fanout.publish(Envelope::new(members, event));
                        }
                    }
                    Ok(None) => self.send(error_frame("Room not found", None)).await,
                    Err(e) => self.send(error_frame(&store_message(&e), None)).await,
                }
            }
            ClientCommand::MarkRead { room_id } => {
                if let Err(refusal) = self.take_command_token() {
                    self.send(error_frame(&refusal, None)).await;
                    return None;
                }
                let Some(room_id) = self.room_or_current(room_id) else {
                    self.send(error_frame("room_id is required", None)).await;
                    return None;
                };
                if let Err(e) = self.state.writer.mark_read(self.session.user, room_id).await {
                    self.send(error_frame(&store_message(&e), None)).await;
                }
            }
            ClientCommand::SendMessage(message) => {
                let temp = message.local_temp_id.as_deref().map(str::to_owned);
                if let Err(refusal) = self.take_command_token() {
                    self.send(error_frame(&refusal, temp.as_deref())).await;
                    return None;
                }
                return match self.send_message(&text, message).await {
                    Ok(pending) => Some(pending),
                    Err(e) => {
                        self.send(error_frame(&e, temp.as_deref())).await;
                        None
                    }
                };
            }
        }
        None
    }

    /// Whether this typing state for this room was sent on moments ago.
    /// Also any typing within `TYPING_GAP` of the last one passed on, which
    /// holds with rate limits off: flipping the state as fast as possible
    /// would otherwise queue work in the hub faster than it can fan out.
    fn typing_is_repeat(&self, room_id: RoomId, is_typing: bool) -> bool {
        self.last_typing.is_some_and(|(room, state, at)| {
            at.elapsed() < TYPING_GAP || (room == room_id && state == is_typing && at.elapsed() < TYPING_REPEAT)
        })
    }

    /// One token of the user's command bucket, or the text of the refusal.
    fn take_command_token(&self) -> Result<(), String> {
        self.state.limiter.ws_commands.check(self.session.user).map_err(|wait| {
            if self.state.metrics.limited(Limit::WsCommands) {
                tracing::info!(user = self.session.user, "WebSocket command refused: the user sends too fast");
            }
            format!("Too many messages: slow down and retry in {} s", retry_after_secs(wait))
        })
    }

    /// Refuses files that would take the user past the storage quota, before
    /// any of them is decoded (the writer checks again, exactly, at commit).
    async fn check_quota(&self, files: &[FileIn<'_>]) -> Result<(), String> {
        let Some(quota) = self.state.config.limits.user_quota_bytes else { return Ok(()) };
        let incoming: u64 = files.iter().map(|f| f.file_size.max(0) as u64).sum();
        let user = self.session.user;
        let used = self.state.reader.storage_bytes(user).await.map_err(|e| store_message(&e))?;
        if used.saturating_add(incoming) > quota {
            if self.state.metrics.limited(Limit::Quota) {
                tracing::info!(user, quota, "attachment refused: storage quota reached");
            }
            return Err(StoreError::QuotaExceeded(quota).to_string());
        }
        Ok(())
    }

    async fn send_message(&mut self, frame: &Utf8Bytes, m: SendMessage<'_>) -> Result<Pending, String> {
        let room_id = self.room_or_current(m.room_id).ok_or("room_id is required")?;
        if let Some(at) = m.send_at {
            let now = crate::time::now_ms();
            if at <= now {
                return Err("send_at must be in the future".into());
            }
            if at > now + MAX_SCHEDULE_AHEAD_MS {
                return Err("send_at may be at most one year ahead".into());
            }
        }
        let mut new = NewMessage {
            sender: self.session.user,
            room_id,
            receiver_id: m.receiver_id,
            message_type: m.message_type,
            content: m.content.into_owned(),
            local_temp_id: m.local_temp_id.map(|t| t.into_owned()),
            files: None,
            duration: None,
            reply_to_id: m.reply_to_id,
            forwarded_from: None,
            files_counted: false,
            uploads: Vec::new(),
        };
        let mut stored: Vec<String> = Vec::new();
        let with_files = !m.files.is_empty() || !m.uploads.is_empty();
        if with_files && m.send_at.is_none() {
            let members = self.members_of(room_id).await.map_err(|e| store_message(&e))?;
            if members.is_none() {
                return Err("Room not found".into());
            }
            if let Some(temp) = new.local_temp_id.clone() {
                let sender = new.sender;
                let earlier =
                    self.state.reader.message_id_by_temp_id(sender, temp).await.map_err(|e| store_message(&e))?;
                if earlier.is_some() {
                    // A retry: the writer answers with the original message
                    // (before any file is stored or upload placed again).
                    return self.submit(new, Vec::new()).await;
                }
            }
        }
        if !m.uploads.is_empty() {
            let files = self.place_uploads(new.message_type, &m.uploads).await?;
            new.duration = voice_duration(new.message_type, &files);
            stored = files.iter().map(|f| f.rel_path.clone()).collect();
            new.files = Some(files.into_iter().map(file_meta).collect());
            new.uploads = m.uploads.iter().map(|u| u.upload_id.clone().into_owned()).collect();
        }
        if !m.files.is_empty() {
            self.check_quota(&m.files).await?;
            let files = self.store_files(frame, new.message_type, m.files).await?;
            new.duration = voice_duration(new.message_type, &files);
            stored = files.iter().map(|f| f.rel_path.clone()).collect();
            let bytes: u64 = files.iter().map(|f| f.file_size).sum();
            self.state.metrics.attachment_bytes.fetch_add(bytes, Ordering::Relaxed);
            new.files = Some(files.into_iter().map(file_meta).collect());
        }
        match m.send_at {
            Some(at) => self.schedule(new, at, stored).await,
            None => self.submit(new, stored).await,
        }
    }

    /// Links the caller's finished uploads into `chat_files/` under the
    /// names of this message's files. Their own bytes stay until the
    /// message commits (the writer consumes the upload rows in the same
    /// transaction, so each is used once).
    async fn place_uploads(&self, kind: MessageType, uploads: &[UploadRef<'_>]) -> Result<Vec<StoredFile>, String> {
        let kind = match kind {
            MessageType::Image => FileMessageKind::Image,
            MessageType::Voice => FileMessageKind::Voice,
            MessageType::File => FileMessageKind::File,
            MessageType::Text => return Err("A text message cannot carry files_data".into()),
        };
        let mut planned = Vec::with_capacity(uploads.len());
        for (index, upload) in uploads.iter().enumerate() {
            let unknown = || format!("upload_id {} is unknown, unfinished or already used", upload.upload_id);
            let path =
                attach::upload::upload_path(&self.state.config.data_dir, &upload.upload_id).ok_or_else(unknown)?;
            let row =
                self.state.reader.upload(upload.upload_id.clone().into_owned()).await.map_err(|e| store_message(&e))?;
            let row = row.filter(|u| u.user_id == self.session.user && u.complete).ok_or_else(unknown)?;
            let plan =
                attach::upload::plan_upload(&row.file_name, &row.mime_type, row.length).map_err(|e| e.to_string())?;
            if !attach::upload::kind_accepts(kind, plan.category) {
                return Err(format!(
                    "{}: File type not allowed. Allowed types: {}",
                    plan.sanitised,
                    attach::validate::allowed_types_text(kind)
                ));
            }
            if kind == FileMessageKind::Voice && !upload.duration.is_some_and(|d| d.is_finite() && d > 0.0) {
                return Err(format!("{}: Duration must be a number of seconds greater than 0", plan.sanitised));
            }
            planned.push((index, path, plan, upload.duration));
        }
        let (static_dir, user) = (self.state.config.static_dir.clone(), self.session.user);
        tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let mut placed: Vec<StoredFile> = Vec::with_capacity(planned.len());
            for (index, path, plan, duration) in &planned {
                match attach::upload::place_upload(&static_dir, path, user, now, *index, plan, *duration) {
                    Ok(file) => placed.push(file),
                    Err(e) => {
                        let paths: Vec<&str> = placed.iter().map(|f| f.rel_path.as_str()).collect();
                        attach::remove_stored(&static_dir, &paths);
                        return Err(e.to_string());
                    }
                }
            }
            Ok(placed)
        })
        .await
        .map_err(|e| format!("could not store the files: {e}"))?
    }

    /// Hands a message with `send_at` to the writer; `message_scheduled`
    /// reaches the sender's connections through the hub.
    async fn schedule(&self, message: NewMessage, send_at: i64, stored: Vec<String>) -> Result<Pending, String> {
        let consumed = message.uploads.clone();
        match self.state.writer.schedule(message, send_at).await {
            Ok(_) => {
                remove_uploads(&self.state, consumed).await;
                Ok(Box::pin(std::future::ready(None)))
            }
            Err(e) => {
                remove_files(&self.state, stored).await;
                Err(store_message(&e))
            }
        }
    }

    /// Hands the message to the writer; the returned future yields the frame
    /// to answer with (an error, or the original message of a retry), if any.
    async fn submit(&self, message: NewMessage, stored: Vec<String>) -> Result<Pending, String> {
        let temp = message.local_temp_id.clone();
        let consumed = message.uploads.clone();
        let viewer = self.session.user;
        let state = self.state.clone();
        let answer = match self.state.writer.submit_message(message).await {
            Ok(answer) => answer,
            Err(e) => {
                remove_files(&state, stored).await;
                return Err(store_message(&e));
            }
        };
        Ok(Box::pin(async move {
            let outcome = answer.await.unwrap_or(Err(StoreError::Unavailable));
            match outcome {
                Ok(SendOutcome::Stored(_)) => {
                    remove_uploads(&state, consumed).await;
                    None
                }
                Ok(SendOutcome::Duplicate(original)) => {
                    remove_files(&state, stored).await;
                    let data = original.json(viewer, false, &state.links, TempId::Show);
                    Some(crate::model::Frame { kind: "new_message", data, cursor: None }.to_json())
                }
                Err(e) => {
                    remove_files(&state, stored).await;
                    Some(error_frame(&store_message(&e), temp.as_deref()))
                }
            }
        }))
    }

    /// Validates, decodes and stores every file of a message on a blocking
    /// thread, reading base64 straight out of the frame.
    async fn store_files(
        &self,
        frame: &Utf8Bytes,
        kind: MessageType,
        files: Vec<FileIn<'_>>,
    ) -> Result<Vec<StoredFile>, String> {
        let kind = match kind {
            MessageType::Image => FileMessageKind::Image,
            MessageType::Voice => FileMessageKind::Voice,
            MessageType::File => FileMessageKind::File,
            MessageType::Text => return Err("A text message cannot carry files_data".into()),
        };
        let base = frame.as_str().as_ptr() as usize;
        let end = base + frame.len();
        let jobs: Vec<FileJob> = files
            .into_iter()
            .map(|f| {
                let data = match f.file_data {
                    std::borrow::Cow::Borrowed(s)
                        if (s.as_ptr() as usize) >= base && (s.as_ptr() as usize) + s.len() <= end =>
                    {
                        let start = s.as_ptr() as usize - base;
                        FileData::InFrame(start..start + s.len())
                    }
                    other => FileData::Owned(other.into_owned()),
                };
                FileJob {
                    data,
                    file_name: f.file_name.into_owned(),
                    file_size: f.file_size,
                    mime_type: f.mime_type.into_owned(),
                    duration: f.duration,
                }
            })
            .collect();
        let frame = frame.clone();
        let static_dir = self.state.config.static_dir.clone();
        let user = self.session.user;
        tokio::task::spawn_blocking(move || {
            let text = frame.as_str();
            let incoming: Vec<IncomingFile<'_>> = jobs
                .iter()
                .map(|j| IncomingFile {
                    file_data: match &j.data {
                        FileData::InFrame(range) => text.get(range.clone()).unwrap_or(""),
                        FileData::Owned(s) => s.as_str(),
                    },
                    file_name: &j.file_name,
                    file_size: j.file_size,
                    mime_type: &j.mime_type,
                    duration: j.duration,
                })
                .collect();
            attach::store_files(&static_dir, user, now_ms(), kind, &incoming).map_err(|e| {
                if e.is_server_error() {
                    tracing::warn!(error = ?e, "could not store an attachment");
                }
                e.to_string()
            })
        })
        .await
        .map_err(|e| format!("could not store the files: {e}"))?
    }
}

fn voice_duration(kind: MessageType, files: &[StoredFile]) -> Option<f64> {
    if kind != MessageType::Voice {
        return None;
    }
    Some(files.iter().filter_map(|f| f.duration).sum())
}

fn file_meta(f: StoredFile) -> FileMeta {
    FileMeta {
        file_name: f.file_name,
        file_path: f.rel_path,
        file_size: f.file_size,
        mime_type: f.mime_type,
        duration: f.duration,
        thumbnail_path: None,
    }
}

/// Removes the bytes of uploads a committed message used (its files are
/// linked into `chat_files/` already).
async fn remove_uploads(state: &AppState, ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    let data_dir = state.config.data_dir.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for id in ids {
            if let Some(path) = attach::upload::upload_path(&data_dir, &id)
                && let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a used upload");
            }
        }
    })
    .await;
}

async fn remove_files(state: &AppState, paths: Vec<String>) {
    attach::remove_stored_later(state.config.static_dir.clone(), paths).await;
}

/// The text of an `error` frame for a store failure (internal causes are logged, not sent).
fn store_message(e: &StoreError) -> String {
    match e {
        StoreError::NotFound(m) | StoreError::Conflict(m) | StoreError::Invalid(m) | StoreError::Forbidden(m) => {
            (*m).to_owned()
        }
        StoreError::Unavailable => "Server is shutting down".to_owned(),
        StoreError::QuotaExceeded(_) => e.to_string(),
        other => {
            tracing::warn!(error = %other, "send failed");
            "Internal server error".to_owned()
        }
    }
}
