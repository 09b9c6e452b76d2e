//! A small, fast, non-cryptographic generator for request mixes and
//! randomised timings. Load shapes need spread, not secrecy.

use std::time::Duration;

/// xorshift64: one u64 of state, never zero.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    /// A generator for worker `index`, seeded from the OS when it can be,
    /// else from the index alone (still distinct per worker).
    pub fn for_worker(index: u64) -> XorShift {
        let seed = getrandom::u64().unwrap_or(0) ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        XorShift::new(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// A duration between `low` and `high` milliseconds, both included.
    pub fn millis_between(&mut self, low: u64, high: u64) -> Duration {
        let (low, high) = (low.min(high), low.max(high));
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_near_the_asked_share() {
        let mut random = XorShift::new(42);
        let rooms = (0..100_000).filter(|_| random.below(100) < 20).count();
        assert!((19_000..21_000).contains(&rooms), "{rooms}");
    }

    #[test]
    fn durations_stay_inside_their_range_and_reach_both_ends() {
        let mut random = XorShift::new(7);
        let picks: Vec<Duration> = (0..10_000).map(|_| random.millis_between(1000, 1003)).collect();
        assert!(picks.iter().all(|d| (1000..=1003).contains(&(d.as_millis() as u64))));
        assert!(picks.contains(&Duration::from_millis(1000)));
        assert!(picks.contains(&Duration::from_millis(1003)));
        assert_eq!(random.millis_between(5, 5), Duration::from_millis(5));
        assert!((3..=9).contains(&(random.millis_between(9, 3).as_millis() as u64)));
    }
}
