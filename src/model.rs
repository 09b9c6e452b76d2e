//! The objects of the API (User, Message, Room, events) and their JSON.
//! Rendering is here so REST, the hub and the writer produce the same shapes.

use crate::links::Links;
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
    /// `chat_files/thumbnails/...` once made (images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_path: Option<String>,
}

impl FileMeta {
    /// An image that has no thumbnail yet.
    pub fn wants_thumbnail(&self) -> bool {
        self.thumbnail_path.is_none() && self.file_path.starts_with("chat_files/images/")
    }
}

/// A message with its people, as every reader sees it (viewer-dependent
/// fields are added when rendering).
#[derive(Clone, Debug)]
pub struct Message {
    pub id: MessageId,
    pub room_id: RoomId,
    /// Shared: a page of 50 messages holds the same two people 50 times.
    pub sender: Arc<User>,
    /// The other person of a direct room; none in a group.
    pub receiver: Option<Arc<User>>,
    pub message_type: MessageType,
    pub content: String,
    pub files: Option<Vec<FileMeta>>,
    pub duration: Option<f64>,
    pub local_temp_id: Option<String>,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    /// Every other current member has read it.
    pub is_read: bool,
    /// How many members other than the sender have read it.
    pub read_count: i64,
    pub is_deleted: bool,
    pub like_count: i64,
    /// The message this one answers, as it is now.
    pub reply_to: Option<ReplyTo>,
    /// Its reactions, in order of first use.
    pub reactions: Vec<Reaction>,
    /// The message this one is a forwarded copy of.
    pub forwarded_from: Option<ForwardedFrom>,
}

/// The `forwarded_from` object of a Message: the first original and its
/// sender's name when it was forwarded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForwardedFrom {
    pub message_id: MessageId,
    pub sender_name: String,
}

/// A message waiting for its `send_at` (SPEC section 10).
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduled {
    /// Numbers the scheduled item, not a message.
    pub id: i64,
    pub room_id: RoomId,
    pub message_type: MessageType,
    pub content: String,
    /// Milliseconds since the epoch.
    pub send_at: i64,
    pub local_temp_id: Option<String>,
}

impl Scheduled {
    /// The `message_scheduled` event's data.
    pub fn event_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "room_id": self.room_id, "send_at": rfc3339_ms(self.send_at),
            "local_temp_id": self.local_temp_id,
        })
    }

    /// An entry of `GET /api/chat/scheduled`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "room_id": self.room_id, "message_type": self.message_type.as_str(),
            "content": self.content, "send_at": rfc3339_ms(self.send_at), "local_temp_id": self.local_temp_id,
        })
    }
}

/// How far ahead a message may be scheduled.
pub const MAX_SCHEDULE_AHEAD_MS: i64 = 366 * 24 * 3600 * 1000;

/// Rooms one forward may copy a message into.
pub const MAX_FORWARD_ROOMS: usize = 10;

/// One emoji on a message and who reacted with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reaction {
    pub emoji: String,
    pub users: Vec<UserId>,
}

/// `{"emoji", "count", "me"}` for one viewer.
#[derive(Serialize)]
pub struct ReactionJson<'a> {
    emoji: &'a str,
    count: usize,
    me: bool,
}

/// The `reactions` of a Message as `viewer` sees them.
pub fn reactions_json(reactions: &[Reaction], viewer: UserId) -> Vec<ReactionJson<'_>> {
    reactions
        .iter()
        .map(|r| ReactionJson { emoji: &r.emoji, count: r.users.len(), me: r.users.contains(&viewer) })
        .collect()
}

/// Different emoji one message may carry.
pub const MAX_REACTIONS: usize = 20;

/// Whether `text` is one emoji: a single grapheme cluster that Unicode's
/// emoji data (UTS #51) lists, modifiers and ZWJ sequences included, of at
/// most 64 bytes.
pub fn is_emoji(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && emojis::get(text).is_some()
}

/// The `reply_to` object of a Message: the replied message as it is now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplyTo {
    pub id: MessageId,
    pub sender_id: UserId,
    pub sender_name: String,
    pub message_type: &'static str,
    /// The first `REPLY_PREVIEW_CHARS` characters of its content; "" when
    /// deleted or without text.
    pub preview: String,
    pub is_deleted: bool,
}

pub const REPLY_PREVIEW_CHARS: usize = 100;

