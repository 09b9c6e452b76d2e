//! Messages: pages, edit, soft delete, like and unlike, reactions.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::Body;
use crate::http::util::{int_param, is_form, json, json_text, pairs, parse_json, query, read_body, user_of};
use crate::links::Links;
use crate::model::{
    MAX_FORWARD_ROOMS, MessageId, MessageJson, NOBODY, RoomId, Scheduled, TempId, UserId, is_emoji, reactions_json,
};
use crate::pages::{PageFacts, PageKey, PageTemplate};
use crate::state::AppState;
use crate::store::reads::{MessagePage, PageQuery};
use crate::ws::protocol::MAX_TEXT_CHARS;

/// The deepest offset a `page` may start at.
const MAX_OFFSET: u64 = 10_000;

pub async fn page(state: &Arc<AppState>, req: Request<Incoming>, room_id: RoomId) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let params = query(&req);
    let before = int_param(&params, "before_id", 1, i64::MAX)?;
    let after = int_param(&params, "after_id", 0, i64::MAX)?;
    let limit = int_param(&params, "limit", 1, 100)?.unwrap_or(50) as u32;
    let query = match (before, after) {
        (Some(_), Some(_)) => return Err(ApiError::unprocessable("Give before_id or after_id, not both")),
        (Some(id), None) => PageQuery::Before { id, limit },
        (None, Some(id)) => PageQuery::After { id, limit },
        (None, None) => {
            let page = int_param(&params, "page", 1, 1_000_000)?.unwrap_or(1) as u32;
            let per_page = int_param(&params, "per_page", 1, 100)?.unwrap_or(50) as u32;
            // An offset walks every row before it: deep history goes through
            // keyset paging (before_id), which costs the same at any depth.
            if u64::from(page - 1) * u64::from(per_page) >= MAX_OFFSET {
                return Err(ApiError::unprocessable(format!(
                    "page * per_page may reach at most {MAX_OFFSET} messages back; use before_id for older ones"
                )));
            }
            PageQuery::Page { page, per_page }
        }
    };
    if let PageQuery::Page { page: 1, per_page } = query
        && state.pages.enabled()
    {
        return newest_page(state, user, PageKey { room_id, per_page }).await;
    }
    uncached_page(state, user, room_id, query).await
}

async fn uncached_page(
    state: &Arc<AppState>,
    user: UserId,
    room_id: RoomId,
    query: PageQuery,
) -> Result<Response<Body>, ApiError> {
    let page = state.reader.messages_page(user, room_id, query).await?;
    let page = page.ok_or(ApiError::NotFound("Room not found"))?;
    json(StatusCode::OK, &PageJson::new(&page, user, &state.links))
}

/// The newest page, the one clients load most, through the rendered-page
/// cache: one rendering per room shared by its members, with the
/// per-viewer fields filled in for `user`.
async fn newest_page(state: &Arc<AppState>, user: UserId, key: PageKey) -> Result<Response<Body>, ApiError> {
    let links_exp = state.links.expiry_now();
    if let Some(page) = state.pages.get(key, links_exp) {
        if !page.may_see(user) {
            return Err(ApiError::NotFound("Room not found"));
        }
        return Ok(json_text(StatusCode::OK, page.render(user)));
    }
    // Taken before the read: a commit after it keeps this page out.
    let ticket = state.pages.ticket(key.room_id);
    let query = PageQuery::Page { page: 1, per_page: key.per_page };
    let shared = state.reader.shared_page(key.room_id, query).await?;
    if shared.members.binary_search(&user).is_err() {
        return Err(ApiError::NotFound("Room not found"));
    }
    let messages = &shared.page.messages;
    let text = serde_json::to_string(&PageJson::new(&shared.page, NOBODY, &state.links))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let no_likers = Vec::new();
    let fields =
        messages.iter().flat_map(|(m, _)| m.viewer_fields(shared.likers.get(&m.id).unwrap_or(&no_likers))).collect();
    let people =
        messages.iter().flat_map(|(m, _)| std::iter::once(m.sender.id).chain(m.receiver.as_ref().map(|r| r.id)));
    let facts = PageFacts { members: shared.members.clone(), people: people.collect(), links_exp };
    let Some(template) = PageTemplate::new(text, fields, facts) else {
        tracing::warn!(room_id = key.room_id, "a page's per-viewer fields do not match its rendering; not cached");
        return uncached_page(state, user, key.room_id, query).await;
    };
    let text = template.render(user);
    // A rendering that straddled the hour of its links holds two expiries.
    if state.links.expiry_now() == links_exp {
        state.pages.insert(key, ticket, template);
    }
    Ok(json_text(StatusCode::OK, text))
}

