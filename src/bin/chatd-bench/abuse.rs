//! `abuse`: attacks a running chatd the way a hostile client would (silent
//! and slow connections, connection and WebSocket caps, floods, huge
//! unfinished frames, login floods, password guessing) and says per attack
//! whether the server's defence held, with the numbers. It observes; the
//! expected limits are flags whose defaults are chatd's defaults.
//!
//! Every attack is bounded in count and time. Client sockets are bound to
//! loopback addresses before connecting, so the server sees the attacker
//! (127.1.<attack>.x), the normal client (127.2.x.y, new each run) and the
//! registrations (127.0.0.10..=250) as different IPs.

mod frames;
mod login;
mod tcp;
mod ws;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::{ValueEnum, value_parser};
use hyper::{Method, StatusCode};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::client::{Api, Session, session_from_auth};
use crate::context::{Bench, Report, progress};
use crate::error::{BenchError, Result};
use crate::stats::round2;

/// The attacks, in the order a full run makes them. Login attacks come last:
/// they leave per-IP and per-account throttles behind them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// Connections that send nothing: closed after the header timeout?
    SilentTcp,
    /// Half a request head, then silence or a byte a second.
    SlowHeaders,
    /// A request whose body stops (or trickles) before Content-Length.
    SlowBody,
    /// More connections from one IP than the per-IP cap.
    PerIpCap,
    /// More WebSockets on one token than the per-user cap.
    WsPerUser,
    /// One user sends messages as fast as it can.
    MessageFlood,
    /// One user sends typing as fast as it can at a victim.
    TypingFlood,
    /// Many connections each holding most of a 60 MiB frame.
    FrameBudget,
    /// Logins with unknown emails from one IP while a real user logs in.
    LoginFlood,
    /// Wrong passwords against one account, from many IPs.
    PasswordGuess,
}

impl Attack {
    /// The name `--only` takes, as clap derives it.
    pub fn name(self) -> String {
        self.to_possible_value().map_or_else(|| format!("{self:?}"), |value| value.get_name().to_string())
    }

    /// The `n`th attacker address of this attack: 127.1.<attack>.<1 + n % 250>,
    /// so that no attack inherits another's per-IP counts.
    pub fn attacker_ip(self, n: usize) -> Ipv4Addr {
        let attack = Attack::value_variants().iter().position(|a| *a == self).unwrap_or(0);
        Ipv4Addr::new(127, 1, attack as u8, 1 + (n % 250) as u8)
    }
}

/// The normal client's address (/healthz probes, real logins, victims):
/// 127.2.x.y, a new one each run, so that a run does not meet the login
/// throttle that the last run's real logins left on it.
pub fn normal_client_ip(run_number: u32) -> Ipv4Addr {
    let [_, _, high, low] = run_number.to_be_bytes();
    Ipv4Addr::new(127, 2, high, 1 + low % 254)
}
/// Registrations and distributed guesses use 127.0.0.10..=250, in turn.
const SPREAD_FIRST: u8 = 10;
const SPREAD_COUNT: usize = 241;

