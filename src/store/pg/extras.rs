//! Reactions, forwarding and thumbnails on PostgreSQL (SPEC section 10),
//! and the `message_reaction` event's rendering.

use tokio_postgres::GenericClient;

use super::Pg;
use crate::model::{Event, Message, MessageId, Reaction, RoomId, UserId};
use crate::store::StoreError;
use crate::store::reads::StoredEvent;
use crate::store::writer::WriterOptions;

pub async fn react(
    _pg: &Pg,
    _user: UserId,
    _id: MessageId,
    _emoji: String,
    _add: bool,
) -> Result<Vec<Reaction>, StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn forward(
    _pg: &Pg,
    _options: &WriterOptions,
    _user: UserId,
    _id: MessageId,
    _room_ids: Vec<RoomId>,
) -> Result<Vec<(Message, bool)>, StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn set_thumbnails(
    _pg: &Pg,
    _message_id: MessageId,
    _thumbnails: Vec<(String, String)>,
) -> Result<bool, StoreError> {
    Err(StoreError::NotInCluster)
}

/// `message_reaction` rebuilt from a stored event.
pub async fn event_of(_c: &impl GenericClient, _stored: &StoredEvent) -> Result<Option<Event>, StoreError> {
    Ok(None)
}
