//! `upload`: sends C files of one kind and size as `send_message` frames
//! with base64 `files_data`, one at a time, each waiting for its echo.
//! Measures throughput and how the server's peak memory grows with a frame.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::value_parser;
use futures_util::{SinkExt, StreamExt};
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{EchoedFile, Incoming, ServerEvent, WsStream, classify, close_quietly, connect_ws_or_fail};
use crate::context::{Bench, CpuMeter, Report, kb_human, progress, snapshot_json};
use crate::error::{BenchError, Result, describe};
use crate::procfs::{self, ProcessSnapshot};
use crate::stats::{LatencySummary, rate, round2, summary_human, summary_json};

/// The kinds of attachment of SPEC §4 this tool can forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A PNG image (limit 10 MB).
    Image,
    /// A PDF document (limit 50 MB).
    File,
    /// An MP3 voice note (limit 50 MB).
    Voice,
}

impl Kind {
    pub fn message_type(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::File => "file",
            Kind::Voice => "voice",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Image => "bench.png",
            Kind::File => "bench.pdf",
            Kind::Voice => "bench.mp3",
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            Kind::Image => "image/png",
            Kind::File => "application/pdf",
            Kind::Voice => "audio/mpeg",
        }
    }

    /// Seconds of a voice note; other kinds have none.
    pub fn duration(self) -> Option<f64> {
        (self == Kind::Voice).then_some(1.5)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct UploadArgs {
    /// What to send.
    #[arg(long, value_enum, default_value_t = Kind::File)]
    pub kind: Kind,
    /// Bytes per file (before base64). Limits: image 10 MiB, file and voice 50 MiB.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = value_parser!(u64).range(64..=100 * 1024 * 1024))]
    pub size: u64,
    /// Files to send, one after the other.
    #[arg(long, default_value_t = 3, value_parser = value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// Seconds to wait for each echo.
    #[arg(long, default_value_t = 120, value_parser = value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Reset the server's VmHWM to its VmRSS first (writes 5 to /proc/<pid>/clear_refs),
    /// so that "peak after" is this run's peak.
    #[arg(long)]
    pub reset_peak: bool,
}

pub async fn run(bench: &Bench, args: &UploadArgs) -> Result<Report> {
    progress("upload: registering 2 users and opening their room");
    let pair = bench.api.make_pair(&bench.run_id).await?;
    let mut ws = connect_ws_or_fail(&bench.target, &pair.sender).await?;
    let size = usize::try_from(args.size).map_err(|_| BenchError::new("upload: --size does not fit this machine"))?;
    progress(format!("upload: building a {} {} and its base64", kb_human(args.size / 1024), args.kind.message_type()));
    let file = build_file(args.kind, size);
    let base64 = STANDARD.encode(&file);
    let head = file[..file.len().min(16)].to_vec();
    drop(file);

    if args.reset_peak {
        match bench.server_pid {
            Some(pid) => procfs::reset_peak(pid)?,
            None => progress("upload: --reset-peak needs the server's pid; skipped"),
        }
    }
    let before = bench.server_snapshot();
    let cpu = CpuMeter::start(before.as_ref());
    let mut latencies = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut failed: u64 = 0;
    let mut first_file: Option<EchoedFile> = None;
    let mut frame_bytes = 0;
    let mut closed: Option<String> = None;
    let mut busy = Duration::ZERO;
    for index in 0..args.count {
        let temp_id = format!("u{}-{index}", bench.run_id);
        let frame = upload_frame(pair.room_id, args.kind, args.size, &temp_id, &base64);
        frame_bytes = frame.len();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(args.timeout);
        let sent = timeout_at(deadline, ws.send(Message::text(frame))).await;
        match sent {
            Err(_) => {
                failed += 1;
                closed = Some(format!("sending upload {index} took over {} s", args.timeout));
                break;
            }
            Ok(Err(error)) => {
                // The server may have closed with a code (1009: too big)
                // before it reset the connection; say so when it did.
                failed += 1;
                let close = match close_reason(&mut ws).await {
                    Some(reason) => format!(" ({reason})"),
                    None => String::new(),
                };
                closed = Some(format!("sending upload {index}: {}{close}", describe(&error)));
                break;
            }
            Ok(Ok(())) => {}
        }
        let answer = loop {
            let item = match timeout_at(deadline, ws.next()).await {
                Ok(item) => item,
                Err(_) => {
                    break Answer::Closed(format!("no echo for upload {index} within {} s", args.timeout));
                }
            };
            match classify(item) {
                Incoming::Event(ServerEvent::NewMessage(message))
                    if message.local_temp_id.as_deref() == Some(temp_id.as_str()) =>
                {
                    break Answer::Echo(message.files);
                }
                Incoming::Event(ServerEvent::Error { message, local_temp_id })
                    if local_temp_id.is_none() || local_temp_id.as_deref() == Some(temp_id.as_str()) =>
                {
                    break Answer::Refused(message);
                }
                Incoming::Closed(reason) => break Answer::Closed(reason),
                _ => {}
            }
        };
        let took = started.elapsed();
        match answer {
            Answer::Echo(files) => {
                busy += took;
                latencies.push(took);
                if first_file.is_none() {
                    first_file = files.into_iter().next();
                }
            }
            Answer::Refused(message) => {
                failed += 1;
                if errors.len() < 5 && !errors.contains(&message) {
                    errors.push(message);
                }
            }
            Answer::Closed(reason) => {
                failed += 1;
                closed = Some(reason);
                break;
            }
        }
        progress(format!("upload: {}/{} done in {:.2} s", index + 1, args.count, took.as_secs_f64()));
    }
    let after = bench.server_snapshot();
    let cpu_use = cpu.finish(after.as_ref());
    if closed.is_none() {
        close_quietly(ws).await;
    }
    let verified = match &first_file {
        Some(file) => Some(verify_stored(bench, file, args, &head).await),
        None => None,
    };

    let uploaded = latencies.len() as u64;
    let file_rate = rate((uploaded * args.size) as f64, busy) / MIB;
    let base64_rate = rate((uploaded * base64.len() as u64) as f64, busy) / MIB;
    let peak_growth_kb = match (&before, &after) {
        (Some(before), Some(after)) => Some(after.memory.vm_hwm_kb.saturating_sub(before.memory.vm_hwm_kb)),
        _ => None,
    };
    let peak_growth_ratio =
        peak_growth_kb.filter(|_| frame_bytes > 0).map(|kb| round2(kb as f64 * 1024.0 / frame_bytes as f64));
    let latency = LatencySummary::from_samples(latencies);

    let mut json = bench.header("upload");
    for (key, value) in [
        ("kind", json!(args.kind.message_type())),
        ("size", json!(args.size)),
        ("count", json!(args.count)),
        ("base64_bytes", json!(base64.len())),
        ("frame_bytes", json!(frame_bytes)),
        ("uploaded", json!(uploaded)),
        ("failed", json!(failed)),
        ("error_samples", json!(errors)),
        ("connection_closed", json!(closed)),
        ("file_mib_per_s", json!(round2(file_rate))),
        ("base64_mib_per_s", json!(round2(base64_rate))),
        ("latency", summary_json(latency.as_ref())),
        ("stored_file_verified", json!(verified.as_ref().map(|v| v.is_ok()))),
        ("stored_file_problem", json!(verified.as_ref().and_then(|v| v.as_ref().err().map(|e| e.to_string())))),
        ("server_before", snapshot_json(before.as_ref())),
        ("server_after", snapshot_json(after.as_ref())),
        ("peak_growth_kb", json!(peak_growth_kb)),
        ("peak_growth_per_frame_byte", json!(peak_growth_ratio)),
        ("server_cpu_percent", json!(cpu_use.server_percent)),
        ("bench_cpu_percent", json!(cpu_use.bench_percent)),
    ] {
        json.insert(key.to_string(), value);
    }

    let mut text = format!(
        "upload: {} × {} of {} bytes ({} bytes of base64, frames of {} bytes)\n",
        args.count,
        args.kind.message_type(),
        args.size,
        base64.len(),
        frame_bytes
    );
    text.push_str(&format!(
        "  uploaded {uploaded}, failed {failed}; {file_rate:.1} MiB/s of file bytes, {base64_rate:.1} MiB/s of base64\n"
    ));
    text.push_str(&format!("  send → echo: {}\n", summary_human(latency.as_ref())));
    for error in &errors {
        text.push_str(&format!("  server error: {error}\n"));
    }
    if let Some(reason) = &closed {
        text.push_str(&format!("  stopped: {reason}\n"));
    }
    match &verified {
        Some(Ok(())) => text.push_str("  the stored file reads back with the right size and first bytes\n"),
        Some(Err(problem)) => text.push_str(&format!("  stored file check failed: {problem}\n")),
        None => {}
    }
    text.push_str(&memory_human(before.as_ref(), after.as_ref(), peak_growth_ratio));
    text.push_str(&format!("\n  {}", cpu_use.human()));
    Ok(Report { json: Value::Object(json), text })
}

const MIB: f64 = 1024.0 * 1024.0;

/// Whatever close frame is left to read after a failed send, within a second.
async fn close_reason(ws: &mut WsStream) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(item) => {
                if let Incoming::Closed(reason) = classify(item) {
                    return Some(reason);
                }
            }
        }
    }
}

