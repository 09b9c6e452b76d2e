//! Health, metrics, static files and user lookups.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::error::ApiError;
use crate::http::body::{self, Body};
use crate::http::static_files;
use crate::http::util::{int_param, json, query, user_of};
use crate::metrics::Limit;
use crate::model::UserId;
use crate::state::AppState;

pub async fn healthz(state: &Arc<AppState>) -> Result<Response<Body>, ApiError> {
    if !state.reader.healthy().await? {
        return Err(ApiError::Internal("database answered oddly".into()));
    }
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

pub fn metrics(state: &Arc<AppState>) -> Response<Body> {
    let mut text = state.metrics.render();
    // The write-ahead logs, read from the files at each scrape.
    let wal = |db: std::path::PathBuf| {
        let mut name = db.into_os_string();
        name.push("-wal");
        std::fs::metadata(name).map_or(0, |m| m.len())
    };
    let data = &state.config.data_dir;
    let _ = std::fmt::Write::write_fmt(
        &mut text,
        format_args!(
            "# HELP chatd_wal_bytes Size of a SQLite write-ahead log.\n# TYPE chatd_wal_bytes gauge\n\
             chatd_wal_bytes{{db=\"chatd\"}} {}\nchatd_wal_bytes{{db=\"search\"}} {}\n",
            wal(crate::store::db_path(data)),
            wal(crate::store::search::index_path(data)),
        ),
    );
    let mut response = Response::new(body::full(text));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// `GET /api/chat/export`: a zip of everything the caller can see (see
/// `store::export`), built in an unnamed temporary file in the data
/// directory and streamed from there: flat memory whatever the history.
pub async fn export(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (file, messages) =
        state.reader.export(user, state.config.static_dir.clone(), state.config.data_dir.clone()).await?;
    let length = file.metadata().map_err(|e| ApiError::Internal(e.to_string()))?.len();
    tracing::info!(user, messages, bytes = length, "export");
    let mut response = Response::new(body::file(tokio::fs::File::from_std(file)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        hyper::header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"chatd-export.zip\""),
    );
    headers.insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A stored file (`chat_files/`) needs a valid, unexpired link signature
/// unless links are public (SPEC section 11); without one it does not exist.
pub async fn static_file(state: &Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if state.links.signed()
        && let Some(rest) = path.strip_prefix(static_files::STATIC_PREFIX)
        && rest.starts_with("chat_files/")
    {
        let params = query(&req);
        let rel = percent_encoding::percent_decode_str(rest).decode_utf8();
        let param = |name: &str| params.get(name).map(String::as_str);
        if !rel.is_ok_and(|rel| state.links.allows(&rel, param("exp"), param("sig"))) {
            return static_files::not_found();
        }
    }
    static_files::serve(&state.config.static_dir, path, req.method(), req.headers()).await
}

/// Shorter searches would let anyone list the whole user directory.
const MIN_SEARCH_CHARS: usize = 3;

/// The per-user search bucket, shared by user and message search.
pub(super) fn throttle_search(state: &AppState, user: UserId) -> Result<(), ApiError> {
    state.limiter.searches.check(user).map_err(|wait| {
        if state.metrics.limited(Limit::Searches) {
            tracing::info!(user, "search refused: too many searches");
        }
        ApiError::rate_limited("Too many searches", wait)
    })
}

pub async fn search_users(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let params = query(&req);
    let limit = int_param(&params, "limit", 1, 100)?.unwrap_or(20) as u32;
    let email = params.get("email").map(|e| e.trim().to_owned()).unwrap_or_default();
    if email.chars().count() < MIN_SEARCH_CHARS {
        return Err(ApiError::unprocessable(format!("email must be at least {MIN_SEARCH_CHARS} characters")));
    }
    throttle_search(state, user)?;
    if email.len() > 254 {
        return Err(ApiError::unprocessable("email is too long"));
    }
    let (users, total) = state.reader.search_users(user, email, limit).await?;
    json(StatusCode::OK, &serde_json::json!({"users": users, "total": total}))
}

pub async fn online_users(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let users = state.reader.online_users(user).await?;
    json(StatusCode::OK, &serde_json::json!({"total": users.len(), "users": users}))
}
