//! The fuzz harness of the WebSocket protocol parser, shared by the
//! cargo-fuzz target in `fuzz/` and by `tests/fuzz_corpus.rs`. It panics when
//! an invariant breaks; that is its whole purpose, so nothing else may call it.

use std::borrow::Cow;

use super::protocol::{ClientCommand, MAX_FILES, MAX_TEMP_ID_BYTES, MAX_TEXT_CHARS, parse};
use crate::model::MessageType;

/// `parse` on any UTF-8 frame never panics, and a `send_message` it accepts
/// is one the writer may store: text of at most `MAX_TEXT_CHARS` characters
/// that is not blank and has no files, or 1..=`MAX_FILES` files; a temp id of
/// 1..=`MAX_TEMP_ID_BYTES` bytes; positive ids. Returns whether it parsed.
pub fn ws_protocol(data: &[u8]) -> bool {
    let Ok(frame) = std::str::from_utf8(data) else {
        return false;
    };
    let command = match parse(frame) {
        Ok(command) => command,
        Err(_) => return false,
    };
    match &command {
        ClientCommand::SendMessage(m) => {
            let chars = m.content.chars().count();
            assert!(chars <= MAX_TEXT_CHARS, "{chars} characters");
            if m.message_type == MessageType::Text {
                assert!(m.files.is_empty(), "text with {} files", m.files.len());
                assert!(!m.content.trim().is_empty(), "blank text");
            } else {
                assert!((1..=MAX_FILES).contains(&m.files.len()), "{} files", m.files.len());
            }
            if let Some(temp_id) = &m.local_temp_id {
                assert!((1..=MAX_TEMP_ID_BYTES).contains(&temp_id.len()), "temp id of {} bytes", temp_id.len());
            }
            assert!(m.room_id.is_none_or(|id| id > 0) && m.receiver_id.is_none_or(|id| id > 0), "{m:?}");
            assert!(m.reply_to_id.is_none_or(|id| id > 0), "{m:?}");
            // Unescaped strings must point into the frame, not at a copy.
            for file in &m.files {
                if let Cow::Borrowed(text) = &file.file_data {
                    assert!(frame.as_bytes().as_ptr_range().contains(&text.as_ptr()) || text.is_empty());
                }
            }
        }
        ClientCommand::JoinRoom { .. }
        | ClientCommand::Typing { .. }
        | ClientCommand::LeaveRoom
        | ClientCommand::MarkRead { .. }
        | ClientCommand::Ping => {}
    }
    true
}