enum Answer {
    Echo(Vec<EchoedFile>),
    Refused(String),
    Closed(String),
}

fn memory_human(before: Option<&ProcessSnapshot>, after: Option<&ProcessSnapshot>, ratio: Option<f64>) -> String {
    match (before, after) {
        (Some(before), Some(after)) => format!(
            "  server VmRSS {} → {}, peak (VmHWM) {} → {}: peak grew by {} of memory per byte of frame",
            kb_human(before.memory.vm_rss_kb),
            kb_human(after.memory.vm_rss_kb),
            kb_human(before.memory.vm_hwm_kb),
            kb_human(after.memory.vm_hwm_kb),
            ratio.map_or("?".to_string(), |r| format!("{r:.2} bytes"))
        ),
        _ => "  server memory: unknown (no pid; pass --pid)".to_string(),
    }
}

/// Reads the first 16 bytes of the stored file back through `/static` and
/// checks them and the total size.
async fn verify_stored(bench: &Bench, file: &EchoedFile, args: &UploadArgs, head: &[u8]) -> Result<()> {
    let path = bench.target.own_path(&file.file_path).ok_or_else(|| {
        BenchError::new(format!("file_path {:?} is not a URL of {} (BASE_URL?)", file.file_path, bench.target))
    })?;
    if file.file_size != Some(args.size) {
        return Err(BenchError::new(format!("the echo says file_size {:?}, sent {}", file.file_size, args.size)));
    }
    let last = head.len().saturating_sub(1) as u64;
    let response = bench.api.get_range(&path, 0, last).await?;
    if response.status != StatusCode::PARTIAL_CONTENT {
        return Err(BenchError::new(format!("GET {path} with Range: HTTP {} (wanted 206)", response.status)));
    }
    let expected_range = format!("bytes 0-{last}/{}", args.size);
    if response.content_range.as_deref() != Some(expected_range.as_str()) {
        return Err(BenchError::new(format!(
            "GET {path}: Content-Range {:?}, wanted {expected_range:?}",
            response.content_range
        )));
    }
    if response.body.as_ref() != head {
        return Err(BenchError::new(format!("GET {path}: the first bytes differ from those sent")));
    }
    Ok(())
}

