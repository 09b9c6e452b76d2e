//! `search`: fills a server with M messages the way people would write
//! them (U users, each in D direct rooms and a few groups; lines in
//! English, Uzbek, Russian, Chinese and emoji from seeded word lists),
//! sent over WebSockets through the real write path; then
//!
//! 1. times how long the search indexer needs to catch up after the burst
//!    (its thread's CPU and its files, seen from /proc: `indexer`);
//! 2. reads the sizes of the database and of the index;
//! 3. checks a few answers (a marker word sent N times is found N times by
//!    the members of its room and by no one else);
//! 4. times Q sequential searches per query shape (`plan::Shape`) over
//!    REST, each as a random user: p50/p99/max and how many results;
//! 5. optionally sends a smaller burst and searches while the indexer is
//!    still behind (the unindexed tail read directly, or the window).

mod plan;
mod texts;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::value_parser;
use futures_util::{SinkExt, StreamExt, stream};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{
    Api, ServerEvent, Session, Target, WsStream, busy_ws_config, close_quietly, connect_ws_at, parse_event,
    text_message_frame,
};
use crate::context::{Bench, CpuMeter, CpuUse, Report, kb_human, progress, snapshot_json};
use crate::error::{BenchError, Result, describe};
use crate::indexer::{self, CatchUp, Indexer, Watch};
use crate::random::XorShift;
use crate::stats::{LatencySummary, millis, rate, round2, summary_human, summary_json};
use crate::stream::{SYNC_TIMEOUT, read_until_synced};

use plan::{Shape, UserRooms};

#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// Messages to store before searching.
    #[arg(long, default_value_t = 1_000_000, value_parser = value_parser!(u64).range(1..=20_000_000))]
    pub messages: u64,
    /// Users; every one holds a connection and sends its share.
    #[arg(long, default_value_t = 200, value_parser = value_parser!(u32).range(3..=10_000))]
    pub users: u32,
    /// Direct rooms per user (even).
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u32).range(0..=1000))]
    pub direct_rooms: u32,
    /// Groups, members dealt evenly over the users.
    #[arg(long, default_value_t = 60, value_parser = value_parser!(u32).range(0..=10_000))]
    pub groups: u32,
    /// Members per group.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u32).range(2..=1000))]
    pub group_size: u32,
    /// Percent of a user's messages that go to its groups.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(0..=100))]
    pub group_percent: u64,
    /// Messages each user keeps unacknowledged while sending.
    #[arg(long, default_value_t = 16, value_parser = value_parser!(u32).range(1..=4096))]
    pub window: u32,
    /// Searches per query shape.
    #[arg(long, default_value_t = 500, value_parser = value_parser!(u32).range(1..=100_000))]
    pub queries: u32,
    /// Results per search (`limit`).
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u32).range(1..=50))]
    pub limit: u32,
    /// Messages of the second burst, searched while the indexer is behind (0: no second burst).
    #[arg(long, default_value_t = 20_000, value_parser = value_parser!(u64).range(0..=1_000_000))]
    pub burst: u64,
    /// Seed of the texts, the layout and the queries.
    #[arg(long, default_value_t = 12)]
    pub seed: u64,
    /// Seconds to wait for the indexer to catch up after a burst.
    #[arg(long, default_value_t = 900, value_parser = value_parser!(u64).range(1..=7200))]
    pub catch_up_timeout: u64,
    /// Registrations at the same time (each is an Argon2 hash on the server).
    #[arg(long, default_value_t = 8, value_parser = value_parser!(u32).range(1..=256))]
    pub register_concurrency: u32,
}