impl ReplyTo {
    pub fn new(id: MessageId, sender: &User, message_type: MessageType, content: &str, is_deleted: bool) -> ReplyTo {
        let preview = if is_deleted { String::new() } else { content.chars().take(REPLY_PREVIEW_CHARS).collect() };
        ReplyTo {
            id,
            sender_id: sender.id,
            sender_name: sender.name.clone(),
            message_type: message_type.as_str(),
            preview,
            is_deleted,
        }
    }
}

/// Who has read how far in one room: each member's `last_read_id`. Gives a
/// message's `read_count` and `is_read` without a query per message.
#[derive(Clone, Debug, Default)]
pub struct ReadState {
    members: Vec<(UserId, MessageId)>,
}

impl ReadState {
    pub fn new(members: Vec<(UserId, MessageId)>) -> ReadState {
        ReadState { members }
    }

    /// `(read_count, is_read)` of message `id` sent by `sender`.
    pub fn of(&self, sender: UserId, id: MessageId) -> (i64, bool) {
        let others = self.members.iter().filter(|(user, _)| *user != sender);
        let (mut read, mut total) = (0, 0);
        for (_, last_read) in others {
            total += 1;
            if *last_read >= id {
                read += 1;
            }
        }
        (read, total > 0 && read == total)
    }
}

#[derive(Serialize)]
struct FileJson<'a> {
    file_name: &'a str,
    file_path: String,
    file_size: u64,
    mime_type: &'a str,
    duration: Option<f64>,
    /// Signed like `file_path`; null for non-images and until it exists.
    thumbnail_path: Option<String>,
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
    read_count: i64,
    is_deleted: bool,
    is_sender: bool,
    is_liked: bool,
    like_count: i64,
    sender_details: &'a User,
    receiver_details: Option<&'a User>,
    reply_to: Option<&'a ReplyTo>,
    reactions: Vec<ReactionJson<'a>>,
    forwarded_from: Option<&'a ForwardedFrom>,
}

/// No user has this id: a rendering for nobody has every per-viewer field
/// false (`is_sender`, `is_liked`, each reaction's `me`).
pub const NOBODY: UserId = 0;

/// One per-viewer boolean of a rendered Message: its key and the users it
/// is true for.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewerField {
    pub key: &'static str,
    pub true_for: Vec<UserId>,
}

/// Whether a rendering of a message carries its `local_temp_id`
/// (only `new_message` does; REST reads and `message_update` never).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TempId {
    Show,
    Hide,
}

impl Message {
    pub fn json<'a>(&'a self, viewer: UserId, is_liked: bool, links: &Links, temp_id: TempId) -> MessageJson<'a> {
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
                        file_path: links.file_url(&f.file_path),
                        file_size: f.file_size,
                        mime_type: &f.mime_type,
                        duration: f.duration,
                        thumbnail_path: f.thumbnail_path.as_deref().map(|t| links.file_url(t)),
                    })
                    .collect()
            }),
            duration: self.duration,
            created_at: rfc3339_ms(self.created_at),
            edited_at: self.edited_at.map(rfc3339_ms),
            is_read: self.is_read,
            read_count: self.read_count,
            is_deleted: self.is_deleted,
            is_sender: viewer == self.sender.id,
            is_liked,
            like_count: self.like_count,
            sender_details: self.sender.as_ref(),
            receiver_details: self.receiver.as_deref(),
            reply_to: self.reply_to.as_ref(),
            reactions: reactions_json(&self.reactions, viewer),
            forwarded_from: self.forwarded_from.as_ref(),
        }
    }
}

/// The keys of the per-viewer booleans of a rendered Message.
pub const VIEWER_KEYS: [&str; 3] = ["is_sender", "is_liked", "me"];

impl Message {
    /// The per-viewer booleans of `json`, in the order it writes them:
    /// `is_sender`, `is_liked` (true for `likers`), each reaction's `me`.
    pub fn viewer_fields(&self, likers: &[UserId]) -> impl Iterator<Item = ViewerField> + '_ {
        let sender = ViewerField { key: "is_sender", true_for: vec![self.sender.id] };
        let liked = ViewerField { key: "is_liked", true_for: likers.to_vec() };
        let reactions = self.reactions.iter().map(|r| ViewerField { key: "me", true_for: r.users.clone() });
        [sender, liked].into_iter().chain(reactions)
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
    /// Both people of a direct room; at most `GROUP_PARTICIPANTS_SHOWN`
    /// members of a group (the rest through `/members`).
    pub participants: Vec<User>,
    pub member_count: i64,
    /// The admins of a group (the `role` of each viewer comes from here).
    pub admins: Vec<UserId>,
    pub last_message: Option<(Message, bool)>,
    pub unread_count: i64,
}

