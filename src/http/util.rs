//! Small request and response helpers shared by the handlers.

use std::collections::HashMap;

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::body::{self, Body};
use crate::auth::{AuthError, Verified};
use crate::error::ApiError;
use crate::model::UserId;
use crate::state::AppState;

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Result<Response<Body>, ApiError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_text(status, bytes))
}

/// A JSON response of text already rendered.
pub fn json_text(status: StatusCode, text: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The request body, at most `limit` bytes (413 beyond), within the body
/// timeout (408 after it).
pub async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<(HeaderMap, Bytes), ApiError> {
    let limit = state.config.max_body_bytes;
    tokio::time::timeout(state.config.limits.body_timeout, read_limited(req, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout)?
}

async fn read_limited(req: Request<Incoming>, limit: usize) -> Result<(HeaderMap, Bytes), ApiError> {
    let (parts, incoming) = req.into_parts();
    if let Some(length) =
        parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(ApiError::PayloadTooLarge);
    }
    let collected = Limited::new(incoming, limit).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest("Could not read the request body".into())
        }
    })?;
    Ok((parts.headers, collected.to_bytes()))
}

/// Whether the request says its body is a URL-encoded form.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

/// A JSON body as `T`; 422 with serde's reason otherwise.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::unprocessable("Request body is required"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        let text = text.find(" at line ").map_or(text.as_str(), |i| &text[..i]).to_owned();
        ApiError::unprocessable(format!("Invalid JSON body: {text}"))
    })
}

/// Query or form pairs (last value wins).
pub fn pairs(raw: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(raw).into_owned().collect()
}

pub fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    pairs(req.uri().query().unwrap_or("").as_bytes())
}

/// An optional integer parameter in `min..=max`, 422 otherwise.
pub fn int_param(params: &HashMap<String, String>, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::unprocessable(format!("{name} must be an integer in {min}..{max}"))),
        },
    }
}

/// The bearer token of the `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// The one way a request becomes a user: a valid token of an existing user,
/// issued at the user's current token version and not logged out.
pub async fn authenticate(state: &AppState, token: Option<&str>) -> Result<Verified, ApiError> {
    let token = token.ok_or(ApiError::Unauthenticated(AuthError::Missing.as_str()))?;
    let verified = state.keys.verify(token).map_err(|e| ApiError::Unauthenticated(e.as_str()))?;
    let user = verified.user;
    let current = match state.tokens.version(user) {
        Some(version) => version,
        None => {
            // First sight of this user since start: one lookup, then memory.
            let version = state.reader.token_version(user).await?;
            let version = version.ok_or(ApiError::Unauthenticated(AuthError::UnknownUser.as_str()))?;
            state.tokens.set_version(user, version);
            state.tokens.version(user).unwrap_or(version)
        }
    };
    if verified.version != current || verified.id.as_deref().is_some_and(|id| state.tokens.is_revoked(id)) {
        return Err(ApiError::Unauthenticated(AuthError::Revoked.as_str()));
    }
    Ok(verified)
}

pub async fn user_of(state: &AppState, req: &Request<Incoming>) -> Result<UserId, ApiError> {
    Ok(authenticate(state, bearer(req.headers())).await?.user)
}

/// The client's address, as `http::serve` settled it (peer, or the
/// forwarded address when the peer is a trusted proxy).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub std::net::IpAddr);

/// The TCP connection's place under the connection limits (the global
/// permit and the per-address slot), shared by its requests. A WebSocket
/// upgrade takes a clone into the connection's task, so an upgraded
/// connection keeps counting after hyper's HTTP task has ended.
#[derive(Clone)]
pub struct ConnectionSlot {
    /// Kept for its `Drop`: the last clone gone frees the places.
    _held: std::sync::Arc<dyn std::any::Any + Send + Sync>,
}

impl ConnectionSlot {
    pub fn new(held: impl std::any::Any + Send + Sync) -> ConnectionSlot {
        ConnectionSlot { _held: std::sync::Arc::new(held) }
    }
}

pub fn client_ip(req: &Request<Incoming>) -> std::net::IpAddr {
    req.extensions().get::<ClientIp>().map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0)
}
