//! Latency summaries from raw samples: the whole sorted Vec is kept, so the
//! percentiles are exact (nearest rank), not estimated.

use std::time::Duration;

use serde_json::{Value, json};

/// p50/p99/max/mean of a set of latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl LatencySummary {
    /// None when there is no sample.
    pub fn from_samples(mut samples: Vec<Duration>) -> Option<LatencySummary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        let count = samples.len();
        Some(LatencySummary {
            count,
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            max: samples[count - 1],
            mean: total / u32::try_from(count).unwrap_or(u32::MAX),
        })
    }

    pub fn report_json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": millis(self.p50),
            "p99_ms": millis(self.p99),
            "max_ms": millis(self.max),
            "mean_ms": millis(self.mean),
        })
    }

    pub fn human(&self) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {:.2} ms (n={})",
            millis(self.p50),
            millis(self.p99),
            millis(self.max),
            millis(self.mean),
            self.count
        )
    }
}

/// The JSON of an optional summary: null when there was no sample.
pub fn summary_json(summary: Option<&LatencySummary>) -> Value {
    summary.map_or(Value::Null, LatencySummary::report_json)
}

/// The human line of an optional summary.
pub fn summary_human(summary: Option<&LatencySummary>) -> String {
    summary.map_or_else(|| "no samples".to_string(), LatencySummary::human)
}

/// Nearest-rank percentile of an ascending, non-empty slice: the smallest
/// sample such that at least `p` percent of the samples are at or below it.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with microsecond resolution, for reports.
pub fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// A per-second rate; zero when no time passed.
pub fn rate(count: f64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 { count / seconds } else { 0.0 }
}

/// Rounds for reports, so JSON lines stay short.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples, 0.0), Duration::from_millis(1));
    }

    #[test]
    fn a_single_sample_is_every_percentile() {
        let summary = LatencySummary::from_samples(ms(&[7])).expect("one sample");
        assert_eq!(summary.p50, Duration::from_millis(7));
        assert_eq!(summary.p99, Duration::from_millis(7));
        assert_eq!(summary.max, Duration::from_millis(7));
        assert_eq!(summary.mean, Duration::from_millis(7));
    }

    #[test]
    fn summary_sorts_unsorted_samples() {
        let summary = LatencySummary::from_samples(ms(&[30, 10, 20, 40])).expect("samples");
        assert_eq!(summary.count, 4);
        assert_eq!(summary.p50, Duration::from_millis(20));
        assert_eq!(summary.p99, Duration::from_millis(40));
        assert_eq!(summary.max, Duration::from_millis(40));
        assert_eq!(summary.mean, Duration::from_millis(25));
    }

    #[test]
    fn p99_of_a_thousand_ignores_the_worst_ten() {
        let mut samples = vec![Duration::from_millis(1); 990];
        samples.extend(vec![Duration::from_millis(500); 10]);
        let summary = LatencySummary::from_samples(samples).expect("samples");
        assert_eq!(summary.p99, Duration::from_millis(1));
        assert_eq!(summary.max, Duration::from_millis(500));
    }

    #[test]
    fn no_samples_is_no_summary() {
        assert!(LatencySummary::from_samples(Vec::new()).is_none());
        assert_eq!(summary_json(None), Value::Null);
    }

    #[test]
    fn rate_of_no_time_is_zero() {
        assert_eq!(rate(10.0, Duration::ZERO), 0.0);
        assert_eq!(rate(10.0, Duration::from_secs(2)), 5.0);
    }
}
