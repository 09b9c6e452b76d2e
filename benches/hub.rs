//! Hub fan-out: one event published through `HubHandle::publish` until every
//! outbox holds its frame, for 1, 2, 100 and 10,000 connections, as
//! N users with one connection each and as one user with N connections; with
//! `presence` (rendered once for all) and `new_message` (rendered once per
//! viewer). A room message reaches 2 users; presence reaches every contact,
//! so the large sizes say how a popular user's status change scales.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatd::config::Config;
use chatd::http::router::ROUTE_NAMES;
use chatd::hub::outbox::{self, OutboxReceiver};
use chatd::hub::{ConnectionEntry, HubHandle};
use chatd::links::Links;
use chatd::metrics::Metrics;
use chatd::model::{Envelope, Event, Message, MessageType, User, UserId};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const SIZES: [usize; 4] = [1, 2, 100, 10_000];
const BASE_URL: &str = "http://127.0.0.1:8000";

/// The receiving ends of registered connections, kept alive for the bench.
struct Connections {
    outboxes: Vec<OutboxReceiver<chatd::hub::Outgoing>>,
    _kills: Vec<oneshot::Receiver<chatd::hub::CloseReason>>,
}

fn connect(hub: &HubHandle, users: &[UserId]) -> Connections {
    let mut outboxes = Vec::with_capacity(users.len());
    let mut kills = Vec::with_capacity(users.len());
    for &user in users {
        let (outbox, outbox_rx) = outbox::bounded(64);
        let (kill, kill_rx) = oneshot::channel();
        let entry = ConnectionEntry {
            id: hub.next_conn_id(),
            outbox,
            kill,
            token_version: 0,
            token_id: None,
            catch_up: Default::default(),
        };
        // Registration is asynchronous; the first fan-out waits behind it anyway.
        drop(hub.register(user, entry));
        outboxes.push(outbox_rx);
        kills.push(kill_rx);
    }
    Connections { outboxes, _kills: kills }
}

fn user(id: UserId) -> User {
    User { id, name: format!("user{id}"), email: format!("user{id}@example.com"), avatar_url: None, is_online: true }
}

fn presence() -> Event {
    Event::Presence { user_id: 1, user_name: "Alice".to_owned(), is_online: true }
}

fn new_message() -> Event {
    Event::NewMessage(Message {
        id: 912_345,
        room_id: 42,
        sender: std::sync::Arc::new(user(1)),
        receiver: Some(std::sync::Arc::new(user(2))),
        message_type: MessageType::Text,
        content: "Hey, are we still on for lunch tomorrow at noon?".to_owned(),
        files: None,
        duration: None,
        local_temp_id: Some("t-1".to_owned()),
        created_at: 1_704_110_400_000,
        edited_at: None,
        is_read: false,
        read_count: 0,
        is_deleted: false,
        like_count: 0,
        reply_to: None,
        reactions: Vec::new(),
        forwarded_from: None,
    })
}

/// Publishes one event per iteration and waits until every outbox got it.
async fn fan_out(hub: &HubHandle, conns: &mut Connections, audience: &Arc<[UserId]>, event: &Arc<Event>) -> Duration {
    let start = Instant::now();
    hub.publish(Envelope { audience: audience.clone(), event: event.clone(), position: None });
    for outbox in &mut conns.outboxes {
        outbox.recv().await.expect("frame delivered");
    }
    start.elapsed()
}

fn bench_hub(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::for_tests(dir.path());
    // Presence changes come out here; the bench only keeps the channel open.
    let (hub, _presence) = runtime.block_on(async {
        HubHandle::start(config.hub_shards, Arc::new(Links::public(BASE_URL)), Arc::new(Metrics::new(ROUTE_NAMES)))
    });

    let mut next_user: UserId = 1000;
    for (group_name, event) in [("hub_presence", Arc::new(presence())), ("hub_new_message", Arc::new(new_message()))] {
        let mut group = c.benchmark_group(group_name);
        for size in SIZES {
            group.throughput(Throughput::Elements(size as u64));
            if size >= 10_000 {
                group.sample_size(20);
            }
            // Fresh users per case, so earlier cases' connections stay out of its way.
            let distinct: Vec<UserId> = (next_user..next_user + size as UserId).collect();
            let single = vec![next_user + size as UserId; size];
            next_user += size as UserId + 1;
            for (shape, users) in [("users", distinct), ("conns_of_one_user", single)] {
                if shape == "conns_of_one_user" && size == 1 {
                    continue;
                }
                let mut conns = connect(&hub, &users);
                let mut audience: Vec<UserId> = users.clone();
                audience.dedup();
                let audience: Arc<[UserId]> = audience.into();
                // Registration is asynchronous: one delivery proves every connection is in.
                runtime.block_on(fan_out(&hub, &mut conns, &audience, &event));
                group.bench_function(BenchmarkId::new(shape, size), |b| {
                    b.iter_custom(|iters| {
                        runtime.block_on(async {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                total += fan_out(&hub, &mut conns, &audience, &event).await;
                            }
                            total
                        })
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_hub);
criterion_main!(benches);
