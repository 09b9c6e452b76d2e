//! SPEC section 4 over a real WebSocket and real HTTP: every category and
//! type, one file and ten, every bad input (leaving no file and no row),
//! the name pattern, served bytes, and delete removing files.

use std::path::Path;

use base64::Engine;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, TestUser, Ws};

/// Small valid files, built here so the tests don't trust the server's own samples.
pub fn sample(ext: &str) -> Vec<u8> {
    let mut bytes: Vec<u8> = match ext {
        "png" => b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
        "jpg" | "jpeg" => vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0],
        "gif" => b"GIF89a\x01\0\x01\0".to_vec(),
        "webp" => b"RIFF\x24\0\0\0WEBPVP8 ".to_vec(),
        "pdf" => b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec(),
        "doc" | "xls" => vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1],
        "docx" | "xlsx" | "zip" => b"PK\x03\x04\x14\0\0\0".to_vec(),
        "rar" => b"Rar!\x1a\x07\x01\0".to_vec(),
        "txt" => "plain text, ünïcode ✓\n".as_bytes().to_vec(),
        "mp3" => b"ID3\x04\0\0\0\0\0\0".to_vec(),
        "wav" => b"RIFF\x24\0\0\0WAVEfmt ".to_vec(),
        other => panic!("no sample for {other}"),
    };
    // Some body after the header, different per type.
    bytes.extend(
        (0..300u32).map(|i| if ext == "txt" { b'a' + (i % 26) as u8 } else { (i * 7 + ext.len() as u32) as u8 }),
    );
    bytes
}

pub fn mime(ext: &str) -> &'static str {
    match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "txt" => "text/plain",
        "zip" => "application/zip",
        "rar" => "application/vnd.rar",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        other => panic!("no mime for {other}"),
    }
}

pub fn file(name: &str, bytes: &[u8], mime: &str) -> Value {
    json!({
        "file_data": base64::engine::general_purpose::STANDARD.encode(bytes),
        "file_name": name,
        "file_size": bytes.len(),
        "mime_type": mime,
    })
}

fn send(room: i64, kind: &str, files: Vec<Value>, temp: &str) -> Value {
    json!({"type": "send_message", "data": {"room_id": room, "message_type": kind, "content": "", "local_temp_id": temp, "files_data": files}})
}

/// Every file under static/chat_files, relative.
fn stored_files(static_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for folder in ["images", "files", "voices"] {
        let dir = static_dir.join("chat_files").join(folder);
        for entry in std::fs::read_dir(&dir).expect("folder exists") {
            let entry = entry.expect("entry");
            out.push(format!("{folder}/{}", entry.file_name().to_string_lossy()));
        }
    }
    out.sort();
    out
}

async fn message_rows(s: &TestServer) -> i64 {
    s.sql_i64("SELECT count(*) FROM chat_messages").await
}

async fn fetch(s: &TestServer, url: &str, user: &TestUser) -> (StatusCode, Vec<u8>, hyper::HeaderMap) {
    let path = url.strip_prefix(&format!("http://{}", s.addr)).expect("file_path is a full URL on BASE_URL");
    let r = s.raw(Method::GET, path, Some(&user.token), None, Vec::new()).await;
    (r.status, r.body.to_vec(), r.headers)
}

