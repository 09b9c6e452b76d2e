//! The event stream (SPEC section 9): everything made while a client was
//! away comes back on reconnect with its cursor, in order, exactly once —
//! across a restart and while new events keep coming; retention and
//! unreadable cursors ask for a resync; REST paging equals the replay.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, TestUser, Ws, replay};

/// Bob says something, then goes away: answers the cursor of his echo.
async fn say_then_leave(s: &TestServer, bob: &TestUser, room: i64) -> String {
    let mut ws = s.ws(bob).await;
    ws.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": "bye for now", "local_temp_id": format!("b{}", crate::support::rand_id())}})).await;
    let echo = ws.expect("new_message").await;
    ws.close().await;
    echo["cursor"].as_str().expect("cursor").to_owned()
}

fn kinds(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().unwrap_or("?")).collect()
}

fn position(frame: &Value) -> i64 {
    frame["cursor"].as_str().and_then(|c| c.strip_prefix("v1.")).and_then(|p| p.parse().ok()).expect("cursor")
}

/// Makes one event of every kind that bob can see, while bob is away.
async fn everything_while_away(s: &TestServer, ann: &TestUser, bob: &TestUser, room: i64) -> (i64, i64) {
    let mut ws = s.ws(ann).await;
    let kept = s.say(&mut ws, room, "keep me").await["id"].as_i64().expect("id");
    let doomed = s.say(&mut ws, room, "secret, deleted later").await["id"].as_i64().expect("id");
    let edit = s
        .send_json(
            Method::PUT,
            &format!("/api/chat/messages/{kept}"),
            Some(&ann.token),
            json!({"content": "kept, edited"}),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK);
    assert_eq!(s.post(&format!("/api/chat/messages/{kept}/like"), &ann.token, json!({})).await.status, StatusCode::OK);
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{doomed}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(s.post(&format!("/api/chat/rooms/{room}/read"), &ann.token, json!({})).await.status, StatusCode::OK);
    let carl = s.user(&format!("carl{}", crate::support::rand_id() % 1000)).await;
    let group = s.post("/api/chat/rooms", &ann.token, json!({"name": "Plans", "member_ids": [bob.id]})).await;
    let group_id = group.json["id"].as_i64().expect("group");
    let rename = s
        .send_json(Method::PATCH, &format!("/api/chat/rooms/{group_id}"), Some(&ann.token), json!({"name": "Plans v2"}))
        .await;
    assert_eq!(rename.status, StatusCode::OK);
    let add = s.post(&format!("/api/chat/rooms/{group_id}/members"), &ann.token, json!({"user_ids": [carl.id]})).await;
    assert_eq!(add.status, StatusCode::OK);
    let kick = s
        .raw(
            Method::DELETE,
            &format!("/api/chat/rooms/{group_id}/members/{}", carl.id),
            Some(&ann.token),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(kick.status, StatusCode::OK);
    ws.close().await;
    (kept, doomed)
}

const EXPECTED: [&str; 10] = [
    "new_message",
    "new_message",
    "message_update",
    "message_like",
    "message_delete",
    "message_read",
    "room_created",
    "room_updated",
    "member_added",
    "member_removed",
];

fn check_replay(frames: &[Value], kept: i64, doomed: i64) {
    assert_eq!(kinds(frames), EXPECTED, "{frames:#?}");
    let positions: Vec<i64> = frames.iter().map(position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order, each once: {positions:?}");
    // Rendered from the current state: the edit shows, the deleted stays deleted.
    assert_eq!(
        (frames[0]["data"]["id"].clone(), frames[0]["data"]["content"].clone()),
        (json!(kept), json!("kept, edited"))
    );
    assert_eq!(frames[1]["data"]["id"], doomed);
    assert_eq!(
        (frames[1]["data"]["content"].clone(), frames[1]["data"]["is_deleted"].clone()),
        (json!(""), json!(true))
    );
    assert!(
        !serde_json::to_string(frames).unwrap_or_default().contains("secret"),
        "deleted content is never sent again"
    );
    assert_eq!(frames[3]["data"]["like_count"], 1);
    assert_eq!(frames[6]["data"]["name"], "Plans v2", "a renamed group shows its current name");
}

#[tokio::test]
async fn every_event_made_while_away_arrives_on_reconnect_in_order_exactly_once() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let (first, before, _) = replay(&s, &bob, None).await;
    assert!(before.is_empty(), "without a cursor the first frame is synced: {before:?}");
    first.close().await;
    let cursor = say_then_leave(&s, &bob, room).await;
    let (kept, doomed) = everything_while_away(&s, &ann, &bob, room).await;
    let (mut ws, frames, synced) = replay(&s, &bob, Some(&cursor)).await;
    check_replay(&frames, kept, doomed);
    assert_eq!(synced, frames.last().and_then(|f| f["cursor"].as_str()).unwrap_or(""));
    // Then live, with nothing repeated.
    let mut ann_ws = s.ws(&ann).await;
    let live = s.say(&mut ann_ws, room, "live").await;
    let next = ws.expect("new_message").await;
    assert_eq!(next["data"]["id"], live["id"]);
    assert!(position(&next) > position(frames.last().expect("frames")));
    // The same cursor again gives the same replay.
    let (_, again, _) = replay(&s, &bob, Some(&cursor)).await;
    assert_eq!(kinds(&again[..10]), EXPECTED);
    s.stop().await;
}

#[tokio::test]
async fn without_a_cursor_synced_comes_first_even_while_messages_pour_in() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut sender = s.ws(&ann).await;
    for round in 0..20 {
        for i in 0..10 {
            sender.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": format!("r{round} m{i}"), "local_temp_id": format!("p{round}-{i}")}})).await;
        }
        let mut ws = s.ws_query(&format!("token={}", bob.token)).await.expect("connect");
        let first = ws.next().await.expect("a first frame");
        assert_eq!(first["type"], "synced", "round {round}: {first}");
        ws.close().await;
        for _ in 0..10 {
            sender.expect("new_message").await;
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn cursors_survive_a_restart() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let cursor = say_then_leave(&s, &bob, room).await;
    let (kept, doomed) = everything_while_away(&s, &ann, &bob, room).await;
    let s = s.restart().await;
    let (_, frames, _) = replay(&s, &bob, Some(&cursor)).await;
    check_replay(&frames, kept, doomed);
    s.stop().await;
}

#[tokio::test]
async fn a_replay_while_messages_keep_coming_has_no_gap_and_no_duplicate() {
    // A small outbox: live frames overflow while the replay runs, and the
    // connection must read them from storage instead of being closed.
    let s = TestServer::start_with(|c| c.ws_outbox = 64).await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let (first, _, cursor) = replay(&s, &bob, None).await;
    first.close().await;
    let mut sender = s.ws(&ann).await;
    // The sender reads its echoes after each batch: its own outbox is small too.
    async fn batch(sender: &mut Ws, room: i64, range: std::ops::Range<usize>) {
        let n = range.len();
        for i in range {
            sender.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": format!("m{i}"), "local_temp_id": format!("a{i}")}})).await;
        }
        for _ in 0..n {
            sender.expect("new_message").await;
        }
    }
    for start in (0..300).step_by(50) {
        batch(&mut sender, room, start..start + 50).await;
    }
    // Reconnect with 300 to replay while 300 more arrive live.
    let query = format!("token={}&cursor={cursor}", bob.token);
    let mut bob_ws = s.ws_query(&query).await.expect("connect");
    for start in (300..600).step_by(50) {
        batch(&mut sender, room, start..start + 50).await;
    }
    let mut contents = Vec::new();
    let mut positions = Vec::new();
    let mut synced = 0;
    // The synced frame may come before, among or after the 600 (a replay
    // that lags reads on from storage until it has caught up).
    while contents.len() < 600 || synced == 0 {
        let frame = bob_ws.next().await.expect("connection stays open");
        match frame["type"].as_str() {
            Some("new_message") => {
                contents.push(frame["data"]["content"].as_str().unwrap_or("").to_owned());
                positions.push(position(&frame));
            }
            Some("synced") => synced += 1,
            _ => {}
        }
    }
    let expected: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
    assert_eq!(contents, expected, "every message once, in order");
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(synced, 1);
    bob_ws.expect_none("new_message", Duration::from_millis(300)).await;
    s.stop().await;
}

#[tokio::test]
async fn old_or_unreadable_cursors_ask_for_a_resync() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let (first, _, cursor) = replay(&s, &bob, None).await;
    first.close().await;
    let mut ws = s.ws(&ann).await;
    s.say(&mut ws, room, "soon forgotten").await;
    // Retention removes everything (a cutoff in the future).
    let removed = s.state.writer.prune_events(chatd::time::now_ms() + 1000).await.expect("prune");
    assert!(removed >= 2, "{removed}");
    for stale in [cursor.as_str(), "garbage", "v1.999999999"] {
        let mut bob_ws = s.ws_query(&format!("token={}&cursor={stale}", bob.token)).await.expect("connect");
        assert_eq!(bob_ws.next().await.expect("frame")["type"], "resync_required", "{stale}");
        assert_eq!(bob_ws.next().await.expect("frame")["type"], "synced");
        let rest = s.get(&format!("/api/chat/events?cursor={stale}"), &bob.token).await;
        assert_eq!(rest.status, StatusCode::GONE, "{stale}");
    }
    s.stop().await;
}

#[tokio::test]
async fn rest_event_pages_equal_the_websocket_replay() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let cursor = say_then_leave(&s, &bob, room).await;
    everything_while_away(&s, &ann, &bob, room).await;
    // Kept open: bob's presence is part of what both render.
    let (_online, frames, synced) = replay(&s, &bob, Some(&cursor)).await;
    let mut paged = Vec::new();
    let mut at = cursor.clone();
    for _ in 0..20 {
        let page = s.get(&format!("/api/chat/events?cursor={at}&limit=3"), &bob.token).await;
        assert_eq!(page.status, StatusCode::OK);
        paged.extend(page.json["events"].as_array().cloned().unwrap_or_default());
        at = page.json["cursor"].as_str().expect("cursor").to_owned();
        if page.json["has_more"] != true {
            break;
        }
    }
    // Presence is live state, not part of an event: a sender going offline
    // between the two reads may flip an is_online.
    fn without_presence(mut value: Value) -> Value {
        match &mut value {
            Value::Object(map) => {
                map.remove("is_online");
                for (_, v) in map.iter_mut() {
                    *v = without_presence(v.take());
                }
            }
            Value::Array(items) => {
                for v in items.iter_mut() {
                    *v = without_presence(v.take());
                }
            }
            _ => {}
        }
        value
    }
    assert_eq!(without_presence(Value::Array(paged)), without_presence(Value::Array(frames)));
    assert_eq!(at, synced);
    let bad = s.get("/api/chat/events?limit=0", &bob.token).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let now = s.get("/api/chat/events", &bob.token).await;
    assert_eq!((now.json["events"].clone(), now.json["cursor"].clone()), (json!([]), json!(synced)));
    s.stop().await;
}

