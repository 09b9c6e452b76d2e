//! `idle`: opens N WebSocket connections spread over a few users, holds them
//! for a while, and reads how much resident memory the server spent on them;
//! then closes them all and follows the server's VmRSS to see whether (and
//! how fast) that memory comes back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::value_parser;
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};

use crate::client::{ConnectFailure, Incoming, WsStream, classify, close_quietly, connect_ws, idle_ws_config};
use crate::context::{Bench, Report, kb_human, progress, snapshot_json};
use crate::error::{BenchError, Result};
use crate::procfs::{self, Limit, ProcessSnapshot};
use crate::stats::{rate, round2};

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// WebSocket connections to open and hold.
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u32).range(1..=60_000))]
    pub connections: u32,
    /// Seconds to hold them once all are open.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=3600))]
    pub hold: u64,
    /// Connections per user; the run registers connections / per-user users.
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u32).range(1..=60_000))]
    pub per_user: u32,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 256, value_parser = value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Seconds to follow the server's VmRSS after every connection closed.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=600))]
    pub settle: u64,
}

/// How often the server's VmRSS is read after the connections close.
const SETTLE_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The memory counts as returned once VmRSS is within this factor of the
/// reading before any connection opened.
const RETURNED_FACTOR: f64 = 1.25;

/// File descriptors a process needs beyond its connections.
const FD_HEADROOM: u64 = 100;

