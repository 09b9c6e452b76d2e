//! SPEC section 3 over a real WebSocket: delivery, ordering, presence,
//! typing, room commands, every protocol error, idempotent send, slow
//! consumers, limits, token expiry and shutdown.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::SinkExt;
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::messages::assert_message_shape;
use crate::support::{TestServer, Ws};

fn text(room: i64, content: &str, temp: &str) -> Value {
    json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": content, "local_temp_id": temp}})
}

#[tokio::test]
async fn every_connection_of_both_users_receives_and_rest_sees_it_at_once() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut ann1 = s.ws(&ann).await;
    let mut ann2 = s.ws(&ann).await;
    let mut bob1 = s.ws(&bob).await;
    ann1.send(json!({"type": "send_message", "data": {"room_id": room, "receiver_id": bob.id, "message_type": "text", "content": "Hello, how are you?", "local_temp_id": "temp_1"}})).await;
    let echo = ann1.expect("new_message").await;
    let m = &echo["data"];
    assert_message_shape(m);
    assert_eq!(
        (m["content"].as_str(), m["local_temp_id"].as_str(), m["is_sender"].as_bool()),
        (Some("Hello, how are you?"), Some("temp_1"), Some(true))
    );
    assert_eq!(
        (m["sender_details"]["id"].as_i64(), m["receiver_details"]["id"].as_i64()),
        (Some(ann.id), Some(bob.id))
    );
    assert_eq!(
        (m["files_data"].clone(), m["duration"].clone(), m["edited_at"].clone()),
        (Value::Null, Value::Null, Value::Null)
    );
    // The echo means committed: REST has it now, without waiting.
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    assert_eq!(page.json["messages"][0]["id"], m["id"]);
    let other_tab = ann2.expect("new_message").await;
    assert_eq!(other_tab["data"]["id"], m["id"]);
    let received = bob1.expect("new_message").await;
    assert_eq!(
        (received["data"]["id"].clone(), received["data"]["is_sender"].as_bool()),
        (m["id"].clone(), Some(false))
    );
    s.stop().await;
}

#[tokio::test]
async fn presence_goes_online_at_the_first_connection_and_offline_after_the_last() {
    let s = TestServer::start().await;
    let (ann, bob, _) = s.pair("ann", "bob").await;
    let mut watcher = s.ws(&ann).await;
    let bob1 = s.ws(&bob).await;
    let on = watcher.expect_where("presence", |v| v["data"]["user_id"] == bob.id).await;
    assert_eq!(on["data"], json!({"user_id": bob.id, "is_online": true, "user_name": "bob"}));
    let bob2 = s.ws(&bob).await;
    bob1.close().await;
    watcher.expect_none("presence", Duration::from_millis(300)).await;
    bob2.close().await;
    let off = watcher.expect_where("presence", |v| v["data"]["user_id"] == bob.id).await;
    assert_eq!(off["data"]["is_online"], false);
    let bob_id = bob.id;
    let online = s.sql_i64(&format!("SELECT count(*) FROM user_presence WHERE user_id = {bob_id} AND is_online")).await;
    let seen = s.sql_i64(&format!("SELECT count(last_seen) FROM user_presence WHERE user_id = {bob_id}")).await;
    assert!(online == 0 && seen == 1);
    s.stop().await;
}

#[tokio::test]
async fn typing_reaches_only_the_other_user_and_room_commands_answer() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    a.send(json!({"type": "typing", "data": {"room_id": room, "is_typing": true}})).await;
    let t = b.expect("typing").await;
    assert_eq!(t["data"], json!({"room_id": room, "user_id": ann.id, "user_name": "ann", "is_typing": true}));
    a.expect_none("typing", Duration::from_millis(300)).await;

    a.send(json!({"type": "join_room", "data": {"room_id": room}})).await;
    assert_eq!(a.expect("room_joined").await["data"], json!({"room_id": room}));
    // With a current room, room_id may be left out.
    a.send(json!({"type": "send_message", "data": {"message_type": "text", "content": "implicit room"}})).await;
    assert_eq!(b.expect("new_message").await["data"]["room_id"], room);
    a.send(json!({"type": "leave_room"})).await;
    assert_eq!(a.expect("room_left").await["data"], json!({"room_id": room}));
    a.send(json!({"type": "send_message", "data": {"message_type": "text", "content": "no room"}})).await;
    assert_eq!(a.expect("error").await["message"], "room_id is required");
    b.send(json!({"type": "mark_read", "data": {"room_id": room}})).await;
    assert_eq!(a.expect("message_read").await["data"]["user_id"], bob.id);
    a.send(json!({"type": "ping"})).await;
    assert_eq!(a.expect("pong").await, json!({"type": "pong"}));
    s.stop().await;
}