#[derive(Debug, Clone, clap::Args)]
pub struct AbuseArgs {
    /// Run only this attack.
    #[arg(long, value_enum)]
    pub only: Option<Attack>,
    /// The server's CHAT_HEADER_TIMEOUT_SECS.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=120))]
    pub header_timeout: u64,
    /// The server's CHAT_BODY_TIMEOUT_SECS.
    #[arg(long, default_value_t = 30, value_parser = value_parser!(u64).range(1..=120))]
    pub body_timeout: u64,
    /// The server's CHAT_MAX_CONNECTIONS_PER_IP.
    #[arg(long, default_value_t = 128, value_parser = value_parser!(u32).range(1..=2000))]
    pub per_ip: u32,
    /// The server's CHAT_WS_PER_USER.
    #[arg(long, default_value_t = 32, value_parser = value_parser!(u32).range(1..=1000))]
    pub ws_per_user: u32,
    /// The server's CHAT_WS_COMMANDS_PER_SEC.
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u32).range(1..=100_000))]
    pub ws_rate: u32,
    /// The server's CHAT_WS_COMMAND_BURST.
    #[arg(long, default_value_t = 60, value_parser = value_parser!(u32).range(1..=100_000))]
    pub ws_burst: u32,
    /// The server's CHAT_WS_FRAME_BUDGET_BYTES, in MiB.
    #[arg(long, default_value_t = 256, value_parser = value_parser!(u64).range(1..=16_384))]
    pub frame_budget_mib: u64,
    /// Failed logins per account before the server refuses with 429.
    #[arg(long, default_value_t = 5, value_parser = value_parser!(u32).range(1..=1000))]
    pub login_failures: u32,
    /// silent-tcp: connections that send nothing.
    #[arg(long, default_value_t = 200, value_parser = value_parser!(u32).range(1..=5000))]
    pub silent: u32,
    /// slow-headers, slow-body: connections (half stall, half trickle).
    #[arg(long, default_value_t = 40, value_parser = value_parser!(u32).range(2..=1000))]
    pub slow: u32,
    /// message-flood: messages sent as fast as possible.
    #[arg(long, default_value_t = 2000, value_parser = value_parser!(u32).range(1..=100_000))]
    pub flood_messages: u32,
    /// typing-flood: seconds of typing frames.
    #[arg(long, default_value_t = 5, value_parser = value_parser!(u64).range(1..=60))]
    pub typing_secs: u64,
    /// typing-flood: frames per second the victim reads during the flood (0: as fast as it can).
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u32).range(0..=1_000_000))]
    pub victim_reads_per_sec: u32,
    /// frame-budget: connections, each holding most of one frame.
    #[arg(long, default_value_t = 12, value_parser = value_parser!(u32).range(1..=64))]
    pub frame_sockets: u32,
    /// frame-budget: size of each frame, in MiB (below CHAT_MAX_WS_MESSAGE_BYTES).
    #[arg(long, default_value_t = 60, value_parser = value_parser!(u64).range(1..=1024))]
    pub frame_mib: u64,
    /// login-flood: seconds of flooding.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(2..=120))]
    pub login_flood_secs: u64,
    /// login-flood: logins the real user makes meanwhile.
    #[arg(long, default_value_t = 5, value_parser = value_parser!(u32).range(1..=100))]
    pub real_logins: u32,
    /// password-guess: wrong passwords tried.
    #[arg(long, default_value_t = 200, value_parser = value_parser!(u32).range(1..=10_000))]
    pub guesses: u32,
}

/// What an attack found: the checks that failed (none: the defence held),
/// and what was measured, for people and for machines.
#[derive(Debug, Default)]
pub struct Finding {
    pub failures: Vec<String>,
    pub lines: Vec<String>,
    pub json: Map<String, Value>,
}

impl Finding {
    pub fn line(&mut self, text: impl Into<String>) {
        self.lines.push(text.into());
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_string(), value);
    }
}

/// What every attack is handed.
pub struct Arena<'a> {
    pub bench: &'a Bench,
    pub args: &'a AbuseArgs,
    /// The normal client's address, and REST calls from it.
    pub normal_ip: Ipv4Addr,
    pub normal: Api,
    next_spread: AtomicUsize,
}

impl Arena<'_> {
    /// The next address of 127.0.0.10..=250.
    pub fn spread_ip(&self) -> Ipv4Addr {
        let n = self.next_spread.fetch_add(1, Ordering::Relaxed);
        Ipv4Addr::new(127, 0, 0, SPREAD_FIRST + (n % SPREAD_COUNT) as u8)
    }

    /// The password of every user this run registers.
    pub fn password(&self) -> String {
        format!("abuse-password-{}", self.bench.run_id)
    }

    /// Registers `abuse-<run>-<label>@bench.local`. Registration is
    /// throttled per IP, so a 429 moves on to the next spread address;
    /// after a few, it waits the throttle out like the other subcommands.
    pub async fn register(&self, label: &str) -> Result<Session> {
        let email = format!("abuse-{}-{label}@bench.local", self.bench.run_id);
        let body = json!({"name": format!("abuse {label}"), "email": email, "password": self.password()});
        for _ in 0..16 {
            let api = Api::from_source(self.bench.target, Some(IpAddr::V4(self.spread_ip())));
            let response = api.call(Method::POST, "/api/auth/register", None, Some(&body)).await?;
            if response.status.is_success() {
                return session_from_auth(&response.json()?, &email);
            }
            if !matches!(response.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
                return Err(BenchError::new(format!(
                    "registering {email}: HTTP {} {}",
                    response.status,
                    response.detail()
                )));
            }
        }
        let api = Api::from_source(self.bench.target, Some(IpAddr::V4(self.spread_ip())));
        api.register(&email, &format!("abuse {label}"), &self.password()).await
    }

    /// Registers two users and opens their direct room.
    pub async fn pair(&self, first: &str, second: &str) -> Result<(Session, Session, i64)> {
        let a = self.register(first).await?;
        let b = self.register(second).await?;
        let room_id = self.normal.open_room(&a.token, b.user_id).await?;
        Ok((a, b, room_id))
    }
}

