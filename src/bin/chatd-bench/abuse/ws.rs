//! The WebSocket attacks: more connections on one token than the per-user
//! cap, a message flood against the per-user command bucket, and a typing
//! flood that must not cost its victim the connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Sink, SinkExt, StreamExt, stream};
use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::{self, Message};

use super::{Arena, Attack, Finding, counts_human, keep_sample};
use crate::client::{
    Incoming, ServerEvent, WsStream, busy_ws_config, classify, close_quietly, connect_ws_from, idle_ws_config,
    text_message_frame,
};
use crate::context::{rss_change_human, snapshot_json};
use crate::error::{BenchError, Result, describe};
use crate::stats::{LatencySummary, rate, round2, summary_human, summary_json};

/// WebSockets opened past the per-user cap.
const WS_EXTRA: u32 = 8;
/// How long opening them may take in all.
const CONNECT_BUDGET: Duration = Duration::from_secs(30);
/// How long the flood's answers may take to arrive, at most.
const FLOOD_ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Frames queued before each flush in a flood.
const FLUSH_EVERY: u64 = 64;
/// Typing frames at most, whatever the time.
const TYPING_MAX: u64 = 50_000_000;
/// Between two probe messages to the typing flood's victim.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long probes go on after the typing flood.
const AFTER_FLOOD: Duration = Duration::from_secs(2);
/// How long the victim may take to get the last probes, at most.
const PROBE_WAIT: Duration = Duration::from_secs(5);
/// A probe slower than this was held up by the flood.
const PROBE_LATENCY_LIMIT: Duration = Duration::from_secs(2);

/// What the connections on one token got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerUserFacts {
    pub attempted: u64,
    pub opened: u64,
    pub refused: BTreeMap<String, u64>,
    /// Whether another user could still connect from the same address.
    pub other_user_ok: bool,
}

/// The failed checks of the per-user WebSocket cap.
pub fn judge_per_user(facts: &PerUserFacts, cap: u64) -> Vec<String> {
    let mut failures = Vec::new();
    if facts.opened > cap {
        failures.push(format!("{} WebSockets opened on one token; the cap is {cap}", facts.opened));
    }
    let expected = facts.attempted.min(cap);
    if facts.opened < expected {
        failures.push(format!("only {} of the first {expected} WebSockets opened", facts.opened));
    }
    let not_429: u64 = facts.refused.iter().filter(|(label, _)| label.as_str() != "http_429").map(|(_, n)| n).sum();
    if not_429 > 0 {
        failures.push(format!("{not_429} refused otherwise than with 429: {}", counts_human(&facts.refused)));
    }
    if !facts.other_user_ok {
        failures.push("another user could not open a WebSocket from the same IP".to_string());
    }
    failures
}

/// per-user cap + 8 WebSockets on one token, then one of another user.
pub async fn ws_per_user(arena: &Arena<'_>) -> Result<Finding> {
    let cap = arena.args.ws_per_user;
    let owner = arena.register("ws-owner").await?;
    let other = arena.register("ws-other").await?;
    let target = arena.bench.target;
    let source = Attack::WsPerUser.attacker_ip(0);
    let attempted = cap + WS_EXTRA;
    let mut facts = PerUserFacts { attempted: u64::from(attempted), ..PerUserFacts::default() };
    let mut open = Vec::new();
    let mut samples = Vec::new();
    let deadline = Instant::now() + CONNECT_BUDGET;
    for _ in 0..attempted {
        if Instant::now() >= deadline {
            *facts.refused.entry("not_tried_out_of_time".to_string()).or_default() += 1;
            continue;
        }
        match connect_ws_from(&target, &owner.token, idle_ws_config(), source).await {
            Ok(ws) => open.push(ws),
            Err(failure) => {
                *facts.refused.entry(failure.label()).or_default() += 1;
                keep_sample(&mut samples, failure.to_string());
            }
        }
    }
    facts.opened = open.len() as u64;
    match connect_ws_from(&target, &other.token, idle_ws_config(), source).await {
        Ok(ws) => {
            facts.other_user_ok = true;
            open.push(ws);
        }
        Err(failure) => keep_sample(&mut samples, format!("other user: {failure}")),
    }
    stream::iter(open).for_each_concurrent(64, close_quietly).await;

    let mut finding = Finding::default();
    finding.line(format!(
        "{attempted} WebSockets on one token (cap {cap}): opened {}, refused: {}",
        facts.opened,
        counts_human(&facts.refused)
    ));
    finding
        .line(format!("another user from the same IP: {}", if facts.other_user_ok { "connected" } else { "refused" }));
    finding.failures = judge_per_user(&facts, u64::from(cap));
    finding.set("attempted", json!(facts.attempted));
    finding.set("opened", json!(facts.opened));
    finding.set("refused", json!(facts.refused));
    finding.set("other_user_ok", json!(facts.other_user_ok));
    finding.set("samples", json!(samples));
    Ok(finding)
}

