//! `floor`: the kernel's cost of a server delivering one small WebSocket
//! frame per socket over 127.0.0.1, with no chat server involved. This
//! process accepts N loopback connections from a reading client and writes
//! one ready-made frame to each of them per round, at a fixed rate; the CPU
//! it spends over the rounds, divided by the copies written, is the floor
//! that `group`'s "server CPU per copy" is compared against.
//!
//! The reading client is a separate process (this executable again, run as
//! the hidden `floor-client` command, see `floor/reader.rs`), so that its
//! reads do not count as the sender's CPU; it checks that every connection
//! got exactly rounds × size bytes, frame after frame, and reports its own
//! CPU on one line of stdout.
//!
//! What is measured: the CPU of this whole process (`getrusage(RUSAGE_SELF)`,
//! user and system apart) from the first round to the last write. `main`
//! runs `floor` without its tokio runtime, so nothing else in the process
//! works meanwhile: in `bare` mode the only other thread is one blocked
//! reading the client's stdout; in `tokio` mode the 2 workers of the
//! runtime built here do the writes and the main thread paces the rounds.
//! The sockets are closed after the reading, so closing is not counted.
//!
//! Modes:
//! - `bare`: one plain OS thread writes the frame to each socket in turn
//!   with a blocking `write` per socket per round; rounds start on a fixed
//!   schedule from the first one (a late round does not move the next).
//! - `tokio`: a tokio multi-thread runtime of 2 workers, one task per
//!   socket, woken for each round by a `tokio::sync::broadcast` message,
//!   doing `write_all`.

mod reader;
mod send;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::value_parser;
use serde_json::{Value, json};

use crate::context::{Report, progress};
use crate::error::{BenchError, Context, Result};
use crate::procfs;
use crate::stats::round2;
pub use reader::{FloorClientArgs, run as run_client};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One OS thread, a blocking write() per socket per round.
    Bare,
    /// A 2-worker tokio runtime, one task per socket woken by a broadcast, write_all.
    Tokio,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::Tokio => "tokio",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// Loopback connections, each sent one frame per round.
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// Rounds: one frame to every connection each.
    #[arg(long, default_value_t = 200, value_parser = value_parser!(u32).range(1..=1_000_000))]
    pub rounds: u32,
    /// Rounds per second.
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u32).range(1..=10_000))]
    pub rate: u32,
    /// How the frames are written.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Bytes of each frame, header included (330 is a typical chatd message frame).
    #[arg(long, default_value_t = 330, value_parser = value_parser!(u32).range(2..=65_539))]
    pub size: u32,
    /// Leave TCP_NODELAY off on the sending sockets (Nagle's algorithm on).
    #[arg(long)]
    pub no_nodelay: bool,
}

/// From starting the client to its last connection accepted.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// A pause between the last connection and the first round, for the client
/// to start its readers.
const SETTLE: Duration = Duration::from_millis(500);
/// How late the last write may end after the last round was due.
const SEND_GRACE: Duration = Duration::from_secs(60);
/// Open files beyond one per connection (listener, pipes, the executable).
const SPARE_FILES: u64 = 64;

/// What a sender measured over its rounds.
pub struct SendOutcome {
    pub cpu: CpuTimes,
    /// Rounds whose last write ended after the next round was due.
    pub late_rounds: u32,
    /// The longest time from a round's start to its last write.
    pub max_round: Duration,
    /// From the first round to the last write.
    pub send_time: Duration,
}

/// What both senders are told.
pub struct Plan {
    pub rounds: u32,
    pub period: Duration,
    pub nodelay: bool,
    /// How long after the first round the last write may end.
    pub limit: Duration,
}

