//! Scheduled messages (SPEC section 10): `send_at` on `send_message`,
//! `message_scheduled` to the sender only, delivery at the time as a normal
//! `new_message` exactly once (across a restart too), list and cancel, and
//! every refusal.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::{TestServer, Ws};

fn at(ms_from_now: i64) -> String {
    chatd::time::rfc3339_ms(chatd::time::now_ms() + ms_from_now)
}

async fn schedule(ws: &mut Ws, room: i64, text: &str, send_at: &str, temp: &str) {
    ws.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": text, "local_temp_id": temp, "send_at": send_at}})).await;
}

#[tokio::test]
async fn a_scheduled_message_is_announced_to_its_sender_and_sent_at_its_time() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut a2 = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    let send_at = at(1500);
    schedule(&mut a, room, "happy birthday!", &send_at, "s1").await;
    for ws in [&mut a, &mut a2] {
        let announced = ws.expect("message_scheduled").await;
        let data = &announced["data"];
        assert_eq!((data["room_id"].clone(), data["local_temp_id"].clone()), (json!(room), json!("s1")));
        assert_eq!(data["send_at"], send_at.as_str());
        assert!(data["id"].as_i64().is_some_and(|id| id > 0));
        assert!(announced["cursor"].is_string(), "a stored event: {announced}");
    }
    let list = s.get("/api/chat/scheduled", &ann.token).await;
    let items = list.json["scheduled"].as_array().expect("list").clone();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0]["content"].clone(), items[0]["message_type"].clone(), items[0]["send_at"].clone()),
        (json!("happy birthday!"), json!("text"), json!(send_at))
    );
    assert_eq!(s.get("/api/chat/scheduled", &bob.token).await.json, json!({"scheduled": []}), "only the sender's");
    assert_eq!(s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await.json["messages"], json!([]));
    // Bob hears nothing until it is sent; then both sides get new_message.
    b.expect_none("message_scheduled", Duration::from_millis(500)).await;
    let delivered = b.expect("new_message").await;
    let sent_at = chatd::time::now_ms();
    assert_eq!(
        (delivered["data"]["content"].clone(), delivered["data"]["sender_details"]["id"].clone()),
        (json!("happy birthday!"), json!(ann.id))
    );
    let due = chatd::time::parse_rfc3339_ms(&send_at).expect("send_at");
    assert!(sent_at >= due, "not before its time");
    let own = a.expect("new_message").await;
    assert_eq!(own["data"]["local_temp_id"], "s1", "the sender matches it by its temp id");
    a.expect_none("new_message", Duration::from_millis(300)).await;
    assert_eq!(s.get("/api/chat/scheduled", &ann.token).await.json, json!({"scheduled": []}));
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    assert_eq!(page.json["messages"].as_array().map(Vec::len), Some(1), "sent once");
    s.stop().await;
}

#[tokio::test]
async fn scheduled_messages_can_be_cancelled_and_bad_times_are_refused() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    schedule(&mut a, room, "later", &at(60_000), "c1").await;
    let id = a.expect("message_scheduled").await["data"]["id"].as_i64().expect("id");
    let path = format!("/api/chat/scheduled/{id}");
    assert_eq!(
        s.raw(Method::DELETE, &path, Some(&bob.token), None, Vec::new()).await.status,
        StatusCode::NOT_FOUND,
        "not bob's"
    );
    let cancelled = s.raw(Method::DELETE, &path, Some(&ann.token), None, Vec::new()).await;
    assert_eq!((cancelled.status, cancelled.json.clone()), (StatusCode::OK, json!({"id": id})));
    assert_eq!(s.raw(Method::DELETE, &path, Some(&ann.token), None, Vec::new()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.get("/api/chat/scheduled", &ann.token).await.json, json!({"scheduled": []}));

    let year = 366 * 24 * 3600 * 1000;
    for (send_at, temp, why) in [
        (at(-1000), "p1", "send_at must be in the future"),
        (at(year + 60_000), "p2", "send_at may be at most one year ahead"),
        ("tomorrow".to_owned(), "p3", "send_at must be an RFC 3339 date-time"),
    ] {
        schedule(&mut a, room, "nope", &send_at, temp).await;
        let refused = a.expect("error").await;
        assert_eq!(
            (refused["message"].clone(), refused["local_temp_id"].clone()),
            (json!(why), json!(temp)),
            "{refused}"
        );
    }
    let other = s.user("carl").await;
    let not_mine = s.room(&bob, &other).await;
    schedule(&mut a, not_mine, "nope", &at(60_000), "p4").await;
    assert_eq!(a.expect("error").await["message"], "Room not found");
    assert_eq!(s.get("/api/chat/scheduled", &ann.token).await.json, json!({"scheduled": []}), "nothing stored");
    s.stop().await;
}

#[tokio::test]
async fn a_message_due_while_the_server_was_down_is_sent_once_at_start() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    schedule(&mut a, room, "sent after a restart", &at(800), "r1").await;
    a.expect("message_scheduled").await;
    a.close().await;
    let config = s.state.config.clone();
    let dir = s.stop().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let s = TestServer::start_in(dir, config).await;
    let count = || async {
        let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
        page.json["messages"].as_array().map_or(0, Vec::len)
    };
    let mut sent = 0;
    for _ in 0..100 {
        sent = count().await;
        if sent > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sent, 1, "sent at start, once");
    assert_eq!(s.get("/api/chat/scheduled", &ann.token).await.json, json!({"scheduled": []}));
    // And not again after another restart.
    let s = s.restart().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    assert_eq!(page.json["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(page.json["messages"][0]["content"], "sent after a restart");
    s.stop().await;
}
