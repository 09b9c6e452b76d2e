//! Several nodes as one server (SPEC section 12): what runs beside the
//! PostgreSQL store when `CHAT_DATABASE_URL` is set.
//!
//! - **Stored events** are never sent over the bus. Each node's tail
//!   (`store::pg::stream`) reads them from the database in position order
//!   behind the safe horizon and hands them to its own hub; the bus only
//!   rings the doorbell (`<prefix>.poke`) so the tail looks at once instead
//!   of at its next poll. A node that loses NATS keeps delivering from the
//!   database (at the poll's pace) and loses nothing.
//! - **Typing, presence and token revocations** are not stored: they go to
//!   this node's hub at once and to the other nodes over `<prefix>.live`
//!   (each message names its node, which skips its own).
//! - **Presence across nodes**: each node keeps a heartbeat row and one
//!   session row per connected user; a user is online while some session
//!   exists; a node silent for `NODE_TIMEOUT` is removed with its sessions
//!   by whichever node notices first, and its users go offline.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::auth::TokenState;
use crate::hub::{Fanout, HubHandle};
use crate::model::{Envelope, Event, Revocation, UserId};
use crate::store::StoreError;
use crate::store::pg::Pg;

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// A node silent this long is gone: its users' sessions are removed.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(15);

/// The NATS side of one node.
#[derive(Clone)]
pub struct Bus {
    out: mpsc::UnboundedSender<(String, Bytes)>,
    prefix: Arc<str>,
    node: Arc<str>,
}

impl Bus {
    /// Connects in the background (a node starts while NATS is down and
    /// reconnects by itself) and starts the publisher and the subscriber.
    /// What arrives: pokes wake `tail`; live events go to `hub`, revocations
    /// also to `tokens`.
    pub async fn start(
        url: &str,
        prefix: String,
        node: String,
        tail: Arc<Notify>,
        hub: HubHandle,
        tokens: Arc<TokenState>,
        token_ttl: Duration,
    ) -> Result<Bus, StoreError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("chatd {node}"))
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|e| StoreError::Down(format!("cannot reach NATS at {url}: {e}")))?;
        let (out, mut outgoing) = mpsc::unbounded_channel::<(String, Bytes)>();
        let publisher = client.clone();
        tokio::spawn(async move {
            while let Some((subject, payload)) = outgoing.recv().await {
                if let Err(e) = publisher.publish(subject, payload).await {
                    tracing::debug!(error = %e, "NATS publish failed");
                }
            }
        });
        let bus = Bus { out, prefix: prefix.into(), node: node.into() };
        let subject = format!("{}.>", bus.prefix);
        let mut messages =
            client.subscribe(subject).await.map_err(|e| StoreError::Down(format!("cannot subscribe on NATS: {e}")))?;
        let (poke, live) = (bus.subject("poke"), bus.subject("live"));
        let me = bus.node.clone();
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                if message.subject.as_str() == poke {
                    tail.notify_one();
                } else if message.subject.as_str() == live {
                    match decode(&message.payload) {
                        Some((from, _)) if *from == *me => {}
                        Some((_, envelope)) => {
                            if let Event::TokensRevoked(which) = envelope.event.as_ref() {
                                revoke(&tokens, &envelope, which, token_ttl);
                            }
                            hub.publish(envelope);
                        }
                        None => tracing::debug!("unreadable live event on NATS"),
                    }
                }
            }
            tracing::warn!("NATS subscription ended");
        });
        Ok(bus)
    }

    fn subject(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// Tells every node that events were committed.
    pub fn poke(&self) {
        let _ = self.out.send((self.subject("poke"), Bytes::new()));
    }

    fn live(&self, envelope: &Envelope) {
        if let Some(payload) = encode(&self.node, envelope) {
            let _ = self.out.send((self.subject("live"), payload));
        }
    }
}

/// The subject prefix of a cluster: its database's name, so that clusters
/// sharing one NATS server (tests, staging beside production) stay apart.
pub fn prefix_for(database_url: &str) -> String {
    let name = crate::store::pg::database_name(database_url).unwrap_or_else(|| "chatd".into());
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("chatd.{clean}")
}

fn revoke(tokens: &TokenState, envelope: &Envelope, which: &Revocation, token_ttl: Duration) {
    let Some(&user) = envelope.audience.first() else { return };
    match which {
        Revocation::Below(version) => tokens.set_version(user, *version),
        Revocation::Token(id) => {
            // The token cannot outlive a full lifetime from now.
            let now = crate::auth::jwt::unix_now();
            tokens.revoke(id.to_string(), now + token_ttl.as_secs(), now);
        }
    }
}

