//! Flags and environment variables → one validated `Config`.
//! Every limit chatd enforces lives here, checked once at start.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command line of the `chatd` binary. Flags override environment
/// variables, which override a `--config` file (`config_file`); a flag
/// given twice keeps the later value.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about = "A small, fast chat server on SQLite", args_override_self = true)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP and WebSocket (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Print a token for an existing user (integrations, tests).
    Token {
        #[arg(long)]
        email: String,
    },
    /// Check the data and static directories, free disk, the open-file
    /// limit, the clock, the secret and the database; non-zero on a failure.
    Doctor,
    /// Copy the database (a consistent snapshot) and the files its messages
    /// use into DEST (new or empty), while a server keeps serving.
    Backup { dest: PathBuf },
    /// Restore a backup into the (empty) data and static directories.
    Restore { src: PathBuf },
    /// Write a user's export (the zip of GET /api/chat/export) to a file.
    Export {
        #[arg(long)]
        email: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints its id. Without --password one is generated and printed.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DbSync {
    /// An acknowledged message survives power loss.
    Full,
    /// An acknowledged message survives a crash of chatd, not of the machine.
    Normal,
}

/// Raw settings as flags and environment give them.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// A TOML file of settings (keys are these flags' names: `data_dir`).
    #[arg(long, env = "CHAT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "CHAT_ADDR", default_value = "127.0.0.1:8000", global = true)]
    pub addr: SocketAddr,
    /// Directory of the database and the generated secret.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Directory of the web client and of stored attachments (chat_files/).
    #[arg(long, env = "CHAT_STATIC_DIR", default_value = "./static", global = true)]
    pub static_dir: PathBuf,
    /// Public base URL used in file links; default http://<addr>.
    #[arg(long, env = "BASE_URL", global = true)]
    pub base_url: Option<String>,
    /// HS256 secret; default: generated once and kept in the data directory.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// PostgreSQL instead of the embedded SQLite (SPEC section 12):
    /// `postgres://user@host:port/db`. Nodes with the same URL share everything.
    #[arg(long, env = "CHAT_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// NATS for live events, typing and presence between nodes: `nats://host:port`.
    #[arg(long, env = "CHAT_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Lifetime of issued tokens, in seconds.
    #[arg(long, env = "CHAT_TOKEN_TTL_SECS", default_value_t = 86_400, global = true)]
    pub token_ttl_secs: u64,
    /// Largest WebSocket message accepted; larger ones close with 1009.
    #[arg(long, env = "CHAT_MAX_WS_MESSAGE_BYTES", default_value_t = 75_497_472, global = true)]
    pub max_ws_message_bytes: usize,
    /// Durability of commits.
    #[arg(long, env = "CHAT_DB_SYNC", value_enum, default_value = "full", global = true)]
    pub db_sync: DbSync,
    /// Comma-separated exact origins allowed to open WebSockets; unset: any.
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", global = true)]
    pub allowed_origins: Option<String>,
    /// Seconds between server pings on a WebSocket.
    #[arg(long, env = "CHAT_WS_PING_SECS", default_value_t = 30, global = true, hide = true)]
    pub ws_ping_secs: u64,
    /// Seconds without any frame from the client before it is dropped.
    #[arg(long, env = "CHAT_WS_IDLE_TIMEOUT_SECS", default_value_t = 60, global = true, hide = true)]
    pub ws_idle_timeout_secs: u64,
    /// Frames that may wait in one connection's outbox before it counts as slow.
    #[arg(long, env = "CHAT_WS_OUTBOX", default_value_t = 1024, global = true, hide = true)]
    pub ws_outbox: usize,
    /// Most TCP connections served at once (lowered to fit the open-file limit).
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 50_000, global = true)]
    pub max_connections: usize,
    /// Hub shards (rounded up to a power of two); default 4 per core.
    #[arg(long, env = "CHAT_HUB_SHARDS", global = true, hide = true)]
    pub hub_shards: Option<usize>,
    /// Members a group may have, its creator included.
    #[arg(long, env = "CHAT_MAX_GROUP_MEMBERS", default_value_t = 1000, global = true)]
    pub max_group_members: usize,
    /// Days stored events are kept for replay; older cursors must resync.
    #[arg(long, env = "CHAT_EVENT_RETENTION_DAYS", default_value_t = 30, global = true)]
    pub event_retention_days: u64,
    /// Days messages are kept; older ones and their files are removed in the
    /// background. Unset: kept forever.
    #[arg(long, env = "CHAT_MESSAGE_RETENTION_DAYS", global = true)]
    pub message_retention_days: Option<u64>,
    /// File links: `signed` (expiring, per render) or `public` (Part I's plain paths).
    #[arg(long, env = "CHAT_FILE_LINKS", value_enum, default_value = "signed", global = true)]
    pub file_links: FileLinks,
    /// Log lines as `text` (human) or `json` (one object per line, for shippers).
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// WAL size past which an idle writer checkpoints and truncates it.
    #[arg(long, env = "CHAT_WAL_LIMIT_BYTES", default_value_t = 64 * 1024 * 1024, global = true, hide = true)]
    pub wal_limit_bytes: u64,
    /// Thumbnails made at once (each on a blocking thread).
    #[arg(long, env = "CHAT_THUMBNAIL_WORKERS", default_value_t = 1, global = true)]
    pub thumbnail_workers: usize,
    /// Seconds an upload waits for a message to use it before it is removed.
    #[arg(long, env = "CHAT_UPLOAD_TTL_SECS", default_value_t = 3600, global = true)]
    pub upload_ttl_secs: u64,
    /// The least lifetime of a signed file link, in seconds.
    #[arg(long, env = "CHAT_FILE_LINK_TTL_SECS", default_value_t = 86_400, global = true)]
    pub file_link_ttl_secs: u64,
    /// Rendered pages of messages kept in memory (newest page per room and
    /// page size); 0 turns the cache off.
    #[arg(long, env = "CHAT_PAGE_CACHE_ENTRIES", default_value_t = 4096, global = true)]
    pub page_cache_entries: usize,
    /// Bytes the cached pages may hold together; 0 turns the cache off.
    #[arg(long, env = "CHAT_PAGE_CACHE_BYTES", default_value_t = 64 * 1024 * 1024, global = true)]
    pub page_cache_bytes: usize,
    /// Bytes of a WebSocket's read buffer, held for the connection's life;
    /// large messages are read ahead in 64 KiB chunks whatever its size.
    #[arg(long, env = "CHAT_WS_READ_BUFFER_BYTES", default_value_t = 1024, global = true)]
    pub ws_read_buffer_bytes: usize,
    #[command(flatten)]
    pub limits: LimitSettings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FileLinks {
    /// `?exp=&sig=` on every file URL; the file is served only with a valid one.
    Signed,
    /// Anyone with the path gets the file.
    Public,
}

