//! `AppState`: everything a request or a connection needs, built once in
//! `server::start` and shared behind an `Arc`. No globals.

use crate::links::Links;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::auth::password::HashPool;
use crate::auth::{Keys, TokenState};
use crate::config::Config;
use crate::hub::{Fanout, HubHandle};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::store::{Reader, WriterHandle};

pub struct AppState {
    pub config: Config,
    pub keys: Keys,
    pub reader: Reader,
    pub writer: WriterHandle,
    /// This node's connections: registration and shutdown.
    pub hub: HubHandle,
    /// Where events are published to reach connections (the hub here).
    pub fanout: Arc<dyn Fanout>,
    pub metrics: Arc<Metrics>,
    /// A real Argon2id hash, verified against when a login names an unknown
    /// email, so that both cases take the same time. Made on first use: an
    /// Argon2 hash costs tens of milliseconds and 19 MiB, too much for start-up.
    pub dummy_hash: tokio::sync::OnceCell<String>,
    /// WebSocket tasks: hyper forgets upgraded connections, shutdown must not.
    pub ws_tasks: TaskTracker,
    /// Turns true when shutdown starts.
    pub shutting_down: watch::Receiver<bool>,
    /// Argon2id runs here, never on the shared blocking pool.
    pub hasher: HashPool,
    /// Current token versions and revoked token ids.
    pub tokens: Arc<TokenState>,
    /// Rate limits, caps and the frame budget.
    pub limiter: Limiter,
    /// Renders file URLs (signed unless links are public).
    pub links: Arc<Links>,
    /// Rendered pages of messages; the writer's sink drops what it changes.
    pub pages: Arc<crate::pages::RenderedPages>,
    /// Uploads receiving bytes now.
    pub uploads: crate::http::UploadsInProgress,
}