/// The seed's page object, serialised straight from the rows' views.
#[derive(serde::Serialize)]
struct PageJson<'a> {
    messages: Vec<MessageJson<'a>>,
    total: i64,
    has_more: bool,
    page: Option<u32>,
    per_page: u32,
    total_pages: Option<i64>,
}

impl<'a> PageJson<'a> {
    /// `page` (read for `viewer`) as `viewer` sees it.
    fn new(page: &'a MessagePage, viewer: UserId, links: &Links) -> PageJson<'a> {
        PageJson {
            messages: page.messages.iter().map(|(m, liked)| m.json(viewer, *liked, links, TempId::Hide)).collect(),
            total: page.total,
            has_more: page.has_more,
            page: page.page,
            per_page: page.per_page,
            total_pages: page.total_pages,
        }
    }
}

#[derive(Deserialize)]
struct EditBody {
    content: String,
}

pub async fn edit(state: &Arc<AppState>, req: Request<Incoming>, id: MessageId) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (headers, bytes) = read_body(state, req).await?;
    let content = if is_form(&headers) {
        pairs(&bytes).remove("content").ok_or(ApiError::unprocessable("content is required"))?
    } else {
        parse_json::<EditBody>(&bytes)?.content
    };
    let chars = content.chars().count();
    if content.trim().is_empty() || chars > MAX_TEXT_CHARS {
        return Err(ApiError::unprocessable(format!("content must be 1..{MAX_TEXT_CHARS} characters")));
    }
    let (message, liked) = state.writer.edit(user, id, content).await?;
    json(StatusCode::OK, &message.json(user, liked, &state.links, TempId::Hide))
}

pub async fn delete(state: &Arc<AppState>, req: Request<Incoming>, id: MessageId) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (message, liked, files) = state.writer.delete(user, id).await?;
    crate::attach::remove_stored_later(state.config.static_dir.clone(), files).await;
    json(StatusCode::OK, &message.json(user, liked, &state.links, TempId::Hide))
}

#[derive(Deserialize)]
struct ReactionBody {
    emoji: String,
}

/// `POST /messages/{id}/reactions` `{"emoji"}` adds the caller's reaction;
/// `DELETE /messages/{id}/reactions/{emoji}` removes it. Both idempotent.
pub async fn react(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    id: MessageId,
    add: bool,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let emoji = if add {
        let (_, bytes) = read_body(state, req).await?;
        parse_json::<ReactionBody>(&bytes)?.emoji
    } else {
        let segment = req.uri().path().trim_end_matches('/').rsplit('/').next().unwrap_or("");
        percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| ApiError::unprocessable("emoji must be UTF-8"))?
            .into_owned()
    };
    if !is_emoji(&emoji) {
        return Err(ApiError::unprocessable("emoji must be one emoji"));
    }
    let reactions = state.writer.react(user, id, emoji, add).await?;
    json(StatusCode::OK, &serde_json::json!({"id": id, "reactions": reactions_json(&reactions, user)}))
}

#[derive(Deserialize)]
struct ForwardBody {
    room_ids: Vec<RoomId>,
}

