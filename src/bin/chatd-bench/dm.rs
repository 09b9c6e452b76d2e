//! `dm`: P pairs of users in direct rooms; each pair's sender keeps at most
//! W messages in flight (sent, not yet seen by its receiver). Measures the
//! delivery rate, send → receipt latency, losses, and errors; and, on a
//! server with a search indexer, how long it needs to catch up afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clap::value_parser;
use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{
    Incoming, Pair, ServerEvent, WsStream, classify, close_quietly, connect_ws_or_fail, text_content,
    text_message_frame,
};
use crate::context::{Bench, CpuMeter, Report, progress, rss_change_human, snapshot_json};
use crate::error::{BenchError, Result, describe};
use crate::indexer::{CatchUp, Indexer};
use crate::procfs::{ProcessSnapshot, TICKS_PER_SECOND};
use crate::stats::{LatencySummary, rate, round2, summary_human, summary_json};

#[derive(Debug, Clone, clap::Args)]
pub struct DmArgs {
    /// Pairs of users: one direct room, one sender and one receiver connection each.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u32).range(1..=5000))]
    pub pairs: u32,
    /// Messages each sender keeps in flight (sent, not yet at its receiver).
    #[arg(long, default_value_t = 16, value_parser = value_parser!(u32).range(1..=4096))]
    pub window: u32,
    /// Length of each text message, in bytes (ASCII, so also characters).
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u32).range(1..=5000))]
    pub size: u32,
    /// Messages per sender, at most.
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(1..=10_000_000))]
    pub messages: u64,
    /// Seconds of sending, at most.
    #[arg(long, default_value_t = 30, value_parser = value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Seconds to wait for messages in flight once sending stops; what has not arrived by then is lost.
    #[arg(long, default_value_t = 5, value_parser = value_parser!(u64).range(1..=300))]
    pub grace: u64,
    /// Another node of the same cluster for the receivers (senders stay on
    /// --url): every message crosses nodes, through PostgreSQL and NATS.
    #[arg(long)]
    pub receivers_url: Option<String>,
}

/// What every pair task is told.
struct Plan {
    run_id: String,
    window: usize,
    messages: u64,
    content: String,
    start_at: Instant,
    send_until: Instant,
    grace: Duration,
}

/// What one pair saw.
#[derive(Default)]
struct PairOutcome {
    sent: u64,
    latencies: Vec<Duration>,
    echo_latencies: Vec<Duration>,
    lost: u64,
    echoes_missing: u64,
    rejected: u64,
    errors: u64,
    error_samples: Vec<String>,
    duplicates: u64,
    out_of_order: u64,
    unparsed: u64,
    close_reasons: Vec<String>,
    last_receipt: Option<Instant>,
}

impl PairOutcome {
    fn record_error(&mut self, side: &str, message: &str) {
        self.errors += 1;
        let sample = format!("{side}: {message}");
        if self.error_samples.len() < 5 && !self.error_samples.contains(&sample) {
            self.error_samples.push(sample);
        }
    }
}

