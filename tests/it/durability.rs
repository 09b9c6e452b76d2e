//! The built binary as a child process: killed with SIGKILL mid-stream and
//! restarted on the same data directory, it still has every message whose
//! echo was received (the echo means committed, with synchronous=FULL).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::SinkExt;
use hyper::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::WAIT;

struct Chatd {
    child: Child,
    addr: String,
}

impl Chatd {
    fn spawn(dir: &std::path::Path, addr: &str) -> Chatd {
        let child = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["serve", "--addr", addr])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--static-dir")
            .arg(dir.join("static"))
            .env("CHAT_DB_SYNC", "full")
            // A flood of 50 messages in flight is a benchmark, not a person.
            .env("CHAT_RATE_LIMITS", "off")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chatd");
        Chatd { child, addr: addr.to_owned() }
    }

    /// Waits until /healthz answers (bounded).
    async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(&self.addr).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer).await;
                if answer.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "chatd did not come up");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Chatd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("in time").expect("read");
    let text = String::from_utf8_lossy(&answer);
    let status = text[9..12].parse::<u16>().expect("status");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Bodies are small and unchunked only when content-length is set; handle chunked too.
    let json = serde_json::from_str(body).unwrap_or_else(|_| {
        let joined: String = body.lines().filter(|l| l.starts_with('{') || l.starts_with('[')).collect();
        serde_json::from_str(&joined).unwrap_or(serde_json::Value::Null)
    });
    (StatusCode::from_u16(status).expect("status code"), json)
}

/// Registers ann and bob over HTTP and opens their direct room: their
/// tokens and the room id.
async fn ann_and_bob(addr: &str) -> (Vec<String>, i64) {
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for name in ["ann", "bob"] {
        let body = json!({"name": name, "email": format!("{name}@test.io"), "password": "password123"}).to_string();
        let (status, reply) = http(addr, "POST", "/api/auth/register", None, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        tokens.push(reply["access_token"].as_str().expect("token").to_owned());
        ids.push(reply["user"]["id"].as_i64().expect("id"));
    }
    let (_, room) =
        http(addr, "POST", "/api/chat/rooms", Some(&tokens[0]), &json!({"receiver_id": ids[1]}).to_string()).await;
    let room = room["id"].as_i64().expect("room");
    (tokens, room)
}

fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

#[tokio::test]
async fn every_echoed_message_survives_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = free_addr();
    let server = Chatd::spawn(dir.path(), &addr);
    server.ready().await;
    let (tokens, room) = ann_and_bob(&addr).await;

    let url = format!("ws://{addr}/api/chat/ws?token={}", tokens[0]);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    // Keep 50 messages in flight; kill the server once 300 echoes are in.
    let mut echoed = Vec::new();
    let mut sent = 0;
    let mut server = Some(server);
    while echoed.len() < 300 {
        while sent - echoed.len() < 50 {
            let frame = json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": format!("m{sent}"), "local_temp_id": format!("t{sent}")}});
            ws.send(WsMessage::text(frame.to_string())).await.expect("send");
            sent += 1;
        }
        let frame = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await.expect("echo in time");
        if let Some(Ok(WsMessage::Text(t))) = frame {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
            if v["type"] == "new_message" {
                echoed.push(v["data"]["id"].as_i64().expect("id"));
            }
        }
    }
    drop(server.take()); // SIGKILL with messages still in flight
    let restarted = Chatd::spawn(dir.path(), &addr);
    restarted.ready().await;
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = http(
            &addr,
            "GET",
            &format!("/api/chat/rooms/{room}/messages?after_id={after}&limit=100"),
            Some(&tokens[1]),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let messages = page["messages"].as_array().expect("messages");
        stored.extend(messages.iter().map(|m| m["id"].as_i64().expect("id")));
        after = *stored.last().unwrap_or(&after);
        if page["has_more"] != true {
            break;
        }
    }
    for id in &echoed {
        assert!(stored.contains(id), "echoed message {id} was lost");
    }
    assert!(stored.len() >= echoed.len());
}

#[tokio::test]
async fn sigterm_drains_checkpoints_and_exits_zero() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = free_addr();
    let mut server = Chatd::spawn(dir.path(), &addr);
    server.ready().await;
    let body = json!({"name": "ann", "email": "ann@test.io", "password": "password123"}).to_string();
    assert_eq!(http(&addr, "POST", "/api/auth/register", None, &body).await.0, StatusCode::CREATED);
    let killed = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "chatd did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    let wal = dir.path().join("data/chatd.sqlite3-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the WAL was checkpointed");
}

