//! One hub shard: owns `user → connections` for its users. Delivery renders
//! an event once per viewer (once in all when every viewer sees the same
//! bytes) and `try_send`s the shared frame to each outbox; a full outbox is a
//! slow consumer, which is told to close and forgotten, never waited for.

use crate::links::Links;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::outbox::TrySendError;
use super::{CloseReason, ConnectionEntry, Outgoing, ShardCommand};
use crate::metrics::Metrics;
use crate::model::{Envelope, Event, Revocation, UserId};

/// A shard's connections by user.
type Users = HashMap<UserId, Vec<ConnectionEntry>, BuildHasherDefault<IdHasher>>;

/// Hashes a user id with two multiplications instead of SipHash (a lookup
/// per recipient of every event). Ids are the server's own numbers, never a
/// key a client picks, so flooding one bucket is not a concern; but a
/// shard's ids share their residue modulo the shard count, so the mixing
/// must reach the low bits the table indexes with.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_i64(&mut self, id: i64) {
        // splitmix64's finaliser: every output bit depends on every input bit.
        let mut x = id as u64;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = x ^ (x >> 31);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The viewer classes of `Event::viewer_class` (two flags).
const VIEWER_CLASSES: usize = 4;

pub(super) async fn run(
    mut rx: mpsc::UnboundedReceiver<ShardCommand>,
    links: Arc<Links>,
    presence: mpsc::UnboundedSender<(UserId, bool)>,
    metrics: Arc<Metrics>,
) {
    let mut users = Users::default();
    while let Some(command) = rx.recv().await {
        match command {
            ShardCommand::Register { user, entry, registered } => {
                let conns = users.entry(user).or_default();
                conns.push(entry);
                metrics.ws_connections.fetch_add(1, Relaxed);
                if conns.len() == 1 {
                    metrics.users_connected.fetch_add(1, Relaxed);
                    let _ = presence.send((user, true));
                }
                let _ = registered.send(());
            }
            ShardCommand::Unregister { user, conn } => {
                if let Some(conns) = users.get_mut(&user)
                    && let Some(i) = conns.iter().position(|c| c.id == conn)
                {
                    conns.swap_remove(i);
                    metrics.ws_connections.fetch_sub(1, Relaxed);
                    if conns.is_empty() {
                        users.remove(&user);
                        went_offline(user, &presence, &metrics);
                    }
                }
            }
            ShardCommand::Deliver(envelope) => deliver(&mut users, &envelope, &links, &presence, &metrics),
            ShardCommand::Shutdown => {
                for (_, conns) in users.drain() {
                    for conn in conns {
                        let _ = conn.kill.send(CloseReason::Shutdown);
                    }
                }
            }
        }
    }
}

fn went_offline(user: UserId, presence: &mpsc::UnboundedSender<(UserId, bool)>, metrics: &Metrics) {
    metrics.users_connected.fetch_sub(1, Relaxed);
    let _ = presence.send((user, false));
}

fn deliver(
    users: &mut Users,
    envelope: &Envelope,
    links: &Links,
    presence: &mpsc::UnboundedSender<(UserId, bool)>,
    metrics: &Metrics,
) {
    let event = envelope.event.as_ref();
    if let Event::TokensRevoked(which) = event {
        for user in envelope.audience.iter() {
            revoke(users, *user, which, presence, metrics);
        }
        return;
    }
    // Typing is a hint that is stale in seconds: a connection that is behind
    // skips it, and it never counts against anyone as a slow consumer (a
    // typing flood must not get its victims disconnected).
    let hint = matches!(event, Event::Typing { .. });
    // One rendering per viewer class (sender or not, liked or not): a
    // message to a group of a thousand is rendered twice, not a thousand times.
    let mut rendered: [Option<Utf8Bytes>; VIEWER_CLASSES] = Default::default();
    let position = envelope.position;
    let stored = position.and_then(std::num::NonZeroI64::new);
    // One shared counter update per event, not per copy.
    let mut delivered = 0;
    for user in envelope.audience.iter() {
        let Some(conns) = users.get_mut(user) else { continue };
        let render = || Utf8Bytes::from(event.render(*user, links, position));
        let frame = match event.viewer_class(*user).and_then(|class| rendered.get_mut(class)) {
            Some(slot) => slot.get_or_insert_with(render).clone(),
            None => render(),
        };
        let mut i = 0;
        while i < conns.len() {
            let outbox = &conns[i].outbox;
            if hint && outbox.capacity() < outbox.max_capacity() / 2 {
                metrics.typing_dropped.fetch_add(1, Relaxed);
                i += 1;
                continue;
            }
            match conns[i].outbox.try_send(Outgoing { frame: frame.clone(), position: stored }) {
                Ok(()) => {
                    delivered += 1;
                    i += 1;
                }
                Err(TrySendError::Full(_)) if conns[i].catch_up.dropped_while_replaying() => {
                    // The connection is reading storage: it finds this there.
                    i += 1;
                }
                Err(TrySendError::Full(_)) => {
                    let slow = conns.swap_remove(i);
                    let _ = slow.kill.send(CloseReason::SlowConsumer);
                    metrics.slow_consumers_closed.fetch_add(1, Relaxed);
                    metrics.ws_connections.fetch_sub(1, Relaxed);
                }
                Err(TrySendError::Closed(_)) => {
                    conns.swap_remove(i);
                    metrics.ws_connections.fetch_sub(1, Relaxed);
                }
            }
        }
        if conns.is_empty() {
            users.remove(user);
            went_offline(*user, presence, metrics);
        }
    }
    metrics.events_delivered.fetch_add(delivered, Relaxed);
}

