//! `group`: G users in one group, every one connected; one member posts P
//! messages at a fixed rate. Measures the send → receipt latency of every
//! copy and the server's CPU time per delivered copy; set-up (registering
//! G users costs G Argon2 hashes) is timed apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::value_parser;
use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{
    Session, Target, WsStream, busy_ws_config, close_quietly, connect_ws_at, text_content, text_message_frame,
};
use crate::context::{Bench, Report, progress, rss_change_human, snapshot_json};
use crate::error::{BenchError, Result, describe};
use crate::procfs::{self, TICKS_PER_SECOND};
use crate::stats::{LatencySummary, round2, summary_human, summary_json};
use crate::stream::{NEW_MESSAGE, SYNC_TIMEOUT, StreamFrame, parse_stream_frame, read_until_synced};

#[derive(Debug, Clone, clap::Args)]
pub struct GroupArgs {
    /// Members of the group, the sender included; every one holds a connection.
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u32).range(2..=100_000))]
    pub members: u32,
    /// Messages the sender posts.
    #[arg(long, default_value_t = 200, value_parser = value_parser!(u32).range(1..=1_000_000))]
    pub messages: u32,
    /// Messages per second the sender posts.
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u32).range(1..=10_000))]
    pub rate: u32,
    /// Length of each text message, in bytes.
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u32).range(1..=5000))]
    pub size: u32,
    /// Registrations at the same time (each is an Argon2 hash on the server).
    #[arg(long, default_value_t = 8, value_parser = value_parser!(u32).range(1..=256))]
    pub register_concurrency: u32,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 64, value_parser = value_parser!(u32).range(1..=4096))]
    pub connect_concurrency: u32,
    /// Seconds to wait for copies once the last message is sent; what has not arrived by then is lost.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=600))]
    pub grace: u64,
}

/// How long the members' traffic must stay still before the sender starts
/// (the presence of a thousand members coming online is a burst of its own).
const QUIET_FOR: Duration = Duration::from_secs(1);
const QUIET_WITHIN: Duration = Duration::from_secs(60);

/// What every member task adds to while it reads.
#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    copies: AtomicU64,
}

#[derive(Default)]
struct MemberOutcome {
    /// (message number, when it arrived) for each copy of a sender's message.
    receipts: Vec<(usize, Instant)>,
    closed: Option<String>,
}

#[derive(Default)]
struct SenderOutcome {
    sent_at: Vec<Instant>,
    echo_latencies: Vec<Duration>,
    errors: Vec<String>,
    closed: Option<String>,
}