#[tokio::test]
async fn user_add_and_token_subcommands_make_a_working_login() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--static-dir")
            .arg(dir.path().join("static"))
            .output()
            .expect("run chatd");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["migrate"]).contains("schema version"));
    let added = run(&["user", "add", "--name", "Ann", "--email", "Ann@Test.io"]);
    let password = added.lines().find_map(|l| l.strip_prefix("password: ")).expect("generated password").to_owned();
    let token = run(&["token", "--email", "ann@test.io"]).trim().to_owned();
    let addr = free_addr();
    let server = Chatd::spawn(dir.path(), &addr);
    server.ready().await;
    let (status, me) = http(&addr, "GET", "/api/auth/me", Some(&token), "").await;
    assert_eq!((status, me["email"].as_str()), (StatusCode::OK, Some("ann@test.io")));
    let login = json!({"email": "ann@test.io", "password": password}).to_string();
    assert_eq!(http(&addr, "POST", "/api/auth/login", None, &login).await.0, StatusCode::OK);
    // `doctor` beside a running server: every check answers, none fails.
    let report = run(&["doctor"]);
    for name in ["data dir", "static dir", "disk", "open files", "clock", "secret", "database"] {
        assert!(report.lines().any(|l| l.contains(name) && !l.starts_with("FAIL")), "{name}: {report}");
    }
    assert!(report.contains("integrity ok"), "{report}");
}

#[tokio::test]
async fn doctor_fails_on_a_broken_database() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("data")).expect("dir");
    std::fs::write(dir.path().join("data/chatd.sqlite3"), vec![0x55; 8192]).expect("garbage");
    let out = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["doctor", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--static-dir")
        .arg(dir.path().join("static"))
        .output()
        .expect("run chatd");
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.lines().any(|l| l.starts_with("FAIL") && l.contains("database")), "{report}");
}

#[tokio::test]
async fn subcommands_beside_a_running_server_leave_its_presence_alone() {
    let s = crate::support::TestServer::start().await;
    let (ann, bob, _room) = s.pair("ann", "bob").await;
    let ws = s.ws(&ann).await;
    let mut seen = 0;
    for _ in 0..100 {
        seen = s.get("/api/chat/online-users", &bob.token).await.json["total"].as_i64().unwrap_or(0);
        if seen == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 1, "ann is online");
    let out = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["token", "--email", "ann@test.io"])
        .arg("--data-dir")
        .arg(&s.state.config.data_dir)
        .arg("--static-dir")
        .arg(&s.state.config.static_dir)
        .output()
        .expect("run chatd token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(s.get("/api/auth/me", &token).await.json["id"], ann.id, "the printed token works");
    let after = s.get("/api/chat/online-users", &bob.token).await;
    assert_eq!(after.json["total"], 1, "chatd token marked nobody offline: {}", after.text());
    ws.close().await;
    s.stop().await;
}

#[tokio::test]
async fn a_config_file_sets_what_flags_and_environment_leave() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("chatd.toml");
    let data = dir.path().join("from-file");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\nstatic_dir = {:?}\n",
            data.display().to_string(),
            dir.path().join("static").display().to_string()
        ),
    )
    .expect("write");
    let out =
        Command::new(env!("CARGO_BIN_EXE_chatd")).args(["--config"]).arg(&file).arg("migrate").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(data.join("chatd.sqlite3").exists(), "the file's data_dir was used");
    // A flag beats the file.
    let flag = dir.path().join("from-flag");
    let out = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&flag)
        .arg("migrate")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(flag.join("chatd.sqlite3").exists());
    std::fs::write(&file, "data_dri = \"x\"\n").expect("write");
    let out =
        Command::new(env!("CARGO_BIN_EXE_chatd")).args(["--config"]).arg(&file).arg("migrate").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting `data_dri`"));
}

/// What the load was told, to be checked after the kills.
#[derive(Default)]
struct Acked {
    /// Echoed or answered 201: id → (content, the rel path of its file).
    messages: std::collections::HashMap<i64, (String, Option<String>)>,
    /// Deletes answered 200.
    deleted: std::collections::HashSet<i64>,
    /// Deletes sent (answered or not: a kill may have beaten the answer).
    deleting: std::collections::HashSet<i64>,
}

