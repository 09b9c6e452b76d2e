//! The event stream on PostgreSQL: which positions are final, and the tail
//! that releases them to this node's connections in position order.
//!
//! A position is taken from a sequence inside the writing transaction, so
//! transaction A can take 41, B take 42 and commit first. Every writing
//! transaction takes its transaction id *before* its position (`emit`), so
//! at a snapshot S every position taken so far belongs to a transaction
//! that is either committed (visible in S) or running (in S's list of
//! running transactions, all below `xmax(S)`). Once a later snapshot's
//! `xmin` reaches `xmax(S)`, all of those have ended: every position up to
//! the highest one visible in S is final. The tail keeps such (`xmax`,
//! highest position) marks and releases up to the newest mark passed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Pg, Sql, reads};
use crate::model::Envelope;
use crate::store::StoreError;

/// Where the stream stands at one snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The oldest transaction still running (all below have ended).
    pub xmin: u64,
    /// The first transaction id not yet assigned.
    pub xmax: u64,
    /// The highest position visible.
    pub head: i64,
}

/// The stream's state at the current snapshot (one statement, one snapshot).
pub async fn mark(client: &deadpool_postgres::Client) -> Result<Mark, StoreError> {
    let row = client
        .row(
            "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text,
                    (SELECT COALESCE(max(position), 0) FROM events)
             FROM pg_current_snapshot() s",
            &[],
        )
        .await?;
    let xid = |text: String| text.parse::<u64>().map_err(|_| StoreError::Database(format!("unreadable xid {text}")));
    Ok(Mark { xmin: xid(row.get(0))?, xmax: xid(row.get(1))?, head: row.get(2) })
}

/// Marks not yet passed, oldest first, and what they make final.
#[derive(Debug, Default)]
pub struct Horizon {
    pending: VecDeque<Mark>,
}

impl Horizon {
    /// Takes a new mark; answers the highest position now final, if any
    /// mark was passed (by this one's `xmin`).
    pub fn observe(&mut self, now: Mark) -> Option<i64> {
        let mut safe = None;
        if now.xmin >= now.xmax {
            // Nothing runs: everything visible is final.
            self.pending.clear();
            return Some(now.head);
        }
        while let Some(oldest) = self.pending.front() {
            if oldest.xmax > now.xmin {
                break;
            }
            safe = Some(oldest.head);
            self.pending.pop_front();
        }
        // A mark that promises nothing new is not worth keeping.
        if self.pending.back().is_none_or(|last| last.head < now.head) {
            self.pending.push_back(now);
        }
        safe
    }
}

/// The highest final position now (at start: waits, bounded, for the
/// transactions running at the first snapshot to end).
pub async fn safe_head(client: &deadpool_postgres::Client) -> Result<i64, StoreError> {
    let mut horizon = Horizon::default();
    for _ in 0..2000 {
        if let Some(head) = horizon.observe(mark(client).await?) {
            return Ok(head);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(StoreError::Down("a PostgreSQL transaction stayed open for more than 10 s".into()))
}

/// Events read per query while catching up.
const PAGE: i64 = 512;
/// How often the tail looks without being poked: the bound on delivery
/// delay when the bus is down, and how it finds commits of other nodes
/// whose pokes were lost.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// While a mark waits to be passed: look again this soon.
const BUSY_POLL: Duration = Duration::from_millis(2);

/// Releases final events to `deliver` in position order, for ever: woken
/// by `poke` (this node's commits, other nodes' over the bus) or by time.
pub async fn tail(pg: Arc<Pg>, poke: Arc<Notify>, deliver: impl Fn(Envelope) + Send + 'static) {
    let mut horizon = Horizon::default();
    let mut waiting = false;
    loop {
        let wait = if waiting { BUSY_POLL } else { IDLE_POLL };
        let _ = tokio::time::timeout(wait, poke.notified()).await;
        match step(&pg, &mut horizon, &deliver).await {
            Ok(more) => waiting = more,
            Err(e) => {
                tracing::warn!(error = %e, "event tail: cannot read the stream; trying again");
                horizon = Horizon::default();
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

/// One look: answers whether a mark still waits (look again soon).
async fn step(pg: &Pg, horizon: &mut Horizon, deliver: &impl Fn(Envelope)) -> Result<bool, StoreError> {
    let conn = pg.client().await?;
    let client: &deadpool_postgres::Client = &conn;
    let now = mark(client).await?;
    if let Some(safe) = horizon.observe(now) {
        let mut from = pg.released();
        while from < safe {
            let events = reads::stored_events(client, from, safe, PAGE).await?;
            let Some(last) = events.last().map(|(e, _)| e.position) else { break };
            for envelope in reads::envelopes(client, &events).await? {
                deliver(envelope);
            }
            pg.release(last);
            from = last;
        }
        // Positions taken by transactions that rolled back leave gaps.
        pg.release(safe);
    }
    Ok(!horizon.pending.is_empty() && now.head > pg.released())
}

#[cfg(test)]
mod tests {
    use super::{Horizon, Mark};

    #[test]
    fn a_position_is_final_only_once_every_transaction_running_at_its_snapshot_ended() {
        let mut horizon = Horizon::default();
        // A (xid 10) and B (xid 11) run; B committed 42, A holds 41 unseen.
        assert_eq!(horizon.observe(Mark { xmin: 10, xmax: 12, head: 42 }), None);
        // A still runs: nothing is final yet, whatever else commits.
        assert_eq!(horizon.observe(Mark { xmin: 10, xmax: 14, head: 44 }), None);
        // A ended (xmin past 12): up to 42 is final, 44 waits for 12 and 13.
        assert_eq!(horizon.observe(Mark { xmin: 13, xmax: 15, head: 45 }), Some(42));
        assert_eq!(horizon.observe(Mark { xmin: 15, xmax: 16, head: 45 }), Some(45));
        // Nothing running: everything visible is final at once.
        assert_eq!(horizon.observe(Mark { xmin: 20, xmax: 20, head: 50 }), Some(50));
    }
}
