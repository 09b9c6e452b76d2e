//! Abuse limits kept in memory: token buckets per IP and per user, counts of
//! connections per IP and WebSockets per user, login failures per account,
//! and the global budget of bytes held in unfinished WebSocket frames.
//! Pure bookkeeping: it knows nothing of HTTP, sockets or the database, and
//! every map is bounded so that an attacker cannot grow it without end.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{Limits, Rate, canonical};
use crate::model::UserId;

/// Entries a keyed map may hold before idle ones are pruned, and the most it
/// keeps after pruning (beyond that it starts again from empty: forgetting
/// is better than running out of memory).
const PRUNE_AT: usize = 16 * 1024;
const HARD_CAP: usize = 256 * 1024;

/// A token bucket: `rate.per_sec` tokens a second, up to `rate.burst`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket { tokens: rate.burst, updated: now }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.updated = now;
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate.per_sec))
        }
    }

    /// Whether the bucket is full again, and so the same as a fresh one.
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut copy = *self;
        copy.refill(rate, now);
        copy.tokens >= rate.burst
    }
}

/// One token bucket per key (IP address, user), all of the same rate.
pub struct KeyedBuckets<K> {
    rate: Option<Rate>,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Hash + Eq + Copy> KeyedBuckets<K> {
    pub fn new(rate: Option<Rate>) -> KeyedBuckets<K> {
        KeyedBuckets { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key`; `Err(wait)` when its bucket is empty. Always
    /// `Ok` when this limit is off.
    pub fn check(&self, key: K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    pub fn check_at(&self, key: K, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate else { return Ok(()) };
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(&key) {
            buckets.retain(|_, b| !b.is_full(rate, now));
            if buckets.len() >= HARD_CAP {
                tracing::warn!(entries = buckets.len(), "rate limit table full; starting it again");
                buckets.clear();
            }
        }
        buckets.entry(key).or_insert_with(|| TokenBucket::full(rate, now)).take(rate, now)
    }
}

/// How many of something each key holds at once (connections per IP,
/// WebSockets per user); a `Slot` gives one back when dropped.
pub struct Counts<K: Hash + Eq + Copy + Send + 'static> {
    max: Option<usize>,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One counted thing; dropping it releases the count.
pub struct Slot<K: Hash + Eq + Copy + Send + 'static> {
    key: K,
    held: Option<Arc<Mutex<HashMap<K, usize>>>>,
}

impl<K: Hash + Eq + Copy + Send + 'static> Counts<K> {
    pub fn new(max: Option<usize>) -> Counts<K> {
        Counts { max, held: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// A slot for `key`, or `None` when it already holds the maximum.
    pub fn acquire(&self, key: K) -> Option<Slot<K>> {
        let Some(max) = self.max else { return Some(Slot { key, held: None }) };
        let mut held = lock(&self.held);
        let count = held.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot { key, held: Some(self.held.clone()) })
    }

    pub fn held(&self, key: K) -> usize {
        lock(&self.held).get(&key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Copy + Send + 'static> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Some(held) = &self.held {
            let mut held = lock(held);
            if let Some(count) = held.get_mut(&self.key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    held.remove(&self.key);
                }
            }
        }
    }
}

/// Failed logins of one account in the current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
}

/// Per-account login backoff: after `allowed` failures within
/// `LOGIN_WINDOW`, each further failure blocks the account's logins for
/// twice as long as the one before (30 s, 60 s, ... at most 15 minutes). A
/// success clears the record. The block does not apply from an address the
/// account logged in from successfully before (its owner's devices), so a
/// stranger who guesses at an account cannot lock its owner out; those
/// addresses still have their own per-address throttle.
pub struct LoginFailures {
    allowed: Option<u32>,
    accounts: Mutex<HashMap<UserId, Failures>>,
    known: Mutex<HashMap<UserId, Vec<(IpAddr, Instant)>>>,
}

/// Addresses remembered per account, and for how long.
const KNOWN_ADDRESSES: usize = 8;
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
const FIRST_BLOCK: Duration = Duration::from_secs(30);

impl LoginFailures {
    pub fn new(allowed: Option<u32>) -> LoginFailures {
        LoginFailures { allowed, accounts: Mutex::new(HashMap::new()), known: Mutex::new(HashMap::new()) }
    }

    /// `Err(wait)` while the account is blocked for logins from `ip`.
    pub fn check(&self, user: UserId, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.allowed.is_none() {
            return Ok(());
        }
        let known = lock(&self.known).get(&user).is_some_and(|addresses| {
            addresses.iter().any(|(a, at)| *a == ip && now.saturating_duration_since(*at) < KNOWN_FOR)
        });
        if known {
            return Ok(());
        }
        match lock(&self.accounts).get(&user).and_then(|f| f.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, user: UserId, now: Instant) {
        let Some(allowed) = self.allowed else { return };
        let mut accounts = lock(&self.accounts);
        if accounts.len() >= PRUNE_AT && !accounts.contains_key(&user) {
            accounts.retain(|_, f| now.saturating_duration_since(f.window_start) < LOGIN_WINDOW);
            if accounts.len() >= HARD_CAP {
                accounts.clear();
            }
        }
        let record = accounts.entry(user).or_insert(Failures { count: 0, window_start: now, blocked_until: None });
        if now.saturating_duration_since(record.window_start) >= LOGIN_WINDOW {
            *record = Failures { count: 0, window_start: now, blocked_until: None };
        }
        record.count += 1;
        if record.count >= allowed {
            let doublings = (record.count - allowed).min(5);
            let block = (FIRST_BLOCK * 2u32.pow(doublings)).min(LOGIN_WINDOW);
            record.blocked_until = Some(now + block);
            // The window runs from the newest failure while blocked, so a
            // patient guesser never gets a fresh allowance mid-attack.
            record.window_start = now;
        }
    }

    pub fn succeeded(&self, user: UserId, ip: IpAddr, now: Instant) {
        if self.allowed.is_none() {
            return;
        }
        lock(&self.accounts).remove(&user);
        let mut known = lock(&self.known);
        if known.len() >= HARD_CAP && !known.contains_key(&user) {
            known.clear();
        }
        let addresses = known.entry(user).or_default();
        addresses.retain(|(a, _)| *a != ip);
        if addresses.len() >= KNOWN_ADDRESSES {
            addresses.remove(0);
        }
        addresses.push((ip, now));
    }
}

/// The budget of bytes that all WebSocket connections together may hold in
/// frames they have not finished receiving. Each connection has a `Meter`.
pub struct FrameBudget {
    limit: usize,
    used: Arc<AtomicUsize>,
}

/// A connection's share of the frame budget: the bytes read since its last
/// complete message.
pub struct Meter {
    limit: usize,
    used: Arc<AtomicUsize>,
    held: AtomicUsize,
    refused: std::sync::atomic::AtomicBool,
}

/// A connection below this many held bytes is never refused: small messages
/// always get through, only large unfinished frames compete for the budget.
pub const FRAME_BUDGET_FLOOR: usize = 256 * 1024;

impl FrameBudget {
    pub fn new(limit: usize) -> FrameBudget {
        FrameBudget { limit, used: Arc::new(AtomicUsize::new(0)) }
    }

    pub fn meter(&self) -> Meter {
        Meter {
            limit: self.limit,
            used: self.used.clone(),
            held: AtomicUsize::new(0),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

impl Meter {
    /// Counts `n` more bytes of an unfinished message; `false` when they
    /// would take the budget past its limit (the caller closes the connection).
    pub fn add(&self, n: usize) -> bool {
        let held = self.held.load(Ordering::Relaxed) + n;
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        self.held.store(held, Ordering::Relaxed);
        let allowed = held <= FRAME_BUDGET_FLOOR || before + n <= self.limit;
        if !allowed {
            self.refused.store(true, Ordering::Relaxed);
        }
        allowed
    }

    /// Bytes of the unfinished message counted so far.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether this connection was refused more bytes.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// The message is complete (or the connection ends): its bytes are free.
    pub fn release(&self) {
        let held = self.held.swap(0, Ordering::Relaxed);
        self.used.fetch_sub(held, Ordering::Relaxed);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.release();
    }
}

/// Every limit's state, built once from `Limits`.
pub struct Limiter {
    pub connections_per_ip: Counts<IpAddr>,
    pub ws_per_user: Counts<UserId>,
    pub ws_commands: KeyedBuckets<UserId>,
    pub ws_typing: KeyedBuckets<UserId>,
    pub logins_per_ip: KeyedBuckets<IpAddr>,
    pub login_failures: LoginFailures,
    pub registrations_per_ip: KeyedBuckets<IpAddr>,
    pub searches: KeyedBuckets<UserId>,
    pub frame_budget: FrameBudget,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Limiter {
        Limiter {
            connections_per_ip: Counts::new(limits.max_connections_per_ip),
            ws_per_user: Counts::new(limits.ws_per_user),
            ws_commands: KeyedBuckets::new(limits.ws_commands),
            ws_typing: KeyedBuckets::new(limits.ws_typing),
            logins_per_ip: KeyedBuckets::new(limits.logins_per_ip),
            login_failures: LoginFailures::new(limits.login_failures_per_account),
            registrations_per_ip: KeyedBuckets::new(limits.registrations_per_ip),
            searches: KeyedBuckets::new(limits.searches),
            frame_budget: FrameBudget::new(limits.ws_frame_budget_bytes),
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the right-most address of `X-Forwarded-For` that is not itself a trusted
/// proxy (the left part of the header is whatever the client claimed).
pub fn client_ip<'a>(peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>, limits: &Limits) -> IpAddr {
    let peer = canonical(peer);
    if !limits.is_trusted_proxy(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).map(str::trim).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !limits.is_trusted_proxy(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Seconds to put in `Retry-After`: at least one, rounded up.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves plain counters
    // behind; they are still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IpNet;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let rate = Rate { per_sec: 2.0, burst: 3.0 };
        let start = Instant::now();
        let mut bucket = TokenBucket::full(rate, start);
        for _ in 0..3 {
            assert!(bucket.take(rate, start).is_ok());
        }
        let wait = bucket.take(rate, start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(bucket.take(rate, start + Duration::from_millis(499)).is_err());
        assert!(bucket.take(rate, start + Duration::from_millis(1000)).is_ok());
        // Refill stops at the burst.
        let later = start + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(bucket.take(rate, later).is_ok());
        }
        assert!(bucket.take(rate, later).is_err());
    }

    #[test]
    fn keyed_buckets_are_independent_and_off_means_no_limit() {
        let buckets = KeyedBuckets::new(Some(Rate { per_sec: 0.001, burst: 1.0 }));
        let now = Instant::now();
        assert!(buckets.check_at(1, now).is_ok());
        assert!(buckets.check_at(1, now).is_err());
        assert!(buckets.check_at(2, now).is_ok());
        let off = KeyedBuckets::new(None);
        for _ in 0..1000 {
            assert!(off.check_at(1, now).is_ok());
        }
    }

    #[test]
    fn keyed_buckets_stay_bounded() {
        let buckets = KeyedBuckets::new(Some(Rate { per_sec: 1000.0, burst: 1.0 }));
        let now = Instant::now();
        for key in 0..(PRUNE_AT as u64 + 10) {
            let _ = buckets.check_at(key, now);
        }
        // A second later every bucket is full again and can be forgotten.
        let _ = buckets.check_at(u64::MAX, now + Duration::from_secs(1));
        assert!(lock(&buckets.buckets).len() < 10);
    }

    #[test]
    fn counts_give_back_their_slots() {
        let counts = Counts::new(Some(2));
        let a = counts.acquire(7).unwrap();
        let _b = counts.acquire(7).unwrap();
        assert!(counts.acquire(7).is_none());
        assert!(counts.acquire(8).is_some());
        drop(a);
        assert_eq!(counts.held(7), 1);
        assert!(counts.acquire(7).is_some());
        let unlimited = Counts::new(None);
        let slots: Vec<_> = (0..1000).map(|_| unlimited.acquire(1)).collect();
        assert!(slots.iter().all(Option::is_some));
    }

    #[test]
    fn login_failures_back_off_and_clear_on_success() {
        let failures = LoginFailures::new(Some(3));
        let now = Instant::now();
        let (stranger, owner): (IpAddr, IpAddr) = ("198.51.100.7".parse().unwrap(), "192.0.2.1".parse().unwrap());
        failures.succeeded(1, owner, now);
        for _ in 0..2 {
            failures.failed(1, now);
            assert!(failures.check(1, stranger, now).is_ok());
        }
        failures.failed(1, now);
        assert_eq!(failures.check(1, stranger, now), Err(FIRST_BLOCK));
        failures.failed(1, now);
        assert_eq!(failures.check(1, stranger, now), Err(FIRST_BLOCK * 2));
        assert!(failures.check(1, owner, now).is_ok(), "the owner's address is not locked out");
        assert!(failures.check(1, stranger, now + FIRST_BLOCK * 2).is_ok());
        assert!(failures.check(2, stranger, now).is_ok(), "other accounts are not affected");
        failures.succeeded(1, stranger, now);
        assert!(failures.check(1, stranger, now).is_ok());
        // Failures spread wider than the window never block.
        for i in 0..10 {
            failures.failed(3, now + LOGIN_WINDOW * i);
        }
        assert!(failures.check(3, stranger, now + LOGIN_WINDOW * 9).is_ok());
    }

    #[test]
    fn the_frame_budget_refuses_only_large_holders_past_the_limit() {
        let budget = FrameBudget::new(1024 * 1024);
        let big = budget.meter();
        assert!(big.add(900 * 1024));
        let other = budget.meter();
        // Under the floor a connection is never refused, even past the limit.
        assert!(other.add(200 * 1024));
        assert!(!other.add(100 * 1024), "past the floor and the limit");
        other.release();
        assert_eq!(budget.used(), 900 * 1024);
        drop(big);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut limits = crate::config::Config::for_tests(std::path::Path::new("/tmp")).limits;
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let xff = ["203.0.113.9, 10.0.0.7"];
        assert_eq!(client_ip(peer, xff.iter().copied(), &limits), peer, "no proxies trusted");
        limits.trusted_proxies = vec![IpNet::parse("10.0.0.0/8").unwrap()];
        assert_eq!(client_ip(peer, xff.iter().copied(), &limits), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, std::iter::empty(), &limits), peer);
        let spoofed = ["1.2.3.4, 198.51.100.2"];
        assert_eq!(client_ip(peer, spoofed.iter().copied(), &limits), "198.51.100.2".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(limits.is_trusted_proxy(crate::config::canonical(mapped)));
    }

    #[test]
    fn ip_ranges_parse_and_match() {
        let net = IpNet::parse("192.168.0.0/16").unwrap();
        assert!(net.contains("192.168.4.2".parse().unwrap()));
        assert!(!net.contains("192.169.0.1".parse().unwrap()));
        assert!(IpNet::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "x", "10.0.0.0/"] {
            assert!(IpNet::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
        assert_eq!(retry_after_secs(Duration::from_millis(30_001)), 31);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