pub async fn run(bench: &Bench, args: &DmArgs) -> Result<Report> {
    let pair_count = args.pairs as usize;
    progress(format!("dm: registering {} users and opening {pair_count} rooms", pair_count * 2));
    let pairs = bench.api.make_pairs(&bench.run_id, pair_count).await?;
    progress(format!("dm: opening {} WebSocket connections", pair_count * 2));
    let target = bench.target;
    let receivers = match &args.receivers_url {
        Some(url) => crate::client::Target::parse(url)?,
        None => target,
    };
    let connected: Vec<Result<(Pair, WsStream, WsStream)>> = stream::iter(pairs)
        .map(|pair| async move {
            let sender = connect_ws_or_fail(&target, &pair.sender).await?;
            let receiver = connect_ws_or_fail(&receivers, &pair.receiver).await?;
            Ok((pair, sender, receiver))
        })
        .buffered(32)
        .collect()
        .await;
    let connected = connected.into_iter().collect::<Result<Vec<_>>>()?;

    let indexer = Indexer::find(bench.server_pid);
    let watch = indexer.as_ref().map(Indexer::watch);
    let before = bench.server_snapshot();
    let cpu = CpuMeter::start(before.as_ref());
    let start_at = Instant::now() + Duration::from_millis(200);
    let plan = Arc::new(Plan {
        run_id: bench.run_id.clone(),
        window: args.window as usize,
        messages: args.messages,
        content: text_content(args.size as usize),
        start_at,
        send_until: start_at + Duration::from_secs(args.duration),
        grace: Duration::from_secs(args.grace),
    });
    progress(format!(
        "dm: sending for up to {} s ({} messages per sender, window {})",
        args.duration, args.messages, args.window
    ));
    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(index, (pair, sender, receiver))| {
            tokio::spawn(drive_pair(index, pair.room_id, sender, receiver, Arc::clone(&plan)))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.map_err(|error| BenchError::new(format!("a pair task failed: {error}")))?);
    }
    let after = bench.server_snapshot();
    let cpu_use = cpu.finish(after.as_ref());
    let indexing = match watch {
        Some(watch) => {
            progress("dm: waiting for the search indexer to catch up");
            let last_receipt = outcomes.iter().filter_map(|o| o.last_receipt).max().unwrap_or(start_at);
            let catch_up = watch.caught_up(last_receipt, Instant::now() + CATCH_UP_TIMEOUT).await;
            Some(Indexing { catch_up, server_after: bench.server_snapshot() })
        }
        None => None,
    };
    let server = ServerUse { before, after, cpu: cpu_use, indexing };
    Ok(report(bench, args, &plan, outcomes, server))
}

/// How long to wait for the search indexer once the messages are in.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// The indexer's catch-up and the server once it is over.
struct Indexing {
    catch_up: CatchUp,
    server_after: Option<ProcessSnapshot>,
}

/// The server's readings around the run.
struct ServerUse {
    before: Option<ProcessSnapshot>,
    after: Option<ProcessSnapshot>,
    cpu: crate::context::CpuUse,
    indexing: Option<Indexing>,
}

/// Server CPU time between two readings, in µs per message.
fn cpu_us_per_message(before: Option<&ProcessSnapshot>, after: Option<&ProcessSnapshot>, messages: u64) -> Option<f64> {
    let ticks = after?.cpu_ticks.checked_sub(before?.cpu_ticks)?;
    (messages > 0).then(|| round2(ticks as f64 / TICKS_PER_SECOND * 1e6 / messages as f64))
}