/// Whether the rate limits, throttles and per-IP/per-user caps apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// Defences against abuse: timeouts and memory budgets (always on), and rate
/// limits, throttles and caps (off with `CHAT_RATE_LIMITS=off`, for
/// benchmarks and trusted networks).
#[derive(Debug, Clone, Args)]
pub struct LimitSettings {
    /// Rate limits, throttles and per-IP/per-user caps: on or off. Timeouts
    /// and memory budgets stay on either way.
    #[arg(long, env = "CHAT_RATE_LIMITS", value_enum, default_value = "on", global = true)]
    pub rate_limits: Switch,
    /// Seconds a client may take to send a request's head (also the idle
    /// time before the first request of a connection).
    #[arg(long, env = "CHAT_HEADER_TIMEOUT_SECS", default_value_t = 10, global = true)]
    pub header_timeout_secs: u64,
    /// Seconds a client may take to send a request's body.
    #[arg(long, env = "CHAT_BODY_TIMEOUT_SECS", default_value_t = 30, global = true)]
    pub body_timeout_secs: u64,
    /// Seconds a keep-alive connection may sit idle between requests.
    #[arg(long, env = "CHAT_KEEPALIVE_TIMEOUT_SECS", default_value_t = 60, global = true)]
    pub keepalive_timeout_secs: u64,
    /// Seconds from the upgrade request to a running WebSocket.
    #[arg(long, env = "CHAT_WS_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10, global = true)]
    pub ws_handshake_timeout_secs: u64,
    /// Most TCP connections from one IP address at once.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 128, global = true)]
    pub max_connections_per_ip: usize,
    /// Most WebSockets one user may hold open at once.
    #[arg(long, env = "CHAT_WS_PER_USER", default_value_t = 32, global = true)]
    pub ws_per_user: usize,
    /// WebSocket commands (sends, read marks) per second and user, sustained.
    #[arg(long, env = "CHAT_WS_COMMANDS_PER_SEC", default_value_t = 20.0, global = true)]
    pub ws_commands_per_sec: f64,
    /// WebSocket commands one user may send in a burst.
    #[arg(long, env = "CHAT_WS_COMMAND_BURST", default_value_t = 60, global = true)]
    pub ws_command_burst: u32,
    /// Typing events per second and user, sustained (the excess is dropped).
    #[arg(long, env = "CHAT_WS_TYPING_PER_SEC", default_value_t = 2.0, global = true)]
    pub ws_typing_per_sec: f64,
    /// Bytes that all connections together may hold in unfinished WebSocket
    /// frames; past it, the connection that asks for more is closed (1013).
    #[arg(long, env = "CHAT_WS_FRAME_BUDGET_BYTES", default_value_t = 256 * 1024 * 1024, global = true)]
    pub ws_frame_budget_bytes: usize,
    /// Bytes of attachments one user may store; 0 for no quota.
    #[arg(long, env = "CHAT_USER_QUOTA_BYTES", default_value_t = 1 << 30, global = true)]
    pub user_quota_bytes: u64,
    /// Login attempts per IP address and minute (a burst of as many is allowed).
    #[arg(long, env = "CHAT_LOGINS_PER_IP_PER_MIN", default_value_t = 10, global = true)]
    pub logins_per_ip_per_min: u32,
    /// Failed logins of one account within 15 minutes before it backs off.
    #[arg(long, env = "CHAT_LOGIN_FAILURES_PER_ACCOUNT", default_value_t = 5, global = true)]
    pub login_failures_per_account: u32,
    /// Registrations per IP address and hour.
    #[arg(long, env = "CHAT_REGISTRATIONS_PER_IP_PER_HOUR", default_value_t = 10, global = true)]
    pub registrations_per_ip_per_hour: u32,
    /// Searches (of users and of messages) per user and minute.
    #[arg(long, env = "CHAT_SEARCHES_PER_MIN", default_value_t = 60, global = true)]
    pub searches_per_min: u32,
    /// Comma-separated proxy addresses (IPs or CIDR ranges) whose
    /// `X-Forwarded-For` is believed; unset: the header is ignored.
    #[arg(long, env = "CHAT_TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<String>,
}

