//! Group rooms on PostgreSQL (SPEC section 8): creating a group, renaming
//! it, adding and removing members, roles; and the member events' rendering.

use tokio_postgres::GenericClient;

use super::Pg;
use crate::model::{Event, RoomId, User, UserId};
use crate::store::StoreError;
use crate::store::reads::StoredEvent;
use crate::store::writer::{NewGroup, WriterOptions};

pub async fn create_group(_pg: &Pg, _options: &WriterOptions, _group: NewGroup) -> Result<RoomId, StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn rename_room(_pg: &Pg, _user: UserId, _room_id: RoomId, _name: String) -> Result<(), StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn add_members(
    _pg: &Pg,
    _options: &WriterOptions,
    _user: UserId,
    _room_id: RoomId,
    _user_ids: Vec<UserId>,
) -> Result<Vec<User>, StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn remove_member(_pg: &Pg, _user: UserId, _room_id: RoomId, _target: UserId) -> Result<(), StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn set_role(
    _pg: &Pg,
    _user: UserId,
    _room_id: RoomId,
    _target: UserId,
    _admin: bool,
) -> Result<(), StoreError> {
    Err(StoreError::NotInCluster)
}

/// `member_added` and `member_removed` rebuilt from a stored event.
pub async fn event_of(_c: &impl GenericClient, _stored: &StoredEvent) -> Result<Option<Event>, StoreError> {
    Ok(None)
}
