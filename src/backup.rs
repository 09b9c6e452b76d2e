//! `chatd backup DEST` and `chatd restore SRC` (issue 14), while a server
//! keeps serving. A backup is a directory: `data/chatd.sqlite3` (a
//! consistent snapshot made with `VACUUM INTO`), `data/jwt_secret` when the
//! secret is generated, and `static/chat_files/...` with every file the
//! snapshot's messages use. The search index is not copied: it is derived,
//! and rebuilt at the first start.
//!
//! Database and files are kept consistent by order. A message's files are
//! in place before its commit, and removed only after the commit that
//! deletes it; so every file the snapshot references was on disk when the
//! snapshot was taken. Files are copied after it: one may be gone by then
//! because its message was deleted since. Such a message is then deleted
//! in the backup too (its copy is what the live server shows), and a
//! missing thumbnail is dropped, so no message in a backup points at a file
//! that is not in it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, params};

use crate::model::FileMeta;
use crate::store;

/// What a backup did.
#[derive(Debug)]
pub struct Summary {
    pub bytes: u64,
    pub files: usize,
    /// Messages deleted on the live server while the files were copied.
    pub deleted_meanwhile: usize,
    pub seconds: f64,
}

fn io(context: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", context.display())
}

/// Backs up the database under `data_dir` and the files under `static_dir`
/// into `dest`, which must not exist or be empty.
pub fn backup(data_dir: &Path, static_dir: &Path, dest: &Path) -> Result<Summary, String> {
    let started = Instant::now();
    if dest.exists() && std::fs::read_dir(dest).map_err(io(dest))?.next().is_some() {
        return Err(format!("{} is not empty", dest.display()));
    }
    let live = store::db_path(data_dir);
    if !live.exists() {
        return Err(format!("no database at {}", live.display()));
    }
    let (dest_data, dest_static) = (dest.join("data"), dest.join("static"));
    std::fs::create_dir_all(&dest_data).map_err(io(&dest_data))?;
    let snapshot = store::db_path(&dest_data);
    let source = Connection::open_with_flags(&live, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| e.to_string())?;
    source.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| e.to_string())?;
    source.execute("VACUUM INTO ?1", [snapshot.to_string_lossy()]).map_err(|e| format!("snapshot: {e}"))?;
    drop(source);
    let secret = data_dir.join("jwt_secret");
    if secret.exists() {
        std::fs::copy(&secret, dest_data.join("jwt_secret")).map_err(io(&secret))?;
    }
    let copy = Connection::open(&snapshot).map_err(|e| e.to_string())?;
    let (files, deleted_meanwhile) = copy_files(&copy, static_dir, &dest_static)?;
    copy.execute_batch("PRAGMA journal_mode = DELETE;").map_err(|e| e.to_string())?;
    drop(copy);
    Ok(Summary { bytes: dir_size(dest), files, deleted_meanwhile, seconds: started.elapsed().as_secs_f64() })
}