type Shared = std::sync::Arc<std::sync::Mutex<Acked>>;

fn rel_path(url: &str) -> Option<String> {
    url.split('?').next().and_then(|u| u.split("/static/").nth(1)).map(str::to_owned)
}

fn pdf(seed: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    bytes.extend((0..40_000).map(|i| ((i * 31 + seed * 7) % 251) as u8));
    bytes
}

/// ann's pipeline: 16 in flight, every third message with a 40 KB file in
/// base64; until killed.
async fn base64_load(addr: &str, token: &str, room: i64, cycle: usize, acked: Shared) {
    use base64::Engine;
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/chat/ws?token={token}")).await
    else {
        return std::future::pending().await;
    };
    let (mut sent, mut echoed) = (0, 0);
    let mut contents = std::collections::HashMap::new();
    loop {
        while sent - echoed < 16 {
            let temp = format!("c{cycle}-{sent}");
            let content = format!("cycle {cycle} message {sent}");
            let frame = if sent % 3 == 0 {
                let data = base64::engine::general_purpose::STANDARD.encode(pdf(cycle * 1000 + sent));
                json!({"type": "send_message", "data": {"room_id": room, "message_type": "file", "content": content, "local_temp_id": temp, "files_data": [{"file_data": data, "file_name": "n.pdf", "file_size": 40_015, "mime_type": "application/pdf"}]}})
            } else {
                json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": content, "local_temp_id": temp}})
            };
            contents.insert(temp, content);
            if ws.send(WsMessage::text(frame.to_string())).await.is_err() {
                return std::future::pending().await;
            }
            sent += 1;
        }
        let Ok(Some(Ok(WsMessage::Text(t)))) = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await
        else {
            return std::future::pending().await;
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
        let temp = v["data"]["local_temp_id"].as_str().unwrap_or_default();
        if v["type"] == "new_message" && contents.contains_key(temp) {
            let id = v["data"]["id"].as_i64().expect("id");
            let file = v["data"]["files_data"][0]["file_path"].as_str().and_then(rel_path);
            acked.lock().expect("lock").messages.insert(id, (contents[temp].clone(), file));
            echoed += 1;
        }
    }
}

/// bob, beside it: an HTTP upload then a message that uses it, and every
/// other round a delete of one of his acknowledged messages; until killed.
async fn upload_load(addr: &str, token: &str, room: i64, cycle: usize, acked: Shared) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/chat/ws?token={token}")).await
    else {
        return std::future::pending().await;
    };
    for round in 0.. {
        let body = pdf(cycle * 1000 + 500 + round);
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { break };
        let head = format!(
            "POST /api/chat/uploads HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/pdf\r\nx-file-name: up.pdf\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
            break;
        }
        let mut answer = Vec::new();
        if stream.read_to_end(&mut answer).await.is_err() || !answer.starts_with(b"HTTP/1.1 201") {
            break;
        }
        let text = String::from_utf8_lossy(&answer);
        let reply: serde_json::Value =
            serde_json::from_str(text.split_once("\r\n\r\n").map_or("", |(_, b)| b)).unwrap_or_default();
        let Some(upload) = reply["upload_id"].as_str() else { break };
        let temp = format!("u{cycle}-{round}");
        let content = format!("cycle {cycle} upload {round}");
        let frame = json!({"type": "send_message", "data": {"room_id": room, "message_type": "file", "content": content, "local_temp_id": temp, "files_data": [{"upload_id": upload}]}});
        if ws.send(WsMessage::text(frame.to_string())).await.is_err() {
            break;
        }
        loop {
            let Ok(Some(Ok(WsMessage::Text(t)))) =
                tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await
            else {
                return std::future::pending().await;
            };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
            if v["type"] == "new_message" && v["data"]["local_temp_id"] == temp.as_str() {
                let id = v["data"]["id"].as_i64().expect("id");
                let file = v["data"]["files_data"][0]["file_path"].as_str().and_then(rel_path);
                acked.lock().expect("lock").messages.insert(id, (content.clone(), file));
                break;
            }
        }
        if round % 2 == 1 {
            let victim = {
                let mut acked = acked.lock().expect("lock");
                let victim = acked
                    .messages
                    .iter()
                    .filter(|(id, (c, _))| c.contains("upload") && !acked.deleting.contains(id))
                    .map(|(id, _)| *id)
                    .min();
                acked.deleting.extend(victim);
                victim
            };
            if let Some(victim) = victim {
                let (status, _) = http(addr, "DELETE", &format!("/api/chat/messages/{victim}"), Some(token), "").await;
                if status == StatusCode::OK {
                    acked.lock().expect("lock").deleted.insert(victim);
                }
            }
        }
    }
    std::future::pending().await
}

