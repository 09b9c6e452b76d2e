//! The accept loop and the shutdown path. `start` builds the state and binds
//! nothing itself (the caller owns the listener); `Server::run` accepts until
//! the shutdown future resolves, then drains: HTTP connections through
//! hyper-util's graceful shutdown, WebSockets closed with 1001 after what was
//! committed is sent, the writer finished and the WAL checkpointed.

use crate::links::Links;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::auth::{Keys, TokenState};
use crate::config::{Config, FileLinks};
use crate::http::router::ROUTE_NAMES;
use crate::hub::{Fanout, HubHandle};
use crate::limits::Limiter;
use crate::metrics::Limit;
use crate::metrics::Metrics;
use crate::pages::{Changes, RenderedPages};
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

/// Builds everything: directories, secret, database (migrated), writer, hub;
/// with `CHAT_DATABASE_URL`, the PostgreSQL store and the cluster's parts.
/// Must run inside a tokio runtime (the hub spawns its shards).
pub async fn start(config: Config) -> Result<Server, StartError> {
    for dir in [&config.data_dir, &config.static_dir] {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Dir { path: dir.display().to_string(), source })?;
    }
    // The database and the secret are nobody else's business.
    make_private(&config.data_dir)
        .map_err(|source| StartError::Dir { path: config.data_dir.display().to_string(), source })?;
    let removed = crate::attach::prepare_dirs(&config.static_dir)
        .map_err(|source| StartError::Dir { path: config.static_dir.display().to_string(), source })?;
    if removed > 0 {
        tracing::info!(removed, "removed temporary files left by a crash");
    }
    let keys =
        Keys::load(config.jwt_secret.as_deref(), &config.data_dir, config.token_ttl).map_err(StartError::Secret)?;
    let metrics = Arc::new(Metrics::new(ROUTE_NAMES));
    let signer = (config.file_links == FileLinks::Signed).then(|| keys.file_signer());
    let links = Arc::new(Links::new(&config.base_url, signer, config.file_link_ttl_secs));
    // The hub starts first; the writer publishes what it commits into it,
    // and the presence changes the hub sees come back to the writer through
    // one ordered forwarding task (so a quick reconnect can never store
    // "offline" after "online"). Neither knows the other.
    let (hub, mut presence) = HubHandle::start(config.hub_shards, links.clone(), metrics.clone());
    let (reader, writer, fanout, tokens, pages) = match config.database_url.clone() {
        None => {
            let fanout: Arc<dyn Fanout> = Arc::new(hub.clone());
            let (thumbnail_queue, thumbnail_jobs) = crate::thumbnails::queue();
            let pages = Arc::new(RenderedPages::new(config.page_cache_entries, config.page_cache_bytes));
            let sink = HubSink {
                fanout: fanout.clone(),
                metrics: metrics.clone(),
                thumbnails: Some(thumbnail_queue),
                pages: pages.clone(),
            };
            let (reader, writer) = store::open(&config, Box::new(sink), store::Opener::Server)?;
            spawn_event_retention(writer.clone(), config.event_retention);
            if let Some(retention) = config.message_retention {
                spawn_message_retention(writer.clone(), config.static_dir.clone(), retention);
            }
            spawn_scheduler(writer.clone(), config.static_dir.clone());
            crate::thumbnails::spawn(
                thumbnail_jobs,
                writer.clone(),
                config.static_dir.clone(),
                config.thumbnail_workers,
            );
            sweep_orphan_uploads(&reader, &config.data_dir);
            match reader.run_blocking(store::reads::referenced_files) {
                Ok(referenced) => match crate::attach::sweep_orphans(&config.static_dir, &referenced) {
                    Ok(0) => {}
                    Ok(removed) => tracing::info!(removed, "removed stored files no message uses"),
                    Err(e) => tracing::warn!(error = %e, "cannot sweep stored files"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot list the files messages use; leaving them"),
            }
            spawn_upload_expiry(
                writer.clone(),
                config.data_dir.clone(),
                config.upload_ttl.min(Duration::from_secs(60)),
            );
            let revoked = reader.revoked_tokens(crate::auth::jwt::unix_now()).await?;
            (reader, writer, fanout, Arc::new(TokenState::new(revoked)), pages)
        }
        Some(url) => start_cluster(&config, &url, &hub, &metrics).await?,
    };
    let presence_writer = writer.clone();
    tokio::spawn(async move {
        while let Some((user, online)) = presence.recv().await {
            if presence_writer.presence(user, online).await.is_err() {
                break;
            }
        }
    });
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hasher = crate::auth::password::HashPool::start(cores, 64).map_err(StartError::Hasher)?;
    let limiter = Limiter::new(&config.limits);
    let (shutdown_tx, shutting_down) = watch::channel(false);
    let state = Arc::new(AppState {
        config,
        keys,
        reader,
        writer,
        hub,
        fanout,
        metrics,
        dummy_hash: tokio::sync::OnceCell::new(),
        ws_tasks: TaskTracker::new(),
        shutting_down,
        links,
        pages,
        hasher,
        tokens,
        limiter,
        uploads: Default::default(),
    });
    crate::memory::spawn_trimmer(state.ws_tasks.clone());
    Ok(Server { state, shutdown_tx })
}

/// What `start` builds on PostgreSQL (and NATS, when set): the store and
/// its executor, this node's tail of the event stream into the hub, the bus,
/// and the heartbeat. No page cache: another node's commit could not drop
/// this node's pages (SPEC 12 asks for correctness first; the cache comes
/// back when invalidations travel the bus).
async fn start_cluster(
    config: &Config,
    url: &str,
    hub: &HubHandle,
    metrics: &Arc<Metrics>,
) -> Result<(store::Reader, store::WriterHandle, Arc<dyn Fanout>, Arc<TokenState>, Arc<RenderedPages>), StartError> {
    // Commands wait on the database (a durable commit: milliseconds), not
    // on this CPU: many run side by side, and PostgreSQL groups their
    // commits. Three nodes of 32 fit PostgreSQL's default 100 connections.
    let pool_size = 32;
    let pg = store::pg::Pg::open(url, pool_size).await?;
    let reader = store::Reader::postgres(pg.clone());
    let tokens = Arc::new(TokenState::new(reader.revoked_tokens(crate::auth::jwt::unix_now()).await?));
    // Registered before serving: presence sessions name their node.
    store::pg::writes::beat(&pg, crate::cluster::NODE_TIMEOUT).await?;
    let tail = pg.tail_bell();
    let bus = match &config.nats_url {
        Some(nats) => Some(
            crate::cluster::Bus::start(
                nats,
                crate::cluster::prefix_for(url),
                pg.node_id().to_owned(),
                tail.clone(),
                hub.clone(),
                tokens.clone(),
                config.token_ttl,
            )
            .await?,
        ),
        None => None,
    };
    let fanout: Arc<dyn Fanout> = Arc::new(crate::cluster::ClusterFanout { hub: hub.clone(), bus: bus.clone() });
    let pages = Arc::new(RenderedPages::new(0, 0));
    let sink = HubSink { fanout: fanout.clone(), metrics: metrics.clone(), thumbnails: None, pages: pages.clone() };
    let local = tail.clone();
    let poke: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        local.notify_one();
        if let Some(bus) = &bus {
            bus.poke();
        }
    });
    let (thumbnail_queue, thumbnail_jobs) = crate::thumbnails::queue();
    let writer = store::pg::writes::spawn(
        pg.clone(),
        Box::new(sink),
        writer_options(config),
        poke,
        pool_size - 8,
        Some(thumbnail_queue),
    );
    crate::thumbnails::spawn(thumbnail_jobs, writer.clone(), config.static_dir.clone(), config.thumbnail_workers);
    let (deliver_hub, deliver_metrics) = (hub.clone(), metrics.clone());
    tokio::spawn(store::pg::stream::tail(pg.clone(), tail, move |envelope| {
        if let crate::model::Event::NewMessage(m) = envelope.event.as_ref() {
            deliver_metrics.message_stored(m.message_type);
        }
        deliver_hub.publish(envelope);
    }));
    tokio::spawn(crate::cluster::heartbeat(pg, fanout.clone()));
    // Every node runs the maintenance; each step is safe side by side.
    spawn_event_retention(writer.clone(), config.event_retention);
    if let Some(retention) = config.message_retention {
        spawn_message_retention(writer.clone(), config.static_dir.clone(), retention);
    }
    spawn_scheduler(writer.clone(), config.static_dir.clone());
    spawn_upload_expiry(writer.clone(), config.data_dir.clone(), config.upload_ttl.min(Duration::from_secs(60)));
    tracing::info!(nats = config.nats_url.is_some(), "chatd runs on PostgreSQL as one node of a cluster");
    Ok((reader, writer, fanout, tokens, pages))
}

