//! The client → server protocol of SPEC section 3 as a pure function:
//! `parse(&str) -> Result<ClientCommand, ProtocolError>`. It borrows from the
//! frame (strings are `Cow`, owned only when JSON escapes force it), so a
//! 60 MB attachment is never copied into a `serde_json::Value`. Fuzz targets
//! and benches call exactly this.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::{MessageId, MessageType, RoomId, UserId};

/// Longest text, in characters.
pub const MAX_TEXT_CHARS: usize = 5000;
/// Longest `local_temp_id`, in bytes.
pub const MAX_TEMP_ID_BYTES: usize = 128;
/// Most files in one message.
pub const MAX_FILES: usize = 10;

#[derive(Debug, PartialEq)]
pub enum ClientCommand<'a> {
    SendMessage(SendMessage<'a>),
    Typing { room_id: Option<RoomId>, is_typing: bool },
    JoinRoom { room_id: RoomId },
    LeaveRoom,
    MarkRead { room_id: Option<RoomId> },
    Ping,
}

#[derive(Debug, PartialEq)]
pub struct SendMessage<'a> {
    pub room_id: Option<RoomId>,
    pub receiver_id: Option<UserId>,
    pub message_type: MessageType,
    pub content: Cow<'a, str>,
    pub local_temp_id: Option<Cow<'a, str>>,
    /// Base64 files; or none when the files come as `uploads`.
    pub files: Vec<FileIn<'a>>,
    /// Files uploaded over HTTP before (SPEC section 11).
    pub uploads: Vec<UploadRef<'a>>,
    /// The message of the same room this one answers.
    pub reply_to_id: Option<MessageId>,
    /// When to post it (ms since the epoch), if not now.
    pub send_at: Option<i64>,
}

/// An entry of `files_data` that names an upload instead of carrying base64.
#[derive(Debug, PartialEq)]
pub struct UploadRef<'a> {
    pub upload_id: Cow<'a, str>,
    /// Seconds, for voice.
    pub duration: Option<f64>,
}

/// A string that stays borrowed from the frame inside an `Option` (serde
/// borrows a bare `Cow` field, not one wrapped in `Option`): base64 data
/// is never copied.
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

/// One entry of `files_data` as it arrives: base64 with its description,
/// or an `upload_id`.
#[derive(Deserialize)]
struct FileEntry<'a> {
    #[serde(borrow, default)]
    upload_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    file_data: Option<Borrowed<'a>>,
    #[serde(borrow, default)]
    file_name: Option<Cow<'a, str>>,
    #[serde(default)]
    file_size: Option<i64>,
    #[serde(borrow, default)]
    mime_type: Option<Cow<'a, str>>,
    #[serde(default)]
    duration: Option<f64>,
}

/// One base64 entry of `files_data` as sent.
#[derive(Debug, PartialEq, Deserialize)]
pub struct FileIn<'a> {
    #[serde(borrow)]
    pub file_data: Cow<'a, str>,
    #[serde(borrow)]
    pub file_name: Cow<'a, str>,
    pub file_size: i64,
    #[serde(borrow)]
    pub mime_type: Cow<'a, str>,
    #[serde(default)]
    pub duration: Option<f64>,
}

/// A request the server answers with an `error` frame (the connection stays open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub message: String,
    pub local_temp_id: Option<String>,
}

