//! The objects of the API (User, Message, Room, events) and their JSON.
//! Rendering is here so REST, the hub and the writer produce the same shapes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::rfc3339_ms;

pub type UserId = i64;
pub type RoomId = i64;
pub type MessageId = i64;

/// The User object of SPEC section 0.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub email: String,
    pub avatar_url: Option<String>,
    pub is_online: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Text,
    Image,
    File,
    Voice,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::Image => "image",
            MessageType::File => "file",
            MessageType::Voice => "voice",
        }
    }

    pub fn parse(s: &str) -> Option<MessageType> {
        Some(match s {
            "text" => MessageType::Text,
            "image" => MessageType::Image,
            "file" => MessageType::File,
            "voice" => MessageType::Voice,
            _ => return None,
        })
    }

    pub const ALL: [MessageType; 4] = [MessageType::Text, MessageType::Image, MessageType::File, MessageType::Voice];
}

/// One stored attachment as kept in `chat_messages.files_data`.
/// `file_path` is relative to the static directory; the API prefixes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    pub file_name: String,
    pub file_path: String,
    pub file_size: u64,
    pub mime_type: String,
    pub duration: Option<f64>,
}

/// A message with its people, as every reader sees it (viewer-dependent
/// fields are added when rendering).
#[derive(Clone, Debug)]
pub struct Message {
    pub id: MessageId,
    pub room_id: RoomId,
    /// Shared: a page of 50 messages holds the same two people 50 times.
    pub sender: Arc<User>,
    pub receiver: Arc<User>,
    pub message_type: MessageType,
    pub content: String,
    pub files: Option<Vec<FileMeta>>,
    pub duration: Option<f64>,
    pub local_temp_id: Option<String>,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub is_read: bool,
    pub is_deleted: bool,
    pub like_count: i64,
}

#[derive(Serialize)]
struct FileJson<'a> {
    file_name: &'a str,
    file_path: String,
    file_size: u64,
    mime_type: &'a str,
    duration: Option<f64>,
}

/// The Message object of SPEC section 0, for one viewer.
#[derive(Serialize)]
pub struct MessageJson<'a> {
    id: MessageId,
    room_id: RoomId,
    content: &'a str,
    message_type: &'static str,
    local_temp_id: Option<&'a str>,
    files_data: Option<Vec<FileJson<'a>>>,
    duration: Option<f64>,
    created_at: String,
    edited_at: Option<String>,
    is_read: bool,
    is_deleted: bool,
    is_sender: bool,
    is_liked: bool,
    like_count: i64,
    sender_details: &'a User,
    receiver_details: &'a User,
}

/// Whether a rendering of a message carries its `local_temp_id`
/// (only `new_message` does; REST reads and `message_update` never).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TempId {
    Show,
    Hide,
}

impl Message {
    pub fn json<'a>(&'a self, viewer: UserId, is_liked: bool, base_url: &str, temp_id: TempId) -> MessageJson<'a> {
        MessageJson {
            id: self.id,
            room_id: self.room_id,
            content: &self.content,
            message_type: self.message_type.as_str(),
            local_temp_id: match temp_id {
                TempId::Show => self.local_temp_id.as_deref(),
                TempId::Hide => None,
            },
            files_data: self.files.as_ref().map(|files| {
                files
                    .iter()
                    .map(|f| FileJson {
                        file_name: &f.file_name,
                        file_path: format!("{base_url}/static/{}", f.file_path),
                        file_size: f.file_size,
                        mime_type: &f.mime_type,
                        duration: f.duration,
                    })
                    .collect()
            }),
            duration: self.duration,
            created_at: rfc3339_ms(self.created_at),
            edited_at: self.edited_at.map(rfc3339_ms),
            is_read: self.is_read,
            is_deleted: self.is_deleted,
            is_sender: viewer == self.sender.id,
            is_liked,
            like_count: self.like_count,
            sender_details: self.sender.as_ref(),
            receiver_details: self.receiver.as_ref(),
        }
    }
}

/// The Room object of SPEC section 2.
#[derive(Clone, Debug)]
pub struct Room {
    pub id: RoomId,
    pub name: Option<String>,
    pub room_type: String,
    pub created_by: UserId,
    pub created_at: i64,
    pub updated_at: i64,
    pub is_active: bool,
    pub participants: Vec<User>,
    pub last_message: Option<(Message, bool)>,
    pub unread_count: i64,
}