fn writer_options(config: &Config) -> store::writer::WriterOptions {
    store::writer::WriterOptions {
        batch_max: config.writer_batch_max,
        user_quota_bytes: config.limits.user_quota_bytes,
        max_group_members: config.max_group_members,
        wal_path: None,
        wal_limit_bytes: config.wal_limit_bytes,
    }
}

/// Removes stored events past their retention, a batch at a time, once a
/// minute after start and then hourly. Ends with the writer.
fn spawn_event_retention(writer: store::WriterHandle, retention: Duration) {
    tokio::spawn(async move {
        let mut hourly =
            tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(60), Duration::from_secs(3600));
        loop {
            hourly.tick().await;
            let cutoff = crate::time::now_ms() - retention.as_millis() as i64;
            loop {
                match writer.prune_events(cutoff).await {
                    Ok(0) => break,
                    Ok(removed) => tracing::debug!(removed, "expired events removed"),
                    Err(store::StoreError::Unavailable) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot remove expired events");
                        break;
                    }
                }
                // Let other writes between the batches.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
}

/// Removes messages older than `retention` and then their files, a small
/// batch per writer transaction with a pause between batches, so that live
/// traffic barely notices: at start, then every hour (or every quarter of
/// the retention, when that is shorter). Ends with the writer.
fn spawn_message_retention(writer: store::WriterHandle, static_dir: std::path::PathBuf, retention: Duration) {
    let period = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let cutoff = crate::time::now_ms() - retention.as_millis() as i64;
            let mut removed = 0;
            loop {
                match writer.expire_messages(cutoff).await {
                    Ok(expired) if expired.removed == 0 => break,
                    Ok(expired) => {
                        removed += expired.removed;
                        crate::attach::remove_stored_later(static_dir.clone(), expired.unused_files).await;
                    }
                    Err(store::StoreError::Unavailable) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot remove expired messages");
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if removed > 0 {
                tracing::info!(removed, "messages past their retention removed");
            }
        }
    });
}

/// At start: removes upload files that have no row (a crash between the
/// file and its row, or after the row's removal).
fn sweep_orphan_uploads(reader: &store::Reader, data_dir: &std::path::Path) {
    let dir = crate::attach::upload::uploads_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let known: std::collections::HashSet<String> = match reader.run_blocking(store::reads::upload_ids) {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list uploads; leaving their files");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !known.contains(&name)
            && entry.file_type().is_ok_and(|t| t.is_file())
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an orphan upload");
        }
    }
}