#[tokio::test]
async fn every_bad_request_answers_one_error_and_the_connection_stays_usable() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let eve = s.user("eve").await;
    let other_room = s.room(&bob, &eve).await;
    let mut ws = s.ws(&ann).await;
    let cases: Vec<(String, Option<&str>)> = vec![
        ("{not json".into(), None),
        (json!({"type": "dance", "data": {}}).to_string(), None),
        (json!({"data": {}}).to_string(), None),
        (json!({"type": "send_message", "data": {"room_id": room, "content": "x", "local_temp_id": "e1"}}).to_string(), Some("e1")),
        (json!({"type": "send_message", "data": {"room_id": "one", "message_type": "text", "content": "x", "local_temp_id": "e2"}}).to_string(), Some("e2")),
        (text(other_room, "intrude", "e3").to_string(), Some("e3")),
        (json!({"type": "send_message", "data": {"room_id": room, "receiver_id": eve.id, "message_type": "text", "content": "x", "local_temp_id": "e4"}}).to_string(), Some("e4")),
        (text(room, "", "e5").to_string(), Some("e5")),
        (text(room, &"x".repeat(5001), "e6").to_string(), Some("e6")),
        (json!({"type": "typing", "data": {"room_id": other_room, "is_typing": true}}).to_string(), None),
        (json!({"type": "join_room", "data": {"room_id": other_room}}).to_string(), None),
        (json!({"type": "join_room", "data": {}}).to_string(), None),
    ];
    for (frame, temp) in &cases {
        ws.send_text(frame.clone()).await;
        let e = ws.expect("error").await;
        assert_eq!(e["local_temp_id"].as_str(), *temp, "{frame}");
        assert!(!e["message"].as_str().unwrap_or("").is_empty(), "{frame}");
    }
    ws.stream.send(WsMessage::binary(vec![1u8, 2, 3])).await.unwrap();
    assert!(ws.expect("error").await["message"].as_str().unwrap().contains("Binary"));
    let ok = s.say(&mut ws, room, "still here").await;
    assert_eq!(ok["content"], "still here");
    let rows = s.sql_i64("SELECT count(*) FROM chat_messages").await;
    assert_eq!(rows, 1, "nothing half-stored");
    s.stop().await;
}

#[tokio::test]
async fn a_retried_temp_id_stores_nothing_new_and_echoes_the_original() {
    let s = TestServer::start().await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut ws = s.ws(&ann).await;
    let first = s.say(&mut ws, room, "once").await;
    ws.close().await;
    let mut again = s.ws(&ann).await;
    let temp = first["local_temp_id"].as_str().unwrap();
    again.send(text(room, "once", temp)).await;
    let echo = again.expect("new_message").await;
    assert_eq!((echo["data"]["id"].clone(), echo["data"]["local_temp_id"].as_str()), (first["id"].clone(), Some(temp)));
    // Two retries in one batch, too.
    again.send(text(room, "twice", "same")).await;
    again.send(text(room, "twice", "same")).await;
    let a = again.expect("new_message").await;
    let b = again.expect("new_message").await;
    assert_eq!(a["data"]["id"], b["data"]["id"]);
    let rows = s.sql_i64("SELECT count(*) FROM chat_messages").await;
    assert_eq!(rows, 2);
    s.stop().await;
}

async fn send_all(ws: &mut Ws, room: i64, who: &str, n: usize) {
    for i in 0..n {
        ws.stream
            .feed(WsMessage::text(text(room, &format!("{who}{i}"), &format!("{who}-{i}")).to_string()))
            .await
            .unwrap();
    }
    ws.stream.flush().await.unwrap();
}