impl Room {
    pub fn json(&self, viewer: UserId, base_url: &str) -> serde_json::Value {
        let other = self.participants.iter().find(|u| u.id != viewer).or_else(|| self.participants.first());
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "room_type": self.room_type,
            "created_by": self.created_by,
            "created_at": rfc3339_ms(self.created_at),
            "updated_at": rfc3339_ms(self.updated_at),
            "is_active": self.is_active,
            "participants": self.participants,
            "other_user": other,
            "last_message": self.last_message.as_ref().map(|(m, liked)| m.json(viewer, *liked, base_url, TempId::Hide)),
            "unread_count": self.unread_count,
        })
    }
}

/// Something that happened, to be told to some users' connections.
#[derive(Debug)]
pub enum Event {
    NewMessage(Message),
    MessageUpdate {
        message: Message,
        liked_by: Vec<UserId>,
    },
    MessageDelete {
        id: MessageId,
        room_id: RoomId,
    },
    MessageLike {
        id: MessageId,
        room_id: RoomId,
        user_id: UserId,
        like_count: i64,
    },
    Typing {
        room_id: RoomId,
        user_id: UserId,
        user_name: String,
        is_typing: bool,
    },
    Presence {
        user_id: UserId,
        user_name: String,
        is_online: bool,
    },
    MessageRead {
        room_id: RoomId,
        user_id: UserId,
        user_name: String,
    },
    /// Tokens of the audience's one user were revoked: the hub closes the
    /// connections opened with them (1008). Never rendered to a client.
    TokensRevoked(Revocation),
}

/// Which of a user's tokens (and so connections) a revocation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Those issued at a token version below this one (a password change).
    Below(u32),
    /// The one with this id (a logout).
    Token(Box<str>),
}

/// An event and the users whose every connection receives it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub audience: Arc<[UserId]>,
    pub event: Arc<Event>,
}

impl Envelope {
    pub fn new(audience: impl Into<Arc<[UserId]>>, event: Event) -> Envelope {
        Envelope { audience: audience.into(), event: Arc::new(event) }
    }
}

impl Event {
    /// Whether every viewer gets the same bytes (so one rendering serves all).
    pub fn same_for_everyone(&self) -> bool {
        !matches!(self, Event::NewMessage(_) | Event::MessageUpdate { .. })
    }

    /// The frame text of this event for `viewer`.
    pub fn render(&self, viewer: UserId, base_url: &str) -> String {
        match self {
            Event::NewMessage(m) => {
                Frame { kind: "new_message", data: m.json(viewer, false, base_url, TempId::Show) }.to_json()
            }
            Event::MessageUpdate { message, liked_by } => Frame {
                kind: "message_update",
                data: message.json(viewer, liked_by.contains(&viewer), base_url, TempId::Hide),
            }
            .to_json(),
            Event::MessageDelete { id, room_id } => {
                serde_json::json!({"type": "message_delete", "data": {"id": id, "room_id": room_id}}).to_string()
            }
            Event::MessageLike { id, room_id, user_id, like_count } => serde_json::json!({
                "type": "message_like",
                "data": {"id": id, "room_id": room_id, "user_id": user_id, "like_count": like_count}
            })
            .to_string(),
            Event::Typing { room_id, user_id, user_name, is_typing } => serde_json::json!({
                "type": "typing",
                "data": {"room_id": room_id, "user_id": user_id, "user_name": user_name, "is_typing": is_typing}
            })
            .to_string(),
            Event::Presence { user_id, user_name, is_online } => serde_json::json!({
                "type": "presence",
                "data": {"user_id": user_id, "is_online": is_online, "user_name": user_name}
            })
            .to_string(),
            Event::MessageRead { room_id, user_id, user_name } => serde_json::json!({
                "type": "message_read",
                "data": {"room_id": room_id, "user_id": user_id, "user_name": user_name}
            })
            .to_string(),
            Event::TokensRevoked(_) => String::new(),
        }
    }
}

/// `{"type": ..., "data": ...}` for a serialisable payload.
#[derive(Serialize)]
pub struct Frame<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub data: T,
}

impl<T: Serialize> Frame<'_, T> {
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `error` frame of SPEC section 3.
pub fn error_frame(message: &str, local_temp_id: Option<&str>) -> String {
    serde_json::json!({"type": "error", "message": message, "local_temp_id": local_temp_id}).to_string()
}