#[tokio::test]
async fn a_removed_member_replays_room_removed_and_nothing_after_and_a_new_one_starts_at_its_welcome() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let carl = s.user("carl").await;
    let group = s.post("/api/chat/rooms", &ann.token, json!({"name": "G", "member_ids": [bob.id]})).await;
    let id = group.json["id"].as_i64().expect("id");
    let mut ann_ws = s.ws(&ann).await;
    s.say(&mut ann_ws, id, "before carl").await;
    let (b, _, bob_cursor) = replay(&s, &bob, None).await;
    b.close().await;
    let (c, _, carl_cursor) = replay(&s, &carl, None).await;
    c.close().await;
    let add = s.post(&format!("/api/chat/rooms/{id}/members"), &ann.token, json!({"user_ids": [carl.id]})).await;
    assert_eq!(add.status, StatusCode::OK);
    s.say(&mut ann_ws, id, "welcome carl").await;
    let out = s
        .raw(Method::DELETE, &format!("/api/chat/rooms/{id}/members/{}", bob.id), Some(&ann.token), None, Vec::new())
        .await;
    assert_eq!(out.status, StatusCode::OK);
    s.say(&mut ann_ws, id, "bob is gone").await;

    let (_, carls, _) = replay(&s, &carl, Some(&carl_cursor)).await;
    assert_eq!(kinds(&carls), ["member_added", "new_message", "member_removed", "new_message"]);
    assert_eq!(carls[1]["data"]["content"], "welcome carl");
    let (_, bobs, _) = replay(&s, &bob, Some(&bob_cursor)).await;
    assert_eq!(kinds(&bobs), ["room_removed"], "nothing of the room after it, nothing before it: {bobs:#?}");
    s.stop().await;
}
