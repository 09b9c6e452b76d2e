//! The event stream as a client sees it (SPEC section 9): stored event frames
//! with their cursors, `synced`, `resync_required`, and reading a connection
//! up to `synced`. Knows nothing of measurements.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::client::WsStream;
use crate::error::{BenchError, Result, describe};

/// The four stored events a message causes.
pub const NEW_MESSAGE: &str = "new_message";
pub const MESSAGE_UPDATE: &str = "message_update";
pub const MESSAGE_DELETE: &str = "message_delete";
pub const MESSAGE_LIKE: &str = "message_like";

/// A frame that carries a cursor, reduced to what the tool checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The frame's `type`.
    pub kind: String,
    pub cursor: String,
    pub room_id: Option<i64>,
    /// `data.id` of the message events (for other kinds it is no message).
    pub message_id: Option<i64>,
    /// `data.user_id` (who liked, for `message_like`).
    pub user_id: Option<i64>,
    /// `data.local_temp_id` of a `new_message`.
    pub local_temp_id: Option<String>,
}

/// One server → client frame, sorted for the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame {
    Stored(StoredEvent),
    Synced {
        cursor: String,
    },
    ResyncRequired,
    Error {
        message: String,
        local_temp_id: Option<String>,
    },
    /// A frame without a cursor (presence, typing, pong, ...), by type.
    Unstored(String),
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    data: Option<RawData>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    local_temp_id: Option<Value>,
}

/// The keys of `data` the tool reads; serde skips the rest without
/// building it.
#[derive(Deserialize)]
struct RawData {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    room_id: Option<i64>,
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    local_temp_id: Option<Value>,
}

/// Parses one text frame; None when it is not JSON with a `type`, or a
/// `synced` without a cursor.
pub fn parse_stream_frame(text: &str) -> Option<StreamFrame> {
    let raw: RawFrame = serde_json::from_str(text).ok()?;
    let data = raw.data;
    match (raw.kind.as_str(), raw.cursor) {
        ("synced", _) => Some(StreamFrame::Synced { cursor: data?.cursor? }),
        ("resync_required", _) => Some(StreamFrame::ResyncRequired),
        ("error", _) => Some(StreamFrame::Error {
            message: raw.message.unwrap_or_default(),
            local_temp_id: raw.local_temp_id.as_ref().and_then(temp_id_text),
        }),
        (_, Some(cursor)) => {
            let is_message = matches!(raw.kind.as_str(), NEW_MESSAGE | MESSAGE_UPDATE | MESSAGE_DELETE | MESSAGE_LIKE);
            let (room_id, message_id, user_id, local_temp_id) = match data {
                Some(data) => (
                    data.room_id,
                    data.id.as_ref().and_then(Value::as_i64).filter(|_| is_message),
                    data.user_id,
                    data.local_temp_id.as_ref().and_then(temp_id_text),
                ),
                None => (None, None, None, None),
            };
            Some(StreamFrame::Stored(StoredEvent {
                kind: raw.kind,
                cursor,
                room_id,
                message_id,
                user_id,
                local_temp_id,
            }))
        }
        (_, None) => Some(StreamFrame::Unstored(raw.kind)),
    }
}

