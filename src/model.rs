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

impl MessageJson<'_> {
    /// About how many bytes `write_json` writes: enough, for a message
    /// without unusual escaping, that its frame is written into one
    /// allocation. (A fixed 640 was too small for a 100-byte text between
    /// two users: every `new_message` grew its buffer once, and glibc's
    /// `realloc` of a ~1 KiB block was 5% of the async workers' time.)
    pub fn size_hint(&self) -> usize {
        // Keys, punctuation, numbers, booleans and nulls of a text message.
        const FIXED: usize = 400;
        const PER_FILE: usize = 320;
        const PER_REACTION: usize = 48;
        let user = |u: &User| 72 + u.name.len() + u.email.len() + u.avatar_url.as_ref().map_or(0, String::len);
        let text = |t: &str| t.len() + t.len() / 8;
        FIXED
            + text(self.content)
            + self.local_temp_id.map_or(0, str::len)
            + self.files_data.as_ref().map_or(0, |f| f.len() * PER_FILE)
            + user(self.sender_details)
            + self.receiver_details.map_or(0, user)
            + self.reply_to.map_or(0, |r| 96 + text(&r.preview) + r.sender_name.len())
            + self.reactions.len() * PER_REACTION
            + self.forwarded_from.map_or(0, |f| 64 + f.sender_name.len())
    }

    /// Appends this message's JSON: byte for byte what `serde_json` writes
    /// for it (a test holds the two together), written directly because
    /// every `new_message` frame carries one and serde escapes every key.
    pub fn write_json(&self, out: &mut String) {
        use crate::json::{push_bool, push_int, push_opt_str, push_serde, push_str};
        out.push_str("{\"id\":");
        push_int(out, self.id);
        out.push_str(",\"room_id\":");
        push_int(out, self.room_id);
        out.push_str(",\"content\":");
        push_str(out, self.content);
        out.push_str(",\"message_type\":");
        push_str(out, self.message_type);
        out.push_str(",\"local_temp_id\":");
        push_opt_str(out, self.local_temp_id);
        out.push_str(",\"files_data\":");
        match &self.files_data {
            Some(files) => push_serde(out, files),
            None => out.push_str("null"),
        }
        out.push_str(",\"duration\":");
        match &self.duration {
            Some(duration) => push_serde(out, duration),
            None => out.push_str("null"),
        }
        out.push_str(",\"created_at\":");
        push_str(out, &self.created_at);
        out.push_str(",\"edited_at\":");
        push_opt_str(out, self.edited_at.as_deref());
        out.push_str(",\"is_read\":");
        push_bool(out, self.is_read);
        out.push_str(",\"read_count\":");
        push_int(out, self.read_count);
        out.push_str(",\"is_deleted\":");
        push_bool(out, self.is_deleted);
        out.push_str(",\"is_sender\":");
        push_bool(out, self.is_sender);
        out.push_str(",\"is_liked\":");
        push_bool(out, self.is_liked);
        out.push_str(",\"like_count\":");
        push_int(out, self.like_count);
        out.push_str(",\"sender_details\":");
        self.sender_details.write_json(out);
        out.push_str(",\"receiver_details\":");
        match self.receiver_details {
            Some(user) => user.write_json(out),
            None => out.push_str("null"),
        }
        out.push_str(",\"reply_to\":");
        match self.reply_to {
            Some(reply) => push_serde(out, reply),
            None => out.push_str("null"),
        }
        out.push_str(",\"reactions\":");
        if self.reactions.is_empty() {
            out.push_str("[]");
        } else {
            push_serde(out, &self.reactions);
        }
        out.push_str(",\"forwarded_from\":");
        match self.forwarded_from {
            Some(forwarded) => push_serde(out, forwarded),
            None => out.push_str("null"),
        }
        out.push('}');
    }
}

impl User {
    /// Appends this user's JSON, as `serde_json` writes it.
    pub fn write_json(&self, out: &mut String) {
        use crate::json::{push_bool, push_int, push_opt_str, push_str};
        out.push_str("{\"id\":");
        push_int(out, self.id);
        out.push_str(",\"name\":");
        push_str(out, &self.name);
        out.push_str(",\"email\":");
        push_str(out, &self.email);
        out.push_str(",\"avatar_url\":");
        push_opt_str(out, self.avatar_url.as_deref());
        out.push_str(",\"is_online\":");
        push_bool(out, self.is_online);
        out.push('}');
    }
}

