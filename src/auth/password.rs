//! Argon2id password hashing (PHC strings). Hashing is slow on purpose: call
//! these from a blocking thread.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashes a password with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` matches the stored PHC string. A malformed hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A job for the hashing threads.
type Job = Box<dyn FnOnce() + Send>;

/// Password hashing on a few dedicated threads with a bounded queue.
///
/// Each Argon2id hash takes 19 MiB; on the shared blocking pool, a burst of
/// logins (no account needed) ran one hash per thread and left every
/// thread's allocator arena holding its 19 MiB — gigabytes after a few hundred
/// requests. Here at most `threads` hashes run at once, the memory stays with
/// those threads, and a full queue is refused (429) instead of growing.
pub struct HashPool {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

/// The queue of the hashing threads is full.
#[derive(Debug, thiserror::Error)]
#[error("Too many password checks at once, try again shortly")]
pub struct Busy;

impl HashPool {
    pub fn start(threads: usize, queue: usize) -> std::io::Result<HashPool> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("chatd-hash-{i}")).spawn(move || {
                loop {
                    // The lock is held only to take one job, never while hashing.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(HashPool { jobs })
    }

    /// Runs `f` on a hashing thread; `Busy` when the queue is full.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        self.jobs.try_send(job).map_err(|_| Busy)?;
        answer.await.map_err(|_| Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify("correct horse", &phc));
        assert!(!verify("wrong horse", &phc));
        assert!(!verify("x", "not a hash"));
    }

    #[tokio::test]
    async fn the_pool_runs_jobs_and_refuses_when_full() {
        let pool = std::sync::Arc::new(HashPool::start(1, 1).unwrap());
        assert_eq!(pool.run(|| 2 + 2).await.unwrap(), 4);
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move || {
                    let _ = held.recv();
                })
                .await
            }
        });
        // Wait until the one thread is busy, then fill the one queue slot.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued = tokio::spawn({
            let jobs = pool.jobs.clone();
            async move { jobs.try_send(Box::new(|| {})).is_ok() }
        });
        assert!(queued.await.unwrap());
        assert!(pool.run(|| ()).await.is_err(), "a full queue is refused");
        hold.send(()).unwrap();
        blocker.await.unwrap().unwrap();
    }
}
