//! The blocking shell around the pure checks: temporary files in the final
//! folders, fsync, no-clobber links into place, and the cleanup that makes a
//! message all or nothing.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::civil::UtcDateTime;
use super::decode::{DecodeBuffer, DecodeError, decode_into};
use super::validate::{PlannedFile, display_file_name, plan_files};
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
    for (index, ((folder, temp), (plan, file))) in temps.iter().zip(planned.iter().zip(files)).enumerate() {
        let base = format!("user_{user_id}_{stamp}_{index}_{}", plan.sanitised);
        let final_name = link_no_clobber(temp, folder, &base)
            .map_err(|source| AttachError::Io { name: plan.sanitised.clone(), source })?;
        cleanup.paths.push(folder.join(&final_name));
        if let Err(error) = fs::remove_file(temp) {
            // The final name holds the data; prepare_dirs removes the leftover.
            tracing::warn!(path = %temp.display(), %error, "could not remove a temporary file");
        }
        stored.push(StoredFile {
            file_name: display_file_name(file.file_name, &plan.sanitised),
            rel_path: format!("{CHAT_FILES_DIR}/{}/{final_name}", plan.file_type.category.folder()),
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
        // An image's thumbnail goes with it.
        let thumbnail = super::thumbnail::thumbnail_rel_path(rel_path).map(|t| static_dir.join(t));
        for path in std::iter::once(path).chain(thumbnail) {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "could not remove a stored file")
                }
            }
        }
    }
}

/// `remove_stored` on a blocking thread, for async callers (a delete, a
/// cancelled or dropped scheduled message, a failed send).
pub async fn remove_stored_later(static_dir: PathBuf, rel_paths: Vec<String>) {
    if rel_paths.is_empty() {
        return;
    }
    let removed = tokio::task::spawn_blocking(move || {
        let paths: Vec<&str> = rel_paths.iter().map(String::as_str).collect();
        remove_stored(&static_dir, &paths);
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, "could not remove stored files");
    }
}

/// At start, before serving: removes stored files no message uses (a crash
/// after a message's files were linked into place and before its commit
/// leaves them), and thumbnails whose image is gone. `referenced` holds
/// every `chat_files/<folder>/<name>` a message or scheduled message uses.
/// Returns how many files it removed.
pub fn sweep_orphans(static_dir: &Path, referenced: &std::collections::HashSet<String>) -> io::Result<usize> {
    let mut removed = 0;
    for category in Category::ALL {
        let folder = folder_path(static_dir, category);
        let Ok(entries) = fs::read_dir(&folder) else { continue };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{CHAT_FILES_DIR}/{}/{name}", category.folder());
            if !name.starts_with('.') && entry.file_type()?.is_file() && !referenced.contains(&rel) {
                remove_stored(static_dir, &[rel.as_str()]);
                removed += 1;
            }
        }
    }
    let thumbnails = static_dir.join(CHAT_FILES_DIR).join(super::thumbnail::THUMBNAIL_FOLDER);
    if let Ok(entries) = fs::read_dir(&thumbnails) {
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let image = name.strip_suffix(".jpg").map(|image| folder_path(static_dir, Category::Image).join(image));
            if entry.file_type()?.is_file() && !image.is_some_and(|image| image.exists()) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
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
            let is_temp = entry.file_name().to_str().is_some_and(|name| name.starts_with(TEMP_PREFIX));
            if is_temp && entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

pub(super) fn folder_path(static_dir: &Path, category: Category) -> PathBuf {
    static_dir.join(CHAT_FILES_DIR).join(category.folder())
}

/// `chat_files/<folder>/<name>` mapped under `static_dir`, or `None` for
/// anything else.
fn stored_path(static_dir: &Path, rel_path: &str) -> Option<PathBuf> {
    let mut parts = rel_path.split('/');
    let (root, folder, name) = (parts.next()?, parts.next()?, parts.next()?);
    let category = Category::ALL.into_iter().find(|c| c.folder() == folder)?;
    let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['\\', '\0', ':']);
    (root == CHAT_FILES_DIR && parts.next().is_none() && plain).then(|| folder_path(static_dir, category).join(name))
}

