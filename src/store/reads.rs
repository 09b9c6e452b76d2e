//! Queries. Plain functions of a `&Connection`, so the read pool and the
//! writer (inside its transaction) share them. Every query here is served by
//! an index of `sql/001_init.sql`.

use crate::links::Links;
use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StoreError;
use crate::model::{
    Event, FileMeta, ForwardedFrom, GROUP_PARTICIPANTS_SHOWN, Message, MessageId, MessageType, NOBODY, Reaction,
    ReadState, ReplyTo, Room, RoomId, RoomView, Scheduled, User, UserId,
};

const USER_COLS: &str = "u.id, u.name, u.email, u.avatar_url, COALESCE(p.is_online, 0)";
const USER_FROM: &str = "users u LEFT JOIN user_presence p ON p.user_id = u.id";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User { id: row.get(0)?, name: row.get(1)?, email: row.get(2)?, avatar_url: row.get(3)?, is_online: row.get(4)? })
}

pub fn user_by_id(conn: &Connection, id: UserId) -> Result<Option<User>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {USER_COLS} FROM {USER_FROM} WHERE u.id = ?1"))?;
    Ok(stmt.query_row([id], user_from_row).optional()?)
}

/// What a login needs of a user.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
    pub token_version: u32,
}

/// The user with its password hash and token version, for login.
pub fn user_by_email(conn: &Connection, email: &str) -> Result<Option<Credentials>, StoreError> {
    credentials_where(conn, "u.email = ?1", email)
}

/// The password hash and token version of a user.
pub fn credentials_by_id(conn: &Connection, id: UserId) -> Result<Option<Credentials>, StoreError> {
    credentials_where(conn, "u.id = ?1", id)
}

fn credentials_where(
    conn: &Connection,
    condition: &str,
    key: impl rusqlite::ToSql,
) -> Result<Option<Credentials>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLS}, u.password_hash, u.token_version FROM {USER_FROM} WHERE {condition}"
    ))?;
    let found = stmt.query_row([key], |row| {
        Ok(Credentials { user: user_from_row(row)?, password_hash: row.get(5)?, token_version: row.get(6)? })
    });
    Ok(found.optional()?)
}

/// The current token version of a user; `None` for an unknown user.
pub fn token_version(conn: &Connection, id: UserId) -> Result<Option<u32>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT token_version FROM users WHERE id = ?1")?;
    Ok(stmt.query_row([id], |r| r.get(0)).optional()?)
}

/// Bytes of attachments the user has stored.
pub fn storage_bytes(conn: &Connection, id: UserId) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT storage_bytes FROM users WHERE id = ?1")?;
    Ok(stmt.query_row([id], |r| r.get::<_, i64>(0)).optional()?.unwrap_or(0).max(0) as u64)
}

/// An upload as stored (its bytes are in `<data dir>/uploads/<id>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub id: String,
    pub user_id: UserId,
    pub file_name: String,
    pub mime_type: String,
    pub length: u64,
    pub complete: bool,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
}

pub fn upload(conn: &Connection, id: &str) -> Result<Option<Upload>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, user_id, file_name, mime_type, length, complete, expires_at FROM uploads WHERE id = ?1",
    )?;
    Ok(stmt
        .query_row([id], |r| {
            Ok(Upload {
                id: r.get(0)?,
                user_id: r.get(1)?,
                file_name: r.get(2)?,
                mime_type: r.get(3)?,
                length: r.get::<_, i64>(4)?.max(0) as u64,
                complete: r.get(5)?,
                expires_at: r.get(6)?,
            })
        })
        .optional()?)
}

/// Every stored file a message or a scheduled message uses
/// (`chat_files/<folder>/<name>`), for the start-up sweep of orphans.
pub fn referenced_files(conn: &Connection) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT json_extract(f.value, '$.file_path') FROM chat_messages m, json_each(m.files_data) f
         WHERE m.files_data IS NOT NULL
         UNION
         SELECT json_extract(f.value, '$.file_path') FROM scheduled_messages s, json_each(s.files_data) f
         WHERE s.files_data IS NOT NULL",
    )?;
    let paths = stmt.query_map([], |r| r.get::<_, Option<String>>(0))?;
    let mut referenced = std::collections::HashSet::new();
    for path in paths {
        referenced.extend(path?);
    }
    Ok(referenced)
}

/// Every upload id still stored (the start-up sweep keeps their files).
pub fn upload_ids(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id FROM uploads")?;
    Ok(stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?)
}

