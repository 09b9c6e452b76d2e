//! Rooms: create (a direct room, idempotent, or a group), list, one, mark
//! read, unread counts; a group's members, name and roles.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::Body;
use crate::http::util::{int_param, json, parse_json, query, read_body, user_of};
use crate::model::{RoomId, UserId};
use crate::state::AppState;
use crate::store::writer::NewGroup;

/// `{"receiver_id"}` makes the direct room; `{"name", "member_ids"}` a group.
#[derive(Deserialize)]
struct CreateRoomBody {
    receiver_id: Option<UserId>,
    name: Option<String>,
    #[serde(default)]
    member_ids: Vec<UserId>,
}

#[derive(Deserialize)]
struct RenameBody {
    name: String,
}

#[derive(Deserialize)]
struct AddMembersBody {
    user_ids: Vec<UserId>,
}

#[derive(Deserialize)]
struct RoleBody {
    role: String,
}

/// A group name: 1..=100 characters once trimmed.
fn group_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::unprocessable("name must be 1..100 characters"));
    }
    Ok(name.to_owned())
}

pub async fn create(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (_, bytes) = read_body(state, req).await?;
    let body: CreateRoomBody = parse_json(&bytes)?;
    let receiver = match (body.receiver_id, body.name) {
        (Some(receiver), _) => receiver,
        (None, Some(name)) => {
            let group = NewGroup { creator: user, name: group_name(&name)?, member_ids: body.member_ids };
            let room_id = state.writer.create_group(group).await?;
            return room_answer(state, user, room_id, StatusCode::CREATED).await;
        }
        (None, None) => {
            return Err(ApiError::unprocessable("receiver_id (a direct room) or name (a group) is required"));
        }
    };
    if receiver <= 0 {
        return Err(ApiError::NotFound("User not found"));
    }
    let (room_id, created) = state.writer.create_room(user, receiver).await?;
    let room = state.reader.room(user, room_id).await?;
    let room = room.ok_or(ApiError::Internal("a created room is missing".into()))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    json(status, &room.json(user, &state.links))
}

/// The Room as `user` sees it, with `status`.
async fn room_answer(
    state: &Arc<AppState>,
    user: UserId,
    room_id: RoomId,
    status: StatusCode,
) -> Result<Response<Body>, ApiError> {
    let room = state.reader.room(user, room_id).await?;
    let room = room.ok_or(ApiError::NotFound("Room not found"))?;
    json(status, &room.json(user, &state.links))
}

/// `PATCH /rooms/{id}` `{"name"}`: admins rename a group.
pub async fn rename(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    room_id: RoomId,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (_, bytes) = read_body(state, req).await?;
    let body: RenameBody = parse_json(&bytes)?;
    state.writer.rename_room(user, room_id, group_name(&body.name)?).await?;
    room_answer(state, user, room_id, StatusCode::OK).await
}

/// `GET /rooms/{id}/members?limit=&after_id=`: keyset by user id.
pub async fn members(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    room_id: RoomId,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let params = query(&req);
    let limit = int_param(&params, "limit", 1, 1000)?.unwrap_or(100) as u32;
    let after = int_param(&params, "after_id", 0, i64::MAX)?.unwrap_or(0);
    let page = state.reader.members(user, room_id, after, limit).await?;
    let (members, total) = page.ok_or(ApiError::NotFound("Room not found"))?;
    json(StatusCode::OK, &serde_json::json!({"members": members, "total": total}))
}

/// `POST /rooms/{id}/members` `{"user_ids"}`: admins add people.
pub async fn add_members(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    room_id: RoomId,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (_, bytes) = read_body(state, req).await?;
    let body: AddMembersBody = parse_json(&bytes)?;
    let added = state.writer.add_members(user, room_id, body.user_ids).await?;
    json(StatusCode::OK, &serde_json::json!({"added": added}))
}

/// `DELETE /rooms/{id}/members/{user_id}`: admins remove; anyone leaves.
pub async fn remove_member(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    room_id: RoomId,
    target: UserId,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    state.writer.remove_member(user, room_id, target).await?;
    json(StatusCode::OK, &serde_json::json!({"room_id": room_id, "user_id": target}))
}

/// `PATCH /rooms/{id}/members/{user_id}` `{"role"}`: admins promote or demote.
pub async fn set_role(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    room_id: RoomId,
    target: UserId,
) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let (_, bytes) = read_body(state, req).await?;
    let body: RoleBody = parse_json(&bytes)?;
    let admin = match body.role.as_str() {
        "admin" => true,
        "member" => false,
        _ => return Err(ApiError::unprocessable("role must be \"admin\" or \"member\"")),
    };
    state.writer.set_role(user, room_id, target, admin).await?;
    let member = state.reader.member(room_id, target).await?;
    json(StatusCode::OK, &member.ok_or(ApiError::NotFound("Member not found"))?)
}

pub async fn list(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let rooms = state.reader.rooms(user).await?;
    let rendered: Vec<_> = rooms.iter().map(|r| r.json(user, &state.links)).collect();
    json(StatusCode::OK, &serde_json::json!({"total": rendered.len(), "rooms": rendered}))
}

pub async fn get(state: &Arc<AppState>, req: Request<Incoming>, room_id: RoomId) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let room = state.reader.room(user, room_id).await?;
    let room = room.ok_or(ApiError::NotFound("Room not found"))?;
    json(StatusCode::OK, &room.json(user, &state.links))
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
    let rooms = state.reader.unread_counts(user).await?;
    let total: i64 = rooms.iter().map(|r| r.1).sum();
    let rooms: Vec<_> =
        rooms.iter().map(|(room_id, count)| serde_json::json!({"room_id": room_id, "unread_count": count})).collect();
    json(StatusCode::OK, &serde_json::json!({"unread_count": total, "rooms": rooms}))
}
