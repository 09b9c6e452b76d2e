//! The two senders of `floor`, and the accepting of the client's
//! connections they share. Each measures this process's CPU from its first
//! round to its last write and closes the sockets after that reading.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast::{self, error::RecvError};

use super::{ClientProcess, Plan, SETTLE, SendOutcome, own_cpu_times};
use crate::error::{BenchError, Context, Result, describe};

/// How long one blocking write may wait for room in its socket before the
/// run fails (the client has stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds a tokio writer may fall behind before it has missed one.
const ROUND_BACKLOG: usize = 64;

/// Accepts `count` connections before `deadline`, failing early when the
/// client ends first. The sockets come back blocking.
pub fn accept_all(
    listener: &TcpListener,
    count: usize,
    client: &mut ClientProcess,
    deadline: Instant,
) -> Result<Vec<TcpStream>> {
    listener.set_nonblocking(true).context("making the listener non-blocking")?;
    let mut streams = Vec::with_capacity(count);
    while streams.len() < count {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).context("making an accepted socket blocking")?;
                streams.push(stream);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if let Some(status) = client.exited()? {
                    return Err(BenchError::new(format!(
                        "the floor client ended ({status}) after {} of {count} connections: its error is above",
                        streams.len()
                    )));
                }
                if Instant::now() >= deadline {
                    return Err(BenchError::new(format!(
                        "only {} of {count} connections arrived within {} s",
                        streams.len(),
                        super::SETUP_TIMEOUT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(BenchError::new(format!("accepting the floor client's connections: {error}"))),
        }
    }
    Ok(streams)
}

/// `bare`: this thread writes the frame to every socket in turn, one
/// blocking write per socket per round.
pub fn bare(mut streams: Vec<TcpStream>, frame: &[u8], plan: &Plan) -> Result<SendOutcome> {
    for stream in &streams {
        stream.set_nodelay(plan.nodelay).context("setting TCP_NODELAY")?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT)).context("setting a write timeout")?;
    }
    std::thread::sleep(SETTLE);
    let before = own_cpu_times()?;
    let started = Instant::now();
    let give_up = started + plan.limit;
    let mut late_rounds = 0;
    let mut max_round = Duration::ZERO;
    for round in 0..plan.rounds {
        let due = started + plan.period * round;
        let now = Instant::now();
        if now >= give_up {
            return Err(BenchError::new(format!(
                "round {round} of {} is due but {} s have gone by: the writes are far behind",
                plan.rounds,
                plan.limit.as_secs()
            )));
        }
        if now < due {
            std::thread::sleep(due - now);
        }
        let round_started = Instant::now();
        for (index, stream) in streams.iter_mut().enumerate() {
            // The error is worded only on failure: no formatting per copy.
            if let Err(error) = stream.write_all(frame) {
                return Err(BenchError::new(format!("writing round {round} to connection {index}: {error}")));
            }
        }
        let done = Instant::now();
        max_round = max_round.max(done.saturating_duration_since(round_started));
        if done > due + plan.period {
            late_rounds += 1;
        }
    }
    let after = own_cpu_times()?;
    let send_time = started.elapsed();
    drop(streams);
    Ok(SendOutcome { cpu: after.since(before), late_rounds, max_round, send_time })
}

/// A round as the tokio writers hear of it.
#[derive(Debug, Clone, Copy)]
struct Round {
    index: u32,
    started: Instant,
    next_due: Instant,
}

/// What one tokio writer did; it hands its socket back so that closing is
/// not measured.
struct WriterOutcome {
    stream: tokio::net::TcpStream,
    max_round: Duration,
    late: Vec<u32>,
    error: Option<String>,
}