/// The validated configuration every part of chatd reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub static_dir: PathBuf,
    /// Without a trailing slash.
    pub base_url: String,
    pub jwt_secret: Option<String>,
    /// The cluster's database (none: the embedded SQLite file).
    pub database_url: Option<String>,
    /// The cluster's bus (none: this node's commits reach only its own
    /// connections at once; others find them by polling the database).
    pub nats_url: Option<String>,
    pub token_ttl: Duration,
    pub max_ws_message_bytes: usize,
    pub db_sync: DbSync,
    pub allowed_origins: Option<Vec<String>>,
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    pub ws_outbox: usize,
    pub max_connections: usize,
    pub hub_shards: usize,
    /// Largest REST request body.
    pub max_body_bytes: usize,
    /// Most write commands committed in one transaction.
    pub writer_batch_max: usize,
    /// Read connections in the pool.
    pub read_pool_size: u32,
    pub max_group_members: usize,
    /// How long stored events are kept for replay.
    pub event_retention: Duration,
    /// How long messages are kept (`None`: forever).
    pub message_retention: Option<Duration>,
    pub file_links: FileLinks,
    pub file_link_ttl_secs: u64,
    pub upload_ttl: Duration,
    pub thumbnail_workers: usize,
    pub wal_limit_bytes: u64,
    /// Bounds of the rendered-page cache (`pages`); either 0: no cache.
    pub page_cache_entries: usize,
    pub page_cache_bytes: usize,
    pub ws_read_buffer_bytes: usize,
    pub limits: Limits,
}

/// Validated abuse limits. The rates are `None` when `CHAT_RATE_LIMITS=off`
/// (or when set to zero), so every check reads "no limit" the same way.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub ws_handshake_timeout: Duration,
    pub ws_frame_budget_bytes: usize,
    pub max_connections_per_ip: Option<usize>,
    pub ws_per_user: Option<usize>,
    pub ws_commands: Option<Rate>,
    pub ws_typing: Option<Rate>,
    pub user_quota_bytes: Option<u64>,
    pub logins_per_ip: Option<Rate>,
    pub login_failures_per_account: Option<u32>,
    pub registrations_per_ip: Option<Rate>,
    pub searches: Option<Rate>,
    pub trusted_proxies: Vec<IpNet>,
}