pub async fn run(bench: &Bench, args: &GroupArgs) -> Result<Report> {
    let members = args.members as usize;
    let raise = procfs::raise_own_nofile_limit();
    if let Some(limit) = raise.after
        && limit.soft < members as u64 + 100
    {
        progress(format!(
            "group: the open-file limit {} may be too low: run `ulimit -n {}` first",
            limit.soft,
            members + 100
        ));
    }
    progress(format!("group: registering {members} users, {} at a time", args.register_concurrency));
    let register_started = Instant::now();
    let users = bench.api.register_users(&bench.run_id, 0, members, args.register_concurrency as usize).await?;
    let registered_in = register_started.elapsed();
    let group_started = Instant::now();
    let member_ids: Vec<i64> = users[1..].iter().map(|user| user.user_id).collect();
    let room = bench.api.create_group(&users[0].token, &format!("group {}", bench.run_id), &member_ids).await?;
    let group_in = group_started.elapsed();

    progress(format!("group: connecting {} members to group {room}", members - 1));
    let connect_started = Instant::now();
    let counters = Arc::new(Counters::default());
    let prefix: Arc<str> = Arc::from(format!("g{}-", bench.run_id));
    let (stop_sender, stop) = watch::channel(false);
    let target = bench.target;
    let opened: Vec<Result<WsStream>> = stream::iter(&users[1..])
        .map(|user| open_synced(&target, user))
        .buffer_unordered(args.connect_concurrency as usize)
        .collect()
        .await;
    let mut member_tasks = Vec::with_capacity(members - 1);
    for ws in opened {
        let ws = ws?;
        member_tasks.push(tokio::spawn(member(ws, Arc::clone(&prefix), Arc::clone(&counters), stop.clone())));
    }
    let connected_in = connect_started.elapsed();
    let settle_started = Instant::now();
    wait_until_quiet(&counters).await;
    let settled_in = settle_started.elapsed();
    let sender_ws = open_synced(&target, &users[0]).await?;

    progress(format!("group: sending {} messages at {}/s into a group of {members}", args.messages, args.rate));
    let before = bench.server_snapshot();
    let own_ticks_before = procfs::own_cpu_ticks();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let plan = SendPlan {
        room,
        count: args.messages as usize,
        interval,
        content: text_content(args.size as usize),
        prefix: Arc::clone(&prefix),
        grace: Duration::from_secs(args.grace),
    };
    let (sender, sender_ws) = sender_loop(sender_ws, plan, started).await;
    let wanted = (sender.sent_at.len() * (members - 1)) as u64;
    let last_send = sender.sent_at.last().copied().unwrap_or(started);
    let give_up = last_send + Duration::from_secs(args.grace);
    while counters.copies.load(Ordering::Relaxed) < wanted && Instant::now() < give_up {
        sleep(Duration::from_millis(5)).await;
    }
    let delivery = started.elapsed();
    let after = bench.server_snapshot();
    let own_ticks_after = procfs::own_cpu_ticks();
    close_quietly(sender_ws).await;
    // Err only when every member task is gone already.
    let _ = stop_sender.send(true);
    let mut outcomes = Vec::with_capacity(member_tasks.len());
    for task in member_tasks {
        outcomes.push(task.await.map_err(|error| BenchError::new(format!("a member task failed: {error}")))?);
    }

    let mut latencies = Vec::with_capacity(wanted as usize);
    let mut closed = Vec::new();
    for outcome in &outcomes {
        for (seq, at) in &outcome.receipts {
            if let Some(sent_at) = sender.sent_at.get(*seq) {
                latencies.push(at.saturating_duration_since(*sent_at));
            }
        }
        closed.extend(outcome.closed.clone());
    }
    let delivered = latencies.len() as u64;
    let latency = LatencySummary::from_samples(latencies);
    let echo = LatencySummary::from_samples(sender.echo_latencies.clone());
    let server_seconds = match (&before, &after) {
        (Some(before), Some(after)) => {
            after.cpu_ticks.checked_sub(before.cpu_ticks).map(|t| t as f64 / TICKS_PER_SECOND)
        }
        _ => None,
    };
    let bench_seconds = match (own_ticks_before, own_ticks_after) {
        (Some(before), Some(after)) => after.checked_sub(before).map(|t| t as f64 / TICKS_PER_SECOND),
        _ => None,
    };
    let per_copy_us = server_seconds.filter(|_| delivered > 0).map(|s| round2(s / delivered as f64 * 1e6));

    let mut json = bench.header("group");
    for (key, value) in [
        ("members", json!(args.members)),
        ("messages", json!(args.messages)),
        ("rate", json!(args.rate)),
        ("size", json!(args.size)),
        ("register_s", json!(round2(registered_in.as_secs_f64()))),
        ("create_group_s", json!(round2(group_in.as_secs_f64()))),
        ("connect_s", json!(round2(connected_in.as_secs_f64()))),
        ("settle_s", json!(round2(settled_in.as_secs_f64()))),
        ("sent", json!(sender.sent_at.len())),
        ("copies_wanted", json!(wanted)),
        ("copies_delivered", json!(delivered)),
        ("copies_lost", json!(wanted.saturating_sub(delivered))),
        ("delivery_s", json!(round2(delivery.as_secs_f64()))),
        ("latency", summary_json(latency.as_ref())),
        ("echo_latency", summary_json(echo.as_ref())),
        ("server_cpu_s", json!(server_seconds.map(round2))),
        ("server_cpu_us_per_copy", json!(per_copy_us)),
        ("bench_cpu_s", json!(bench_seconds.map(round2))),
        ("sender_errors", json!(sender.errors)),
        ("sender_closed", json!(sender.closed)),
        ("members_closed", json!(closed.len())),
        ("member_close_samples", json!(closed.iter().take(5).collect::<Vec<_>>())),
        ("server_before", snapshot_json(before.as_ref())),
        ("server_after", snapshot_json(after.as_ref())),
    ] {
        json.insert(key.to_string(), value);
    }
    let mut text = format!(
        "group: {} members, {} messages of {} bytes at {}/s\n",
        args.members, args.messages, args.size, args.rate
    );
    text.push_str(&format!(
        "  set-up: registered in {:.1} s, group created in {:.2} s, connected in {:.1} s, quiet after {:.1} s\n",
        registered_in.as_secs_f64(),
        group_in.as_secs_f64(),
        connected_in.as_secs_f64(),
        settled_in.as_secs_f64()
    ));
    text.push_str(&format!(
        "  copies: {delivered} of {wanted} delivered ({} lost) in {:.1} s\n",
        wanted.saturating_sub(delivered),
        delivery.as_secs_f64()
    ));
    text.push_str(&format!("  latency send → member: {}\n", summary_human(latency.as_ref())));
    text.push_str(&format!("  latency send → sender's echo: {}\n", summary_human(echo.as_ref())));
    text.push_str(&match (server_seconds, per_copy_us) {
        (Some(seconds), Some(per_copy)) => {
            format!("  server CPU {seconds:.2} s for the delivery = {per_copy:.2} µs per delivered copy\n")
        }
        _ => "  server CPU: unknown (no pid; pass --pid)\n".to_string(),
    });
    for sample in sender.errors.iter().take(3) {
        text.push_str(&format!("  sender error: {sample}\n"));
    }
    if let Some(reason) = &sender.closed {
        text.push_str(&format!("  the sender's connection ended: {reason}\n"));
    }
    if !closed.is_empty() {
        text.push_str(&format!("  {} member connections ended early: {}\n", closed.len(), closed[0]));
    }
    text.push_str(&format!(
        "  chatd-bench CPU {:.2} s\n  {}",
        bench_seconds.unwrap_or(0.0),
        rss_change_human(before.as_ref(), after.as_ref())
    ));
    Ok(Report { json: Value::Object(json), text })
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

/// Waits until no member has read a frame for `QUIET_FOR` (at most `QUIET_WITHIN`).
async fn wait_until_quiet(counters: &Counters) {
    let give_up = Instant::now() + QUIET_WITHIN;
    let mut last = counters.frames.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    while Instant::now() < give_up && still_since.elapsed() < QUIET_FOR {
        sleep(Duration::from_millis(100)).await;
        let now = counters.frames.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
}

/// Reads one member's connection until told to stop, noting each copy.
async fn member(
    mut ws: WsStream,
    prefix: Arc<str>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> MemberOutcome {
    let mut outcome = MemberOutcome::default();
    loop {
        tokio::select! {
            item = ws.next() => {
                let at = Instant::now();
                counters.frames.fetch_add(1, Ordering::Relaxed);
                match item {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(seq) = copy_number(text.as_str(), &prefix) {
                            outcome.receipts.push((seq, at));
                            counters.copies.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        outcome.closed = Some(frame.map_or_else(
                            || "closed by the server".to_string(),
                            |f| format!("closed by the server with code {}", u16::from(f.code)),
                        ));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        outcome.closed = Some(describe(&error));
                        break;
                    }
                    None => {
                        outcome.closed = Some("connection ended".to_string());
                        break;
                    }
                }
            }
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
    close_quietly(ws).await;
    outcome
}

/// The number of a sender's message from a frame's temp id `<prefix><n>`.
fn copy_number(text: &str, prefix: &str) -> Option<usize> {
    let Some(StreamFrame::Stored(event)) = parse_stream_frame(text) else { return None };
    if event.kind != NEW_MESSAGE {
        return None;
    }
    event.local_temp_id?.strip_prefix(prefix)?.parse().ok()
}

struct SendPlan {
    room: i64,
    count: usize,
    interval: Duration,
    content: String,
    prefix: Arc<str>,
    grace: Duration,
}

/// Sends `count` messages on a fixed schedule from `started` (a late send
/// does not make the next one early), reading echoes in between; returns
/// once every echo is in, or `grace` after the last send, with the
/// connection (closed after the measurement).
async fn sender_loop(mut ws: WsStream, plan: SendPlan, started: Instant) -> (SenderOutcome, WsStream) {
    let mut outcome = SenderOutcome { sent_at: Vec::with_capacity(plan.count), ..SenderOutcome::default() };
    let mut echoed = 0;
    let mut next_at = started;
    loop {
        let now = Instant::now();
        if outcome.sent_at.len() < plan.count && now >= next_at {
            let frame =
                text_message_frame(plan.room, &plan.content, &format!("{}{}", plan.prefix, outcome.sent_at.len()));
            let sent_at = Instant::now();
            if let Err(error) = ws.send(Message::text(frame)).await {
                outcome.closed = Some(describe(&error));
                break;
            }
            outcome.sent_at.push(sent_at);
            next_at += plan.interval;
            continue;
        }
        let all_sent = outcome.sent_at.len() == plan.count;
        if all_sent && echoed == plan.count {
            break;
        }
        let wake = if all_sent { outcome.sent_at.last().copied().unwrap_or(started) + plan.grace } else { next_at };
        if all_sent && now >= wake {
            break;
        }
        match timeout_at(wake, ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Text(text)))) => match parse_stream_frame(text.as_str()) {
                Some(StreamFrame::Stored(event)) if event.kind == NEW_MESSAGE => {
                    let seq = event
                        .local_temp_id
                        .as_deref()
                        .and_then(|t| t.strip_prefix(&*plan.prefix)?.parse::<usize>().ok());
                    if let Some(sent_at) = seq.and_then(|seq| outcome.sent_at.get(seq)) {
                        outcome.echo_latencies.push(sent_at.elapsed());
                        echoed += 1;
                    }
                }
                Some(StreamFrame::Error { message, .. }) if outcome.errors.len() < 5 => outcome.errors.push(message),
                _ => {}
            },
            Ok(Some(Ok(Message::Close(_))) | None) => {
                outcome.closed = Some("closed by the server".to_string());
                break;
            }
            Ok(Some(Err(error))) => {
                outcome.closed = Some(describe(&error));
                break;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    (outcome, ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_numbered_from_the_temp_id() {
        let frame = r#"{"type":"new_message","data":{"id":9,"room_id":3,"local_temp_id":"gab12-17"},"cursor":"v1.40"}"#;
        assert_eq!(copy_number(frame, "gab12-"), Some(17));
        assert_eq!(copy_number(frame, "gzz-"), None);
        let update =
            r#"{"type":"message_update","data":{"id":9,"room_id":3,"local_temp_id":"gab12-17"},"cursor":"v1.41"}"#;
        assert_eq!(copy_number(update, "gab12-"), None);
        assert_eq!(copy_number(r#"{"type":"presence","data":{"user_id":1}}"#, "gab12-"), None);
    }
}
