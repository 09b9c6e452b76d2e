//! The connection-level attacks: silent and slow clients (header and body
//! timeouts) and the per-IP connection cap, over raw TCP. A /healthz probe
//! from the normal client's address runs alongside to show that other
//! clients are still served.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, interval_at, sleep, sleep_until, timeout};

use super::{Arena, Attack, Finding, counts_human, keep_sample};
use crate::client::{Target, connect_tcp_from};
use crate::error::{BenchError, Result};
use crate::stats::{LatencySummary, round2};

/// How long past the expected timeout the tool keeps waiting.
const WAIT_EXTRA: Duration = Duration::from_secs(5);
/// How late past the expected timeout a close still counts as on time.
const SLACK: Duration = Duration::from_secs(2);
/// Connections per source address in silent-tcp, below any per-IP cap.
const SILENT_PER_IP: usize = 100;
/// How long a /healthz probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Connections opened past the per-IP cap.
const CAP_EXTRA: u32 = 16;
/// How long opening them may take in all.
const CONNECT_BUDGET: Duration = Duration::from_secs(30);

/// How one raw connection ended, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// When the server closed it or answered, from the moment it was open;
    /// None when it was still open, unanswered, at the deadline.
    pub after: Option<Duration>,
    /// The status of the answer the server sent, if any (408, 429, ...).
    pub status: Option<u16>,
}

/// Trickles one byte at a time to look alive.
#[derive(Debug, Clone, Copy)]
struct Trickle {
    byte: u8,
    every: Duration,
}

/// Writes `opening`, then waits (trickling, if asked) until the server
/// answers or closes, or `deadline` passes.
async fn hold(mut stream: TcpStream, opening: Vec<u8>, trickle: Option<Trickle>, deadline: Instant) -> Ending {
    let started = Instant::now();
    let ended = |status: Option<u16>| Ending { after: Some(started.elapsed()), status };
    if !opening.is_empty() && stream.write_all(&opening).await.is_err() {
        return ended(None);
    }
    let mut ticker = trickle.map(|t| (interval_at(started + t.every, t.every), t.byte));
    let mut head: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some((interval, byte)) => {
                    interval.tick().await;
                    *byte
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return ended(status_code(&head)),
                Ok(n) => {
                    head.extend_from_slice(&buffer[..n.min(256usize.saturating_sub(head.len()))]);
                    // A whole status line is an answer: the request is over.
                    if let Some(status) = status_code(&head) {
                        return ended(Some(status));
                    }
                }
            },
            byte = tick => {
                if stream.write_all(&[byte]).await.is_err() {
                    return ended(status_code(&head));
                }
            }
            () = sleep_until(deadline) => return Ending { after: None, status: status_code(&head) },
        }
    }
}

/// The status code of an HTTP/1 status line at the start of `head`, once
/// the line is complete.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let end = head.windows(2).position(|pair| pair == b"\r\n")?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut words = line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// What /healthz from the normal client's address answered meanwhile.
#[derive(Debug, Clone, Default)]
pub struct ProbeTally {
    pub source: Option<Ipv4Addr>,
    pub ok: u64,
    pub total: u64,
    pub slowest: Duration,
    pub failures: Vec<String>,
}

impl ProbeTally {
    pub fn human(&self) -> String {
        format!(
            "/healthz from {} meanwhile: {}/{} OK, slowest {:.0} ms",
            self.source.map_or("?".to_string(), |ip| ip.to_string()),
            self.ok,
            self.total,
            self.slowest.as_secs_f64() * 1000.0
        )
    }

    pub fn json(&self) -> serde_json::Value {
        json!({"ok": self.ok, "total": self.total, "slowest_ms": round2(self.slowest.as_secs_f64() * 1000.0),
               "failures": self.failures})
    }

    /// The failure line when a probe failed.
    pub fn failure(&self) -> Option<String> {
        (self.ok < self.total).then(|| {
            format!(
                "/healthz from another IP failed {} of {} times ({})",
                self.total - self.ok,
                self.total,
                self.failures.join("; ")
            )
        })
    }
}

