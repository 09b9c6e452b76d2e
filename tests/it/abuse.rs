//! Abuse: every limit of issue 10 against the real server. Silent and
//! half-sent connections are closed by their timeouts while a normal client
//! is served; floods of logins, messages and typing are cut without hurting
//! anyone else; revoked tokens stop working on REST and WebSocket; half-sent
//! large frames cannot take the server's memory (read from /proc of a child
//! chatd). Different client addresses are real: loopback is all of 127/8.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{TestServer, TestUser, WAIT};

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).expect("bind a loopback source address");
    tokio::time::timeout(WAIT, socket.connect(addr)).await.expect("connect in time").expect("connect")
}

/// An answer read off a raw connection.
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads one whole answer (the server closes, or `Content-Length` is met).
async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let body = serde_json::from_slice(&raw[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                return Answer { status, head, body };
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await.expect("answer in time").expect("read");
        assert!(n > 0, "closed before a whole answer: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
}

/// One request from the loopback address `from`, on its own connection.
async fn request_from(
    from: [u8; 4],
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Answer {
    let mut stream = connect_from(from, addr).await;
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: chatd\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    read_answer(&mut stream).await
}

/// Whether the server closes `stream` within `wait` (reading and dropping
/// whatever it sends first).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn login_from(from: [u8; 4], addr: SocketAddr, email: &str, password: &str) -> Answer {
    request_from(from, addr, "POST", "/api/auth/login", None, &json!({"email": email, "password": password})).await
}

#[tokio::test]
async fn silent_and_half_sent_connections_are_closed_while_others_are_served() {
    let s = TestServer::start_with(|c| {
        c.limits.header_timeout = Duration::from_secs(1);
        c.limits.body_timeout = Duration::from_secs(1);
    })
    .await;
    let mut silent = connect_from([127, 0, 0, 2], s.addr).await;
    let mut half_head = connect_from([127, 0, 0, 2], s.addr).await;
    half_head.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ").await.expect("write");
    let mut half_body = connect_from([127, 0, 0, 2], s.addr).await;
    half_body
        .write_all(b"POST /api/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"email\"")
        .await
        .expect("write");

    // Meanwhile a normal client is served at once.
    let healthy = request_from([127, 0, 0, 3], s.addr, "GET", "/healthz", None, &Value::Null).await;
    assert_eq!(healthy.status, 200);

    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "a silent connection stays open");
    assert!(closed_within(&mut half_head, Duration::from_secs(5)).await, "a half-sent head stays open");
    let timed_out = read_answer(&mut half_body).await;
    assert_eq!((timed_out.status, timed_out.body["detail"].as_str()), (408, Some("Request timed out")));
    assert!(closed_within(&mut half_body, Duration::from_secs(5)).await, "a half-sent body stays open");
    s.stop().await;
}

#[tokio::test]
async fn an_idle_keepalive_connection_lives_for_the_keepalive_timeout_not_the_header_timeout() {
    let s = TestServer::start_with(|c| {
        c.limits.header_timeout = Duration::from_secs(1);
        c.limits.keepalive_timeout = Duration::from_secs(3);
    })
    .await;
    let mut conn = connect_from([127, 0, 0, 2], s.addr).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    assert_eq!(read_answer(&mut conn).await.status, 200);
    assert!(!closed_within(&mut conn, Duration::from_millis(1800)).await, "closed by the header timeout");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    assert_eq!(read_answer(&mut conn).await.status, 200, "the kept-alive connection serves a second request");
    assert!(closed_within(&mut conn, Duration::from_secs(6)).await, "an idle keep-alive connection stays open");
    s.stop().await;
}

#[tokio::test]
async fn connections_per_address_are_capped_with_a_429() {
    let s = TestServer::start_limited(|c| c.limits.max_connections_per_ip = Some(3)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from([127, 0, 0, 5], s.addr).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        assert_eq!(read_answer(&mut stream).await.status, 200);
        held.push(stream);
    }
    let refused = request_from([127, 0, 0, 5], s.addr, "GET", "/healthz", None, &Value::Null).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("10"));
    assert_eq!(refused.body["detail"], "Too many connections from this address");
    let other = request_from([127, 0, 0, 6], s.addr, "GET", "/healthz", None, &Value::Null).await;
    assert_eq!(other.status, 200, "another address is not affected");
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let answer = request_from([127, 0, 0, 5], s.addr, "GET", "/healthz", None, &Value::Null).await;
        if answer.status == 200 {
            again = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a closed connection gives its slot back");
    let metrics = s.raw(Method::GET, "/metrics", None, None, Vec::new()).await.text();
    assert!(metrics.contains("chatd_limited_total{limit=\"connections_per_ip\"} 1"), "{metrics}");
    s.stop().await;
}

/// An upgraded connection is still a connection: hyper's HTTP task ends at
/// the upgrade, and the WebSocket must keep the address's slot (and the
/// global permit) until it closes.
#[tokio::test]
async fn a_websocket_keeps_its_connection_slot_until_it_closes() {
    let s = TestServer::start_limited(|c| c.limits.max_connections_per_ip = Some(2)).await;
    let ann = s.user("ann").await;
    let from = [127, 0, 0, 7];
    let held = || s.state.limiter.connections_per_ip.held(IpAddr::from(from));
    let open = || async {
        let url = format!("ws://{}/api/chat/ws?token={}", s.addr, ann.token);
        let stream = connect_from(from, s.addr).await;
        let (ws, _) = tokio_tungstenite::client_async(url, stream).await.expect("WebSocket");
        ws
    };
    let mut first = open().await;
    let _second = open().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(held(), 2, "both WebSockets still hold their slots after the upgrade");
    let refused = request_from(from, s.addr, "GET", "/healthz", None, &Value::Null).await;
    assert_eq!(refused.status, 429, "two open WebSockets hold both slots of the address");
    first.close(None).await.expect("close");
    drop(first);
    for _ in 0..200 {
        if held() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = request_from(from, s.addr, "GET", "/healthz", None, &Value::Null).await;
    assert_eq!(again.status, 200, "a closed WebSocket gives its slot back");
    s.stop().await;
}

#[tokio::test]
async fn a_login_flood_from_one_address_does_not_lock_out_a_real_user() {
    let s = TestServer::start_limited(|_| {}).await;
    let register = request_from(
        [127, 0, 0, 20],
        s.addr,
        "POST",
        "/api/auth/register",
        None,
        &json!({"name": "Real", "email": "real@test.io", "password": "real password"}),
    )
    .await;
    assert_eq!(register.status, 201);
    // 70 logins with unknown emails at once: without the per-address
    // throttle they fill the 64-deep hashing queue and the real user's
    // logins meet 429s.
    let flood: Vec<_> = (0..70)
        .map(|i| {
            let addr = s.addr;
            tokio::spawn(async move {
                login_from([127, 0, 0, 21], addr, &format!("nobody{i}@test.io"), "wrong password").await.status
            })
        })
        .collect();
    let mut real = Vec::new();
    for _ in 0..5 {
        real.push(login_from([127, 0, 0, 22], s.addr, "real@test.io", "real password").await.status);
    }
    let mut flood_statuses = Vec::new();
    for task in flood {
        flood_statuses.push(task.await.expect("flood task"));
    }
    assert_eq!(real, vec![200; 5], "every real login works during the flood");
    let limited = flood_statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 60, "the flood is cut at the address's allowance: {flood_statuses:?}");
    assert!(flood_statuses.iter().all(|s| *s == 401 || *s == 429), "{flood_statuses:?}");
    let one = login_from([127, 0, 0, 21], s.addr, "nobody@test.io", "x").await;
    assert_eq!(one.status, 429);
    let wait: u64 = one.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    s.stop().await;
}

#[tokio::test]
async fn wrong_passwords_make_an_account_back_off() {
    let s = TestServer::start_limited(|_| {}).await;
    let _victim = s.user("victim").await;
    // The owner logged in from home before the attack.
    assert_eq!(login_from([127, 0, 1, 200], s.addr, "victim@test.io", "password123").await.status, 200);
    // Each guess from its own address: the per-account limit is what bites.
    for i in 0..5u8 {
        let answer = login_from([127, 0, 1, i], s.addr, "victim@test.io", "not the password").await;
        assert_eq!(answer.status, 401, "guess {i}");
    }
    for i in 5..8u8 {
        let answer = login_from([127, 0, 1, i], s.addr, "victim@test.io", "not the password").await;
        assert_eq!(answer.status, 429, "guess {i}");
        let wait: u64 = answer.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(answer.body["detail"].as_str().unwrap_or("").starts_with("Too many failed logins for this account"));
    }
    // While it backs off even the right password waits; other accounts do not.
    let right = login_from([127, 0, 1, 9], s.addr, "victim@test.io", "password123").await;
    assert_eq!(right.status, 429);
    // ...except from where the owner logged in before: no lock-out by strangers.
    let home = login_from([127, 0, 1, 200], s.addr, "victim@test.io", "password123").await;
    assert_eq!(home.status, 200);
    s.user("bystander").await;
    let other = login_from([127, 0, 1, 10], s.addr, "bystander@test.io", "password123").await;
    assert_eq!(other.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn registrations_and_searches_are_throttled() {
    let s = TestServer::start_limited(|c| {
        c.limits.registrations_per_ip = chatd::config::Rate::per_hour(2);
        c.limits.searches = chatd::config::Rate::per_minute(3);
    })
    .await;
    let register = |i: u32, from: [u8; 4]| {
        let addr = s.addr;
        async move {
            let body = json!({"name": "N", "email": format!("n{i}@test.io"), "password": "password123"});
            request_from(from, addr, "POST", "/api/auth/register", None, &body).await
        }
    };
    let first = register(1, [127, 0, 2, 1]).await;
    assert_eq!(first.status, 201);
    assert_eq!(register(2, [127, 0, 2, 1]).await.status, 201);
    let third = register(3, [127, 0, 2, 1]).await;
    assert_eq!(third.status, 429);
    let wait: u64 = third.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=1800).contains(&wait), "{wait}");
    assert_eq!(register(4, [127, 0, 2, 2]).await.status, 201, "another address may register");

    let token = first.body["access_token"].as_str().expect("token").to_owned();
    for _ in 0..3 {
        assert_eq!(s.get("/api/chat/search-users?email=test", &token).await.status, StatusCode::OK);
    }
    let limited = s.get("/api/chat/search-users?email=test", &token).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    s.stop().await;
}

#[tokio::test]
async fn websocket_commands_are_rate_limited_per_user() {
    let s =
        TestServer::start_limited(|c| c.limits.ws_commands = Some(chatd::config::Rate { per_sec: 0.01, burst: 5.0 }))
            .await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut first = s.ws(&ann).await;
    let mut second = s.ws(&ann).await;
    for i in 0..10 {
        first.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": format!("m{i}"), "local_temp_id": format!("t{i}")}})).await;
    }
    let (mut echoed, mut refused) = (Vec::new(), Vec::new());
    while echoed.len() + refused.len() < 10 {
        let frame = first.next().await.expect("a frame");
        let temp = frame["data"]["local_temp_id"].as_str().or(frame["local_temp_id"].as_str()).unwrap_or("").to_owned();
        match frame["type"].as_str() {
            Some("new_message") => echoed.push(temp),
            Some("error") => {
                assert!(frame["message"].as_str().unwrap_or("").starts_with("Too many messages: slow down"), "{frame}");
                refused.push(temp);
            }
            _ => {}
        }
    }
    assert_eq!(echoed, ["t0", "t1", "t2", "t3", "t4"], "the burst goes through, in order");
    assert_eq!(refused, ["t5", "t6", "t7", "t8", "t9"], "each refusal names its message");
    // Another connection of the same user shares the bucket.
    second.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": "x", "local_temp_id": "t10"}})).await;
    let refusal = second.expect("error").await;
    assert_eq!(refusal["local_temp_id"], "t10");
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    assert_eq!(page.json["total"], 5, "only the burst was stored");
    // Bob has his own bucket.
    let mut bob_ws = s.ws(&bob).await;
    s.say(&mut bob_ws, room, "still fine").await;
    s.stop().await;
}

#[tokio::test]
async fn a_typing_flood_never_disconnects_its_victim() {
    // Rate limits off: the hub itself must hold, whatever the sender does.
    let s = TestServer::start_with(|c| c.ws_outbox = 8).await;
    let (attacker, victim, room) = s.pair("attacker", "victim").await;
    let mut victim_ws = s.ws(&victim).await;
    let mut attacker_ws = s.ws(&attacker).await;
    // The victim reads nothing while 2,000 typing events are sent at it.
    for i in 0..2000 {
        attacker_ws.send(json!({"type": "typing", "data": {"room_id": room, "is_typing": i % 2 == 0}})).await;
    }
    let message = s.say(&mut attacker_ws, room, "after the flood").await;
    let got = victim_ws.expect_where("new_message", |v| v["data"]["id"] == message["id"]).await;
    assert_eq!(got["data"]["content"], "after the flood");
    let metrics = s.raw(Method::GET, "/metrics", None, None, Vec::new()).await.text();
    assert!(metrics.contains("chatd_slow_consumers_closed_total 0"), "{metrics}");
    // (Whether typing was dropped depends on how much the kernel's socket
    // buffers took: the hub's unit test pins the rule down exactly.)
    s.stop().await;
}

#[tokio::test]
async fn repeated_typing_is_merged_and_excess_typing_dropped() {
    let s = TestServer::start_limited(|_| {}).await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut bob_ws = s.ws(&bob).await;
    let mut ann_ws = s.ws(&ann).await;
    for _ in 0..50 {
        ann_ws.send(json!({"type": "typing", "data": {"room_id": room, "is_typing": true}})).await;
    }
    s.say(&mut ann_ws, room, "done").await;
    let mut typing = 0;
    loop {
        let frame = bob_ws.next().await.expect("frame");
        match frame["type"].as_str() {
            Some("typing") => typing += 1,
            Some("new_message") => break,
            _ => {}
        }
    }
    assert_eq!(typing, 1, "fifty repeats of one state are one event");
    s.stop().await;
}

#[tokio::test]
async fn websockets_per_user_are_capped() {
    let s = TestServer::start_limited(|c| c.limits.ws_per_user = Some(2)).await;
    let ann = s.user("ann").await;
    let first = s.ws(&ann).await;
    let _second = s.ws(&ann).await;
    match s.ws_query(&format!("token={}", ann.token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.headers().contains_key("retry-after"));
        }
        Err(e) => panic!("expected 429, got {e}"),
        Ok(_) => panic!("a third WebSocket was accepted"),
    }
    first.close().await;
    let mut again = None;
    for _ in 0..100 {
        if let Ok(ws) = s.ws_query(&format!("token={}", ann.token)).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a closed WebSocket gives its slot back");
    s.stop().await;
}

/// A small PNG (its first bytes are all the server checks).
fn png(bytes: usize) -> String {
    use base64::Engine;
    let mut data = b"\x89PNG\r\n\x1a\n".to_vec();
    data.resize(bytes, 0);
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[tokio::test]
async fn the_storage_quota_refuses_files_past_it_and_frees_on_delete() {
    let s = TestServer::start_limited(|c| c.limits.user_quota_bytes = Some(1000)).await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut ws = s.ws(&ann).await;
    let send = |temp: &str| json!({"type": "send_message", "data": {"room_id": room, "message_type": "image", "content": "", "local_temp_id": temp, "files_data": [{"file_data": png(600), "file_name": "a.png", "file_size": 600, "mime_type": "image/png"}]}});
    ws.send(send("q1")).await;
    let first = ws.expect_where("new_message", |v| v["data"]["local_temp_id"] == "q1").await;
    ws.send(send("q2")).await;
    let refusal = ws.expect("error").await;
    assert_eq!(refusal["local_temp_id"], "q2");
    assert_eq!(refusal["message"], "Storage quota exceeded: each user may keep 0.0MB of attachments");
    let images = std::fs::read_dir(s.static_dir().join("chat_files/images")).expect("dir").count();
    assert_eq!(images, 1, "the refused file left nothing on disk");
    let id = first["data"]["id"].as_i64().expect("id");
    let deleted = s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(deleted.status, StatusCode::OK);
    ws.send(send("q3")).await;
    ws.expect_where("new_message", |v| v["data"]["local_temp_id"] == "q3").await;
    s.stop().await;
}

async fn change_password(s: &TestServer, user: &TestUser, current: &str, new: &str) -> crate::support::Reply {
    s.send_json(
        Method::POST,
        "/api/auth/password",
        Some(&user.token),
        json!({"current_password": current, "new_password": new}),
    )
    .await
}

#[tokio::test]
async fn a_password_change_revokes_every_earlier_token() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let mut ws = s.ws(&ann).await;
    let wrong = change_password(&s, &ann, "not it", "new password 1").await;
    assert_eq!((wrong.status, wrong.detail()), (StatusCode::UNAUTHORIZED, "Incorrect password"));
    let short = change_password(&s, &ann, "password123", "short").await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.get("/api/auth/me", &ann.token).await.status, StatusCode::OK, "refusals change nothing");

    let changed = change_password(&s, &ann, "password123", "new password 1").await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    assert_eq!(changed.json["token_type"], "bearer");
    assert_eq!(changed.json["user"]["id"], ann.id);
    let fresh = changed.json["access_token"].as_str().expect("token").to_owned();

    let old = s.get("/api/auth/me", &ann.token).await;
    assert_eq!((old.status, old.detail()), (StatusCode::UNAUTHORIZED, "Token has been revoked"));
    assert_eq!(ws.close_code().await, Some(1008), "the open WebSocket is closed with 1008");
    assert!(s.ws_query(&format!("token={}", ann.token)).await.is_err(), "the old token opens no WebSocket");
    assert_eq!(s.get("/api/auth/me", &fresh).await.status, StatusCode::OK);
    let login = s
        .send_json(Method::POST, "/api/auth/login", None, json!({"email": "ann@test.io", "password": "password123"}))
        .await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    let login = s
        .send_json(Method::POST, "/api/auth/login", None, json!({"email": "ann@test.io", "password": "new password 1"}))
        .await;
    assert_eq!(login.status, StatusCode::OK);
    // The revocation survives a restart (the version is stored).
    let s = s.restart().await;
    assert_eq!(s.get("/api/auth/me", &ann.token).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/api/auth/me", &fresh).await.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn logout_ends_only_that_token() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let login = s
        .send_json(Method::POST, "/api/auth/login", None, json!({"email": "ann@test.io", "password": "password123"}))
        .await;
    let phone = TestUser { id: ann.id, token: login.json["access_token"].as_str().expect("token").to_owned() };
    let mut laptop_ws = s.ws(&ann).await;
    let mut phone_ws = s.ws(&phone).await;
    let out = s.raw(Method::POST, "/api/auth/logout", Some(&ann.token), None, Vec::new()).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let me = s.get("/api/auth/me", &ann.token).await;
    assert_eq!((me.status, me.detail()), (StatusCode::UNAUTHORIZED, "Token has been revoked"));
    assert_eq!(laptop_ws.close_code().await, Some(1008));
    assert_eq!(s.get("/api/auth/me", &phone.token).await.status, StatusCode::OK, "the other device stays in");
    phone_ws.send(json!({"type": "ping"})).await;
    phone_ws.expect("pong").await;
    let again = s.raw(Method::POST, "/api/auth/logout", Some(&ann.token), None, Vec::new()).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    // Kept across a restart.
    let s = s.restart().await;
    assert_eq!(s.get("/api/auth/me", &ann.token).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/api/auth/me", &phone.token).await.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn tokens_with_a_critical_header_are_refused() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let secret = std::fs::read_to_string(s.state.config.data_dir.join("jwt_secret")).expect("secret");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.crit = Some(vec!["b64".into()]);
    let now = chatd::auth::jwt::unix_now();
    let claims = json!({"sub": ann.id.to_string(), "iat": now, "exp": now + 60});
    let token =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.trim().as_bytes()))
            .expect("sign");
    let r = s.get("/api/auth/me", &token).await;
    assert_eq!((r.status, r.detail()), (StatusCode::UNAUTHORIZED, "Invalid token"));
    let plain = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.trim().as_bytes()),
    )
    .expect("sign");
    assert_eq!(s.get("/api/auth/me", &plain).await.status, StatusCode::OK, "the same claims without crit are fine");
    s.stop().await;
}