impl ProtocolError {
    fn new(message: impl Into<String>, local_temp_id: Option<&str>) -> ProtocolError {
        ProtocolError { message: message.into(), local_temp_id: local_temp_id.map(str::to_owned) }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SendData<'a> {
    #[serde(default)]
    room_id: Option<RoomId>,
    #[serde(default)]
    receiver_id: Option<UserId>,
    #[serde(borrow)]
    message_type: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    local_temp_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    files_data: Option<Vec<FileEntry<'a>>>,
    #[serde(default)]
    reply_to_id: Option<MessageId>,
    #[serde(borrow, default)]
    send_at: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct TypingData {
    #[serde(default)]
    room_id: Option<RoomId>,
    is_typing: bool,
}

#[derive(Deserialize)]
struct RoomData {
    room_id: RoomId,
}

#[derive(Deserialize)]
struct OptionalRoomData {
    #[serde(default)]
    room_id: Option<RoomId>,
}

/// Only the temp id, to answer a broken `send_message` with it.
#[derive(Deserialize)]
struct TempIdOnly<'a> {
    #[serde(borrow, default)]
    local_temp_id: Option<Cow<'a, str>>,
}

/// Parses and validates one text frame.
///
/// ```
/// use chatd::ws::protocol::{parse, ClientCommand};
///
/// assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientCommand::Ping));
/// let error = parse(r#"{"type":"send_message","data":{"room_id":1,"message_type":"text","content":"","local_temp_id":"t1"}}"#).unwrap_err();
/// assert_eq!((error.message.as_str(), error.local_temp_id.as_deref()), ("Message content is empty", Some("t1")));
/// ```
pub fn parse(frame: &str) -> Result<ClientCommand<'_>, ProtocolError> {
    let envelope: Envelope<'_> =
        serde_json::from_str(frame).map_err(|e| ProtocolError::new(format!("Invalid message: {}", short(&e)), None))?;
    let data = envelope.data.map(RawValue::get);
    match envelope.kind.as_ref() {
        "send_message" => parse_send(data),
        "typing" => {
            let d: TypingData = fields(data, "typing", None)?;
            Ok(ClientCommand::Typing { room_id: d.room_id, is_typing: d.is_typing })
        }
        "join_room" => {
            let d: RoomData = fields(data, "join_room", None)?;
            Ok(ClientCommand::JoinRoom { room_id: d.room_id })
        }
        "leave_room" => Ok(ClientCommand::LeaveRoom),
        "mark_read" => {
            let d: OptionalRoomData = match data {
                Some(_) => fields(data, "mark_read", None)?,
                None => OptionalRoomData { room_id: None },
            };
            Ok(ClientCommand::MarkRead { room_id: d.room_id })
        }
        "ping" => Ok(ClientCommand::Ping),
        other => Err(ProtocolError::new(format!("Unknown message type: {}", clip(other)), None)),
    }
}

fn parse_send(data: Option<&str>) -> Result<ClientCommand<'_>, ProtocolError> {
    let d: SendData<'_> = match fields(data, "send_message", None) {
        Ok(d) => d,
        Err(mut e) => {
            // Only a broken request pays for a second look, to answer with its temp id.
            e.local_temp_id = data
                .and_then(|d| serde_json::from_str::<TempIdOnly<'_>>(d).ok())
                .and_then(|t| t.local_temp_id)
                .map(Cow::into_owned);
            return Err(e);
        }
    };
    let temp = d.local_temp_id.as_deref();
    let message_type = MessageType::parse(&d.message_type)
        .ok_or_else(|| ProtocolError::new("message_type must be one of: text, image, file, voice", temp))?;
    if let Some(id) = &d.local_temp_id
        && (id.is_empty() || id.len() > MAX_TEMP_ID_BYTES)
    {
        return Err(ProtocolError::new(format!("local_temp_id must be 1..{MAX_TEMP_ID_BYTES} bytes"), None));
    }
    let content = d.content.unwrap_or(Cow::Borrowed(""));
    let chars = content.chars().count();
    let (files, uploads) = split_files(d.files_data.unwrap_or_default(), temp)?;
    let count = files.len() + uploads.len();
    if chars > MAX_TEXT_CHARS {
        return Err(ProtocolError::new(format!("Message too long: at most {MAX_TEXT_CHARS} characters"), temp));
    }
    if message_type == MessageType::Text {
        if count > 0 {
            return Err(ProtocolError::new("A text message cannot carry files_data", temp));
        }
        if content.trim().is_empty() {
            return Err(ProtocolError::new("Message content is empty", temp));
        }
    } else if count == 0 {
        return Err(ProtocolError::new(
            format!("A {} message needs 1..{MAX_FILES} files in files_data", message_type.as_str()),
            temp,
        ));
    } else if count > MAX_FILES {
        return Err(ProtocolError::new(format!("Too many files: at most {MAX_FILES} per message"), temp));
    }
    if d.room_id.is_some_and(|id| id <= 0) || d.receiver_id.is_some_and(|id| id <= 0) {
        return Err(ProtocolError::new("room_id and receiver_id must be positive", temp));
    }
    if d.reply_to_id.is_some_and(|id| id <= 0) {
        return Err(ProtocolError::new("reply_to_id must be positive", temp));
    }
    let send_at = match d.send_at.as_deref() {
        None => None,
        Some(text) => Some(
            crate::time::parse_rfc3339_ms(text)
                .ok_or_else(|| ProtocolError::new("send_at must be an RFC 3339 date-time", temp))?,
        ),
    };
    Ok(ClientCommand::SendMessage(SendMessage {
        room_id: d.room_id,
        receiver_id: d.receiver_id,
        message_type,
        content,
        local_temp_id: d.local_temp_id,
        files,
        uploads,
        reply_to_id: d.reply_to_id,
        send_at,
    }))
}

