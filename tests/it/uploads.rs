//! Uploads over HTTP (SPEC section 11): a raw body streamed to disk, the
//! checks of SPEC 4 once the last byte is in, `send_message` with
//! `upload_id` (its uploader only, once), tus resume after a cut, expiry.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::attachments::sample;
use crate::support::{Reply, TestServer, TestUser, Ws};

async fn upload(s: &TestServer, who: &TestUser, name: &str, mime: &str, bytes: &[u8]) -> Reply {
    let len = bytes.len().to_string();
    s.raw_with(
        Method::POST,
        "/api/chat/uploads",
        Some(&who.token),
        Some(mime),
        bytes.to_vec(),
        &[("x-file-name", name), ("content-length", &len)],
    )
    .await
}

/// Every file under the data dir's uploads folder.
fn upload_files(s: &TestServer) -> Vec<String> {
    let dir = s.dir.path().join("data/uploads");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

async fn send_uploads(ws: &mut Ws, room: i64, kind: &str, files: Value, temp: &str) -> Value {
    ws.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": kind, "content": "", "local_temp_id": temp, "files_data": files}})).await;
    loop {
        let frame = ws.next().await.expect("a frame");
        let own = frame["data"]["local_temp_id"] == temp || frame["local_temp_id"] == temp;
        if own && (frame["type"] == "new_message" || frame["type"] == "error") {
            return frame;
        }
    }
}

async fn fetch(s: &TestServer, url: &str) -> (StatusCode, Vec<u8>) {
    let local = url.strip_prefix(&format!("http://{}", s.addr)).unwrap_or(url);
    let r = s.raw(Method::GET, local, None, None, Vec::new()).await;
    (r.status, r.body.to_vec())
}

#[tokio::test]
async fn an_upload_is_used_by_one_message_of_its_uploader_once() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    let mut png = sample("png");
    png.extend((0..200_000u32).map(|i| i as u8));
    let r = upload(&s, &ann, "Trip%20photo.png", "image/png", &png).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json["upload_id"].as_str().expect("id").to_owned();
    assert_eq!(
        (r.json["file_name"].clone(), r.json["file_size"].clone(), r.json["mime_type"].clone()),
        (json!("Trip photo.png"), json!(png.len()), json!("image/png"))
    );
    assert!(r.json["expires_at"].as_str().and_then(chatd::time::parse_rfc3339_ms).is_some());
    assert_eq!(upload_files(&s), std::slice::from_ref(&id));

    // Bob cannot use ann's upload.
    let theirs = send_uploads(&mut b, room, "image", json!([{"upload_id": id}]), "b1").await;
    assert_eq!(theirs["type"], "error", "{theirs}");
    // Ann can, once.
    let sent = send_uploads(&mut a, room, "image", json!([{"upload_id": id}]), "a1").await;
    assert_eq!(sent["type"], "new_message", "{sent}");
    let f = &sent["data"]["files_data"][0];
    assert_eq!((f["file_name"].clone(), f["file_size"].clone()), (json!("Trip photo.png"), json!(png.len())));
    let (status, bytes) = fetch(&s, f["file_path"].as_str().expect("url")).await;
    assert_eq!((status, bytes == png), (StatusCode::OK, true), "the exact bytes");
    assert_eq!(upload_files(&s), Vec::<String>::new(), "the upload's own file is gone once used");
    let again = send_uploads(&mut a, room, "image", json!([{"upload_id": id}]), "a2").await;
    assert_eq!(again["type"], "error");
    // A re-send of the same message (same temp id, after a reconnect) is
    // answered with the original, as for base64 files.
    let retry = send_uploads(&mut a, room, "image", json!([{"upload_id": id}]), "a1").await;
    assert_eq!(
        (retry["type"].clone(), retry["data"]["id"].clone()),
        (json!("new_message"), sent["data"]["id"].clone()),
        "{retry}"
    );
    // An image upload does not make a voice message, nor mixes with base64.
    let pdf = sample("pdf");
    let doc = upload(&s, &ann, "r.pdf", "application/pdf", &pdf).await.json["upload_id"].clone();
    let wrong = send_uploads(&mut a, room, "image", json!([{"upload_id": doc}]), "a3").await;
    assert!(wrong["message"].as_str().is_some_and(|m| m.contains("File type not allowed")), "{wrong}");
    let ok = send_uploads(&mut a, room, "file", json!([{"upload_id": doc}]), "a4").await;
    assert_eq!(ok["type"], "new_message", "{ok}");
    s.stop().await;
}