pub async fn run(bench: &Bench, args: &IdleArgs) -> Result<Report> {
    let wanted = u64::from(args.connections);
    let mut hints = Vec::new();
    let raise = procfs::raise_own_nofile_limit();
    if let Some(note) = &raise.note {
        progress(format!("idle: could not raise the open-file limit: {note}"));
    }
    if let (Some(before), Some(after)) = (raise.before, raise.after)
        && after.soft > before.soft
    {
        progress(format!("idle: raised the open-file limit from {} to {}", before.soft, limit_text(after.soft)));
    }
    if let Some(limit) = raise.after
        && limit.soft < wanted + FD_HEADROOM
    {
        hints.push(format!(
            "chatd-bench may run out of file descriptors (limit {}): run `ulimit -n {}` first",
            limit.soft,
            wanted + FD_HEADROOM
        ));
    }
    let server_limit = bench.server_pid.and_then(|pid| procfs::read_nofile_limit(&pid.to_string()));
    if let (Some(pid), Some(limit)) = (bench.server_pid, server_limit)
        && limit.soft < wanted + FD_HEADROOM
    {
        hints.push(server_limit_hint(pid, limit, wanted + FD_HEADROOM));
    }
    for hint in &hints {
        progress(format!("idle: hint: {hint}"));
    }

    let user_count = wanted.div_ceil(u64::from(args.per_user)) as usize;
    progress(format!("idle: registering {user_count} users"));
    let users = bench.api.register_users(&bench.run_id, 0, user_count, 4).await?;
    // Let the registrations' hashing buffers go back before the first reading.
    sleep(Duration::from_secs(1)).await;
    let before = bench.server_snapshot();

    progress(format!("idle: opening {wanted} connections, {} at a time", args.concurrency));
    let (stop_sender, stop) = watch::channel(false);
    let closed_early = Arc::new(AtomicU64::new(0));
    let mut holders = Vec::with_capacity(args.connections as usize);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut failure_samples: Vec<String> = Vec::new();
    let open_started = Instant::now();
    let target = bench.target;
    let users = &users;
    let mut attempts = stream::iter(0..args.connections as usize)
        .map(|n| async move {
            let user = &users[n % users.len()];
            connect_ws(&target, &user.token, idle_ws_config()).await
        })
        .buffer_unordered(args.concurrency as usize);
    let mut done: u64 = 0;
    while let Some(attempt) = attempts.next().await {
        done += 1;
        match attempt {
            Ok(ws) => holders.push(tokio::spawn(hold(ws, stop.clone(), Arc::clone(&closed_early)))),
            Err(failure) => {
                *failures.entry(failure.label()).or_default() += 1;
                let sample = failure.to_string();
                if failure_samples.len() < 5 && !failure_samples.contains(&sample) {
                    failure_samples.push(sample);
                }
            }
        }
        if done.is_multiple_of(1000) {
            progress(format!("idle: {done}/{wanted} attempted, {} open", holders.len()));
        }
    }
    drop(attempts);
    let open_elapsed = open_started.elapsed();
    let opened = holders.len() as u64;
    if failures.contains_key(&ConnectFailure::TooManyOpenFiles.label()) {
        hints.push(format!("chatd-bench hit its open-file limit: run `ulimit -n {}` before it", wanted + FD_HEADROOM));
    }
    progress(format!("idle: {opened} open in {:.1} s; holding {} s", open_elapsed.as_secs_f64(), args.hold));
    sleep(Duration::from_secs(1)).await;
    let after_open = bench.server_snapshot();
    sleep(Duration::from_secs(args.hold)).await;
    let after_hold = bench.server_snapshot();
    let peak_kb = [&after_open, &after_hold].into_iter().flatten().map(|s| s.memory.vm_rss_kb).max();
    let still_open = opened.saturating_sub(closed_early.load(Ordering::Relaxed));

    progress("idle: closing");
    stop_sender.send_replace(true);
    let mut close_reasons: Vec<String> = Vec::new();
    let join_all = async {
        for holder in holders {
            if let Ok(Some(reason)) = holder.await
                && close_reasons.len() < 5
                && !close_reasons.contains(&reason)
            {
                close_reasons.push(reason);
            }
        }
    };
    if timeout(Duration::from_secs(30), join_all).await.is_err() {
        progress("idle: some connections did not close within 30 s");
    }
    progress(format!("idle: closed; following the server's VmRSS for {} s", args.settle));
    let settle = follow_rss(bench, Duration::from_secs(args.settle)).await;
    let after_close = settle.after_one_second;
    let memory_return = before
        .as_ref()
        .map(|before| MemoryReturn::from_samples(before.memory.vm_rss_kb, peak_kb.unwrap_or(0), &settle.samples));

    if opened == 0 {
        return Err(BenchError::new(format!("idle: no connection could be opened: {}", failure_samples.join("; "))));
    }
    let per_connection_kb = match (&before, &after_open) {
        (Some(before), Some(after)) => {
            Some(round2((after.memory.vm_rss_kb as f64 - before.memory.vm_rss_kb as f64) / opened as f64))
        }
        _ => None,
    };
    Ok(report(
        bench,
        args,
        Outcome {
            opened,
            still_open,
            open_elapsed,
            failures,
            failure_samples,
            close_reasons,
            hints,
            bench_limit: raise.after,
            per_connection_kb,
            server_limit,
            before,
            after_open,
            after_hold,
            after_close,
            memory_return,
            settle_samples: settle.samples,
        },
    ))
}

/// VmRSS readings after the close: (milliseconds since every connection
/// closed, KiB), plus the full snapshot about one second in (the reading
/// `server_after_close` always was).
struct Settle {
    samples: Vec<(u64, u64)>,
    after_one_second: Option<ProcessSnapshot>,
}

async fn follow_rss(bench: &Bench, window: Duration) -> Settle {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut after_one_second = None;
    let mut next = started;
    while next.duration_since(started) <= window {
        tokio::time::sleep_until(next).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if let Some(snapshot) = bench.server_snapshot() {
            samples.push((elapsed_ms, snapshot.memory.vm_rss_kb));
            if after_one_second.is_none() && elapsed_ms >= 1000 {
                after_one_second = Some(snapshot);
            }
        }
        next += SETTLE_SAMPLE_EVERY;
    }
    Settle { samples, after_one_second }
}

/// Whether the connections' memory came back after they closed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MemoryReturn {
    before_kb: u64,
    peak_kb: u64,
    /// The last reading of the settle window.
    after_close_kb: u64,
    /// When VmRSS first came within `RETURNED_FACTOR` of `before_kb`.
    returned_after_ms: Option<u64>,
}