/// Probes /healthz on a fresh connection every half second until stopped.
pub struct Prober {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<ProbeTally>,
}

impl Prober {
    pub fn start(target: Target, source: Ipv4Addr) -> Prober {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut tally = ProbeTally { source: Some(source), ..ProbeTally::default() };
            // At most ten minutes of probes, whatever happens.
            for _ in 0..1200 {
                let started = Instant::now();
                tally.total += 1;
                match probe_healthz(&target, source).await {
                    Ok(200) => tally.ok += 1,
                    Ok(status) => keep_sample(&mut tally.failures, format!("HTTP {status}")),
                    Err(error) => keep_sample(&mut tally.failures, error),
                }
                tally.slowest = tally.slowest.max(started.elapsed());
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = sleep_until(started + PROBE_EVERY) => {}
                }
            }
            tally
        });
        Prober { stop, task }
    }

    pub async fn finish(self) -> ProbeTally {
        self.stop.send_replace(true);
        self.task.await.unwrap_or_default()
    }
}

/// `GET /healthz` on a new connection from `source`; the status code.
pub async fn probe_healthz(target: &Target, source: Ipv4Addr) -> std::result::Result<u16, String> {
    let exchange = async {
        let mut stream = connect_tcp_from(target, source).await.map_err(|error| format!("connect: {error}"))?;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", target.authority());
        stream.write_all(request.as_bytes()).await.map_err(|error| format!("write: {error}"))?;
        read_status(&mut stream).await
    };
    timeout(PROBE_TIMEOUT, exchange).await.map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
}

/// Reads until a status line is complete.
async fn read_status(stream: &mut TcpStream) -> std::result::Result<u16, String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => return Err("closed without an answer".to_string()),
            Ok(n) => {
                head.extend_from_slice(&buffer[..n]);
                if let Some(status) = status_code(&head) {
                    return Ok(status);
                }
                if head.len() > 4096 {
                    return Err("not an HTTP answer".to_string());
                }
            }
            Err(error) => return Err(format!("read: {error}")),
        }
    }
}

/// Connections of one kind and how they ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeoutFacts {
    pub attempted: u64,
    pub opened: u64,
    pub connect_failures: BTreeMap<String, u64>,
    /// When each connection that ended did so.
    pub ended: Vec<Duration>,
    pub still_open: u64,
    pub statuses: BTreeMap<u16, u64>,
}

impl TimeoutFacts {
    fn add(&mut self, ending: Ending) {
        match ending.after {
            Some(after) => self.ended.push(after),
            None => self.still_open += 1,
        }
        if let Some(status) = ending.status {
            *self.statuses.entry(status).or_default() += 1;
        }
    }

    fn human(&self, what: &str) -> String {
        let times = LatencySummary::from_samples(self.ended.clone()).map_or(String::new(), |summary| {
            format!(
                " after {:.1} s median, {:.1}–{:.1} s",
                summary.p50.as_secs_f64(),
                self.ended.iter().min().map_or(0.0, Duration::as_secs_f64),
                summary.max.as_secs_f64()
            )
        });
        let mut line = format!("{what}: {}/{} ended by the server{times}", self.ended.len(), self.opened);
        if self.still_open > 0 {
            line.push_str(&format!(", {} still open", self.still_open));
        }
        if !self.statuses.is_empty() {
            line.push_str(&format!("; answers: {}", counts_human(&self.statuses)));
        }
        if !self.connect_failures.is_empty() {
            line.push_str(&format!("; not opened: {}", counts_human(&self.connect_failures)));
        }
        line
    }