/// Token ids logged out and not yet expired, with their expiry (Unix seconds).
pub fn revoked_tokens(conn: &Connection, now_secs: u64) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT token_id, expires_at FROM revoked_tokens WHERE expires_at > ?1")?;
    let rows =
        stmt.query_map([now_secs as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Case-insensitive substring match on email (emails are stored lower-case),
/// the caller excluded, ordered by email. Walks the email index, not the table.
pub fn search_users(
    conn: &Connection,
    caller: UserId,
    needle: &str,
    limit: u32,
) -> Result<(Vec<User>, i64), StoreError> {
    let needle = needle.trim().to_lowercase();
    let total: i64 = conn
        .prepare_cached("SELECT count(*) FROM users WHERE instr(email, ?1) > 0 AND id != ?2")?
        .query_row(params![needle, caller], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM {USER_FROM} WHERE instr(u.email, ?1) > 0 AND u.id != ?2 ORDER BY u.email LIMIT ?3"
    ))?;
    let users = stmt.query_map(params![needle, caller, limit], user_from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok((users, total))
}

/// Online users who share a room with `caller` (nobody else's presence is
/// the caller's business).
pub fn online_users(conn: &Connection, caller: UserId) -> Result<Vec<User>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM user_presence p JOIN users u ON u.id = p.user_id
         WHERE p.is_online = 1 AND p.user_id != ?1 AND p.user_id IN (
             SELECT other.user_id FROM chat_participants mine
             JOIN chat_participants other ON other.room_id = mine.room_id
             WHERE mine.user_id = ?1)
         ORDER BY u.name, u.id"
    ))?;
    Ok(stmt.query_map([caller], user_from_row)?.collect::<Result<Vec<_>, _>>()?)
}

/// The users of a room, in id order.
pub fn participants(conn: &Connection, room_id: RoomId) -> Result<Vec<User>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM chat_participants cp JOIN users u ON u.id = cp.user_id
         LEFT JOIN user_presence p ON p.user_id = u.id WHERE cp.room_id = ?1 ORDER BY u.id"
    ))?;
    Ok(stmt.query_map([room_id], user_from_row)?.collect::<Result<Vec<_>, _>>()?)
}

/// The ids of a room's members, in id order.
pub fn member_ids(conn: &Connection, room_id: RoomId) -> Result<Vec<UserId>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT user_id FROM chat_participants WHERE room_id = ?1 ORDER BY user_id")?;
    Ok(stmt.query_map([room_id], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?)
}

/// How far each member of a room has read.
pub fn read_state(conn: &Connection, room_id: RoomId) -> Result<ReadState, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT user_id, last_read_id FROM chat_participants WHERE room_id = ?1")?;
    let members = stmt.query_map([room_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
    Ok(ReadState::new(members))
}

/// One member of a room as `/members` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    #[serde(flatten)]
    pub user: User,
    pub role: String,
    pub last_read_id: MessageId,
}

const MEMBER_COLS: &str = "u.id, u.name, u.email, u.avatar_url, COALESCE(p.is_online, 0), cp.role, cp.last_read_id";

fn member_from_row(row: &Row<'_>) -> rusqlite::Result<Member> {
    Ok(Member { user: user_from_row(row)?, role: row.get(5)?, last_read_id: row.get(6)? })
}

/// Members of a room after user id `after`, at most `limit`, and how many
/// there are in all (keyset paging by user id).
pub fn members(
    conn: &Connection,
    room_id: RoomId,
    after: UserId,
    limit: u32,
) -> Result<(Vec<Member>, i64), StoreError> {
    let total: i64 = conn
        .prepare_cached("SELECT count(*) FROM chat_participants WHERE room_id = ?1")?
        .query_row([room_id], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MEMBER_COLS} FROM chat_participants cp JOIN users u ON u.id = cp.user_id
         LEFT JOIN user_presence p ON p.user_id = u.id WHERE cp.room_id = ?1 AND cp.user_id > ?2 ORDER BY cp.user_id"
    ))?;
    let mut rows = stmt.query(params![room_id, after])?;
    let mut out = Vec::new();
    while out.len() < limit as usize {
        let Some(row) = rows.next()? else { break };
        out.push(member_from_row(row)?);
    }
    Ok((out, total))
}

/// One member of a room.
pub fn member(conn: &Connection, room_id: RoomId, user: UserId) -> Result<Option<Member>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MEMBER_COLS} FROM chat_participants cp JOIN users u ON u.id = cp.user_id
         LEFT JOIN user_presence p ON p.user_id = u.id WHERE cp.room_id = ?1 AND cp.user_id = ?2"
    ))?;
    Ok(stmt.query_row(params![room_id, user], member_from_row).optional()?)
}

pub fn is_participant(conn: &Connection, room_id: RoomId, user: UserId) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM chat_participants WHERE room_id = ?1 AND user_id = ?2")?;
    Ok(stmt.exists(params![room_id, user])?)
}

/// Every user who shares a room with `user` (the audience of its presence).
pub fn contacts(conn: &Connection, user: UserId) -> Result<Vec<UserId>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT other.user_id FROM chat_participants mine
         JOIN chat_participants other ON other.room_id = mine.room_id
         WHERE mine.user_id = ?1 AND other.user_id != ?1",
    )?;
    Ok(stmt.query_map([user], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?)
}

/// A message row before its people are attached.
pub struct MessageRow {
    pub id: MessageId,
    pub room_id: RoomId,
    pub sender_id: UserId,
    pub receiver_id: Option<UserId>,
    pub message_type: MessageType,
    pub content: String,
    pub files: Option<Vec<FileMeta>>,
    pub duration: Option<f64>,
    pub local_temp_id: Option<String>,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub is_deleted: bool,
    pub like_count: i64,
    pub reply_to_id: Option<MessageId>,
    /// Whether the viewer of the query liked it.
    pub liked: bool,
    pub forwarded_from: Option<ForwardedFrom>,
}