/// What came of a message flood.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FloodFacts {
    pub sent: u64,
    pub echoed: u64,
    /// `error` frames that speak of a rate.
    pub refused: u64,
    /// Refusals that carried the request's `local_temp_id`.
    pub refused_with_temp_id: u64,
    pub other_errors: u64,
    /// Messages in the room afterwards, by the REST `total`.
    pub stored: u64,
    /// `new_message` frames the other user got.
    pub delivered: u64,
    /// From the first frame sent to the last answer.
    pub elapsed: Duration,
    pub sender_closed: Option<String>,
    pub receiver_closed: Option<String>,
}

/// The most messages a token bucket of `burst` and `per_sec` lets through
/// in `elapsed`, with a second of slack for clocks and batching.
pub fn bucket_allows(burst: u64, per_sec: u64, elapsed: Duration) -> u64 {
    burst + (per_sec as f64 * (elapsed.as_secs_f64() + 1.0)).ceil() as u64
}

/// The failed checks of a message flood.
pub fn judge_flood(facts: &FloodFacts, burst: u64, per_sec: u64) -> Vec<String> {
    let mut failures = Vec::new();
    let allowed = bucket_allows(burst, per_sec, facts.elapsed);
    if facts.refused == 0 {
        failures.push(format!(
            "none of {} messages was refused: no per-user rate limit (expected at most ~{allowed})",
            facts.sent
        ));
    }
    if facts.stored > allowed {
        failures.push(format!(
            "{} messages stored in {:.1} s; the bucket ({burst} + {per_sec}/s) allows ~{allowed}",
            facts.stored,
            facts.elapsed.as_secs_f64()
        ));
    }
    if facts.stored != facts.echoed {
        failures.push(format!(
            "{} messages stored but {} acknowledged (a refused message must not be stored)",
            facts.stored, facts.echoed
        ));
    }
    if facts.refused_with_temp_id < facts.refused {
        failures.push(format!(
            "{} refusals did not carry the request's local_temp_id",
            facts.refused - facts.refused_with_temp_id
        ));
    }
    let unanswered = facts.sent.saturating_sub(facts.echoed + facts.refused + facts.other_errors);
    if unanswered > 0 {
        failures.push(format!("{unanswered} messages got neither an echo nor an error"));
    }
    if let Some(reason) = &facts.sender_closed {
        failures.push(format!("the flooding connection was closed: {reason}"));
    }
    if let Some(reason) = &facts.receiver_closed {
        failures.push(format!("the other user's connection was closed: {reason}"));
    }
    if facts.delivered < facts.stored {
        failures.push(format!("the other user got {} of {} stored messages", facts.delivered, facts.stored));
    }
    failures
}

/// Whether an `error` frame speaks of rate limiting.
pub fn is_rate_error(message: &str) -> bool {
    let lower = message.to_lowercase();
    lower.contains("rate") || lower.contains("too many") || lower.contains("slow down")
}

