//! What happens later, on PostgreSQL: scheduled messages (SPEC section 10),
//! HTTP uploads (section 11), event and message retention; their reads;
//! and the `message_scheduled` event's rendering. The maintenance commands
//! run on every node: each must be safe to run by several nodes at once.

use tokio_postgres::GenericClient;

use super::Pg;
use crate::model::{Event, Scheduled, UserId};
use crate::store::StoreError;
use crate::store::reads::{StoredEvent, Upload};
use crate::store::writer::{Due, Expired, NewMessage, NewUpload, WriterOptions};

pub async fn schedule(
    _pg: &Pg,
    _options: &WriterOptions,
    _message: NewMessage,
    _send_at: i64,
) -> Result<Scheduled, StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn cancel_scheduled(_pg: &Pg, _user: UserId, _id: i64) -> Result<Vec<String>, StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn deliver_due(_pg: &Pg, _options: &WriterOptions, _now: i64) -> Result<Due, StoreError> {
    Ok(Due { delivered: 0, unused_files: Vec::new(), more: false, next: None })
}

pub async fn create_upload(_pg: &Pg, _options: &WriterOptions, _upload: NewUpload) -> Result<(), StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn finish_upload(_pg: &Pg, _id: String, _passed: bool) -> Result<(), StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn expire_uploads(_pg: &Pg, _now: i64) -> Result<Vec<String>, StoreError> {
    Ok(Vec::new())
}

pub async fn prune_events(_pg: &Pg, _before_ms: i64) -> Result<usize, StoreError> {
    Ok(0)
}

pub async fn expire_messages(_pg: &Pg, _before_ms: i64) -> Result<Expired, StoreError> {
    Ok(Expired::default())
}

pub async fn scheduled_of(_c: &impl GenericClient, _user: UserId) -> Result<Vec<Scheduled>, StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn upload(_c: &impl GenericClient, _id: &str) -> Result<Option<Upload>, StoreError> {
    Err(StoreError::NotInCluster)
}

pub async fn upload_ids(_c: &impl GenericClient) -> Result<Vec<String>, StoreError> {
    Ok(Vec::new())
}

/// `message_scheduled` rebuilt from a stored event for `viewer` (the sender).
pub async fn event_of(
    _c: &impl GenericClient,
    _viewer: UserId,
    _stored: &StoredEvent,
) -> Result<Option<Event>, StoreError> {
    Ok(None)
}