/// Drives one pair until its messages are sent and received, or time is up.
async fn drive_pair(
    index: usize,
    room_id: i64,
    mut sender: WsStream,
    mut receiver: WsStream,
    plan: Arc<Plan>,
) -> PairOutcome {
    let prefix = format!("b{}-{index}-", plan.run_id);
    let seq_of = |temp_id: Option<&str>| -> Option<u64> { temp_id?.strip_prefix(&prefix)?.parse().ok() };
    let mut outcome = PairOutcome::default();
    let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(plan.window);
    let mut unechoed: HashMap<u64, Instant> = HashMap::with_capacity(plan.window);
    let mut next_seq: u64 = 0;
    let mut highest_id = i64::MIN;
    let mut sender_open = true;
    let mut grace_until: Option<Instant> = None;

    sleep_until(plan.start_at).await;
    loop {
        let now = Instant::now();
        if grace_until.is_none() && (next_seq >= plan.messages || now >= plan.send_until || !sender_open) {
            grace_until = Some(now + plan.grace);
        }
        if grace_until.is_none() {
            while in_flight.len() < plan.window && next_seq < plan.messages {
                let frame = text_message_frame(room_id, &plan.content, &format!("{prefix}{next_seq}"));
                let sent_at = Instant::now();
                if let Err(error) = sender.send(Message::text(frame)).await {
                    outcome.close_reasons.push(format!("sender: {}", describe(&error)));
                    sender_open = false;
                    break;
                }
                in_flight.insert(next_seq, sent_at);
                unechoed.insert(next_seq, sent_at);
                next_seq += 1;
                outcome.sent += 1;
            }
        } else if in_flight.is_empty() && (unechoed.is_empty() || !sender_open) {
            break;
        }
        let wake = grace_until.unwrap_or(plan.send_until);
        tokio::select! {
            item = receiver.next() => match classify(item) {
                Incoming::Event(ServerEvent::NewMessage(message)) => {
                    let received_at = Instant::now();
                    if message.id <= highest_id {
                        outcome.out_of_order += 1;
                    }
                    highest_id = highest_id.max(message.id);
                    match seq_of(message.local_temp_id.as_deref()).map(|seq| in_flight.remove(&seq)) {
                        Some(Some(sent_at)) => {
                            outcome.latencies.push(received_at - sent_at);
                            outcome.last_receipt = Some(received_at);
                        }
                        Some(None) => outcome.duplicates += 1,
                        None => {}
                    }
                }
                Incoming::Event(ServerEvent::Error { message, .. }) => {
                    outcome.record_error("receiver", &message);
                }
                Incoming::Closed(reason) => {
                    outcome.close_reasons.push(format!("receiver: {reason}"));
                    break;
                }
                Incoming::Unparsed => outcome.unparsed += 1,
                Incoming::Event(ServerEvent::Other(_)) | Incoming::Nothing => {}
            },
            item = sender.next(), if sender_open => match classify(item) {
                Incoming::Event(ServerEvent::NewMessage(message)) => {
                    if let Some(sent_at) = seq_of(message.local_temp_id.as_deref()).and_then(|seq| unechoed.remove(&seq)) {
                        outcome.echo_latencies.push(Instant::now() - sent_at);
                    }
                }
                Incoming::Event(ServerEvent::Error { message, local_temp_id }) => {
                    outcome.record_error("sender", &message);
                    if let Some(seq) = seq_of(local_temp_id.as_deref()) {
                        unechoed.remove(&seq);
                        if in_flight.remove(&seq).is_some() {
                            outcome.rejected += 1;
                        }
                    }
                }
                Incoming::Closed(reason) => {
                    outcome.close_reasons.push(format!("sender: {reason}"));
                    sender_open = false;
                }
                Incoming::Unparsed => outcome.unparsed += 1,
                Incoming::Event(ServerEvent::Other(_)) | Incoming::Nothing => {}
            },
            () = sleep_until(wake) => {
                if grace_until.is_some() {
                    break;
                }
            }
        }
    }
    outcome.lost = in_flight.len() as u64;
    outcome.echoes_missing = unechoed.len() as u64;
    close_quietly(sender).await;
    close_quietly(receiver).await;
    outcome
}