pub fn run(args: &FloorArgs) -> Result<Report> {
    let loadavg_at_start = procfs::read_loadavg();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(load) = loadavg_at_start
        && load > cores as f64
    {
        progress(format!(
            "warning: this machine is busy (load average {load:.1} on {cores} cores): the numbers will be noisy"
        ));
    }
    let connections = args.connections as usize;
    let open_file_limit = ensure_open_files(u64::from(args.connections) + SPARE_FILES)?;
    let frame = text_frame(args.size as usize)?;
    let period = Duration::from_secs(1) / args.rate;
    let send_span = period * args.rounds;
    let plan = Plan { rounds: args.rounds, period, nodelay: !args.no_nodelay, limit: send_span + SEND_GRACE };

    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).context("binding 127.0.0.1:0")?;
    let port = listener.local_addr().context("reading the listener's port")?.port();
    let client_timeout = SETUP_TIMEOUT + SETTLE + plan.limit + Duration::from_secs(10);
    progress(format!(
        "floor: {} mode, {connections} connections × {} rounds of {} bytes at {}/s (about {:.0} s)",
        args.mode.name(),
        args.rounds,
        args.size,
        args.rate,
        send_span.as_secs_f64()
    ));
    let spawned_at = Instant::now();
    let mut client = ClientProcess::spawn(port, args, client_timeout)?;
    let streams = send::accept_all(&listener, connections, &mut client, spawned_at + SETUP_TIMEOUT)?;
    drop(listener);
    progress(format!("floor: {connections} connections accepted; sending"));
    let sent = match args.mode {
        Mode::Bare => send::bare(streams, &frame, &plan),
        Mode::Tokio => send::tokio(streams, frame, &plan),
    };
    let outcome = match sent {
        Ok(outcome) => outcome,
        // A write fails when the reader has gone: say so.
        Err(error) => {
            return Err(match client.exited() {
                Ok(Some(status)) => BenchError::new(format!("{error}: the floor client had ended ({status})")),
                _ => error,
            });
        }
    };
    progress("floor: sent; waiting for the client's count");
    let line = client.finish(spawned_at + client_timeout + Duration::from_secs(5))?;
    let client_cpu = parse_client_line(&line)?;
    Ok(report(args, &outcome, client_cpu, loadavg_at_start, open_file_limit))
}

fn report(
    args: &FloorArgs,
    outcome: &SendOutcome,
    client_cpu: CpuTimes,
    loadavg_at_start: Option<f64>,
    open_file_limit: Option<u64>,
) -> Report {
    let copies = u64::from(args.connections) * u64::from(args.rounds);
    let per_copy = |time: Duration| round2(time.as_secs_f64() * 1e6 / copies as f64);
    let server = per_copy(outcome.cpu.total());
    let server_user = per_copy(outcome.cpu.user);
    let server_sys = per_copy(outcome.cpu.sys);
    let client = per_copy(client_cpu.total());
    let max_round_ms = round2(outcome.max_round.as_secs_f64() * 1e3);
    let nodelay = !args.no_nodelay;
    let description = format!(
        "CPU that one process spends writing one {}-byte WebSocket text frame to each of {} loopback sockets per \
         round ({} mode, TCP_NODELAY {}), with no chat server: the kernel's cost of a delivered copy, to set \
         beside group's server CPU per copy; measured with {CPU_SOURCE} over the rounds, divided by the copies",
        args.size,
        args.connections,
        args.mode.name(),
        if nodelay { "on" } else { "off" }
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let json = json!({
        "command": "floor",
        "loadavg_at_start": loadavg_at_start,
        "cores": cores,
        "mode": args.mode.name(),
        "connections": args.connections,
        "rounds": args.rounds,
        "rate": args.rate,
        "size": args.size,
        "nodelay": nodelay,
        "copies": copies,
        "send_s": round2(outcome.send_time.as_secs_f64()),
        "server_cpu_us_per_copy": server,
        "server_user_us_per_copy": server_user,
        "server_sys_us_per_copy": server_sys,
        "client_cpu_us_per_copy": client,
        "client_user_us_per_copy": per_copy(client_cpu.user),
        "client_sys_us_per_copy": per_copy(client_cpu.sys),
        "late_rounds": outcome.late_rounds,
        "max_round_ms": max_round_ms,
        "open_file_limit": open_file_limit,
        "cpu_source": CPU_SOURCE,
        "description": description,
    });
    let mut text = format!(
        "floor: {} mode, {} connections × {} rounds of one {}-byte frame at {}/s, TCP_NODELAY {}\n",
        args.mode.name(),
        args.connections,
        args.rounds,
        args.size,
        args.rate,
        if nodelay { "on" } else { "off" }
    );
    text.push_str(&format!(
        "  copies: {copies} written and read back whole in {:.1} s; {} late rounds, slowest round {max_round_ms:.2} ms\n",
        outcome.send_time.as_secs_f64(),
        outcome.late_rounds
    ));
    text.push_str(&format!(
        "  sender (this process): {server:.2} µs CPU per copy (user {server_user:.2}, system {server_sys:.2})\n"
    ));
    text.push_str(&format!("  reader (the client process): {client:.2} µs CPU per copy\n"));
    text.push_str(&format!(
        "  load average at start: {} on {cores} cores\n",
        loadavg_at_start.map_or("unknown".to_string(), |load| format!("{load:.2}"))
    ));
    text.push_str(&format!("  {description}"));
    Report { json, text }
}

/// User and system CPU time of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: Duration,
    pub sys: Duration,
}

