//! Storage: one SQLite file in WAL mode. Reads go through an r2d2 pool of
//! read-only connections on blocking threads; every write goes through the
//! single writer thread (`writer`). The rest of chatd reads through the
//! typed functions of `api`. Nothing here knows about HTTP.

pub mod api;
pub mod export;
pub mod migrate;
pub mod pg;
pub mod reads;
pub mod search;
pub mod writer;

use std::path::{Path, PathBuf};

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use crate::config::{Config, DbSync};
pub use writer::{Committed, EventSink, NullSink, WriterHandle};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("Storage quota exceeded: each user may keep {:.1}MB of attachments", *.0 as f64 / (1024.0 * 1024.0))]
    QuotaExceeded(u64),
    #[error("A group may have at most {0} members")]
    TooManyMembers(usize),
    #[error("A message may carry at most {0} different reactions")]
    TooManyReactions(usize),
    #[error("the writer has stopped")]
    Unavailable,
    /// The database cannot be reached (PostgreSQL down, pool exhausted).
    #[error("the database is unavailable: {0}")]
    Down(String),
    /// A statement PostgreSQL refused.
    #[error("database: {0}")]
    Database(String),
    /// What only the embedded store does (reads of its own SQLite file).
    #[error("This is not available when chatd runs on PostgreSQL (CHAT_DATABASE_URL)")]
    NotInCluster,
    #[error("commit failed: {0}")]
    CommitFailed(String),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("blocking task failed: {0}")]
    Join(String),
}

pub type ReadPool = Pool<SqliteConnectionManager>;

/// The database file inside the data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("chatd.sqlite3")
}

/// Creates the database file readable by its owner only (SQLite gives the
/// `-wal` and `-shm` files the same mode), and narrows an existing one.
#[cfg(unix)]
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::CommitFailed(format!("cannot prepare {}: {e}", path.display()));
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(io)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Pragmas of the one write connection.
pub fn open_writer(path: &Path, sync: DbSync) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    let synchronous = match sync {
        DbSync::Full => "FULL",
        DbSync::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16000;"
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Bytes the WAL file is cut back to whenever it restarts from its
/// beginning (after a checkpoint caught up), so a burst does not leave a
/// large file behind for the life of the process.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// Checkpoints the WAL from its own thread and connection, so the writer
/// never stalls on a checkpoint's fsync (the writer runs with
/// `wal_autocheckpoint = 0`). PASSIVE never blocks the writer or readers;
/// the thread ends when the database can no longer be opened or the process
/// exits. Shutdown still checkpoints (TRUNCATE) on the writer.
fn spawn_checkpointer(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA busy_timeout = 1000;")?;
    std::thread::Builder::new()
        .name("chatd-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                // (busy, wal frames, frames checkpointed)
                let state: rusqlite::Result<(i64, i64, i64)> =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
                if let Err(e) = state {
                    tracing::debug!(error = %e, "checkpoint skipped");
                }
            }
        })
        .map_err(|e| StoreError::CommitFailed(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

/// The pool of read-only connections.
/// The search index is attached to each as `search`.
pub fn open_read_pool(path: &Path, index: &Path, size: u32) -> Result<ReadPool, StoreError> {
    let index = index.to_owned();
    let manager = SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI)
        .with_init(move |c| {
            search::attach(c, &index)?;
            c.execute_batch(
                "PRAGMA busy_timeout = 5000;
                 PRAGMA cache_size = -8000;
                 PRAGMA mmap_size = 268435456;
                 PRAGMA temp_store = MEMORY;",
            )?;
            c.set_prepared_statement_cache_capacity(64);
            Ok(())
        });
    Ok(Pool::builder().max_size(size).min_idle(Some(1)).build(manager)?)
}

/// Reads off the async threads: on SQLite, `f` runs on a blocking thread
/// with a pooled read-only connection; on PostgreSQL, `api` asks `pg`.
#[derive(Clone)]
pub struct Reader {
    backend: ReadBackend,
}

#[derive(Clone)]
enum ReadBackend {
    Sqlite {
        pool: ReadPool,
        /// One permit per pooled connection, taken before a blocking thread
        /// is started, so a burst of reads waits here instead of parking a
        /// thread per request in front of the pool.
        permits: std::sync::Arc<tokio::sync::Semaphore>,
    },
    Postgres(std::sync::Arc<pg::Pg>),
}

impl Reader {
    pub fn new(pool: ReadPool) -> Reader {
        let size = pool.max_size() as usize;
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(size));
        Reader { backend: ReadBackend::Sqlite { pool, permits } }
    }

    pub fn postgres(pg: std::sync::Arc<pg::Pg>) -> Reader {
        Reader { backend: ReadBackend::Postgres(pg) }
    }

    /// The PostgreSQL store, when this is one.
    pub(in crate::store) fn pg(&self) -> Option<&pg::Pg> {
        match &self.backend {
            ReadBackend::Postgres(pg) => Some(pg),
            ReadBackend::Sqlite { .. } => None,
        }
    }

    pub(in crate::store) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let ReadBackend::Sqlite { pool, permits } = &self.backend else { return Err(StoreError::NotInCluster) };
        let pool = pool.clone();
        let permit = permits.clone().acquire_owned().await.map_err(|_| StoreError::Unavailable)?;
        tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            let result = f(&conn);
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Synchronous access, for subcommands and tests (SQLite only).
    pub fn run_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let ReadBackend::Sqlite { pool, .. } = &self.backend else { return Err(StoreError::NotInCluster) };
        let conn = pool.get()?;
        f(&conn)
    }
}

/// Who opens the store. Only a serving process owns presence: a subcommand
/// run beside a live server (`chatd token`) must not mark its users offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opener {
    Server,
    Tool,
}

/// Opens (creating if needed) the database under `config.data_dir`, applies
/// migrations, and starts the writer thread that hands events to `sink`.
pub fn open(config: &Config, sink: Box<dyn EventSink>, opener: Opener) -> Result<(Reader, WriterHandle), StoreError> {
    let path = db_path(&config.data_dir);
    create_private(&path)?;
    let mut conn = open_writer(&path, config.db_sync)?;
    migrate::apply(&mut conn)?;
    if opener == Opener::Server {
        // Nobody is connected to a server that is only starting.
        conn.execute("UPDATE user_presence SET is_online = 0 WHERE is_online = 1", [])?;
    }
    let options = writer::WriterOptions {
        batch_max: config.writer_batch_max,
        user_quota_bytes: config.limits.user_quota_bytes,
        max_group_members: config.max_group_members,
        wal_path: Some({
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            wal.into()
        }),
        wal_limit_bytes: config.wal_limit_bytes,
    };
    // The index's file exists before any reader attaches it; only a server
    // keeps it up to date (searches read the rest from the event stream).
    let index = search::index_path(&config.data_dir);
    create_private(&index)?;
    search::create(&index)?;
    let poke = match opener {
        Opener::Server => Some(search::spawn_indexer(&index, &path)?),
        Opener::Tool => None,
    };
    let writer = writer::spawn(conn, sink, options, poke)?;
    spawn_checkpointer(&path)?;
    let pool = open_read_pool(&path, &index, config.read_pool_size)?;
    Ok((Reader::new(pool), writer))
}