/// Members of a group listed in its Room object.
pub const GROUP_PARTICIPANTS_SHOWN: usize = 20;

pub const DIRECT: &str = "direct";
pub const GROUP: &str = "group";

impl Room {
    pub fn is_group(&self) -> bool {
        self.room_type == GROUP
    }

    pub fn json(&self, viewer: UserId, links: &Links) -> serde_json::Value {
        let other = if self.is_group() {
            None
        } else {
            self.participants.iter().find(|u| u.id != viewer).or_else(|| self.participants.first())
        };
        let role = if self.admins.contains(&viewer) { "admin" } else { "member" };
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
            "last_message": self.last_message.as_ref().map(|(m, liked)| m.json(viewer, *liked, links, TempId::Hide)),
            "unread_count": self.unread_count,
            "member_count": self.member_count,
            "role": role,
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
    MessageReaction {
        id: MessageId,
        room_id: RoomId,
        user_id: UserId,
        emoji: String,
        added: bool,
        reactions: Vec<Reaction>,
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
        last_read_id: MessageId,
    },
    RoomCreated(RoomView),
    RoomUpdated(RoomView),
    MemberAdded {
        room_id: RoomId,
        users: Vec<User>,
        by: UserId,
    },
    MemberRemoved {
        room_id: RoomId,
        user_id: UserId,
        by: UserId,
    },
    /// To the removed user only.
    RoomRemoved {
        room_id: RoomId,
    },
    /// To the sender only.
    MessageScheduled(Scheduled),
    /// Tokens of the audience's one user were revoked: the hub closes the
    /// connections opened with them (1008). Never rendered to a client.
    TokensRevoked(Revocation),
}

/// A Room for every member at once: its unread count differs per member.
#[derive(Debug, Clone)]
pub struct RoomView {
    pub room: Room,
    pub unread: Vec<(UserId, i64)>,
}

impl RoomView {
    pub fn json(&self, viewer: UserId, links: &Links) -> serde_json::Value {
        let mut value = self.room.json(viewer, links);
        let unread = self.unread.iter().find(|(u, _)| *u == viewer).map_or(0, |(_, n)| *n);
        value["unread_count"] = unread.into();
        value
    }
}

/// Which of a user's tokens (and so connections) a revocation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Those issued at a token version below this one (a password change).
    Below(u32),
    /// The one with this id (a logout).
    Token(Box<str>),
}

/// An event and the users whose every connection receives it. A stored
/// event has the position it was stored at: its frame carries the cursor.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub audience: Arc<[UserId]>,
    pub event: Arc<Event>,
    pub position: Option<i64>,
}

impl Envelope {
    pub fn new(audience: impl Into<Arc<[UserId]>>, event: Event) -> Envelope {
        Envelope { audience: audience.into(), event: Arc::new(event), position: None }
    }
}

/// A place in the event stream, as clients hold it: `v1.<position>`.
/// Opaque to clients, URL-safe (RFC 3986 unreserved characters only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub i64);

