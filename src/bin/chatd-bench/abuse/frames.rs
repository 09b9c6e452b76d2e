//! frame-budget: K WebSockets each send the header of a big frame and all
//! but its last KiB, then hold; the server must close some (1013) rather
//! than hold K frames, and its peak memory must stay near the budget. The
//! handshake and frames are written by hand: tungstenite sends whole frames.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::{Arena, Attack, Finding, counts_human};
use crate::client::{
    CONNECT_TIMEOUT, Incoming, ServerEvent, Target, busy_ws_config, classify, close_quietly, connect_tcp_from,
    connect_ws_from,
};
use crate::context::{kb_human, snapshot_json};
use crate::error::{BenchError, Result};
use crate::procfs;

const MIB: u64 = 1024 * 1024;
/// Bytes of each frame never sent, so the server never has a whole frame.
const HOLD_BACK: u64 = 1024;
/// Bytes per write.
const CHUNK: usize = 64 * 1024;
/// A write that makes no progress for this long means the server stopped reading.
const STALL: Duration = Duration::from_secs(5);
/// How long all sockets may take to send their part.
const SEND_BUDGET: Duration = Duration::from_secs(60);
/// How long the frames are held once sent.
const HOLD: Duration = Duration::from_secs(3);
/// Peak memory growth allowed, as a multiple of the budget: buffers grow
/// in steps and the allocator keeps some slack.
const PEAK_FACTOR: f64 = 1.5;

/// A WebSocket opening handshake for `path`, with a fixed key (the server
/// only hashes it).
pub fn handshake_request(authority: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// The header of a masked client text frame of `length` bytes, FIN set.
/// The mask key is zero, so the payload goes out as it is.
pub fn text_frame_header(length: u64) -> Vec<u8> {
    let mut header = vec![0x81];
    match length {
        0..=125 => header.push(0x80 | length as u8),
        126..=65535 => {
            header.push(0x80 | 126);
            header.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            header.push(0x80 | 127);
            header.extend_from_slice(&length.to_be_bytes());
        }
    }
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

/// A frame from the server, as far as this attack cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFrame {
    /// A close frame and its code, if it has one.
    Close(Option<u16>),
    Other,
}

/// The first frame in `bytes` and its length, or None while incomplete.
/// Payloads over 1 MiB are reported as `Other` once their header is in
/// (this attack never waits for such a frame).
pub fn next_frame(bytes: &[u8]) -> Option<(ServerFrame, usize)> {
    let first = *bytes.first()?;
    let second = *bytes.get(1)?;
    let (length, mut offset) = match second & 0x7f {
        126 => (u64::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])), 4),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        short => (u64::from(short), 2),
    };
    if second & 0x80 != 0 {
        offset += 4;
    }
    let opcode = first & 0x0f;
    if opcode != 0x8 && length > MIB {
        return Some((ServerFrame::Other, bytes.len()));
    }
    let end = offset + usize::try_from(length).ok()?;
    let payload = bytes.get(offset..end)?;
    let frame = if opcode == 0x8 {
        ServerFrame::Close(payload.get(..2).map(|code| u16::from_be_bytes([code[0], code[1]])))
    } else {
        ServerFrame::Other
    };
    Some((frame, end))
}

/// How one attacking connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SocketEnd {
    /// Still open at the end of the hold.
    Held,
    /// The server closed it: with a close frame (its code), or without.
    Closed(Option<u16>),
    /// The upgrade was refused: HTTP status, or a reason.
    NotUpgraded(String),
}

impl SocketEnd {
    fn label(&self) -> String {
        match self {
            SocketEnd::Held => "held".to_string(),
            SocketEnd::Closed(Some(code)) => format!("closed_{code}"),
            SocketEnd::Closed(None) => "closed_without_code".to_string(),
            SocketEnd::NotUpgraded(reason) => format!("not_upgraded_{reason}"),
        }
    }
}

/// One attacking connection: how far it got, and its reader.
struct Attacker {
    sent: u64,
    stalled: bool,
    reader: Option<JoinHandle<SocketEnd>>,
    end: Option<SocketEnd>,
    /// Never read: holding it keeps the connection (and its frame) open.
    _writer: Option<OwnedWriteHalf>,
}

/// What came of the attack.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetFacts {
    pub sockets: u64,
    pub frame_bytes: u64,
    pub budget_bytes: u64,
    pub ends: BTreeMap<String, u64>,
    /// Peak resident memory growth in KiB, when the server's pid is known.
    pub peak_growth_kb: Option<u64>,
    pub normal_client_ok: bool,
}