/// The `send_message` frame of one upload, written by hand so that the
/// base64 (up to ~70 MB) is copied once.
pub fn upload_frame(room_id: i64, kind: Kind, size: u64, local_temp_id: &str, base64: &str) -> String {
    let duration = kind.duration().map_or(String::new(), |seconds| format!("\"duration\":{seconds},"));
    let mut frame = String::with_capacity(base64.len() + 512);
    frame.push_str(&format!(
        "{{\"type\":\"send_message\",\"data\":{{\"room_id\":{room_id},\"message_type\":\"{}\",\"content\":\"\",{duration}\"local_temp_id\":{},\"files_data\":[{{\"file_name\":\"{}\",\"file_size\":{size},\"mime_type\":\"{}\",{duration}\"file_data\":\"",
        kind.message_type(),
        Value::String(local_temp_id.to_string()),
        kind.file_name(),
        kind.mime_type(),
    ));
    frame.push_str(base64);
    frame.push_str("\"}]}}");
    frame
}

/// A file of exactly `size` bytes that passes a magic-number check for its
/// kind, filled so that it also looks like one to a casual parser: a PNG
/// with IHDR, a private padding chunk and IEND; a PDF of comment lines
/// ending in `%%EOF`; an MP3 of an ID3v2 header and silent MPEG-1 Layer III
/// frames. Files shorter than the structure are cut short.
pub fn build_file(kind: Kind, size: usize) -> Vec<u8> {
    let mut bytes = match kind {
        Kind::Image => build_png(size),
        Kind::File => build_pdf(size),
        Kind::Voice => build_mp3(size),
    };
    bytes.resize(size, 0);
    bytes
}

