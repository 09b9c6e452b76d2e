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
use crate::store::reads;

pub async fn page(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let params = query(&req);
    let limit = int_param(&params, "limit", 1, 1000)?.unwrap_or(100) as u32;
    let cursor = match params.get("cursor") {
        None => None,
        Some(text) => Some(Cursor::parse(text).ok_or(ApiError::Gone("Unknown cursor: reload and resync"))?),
    };
    let base_url = state.base_url.clone();
    let (frames, last, more) = state
        .reader
        .run(move |c| {
            let (head, horizon) = (reads::event_head(c)?, reads::event_horizon(c)?);
            let after = match cursor {
                None => return Ok(None),
                Some(Cursor(position)) if position >= horizon && position <= head => position,
                Some(_) => return Ok(Some(Err(()))),
            };
            Ok(Some(Ok(reads::replay_page(c, user, after, limit, &base_url)?)))
        })
        .await?
        .map_or_else(
            || Ok((Vec::new(), None, false)),
            |page| page.map(|(frames, last, more)| (frames, Some(last), more)),
        )
        .map_err(|()| ApiError::Gone("Cursor expired: reload and resync"))?;
    let last = match last {
        Some(last) => last,
        None => state.reader.run(reads::event_head).await?,
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