/// A token bucket's shape: `per_sec` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

impl Rate {
    pub fn per_minute(count: u32) -> Option<Rate> {
        (count > 0).then(|| Rate { per_sec: f64::from(count) / 60.0, burst: f64::from(count) })
    }

    pub fn per_hour(count: u32) -> Option<Rate> {
        (count > 0).then(|| Rate { per_sec: f64::from(count) / 3600.0, burst: f64::from(count) })
    }
}

/// An IP address or a CIDR range (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr.parse::<IpAddr>().ok()?, Some(prefix.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4 addresses seen through an IPv6 socket (`::ffff:a.b.c.d`) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    pub fn from_settings(s: &Settings) -> Result<Config, ConfigError> {
        if s.token_ttl_secs == 0 || s.token_ttl_secs > MAX_TOKEN_TTL_SECS {
            return Err(ConfigError(format!("CHAT_TOKEN_TTL_SECS must be in 1..={MAX_TOKEN_TTL_SECS} (one year)")));
        }
        if s.max_ws_message_bytes < 1024 {
            return Err(ConfigError("CHAT_MAX_WS_MESSAGE_BYTES must be at least 1024".into()));
        }
        if s.ws_ping_secs == 0 || s.ws_idle_timeout_secs <= s.ws_ping_secs {
            return Err(ConfigError("the idle timeout must exceed the ping interval".into()));
        }
        if s.ws_outbox == 0 || s.max_connections == 0 {
            return Err(ConfigError("outbox and connection limits must be positive".into()));
        }
        let base_url = match &s.base_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_owned()
            }
            Some(url) => return Err(ConfigError(format!("BASE_URL must start with http:// or https://, got {url:?}"))),
            None => format!("http://{}", s.addr),
        };
        let allowed_origins = s.allowed_origins.as_ref().map(|list| {
            list.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
        });
        if let Some(secret) = &s.jwt_secret
            && secret.len() < 32
        {
            return Err(ConfigError("CHAT_JWT_SECRET must be at least 32 bytes".into()));
        }
        let limits = Limits::from_settings(&s.limits)?;
        if s.max_group_members < 2 {
            return Err(ConfigError("CHAT_MAX_GROUP_MEMBERS must be at least 2".into()));
        }
        if !(1..=16).contains(&s.thumbnail_workers) {
            return Err(ConfigError("CHAT_THUMBNAIL_WORKERS must be in 1..=16".into()));
        }
        if !(1..=604_800).contains(&s.upload_ttl_secs) {
            return Err(ConfigError("CHAT_UPLOAD_TTL_SECS must be in 1..=604800".into()));
        }
        if !(60..=31_536_000).contains(&s.file_link_ttl_secs) {
            return Err(ConfigError("CHAT_FILE_LINK_TTL_SECS must be in 60..=31536000".into()));
        }
        if !(1..=3650).contains(&s.event_retention_days) {
            return Err(ConfigError("CHAT_EVENT_RETENTION_DAYS must be in 1..=3650".into()));
        }
        if !(512..=1 << 20).contains(&s.ws_read_buffer_bytes) {
            return Err(ConfigError("CHAT_WS_READ_BUFFER_BYTES must be in 512..=1048576".into()));
        }
        if s.page_cache_entries > 1_000_000 {
            return Err(ConfigError("CHAT_PAGE_CACHE_ENTRIES must be at most 1000000".into()));
        }
        if let Some(url) = s.database_url.as_deref().filter(|url| !url.is_empty())
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError("CHAT_DATABASE_URL must be a postgres:// URL".into()));
        }
        if let Some(url) = s.nats_url.as_deref().filter(|url| !url.is_empty())
            && !url.starts_with("nats://")
        {
            return Err(ConfigError("CHAT_NATS_URL must be a nats:// URL".into()));
        }
        if s.nats_url.as_deref().is_some_and(|url| !url.is_empty())
            && s.database_url.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError("CHAT_NATS_URL needs CHAT_DATABASE_URL: nodes share one database".into()));
        }
        if s.message_retention_days.is_some_and(|days| !(1..=36_500).contains(&days)) {
            return Err(ConfigError("CHAT_MESSAGE_RETENTION_DAYS must be in 1..=36500".into()));
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hub_shards = s.hub_shards.unwrap_or(cores * 4).clamp(1, 1024).next_power_of_two();
        Ok(Config {
            addr: s.addr,
            data_dir: s.data_dir.clone(),
            static_dir: s.static_dir.clone(),
            base_url,
            jwt_secret: s.jwt_secret.clone(),
            database_url: s.database_url.clone().filter(|url| !url.is_empty()),
            nats_url: s.nats_url.clone().filter(|url| !url.is_empty()),
            token_ttl: Duration::from_secs(s.token_ttl_secs),
            max_ws_message_bytes: s.max_ws_message_bytes,
            db_sync: s.db_sync,
            allowed_origins,
            ws_ping_interval: Duration::from_secs(s.ws_ping_secs),
            ws_idle_timeout: Duration::from_secs(s.ws_idle_timeout_secs),
            ws_outbox: s.ws_outbox,
            max_connections: s.max_connections,
            hub_shards,
            max_body_bytes: 1024 * 1024,
            writer_batch_max: 512,
            read_pool_size: (cores as u32).clamp(2, 16),
            max_group_members: s.max_group_members,
            event_retention: Duration::from_secs(s.event_retention_days.saturating_mul(86_400)),
            message_retention: s.message_retention_days.map(|days| Duration::from_secs(days * 86_400)),
            file_links: s.file_links,
            file_link_ttl_secs: s.file_link_ttl_secs,
            upload_ttl: Duration::from_secs(s.upload_ttl_secs),
            thumbnail_workers: s.thumbnail_workers,
            wal_limit_bytes: s.wal_limit_bytes,
            page_cache_entries: s.page_cache_entries,
            page_cache_bytes: s.page_cache_bytes,
            ws_read_buffer_bytes: s.ws_read_buffer_bytes,
            limits,
        })
    }

    /// A configuration for tests: everything under `dir`, an ephemeral port,
    /// rate limits off (tests of the limits turn them on).
    pub fn for_tests(dir: &std::path::Path) -> Config {
        Config::for_tests_from(Settings::parse_from_env_free(dir))
    }

    /// A test configuration with every rate limit on, at its default.
    pub fn for_tests_with_rate_limits(dir: &std::path::Path) -> Config {
        Config::for_tests_from(Settings::parse_from_env_free(dir).with_rate_limits())
    }

    fn for_tests_from(settings: Settings) -> Config {
        match Config::from_settings(&settings) {
            Ok(config) => config,
            Err(e) => panic!("test config: {e}"),
        }
    }
}

