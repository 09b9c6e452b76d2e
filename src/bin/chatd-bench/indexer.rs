//! The server's search indexer seen from outside (it exposes nothing of its
//! own): its thread `chatd-indexer` in /proc for CPU time, and the index
//! files it alone writes (`search.sqlite3` and its `-wal`, found through
//! the server's open files) for activity. The indexer has caught up when
//! neither has moved for a while: it only works while events are
//! unapplied. Servers without search (before it existed) have no such
//! thread, and every reading is then None.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use crate::procfs::{self, TICKS_PER_SECOND};
use crate::stats::round2;

/// The indexer thread's name (`std::thread::Builder::name` in the server).
pub const THREAD_NAME: &str = "chatd-indexer";
/// The index file's name in the data directory.
pub const INDEX_FILE: &str = "search.sqlite3";
/// The database's file name in the data directory.
pub const DATABASE_FILE: &str = "chatd.sqlite3";

/// How long the indexer must stay still to count as caught up: ten times
/// its 100 ms gathering pause, so a step that is merely waiting for CPU at
/// nice 19 is not taken for the end.
pub const QUIET_FOR: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(50);

/// The indexer of one server process.
pub struct Indexer {
    pid: u32,
    tid: u32,
    index: PathBuf,
}

/// What can move while the indexer works.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Activity {
    ticks: Option<u64>,
    /// Modification times of the index file and its WAL.
    written: [Option<SystemTime>; 2],
}

/// How the indexer finished a burst.
#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    /// From the given end of the burst to the indexer's last activity
    /// (zero when it was still already).
    pub after_burst: Duration,
    /// Whether it went still before the deadline.
    pub settled: bool,
    /// The indexer's CPU time since the watch began.
    pub cpu: Option<Duration>,
}

impl Indexer {
    /// The indexer of `pid`; None when the server has no indexer thread.
    pub fn find(pid: Option<u32>) -> Option<Indexer> {
        let pid = pid?;
        let tid = procfs::find_thread(pid, THREAD_NAME)?;
        let index = procfs::find_open_file(pid, INDEX_FILE)?;
        Some(Indexer { pid, tid, index })
    }

    /// Starts watching: from now on, every `POLL` the thread's CPU time and
    /// the files' modification times are read, and the last change kept.
    pub fn watch(&self) -> Watch {
        let (pid, tid, index) = (self.pid, self.tid, self.index.clone());
        let read = move || activity(pid, tid, &index);
        let ticks_at_start = procfs::thread_cpu_ticks(pid, tid);
        let state = Arc::new(Mutex::new(Stillness::new(read(), Instant::now())));
        let task = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                loop {
                    sleep(POLL).await;
                    let reading = read();
                    if let Ok(mut state) = state.lock() {
                        state.observe(reading, Instant::now());
                    }
                }
            })
        };
        Watch { pid, tid, state, task, ticks_at_start }
    }
}

fn activity(pid: u32, tid: u32, index: &Path) -> Activity {
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    Activity {
        ticks: procfs::thread_cpu_ticks(pid, tid),
        written: [modified(index), modified(&with_suffix(index, "-wal"))],
    }
}

/// The indexer watched since `Indexer::watch`; stops when dropped.
pub struct Watch {
    pid: u32,
    tid: u32,
    state: Arc<Mutex<Stillness<Activity>>>,
    task: JoinHandle<()>,
    ticks_at_start: Option<u64>,
}

impl Watch {
    /// The indexer's CPU time since the watch began.
    pub fn cpu_so_far(&self) -> Option<Duration> {
        let now = procfs::thread_cpu_ticks(self.pid, self.tid)?;
        Some(ticks_to_duration(now.checked_sub(self.ticks_at_start?)?))
    }

    /// Waits until the indexer has been still for `QUIET_FOR` (at most
    /// until `deadline`); `burst_end` is when the last message was
    /// committed.
    pub async fn caught_up(&self, burst_end: Instant, deadline: Instant) -> CatchUp {
        loop {
            let (still_for, last_change) = self.reading();
            let now = Instant::now();
            if still_for >= QUIET_FOR || now >= deadline {
                return CatchUp {
                    after_burst: last_change.saturating_duration_since(burst_end),
                    settled: still_for >= QUIET_FOR,
                    cpu: self.cpu_so_far(),
                };
            }
            sleep(POLL).await;
        }
    }

    fn reading(&self) -> (Duration, Instant) {
        let now = Instant::now();
        match self.state.lock() {
            Ok(state) => (state.still_for(now), state.last_change()),
            Err(_) => (Duration::ZERO, now),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CatchUp {
    pub fn json(&self) -> Value {
        json!({
            "catch_up_s": round2(self.after_burst.as_secs_f64()),
            "settled": self.settled,
            "indexer_cpu_s": self.cpu.map(|cpu| round2(cpu.as_secs_f64())),
        })
    }

    pub fn human(&self) -> String {
        let cpu = self.cpu.map_or("?".to_string(), |cpu| format!("{:.2} s", cpu.as_secs_f64()));
        if self.settled {
            format!("indexer caught up {:.2} s after the burst (indexer CPU {cpu})", self.after_burst.as_secs_f64())
        } else {
            format!(
                "indexer still busy {:.1} s after the burst, gave up waiting (indexer CPU {cpu})",
                self.after_burst.as_secs_f64()
            )
        }
    }
}

/// `path` with `suffix` appended to its file name (`x.sqlite3` → `x.sqlite3-wal`).
pub fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND)
}

/// Tracks when a reading last changed.
struct Stillness<T> {
    last: T,
    changed_at: Instant,
}

impl<T: PartialEq> Stillness<T> {
    fn new(first: T, at: Instant) -> Stillness<T> {
        Stillness { last: first, changed_at: at }
    }

    fn observe(&mut self, reading: T, at: Instant) {
        if reading != self.last {
            self.last = reading;
            self.changed_at = at;
        }
    }

    fn still_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.changed_at)
    }

    fn last_change(&self) -> Instant {
        self.changed_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stillness_counts_from_the_last_change() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut watch = Stillness::new(1, at(0));
        watch.observe(1, at(100));
        assert_eq!(watch.still_for(at(100)), Duration::from_millis(100));
        watch.observe(2, at(200));
        watch.observe(2, at(900));
        assert_eq!(watch.last_change(), at(200));
        assert_eq!(watch.still_for(at(900)), Duration::from_millis(700));
        watch.observe(3, at(1000));
        assert_eq!(watch.still_for(at(1000)), Duration::ZERO);
    }

    #[test]
    fn a_wal_sits_beside_its_database() {
        assert_eq!(
            with_suffix(std::path::Path::new("/d/search.sqlite3"), "-wal"),
            PathBuf::from("/d/search.sqlite3-wal")
        );
    }

    #[test]
    fn catch_up_before_the_burst_end_is_zero() {
        let burst_end = Instant::now();
        let watch = Stillness::new(0, burst_end - Duration::from_secs(1));
        assert_eq!(watch.last_change().saturating_duration_since(burst_end), Duration::ZERO);
    }
}
