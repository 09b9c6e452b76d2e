//! HTTP: one task per TCP connection (hyper http1 with upgrades), the router,
//! the handlers and static files. Every handler ends in `Result<Response,
//! ApiError>`; `ApiError::into_response` is the only error-to-bytes path.

pub mod body;
#[doc(hidden)]
pub mod fuzz;
mod handlers;
pub use handlers::auth::normalize_email;
pub use handlers::uploads::Busy as UploadsInProgress;
pub mod openapi;
pub mod router;
pub mod static_files;
pub mod upgrade;
pub(crate) mod util;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response};

pub use body::Body;
use router::{Endpoint, Route};

use tracing::Instrument;

use crate::error::ApiError;
use crate::state::AppState;

/// Answers one request from `peer`. Never fails: errors become their
/// response here.
pub async fn serve(
    state: Arc<AppState>,
    peer: IpAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let forwarded = req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let client = crate::limits::client_ip(peer, forwarded, &state.config.limits);
    req.extensions_mut().insert(util::ClientIp(client));
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let route = router::route(req.method(), req.uri().path());
    // Every log line of this request carries its id.
    let span = tracing::info_span!("request", id = %request_id);
    let (metric, result) = async {
        match route {
            Route::Found(endpoint) => (endpoint.index(), dispatch(&state, endpoint, req).await),
            Route::NotFound => (router::UNMATCHED, Err(ApiError::NotFound("Not found"))),
            Route::MethodNotAllowed { allow } => (router::UNMATCHED, Err(ApiError::MethodNotAllowed { allow })),
            Route::BadId(name) => {
                (router::UNMATCHED, Err(ApiError::unprocessable(format!("{name} must be a positive integer"))))
            }
        }
    }
    .instrument(span.clone())
    .await;
    let mut response = result.unwrap_or_else(|e| span.in_scope(|| e.into_response()));
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.request(metric, status, elapsed.as_secs_f64());
    // The access log: the route's name, never the raw path (a WebSocket
    // URL carries the token).
    span.in_scope(|| {
        tracing::info!(
            target: "access",
            method = %method,
            route = router::ROUTE_NAMES[metric],
            status,
            ms = elapsed.as_secs_f64() * 1000.0,
            bytes = hyper::body::Body::size_hint(response.body()).exact(),
            client = %client,
        )
    });
    if let Ok(value) = hyper::header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// The request's `X-Request-Id` when it is one a log can carry safely (1 to
/// 128 of `[A-Za-z0-9._:-]`), else a new one: a per-process random prefix
/// and a counter, unique without a syscall per request.
fn request_id(headers: &hyper::HeaderMap) -> String {
    let given = headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|id| {
        (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    });
    if let Some(id) = given {
        return id.to_owned();
    }
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let mut raw = [0u8; 4];
        let _ = getrandom::fill(&mut raw);
        raw.iter().map(|b| format!("{b:02x}")).collect()
    });
    format!("{prefix}-{:x}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

async fn dispatch(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    use handlers::{auth, events, messages, misc, rooms, uploads};
    match endpoint {
        Endpoint::Index | Endpoint::Static => Ok(misc::static_file(state, req).await),
        Endpoint::Healthz => misc::healthz(state).await,
        Endpoint::Metrics => Ok(misc::metrics(state)),
        Endpoint::OpenApi => Ok(openapi::serve(req.headers())),
        Endpoint::Register => auth::register(state, req).await,
        Endpoint::Login => auth::login(state, req).await,
        Endpoint::Me => auth::me(state, req).await,
        Endpoint::ChangePassword => auth::change_password(state, req).await,
        Endpoint::Logout => auth::logout(state, req).await,
        Endpoint::SearchUsers => misc::search_users(state, req).await,
        Endpoint::OnlineUsers => misc::online_users(state, req).await,
        Endpoint::UnreadCount => rooms::unread_count(state, req).await,
        Endpoint::ListRooms => rooms::list(state, req).await,
        Endpoint::CreateRoom => rooms::create(state, req).await,
        Endpoint::GetRoom(id) => rooms::get(state, req, id).await,
        Endpoint::Messages(id) => messages::page(state, req, id).await,
        Endpoint::MarkRead(id) => rooms::mark_read(state, req, id).await,
        Endpoint::EditMessage(id) => messages::edit(state, req, id).await,
        Endpoint::DeleteMessage(id) => messages::delete(state, req, id).await,
        Endpoint::Like(id) => messages::like(state, req, id, true).await,
        Endpoint::Unlike(id) => messages::like(state, req, id, false).await,
        Endpoint::WebSocket => upgrade::upgrade(state, req).await,
        Endpoint::RenameRoom(id) => rooms::rename(state, req, id).await,
        Endpoint::Members(id) => rooms::members(state, req, id).await,
        Endpoint::AddMembers(id) => rooms::add_members(state, req, id).await,
        Endpoint::RemoveMember(id, user) => rooms::remove_member(state, req, id, user).await,
        Endpoint::SetRole(id, user) => rooms::set_role(state, req, id, user).await,
        Endpoint::Events => events::page(state, req).await,
        Endpoint::AddReaction(id) => messages::react(state, req, id, true).await,
        Endpoint::RemoveReaction(id) => messages::react(state, req, id, false).await,
        Endpoint::Search => messages::search(state, req).await,
        Endpoint::Forward(id) => messages::forward(state, req, id).await,
        Endpoint::Scheduled => messages::scheduled(state, req).await,
        Endpoint::CreateUpload => uploads::create(state, req).await,
        Endpoint::UploadStatus => uploads::status(state, req).await,
        Endpoint::UploadAppend => uploads::append_to(state, req).await,
        Endpoint::Export => misc::export(state, req).await,
        Endpoint::ShareFile(id, index) => messages::share_file(state, req, id, index).await,
        Endpoint::CancelScheduled(id) => messages::cancel_scheduled(state, req, id).await,
    }
}