fn report(bench: &Bench, args: &DmArgs, plan: &Plan, outcomes: Vec<PairOutcome>, server: ServerUse) -> Report {
    let ServerUse { before, after, cpu, indexing } = server;
    let mut total = PairOutcome::default();
    let mut closed_pairs = 0;
    for outcome in outcomes {
        total.sent += outcome.sent;
        total.lost += outcome.lost;
        total.echoes_missing += outcome.echoes_missing;
        total.rejected += outcome.rejected;
        total.errors += outcome.errors;
        total.duplicates += outcome.duplicates;
        total.out_of_order += outcome.out_of_order;
        total.unparsed += outcome.unparsed;
        total.latencies.extend(outcome.latencies);
        total.echo_latencies.extend(outcome.echo_latencies);
        for sample in outcome.error_samples {
            if total.error_samples.len() < 5 && !total.error_samples.contains(&sample) {
                total.error_samples.push(sample);
            }
        }
        if !outcome.close_reasons.is_empty() {
            closed_pairs += 1;
        }
        for reason in outcome.close_reasons {
            if total.close_reasons.len() < 5 && !total.close_reasons.contains(&reason) {
                total.close_reasons.push(reason);
            }
        }
        total.last_receipt = total.last_receipt.max(outcome.last_receipt);
    }
    let delivered = total.latencies.len() as u64;
    let elapsed = total.last_receipt.map_or(Duration::ZERO, |last| last.saturating_duration_since(plan.start_at));
    let per_second = round2(rate(delivered as f64, elapsed));
    let latency = LatencySummary::from_samples(std::mem::take(&mut total.latencies));
    let echo = LatencySummary::from_samples(std::mem::take(&mut total.echo_latencies));
    let cpu_per_message = cpu_us_per_message(before.as_ref(), after.as_ref(), delivered);
    let cpu_per_message_indexed =
        indexing.as_ref().and_then(|i| cpu_us_per_message(before.as_ref(), i.server_after.as_ref(), delivered));

    let mut json = bench.header("dm");
    for (key, value) in [
        ("pairs", json!(args.pairs)),
        ("window", json!(args.window)),
        ("size", json!(args.size)),
        ("messages_per_sender", json!(args.messages)),
        ("receivers_url", json!(args.receivers_url)),
        ("duration_s", json!(args.duration)),
        ("sent", json!(total.sent)),
        ("delivered", json!(delivered)),
        ("elapsed_s", json!(round2(elapsed.as_secs_f64()))),
        ("delivered_per_s", json!(per_second)),
        ("lost", json!(total.lost)),
        ("rejected", json!(total.rejected)),
        ("errors", json!(total.errors)),
        ("error_samples", json!(total.error_samples)),
        ("echoes_missing", json!(total.echoes_missing)),
        ("duplicates", json!(total.duplicates)),
        ("out_of_order", json!(total.out_of_order)),
        ("unparsed_frames", json!(total.unparsed)),
        ("pairs_with_closed_connections", json!(closed_pairs)),
        ("close_reasons", json!(total.close_reasons)),
        ("latency", summary_json(latency.as_ref())),
        ("echo_latency", summary_json(echo.as_ref())),
        ("server_cpu_percent", json!(cpu.server_percent)),
        ("bench_cpu_percent", json!(cpu.bench_percent)),
        ("server_cpu_us_per_message", json!(cpu_per_message)),
        ("indexer", indexing.as_ref().map_or(Value::Null, |i| i.catch_up.json())),
        ("server_cpu_us_per_message_indexed", json!(cpu_per_message_indexed)),
        ("server_before", snapshot_json(before.as_ref())),
        ("server_after", snapshot_json(after.as_ref())),
    ] {
        json.insert(key.to_string(), value);
    }

    let mut text = format!(
        "dm: {} pairs, window {}, {}-byte text, up to {} messages per sender, up to {} s\n",
        args.pairs, args.window, args.size, args.messages, args.duration
    );
    text.push_str(&format!(
        "  sent {}, delivered {} in {:.2} s = {per_second:.1} msg/s\n",
        total.sent,
        delivered,
        elapsed.as_secs_f64()
    ));
    text.push_str(&format!(
        "  lost {} (not at the receiver {} s after sending stopped), rejected {}, error events {}, echoes missing {}, duplicates {}, out of order {}\n",
        total.lost, args.grace, total.rejected, total.errors, total.echoes_missing, total.duplicates, total.out_of_order
    ));
    text.push_str(&format!("  latency send → receiver: {}\n", summary_human(latency.as_ref())));
    text.push_str(&format!("  latency send → sender's echo: {}\n", summary_human(echo.as_ref())));
    for sample in &total.error_samples {
        text.push_str(&format!("  error: {sample}\n"));
    }
    if closed_pairs > 0 {
        text.push_str(&format!(
            "  {closed_pairs} pairs had a connection closed early: {}\n",
            total.close_reasons.join("; ")
        ));
    }
    text.push_str(&format!(
        "  {}; server CPU {} µs per delivered message\n",
        cpu.human(),
        cpu_per_message.map_or("?".to_string(), |us| format!("{us:.1}"))
    ));
    if let Some(indexing) = &indexing {
        text.push_str(&format!(
            "  search {}; server CPU with the catch-up {} µs per message\n",
            indexing.catch_up.human(),
            cpu_per_message_indexed.map_or("?".to_string(), |us| format!("{us:.1}"))
        ));
    }
    text.push_str(&format!("  {}", rss_change_human(before.as_ref(), after.as_ref())));
    Report { json: Value::Object(json), text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::MemoryStatus;

    fn reading(cpu_ticks: u64) -> ProcessSnapshot {
        ProcessSnapshot { memory: MemoryStatus { vm_rss_kb: 1, vm_hwm_kb: 1, threads: 1 }, cpu_ticks, open_files: None }
    }

    #[test]
    fn cpu_per_message_is_the_tick_difference_over_the_messages() {
        // 150 ticks = 1.5 s over 100,000 messages = 15 µs each.
        assert_eq!(cpu_us_per_message(Some(&reading(50)), Some(&reading(200)), 100_000), Some(15.0));
        assert_eq!(cpu_us_per_message(Some(&reading(50)), Some(&reading(200)), 0), None);
        assert_eq!(cpu_us_per_message(None, Some(&reading(200)), 10), None);
        assert_eq!(cpu_us_per_message(Some(&reading(300)), Some(&reading(200)), 10), None);
    }
}
