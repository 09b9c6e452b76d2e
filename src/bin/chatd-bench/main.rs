//! chatd-bench: a load tool for a chatd running on this machine. It uses the
//! public API only (register, rooms, WebSocket, REST reads), sends load to
//! loopback addresses only, and every run is bounded in time and count.
//!
//! Layout: `main` parses arguments and dispatches; `dm`, `idle`, `upload`,
//! `rest`, `abuse`, `reconnect`, `replay`, `group`, `search` and `floor`
//! are the subcommands (`floor` needs no chatd: it measures the kernel's
//! cost of a loopback copy, with its reading client in `floor-client`);
//! `client` speaks the API and `stream` the event stream;
//! `audit` keeps the books of `reconnect`; `stats` sums up latencies;
//! `procfs` reads the server's memory and CPU from /proc, and `indexer`
//! watches its search indexer there; `random` spreads load; `context`
//! holds what they share.

mod abuse;
mod audit;
mod client;
mod context;
mod dm;
mod error;
mod floor;
mod group;
mod idle;
mod indexer;
mod procfs;
mod random;
mod reconnect;
mod replay;
mod rest;
mod search;
mod stats;
mod stream;
mod upload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{Api, Target};
use crate::context::{Bench, Report, progress};
use crate::error::{BenchError, Result};

/// Load tool for chatd: direct messages, idle connections, uploads, REST reads, attacks,
/// the event stream (reconnects, replay), large groups and search; and the floor of a copy.
#[derive(Debug, Parser)]
#[command(name = "chatd-bench", version)]
struct Cli {
    /// The chatd to load; loopback addresses only.
    #[arg(long, global = true, env = "CHATD_BENCH_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Print one JSON line of results instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The server's pid, for its memory and CPU readings; found by port, or
    /// by the name chatd, when left out.
    #[arg(long, global = true)]
    pid: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pairs of users exchanging text over WebSockets: rate, latency, losses.
    Dm(dm::DmArgs),
    /// Many idle WebSocket connections: the server's memory per connection.
    Idle(idle::IdleArgs),
    /// Attachments sent over the WebSocket: throughput and peak memory.
    Upload(upload::UploadArgs),
    /// Keep-alive REST reads of a room's messages and the room list.
    Rest(rest::RestArgs),
    /// Attacks (slow clients, caps, floods, huge frames, login abuse): PASS/FAIL per defence.
    Abuse(abuse::AbuseArgs),
    /// Receivers that drop and resume with their cursor while actors act: lost, duplicated, out-of-order events.
    Reconnect(reconnect::ReconnectArgs),
    /// One fresh connection resuming from an old cursor: replayed events per second.
    Replay(replay::ReplayArgs),
    /// One sender into a large group of connected members: latency per copy, server CPU per copy.
    Group(group::GroupArgs),
    /// Many messages in many scripts, then searches: index catch-up, index size, latency per query shape.
    Search(search::SearchArgs),
    /// No chatd: the CPU of writing one small WebSocket frame per loopback socket, the floor of group's CPU per copy.
    Floor(floor::FloorArgs),
    /// The reading process of `floor` (started by it).
    #[command(hide = true)]
    FloorClient(floor::FloorClientArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        // `floor` measures this process's CPU: it runs without the main
        // runtime, so that no idle worker of it is counted.
        Command::Floor(args) => floor::run(args),
        // One JSON line on stdout, read by `floor`.
        Command::FloorClient(args) => floor::run_client(args).map(|line| Report { text: line.to_string(), json: line }),
        _ => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(run(&cli)),
            Err(error) => Err(BenchError::new(format!("cannot start the tokio runtime: {error}"))),
        },
    };
    match outcome {
        Ok(report) => {
            if cli.json {
                println!("{}", report.json);
            } else {
                println!("{}", report.text);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("chatd-bench: error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<Report> {
    let target = Target::parse(&cli.url)?;
    let api = Api::new(target);
    api.check_health().await?;
    let bench = Bench {
        target,
        api,
        run_id: new_run_id(),
        server_pid: server_pid(cli.pid, target.port())?,
        loadavg_at_start: procfs::read_loadavg(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(load) = bench.loadavg_at_start
        && load > cores as f64
    {
        progress(format!(
            "warning: this machine is busy (load average {load:.1} on {cores} cores): the numbers will be noisy"
        ));
    }
    progress(format!(
        "run {} against {} (server pid {})",
        bench.run_id,
        bench.target,
        bench.server_pid.map_or("unknown".to_string(), |pid| pid.to_string())
    ));
    match &cli.command {
        Command::Dm(args) => dm::run(&bench, args).await,
        Command::Idle(args) => idle::run(&bench, args).await,
        Command::Upload(args) => upload::run(&bench, args).await,
        Command::Rest(args) => rest::run(&bench, args).await,
        Command::Abuse(args) => abuse::run(&bench, args).await,
        Command::Reconnect(args) => reconnect::run(&bench, args).await,
        Command::Replay(args) => replay::run(&bench, args).await,
        Command::Group(args) => group::run(&bench, args).await,
        Command::Search(args) => search::run(&bench, args).await,
        Command::Floor(_) | Command::FloorClient(_) => Err(BenchError::new("floor runs without a chatd (see main)")),
    }
}

/// Eight hex digits that keep this run's users and temp ids apart from
/// earlier runs' (they stay in the server's database).
fn new_run_id() -> String {
    let random = getrandom::u32().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos() ^ elapsed.as_secs() as u32)
    });
    format!("{random:08x}")
}

/// The given pid, else the process listening on the target's port, else
/// a process named chatd, else none (memory and CPU are then left out).
fn server_pid(given: Option<u32>, port: u16) -> Result<Option<u32>> {
    if let Some(pid) = given {
        if !procfs::process_exists(pid) {
            return Err(BenchError::new(format!("--pid {pid}: no such process")));
        }
        return Ok(Some(pid));
    }
    if let Some(pid) = procfs::find_pid_by_port(port) {
        return Ok(Some(pid));
    }
    if let Some(pid) = procfs::find_pid_by_name("chatd") {
        progress(format!("warning: no process found listening on port {port}; using the process named chatd ({pid})"));
        return Ok(Some(pid));
    }
    progress("warning: the server's pid is unknown (pass --pid): no memory or CPU readings");
    Ok(None)
}