    fn json(&self) -> serde_json::Value {
        let summary = LatencySummary::from_samples(self.ended.clone());
        json!({
            "attempted": self.attempted,
            "opened": self.opened,
            "connect_failures": self.connect_failures,
            "ended": self.ended.len(),
            "still_open": self.still_open,
            "ended_median_s": summary.map(|s| round2(s.p50.as_secs_f64())),
            "ended_max_s": summary.map(|s| round2(s.max.as_secs_f64())),
            "answers": self.statuses,
        })
    }
}

/// The failed checks of connections the server should end within `limit`.
pub fn judge_timeouts(what: &str, facts: &TimeoutFacts, limit: Duration, waited: Duration) -> Vec<String> {
    let mut failures = Vec::new();
    if facts.opened == 0 {
        failures.push(format!("{what}: no connection could be opened"));
        return failures;
    }
    if facts.still_open > 0 {
        failures.push(format!(
            "{what}: {} of {} connections still open after {} s (expected closed after ~{} s)",
            facts.still_open,
            facts.opened,
            waited.as_secs(),
            limit.as_secs()
        ));
    }
    let late = facts.ended.iter().filter(|after| **after > limit + SLACK).count();
    if late > 0 {
        failures.push(format!("{what}: {late} connections ended only after {} s", (limit + SLACK).as_secs()));
    }
    failures
}

/// Opens `count` connections, `per_ip` from each attacker address, 64 at a time.
async fn open_many(
    target: Target,
    attack: Attack,
    count: usize,
    per_ip: usize,
) -> (Vec<TcpStream>, BTreeMap<String, u64>) {
    let results: Vec<std::io::Result<TcpStream>> = stream::iter(0..count)
        .map(|n| async move { connect_tcp_from(&target, attack.attacker_ip(n / per_ip.max(1))).await })
        .buffered(64)
        .collect()
        .await;
    let mut streams = Vec::with_capacity(count);
    let mut failures = BTreeMap::new();
    for result in results {
        match result {
            Ok(stream) => streams.push(stream),
            Err(error) => *failures.entry(io_label(&error)).or_default() += 1,
        }
    }
    (streams, failures)
}

fn io_label(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(24) => "too_many_open_files".to_string(),
        Some(99) => "no_local_port".to_string(),
        _ => format!("{:?}", error.kind()).to_lowercase(),
    }
}

/// Holds every stream with its own opening and trickle; gathers the endings.
async fn hold_all(streams: Vec<(TcpStream, Vec<u8>, Option<Trickle>)>, wait: Duration) -> Vec<Ending> {
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|(stream, opening, trickle)| tokio::spawn(hold(stream, opening, trickle, Instant::now() + wait)))
        .collect();
    let mut endings = Vec::with_capacity(tasks.len());
    for task in tasks {
        endings.push(task.await.unwrap_or(Ending { after: None, status: None }));
    }
    endings
}

/// N connections that send nothing at all.
pub async fn silent_tcp(arena: &Arena<'_>) -> Result<Finding> {
    let args = arena.args;
    let limit = Duration::from_secs(args.header_timeout);
    let wait = limit + WAIT_EXTRA;
    let prober = Prober::start(arena.bench.target, arena.normal_ip);
    let (streams, connect_failures) =
        open_many(arena.bench.target, Attack::SilentTcp, args.silent as usize, SILENT_PER_IP).await;
    let mut facts = TimeoutFacts {
        attempted: u64::from(args.silent),
        opened: streams.len() as u64,
        connect_failures,
        ..TimeoutFacts::default()
    };
    let endings = hold_all(streams.into_iter().map(|stream| (stream, Vec::new(), None)).collect(), wait).await;
    for ending in endings {
        facts.add(ending);
    }
    let probes = prober.finish().await;

    let mut finding = Finding::default();
    finding.line(facts.human(&format!("{} silent connections", args.silent)));
    finding.line(probes.human());
    finding.failures = judge_timeouts("silent connections", &facts, limit, wait);
    finding.failures.extend(probes.failure());
    finding.set("silent", facts.json());
    finding.set("healthz", probes.json());
    Ok(finding)
}