/// A file URL without its link signature (`?exp=&sig=`).
pub fn url_path(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn assert_name_pattern(url: &str, uid: i64, index: usize, name: &str) {
    let file = url_path(url).rsplit('/').next().unwrap();
    let prefix = format!("user_{uid}_");
    assert!(file.starts_with(&prefix), "{file}");
    let rest = &file[prefix.len()..];
    let (stamp, tail) = rest.split_at(15);
    assert!(
        stamp[..8].bytes().all(|b| b.is_ascii_digit())
            && &stamp[8..9] == "_"
            && stamp[9..].bytes().all(|b| b.is_ascii_digit()),
        "{file}"
    );
    assert_eq!(tail, format!("_{index}_{name}"), "{file}");
}

async fn echo(ws: &mut Ws, temp: &str) -> Value {
    ws.expect_where("new_message", |v| v["data"]["local_temp_id"] == temp).await["data"].clone()
}

#[tokio::test]
async fn one_file_and_ten_are_stored_named_and_served_byte_for_byte() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    let png = sample("png");
    a.send(json!({"type": "send_message", "data": {"room_id": room, "receiver_id": bob.id, "message_type": "image", "content": "Check out this image!", "local_temp_id": "one", "files_data": [file("photo 1.png", &png, "image/png")]}})).await;
    let m = echo(&mut a, "one").await;
    crate::messages::assert_message_shape(&m);
    assert_eq!((m["message_type"].as_str(), m["content"].as_str()), (Some("image"), Some("Check out this image!")));
    let f = &m["files_data"][0];
    assert_eq!(
        (f["file_name"].as_str(), f["file_size"].as_u64(), f["mime_type"].as_str(), f["duration"].clone()),
        (Some("photo 1.png"), Some(png.len() as u64), Some("image/png"), Value::Null)
    );
    let url = f["file_path"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://{}/static/chat_files/images/", s.addr)), "{url}");
    assert_name_pattern(url, ann.id, 0, "photo_1.png");
    let (status, bytes, headers) = fetch(&s, url, &bob).await;
    assert_eq!((status, bytes), (StatusCode::OK, png.clone()));
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(b.expect("new_message").await["data"]["files_data"][0]["file_path"], url);

    let exts = ["png", "jpg", "jpeg", "gif", "webp", "png", "jpg", "gif", "webp", "png"];
    let files: Vec<Value> =
        exts.iter().enumerate().map(|(i, e)| file(&format!("p{i}.{e}"), &sample(e), mime(e))).collect();
    a.send(send(room, "image", files, "ten")).await;
    let m = echo(&mut a, "ten").await;
    let list = m["files_data"].as_array().unwrap();
    assert_eq!(list.len(), 10);
    for (i, (f, ext)) in list.iter().zip(exts).enumerate() {
        let url = f["file_path"].as_str().unwrap();
        assert_name_pattern(url, ann.id, i, &format!("p{i}.{ext}"));
        assert_eq!(fetch(&s, url, &bob).await.1, sample(ext));
    }
    assert_eq!(stored_files(&s.static_dir()).len(), 11);
    s.stop().await;
}

#[tokio::test]
async fn every_category_and_type_goes_to_its_folder() {
    let s = TestServer::start().await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let docs = ["pdf", "doc", "docx", "xls", "xlsx", "txt", "zip", "rar", "png"];
    let files: Vec<Value> = docs.iter().map(|e| file(&format!("doc.{e}"), &sample(e), mime(e))).collect();
    a.send(send(room, "file", files, "docs")).await;
    let m = echo(&mut a, "docs").await;
    for (f, ext) in m["files_data"].as_array().unwrap().iter().zip(docs) {
        let folder = if ext == "png" { "images" } else { "files" };
        assert!(f["file_path"].as_str().unwrap().contains(&format!("/chat_files/{folder}/")), "{ext}: {f}");
    }
    let mut mp3 = file("voice_message.mp3", &sample("mp3"), "audio/mpeg");
    mp3["duration"] = json!(30);
    let mut wav = file("note.wav", &sample("wav"), "audio/x-wav");
    wav["duration"] = json!(2.5);
    a.send(send(room, "voice", vec![mp3], "voice")).await;
    let v = echo(&mut a, "voice").await;
    assert_eq!(
        (v["message_type"].as_str(), v["duration"].as_f64(), v["files_data"][0]["duration"].as_f64()),
        (Some("voice"), Some(30.0), Some(30.0))
    );
    assert!(v["files_data"][0]["file_path"].as_str().unwrap().contains("/chat_files/voices/"));
    a.send(send(room, "voice", vec![wav], "wav")).await;
    assert_eq!(echo(&mut a, "wav").await["duration"].as_f64(), Some(2.5));
    // A data: URL prefix is tolerated.
    let mut prefixed = file("d.png", &sample("png"), "image/png");
    prefixed["file_data"] = json!(format!("data:image/png;base64,{}", prefixed["file_data"].as_str().unwrap()));
    a.send(send(room, "image", vec![prefixed], "prefixed")).await;
    echo(&mut a, "prefixed").await;
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &ann.token).await;
    assert_eq!(page.json["messages"][1]["duration"].as_f64(), Some(30.0), "stored, not only echoed");
    s.stop().await;
}

