//! Attachments: the checks of SPEC 4, chunked base64 decoding into temporary
//! files, and the all-or-nothing move into `chat_files/`. Knows nothing of
//! hyper, SQL or sockets; `store_files` is blocking (run it in
//! `spawn_blocking`), everything in `validate` is pure.

pub mod civil;
pub mod decode;
#[doc(hidden)]
pub mod fuzz;
#[cfg(test)]
mod samples;
mod store;
pub mod thumbnail;
pub mod upload;
pub mod validate;

pub use store::{prepare_dirs, remove_stored, remove_stored_later, store_files, sweep_orphans};
pub use validate::{display_file_name, sanitize_file_name};

/// The folder under the static directory that holds every stored file.
pub const CHAT_FILES_DIR: &str = "chat_files";

/// A row of the category table of SPEC 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Image,
    File,
    Voice,
}

impl Category {
    pub const ALL: [Category; 3] = [Category::Image, Category::File, Category::Voice];

    /// The folder under `chat_files/`.
    pub fn folder(self) -> &'static str {
        match self {
            Category::Image => "images",
            Category::File => "files",
            Category::Voice => "voices",
        }
    }

    /// The largest decoded file of this category.
    pub fn max_bytes(self) -> u64 {
        const MB: u64 = 1024 * 1024;
        match self {
            Category::Image => 10 * MB,
            Category::File | Category::Voice => 50 * MB,
        }
    }
}

/// The `message_type` of a message that carries files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMessageKind {
    Image,
    File,
    Voice,
}

/// One file as the client declared it, borrowing from the WebSocket frame.
#[derive(Clone, Copy, Debug)]
pub struct IncomingFile<'a> {
    pub file_data: &'a str,
    pub file_name: &'a str,
    pub file_size: i64,
    pub mime_type: &'a str,
    pub duration: Option<f64>,
}

/// A file that `store_files` put in place.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFile {
    /// The name the client gave, made safe to show by
    /// `validate::display_file_name` (no bidi or other format characters).
    pub file_name: String,
    /// `chat_files/<folder>/<name>`, '/'-separated, relative to the static dir.
    pub rel_path: String,
    pub file_size: u64,
    /// The canonical spelling from the type table (lower case, no parameters).
    pub mime_type: String,
    /// Seconds; only for audio.
    pub duration: Option<f64>,
    pub category: Category,
}

/// Why a message's files were refused. `Display` is the text the sender gets;
/// every per-file reason starts with the (sanitised or printable) file name.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("A message can carry 1 to 10 files, not {count}")]
    FileCount { count: usize },
    #[error("{name}: Invalid file name")]
    InvalidName { name: String },
    #[error("{name}: File type not allowed. Allowed types: {allowed}")]
    TypeNotAllowed { name: String, allowed: String },
    #[error("{name}: File extension does not match the file type")]
    ExtensionMismatch { name: String },
    #[error("{name}: Duration must be a number of seconds greater than 0")]
    InvalidDuration { name: String },
    #[error("{name}: Invalid base64 data")]
    InvalidBase64 { name: String },
    #[error("{name}: File too large. Maximum size: {:.1}MB", *max_bytes as f64 / (1024.0 * 1024.0))]
    TooLarge { name: String, max_bytes: u64 },
    #[error("{name}: File is empty")]
    Empty { name: String },
    #[error("{name}: File size does not match the file data")]
    SizeMismatch { name: String },
    #[error("{name}: File content does not match the file type")]
    ContentMismatch { name: String },
    /// The server's fault, not the sender's: log `source`, answer with the text.
    #[error("{name}: Could not store the file")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

impl AttachError {
    /// True when the server failed (disk full, permissions), not the input.
    pub fn is_server_error(&self) -> bool {
        matches!(self, AttachError::Io { .. })
    }
}

/// Checks a message's files before anything is decoded: count, names, types,
/// extensions, durations and the sizes implied by the base64 lengths. Pure.
pub fn check_files(kind: FileMessageKind, files: &[IncomingFile<'_>]) -> Result<(), AttachError> {
    validate::plan_files(kind, files).map(drop)
}
