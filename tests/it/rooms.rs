//! Rooms, users, unread counts, read marks, 404s that leak nothing, and the
//! router's 404/405/422.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::TestServer;

#[tokio::test]
async fn room_creation_is_idempotent_and_race_safe() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let first = s.post("/api/chat/rooms", &ann.token, json!({"receiver_id": bob.id})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let room = &first.json;
    for key in [
        "id",
        "name",
        "room_type",
        "created_by",
        "created_at",
        "updated_at",
        "is_active",
        "participants",
        "other_user",
        "last_message",
        "unread_count",
    ] {
        assert!(room.get(key).is_some(), "room lacks {key}");
    }
    assert_eq!(room["other_user"]["id"], bob.id);
    assert_eq!(room["room_type"], "direct");
    assert_eq!(room["participants"].as_array().unwrap().len(), 2);
    let again = s.post("/api/chat/rooms", &bob.token, json!({"receiver_id": ann.id})).await;
    assert_eq!((again.status, &again.json["id"]), (StatusCode::OK, &room["id"]));

    let carl = s.user("carl").await;
    let dave = s.user("dave").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (from, to) = if i % 2 == 0 { (&carl, &dave) } else { (&dave, &carl) };
        tasks.push(s.post("/api/chat/rooms", &from.token, json!({"receiver_id": to.id})));
    }
    let replies = futures_util::future::join_all(tasks).await;
    let ids: std::collections::HashSet<_> = replies.iter().map(|r| r.json["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one room for one pair");
    assert_eq!(replies.iter().filter(|r| r.status == StatusCode::CREATED).count(), 1);
    let rooms: i64 = s.sql_i64("SELECT count(*) FROM chat_rooms").await;
    assert_eq!(rooms, 2);

    let me = s.post("/api/chat/rooms", &ann.token, json!({"receiver_id": ann.id})).await;
    assert_eq!(me.status, StatusCode::BAD_REQUEST);
    let ghost = s.post("/api/chat/rooms", &ann.token, json!({"receiver_id": 999})).await;
    assert_eq!((ghost.status, ghost.detail()), (StatusCode::NOT_FOUND, "User not found"));
    let bad = s.post("/api/chat/rooms", &ann.token, json!({"receiver_id": "two"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = s.post("/api/chat/rooms", &ann.token, json!({})).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    s.stop().await;
}

#[tokio::test]
async fn room_list_orders_by_activity_and_counts_unread() {
    let s = TestServer::start().await;
    let (ann, bob, room_ab) = s.pair("ann", "bob").await;
    let carl = s.user("carl").await;
    let room_ac = s.room(&ann, &carl).await;
    let mut bob_ws = s.ws(&bob).await;
    s.say(&mut bob_ws, room_ab, "one").await;
    s.say(&mut bob_ws, room_ab, "two").await;
    let mut carl_ws = s.ws(&carl).await;
    s.say(&mut carl_ws, room_ac, "three").await;

    let list = s.get("/api/chat/rooms", &ann.token).await;
    assert_eq!(list.json["total"], 2);
    let rooms = list.json["rooms"].as_array().unwrap();
    assert_eq!(rooms[0]["id"], room_ac, "most recent activity first");
    assert_eq!(rooms[0]["last_message"]["content"], "three");
    assert_eq!(rooms[1]["unread_count"], 2);
    assert_eq!(rooms[1]["last_message"]["content"], "two");
    assert_eq!(rooms[1]["last_message"]["local_temp_id"], json!(null));

    let unread = s.get("/api/chat/unread-count", &ann.token).await;
    assert_eq!(
        unread.json,
        json!({"unread_count": 3, "rooms": [{"room_id": room_ab, "unread_count": 2}, {"room_id": room_ac, "unread_count": 1}]})
    );

    let read = s.post(&format!("/api/chat/rooms/{room_ab}/read"), &ann.token, json!({})).await;
    assert_eq!(read.json, json!({"room_id": room_ab, "marked_read": 2}));
    let ev = bob_ws.expect("message_read").await;
    let newest =
        s.get(&format!("/api/chat/rooms/{room_ab}/messages"), &ann.token).await.json["messages"][1]["id"].clone();
    assert_eq!(ev["data"], json!({"room_id": room_ab, "user_id": ann.id, "user_name": "ann", "last_read_id": newest}));
    let again = s.post(&format!("/api/chat/rooms/{room_ab}/read"), &ann.token, json!({})).await;
    assert_eq!(again.json["marked_read"], 0);
    // SPEC 4: a read sends message_read to the room even when nothing was unread.
    let repeat = bob_ws.expect("message_read").await;
    assert_eq!(repeat["data"], ev["data"]);
    let one = s.get(&format!("/api/chat/rooms/{room_ab}"), &ann.token).await;
    assert_eq!(one.json["unread_count"], 0);
    let page = s.get(&format!("/api/chat/rooms/{room_ab}/messages"), &bob.token).await;
    assert!(page.json["messages"].as_array().unwrap().iter().all(|m| m["is_read"] == true));
    s.stop().await;
}

#[tokio::test]
async fn other_peoples_rooms_and_messages_are_404() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let eve = s.user("eve").await;
    let mut ws = s.ws(&ann).await;
    let msg = s.say(&mut ws, room, "private").await;
    let id = msg["id"].as_i64().unwrap();
    for path in [
        format!("/api/chat/rooms/{room}"),
        format!("/api/chat/rooms/{room}/messages"),
        "/api/chat/rooms/12345".to_owned(),
    ] {
        let r = s.get(&path, &eve.token).await;
        assert_eq!((r.status, r.detail()), (StatusCode::NOT_FOUND, "Room not found"), "{path}");
    }
    let read = s.post(&format!("/api/chat/rooms/{room}/read"), &eve.token, json!({})).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);
    let edit =
        s.send_json(Method::PUT, &format!("/api/chat/messages/{id}"), Some(&eve.token), json!({"content": "x"})).await;
    assert_eq!((edit.status, edit.detail()), (StatusCode::NOT_FOUND, "Message not found"));
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&eve.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);
    let like = s.post(&format!("/api/chat/messages/{id}/like"), &eve.token, json!({})).await;
    assert_eq!(like.status, StatusCode::NOT_FOUND);
    let none = s.send_json(Method::PUT, "/api/chat/messages/999", Some(&bob.token), json!({"content": "x"})).await;
    assert_eq!((none.status, none.detail()), (StatusCode::NOT_FOUND, "Message not found"));
    let list = s.get("/api/chat/rooms", &eve.token).await;
    assert_eq!(list.json, json!({"rooms": [], "total": 0}));
    s.stop().await;
}