/// Sorts `files_data` into base64 entries and uploads; one message uses
/// one kind. A base64 entry needs all four of its fields.
fn split_files<'a>(
    entries: Vec<FileEntry<'a>>,
    temp: Option<&str>,
) -> Result<(Vec<FileIn<'a>>, Vec<UploadRef<'a>>), ProtocolError> {
    let (mut files, mut uploads) = (Vec::new(), Vec::new());
    for entry in entries {
        match entry.upload_id {
            Some(upload_id) => uploads.push(UploadRef { upload_id, duration: entry.duration }),
            None => {
                let missing =
                    |field: &str| ProtocolError::new(format!("Invalid send_message: missing field `{field}`"), temp);
                files.push(FileIn {
                    file_data: entry.file_data.ok_or_else(|| missing("file_data"))?.0,
                    file_name: entry.file_name.ok_or_else(|| missing("file_name"))?,
                    file_size: entry.file_size.ok_or_else(|| missing("file_size"))?,
                    mime_type: entry.mime_type.ok_or_else(|| missing("mime_type"))?,
                    duration: entry.duration,
                });
            }
        }
    }
    if !files.is_empty() && !uploads.is_empty() {
        return Err(ProtocolError::new("files_data must be all base64 or all upload_id entries", temp));
    }
    Ok((files, uploads))
}

fn fields<'a, T: Deserialize<'a>>(data: Option<&'a str>, kind: &str, temp: Option<&str>) -> Result<T, ProtocolError> {
    let data = data.ok_or_else(|| ProtocolError::new(format!("{kind} needs a data object"), temp))?;
    serde_json::from_str(data).map_err(|e| ProtocolError::new(format!("Invalid {kind}: {}", short(&e)), temp))
}