impl BudgetFacts {
    fn closed(&self) -> u64 {
        self.ends.iter().filter(|(label, _)| label.starts_with("closed")).map(|(_, n)| n).sum()
    }
}

/// The failed checks of the frame budget.
pub fn judge_budget(facts: &BudgetFacts) -> Vec<String> {
    let mut failures = Vec::new();
    let offered = facts.sockets * facts.frame_bytes;
    if offered > facts.budget_bytes && facts.closed() == 0 {
        failures.push(format!(
            "no connection was closed although {} MiB of unfinished frames exceed the {} MiB budget",
            offered / MIB,
            facts.budget_bytes / MIB
        ));
    }
    let ceiling_kb = (facts.budget_bytes as f64 * PEAK_FACTOR / 1024.0) as u64;
    if let Some(growth) = facts.peak_growth_kb
        && growth > ceiling_kb
    {
        failures.push(format!(
            "the server's peak memory grew by {}, over {PEAK_FACTOR} × the {} MiB budget",
            kb_human(growth),
            facts.budget_bytes / MIB
        ));
    }
    if !facts.normal_client_ok {
        failures.push("a normal client could not open a WebSocket and get a pong meanwhile".to_string());
    }
    failures
}

pub async fn frame_budget(arena: &Arena<'_>) -> Result<Finding> {
    let args = arena.args;
    let target = arena.bench.target;
    let frame_bytes = args.frame_mib * MIB;
    let budget_bytes = args.frame_budget_mib * MIB;
    let attacker = arena.register("frames").await?;
    let normal = arena.register("frames-normal").await?;
    let mut reset_note = None;
    if let Some(pid) = arena.bench.server_pid
        && let Err(error) = procfs::reset_peak(pid)
    {
        reset_note = Some(format!("could not reset VmHWM ({error}); growth is measured from the old peak"));
    }
    let before = arena.bench.server_snapshot();

    let path = format!("/api/chat/ws?token={}", attacker.token);
    let deadline = Instant::now() + SEND_BUDGET;
    let attackers: Vec<JoinHandle<Attacker>> = (0..args.frame_sockets)
        .map(|n| {
            let path = path.clone();
            tokio::spawn(attack_one(target, Attack::FrameBudget.attacker_ip(n as usize), path, frame_bytes, deadline))
        })
        .collect();
    let mut held = Vec::with_capacity(attackers.len());
    for task in attackers {
        held.push(task.await.map_err(|error| BenchError::new(format!("an attacking task failed: {error}")))?);
    }
    let sent_total: u64 = held.iter().map(|a| a.sent).sum();
    let stalled = held.iter().filter(|a| a.stalled).count();
    let normal_client = ping_pong(target, &normal.token, arena.normal_ip).await;
    sleep(HOLD).await;
    let during = arena.bench.server_snapshot();

    let mut ends: BTreeMap<String, u64> = BTreeMap::new();
    for attacker in &mut held {
        let end = match (attacker.end.take(), attacker.reader.take()) {
            (Some(end), _) => end,
            (None, Some(reader)) if reader.is_finished() => reader.await.unwrap_or(SocketEnd::Held),
            (None, Some(reader)) => {
                reader.abort();
                SocketEnd::Held
            }
            (None, None) => SocketEnd::Held,
        };
        *ends.entry(end.label()).or_default() += 1;
    }
    drop(held);
    sleep(Duration::from_secs(2)).await;
    let after = arena.bench.server_snapshot();

    let peak_growth_kb = match (&before, &during) {
        (Some(before), Some(during)) if reset_note.is_none() => {
            Some(during.memory.vm_hwm_kb.saturating_sub(before.memory.vm_rss_kb))
        }
        (Some(before), Some(during)) => Some(during.memory.vm_hwm_kb.saturating_sub(before.memory.vm_hwm_kb)),
        _ => None,
    };
    let facts = BudgetFacts {
        sockets: u64::from(args.frame_sockets),
        frame_bytes,
        budget_bytes,
        ends,
        peak_growth_kb,
        normal_client_ok: normal_client.is_ok(),
    };
    let mut finding = Finding::default();
    finding.line(format!(
        "{} connections × {} MiB frames (budget {} MiB): {} sent in all, {stalled} stalled by the server; {}",
        args.frame_sockets,
        args.frame_mib,
        args.frame_budget_mib,
        kb_human(sent_total / 1024),
        counts_human(&facts.ends)
    ));
    finding.line(match (&before, &during, &after) {
        (Some(before), Some(during), Some(after)) => format!(
            "server VmRSS {} before, {} holding, {} after; peak growth {}",
            kb_human(before.memory.vm_rss_kb),
            kb_human(during.memory.vm_rss_kb),
            kb_human(after.memory.vm_rss_kb),
            peak_growth_kb.map_or("?".to_string(), kb_human)
        ),
        _ => "server memory: unknown (no pid; pass --pid)".to_string(),
    });
    if let Some(note) = &reset_note {
        finding.line(note.clone());
    }
    finding.line(match &normal_client {
        Ok(took) => {
            format!("a normal client from {}: connected and got a pong in {:.0} ms", arena.normal_ip, millis(*took))
        }
        Err(error) => format!("a normal client from {}: {error}", arena.normal_ip),
    });
    finding.failures = judge_budget(&facts);
    finding.set("sockets", json!(facts.sockets));
    finding.set("frame_bytes", json!(frame_bytes));
    finding.set("sent_bytes", json!(sent_total));
    finding.set("stalled", json!(stalled));
    finding.set("ends", json!(facts.ends));
    finding.set("peak_growth_kb", json!(peak_growth_kb));
    finding.set("server_before", snapshot_json(before.as_ref()));
    finding.set("server_holding", snapshot_json(during.as_ref()));
    finding.set("server_after", snapshot_json(after.as_ref()));
    finding.set("normal_client_ok", json!(normal_client.is_ok()));
    Ok(finding)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Upgrades one raw connection and sends all but the last KiB of one
/// frame, stopping when the server closes it or stops reading.
async fn attack_one(target: Target, source: Ipv4Addr, path: String, frame: u64, deadline: Instant) -> Attacker {
    let mut attacker = Attacker { sent: 0, stalled: false, reader: None, end: None, _writer: None };
    let stream = match upgrade(&target, source, &path).await {
        Ok(stream) => stream,
        Err(reason) => {
            attacker.end = Some(SocketEnd::NotUpgraded(reason));
            return attacker;
        }
    };
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = tokio::spawn(read_until_closed(read_half));
    let chunk = vec![b'a'; CHUNK];
    let header = text_frame_header(frame);
    let goal = frame.saturating_sub(HOLD_BACK);
    let mut first = true;
    while attacker.sent < goal && Instant::now() < deadline {
        let length = usize::try_from(goal - attacker.sent).map_or(CHUNK, |left| left.min(CHUNK));
        let write = async {
            if first {
                write_half.write_all(&header).await?;
            }
            write_half.write_all(&chunk[..length]).await
        };
        tokio::select! {
            end = &mut reader => {
                attacker.end = Some(end.unwrap_or(SocketEnd::Closed(None)));
                return attacker;
            }
            written = timeout(STALL, write) => match written {
                Ok(Ok(())) => {
                    first = false;
                    attacker.sent += length as u64;
                }
                Ok(Err(_)) => {
                    // The server is gone; its reader says how.
                    attacker.end = Some(match timeout(Duration::from_secs(2), &mut reader).await {
                        Ok(end) => end.unwrap_or(SocketEnd::Closed(None)),
                        Err(_) => {
                            reader.abort();
                            SocketEnd::Closed(None)
                        }
                    });
                    return attacker;
                }
                Err(_) => {
                    attacker.stalled = true;
                    break;
                }
            }
        }
    }
    attacker.reader = Some(reader);
    attacker._writer = Some(write_half);
    attacker
}

/// A raw TCP connection from `source`, upgraded to a WebSocket by hand.
async fn upgrade(target: &Target, source: Ipv4Addr, path: &str) -> std::result::Result<TcpStream, String> {
    let exchange = async {
        let mut stream = connect_tcp_from(target, source).await.map_err(|error| format!("connect: {error}"))?;
        stream
            .write_all(handshake_request(&target.authority(), path).as_bytes())
            .await
            .map_err(|error| format!("write: {error}"))?;
        // Byte by byte up to the blank line, so that no frame byte is read
        // here (the reader must see them all).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(0) => return Err("closed during the handshake".to_string()),
                Ok(_) => head.push(byte[0]),
                Err(error) => return Err(format!("read: {error}")),
            }
            if head.len() > 16 * 1024 {
                return Err("no end of the handshake answer".to_string());
            }
        }
        match super::tcp::status_code(&head) {
            Some(101) => Ok(stream),
            Some(status) => Err(format!("http_{status}")),
            None => Err("not_http".to_string()),
        }
    };
    timeout(CONNECT_TIMEOUT, exchange).await.map_err(|_| "timeout".to_string())?
}