#[tokio::test]
async fn search_and_online_users() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    s.user("bobby").await;
    let r = s.get("/api/chat/search-users?email=BOB&limit=1", &ann.token).await;
    assert_eq!(r.json["total"], 2);
    assert_eq!(r.json["users"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["users"][0]["email"], "bob@test.io");
    let all = s.get("/api/chat/search-users?email=test.io", &ann.token).await;
    assert_eq!(all.json["total"], 2, "the caller is excluded");
    for bad in [
        "/api/chat/search-users?email=a&limit=0",
        "/api/chat/search-users?email=a&limit=101",
        "/api/chat/search-users?email=a&limit=x",
        "/api/chat/search-users",
    ] {
        assert_eq!(s.get(bad, &ann.token).await.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }

    for short in
        ["/api/chat/search-users?email=a", "/api/chat/search-users?email=bo", "/api/chat/search-users?email=%20%20b%20"]
    {
        let r = s.get(short, &ann.token).await;
        assert_eq!((r.status, r.detail()), (StatusCode::UNPROCESSABLE_ENTITY, "email must be at least 3 characters"));
    }

    assert_eq!(s.get("/api/chat/online-users", &ann.token).await.json, json!({"users": [], "total": 0}));
    // Online users are only those who share a room with the caller.
    let carl = s.user("carl").await;
    let carl_ws = s.ws(&carl).await;
    s.post("/api/chat/rooms", &ann.token, json!({"receiver_id": bob.id})).await;
    let ws = s.ws(&bob).await;
    let mut online = serde_json::Value::Null;
    for _ in 0..100 {
        online = s.get("/api/chat/online-users", &ann.token).await.json;
        if online["total"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(online["users"][0]["id"], bob.id);
    assert_eq!(online["users"][0]["is_online"], true);
    assert_eq!(online["total"], 1, "carl is online but shares no room with ann: {online}");
    ws.close().await;
    carl_ws.close().await;
    s.stop().await;
}

#[tokio::test]
async fn the_router_answers_404_405_and_422() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let r = s.get("/api/chat/nothing", &ann.token).await;
    assert_eq!((r.status, r.detail()), (StatusCode::NOT_FOUND, "Not found"));
    let r = s.raw(Method::PATCH, "/api/chat/rooms", Some(&ann.token), None, Vec::new()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, POST");
    let r = s.get("/api/chat/rooms/abc", &ann.token).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = s.get("/api/chat/rooms/1/messages?page=0", &ann.token).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let health = s.raw(Method::GET, "/healthz", None, None, Vec::new()).await;
    assert_eq!(health.json, json!({"status": "ok"}));
    s.stop().await;
}
