//! The PostgreSQL store (SPEC section 12, `CHAT_DATABASE_URL`): the same
//! typed reads (`reads`) and the same writer commands (`writes`) as the
//! embedded store, over a deadpool of tokio-postgres connections, so that
//! several chatd nodes share one database. The event stream's positions
//! come from a sequence taken before commit; `stream` releases them in
//! order only behind the safe horizon (ARCHITECTURE.md, "Several writers").

pub mod extras;
pub mod groups;
pub mod later;
pub mod reads;
pub mod search;
pub mod stream;
pub mod writes;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::StoreError;

/// The schema, in order; each applied once, recorded in `schema_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../../sql/postgres/001_init.sql")),
    (2, include_str!("../../../sql/postgres/002_search.sql")),
];

/// How long a request waits for a pooled connection (or a new one) before
/// it is answered 503: a database that is down fails requests quickly.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The shared store of one node.
pub struct Pg {
    pool: Pool,
    /// The highest position this node has released to its connections:
    /// every position at or below it is committed or will never be. Replays
    /// read no further, so no cursor a client holds can skip a late commit.
    released: AtomicI64,
    /// This process's name among the nodes (presence sessions are per node).
    node_id: String,
    /// Wakes this node's tail (`stream::tail` waits on it).
    tail: Arc<tokio::sync::Notify>,
}

impl Pg {
    /// Connects (the pool opens connections as they are needed), applies
    /// the migrations under an advisory lock (nodes may start together),
    /// and reads where the stream stands.
    pub async fn open(url: &str, pool_size: usize) -> Result<Arc<Pg>, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Down(format!("CHAT_DATABASE_URL is not a PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Down(format!("cannot build the PostgreSQL pool: {e}")))?;
        let pg = Arc::new(Pg {
            pool,
            released: AtomicI64::new(0),
            node_id: new_node_id()?,
            tail: Arc::new(tokio::sync::Notify::new()),
        });
        pg.migrate().await?;
        let head = stream::safe_head(&pg.client().await?).await?;
        pg.released.store(head, Ordering::Release);
        Ok(pg)
    }

    /// A pooled connection; 503 when the database cannot be reached.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Down(e.to_string()))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// What wakes this node's tail: its own commits and the bus's pokes.
    pub fn tail_bell(&self) -> Arc<tokio::sync::Notify> {
        self.tail.clone()
    }

    /// Waits (bounded) until this node has released every position
    /// committed before the call: a connection made after a command was
    /// answered replays that command's events before `synced`, on any node.
    pub async fn catch_up_to(&self, committed: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.released() < committed && tokio::time::Instant::now() < deadline {
            self.tail.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The highest position released to this node's connections.
    pub fn released(&self) -> i64 {
        self.released.load(Ordering::Acquire)
    }

    pub(crate) fn release(&self, position: i64) {
        self.released.fetch_max(position, Ordering::AcqRel);
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // One node migrates; the others wait here and find nothing to do.
        tx.exec("SELECT pg_advisory_xact_lock(7210, 481)", &[]).await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY)").await?;
        for (version, sql) in MIGRATIONS {
            let done = tx.row_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version]).await?;
            if done.is_none() {
                tx.batch_execute(sql).await?;
                tx.exec("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await?;
                tracing::info!(version, "PostgreSQL schema migrated");
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The database a PostgreSQL URL names, if it is one.
pub fn database_name(url: &str) -> Option<String> {
    url.parse::<tokio_postgres::Config>().ok().and_then(|c| c.get_dbname().map(str::to_owned))
}

/// A fresh random node name: a restarted node is a new node (the old one's
/// sessions go when its heartbeat stops).
fn new_node_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Down(format!("no randomness for a node id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Statements through the connection's statement cache: each SQL text is
/// prepared once per pooled connection (deadpool keeps the cache) and then
/// runs in one round trip, where a plain `query(&str)` parses, plans and
/// describes it again each time (two round trips). Implemented for pooled
/// connections and their transactions alike.
pub trait Sql: GenericClient + Sync {
    /// Every row the statement answers.
    fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> impl Future<Output = PgResult<Vec<Row>>> + Send {
        async move { self.query(&self.prepare_cached(sql).await?, params).await }
    }

    /// Exactly one row (an error otherwise).
    fn row(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> impl Future<Output = PgResult<Row>> + Send {
        async move { self.query_one(&self.prepare_cached(sql).await?, params).await }
    }

    /// At most one row.
    fn row_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> impl Future<Output = PgResult<Option<Row>>> + Send {
        async move { self.query_opt(&self.prepare_cached(sql).await?, params).await }
    }

    /// How many rows the statement changed.
    fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> impl Future<Output = PgResult<u64>> + Send {
        async move { self.execute(&self.prepare_cached(sql).await?, params).await }
    }
}

impl<C: GenericClient + Sync> Sql for C {}

type PgResult<T> = Result<T, tokio_postgres::Error>;

impl From<tokio_postgres::Error> for StoreError {
    /// An error the server reported is a failed statement; anything else
    /// (a closed connection, a timeout) means the database is unreachable.
    fn from(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => StoreError::Database(format!("{}: {}", db.code().code(), db.message())),
            None => StoreError::Down(e.to_string()),
        }
    }
}

/// Whether a statement failed on a unique index.
pub fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

#[cfg(test)]
pub(crate) mod testing {
    /// A fresh database on the `CHATD_IT_POSTGRES` server (the store's
    /// PostgreSQL tests are `#[ignore]`d; `.ci/cluster.sh` runs them with
    /// one): answers its URL.
    pub async fn fresh_database(prefix: &str) -> String {
        let url = std::env::var("CHATD_IT_POSTGRES").expect("CHATD_IT_POSTGRES: a PostgreSQL server for this test");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("random");
        let name = format!("{prefix}_{}", u64::from_le_bytes(bytes));
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
        format!("{base}/{name}")
    }

    /// A connection of its own (not pooled), for a test's hand-made
    /// transactions.
    pub async fn connect(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
    }
}