/// Columns for `message_from_row`; `?1` of the query must be the viewer.
pub(super) const MESSAGE_COLS: &str =
    "m.id, m.room_id, m.sender_id, m.receiver_id, m.message_type, m.content, m.files_data,
    m.duration, m.local_temp_id, m.created_at, m.edited_at, m.reply_to_id, m.is_deleted, m.like_count,
    EXISTS (SELECT 1 FROM message_likes l WHERE l.message_id = m.id AND l.user_id = ?1),
    m.forwarded_from_id, m.forwarded_from_name";

pub(super) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRow> {
    let kind: String = row.get(4)?;
    let files: Option<String> = row.get(6)?;
    Ok(MessageRow {
        id: row.get(0)?,
        room_id: row.get(1)?,
        sender_id: row.get(2)?,
        receiver_id: row.get(3)?,
        message_type: MessageType::parse(&kind).unwrap_or(MessageType::Text),
        content: row.get(5)?,
        files: files.and_then(|json| serde_json::from_str(&json).ok()),
        duration: row.get(7)?,
        local_temp_id: row.get(8)?,
        created_at: row.get(9)?,
        edited_at: row.get(10)?,
        reply_to_id: row.get(11)?,
        is_deleted: row.get(12)?,
        like_count: row.get(13)?,
        liked: row.get(14)?,
        forwarded_from: match (row.get(15)?, row.get::<_, Option<String>>(16)?) {
            (Some(message_id), name) => Some(ForwardedFrom { message_id, sender_name: name.unwrap_or_default() }),
            (None, _) => None,
        },
    })
}

impl MessageRow {
    /// Attaches sender and receiver from `people` and the read status from
    /// `reads`; a missing user (never in a consistent database) becomes a
    /// placeholder rather than an error.
    pub fn into_message(
        self,
        people: &HashMap<UserId, Arc<User>>,
        reads: &ReadState,
        replies: &HashMap<MessageId, ReplyTo>,
        reactions: &mut HashMap<MessageId, Vec<Reaction>>,
    ) -> (Message, bool) {
        let person = |id: UserId| {
            people.get(&id).cloned().unwrap_or_else(|| {
                Arc::new(User { id, name: String::new(), email: String::new(), avatar_url: None, is_online: false })
            })
        };
        let (read_count, is_read) = reads.of(self.sender_id, self.id);
        let message = Message {
            id: self.id,
            room_id: self.room_id,
            sender: person(self.sender_id),
            receiver: self.receiver_id.map(person),
            message_type: self.message_type,
            content: self.content,
            files: self.files,
            duration: self.duration,
            local_temp_id: self.local_temp_id,
            created_at: self.created_at,
            edited_at: self.edited_at,
            is_read,
            read_count,
            is_deleted: self.is_deleted,
            like_count: self.like_count,
            reply_to: self.reply_to_id.and_then(|id| replies.get(&id).cloned()),
            reactions: reactions.remove(&self.id).unwrap_or_default(),
            forwarded_from: self.forwarded_from,
        };
        (message, self.liked)
    }
}

pub fn message_row(conn: &Connection, viewer: UserId, id: MessageId) -> Result<Option<MessageRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.id = ?2"))?;
    Ok(stmt.query_row(params![viewer, id], message_from_row).optional()?)
}

pub fn message_by_temp_id(conn: &Connection, sender: UserId, temp_id: &str) -> Result<Option<MessageRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.sender_id = ?1 AND m.local_temp_id = ?2"
    ))?;
    Ok(stmt.query_row(params![sender, temp_id], message_from_row).optional()?)
}

/// Ids as a JSON array, the one parameter of `IN (SELECT value FROM
/// json_each(?))`: a set of any size in one statement, planned once.
fn id_list(ids: impl IntoIterator<Item = i64>) -> String {
    let mut list = String::from("[");
    for id in ids {
        if list.len() > 1 {
            list.push(',');
        }
        list.push_str(&id.to_string());
    }
    list.push(']');
    list
}

/// Users by id, in one query; unknown ids are left out.
pub fn users_by_id(
    conn: &Connection,
    ids: impl IntoIterator<Item = UserId>,
) -> Result<HashMap<UserId, Arc<User>>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM {USER_FROM} WHERE u.id IN (SELECT value FROM json_each(?1))"
    ))?;
    let users = stmt.query_map([id_list(ids)], user_from_row)?;
    let mut out = HashMap::new();
    for user in users {
        let user = user?;
        out.insert(user.id, Arc::new(user));
    }
    Ok(out)
}