/// One user sends `flood_messages` messages as fast as it can into a room
/// with a second user; stored vs refused.
pub async fn message_flood(arena: &Arena<'_>) -> Result<Finding> {
    let args = arena.args;
    let target = arena.bench.target;
    let (sender, receiver, room_id) = arena.pair("flood-sender", "flood-receiver").await?;
    let sender_ws = connect_ws_from(&target, &sender.token, busy_ws_config(), Attack::MessageFlood.attacker_ip(0))
        .await
        .map_err(|failure| BenchError::new(format!("the flooder's WebSocket: {failure}")))?;
    let receiver_ws = connect_ws_from(&target, &receiver.token, busy_ws_config(), arena.normal_ip)
        .await
        .map_err(|failure| BenchError::new(format!("the receiver's WebSocket: {failure}")))?;
    let (stop, stopped) = watch::channel(false);
    let prefix = format!("f{}-", arena.bench.run_id);
    let receiving = tokio::spawn(count_deliveries(receiver_ws, room_id, stopped));

    let count = u64::from(args.flood_messages);
    let mut facts = FloodFacts::default();
    let mut error_samples = Vec::new();
    let (mut sink, mut incoming) = sender_ws.split();
    let started = Instant::now();
    let deadline = started + FLOOD_ANSWER_WAIT;
    let frames = (0..count).map(|n| text_message_frame(room_id, &format!("flood {n}"), &format!("{prefix}{n}")));
    let writing = pour(&mut sink, frames, deadline);
    let reading = async {
        let mut last_answer = started;
        let mut answered = 0u64;
        while answered < count {
            let Ok(item) = timeout_at(deadline, incoming.next()).await else {
                break;
            };
            match classify(item) {
                Incoming::Event(ServerEvent::NewMessage(message))
                    if message.local_temp_id.as_deref().is_some_and(|id| id.starts_with(&prefix)) =>
                {
                    facts.echoed += 1;
                }
                Incoming::Event(ServerEvent::Error { message, local_temp_id }) => {
                    if is_rate_error(&message) {
                        facts.refused += 1;
                        if local_temp_id.as_deref().is_some_and(|id| id.starts_with(&prefix)) {
                            facts.refused_with_temp_id += 1;
                        }
                    } else {
                        facts.other_errors += 1;
                    }
                    keep_sample(&mut error_samples, message);
                }
                Incoming::Closed(reason) => {
                    facts.sender_closed = Some(reason);
                    break;
                }
                _ => continue,
            }
            answered += 1;
            last_answer = Instant::now();
        }
        last_answer
    };
    let ((sent, write_error), last_answer) = tokio::join!(writing, reading);
    facts.sent = sent;
    facts.elapsed = last_answer - started;
    if let Some(error) = write_error
        && facts.sender_closed.is_none()
    {
        facts.sender_closed = Some(format!("sending: {error}"));
    }
    if let Ok(ws) = sink.reunite(incoming) {
        close_quietly(ws).await;
    }
    // The receiver may lag the sender's echoes a little.
    sleep(Duration::from_secs(1)).await;
    stop.send_replace(true);
    let (delivered, receiver_closed) = receiving.await.unwrap_or((0, Some("the receiving task failed".into())));
    facts.delivered = delivered;
    facts.receiver_closed = receiver_closed;
    facts.stored = stored_messages(arena, &receiver.token, room_id).await?;

    let mut finding = Finding::default();
    finding.line(format!(
        "{} of {count} sent in {:.2} s: acknowledged {}, refused for rate {} ({} with their temp id), other errors {}",
        facts.sent,
        facts.elapsed.as_secs_f64(),
        facts.echoed,
        facts.refused,
        facts.refused_with_temp_id,
        facts.other_errors
    ));
    finding.line(format!(
        "stored (REST total) {}; in that time the bucket allows ~{} ({} + {}/s); the other user got {}",
        facts.stored,
        bucket_allows(u64::from(args.ws_burst), u64::from(args.ws_rate), facts.elapsed),
        args.ws_burst,
        args.ws_rate,
        facts.delivered
    ));
    for sample in &error_samples {
        finding.line(format!("error frame: {sample}"));
    }
    finding.failures = judge_flood(&facts, u64::from(args.ws_burst), u64::from(args.ws_rate));
    finding.set("sent", json!(facts.sent));
    finding.set("acknowledged", json!(facts.echoed));
    finding.set("refused", json!(facts.refused));
    finding.set("refused_with_temp_id", json!(facts.refused_with_temp_id));
    finding.set("other_errors", json!(facts.other_errors));
    finding.set("stored", json!(facts.stored));
    finding.set("delivered", json!(facts.delivered));
    finding.set("flood_s", json!(round2(facts.elapsed.as_secs_f64())));
    finding.set("stored_per_s", json!(round2(rate(facts.stored as f64, facts.elapsed))));
    finding.set("error_samples", json!(error_samples));
    finding.set("sender_closed", json!(facts.sender_closed));
    finding.set("receiver_closed", json!(facts.receiver_closed));
    Ok(finding)
}