pub async fn run(bench: &Bench, args: &AbuseArgs) -> Result<Report> {
    if !bench.target.addr().is_ipv4() {
        return Err(BenchError::new(
            "abuse needs an IPv4 loopback --url: it binds client sockets to 127.x.y.z to act as several clients",
        ));
    }
    let attacks: Vec<Attack> = match args.only {
        Some(attack) => vec![attack],
        None => Attack::value_variants().to_vec(),
    };
    // Start the spread addresses somewhere new each run, so that runs in
    // a row do not meet the registration throttle of the last one.
    let run_number = u32::from_str_radix(&bench.run_id, 16).unwrap_or(0);
    let offset = run_number as usize % SPREAD_COUNT;
    let normal_ip = normal_client_ip(run_number);
    progress(format!("abuse: the normal client is {normal_ip}, attackers are 127.1.<attack>.x"));
    let arena = Arena {
        bench,
        args,
        normal_ip,
        normal: Api::from_source(bench.target, Some(IpAddr::V4(normal_ip))),
        next_spread: AtomicUsize::new(offset),
    };
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(attacks.len());
    for attack in attacks {
        progress(format!("abuse: {}", attack.name()));
        let attack_started = Instant::now();
        let outcome = match attack {
            Attack::SilentTcp => tcp::silent_tcp(&arena).await,
            Attack::SlowHeaders => tcp::slow_headers(&arena).await,
            Attack::SlowBody => tcp::slow_body(&arena).await,
            Attack::PerIpCap => tcp::per_ip_cap(&arena).await,
            Attack::WsPerUser => ws::ws_per_user(&arena).await,
            Attack::MessageFlood => ws::message_flood(&arena).await,
            Attack::TypingFlood => ws::typing_flood(&arena).await,
            Attack::FrameBudget => frames::frame_budget(&arena).await,
            Attack::LoginFlood => login::login_flood(&arena).await,
            Attack::PasswordGuess => login::password_guess(&arena).await,
        };
        let elapsed = attack_started.elapsed();
        let verdict = Verdict::of(&outcome);
        progress(format!("abuse: {} {} in {:.1} s", attack.name(), verdict.label(), elapsed.as_secs_f64()));
        outcomes.push((attack, outcome, elapsed));
    }
    Ok(report(bench, args, outcomes, started.elapsed()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The attack could not be made (set-up failed): nothing is known.
    Error,
}

impl Verdict {
    pub fn of(outcome: &Result<Finding>) -> Verdict {
        match outcome {
            Ok(finding) if finding.failures.is_empty() => Verdict::Pass,
            Ok(_) => Verdict::Fail,
            Err(_) => Verdict::Error,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
        }
    }
}

fn report(
    bench: &Bench,
    args: &AbuseArgs,
    outcomes: Vec<(Attack, Result<Finding>, Duration)>,
    elapsed: Duration,
) -> Report {
    let count = |wanted: Verdict| outcomes.iter().filter(|(_, outcome, _)| Verdict::of(outcome) == wanted).count();
    let (passed, failed, errors) = (count(Verdict::Pass), count(Verdict::Fail), count(Verdict::Error));
    let mut text = format!(
        "abuse: {} attack(s) against {} in {:.1} s: {passed} PASS, {failed} FAIL, {errors} ERROR\n",
        outcomes.len(),
        bench.target,
        elapsed.as_secs_f64()
    );
    let mut attacks = Vec::with_capacity(outcomes.len());
    for (attack, outcome, took) in outcomes {
        let verdict = Verdict::of(&outcome);
        text.push_str(&format!("{:<5} {} ({:.1} s)\n", verdict.label(), attack.name(), took.as_secs_f64()));
        let mut entry = Map::new();
        entry.insert("name".into(), json!(attack.name()));
        entry.insert("verdict".into(), json!(verdict.label()));
        entry.insert("elapsed_s".into(), json!(round2(took.as_secs_f64())));
        match outcome {
            Ok(finding) => {
                for line in &finding.lines {
                    text.push_str(&format!("      {line}\n"));
                }
                for failure in &finding.failures {
                    text.push_str(&format!("    ✗ {failure}\n"));
                }
                entry.insert("failures".into(), json!(finding.failures));
                entry.extend(finding.json);
            }
            Err(error) => {
                text.push_str(&format!("    ! could not run: {error}\n"));
                entry.insert("error".into(), json!(error.to_string()));
            }
        }
        attacks.push(Value::Object(entry));
    }
    let mut json = bench.header("abuse");
    for (key, value) in [
        ("elapsed_s", json!(round2(elapsed.as_secs_f64()))),
        ("passed", json!(passed)),
        ("failed", json!(failed)),
        ("errors", json!(errors)),
        (
            "expected",
            json!({
                "header_timeout_s": args.header_timeout,
                "body_timeout_s": args.body_timeout,
                "per_ip": args.per_ip,
                "ws_per_user": args.ws_per_user,
                "ws_rate": args.ws_rate,
                "ws_burst": args.ws_burst,
                "frame_budget_mib": args.frame_budget_mib,
                "login_failures": args.login_failures,
            }),
        ),
        ("attacks", Value::Array(attacks)),
    ] {
        json.insert(key.to_string(), value);
    }
    Report { json: Value::Object(json), text: text.trim_end().to_string() }
}

/// "n × label" pairs of a count map, for one report line.
pub fn counts_human<K: std::fmt::Display>(counts: &std::collections::BTreeMap<K, u64>) -> String {
    if counts.is_empty() {
        return "none".to_string();
    }
    counts.iter().map(|(key, count)| format!("{key} × {count}")).collect::<Vec<_>>().join(", ")
}

/// Keeps at most five different samples.
pub fn keep_sample(samples: &mut Vec<String>, sample: String) {
    if samples.len() < 5 && !samples.contains(&sample) {
        samples.push(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_names_are_kebab_case() {
        assert_eq!(Attack::SilentTcp.name(), "silent-tcp");
        assert_eq!(Attack::PasswordGuess.name(), "password-guess");
        assert_eq!(Attack::from_str("frame-budget", false), Ok(Attack::FrameBudget));
    }

    #[test]
    fn every_attack_has_its_own_addresses() {
        let mut seen = std::collections::BTreeSet::new();
        for attack in Attack::value_variants() {
            let ip = attack.attacker_ip(0);
            assert!(ip.is_loopback(), "{ip}");
            assert!(seen.insert(ip), "{ip} used twice");
        }
        assert_eq!(Attack::SilentTcp.attacker_ip(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(Attack::SilentTcp.attacker_ip(249), Ipv4Addr::new(127, 1, 0, 250));
        assert_eq!(Attack::SilentTcp.attacker_ip(250), Ipv4Addr::new(127, 1, 0, 1));
    }

    #[test]
    fn the_normal_client_moves_with_the_run() {
        assert_eq!(normal_client_ip(0), Ipv4Addr::new(127, 2, 0, 1));
        assert_eq!(normal_client_ip(0x1234_5678), Ipv4Addr::new(127, 2, 0x56, 1 + 0x78));
        assert_eq!(normal_client_ip(0xffff_ffff), Ipv4Addr::new(127, 2, 255, 2));
        assert_ne!(normal_client_ip(7), normal_client_ip(8));
    }

    #[test]
    fn verdict_follows_the_failures() {
        assert_eq!(Verdict::of(&Ok(Finding::default())), Verdict::Pass);
        let failed = Finding { failures: vec!["x".into()], ..Finding::default() };
        assert_eq!(Verdict::of(&Ok(failed)), Verdict::Fail);
        assert_eq!(Verdict::of(&Err(BenchError::new("no"))), Verdict::Error);
    }

    #[test]
    fn counts_read_as_a_list() {
        let mut counts = std::collections::BTreeMap::new();
        assert_eq!(counts_human(&counts), "none");
        counts.insert(429u16, 3u64);
        counts.insert(200u16, 1u64);
        assert_eq!(counts_human(&counts), "200 × 1, 429 × 3");
    }
}
