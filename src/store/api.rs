//! The typed read API the rest of chatd uses: one async function per
//! question, each running its queries on a blocking thread with a pooled
//! read-only connection. Nothing outside `store/` writes SQL or holds a
//! rusqlite connection; a PostgreSQL store answers the same functions.

use super::reads::{self, Credentials, Member, MessagePage, PageQuery, SharedPage};
use super::search;
use super::{Reader, StoreError, pg};
use crate::links::Links;
use crate::model::{Cursor, FileMeta, MessageId, Room, RoomId, Scheduled, User, UserId};

/// A page of the event stream, rendered for one user.
pub struct EventsPage {
    /// Frames as JSON text, oldest first.
    pub frames: Vec<String>,
    /// The position the page reaches (the cursor to continue from).
    pub through: i64,
    pub has_more: bool,
}

/// Where the stream stands: its newest position, and the highest one that
/// retention removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamBounds {
    pub head: i64,
    pub horizon: i64,
    /// The highest position any node may have handed out. One node: the
    /// head. In a cluster another node's tail may be ahead of this one's:
    /// a cursor up to here is good (what follows it arrives as this node
    /// catches up), a cursor past it is from another database.
    pub issued: i64,
}

impl StreamBounds {
    /// Whether everything after `cursor` can still be served.
    pub fn serves(&self, cursor: Cursor) -> bool {
        cursor.0 >= self.horizon && cursor.0 <= self.head.max(self.issued)
    }
}

/// Runs the statements of `f` in one read transaction: one snapshot, so
/// the answer is consistent, and one WAL read lock instead of one per
/// statement (which cost a fifth of a page's CPU).
fn one_snapshot<T>(
    conn: &rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let answer = f(&tx)?;
    tx.commit()?;
    Ok(answer)
}

