//! Flags and environment variables → one validated `Config`.
//! Every limit chatd enforces lives here, checked once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command line of the `chatd` binary. Flags override environment variables.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about = "A small, fast chat server on SQLite")]
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
    /// Most TCP connections served at once.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 50_000, global = true, hide = true)]
    pub max_connections: usize,
    /// Hub shards (rounded up to a power of two); default 4 per core.
    #[arg(long, env = "CHAT_HUB_SHARDS", global = true, hide = true)]
    pub hub_shards: Option<usize>,
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
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    pub fn from_settings(s: &Settings) -> Result<Config, ConfigError> {
        if s.token_ttl_secs == 0 {
            return Err(ConfigError("CHAT_TOKEN_TTL_SECS must be positive".into()));
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
            && secret.len() < 16
        {
            return Err(ConfigError("CHAT_JWT_SECRET must be at least 16 bytes".into()));
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hub_shards = s.hub_shards.unwrap_or(cores * 4).clamp(1, 1024).next_power_of_two();
        Ok(Config {
            addr: s.addr,
            data_dir: s.data_dir.clone(),
            static_dir: s.static_dir.clone(),
            base_url,
            jwt_secret: s.jwt_secret.clone(),
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
        })
    }

    /// A configuration for tests: everything under `dir`, an ephemeral port.
    pub fn for_tests(dir: &std::path::Path) -> Config {
        let settings = Settings::parse_from_env_free(dir);
        match Config::from_settings(&settings) {
            Ok(config) => config,
            Err(e) => panic!("test config: {e}"),
        }
    }
}

impl Settings {
    fn parse_from_env_free(dir: &std::path::Path) -> Settings {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.join("data"),
            static_dir: dir.join("static"),
            base_url: None,
            jwt_secret: None,
            token_ttl_secs: 86_400,
            max_ws_message_bytes: 75_497_472,
            db_sync: DbSync::Normal,
            allowed_origins: None,
            ws_ping_secs: 30,
            ws_idle_timeout_secs: 60,
            ws_outbox: 1024,
            max_connections: 10_000,
            hub_shards: Some(4),
        }
    }
}
