//! Rooms: create (idempotent), list, one, mark read, unread counts.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::Body;
use crate::http::util::{json, parse_json, read_body, user_of};
use crate::model::{RoomId, UserId};
use crate::state::AppState;
use crate::store::reads;

#[derive(Deserialize)]
struct CreateRoomBody {
    receiver_id: UserId,
}

pub async fn create(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (_, bytes) = read_body(state, req).await?;
    let body: CreateRoomBody = parse_json(&bytes)?;
    if body.receiver_id <= 0 {
        return Err(ApiError::NotFound("User not found"));
    }
    let (room_id, created) = state.writer.create_room(user, body.receiver_id).await?;
    let room = state.reader.run(move |c| reads::room(c, user, room_id)).await?;
    let room = room.ok_or(ApiError::Internal("a created room is missing".into()))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    json(status, &room.json(user, &state.base_url))
}

pub async fn list(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let rooms = state.reader.run(move |c| reads::rooms(c, user)).await?;
    let rendered: Vec<_> = rooms.iter().map(|r| r.json(user, &state.base_url)).collect();
    json(StatusCode::OK, &serde_json::json!({"total": rendered.len(), "rooms": rendered}))
}

pub async fn get(state: &Arc<AppState>, req: Request<Incoming>, room_id: RoomId) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let room = state.reader.run(move |c| reads::room(c, user, room_id)).await?;
    let room = room.ok_or(ApiError::NotFound("Room not found"))?;
    json(StatusCode::OK, &room.json(user, &state.base_url))
}

pub async fn mark_read(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    room_id: RoomId,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let marked = state.writer.mark_read(user, room_id).await?;
    json(StatusCode::OK, &serde_json::json!({"room_id": room_id, "marked_read": marked}))
}

pub async fn unread_count(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let rooms = state.reader.run(move |c| reads::unread_counts(c, user)).await?;
    let total: i64 = rooms.iter().map(|r| r.1).sum();
    let rooms: Vec<_> =
        rooms.iter().map(|(room_id, count)| serde_json::json!({"room_id": room_id, "unread_count": count})).collect();
    json(StatusCode::OK, &serde_json::json!({"unread_count": total, "rooms": rooms}))
}
