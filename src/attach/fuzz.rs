//! Fuzz harnesses, shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/fuzz_corpus.rs`, so the corpus replayed on stable runs exactly what
//! the fuzzer ran. Each harness panics when an invariant breaks; that is its
//! whole purpose, so nothing else may call them.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::validate::{FILE_TYPES, MAX_DISPLAY_NAME_CHARS, decoded_len, is_format_char, strip_data_url};
use super::{
    CHAT_FILES_DIR, Category, FileMessageKind, IncomingFile, check_files, display_file_name, remove_stored,
    sanitize_file_name, store_files,
};

/// `sanitize_file_name` either refuses or returns a short name of safe
/// characters that is not all dots; the name shown for an accepted one is
/// short, not empty, and free of control and format characters.
pub fn file_name(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    match sanitize_file_name(raw) {
        Ok(name) => {
            assert!(!name.is_empty() && name.len() <= 100, "{name:?}");
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')), "{name:?}");
            assert!(name.bytes().any(|b| b != b'.'), "{name:?}");
            let shown = display_file_name(raw, &name);
            assert!(!shown.trim().is_empty() && shown.chars().count() <= MAX_DISPLAY_NAME_CHARS, "{shown:?}");
            assert!(!shown.chars().any(|c| c.is_control() || is_format_char(c)), "{shown:?}");
        }
        Err(error) => {
            let text = error.to_string();
            assert!(!text.chars().any(|c| c.is_control() || is_format_char(c)), "{text:?}");
        }
    }
}

/// One message through `check_files` and `store_files` into `static_dir`
/// (prepared with `prepare_dirs`). Input layout: a kind byte, a mime-type
/// index into the type table, a flags byte, then `name '\n' content`.
/// Flags: bit 0 takes the content as the base64 text itself instead of
/// encoding it; bit 1 declares the content's raw length as `file_size`;
/// bit 2 leaves out the duration; bits 4.. add up to two copies of the file.
///
/// Invariants: whatever `check_files` refuses `store_files` refuses too; a
/// stored file has the declared size (and content) under its category's
/// folder and a shown name without control or format characters; after a
/// refusal, and after `remove_stored`, no file is left.
/// Returns whether the message was stored.
pub fn attachment(data: &[u8], static_dir: &Path) -> bool {
    let [kind, mime, flags, rest @ ..] = data else {
        return false;
    };
    let kind = [FileMessageKind::Image, FileMessageKind::File, FileMessageKind::Voice][usize::from(*kind) % 3];
    let mime = FILE_TYPES.get(usize::from(*mime)).map_or("application/octet-stream", |t| t.mime);
    let (name, content) = match rest.iter().position(|&b| b == b'\n') {
        Some(newline) => (&rest[..newline], &rest[newline + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return false;
    };
    let encoded;
    let file_data = if flags & 1 == 0 {
        encoded = STANDARD.encode(content);
        encoded.as_str()
    } else {
        let Ok(text) = std::str::from_utf8(content) else {
            return false;
        };
        text
    };
    let implied = strip_data_url(file_data).and_then(decoded_len);
    let file_size = match implied {
        Some(len) if flags & 2 == 0 => i64::try_from(len).unwrap_or(i64::MAX),
        _ => i64::try_from(content.len()).unwrap_or(i64::MAX),
    };
    let file = IncomingFile {
        file_data,
        file_name: name,
        file_size,
        mime_type: mime,
        duration: (flags & 4 == 0).then_some(1.0),
    };
    let files = vec![file; 1 + usize::from(flags >> 4) % 3];

    let checked = check_files(kind, &files);
    let result = store_files(static_dir, 1, 0, kind, &files);
    if let Err(error) = &checked {
        assert!(result.is_err(), "check_files refused ({error}), store_files did not");
    }
    if let Ok(stored) = &result {
        assert_eq!(stored.len(), files.len());
        for file in stored {
            let prefix = format!("{CHAT_FILES_DIR}/{}/user_1_", file.category.folder());
            assert!(file.rel_path.starts_with(&prefix), "{}", file.rel_path);
            let bytes = std::fs::read(static_dir.join(&file.rel_path)).unwrap_or_default();
            assert_eq!(bytes.len() as u64, file.file_size);
            assert!(!file.file_name.chars().any(|c| c.is_control() || is_format_char(c)), "{:?}", file.file_name);
            if flags & 1 == 0 {
                assert_eq!(bytes, content);
            }
        }
        let paths: Vec<&str> = stored.iter().map(|s| s.rel_path.as_str()).collect();
        remove_stored(static_dir, &paths);
    }
    for category in Category::ALL {
        let folder = static_dir.join(CHAT_FILES_DIR).join(category.folder());
        let left: Vec<_> = std::fs::read_dir(&folder)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left behind in {}: {left:?}", folder.display());
    }
    result.is_ok()
}
