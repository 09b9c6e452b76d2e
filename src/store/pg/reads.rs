//! Queries on PostgreSQL: the questions of `store::reads`, answered with
//! the same model types (rows become `MessageRow`s and go through the same
//! `into_message`), so both stores render alike.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Row;

use super::Sql;

use crate::model::{
    Envelope, Event, ForwardedFrom, GROUP_PARTICIPANTS_SHOWN, Message, MessageId, MessageType, NOBODY, ReadState,
    ReplyTo, Room, RoomId, RoomView, User, UserId,
};
use crate::store::StoreError;
use crate::store::reads::{Credentials, Member, MessagePage, MessageRow, PageQuery, StoredEvent};

const USER_COLS: &str = "u.id, u.name, u.email, u.avatar_url, COALESCE(p.is_online, false)";
const USER_FROM: &str = "users u LEFT JOIN user_presence p ON p.user_id = u.id";

fn user_from(row: &Row) -> User {
    User { id: row.get(0), name: row.get(1), email: row.get(2), avatar_url: row.get(3), is_online: row.get(4) }
}

pub async fn user_by_id(c: &impl Sql, id: UserId) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLS} FROM {USER_FROM} WHERE u.id = $1");
    Ok(c.row_opt(&sql, &[&id]).await?.as_ref().map(user_from))
}

pub async fn users_by_id(c: &impl Sql, ids: &[UserId]) -> Result<HashMap<UserId, Arc<User>>, StoreError> {
    let sql = format!("SELECT {USER_COLS} FROM {USER_FROM} WHERE u.id = ANY($1)");
    let rows = c.rows(&sql, &[&ids]).await?;
    Ok(rows.iter().map(|r| (r.get::<_, i64>(0), Arc::new(user_from(r)))).collect())
}

pub async fn credentials_by_email(c: &impl Sql, email: &str) -> Result<Option<Credentials>, StoreError> {
    credentials_where(c, "u.email = $1", &email).await
}

pub async fn credentials_by_id(c: &impl Sql, id: UserId) -> Result<Option<Credentials>, StoreError> {
    credentials_where(c, "u.id = $1", &id).await
}

async fn credentials_where(
    c: &impl Sql,
    condition: &str,
    key: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<Option<Credentials>, StoreError> {
    let sql = format!("SELECT {USER_COLS}, u.password_hash, u.token_version FROM {USER_FROM} WHERE {condition}");
    Ok(c.row_opt(&sql, &[key]).await?.map(|row| Credentials {
        user: user_from(&row),
        password_hash: row.get(5),
        token_version: row.get::<_, i32>(6).max(0) as u32,
    }))
}

pub async fn token_version(c: &impl Sql, id: UserId) -> Result<Option<u32>, StoreError> {
    let row = c.row_opt("SELECT token_version FROM users WHERE id = $1", &[&id]).await?;
    Ok(row.map(|r| r.get::<_, i32>(0).max(0) as u32))
}

pub async fn revoked_tokens(c: &impl Sql, now_secs: u64) -> Result<Vec<(String, u64)>, StoreError> {
    let rows =
        c.rows("SELECT token_id, expires_at FROM revoked_tokens WHERE expires_at > $1", &[&(now_secs as i64)]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64)).collect())
}

pub async fn storage_bytes(c: &impl Sql, id: UserId) -> Result<u64, StoreError> {
    let row = c.row_opt("SELECT storage_bytes FROM users WHERE id = $1", &[&id]).await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
}

/// Substring of the (lower-case) email, the caller excluded, by email.
pub async fn search_users(
    c: &impl Sql,
    caller: UserId,
    needle: &str,
    limit: u32,
) -> Result<(Vec<User>, i64), StoreError> {
    let needle = needle.trim().to_lowercase();
    let total: i64 =
        c.row("SELECT count(*) FROM users WHERE strpos(email, $1) > 0 AND id != $2", &[&needle, &caller]).await?.get(0);
    let sql = format!(
        "SELECT {USER_COLS} FROM {USER_FROM} WHERE strpos(u.email, $1) > 0 AND u.id != $2 ORDER BY u.email LIMIT $3"
    );
    let rows = c.rows(&sql, &[&needle, &caller, &i64::from(limit)]).await?;
    Ok((rows.iter().map(user_from).collect(), total))
}

