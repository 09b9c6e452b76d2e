//! Counters, gauges and histograms for `GET /metrics` (Prometheus text).
//! All atomics: recording never takes a lock, so it can stay on the message path.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::model::MessageType;

/// A histogram with fixed upper bounds; `sum` is kept in micro-units.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

const SECONDS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Status codes counted one by one; anything else counts as "other".
const STATUSES: &[u16] =
    &[200, 201, 204, 206, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 416, 422, 429, 500, 503];

/// The abuse limits counted in `chatd_limited_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    ConnectionsPerIp,
    WsPerUser,
    WsCommands,
    WsTyping,
    FrameBudget,
    Quota,
    LoginsPerIp,
    LoginFailures,
    Registrations,
    Searches,
}

impl Limit {
    pub const ALL: [Limit; 10] = [
        Limit::ConnectionsPerIp,
        Limit::WsPerUser,
        Limit::WsCommands,
        Limit::WsTyping,
        Limit::FrameBudget,
        Limit::Quota,
        Limit::LoginsPerIp,
        Limit::LoginFailures,
        Limit::Registrations,
        Limit::Searches,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::WsPerUser => "ws_per_user",
            Limit::WsCommands => "ws_commands",
            Limit::WsTyping => "ws_typing",
            Limit::FrameBudget => "frame_budget",
            Limit::Quota => "quota",
            Limit::LoginsPerIp => "logins_per_ip",
            Limit::LoginFailures => "login_failures",
            Limit::Registrations => "registrations_per_ip",
            Limit::Searches => "searches",
        }
    }
}

pub struct Metrics {
    pub ws_connections: AtomicI64,
    pub users_connected: AtomicI64,
    messages_stored: [AtomicU64; 4],
    pub events_delivered: AtomicU64,
    pub slow_consumers_closed: AtomicU64,
    /// Typing events not queued because the connection was behind.
    pub typing_dropped: AtomicU64,
    /// Requests, connections and commands refused by a limit, by limit.
    limited: [AtomicU64; Limit::ALL.len()],
    limit_logged_ms: [AtomicU64; Limit::ALL.len()],
    started: std::time::Instant,
    pub attachment_bytes: AtomicU64,
    pub writer_batch_size: Histogram,
    pub writer_commit_seconds: Histogram,
    routes: &'static [&'static str],
    requests: Box<[AtomicU64]>,
    request_seconds: Box<[Histogram]>,
}

impl Metrics {
    /// Counts one refusal by `limit`; answers whether to log it, which is
    /// at most once a second per limit (under attack a limit bites thousands
    /// of times a second, and the log must stay readable).
    #[must_use = "log the refusal when this is true"]
    pub fn limited(&self, limit: Limit) -> bool {
        self.limited[limit as usize].fetch_add(1, Relaxed);
        let now = self.started.elapsed().as_millis() as u64 + 1000;
        let last = &self.limit_logged_ms[limit as usize];
        let previous = last.load(Relaxed);
        now.saturating_sub(previous) >= 1000 && last.compare_exchange(previous, now, Relaxed, Relaxed).is_ok()
    }

