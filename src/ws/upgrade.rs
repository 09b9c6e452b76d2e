//! `GET /api/chat/ws`: checks token, room and `Origin` before answering 101,
//! then hands the upgraded socket to a tracked connection task.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, HeaderValue, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::connection::{self, Session};
use crate::error::ApiError;
use crate::http::body::{self, Body};
use crate::http::util::{authenticate, bearer, int_param, query};
use crate::state::AppState;
use crate::store::reads;

fn header_has(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

/// Small buffers keep an idle connection cheap; frames may be as large as the
/// configured message limit. Frames are gathered up to 16 KiB before a write,
/// so a burst to one connection costs one `send` instead of one per frame.
pub fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(max_message.saturating_mul(2).max(1 << 20))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

pub async fn upgrade(state: &Arc<AppState>, mut req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    if *state.shutting_down.borrow() {
        return Err(ApiError::Unavailable);
    }
    let params = query(&req);
    let token = params.get("token").map(String::as_str).or_else(|| bearer(req.headers()));
    let (user, expires) = authenticate(state, token).await?;
    if let Some(allowed) = &state.config.allowed_origins {
        let origin = req.headers().get(ORIGIN).and_then(|o| o.to_str().ok()).map(|o| o.trim_end_matches('/'));
        if !origin.is_some_and(|o| allowed.iter().any(|a| a == o)) {
            return Err(ApiError::Forbidden("Origin not allowed"));
        }
    }
    let room = int_param(&params, "room_id", 1, i64::MAX)?;
    if let Some(room_id) = room {
        let member = state.reader.run(move |c| reads::is_participant(c, room_id, user)).await?;
        if !member {
            return Err(ApiError::NotFound("Room not found"));
        }
    }
    let key = req.headers().get(SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req.headers().get(SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let (Some(key), true, true, true) =
        (key, version_ok, header_has(&req, UPGRADE, "websocket"), header_has(&req, CONNECTION, "upgrade"))
    else {
        return Err(ApiError::BadRequest("Expected a WebSocket upgrade request".into()));
    };
    let name = state.reader.run(move |c| reads::user_by_id(c, user)).await?.map(|u| u.name).unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_state = state.clone();
    state.ws_tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = ws_config(task_state.config.max_ws_message_bytes);
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                let session = Session { user, user_name: name, expires_at: expires, room };
                connection::run(task_state, ws, session).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
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
