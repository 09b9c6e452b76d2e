//! `replay`: seeds K stored events (messages from one user into a direct
//! room), then times fresh connections of the other user that resume from a
//! cursor taken before the seeding: connect → `synced`, events per second,
//! and the server's CPU time for it.

use std::time::Duration;

use clap::value_parser;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::client::{Target, busy_ws_config, close_quietly, connect_ws_at, send_texts};
use crate::context::{Bench, Report, progress, snapshot_json};
use crate::error::{BenchError, Result};
use crate::procfs::TICKS_PER_SECOND;
use crate::stats::{rate, round2};
use crate::stream::{SYNC_TIMEOUT, read_until_synced};

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Stored events to seed (text messages from one user into one room).
    #[arg(long, default_value_t = 10_000, value_parser = value_parser!(u64).range(1..=1_000_000))]
    pub events: u64,
    /// Fresh connections that replay them all; the report gives the median.
    #[arg(long, default_value_t = 5, value_parser = value_parser!(u32).range(1..=100))]
    pub repeats: u32,
    /// Length of each text message, in bytes.
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u32).range(1..=5000))]
    pub size: u32,
}

/// One replay from the old cursor.
#[derive(Debug, Clone, Copy)]
struct Run {
    events: u64,
    /// From the start of the TCP connect to the `synced` frame.
    elapsed: Duration,
    /// The server's user + system CPU ticks over the same span (10 ms each).
    server_ticks: Option<u64>,
}

pub async fn run(bench: &Bench, args: &ReplayArgs) -> Result<Report> {
    progress("replay: registering 2 users and opening their room");
    let pair = bench.api.make_pair(&bench.run_id).await?;
    let target = bench.target;
    let mut sender = connect_ws_at(&target, &pair.sender.token, None, busy_ws_config())
        .await
        .map_err(|failure| BenchError::new(format!("opening the sender's WebSocket: {failure}")))?;
    // The cursor from before the seeding: every seeded event comes after it.
    let start = read_until_synced(&mut sender, Instant::now() + SYNC_TIMEOUT, |_| {}).await?;
    progress(format!("replay: seeding {} messages after cursor {}", args.events, start.cursor));
    let seeding = Instant::now();
    send_texts(
        &mut sender,
        pair.room_id,
        args.events as usize,
        args.size as usize,
        &format!("rp{}-", bench.run_id),
        64,
    )
    .await?;
    let seeded_in = seeding.elapsed();
    close_quietly(sender).await;
    // Let the writer's checkpoint and the socket teardown pass.
    sleep(Duration::from_secs(1)).await;

    let mut runs = Vec::with_capacity(args.repeats as usize);
    for repeat in 0..args.repeats {
        let one = replay_once(bench, &target, &pair.receiver.token, &start.cursor).await?;
        progress(format!(
            "replay: run {}: {} events in {:.1} ms = {:.0} events/s",
            repeat + 1,
            one.events,
            one.elapsed.as_secs_f64() * 1000.0,
            rate(one.events as f64, one.elapsed)
        ));
        if one.events != args.events {
            return Err(BenchError::new(format!(
                "replay from {} gave {} events, not the {} seeded: the stream lost or added some",
                start.cursor, one.events, args.events
            )));
        }
        runs.push(one);
        sleep(Duration::from_millis(200)).await;
    }
    Ok(report(bench, args, &runs, seeded_in))
}

/// Connects with the old cursor and reads to `synced`.
async fn replay_once(bench: &Bench, target: &Target, token: &str, cursor: &str) -> Result<Run> {
    let before = bench.server_snapshot();
    let started = Instant::now();
    let mut ws = connect_ws_at(target, token, Some(cursor), busy_ws_config())
        .await
        .map_err(|failure| BenchError::new(format!("opening the receiver's WebSocket: {failure}")))?;
    let synced = read_until_synced(&mut ws, started + SYNC_TIMEOUT, |_| {}).await?;
    let elapsed = started.elapsed();
    let after = bench.server_snapshot();
    close_quietly(ws).await;
    if synced.resync_required {
        return Err(BenchError::new(format!("the server could not serve cursor {cursor} (resync_required)")));
    }
    let server_ticks = match (before, after) {
        (Some(before), Some(after)) => after.cpu_ticks.checked_sub(before.cpu_ticks),
        _ => None,
    };
    Ok(Run { events: synced.events, elapsed, server_ticks })
}

fn report(bench: &Bench, args: &ReplayArgs, runs: &[Run], seeded_in: Duration) -> Report {
    let mut rates: Vec<f64> = runs.iter().map(|run| rate(run.events as f64, run.elapsed)).collect();
    rates.sort_by(f64::total_cmp);
    let median_rate = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let mut elapsed: Vec<Duration> = runs.iter().map(|run| run.elapsed).collect();
    elapsed.sort_unstable();
    let median_ms = elapsed.get(elapsed.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let ticks: Option<u64> = runs.iter().map(|run| run.server_ticks).sum();
    let events: u64 = runs.iter().map(|run| run.events).sum();
    let server_seconds = ticks.map(|t| t as f64 / TICKS_PER_SECOND);
    // Ticks are 10 ms: only the sum over every run is worth a rate.
    let per_cpu_second = server_seconds.filter(|s| *s > 0.0).map(|s| round2(events as f64 / s));
    let per_run_ms: Vec<f64> = runs.iter().map(|run| round2(run.elapsed.as_secs_f64() * 1000.0)).collect();
    let per_run_ticks: Vec<Option<u64>> = runs.iter().map(|run| run.server_ticks).collect();
    let snapshot = bench.server_snapshot();

    let mut json = bench.header("replay");
    for (key, value) in [
        ("events", json!(args.events)),
        ("repeats", json!(args.repeats)),
        ("size", json!(args.size)),
        ("seed_s", json!(round2(seeded_in.as_secs_f64()))),
        ("replay_ms", json!(per_run_ms)),
        ("replay_ms_median", json!(round2(median_ms))),
        ("events_per_s_median", json!(round2(median_rate))),
        ("events_per_s_min", json!(rates.first().copied().map(round2))),
        ("events_per_s_max", json!(rates.last().copied().map(round2))),
        ("server_cpu_ticks", json!(per_run_ticks)),
        ("server_cpu_s_total", json!(server_seconds.map(round2))),
        ("events_per_server_cpu_s", json!(per_cpu_second)),
        ("server_after", snapshot_json(snapshot.as_ref())),
    ] {
        json.insert(key.to_string(), value);
    }
    let mut text = format!(
        "replay: {} events seeded in {:.1} s; {} fresh connections from the old cursor\n",
        args.events,
        seeded_in.as_secs_f64(),
        args.repeats
    );
    text.push_str(&format!(
        "  connect → synced: median {median_ms:.1} ms = {median_rate:.0} events/s (runs: {})\n",
        per_run_ms.iter().map(|ms| format!("{ms:.1} ms")).collect::<Vec<_>>().join(", ")
    ));
    match (server_seconds, per_cpu_second) {
        (Some(seconds), Some(per_second)) => text.push_str(&format!(
            "  server CPU over all {} replays: {seconds:.2} s = {per_second:.0} events per CPU second",
            runs.len()
        )),
        (Some(_), None) => text.push_str("  server CPU: under one 10 ms tick in all (too short to rate)"),
        _ => text.push_str("  server CPU: unknown (no pid; pass --pid)"),
    }
    Report { json: Value::Object(json), text }
}
