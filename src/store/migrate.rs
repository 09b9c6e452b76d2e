//! Numbered migrations from `sql/`, embedded in the binary, applied in one
//! transaction and tracked with `PRAGMA user_version`. The list is append-only.

use rusqlite::Connection;

use super::StoreError;

/// `(version, sql)`: version N is `sql/00N_*.sql`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../sql/001_init.sql")),
    (2, include_str!("../../sql/002_limits.sql")),
    (3, include_str!("../../sql/003_groups_events.sql")),
    (4, include_str!("../../sql/004_replies.sql")),
    (5, include_str!("../../sql/005_reactions.sql")),
    (6, include_str!("../../sql/006_forwarding.sql")),
    (7, include_str!("../../sql/007_scheduled.sql")),
    (8, include_str!("../../sql/008_uploads.sql")),
    (9, include_str!("../../sql/009_retention.sql")),
];

/// The schema version this binary expects.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the database to the latest version; returns how many were applied.
/// Foreign keys are off while migrations run (SQLite's way to rebuild a
/// table) and checked before the transaction commits.
pub fn apply(conn: &mut Connection) -> Result<usize, StoreError> {
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", false)?;
    let applied = apply_all(conn);
    conn.pragma_update(None, "foreign_keys", enforced)?;
    applied
}

fn apply_all(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(StoreError::Invalid("the database was written by a newer chatd"));
    }
    let mut applied = 0;
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        applied += 1;
    }
    if applied > 0 {
        let broken = tx.prepare("PRAGMA foreign_key_check")?.query([])?.next()?.is_some();
        if broken {
            return Err(StoreError::Invalid("a migration left a broken foreign key"));
        }
    }
    tx.commit()?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_all_then_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(apply(&mut conn).unwrap(), MIGRATIONS.len());
        assert_eq!(apply(&mut conn).unwrap(), 0);
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, latest());
    }

    #[test]
    fn refuses_a_newer_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", latest() + 1).unwrap();
        assert!(apply(&mut conn).is_err());
    }
}
