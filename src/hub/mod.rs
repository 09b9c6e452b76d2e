//! The hub: fan-out of committed events to WebSocket connections.
//! `S` shards, each a task that owns the map `user → connections` of the
//! users with `user % S == shard` and is fed by one channel. No lock on the
//! delivery path. The hub never touches SQL or sockets: it renders frames and
//! pushes them into connection outboxes.

pub mod outbox;
mod shard;

use crate::links::Links;
use std::num::NonZeroI64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use self::outbox::OutboxSender;
use crate::metrics::Metrics;
use crate::model::{Envelope, UserId};

pub type ConnId = u64;

/// Why the hub asks a connection to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Its outbox was full: close with 1013 (try again later).
    SlowConsumer,
    /// The server is shutting down: close with 1001 (going away).
    Shutdown,
    /// The connection's token was revoked: close with 1008 (policy).
    Revoked,
}

/// What the hub keeps of one connection.
pub struct ConnectionEntry {
    pub id: ConnId,
    pub outbox: OutboxSender<Outgoing>,
    pub kill: oneshot::Sender<CloseReason>,
    /// The token the connection was opened with, for revocation.
    pub token_version: u32,
    pub token_id: Option<Box<str>>,
    /// Set while the connection replays stored events: a full outbox then
    /// means "read the rest from storage", not "too slow".
    pub catch_up: Arc<CatchUp>,
}

/// One frame for one connection, with the position of its stored event
/// (so a replaying connection can drop what it already sent). Positions
/// start at 1, so `NonZeroI64` keeps the item at 40 bytes: every outbox
/// holds one in place (`outbox::State`), allocated with its shared state.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub frame: Utf8Bytes,
    pub position: Option<NonZeroI64>,
}

const _: () = assert!(std::mem::size_of::<Outgoing>() == 40);

impl Outgoing {
    /// A reply to this connection alone (never stored).
    pub fn reply(frame: impl Into<Utf8Bytes>) -> Outgoing {
        Outgoing { frame: frame.into(), position: None }
    }
}

/// Where a connection stands between replay and live, shared with its hub
/// shard as one atomic state, so that "a live frame was dropped while
/// replaying" and "the replay is over" are ordered against each other (with
/// two flags the shard could see "replaying", the connection finish, and the
/// drop land after: an event neither replayed nor sent).
#[derive(Debug)]
pub struct CatchUp(AtomicU8);

const REPLAYING: u8 = 0;
/// Replaying, and a live frame was dropped: storage has it.
const LAGGED: u8 = 1;
const LIVE: u8 = 2;

impl Default for CatchUp {
    fn default() -> CatchUp {
        CatchUp(AtomicU8::new(REPLAYING))
    }
}

impl CatchUp {
    /// The shard found the outbox full: answers true when the connection is
    /// replaying (the frame may be dropped: storage has it), false when it
    /// is live (a slow consumer).
    pub fn dropped_while_replaying(&self) -> bool {
        match self.0.compare_exchange(REPLAYING, LAGGED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(state) => state == LAGGED,
        }
    }

    /// The replay reached the end of storage: answers true when it may go
    /// live, false when frames were dropped meanwhile (read storage again;
    /// the state is back to replaying).
    pub fn finish_replay(&self) -> bool {
        match self.0.compare_exchange(REPLAYING, LIVE, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(_) => {
                self.0.store(REPLAYING, Ordering::Release);
                false
            }
        }
    }

    pub fn is_live(&self) -> bool {
        self.0.load(Ordering::Acquire) == LIVE
    }
}

enum ShardCommand {
    Register { user: UserId, entry: ConnectionEntry, registered: oneshot::Sender<()> },
    Unregister { user: UserId, conn: ConnId },
    Deliver(Envelope),
    Shutdown,
}

/// The one way events reach connections, committed ones (from the writer)
/// and typing (from connections) alike. In one process it is the hub; in a
/// cluster a bus (NATS) implements it in front of each node's hub, so that
/// every node delivers to its own connections, in the same order.
pub trait Fanout: Send + Sync + 'static {
    fn publish(&self, envelope: Envelope);
}

impl Fanout for HubHandle {
    fn publish(&self, envelope: Envelope) {
        HubHandle::publish(self, envelope);
    }
}

/// A cloneable handle on all shards.
#[derive(Clone)]
pub struct HubHandle {
    shards: Arc<[mpsc::UnboundedSender<ShardCommand>]>,
    next_conn: Arc<AtomicU64>,
}

impl HubHandle {
    /// Starts `shards` shard tasks on the current runtime. Presence changes
    /// (a user's first connection opened, last one closed) come out of the
    /// returned receiver, in order, for the caller to store: the hub itself
    /// never touches the database.
    pub fn start(
        shards: usize,
        links: Arc<Links>,
        metrics: Arc<Metrics>,
    ) -> (HubHandle, mpsc::UnboundedReceiver<(UserId, bool)>) {
        let shards = shards.max(1).next_power_of_two();
        let (presence_tx, presence_rx) = mpsc::unbounded_channel::<(UserId, bool)>();
        let senders: Vec<_> = (0..shards)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(shard::run(rx, links.clone(), presence_tx.clone(), metrics.clone()));
                tx
            })
            .collect();
        (HubHandle { shards: senders.into(), next_conn: Arc::new(AtomicU64::new(1)) }, presence_rx)
    }

    pub fn shard_for_user(&self, user: UserId) -> usize {
        (user as u64 as usize) & (self.shards.len() - 1)
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a connection; the answer comes once its shard has it, so
    /// every event the shard delivers from then on reaches it.
    pub fn register(&self, user: UserId, entry: ConnectionEntry) -> oneshot::Receiver<()> {
        let (registered, answer) = oneshot::channel();
        let _ = self.shards[self.shard_for_user(user)].send(ShardCommand::Register { user, entry, registered });
        answer
    }

    pub fn unregister(&self, user: UserId, conn: ConnId) {
        let _ = self.shards[self.shard_for_user(user)].send(ShardCommand::Unregister { user, conn });
    }

    /// Hands an event to the shard of every user of its audience (once per shard).
    pub fn publish(&self, envelope: Envelope) {
        let mut seen: u64 = 0;
        let mut seen_many: Vec<usize> = Vec::new();
        for &user in envelope.audience.iter() {
            let shard = self.shard_for_user(user);
            let first = if shard < 64 {
                let bit = 1u64 << shard;
                let fresh = seen & bit == 0;
                seen |= bit;
                fresh
            } else if seen_many.contains(&shard) {
                false
            } else {
                seen_many.push(shard);
                true
            };
            if first {
                let _ = self.shards[shard].send(ShardCommand::Deliver(envelope.clone()));
            }
        }
    }

    /// Asks every connection to close with 1001 after what is queued for it.
    pub fn shutdown(&self) {
        for shard in self.shards.iter() {
            let _ = shard.send(ShardCommand::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CatchUp;

    #[test]
    fn a_drop_and_the_end_of_a_replay_are_ordered() {
        let quiet = CatchUp::default();
        assert!(quiet.finish_replay(), "nothing dropped: live at once");
        assert!(!quiet.dropped_while_replaying(), "live: a full outbox is a slow consumer");

        let busy = CatchUp::default();
        assert!(busy.dropped_while_replaying());
        assert!(busy.dropped_while_replaying(), "more drops while lagging");
        assert!(!busy.finish_replay(), "storage must be read again");
        assert!(!busy.is_live());
        assert!(busy.finish_replay());
        assert!(busy.is_live());
    }
}