impl Settings {
    fn parse_from_env_free(dir: &std::path::Path) -> Settings {
        Settings {
            config: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.join("data"),
            static_dir: dir.join("static"),
            base_url: None,
            jwt_secret: None,
            database_url: None,
            nats_url: None,
            token_ttl_secs: 86_400,
            max_ws_message_bytes: 75_497_472,
            db_sync: DbSync::Normal,
            allowed_origins: None,
            ws_ping_secs: 30,
            ws_idle_timeout_secs: 60,
            ws_outbox: 1024,
            max_connections: 10_000,
            hub_shards: Some(4),
            max_group_members: 1000,
            event_retention_days: 30,
            message_retention_days: None,
            file_links: FileLinks::Signed,
            file_link_ttl_secs: 86_400,
            upload_ttl_secs: 3600,
            thumbnail_workers: 1,
            log_format: LogFormat::Text,
            wal_limit_bytes: 64 * 1024 * 1024,
            page_cache_entries: 4096,
            page_cache_bytes: 64 * 1024 * 1024,
            ws_read_buffer_bytes: 1024,
            limits: LimitSettings {
                rate_limits: Switch::Off,
                header_timeout_secs: 10,
                body_timeout_secs: 30,
                keepalive_timeout_secs: 60,
                ws_handshake_timeout_secs: 10,
                max_connections_per_ip: 128,
                ws_per_user: 32,
                ws_commands_per_sec: 20.0,
                ws_command_burst: 60,
                ws_typing_per_sec: 2.0,
                ws_frame_budget_bytes: 256 * 1024 * 1024,
                user_quota_bytes: 1 << 30,
                logins_per_ip_per_min: 10,
                login_failures_per_account: 5,
                registrations_per_ip_per_hour: 10,
                searches_per_min: 60,
                trusted_proxies: None,
            },
        }
    }

