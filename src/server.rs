//! The accept loop and the shutdown path. `start` builds the state and binds
//! nothing itself (the caller owns the listener); `Server::run` accepts until
//! the shutdown future resolves, then drains: HTTP connections through
//! hyper-util's graceful shutdown, WebSockets closed with 1001 after what was
//! committed is sent, the writer finished and the WAL checkpointed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::auth::Keys;
use crate::config::Config;
use crate::http::router::ROUTE_NAMES;
use crate::hub::{HubHandle, HubSink};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("cannot load the JWT secret: {0}")]
    Secret(std::io::Error),
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    #[error("cannot start the password hashing threads: {0}")]
    Hasher(std::io::Error),
}

/// A built server, ready to accept.
pub struct Server {
    pub state: Arc<AppState>,
    shutdown_tx: watch::Sender<bool>,
}

/// Builds everything: directories, secret, database (migrated), writer, hub.
/// Must run inside a tokio runtime (the hub spawns its shards).
pub fn start(config: Config) -> Result<Server, StartError> {
    for dir in [&config.data_dir, &config.static_dir] {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Dir { path: dir.display().to_string(), source })?;
    }
    let removed = crate::attach::prepare_dirs(&config.static_dir)
        .map_err(|source| StartError::Dir { path: config.static_dir.display().to_string(), source })?;
    if removed > 0 {
        tracing::info!(removed, "removed temporary files left by a crash");
    }
    let keys =
        Keys::load(config.jwt_secret.as_deref(), &config.data_dir, config.token_ttl).map_err(StartError::Secret)?;
    let metrics = Arc::new(Metrics::new(ROUTE_NAMES));
    let base_url: Arc<str> = config.base_url.as_str().into();
    // The hub needs the writer (for presence) and the writer needs the hub
    // (as its sink): the sink is handed over through a channel-free slot.
    let slot = Arc::new(std::sync::OnceLock::<HubHandle>::new());
    let sink = LateSink { slot: slot.clone(), metrics: metrics.clone(), sink: None, early: Vec::new() };
    let (reader, writer) = store::open(&config, Box::new(sink))?;
    let hub = HubHandle::start(config.hub_shards, base_url.clone(), writer.clone(), metrics.clone());
    let _ = slot.set(hub.clone());
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hasher = crate::auth::password::HashPool::start(cores, 64).map_err(StartError::Hasher)?;
    let max_user_id =
        reader.run_blocking(|c| Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM users", [], |r| r.get(0))?))?;
    let (shutdown_tx, shutting_down) = watch::channel(false);
    let state = Arc::new(AppState {
        config,
        keys,
        reader,
        writer,
        hub,
        metrics,
        dummy_hash: tokio::sync::OnceCell::new(),
        ws_tasks: TaskTracker::new(),
        shutting_down,
        base_url,
        hasher,
        max_user_id: std::sync::atomic::AtomicI64::new(max_user_id),
    });
    Ok(Server { state, shutdown_tx })
}

/// The writer's sink. The writer starts before the hub (the hub needs the
/// writer for presence), so the hub arrives through a slot; events committed
/// before it is there (none in practice) are kept and handed over.
struct LateSink {
    slot: Arc<std::sync::OnceLock<HubHandle>>,
    metrics: Arc<Metrics>,
    sink: Option<HubSink>,
    early: Vec<crate::model::Envelope>,
}

impl store::EventSink for LateSink {
    fn publish(&mut self, envelope: crate::model::Envelope) {
        if self.sink.is_none()
            && let Some(hub) = self.slot.get()
        {
            let mut sink = HubSink { hub: hub.clone(), metrics: self.metrics.clone() };
            for early in self.early.drain(..) {
                sink.publish(early);
            }
            self.sink = Some(sink);
        }
        match &mut self.sink {
            Some(sink) => sink.publish(envelope),
            None => self.early.push(envelope),
        }
    }

    fn batch_committed(&mut self, commands: usize, commit_seconds: f64) {
        self.metrics.writer_batch_size.observe(commands as f64);
        self.metrics.writer_commit_seconds.observe(commit_seconds);
    }
}

impl Server {
    /// Accepts on `listener` until `shutdown` resolves, then drains and returns.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let state = self.state.clone();
        let limit = Arc::new(Semaphore::new(state.config.max_connections));
        // hyper-util's GracefulShutdown does not take upgradeable connections,
        // so each connection task watches the shutdown flag itself.
        let http_tasks = TaskTracker::new();
        tokio::pin!(shutdown);
        let mut accept_errors = 0u64;
        let mut last_accept_warning = None;
        warn_if_fd_limit_low(state.config.max_connections);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, _peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't
                        // spin, and say so at most once a second.
                        accept_errors += 1;
                        if last_accept_warning.is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(1)) {
                            tracing::warn!(error = %e, failures = accept_errors, "accept failed");
                            last_accept_warning = Some(std::time::Instant::now());
                            accept_errors = 0;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let service = service_fn(move |req| crate::http::serve(state.clone(), req));
            let conn = http1::Builder::new()
                .keep_alive(true)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut stopping = self.shutdown_tx.subscribe();
            http_tasks.spawn(async move {
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        tracing::info!("shutting down");
        let _ = self.shutdown_tx.send(true);
        // Let in-flight HTTP requests finish (bounded).
        http_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), http_tasks.wait()).await;
        // Everything queued before this point is committed and handed to the
        // hub before the hub is told to close connections, so each client
        // receives its echoes and then 1001.
        state.writer.barrier().await;
        state.hub.shutdown();
        state.ws_tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), state.ws_tasks.wait()).await.is_err() {
            tracing::warn!("some WebSocket connections did not close in time");
        }
        state.writer.shutdown().await;
        tracing::info!("stopped");
    }
}

/// Each connection costs a file descriptor: warn when the process may open
/// fewer than the configured connection limit (Linux only; silent elsewhere).
fn warn_if_fd_limit_low(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft
        && soft < max_connections
    {
        tracing::warn!(
            open_files = soft,
            max_connections,
            "the open-file limit is below the connection limit; raise it (ulimit -n) to serve more clients"
        );
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
