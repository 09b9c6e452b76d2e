//! `rest`: K keep-alive HTTP/1.1 connections (each its own TCP connection
//! and hyper handshake) loop over a read mix, 80% one page of a room's
//! messages and 20% the room list. Measures requests per second and latency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::value_parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::client::{CONNECT_TIMEOUT, REQUEST_TIMEOUT, Target, close_quietly, connect_ws_or_fail, send_texts};
use crate::context::{Bench, CpuMeter, Report, progress, rss_change_human, snapshot_json};
use crate::error::{BenchError, Result, describe};
use crate::procfs::{ProcessSnapshot, TICKS_PER_SECOND};
use crate::random::XorShift;
use crate::stats::{LatencySummary, rate, round2, summary_human, summary_json};

#[derive(Debug, Clone, clap::Args)]
pub struct RestArgs {
    /// Keep-alive HTTP/1.1 connections, each its own TCP connection.
    #[arg(long, default_value_t = 8, value_parser = value_parser!(u32).range(1..=1024))]
    pub connections: u32,
    /// Seconds of requests, at most.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// `per_page` of the message reads.
    #[arg(long, default_value_t = 50, value_parser = value_parser!(u32).range(1..=100))]
    pub per_page: u32,
    /// Messages put into the room first (over the WebSocket).
    #[arg(long, default_value_t = 200, value_parser = value_parser!(u32).range(0..=100_000))]
    pub messages: u32,
    /// Percent of requests that list the rooms; the rest read messages.
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u32).range(0..=100))]
    pub rooms_percent: u32,
    /// Requests in all, at most.
    #[arg(long, default_value_t = 10_000_000, value_parser = value_parser!(u64).range(1..=1_000_000_000))]
    pub requests: u64,
}

/// What every worker is told.
struct Plan {
    target: Target,
    bearer: String,
    messages_path: String,
    rooms_percent: u32,
    deadline: Instant,
    request_limit: u64,
    issued: AtomicU64,
}

#[derive(Default)]
struct WorkerOutcome {
    message_latencies: Vec<Duration>,
    room_latencies: Vec<Duration>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    connections_opened: u64,
    error_samples: Vec<String>,
}

impl WorkerOutcome {
    fn record_error(&mut self, sample: String) {
        self.transport_errors += 1;
        if self.error_samples.len() < 5 && !self.error_samples.contains(&sample) {
            self.error_samples.push(sample);
        }
    }
}

