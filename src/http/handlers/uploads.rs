//! Uploads over HTTP (SPEC section 11): the raw file as the request body,
//! streamed to `<data dir>/uploads/<id>` in constant memory, and resumable
//! with tus 1.0 (core + creation): `POST` with `Upload-Length` creates,
//! `HEAD` answers the offset, `PATCH` appends at it. The received length is
//! the file's own length on disk, so a connection cut mid-PATCH leaves
//! exactly what arrived, and `HEAD` tells the client where to go on. When
//! the last byte is in, the content checks of SPEC 4 run; a failing file is
//! removed and that request answers the error.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use hyper::{Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::attach::AttachError;
use crate::attach::upload::{self, PlannedUpload};
use crate::error::ApiError;
use crate::http::Body;
use crate::http::body;
use crate::http::util::user_of;
use crate::model::UserId;
use crate::state::AppState;
use crate::store::writer::NewUpload;
use crate::time::{now_ms, rfc3339_ms};

const TUS_VERSION: &str = "1.0.0";
/// Bytes gathered before one write to disk.
const WRITE_BUFFER: usize = 64 * 1024;

/// Uploads a request is writing now: a second request for the same one is
/// refused (409) instead of interleaving bytes.
#[derive(Default)]
pub struct Busy(Mutex<HashSet<String>>);

struct BusyGuard<'a> {
    busy: &'a Busy,
    id: String,
}

impl Busy {
    fn claim(&self, id: &str) -> Result<BusyGuard<'_>, ApiError> {
        let mut ids = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !ids.insert(id.to_owned()) {
            return Err(ApiError::Conflict("This upload is receiving bytes on another request".into()));
        }
        Ok(BusyGuard { busy: self, id: id.to_owned() })
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.busy.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    match header(headers, name) {
        None => Ok(None),
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse().map(Some).map_err(|_| ApiError::BadRequest(format!("{name} is too large")))
        }
        Some(_) => Err(ApiError::BadRequest(format!("{name} must be a non-negative integer"))),
    }
}

/// tus clients say which version they speak; this server speaks 1.0.0.
fn check_tus_version(headers: &HeaderMap) -> Result<(), ApiError> {
    match header(headers, "tus-resumable") {
        Some(version) if version != TUS_VERSION => Err(ApiError::PreconditionFailed("Only tus 1.0.0 is supported")),
        _ => Ok(()),
    }
}

/// An attachment refusal as an HTTP answer: a type outside the table is
/// 415, every other check 422, a server failure 500.
fn refused(e: AttachError) -> ApiError {
    match e {
        AttachError::TypeNotAllowed { .. } => ApiError::UnsupportedMediaType(e.to_string()),
        e if e.is_server_error() => ApiError::Internal(e.to_string()),
        e => ApiError::Unprocessable(e.to_string()),
    }
}

/// `POST /api/chat/uploads`: the raw file (`Content-Type`, `X-File-Name`,
/// `Content-Length`), or with `Upload-Length` the start of a resumable one.
pub async fn create(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let headers = req.headers();
    check_tus_version(headers)?;
    let mime = header(headers, CONTENT_TYPE.as_str()).ok_or(ApiError::BadRequest("Content-Type is required".into()))?;
    let raw_name = header(headers, "x-file-name").ok_or(ApiError::BadRequest("X-File-Name is required".into()))?;
    let file_name = percent_encoding::percent_decode_str(raw_name)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("X-File-Name must be percent-encoded UTF-8".into()))?
        .into_owned();
    let content_length = number(headers, CONTENT_LENGTH.as_str())?;
    let (length, resumable) = match number(headers, "upload-length")? {
        Some(length) => (length, true),
        None => (content_length.ok_or(ApiError::LengthRequired("Content-Length is required"))?, false),
    };
    let plan = upload::plan_upload(&file_name, mime, length).map_err(refused)?;
    let id = upload::new_upload_id().map_err(|e| ApiError::Internal(e.to_string()))?;
    let path = upload::upload_path(&state.config.data_dir, &id).ok_or(ApiError::Internal("bad upload id".into()))?;
    let expires_at = now_ms() + state.config.upload_ttl.as_millis() as i64;
    let _busy = state.uploads.claim(&id)?;
    create_file(&path).await.map_err(|e| ApiError::Internal(format!("cannot create {}: {e}", path.display())))?;
    let row = NewUpload {
        id: id.clone(),
        user,
        file_name: plan.file_name.clone(),
        mime_type: plan.mime_type.to_owned(),
        length,
        expires_at,
    };
    if let Err(e) = state.writer.create_upload(row).await {
        remove(&path).await;
        return Err(e.into());
    }
    let received = match append(state, &path, req.into_body(), 0, length).await {
        Ok(received) => received,
        Err(e) if resumable => {
            // What arrived stays; the client resumes from HEAD's offset.
            tracing::debug!(error = %e, "a resumable upload's first request ended early");
            file_len(&path).await
        }
        Err(e) => {
            discard(state, &id, &path).await;
            return Err(e);
        }
    };
    if !resumable && received != length {
        discard(state, &id, &path).await;
        return Err(ApiError::BadRequest("The body ended before Content-Length bytes".into()));
    }
    if received == length {
        finish(state, &id, &path, &plan).await?;
    }
    let body = serde_json::json!({
        "upload_id": id, "file_name": plan.file_name, "file_size": length, "mime_type": plan.mime_type,
        "expires_at": rfc3339_ms(expires_at),
    });
    let mut response = Response::new(body::full(body.to_string()));
    *response.status_mut() = StatusCode::CREATED;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert(h, LOCATION.as_str(), &format!("/api/chat/uploads/{id}"));
    insert(h, "upload-offset", &received.to_string());
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    Ok(response)
}