#[tokio::test]
async fn every_bad_attachment_is_refused_and_leaves_nothing_behind() {
    let s = TestServer::start().await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let png = sample("png");
    let good = file("ok.png", &png, "image/png");
    let big = "A".repeat(((10 * 1024 * 1024 + 3) / 3) * 4 + 8);
    let mut too_big = file("big.png", &png, "image/png");
    too_big["file_data"] = json!(big);
    too_big["file_size"] = json!(10 * 1024 * 1024 + 6);
    let mut size_mismatch = file("s.png", &png, "image/png");
    size_mismatch["file_size"] = json!(png.len() + 1);
    let mut bad_b64 = file("b.png", &png, "image/png");
    bad_b64["file_data"] = json!("iVBORw0KGgo*&^%");
    let mut voice_no_duration = file("v.mp3", &sample("mp3"), "audio/mpeg");
    voice_no_duration["duration"] = Value::Null;
    let eleven: Vec<Value> = (0..11).map(|i| file(&format!("{i}.png"), &png, "image/png")).collect();
    let cases: Vec<(&str, Vec<Value>, &str)> = vec![
        (
            "image",
            vec![file("x.bmp", &png, "image/bmp")],
            "File type not allowed. Allowed types: image/jpeg, image/png, image/gif, image/webp",
        ),
        ("image", vec![file("x.pdf", &sample("pdf"), "application/pdf")], "File type not allowed"),
        ("image", vec![file("x.jpg", &png, "image/png")], "extension"),
        ("image", vec![file("x.jpg", &png, "image/jpeg")], "does not match"),
        ("file", vec![file("fake.pdf", b"just some text pretending", "application/pdf")], "does not match"),
        ("file", vec![file("t.txt", b"nul\0inside", "text/plain")], "does not match"),
        ("image", vec![good.clone(), size_mismatch], "size"),
        ("image", vec![too_big], "File too large. Maximum size: 10.0MB"),
        ("image", vec![good.clone(), bad_b64], "base64"),
        ("image", vec![], "files"),
        ("image", eleven, "Too many files"),
        ("voice", vec![voice_no_duration], "Duration"),
        ("voice", vec![file("x.png", &png, "image/png")], "File type not allowed"),
        ("image", vec![file("../../etc/passwd.png", &png, "image/png"), file("a\0b.png", &png, "image/png")], "name"),
        ("image", vec![file("a\u{7}b.png", &png, "image/png")], "name"),
        ("image", vec![file("...", &png, "image/png")], "name"),
        ("image", vec![good.clone(), file("e.png", b"", "image/png")], ""),
    ];
    for (i, (kind, files, expected)) in cases.into_iter().enumerate() {
        let temp = format!("bad{i}");
        a.send(send(room, kind, files, &temp)).await;
        let e = a.expect("error").await;
        assert_eq!(e["local_temp_id"].as_str(), Some(temp.as_str()), "case {i}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(expected), "case {i}: {message:?} lacks {expected:?}");
        assert!(stored_files(&s.static_dir()).is_empty(), "case {i} left files");
        assert_eq!(message_rows(&s).await, 0, "case {i} stored a row");
    }
    // Slashes are reduced to the last path component, not refused.
    a.send(send(room, "image", vec![file("dir/sub\\pic.png", &png, "image/png")], "slashes")).await;
    let m = echo(&mut a, "slashes").await;
    assert!(url_path(m["files_data"][0]["file_path"].as_str().unwrap()).ends_with("_0_pic.png"));
    s.stop().await;
}

#[tokio::test]
async fn a_300_character_name_is_stored_shortened_to_100_with_its_extension() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let png = sample("png");
    let long = format!("{}.png", "n".repeat(300));
    a.send(send(room, "image", vec![file(&long, &png, "image/png")], "long")).await;
    let m = echo(&mut a, "long").await;
    let f = &m["files_data"][0];
    let url = f["file_path"].as_str().unwrap();
    let stored = url_path(url).rsplit('/').next().unwrap();
    let (_, name) = stored.split_once("_0_").expect("the index precedes the name");
    assert!(name.len() <= 100 && name.ends_with(".png"), "{name}");
    assert_name_pattern(url, ann.id, 0, &format!("{}.png", "n".repeat(96)));
    let (status, bytes, headers) = fetch(&s, url, &bob).await;
    assert_eq!((status, bytes), (StatusCode::OK, png));
    assert_eq!(headers["content-type"], "image/png");
    let shown = f["file_name"].as_str().unwrap();
    assert!(shown.chars().count() <= 255 && shown.ends_with("nnn.png"), "{shown}");
    assert_eq!(stored_files(&s.static_dir()).len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn file_names_are_shown_without_bidi_and_format_characters() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    // Shown with U+202E it reads "invoice\u{202E}gnp.pdf": a PNG passing for a PDF.
    let raw = "\u{FEFF}invoice\u{200B}\u{2066}\u{202E}fdp.png";
    a.send(send(room, "image", vec![file(raw, &sample("png"), "image/png")], "bidi")).await;
    let is_bidi_or_format = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200F}' | '\u{061C}' | '\u{FEFF}' | '\u{00AD}' | '\u{2060}'..='\u{2064}');
    let echoed = echo(&mut a, "bidi").await;
    let received = b.expect("new_message").await["data"].clone();
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    for (who, m) in [("echo", &echoed), ("receiver", &received), ("REST", &page.json["messages"][0])] {
        let shown = m["files_data"][0]["file_name"].as_str().unwrap();
        assert!(!shown.chars().any(is_bidi_or_format), "{who}: {shown:?}");
        assert_eq!(shown, "invoicefdp.png", "{who}");
    }
    assert!(url_path(echoed["files_data"][0]["file_path"].as_str().unwrap()).ends_with("_0__invoice___fdp.png"));
    s.stop().await;
}

