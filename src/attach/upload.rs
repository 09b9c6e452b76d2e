//! Files that arrive as raw bytes over HTTP (SPEC section 11) rather than
//! base64 in a frame: the checks of SPEC 4 split into what the headers
//! decide (name, type, extension, size) and what only the bytes can (magic,
//! UTF-8 for text), read back from disk once the last byte is in; and the
//! move into `chat_files/` when a message uses the upload.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use super::civil::UtcDateTime;
use super::store::{folder_path, link_no_clobber, sync_dir};
use super::validate::{MAGIC_PREFIX_LEN, Magic, display_file_name, extension_of, lookup_mime, magic_matches};
use super::{AttachError, CHAT_FILES_DIR, Category, FileMessageKind, StoredFile, sanitize_file_name};

/// An upload after the checks its headers allow.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedUpload {
    /// The name shown to clients.
    pub file_name: String,
    /// The sanitised name the stored file is named after.
    pub sanitised: String,
    /// The canonical spelling from the type table.
    pub mime_type: &'static str,
    pub category: Category,
    pub magic: Magic,
    pub length: u64,
}

/// Checks an upload's name, type, extension and declared length. Any
/// allowed type is accepted here; whether a message of some kind may carry
/// it is checked when a message uses it.
pub fn plan_upload(file_name: &str, mime: &str, length: u64) -> Result<PlannedUpload, AttachError> {
    let sanitised = sanitize_file_name(file_name)?;
    let name = || sanitised.clone();
    let file_type = lookup_mime(mime).ok_or_else(|| AttachError::TypeNotAllowed {
        name: name(),
        allowed: super::validate::allowed_types_text(FileMessageKind::File),
    })?;
    let extension = extension_of(&sanitised);
    if !file_type.extensions.iter().any(|allowed| extension.is_some_and(|ext| ext.eq_ignore_ascii_case(allowed))) {
        return Err(AttachError::ExtensionMismatch { name: name() });
    }
    let max_bytes = file_type.category.max_bytes();
    if length > max_bytes {
        return Err(AttachError::TooLarge { name: name(), max_bytes });
    }
    if length == 0 {
        return Err(AttachError::Empty { name: name() });
    }
    Ok(PlannedUpload {
        file_name: display_file_name(file_name, &sanitised),
        sanitised,
        mime_type: file_type.mime,
        category: file_type.category,
        magic: file_type.magic,
        length,
    })
}

/// Whether a message of `kind` may carry a file of this category.
pub fn kind_accepts(kind: FileMessageKind, category: Category) -> bool {
    super::validate::kind_accepts(kind, category)
}

/// The folder of uploads' bytes inside the data directory (private: not
/// under the static directory until a message uses them).
pub fn uploads_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("uploads")
}

/// Where upload `id` keeps its bytes; `None` for an id chatd cannot have
/// made (22 URL-safe base64 characters), so no id names another path.
pub fn upload_path(data_dir: &Path, id: &str) -> Option<std::path::PathBuf> {
    let valid = id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| uploads_dir(data_dir).join(id))
}