pub async fn run(bench: &Bench, args: &RestArgs) -> Result<Report> {
    progress("rest: registering 2 users and opening their room");
    let pair = bench.api.make_pair(&bench.run_id).await?;
    if args.messages > 0 {
        progress(format!("rest: sending {} messages into the room", args.messages));
        let mut ws = connect_ws_or_fail(&bench.target, &pair.sender).await?;
        send_texts(&mut ws, pair.room_id, args.messages as usize, 100, &format!("r{}-", bench.run_id), 32).await?;
        close_quietly(ws).await;
    }
    let messages_path = format!("/api/chat/rooms/{}/messages?page=1&per_page={}", pair.room_id, args.per_page);
    check_page(bench, &pair.sender.token, &messages_path, args).await?;

    let before = bench.server_snapshot();
    let cpu = CpuMeter::start(before.as_ref());
    let started = Instant::now();
    let plan = Arc::new(Plan {
        target: bench.target,
        bearer: format!("Bearer {}", pair.sender.token),
        messages_path,
        rooms_percent: args.rooms_percent,
        deadline: started + Duration::from_secs(args.duration),
        request_limit: args.requests,
        issued: AtomicU64::new(0),
    });
    progress(format!("rest: {} connections for up to {} s", args.connections, args.duration));
    let workers: Vec<_> = (0..args.connections)
        .map(|index| tokio::spawn(worker(Arc::clone(&plan), XorShift::for_worker(u64::from(index)))))
        .collect();
    let mut total = WorkerOutcome::default();
    for worker in workers {
        let outcome = worker.await.map_err(|error| BenchError::new(format!("a rest worker failed: {error}")))?;
        total.message_latencies.extend(outcome.message_latencies);
        total.room_latencies.extend(outcome.room_latencies);
        for (status, count) in outcome.statuses {
            *total.statuses.entry(status).or_default() += count;
        }
        total.transport_errors += outcome.transport_errors;
        total.connections_opened += outcome.connections_opened;
        for sample in outcome.error_samples {
            if total.error_samples.len() < 5 && !total.error_samples.contains(&sample) {
                total.error_samples.push(sample);
            }
        }
    }
    let elapsed = started.elapsed();
    let after = bench.server_snapshot();
    let cpu_use = cpu.finish(after.as_ref());

    let answered: u64 = total.statuses.values().sum();
    let cpu_per_request = cpu_us_per_request(before.as_ref(), after.as_ref(), answered);
    let non_200: u64 = total.statuses.iter().filter(|(status, _)| **status != 200).map(|(_, count)| count).sum();
    let per_second = round2(rate(answered as f64, elapsed));
    let mut all = total.message_latencies.clone();
    all.extend(&total.room_latencies);
    let latency = LatencySummary::from_samples(all);
    let message_latency = LatencySummary::from_samples(total.message_latencies);
    let room_latency = LatencySummary::from_samples(total.room_latencies);
    let statuses: BTreeMap<String, u64> =
        total.statuses.iter().map(|(status, count)| (status.to_string(), *count)).collect();

    let mut json = bench.header("rest");
    for (key, value) in [
        ("connections", json!(args.connections)),
        ("duration_s", json!(args.duration)),
        ("per_page", json!(args.per_page)),
        ("messages", json!(args.messages)),
        ("rooms_percent", json!(args.rooms_percent)),
        ("requests", json!(answered)),
        ("elapsed_s", json!(round2(elapsed.as_secs_f64()))),
        ("requests_per_s", json!(per_second)),
        ("non_200", json!(non_200)),
        ("statuses", json!(statuses)),
        ("transport_errors", json!(total.transport_errors)),
        ("error_samples", json!(total.error_samples)),
        ("connections_opened", json!(total.connections_opened)),
        ("latency", summary_json(latency.as_ref())),
        ("messages_latency", summary_json(message_latency.as_ref())),
        ("rooms_latency", summary_json(room_latency.as_ref())),
        ("server_cpu_percent", json!(cpu_use.server_percent)),
        ("bench_cpu_percent", json!(cpu_use.bench_percent)),
        ("server_cpu_us_per_request", json!(cpu_per_request)),
        ("server_before", snapshot_json(before.as_ref())),
        ("server_after", snapshot_json(after.as_ref())),
    ] {
        json.insert(key.to_string(), value);
    }

    let mut text = format!(
        "rest: {} keep-alive connections, {} s, {}% room list / {}% messages page (per_page {}, room of {} messages)\n",
        args.connections,
        args.duration,
        args.rooms_percent,
        100 - args.rooms_percent,
        args.per_page,
        args.messages
    );
    text.push_str(&format!(
        "  {answered} requests in {:.2} s = {per_second:.1} req/s; non-200 {non_200}; transport errors {}; TCP connections opened {}\n",
        elapsed.as_secs_f64(),
        total.transport_errors,
        total.connections_opened
    ));
    text.push_str(&format!("  latency, all: {}\n", summary_human(latency.as_ref())));
    text.push_str(&format!("  latency, messages page: {}\n", summary_human(message_latency.as_ref())));
    text.push_str(&format!("  latency, room list: {}\n", summary_human(room_latency.as_ref())));
    if non_200 > 0 {
        text.push_str(&format!("  statuses: {statuses:?}\n"));
    }
    for sample in &total.error_samples {
        text.push_str(&format!("  error: {sample}\n"));
    }
    text.push_str(&format!(
        "  {}; server CPU {} µs per request\n  {}",
        cpu_use.human(),
        cpu_per_request.map_or("?".to_string(), |us| format!("{us:.1}")),
        rss_change_human(before.as_ref(), after.as_ref())
    ));
    Ok(Report { json: Value::Object(json), text })
}