/// Decodes one planned file into a new temporary file in `folder`, fsynced.
fn write_temp(
    folder: &Path,
    plan: &PlannedFile<'_>,
    buffer: &mut DecodeBuffer,
    cleanup: &mut Cleanup,
) -> Result<PathBuf, AttachError> {
    let io_error = |source| AttachError::Io { name: plan.sanitised.clone(), source };
    fs::create_dir_all(folder).map_err(io_error)?;
    let (temp, mut file) = create_temp(folder).map_err(io_error)?;
    cleanup.paths.push(temp.clone());
    let name = || plan.sanitised.clone();
    let written = decode_into(plan.payload, plan.file_type.magic, &mut file, buffer).map_err(|error| match error {
        DecodeError::InvalidBase64 => AttachError::InvalidBase64 { name: name() },
        DecodeError::ContentMismatch => AttachError::ContentMismatch { name: name() },
        DecodeError::Io(source) => io_error(source),
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
pub(super) fn link_no_clobber(temp: &Path, folder: &Path, base: &str) -> io::Result<String> {
    let (stem, ext) = match base.rsplit_once('.') {
        Some((stem, ext)) => (stem, format!(".{ext}")),
        None => (base, String::new()),
    };
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let name = if attempt == 0 { base.to_owned() } else { format!("{stem}_{attempt}{ext}") };
        match fs::hard_link(temp, folder.join(&name)) {
            Ok(()) => return Ok(name),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free name for a stored file"))
}

/// Makes the new directory entries durable. Best effort: some filesystems
/// refuse to fsync a directory, and the data itself is already synced.
pub(super) fn sync_dir(folder: &Path) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::samples::{Declared, incoming, sample_bytes};

    /// 2024-01-01 12:00:00.123 UTC.
    const NOW_MS: i64 = 1_704_110_400_123;

    fn static_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        prepare_dirs(dir.path()).unwrap();
        dir
    }

    /// Every file under `chat_files/`, as sorted relative paths.
    fn files_on_disk(static_dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        for category in Category::ALL {
            for entry in fs::read_dir(folder_path(static_dir, category)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                found.push(format!("{CHAT_FILES_DIR}/{}/{name}", category.folder()));
            }
        }
        found.sort();
        found
    }

    fn store(dir: &Path, kind: FileMessageKind, files: &[Declared]) -> Result<Vec<StoredFile>, String> {
        store_files(dir, 7, NOW_MS, kind, &incoming(files)).map_err(|e| e.to_string())
    }

    /// Storing `files` fails with `expected` and leaves no file behind.
    fn check_fails(kind: FileMessageKind, files: &[Declared], expected: &str) {
        let dir = static_dir();
        assert_eq!(store(dir.path(), kind, files).err().as_deref(), Some(expected));
        assert_eq!(files_on_disk(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn each_category_is_stored_in_its_folder_under_its_final_name() {
        let dir = static_dir();
        let files = [
            Declared::sample("photo.JPG", "image/jpeg"),
            Declared::sample("../../etc/report.pdf", "application/pdf"),
            Declared::sample("notes.txt", "text/plain; charset=UTF-8"),
            Declared::sample("voice note.mp3", "audio/mpeg").duration(4.5),
        ];
        let stored = store(dir.path(), FileMessageKind::File, &files).unwrap();
        let paths: Vec<_> = stored.iter().map(|s| s.rel_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "chat_files/images/user_7_20240101_120000_0_photo.JPG",
                "chat_files/files/user_7_20240101_120000_1_report.pdf",
                "chat_files/files/user_7_20240101_120000_2_notes.txt",
                "chat_files/voices/user_7_20240101_120000_3_voice_note.mp3",
            ]
        );
        assert_eq!(stored[1].file_name, "../../etc/report.pdf");
        assert_eq!(stored[2].mime_type, "text/plain");
        assert_eq!(stored[3].duration, Some(4.5));
        assert_eq!(stored[0].duration, None);
        assert_eq!(stored[3].category, Category::Voice);
        for (file, declared) in stored.iter().zip(&files) {
            let bytes = fs::read(dir.path().join(&file.rel_path)).unwrap();
            assert_eq!(bytes.len() as u64, file.file_size);
            assert_eq!(bytes.len() as i64, declared.size);
        }
        let mut expected: Vec<_> = paths.iter().map(|p| p.to_string()).collect();
        expected.sort();
        assert_eq!(files_on_disk(dir.path()), expected);
    }

    #[test]
    fn long_names_are_stored_shortened_and_names_are_shown_without_format_characters() {
        let dir = static_dir();
        let long = format!("{}.png", "n".repeat(300));
        let files = [Declared::sample(&long, "image/png"), Declared::sample("invoice\u{202E}fdp.png", "image/png")];
        let stored = store(dir.path(), FileMessageKind::Image, &files).unwrap();
        let shortened = format!("{}.png", "n".repeat(96));
        assert_eq!(stored[0].rel_path, format!("chat_files/images/user_7_20240101_120000_0_{shortened}"));
        assert_eq!(stored[0].file_name, format!("{}.png", "n".repeat(251)));
        assert_eq!(stored[1].rel_path, "chat_files/images/user_7_20240101_120000_1_invoice_fdp.png");
        assert_eq!(stored[1].file_name, "invoicefdp.png");
        for file in &stored {
            assert_eq!(fs::read(dir.path().join(&file.rel_path)).unwrap(), sample_bytes("png"));
        }
    }

    #[test]
    fn every_type_round_trips_through_a_voice_image_or_file_message() {
        let cases = [
            (FileMessageKind::Image, "a.jpeg", "image/jpeg"),
            (FileMessageKind::Image, "a.png", "image/png"),
            (FileMessageKind::Image, "a.gif", "image/gif"),
            (FileMessageKind::Image, "a.webp", "image/webp"),
            (FileMessageKind::File, "a.doc", "application/msword"),
            (FileMessageKind::File, "a.xls", "application/vnd.ms-excel"),
            (
                FileMessageKind::File,
                "a.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            ),
            (FileMessageKind::File, "a.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            (FileMessageKind::File, "a.zip", "application/x-zip-compressed"),
            (FileMessageKind::File, "a.rar", "application/vnd.rar"),
            (FileMessageKind::Voice, "a.wav", "audio/x-wav"),
            (FileMessageKind::Voice, "a.mp3", "audio/mp3"),
        ];
        for (kind, name, mime) in cases {
            let dir = static_dir();
            let file = Declared::sample(name, mime).duration(1.0);
            let stored = store(dir.path(), kind, &[file]).unwrap();
            let bytes = fs::read(dir.path().join(&stored[0].rel_path)).unwrap();
            let ext = name.rsplit('.').next().unwrap();
            assert_eq!(bytes, sample_bytes(ext), "{name}");
        }
        // An empty ZIP and an MP3 that starts with a frame, not ID3.
        let dir = static_dir();
        let empty_zip = [b"PK\x05\x06".as_slice(), &[0; 18]].concat();
        let frame = b"\xFF\xFB\x90\x64\x00\x00\x00\x00";
        let files = [
            Declared::new("e.zip", "application/zip", &empty_zip),
            Declared::new("f.mp3", "audio/mpeg", frame).duration(0.1),
        ];
        assert!(store(dir.path(), FileMessageKind::File, &files).is_ok());
    }

    #[test]
    fn content_that_does_not_fit_the_type_is_refused_and_nothing_stays() {
        let png = sample_bytes("png");
        check_fails(
            FileMessageKind::Image,
            &[Declared::new("photo.jpg", "image/jpeg", &png)],
            "photo.jpg: File content does not match the file type",
        );
        check_fails(
            FileMessageKind::File,
            &[Declared::new("fake.pdf", "application/pdf", b"just some text")],
            "fake.pdf: File content does not match the file type",
        );
        check_fails(
            FileMessageKind::File,
            &[Declared::new(
                "a.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                &sample_bytes("doc"),
            )],
            "a.docx: File content does not match the file type",
        );
        check_fails(
            FileMessageKind::Voice,
            &[Declared::new("v.wav", "audio/wav", &sample_bytes("webp")).duration(1.0)],
            "v.wav: File content does not match the file type",
        );
        check_fails(
            FileMessageKind::File,
            &[Declared::new("a.txt", "text/plain", b"bin\0ary")],
            "a.txt: File content does not match the file type",
        );
        check_fails(
            FileMessageKind::File,
            &[Declared::new("a.txt", "text/plain", b"caf\xE9")],
            "a.txt: File content does not match the file type",
        );
    }

    #[test]
    fn invalid_base64_is_refused_and_nothing_stays() {
        for data in ["JVBE Ri0x", "JVBERi0x\n", "JVBE*i0x", "JV==Ri0x", "JVBERi0x\r\n", "A=A="] {
            let mut file = Declared::sample("a.pdf", "application/pdf");
            file.data = data.to_owned();
            file.size = 6;
            if data.ends_with('=') {
                file.size = 2;
            }
            check_fails(FileMessageKind::File, &[file], "a.pdf: Invalid base64 data");
        }
    }

    #[test]
    fn one_bad_file_removes_every_file_of_the_message() {
        let good = Declared::sample("a.png", "image/png");
        let mut bad = Declared::sample("b.png", "image/png");
        bad.data = bad.data.replacen('A', "!", 1);
        check_fails(FileMessageKind::Image, &[good.clone(), good.clone(), bad], "b.png: Invalid base64 data");
        let fake = Declared::new("c.gif", "image/gif", &sample_bytes("png"));
        check_fails(FileMessageKind::Image, &[good.clone(), fake], "c.gif: File content does not match the file type");
        check_fails(FileMessageKind::Image, &vec![good; 11], "A message can carry 1 to 10 files, not 11");
    }

    #[test]
    fn refusals_before_decoding_leave_nothing_either() {
        let mut lying = Declared::sample("a.png", "image/png");
        lying.size += 3;
        check_fails(FileMessageKind::Image, &[lying], "a.png: File size does not match the file data");
        check_fails(
            FileMessageKind::Voice,
            &[Declared::sample("v.mp3", "audio/mpeg")],
            "v.mp3: Duration must be a number of seconds greater than 0",
        );
        check_fails(FileMessageKind::File, &[Declared::sample("a\0.txt", "text/plain")], "a?.txt: Invalid file name");
    }

    #[test]
    fn large_file_is_decoded_across_many_chunks() {
        let dir = static_dir();
        let mut bytes = sample_bytes("pdf");
        bytes.extend((0..1_000_000u32).map(|i| (i % 253) as u8));
        let stored =
            store(dir.path(), FileMessageKind::File, &[Declared::new("big.pdf", "application/pdf", &bytes)]).unwrap();
        assert_eq!(fs::read(dir.path().join(&stored[0].rel_path)).unwrap(), bytes);
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = static_dir();
        let first = [Declared::sample("a.png", "image/png"), Declared::sample("a.png", "image/png")];
        let mut other = Declared::sample("a.png", "image/png");
        other.data = crate::attach::samples::encode(&[sample_bytes("png"), b"more".to_vec()].concat());
        other.size += 4;
        let a = store(dir.path(), FileMessageKind::Image, &first).unwrap();
        let b = store(dir.path(), FileMessageKind::Image, &[other.clone()]).unwrap();
        let c = store(dir.path(), FileMessageKind::Image, &[other]).unwrap();
        assert_eq!(a[0].rel_path, "chat_files/images/user_7_20240101_120000_0_a.png");
        assert_eq!(a[1].rel_path, "chat_files/images/user_7_20240101_120000_1_a.png");
        assert_eq!(b[0].rel_path, "chat_files/images/user_7_20240101_120000_0_a_1.png");
        assert_eq!(c[0].rel_path, "chat_files/images/user_7_20240101_120000_0_a_2.png");
        let original = fs::read(dir.path().join(&a[0].rel_path)).unwrap();
        assert_eq!(original, sample_bytes("png"));
        assert_eq!(files_on_disk(dir.path()).len(), 4);
    }

    #[test]
    fn remove_stored_removes_only_files_under_chat_files() {
        let dir = static_dir();
        let stored = store(dir.path(), FileMessageKind::Image, &[Declared::sample("a.png", "image/png")]).unwrap();
        let outside = dir.path().join("keep.txt");
        fs::write(&outside, b"keep").unwrap();
        fs::write(dir.path().join("chat_files/keep.txt"), b"keep").unwrap();
        let absolute = outside.display().to_string();
        remove_stored(
            dir.path(),
            &[
                &stored[0].rel_path,
                "chat_files/images/missing.png",
                "chat_files/images/../../keep.txt",
                "chat_files/../keep.txt",
                "chat_files/keep.txt",
                "chat_files/images/",
                "chat_files/images/..",
                &absolute,
                "",
            ],
        );
        assert_eq!(files_on_disk(dir.path()), Vec::<String>::new());
        assert!(outside.exists());
        assert!(dir.path().join("chat_files/keep.txt").exists());
    }

    #[test]
    fn prepare_dirs_creates_folders_and_removes_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(prepare_dirs(dir.path()).unwrap(), 0);
        let images = folder_path(dir.path(), Category::Image);
        let voices = folder_path(dir.path(), Category::Voice);
        fs::write(images.join(".tmp-0123456789abcdef"), b"half").unwrap();
        fs::write(voices.join(".tmp-fedcba9876543210"), b"half").unwrap();
        fs::write(images.join("user_1_20240101_000000_0_a.png"), b"keep").unwrap();
        assert_eq!(prepare_dirs(dir.path()).unwrap(), 2);
        assert_eq!(files_on_disk(dir.path()), ["chat_files/images/user_1_20240101_000000_0_a.png"]);
    }
}