pub async fn run(bench: &Bench, args: &SearchArgs) -> Result<Report> {
    let users_n = args.users as usize;
    let mut layout_random = XorShift::new(args.seed);
    let pairs = plan::direct_pairs(users_n, args.direct_rooms as usize, &mut layout_random).map_err(BenchError::new)?;
    let groups = plan::groups(users_n, args.groups as usize, args.group_size as usize, &mut layout_random);
    let indexer = Indexer::find(bench.server_pid);
    if indexer.is_none() {
        progress("search: no chatd-indexer thread found in the server (no pid, or a server without search)");
    }

    progress(format!("search: registering {users_n} users, {} at a time", args.register_concurrency));
    let started = Instant::now();
    let users = bench.api.register_users(&bench.run_id, 0, users_n, args.register_concurrency as usize).await?;
    let registered_in = started.elapsed();
    progress(format!("search: opening {} direct rooms and {} groups", pairs.len(), groups.len()));
    let started = Instant::now();
    let rooms = open_rooms(&bench.api, &users, &pairs, &groups, &bench.run_id).await?;
    let rooms_in = started.elapsed();

    // Every tenth message of user 0 into its first room carries a marker.
    let marker_room = rooms[0].direct.first().or(rooms[0].groups.first()).copied();
    let marker = marker_room.map(|room| Marker {
        room,
        every: (plan::share(args.messages, users_n, 0) / 10).max(1),
        token: format!("qjz{}", bench.run_id),
    });

    progress(format!("search: sending {} messages from {users_n} connections, window {}", args.messages, args.window));
    let seeding = Sending { phase: 0, total: args.messages, marker: marker.clone() };
    let seeded = send_burst(bench, args, &users, &rooms, &seeding, indexer.as_ref()).await?;
    progress(format!(
        "search: {} messages stored in {:.1} s ({:.0} msg/s); waiting for the indexer",
        seeded.acked,
        seeded.elapsed.as_secs_f64(),
        rate(seeded.acked as f64, seeded.elapsed)
    ));
    let deadline = Instant::now() + Duration::from_secs(args.catch_up_timeout);
    let catch_up = match &seeded.watch {
        Some(watch) => Some(watch.caught_up(seeded.ended, deadline).await),
        None => None,
    };
    if let Some(catch_up) = &catch_up {
        progress(format!("search: {}", catch_up.human()));
    }
    // The writer's checkpoints run every 250 ms; let one pass.
    sleep(Duration::from_secs(1)).await;
    let sizes = bench.server_pid.and_then(DataFiles::find).map(|files| files.sizes());

    let probes = match &marker {
        Some(marker) => check_markers(bench, &users, &rooms, marker, marker_count(args, users_n, marker)).await?,
        None => Vec::new(),
    };

    let mut shapes = Vec::with_capacity(Shape::ALL.len());
    for (n, shape) in Shape::ALL.into_iter().enumerate() {
        let mut random = XorShift::new(args.seed ^ (0x5EA2_C400 + n as u64));
        let before = bench.server_snapshot();
        let cpu = CpuMeter::start(before.as_ref());
        let mut samples = Samples { limit: args.limit as usize, ..Samples::default() };
        for _ in 0..args.queries {
            samples.push(search_once(&bench.api, args, &users, &rooms, shape, &mut random).await?);
        }
        let cpu_use = cpu.finish(bench.server_snapshot().as_ref());
        let result = ShapeResult { shape, samples, cpu: cpu_use };
        progress(format!("search: {}", result.human()));
        shapes.push(result);
    }

    let burst = if args.burst > 0 {
        Some(burst_while_searching(bench, args, &users, &rooms, indexer.as_ref()).await?)
    } else {
        None
    };
    let visible = visible_per_user(&rooms, &seeded.per_room);
    Ok(report(
        bench,
        args,
        &Setup { registered_in, rooms_in, direct: pairs.len(), groups: groups.len(), visible },
        &seeded,
        catch_up.as_ref(),
        sizes.as_ref(),
        &probes,
        &shapes,
        burst.as_ref(),
    ))
}

/// Opens the direct rooms and the groups; each user's rooms, by index.
async fn open_rooms(
    api: &Api,
    users: &[Session],
    pairs: &[(usize, usize)],
    groups: &[Vec<usize>],
    run_id: &str,
) -> Result<Vec<UserRooms>> {
    let direct: Vec<Result<(usize, usize, i64)>> = stream::iter(pairs.iter().copied())
        .map(|(a, b)| async move { Ok((a, b, api.open_room(&users[a].token, users[b].user_id).await?)) })
        .buffered(16)
        .collect()
        .await;
    let mut rooms = vec![UserRooms::default(); users.len()];
    for opened in direct {
        let (a, b, room) = opened?;
        rooms[a].direct.push(room);
        rooms[b].direct.push(room);
    }
    for (n, members) in groups.iter().enumerate() {
        let others: Vec<i64> = members[1..].iter().map(|m| users[*m].user_id).collect();
        let room = api.create_group(&users[members[0]].token, &format!("search {run_id} {n}"), &others).await?;
        for &member in members {
            rooms[member].groups.push(room);
        }
    }
    Ok(rooms)
}