impl Reader {
    /// Whether the database answers.
    pub async fn healthy(&self) -> Result<bool, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return Ok(c.query_one("SELECT 1", &[]).await?.get::<_, i32>(0) == 1);
        }
        self.run(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))? == 1)).await
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::user_by_id(&c, id).await;
        }
        self.run(move |c| reads::user_by_id(c, id)).await
    }

    /// The user with its password hash and token version, by email.
    pub async fn credentials_by_email(&self, email: String) -> Result<Option<Credentials>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::credentials_by_email(&c, &email).await;
        }
        self.run(move |c| reads::user_by_email(c, &email)).await
    }

    pub async fn credentials(&self, id: UserId) -> Result<Option<Credentials>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::credentials_by_id(&c, id).await;
        }
        self.run(move |c| reads::credentials_by_id(c, id)).await
    }

    /// The current token version of a user; `None` for an unknown user.
    pub async fn token_version(&self, id: UserId) -> Result<Option<u32>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::token_version(&c, id).await;
        }
        self.run(move |c| reads::token_version(c, id)).await
    }

    /// Token ids logged out and not yet expired (at start, before serving).
    pub async fn revoked_tokens(&self, now_secs: u64) -> Result<Vec<(String, u64)>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::revoked_tokens(&c, now_secs).await;
        }
        self.run(move |c| reads::revoked_tokens(c, now_secs)).await
    }

    pub async fn storage_bytes(&self, id: UserId) -> Result<u64, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::storage_bytes(&c, id).await;
        }
        self.run(move |c| reads::storage_bytes(c, id)).await
    }

    pub async fn search_users(
        &self,
        caller: UserId,
        needle: String,
        limit: u32,
    ) -> Result<(Vec<User>, i64), StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::search_users(&c, caller, &needle, limit).await;
        }
        self.run(move |c| reads::search_users(c, caller, &needle, limit)).await
    }

    pub async fn online_users(&self, caller: UserId) -> Result<Vec<User>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::online_users(&c, caller).await;
        }
        self.run(move |c| reads::online_users(c, caller)).await
    }

    pub async fn is_member(&self, room_id: RoomId, user: UserId) -> Result<bool, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::is_participant(&c, room_id, user).await;
        }
        self.run(move |c| reads::is_participant(c, room_id, user)).await
    }

    /// The members of a room, in id order.
    pub async fn member_ids(&self, room_id: RoomId) -> Result<Vec<UserId>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::member_ids(&c, room_id).await;
        }
        self.run(move |c| reads::member_ids(c, room_id)).await
    }

    /// A page of members after user id `after`, and how many there are, if
    /// `viewer` is one of them.
    pub async fn members(
        &self,
        viewer: UserId,
        room_id: RoomId,
        after: UserId,
        limit: u32,
    ) -> Result<Option<(Vec<Member>, i64)>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            if !pg::reads::is_participant(&c, room_id, viewer).await? {
                return Ok(None);
            }
            return pg::reads::members(&c, room_id, after, limit).await.map(Some);
        }
        self.run(move |c| {
            if !reads::is_participant(c, room_id, viewer)? {
                return Ok(None);
            }
            reads::members(c, room_id, after, limit).map(Some)
        })
        .await
    }

    pub async fn member(&self, room_id: RoomId, user: UserId) -> Result<Option<Member>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::member(&c, room_id, user).await;
        }
        self.run(move |c| reads::member(c, room_id, user)).await
    }

    /// One room as `viewer` sees it, if `viewer` is in it.
    pub async fn room(&self, viewer: UserId, room_id: RoomId) -> Result<Option<Room>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::room(&c, viewer, room_id).await;
        }
        self.run(move |c| one_snapshot(c, |c| reads::room(c, viewer, room_id))).await
    }

    pub async fn rooms(&self, viewer: UserId) -> Result<Vec<Room>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::rooms(&c, viewer).await;
        }
        self.run(move |c| one_snapshot(c, |c| reads::rooms(c, viewer))).await
    }

    pub async fn unread_counts(&self, user: UserId) -> Result<Vec<(RoomId, i64)>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::unread_counts(&c, user).await;
        }
        self.run(move |c| reads::unread_counts(c, user)).await
    }

    pub async fn messages_page(
        &self,
        viewer: UserId,
        room_id: RoomId,
        query: PageQuery,
    ) -> Result<Option<MessagePage>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::reads::messages_page(&c, viewer, room_id, query).await;
        }
        self.run(move |c| one_snapshot(c, |c| reads::messages_page(c, viewer, room_id, query))).await
    }

    /// A page of a room as every member sees it (for the rendered-page
    /// cache), whoever asks: the caller checks membership against it.
    pub async fn shared_page(&self, room_id: RoomId, query: PageQuery) -> Result<SharedPage, StoreError> {
        self.run(move |c| one_snapshot(c, |c| reads::shared_page(c, room_id, query))).await
    }

    /// The id of the message `sender` sent with this temp id, if any.
    pub async fn message_id_by_temp_id(
        &self,
        sender: UserId,
        temp_id: String,
    ) -> Result<Option<MessageId>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return Ok(pg::reads::message_by_temp_id(&c, sender, &temp_id).await?.map(|row| row.id));
        }
        self.run(move |c| Ok(reads::message_by_temp_id(c, sender, &temp_id)?.map(|row| row.id))).await
    }

    /// `user`'s export (a zip) in an unnamed temporary file under `dir`,
    /// rewound to its start; and how many messages it holds.
    pub async fn export(
        &self,
        user: UserId,
        static_dir: std::path::PathBuf,
        dir: std::path::PathBuf,
    ) -> Result<(std::fs::File, u64), StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::search::export(&c, user, static_dir, dir).await;
        }
        self.run(move |c| {
            let io = |e: std::io::Error| StoreError::CommitFailed(format!("cannot write the export: {e}"));
            let mut file = tempfile::tempfile_in(&dir).map_err(io)?;
            let messages = super::export::write(c, user, &static_dir, &mut file)?;
            std::io::Seek::rewind(&mut file).map_err(io)?;
            Ok((file, messages))
        })
        .await
    }

    pub async fn upload(&self, id: String) -> Result<Option<reads::Upload>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::later::upload(&c, &id).await;
        }
        self.run(move |c| reads::upload(c, &id)).await
    }

    pub async fn upload_ids(&self) -> Result<Vec<String>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::later::upload_ids(&c).await;
        }
        self.run(reads::upload_ids).await
    }

    /// The files of a message `viewer` can see now (`None`: no such message
    /// for it: unknown, deleted, or in a room it is not in).
    pub async fn message_files(&self, viewer: UserId, id: MessageId) -> Result<Option<Vec<FileMeta>>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            let Some(row) = pg::reads::message_row(&c, viewer, id).await? else { return Ok(None) };
            if row.is_deleted || !pg::reads::is_participant(&c, row.room_id, viewer).await? {
                return Ok(None);
            }
            return Ok(Some(row.files.unwrap_or_default()));
        }
        self.run(move |c| {
            let Some(row) = reads::message_row(c, viewer, id)? else { return Ok(None) };
            if row.is_deleted || !reads::is_participant(c, row.room_id, viewer)? {
                return Ok(None);
            }
            Ok(Some(row.files.unwrap_or_default()))
        })
        .await
    }

    /// The user's pending scheduled messages, soonest first.
    pub async fn scheduled(&self, user: UserId) -> Result<Vec<Scheduled>, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::later::scheduled_of(&c, user).await;
        }
        self.run(move |c| reads::scheduled_of(c, user)).await
    }

    /// Messages of the viewer's rooms containing `query`, newest first.
    pub async fn search(
        &self,
        viewer: UserId,
        query: String,
        room_id: Option<RoomId>,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<(Vec<search::Found>, Option<MessageId>), StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            return pg::search::search(&c, viewer, &query, room_id, before, limit).await;
        }
        self.run(move |c| search::search(c, &search::Query { viewer, text: &query, room_id, before, limit })).await
    }

    pub async fn stream_bounds(&self) -> Result<StreamBounds, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            // Only what this node has released: a cursor never passes a
            // position that may still commit below it.
            let (horizon, issued) = pg::reads::event_bounds(&c).await?;
            pg.catch_up_to(issued).await;
            let head = pg.released();
            return Ok(StreamBounds { head, horizon, issued });
        }
        self.run(|c| {
            let head = reads::event_head(c)?;
            Ok(StreamBounds { head, horizon: reads::event_horizon(c)?, issued: head })
        })
        .await
    }

    /// Up to `limit` events after position `after` that `user` may see,
    /// rendered for it with `links`.
    pub async fn events_after(
        &self,
        user: UserId,
        after: i64,
        limit: u32,
        links: std::sync::Arc<Links>,
    ) -> Result<EventsPage, StoreError> {
        if let Some(pg) = self.pg() {
            let c = pg.client().await?;
            let upto = pg.released();
            let events = pg::reads::events_for(&c, user, after, upto, i64::from(limit)).await?;
            let has_more = events.len() == limit as usize;
            let mut through = after;
            let mut frames = Vec::with_capacity(events.len());
            for stored in &events {
                through = stored.position;
                if let Some(event) = pg::reads::event_of(&c, user, stored).await? {
                    frames.push(event.render(user, &links, Some(stored.position)));
                }
            }
            return Ok(EventsPage { frames, through, has_more });
        }
        self.run(move |c| {
            let (frames, through, has_more) = reads::replay_page(c, user, after, limit, &links)?;
            Ok(EventsPage { frames, through, has_more })
        })
        .await
    }
}