#[tokio::test]
async fn the_handshake_follows_rfc_6455() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let handshake = |version: &str, key: &str, http: &str, host: bool| {
        let host = if host { "host: chatd\r\n" } else { "" };
        format!(
            "GET /api/chat/ws?token={} {http}\r\n{host}upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: {version}\r\nsec-websocket-key: {key}\r\n\r\n",
            ann.token
        )
    };
    let good_key = "dGhlIHNhbXBsZSBub25jZQ==";
    let ask = |request: String| async move {
        let mut stream = connect_from([127, 0, 0, 1], s.addr).await;
        stream.write_all(request.as_bytes()).await.expect("write");
        read_answer(&mut stream).await
    };
    let other_version = ask(handshake("8", good_key, "HTTP/1.1", true)).await;
    assert_eq!(other_version.status, 400);
    assert_eq!(other_version.header("sec-websocket-version"), Some("13"));
    let short_key = ask(handshake("13", "c2hvcnQ=", "HTTP/1.1", true)).await;
    assert_eq!(short_key.status, 400);
    assert_eq!(short_key.body["detail"], "Bad WebSocket handshake: Sec-WebSocket-Key must be 16 bytes in base64");
    let http10 = ask(handshake("13", good_key, "HTTP/1.0", true)).await;
    assert_eq!(http10.status, 400);
    let no_host = ask(handshake("13", good_key, "HTTP/1.1", false)).await;
    assert_eq!(no_host.status, 400);
    let good = ask(handshake("13", good_key, "HTTP/1.1", true)).await;
    assert_eq!(good.status, 101);
    assert_eq!(good.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    s.stop().await;
}

