//! Argon2id password hashing (PHC strings). Hashing is slow on purpose: call
//! these from a blocking thread.

use std::cell::RefCell;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

thread_local! {
    /// The Argon2 working memory (19 MiB with the default parameters), kept by
    /// each hashing thread and reused: allocating it per hash left the
    /// allocator holding one block per past hash (~380 MB after 20 logins).
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        f(&mut memory[..blocks])
    })
}

/// Hashes a password with a fresh random salt into a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$...`).
pub fn hash(password: &str) -> Result<String, String> {
    let mut raw_salt = [0u8; 16];
    getrandom::fill(&mut raw_salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&raw_salt).map_err(|e| e.to_string())?;
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password.as_bytes(), &raw_salt, &mut out, memory)
    })
    .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the stored PHC string (compared in constant
/// time). A malformed hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed)) else {
        return false;
    };
    let version = parsed.version.map_or(Ok(Version::V0x13), Version::try_from);
    let (Ok(version), Some(salt), Some(expected)) = (version, parsed.salt, parsed.hash) else { return false };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let computed = with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
    });
    computed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
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
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        // Interoperable with the argon2 crate's own verifier.
        use argon2::password_hash::PasswordVerifier;
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
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