/// A word sent every `every`-th message of user 0, always into `room`.
#[derive(Debug, Clone)]
struct Marker {
    room: i64,
    every: u64,
    token: String,
}

/// How many messages of user 0 carry the marker.
fn marker_count(args: &SearchArgs, users: usize, marker: &Marker) -> u64 {
    plan::share(args.messages, users, 0).div_ceil(marker.every)
}

/// One burst: `total` messages split over the users.
struct Sending {
    /// Keeps the temp ids of bursts apart.
    phase: u32,
    total: u64,
    marker: Option<Marker>,
}

/// What a burst took.
struct Burst {
    acked: u64,
    errors: u64,
    error_samples: Vec<String>,
    closed: Vec<String>,
    /// From the first send to the last acknowledgement.
    elapsed: Duration,
    /// The last acknowledgement (the last message committed).
    ended: Instant,
    cpu: CpuUse,
    server_cpu_s: Option<f64>,
    /// The indexer, watched from the start of the burst.
    watch: Option<Watch>,
    /// The indexer's CPU during the burst itself.
    indexer_cpu_s: Option<f64>,
    per_room: HashMap<i64, u64>,
    server_after: Option<crate::procfs::ProcessSnapshot>,
}

#[derive(Default)]
struct SenderOutcome {
    acked: u64,
    errors: u64,
    error_samples: Vec<String>,
    closed: Option<String>,
    finished: Option<Instant>,
    per_room: HashMap<i64, u64>,
}

/// Connects every user, sends the burst, closes the connections.
async fn send_burst(
    bench: &Bench,
    args: &SearchArgs,
    users: &[Session],
    rooms: &[UserRooms],
    sending: &Sending,
    indexer: Option<&Indexer>,
) -> Result<Burst> {
    let target = bench.target;
    let opened: Vec<Result<WsStream>> =
        stream::iter(users).map(|user| open_synced(&target, user)).buffered(32).collect().await;
    let acked_total = Arc::new(AtomicU64::new(0));
    let (stop_sender, stop) = watch::channel(false);
    let before = bench.server_snapshot();
    let cpu = CpuMeter::start(before.as_ref());
    let watch = indexer.map(Indexer::watch);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(users.len());
    for (index, ws) in opened.into_iter().enumerate() {
        let job = SendJob {
            count: plan::share(sending.total, users.len(), index),
            rooms: rooms[index].clone(),
            group_percent: args.group_percent,
            window: args.window as u64,
            seed: args.seed ^ (u64::from(sending.phase) << 40) ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            prefix: format!("s{}-{}-{index}-", bench.run_id, sending.phase),
            marker: if index == 0 { sending.marker.clone() } else { None },
        };
        tasks.push(tokio::spawn(sender(ws?, job, Arc::clone(&acked_total), stop.clone())));
    }
    // Every task reads until all are done: each user also receives.
    let mut last_progress = Instant::now();
    while acked_total.load(Ordering::Relaxed) < sending.total && !tasks.iter().all(|t| t.is_finished()) {
        sleep(Duration::from_millis(5)).await;
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            progress(format!("search: {} of {} messages stored", acked_total.load(Ordering::Relaxed), sending.total));
        }
    }
    let after = bench.server_snapshot();
    let cpu_use = cpu.finish(after.as_ref());
    let indexer_cpu = watch.as_ref().and_then(Watch::cpu_so_far);
    let _ = stop_sender.send(true);
    let mut burst = Burst {
        acked: 0,
        errors: 0,
        error_samples: Vec::new(),
        closed: Vec::new(),
        elapsed: Duration::ZERO,
        ended: started,
        cpu: cpu_use,
        server_cpu_s: match (&before, &after) {
            (Some(b), Some(a)) => a.cpu_ticks.checked_sub(b.cpu_ticks).map(|t| t as f64 / 100.0),
            _ => None,
        },
        watch,
        indexer_cpu_s: indexer_cpu.map(|cpu| cpu.as_secs_f64()),
        per_room: HashMap::new(),
        server_after: after,
    };
    for task in tasks {
        let outcome = task.await.map_err(|error| BenchError::new(format!("a sender task failed: {error}")))?;
        burst.acked += outcome.acked;
        burst.errors += outcome.errors;
        for sample in outcome.error_samples {
            if burst.error_samples.len() < 5 && !burst.error_samples.contains(&sample) {
                burst.error_samples.push(sample);
            }
        }
        burst.closed.extend(outcome.closed);
        burst.ended = burst.ended.max(outcome.finished.unwrap_or(started));
        for (room, count) in outcome.per_room {
            *burst.per_room.entry(room).or_default() += count;
        }
    }
    burst.elapsed = burst.ended.saturating_duration_since(started);
    if burst.acked < sending.total {
        return Err(BenchError::new(format!(
            "only {} of {} messages were acknowledged ({} errors: {:?}; connections closed: {:?})",
            burst.acked,
            sending.total,
            burst.errors,
            burst.error_samples,
            burst.closed.iter().take(3).collect::<Vec<_>>()
        )));
    }
    Ok(burst)
}

