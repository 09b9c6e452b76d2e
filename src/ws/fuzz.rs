//! Fuzz harnesses for the pure parsers of requests, shared by the cargo-fuzz
//! targets in `fuzz/` and by `tests/fuzz_corpus.rs`: the WebSocket protocol
//! parser and the REST router. Each panics when an invariant breaks; that is
//! its whole purpose, so nothing else may call them.

use std::borrow::Cow;

use hyper::Method;

use super::protocol::{ClientCommand, MAX_FILES, MAX_TEMP_ID_BYTES, MAX_TEXT_CHARS, parse};
use crate::http::router::{self, Endpoint, Route};
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

/// `route` on any method and path never panics; every id it captures is
/// positive; a 405 never lists the method it refused. Input: `METHOD path`
/// (without a space: a GET of the whole input). Returns whether it matched.
pub fn route(data: &[u8]) -> bool {
    let (method, path) = match data.iter().position(|&b| b == b' ') {
        Some(space) => (Method::from_bytes(&data[..space]).unwrap_or(Method::GET), &data[space + 1..]),
        None => (Method::GET, data),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return false;
    };
    match router::route(&method, path) {
        Route::Found(endpoint) => {
            let id = match endpoint {
                Endpoint::GetRoom(id)
                | Endpoint::Messages(id)
                | Endpoint::MarkRead(id)
                | Endpoint::EditMessage(id)
                | Endpoint::DeleteMessage(id)
                | Endpoint::Like(id)
                | Endpoint::Unlike(id) => id,
                _ => 1,
            };
            assert!(id > 0, "{method} {path:?} → {endpoint:?}");
            true
        }
        Route::MethodNotAllowed { allow } => {
            assert!(!allow.split(", ").any(|m| m == method.as_str()), "{method} {path:?} refused with Allow: {allow}");
            false
        }
        Route::NotFound | Route::BadId(_) => false,
    }
}
