//! The login attacks: a flood of unknown emails from one IP while a real
//! user logs in from another, and password guessing against one account
//! from many IPs. Every 429 must carry Retry-After.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{StreamExt, stream};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use super::{Arena, Attack, Finding, counts_human, keep_sample};
use crate::client::{Api, ApiResponse};
use crate::error::Result;
use crate::stats::{LatencySummary, rate, round2, summary_human, summary_json};

/// Logins in flight at once from the flooding IP: more than the server's
/// hashing queue, fewer than the per-IP connection cap.
const FLOOD_CONCURRENCY: usize = 96;
/// Logins at most, whatever the time.
const FLOOD_MAX: u64 = 100_000;
/// How long a real login may take to count as a success.
const REAL_LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Guesses in flight at once.
const GUESS_CONCURRENCY: usize = 4;
/// How long one guess may take.
const GUESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers by status, and 429s without Retry-After.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub statuses: BTreeMap<String, u64>,
    pub throttled_without_retry_after: u64,
    /// What failed requests said.
    pub error_samples: Vec<String>,
}

impl Tally {
    fn add(&mut self, outcome: &std::result::Result<ApiResponse, String>) {
        let label = match outcome {
            Ok(response) => {
                if response.status == StatusCode::TOO_MANY_REQUESTS && response.retry_after.is_none() {
                    self.throttled_without_retry_after += 1;
                }
                response.status.as_u16().to_string()
            }
            Err(error) => {
                keep_sample(&mut self.error_samples, error.clone());
                error.split(':').next().unwrap_or("error").to_string()
            }
        };
        *self.statuses.entry(label).or_default() += 1;
    }

    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status.to_string()).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }
}

fn login_body(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

/// One login; an error is `label: detail`, counted by its label.
async fn login(api: &Api, body: &Value, limit: Duration) -> std::result::Result<ApiResponse, String> {
    match timeout(limit, api.call(Method::POST, "/api/auth/login", None, Some(body))).await {
        Err(_) => Err("timeout".to_string()),
        Ok(Err(error)) => Err(format!("transport_error: {error}")),
        Ok(Ok(response)) => Ok(response),
    }
}

/// What the real user's logins came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RealLogins {
    pub attempted: u64,
    pub succeeded: u64,
    pub tally: Tally,
}

/// The failed checks of the login flood: every real login succeeds, and
/// the flooding IP is throttled.
pub fn judge_login_flood(real: &RealLogins, flood: &Tally) -> Vec<String> {
    let mut failures = Vec::new();
    if flood.total() > 0 && flood.count(429) == 0 {
        failures.push(format!("none of the attacker's {} logins was refused: no per-IP login throttle", flood.total()));
    }
    if real.succeeded < real.attempted {
        failures.push(format!(
            "the real user logged in {} of {} times during the flood ({})",
            real.succeeded,
            real.attempted,
            counts_human(&real.tally.statuses)
        ));
    }
    let missing = flood.throttled_without_retry_after + real.tally.throttled_without_retry_after;
    if missing > 0 {
        failures.push(format!("{missing} 429 answers had no Retry-After"));
    }
    failures
}