/// Copies every file the snapshot's messages and scheduled messages use;
/// deletes (in the snapshot) a message whose file is gone, and drops a
/// missing thumbnail.
fn copy_files(snapshot: &Connection, static_dir: &Path, dest_static: &Path) -> Result<(usize, usize), String> {
    let mut copied = 0;
    let mut deleted = 0;
    for table in ["chat_messages", "scheduled_messages"] {
        let rows: Vec<(i64, String)> = snapshot
            .prepare(&format!("SELECT id, files_data FROM {table} WHERE files_data IS NOT NULL"))
            .and_then(|mut stmt| stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| e.to_string())?;
        for (id, json) in rows {
            let mut files: Vec<FileMeta> = serde_json::from_str(&json).unwrap_or_default();
            let mut complete = true;
            let mut changed = false;
            for file in &mut files {
                match copy_one(static_dir, dest_static, &file.file_path)? {
                    true => copied += 1,
                    false => complete = false,
                }
                if let Some(thumb) = file.thumbnail_path.clone()
                    && !copy_one(static_dir, dest_static, &thumb)?
                {
                    file.thumbnail_path = None;
                    changed = true;
                }
            }
            if !complete {
                let sql = if table == "chat_messages" {
                    "UPDATE chat_messages SET content = '', files_data = NULL, file_name = NULL, file_path = NULL,
                         file_size = NULL, mime_type = NULL, duration = NULL, is_deleted = 1 WHERE id = ?1"
                } else {
                    "DELETE FROM scheduled_messages WHERE id = ?1"
                };
                snapshot.execute(sql, [id]).map_err(|e| e.to_string())?;
                deleted += 1;
            } else if changed {
                let json = serde_json::to_string(&files).map_err(|e| e.to_string())?;
                snapshot
                    .execute(&format!("UPDATE {table} SET files_data = ?1 WHERE id = ?2"), params![json, id])
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok((copied, deleted))
}

/// Copies `static_dir/rel` to `dest_static/rel` (fsynced); `false` when the
/// source is gone. Refuses a path outside `chat_files/`.
fn copy_one(static_dir: &Path, dest_static: &Path, rel: &str) -> Result<bool, String> {
    let plain = rel.starts_with("chat_files/") && rel.split('/').all(|s| !s.is_empty() && s != ".." && s != ".");
    if !plain {
        return Err(format!("refusing to copy {rel}"));
    }
    let (from, to) = (static_dir.join(rel), dest_static.join(rel));
    if to.exists() {
        return Ok(true);
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    match std::fs::copy(&from, &to) {
        Ok(_) => {
            std::fs::File::open(&to).and_then(|f| f.sync_all()).map_err(io(&to))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", from.display())),
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Restores a backup from `src` into `data_dir` and `static_dir`; the data
/// directory must hold no database yet.
pub fn restore(src: &Path, data_dir: &Path, static_dir: &Path) -> Result<usize, String> {
    let snapshot = store::db_path(&src.join("data"));
    if !snapshot.exists() {
        return Err(format!("{} is not a chatd backup (no data/chatd.sqlite3)", src.display()));
    }
    let target = store::db_path(data_dir);
    if target.exists() {
        return Err(format!("{} exists: restore into an empty data directory", target.display()));
    }
    // The snapshot must read as a database before anything is copied.
    let check = Connection::open_with_flags(&snapshot, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)))
        .map_err(|e| format!("{}: {e}", snapshot.display()))?;
    if check != "ok" {
        return Err(format!("{}: integrity check: {check}", snapshot.display()));
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let mut files = 0;
    let from_static = src.join("static");
    let mut stack: Vec<PathBuf> = vec![from_static.join("chat_files")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(&from_static) {
                let to = static_dir.join(rel);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                std::fs::copy(&path, &to).map_err(io(&path))?;
                files += 1;
            }
        }
    }
    let secret = src.join("data/jwt_secret");
    if secret.exists() && !data_dir.join("jwt_secret").exists() {
        std::fs::copy(&secret, data_dir.join("jwt_secret")).map_err(io(&secret))?;
    }
    // The database last: until it is there, the directory is not a restored one.
    let partial = target.with_extension("restoring");
    std::fs::copy(&snapshot, &partial).map_err(io(&snapshot))?;
    std::fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(io(&partial))?;
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file gone by the time it is copied (its message was deleted on the
    /// live server after the snapshot) deletes the message in the backup; a
    /// missing thumbnail is dropped; everything else is copied.
    #[test]
    fn no_message_in_a_backup_points_at_a_missing_file() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (live, dest) = (dir.path().join("static"), dir.path().join("dest"));
        std::fs::create_dir_all(live.join("chat_files/images")).map_err(|e| e.to_string())?;
        std::fs::write(live.join("chat_files/images/kept.png"), b"png").map_err(|e| e.to_string())?;
        let mut conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        store::migrate::apply(&mut conn).map_err(|e| e.to_string())?;
        let file = |path: &str, thumb: Option<&str>| FileMeta {
            file_name: "a.png".into(),
            file_path: path.into(),
            file_size: 3,
            mime_type: "image/png".into(),
            duration: None,
            thumbnail_path: thumb.map(str::to_owned),
        };
        let kept =
            serde_json::to_string(&[file("chat_files/images/kept.png", Some("chat_files/thumbnails/kept.png.jpg"))])
                .map_err(|e| e.to_string())?;
        let gone = serde_json::to_string(&[file("chat_files/images/gone.png", None)]).map_err(|e| e.to_string())?;
        conn.execute_batch(
            "INSERT INTO users (id, name, email, password_hash, created_at) VALUES (1, 'a', 'a@x', 'h', 0);
             INSERT INTO chat_rooms (id, created_by, created_at, updated_at) VALUES (1, 1, 0, 0);",
        )
        .map_err(|e| e.to_string())?;
        for (id, files) in [(1, &kept), (2, &gone)] {
            conn.execute(
                "INSERT INTO chat_messages (id, room_id, sender_id, message_type, content, files_data, created_at)
                 VALUES (?1, 1, 1, 'image', 'x', ?2, 0)",
                params![id, files],
            )
            .map_err(|e| e.to_string())?;
        }
        assert_eq!(copy_files(&conn, &live, &dest)?, (1, 1));
        assert_eq!(std::fs::read(dest.join("chat_files/images/kept.png")).map_err(|e| e.to_string())?, b"png");
        let state = |id: i64| -> rusqlite::Result<(bool, Option<String>)> {
            conn.query_row("SELECT is_deleted, files_data FROM chat_messages WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        };
        let (deleted, files) = state(2).map_err(|e| e.to_string())?;
        assert!(deleted && files.is_none(), "the message whose file is gone is deleted");
        let (deleted, files) = state(1).map_err(|e| e.to_string())?;
        assert!(!deleted && files.is_some_and(|f| !f.contains("thumbnail")), "the missing thumbnail is dropped");
        Ok(())
    }
}