/// Opens a connection without a cursor and reads it to `synced`.
async fn open_synced(target: &Target, session: &Session) -> Result<WsStream> {
    let mut ws = connect_ws_at(target, &session.token, None, busy_ws_config())
        .await
        .map_err(|failure| BenchError::new(format!("opening the WebSocket of {}: {failure}", session.email)))?;
    read_until_synced(&mut ws, Instant::now() + SYNC_TIMEOUT, |_| {})
        .await
        .map_err(|error| BenchError::new(format!("{}: {error}", session.email)))?;
    Ok(ws)
}

struct SendJob {
    count: u64,
    rooms: UserRooms,
    group_percent: u64,
    window: u64,
    seed: u64,
    /// The temp ids of this user in this burst: `<prefix><n>`.
    prefix: String,
    marker: Option<Marker>,
}

/// Sends one user's messages (at most `window` unacknowledged) and reads
/// everything that arrives until told to stop: the other members' copies
/// must be read too, or the server closes a slow consumer.
async fn sender(
    mut ws: WsStream,
    job: SendJob,
    acked_total: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> SenderOutcome {
    let mut outcome = SenderOutcome::default();
    let mut random = XorShift::new(job.seed);
    // Only this user's echoes carry its prefix; a substring test spares
    // parsing the copies of everyone else's messages.
    let echo = format!("\"{}", job.prefix);
    let mut sent = 0;
    loop {
        while sent < job.count && sent - outcome.acked < job.window {
            let (room, mut text) = match &job.marker {
                Some(marker) if sent % marker.every == 0 => (Some(marker.room), texts::message(&mut random)),
                _ => (job.rooms.pick(&mut random, job.group_percent), texts::message(&mut random)),
            };
            let Some(room) = room else {
                outcome.closed = Some("this user is in no room".to_string());
                return outcome;
            };
            if let Some(marker) = job.marker.as_ref().filter(|m| sent % m.every == 0) {
                text.push(' ');
                text.push_str(&marker.token);
            }
            let frame = text_message_frame(room, &text, &format!("{}{sent}", job.prefix));
            if let Err(error) = ws.send(Message::text(frame)).await {
                outcome.closed = Some(describe(&error));
                return outcome;
            }
            *outcome.per_room.entry(room).or_default() += 1;
            sent += 1;
        }
        if outcome.acked == job.count && outcome.finished.is_none() {
            outcome.finished = Some(Instant::now());
        }
        tokio::select! {
            item = ws.next() => match item {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    if text.contains(&echo) && text.starts_with("{\"type\":\"new_message\"") {
                        outcome.acked += 1;
                        acked_total.fetch_add(1, Ordering::Relaxed);
                    } else if text.contains("\"type\":\"error\"")
                        && let Some(ServerEvent::Error { message, local_temp_id }) = parse_event(text)
                    {
                        outcome.errors += 1;
                        if outcome.error_samples.len() < 3 {
                            outcome.error_samples.push(message);
                        }
                        // A refused message is done with: it will not be echoed.
                        if local_temp_id.is_some_and(|id| id.starts_with(&job.prefix)) {
                            outcome.acked += 1;
                            acked_total.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    outcome.closed = Some(frame.map_or_else(
                        || "closed by the server".to_string(),
                        |f| format!("closed by the server with code {}", u16::from(f.code)),
                    ));
                    return outcome;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    outcome.closed = Some(describe(&error));
                    return outcome;
                }
                None => {
                    outcome.closed = Some("connection ended".to_string());
                    return outcome;
                }
            },
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
    close_quietly(ws).await;
    outcome
}

/// The database and index files of the server, from its open files.
struct DataFiles {
    database: PathBuf,
    index: PathBuf,
}

/// File sizes in bytes (a missing WAL is 0).
#[derive(Debug, Clone, Copy)]
struct Sizes {
    database: u64,
    database_wal: u64,
    index: u64,
    index_wal: u64,
}

impl DataFiles {
    fn find(pid: u32) -> Option<DataFiles> {
        let database = crate::procfs::find_open_file(pid, indexer::DATABASE_FILE)?;
        let index = database.with_file_name(indexer::INDEX_FILE);
        Some(DataFiles { database, index })
    }

    fn sizes(&self) -> Sizes {
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        Sizes {
            database: size(&self.database),
            database_wal: size(&indexer::with_suffix(&self.database, "-wal")),
            index: size(&self.index),
            index_wal: size(&indexer::with_suffix(&self.index, "-wal")),
        }
    }
}

impl Sizes {
    fn json(&self) -> Value {
        json!({
            "database_bytes": self.database,
            "database_wal_bytes": self.database_wal,
            "index_bytes": self.index,
            "index_wal_bytes": self.index_wal,
            "index_to_database": round2(index_ratio(self)),
        })
    }

    fn human(&self) -> String {
        format!(
            "database {} (WAL {}), index {} (WAL {}): index file = {:.2}× the database file",
            kb_human(self.database / 1024),
            kb_human(self.database_wal / 1024),
            kb_human(self.index / 1024),
            kb_human(self.index_wal / 1024),
            index_ratio(self)
        )
    }
}

/// The index file over the database file. Their WALs are left out: a WAL
/// is reused, not shrunk, after a checkpoint, so its size is the largest it
/// ever was, not data.
fn index_ratio(sizes: &Sizes) -> f64 {
    if sizes.database == 0 { 0.0 } else { sizes.index as f64 / sizes.database as f64 }
}

/// One search as seen by the client.
#[derive(Debug, Clone, Copy)]
struct Sample {
    latency: Duration,
    results: usize,
    /// More results follow (`next_before_id` set).
    more: bool,
}

/// GET /api/chat/search as `session`; the results and `next_before_id`.
async fn search_request(
    api: &Api,
    session: &Session,
    text: &str,
    room: Option<i64>,
    limit: u32,
) -> Result<(Sample, Vec<Value>)> {
    let mut path = format!("/api/chat/search?q={}&limit={limit}", plan::percent_encode(text));
    if let Some(room) = room {
        path.push_str(&format!("&room_id={room}"));
    }
    let started = Instant::now();
    let response = api.call(Method::GET, &path, Some(&session.token), None).await?;
    let latency = started.elapsed();
    if response.status != StatusCode::OK {
        return Err(BenchError::new(format!("GET {path}: HTTP {} {}", response.status, response.detail())));
    }
    let body = response.json()?;
    let results = body.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
    let more = body.get("next_before_id").is_some_and(|next| !next.is_null());
    Ok((Sample { latency, results: results.len(), more }, results))
}

async fn search_once(
    api: &Api,
    args: &SearchArgs,
    users: &[Session],
    rooms: &[UserRooms],
    shape: Shape,
    random: &mut XorShift,
) -> Result<Sample> {
    let user = random.below(users.len() as u64) as usize;
    let text = shape.text(random);
    let room = if shape.in_one_room() {
        let all: Vec<i64> = rooms[user].all().collect();
        all.get(random.below(all.len() as u64) as usize).copied()
    } else {
        None
    };
    Ok(search_request(api, &users[user], &text, room, args.limit).await?.0)
}

#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    results: u64,
    full: u64,
    empty: u64,
    /// Pages that stop short of `limit` yet say more follow: the window
    /// (not the index) answered.
    window: u64,
    limit: usize,
}

impl Samples {
    fn push(&mut self, sample: Sample) {
        self.latencies.push(sample.latency);
        self.results += sample.results as u64;
        self.full += u64::from(sample.results >= self.limit.max(1));
        self.empty += u64::from(sample.results == 0);
        self.window += u64::from(sample.more && sample.results < self.limit);
    }
}

struct ShapeResult {
    shape: Shape,
    samples: Samples,
    cpu: CpuUse,
}

impl ShapeResult {
    fn summary(&self) -> Option<LatencySummary> {
        LatencySummary::from_samples(self.samples.latencies.clone())
    }

    fn json(&self) -> Value {
        let n = self.samples.latencies.len().max(1) as f64;
        json!({
            "shape": self.shape.name(),
            "what": self.shape.describe(),
            "latency": summary_json(self.summary().as_ref()),
            "results_mean": round2(self.samples.results as f64 / n),
            "full_pages": self.samples.full,
            "empty": self.samples.empty,
            "window_answers": self.samples.window,
            "server_cpu_percent": self.cpu.server_percent,
        })
    }

    fn human(&self) -> String {
        let n = self.samples.latencies.len().max(1) as f64;
        format!(
            "{:<10} {}; {:.1} results on average, {} full pages, {} empty, {} window answers; server CPU {}",
            self.shape.name(),
            summary_human(self.summary().as_ref()),
            self.samples.results as f64 / n,
            self.samples.full,
            self.samples.empty,
            self.samples.window,
            self.cpu.server_percent.map_or("?".to_string(), |p| format!("{p:.0}%"))
        )
    }
}

/// A marker query and what it should find.
struct Probe {
    what: String,
    expected: u64,
    found: u64,
}

/// The marker sent `count` times into one room is found `count` times by
/// both members of that room (or all, for a group) and never by a user
/// outside it.
async fn check_markers(
    bench: &Bench,
    users: &[Session],
    rooms: &[UserRooms],
    marker: &Marker,
    count: u64,
) -> Result<Vec<Probe>> {
    let member = |user: usize| rooms[user].all().any(|room| room == marker.room);
    let other = (1..users.len()).find(|u| member(*u));
    let outsider = (1..users.len()).find(|u| !member(*u));
    let mut probes = Vec::new();
    let limit = 50;
    for (who, expected) in [(Some(0), count), (other, count), (outsider, 0)] {
        let Some(user) = who else { continue };
        let (_, results) = search_request(&bench.api, &users[user], &marker.token, None, limit).await?;
        let found = results
            .iter()
            .filter(|r| {
                r.pointer("/message/content").and_then(Value::as_str).is_some_and(|c| c.contains(&marker.token))
                    && r.get("highlight").and_then(Value::as_str).is_some_and(|h| h.contains("<mark>"))
            })
            .count() as u64;
        probes.push(Probe {
            what: format!("user {user} ({}) searching the marker", if expected > 0 { "member" } else { "outsider" }),
            expected: expected.min(u64::from(limit)),
            found,
        });
    }
    if probes.iter().any(|p| p.found != p.expected) {
        progress("search: warning: a marker probe found the wrong number of messages");
    }
    Ok(probes)
}

/// The second burst and the searches while the indexer is behind.
struct CatchUpSearch {
    burst: Burst,
    catch_up: Option<CatchUp>,
    /// Searches that started before the indexer went still.
    during: Samples,
}

async fn burst_while_searching(
    bench: &Bench,
    args: &SearchArgs,
    users: &[Session],
    rooms: &[UserRooms],
    indexer: Option<&Indexer>,
) -> Result<CatchUpSearch> {
    progress(format!("search: second burst of {} messages, then searching until the indexer is still", args.burst));
    let sending = Sending { phase: 1, total: args.burst, marker: None };
    let burst = send_burst(bench, args, users, rooms, &sending, indexer).await?;
    let done = Arc::new(AtomicBool::new(false));
    let searching = {
        let (api, users, rooms, done) = (bench.api.clone(), users.to_vec(), rooms.to_vec(), Arc::clone(&done));
        let args = args.clone();
        tokio::spawn(async move {
            let mut random = XorShift::new(args.seed ^ 0xB0_0057);
            let mut samples = Samples { limit: args.limit as usize, ..Samples::default() };
            while !done.load(Ordering::Relaxed) {
                samples.push(search_once(&api, &args, &users, &rooms, Shape::Latin, &mut random).await?);
            }
            Ok::<Samples, BenchError>(samples)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(args.catch_up_timeout);
    let catch_up = match &burst.watch {
        Some(watch) => Some(watch.caught_up(burst.ended, deadline).await),
        None => {
            sleep(Duration::from_secs(2)).await;
            None
        }
    };
    done.store(true, Ordering::Relaxed);
    let during = searching.await.map_err(|error| BenchError::new(format!("the search task failed: {error}")))??;
    Ok(CatchUpSearch { burst, catch_up, during })
}

/// Messages in the rooms of each user, on average.
fn visible_per_user(rooms: &[UserRooms], per_room: &HashMap<i64, u64>) -> f64 {
    let total: u64 =
        rooms.iter().map(|r| r.all().map(|room| per_room.get(&room).copied().unwrap_or(0)).sum::<u64>()).sum();
    total as f64 / rooms.len().max(1) as f64
}

struct Setup {
    registered_in: Duration,
    rooms_in: Duration,
    direct: usize,
    groups: usize,
    visible: f64,
}

fn burst_json(burst: &Burst) -> Value {
    json!({
        "messages": burst.acked,
        "seconds": round2(burst.elapsed.as_secs_f64()),
        "per_s": round2(rate(burst.acked as f64, burst.elapsed)),
        "errors": burst.errors,
        "error_samples": burst.error_samples,
        "connections_closed": burst.closed.len(),
        "server_cpu_percent": burst.cpu.server_percent,
        "server_cpu_s": burst.server_cpu_s.map(round2),
        "bench_cpu_percent": burst.cpu.bench_percent,
        "indexer_cpu_s_during": burst.indexer_cpu_s.map(round2),
        "server_after": snapshot_json(burst.server_after.as_ref()),
    })
}

fn burst_human(burst: &Burst) -> String {
    format!(
        "{} messages in {:.1} s = {:.0} msg/s; {} errors; {}; indexer CPU during the burst {}",
        burst.acked,
        burst.elapsed.as_secs_f64(),
        rate(burst.acked as f64, burst.elapsed),
        burst.errors,
        burst.cpu.human(),
        burst.indexer_cpu_s.map_or("?".to_string(), |s| format!("{s:.2} s"))
    )
}

#[allow(clippy::too_many_arguments)]
fn report(
    bench: &Bench,
    args: &SearchArgs,
    setup: &Setup,
    seeded: &Burst,
    catch_up: Option<&CatchUp>,
    sizes: Option<&Sizes>,
    probes: &[Probe],
    shapes: &[ShapeResult],
    burst: Option<&CatchUpSearch>,
) -> Report {
    let mut json = bench.header("search");
    let per_message_us = catch_up
        .and_then(|c| c.cpu)
        .filter(|_| seeded.acked > 0)
        .map(|cpu| round2(cpu.as_secs_f64() * 1e6 / seeded.acked as f64));
    let during = burst.map(|b| LatencySummary::from_samples(b.during.latencies.clone()));
    for (key, value) in [
        ("messages", json!(args.messages)),
        ("users", json!(args.users)),
        ("direct_rooms", json!(setup.direct)),
        ("groups", json!(setup.groups)),
        ("group_size", json!(args.group_size)),
        ("group_percent", json!(args.group_percent)),
        ("window", json!(args.window)),
        ("seed", json!(args.seed)),
        ("visible_messages_per_user", json!(round2(setup.visible))),
        ("register_s", json!(round2(setup.registered_in.as_secs_f64()))),
        ("rooms_s", json!(round2(setup.rooms_in.as_secs_f64()))),
        ("seeding", burst_json(seeded)),
        ("catch_up", catch_up.map_or(Value::Null, CatchUp::json)),
        ("indexer_cpu_us_per_message", json!(per_message_us)),
        ("sizes", sizes.map_or(Value::Null, Sizes::json)),
        (
            "probes",
            json!(
                probes
                    .iter()
                    .map(|p| json!({"what": p.what, "expected": p.expected, "found": p.found}))
                    .collect::<Vec<_>>()
            ),
        ),
        ("queries_per_shape", json!(args.queries)),
        ("limit", json!(args.limit)),
        ("shapes", json!(shapes.iter().map(ShapeResult::json).collect::<Vec<_>>())),
        (
            "burst",
            burst.map_or(Value::Null, |b| {
                json!({
                    "sending": burst_json(&b.burst),
                    "catch_up": b.catch_up.as_ref().map_or(Value::Null, CatchUp::json),
                    "searches_during": b.during.latencies.len(),
                    "latency_during": summary_json(during.flatten().as_ref()),
                    "window_answers_during": b.during.window,
                })
            }),
        ),
    ] {
        json.insert(key.to_string(), value);
    }

    let mut text = format!(
        "search: {} messages from {} users in {} direct rooms and {} groups of {} ({}% of messages in groups); {:.0} messages visible to a user on average\n",
        seeded.acked, args.users, setup.direct, setup.groups, args.group_size, args.group_percent, setup.visible
    );
    text.push_str(&format!(
        "  set-up: {} users registered in {:.1} s, rooms opened in {:.1} s\n",
        args.users,
        setup.registered_in.as_secs_f64(),
        setup.rooms_in.as_secs_f64()
    ));
    text.push_str(&format!("  seeding: {}\n", burst_human(seeded)));
    match catch_up {
        Some(c) => text.push_str(&format!(
            "  {}{}\n",
            c.human(),
            per_message_us.map_or(String::new(), |us| format!(" = {us:.1} µs of indexer CPU per message"))
        )),
        None => text.push_str("  indexer: not found (no catch-up reading)\n"),
    }
    if let Some(sizes) = sizes {
        text.push_str(&format!("  files: {}\n", sizes.human()));
    }
    for probe in probes {
        let verdict = if probe.found == probe.expected { "ok" } else { "WRONG" };
        text.push_str(&format!("  probe: {}: {} of {} ({verdict})\n", probe.what, probe.found, probe.expected));
    }
    text.push_str(&format!("  {} searches per shape, limit {}, one at a time:\n", args.queries, args.limit));
    for shape in shapes {
        text.push_str(&format!("    {}\n", shape.human()));
    }
    if let Some(b) = burst {
        text.push_str(&format!("  second burst: {}\n", burst_human(&b.burst)));
        if let Some(c) = &b.catch_up {
            text.push_str(&format!("    {}\n", c.human()));
        }
        text.push_str(&format!(
            "    latin searches meanwhile: {}; {} window answers\n",
            summary_human(during.flatten().as_ref()),
            b.during.window
        ));
    }
    let words: Vec<String> = shapes
        .iter()
        .filter(|s| matches!(s.shape, Shape::Latin | Shape::Uzbek | Shape::Cyrillic | Shape::Chinese))
        .filter_map(|s| Some(format!("{} {:.2} ms", s.shape.name(), millis(s.summary()?.p50))))
        .collect();
    text.push_str(&format!(
        "  target p50 < 5 ms for a 3+ character word in one user's rooms: p50 {}",
        words.join(", ")
    ));
    Report { json: Value::Object(json), text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_compares_the_files_without_their_wals() {
        let sizes = Sizes { database: 200, database_wal: 6_000, index: 50, index_wal: 5 };
        assert_eq!(index_ratio(&sizes), 0.25);
        assert_eq!(index_ratio(&Sizes { database: 0, ..sizes }), 0.0);
    }

    #[test]
    fn short_pages_that_go_on_are_window_answers() {
        let mut samples = Samples { limit: 20, ..Samples::default() };
        let sample = |results, more| Sample { latency: Duration::from_millis(1), results, more };
        samples.push(sample(20, true)); // a full page of the index, more follow
        samples.push(sample(3, true)); // the window ended first
        samples.push(sample(0, true)); // the window found nothing
        samples.push(sample(0, false)); // nothing anywhere
        samples.push(sample(7, false)); // all there is
        assert_eq!((samples.full, samples.empty, samples.window, samples.results), (1, 2, 2, 30));
        assert_eq!(samples.latencies.len(), 5);
    }
}