/// The people a set of message rows names, by id.
fn people_of(conn: &Connection, rows: &[MessageRow]) -> Result<HashMap<UserId, Arc<User>>, StoreError> {
    let mut ids: Vec<UserId> = rows.iter().flat_map(|r| std::iter::once(r.sender_id).chain(r.receiver_id)).collect();
    ids.sort_unstable();
    ids.dedup();
    if let [id] = ids[..] {
        // One person (the writer's single message): its own indexed lookup.
        return Ok(user_by_id(conn, id)?.map(|user| (id, Arc::new(user))).into_iter().collect());
    }
    users_by_id(conn, ids)
}

const REPLY_COLS: &str = "m.id, m.sender_id, m.message_type, m.content, m.is_deleted, u.id, u.name, u.email,
    u.avatar_url, COALESCE(p.is_online, 0)";
const REPLY_FROM: &str =
    "chat_messages m JOIN users u ON u.id = m.sender_id LEFT JOIN user_presence p ON p.user_id = u.id";

fn reply_from_row(r: &Row<'_>) -> rusqlite::Result<ReplyTo> {
    let kind: String = r.get(2)?;
    let content: String = r.get(3)?;
    let deleted: bool = r.get(4)?;
    let sender = User { id: r.get(5)?, name: r.get(6)?, email: r.get(7)?, avatar_url: r.get(8)?, is_online: r.get(9)? };
    let kind = MessageType::parse(&kind).unwrap_or(MessageType::Text);
    Ok(ReplyTo::new(r.get(0)?, &sender, kind, &content, deleted))
}

/// The messages some rows answer, as they are now, by id (one query).
pub fn replies_of(conn: &Connection, rows: &[MessageRow]) -> Result<HashMap<MessageId, ReplyTo>, StoreError> {
    let mut ids: Vec<MessageId> = rows.iter().filter_map(|r| r.reply_to_id).collect();
    match ids[..] {
        [] => return Ok(HashMap::new()),
        [id] => return Ok(reply_to(conn, id)?.map(|reply| (id, reply)).into_iter().collect()),
        _ => {}
    }
    ids.sort_unstable();
    ids.dedup();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {REPLY_COLS} FROM {REPLY_FROM} WHERE m.id IN (SELECT value FROM json_each(?1))"
    ))?;
    let replies = stmt.query_map([id_list(ids)], reply_from_row)?;
    let mut out = HashMap::new();
    for reply in replies {
        let reply = reply?;
        out.insert(reply.id, reply);
    }
    Ok(out)
}

/// One replied message as it is now.
pub fn reply_to(conn: &Connection, id: MessageId) -> Result<Option<ReplyTo>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {REPLY_COLS} FROM {REPLY_FROM} WHERE m.id = ?1"))?;
    Ok(stmt.query_row([id], reply_from_row).optional()?)
}

/// The reactions of one message, in order of first use.
pub fn reactions(conn: &Connection, message: MessageId) -> Result<Vec<Reaction>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT emoji, user_id FROM message_reactions WHERE message_id = ?1 ORDER BY id")?;
    let mut out: Vec<Reaction> = Vec::new();
    let rows = stmt.query_map([message], |r| Ok((r.get::<_, String>(0)?, r.get::<_, UserId>(1)?)))?;
    for row in rows {
        let (emoji, user) = row?;
        match out.iter_mut().find(|r| r.emoji == emoji) {
            Some(known) => known.users.push(user),
            None => out.push(Reaction { emoji, users: vec![user] }),
        }
    }
    Ok(out)
}

/// The reactions of some rows' messages, by message id (one query).
pub fn reactions_of(conn: &Connection, rows: &[MessageRow]) -> Result<HashMap<MessageId, Vec<Reaction>>, StoreError> {
    let mut out: HashMap<MessageId, Vec<Reaction>> = HashMap::new();
    if let [row] = rows {
        // The writer's single message: its own indexed lookup.
        let list = reactions(conn, row.id)?;
        if !list.is_empty() {
            out.insert(row.id, list);
        }
        return Ok(out);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT message_id, emoji, user_id FROM message_reactions
         WHERE message_id IN (SELECT value FROM json_each(?1)) ORDER BY message_id, id",
    )?;
    let rows = stmt.query_map([id_list(rows.iter().map(|r| r.id))], |r| {
        Ok((r.get::<_, MessageId>(0)?, r.get::<_, String>(1)?, r.get::<_, UserId>(2)?))
    })?;
    for row in rows {
        let (message, emoji, user) = row?;
        let list = out.entry(message).or_default();
        match list.iter_mut().find(|r| r.emoji == emoji) {
            Some(known) => known.users.push(user),
            None => list.push(Reaction { emoji, users: vec![user] }),
        }
    }
    Ok(out)
}

/// Who liked each of some messages, by message id, each list in id order
/// (one query; messages nobody liked are left out).
pub fn likers_of(
    conn: &Connection,
    ids: impl IntoIterator<Item = MessageId>,
) -> Result<HashMap<MessageId, Vec<UserId>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_id, user_id FROM message_likes
         WHERE message_id IN (SELECT value FROM json_each(?1)) ORDER BY message_id, user_id",
    )?;
    let rows = stmt.query_map([id_list(ids)], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut out: HashMap<MessageId, Vec<UserId>> = HashMap::new();
    for row in rows {
        let (message, user) = row?;
        out.entry(message).or_default().push(user);
    }
    Ok(out)
}