/// `{"type":kind,"data":<message>,"cursor"?:...}`, as `Frame::to_json` writes it.
fn message_frame(kind: &str, message: &MessageJson<'_>, cursor: Option<Cursor>) -> String {
    let mut out = String::with_capacity(48 + kind.len() + message.size_hint());
    out.push_str("{\"type\":");
    crate::json::push_str(&mut out, kind);
    out.push_str(",\"data\":");
    message.write_json(&mut out);
    if let Some(Cursor(position)) = cursor {
        out.push_str(",\"cursor\":\"v1.");
        crate::json::push_int(&mut out, position);
        out.push('"');
    }
    out.push('}');
    out
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
    /// Which rendering `viewer` gets: viewers of one class get the same bytes,
    /// so a fan-out renders once per class, not once per viewer. `None` when
    /// the bytes are the viewer's own (a room view with its role and unread
    /// count, a reaction the viewer made).
    ///
    /// A message's bytes differ between viewers only in `is_sender`,
    /// `is_liked` and each reaction's `me`; with no reaction of the viewer's
    /// the class is those two flags.
    pub fn viewer_class(&self, viewer: UserId) -> Option<usize> {
        let reacted = |reactions: &[Reaction]| reactions.iter().any(|r| r.users.contains(&viewer));
        match self {
            Event::NewMessage(m) if !reacted(&m.reactions) => Some(usize::from(viewer == m.sender.id)),
            Event::MessageUpdate { message, liked_by } if !reacted(&message.reactions) => {
                Some(usize::from(viewer == message.sender.id) | usize::from(liked_by.contains(&viewer)) << 1)
            }
            Event::MessageReaction { reactions, .. } if !reacted(reactions) => Some(0),
            Event::NewMessage(_)
            | Event::MessageUpdate { .. }
            | Event::MessageReaction { .. }
            | Event::RoomCreated(_)
            | Event::RoomUpdated(_) => None,
            _ => Some(0),
        }
    }

    /// The frame text of this event for `viewer`, with its cursor if stored.
    pub fn render(&self, viewer: UserId, links: &Links, position: Option<i64>) -> String {
        let cursor = position.map(Cursor);
        let frame = |kind: &str, data: serde_json::Value| Frame { kind, data, cursor }.to_json();
        match self {
            Event::NewMessage(m) => message_frame("new_message", &m.json(viewer, false, links, TempId::Show), cursor),
            Event::MessageUpdate { message, liked_by } => message_frame(
                "message_update",
                &message.json(viewer, liked_by.contains(&viewer), links, TempId::Hide),
                cursor,
            ),
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

    /// A text message in room 9 with temp id `t-1` and nothing else set.
    fn text_message(sender: Arc<User>, content: &str) -> Message {
        Message {
            id: 5,
            room_id: 9,
            sender,
            receiver: None,
            message_type: MessageType::Text,
            content: content.into(),
            files: None,
            duration: None,
            local_temp_id: Some("t-1".into()),
            created_at: 1_700_000_000_123,
            edited_at: None,
            is_read: false,
            read_count: 0,
            is_deleted: false,
            like_count: 0,
            reply_to: None,
            reactions: Vec::new(),
            forwarded_from: None,
        }
    }

    /// Viewers of one class must get the same bytes (the hub renders once
    /// per class); viewers of different classes differ.
    #[test]
    fn viewers_of_one_class_get_the_same_bytes() {
        let person = |id| {
            Arc::new(User {
                id,
                name: format!("u{id}"),
                email: format!("u{id}@x.io"),
                avatar_url: None,
                is_online: true,
            })
        };
        let message =
            |reactions: Vec<Reaction>| Message { like_count: 2, reactions, ..text_message(person(1), "hi \"there\"") };
        let reacted = || vec![Reaction { emoji: "👍".into(), users: vec![3] }];
        let events = [
            Event::NewMessage(message(Vec::new())),
            Event::NewMessage(message(reacted())),
            Event::MessageUpdate { message: message(Vec::new()), liked_by: vec![1, 2] },
            Event::MessageUpdate { message: message(reacted()), liked_by: vec![2, 4] },
            Event::MessageReaction {
                id: 5,
                room_id: 9,
                user_id: 3,
                emoji: "👍".into(),
                added: true,
                reactions: reacted(),
            },
            Event::MessageDelete { id: 5, room_id: 9 },
            Event::Typing { room_id: 9, user_id: 1, user_name: "u1".into(), is_typing: true },
        ];
        let links = Links::public("http://x");
        for event in &events {
            let viewers: Vec<(UserId, Option<usize>, String)> =
                (1..=5).map(|v| (v, event.viewer_class(v), event.render(v, &links, Some(7)))).collect();
            for (a, class_a, bytes_a) in &viewers {
                for (b, class_b, bytes_b) in &viewers {
                    if let (Some(x), Some(y)) = (class_a, class_b) {
                        assert!(*x < 4, "a class indexes the hub's four slots");
                        assert_eq!(x == y, bytes_a == bytes_b, "viewers {a} and {b} of {bytes_a}");
                    }
                }
            }
        }
        assert_eq!(events[0].viewer_class(2), events[0].viewer_class(4), "two readers share a rendering");
        assert_eq!(events[1].viewer_class(3), None, "a viewer's own reaction is its own rendering");
    }

    /// The hand-written message JSON must stay serde's, byte for byte: a
    /// field added to `MessageJson` and not to `write_json` fails here.
    #[test]
    fn hand_written_message_json_is_serde_json_byte_for_byte() {
        let ann = Arc::new(User {
            id: 1,
            name: "Ann \"A\" \\ \u{1}".into(),
            email: "a@x.io".into(),
            avatar_url: None,
            is_online: true,
        });
        let bob = Arc::new(User {
            id: 2,
            name: "Bøb 👍".into(),
            email: "b@x.io".into(),
            avatar_url: Some("/a.png".into()),
            is_online: false,
        });
        let plain = Message {
            receiver: Some(bob.clone()),
            ..text_message(ann.clone(), "line\nbreak \t \"quoted\" </script> \u{7f}\u{2028}")
        };
        let rich = Message {
            receiver: None,
            message_type: MessageType::Voice,
            files: Some(vec![FileMeta {
                file_name: "v \"1\".ogg".into(),
                file_path: "chat_files/voice/x.ogg".into(),
                file_size: 12_345,
                mime_type: "audio/ogg".into(),
                duration: Some(3.25),
                thumbnail_path: Some("chat_files/thumbnails/x.jpg".into()),
            }]),
            duration: Some(3.25),
            local_temp_id: None,
            edited_at: Some(1_700_000_100_000),
            is_read: true,
            read_count: 3,
            is_deleted: true,
            like_count: 7,
            reply_to: Some(ReplyTo {
                id: 4,
                sender_id: 2,
                sender_name: "Bøb".into(),
                message_type: "text",
                preview: "earlier \"text\"".into(),
                is_deleted: false,
            }),
            reactions: vec![Reaction { emoji: "👍".into(), users: vec![1, 2] }],
            forwarded_from: Some(ForwardedFrom { message_id: 3, sender_name: "C\\d".into() }),
            ..plain.clone()
        };
        let links = Links::public("http://x");
        for message in [&plain, &rich] {
            for (viewer, liked, temp_id) in [(1, false, TempId::Show), (2, true, TempId::Hide)] {
                let json = message.json(viewer, liked, &links, temp_id);
                let mut ours = String::new();
                json.write_json(&mut ours);
                assert_eq!(ours, serde_json::to_string(&json).unwrap());
                for cursor in [None, Some(Cursor(42))] {
                    let frame = Frame { kind: "new_message", data: &json, cursor }.to_json();
                    assert_eq!(message_frame("new_message", &json, cursor), frame);
                }
            }
        }
    }

    /// A `new_message` frame is written into the buffer it starts with:
    /// growing it cost a `realloc` per frame (see `MessageJson::size_hint`).
    #[test]
    fn a_frame_fits_the_buffer_its_size_hint_gives() {
        let user = |id: UserId| {
            Arc::new(User {
                id,
                name: format!("bench {id}"),
                email: format!("bench-0123abcd-{id}@bench.local"),
                avatar_url: Some("https://avatars.example.com/u/1234567890.png".into()),
                is_online: true,
            })
        };
        let links = Links::public("http://x");
        for content in ["", "hi", &"x".repeat(100), &"Ünïcödé text, \"quoted\" once.\n".repeat(150), &"y".repeat(5000)]
        {
            let mut message = text_message(user(123_456), content);
            message.id = i64::MAX;
            message.room_id = i64::MAX;
            message.local_temp_id = Some("0123abcd-99-1234567".into());
            message.receiver = Some(user(654_321));
            message.like_count = 1_000_000;
            message.read_count = 999;
            let json = message.json(1, true, &links, TempId::Show);
            let hint = 48 + "new_message".len() + json.size_hint();
            let frame = message_frame("new_message", &json, Some(Cursor(i64::MAX)));
            assert!(frame.len() <= hint, "{} bytes over a hint of {hint}", frame.len());
            assert!(frame.capacity() <= hint, "the buffer grew: {} > {hint}", frame.capacity());
        }
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