#[tokio::test]
async fn two_users_sending_500_each_at_once_are_seen_by_all_in_id_order() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    let mut a2 = s.ws(&ann).await;
    const N: usize = 500;
    let (mut a_tx, mut b_tx) = (Vec::new(), Vec::new());
    // Send everything first (the server buffers), then read on every connection.
    {
        let fa = send_all(&mut a, room, "a", N);
        let fb = send_all(&mut b, room, "b", N);
        futures_util::join!(fa, fb);
    }
    for (ws, seen) in [(&mut a, &mut a_tx), (&mut b, &mut b_tx)] {
        while seen.len() < 2 * N {
            let v = ws.expect("new_message").await;
            seen.push(v["data"]["id"].as_i64().unwrap());
        }
    }
    let mut third = Vec::new();
    while third.len() < 2 * N {
        third.push(a2.expect("new_message").await["data"]["id"].as_i64().unwrap());
    }
    for ids in [&a_tx, &b_tx, &third] {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing ids");
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 2 * N);
    }
    assert_eq!(a_tx, b_tx);
    s.stop().await;
}

#[tokio::test]
async fn a_reader_that_never_reads_is_closed_while_others_get_everything() {
    let s = TestServer::start_with(|c| c.ws_outbox = 64).await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut stalled = s.ws(&bob).await;
    let mut healthy = s.ws(&bob).await;
    let mut sender = s.ws(&ann).await;
    let big = "x".repeat(4000);
    let mut sent = 0;
    while s.state.metrics.slow_consumers_closed.load(Ordering::Relaxed) == 0 {
        assert!(sent < 5000, "the stalled reader was never closed");
        for _ in 0..20 {
            sender.send(text(room, &big, &format!("s{sent}"))).await;
            sent += 1;
        }
        for _ in 0..20 {
            healthy.expect("new_message").await;
            sender.expect("new_message").await;
        }
    }
    // The healthy connection keeps receiving after the stalled one is gone.
    let last = s.say(&mut sender, room, "after").await;
    healthy.expect_where("new_message", |v| v["data"]["id"] == last["id"]).await;
    assert_eq!(stalled.close_code().await, Some(1013));
    s.stop().await;
}

#[tokio::test]
async fn the_upgrade_refuses_bad_tokens_foreign_rooms_and_origins() {
    let s = TestServer::start_with(|c| c.allowed_origins = Some(vec!["http://good.example".into()])).await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let eve = s.user("eve").await;
    let status = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status(),
        other => panic!("not an HTTP refusal: {other}"),
    };
    let connect = |query: String, origin: &'static str| {
        let mut req = format!("ws://{}/api/chat/ws?{query}", s.addr).into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    assert_eq!(status(connect("token=bad".into(), "http://good.example").await.unwrap_err()), StatusCode::UNAUTHORIZED);
    assert_eq!(status(connect(String::new(), "http://good.example").await.unwrap_err()), StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(connect(format!("token={}&room_id={room}", eve.token), "http://good.example").await.unwrap_err()),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(connect(format!("token={}", ann.token), "http://evil.example").await.unwrap_err()),
        StatusCode::FORBIDDEN
    );
    assert!(connect(format!("token={}&room_id={room}", ann.token), "http://good.example").await.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn oversized_frames_close_with_1009_and_expired_tokens_with_1008() {
    let s = TestServer::start_with(|c| {
        c.max_ws_message_bytes = 4096;
        c.token_ttl = Duration::from_secs(2);
    })
    .await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut big = s.ws(&ann).await;
    big.send(text(room, &"y".repeat(5000), "big")).await;
    assert_eq!(big.close_code().await, Some(1009));
    let mut expiring = s.ws(&ann).await;
    assert_eq!(expiring.close_code().await, Some(1008));
    s.stop().await;
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_idle_timeout() {
    let s = TestServer::start_with(|c| {
        c.ws_ping_interval = Duration::from_millis(300);
        c.ws_idle_timeout = Duration::from_millis(900);
    })
    .await;
    let (ann, bob, _room) = s.pair("ann", "bob").await;
    let mut watcher = s.ws(&ann).await;
    let silent = s.ws(&bob).await;
    watcher.expect_where("presence", |v| v["data"]["user_id"] == bob.id && v["data"]["is_online"] == true).await;
    // `silent` is never polled, so it never answers a ping.
    let off = watcher.expect_where("presence", |v| v["data"]["user_id"] == bob.id).await;
    assert_eq!(off["data"]["is_online"], false);
    drop(silent);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_sends_what_was_committed_then_closes_with_1001() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    s.say(&mut a, room, "before").await;
    let stop = tokio::spawn(s.stop());
    assert_eq!(b.expect("new_message").await["data"]["content"], "before");
    assert_eq!(b.close_code().await, Some(1001));
    assert_eq!(a.close_code().await, Some(1001));
    stop.await.unwrap();
}