/// Closes the user's connections opened with a revoked token (1008).
fn revoke(
    users: &mut Users,
    user: UserId,
    which: &Revocation,
    presence: &mpsc::UnboundedSender<(UserId, bool)>,
    metrics: &Metrics,
) {
    let Some(conns) = users.get_mut(&user) else { return };
    let revoked = |c: &ConnectionEntry| match which {
        Revocation::Below(version) => c.token_version < *version,
        Revocation::Token(id) => c.token_id.as_deref() == Some(&**id),
    };
    let mut i = 0;
    while i < conns.len() {
        if revoked(&conns[i]) {
            let conn = conns.swap_remove(i);
            let _ = conn.kill.send(CloseReason::Revoked);
            metrics.ws_connections.fetch_sub(1, Relaxed);
        } else {
            i += 1;
        }
    }
    if conns.is_empty() {
        users.remove(&user);
        went_offline(user, presence, metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::CatchUp;
    use crate::hub::outbox::{self, OutboxSender};
    use crate::model::{Message, MessageType, User};

    fn entry(outbox: OutboxSender<Outgoing>) -> (ConnectionEntry, tokio::sync::oneshot::Receiver<CloseReason>) {
        let (kill, killed) = tokio::sync::oneshot::channel();
        let entry = ConnectionEntry {
            id: 1,
            outbox,
            kill,
            token_version: 0,
            token_id: None,
            catch_up: Arc::new(CatchUp::default()),
        };
        (entry, killed)
    }

    fn typing() -> Envelope {
        Envelope::new(vec![7], Event::Typing { room_id: 1, user_id: 8, user_name: "a".into(), is_typing: true })
    }

    fn message() -> Envelope {
        let user =
            Arc::new(User { id: 8, name: "a".into(), email: "a@x.io".into(), avatar_url: None, is_online: true });
        let message = Message {
            id: 1,
            room_id: 1,
            sender: user,
            receiver: None,
            message_type: MessageType::Text,
            content: "hi".into(),
            files: None,
            duration: None,
            local_temp_id: None,
            created_at: 0,
            edited_at: None,
            is_read: false,
            read_count: 0,
            is_deleted: false,
            like_count: 0,
            reply_to: None,
            reactions: Vec::new(),
            forwarded_from: None,
        };
        Envelope::new(vec![7], Event::NewMessage(message))
    }

    /// A shard's ids share their residue modulo the shard count; their
    /// hashes must still spread over the table's buckets (low bits) and
    /// its control bytes (top seven bits).
    #[test]
    fn a_shards_ids_spread_over_buckets() {
        let hash = |id: i64| {
            let mut hasher = IdHasher::default();
            hasher.write_i64(id);
            hasher.finish()
        };
        let ids = (0..4096).map(|n| n * 8 + 3);
        let buckets: std::collections::HashSet<u64> = ids.clone().map(|id| hash(id) & 4095).collect();
        let tags: std::collections::HashSet<u64> = ids.map(|id| hash(id) >> 57).collect();
        assert!(buckets.len() > 2500, "{} of 4096 buckets used", buckets.len());
        assert_eq!(tags.len(), 128);
    }

    #[test]
    fn typing_to_a_connection_that_is_behind_is_dropped_a_stored_event_closes_it() {
        let metrics = Metrics::new(&["x"]);
        let (presence, _presence_rx) = mpsc::unbounded_channel();
        let (outbox, _outbox_rx) = outbox::bounded(4);
        let (conn, mut killed) = entry(outbox);
        assert!(conn.catch_up.finish_replay(), "a live connection");
        let mut users = Users::from_iter([(7, vec![conn])]);
        // Typing is queued while at least half the outbox is free: three
        // of four slots, then skipped.
        for _ in 0..10 {
            deliver(&mut users, &typing(), &Links::public("http://x"), &presence, &metrics);
        }
        assert_eq!(metrics.typing_dropped.load(Relaxed), 7);
        assert_eq!(metrics.slow_consumers_closed.load(Relaxed), 0);
        assert!(killed.try_recv().is_err(), "typing never closes a connection");
        // A stored event takes the last slot; one more is a slow consumer.
        deliver(&mut users, &message(), &Links::public("http://x"), &presence, &metrics);
        assert!(killed.try_recv().is_err());
        deliver(&mut users, &message(), &Links::public("http://x"), &presence, &metrics);
        assert_eq!(killed.try_recv().ok(), Some(CloseReason::SlowConsumer));
        assert!(users.is_empty());
    }

    #[test]
    fn a_replaying_connection_that_is_behind_is_told_to_read_storage_not_closed() {
        let metrics = Metrics::new(&["x"]);
        let (presence, _presence_rx) = mpsc::unbounded_channel();
        let (outbox, _outbox_rx) = outbox::bounded(1);
        let (conn, mut killed) = entry(outbox);
        let catch_up = conn.catch_up.clone();
        let mut users = Users::from_iter([(7, vec![conn])]);
        for _ in 0..3 {
            deliver(&mut users, &message(), &Links::public("http://x"), &presence, &metrics);
        }
        assert!(killed.try_recv().is_err());
        assert_eq!(users.get(&7).map(Vec::len), Some(1));
        assert!(!catch_up.finish_replay(), "the dropped frames are to be read from storage first");
        assert!(catch_up.finish_replay(), "then the replay may end");
        assert!(catch_up.is_live());
        // Live, a full outbox is a slow consumer again.
        deliver(&mut users, &message(), &Links::public("http://x"), &presence, &metrics);
        assert_eq!(killed.try_recv().ok(), Some(CloseReason::SlowConsumer));
    }
}