impl Cursor {
    pub fn parse(text: &str) -> Option<Cursor> {
        let digits = text.strip_prefix("v1.")?;
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i64>().ok().map(Cursor)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v1.{}", self.0)
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Event {
    /// Whether every viewer gets the same bytes (so one rendering serves all).
    pub fn same_for_everyone(&self) -> bool {
        !matches!(
            self,
            Event::NewMessage(_)
                | Event::MessageUpdate { .. }
                | Event::MessageReaction { .. }
                | Event::RoomCreated(_)
                | Event::RoomUpdated(_)
        )
    }

    /// The frame text of this event for `viewer`, with its cursor if stored.
    pub fn render(&self, viewer: UserId, links: &Links, position: Option<i64>) -> String {
        let cursor = position.map(Cursor);
        let frame = |kind: &str, data: serde_json::Value| Frame { kind, data, cursor }.to_json();
        match self {
            Event::NewMessage(m) => {
                Frame { kind: "new_message", data: m.json(viewer, false, links, TempId::Show), cursor }.to_json()
            }
            Event::MessageUpdate { message, liked_by } => Frame {
                kind: "message_update",
                data: message.json(viewer, liked_by.contains(&viewer), links, TempId::Hide),
                cursor,
            }
            .to_json(),
            Event::MessageDelete { id, room_id } => {
                frame("message_delete", serde_json::json!({"id": id, "room_id": room_id}))
            }
            Event::MessageLike { id, room_id, user_id, like_count } => frame(
                "message_like",
                serde_json::json!({"id": id, "room_id": room_id, "user_id": user_id, "like_count": like_count}),
            ),
            Event::MessageReaction { id, room_id, user_id, emoji, added, reactions } => frame(
                "message_reaction",
                serde_json::json!({
                    "id": id, "room_id": room_id, "user_id": user_id, "emoji": emoji, "added": added,
                    "reactions": reactions_json(reactions, viewer),
                }),
            ),
            Event::Typing { room_id, user_id, user_name, is_typing } => frame(
                "typing",
                serde_json::json!({"room_id": room_id, "user_id": user_id, "user_name": user_name, "is_typing": is_typing}),
            ),
            Event::Presence { user_id, user_name, is_online } => frame(
                "presence",
                serde_json::json!({"user_id": user_id, "is_online": is_online, "user_name": user_name}),
            ),
            Event::MessageRead { room_id, user_id, user_name, last_read_id } => frame(
                "message_read",
                serde_json::json!({"room_id": room_id, "user_id": user_id, "user_name": user_name, "last_read_id": last_read_id}),
            ),
            Event::RoomCreated(view) => frame("room_created", view.json(viewer, links)),
            Event::RoomUpdated(view) => frame("room_updated", view.json(viewer, links)),
            Event::MemberAdded { room_id, users, by } => {
                frame("member_added", serde_json::json!({"room_id": room_id, "users": users, "by": by}))
            }
            Event::MemberRemoved { room_id, user_id, by } => {
                frame("member_removed", serde_json::json!({"room_id": room_id, "user_id": user_id, "by": by}))
            }
            Event::RoomRemoved { room_id } => frame("room_removed", serde_json::json!({"room_id": room_id})),
            Event::MessageScheduled(item) => frame("message_scheduled", item.event_json()),
            Event::TokensRevoked(_) => String::new(),
        }
    }
}

/// `{"type": ..., "data": ..., "cursor"?: ...}` for a serialisable payload.
#[derive(Serialize)]
pub struct Frame<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
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

/// The frame that ends a replay (or opens a connection without a cursor).
pub fn synced_frame(cursor: Cursor) -> String {
    Frame { kind: "synced", data: serde_json::json!({"cursor": cursor}), cursor: None }.to_json()
}

pub const RESYNC_REQUIRED: &str = r#"{"type":"resync_required"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        assert_eq!(Cursor(42).to_string(), "v1.42");
        assert_eq!(Cursor::parse("v1.42"), Some(Cursor(42)));
        assert_eq!(Cursor::parse("v1.0"), Some(Cursor(0)));
        for bad in ["", "42", "v1.", "v1.-1", "v1.4x", "v2.4", "v1.99999999999999999999", "v1.+4"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
        let frame = Frame { kind: "message_delete", data: serde_json::json!({"id": 1}), cursor: Some(Cursor(7)) };
        assert_eq!(frame.to_json(), r#"{"type":"message_delete","data":{"id":1},"cursor":"v1.7"}"#);
    }

    #[test]
    fn one_emoji_is_an_emoji_and_nothing_else_is() {
        for good in ["👍", "👍🏽", "❤️", "👨\u{200d}👩\u{200d}👧", "🏳️\u{200d}🌈", "🇺🇿", "1️⃣"]
        {
            assert!(is_emoji(good), "{good:?}");
        }
        for bad in ["", "a", "👍👍", "ok", " 👍", "1", "👍 ", "\u{200d}"] {
            assert!(!is_emoji(bad), "{bad:?}");
        }
    }

    #[test]
    fn reactions_render_per_viewer() {
        let reactions =
            vec![Reaction { emoji: "👍".into(), users: vec![1, 2] }, Reaction { emoji: "🎉".into(), users: vec![3] }];
        let json = serde_json::to_value(reactions_json(&reactions, 2)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"emoji": "👍", "count": 2, "me": true}, {"emoji": "🎉", "count": 1, "me": false}])
        );
    }

    #[test]
    fn read_state_counts_other_members() {
        let state = ReadState::new(vec![(1, 10), (2, 5), (3, 12)]);
        assert_eq!(state.of(1, 10), (1, false), "3 read it, 2 did not");
        assert_eq!(state.of(1, 5), (2, true));
        assert_eq!(state.of(2, 6), (2, true), "the sender does not count");
        assert_eq!(ReadState::new(vec![(1, 0)]).of(1, 3), (0, false), "alone in a room nobody reads");
    }
}