/// A message with its people, read status, reply and reactions (whoever asks).
pub fn message_of(conn: &Connection, row: MessageRow) -> Result<(Message, bool), StoreError> {
    let reads = read_state(conn, row.room_id)?;
    let rows = std::slice::from_ref(&row);
    let (people, replies, mut reactions) = (people_of(conn, rows)?, replies_of(conn, rows)?, reactions_of(conn, rows)?);
    Ok(row.into_message(&people, &reads, &replies, &mut reactions))
}

/// A message as `viewer` sees it, if `viewer` is in its room.
pub fn message_for(conn: &Connection, viewer: UserId, id: MessageId) -> Result<Option<(Message, bool)>, StoreError> {
    let Some(row) = message_row(conn, viewer, id)? else { return Ok(None) };
    if !is_participant(conn, row.room_id, viewer)? {
        return Ok(None);
    }
    Ok(Some(message_of(conn, row)?))
}

/// How a page of messages is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageQuery {
    /// Page 1 holds the newest `per_page` messages.
    Page { page: u32, per_page: u32 },
    /// Older than the id, newest `limit` of them.
    Before { id: MessageId, limit: u32 },
    /// Newer than the id, oldest `limit` of them.
    After { id: MessageId, limit: u32 },
}

/// A page of messages, oldest first, with its arithmetic.
pub struct MessagePage {
    pub messages: Vec<(Message, bool)>,
    pub total: i64,
    pub has_more: bool,
    pub page: Option<u32>,
    pub per_page: u32,
    pub total_pages: Option<i64>,
}

/// None when the room does not exist or `viewer` is not in it.
pub fn messages_page(
    conn: &Connection,
    viewer: UserId,
    room_id: RoomId,
    query: PageQuery,
) -> Result<Option<MessagePage>, StoreError> {
    if !is_participant(conn, room_id, viewer)? {
        return Ok(None);
    }
    Ok(Some(page_rows(conn, viewer, room_id, query)?))
}

/// A page as every member sees it, for a cache shared by all of them: the
/// page rendered for nobody (no message liked), who liked each message,
/// and the room's members (who may be shown it).
pub struct SharedPage {
    pub page: MessagePage,
    pub likers: HashMap<MessageId, Vec<UserId>>,
    /// In id order; empty when the room does not exist.
    pub members: Vec<UserId>,
}

/// The page `query` of a room for every member at once.
pub fn shared_page(conn: &Connection, room_id: RoomId, query: PageQuery) -> Result<SharedPage, StoreError> {
    let members = member_ids(conn, room_id)?;
    let page = page_rows(conn, NOBODY, room_id, query)?;
    let likers = likers_of(conn, page.messages.iter().map(|(m, _)| m.id))?;
    Ok(SharedPage { page, likers, members })
}

/// The page `query` of a room as `viewer` sees it.
fn page_rows(conn: &Connection, viewer: UserId, room_id: RoomId, query: PageQuery) -> Result<MessagePage, StoreError> {
    let total: i64 = conn
        .prepare_cached("SELECT count(*) FROM chat_messages WHERE room_id = ?1")?
        .query_row([room_id], |r| r.get(0))?;
    let reads = read_state(conn, room_id)?;
    // No bound LIMIT or OFFSET: SQLite plans with their values and so
    // re-prepares such a statement on every run (measured: 15% of a REST
    // page's CPU). The index walk is cut short by reading only what is needed.
    let collect = |sql: &str, bound: i64, skip: usize, take: usize| -> Result<Vec<MessageRow>, StoreError> {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![viewer, room_id, bound])?;
        let mut out = Vec::with_capacity(take.min(128));
        let mut skipped = 0;
        while out.len() < take {
            let Some(row) = rows.next()? else { break };
            if skipped < skip {
                skipped += 1;
                continue;
            }
            out.push(message_from_row(row)?);
        }
        Ok(out)
    };
    // Each arm picks its rows (oldest first) and says whether more remain.
    let (rows, has_more, page, total_pages, per_page) = match query {
        PageQuery::Page { page, per_page } => {
            let offset = (page as usize - 1) * per_page as usize;
            let mut rows = collect(
                &format!(
                    "SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.room_id = ?2 AND m.id > ?3 ORDER BY m.id DESC"
                ),
                0,
                offset,
                per_page as usize,
            )?;
            rows.reverse();
            let total_pages = (total + i64::from(per_page) - 1) / i64::from(per_page);
            (rows, i64::from(page) < total_pages, Some(page), Some(total_pages), per_page)
        }
        PageQuery::Before { id, limit } | PageQuery::After { id, limit } => {
            let older = matches!(query, PageQuery::Before { .. });
            let sql = if older {
                format!(
                    "SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.room_id = ?2 AND m.id < ?3 ORDER BY m.id DESC"
                )
            } else {
                format!(
                    "SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.room_id = ?2 AND m.id > ?3 ORDER BY m.id ASC"
                )
            };
            // One row past the limit tells whether more remain.
            let mut rows = collect(&sql, id, 0, limit as usize + 1)?;
            let has_more = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            if older {
                rows.reverse();
            }
            (rows, has_more, None, None, limit)
        }
    };
    // The people of the page: in a group, senders who may have left since.
    let people = people_of(conn, &rows)?;
    let replies = replies_of(conn, &rows)?;
    let mut reactions = reactions_of(conn, &rows)?;
    let page = MessagePage {
        messages: rows.into_iter().map(|r| r.into_message(&people, &reads, &replies, &mut reactions)).collect(),
        total,
        has_more,
        page,
        per_page,
        total_pages,
    };
    Ok(page)
}

