//! `floor-client` (hidden): the reading side of `floor`, a process of its
//! own. It opens N connections to the given loopback port, reads every one
//! to its end on a single-threaded tokio runtime, checks that each got
//! exactly rounds × size bytes, every frame whole and in place, and prints
//! one JSON line with its own CPU over the reading:
//! `{"connections":…,"bytes":…,"user_us":…,"sys_us":…}`. Any mismatch is
//! an error (a non-zero exit), which `floor` reports.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::value_parser;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::{own_cpu_times, text_frame};
use crate::error::{BenchError, Context, Result, describe};

#[derive(Debug, Clone, clap::Args)]
pub struct FloorClientArgs {
    /// The port on 127.0.0.1 that `floor` listens on.
    #[arg(long, value_parser = value_parser!(u16).range(1..))]
    pub port: u16,
    #[arg(long, value_parser = value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    #[arg(long, value_parser = value_parser!(u32).range(1..=1_000_000))]
    pub rounds: u32,
    #[arg(long, value_parser = value_parser!(u32).range(2..=65_539))]
    pub size: u32,
    /// Seconds from start by which every connection must have ended.
    #[arg(long, value_parser = value_parser!(u64).range(1..=86_400))]
    pub timeout_s: u64,
}

/// Bytes asked of the socket per read.
const READ_BUFFER: usize = 8192;

pub fn run(args: &FloorClientArgs) -> Result<Value> {
    let frame: Arc<[u8]> = text_frame(args.size as usize)?.into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the floor client's tokio runtime")?;
    runtime.block_on(read_all(args, frame)).map_err(|error| BenchError::new(format!("floor client: {error}")))
}

async fn read_all(args: &FloorClientArgs, frame: Arc<[u8]>) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let count = args.connections as usize;
    let mut streams = Vec::with_capacity(count);
    for number in 1..=count {
        let stream = timeout_at(deadline, TcpStream::connect(address))
            .await
            .map_err(|_| BenchError::new(format!("connection {number} of {count} to {address} timed out")))?
            .context(format!("connecting to {address} ({number} of {count})"))?;
        streams.push(stream);
    }
    let wanted = u64::from(args.rounds) * frame.len() as u64;
    let before = own_cpu_times()?;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(timeout_at(deadline, read_connection(stream, Arc::clone(&frame)))))
        .collect();
    let mut bytes = 0;
    let mut wrong = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        let reading = task.await.map_err(|error| BenchError::new(format!("a reading task failed: {error}")))?;
        match reading {
            Err(_) => wrong.push(format!("connection {index} had not ended after {} s", args.timeout_s)),
            Ok(Err(error)) => wrong.push(format!("connection {index}: {}", describe(&error))),
            Ok(Ok(read)) => {
                bytes += read.bytes;
                if let Some(at) = read.first_wrong_byte {
                    wrong.push(format!("connection {index}: byte {at} is not the frame's"));
                } else if read.bytes != wanted {
                    wrong.push(format!("connection {index} got {} bytes", read.bytes));
                }
            }
        }
    }
    let used = own_cpu_times()?.since(before);
    if !wrong.is_empty() {
        return Err(BenchError::new(format!(
            "{} of {count} connections did not get exactly {} frames of {} bytes ({wanted} bytes): {}",
            wrong.len(),
            args.rounds,
            frame.len(),
            wrong.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        )));
    }
    Ok(json!({
        "connections": count,
        "bytes": bytes,
        "user_us": used.user.as_secs_f64() * 1e6,
        "sys_us": used.sys.as_secs_f64() * 1e6,
    }))
}

struct Read {
    bytes: u64,
    /// Where the stream first differed from back-to-back copies of the frame.
    first_wrong_byte: Option<u64>,
}

/// Reads a connection to its end, comparing it with the frame repeated.
async fn read_connection(mut stream: TcpStream, frame: Arc<[u8]>) -> std::io::Result<Read> {
    let mut buffer = vec![0; READ_BUFFER];
    let mut read = Read { bytes: 0, first_wrong_byte: None };
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Ok(read);
        }
        if read.first_wrong_byte.is_none() {
            read.first_wrong_byte = first_mismatch(&frame, read.bytes, &buffer[..n]).map(|at| read.bytes + at as u64);
        }
        read.bytes += n as u64;
    }
}

/// The index in `chunk` of the first byte that differs from the frame
/// repeated, `chunk` starting `offset` bytes into the stream.
fn first_mismatch(frame: &[u8], offset: u64, chunk: &[u8]) -> Option<usize> {
    let mut position = (offset % frame.len() as u64) as usize;
    let mut checked = 0;
    while checked < chunk.len() {
        let length = (frame.len() - position).min(chunk.len() - checked);
        let (expected, got) = (&frame[position..position + length], &chunk[checked..checked + length]);
        if expected != got {
            return expected.iter().zip(got).position(|(a, b)| a != b).map(|at| checked + at);
        }
        checked += length;
        position = 0;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_frames_match_across_chunk_boundaries() {
        let frame = b"ABCDE";
        let stream = b"ABCDEABCDEABCDE";
        for cut in 0..=stream.len() {
            assert_eq!(first_mismatch(frame, 0, &stream[..cut]), None);
            assert_eq!(first_mismatch(frame, cut as u64, &stream[cut..]), None);
        }
    }

    #[test]
    fn a_shifted_or_changed_byte_is_found() {
        let frame = b"ABCDE";
        assert_eq!(first_mismatch(frame, 0, b"ABCDEABXDE"), Some(7));
        assert_eq!(first_mismatch(frame, 3, b"DEABCDEAB"), None);
        assert_eq!(first_mismatch(frame, 3, b"DEBCDE"), Some(2));
        // A frame cut short and followed by the next one.
        assert_eq!(first_mismatch(frame, 0, b"ABCABCDE"), Some(3));
    }
}