/// Unknown emails from one IP as fast as the server answers, for
/// `login_flood_secs`; meanwhile the real user logs in from the normal client's address.
pub async fn login_flood(arena: &Arena<'_>) -> Result<Finding> {
    let args = arena.args;
    let target = arena.bench.target;
    let real_user = arena.register("login-real").await?;
    let attacker_ip = Attack::LoginFlood.attacker_ip(0);
    let attacker = Api::from_source(target, Some(IpAddr::V4(attacker_ip)));
    let real_api = arena.normal.clone();
    let real_body = login_body(&real_user.email, &arena.password());
    let baseline_started = Instant::now();
    let baseline = login(&real_api, &real_body, REAL_LOGIN_TIMEOUT).await;
    let baseline = match &baseline {
        Ok(response) if response.status == StatusCode::OK => Some(baseline_started.elapsed()),
        _ => None,
    };
    let started = Instant::now();
    let until = started + Duration::from_secs(args.login_flood_secs);
    let issued = Arc::new(AtomicU64::new(0));
    let run_id = arena.bench.run_id.clone();
    let flooding = stream::iter(0..FLOOD_CONCURRENCY)
        .map(|_| {
            let attacker = attacker.clone();
            let issued = Arc::clone(&issued);
            let run_id = run_id.clone();
            async move {
                let mut tally = Tally::default();
                while Instant::now() < until {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= FLOOD_MAX {
                        break;
                    }
                    let body = login_body(&format!("nobody-{run_id}-{n}@bench.local"), "not-the-password");
                    let left = until.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
                    tally.add(&login(&attacker, &body, left).await);
                }
                tally
            }
        })
        .buffer_unordered(FLOOD_CONCURRENCY)
        .collect::<Vec<Tally>>();

    // The real user logs in at even intervals inside the flood, after it
    // has had a second to build up.
    let logins = args.real_logins;
    let spacing = Duration::from_secs(args.login_flood_secs.saturating_sub(1)).max(Duration::from_secs(1)) / logins;
    let real_logins = async {
        let mut real = RealLogins::default();
        let mut latencies = Vec::new();
        for n in 0..logins {
            sleep_until(started + Duration::from_secs(1) + spacing * n).await;
            let sent_at = Instant::now();
            let outcome = login(&real_api, &real_body, REAL_LOGIN_TIMEOUT).await;
            real.attempted += 1;
            if matches!(&outcome, Ok(response) if response.status == StatusCode::OK) {
                real.succeeded += 1;
                latencies.push(sent_at.elapsed());
            }
            real.tally.add(&outcome);
        }
        (real, latencies)
    };
    let (tallies, (real, latencies)) = tokio::join!(flooding, real_logins);
    let elapsed = started.elapsed();
    let mut flood = Tally::default();
    for tally in tallies {
        for (label, count) in tally.statuses {
            *flood.statuses.entry(label).or_default() += count;
        }
        flood.throttled_without_retry_after += tally.throttled_without_retry_after;
        for sample in tally.error_samples {
            keep_sample(&mut flood.error_samples, sample);
        }
    }
    let latency = LatencySummary::from_samples(latencies);

    let mut finding = Finding::default();
    finding.line(format!(
        "attacker {attacker_ip}: {} logins with unknown emails in {:.1} s ({:.0}/s): {}",
        flood.total(),
        elapsed.as_secs_f64(),
        rate(flood.total() as f64, elapsed),
        counts_human(&flood.statuses)
    ));
    finding.line(format!(
        "real user from {}: {}/{} logins succeeded; {} (before the flood: {})",
        arena.normal_ip,
        real.succeeded,
        real.attempted,
        summary_human(latency.as_ref()),
        baseline.map_or("failed".to_string(), |took| format!("{:.0} ms", took.as_secs_f64() * 1000.0))
    ));
    for sample in flood.error_samples.iter().chain(&real.tally.error_samples) {
        finding.line(format!("failed request: {sample}"));
    }
    finding.failures = judge_login_flood(&real, &flood);
    finding.set("flood_requests", json!(flood.total()));
    finding.set("flood_per_s", json!(round2(rate(flood.total() as f64, elapsed))));
    finding.set("flood_statuses", json!(flood.statuses));
    finding.set("flood_429_without_retry_after", json!(flood.throttled_without_retry_after));
    finding.set("real_attempted", json!(real.attempted));
    finding.set("real_succeeded", json!(real.succeeded));
    finding.set("real_statuses", json!(real.tally.statuses));
    finding.set("real_latency", summary_json(latency.as_ref()));
    finding.set("real_before_flood_ms", json!(baseline.map(|took| round2(took.as_secs_f64() * 1000.0))));
    Ok(finding)
}

/// The failed checks of password guessing: at most `failures_allowed` plus
/// the guesses in flight reach the password check.
pub fn judge_guesses(tally: &Tally, failures_allowed: u64, in_flight: u64) -> Vec<String> {
    let mut failures = Vec::new();
    let checked = tally.count(401);
    let ceiling = failures_allowed + in_flight;
    if checked > ceiling {
        failures.push(format!(
            "{checked} wrong passwords were checked (401); the account should refuse after {failures_allowed} (+{in_flight} in flight)"
        ));
    }
    if tally.count(429) == 0 {
        failures.push("no guess was refused with 429".to_string());
    }
    if tally.throttled_without_retry_after > 0 {
        failures.push(format!("{} 429 answers had no Retry-After", tally.throttled_without_retry_after));
    }
    failures
}