/// serde's message without the position suffix, which means nothing to a client,
/// and cut short: serde quotes the offending value, which may be a 60 MB
/// string, and an error frame must stay small.
fn short(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = text.find(" at line ").map_or(text.as_str(), |i| &text[..i]);
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Longest serde explanation quoted in an error frame.
const MAX_ERROR_CHARS: usize = 160;

fn clip(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(frame: &str) -> ProtocolError {
        match parse(frame) {
            Err(e) => e,
            Ok(c) => panic!("{frame} parsed as {c:?}"),
        }
    }

    #[test]
    fn parses_every_command() {
        let send = parse(r#"{"type":"send_message","data":{"room_id":1,"receiver_id":2,"message_type":"text","content":"hi","local_temp_id":"t1"}}"#).unwrap();
        let ClientCommand::SendMessage(m) = send else { panic!("not a send") };
        assert_eq!((m.room_id, m.receiver_id, m.message_type), (Some(1), Some(2), MessageType::Text));
        assert_eq!(m.content, "hi");
        assert_eq!(m.local_temp_id.as_deref(), Some("t1"));
        assert_eq!(
            parse(r#"{"type":"typing","data":{"room_id":3,"is_typing":true}}"#).unwrap(),
            ClientCommand::Typing { room_id: Some(3), is_typing: true }
        );
        assert_eq!(
            parse(r#"{"type":"join_room","data":{"room_id":3}}"#).unwrap(),
            ClientCommand::JoinRoom { room_id: 3 }
        );
        assert_eq!(parse(r#"{"type":"leave_room"}"#).unwrap(), ClientCommand::LeaveRoom);
        assert_eq!(
            parse(r#"{"type":"mark_read","data":{"room_id":4}}"#).unwrap(),
            ClientCommand::MarkRead { room_id: Some(4) }
        );
        assert_eq!(parse(r#"{"type":"ping","extra":1}"#).unwrap(), ClientCommand::Ping);
    }

    #[test]
    fn files_borrow_from_the_frame() {
        let frame = r#"{"type":"send_message","data":{"room_id":1,"message_type":"image","files_data":[{"file_data":"iVBORw0KGgo=","file_name":"a.png","file_size":8,"mime_type":"image/png"}]}}"#;
        let ClientCommand::SendMessage(m) = parse(frame).unwrap() else { panic!() };
        assert_eq!(m.files.len(), 1);
        assert!(matches!(m.files[0].file_data, Cow::Borrowed(_)));
        assert_eq!(m.content, "");
    }

    #[test]
    fn files_may_name_uploads_but_not_mix_them_with_base64() {
        let frame = r#"{"type":"send_message","data":{"room_id":1,"message_type":"voice","local_temp_id":"t","files_data":[{"upload_id":"abc","duration":2.5}]}}"#;
        let ClientCommand::SendMessage(m) = parse(frame).unwrap() else { panic!() };
        assert_eq!((m.files.len(), m.uploads.len()), (0, 1));
        assert_eq!((m.uploads[0].upload_id.as_ref(), m.uploads[0].duration), ("abc", Some(2.5)));
        let mixed = r#"{"type":"send_message","data":{"room_id":1,"message_type":"image","local_temp_id":"t","files_data":[{"upload_id":"abc"},{"file_data":"iVBORw0KGgo=","file_name":"a.png","file_size":8,"mime_type":"image/png"}]}}"#;
        let e = parse(mixed).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.local_temp_id.as_deref()),
            ("files_data must be all base64 or all upload_id entries", Some("t"))
        );
        let missing = r#"{"type":"send_message","data":{"room_id":1,"message_type":"image","files_data":[{"file_data":"iVBORw0KGgo=","file_size":8,"mime_type":"image/png"}]}}"#;
        assert_eq!(parse(missing).unwrap_err().message, "Invalid send_message: missing field `file_name`");
    }

    #[test]
    fn bad_frames_say_why_and_keep_the_temp_id() {
        assert!(err("not json").message.starts_with("Invalid message"));
        assert!(err(r#"{"type":"dance"}"#).message.starts_with("Unknown message type"));
        assert!(err(r#"{"data":{}}"#).message.contains("type"));
        let e = err(
            r#"{"type":"send_message","data":{"room_id":"x","message_type":"text","content":"a","local_temp_id":"t9"}}"#,
        );
        assert_eq!(e.local_temp_id.as_deref(), Some("t9"));
        let e = err(
            r#"{"type":"send_message","data":{"room_id":1,"message_type":"text","content":"   ","local_temp_id":"t8"}}"#,
        );
        assert_eq!((e.message.as_str(), e.local_temp_id.as_deref()), ("Message content is empty", Some("t8")));
        let long = "é".repeat(MAX_TEXT_CHARS + 1);
        let e = err(&format!(
            r#"{{"type":"send_message","data":{{"room_id":1,"message_type":"text","content":"{long}"}}}}"#
        ));
        assert!(e.message.starts_with("Message too long"));
        let exact = "é".repeat(MAX_TEXT_CHARS);
        assert!(
            parse(&format!(
                r#"{{"type":"send_message","data":{{"room_id":1,"message_type":"text","content":"{exact}"}}}}"#
            ))
            .is_ok()
        );
        assert!(
            err(r#"{"type":"send_message","data":{"room_id":1,"message_type":"video","content":"a"}}"#)
                .message
                .contains("message_type")
        );
        assert!(
            err(r#"{"type":"send_message","data":{"room_id":1,"message_type":"image"}}"#).message.contains("files")
        );
        assert!(err(r#"{"type":"typing","data":{"room_id":1}}"#).message.contains("is_typing"));
        assert!(err(r#"{"type":"join_room"}"#).message.contains("data"));
        let huge = format!(r#"{{"type":"typing","data":{{"room_id":1,"is_typing":"{}"}}}}"#, "z".repeat(100_000));
        assert!(err(&huge).message.chars().count() < 200, "error frames stay small");
    }
}