#[tokio::test]
async fn less_exposure_avatars_deep_pages_and_private_files() {
    let s = TestServer::start().await;
    let http_avatar = s
        .send_json(
            Method::POST,
            "/api/auth/register",
            None,
            json!({"name": "A", "email": "a@test.io", "password": "password123", "avatar_url": "javascript:alert(1)"}),
        )
        .await;
    assert_eq!(
        (http_avatar.status, http_avatar.detail()),
        (StatusCode::UNPROCESSABLE_ENTITY, "avatar_url must be an https:// URL")
    );
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let deep = s.get(&format!("/api/chat/rooms/{room}/messages?page=201&per_page=50"), &ann.token).await;
    assert_eq!(deep.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(deep.detail().contains("before_id"), "{}", deep.detail());
    let last = s.get(&format!("/api/chat/rooms/{room}/messages?page=200&per_page=50"), &ann.token).await;
    assert_eq!(last.status, StatusCode::OK);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: std::path::PathBuf| std::fs::metadata(&p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(s.state.config.data_dir.clone()), 0o700);
        assert_eq!(mode(s.state.config.data_dir.join("chatd.sqlite3")), 0o600);
        assert_eq!(mode(s.state.config.data_dir.join("chatd.sqlite3-wal")), 0o600);
    }
    s.stop().await;
}

