//! The writer's group commit, in messages stored per second: batches of 1,
//! 16 and 256 `NewMessage`s submitted at once with `writer_batch_max` set to
//! the batch size, awaited until all are committed, with
//! `synchronous=FULL` (the default: durable across power loss) and
//! `NORMAL`. DESIGN.md's prototype did 5.6k / 21.7k / 40.2k rows/s at
//! 1 / 16 / 256 rows per transaction with FULL, and the 20k msgs/s target
//! rests on group commit; the writer may spend at most about 20 µs per
//! message. The mean batch the writer actually committed is printed after
//! each case, since it may start a batch before all of one is queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use chatd::config::{Config, DbSync};
use chatd::model::{Envelope, MessageType, RoomId, UserId};
use chatd::store::WriterHandle;
use chatd::store::writer::{EventSink, NewMessage, NewUser, SendOutcome};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

/// Counts committed batches and the commands in them.
#[derive(Clone, Default)]
struct BatchCounter {
    batches: Arc<AtomicU64>,
    commands: Arc<AtomicU64>,
}

impl EventSink for BatchCounter {
    fn publish(&mut self, _envelope: Envelope) {}

    fn batch_committed(&mut self, commands: usize, _commit_seconds: f64) {
        self.batches.fetch_add(1, Relaxed);
        self.commands.fetch_add(commands as u64, Relaxed);
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    writer: WriterHandle,
    counter: BatchCounter,
    sender: UserId,
    room: RoomId,
    next_temp_id: u64,
}

async fn fixture(sync: DbSync, batch: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_tests(dir.path());
    config.db_sync = sync;
    config.writer_batch_max = batch;
    std::fs::create_dir_all(&config.data_dir).expect("data dir");
    let counter = BatchCounter::default();
    let (_reader, writer) =
        chatd::store::open(&config, Box::new(counter.clone()), chatd::store::Opener::Tool).expect("store opens");
    let mut ids = Vec::new();
    for name in ["alice", "bob"] {
        let user = NewUser {
            name: name.to_owned(),
            email: format!("{name}@example.com"),
            password_hash: "not a real hash".to_owned(),
            avatar_url: None,
        };
        ids.push(writer.register(user).await.expect("user registered").id);
    }
    let (room, _) = writer.create_room(ids[0], ids[1]).await.expect("room created");
    Fixture { _dir: dir, writer, counter, sender: ids[0], room, next_temp_id: 0 }
}

/// Submits `batch` messages at once, then waits until every one is committed.
async fn send_batch(f: &mut Fixture, batch: usize) -> Duration {
    let start = Instant::now();
    let mut answers = Vec::with_capacity(batch);
    for _ in 0..batch {
        f.next_temp_id += 1;
        let message = NewMessage {
            sender: f.sender,
            room_id: f.room,
            receiver_id: None,
            message_type: MessageType::Text,
            content: "Hey, are we still on for lunch tomorrow at noon?".to_owned(),
            local_temp_id: Some(format!("c0ffee12-3456-4789-abcd-{:012x}", f.next_temp_id)),
            files: None,
            duration: None,
            reply_to_id: None,
            forwarded_from: None,
            files_counted: false,
            uploads: Vec::new(),
        };
        answers.push(f.writer.submit_message(message).await.expect("writer running"));
    }
    for answer in answers {
        let outcome = answer.await.expect("answered").expect("stored");
        assert!(matches!(outcome, SendOutcome::Stored(_)));
    }
    start.elapsed()
}

fn bench_store(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("writer_group_commit");
    group.sample_size(20);
    for (sync_name, sync) in [("full", DbSync::Full), ("normal", DbSync::Normal)] {
        for batch in [1usize, 16, 256] {
            let mut f = runtime.block_on(fixture(sync, batch));
            let (batches_before, commands_before) = (f.counter.batches.load(Relaxed), f.counter.commands.load(Relaxed));
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(BenchmarkId::new(sync_name, batch), |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += send_batch(&mut f, batch).await;
                        }
                        total
                    })
                })
            });
            let batches = f.counter.batches.load(Relaxed) - batches_before;
            let commands = f.counter.commands.load(Relaxed) - commands_before;
            eprintln!("{sync_name}/{batch}: mean committed batch {:.1}", commands as f64 / batches.max(1) as f64);
            runtime.block_on(f.writer.shutdown());
        }
    }
    group.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