/// Server CPU time per answered request, in microseconds.
fn cpu_us_per_request(before: Option<&ProcessSnapshot>, after: Option<&ProcessSnapshot>, requests: u64) -> Option<f64> {
    let ticks = after?.cpu_ticks.checked_sub(before?.cpu_ticks)?;
    (requests > 0).then(|| round2(ticks as f64 / TICKS_PER_SECOND * 1e6 / requests as f64))
}

/// One read through the pooled client first: the page must be there and
/// hold what was sent, else the measurement would time errors.
async fn check_page(bench: &Bench, token: &str, path: &str, args: &RestArgs) -> Result<()> {
    let response = bench.api.call(Method::GET, path, Some(token), None).await?;
    if response.status != StatusCode::OK {
        return Err(BenchError::new(format!("GET {path}: HTTP {} {}", response.status, response.detail())));
    }
    let page = response.json()?;
    let listed = page.get("messages").and_then(Value::as_array).map_or(0, Vec::len);
    let wanted = args.messages.min(args.per_page) as usize;
    if listed != wanted {
        progress(format!("rest: warning: the first page lists {listed} messages, expected {wanted}"));
    }
    Ok(())
}

/// One connection's request loop; opens a new connection when the server
/// closes one, and gives up after a few failures in a row.
async fn worker(plan: Arc<Plan>, mut random: XorShift) -> WorkerOutcome {
    let mut outcome = WorkerOutcome::default();
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    let mut failures_in_a_row = 0;
    while Instant::now() < plan.deadline && plan.issued.fetch_add(1, Ordering::Relaxed) < plan.request_limit {
        let sender = match connection.as_mut() {
            Some(sender) => sender,
            None => match open_connection(plan.target).await {
                Ok(sender) => {
                    outcome.connections_opened += 1;
                    connection.insert(sender)
                }
                Err(error) => {
                    outcome.record_error(error.to_string());
                    failures_in_a_row += 1;
                    if failures_in_a_row >= 5 {
                        break;
                    }
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let lists_rooms = random.below(100) < u64::from(plan.rooms_percent);
        let path = if lists_rooms { "/api/chat/rooms" } else { plan.messages_path.as_str() };
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, plan.target.authority())
            .header(header::AUTHORIZATION, plan.bearer.as_str())
            .body(Full::new(Bytes::new()));
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                outcome.record_error(format!("building a request: {error}"));
                break;
            }
        };
        let started = Instant::now();
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        };
        match timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(status)) => {
                failures_in_a_row = 0;
                let took = started.elapsed();
                if lists_rooms {
                    outcome.room_latencies.push(took);
                } else {
                    outcome.message_latencies.push(took);
                }
                *outcome.statuses.entry(status.as_u16()).or_default() += 1;
            }
            Ok(Err(error)) => {
                outcome.record_error(format!("GET {path}: {}", describe(&error)));
                connection = None;
                failures_in_a_row += 1;
            }
            Err(_) => {
                outcome.record_error(format!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"));
                connection = None;
                failures_in_a_row += 1;
            }
        }
        if failures_in_a_row >= 5 {
            break;
        }
    }
    outcome
}

/// A fresh TCP connection with an HTTP/1.1 handshake; its driver task ends
/// when the sender is dropped.
async fn open_connection(target: Target) -> Result<SendRequest<Full<Bytes>>> {
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(target.addr()))
        .await
        .map_err(|_| BenchError::new(format!("connecting to {target}: timed out")))?
        .map_err(|error| BenchError::new(format!("connecting to {target}: {error}")))?;
    stream.set_nodelay(true).map_err(|error| BenchError::new(format!("setting TCP_NODELAY: {error}")))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| BenchError::new(format!("HTTP/1.1 handshake: {}", describe(&error))))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