#[tokio::test]
async fn deleting_a_message_removes_its_files() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    a.send(send(
        room,
        "file",
        vec![file("a.pdf", &sample("pdf"), "application/pdf"), file("b.png", &sample("png"), "image/png")],
        "del",
    ))
    .await;
    let m = echo(&mut a, "del").await;
    assert_eq!(stored_files(&s.static_dir()).len(), 2);
    let url = m["files_data"][0]["file_path"].as_str().unwrap().to_owned();
    let id = m["id"].as_i64().unwrap();
    let r = s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!((r.status, r.json["files_data"].clone()), (StatusCode::OK, Value::Null));
    assert!(stored_files(&s.static_dir()).is_empty());
    assert_eq!(fetch(&s, &url, &bob).await.0, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn files_no_message_uses_are_swept_at_start() {
    let s = TestServer::start().await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let png = sample("png");
    a.send(send(room, "image", vec![file("kept.png", &png, "image/png")], "kept")).await;
    let kept = echo(&mut a, "kept").await["files_data"][0]["file_path"].as_str().unwrap().to_owned();
    a.close().await;
    let dir = s.static_dir();
    // What a crash between linking a message's files and its commit leaves,
    // and a thumbnail whose image is gone.
    let stray = dir.join("chat_files/files/user_1_20240101_120000_0_lost.pdf");
    std::fs::write(&stray, sample("pdf")).unwrap();
    let stray_thumb = dir.join("chat_files/thumbnails/user_1_20240101_120000_0_gone.png.jpg");
    std::fs::create_dir_all(stray_thumb.parent().unwrap()).unwrap();
    std::fs::write(&stray_thumb, b"\xFF\xD8\xFF").unwrap();
    let s = s.restart().await;
    assert!(!stray.exists() && !stray_thumb.exists(), "orphans removed");
    let kept_path = dir.join(url_path(&kept).split("/static/").nth(1).unwrap());
    assert!(kept_path.exists(), "a file a message uses stays");
    s.stop().await;
}