impl MemoryReturn {
    fn from_samples(before_kb: u64, peak_kb: u64, samples: &[(u64, u64)]) -> MemoryReturn {
        let bound = before_kb as f64 * RETURNED_FACTOR;
        MemoryReturn {
            before_kb,
            peak_kb,
            after_close_kb: samples.last().map_or(0, |&(_, kb)| kb),
            returned_after_ms: samples.iter().find(|&&(_, kb)| kb as f64 <= bound).map(|&(ms, _)| ms),
        }
    }
}

/// Keeps one connection open (reading, so pings get their pongs) until told
/// to stop; returns why the server closed it, if it did so first.
async fn hold(mut ws: WsStream, mut stop: watch::Receiver<bool>, closed_early: Arc<AtomicU64>) -> Option<String> {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                close_quietly(ws).await;
                return None;
            }
            item = ws.next() => {
                if let Incoming::Closed(reason) = classify(item) {
                    closed_early.fetch_add(1, Ordering::Relaxed);
                    return Some(reason);
                }
            }
        }
    }
}

struct Outcome {
    opened: u64,
    still_open: u64,
    open_elapsed: Duration,
    failures: BTreeMap<String, u64>,
    failure_samples: Vec<String>,
    close_reasons: Vec<String>,
    hints: Vec<String>,
    bench_limit: Option<Limit>,
    per_connection_kb: Option<f64>,
    server_limit: Option<Limit>,
    before: Option<ProcessSnapshot>,
    after_open: Option<ProcessSnapshot>,
    after_hold: Option<ProcessSnapshot>,
    after_close: Option<ProcessSnapshot>,
    memory_return: Option<MemoryReturn>,
    settle_samples: Vec<(u64, u64)>,
}

/// Advice for a server whose open-file limit is below `needed`. Raising the
/// soft limit up to the hard one needs no privilege; past it, root must
/// raise both.
fn server_limit_hint(pid: u32, limit: Limit, needed: u64) -> String {
    let how = if needed <= limit.hard {
        format!("`prlimit --pid {pid} --nofile={needed}:{}`", limit_text(limit.hard))
    } else {
        format!("(as root) `prlimit --pid {pid} --nofile={needed}:{needed}`")
    };
    format!(
        "the server's open-file limit is {} (hard {}): too low for {} connections; start chatd after `ulimit -n {needed}`, or raise it live with {how}",
        limit.soft,
        limit_text(limit.hard),
        needed - FD_HEADROOM
    )
}

fn limit_text(value: u64) -> String {
    if value == u64::MAX { "unlimited".to_string() } else { value.to_string() }
}