/// Messages from others after the member's `last_read_id` (a range of the
/// room's index, not a scan).
const UNREAD: &str = "SELECT count(*) FROM chat_messages m WHERE m.room_id = cp.room_id AND m.id > cp.last_read_id
    AND m.sender_id != cp.user_id AND m.is_deleted = 0";

fn unread_in_room(conn: &Connection, user: UserId, room_id: RoomId) -> Result<i64, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT ({UNREAD}) FROM chat_participants cp WHERE cp.room_id = ?1 AND cp.user_id = ?2"
    ))?;
    Ok(stmt.query_row(params![room_id, user], |r| r.get(0)).optional()?.unwrap_or(0))
}

/// Every member's unread count in a room (for room events).
pub fn unread_by_member(conn: &Connection, room_id: RoomId) -> Result<Vec<(UserId, i64)>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT cp.user_id, ({UNREAD}) FROM chat_participants cp WHERE cp.room_id = ?1"))?;
    Ok(stmt.query_map([room_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?)
}

/// The room as every member sees it (for `room_created` and `room_updated`).
pub fn room_view(conn: &Connection, viewer: UserId, room_id: RoomId) -> Result<Option<RoomView>, StoreError> {
    let Some(room) = room_of(conn, viewer, room_id)? else { return Ok(None) };
    Ok(Some(RoomView { room, unread: unread_by_member(conn, room_id)? }))
}

fn room_of(conn: &Connection, viewer: UserId, room_id: RoomId) -> Result<Option<Room>, StoreError> {
    Ok(rooms_by_id(conn, viewer, &[room_id])?.pop())
}

/// One room, if `viewer` is in it.
pub fn room(conn: &Connection, viewer: UserId, room_id: RoomId) -> Result<Option<Room>, StoreError> {
    if !is_participant(conn, room_id, viewer)? {
        return Ok(None);
    }
    room_of(conn, viewer, room_id)
}

/// The rooms of `viewer`, most recent activity first.
pub fn rooms(conn: &Connection, viewer: UserId) -> Result<Vec<Room>, StoreError> {
    let mut rooms = rooms_by_id(conn, viewer, &room_ids(conn, viewer)?)?;
    rooms.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)));
    Ok(rooms)
}

/// Rooms as `viewer` sees them (its unread counts and likes), in six
/// queries whatever their number: the rooms with their counts and newest
/// message id; their memberships; the newest messages; their people,
/// replies and reactions. Unknown ids are left out; the order is not
/// specified.
fn rooms_by_id(conn: &Connection, viewer: UserId, ids: &[RoomId]) -> Result<Vec<Room>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = id_list(ids.iter().copied());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT r.id, r.name, r.room_type, r.created_by, r.created_at, r.updated_at, r.is_active,
             (SELECT count(*) FROM chat_participants c WHERE c.room_id = r.id),
             (SELECT ({UNREAD}) FROM chat_participants cp WHERE cp.room_id = r.id AND cp.user_id = ?1),
             (SELECT max(m.id) FROM chat_messages m WHERE m.room_id = r.id)
         FROM chat_rooms r WHERE r.id IN (SELECT value FROM json_each(?2))"
    ))?;
    let found = stmt.query_map(params![viewer, ids], |r| {
        let room = Room {
            id: r.get(0)?,
            name: r.get(1)?,
            room_type: r.get(2)?,
            created_by: r.get(3)?,
            created_at: r.get(4)?,
            updated_at: r.get(5)?,
            is_active: r.get(6)?,
            participants: Vec::new(),
            member_count: r.get(7)?,
            admins: Vec::new(),
            last_message: None,
            unread_count: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
        };
        Ok((room, r.get::<_, Option<MessageId>>(9)?))
    })?;
    let (mut rooms, mut newest) = (Vec::new(), Vec::new());
    for row in found {
        let (room, last) = row?;
        rooms.push(room);
        newest.extend(last);
    }

    // Every membership of these rooms: the first participants, the admins
    // and the read state (for the newest messages' read counts).
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, user_id, role = 'admin', last_read_id FROM chat_participants
         WHERE room_id IN (SELECT value FROM json_each(?1)) ORDER BY room_id, user_id",
    )?;
    let mut members: HashMap<RoomId, Vec<(UserId, MessageId)>> = HashMap::new();
    let mut admins: HashMap<RoomId, Vec<UserId>> = HashMap::new();
    let memberships = stmt.query_map([&ids], |r| {
        Ok((r.get::<_, RoomId>(0)?, r.get::<_, UserId>(1)?, r.get::<_, bool>(2)?, r.get::<_, MessageId>(3)?))
    })?;
    for membership in memberships {
        let (room, user, admin, last_read) = membership?;
        members.entry(room).or_default().push((user, last_read));
        if admin {
            admins.entry(room).or_default().push(user);
        }
    }

    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.id IN (SELECT value FROM json_each(?2))"
    ))?;
    let rows = stmt.query_map(params![viewer, id_list(newest)], message_from_row)?.collect::<Result<Vec<_>, _>>()?;
    let shown =
        |room: RoomId| members.get(&room).into_iter().flatten().take(GROUP_PARTICIPANTS_SHOWN).map(|(user, _)| *user);
    let people_ids = rooms
        .iter()
        .flat_map(|room| shown(room.id))
        .chain(rows.iter().flat_map(|r| std::iter::once(r.sender_id).chain(r.receiver_id)));
    let people = users_by_id(conn, people_ids)?;
    let replies = replies_of(conn, &rows)?;
    let mut reactions = reactions_of(conn, &rows)?;
    let mut last: HashMap<RoomId, (Message, bool)> = HashMap::with_capacity(rows.len());
    for row in rows {
        let room = row.room_id;
        let reads = ReadState::new(members.get(&room).cloned().unwrap_or_default());
        last.insert(room, row.into_message(&people, &reads, &replies, &mut reactions));
    }
    for room in &mut rooms {
        room.participants = shown(room.id).filter_map(|id| people.get(&id).map(|user| User::clone(user))).collect();
        room.admins = admins.remove(&room.id).unwrap_or_default();
        room.last_message = last.remove(&room.id);
        if let Some((m, _)) = &room.last_message {
            room.updated_at = room.updated_at.max(m.created_at);
        }
    }
    Ok(rooms)
}