/// Half a request head, then silence (half of them) or a byte a second.
pub async fn slow_headers(arena: &Arena<'_>) -> Result<Finding> {
    let args = arena.args;
    let limit = Duration::from_secs(args.header_timeout);
    let opening = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nUser-Agent: chatd-bench\r\nX-Slow: ",
        arena.bench.target.authority()
    )
    .into_bytes();
    let trickle = Trickle { byte: b'a', every: Duration::from_secs(1) };
    slow_requests(arena, Attack::SlowHeaders, "half a head", opening, trickle, limit).await
}

/// A request with `Content-Length: 64` whose body stops after 15 bytes
/// (half of them) or trickles a space every 2 s.
pub async fn slow_body(arena: &Arena<'_>) -> Result<Finding> {
    let args = arena.args;
    let user = arena.register("slow-body").await?;
    let limit = Duration::from_secs(args.body_timeout);
    let opening = format!(
        "POST /api/chat/rooms HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{{\"receiver_id\":",
        arena.bench.target.authority(),
        user.token
    )
    .into_bytes();
    let trickle = Trickle { byte: b' ', every: Duration::from_secs(2) };
    slow_requests(arena, Attack::SlowBody, "part of a body", opening, trickle, limit).await
}

async fn slow_requests(
    arena: &Arena<'_>,
    attack: Attack,
    what: &str,
    opening: Vec<u8>,
    trickle: Trickle,
    limit: Duration,
) -> Result<Finding> {
    let count = arena.args.slow as usize;
    let wait = limit + WAIT_EXTRA;
    let prober = Prober::start(arena.bench.target, arena.normal_ip);
    let (streams, connect_failures) = open_many(arena.bench.target, attack, count, count).await;
    if streams.is_empty() {
        prober.finish().await;
        return Err(BenchError::new(format!("no connection could be opened: {}", counts_human(&connect_failures))));
    }
    let stalled_count = streams.len().div_ceil(2);
    let held = streams
        .into_iter()
        .enumerate()
        .map(|(n, stream)| (stream, opening.clone(), (n >= stalled_count).then_some(trickle)))
        .collect();
    let endings = hold_all(held, wait).await;
    let probes = prober.finish().await;
    let mut stalled = TimeoutFacts { connect_failures, ..TimeoutFacts::default() };
    let mut trickling = TimeoutFacts::default();
    for (n, ending) in endings.into_iter().enumerate() {
        let facts = if n < stalled_count { &mut stalled } else { &mut trickling };
        facts.attempted += 1;
        facts.opened += 1;
        facts.add(ending);
    }
    stalled.attempted += stalled.connect_failures.values().sum::<u64>();

    let stalled_what = format!("{what}, then silence");
    let trickling_what = format!("{what}, then a byte every {} s", trickle.every.as_secs());
    let mut finding = Finding::default();
    finding.line(stalled.human(&stalled_what));
    finding.line(trickling.human(&trickling_what));
    finding.line(probes.human());
    finding.failures = judge_timeouts(&stalled_what, &stalled, limit, wait);
    finding.failures.extend(judge_timeouts(&trickling_what, &trickling, limit, wait));
    finding.failures.extend(probes.failure());
    finding.set("expected_s", json!(limit.as_secs()));
    finding.set("stalled", stalled.json());
    finding.set("trickling", trickling.json());
    finding.set("healthz", probes.json());
    Ok(finding)
}

/// What the connections past the per-IP cap got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapFacts {
    pub attempted: u64,
    /// Connections that answered a request (200).
    pub served: u64,
    /// Connections answered `429` at once.
    pub refused: u64,
    /// Connections closed or reset without a word.
    pub dropped: u64,
    /// Connections that neither got 429 nor served a request.
    pub other: BTreeMap<String, u64>,
}