pub async fn online_users(c: &impl Sql, caller: UserId) -> Result<Vec<User>, StoreError> {
    let sql = format!(
        "SELECT {USER_COLS} FROM user_presence p JOIN users u ON u.id = p.user_id
         WHERE p.is_online AND p.user_id != $1 AND p.user_id IN (
             SELECT other.user_id FROM chat_participants mine
             JOIN chat_participants other ON other.room_id = mine.room_id
             WHERE mine.user_id = $1)
         ORDER BY u.name, u.id"
    );
    Ok(c.rows(&sql, &[&caller]).await?.iter().map(user_from).collect())
}

pub async fn is_participant(c: &impl Sql, room_id: RoomId, user: UserId) -> Result<bool, StoreError> {
    let sql = "SELECT 1 FROM chat_participants WHERE room_id = $1 AND user_id = $2";
    Ok(c.row_opt(sql, &[&room_id, &user]).await?.is_some())
}

pub async fn member_ids(c: &impl Sql, room_id: RoomId) -> Result<Vec<UserId>, StoreError> {
    let rows = c.rows("SELECT user_id FROM chat_participants WHERE room_id = $1 ORDER BY user_id", &[&room_id]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every user who shares a room with `user`.
pub async fn contacts(c: &impl Sql, user: UserId) -> Result<Vec<UserId>, StoreError> {
    let rows = c
        .rows(
            "SELECT DISTINCT other.user_id FROM chat_participants mine
             JOIN chat_participants other ON other.room_id = mine.room_id
             WHERE mine.user_id = $1 AND other.user_id != $1",
            &[&user],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

const MEMBER_COLS: &str = "u.id, u.name, u.email, u.avatar_url, COALESCE(p.is_online, false), cp.role, cp.last_read_id";
const MEMBER_FROM: &str =
    "chat_participants cp JOIN users u ON u.id = cp.user_id LEFT JOIN user_presence p ON p.user_id = u.id";

fn member_from(row: &Row) -> Member {
    Member { user: user_from(row), role: row.get(5), last_read_id: row.get(6) }
}

pub async fn members(
    c: &impl Sql,
    room_id: RoomId,
    after: UserId,
    limit: u32,
) -> Result<(Vec<Member>, i64), StoreError> {
    let total: i64 = c.row("SELECT count(*) FROM chat_participants WHERE room_id = $1", &[&room_id]).await?.get(0);
    let sql = format!(
        "SELECT {MEMBER_COLS} FROM {MEMBER_FROM} WHERE cp.room_id = $1 AND cp.user_id > $2 ORDER BY cp.user_id LIMIT $3"
    );
    let rows = c.rows(&sql, &[&room_id, &after, &i64::from(limit)]).await?;
    Ok((rows.iter().map(member_from).collect(), total))
}

pub async fn member(c: &impl Sql, room_id: RoomId, user: UserId) -> Result<Option<Member>, StoreError> {
    let sql = format!("SELECT {MEMBER_COLS} FROM {MEMBER_FROM} WHERE cp.room_id = $1 AND cp.user_id = $2");
    Ok(c.row_opt(&sql, &[&room_id, &user]).await?.as_ref().map(member_from))
}

/// Columns for `message_from`; `$1` of the query is the viewer.
const MESSAGE_COLS: &str = "m.id, m.room_id, m.sender_id, m.receiver_id, m.message_type, m.content, m.files_data,
    m.duration, m.local_temp_id, m.created_at, m.edited_at, m.reply_to_id, m.is_deleted, m.like_count,
    EXISTS (SELECT 1 FROM message_likes l WHERE l.message_id = m.id AND l.user_id = $1),
    m.forwarded_from_id, m.forwarded_from_name";

fn message_from(row: &Row) -> MessageRow {
    let kind: String = row.get(4);
    let files: Option<String> = row.get(6);
    MessageRow {
        id: row.get(0),
        room_id: row.get(1),
        sender_id: row.get(2),
        receiver_id: row.get(3),
        message_type: MessageType::parse(&kind).unwrap_or(MessageType::Text),
        content: row.get(5),
        files: files.and_then(|json| serde_json::from_str(&json).ok()),
        duration: row.get(7),
        local_temp_id: row.get(8),
        created_at: row.get(9),
        edited_at: row.get(10),
        reply_to_id: row.get(11),
        is_deleted: row.get(12),
        like_count: row.get(13),
        liked: row.get(14),
        forwarded_from: row.get::<_, Option<i64>>(15).map(|message_id| ForwardedFrom {
            message_id,
            sender_name: row.get::<_, Option<String>>(16).unwrap_or_default(),
        }),
    }
}

pub async fn message_row(c: &impl Sql, viewer: UserId, id: MessageId) -> Result<Option<MessageRow>, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.id = $2");
    Ok(c.row_opt(&sql, &[&viewer, &id]).await?.as_ref().map(message_from))
}

pub async fn message_by_temp_id(c: &impl Sql, sender: UserId, temp_id: &str) -> Result<Option<MessageRow>, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.sender_id = $1 AND m.local_temp_id = $2");
    Ok(c.row_opt(&sql, &[&sender, &temp_id]).await?.as_ref().map(message_from))
}

pub async fn read_state(c: &impl Sql, room_id: RoomId) -> Result<ReadState, StoreError> {
    let rows = c.rows("SELECT user_id, last_read_id FROM chat_participants WHERE room_id = $1", &[&room_id]).await?;
    Ok(ReadState::new(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
}

async fn replies_of(c: &impl Sql, rows: &[MessageRow]) -> Result<HashMap<MessageId, ReplyTo>, StoreError> {
    let ids: Vec<MessageId> = rows.iter().filter_map(|r| r.reply_to_id).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let found = c
        .rows(
            "SELECT m.id, m.message_type, m.content, m.is_deleted, u.id, u.name, u.email, u.avatar_url,
                    COALESCE(p.is_online, false)
             FROM chat_messages m JOIN users u ON u.id = m.sender_id LEFT JOIN user_presence p ON p.user_id = u.id
             WHERE m.id = ANY($1)",
            &[&ids],
        )
        .await?;
    let mut out = HashMap::new();
    for r in &found {
        let sender = User { id: r.get(4), name: r.get(5), email: r.get(6), avatar_url: r.get(7), is_online: r.get(8) };
        let kind = MessageType::parse(r.get(1)).unwrap_or(MessageType::Text);
        let content: String = r.get(2);
        let reply = ReplyTo::new(r.get(0), &sender, kind, &content, r.get(3));
        out.insert(reply.id, reply);
    }
    Ok(out)
}

async fn reactions_of(
    c: &impl Sql,
    rows: &[MessageRow],
) -> Result<HashMap<MessageId, Vec<crate::model::Reaction>>, StoreError> {
    let ids: Vec<MessageId> = rows.iter().map(|r| r.id).collect();
    let found = c
        .rows(
            "SELECT message_id, emoji, user_id FROM message_reactions WHERE message_id = ANY($1)
             ORDER BY message_id, id",
            &[&ids],
        )
        .await?;
    let mut out: HashMap<MessageId, Vec<crate::model::Reaction>> = HashMap::new();
    for r in &found {
        let (message, emoji, user): (MessageId, String, UserId) = (r.get(0), r.get(1), r.get(2));
        let list = out.entry(message).or_default();
        match list.iter_mut().find(|known| known.emoji == emoji) {
            Some(known) => known.users.push(user),
            None => list.push(crate::model::Reaction { emoji, users: vec![user] }),
        }
    }
    Ok(out)
}

/// Who liked each message, in user id order.
pub async fn likers_of(c: &impl Sql, ids: &[MessageId]) -> Result<HashMap<MessageId, Vec<UserId>>, StoreError> {
    let rows = c
        .rows(
            "SELECT message_id, user_id FROM message_likes WHERE message_id = ANY($1) ORDER BY message_id, user_id",
            &[&ids],
        )
        .await?;
    let mut out: HashMap<MessageId, Vec<UserId>> = HashMap::new();
    for r in &rows {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(out)
}

/// Rows with their people, replies and reactions attached; `reads` by room.
async fn messages_of(
    c: &impl Sql,
    rows: Vec<MessageRow>,
    reads: &HashMap<RoomId, ReadState>,
) -> Result<Vec<(Message, bool)>, StoreError> {
    let mut people: Vec<UserId> = rows.iter().flat_map(|r| std::iter::once(r.sender_id).chain(r.receiver_id)).collect();
    people.sort_unstable();
    people.dedup();
    let people = users_by_id(c, &people).await?;
    let replies = replies_of(c, &rows).await?;
    let mut reactions = reactions_of(c, &rows).await?;
    let nobody = ReadState::new(Vec::new());
    Ok(rows
        .into_iter()
        .map(|row| {
            let room_reads = reads.get(&row.room_id).unwrap_or(&nobody);
            row.into_message(&people, room_reads, &replies, &mut reactions)
        })
        .collect())
}

/// One message, as everyone (or `viewer`, for its like) sees it.
pub async fn message_of(c: &impl Sql, row: MessageRow) -> Result<(Message, bool), StoreError> {
    let reads = HashMap::from([(row.room_id, read_state(c, row.room_id).await?)]);
    let mut one = messages_of(c, vec![row], &reads).await?;
    one.pop().ok_or(StoreError::NotFound("Message not found"))
}

pub async fn messages_page(
    c: &impl Sql,
    viewer: UserId,
    room_id: RoomId,
    query: PageQuery,
) -> Result<Option<MessagePage>, StoreError> {
    if !is_participant(c, room_id, viewer).await? {
        return Ok(None);
    }
    let total: i64 = c.row("SELECT count(*) FROM chat_messages WHERE room_id = $1", &[&room_id]).await?.get(0);
    let base = format!("SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.room_id = $2");
    let (rows, has_more, page, total_pages, per_page) = match query {
        PageQuery::Page { page, per_page } => {
            let offset = i64::from(page - 1) * i64::from(per_page);
            let sql = format!("{base} ORDER BY m.id DESC LIMIT $3 OFFSET $4");
            let mut rows: Vec<MessageRow> = c
                .rows(&sql, &[&viewer, &room_id, &i64::from(per_page), &offset])
                .await?
                .iter()
                .map(message_from)
                .collect();
            rows.reverse();
            let total_pages = (total + i64::from(per_page) - 1) / i64::from(per_page);
            (rows, i64::from(page) < total_pages, Some(page), Some(total_pages), per_page)
        }
        PageQuery::Before { id, limit } | PageQuery::After { id, limit } => {
            let older = matches!(query, PageQuery::Before { .. });
            let sql = if older {
                format!("{base} AND m.id < $3 ORDER BY m.id DESC LIMIT $4")
            } else {
                format!("{base} AND m.id > $3 ORDER BY m.id ASC LIMIT $4")
            };
            let mut rows: Vec<MessageRow> = c
                .rows(&sql, &[&viewer, &room_id, &id, &(i64::from(limit) + 1)])
                .await?
                .iter()
                .map(message_from)
                .collect();
            let has_more = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            if older {
                rows.reverse();
            }
            (rows, has_more, None, None, limit)
        }
    };
    let reads = HashMap::from([(room_id, read_state(c, room_id).await?)]);
    let messages = messages_of(c, rows, &reads).await?;
    Ok(Some(MessagePage { messages, total, has_more, page, per_page, total_pages }))
}

/// Messages from others after the member's `last_read_id`.
const UNREAD: &str = "SELECT count(*) FROM chat_messages m WHERE m.room_id = cp.room_id AND m.id > cp.last_read_id
    AND m.sender_id != cp.user_id AND NOT m.is_deleted";

pub async fn unread_counts(c: &impl Sql, user: UserId) -> Result<Vec<(RoomId, i64)>, StoreError> {
    let sql = format!(
        "SELECT room_id, unread FROM (SELECT cp.room_id, ({UNREAD}) AS unread FROM chat_participants cp
         WHERE cp.user_id = $1) counts WHERE unread > 0 ORDER BY room_id"
    );
    Ok(c.rows(&sql, &[&user]).await?.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn unread_by_member(c: &impl Sql, room_id: RoomId) -> Result<Vec<(UserId, i64)>, StoreError> {
    let sql = format!("SELECT cp.user_id, ({UNREAD}) FROM chat_participants cp WHERE cp.room_id = $1");
    Ok(c.rows(&sql, &[&room_id]).await?.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub async fn room(c: &impl Sql, viewer: UserId, room_id: RoomId) -> Result<Option<Room>, StoreError> {
    if !is_participant(c, room_id, viewer).await? {
        return Ok(None);
    }
    Ok(rooms_by_id(c, viewer, &[room_id]).await?.pop())
}

/// The rooms of `viewer`, most recent activity first.
pub async fn rooms(c: &impl Sql, viewer: UserId) -> Result<Vec<Room>, StoreError> {
    let ids: Vec<RoomId> = c
        .rows("SELECT room_id FROM chat_participants WHERE user_id = $1", &[&viewer])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut rooms = rooms_by_id(c, viewer, &ids).await?;
    rooms.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)));
    Ok(rooms)
}

/// Rooms as `viewer` sees them, in a fixed number of queries.
async fn rooms_by_id(c: &impl Sql, viewer: UserId, ids: &[RoomId]) -> Result<Vec<Room>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT r.id, r.name, r.room_type, r.created_by, r.created_at, r.updated_at, r.is_active,
             (SELECT count(*) FROM chat_participants c WHERE c.room_id = r.id),
             (SELECT ({UNREAD}) FROM chat_participants cp WHERE cp.room_id = r.id AND cp.user_id = $1),
             (SELECT max(m.id) FROM chat_messages m WHERE m.room_id = r.id)
         FROM chat_rooms r WHERE r.id = ANY($2)"
    );
    let (mut rooms, mut newest) = (Vec::new(), Vec::new());
    for r in c.rows(&sql, &[&viewer, &ids]).await? {
        rooms.push(Room {
            id: r.get(0),
            name: r.get(1),
            room_type: r.get(2),
            created_by: r.get(3),
            created_at: r.get(4),
            updated_at: r.get(5),
            is_active: r.get(6),
            participants: Vec::new(),
            member_count: r.get(7),
            admins: Vec::new(),
            last_message: None,
            unread_count: r.get::<_, Option<i64>>(8).unwrap_or(0),
        });
        newest.extend(r.get::<_, Option<MessageId>>(9));
    }
    let mut members: HashMap<RoomId, Vec<(UserId, MessageId)>> = HashMap::new();
    let mut admins: HashMap<RoomId, Vec<UserId>> = HashMap::new();
    let memberships = c
        .rows(
            "SELECT room_id, user_id, role = 'admin', last_read_id FROM chat_participants
             WHERE room_id = ANY($1) ORDER BY room_id, user_id",
            &[&ids],
        )
        .await?;
    for m in &memberships {
        let (room, user, admin, last_read): (RoomId, UserId, bool, MessageId) =
            (m.get(0), m.get(1), m.get(2), m.get(3));
        members.entry(room).or_default().push((user, last_read));
        if admin {
            admins.entry(room).or_default().push(user);
        }
    }
    let sql = format!("SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.id = ANY($2)");
    let rows: Vec<MessageRow> = c.rows(&sql, &[&viewer, &newest]).await?.iter().map(message_from).collect();
    let shown = |room: RoomId| -> Vec<UserId> {
        members.get(&room).into_iter().flatten().take(GROUP_PARTICIPANTS_SHOWN).map(|(user, _)| *user).collect()
    };
    let mut people: Vec<UserId> = rooms.iter().flat_map(|room| shown(room.id)).collect();
    people.sort_unstable();
    people.dedup();
    let people = users_by_id(c, &people).await?;
    let reads: HashMap<RoomId, ReadState> =
        members.iter().map(|(room, list)| (*room, ReadState::new(list.clone()))).collect();
    let mut last: HashMap<RoomId, (Message, bool)> =
        messages_of(c, rows, &reads).await?.into_iter().map(|(m, liked)| (m.room_id, (m, liked))).collect();
    for room in &mut rooms {
        room.participants = shown(room.id).iter().filter_map(|id| people.get(id).map(|u| User::clone(u))).collect();
        room.admins = admins.remove(&room.id).unwrap_or_default();
        room.last_message = last.remove(&room.id);
        if let Some((m, _)) = &room.last_message {
            room.updated_at = room.updated_at.max(m.created_at);
        }
    }
    Ok(rooms)
}

/// The room as every member sees it (for `room_created`, `room_updated`).
pub async fn room_view(c: &impl Sql, room_id: RoomId) -> Result<Option<RoomView>, StoreError> {
    let Some(room) = rooms_by_id(c, NOBODY, &[room_id]).await?.pop() else { return Ok(None) };
    Ok(Some(RoomView { room, unread: unread_by_member(c, room_id).await? }))
}

/// Positions at or below the first were removed by retention; the second
/// is the highest stored (committed) position.
pub async fn event_bounds(c: &impl Sql) -> Result<(i64, i64), StoreError> {
    let row = c
        .row(
            "SELECT pruned_through, (SELECT COALESCE(max(position), 0) FROM events) FROM event_horizon WHERE id = 1",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

fn stored_from(row: &Row) -> StoredEvent {
    let data: String = row.get(3);
    StoredEvent {
        position: row.get(0),
        room_id: row.get(1),
        kind: row.get(2),
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
    }
}

/// Every stored event in `(after, upto]`, oldest first, at most `limit`.
pub async fn stored_events(
    c: &impl Sql,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<(StoredEvent, Option<UserId>)>, StoreError> {
    let rows = c
        .rows(
            "SELECT position, room_id, kind, data, user_id FROM events
             WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3",
            &[&after, &upto, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (stored_from(r), r.get(4))).collect())
}

/// The events `user` may see in `(after, upto]`, oldest first, at most
/// `limit`: its rooms' from the event that let it in, and its own.
pub async fn events_for(
    c: &impl Sql,
    user: UserId,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = c
        .rows(
            "SELECT e.position, e.room_id, e.kind, e.data FROM chat_participants cp
                 JOIN events e ON e.room_id = cp.room_id AND e.position > GREATEST($2, cp.joined_event_id - 1)
                 WHERE cp.user_id = $1 AND e.position <= $3
             UNION ALL
             SELECT e.position, e.room_id, e.kind, e.data FROM events e
                 WHERE e.user_id = $1 AND e.position > $2 AND e.position <= $3
             ORDER BY 1 LIMIT $4",
            &[&user, &after, &upto, &limit],
        )
        .await?;
    Ok(rows.iter().map(stored_from).collect())
}

/// Stored events as their audiences see them now, in their order, with a
/// fixed number of queries for the messages among them (the tail's hot
/// path: a page of `new_message`s costs five queries, not five each);
/// other kinds go one by one through `envelope`.
pub async fn envelopes(c: &impl Sql, events: &[(StoredEvent, Option<UserId>)]) -> Result<Vec<Envelope>, StoreError> {
    let is_message = |e: &StoredEvent| matches!(e.kind.as_str(), "new_message" | "message_update");
    let message_id = |e: &StoredEvent| e.data.get("message_id").and_then(serde_json::Value::as_i64).unwrap_or(0);
    let ids: Vec<MessageId> = events.iter().filter(|(e, _)| is_message(e)).map(|(e, _)| message_id(e)).collect();
    let mut rooms: Vec<RoomId> = events.iter().filter_map(|(e, _)| e.room_id).collect();
    rooms.sort_unstable();
    rooms.dedup();
    // Every membership of these rooms: the audiences and the read states.
    let mut members: HashMap<RoomId, Vec<(UserId, MessageId)>> = HashMap::new();
    // When each member joined: an event goes to those who were members
    // when it was stored (a member added since starts at its welcome).
    let mut joined: HashMap<(RoomId, UserId), i64> = HashMap::new();
    if !ids.is_empty() {
        let rows = c
            .rows(
                "SELECT room_id, user_id, last_read_id, joined_event_id FROM chat_participants
                 WHERE room_id = ANY($1) ORDER BY room_id, user_id",
                &[&rooms],
            )
            .await?;
        for r in &rows {
            members.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
            joined.insert((r.get::<_, RoomId>(0), r.get::<_, UserId>(1)), r.get::<_, i64>(3));
        }
    }
    let mut messages: HashMap<MessageId, Message> = HashMap::new();
    let mut likers = HashMap::new();
    if !ids.is_empty() {
        let sql = format!("SELECT {MESSAGE_COLS} FROM chat_messages m WHERE m.id = ANY($2)");
        let rows: Vec<MessageRow> = c.rows(&sql, &[&NOBODY, &ids]).await?.iter().map(message_from).collect();
        let reads: HashMap<RoomId, ReadState> =
            members.iter().map(|(room, list)| (*room, ReadState::new(list.clone()))).collect();
        messages = messages_of(c, rows, &reads).await?.into_iter().map(|(m, _)| (m.id, m)).collect();
        if events.iter().any(|(e, _)| e.kind == "message_update") {
            likers = likers_of(c, &ids).await?;
        }
    }
    let mut out = Vec::with_capacity(events.len());
    for (stored, user) in events {
        if !is_message(stored) {
            out.extend(envelope(c, stored, *user).await?);
            continue;
        }
        let id = message_id(stored);
        let (Some(message), Some(room)) = (messages.get(&id), stored.room_id) else { continue };
        let event = if stored.kind == "new_message" {
            Event::NewMessage(message.clone())
        } else {
            Event::MessageUpdate { message: message.clone(), liked_by: likers.get(&id).cloned().unwrap_or_default() }
        };
        let audience: Vec<UserId> = members
            .get(&room)
            .into_iter()
            .flatten()
            .map(|(user, _)| *user)
            .filter(|user| joined.get(&(room, *user)).is_none_or(|at| *at <= stored.position))
            .collect();
        let mut envelope = Envelope::new(audience, event);
        envelope.position = Some(stored.position);
        out.push(envelope);
    }
    Ok(out)
}

/// A stored event as its audience sees it now, with that audience (the
/// room's members, or its one user); `None` when nothing is left to show.
pub async fn envelope(
    c: &impl Sql,
    stored: &StoredEvent,
    user: Option<UserId>,
) -> Result<Option<Envelope>, StoreError> {
    let Some(event) = event_of(c, user.unwrap_or(NOBODY), stored).await? else { return Ok(None) };
    let audience: Vec<UserId> = match (stored.room_id, user) {
        // Those who were members when it was stored (see `envelopes`).
        (Some(room), _) => c
            .rows(
                "SELECT user_id FROM chat_participants WHERE room_id = $1 AND joined_event_id <= $2 ORDER BY user_id",
                &[&room, &stored.position],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        (None, Some(user)) => vec![user],
        (None, None) => return Ok(None),
    };
    let mut envelope = Envelope::new(audience, event);
    envelope.position = Some(stored.position);
    Ok(Some(envelope))
}

/// A stored event rebuilt from the current state of its objects, for
/// every viewer at once (per-viewer fields come from `render`); `viewer`
/// is the one user of a personal event.
pub async fn event_of(c: &impl Sql, viewer: UserId, stored: &StoredEvent) -> Result<Option<Event>, StoreError> {
    let id = |key: &str| stored.data.get(key).and_then(serde_json::Value::as_i64).unwrap_or(0);
    let room_id = stored.room_id.unwrap_or_else(|| id("room_id"));
    let event = match stored.kind.as_str() {
        "new_message" | "message_update" => {
            let Some(row) = message_row(c, NOBODY, id("message_id")).await? else { return Ok(None) };
            let message_id = row.id;
            let (message, _) = message_of(c, row).await?;
            if stored.kind == "new_message" {
                Event::NewMessage(message)
            } else {
                let liked_by = likers_of(c, &[message_id]).await?.remove(&message_id).unwrap_or_default();
                Event::MessageUpdate { message, liked_by }
            }
        }
        "message_delete" => Event::MessageDelete { id: id("message_id"), room_id },
        "message_like" => {
            let message = id("message_id");
            let row = c.row_opt("SELECT like_count FROM chat_messages WHERE id = $1", &[&message]).await?;
            let like_count = row.map_or(0, |r| r.get(0));
            Event::MessageLike { id: message, room_id, user_id: id("user_id"), like_count }
        }
        "message_read" => {
            let user_name = user_by_id(c, id("user_id")).await?.map(|u| u.name).unwrap_or_default();
            Event::MessageRead { room_id, user_id: id("user_id"), user_name, last_read_id: id("last_read_id") }
        }
        "room_created" | "room_updated" => {
            let Some(view) = room_view(c, room_id).await? else { return Ok(None) };
            if stored.kind == "room_created" { Event::RoomCreated(view) } else { Event::RoomUpdated(view) }
        }
        "room_removed" => Event::RoomRemoved { room_id },
        "member_added" | "member_removed" => return super::groups::event_of(c, stored).await,
        "message_reaction" => return super::extras::event_of(c, stored).await,
        "message_scheduled" => return super::later::event_of(c, viewer, stored).await,
        _ => return Ok(None),
    };
    Ok(Some(event))
}