#[tokio::test]
async fn a_failing_upload_leaves_nothing_behind() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let pdf = sample("pdf");
    let cases: [(&str, &str, Vec<u8>, StatusCode); 5] = [
        ("a.png", "image/png", pdf.clone(), StatusCode::UNPROCESSABLE_ENTITY),
        ("a.exe", "application/x-msdownload", pdf.clone(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("a.jpg", "image/png", sample("png"), StatusCode::UNPROCESSABLE_ENTITY),
        ("a.txt", "text/plain", vec![b'a', 0, b'b'], StatusCode::UNPROCESSABLE_ENTITY),
        ("big.png", "image/png", vec![0x89; 10 * 1024 * 1024 + 1], StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (name, mime, bytes, want) in cases {
        let r = upload(&s, &ann, name, mime, &bytes).await;
        assert_eq!(r.status, want, "{name}: {}", r.text());
        assert!(
            r.json["detail"].as_str().is_some_and(|d| d.starts_with(name.split('.').next().unwrap_or(name))),
            "{}",
            r.text()
        );
        assert_eq!(upload_files(&s), Vec::<String>::new(), "{name}");
    }
    let no_name = s.raw(Method::POST, "/api/chat/uploads", Some(&ann.token), Some("image/png"), sample("png")).await;
    assert_eq!(no_name.status, StatusCode::BAD_REQUEST);
    let no_auth = s
        .raw_with(
            Method::POST,
            "/api/chat/uploads",
            None,
            Some("image/png"),
            sample("png"),
            &[("x-file-name", "a.png")],
        )
        .await;
    assert_eq!(no_auth.status, StatusCode::UNAUTHORIZED);
    assert_eq!(upload_files(&s), Vec::<String>::new());
    s.stop().await;
}

/// Sends a PATCH whose body stops halfway, then drops the connection.
async fn cut_patch(s: &TestServer, who: &TestUser, id: &str, offset: usize, rest: &[u8]) {
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.expect("connect");
    let head = format!(
        "PATCH /api/chat/uploads/{id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        who.token,
        rest.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    tcp.write_all(&rest[..rest.len() / 2]).await.expect("half");
    tcp.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tcp);
}

async fn offset(s: &TestServer, who: &TestUser, id: &str) -> Option<usize> {
    let r = s
        .raw_with(
            Method::HEAD,
            &format!("/api/chat/uploads/{id}"),
            Some(&who.token),
            None,
            Vec::new(),
            &[("tus-resumable", "1.0.0")],
        )
        .await;
    if r.status != StatusCode::OK {
        return None;
    }
    assert_eq!(r.headers["tus-resumable"], "1.0.0");
    r.headers.get("upload-offset").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_cut_upload_resumes_to_the_exact_bytes() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut mp3 = sample("mp3");
    mp3.extend((0..3_000_000u32).map(|i| (i * 31 % 251) as u8));
    let total = mp3.len().to_string();
    // Create with the first 1,000 bytes.
    let r = s
        .raw_with(
            Method::POST,
            "/api/chat/uploads",
            Some(&ann.token),
            Some("audio/mpeg"),
            mp3[..1000].to_vec(),
            &[("x-file-name", "talk.mp3"), ("upload-length", &total), ("tus-resumable", "1.0.0")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json["upload_id"].as_str().expect("id").to_owned();
    assert_eq!(r.headers["location"], format!("/api/chat/uploads/{id}").as_str());
    assert_eq!(r.headers["upload-offset"], "1000");
    assert_eq!(offset(&s, &ann, &id).await, Some(1000));
    assert_eq!(offset(&s, &bob, &id).await, None, "another user's upload does not exist");
    // A PATCH at the wrong offset, or of the wrong type, changes nothing.
    let patch = |at: usize, ct: &'static str, body: Vec<u8>| {
        let (s, token, id) = (&s, ann.token.clone(), id.clone());
        async move {
            let at = at.to_string();
            s.raw_with(
                Method::PATCH,
                &format!("/api/chat/uploads/{id}"),
                Some(&token),
                Some(ct),
                body,
                &[("upload-offset", &at), ("tus-resumable", "1.0.0")],
            )
            .await
        }
    };
    assert_eq!(
        patch(999, "application/offset+octet-stream", mp3[999..2000].to_vec()).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(patch(1000, "audio/mpeg", mp3[1000..2000].to_vec()).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(offset(&s, &ann, &id).await, Some(1000));
    // The connection drops halfway through the rest: what arrived stays.
    cut_patch(&s, &ann, &id, 1000, &mp3[1000..]).await;
    // The server notices the cut when the body breaks off; until then the
    // upload is busy (409), as a client that resumes too early learns.
    let mut done = None;
    for _ in 0..100 {
        let at = offset(&s, &ann, &id).await.expect("an offset");
        let r = patch(at, "application/offset+octet-stream", mp3[at..].to_vec()).await;
        if r.status != StatusCode::CONFLICT {
            assert!(at > 1000 && at < mp3.len(), "resumed from what arrived: {at}");
            done = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = done.expect("the cut request ended");
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.text());
    assert_eq!(done.headers["upload-offset"], total.as_str());
    let mut a = s.ws(&ann).await;
    let sent = send_uploads(&mut a, room, "voice", json!([{"upload_id": id, "duration": 12.5}]), "v1").await;
    assert_eq!(sent["type"], "new_message", "{sent}");
    assert_eq!(sent["data"]["duration"], 12.5);
    let (status, bytes) = fetch(&s, sent["data"]["files_data"][0]["file_path"].as_str().expect("url")).await;
    assert_eq!((status, bytes.len(), bytes == mp3), (StatusCode::OK, mp3.len(), true), "the exact bytes");
    s.stop().await;
}

#[tokio::test]
async fn a_resumed_upload_that_fails_its_checks_is_removed() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let fake = sample("pdf");
    let total = fake.len().to_string();
    let r = s
        .raw_with(
            Method::POST,
            "/api/chat/uploads",
            Some(&ann.token),
            Some("image/png"),
            Vec::new(),
            &[("x-file-name", "a.png"), ("upload-length", &total)],
        )
        .await;
    assert_eq!((r.status, r.headers["upload-offset"].to_str().ok()), (StatusCode::CREATED, Some("0")));
    let id = r.json["upload_id"].as_str().expect("id").to_owned();
    let done = s
        .raw_with(
            Method::PATCH,
            &format!("/api/chat/uploads/{id}"),
            Some(&ann.token),
            Some("application/offset+octet-stream"),
            fake,
            &[("upload-offset", "0")],
        )
        .await;
    assert_eq!(done.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", done.text());
    assert_eq!(offset(&s, &ann, &id).await, None);
    assert_eq!(upload_files(&s), Vec::<String>::new());
    s.stop().await;
}

#[tokio::test]
async fn unused_uploads_expire() {
    let s = TestServer::start_with(|c| c.upload_ttl = Duration::from_secs(1)).await;
    let ann = s.user("ann").await;
    let r = upload(&s, &ann, "a.png", "image/png", &sample("png")).await;
    let id = r.json["upload_id"].as_str().expect("id").to_owned();
    assert_eq!(upload_files(&s), std::slice::from_ref(&id));
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if offset(&s, &ann, &id).await.is_none() && upload_files(&s).is_empty() {
            gone = true;
            break;
        }
    }
    assert!(gone, "an expired upload and its file are removed");
    s.stop().await;
}

#[tokio::test]
async fn an_upload_past_the_storage_quota_is_refused_with_422_and_leaves_nothing() {
    let png = sample("png");
    let quota = png.len() as u64 * 3 / 2;
    let s = TestServer::start_limited(|c| c.limits.user_quota_bytes = Some(quota)).await;
    let ann = s.user("ann").await;
    let first = upload(&s, &ann, "a.png", "image/png", &png).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let kept = upload_files(&s);
    // Pending uploads count against the quota.
    let second = upload(&s, &ann, "b.png", "image/png", &[png.as_slice(), &png].concat()).await;
    assert_eq!(second.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", second.text());
    assert!(second.text().contains("Storage quota exceeded"), "{}", second.text());
    assert_eq!(upload_files(&s), kept, "the refused upload left nothing on disk");
    s.stop().await;
}