fn report(bench: &Bench, args: &IdleArgs, outcome: Outcome) -> Report {
    let failed: u64 = outcome.failures.values().sum();
    let open_rate = round2(rate(outcome.opened as f64, outcome.open_elapsed));
    let mut json = bench.header("idle");
    for (key, value) in [
        ("connections", json!(args.connections)),
        ("hold_s", json!(args.hold)),
        ("per_user", json!(args.per_user)),
        ("opened", json!(outcome.opened)),
        ("failed", json!(failed)),
        ("failures", json!(outcome.failures)),
        ("failure_samples", json!(outcome.failure_samples)),
        ("open_s", json!(round2(outcome.open_elapsed.as_secs_f64()))),
        ("opened_per_s", json!(open_rate)),
        ("still_open_after_hold", json!(outcome.still_open)),
        ("close_reasons", json!(outcome.close_reasons)),
        ("per_connection_kb", json!(outcome.per_connection_kb)),
        ("bench_nofile_soft", json!(outcome.bench_limit.map(|l| l.soft))),
        ("server_nofile_soft", json!(outcome.server_limit.map(|l| l.soft))),
        ("server_before", snapshot_json(outcome.before.as_ref())),
        ("server_after_open", snapshot_json(outcome.after_open.as_ref())),
        ("server_after_hold", snapshot_json(outcome.after_hold.as_ref())),
        ("server_after_close", snapshot_json(outcome.after_close.as_ref())),
        ("settle_s", json!(args.settle)),
        ("rss_before_kb", json!(outcome.memory_return.map(|m| m.before_kb))),
        ("rss_peak_kb", json!(outcome.memory_return.map(|m| m.peak_kb))),
        ("rss_after_close_kb", json!(outcome.memory_return.map(|m| m.after_close_kb))),
        ("rss_returned_within", json!(RETURNED_FACTOR)),
        ("rss_returned_after_ms", json!(outcome.memory_return.and_then(|m| m.returned_after_ms))),
        ("rss_after_close_samples", json!(outcome.settle_samples)),
        ("hints", json!(outcome.hints)),
    ] {
        json.insert(key.to_string(), value);
    }

    let rss = |snapshot: &Option<ProcessSnapshot>| {
        snapshot.as_ref().map_or("?".to_string(), |s| {
            format!(
                "{} ({} fds)",
                kb_human(s.memory.vm_rss_kb),
                s.open_files.map_or("?".to_string(), |n| n.to_string())
            )
        })
    };
    let mut text = format!(
        "idle: {} connections over {} users, held {} s\n",
        args.connections,
        u64::from(args.connections).div_ceil(u64::from(args.per_user)),
        args.hold
    );
    text.push_str(&format!(
        "  opened {} in {:.2} s ({open_rate:.0}/s), failed {failed}, still open after the hold {}\n",
        outcome.opened,
        outcome.open_elapsed.as_secs_f64(),
        outcome.still_open
    ));
    for (label, count) in &outcome.failures {
        text.push_str(&format!("  failed: {label} × {count}\n"));
    }
    for sample in &outcome.failure_samples {
        text.push_str(&format!("  failure: {sample}\n"));
    }
    for reason in &outcome.close_reasons {
        text.push_str(&format!("  closed early: {reason}\n"));
    }
    text.push_str(&format!(
        "  server VmRSS: before {}, after opening {}, after the hold {}, after closing {}\n",
        rss(&outcome.before),
        rss(&outcome.after_open),
        rss(&outcome.after_hold),
        rss(&outcome.after_close)
    ));
    if let Some(memory) = outcome.memory_return {
        text.push_str(&format!(
            "  memory return: before {}, peak {}, {} s after closing {}; within {RETURNED_FACTOR}x of before {}\n",
            kb_human(memory.before_kb),
            kb_human(memory.peak_kb),
            args.settle,
            kb_human(memory.after_close_kb),
            memory.returned_after_ms.map_or("never".to_string(), |ms| format!("after {ms} ms"))
        ));
    }
    text.push_str(&format!(
        "  per connection: {}",
        outcome.per_connection_kb.map_or("unknown (no server pid)".to_string(), |kb| format!("{kb:.1} KiB"))
    ));
    for hint in &outcome.hints {
        text.push_str(&format!("\n  hint: {hint}"));
    }
    Report { json: Value::Object(json), text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_raises_the_soft_limit_when_the_hard_one_allows() {
        let hint = server_limit_hint(7, Limit { soft: 1024, hard: 524_288 }, 10_100);
        assert!(hint.contains("`prlimit --pid 7 --nofile=10100:524288`"), "{hint}");
        assert!(hint.contains("too low for 10000 connections"), "{hint}");
    }

    #[test]
    fn memory_returns_at_the_first_reading_within_the_factor() {
        let samples = [(0, 190_000), (250, 120_000), (500, 62_000), (750, 60_000)];
        let memory = MemoryReturn::from_samples(50_000, 191_000, &samples);
        assert_eq!(memory.returned_after_ms, Some(500));
        assert_eq!(memory.after_close_kb, 60_000);
        assert_eq!(memory.peak_kb, 191_000);
    }

    #[test]
    fn memory_that_stays_up_never_returns() {
        let memory = MemoryReturn::from_samples(50_000, 191_000, &[(0, 190_000), (250, 189_000)]);
        assert_eq!(memory.returned_after_ms, None);
        assert_eq!(memory.after_close_kb, 189_000);
    }

    #[test]
    fn hint_needs_root_past_the_hard_limit() {
        let hint = server_limit_hint(7, Limit { soft: 1024, hard: 1024 }, 2100);
        assert!(hint.contains("(as root) `prlimit --pid 7 --nofile=2100:2100`"), "{hint}");
    }
}