/// The built binary as a child, for what must be measured from outside:
/// its memory, and its file limit.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Spawned {
    pub(crate) async fn spawn(dir: &std::path::Path, open_files: Option<u32>, env: &[(&str, &str)]) -> Spawned {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let bin = env!("CARGO_BIN_EXE_chatd");
        let serve = format!(
            "exec '{bin}' serve --addr {addr} --data-dir '{}' --static-dir '{}'",
            dir.join("data").display(),
            dir.join("static").display()
        );
        let script = match open_files {
            Some(n) => format!("ulimit -n {n} && {serve}"),
            None => serve,
        };
        let mut command = Command::new("sh");
        command
            .args(["-c", &script])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr file"));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn chatd");
        let me = Spawned { child, addr };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(mut stream) = TcpStream::connect(addr).await {
                let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer).await;
                if answer.starts_with(b"HTTP/1.1 200") {
                    return me;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "chatd did not come up");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A `VmHWM`/`VmRSS`-style figure of /proc/<pid>/status, in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.trim_start_matches(':').trim().strip_suffix("kB")?.trim().parse().ok())
            .expect("field")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_frame_budget_bounds_memory_held_by_half_sent_frames() {
    let dir = tempfile::tempdir().expect("dir");
    const BUDGET: usize = 24 * 1024 * 1024;
    let server = Spawned::spawn(
        dir.path(),
        None,
        &[("CHAT_WS_FRAME_BUDGET_BYTES", &BUDGET.to_string()), ("CHAT_RATE_LIMITS", "off")],
    )
    .await;
    let register = request_from(
        [127, 0, 0, 1],
        server.addr,
        "POST",
        "/api/auth/register",
        None,
        &json!({"name": "M", "email": "m@test.io", "password": "password123"}),
    )
    .await;
    let token = register.body["access_token"].as_str().expect("token").to_owned();
    let before = server.status_kib("VmHWM");
    // Eight sockets, each with the head of a 60 MiB frame and then 16 MiB of
    // it: 128 MiB held without a budget.
    const PER_SOCKET: usize = 16 * 1024 * 1024;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = server.addr;
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = connect_from([127, 0, 0, 1], addr).await;
            let request = format!("GET /api/chat/ws?token={token} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("handshake");
            let mut head = [0u8; 1024];
            let n = stream.read(&mut head).await.expect("101");
            assert!(head[..n].starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head[..n]));
            // FIN + text, masked, 64-bit length of 60 MiB, a zero mask.
            let mut frame = vec![0x81, 0xFF];
            frame.extend_from_slice(&(60u64 * 1024 * 1024).to_be_bytes());
            frame.extend_from_slice(&[0, 0, 0, 0]);
            stream.write_all(&frame).await.expect("frame head");
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = 0;
            while sent < PER_SOCKET {
                if stream.write_all(&chunk).await.is_err() {
                    return (sent, true);
                }
                sent += chunk.len();
            }
            // Held open, unfinished; was it closed meanwhile?
            (sent, closed_within(&mut stream, Duration::from_secs(2)).await)
        }));
    }
    let mut closed = 0;
    for task in tasks {
        let (_, was_closed) = task.await.expect("socket task");
        closed += usize::from(was_closed);
    }
    let after = server.status_kib("VmHWM");
    let growth_mib = (after.saturating_sub(before)) / 1024;
    eprintln!("frame budget {} MiB: {closed} of 8 half-sent frames closed, VmHWM +{growth_mib} MiB", BUDGET >> 20);
    assert!(closed >= 4, "connections past the budget are closed: {closed} of 8");
    assert!(growth_mib < 80, "peak memory grew by {growth_mib} MiB with a {} MiB budget", BUDGET >> 20);
    // The server still serves.
    let healthy = request_from([127, 0, 0, 2], server.addr, "GET", "/healthz", None, &Value::Null).await;
    assert_eq!(healthy.status, 200);
}

#[tokio::test]
async fn the_connection_limit_follows_the_file_limit_so_accept_never_fails() {
    let dir = tempfile::tempdir().expect("dir");
    let server =
        Spawned::spawn(dir.path(), Some(160), &[("CHAT_RATE_LIMITS", "off"), ("CHAT_HEADER_TIMEOUT_SECS", "2")]).await;
    // More silent connections than the process has file descriptors.
    let mut silent = Vec::new();
    for i in 0..200u32 {
        let from = [127, 0, 3, (i % 250) as u8 + 1];
        silent.push(connect_from(from, server.addr).await);
    }
    // A normal request is served once the silent ones time out.
    let healthy = request_from([127, 0, 4, 1], server.addr, "GET", "/healthz", None, &Value::Null).await;
    assert_eq!(healthy.status, 200);
    drop(silent);
    let log = std::fs::read_to_string(dir.path().join("stderr")).expect("log");
    assert!(!log.contains("accept failed"), "{log}");
    assert!(log.contains("the open-file limit caps the connections"), "{log}");
}