/// A new upload id: 128 random bits, URL-safe.
pub fn new_upload_id() -> io::Result<String> {
    use base64::Engine as _;
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Bytes read at a time when checking a received file.
const CHECK_CHUNK: usize = 64 * 1024;

/// The checks only the bytes can answer, over the file at `path` read in
/// fixed chunks: its length, its magic and, for text, UTF-8 without NUL.
pub fn check_content(path: &Path, plan: &PlannedUpload) -> Result<(), AttachError> {
    let name = || plan.sanitised.clone();
    let io_error = |source| AttachError::Io { name: name(), source };
    let mut file = File::open(path).map_err(io_error)?;
    if file.metadata().map_err(io_error)?.len() != plan.length {
        return Err(AttachError::SizeMismatch { name: name() });
    }
    // Room for an unfinished UTF-8 sequence carried into the next chunk.
    let mut buf = vec![0u8; CHECK_CHUNK + 3];
    let (mut carry, mut first) = (0, true);
    loop {
        let read = read_full(&mut file, &mut buf[carry..carry + CHECK_CHUNK]).map_err(io_error)?;
        if read == 0 {
            break;
        }
        let fresh = &buf[carry..carry + read];
        if first {
            let head = &fresh[..fresh.len().min(MAGIC_PREFIX_LEN)];
            if !magic_matches(plan.magic, head) {
                return Err(AttachError::ContentMismatch { name: name() });
            }
            first = false;
        }
        if plan.magic == Magic::Text {
            if fresh.contains(&0) {
                return Err(AttachError::ContentMismatch { name: name() });
            }
            let end = carry + read;
            carry = match std::str::from_utf8(&buf[..end]) {
                Ok(_) => 0,
                Err(e) if e.error_len().is_none() && end - e.valid_up_to() <= 3 => end - e.valid_up_to(),
                Err(_) => return Err(AttachError::ContentMismatch { name: name() }),
            };
            buf.copy_within(end - carry..end, 0);
        }
    }
    if first || carry != 0 {
        return Err(AttachError::ContentMismatch { name: name() });
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Links a checked upload's data at `path` into `chat_files/` under the
/// name a message's file `index` gets (never over an existing file). The
/// upload's own file stays until the message is committed.
pub fn place_upload(
    static_dir: &Path,
    path: &Path,
    user_id: i64,
    now_unix_ms: i64,
    index: usize,
    plan: &PlannedUpload,
    duration: Option<f64>,
) -> Result<StoredFile, AttachError> {
    let io_error = |source| AttachError::Io { name: plan.sanitised.clone(), source };
    let folder = folder_path(static_dir, plan.category);
    fs::create_dir_all(&folder).map_err(io_error)?;
    let stamp = UtcDateTime::from_unix_secs(now_unix_ms.div_euclid(1000)).file_stamp();
    let base = format!("user_{user_id}_{stamp}_{index}_{}", plan.sanitised);
    let final_name = link_no_clobber(path, &folder, &base).map_err(io_error)?;
    sync_dir(&folder);
    Ok(StoredFile {
        file_name: plan.file_name.clone(),
        rel_path: format!("{CHAT_FILES_DIR}/{}/{final_name}", plan.category.folder()),
        file_size: plan.length,
        mime_type: plan.mime_type.to_owned(),
        duration: duration.filter(|_| plan.category == Category::Voice),
        category: plan.category,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join("upload");
        fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn headers_decide_name_type_extension_and_size() {
        let plan = plan_upload("Trip photo.PNG", "image/png", 1000).expect("fine");
        assert_eq!(
            (plan.sanitised.as_str(), plan.mime_type, plan.category),
            ("Trip_photo.PNG", "image/png", Category::Image)
        );
        assert_eq!(plan.file_name, "Trip photo.PNG");
        let refuse = |name: &str, mime: &str, len: u64| plan_upload(name, mime, len).err().map(|e| e.to_string());
        assert_eq!(
            refuse("a.exe", "application/x-msdownload", 10)
                .as_deref()
                .map(|t| t.starts_with("a.exe: File type not allowed")),
            Some(true)
        );
        assert_eq!(
            refuse("a.jpg", "image/png", 10).as_deref(),
            Some("a.jpg: File extension does not match the file type")
        );
        assert_eq!(
            refuse("a.png", "image/png", 10 * 1024 * 1024 + 1).as_deref(),
            Some("a.png: File too large. Maximum size: 10.0MB")
        );
        assert_eq!(refuse("a.pdf", "application/pdf", 0).as_deref(), Some("a.pdf: File is empty"));
        assert!(plan_upload("talk.mp3", "audio/mpeg", 50 * 1024 * 1024).is_ok());
    }

    #[test]
    fn content_is_checked_from_disk_in_chunks() {
        let dir = tempfile::tempdir().expect("dir");
        let mut pdf = b"%PDF-1.7\n".to_vec();
        pdf.extend((0..200_000u32).map(|i| i as u8));
        let plan = plan_upload("r.pdf", "application/pdf", pdf.len() as u64).expect("plan");
        assert!(check_content(&write(dir.path(), &pdf), &plan).is_ok());
        pdf[0] = b'X';
        assert!(matches!(check_content(&write(dir.path(), &pdf), &plan), Err(AttachError::ContentMismatch { .. })));
        assert!(matches!(check_content(&write(dir.path(), &pdf[..10]), &plan), Err(AttachError::SizeMismatch { .. })));
        // Text: a character across the chunk boundary is fine; NUL or broken UTF-8 is not.
        let mut text = vec![b'a'; CHECK_CHUNK - 2];
        text.extend("𝄞 end".as_bytes());
        let plan = plan_upload("n.txt", "text/plain", text.len() as u64).expect("plan");
        assert!(check_content(&write(dir.path(), &text), &plan).is_ok());
        for bad in [&[0u8][..], &[0xC3, 0x28], &[0xF0, 0x9D]] {
            let mut broken = text.clone();
            broken.extend(bad);
            let plan = plan_upload("n.txt", "text/plain", broken.len() as u64).expect("plan");
            assert!(check_content(&write(dir.path(), &broken), &plan).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_placed_upload_is_linked_under_its_message_name() {
        let dir = tempfile::tempdir().expect("dir");
        let data = write(dir.path(), b"ID3\x04\0\0\0\0\0\0 sound");
        let plan = plan_upload("voice note.mp3", "audio/mpeg", 16).expect("plan");
        let stored = place_upload(dir.path(), &data, 7, 1_704_110_400_123, 2, &plan, Some(3.5)).expect("placed");
        assert_eq!(stored.rel_path, "chat_files/voices/user_7_20240101_120000_2_voice_note.mp3");
        assert_eq!((stored.duration, stored.file_size), (Some(3.5), 16));
        assert_eq!(fs::read(dir.path().join(&stored.rel_path)).expect("read"), b"ID3\x04\0\0\0\0\0\0 sound");
        assert!(data.exists(), "the upload's own file stays until the commit");
    }
}