fn temp_id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Whether a cursor keeps to RFC 3986 unreserved characters and 200 bytes,
/// as the contract promises (so it goes into a query string unescaped).
pub fn is_url_safe(cursor: &str) -> bool {
    !cursor.is_empty()
        && cursor.len() <= 200
        && cursor.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The stream position inside today's cursor format `v1.<n>`. Cursors are
/// opaque to clients; this tool tests this server, so it reads the position
/// to check the order events arrive in. None for any other format.
pub fn cursor_position(cursor: &str) -> Option<u64> {
    let digits = cursor.strip_prefix("v1.")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How a read up to `synced` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub cursor: String,
    /// Stored events read before `synced`.
    pub events: u64,
    /// The server said it could not serve the cursor.
    pub resync_required: bool,
}

/// Reads `ws` until `synced`, handing every stored event before it to
/// `on_event`; fails when the connection ends or `deadline` passes first.
pub async fn read_until_synced(
    ws: &mut WsStream,
    deadline: Instant,
    mut on_event: impl FnMut(StoredEvent),
) -> Result<Synced> {
    let mut events = 0;
    let mut resync_required = false;
    loop {
        let item = timeout_at(deadline, ws.next()).await.map_err(|_| {
            BenchError::new(format!("no synced frame in time ({events} stored events read before the deadline)"))
        })?;
        let text = match item {
            None => return Err(BenchError::new(format!("the connection ended before synced ({events} events read)"))),
            Some(Err(error)) => {
                return Err(BenchError::new(format!("the connection failed before synced: {}", describe(&error))));
            }
            Some(Ok(Message::Close(frame))) => {
                let how = frame.map_or_else(|| "no code".to_string(), |f| format!("code {}", u16::from(f.code)));
                return Err(BenchError::new(format!("the server closed the connection before synced ({how})")));
            }
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
        };
        match parse_stream_frame(text.as_str()) {
            Some(StreamFrame::Stored(event)) => {
                events += 1;
                on_event(event);
            }
            Some(StreamFrame::Synced { cursor }) => return Ok(Synced { cursor, events, resync_required }),
            Some(StreamFrame::ResyncRequired) => resync_required = true,
            Some(StreamFrame::Error { message, .. }) => {
                return Err(BenchError::new(format!("an error frame before synced: {message}")));
            }
            Some(StreamFrame::Unstored(_)) | None => {}
        }
    }
}

/// How long a read up to `synced` may take before the tool gives up on it.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(text: &str) -> StoredEvent {
        match parse_stream_frame(text) {
            Some(StreamFrame::Stored(event)) => event,
            other => panic!("not a stored event: {other:?}"),
        }
    }

    #[test]
    fn new_message_keeps_id_room_temp_id_and_cursor() {
        let event = stored(
            r#"{"type":"new_message","data":{"id":41,"room_id":7,"content":"hi","local_temp_id":"x-1",
                "sender_details":{"id":5,"name":"a"},"files_data":null},"cursor":"v1.99"}"#,
        );
        assert_eq!(event.kind, "new_message");
        assert_eq!(event.cursor, "v1.99");
        assert_eq!((event.room_id, event.message_id), (Some(7), Some(41)));
        assert_eq!(event.local_temp_id.as_deref(), Some("x-1"));
    }

    #[test]
    fn like_keeps_who_liked() {
        let event =
            stored(r#"{"type":"message_like","data":{"id":3,"room_id":2,"user_id":9,"like_count":1},"cursor":"v1.5"}"#);
        assert_eq!((event.message_id, event.user_id), (Some(3), Some(9)));
    }

    #[test]
    fn a_room_event_has_no_message_id() {
        let event = stored(r#"{"type":"room_created","data":{"id":12,"name":"g","participants":[]},"cursor":"v1.1"}"#);
        assert_eq!(event.message_id, None);
    }

    #[test]
    fn synced_resync_errors_and_unstored_frames() {
        assert_eq!(
            parse_stream_frame(r#"{"type":"synced","data":{"cursor":"v1.10"}}"#),
            Some(StreamFrame::Synced { cursor: "v1.10".to_string() })
        );
        assert_eq!(parse_stream_frame(r#"{"type":"synced","data":{}}"#), None);
        assert_eq!(parse_stream_frame(r#"{"type":"resync_required"}"#), Some(StreamFrame::ResyncRequired));
        assert_eq!(
            parse_stream_frame(r#"{"type":"error","message":"no","local_temp_id":"t"}"#),
            Some(StreamFrame::Error { message: "no".to_string(), local_temp_id: Some("t".to_string()) })
        );
        assert_eq!(
            parse_stream_frame(r#"{"type":"presence","data":{"user_id":1,"is_online":true}}"#),
            Some(StreamFrame::Unstored("presence".to_string()))
        );
        assert_eq!(parse_stream_frame("[]"), None);
    }

    #[test]
    fn cursor_positions_and_url_safety() {
        assert_eq!(cursor_position("v1.0"), Some(0));
        assert_eq!(cursor_position("v1.123"), Some(123));
        for other in ["", "v1.", "v2.3", "v1.-1", "v1.1a", "12"] {
            assert_eq!(cursor_position(other), None, "{other:?}");
        }
        assert!(is_url_safe("v1.123"));
        assert!(is_url_safe("a-b_c.d~9"));
        for bad in ["", "a b", "a&b", "a/b", "é", &"x".repeat(201)] {
            assert!(!is_url_safe(bad), "{bad:?}");
        }
    }
}