/// Removes uploads no message used within their lifetime, every `period`
/// (a minute, or the lifetime when shorter). Ends with the writer.
fn spawn_upload_expiry(writer: store::WriterHandle, data_dir: std::path::PathBuf, period: Duration) {
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(period);
        every_minute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every_minute.tick().await;
            match writer.expire_uploads(crate::time::now_ms()).await {
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => {
                    let dir = data_dir.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        for id in ids {
                            if let Some(path) = crate::attach::upload::upload_path(&dir, &id) {
                                let _ = std::fs::remove_file(path);
                            }
                        }
                    })
                    .await;
                }
                Err(store::StoreError::Unavailable) => return,
                Err(e) => tracing::warn!(error = %e, "cannot remove expired uploads"),
            }
        }
    });
}

/// Posts scheduled messages when they fall due: sleeps until the soonest
/// pending `send_at`, or until the schedule changes (an item added or
/// cancelled), never polling. Items due while the server was down go out
/// at start. Ends with the writer.
fn spawn_scheduler(writer: store::WriterHandle, static_dir: std::path::PathBuf) {
    let changed = writer.schedule_changes();
    tokio::spawn(async move {
        loop {
            let wait = match writer.deliver_due(crate::time::now_ms()).await {
                Ok(due) => {
                    if due.delivered > 0 {
                        tracing::debug!(delivered = due.delivered, "scheduled messages sent");
                    }
                    crate::attach::remove_stored_later(static_dir.clone(), due.unused_files).await;
                    match (due.more, due.next) {
                        (true, _) => Some(Duration::ZERO),
                        (false, Some(at)) => {
                            Some(Duration::from_millis(at.saturating_sub(crate::time::now_ms()).max(0) as u64))
                        }
                        (false, None) => None,
                    }
                }
                Err(store::StoreError::Unavailable) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot send scheduled messages; trying again in 5 s");
                    Some(Duration::from_secs(5))
                }
            };
            match wait {
                Some(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = changed.notified() => {}
                    }
                }
                None => changed.notified().await,
            }
        }
    });
}

