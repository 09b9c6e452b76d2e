//! Gives freed heap memory back to the system after many WebSocket
//! connections closed. glibc's allocator keeps what a connection freed in its
//! arenas (only the top of an arena is ever returned by itself), so 10,000
//! closed connections would leave the process ~140 MB larger for good;
//! `malloc_trim` hands the free pages back. It runs at most once a second,
//! on a blocking thread, and only after connections closed: never on a
//! request's or a message's path.

use std::time::Duration;

use tokio_util::task::TaskTracker;

/// How often the watcher looks at the number of open WebSockets; also the
/// shortest time between two trims.
pub const TRIM_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Closed connections (net of new ones) since the last trim that make the
/// next one worth it: at ~8 KiB each, about 2 MiB of free memory.
pub const TRIM_AFTER_CLOSED: usize = 256;

/// Decides when to trim from a series of open-connection counts: once the
/// count fell `after_closed` below its highest since the last trim.
/// Connections that close while others open (churn) reuse the freed memory
/// and never trigger it.
#[derive(Debug)]
pub struct TrimPolicy {
    after_closed: usize,
    highest: usize,
}

impl TrimPolicy {
    pub fn new(after_closed: usize) -> TrimPolicy {
        TrimPolicy { after_closed, highest: 0 }
    }

    /// Takes the current count; true when memory should be trimmed now.
    pub fn observe(&mut self, open: usize) -> bool {
        self.highest = self.highest.max(open);
        if self.highest - open >= self.after_closed {
            self.highest = open;
            true
        } else {
            false
        }
    }
}

/// Watches the WebSocket task count and trims the allocator's free memory
/// after enough connections closed. Runs until the runtime stops.
pub fn spawn_trimmer(ws_tasks: TaskTracker) {
    if !trim_supported() {
        return;
    }
    tokio::spawn(async move {
        let mut policy = TrimPolicy::new(TRIM_AFTER_CLOSED);
        let mut tick = tokio::time::interval(TRIM_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if policy.observe(ws_tasks.len()) {
                // Awaited, so trims never overlap and stay a second apart.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    });
}

/// Whether this build can give free heap memory back (glibc only).
pub fn trim_supported() -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
}

/// Returns the allocator's free pages to the system; logs what it took.
pub fn trim() {
    let started = std::time::Instant::now();
    let released = malloc_trim();
    tracing::debug!(released, took_us = started.elapsed().as_micros() as u64, "heap trimmed");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_trim() -> bool {
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's own
    // arenas under their locks; it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_the_count_fell_far_enough_below_its_peak() {
        let mut policy = TrimPolicy::new(256);
        assert!(!policy.observe(10_000));
        assert!(!policy.observe(9_800), "200 closed: not yet");
        assert!(policy.observe(9_700), "300 below the peak");
        assert!(!policy.observe(9_600), "the peak is now 9,700");
        assert!(policy.observe(0));
        assert!(!policy.observe(0), "nothing closed since");
    }

    #[test]
    fn churn_never_trims() {
        let mut policy = TrimPolicy::new(256);
        for step in 0..1_000 {
            assert!(!policy.observe(5_000 + step % 100));
        }
    }

    #[test]
    fn trimming_is_harmless_when_nothing_is_free() {
        trim();
        trim();
    }
}