    /// The test settings with every rate limit on, at their defaults.
    pub fn with_rate_limits(mut self) -> Settings {
        self.limits.rate_limits = Switch::On;
        self
    }
}

/// The longest token lifetime accepted: one year.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

impl Limits {
    fn from_settings(s: &LimitSettings) -> Result<Limits, ConfigError> {
        for (name, secs) in [
            ("CHAT_HEADER_TIMEOUT_SECS", s.header_timeout_secs),
            ("CHAT_BODY_TIMEOUT_SECS", s.body_timeout_secs),
            ("CHAT_KEEPALIVE_TIMEOUT_SECS", s.keepalive_timeout_secs),
            ("CHAT_WS_HANDSHAKE_TIMEOUT_SECS", s.ws_handshake_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(ConfigError(format!("{name} must be in 1..=3600")));
            }
        }
        if s.ws_frame_budget_bytes < 1024 * 1024 {
            return Err(ConfigError("CHAT_WS_FRAME_BUDGET_BYTES must be at least 1 MiB".into()));
        }
        let valid_rate = |r: f64| r.is_finite() && r >= 0.0;
        if !valid_rate(s.ws_commands_per_sec) || !valid_rate(s.ws_typing_per_sec) {
            return Err(ConfigError("WebSocket rates must be finite and not negative".into()));
        }
        let mut trusted_proxies = Vec::new();
        for entry in s.trusted_proxies.iter().flat_map(|list| list.split(',')).map(str::trim).filter(|e| !e.is_empty())
        {
            let net = IpNet::parse(entry)
                .ok_or_else(|| ConfigError(format!("CHAT_TRUSTED_PROXIES: {entry:?} is not an IP address or range")))?;
            trusted_proxies.push(net);
        }
        let on = s.rate_limits == Switch::On;
        let rate = |per_sec: f64, burst: f64| (on && per_sec > 0.0 && burst >= 1.0).then_some(Rate { per_sec, burst });
        let cap = |n: usize| (on && n > 0).then_some(n);
        Ok(Limits {
            header_timeout: Duration::from_secs(s.header_timeout_secs),
            body_timeout: Duration::from_secs(s.body_timeout_secs),
            keepalive_timeout: Duration::from_secs(s.keepalive_timeout_secs),
            ws_handshake_timeout: Duration::from_secs(s.ws_handshake_timeout_secs),
            ws_frame_budget_bytes: s.ws_frame_budget_bytes,
            max_connections_per_ip: cap(s.max_connections_per_ip),
            ws_per_user: cap(s.ws_per_user),
            ws_commands: rate(s.ws_commands_per_sec, f64::from(s.ws_command_burst)),
            // A burst of a few typing events covers switching rooms.
            ws_typing: rate(s.ws_typing_per_sec, (s.ws_typing_per_sec * 3.0).max(4.0)),
            user_quota_bytes: (on && s.user_quota_bytes > 0).then_some(s.user_quota_bytes),
            logins_per_ip: Rate::per_minute(s.logins_per_ip_per_min).filter(|_| on),
            login_failures_per_account: (on && s.login_failures_per_account > 0)
                .then_some(s.login_failures_per_account),
            registrations_per_ip: Rate::per_hour(s.registrations_per_ip_per_hour).filter(|_| on),
            searches: Rate::per_minute(s.searches_per_min).filter(|_| on),
            trusted_proxies,
        })
    }

    /// Whether `ip` is a proxy whose `X-Forwarded-For` is believed.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_retention_is_off_by_default_and_checked_when_set() {
        let dir = tempfile::tempdir().expect("dir");
        let mut settings = Settings::parse_from_env_free(dir.path());
        assert_eq!(Config::from_settings(&settings).map(|c| c.message_retention).ok(), Some(None));
        settings.message_retention_days = Some(7);
        let config = Config::from_settings(&settings).map(|c| c.message_retention).ok();
        assert_eq!(config, Some(Some(Duration::from_secs(7 * 86_400))));
        for bad in [0, 36_501] {
            settings.message_retention_days = Some(bad);
            let e = Config::from_settings(&settings).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("CHAT_MESSAGE_RETENTION_DAYS must be in 1..=36500"), "{bad}: {e}");
        }
    }
}
