//! The blocking shell around the pure checks: temporary files in the final
//! folders, fsync, no-clobber links into place, and the cleanup that makes a
//! message all or nothing.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::civil::UtcDateTime;
use super::decode::{DecodeBuffer, DecodeError, decode_into};
use super::validate::{PlannedFile, plan_files};
use super::{AttachError, CHAT_FILES_DIR, Category, FileMessageKind, IncomingFile, StoredFile};

/// Temporary files start with this; `prepare_dirs` removes what a crash left.
const TEMP_PREFIX: &str = ".tmp-";
/// Attempts at a free final name (`name.ext`, `name_1.ext`, ...).
const MAX_NAME_ATTEMPTS: u32 = 1000;

/// Checks, decodes and stores every file of a message; all or nothing.
///
/// Blocking (call it inside `spawn_blocking`). Each file is decoded chunk by
/// chunk into a `.tmp-<hex>` file in its final folder and fsynced; only when
/// all are valid are they linked to their final names (never over an existing
/// file). On any error every file of the message is removed.
pub fn store_files(
    static_dir: &Path,
    user_id: i64,
    now_unix_ms: i64,
    kind: FileMessageKind,
    files: &[IncomingFile<'_>],
) -> Result<Vec<StoredFile>, AttachError> {
    let planned = plan_files(kind, files)?;
    let mut cleanup = Cleanup::default();
    let mut buffer = DecodeBuffer::new();

    let mut temps = Vec::with_capacity(planned.len());
    for plan in &planned {
        let folder = folder_path(static_dir, plan.file_type.category);
        let temp = write_temp(&folder, plan, &mut buffer, &mut cleanup)?;
        temps.push((folder, temp));
    }

    let stamp = UtcDateTime::from_unix_secs(now_unix_ms.div_euclid(1000)).file_stamp();
    let mut stored = Vec::with_capacity(planned.len());
    for (index, ((folder, temp), (plan, file))) in
        temps.iter().zip(planned.iter().zip(files)).enumerate()
    {
        let base = format!("user_{user_id}_{stamp}_{index}_{}", plan.sanitised);
        let final_name =
            link_no_clobber(temp, folder, &base).map_err(|source| AttachError::Io {
                name: plan.sanitised.clone(),
                source,
            })?;
        cleanup.paths.push(folder.join(&final_name));
        if let Err(error) = fs::remove_file(temp) {
            // The final name holds the data; prepare_dirs removes the leftover.
            tracing::warn!(path = %temp.display(), %error, "could not remove a temporary file");
        }
        stored.push(StoredFile {
            file_name: file.file_name.to_owned(),
            rel_path: format!(
                "{CHAT_FILES_DIR}/{}/{final_name}",
                plan.file_type.category.folder()
            ),
            file_size: plan.decoded_len,
            mime_type: plan.file_type.mime.to_owned(),
            duration: plan.duration,
            category: plan.file_type.category,
        });
    }
    for category in Category::ALL {
        if stored.iter().any(|s| s.category == category) {
            sync_dir(&folder_path(static_dir, category));
        }
    }
    cleanup.paths.clear();
    Ok(stored)
}

/// Removes stored files (the message was deleted, or its commit failed).
/// Ignores files that are already gone, and any path that is not exactly
/// `chat_files/<folder>/<plain name>`, so it never leaves the static dir.
pub fn remove_stored(static_dir: &Path, rel_paths: &[&str]) {
    for rel_path in rel_paths {
        let Some(path) = stored_path(static_dir, rel_path) else {
            tracing::warn!(rel_path, "refusing to remove a path outside chat_files");
            continue;
        };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "could not remove a stored file")
            }
        }
    }
}

/// At start: creates `chat_files/{images,files,voices}` and removes the
/// temporary files a crash left. Returns how many it removed.
pub fn prepare_dirs(static_dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for category in Category::ALL {
        let folder = folder_path(static_dir, category);
        fs::create_dir_all(&folder)?;
        for entry in fs::read_dir(&folder)? {
            let entry = entry?;
            let is_temp = entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(TEMP_PREFIX));
            if is_temp && entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn folder_path(static_dir: &Path, category: Category) -> PathBuf {
    static_dir.join(CHAT_FILES_DIR).join(category.folder())
}

/// `chat_files/<folder>/<name>` mapped under `static_dir`, or `None` for
/// anything else.
fn stored_path(static_dir: &Path, rel_path: &str) -> Option<PathBuf> {
    let mut parts = rel_path.split('/');
    let (root, folder, name) = (parts.next()?, parts.next()?, parts.next()?);
    let category = Category::ALL.into_iter().find(|c| c.folder() == folder)?;
    let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['\\', '\0', ':']);
    (root == CHAT_FILES_DIR && parts.next().is_none() && plain)
        .then(|| folder_path(static_dir, category).join(name))
}

/// Decodes one planned file into a new temporary file in `folder`, fsynced.
fn write_temp(
    folder: &Path,
    plan: &PlannedFile<'_>,
    buffer: &mut DecodeBuffer,
    cleanup: &mut Cleanup,
) -> Result<PathBuf, AttachError> {
    let io_error = |source| AttachError::Io {
        name: plan.sanitised.clone(),
        source,
    };
    fs::create_dir_all(folder).map_err(io_error)?;
    let (temp, mut file) = create_temp(folder).map_err(io_error)?;
    cleanup.paths.push(temp.clone());
    let name = || plan.sanitised.clone();
    let written =
        decode_into(plan.payload, plan.file_type.magic, &mut file, buffer).map_err(|error| {
            match error {
                DecodeError::InvalidBase64 => AttachError::InvalidBase64 { name: name() },
                DecodeError::ContentMismatch => AttachError::ContentMismatch { name: name() },
                DecodeError::Io(source) => io_error(source),
            }
        })?;
    if written != plan.decoded_len {
        return Err(AttachError::SizeMismatch { name: name() });
    }
    file.sync_all().map_err(io_error)?;
    Ok(temp)
}

fn create_temp(folder: &Path) -> io::Result<(PathBuf, File)> {
    let mut last_error = None;
    for _ in 0..4 {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = folder.join(format!("{TEMP_PREFIX}{hex}"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last_error = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Links `temp` to `base` in `folder`, or to `stem_1.ext`, `stem_2.ext`, ...
/// when that exists. A hard link fails instead of replacing, unlike rename.
fn link_no_clobber(temp: &Path, folder: &Path, base: &str) -> io::Result<String> {
    let (stem, ext) = match base.rsplit_once('.') {
        Some((stem, ext)) => (stem, format!(".{ext}")),
        None => (base, String::new()),
    };
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let name = if attempt == 0 {
            base.to_owned()
        } else {
            format!("{stem}_{attempt}{ext}")
        };
        match fs::hard_link(temp, folder.join(&name)) {
            Ok(()) => return Ok(name),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a stored file",
    ))
}

/// Makes the new directory entries durable. Best effort: some filesystems
/// refuse to fsync a directory, and the data itself is already synced.
fn sync_dir(folder: &Path) {
    if let Err(error) = File::open(folder).and_then(|dir| dir.sync_all()) {
        tracing::debug!(folder = %folder.display(), %error, "could not fsync a directory");
    }
}

/// Removes every listed path when dropped: the all-or-nothing guarantee holds
/// on an early return and on a panic alike. Cleared on success.
#[derive(Default)]
struct Cleanup {
    paths: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.paths {
            if let Err(error) = fs::remove_file(path)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), %error, "could not remove a file of a failed message");
            }
        }
    }
}
