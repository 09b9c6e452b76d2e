//! Message pages (page arithmetic and keyset), the Message shape, edit,
//! delete, like — and the events they send.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, Ws};

const MESSAGE_KEYS: [&str; 20] = [
    "id",
    "room_id",
    "content",
    "message_type",
    "local_temp_id",
    "files_data",
    "duration",
    "created_at",
    "edited_at",
    "is_read",
    "read_count",
    "is_deleted",
    "is_sender",
    "is_liked",
    "like_count",
    "sender_details",
    "receiver_details",
    "reply_to",
    "reactions",
    "forwarded_from",
];

pub fn assert_message_shape(m: &Value) {
    let object = m.as_object().expect("message object");
    for key in MESSAGE_KEYS {
        assert!(object.contains_key(key), "message lacks {key}: {m}");
    }
    assert_eq!(object.len(), MESSAGE_KEYS.len(), "no extra keys: {m}");
    for who in ["sender_details", "receiver_details"] {
        // A group message has no receiver.
        if who == "receiver_details" && m[who].is_null() {
            continue;
        }
        let user = m[who].as_object().expect("user");
        for key in ["id", "name", "email", "avatar_url", "is_online"] {
            assert!(user.contains_key(key), "{who} lacks {key}");
        }
    }
    let created = m["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");
}

/// Sends messages numbered `from..=to` and waits for all echoes.
async fn fill(ws: &mut Ws, room: i64, from: usize, to: usize) {
    let n = (from..=to).count();
    for i in from..=to {
        ws.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": format!("m{i}")}})).await;
    }
    for _ in 0..n {
        ws.expect("new_message").await;
    }
}