/// The failed checks of the per-IP cap.
pub fn judge_cap(facts: &CapFacts, cap: u64) -> Vec<String> {
    let mut failures = Vec::new();
    let expected_served = facts.attempted.min(cap);
    if facts.served > cap {
        failures.push(format!("{} connections from one IP were served; the cap is {cap}", facts.served));
    }
    if facts.served < expected_served {
        failures.push(format!(
            "only {} of the first {expected_served} connections were served (a lower cap, or one in use?)",
            facts.served
        ));
    }
    let beyond = facts.attempted.saturating_sub(cap);
    if beyond > 0 && facts.refused == 0 {
        failures.push(format!("none of the {beyond} connections past the cap was refused with 429"));
    }
    if facts.dropped > 0 {
        failures.push(format!("{} connections were closed without the 429 answer", facts.dropped));
    }
    if !facts.other.is_empty() {
        failures.push(format!("unexpected outcomes: {}", counts_human(&facts.other)));
    }
    failures
}

/// per_ip + 16 connections from one address: the extra ones must get 429 at
/// once, the others must be served, and other IPs must not notice.
pub async fn per_ip_cap(arena: &Arena<'_>) -> Result<Finding> {
    let cap = arena.args.per_ip;
    let target = arena.bench.target;
    let source = Attack::PerIpCap.attacker_ip(0);
    let attempted = cap + CAP_EXTRA;
    let mut facts = CapFacts { attempted: u64::from(attempted), ..CapFacts::default() };
    // One after the other, so the server meets them in this order.
    let mut streams = Vec::with_capacity(attempted as usize);
    let deadline = Instant::now() + CONNECT_BUDGET;
    for _ in 0..attempted {
        if Instant::now() >= deadline {
            *facts.other.entry("not_tried_out_of_time".to_string()).or_default() += 1;
            continue;
        }
        match connect_tcp_from(&target, source).await {
            Ok(stream) => streams.push(stream),
            Err(error) => *facts.other.entry(format!("connect_{}", io_label(&error))).or_default() += 1,
        }
    }
    // A refused connection is answered without a request; a served one
    // says nothing until asked.
    let outcomes: Vec<(TcpStream, CapOutcome)> =
        stream::iter(streams).map(|stream| first_words(stream, target)).buffer_unordered(256).collect().await;
    let probe = probe_healthz(&target, arena.normal_ip).await;
    let mut kept = Vec::new();
    for (stream, outcome) in outcomes {
        match outcome {
            CapOutcome::Served => facts.served += 1,
            CapOutcome::Refused => facts.refused += 1,
            CapOutcome::Dropped => facts.dropped += 1,
            CapOutcome::Other(label) => *facts.other.entry(label).or_default() += 1,
        }
        kept.push(stream);
    }
    drop(kept);
    // Let the server see the closes before the next attack.
    sleep(Duration::from_millis(500)).await;

    let mut finding = Finding::default();
    finding.line(format!(
        "{attempted} connections from {source} (cap {cap}): served {}, refused with 429 {}, dropped silently {}{}",
        facts.served,
        facts.refused,
        facts.dropped,
        if facts.other.is_empty() { String::new() } else { format!(", other: {}", counts_human(&facts.other)) }
    ));
    finding.line(match &probe {
        Ok(status) => format!("/healthz from {} at the cap: HTTP {status}", arena.normal_ip),
        Err(error) => format!("/healthz from {} at the cap: {error}", arena.normal_ip),
    });
    finding.failures = judge_cap(&facts, u64::from(cap));
    match &probe {
        Ok(200) => {}
        Ok(status) => finding.failures.push(format!("/healthz from another IP answered HTTP {status} at the cap")),
        Err(error) => finding.failures.push(format!("/healthz from another IP failed at the cap: {error}")),
    }
    finding.set("attempted", json!(facts.attempted));
    finding.set("served", json!(facts.served));
    finding.set("refused_429", json!(facts.refused));
    finding.set("dropped", json!(facts.dropped));
    finding.set("other", json!(facts.other));
    finding.set("healthz_other_ip", json!(probe.as_ref().map_or_else(|error| json!(error), |status| json!(status))));
    Ok(finding)
}

