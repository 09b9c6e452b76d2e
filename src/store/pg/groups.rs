//! Group rooms on PostgreSQL (SPEC section 8): creating a group, renaming
//! it, adding and removing members, roles; and the member events' rendering.
//!
//! Each command is one transaction, ported from the embedded writer
//! (`store::writer`) with the same checks, the same errors and the same
//! event rows (kind and `data`), so a replay renders alike from either
//! store. Every command that changes an existing room takes the room's
//! advisory lock (`lock_room`) before it reads the membership it decides
//! on: two nodes changing one group's members, or a member being removed
//! while a message to the room is stored, then come in one order, and a
//! member's `joined_event_id` is never above an event of the room it
//! should see.

use std::collections::HashSet;

use deadpool_postgres::Transaction;

use super::Sql;

use super::writes::{emit, lock_room, lock_room_of_member, room_of_member};
use super::{Pg, reads};
use crate::model::{Event, RoomId, User, UserId};
use crate::store::StoreError;
use crate::store::reads::StoredEvent;
use crate::store::writer::{NewGroup, WriterOptions};
use crate::time::now_ms;

/// Creates a group: the creator its first admin, the others members; one
/// `room_created` that every one of them replays from (their
/// `joined_event_id`). An unknown member id creates nothing (404).
pub async fn create_group(pg: &Pg, options: &WriterOptions, group: NewGroup) -> Result<RoomId, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let members = existing_users(&tx, &group.member_ids, group.creator).await?;
    if members.len() + 1 > options.max_group_members {
        return Err(StoreError::TooManyMembers(options.max_group_members));
    }
    let now = now_ms();
    let room_id: RoomId = tx
        .row(
            "INSERT INTO chat_rooms (name, room_type, created_by, created_at, updated_at)
             VALUES ($1, 'group', $2, $3, $3) RETURNING id",
            &[&group.name, &group.creator, &now],
        )
        .await?
        .get(0);
    // Nobody else knows the room yet; the lock only keeps the rule that
    // every command storing a room's events holds it.
    lock_room(&tx, room_id).await?;
    tx.exec(
        "INSERT INTO chat_participants (room_id, user_id, joined_at, role) VALUES ($1, $2, $3, 'admin')",
        &[&room_id, &group.creator, &now],
    )
    .await?;
    // The creator's row comes first, then the members in user id order (as
    // the embedded writer inserts them): the participant ids decide who
    // has been in longest when the last admin leaves.
    tx.exec(
        "INSERT INTO chat_participants (room_id, user_id, joined_at, role)
         SELECT $1, m.user_id, $2, 'member' FROM unnest($3::bigint[]) WITH ORDINALITY AS m(user_id, n) ORDER BY m.n",
        &[&room_id, &now, &members],
    )
    .await?;
    let position = emit(&tx, Some(room_id), None, "room_created", serde_json::json!({})).await?;
    let mut everyone = members;
    everyone.push(group.creator);
    set_joined(&tx, room_id, &everyone, position).await?;
    tx.commit().await?;
    Ok(room_id)
}

/// Renames a group (admins only); `room_updated` for every member.
pub async fn rename_room(pg: &Pg, user: UserId, room_id: RoomId, name: String) -> Result<(), StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    lock_room(&tx, room_id).await?;
    administered_group(&tx, room_id, user).await?;
    tx.exec("UPDATE chat_rooms SET name = $1, updated_at = $2 WHERE id = $3", &[&name, &now_ms(), &room_id]).await?;
    emit_room(&tx, room_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Adds users to a group (admins only); answers those who were not in it
/// already (none: nothing is stored). An unknown id adds nobody (404). The
/// new members start read up to the room's newest message, and replay the
/// room from the `member_added` that names them.
pub async fn add_members(
    pg: &Pg,
    options: &WriterOptions,
    user: UserId,
    room_id: RoomId,
    user_ids: Vec<UserId>,
) -> Result<Vec<User>, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    lock_room(&tx, room_id).await?;
    let members = administered_group(&tx, room_id, user).await?;
    let wanted = existing_users(&tx, &user_ids, user).await?;
    let new: Vec<UserId> = wanted.into_iter().filter(|id| !members.contains(id)).collect();
    if new.is_empty() {
        return Ok(Vec::new());
    }
    if members.len() + new.len() > options.max_group_members {
        return Err(StoreError::TooManyMembers(options.max_group_members));
    }
    // Old history is there to read, not unread: a new member starts read
    // up to the room's newest message.
    let newest: i64 =
        tx.row("SELECT COALESCE(MAX(id), 0) FROM chat_messages WHERE room_id = $1", &[&room_id]).await?.get(0);
    tx.exec(
        "INSERT INTO chat_participants (room_id, user_id, joined_at, last_read_id)
         SELECT $1, m.user_id, $2, $3 FROM unnest($4::bigint[]) WITH ORDINALITY AS m(user_id, n) ORDER BY m.n",
        &[&room_id, &now_ms(), &newest, &new],
    )
    .await?;
    let users = users_in_order(&tx, &new).await?;
    if users.len() != new.len() {
        // `existing_users` found each of them in this transaction.
        return Err(StoreError::NotFound("User not found"));
    }
    let data = serde_json::json!({"user_ids": new, "by": user});
    let position = emit(&tx, Some(room_id), None, "member_added", data).await?;
    set_joined(&tx, room_id, &new, position).await?;
    tx.commit().await?;
    Ok(users)
}