/// The way this node publishes: stored events come from the tail, so only
/// what is not stored is published, to the local hub and to the others.
pub struct ClusterFanout {
    pub hub: HubHandle,
    pub bus: Option<Bus>,
}

impl Fanout for ClusterFanout {
    fn publish(&self, envelope: Envelope) {
        if let Some(bus) = &self.bus
            && envelope.position.is_none()
        {
            bus.live(&envelope);
        }
        self.hub.publish(envelope);
    }
}

/// A live event as the bus carries it: `{"node", "audience", "kind", …}`.
fn encode(node: &str, envelope: &Envelope) -> Option<Bytes> {
    let event = match envelope.event.as_ref() {
        Event::Typing { room_id, user_id, user_name, is_typing } => {
            json!({"kind": "typing", "room_id": room_id, "user_id": user_id, "user_name": user_name, "is_typing": is_typing})
        }
        Event::Presence { user_id, user_name, is_online } => {
            json!({"kind": "presence", "user_id": user_id, "user_name": user_name, "is_online": is_online})
        }
        Event::TokensRevoked(Revocation::Below(version)) => json!({"kind": "revoked", "below": version}),
        Event::TokensRevoked(Revocation::Token(id)) => json!({"kind": "revoked", "token": id.as_ref()}),
        _ => return None,
    };
    let mut body = json!({"node": node, "audience": envelope.audience.as_ref()});
    if let (Some(body), Value::Object(event)) = (body.as_object_mut(), event) {
        body.extend(event);
    }
    serde_json::to_vec(&body).ok().map(Bytes::from)
}

fn decode(payload: &[u8]) -> Option<(String, Envelope)> {
    let body: Value = serde_json::from_slice(payload).ok()?;
    let node = body.get("node")?.as_str()?.to_owned();
    let audience: Vec<UserId> = body.get("audience")?.as_array()?.iter().filter_map(Value::as_i64).collect();
    let int = |key: &str| body.get(key).and_then(Value::as_i64);
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let flag = |key: &str| body.get(key).and_then(Value::as_bool);
    let event = match body.get("kind")?.as_str()? {
        "typing" => Event::Typing {
            room_id: int("room_id")?,
            user_id: int("user_id")?,
            user_name: text("user_name")?,
            is_typing: flag("is_typing")?,
        },
        "presence" => {
            Event::Presence { user_id: int("user_id")?, user_name: text("user_name")?, is_online: flag("is_online")? }
        }
        "revoked" => match (int("below"), text("token")) {
            (Some(version), _) => Event::TokensRevoked(Revocation::Below(u32::try_from(version).ok()?)),
            (None, Some(id)) => Event::TokensRevoked(Revocation::Token(id.into())),
            (None, None) => return None,
        },
        _ => return None,
    };
    Some((node, Envelope::new(audience, event)))
}

/// Keeps this node's heartbeat, and removes nodes that stopped theirs:
/// their users' sessions go, and whoever is then offline everywhere is
/// stored offline and announced through `fanout`.
pub async fn heartbeat(pg: Arc<Pg>, fanout: Arc<dyn Fanout>) {
    loop {
        match crate::store::pg::writes::beat(&pg, NODE_TIMEOUT).await {
            Ok(envelopes) => envelopes.into_iter().for_each(|e| fanout.publish(e)),
            Err(e) => tracing::warn!(error = %e, "cluster heartbeat failed"),
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, encode, prefix_for};
    use crate::model::{Envelope, Event, Revocation};

    #[test]
    fn live_events_cross_the_bus_unchanged() {
        let events = [
            Event::Typing { room_id: 3, user_id: 7, user_name: "Ann \"A\"".into(), is_typing: true },
            Event::Presence { user_id: 7, user_name: "Ann".into(), is_online: false },
            Event::TokensRevoked(Revocation::Below(4)),
            Event::TokensRevoked(Revocation::Token("abc".into())),
        ];
        for event in events {
            let before = format!("{event:?}");
            let payload = encode("n1", &Envelope::new(vec![7, 9], event)).expect("encodes");
            let (node, after) = decode(&payload).expect("decodes");
            assert_eq!(node, "n1");
            assert_eq!(after.audience.as_ref(), &[7, 9]);
            assert_eq!(format!("{:?}", after.event), before);
        }
    }

    #[test]
    fn clusters_on_one_nats_are_kept_apart_by_database() {
        assert_eq!(prefix_for("postgres://chatd@127.0.0.1:5432/prod"), "chatd.prod");
        assert_eq!(prefix_for("postgres://chatd@db/a.b"), "chatd.a_b");
    }
}