/// `POST /messages/{id}/forward` `{"room_ids"}`: a copy in each room (1..10
/// of the caller's; duplicates count once), all or none; 201 `{"messages"}`.
pub async fn forward(state: &Arc<AppState>, req: Request<Incoming>, id: MessageId) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (_, bytes) = read_body(state, req).await?;
    let mut room_ids = parse_json::<ForwardBody>(&bytes)?.room_ids;
    let mut seen = std::collections::HashSet::new();
    room_ids.retain(|room| seen.insert(*room));
    if room_ids.is_empty() || room_ids.len() > MAX_FORWARD_ROOMS {
        return Err(ApiError::unprocessable(format!("room_ids must name 1..{MAX_FORWARD_ROOMS} rooms")));
    }
    let copies = state.writer.forward(user, id, room_ids).await?;
    let base = &state.links;
    let messages: Vec<MessageJson<'_>> =
        copies.iter().map(|(message, liked)| message.json(user, *liked, base, TempId::Hide)).collect();
    json(StatusCode::CREATED, &serde_json::json!({"messages": messages}))
}

#[derive(Deserialize)]
struct ShareBody {
    ttl_secs: u64,
}

/// Lifetimes a share link may have: a minute to a week.
const SHARE_TTL_SECS: std::ops::RangeInclusive<u64> = 60..=604_800;

/// `POST /messages/{id}/files/{index}/share` `{"ttl_secs"}`: a signed link
/// to one file of a message the caller can see, for someone outside;
/// 201 `{"url", "expires_at"}`.
pub async fn share_file(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    id: MessageId,
    index: usize,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (_, bytes) = read_body(state, req).await?;
    let ttl = parse_json::<ShareBody>(&bytes)?.ttl_secs;
    if !SHARE_TTL_SECS.contains(&ttl) {
        return Err(ApiError::unprocessable("ttl_secs must be in 60..=604800"));
    }
    let files = state.reader.message_files(user, id).await?.ok_or(ApiError::NotFound("Message not found"))?;
    let file = files.get(index).ok_or(ApiError::NotFound("File not found"))?;
    let (url, expires_at) = state.links.share_url(&file.file_path, ttl);
    json(
        StatusCode::CREATED,
        &serde_json::json!({"url": url, "expires_at": crate::time::rfc3339_ms(expires_at as i64 * 1000)}),
    )
}

/// `GET /api/chat/scheduled`: the caller's pending items, soonest first.
pub async fn scheduled(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let items = state.reader.scheduled(user).await?;
    let items: Vec<serde_json::Value> = items.iter().map(Scheduled::json).collect();
    json(StatusCode::OK, &serde_json::json!({"scheduled": items}))
}

/// `DELETE /api/chat/scheduled/{id}`: cancels one of the caller's items;
/// its files, which no message uses, are removed.
pub async fn cancel_scheduled(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    id: i64,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let files = state.writer.cancel_scheduled(user, id).await?;
    crate::attach::remove_stored_later(state.config.static_dir.clone(), files).await;
    json(StatusCode::OK, &serde_json::json!({"id": id}))
}

/// `GET /api/chat/search?q=&room_id=&before_id=&limit=20`: newest first,
/// over the caller's rooms (or one of them).
pub async fn search(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let params = query(&req);
    let q = params.get("q").map(|q| q.trim().to_owned()).unwrap_or_default();
    if q.is_empty() || q.chars().count() > 200 {
        return Err(ApiError::unprocessable("q must be 1..200 characters"));
    }
    let limit = int_param(&params, "limit", 1, 50)?.unwrap_or(20) as usize;
    let before = int_param(&params, "before_id", 1, i64::MAX)?;
    let room = int_param(&params, "room_id", 1, i64::MAX)?;
    super::misc::throttle_search(state, user)?;
    if let Some(room_id) = room
        && !state.reader.is_member(room_id, user).await?
    {
        return Err(ApiError::NotFound("Room not found"));
    }
    let (found, next) = state.reader.search(user, q, room, before, limit).await?;
    let base = &state.links;
    let results: Vec<_> = found
        .iter()
        .map(|f| serde_json::json!({"message": f.message.json(user, f.liked, base, TempId::Hide), "highlight": f.highlight}))
        .collect();
    json(StatusCode::OK, &serde_json::json!({"results": results, "next_before_id": next}))
}

pub async fn like(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    id: MessageId,
    like: bool,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let result = state.writer.like(user, id, like).await?;
    json(
        StatusCode::OK,
        &serde_json::json!({"id": result.id, "is_liked": result.is_liked, "like_count": result.like_count}),
    )
}
