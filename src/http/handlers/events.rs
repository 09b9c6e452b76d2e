//! `GET /api/chat/events`: the stored event stream for clients that poll —
//! the same frames, in the same order, as a WebSocket replay.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};

use crate::error::ApiError;
use crate::http::body::{self, Body};
use crate::http::util::{int_param, query, user_of};
use crate::model::Cursor;
use crate::state::AppState;

pub async fn page(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let params = query(&req);
    let limit = int_param(&params, "limit", 1, 1000)?.unwrap_or(100) as u32;
    let cursor = match params.get("cursor") {
        None => None,
        Some(text) => Some(Cursor::parse(text).ok_or(ApiError::Gone("Unknown cursor: reload and resync"))?),
    };
    let bounds = state.reader.stream_bounds().await?;
    let (frames, last, more) = match cursor {
        None => (Vec::new(), bounds.head, false),
        Some(cursor) if bounds.serves(cursor) => {
            let page = state.reader.events_after(user, cursor.0, limit, state.links.clone()).await?;
            (page.frames, page.through, page.has_more)
        }
        Some(_) => return Err(ApiError::Gone("Cursor expired: reload and resync")),
    };
    // The frames are JSON already: they are joined, not parsed again.
    let mut out = String::with_capacity(64 + frames.iter().map(|f| f.len() + 1).sum::<usize>());
    out.push_str(r#"{"events":["#);
    out.push_str(&frames.join(","));
    out.push_str(&format!(r#"],"cursor":"{}","has_more":{more}}}"#, Cursor(last)));
    let mut response = Response::new(body::full(out));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
