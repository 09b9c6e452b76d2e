//! The thumbnail worker (SPEC section 11). Every committed `new_message`
//! with images that have no thumbnail is offered to a bounded queue (the
//! writer's sink never waits: when the queue is full the offer is dropped
//! and logged). Jobs run on blocking threads, at most `workers` at once,
//! never on the request path; each made thumbnail is recorded by the
//! writer, which sends `message_update`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use crate::attach::thumbnail::{self, Thumbnail};
use crate::model::{FileMeta, Message, MessageId};
use crate::store::WriterHandle;

/// Jobs that may wait for a worker.
const QUEUE: usize = 1024;

pub struct Job {
    message_id: MessageId,
    /// Stored image paths without a thumbnail.
    files: Vec<String>,
}

/// The writer's side: offers committed messages.
pub struct Queue(mpsc::Sender<Job>);

pub fn queue() -> (Queue, mpsc::Receiver<Job>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Queue(tx), rx)
}

impl Queue {
    pub fn offer(&self, message: &Message) {
        self.offer_files(message.id, message.files.iter().flatten());
    }

    /// The images of a message stored by id (a cluster node offers what it
    /// stored itself, so one node makes each thumbnail).
    pub fn offer_files<'a>(&self, message_id: MessageId, files: impl IntoIterator<Item = &'a FileMeta>) {
        let files: Vec<String> =
            files.into_iter().filter(|f| f.wants_thumbnail()).map(|f| f.file_path.clone()).collect();
        if files.is_empty() {
            return;
        }
        if self.0.try_send(Job { message_id, files }).is_err() {
            tracing::warn!(message = message_id, "thumbnail queue full; this message's images keep none");
        }
    }
}

/// Runs jobs until the queue closes, `workers` at a time.
pub fn spawn(mut jobs: mpsc::Receiver<Job>, writer: WriterHandle, static_dir: PathBuf, workers: usize) {
    let permits = Arc::new(Semaphore::new(workers.max(1)));
    tokio::spawn(async move {
        while let Some(job) = jobs.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let (writer, static_dir) = (writer.clone(), static_dir.clone());
            tokio::spawn(async move {
                let message_id = job.message_id;
                let made = tokio::task::spawn_blocking(move || make_all(&static_dir, job)).await;
                drop(permit);
                let thumbnails = match made {
                    Ok(thumbnails) if !thumbnails.is_empty() => thumbnails,
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(message = message_id, error = %e, "thumbnail job failed");
                        return;
                    }
                };
                if let Err(e) = writer.set_thumbnails(message_id, thumbnails).await {
                    tracing::warn!(message = message_id, error = %e, "cannot record thumbnails");
                }
            });
        }
    });
}

fn make_all(static_dir: &std::path::Path, job: Job) -> Vec<(String, String)> {
    let started = std::time::Instant::now();
    let mut made = Vec::new();
    for file in job.files {
        match thumbnail::make_thumbnail(static_dir, &file) {
            Ok(Thumbnail::Ready(thumb)) => made.push((file, thumb)),
            Ok(Thumbnail::TooLarge { width, height }) => {
                tracing::info!(file, width, height, "no thumbnail: the image is larger than 50 megapixels");
            }
            Err(e) => tracing::info!(file, error = %e, "no thumbnail"),
        }
    }
    tracing::debug!(message = job.message_id, ms = started.elapsed().as_millis() as u64, "thumbnails made");
    made
}