/// `guesses` wrong passwords against one account, each from the next
/// address of 127.0.0.10..=250 (so only a per-account defence stops them).
pub async fn password_guess(arena: &Arena<'_>) -> Result<Finding> {
    let args = arena.args;
    let target = arena.bench.target;
    let victim = arena.register("guess-victim").await?;
    let started = Instant::now();
    let deadline = started + GUESS_TIMEOUT * 4;
    let sources: Vec<_> = (0..args.guesses).map(|_| arena.spread_ip()).collect();
    let mut retry_after_samples: Vec<String> = Vec::new();
    let outcomes: Vec<std::result::Result<ApiResponse, String>> = stream::iter(sources.into_iter().enumerate())
        .map(|(n, source)| {
            let body = login_body(&victim.email, &format!("wrong-guess-{n}"));
            async move {
                if Instant::now() >= deadline {
                    return Err("skipped".to_string());
                }
                let api = Api::from_source(target, Some(IpAddr::V4(source)));
                timeout_at(deadline, login(&api, &body, GUESS_TIMEOUT)).await.unwrap_or(Err("timeout".into()))
            }
        })
        .buffer_unordered(GUESS_CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut tally = Tally::default();
    for outcome in &outcomes {
        tally.add(outcome);
        if let Ok(response) = outcome
            && let Some(after) = response.retry_after
        {
            keep_sample(&mut retry_after_samples, format!("{} s", after.as_secs()));
        }
    }
    // The owner, with the right password, from the normal client's address.
    let owner = login(&arena.normal, &login_body(&victim.email, &arena.password()), REAL_LOGIN_TIMEOUT).await;

    let checked = tally.count(401);
    let refused = tally.count(429);
    let mut finding = Finding::default();
    finding.line(format!(
        "{} wrong passwords from {} IPs in {:.1} s ({:.0}/s): checked (401) {checked}, refused (429) {refused}; all: {}",
        tally.total(),
        args.guesses.min(241),
        elapsed.as_secs_f64(),
        rate(tally.total() as f64, elapsed),
        counts_human(&tally.statuses)
    ));
    for sample in &tally.error_samples {
        finding.line(format!("failed request: {sample}"));
    }
    if !retry_after_samples.is_empty() {
        finding.line(format!("Retry-After seen: {}", retry_after_samples.join(", ")));
    }
    let owner_line = match &owner {
        Ok(response) => format!(
            "the owner's right password afterwards: HTTP {}{}",
            response.status.as_u16(),
            response.retry_after.map_or(String::new(), |after| format!(" (Retry-After {} s)", after.as_secs()))
        ),
        Err(error) => format!("the owner's right password afterwards: {error}"),
    };
    finding.line(owner_line);
    finding.failures = judge_guesses(&tally, u64::from(args.login_failures), GUESS_CONCURRENCY as u64);
    finding.set("guesses", json!(tally.total()));
    finding.set("checked_401", json!(checked));
    finding.set("refused_429", json!(refused));
    finding.set("statuses", json!(tally.statuses));
    finding.set("per_s", json!(round2(rate(tally.total() as f64, elapsed))));
    finding.set("guessing_s", json!(round2(elapsed.as_secs_f64())));
    finding.set("retry_after_samples", json!(retry_after_samples));
    finding.set(
        "owner_login_status",
        json!(owner.as_ref().map_or_else(|error| json!(error), |response| json!(response.status.as_u16()))),
    );
    Ok(finding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(pairs: &[(&str, u64)], missing: u64) -> Tally {
        Tally {
            statuses: pairs.iter().map(|(label, count)| (label.to_string(), *count)).collect(),
            throttled_without_retry_after: missing,
            error_samples: Vec::new(),
        }
    }

    #[test]
    fn guessing_holds_when_the_account_refuses_early() {
        assert!(judge_guesses(&tally(&[("401", 6), ("429", 194)], 0), 5, 4).is_empty());
    }

    #[test]
    fn guessing_fails_when_every_guess_is_checked() {
        let failures = judge_guesses(&tally(&[("401", 200)], 0), 5, 4);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("200 wrong passwords were checked"));
        assert!(failures[1].contains("no guess was refused"));
    }

    #[test]
    fn a_429_without_retry_after_fails() {
        let failures = judge_guesses(&tally(&[("401", 5), ("429", 195)], 3), 5, 4);
        assert_eq!(failures, vec!["3 429 answers had no Retry-After".to_string()]);
    }

    #[test]
    fn login_flood_holds_when_every_real_login_succeeds() {
        let real = RealLogins { attempted: 5, succeeded: 5, tally: tally(&[("200", 5)], 0) };
        assert!(judge_login_flood(&real, &tally(&[("429", 900), ("401", 40)], 0)).is_empty());
        let real = RealLogins { attempted: 5, succeeded: 2, tally: tally(&[("200", 2), ("429", 3)], 3) };
        let failures = judge_login_flood(&real, &tally(&[("401", 900)], 0));
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].contains("none of the attacker's 900 logins was refused"));
        assert!(failures[1].contains("2 of 5 times"));
        assert!(failures[2].contains("3 429 answers had no Retry-After"));
    }
}
