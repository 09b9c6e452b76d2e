//! What every subcommand is handed (the target, the REST client, the run id,
//! the server's pid) and what it hands back (a Report), plus the readings of
//! the server process that every report shares.

use std::fmt::Display;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::client::{Api, Target};
use crate::procfs::{self, ProcessSnapshot, TICKS_PER_SECOND};
use crate::stats::round2;

/// The run's shared state, built once in `main`.
pub struct Bench {
    pub target: Target,
    pub api: Api,
    /// Makes this run's emails and temp ids unique.
    pub run_id: String,
    pub server_pid: Option<u32>,
    /// The machine's 1-minute load average when the run started: other
    /// work on the same cores makes every number here noisier.
    pub loadavg_at_start: Option<f64>,
}

impl Bench {
    /// The server's memory, CPU time and open files now, when its pid is known.
    pub fn server_snapshot(&self) -> Option<ProcessSnapshot> {
        self.server_pid.and_then(|pid| procfs::snapshot(pid).ok())
    }

    /// The fields every report starts with.
    pub fn header(&self, command: &str) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        map.insert("command".into(), json!(command));
        map.insert("run_id".into(), json!(self.run_id));
        map.insert("url".into(), json!(self.target.to_string()));
        map.insert("server_pid".into(), json!(self.server_pid));
        map.insert("loadavg_at_start".into(), json!(self.loadavg_at_start));
        map.insert("cores".into(), json!(std::thread::available_parallelism().map_or(0, |n| n.get())));
        map
    }
}

/// A subcommand's results: one JSON object, and the same for people.
pub struct Report {
    pub json: Value,
    pub text: String,
}

/// A progress line on stderr (stdout is for the report alone).
pub fn progress(message: impl Display) {
    eprintln!("chatd-bench: {message}");
}

/// CPU used by the server and by this tool over a span of wall time.
pub struct CpuMeter {
    started: Instant,
    server_ticks: Option<u64>,
    own_ticks: Option<u64>,
}

/// Percent of one core; 200 means both cores of this machine were busy.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub server_percent: Option<f64>,
    pub bench_percent: Option<f64>,
}

impl CpuMeter {
    pub fn start(server: Option<&ProcessSnapshot>) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            server_ticks: server.map(|s| s.cpu_ticks),
            own_ticks: procfs::own_cpu_ticks(),
        }
    }

    pub fn finish(&self, server: Option<&ProcessSnapshot>) -> CpuUse {
        let seconds = self.started.elapsed().as_secs_f64();
        let percent = |before: Option<u64>, after: Option<u64>| {
            let used = after?.checked_sub(before?)? as f64 / TICKS_PER_SECOND;
            (seconds > 0.0).then(|| round2(used / seconds * 100.0))
        };
        CpuUse {
            server_percent: percent(self.server_ticks, server.map(|s| s.cpu_ticks)),
            bench_percent: percent(self.own_ticks, procfs::own_cpu_ticks()),
        }
    }
}

impl CpuUse {
    pub fn human(&self) -> String {
        let show = |value: Option<f64>| value.map_or("?".to_string(), |v| format!("{v:.0}%"));
        format!("CPU: server {}, chatd-bench {} (100% = one core)", show(self.server_percent), show(self.bench_percent))
    }
}

/// A process reading as JSON (null when there is none).
pub fn snapshot_json(snapshot: Option<&ProcessSnapshot>) -> Value {
    snapshot.map_or(Value::Null, |s| {
        json!({
            "vm_rss_kb": s.memory.vm_rss_kb,
            "vm_hwm_kb": s.memory.vm_hwm_kb,
            "threads": s.memory.threads,
            "open_files": s.open_files,
        })
    })
}

/// KiB as a human size.
pub fn kb_human(kb: u64) -> String {
    if kb >= 1024 * 1024 {
        format!("{:.2} GiB", kb as f64 / (1024.0 * 1024.0))
    } else if kb >= 1024 {
        format!("{:.1} MiB", kb as f64 / 1024.0)
    } else {
        format!("{kb} KiB")
    }
}

/// "VmRSS a → b" for the human report, or a note that the pid is unknown.
pub fn rss_change_human(before: Option<&ProcessSnapshot>, after: Option<&ProcessSnapshot>) -> String {
    match (before, after) {
        (Some(before), Some(after)) => format!(
            "server VmRSS {} → {}, VmHWM {} → {}",
            kb_human(before.memory.vm_rss_kb),
            kb_human(after.memory.vm_rss_kb),
            kb_human(before.memory.vm_hwm_kb),
            kb_human(after.memory.vm_hwm_kb)
        ),
        _ => "server memory: unknown (no pid; pass --pid)".to_string(),
    }
}