pub fn room_ids(conn: &Connection, user: UserId) -> Result<Vec<RoomId>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT room_id FROM chat_participants WHERE user_id = ?1")?;
    Ok(stmt.query_map([user], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?)
}

/// Unread messages of `user`, per room (rooms with none left out).
pub fn unread_counts(conn: &Connection, user: UserId) -> Result<Vec<(RoomId, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT cp.room_id, ({UNREAD}) AS unread FROM chat_participants cp WHERE cp.user_id = ?1
         AND unread > 0 ORDER BY cp.room_id"
    ))?;
    Ok(stmt.query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?)
}

const SCHEDULED_COLS: &str = "id, room_id, message_type, content, send_at, local_temp_id";

fn scheduled_from_row(r: &Row<'_>) -> rusqlite::Result<Scheduled> {
    let kind: String = r.get(2)?;
    Ok(Scheduled {
        id: r.get(0)?,
        room_id: r.get(1)?,
        message_type: MessageType::parse(&kind).unwrap_or(MessageType::Text),
        content: r.get(3)?,
        send_at: r.get(4)?,
        local_temp_id: r.get(5)?,
    })
}

/// `user`'s pending scheduled messages, soonest first.
pub fn scheduled_of(conn: &Connection, user: UserId) -> Result<Vec<Scheduled>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SCHEDULED_COLS} FROM scheduled_messages WHERE sender_id = ?1 ORDER BY send_at, id"
    ))?;
    Ok(stmt.query_map([user], scheduled_from_row)?.collect::<Result<Vec<_>, _>>()?)
}

fn scheduled_item(conn: &Connection, user: UserId, id: i64) -> Result<Option<Scheduled>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {SCHEDULED_COLS} FROM scheduled_messages WHERE id = ?1 AND sender_id = ?2"))?;
    Ok(stmt.query_row(params![id, user], scheduled_from_row).optional()?)
}

/// A stored event as the replay reads it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: i64,
    pub room_id: Option<RoomId>,
    pub kind: String,
    pub data: serde_json::Value,
}

/// The newest position of the event stream (0 when empty).
pub fn event_head(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM events")?.query_row([], |r| r.get(0))?)
}

/// Positions at or below this were removed by retention.
pub fn event_horizon(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached("SELECT pruned_through FROM event_horizon WHERE id = 1")?.query_row([], |r| r.get(0))?)
}