enum CapOutcome {
    Served,
    Refused,
    Dropped,
    Other(String),
}

/// Waits briefly for an unasked answer (the 429 of a refused connection);
/// when none comes, asks for /healthz on the connection and keeps it open.
async fn first_words(mut stream: TcpStream, target: Target) -> (TcpStream, CapOutcome) {
    let mut buffer = [0u8; 512];
    match timeout(Duration::from_millis(1500), stream.read(&mut buffer)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return (stream, CapOutcome::Dropped),
        Ok(Ok(n)) => {
            let outcome = match status_code(&buffer[..n]) {
                Some(429) => CapOutcome::Refused,
                Some(status) => CapOutcome::Other(format!("unasked_http_{status}")),
                None => CapOutcome::Other("unasked_bytes".to_string()),
            };
            return (stream, outcome);
        }
        Err(_) => {}
    }
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", target.authority());
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (stream, CapOutcome::Dropped);
    }
    let outcome = match timeout(PROBE_TIMEOUT, read_status(&mut stream)).await {
        Ok(Ok(200)) => CapOutcome::Served,
        Ok(Ok(429)) => CapOutcome::Refused,
        Ok(Ok(status)) => CapOutcome::Other(format!("http_{status}")),
        Ok(Err(_)) => CapOutcome::Dropped,
        Err(_) => CapOutcome::Other("no_answer".to_string()),
    };
    (stream, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_needs_a_whole_status_line() {
        assert_eq!(status_code(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n"), Some(429));
        assert_eq!(status_code(b"HTTP/1.0 408 Request Timeout\r\n"), Some(408));
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), None);
        assert_eq!(status_code(b"SSH-2.0-x\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    fn secs(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_secs(*v)).collect()
    }

    #[test]
    fn timeouts_hold_when_everything_ended_in_time() {
        let facts = TimeoutFacts { attempted: 3, opened: 3, ended: secs(&[10, 10, 11]), ..TimeoutFacts::default() };
        assert!(judge_timeouts("x", &facts, Duration::from_secs(10), Duration::from_secs(15)).is_empty());
    }

    #[test]
    fn timeouts_fail_on_open_or_late_connections() {
        let facts =
            TimeoutFacts { attempted: 4, opened: 4, ended: secs(&[10, 13]), still_open: 2, ..TimeoutFacts::default() };
        let failures = judge_timeouts("x", &facts, Duration::from_secs(10), Duration::from_secs(15));
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("2 of 4 connections still open after 15 s"), "{failures:?}");
        assert!(failures[1].contains("1 connections ended only after 12 s"), "{failures:?}");
    }

    #[test]
    fn timeouts_fail_when_nothing_opened() {
        let facts = TimeoutFacts { attempted: 4, ..TimeoutFacts::default() };
        assert_eq!(judge_timeouts("x", &facts, Duration::from_secs(10), Duration::from_secs(15)).len(), 1);
    }

    #[test]
    fn cap_holds_when_the_extra_connections_get_429() {
        let facts = CapFacts { attempted: 144, served: 128, refused: 16, ..CapFacts::default() };
        assert!(judge_cap(&facts, 128).is_empty());
    }

    #[test]
    fn cap_fails_without_refusals() {
        let facts = CapFacts { attempted: 144, served: 144, ..CapFacts::default() };
        let failures = judge_cap(&facts, 128);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("144 connections from one IP were served"));
        assert!(failures[1].contains("none of the 16"));
    }

    #[test]
    fn cap_fails_on_silent_drops_and_a_lower_cap() {
        let facts = CapFacts { attempted: 144, served: 100, refused: 40, dropped: 4, ..CapFacts::default() };
        let failures = judge_cap(&facts, 128);
        assert!(failures.iter().any(|f| f.contains("only 100 of the first 128")), "{failures:?}");
        assert!(failures.iter().any(|f| f.contains("4 connections were closed without")), "{failures:?}");
    }
}