impl CpuTimes {
    pub fn total(self) -> Duration {
        self.user + self.sys
    }

    /// The time used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes { user: self.user.saturating_sub(earlier.user), sys: self.sys.saturating_sub(earlier.sys) }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const CPU_SOURCE: &str = "getrusage(RUSAGE_SELF)";

/// This process's CPU time so far (microsecond resolution).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn own_cpu_times() -> Result<CpuTimes> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: the pointer is to a struct rusage this function owns; getrusage
    // writes that one struct and keeps no reference to it.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if status != 0 {
        return Err(BenchError::new(format!("getrusage: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: a zeroed struct rusage (plain integers) is valid, and getrusage filled it.
    let usage = unsafe { usage.assume_init() };
    let time = |value: libc::timeval| {
        Duration::from_secs(u64::try_from(value.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(value.tv_usec).unwrap_or(0))
    };
    Ok(CpuTimes { user: time(usage.ru_utime), sys: time(usage.ru_stime) })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const CPU_SOURCE: &str = "/proc/self/stat (10 ms ticks)";

/// This process's CPU time so far, in clock ticks (the crate binds libc on
/// glibc targets only).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn own_cpu_times() -> Result<CpuTimes> {
    let (user, sys) = procfs::own_cpu_times().ok_or_else(|| BenchError::new("cannot read /proc/self/stat"))?;
    let time = |ticks: u64| Duration::from_secs_f64(ticks as f64 / procfs::TICKS_PER_SECOND);
    Ok(CpuTimes { user: time(user), sys: time(sys) })
}

/// One server-to-client WebSocket text frame of exactly `size` bytes: FIN
/// and opcode 1, no mask, the shortest length field (7 bits for up to 125
/// bytes of payload, 16 bits beyond), a JSON payload.
pub fn text_frame(size: usize) -> Result<Vec<u8>> {
    let (header, payload) = match size {
        2..=127 => (2, size - 2),
        130..=65_539 => (4, size - 4),
        _ => {
            return Err(BenchError::new(format!(
                "--size {size}: no text frame is {size} bytes long (a frame of 2 to 127 bytes has a 2-byte header, \
                 one of 130 to 65539 a 4-byte one)"
            )));
        }
    };
    let mut frame = Vec::with_capacity(size);
    frame.push(0x81);
    if header == 2 {
        frame.push(payload as u8);
    } else {
        frame.push(126);
        frame.extend_from_slice(&(payload as u16).to_be_bytes());
    }
    let (open, close): (&[u8], &[u8]) = if payload >= 12 { (br#"{"text":""#, br#""}"#) } else { (b"", b"") };
    frame.extend_from_slice(open);
    while frame.len() < size - close.len() {
        frame.push(b'a' + (frame.len() % 26) as u8);
    }
    frame.extend_from_slice(close);
    Ok(frame)
}

/// Raises the soft open-file limit to the hard one (the client, started
/// after, inherits it) and answers the soft limit in force (None:
/// unlimited), or an error naming `ulimit -n` when it stays below `needed`.
fn ensure_open_files(needed: u64) -> Result<Option<u64>> {
    let shown = |n: u64| if n == u64::MAX { "unlimited".to_string() } else { n.to_string() };
    let raise = procfs::raise_own_nofile_limit();
    if let Some(note) = &raise.note {
        progress(format!("floor: cannot raise the open-file limit: {note}"));
    }
    match raise.after {
        Some(limit) if limit.soft < needed => Err(BenchError::new(format!(
            "floor needs {needed} open files (--connections plus {SPARE_FILES}) but the limit is {} (hard limit {}): \
             run `ulimit -n {needed}` first, or use fewer connections",
            limit.soft,
            shown(limit.hard)
        ))),
        Some(limit) => Ok(Some(limit.soft).filter(|&soft| soft != u64::MAX)),
        None => Err(BenchError::new("floor: cannot read this process's open-file limit from /proc/self/limits")),
    }
}

/// The reading client: this executable run as `floor-client`, its stdout
/// read on a thread of its own; killed when dropped before it ends.
pub struct ClientProcess {
    child: Child,
    stdout: mpsc::Receiver<std::io::Result<String>>,
}

impl ClientProcess {
    fn spawn(port: u16, args: &FloorArgs, timeout: Duration) -> Result<ClientProcess> {
        let exe = std::env::current_exe().context("finding this executable to start the floor client")?;
        let mut child = Command::new(&exe)
            .arg("floor-client")
            .args(["--port", &port.to_string()])
            .args(["--connections", &args.connections.to_string()])
            .args(["--rounds", &args.rounds.to_string()])
            .args(["--size", &args.size.to_string()])
            .args(["--timeout-s", &timeout.as_secs().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context(format!("starting {} floor-client", exe.display()))?;
        let stdout = child.stdout.take();
        let (sender, receiver) = mpsc::channel();
        let client = ClientProcess { child, stdout: receiver };
        let mut stdout = stdout.ok_or_else(|| BenchError::new("the floor client has no stdout pipe"))?;
        std::thread::Builder::new()
            .name("floor-client-out".to_string())
            .spawn(move || {
                let mut text = String::new();
                // Err only when the receiver is gone: the run has failed already.
                let _ = sender.send(stdout.read_to_string(&mut text).map(|_| text));
            })
            .context("starting the thread that reads the floor client")?;
        Ok(client)
    }

    /// The client's exit status, once it has ended.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().context("checking on the floor client")
    }

    /// Waits until `deadline` for the client to end; answers its last line.
    fn finish(mut self, deadline: Instant) -> Result<String> {
        let status = loop {
            if let Some(status) = self.exited()? {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(BenchError::new("the floor client did not end in time after the last round"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            return Err(BenchError::new(format!(
                "the floor client failed ({status}): its error is above; the copies were not all read back whole"
            )));
        }
        let text = match self.stdout.recv_timeout(Duration::from_secs(5)) {
            Ok(read) => read.context("reading the floor client's output")?,
            Err(_) => return Err(BenchError::new("the floor client's output did not arrive")),
        };
        text.lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| BenchError::new("the floor client printed nothing"))
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Errors here mean it has ended already.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The client's CPU from its line, `{"user_us": …, "sys_us": …, …}`.
fn parse_client_line(line: &str) -> Result<CpuTimes> {
    let value: Value = serde_json::from_str(line)
        .map_err(|error| BenchError::new(format!("the floor client's line is not JSON ({error}): {line}")))?;
    let micros = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_f64)
            .filter(|us| us.is_finite() && *us >= 0.0)
            .map(|us| Duration::from_secs_f64(us / 1e6))
            .ok_or_else(|| BenchError::new(format!("the floor client's line has no {key}: {line}")))
    };
    Ok(CpuTimes { user: micros("user_us")?, sys: micros("sys_us")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_asked_size_and_the_shortest_header() {
        let typical = text_frame(330).expect("330 bytes");
        assert_eq!(typical.len(), 330);
        assert_eq!(&typical[..4], &[0x81, 126, 0x01, 0x46]);
        assert!(serde_json::from_slice::<Value>(&typical[4..]).is_ok());
        let small = text_frame(100).expect("100 bytes");
        assert_eq!(small.len(), 100);
        assert_eq!(&small[..2], &[0x81, 98]);
        assert_eq!(text_frame(2).expect("empty payload"), vec![0x81, 0]);
        assert_eq!(text_frame(127).expect("127").len(), 127);
        assert_eq!(text_frame(130).expect("130")[..4], [0x81, 126, 0, 126]);
        assert!(text_frame(128).is_err());
        assert!(text_frame(129).is_err());
        assert_eq!(text_frame(65_539).expect("largest").len(), 65_539);
    }

    #[test]
    fn client_line_gives_its_cpu() {
        let cpu = parse_client_line(r#"{"connections":2,"bytes":660,"user_us":1500.0,"sys_us":250}"#).expect("line");
        assert_eq!(cpu, CpuTimes { user: Duration::from_micros(1500), sys: Duration::from_micros(250) });
        assert!(parse_client_line("CLIENT bytes=1").is_err());
        assert!(parse_client_line(r#"{"user_us":1}"#).is_err());
    }

    #[test]
    fn own_cpu_times_grow() {
        let before = own_cpu_times().expect("own CPU");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = own_cpu_times().expect("own CPU");
        assert!(after.total() >= before.total());
    }
}
