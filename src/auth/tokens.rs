//! Which verified tokens are still good: the current token version of each
//! user (a password change bumps it) and the ids of tokens logged out before
//! their expiry. Both are kept in memory, filled from the database (versions
//! on first use, revocations at start) and updated by the handlers after the
//! writer commits; nothing here touches the database itself.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::model::UserId;

#[derive(Default)]
pub struct TokenState {
    versions: Mutex<HashMap<UserId, u32>>,
    /// Token id → its expiry (Unix seconds).
    revoked: Mutex<HashMap<String, u64>>,
}

impl TokenState {
    pub fn new(revoked: Vec<(String, u64)>) -> TokenState {
        TokenState { versions: Mutex::default(), revoked: Mutex::new(revoked.into_iter().collect()) }
    }

    /// The user's current token version, if known here.
    pub fn version(&self, user: UserId) -> Option<u32> {
        lock(&self.versions).get(&user).copied()
    }

    /// Remembers a version read from the database or just committed. A
    /// version never goes back: a slow reader cannot undo a revocation.
    pub fn set_version(&self, user: UserId, version: u32) {
        let mut versions = lock(&self.versions);
        let entry = versions.entry(user).or_insert(version);
        *entry = (*entry).max(version);
    }

    pub fn is_revoked(&self, token_id: &str) -> bool {
        lock(&self.revoked).contains_key(token_id)
    }

    /// Records a logged-out token; forgets those past their expiry.
    pub fn revoke(&self, token_id: String, expires_at: u64, now: u64) {
        let mut revoked = lock(&self.revoked);
        if revoked.len() >= 1024 {
            revoked.retain(|_, exp| *exp > now);
        }
        revoked.insert(token_id, expires_at);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_only_grow_and_revocations_expire_from_memory() {
        let state = TokenState::new(vec![("old".into(), 10)]);
        assert!(state.is_revoked("old"));
        state.set_version(1, 2);
        state.set_version(1, 1);
        assert_eq!(state.version(1), Some(2));
        assert_eq!(state.version(2), None);
        for i in 0..1024 {
            state.revoke(format!("t{i}"), 5, 0);
        }
        state.revoke("new".into(), 100, 50);
        assert!(state.is_revoked("new"));
        assert!(!state.is_revoked("t1") && !state.is_revoked("old"), "expired entries are forgotten");
    }
}