/// Counts the `new_message` frames of a room until told to stop; also says
/// why the connection closed, if it did first.
async fn count_deliveries(mut ws: WsStream, room_id: i64, mut stop: watch::Receiver<bool>) -> (u64, Option<String>) {
    let mut delivered = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => {
                close_quietly(ws).await;
                return (delivered, None);
            }
            item = ws.next() => match classify(item) {
                Incoming::Event(ServerEvent::NewMessage(message)) if message.room_id == room_id => delivered += 1,
                Incoming::Closed(reason) => return (delivered, Some(reason)),
                _ => {}
            }
        }
    }
}

/// The `total` of a room's first page of messages.
async fn stored_messages(arena: &Arena<'_>, token: &str, room_id: i64) -> Result<u64> {
    let path = format!("/api/chat/rooms/{room_id}/messages?per_page=1");
    let response = arena.normal.call(Method::GET, &path, Some(token), None).await?;
    if !response.status.is_success() {
        return Err(BenchError::new(format!("GET {path}: HTTP {} {}", response.status, response.detail())));
    }
    response
        .json()?
        .get("total")
        .and_then(Value::as_u64)
        .ok_or_else(|| BenchError::new(format!("GET {path}: the answer has no total")))
}

/// What the typing flood's victim saw.
#[derive(Debug, Default)]
struct VictimLog {
    typing: u64,
    probes: HashMap<String, Instant>,
    closed: Option<String>,
}

/// What came of a typing flood.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypingFacts {
    pub typing_sent: u64,
    pub typing_relayed: u64,
    pub probes_sent: u64,
    pub probes_received: u64,
    pub slowest_probe: Option<Duration>,
    pub victim_closed: Option<String>,
    pub attacker_closed: Option<String>,
}

/// The failed checks of a typing flood: the victim keeps its connection and
/// gets every message of a third user, none of them held up for long.
pub fn judge_typing(facts: &TypingFacts) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(reason) = &facts.victim_closed {
        failures.push(format!("the victim's connection was closed: {reason}"));
    }
    if facts.probes_sent == 0 {
        failures.push("no message could be sent to the victim meanwhile".to_string());
    } else if facts.probes_received < facts.probes_sent {
        failures.push(format!(
            "the victim got {} of {} messages a third user sent meanwhile (the rest not within {} s)",
            facts.probes_received,
            facts.probes_sent,
            PROBE_WAIT.as_secs()
        ));
    }
    if let Some(slowest) = facts.slowest_probe
        && slowest > PROBE_LATENCY_LIMIT
    {
        failures.push(format!(
            "messages of a third user took up to {:.1} s to reach the victim (over {} s)",
            slowest.as_secs_f64(),
            PROBE_LATENCY_LIMIT.as_secs()
        ));
    }
    failures
}