/// `tokio`: a runtime of 2 workers, one task per socket; this thread paces
/// the rounds and wakes the tasks with a broadcast.
pub fn tokio(streams: Vec<TcpStream>, frame: Vec<u8>, plan: &Plan) -> Result<SendOutcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("floor-worker")
        .enable_all()
        .build()
        .context("starting the floor's tokio runtime")?;
    // Tasks still running when this returns (after a failure) are dropped with the runtime.
    runtime.block_on(tokio_rounds(streams, frame.into(), plan))
}

async fn tokio_rounds(streams: Vec<TcpStream>, frame: Arc<[u8]>, plan: &Plan) -> Result<SendOutcome> {
    let (rounds, _) = broadcast::channel::<Round>(ROUND_BACKLOG);
    let mut tasks = Vec::with_capacity(streams.len());
    for stream in streams {
        stream.set_nodelay(plan.nodelay).context("setting TCP_NODELAY")?;
        stream.set_nonblocking(true).context("making a socket non-blocking")?;
        let stream = tokio::net::TcpStream::from_std(stream).context("handing a socket to tokio")?;
        tasks.push(tokio::spawn(write_rounds(stream, rounds.subscribe(), Arc::clone(&frame), plan.rounds)));
    }
    tokio::time::sleep(SETTLE).await;
    let before = own_cpu_times()?;
    let started = Instant::now();
    for index in 0..plan.rounds {
        let due = started + plan.period * index;
        tokio::time::sleep_until(due.into()).await;
        let round = Round { index, started: Instant::now(), next_due: due + plan.period };
        // Err only when no writer is left (each has failed); their errors are read below.
        let _ = rounds.send(round);
    }
    drop(rounds);
    let give_up = started + plan.limit;
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        match tokio::time::timeout_at(give_up.into(), task).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(error)) => return Err(BenchError::new(format!("a writer task failed: {error}"))),
            Err(_) => {
                return Err(BenchError::new(format!(
                    "the writes did not end within {} s of the first round",
                    plan.limit.as_secs()
                )));
            }
        }
    }
    let after = own_cpu_times()?;
    let send_time = started.elapsed();
    if let Some((index, error)) = outcomes.iter().enumerate().find_map(|(i, o)| Some((i, o.error.as_ref()?))) {
        return Err(BenchError::new(format!("connection {index}: {error}")));
    }
    let late: BTreeSet<u32> = outcomes.iter().flat_map(|outcome| outcome.late.iter().copied()).collect();
    let max_round = outcomes.iter().map(|outcome| outcome.max_round).max().unwrap_or(Duration::ZERO);
    let streams: Vec<tokio::net::TcpStream> = outcomes.into_iter().map(|outcome| outcome.stream).collect();
    drop(streams);
    Ok(SendOutcome { cpu: after.since(before), late_rounds: late.len() as u32, max_round, send_time })
}

/// Writes the frame once per round heard of; stops at the first failure.
async fn write_rounds(
    mut stream: tokio::net::TcpStream,
    mut rounds: broadcast::Receiver<Round>,
    frame: Arc<[u8]>,
    count: u32,
) -> WriterOutcome {
    let mut max_round = Duration::ZERO;
    let mut late = Vec::new();
    let mut error = None;
    for expected in 0..count {
        let round = match rounds.recv().await {
            Ok(round) if round.index == expected => round,
            Ok(round) => {
                error = Some(format!("heard of round {} when round {expected} was next", round.index));
                break;
            }
            Err(RecvError::Lagged(missed)) => {
                error = Some(format!("fell {missed} rounds behind at round {expected}"));
                break;
            }
            Err(RecvError::Closed) => {
                error = Some(format!("the rounds ended before round {expected}"));
                break;
            }
        };
        if let Err(failure) = stream.write_all(&frame).await {
            error = Some(format!("writing round {expected}: {}", describe(&failure)));
            break;
        }
        let done = Instant::now();
        max_round = max_round.max(done.saturating_duration_since(round.started));
        if done > round.next_due {
            late.push(round.index);
        }
    }
    WriterOutcome { stream, max_round, late, error }
}
