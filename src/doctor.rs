//! `chatd doctor`: what an operator checks before (or instead of) asking
//! why chatd misbehaves. Each check answers ok, warn or fail with one line
//! of detail; a fail makes the command exit non-zero. Read-only except for
//! a probe file in each directory chatd writes to.

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::config::Config;
use crate::store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "{status} {:<14} {}", self.name, self.detail)
    }
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check { name, status, detail: detail.into() }
}

/// Free space under which a data directory is worth a warning.
const LOW_DISK_BYTES: u64 = 1024 * 1024 * 1024;
/// Descriptors kept for files, the database and the listener.
const FD_HEADROOM: u64 = 256;

/// Runs every check against `config`.
pub fn run(config: &Config) -> Vec<Check> {
    vec![
        writable("data dir", &config.data_dir),
        writable("static dir", &config.static_dir),
        disk(&config.data_dir),
        open_files(config.max_connections),
        clock(),
        secret(config),
        database(&config.data_dir),
    ]
}

fn writable(name: &'static str, dir: &Path) -> Check {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return check(name, Status::Fail, format!("{}: cannot create: {e}", dir.display()));
    }
    let probe = dir.join(".chatd-doctor-probe");
    match std::fs::write(&probe, b"probe").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => check(name, Status::Ok, format!("{} is writable", dir.display())),
        Err(e) => check(name, Status::Fail, format!("{}: not writable: {e}", dir.display())),
    }
}

fn disk(dir: &Path) -> Check {
    match rustix::fs::statvfs(dir) {
        Ok(fs) => {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            let total = fs.f_blocks.saturating_mul(fs.f_frsize).max(1);
            let detail = format!("{} MiB free of {} MiB", free >> 20, total >> 20);
            let low = free < LOW_DISK_BYTES || free.saturating_mul(20) < total;
            check("disk", if low { Status::Warn } else { Status::Ok }, detail)
        }
        Err(e) => check("disk", Status::Warn, format!("cannot read free space: {e}")),
    }
}

fn open_files(max_connections: usize) -> Check {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let Some(hard) = limit.maximum else { return check("open files", Status::Ok, "no limit") };
    let serves = hard.saturating_sub(FD_HEADROOM);
    let detail = format!("hard limit {hard}: room for {serves} connections, {max_connections} configured");
    let status = if (serves as usize) < max_connections { Status::Warn } else { Status::Ok };
    check("open files", status, detail)
}

fn clock() -> Check {
    let now = crate::time::now_ms();
    let shown = crate::time::rfc3339_ms(now);
    // Tokens, file links and scheduled messages all trust this clock.
    let plausible = (1_704_067_200_000..4_102_444_800_000).contains(&now);
    check("clock", if plausible { Status::Ok } else { Status::Fail }, format!("now is {shown}"))
}

fn secret(config: &Config) -> Check {
    let (text, source) = match &config.jwt_secret {
        Some(secret) => (secret.clone(), "CHAT_JWT_SECRET".to_owned()),
        None => {
            let path = config.data_dir.join("jwt_secret");
            match std::fs::read_to_string(&path) {
                Ok(text) => (text.trim().to_owned(), path.display().to_string()),
                Err(_) => return check("secret", Status::Ok, "none yet: one is generated at the first start"),
            }
        }
    };
    let distinct = text.bytes().collect::<std::collections::HashSet<_>>().len();
    if text.len() < 32 || distinct < 12 {
        return check("secret", Status::Fail, format!("{source}: {} bytes, {distinct} distinct: too weak", text.len()));
    }
    #[cfg(unix)]
    if config.jwt_secret.is_none() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(config.data_dir.join("jwt_secret")).map_or(0, |m| m.permissions().mode() & 0o777);
        if mode & 0o077 != 0 {
            return check("secret", Status::Warn, format!("{source} is readable by others (mode {mode:o})"));
        }
    }
    check("secret", Status::Ok, format!("{source}: {} bytes", text.len()))
}

fn database(data_dir: &Path) -> Check {
    let path = store::db_path(data_dir);
    if !path.exists() {
        return check("database", Status::Ok, "none yet: created at the first start");
    }
    let opened = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX);
    let conn = match opened {
        Ok(conn) => conn,
        Err(e) => return check("database", Status::Fail, format!("{}: cannot open: {e}", path.display())),
    };
    let version: rusqlite::Result<i64> = conn.query_row("PRAGMA user_version", [], |r| r.get(0));
    let integrity: rusqlite::Result<String> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
    match (version, integrity) {
        (Ok(version), Ok(result)) if result == "ok" => {
            if version > store::migrate::latest() {
                check("database", Status::Fail, format!("schema version {version} is newer than this chatd"))
            } else {
                check("database", Status::Ok, format!("integrity ok, schema version {version}"))
            }
        }
        (Ok(_), Ok(result)) => check("database", Status::Fail, format!("integrity check: {result}")),
        (Err(e), _) | (Ok(_), Err(e)) => check("database", Status::Fail, format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_passes_and_a_broken_database_fails() {
        let dir = tempfile::tempdir().expect("dir");
        let config = Config::for_tests(dir.path());
        let checks = run(&config);
        assert!(checks.iter().all(|c| c.status != Status::Fail), "{checks:#?}");
        std::fs::create_dir_all(&config.data_dir).expect("dir");
        std::fs::write(store::db_path(&config.data_dir), vec![0x55; 8192]).expect("garbage");
        let db = database(&config.data_dir);
        assert_eq!(db.status, Status::Fail, "{db}");
        std::fs::write(config.data_dir.join("jwt_secret"), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").expect("secret");
        assert_eq!(secret(&config).status, Status::Fail, "a long secret of one letter is weak");
    }
}