/// `HEAD /api/chat/uploads/{id}`: how much has arrived.
pub async fn status(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (row, path) = own_upload(state, &req, user).await?;
    let mut response = Response::new(body::empty());
    let h = response.headers_mut();
    insert(h, "upload-offset", &file_len(&path).await.to_string());
    insert(h, "upload-length", &row.length.to_string());
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `PATCH /api/chat/uploads/{id}`: appends at `Upload-Offset`.
pub async fn append_to(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    check_tus_version(req.headers())?;
    let (row, path) = own_upload(state, &req, user).await?;
    let kind = header(req.headers(), CONTENT_TYPE.as_str()).unwrap_or("");
    if !kind.eq_ignore_ascii_case("application/offset+octet-stream") {
        return Err(ApiError::UnsupportedMediaType("Content-Type must be application/offset+octet-stream".into()));
    }
    let offset =
        number(req.headers(), "upload-offset")?.ok_or(ApiError::BadRequest("Upload-Offset is required".into()))?;
    let _busy = state.uploads.claim(&row.id)?;
    let current = file_len(&path).await;
    if offset != current || row.complete {
        return Err(ApiError::Conflict(format!("Upload-Offset must be {current}")));
    }
    let plan = upload::plan_upload(&row.file_name, &row.mime_type, row.length).map_err(refused)?;
    let appended = append(state, &path, req.into_body(), current, row.length).await;
    let received = file_len(&path).await;
    appended?;
    if received == row.length {
        finish(state, &row.id, &path, &plan).await?;
    }
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    insert(response.headers_mut(), "upload-offset", &received.to_string());
    response.headers_mut().insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    Ok(response)
}

/// The caller's upload named by the path's last segment (404 for anyone
/// else's: an upload id is not a secret to be confirmed).
async fn own_upload(
    state: &AppState,
    req: &Request<Incoming>,
    user: UserId,
) -> Result<(crate::store::reads::Upload, PathBuf), ApiError> {
    let id = req.uri().path().trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let path = upload::upload_path(&state.config.data_dir, id).ok_or(ApiError::NotFound("Upload not found"))?;
    let row = state.reader.upload(id.to_owned()).await?.filter(|u| u.user_id == user);
    Ok((row.ok_or(ApiError::NotFound("Upload not found"))?, path))
}

/// Runs the content checks on a complete file; marks the upload finished,
/// or removes it and answers why.
async fn finish(state: &AppState, id: &str, path: &Path, plan: &PlannedUpload) -> Result<(), ApiError> {
    let (file, checked_plan) = (path.to_owned(), plan.clone());
    let checked = tokio::task::spawn_blocking(move || upload::check_content(&file, &checked_plan))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match checked {
        Ok(()) => Ok(state.writer.finish_upload(id.to_owned(), true).await?),
        Err(e) => {
            discard(state, id, path).await;
            Err(refused(e))
        }
    }
}

/// Streams `body` onto the end of the file at `path` (which holds `from`
/// bytes), never past `length`; each frame must come within the body
/// timeout, so a slow but steady upload of any size goes through. Returns
/// the new length.
async fn append(state: &AppState, path: &Path, mut body: Incoming, from: u64, length: u64) -> Result<u64, ApiError> {
    let io = |e: std::io::Error| ApiError::Internal(format!("cannot write an upload: {e}"));
    let file = tokio::fs::OpenOptions::new().append(true).open(path).await.map_err(io)?;
    let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut offset = from;
    let outcome = loop {
        let next = tokio::time::timeout(
            state.config.limits.body_timeout,
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)),
        )
        .await;
        let frame = match next {
            Err(_) => break Err(ApiError::RequestTimeout),
            Ok(None) => break Ok(()),
            Ok(Some(Err(_))) => break Err(ApiError::BadRequest("Could not read the request body".into())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if offset + data.len() as u64 > length {
            break Err(ApiError::PayloadTooLarge);
        }
        if let Err(e) = out.write_all(&data).await {
            break Err(io(e));
        }
        offset += data.len() as u64;
    };
    // What arrived is kept either way: it is the offset a resume starts from.
    out.flush().await.map_err(io)?;
    out.get_ref().sync_data().await.map_err(io)?;
    outcome.map(|()| offset)
}

async fn create_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await.map(drop)
}

async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |m| m.len())
}

async fn remove(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove an upload");
    }
}

/// Removes an upload's bytes and its row (failed checks or a broken body).
async fn discard(state: &AppState, id: &str, path: &Path) {
    remove(path).await;
    if let Err(e) = state.writer.finish_upload(id.to_owned(), false).await {
        tracing::warn!(error = %e, "could not remove an upload's row");
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