fn build_png(size: usize) -> Vec<u8> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let mut out = Vec::with_capacity(size.max(64));
    out.extend_from_slice(SIGNATURE);
    // A 1×1 RGB image header.
    let ihdr = [0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0];
    push_chunk(&mut out, b"IHDR", &ihdr);
    let fixed = out.len() + 12 + 12; // the padding chunk's frame, IEND
    if size > fixed {
        let mut filler = vec![0; size - fixed];
        fill_pseudo_random(&mut filler);
        push_chunk(&mut out, b"beNc", &filler);
        push_chunk(&mut out, b"IEND", &[]);
    }
    out
}

fn push_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn build_pdf(size: usize) -> Vec<u8> {
    const HEADER: &[u8] = b"%PDF-1.4\n";
    const TRAILER: &[u8] = b"\n%%EOF\n";
    let mut out = Vec::with_capacity(size.max(64));
    out.extend_from_slice(HEADER);
    let line = b"% chatd-bench padding: abcdefghijklmnopqrstuvwxyz0123456789\n";
    while out.len() + line.len() + TRAILER.len() <= size {
        out.extend_from_slice(line);
    }
    if out.len() + TRAILER.len() <= size {
        out.resize(size - TRAILER.len(), b'%');
        out.extend_from_slice(TRAILER);
    }
    out
}

fn build_mp3(size: usize) -> Vec<u8> {
    // ID3v2.3 header with an empty tag (syncsafe size 0).
    const ID3: &[u8] = b"ID3\x03\x00\x00\x00\x00\x00\x00";
    // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no CRC, no padding: 417 bytes.
    const FRAME_HEADER: [u8; 4] = [0xFF, 0xFB, 0x90, 0x64];
    const FRAME_LEN: usize = 417;
    let mut out = Vec::with_capacity(size.max(64));
    out.extend_from_slice(ID3);
    while out.len() < size {
        let start = out.len();
        out.extend_from_slice(&FRAME_HEADER);
        out.resize(start + FRAME_LEN, 0);
    }
    out
}

fn fill_pseudo_random(bytes: &mut [u8]) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = state.to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// CRC-32 (IEEE 802.3), as PNG chunks need.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[n] = c;
            n += 1;
        }
        table
    };
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_the_asked_size_and_magic() {
        for size in [64, 100, 417, 1000, 65_536, 1_000_003] {
            let png = build_file(Kind::Image, size);
            assert_eq!(png.len(), size);
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"));
            let pdf = build_file(Kind::File, size);
            assert_eq!(pdf.len(), size);
            assert!(pdf.starts_with(b"%PDF-1.4\n"));
            assert!(pdf.ends_with(b"%%EOF\n"));
            let mp3 = build_file(Kind::Voice, size);
            assert_eq!(mp3.len(), size);
            assert!(mp3.starts_with(b"ID3\x03"));
            assert_eq!(&mp3[10..12], &[0xFF, 0xFB]);
        }
    }

    #[test]
    fn png_ends_with_iend() {
        let png = build_file(Kind::Image, 10_000);
        assert!(png.ends_with(b"\x00\x00\x00\x00IEND\xAE\x42\x60\x82"));
    }

    #[test]
    fn crc32_matches_the_known_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn upload_frame_is_valid_json_with_the_fields() {
        let base64 = STANDARD.encode(build_file(Kind::Voice, 100));
        let frame: Value = serde_json::from_str(&upload_frame(9, Kind::Voice, 100, "u-1", &base64)).expect("json");
        assert_eq!(frame["type"], "send_message");
        let data = &frame["data"];
        assert_eq!(data["room_id"], 9);
        assert_eq!(data["message_type"], "voice");
        assert_eq!(data["local_temp_id"], "u-1");
        let file = &data["files_data"][0];
        assert_eq!(file["file_name"], "bench.mp3");
        assert_eq!(file["file_size"], 100);
        assert_eq!(file["mime_type"], "audio/mpeg");
        assert_eq!(file["duration"], 1.5);
        assert_eq!(file["file_data"], base64.as_str());
        let pdf: Value = serde_json::from_str(&upload_frame(1, Kind::File, 64, "x", "AAAA")).expect("json");
        assert!(pdf["data"]["files_data"][0].get("duration").is_none());
    }
}