/// An attacker sends typing as fast as it can into its room with a victim
/// for `typing_secs`; meanwhile a third user sends the victim a message
/// every half second.
pub async fn typing_flood(arena: &Arena<'_>) -> Result<Finding> {
    let args = arena.args;
    let target = arena.bench.target;
    let (attacker, victim, flood_room) = arena.pair("typing-attacker", "typing-victim").await?;
    let friend = arena.register("typing-friend").await?;
    let probe_room = arena.normal.open_room(&friend.token, victim.user_id).await?;
    let connect = |token: String, source, who: &'static str| async move {
        connect_ws_from(&target, &token, busy_ws_config(), source)
            .await
            .map_err(|failure| BenchError::new(format!("the {who}'s WebSocket: {failure}")))
    };
    let victim_ws = connect(victim.token.clone(), arena.normal_ip, "victim").await?;
    let friend_ws = connect(friend.token.clone(), arena.spread_ip(), "third user").await?;
    let attacker_ws = connect(attacker.token.clone(), Attack::TypingFlood.attacker_ip(0), "attacker").await?;

    let probe_prefix = format!("p{}-", arena.bench.run_id);
    let (stop, stopped) = watch::channel(false);
    // VmHWM from here on is this flood's peak (when the reset works).
    if let Some(pid) = arena.bench.server_pid {
        let _ = crate::procfs::reset_peak(pid);
    }
    let before = arena.bench.server_snapshot();
    let started = Instant::now();
    let flood_until = started + Duration::from_secs(args.typing_secs);
    let pace =
        (args.victim_reads_per_sec > 0).then_some(Pace { per_sec: args.victim_reads_per_sec, until: flood_until });
    let seen = Arc::new(AtomicU64::new(0));
    let watching = tokio::spawn(watch_victim(victim_ws, probe_prefix.clone(), pace, Arc::clone(&seen), stopped));
    let probing = tokio::spawn(send_probes(friend_ws, probe_room, probe_prefix, flood_until + AFTER_FLOOD));
    let (typing_sent, attacker_closed) = flood_typing(attacker_ws, flood_room, flood_until).await;
    let probes = probing.await.map_err(|error| BenchError::new(format!("the probe task failed: {error}")))?;
    // Time for the last probes to arrive.
    let wait_until = Instant::now() + PROBE_WAIT;
    while seen.load(Ordering::Relaxed) < probes.len() as u64 && Instant::now() < wait_until {
        sleep(Duration::from_millis(50)).await;
    }
    let after = arena.bench.server_snapshot();
    stop.send_replace(true);
    let log = watching.await.map_err(|error| BenchError::new(format!("the victim's task failed: {error}")))?;

    let latencies: Vec<Duration> =
        probes.iter().filter_map(|(id, sent_at)| log.probes.get(id).map(|got| *got - *sent_at)).collect();
    let facts = TypingFacts {
        typing_sent,
        typing_relayed: log.typing,
        probes_sent: probes.len() as u64,
        probes_received: latencies.len() as u64,
        slowest_probe: latencies.iter().max().copied(),
        victim_closed: log.closed,
        attacker_closed,
    };
    let latency = LatencySummary::from_samples(latencies);
    let mut finding = Finding::default();
    finding.line(format!(
        "attacker sent {} typing frames in {} s ({:.0}/s); the victim (reading {}) got {} of them",
        facts.typing_sent,
        args.typing_secs,
        facts.typing_sent as f64 / args.typing_secs as f64,
        if args.victim_reads_per_sec > 0 {
            format!("{} frames/s", args.victim_reads_per_sec)
        } else {
            "at full speed".to_string()
        },
        facts.typing_relayed
    ));
    finding.line(format!(
        "victim: {}; got {}/{} messages of a third user, latency {}",
        facts.victim_closed.as_deref().map_or("stayed connected".to_string(), |reason| format!("closed ({reason})")),
        facts.probes_received,
        facts.probes_sent,
        summary_human(latency.as_ref())
    ));
    if let Some(reason) = &facts.attacker_closed {
        finding.line(format!("attacker's connection: {reason}"));
    }
    finding.line(rss_change_human(before.as_ref(), after.as_ref()));
    finding.failures = judge_typing(&facts);
    finding.set("typing_sent", json!(facts.typing_sent));
    finding.set("typing_relayed", json!(facts.typing_relayed));
    finding.set("probes_sent", json!(facts.probes_sent));
    finding.set("probes_received", json!(facts.probes_received));
    finding.set("probe_latency", summary_json(latency.as_ref()));
    finding.set("victim_closed", json!(facts.victim_closed));
    finding.set("attacker_closed", json!(facts.attacker_closed));
    finding.set("server_before", snapshot_json(before.as_ref()));
    finding.set("server_after", snapshot_json(after.as_ref()));
    Ok(finding)
}

/// How fast the victim reads during the flood: a browser tab handles
/// frames at some rate, not at the speed of loopback.
#[derive(Debug, Clone, Copy)]
struct Pace {
    per_sec: u32,
    until: Instant,
}