/// The writer's sink: committed events go to the hub, batch figures to
/// metrics, and what they change out of the page cache.
struct HubSink {
    fanout: Arc<dyn Fanout>,
    metrics: Arc<Metrics>,
    thumbnails: Option<crate::thumbnails::Queue>,
    pages: Arc<RenderedPages>,
}

impl store::EventSink for HubSink {
    fn publish(&mut self, envelope: crate::model::Envelope) {
        if let crate::model::Event::NewMessage(m) = envelope.event.as_ref() {
            self.metrics.message_stored(m.message_type);
            if let Some(thumbnails) = &self.thumbnails {
                thumbnails.offer(m);
            }
        }
        self.fanout.publish(envelope);
    }

    fn batch_committed(&mut self, commands: usize, commit_seconds: f64) {
        self.metrics.writer_batch_size.observe(commands as f64);
        self.metrics.writer_commit_seconds.observe(commit_seconds);
    }

    fn committed(&mut self, batch: &store::Committed<'_>) {
        if !self.pages.enabled() {
            return;
        }
        self.pages.forget(&Changes {
            events: batch.events,
            rooms: &batch.read_marks,
            users: &batch.presence,
            everything: batch.messages_expired,
        });
    }
}

impl Server {
    /// Accepts on `listener` until `shutdown` resolves, then drains and returns.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let state = self.state.clone();
        let max_connections = connection_limit(state.config.max_connections);
        let limit = Arc::new(Semaphore::new(max_connections));
        // hyper-util's GracefulShutdown does not take upgradeable connections,
        // so each connection task watches the shutdown flag itself.
        let http_tasks = TaskTracker::new();
        tokio::pin!(shutdown);
        let mut accept_errors = 0u64;
        let mut last_accept_warning = None;
        let mut full = Throttled::new("the connection limit is reached; new connections wait");
        loop {
            if limit.available_permits() == 0 {
                full.note(|| tracing::warn!(max_connections, "the connection limit is reached; new connections wait"));
            }
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
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
            let ip = crate::config::canonical(peer.ip());
            // A trusted proxy carries many clients: it is not capped per address.
            let per_ip = if state.config.limits.is_trusted_proxy(ip) {
                None
            } else {
                match state.limiter.connections_per_ip.acquire(ip) {
                    Some(slot) => Some(slot),
                    None => {
                        if state.metrics.limited(Limit::ConnectionsPerIp) {
                            tracing::warn!(%ip, "connection refused: too many from one address");
                        }
                        refuse_connection(stream);
                        continue;
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let limits = &state.config.limits;
            let clock = Arc::new(ConnClock::new());
            let io = Watched { inner: stream, clock: clock.clone() };
            let conn_state = state.clone();
            let request_clock = clock.clone();
            // Held by this task and by the WebSocket a request upgrades to.
            let slot = crate::http::util::ConnectionSlot::new((permit, per_ip));
            let request_slot = slot.clone();
            let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let state = conn_state.clone();
                req.extensions_mut().insert(request_slot.clone());
                let request = InFlight::start(&request_clock);
                async move {
                    let response = crate::http::serve(state, ip, req).await;
                    drop(request);
                    response
                }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut stopping = self.shutdown_tx.subscribe();
            let (header_timeout, keepalive) = (limits.header_timeout, limits.keepalive_timeout);
            http_tasks.spawn(async move {
                tokio::pin!(conn);
                let expired = async {
                    let mut tick = tokio::time::interval(Duration::from_millis(250));
                    loop {
                        tick.tick().await;
                        if let Some(why) = clock.expired(header_timeout, keepalive) {
                            return why;
                        }
                    }
                };
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                    why = expired => {
                        // Nothing is in flight: dropping the connection closes it.
                        tracing::debug!(%ip, why, "connection closed");
                        Ok(())
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
                drop(slot);
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

/// File descriptors kept free of connections: the database (writer, read
/// pool and checkpointer, each with its WAL and shared-memory files), files
/// being stored or served, and the listener.
pub const FD_HEADROOM: u64 = 256;

/// The number of connections served at once: the configured limit, lowered
/// to what the open-file limit allows with `FD_HEADROOM` to spare, so that
/// `accept` never fails for want of a descriptor. The soft limit is raised to
/// the hard limit first.
fn connection_limit(configured: usize) -> usize {
    let Some(files) = raise_open_file_limit() else { return configured };
    let headroom = FD_HEADROOM.min(files / 4);
    let allowed = usize::try_from(files.saturating_sub(headroom)).unwrap_or(usize::MAX).max(1);
    if allowed < configured {
        tracing::warn!(
            open_files = files,
            max_connections = allowed,
            configured,
            "the open-file limit caps the connections; raise it (LimitNOFILE, ulimit -n) to serve more"
        );
    }
    configured.min(allowed)
}

/// Raises the soft open-file limit to the hard one; answers the limit now in
/// force (`None` when unlimited or unknown).
#[cfg(unix)]
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

/// Answers a connection over its address's cap with a 429 and closes it,
/// without reading it: the write is best effort (the socket buffer takes it).
fn refuse_connection(stream: tokio::net::TcpStream) {
    const BODY: &str = r#"{"detail":"Too many connections from this address"}"#;
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 10\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// A log line that may repeat at most once a second (a limit that bites
/// under attack bites thousands of times).
struct Throttled {
    last: Option<std::time::Instant>,
    what: &'static str,
}

impl Throttled {
    fn new(what: &'static str) -> Throttled {
        Throttled { last: None, what }
    }

    fn note(&mut self, log: impl FnOnce()) {
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            log();
            self.last = Some(std::time::Instant::now());
        } else {
            tracing::trace!(what = self.what, "limit hit again");
        }
    }
}

/// The data directory: owner only.
#[cfg(unix)]
fn make_private(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn make_private(_dir: &std::path::Path) -> std::io::Result<()> {
    Ok(())
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

/// What a connection's timeouts look at, shared by its socket (`Watched`)
/// and its requests (`InFlight`). Times are milliseconds since `started`.
struct ConnClock {
    started: std::time::Instant,
    in_flight: AtomicUsize,
    /// When the first byte of the request head being read arrived (`NONE`
    /// between requests).
    head_since_ms: AtomicU64,
    /// The last time bytes moved either way, or a request ended.
    active_ms: AtomicU64,
    served: AtomicU64,
}

const NONE: u64 = u64::MAX;

impl ConnClock {
    fn new() -> ConnClock {
        ConnClock {
            started: std::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_since_ms: AtomicU64::new(NONE),
            active_ms: AtomicU64::new(0),
            served: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn read(&self) {
        self.read_at(self.now_ms());
    }

    fn read_at(&self, now: u64) {
        self.active_ms.store(now, Relaxed);
        if self.in_flight.load(Relaxed) == 0 && self.head_since_ms.load(Relaxed) == NONE {
            self.head_since_ms.store(now, Relaxed);
        }
    }

    fn wrote(&self) {
        self.active_ms.store(self.now_ms(), Relaxed);
    }

    /// Why the connection should close now, if it should: a head that takes
    /// longer than the header timeout (a new connection's first head counts
    /// from the connect, so a silent connection is one), or no traffic and
    /// no request for the keep-alive timeout. Requests in flight have their
    /// own (body) timeout.
    fn expired(&self, header_timeout: Duration, keepalive: Duration) -> Option<&'static str> {
        self.expired_at(self.now_ms(), header_timeout, keepalive)
    }

    fn expired_at(&self, now: u64, header_timeout: Duration, keepalive: Duration) -> Option<&'static str> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let head_since = match self.head_since_ms.load(Relaxed) {
            NONE if self.served.load(Relaxed) == 0 => Some(0),
            NONE => None,
            since => Some(since),
        };
        match head_since {
            Some(since) if now.saturating_sub(since) >= header_timeout.as_millis() as u64 => Some("header timeout"),
            Some(_) => None,
            None if now.saturating_sub(self.active_ms.load(Relaxed)) >= keepalive.as_millis() as u64 => {
                Some("idle keep-alive timeout")
            }
            None => None,
        }
    }
}

/// Counts a request in flight on its connection while it lives.
struct InFlight(Arc<ConnClock>);

impl InFlight {
    fn start(clock: &Arc<ConnClock>) -> InFlight {
        clock.in_flight.fetch_add(1, Relaxed);
        clock.head_since_ms.store(NONE, Relaxed);
        clock.served.fetch_add(1, Relaxed);
        InFlight(clock.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active_ms.store(self.0.now_ms(), Relaxed);
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A TCP stream that tells its `ConnClock` when bytes move.
struct Watched {
    inner: tokio::net::TcpStream,
    clock: Arc<ConnClock>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.read();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.clock.wrote();
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.clock.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_tells_header_and_keepalive_timeouts_apart() {
        let (header, keepalive) = (Duration::from_millis(100), Duration::from_millis(300));
        let check = |clock: &ConnClock, at: u64| clock.expired_at(at, header, keepalive);
        let fresh = ConnClock::new();
        assert_eq!(check(&fresh, 50), None);
        assert_eq!(check(&fresh, 100), Some("header timeout"), "a silent new connection");

        let served = Arc::new(ConnClock::new());
        drop(InFlight::start(&served));
        served.active_ms.store(0, Relaxed);
        assert_eq!(check(&served, 200), None, "idle between requests: keep-alive rules");
        served.read_at(200);
        assert_eq!(check(&served, 250), None);
        assert_eq!(check(&served, 300), Some("header timeout"), "a slow second head");

        let idle = Arc::new(ConnClock::new());
        drop(InFlight::start(&idle));
        idle.active_ms.store(0, Relaxed);
        assert_eq!(check(&idle, 299), None);
        assert_eq!(check(&idle, 300), Some("idle keep-alive timeout"));

        let busy = Arc::new(ConnClock::new());
        let request = InFlight::start(&busy);
        assert_eq!(check(&busy, 10_000), None, "a request in flight has its own timeouts");
        drop(request);
    }
}
