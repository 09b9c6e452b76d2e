//! One hub shard: owns `user → connections` for its users. Delivery renders
//! an event once per viewer (once in all when every viewer sees the same
//! bytes) and `try_send`s the shared frame to each outbox; a full outbox is a
//! slow consumer, which is told to close and forgotten, never waited for.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{CloseReason, ConnectionEntry, Outgoing, ShardCommand};
use crate::metrics::Metrics;
use crate::model::{Envelope, Event, Revocation, UserId};

pub(super) async fn run(
    mut rx: mpsc::UnboundedReceiver<ShardCommand>,
    base_url: Arc<str>,
    presence: mpsc::UnboundedSender<(UserId, bool)>,
    metrics: Arc<Metrics>,
) {
    let mut users: HashMap<UserId, Vec<ConnectionEntry>> = HashMap::new();
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
            ShardCommand::Deliver(envelope) => deliver(&mut users, &envelope, &base_url, &presence, &metrics),
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
    users: &mut HashMap<UserId, Vec<ConnectionEntry>>,
    envelope: &Envelope,
    base_url: &str,
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
    let mut shared: Option<Utf8Bytes> = None;
    for user in envelope.audience.iter() {
        let Some(conns) = users.get_mut(user) else { continue };
        let position = envelope.position;
        let frame = if event.same_for_everyone() {
            shared.get_or_insert_with(|| Utf8Bytes::from(event.render(*user, base_url, position))).clone()
        } else {
            Utf8Bytes::from(event.render(*user, base_url, position))
        };
        let mut i = 0;
        while i < conns.len() {
            let outbox = &conns[i].outbox;
            if hint && outbox.capacity() < outbox.max_capacity() / 2 {
                metrics.typing_dropped.fetch_add(1, Relaxed);
                i += 1;
                continue;
            }
            match conns[i].outbox.try_send(Outgoing { frame: frame.clone(), position }) {
                Ok(()) => {
                    metrics.events_delivered.fetch_add(1, Relaxed);
                    i += 1;
                }
                Err(TrySendError::Full(_)) if conns[i].catch_up.replaying.load(Relaxed) => {
                    // The connection is reading storage: it finds this there.
                    conns[i].catch_up.lagged.store(true, Relaxed);
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
}

/// Closes the user's connections opened with a revoked token (1008).
fn revoke(
    users: &mut HashMap<UserId, Vec<ConnectionEntry>>,
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