/// Removes `target` from a group: admins remove anyone, anyone removes
/// itself (leaves). The removed user gets its personal `room_removed` and
/// nothing of the room after it; the rest get `member_removed`. The last
/// admin leaving hands over to the longest-standing member; the last
/// member leaving makes the room inactive.
pub async fn remove_member(pg: &Pg, user: UserId, room_id: RoomId, target: UserId) -> Result<(), StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    let (members, group) =
        lock_room_of_member(&tx, room_id, user).await?.ok_or(StoreError::NotFound("Room not found"))?;
    if !group {
        return Err(StoreError::Invalid("Direct rooms have no members to manage"));
    }
    if target != user && !is_admin(&tx, room_id, user).await? {
        return Err(StoreError::Forbidden("Only an admin of the group can do that"));
    }
    if !members.contains(&target) {
        return Err(StoreError::NotFound("Member not found"));
    }
    tx.exec("DELETE FROM chat_participants WHERE room_id = $1 AND user_id = $2", &[&room_id, &target]).await?;
    // Personal, not of the room: the removed user no longer replays the
    // room's events, so this one must name the user.
    emit(&tx, None, Some(target), "room_removed", serde_json::json!({"room_id": room_id})).await?;
    let remaining = reads::member_ids(&tx, room_id).await?;
    if remaining.is_empty() {
        // Nobody is left to see it.
        tx.exec("UPDATE chat_rooms SET is_active = false, updated_at = $1 WHERE id = $2", &[&now_ms(), &room_id])
            .await?;
        tx.commit().await?;
        return Ok(());
    }
    emit(&tx, Some(room_id), None, "member_removed", serde_json::json!({"user_id": target, "by": user})).await?;
    if admin_count(&tx, room_id).await? == 0 {
        // The longest-standing member takes over.
        tx.exec(
            "UPDATE chat_participants SET role = 'admin' WHERE id =
                 (SELECT id FROM chat_participants WHERE room_id = $1 ORDER BY id LIMIT 1)",
            &[&room_id],
        )
        .await?;
        emit_room(&tx, room_id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Promotes or demotes a member (admins only); `room_updated` when the role
/// changed. Demoting the last admin is refused (400) and changes nothing.
pub async fn set_role(pg: &Pg, user: UserId, room_id: RoomId, target: UserId, admin: bool) -> Result<(), StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await?;
    lock_room(&tx, room_id).await?;
    let members = administered_group(&tx, room_id, user).await?;
    if !members.contains(&target) {
        return Err(StoreError::NotFound("Member not found"));
    }
    let role = if admin { "admin" } else { "member" };
    let changed = tx
        .exec(
            "UPDATE chat_participants SET role = $1 WHERE room_id = $2 AND user_id = $3 AND role != $1",
            &[&role, &room_id, &target],
        )
        .await?;
    if changed > 0 {
        if admin_count(&tx, room_id).await? == 0 {
            // Dropping `tx` rolls the demotion back.
            return Err(StoreError::Invalid("A group needs at least one admin"));
        }
        emit_room(&tx, room_id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `member_added` and `member_removed` rebuilt from a stored event: the
/// added users as they are now (in the order stored; one gone since is
/// left out), the removed one and the actor by id.
pub async fn event_of(c: &impl Sql, stored: &StoredEvent) -> Result<Option<Event>, StoreError> {
    let id = |key: &str| stored.data.get(key).and_then(serde_json::Value::as_i64).unwrap_or(0);
    let room_id = stored.room_id.unwrap_or_else(|| id("room_id"));
    let event = match stored.kind.as_str() {
        "member_added" => {
            let ids: Vec<UserId> = stored
                .data
                .get("user_ids")
                .and_then(serde_json::Value::as_array)
                .map(|ids| ids.iter().filter_map(serde_json::Value::as_i64).collect())
                .unwrap_or_default();
            Event::MemberAdded { room_id, users: users_in_order(c, &ids).await?, by: id("by") }
        }
        "member_removed" => Event::MemberRemoved { room_id, user_id: id("user_id"), by: id("by") },
        _ => return Ok(None),
    };
    Ok(Some(event))
}

/// The users of `ids` that exist, in the order of `ids`, in one query.
async fn users_in_order(c: &impl Sql, ids: &[UserId]) -> Result<Vec<User>, StoreError> {
    let mut found = reads::users_by_id(c, ids).await?;
    Ok(ids.iter().filter_map(|id| found.remove(id)).map(|user| User::clone(&user)).collect())
}

/// Every id of `ids` that is a user, deduplicated, sorted and without
/// `except`; `NotFound` when one is not (so nothing is stored).
async fn existing_users(tx: &Transaction<'_>, ids: &[UserId], except: UserId) -> Result<Vec<UserId>, StoreError> {
    let mut wanted: Vec<UserId> = ids.iter().copied().filter(|id| *id != except).collect();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.iter().any(|id| *id <= 0) {
        return Err(StoreError::NotFound("User not found"));
    }
    if wanted.is_empty() {
        return Ok(wanted);
    }
    // KEY SHARE: a user found here cannot vanish before the commit.
    let found: HashSet<UserId> = tx
        .rows("SELECT id FROM users WHERE id = ANY($1) FOR KEY SHARE", &[&wanted])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if found.len() != wanted.len() {
        return Err(StoreError::NotFound("User not found"));
    }
    Ok(wanted)
}

/// The members (sorted) of the group `user` administers; 404 when `user`
/// is not in the (active) room, 400 for a direct room, 403 for a member.
async fn administered_group(tx: &Transaction<'_>, room_id: RoomId, user: UserId) -> Result<Vec<UserId>, StoreError> {
    let (members, group) = room_of_member(tx, room_id, user).await?.ok_or(StoreError::NotFound("Room not found"))?;
    if !group {
        return Err(StoreError::Invalid("Direct rooms have no members to manage"));
    }
    if !is_admin(tx, room_id, user).await? {
        return Err(StoreError::Forbidden("Only an admin of the group can do that"));
    }
    Ok(members)
}

async fn is_admin(tx: &Transaction<'_>, room_id: RoomId, user: UserId) -> Result<bool, StoreError> {
    let row = tx
        .row_opt(
            "SELECT 1 FROM chat_participants WHERE room_id = $1 AND user_id = $2 AND role = 'admin'",
            &[&room_id, &user],
        )
        .await?;
    Ok(row.is_some())
}

async fn admin_count(tx: &Transaction<'_>, room_id: RoomId) -> Result<i64, StoreError> {
    let row =
        tx.row("SELECT count(*) FROM chat_participants WHERE room_id = $1 AND role = 'admin'", &[&room_id]).await?;
    Ok(row.get(0))
}

/// `room_updated` for every member. The row keeps no view: the tail and
/// replays render the room as it is when they read it (`reads::room_view`).
async fn emit_room(tx: &Transaction<'_>, room_id: RoomId) -> Result<i64, StoreError> {
    emit(tx, Some(room_id), None, "room_updated", serde_json::json!({})).await
}

/// Records the event that let `users` in: their replay of the room starts
/// there (`reads::events_for`), not at the room's older events.
async fn set_joined(tx: &Transaction<'_>, room_id: RoomId, users: &[UserId], position: i64) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE chat_participants SET joined_event_id = $1 WHERE room_id = $2 AND user_id = ANY($3)",
        &[&position, &room_id, &users],
    )
    .await?;
    Ok(())
}