/// Reads server frames until a close frame or the end of the connection.
async fn read_until_closed(mut read_half: OwnedReadHalf) -> SocketEnd {
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match read_half.read(&mut buffer).await {
            Ok(0) | Err(_) => return SocketEnd::Closed(None),
            Ok(n) => pending.extend_from_slice(&buffer[..n]),
        }
        while let Some((frame, length)) = next_frame(&pending) {
            if let ServerFrame::Close(code) = frame {
                return SocketEnd::Closed(code);
            }
            pending.drain(..length.min(pending.len()));
        }
    }
}

/// Opens a WebSocket from the normal client's address and waits for the
/// answer to a ping; how long that took.
async fn ping_pong(target: Target, token: &str, source: Ipv4Addr) -> std::result::Result<Duration, String> {
    let started = Instant::now();
    let mut ws = connect_ws_from(&target, token, busy_ws_config(), source)
        .await
        .map_err(|failure| format!("could not connect: {failure}"))?;
    let exchange = async {
        ws.send(Message::text(json!({"type": "ping"}).to_string())).await.map_err(|error| error.to_string())?;
        loop {
            match classify(ws.next().await) {
                Incoming::Event(ServerEvent::Other(kind)) if kind == "pong" => return Ok(started.elapsed()),
                Incoming::Closed(reason) => return Err(format!("closed: {reason}")),
                _ => {}
            }
        }
    };
    let outcome = timeout(Duration::from_secs(5), exchange).await.unwrap_or_else(|_| Err("no pong within 5 s".into()));
    close_quietly(ws).await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_use_the_shortest_length() {
        assert_eq!(text_frame_header(5), vec![0x81, 0x85, 0, 0, 0, 0]);
        assert_eq!(text_frame_header(300), vec![0x81, 0xfe, 0x01, 0x2c, 0, 0, 0, 0]);
        let big = text_frame_header(60 * MIB);
        assert_eq!(big.len(), 14);
        assert_eq!(&big[..2], &[0x81, 0xff]);
        assert_eq!(u64::from_be_bytes(big[2..10].try_into().expect("8 bytes")), 60 * MIB);
    }

    #[test]
    fn close_frames_give_their_code() {
        assert_eq!(next_frame(&[0x88, 0x02, 0x03, 0xf5]), Some((ServerFrame::Close(Some(1013)), 4)));
        assert_eq!(next_frame(&[0x88, 0x00]), Some((ServerFrame::Close(None), 2)));
        // Incomplete: the code is not in yet.
        assert_eq!(next_frame(&[0x88, 0x02, 0x03]), None);
        assert_eq!(next_frame(&[0x88]), None);
    }

    #[test]
    fn other_frames_are_skipped_whole() {
        let mut bytes = vec![0x81, 0x03, b'a', b'b', b'c', 0x88, 0x02, 0x03, 0xe8];
        assert_eq!(next_frame(&bytes), Some((ServerFrame::Other, 5)));
        bytes.drain(..5);
        assert_eq!(next_frame(&bytes), Some((ServerFrame::Close(Some(1000)), 4)));
        let mut medium = vec![0x81, 126, 0x01, 0x00];
        medium.extend(vec![b'x'; 256]);
        assert_eq!(next_frame(&medium), Some((ServerFrame::Other, 260)));
    }

    #[test]
    fn handshake_asks_for_an_upgrade() {
        let request = handshake_request("127.0.0.1:8000", "/api/chat/ws?token=t");
        assert!(request.starts_with("GET /api/chat/ws?token=t HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"));
        assert!(request.contains("Upgrade: websocket\r\n"));
        assert!(request.ends_with("\r\n\r\n"));
    }

    fn facts() -> BudgetFacts {
        let mut ends = BTreeMap::new();
        ends.insert("held".to_string(), 4);
        ends.insert("closed_1013".to_string(), 8);
        BudgetFacts {
            sockets: 12,
            frame_bytes: 60 * MIB,
            budget_bytes: 256 * MIB,
            ends,
            peak_growth_kb: Some(300 * 1024),
            normal_client_ok: true,
        }
    }

    #[test]
    fn budget_holds_when_some_are_closed_and_memory_stays_near_it() {
        assert!(judge_budget(&facts()).is_empty());
    }

    #[test]
    fn budget_fails_when_nothing_is_closed_and_memory_grows() {
        let mut ends = BTreeMap::new();
        ends.insert("held".to_string(), 12);
        let failures = judge_budget(&BudgetFacts { ends, peak_growth_kb: Some(800 * 1024), ..facts() });
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("720 MiB of unfinished frames exceed the 256 MiB budget"));
        assert!(failures[1].contains("800.0 MiB"));
    }
}