    /// `routes` are the route names HTTP requests are counted under.
    pub fn new(routes: &'static [&'static str]) -> Metrics {
        Metrics {
            ws_connections: AtomicI64::new(0),
            users_connected: AtomicI64::new(0),
            messages_stored: Default::default(),
            events_delivered: AtomicU64::new(0),
            slow_consumers_closed: AtomicU64::new(0),
            typing_dropped: AtomicU64::new(0),
            limited: Default::default(),
            limit_logged_ms: Default::default(),
            started: std::time::Instant::now(),
            attachment_bytes: AtomicU64::new(0),
            writer_batch_size: Histogram::new(BATCH),
            writer_commit_seconds: Histogram::new(SECONDS),
            routes,
            requests: (0..routes.len() * (STATUSES.len() + 1)).map(|_| AtomicU64::new(0)).collect(),
            request_seconds: routes.iter().map(|_| Histogram::new(SECONDS)).collect(),
        }
    }

    pub fn message_stored(&self, kind: MessageType) {
        self.messages_stored[kind as usize].fetch_add(1, Relaxed);
    }

    /// Counts a finished HTTP request; `route` indexes the names given to `new`.
    pub fn request(&self, route: usize, status: u16, seconds: f64) {
        if route >= self.routes.len() {
            return;
        }
        let column = STATUSES.iter().position(|s| *s == status).unwrap_or(STATUSES.len());
        self.requests[route * (STATUSES.len() + 1) + column].fetch_add(1, Relaxed);
        self.request_seconds[route].observe(seconds);
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        gauge(&mut out, "chatd_ws_connections", "Open WebSocket connections.", self.ws_connections.load(Relaxed));
        gauge(
            &mut out,
            "chatd_users_connected",
            "Users with at least one open connection.",
            self.users_connected.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP chatd_messages_stored_total Messages committed, by type.\n# TYPE chatd_messages_stored_total counter"
        );
        for kind in MessageType::ALL {
            let _ = writeln!(
                out,
                "chatd_messages_stored_total{{type=\"{}\"}} {}",
                kind.as_str(),
                self.messages_stored[kind as usize].load(Relaxed)
            );
        }
        counter(
            &mut out,
            "chatd_events_delivered_total",
            "Event frames queued to connections.",
            self.events_delivered.load(Relaxed),
        );
        counter(
            &mut out,
            "chatd_slow_consumers_closed_total",
            "Connections closed because their outbox was full.",
            self.slow_consumers_closed.load(Relaxed),
        );
        counter(
            &mut out,
            "chatd_typing_dropped_total",
            "Typing events dropped because the receiving connection was behind.",
            self.typing_dropped.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP chatd_limited_total Requests, connections and commands refused by an abuse limit.\n# TYPE chatd_limited_total counter"
        );
        for limit in Limit::ALL {
            let _ = writeln!(
                out,
                "chatd_limited_total{{limit=\"{}\"}} {}",
                limit.as_str(),
                self.limited[limit as usize].load(Relaxed)
            );
        }
        counter(
            &mut out,
            "chatd_attachment_bytes_total",
            "Bytes of attachments stored.",
            self.attachment_bytes.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP chatd_writer_batch_size Commands per committed transaction.\n# TYPE chatd_writer_batch_size histogram"
        );
        self.writer_batch_size.write(&mut out, "chatd_writer_batch_size", "");
        let _ = writeln!(
            out,
            "# HELP chatd_writer_commit_seconds Time to run and commit one batch.\n# TYPE chatd_writer_commit_seconds histogram"
        );
        self.writer_commit_seconds.write(&mut out, "chatd_writer_commit_seconds", "");
        let _ = writeln!(
            out,
            "# HELP chatd_http_requests_total HTTP requests by route and status.\n# TYPE chatd_http_requests_total counter"
        );
        for (r, route) in self.routes.iter().enumerate() {
            for (c, count) in self.requests[r * (STATUSES.len() + 1)..(r + 1) * (STATUSES.len() + 1)].iter().enumerate()
            {
                let n = count.load(Relaxed);
                if n > 0 {
                    let status = STATUSES.get(c).map_or("other".to_owned(), u16::to_string);
                    let _ = writeln!(out, "chatd_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP chatd_http_request_duration_seconds HTTP request latency by route.\n# TYPE chatd_http_request_duration_seconds histogram"
        );
        for (r, route) in self.routes.iter().enumerate() {
            if self.request_seconds[r].count.load(Relaxed) > 0 {
                self.request_seconds[r].write(
                    &mut out,
                    "chatd_http_request_duration_seconds",
                    &format!("route=\"{route}\""),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(5.0);
        let mut out = String::new();
        h.write(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let m = Metrics::new(&["a", "b"]);
        m.request(1, 404, 0.001);
        m.request(1, 404, 0.001);
        m.request(0, 299, 0.001);
        let text = m.render();
        assert!(text.contains("chatd_http_requests_total{route=\"b\",status=\"404\"} 2"), "{text}");
        assert!(text.contains("chatd_http_requests_total{route=\"a\",status=\"other\"} 1"), "{text}");
    }
}