fn contents(page: &Value) -> Vec<String> {
    page["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn page_arithmetic_on_0_1_50_51_and_120_messages() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut ws = s.ws(&ann).await;
    let mut sent = 0;
    for (total, pages) in [(0usize, 0i64), (1, 1), (50, 1), (51, 2), (120, 3)] {
        fill(&mut ws, room, sent + 1, total).await;
        sent = total;
        let first = s.get(&format!("/api/chat/rooms/{room}/messages?page=1&per_page=50"), &bob.token).await;
        assert_eq!(first.status, StatusCode::OK);
        let j = &first.json;
        assert_eq!(
            (j["total"].as_i64().unwrap(), j["total_pages"].as_i64().unwrap()),
            (total as i64, pages),
            "{total}"
        );
        assert_eq!(j["page"], 1);
        assert_eq!(j["per_page"], 50);
        assert_eq!(j["has_more"], pages > 1, "{total}");
        let names = contents(j);
        assert_eq!(names.len(), total.min(50));
        if total > 0 {
            assert_eq!(names.last().unwrap(), &format!("m{total}"), "page 1 ends with the newest");
            assert_eq!(names[0], format!("m{}", total.saturating_sub(50) + 1), "oldest first inside the page");
        }
        if total == 120 {
            let last = s.get(&format!("/api/chat/rooms/{room}/messages?page=3&per_page=50"), &bob.token).await;
            assert_eq!(contents(&last.json), (1..=20).map(|i| format!("m{i}")).collect::<Vec<_>>());
            assert_eq!(last.json["has_more"], false);
            let beyond = s.get(&format!("/api/chat/rooms/{room}/messages?page=4"), &bob.token).await;
            assert_eq!(contents(&beyond.json).len(), 0);
        }
    }
    let page = s.get(&format!("/api/chat/rooms/{room}/messages?per_page=1"), &bob.token).await;
    let m = &page.json["messages"][0];
    assert_message_shape(m);
    assert_eq!(
        (m["is_sender"].as_bool(), m["local_temp_id"].clone(), m["files_data"].clone()),
        (Some(false), Value::Null, Value::Null)
    );
    for bad in [
        "per_page=0",
        "per_page=101",
        "page=0",
        "page=x",
        "limit=101&before_id=5",
        "before_id=1&after_id=2",
        "before_id=abc",
    ] {
        let r = s.get(&format!("/api/chat/rooms/{room}/messages?{bad}"), &bob.token).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    s.stop().await;
}

#[tokio::test]
async fn keyset_pages_walk_backwards_and_catch_up() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut ws = s.ws(&ann).await;
    fill(&mut ws, room, 1, 25).await;
    let all = s.get(&format!("/api/chat/rooms/{room}/messages?per_page=100"), &bob.token).await;
    let ids: Vec<i64> = all.json["messages"].as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let older = s.get(&format!("/api/chat/rooms/{room}/messages?before_id={}&limit=10", ids[20]), &bob.token).await;
    assert_eq!(contents(&older.json), (11..=20).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(
        (older.json["has_more"].as_bool(), older.json["page"].clone(), older.json["total_pages"].clone()),
        (Some(true), Value::Null, Value::Null)
    );
    let oldest = s.get(&format!("/api/chat/rooms/{room}/messages?before_id={}&limit=10", ids[5]), &bob.token).await;
    assert_eq!((contents(&oldest.json).len(), oldest.json["has_more"].as_bool()), (5, Some(false)));
    let newer = s.get(&format!("/api/chat/rooms/{room}/messages?after_id={}&limit=3", ids[20]), &bob.token).await;
    assert_eq!(contents(&newer.json), ["m22", "m23", "m24"]);
    assert_eq!(newer.json["has_more"], true);
    let caught_up = s.get(&format!("/api/chat/rooms/{room}/messages?after_id={}", ids[24]), &bob.token).await;
    assert_eq!((contents(&caught_up.json).len(), caught_up.json["has_more"].as_bool()), (0, Some(false)));
    s.stop().await;
}

#[tokio::test]
async fn edit_delete_and_like_follow_the_rules_and_reach_the_room() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut ann_ws = s.ws(&ann).await;
    let mut bob_ws = s.ws(&bob).await;
    let msg = s.say(&mut ann_ws, room, "hello").await;
    let id = msg["id"].as_i64().unwrap();
    bob_ws.expect("new_message").await;

    let form = s
        .raw(
            Method::PUT,
            &format!("/api/chat/messages/{id}"),
            Some(&ann.token),
            Some("application/x-www-form-urlencoded"),
            b"content=Updated+message+text".to_vec(),
        )
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text());
    assert_message_shape(&form.json);
    assert_eq!(form.json["content"], "Updated message text");
    assert!(form.json["edited_at"].is_string());
    let update = bob_ws.expect("message_update").await;
    assert_eq!(
        (
            update["data"]["content"].as_str(),
            update["data"]["is_sender"].as_bool(),
            update["data"]["local_temp_id"].clone()
        ),
        (Some("Updated message text"), Some(false), Value::Null)
    );
    let json_edit = s
        .send_json(Method::PUT, &format!("/api/chat/messages/{id}"), Some(&ann.token), json!({"content": "again"}))
        .await;
    assert_eq!(json_edit.json["content"], "again");

    let not_sender = s
        .send_json(Method::PUT, &format!("/api/chat/messages/{id}"), Some(&bob.token), json!({"content": "mine now"}))
        .await;
    assert_eq!(not_sender.status, StatusCode::FORBIDDEN);
    for bad in [json!({"content": ""}), json!({"content": "x".repeat(5001)}), json!({})] {
        let r = s.send_json(Method::PUT, &format!("/api/chat/messages/{id}"), Some(&ann.token), bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    let like = s.post(&format!("/api/chat/messages/{id}/like"), &bob.token, json!({})).await;
    assert_eq!(like.json, json!({"id": id, "is_liked": true, "like_count": 1}));
    let twice = s.post(&format!("/api/chat/messages/{id}/like"), &bob.token, json!({})).await;
    assert_eq!(twice.json["like_count"], 1, "liking is idempotent");
    let ev = ann_ws.expect("message_like").await;
    assert_eq!(ev["data"], json!({"id": id, "room_id": room, "user_id": bob.id, "like_count": 1}));
    let seen = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    assert_eq!(
        (seen.json["messages"][0]["is_liked"].as_bool(), seen.json["messages"][0]["like_count"].as_i64()),
        (Some(true), Some(1))
    );
    let seen_by_ann = s.get(&format!("/api/chat/rooms/{room}/messages"), &ann.token).await;
    assert_eq!(seen_by_ann.json["messages"][0]["is_liked"], false);
    let unlike =
        s.raw(Method::DELETE, &format!("/api/chat/messages/{id}/like"), Some(&bob.token), None, Vec::new()).await;
    assert_eq!(unlike.json, json!({"id": id, "is_liked": false, "like_count": 0}));

    let not_yours =
        s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&bob.token), None, Vec::new()).await;
    assert_eq!(not_yours.status, StatusCode::FORBIDDEN);
    let deleted = s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_message_shape(&deleted.json);
    assert_eq!(
        (deleted.json["content"].as_str(), deleted.json["is_deleted"].as_bool(), deleted.json["files_data"].clone()),
        (Some(""), Some(true), Value::Null)
    );
    assert_eq!(deleted.json["id"], id);
    let ev = bob_ws.expect("message_delete").await;
    assert_eq!(ev["data"], json!({"id": id, "room_id": room}));
    let edit_deleted = s
        .send_json(Method::PUT, &format!("/api/chat/messages/{id}"), Some(&ann.token), json!({"content": "zombie"}))
        .await;
    assert_eq!(edit_deleted.status, StatusCode::BAD_REQUEST);
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    assert_eq!(
        (page.json["messages"][0]["content"].as_str(), page.json["messages"][0]["is_deleted"].as_bool()),
        (Some(""), Some(true))
    );
    let stored = s.sql_text(&format!("SELECT content FROM chat_messages WHERE id = {id}")).await;
    assert_eq!(stored, "", "the row is kept and blanked");
    s.stop().await;
}