/// Reads the victim's connection until told to stop, at `pace` (if any)
/// until the flood ends and at full speed after.
async fn watch_victim(
    mut ws: WsStream,
    probe_prefix: String,
    pace: Option<Pace>,
    seen: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> VictimLog {
    let mut log = VictimLog::default();
    let started = Instant::now();
    let mut frames: u32 = 0;
    loop {
        frames = frames.saturating_add(1);
        if let Some(pace) = pace
            && frames.is_multiple_of(50)
        {
            let due = started + Duration::from_secs_f64(f64::from(frames) / f64::from(pace.per_sec));
            sleep_until(due.min(pace.until)).await;
        }
        tokio::select! {
            _ = stop.changed() => {
                close_quietly(ws).await;
                return log;
            }
            item = ws.next() => match classify(item) {
                Incoming::Event(ServerEvent::Other(kind)) if kind == "typing" => log.typing += 1,
                Incoming::Event(ServerEvent::NewMessage(message)) => {
                    if let Some(id) = message.local_temp_id.filter(|id| id.starts_with(&probe_prefix))
                        && !log.probes.contains_key(&id)
                    {
                        log.probes.insert(id, Instant::now());
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Incoming::Closed(reason) => {
                    log.closed = Some(reason);
                    return log;
                }
                _ => {}
            }
        }
    }
}

/// Sends a message every half second until `until`, reading (and
/// dropping) what comes back; returns each temp id with its send time.
async fn send_probes(mut ws: WsStream, room_id: i64, prefix: String, until: Instant) -> Vec<(String, Instant)> {
    let mut sent = Vec::new();
    let mut next = Instant::now();
    while next < until {
        tokio::select! {
            () = sleep_until(next) => {
                let id = format!("{prefix}{}", sent.len());
                let frame = text_message_frame(room_id, "are you there?", &id);
                let sent_at = Instant::now();
                if ws.send(Message::text(frame)).await.is_err() {
                    break;
                }
                sent.push((id, sent_at));
                next += PROBE_EVERY;
            }
            item = ws.next() => {
                if let Incoming::Closed(_) = classify(item) {
                    break;
                }
            }
        }
    }
    close_quietly(ws).await;
    sent
}

/// Sends typing frames into `room_id` as fast as the connection takes them
/// until `until`, reading what comes back; the count sent and why the
/// connection closed, if it did.
async fn flood_typing(ws: WsStream, room_id: i64, until: Instant) -> (u64, Option<String>) {
    let (mut sink, mut incoming) = ws.split();
    let frames = (0..TYPING_MAX)
        .map(|n| json!({"type": "typing", "data": {"room_id": room_id, "is_typing": n.is_multiple_of(2)}}).to_string());
    let writing = pour(&mut sink, frames, until);
    let reading = async {
        loop {
            match timeout_at(until + Duration::from_secs(1), incoming.next()).await {
                Err(_) => return None,
                Ok(item) => {
                    if let Incoming::Closed(reason) = classify(item) {
                        return Some(reason);
                    }
                }
            }
        }
    };
    let ((sent, write_error), closed) = tokio::join!(writing, reading);
    if let Ok(ws) = sink.reunite(incoming) {
        close_quietly(ws).await;
    }
    (sent, closed.or(write_error))
}

/// Sends `frames` as fast as the connection takes them, flushing every
/// few, until they run out or `until` passes (a server that stops reading
/// cannot hold this up past it). The count sent, and the error that
/// stopped the sending, if one did.
async fn pour<S>(sink: &mut S, frames: impl Iterator<Item = String>, until: Instant) -> (u64, Option<String>)
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut sent = 0u64;
    for frame in frames {
        match timeout_at(until, sink.feed(Message::text(frame))).await {
            Err(_) => return (sent, None),
            Ok(Err(error)) => return (sent, Some(describe(&error))),
            Ok(Ok(())) => sent += 1,
        }
        if sent.is_multiple_of(FLUSH_EVERY) {
            match timeout_at(until, sink.flush()).await {
                Err(_) => return (sent, None),
                Ok(Err(error)) => return (sent, Some(describe(&error))),
                Ok(Ok(())) => {}
            }
        }
    }
    match timeout_at(until, sink.flush()).await {
        Ok(Err(error)) => (sent, Some(describe(&error))),
        _ => (sent, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_plus_rate() {
        assert_eq!(bucket_allows(60, 20, Duration::ZERO), 80);
        assert_eq!(bucket_allows(60, 20, Duration::from_millis(2500)), 130);
    }

    fn held_flood() -> FloodFacts {
        FloodFacts {
            sent: 2000,
            echoed: 70,
            refused: 1930,
            refused_with_temp_id: 1930,
            stored: 70,
            delivered: 70,
            elapsed: Duration::from_millis(400),
            ..FloodFacts::default()
        }
    }

    #[test]
    fn flood_holds_when_the_excess_is_refused_and_not_stored() {
        assert_eq!(judge_flood(&held_flood(), 60, 20), Vec::<String>::new());
    }

    #[test]
    fn flood_without_refusals_fails() {
        let facts = FloodFacts {
            sent: 2000,
            echoed: 2000,
            stored: 2000,
            delivered: 2000,
            elapsed: Duration::from_secs(1),
            ..FloodFacts::default()
        };
        let failures = judge_flood(&facts, 60, 20);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("no per-user rate limit"));
        assert!(failures[1].contains("2000 messages stored"));
    }

    #[test]
    fn flood_fails_when_refused_messages_are_stored_anyway() {
        let facts = FloodFacts { stored: 75, delivered: 75, ..held_flood() };
        let failures = judge_flood(&facts, 60, 20);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("75 messages stored but 70 acknowledged"));
    }

    #[test]
    fn flood_fails_on_missing_temp_ids_silence_and_closes() {
        let facts = FloodFacts {
            refused: 1900,
            refused_with_temp_id: 1800,
            receiver_closed: Some("closed by the server with code 1013".into()),
            ..held_flood()
        };
        let failures = judge_flood(&facts, 60, 20);
        assert!(failures.iter().any(|f| f.contains("100 refusals did not carry")), "{failures:?}");
        assert!(failures.iter().any(|f| f.contains("30 messages got neither")), "{failures:?}");
        assert!(failures.iter().any(|f| f.contains("other user's connection was closed")), "{failures:?}");
    }

    #[test]
    fn rate_errors_are_recognised() {
        assert!(is_rate_error("Rate limit exceeded, slow down"));
        assert!(is_rate_error("Too many messages: slow down and retry in 1 s"));
        assert!(!is_rate_error("Room not found"));
    }

    #[test]
    fn per_user_cap_holds_with_429s() {
        let mut refused = BTreeMap::new();
        refused.insert("http_429".to_string(), 8);
        let facts = PerUserFacts { attempted: 40, opened: 32, refused, other_user_ok: true };
        assert!(judge_per_user(&facts, 32).is_empty());
    }

    #[test]
    fn per_user_cap_fails_when_all_open_or_refused_otherwise() {
        let facts = PerUserFacts { attempted: 40, opened: 40, other_user_ok: true, ..PerUserFacts::default() };
        assert_eq!(judge_per_user(&facts, 32).len(), 1);
        let mut refused = BTreeMap::new();
        refused.insert("connection_reset".to_string(), 8);
        let facts = PerUserFacts { attempted: 40, opened: 32, refused, other_user_ok: false };
        let failures = judge_per_user(&facts, 32);
        assert_eq!(failures.len(), 2, "{failures:?}");
    }

    #[test]
    fn typing_flood_fails_when_the_victim_is_dropped() {
        let held = TypingFacts { typing_sent: 100_000, probes_sent: 14, probes_received: 14, ..TypingFacts::default() };
        assert!(judge_typing(&held).is_empty());
        let dropped = TypingFacts {
            probes_received: 3,
            victim_closed: Some("closed by the server with code 1013".into()),
            ..held.clone()
        };
        let failures = judge_typing(&dropped);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("1013"));
        assert!(failures[1].contains("3 of 14"));
    }

    #[test]
    fn typing_flood_fails_when_messages_are_held_up() {
        let slow = TypingFacts {
            probes_sent: 14,
            probes_received: 14,
            slowest_probe: Some(Duration::from_millis(3500)),
            ..TypingFacts::default()
        };
        let failures = judge_typing(&slow);
        assert_eq!(failures, vec!["messages of a third user took up to 3.5 s to reach the victim (over 2 s)"]);
    }
}
