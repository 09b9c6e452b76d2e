//! `GET /api/chat/ws`: checks the handshake (RFC 6455 §4.2.1), the token,
//! the user's WebSocket cap, `Origin` and the room before answering 101, then
//! hands the upgraded socket to a tracked connection task.

use std::sync::Arc;

use base64::Engine;
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, HOST, HeaderValue, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::error::ApiError;
use crate::http::body::{self, Body};
use crate::http::util::{ConnectionSlot, authenticate, bearer, int_param, query};
use crate::model::Cursor;
use crate::state::AppState;
use crate::ws::connection::{self, Registration, ReplayFrom, Session};
use crate::ws::metered::Metered;

fn header_has(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

/// Small buffers keep an idle connection cheap; frames may be as large as the
/// configured message limit. The read buffer (`CHAT_WS_READ_BUFFER_BYTES`,
/// 1 KiB) is held for the whole life of a connection and is the most one
/// read of tungstenite's takes; `ws::metered` reads ahead in 64 KiB chunks
/// while a large message arrives, so attachments do not pay for its size
/// (BENCHMARKS.md, issue 15). Frames are gathered up to 16 KiB before a
/// write, so a burst to one connection costs one `send` instead of one per
/// frame.
pub fn ws_config(max_message: usize, read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(max_message.saturating_mul(2).max(1 << 20))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// The handshake's own rules, before any credential is looked at: HTTP/1.1,
/// a `Host`, `Upgrade: websocket`, `Connection: upgrade`, version 13 (else
/// 400 naming the version spoken), and a key that is 16 bytes in base64.
/// Answers the key.
fn check_handshake(req: &Request<Incoming>) -> Result<HeaderValue, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("Bad WebSocket handshake: {why}"));
    if req.version() != Version::HTTP_11 {
        return Err(bad("HTTP/1.1 is required"));
    }
    if !req.headers().contains_key(HOST) {
        return Err(bad("the Host header is required"));
    }
    if !header_has(req, UPGRADE, "websocket") || !header_has(req, CONNECTION, "upgrade") {
        return Err(ApiError::BadRequest("Expected a WebSocket upgrade request".into()));
    }
    if req.headers().get(SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes().trim_ascii() != b"13") {
        return Err(ApiError::WebSocketVersion);
    }
    let key = req.headers().get(SEC_WEBSOCKET_KEY).ok_or_else(|| bad("Sec-WebSocket-Key is required"))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes().trim_ascii());
    if decoded.map(|k| k.len()) != Ok(16) {
        return Err(bad("Sec-WebSocket-Key must be 16 bytes in base64"));
    }
    Ok(key.clone())
}

pub async fn upgrade(state: &Arc<AppState>, mut req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    if *state.shutting_down.borrow() {
        return Err(ApiError::Unavailable);
    }
    let key = check_handshake(&req)?;
    let params = query(&req);
    let token = params.get("token").map(String::as_str).or_else(|| bearer(req.headers()));
    let verified = authenticate(state, token).await?;
    let user = verified.user;
    let Some(slot) = state.limiter.ws_per_user.acquire(user) else {
        if state.metrics.limited(crate::metrics::Limit::WsPerUser) {
            tracing::warn!(user, "WebSocket refused: the user holds the most connections allowed");
        }
        return Err(ApiError::TooManyRequests {
            detail: "Too many open connections for this user; close one first".into(),
            retry_after_secs: 10,
        });
    };
    if let Some(allowed) = &state.config.allowed_origins {
        let origin = req.headers().get(ORIGIN).and_then(|o| o.to_str().ok()).map(|o| o.trim_end_matches('/'));
        if !origin.is_some_and(|o| allowed.iter().any(|a| a == o)) {
            return Err(ApiError::Forbidden("Origin not allowed"));
        }
    }
    let room = int_param(&params, "room_id", 1, i64::MAX)?;
    let replay_from = match params.get("cursor") {
        None => ReplayFrom::Now,
        Some(text) => Cursor::parse(text).map_or(ReplayFrom::Unreadable, ReplayFrom::Cursor),
    };
    if let Some(room_id) = room {
        let member = state.reader.is_member(room_id, user).await?;
        if !member {
            return Err(ApiError::NotFound("Room not found"));
        }
    }
    let name = state.reader.user(user).await?.map(|u| u.name).unwrap_or_default();
    let session = Session {
        user,
        user_name: name,
        expires_at: verified.exp,
        token_version: verified.version,
        token_id: verified.id,
        room,
        replay_from,
    };
    let registration = Registration::new(state, &session).await?;
    let connection_slot = req.extensions_mut().remove::<ConnectionSlot>();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_state = state.clone();
    state.ws_tasks.spawn(async move {
        let deadline = task_state.config.limits.ws_handshake_timeout;
        match tokio::time::timeout(deadline, on_upgrade).await {
            Ok(Ok(upgraded)) => {
                let config = ws_config(task_state.config.max_ws_message_bytes, task_state.config.ws_read_buffer_bytes);
                let meter = Arc::new(task_state.limiter.frame_budget.meter());
                let socket = Metered::new(TokioIo::new(upgraded), meter.clone());
                let ws = WebSocketStream::from_raw_socket(socket, Role::Server, Some(config)).await;
                connection::run(task_state, ws, session, meter, registration).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upgrade failed");
                registration.cancel(&task_state, user);
            }
            Err(_) => {
                tracing::info!(user, "WebSocket handshake did not finish in time");
                registration.cancel(&task_state, user);
            }
        }
        drop(slot);
        drop(connection_slot);
    });
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(key.as_bytes());
    headers
        .insert(SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).map_err(|e| ApiError::Internal(e.to_string()))?);
    Ok(response)
}