/// The events `user` may see after position `after`, oldest first, at most
/// `limit`: those of its rooms (from the event that let it in) and its
/// personal ones. One range of `events_by_room` per room and one of
/// `events_by_user`, merged by position.
pub fn events_after(conn: &Connection, user: UserId, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.id, e.room_id, e.kind, e.data FROM chat_participants cp
             JOIN events e ON e.room_id = cp.room_id AND e.id > max(?2, cp.joined_event_id - 1)
             WHERE cp.user_id = ?1
         UNION ALL
         SELECT e.id, e.room_id, e.kind, e.data FROM events e WHERE e.user_id = ?1 AND e.id > ?2
         ORDER BY 1 LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![user, after, limit], |r| {
        let data: String = r.get(3)?;
        Ok(StoredEvent {
            position: r.get(0)?,
            room_id: r.get(1)?,
            kind: r.get(2)?,
            data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A stored event rebuilt for `viewer` from the current state of its
/// objects (a message deleted since comes out deleted; a renamed group with
/// its new name). `None` when there is nothing left to show.
pub fn event_for(conn: &Connection, viewer: UserId, stored: &StoredEvent) -> Result<Option<Event>, StoreError> {
    event_with(conn, viewer, stored, &mut PageCache::default())
}

/// What rendering one page of a replay looks up again and again: each
/// room's read state and each person, read once per page.
#[derive(Default)]
pub struct PageCache {
    reads: HashMap<RoomId, ReadState>,
    people: HashMap<UserId, Arc<User>>,
}

impl PageCache {
    pub(super) fn message(&mut self, conn: &Connection, row: MessageRow) -> Result<(Message, bool), StoreError> {
        for id in std::iter::once(row.sender_id).chain(row.receiver_id) {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.people.entry(id)
                && let Some(user) = user_by_id(conn, id)?
            {
                slot.insert(Arc::new(user));
            }
        }
        let replies = replies_of(conn, std::slice::from_ref(&row))?;
        let mut reactions = reactions_of(conn, std::slice::from_ref(&row))?;
        let reads = match self.reads.entry(row.room_id) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => slot.insert(read_state(conn, row.room_id)?),
        };
        Ok(row.into_message(&self.people, reads, &replies, &mut reactions))
    }
}

fn event_with(
    conn: &Connection,
    viewer: UserId,
    stored: &StoredEvent,
    cache: &mut PageCache,
) -> Result<Option<Event>, StoreError> {
    let id = |key: &str| stored.data.get(key).and_then(serde_json::Value::as_i64).unwrap_or(0);
    let room_id = stored.room_id.unwrap_or_else(|| id("room_id"));
    let event = match stored.kind.as_str() {
        "new_message" | "message_update" => {
            let Some(row) = message_row(conn, viewer, id("message_id"))? else { return Ok(None) };
            let (message, liked) = cache.message(conn, row)?;
            if stored.kind == "new_message" {
                Event::NewMessage(message)
            } else {
                let liked_by = if liked { vec![viewer] } else { Vec::new() };
                Event::MessageUpdate { message, liked_by }
            }
        }
        "message_delete" => Event::MessageDelete { id: id("message_id"), room_id },
        "message_reaction" => {
            let message = id("message_id");
            let emoji = stored.data.get("emoji").and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
            let added = stored.data.get("added").and_then(serde_json::Value::as_bool).unwrap_or(false);
            let reactions = reactions(conn, message)?;
            Event::MessageReaction { id: message, room_id, user_id: id("user_id"), emoji, added, reactions }
        }
        "message_like" => {
            let message = id("message_id");
            let like_count: i64 = conn
                .prepare_cached("SELECT like_count FROM chat_messages WHERE id = ?1")?
                .query_row([message], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            Event::MessageLike { id: message, room_id, user_id: id("user_id"), like_count }
        }
        "message_read" => {
            let user_name = user_by_id(conn, id("user_id"))?.map(|u| u.name).unwrap_or_default();
            Event::MessageRead { room_id, user_id: id("user_id"), user_name, last_read_id: id("last_read_id") }
        }
        "room_created" | "room_updated" => {
            let Some(room) = room_of(conn, viewer, room_id)? else { return Ok(None) };
            let unread = vec![(viewer, unread_in_room(conn, viewer, room_id)?)];
            let view = RoomView { room, unread };
            if stored.kind == "room_created" { Event::RoomCreated(view) } else { Event::RoomUpdated(view) }
        }
        "member_added" => {
            let ids = stored.data.get("user_ids").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
            let mut users = Vec::with_capacity(ids.len());
            for user in ids.iter().filter_map(serde_json::Value::as_i64) {
                users.extend(user_by_id(conn, user)?);
            }
            Event::MemberAdded { room_id, users, by: id("by") }
        }
        "member_removed" => Event::MemberRemoved { room_id, user_id: id("user_id"), by: id("by") },
        "room_removed" => Event::RoomRemoved { room_id },
        // Only while the item is pending: once sent, its new_message follows.
        "message_scheduled" => match scheduled_item(conn, viewer, id("scheduled_id"))? {
            Some(item) => Event::MessageScheduled(item),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(event))
}

/// One page of stored events after `after`, rendered for `user`: the frames,
/// the last position read, and whether the page was full (more may follow).
pub fn replay_page(
    conn: &Connection,
    user: UserId,
    after: i64,
    limit: u32,
    links: &Links,
) -> Result<(Vec<String>, i64, bool), StoreError> {
    let events = events_after(conn, user, after, limit)?;
    let full = events.len() == limit as usize;
    let mut last = after;
    let mut frames = Vec::with_capacity(events.len());
    let mut cache = PageCache::default();
    for stored in &events {
        last = stored.position;
        if let Some(event) = event_with(conn, user, stored, &mut cache)? {
            frames.push(event.render(user, links, Some(stored.position)));
        }
    }
    Ok((frames, last, full))
}
