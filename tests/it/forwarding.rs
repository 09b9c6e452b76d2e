//! Forwarding (SPEC section 10): copies in up to ten of the caller's rooms,
//! files shared on disk (deleting the original keeps the copy's file;
//! deleting both removes it), `forwarded_from`, and every refusal.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::attachments::{file, sample};
use crate::support::TestServer;

pub(crate) fn disk_path(s: &TestServer, url: &str) -> std::path::PathBuf {
    let rel = url.split('?').next().and_then(|u| u.split("/static/").nth(1)).expect("a static url");
    s.static_dir().join(rel)
}

#[tokio::test]
async fn a_forward_copies_text_and_files_and_names_its_origin() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let carl = s.user("carl").await;
    let with_carl = s.room(&bob, &carl).await;
    let r = s.post("/api/chat/rooms", &bob.token, json!({"name": "Team", "member_ids": [carl.id]})).await;
    let group = r.json["id"].as_i64().expect("group");
    let mut a = s.ws(&ann).await;
    let mut c = s.ws(&carl).await;
    let png = sample("png");
    a.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "image", "content": "our route", "local_temp_id": "f1", "files_data": [file("map.png", &png, "image/png")]}})).await;
    let original = a.expect("new_message").await["data"].clone();
    let id = original["id"].as_i64().expect("id");
    let url = original["files_data"][0]["file_path"].as_str().expect("url").to_owned();

    // Bob sees ann's message and forwards it into two rooms of his.
    let r = s
        .post(&format!("/api/chat/messages/{id}/forward"), &bob.token, json!({"room_ids": [with_carl, group, group]}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let copies = r.json["messages"].as_array().expect("messages").clone();
    assert_eq!(copies.len(), 2, "a room named twice gets one copy");
    for (copy, room_id) in copies.iter().zip([with_carl, group]) {
        assert_eq!(copy["room_id"], room_id);
        assert_eq!(copy["sender_details"]["id"], bob.id, "the forwarder sends the copy");
        assert_eq!((copy["message_type"].clone(), copy["content"].clone()), (json!("image"), json!("our route")));
        assert_eq!(copy["forwarded_from"], json!({"message_id": id, "sender_name": "ann"}));
        assert_eq!(copy["files_data"][0]["file_path"], url.as_str(), "the same file, no new upload");
        assert_eq!(copy["is_sender"], true);
    }
    // Carl receives both copies live; the original itself was forwarded from nothing.
    for _ in 0..2 {
        assert_eq!(c.expect("new_message").await["data"]["forwarded_from"]["message_id"], id);
    }
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &ann.token).await;
    assert_eq!(page.json["messages"][0]["forwarded_from"], Value::Null);

    // A forward of a forward names the first original.
    let copy_id = copies[0]["id"].as_i64().expect("copy id");
    let again =
        s.post(&format!("/api/chat/messages/{copy_id}/forward"), &carl.token, json!({"room_ids": [group]})).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    let second = &again.json["messages"][0];
    assert_eq!(second["forwarded_from"], json!({"message_id": id, "sender_name": "ann"}));
    let second_id = second["id"].as_i64().expect("id");

    // Deleting the original keeps the file for the copies; deleting every
    // message that uses it removes it.
    let path = disk_path(&s, &url);
    assert!(path.exists());
    for (who, message) in [(&ann, id), (&bob, copies[0]["id"].as_i64().expect("id")), (&carl, second_id)] {
        let del =
            s.raw(Method::DELETE, &format!("/api/chat/messages/{message}"), Some(&who.token), None, Vec::new()).await;
        assert_eq!(del.status, StatusCode::OK, "{}", del.text());
        assert!(path.exists(), "still used by another message");
        let fetched = s.raw(Method::GET, &url.replace(&format!("http://{}", s.addr), ""), None, None, Vec::new()).await;
        assert_eq!(fetched.status, StatusCode::OK);
    }
    let last = copies[1]["id"].as_i64().expect("id");
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{last}"), Some(&bob.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);
    assert!(!path.exists(), "the last message using the file is gone, and so is the file");
    s.stop().await;
}

#[tokio::test]
async fn forwards_are_refused_whole() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let carl = s.user("carl").await;
    let with_carl = s.room(&ann, &carl).await;
    let not_anns = s.room(&bob, &carl).await;
    let mut a = s.ws(&ann).await;
    let id = s.say(&mut a, room, "forward me").await["id"].as_i64().expect("id");
    let forward = |who: &str, message: i64, body: Value| {
        let token = who.to_owned();
        let s = &s;
        async move { s.post(&format!("/api/chat/messages/{message}/forward"), &token, body).await }
    };
    let count = |token: String, room: i64| {
        let s = &s;
        async move {
            s.get(&format!("/api/chat/rooms/{room}/messages"), &token).await.json["messages"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    // Into a room the caller is not in: nothing is copied anywhere.
    let r = forward(&ann.token, id, json!({"room_ids": [with_carl, not_anns]})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(count(ann.token.clone(), with_carl).await, 0, "all or nothing");
    // From a message the caller cannot see.
    assert_eq!(forward(&carl.token, id, json!({"room_ids": [with_carl]})).await.status, StatusCode::NOT_FOUND);
    assert_eq!(forward(&ann.token, 999_999, json!({"room_ids": [with_carl]})).await.status, StatusCode::NOT_FOUND);
    // Too few or too many rooms, or no list at all.
    let eleven: Vec<i64> = (1..=11).collect();
    for body in [json!({"room_ids": []}), json!({"room_ids": eleven}), json!({}), json!({"room_ids": "1"})] {
        assert_eq!(forward(&ann.token, id, body.clone()).await.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    // A deleted message.
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(forward(&ann.token, id, json!({"room_ids": [with_carl]})).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(count(ann.token.clone(), with_carl).await, 0);
    s.stop().await;
}