/// Files in chat_files/ against the files the database's messages use, and
/// upload files against upload rows: equal (no leak, nothing missing).
fn assert_no_leaked_file(dir: &std::path::Path) {
    let data = dir.join("data");
    let conn = rusqlite::Connection::open(chatd::store::db_path(&data)).expect("open");
    let referenced = chatd::store::reads::referenced_files(&conn).expect("referenced");
    let mut on_disk = std::collections::HashSet::new();
    for folder in ["images", "files", "voices"] {
        let Ok(entries) = std::fs::read_dir(dir.join("static/chat_files").join(folder)) else { continue };
        for entry in entries {
            let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".tmp"), "a temporary file survived the start: {name}");
            on_disk.insert(format!("chat_files/{folder}/{name}"));
        }
    }
    let leaked: Vec<_> = on_disk.difference(&referenced).take(5).collect();
    let missing: Vec<_> = referenced.difference(&on_disk).take(5).collect();
    assert!(leaked.is_empty() && missing.is_empty(), "leaked {leaked:?}, missing {missing:?}");
    let rows: std::collections::HashSet<String> =
        chatd::store::reads::upload_ids(&conn).expect("uploads").into_iter().collect();
    if let Ok(entries) = std::fs::read_dir(data.join("uploads")) {
        for entry in entries {
            let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(rows.contains(&name), "an upload file without its row: {name}");
        }
    }
}

#[tokio::test]
async fn thirty_sigkills_under_mixed_load_lose_nothing_acknowledged_and_leak_no_file() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = free_addr();
    let mut server = Chatd::spawn(dir.path(), &addr);
    server.ready().await;
    let (tokens, room) = ann_and_bob(&addr).await;
    let acked = Shared::default();
    for cycle in 0..30 {
        // Kill at a different point of the load each time.
        let after = Duration::from_millis(300 + (cycle as u64 * 37) % 500);
        tokio::select! {
            () = base64_load(&addr, &tokens[0], room, cycle, acked.clone()) => {}
            () = upload_load(&addr, &tokens[1], room, cycle, acked.clone()) => {}
            () = tokio::time::sleep(after) => {}
        }
        drop(server); // SIGKILL, with writes, files and uploads in flight
        server = Chatd::spawn(dir.path(), &addr);
        server.ready().await;
        assert_no_leaked_file(dir.path());
    }

    let mut stored = std::collections::HashMap::new();
    let mut after = 0;
    loop {
        let path = format!("/api/chat/rooms/{room}/messages?after_id={after}&limit=100");
        let (status, page) = http(&addr, "GET", &path, Some(&tokens[1]), "").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for m in page["messages"].as_array().expect("messages") {
            after = m["id"].as_i64().expect("id");
            stored.insert(after, m.clone());
        }
        if page["has_more"] != true {
            break;
        }
    }
    let acked = acked.lock().expect("lock");
    let by_kind = |kind: &str| acked.messages.values().filter(|(c, _)| c.contains(kind)).count();
    eprintln!("acknowledged: {} base64, {} uploads", by_kind("message"), by_kind("upload"));
    assert!(by_kind("message") > 100 && by_kind("upload") > 100, "the load ran");
    assert!(!acked.deleted.is_empty(), "deletes ran");
    for (id, (content, file)) in &acked.messages {
        let m = stored.get(id).unwrap_or_else(|| panic!("acknowledged message {id} was lost"));
        if acked.deleted.contains(id) {
            assert_eq!(m["is_deleted"], true, "{id}: its delete was answered");
            continue;
        }
        if acked.deleting.contains(id) && m["is_deleted"] == true {
            continue; // the delete committed, its answer was cut by the kill
        }
        assert_eq!(m["content"], content.as_str(), "{id}");
        if let Some(file) = file {
            assert!(dir.path().join("static").join(file).is_file(), "{id}: its file {file} is gone");
        }
    }
}
