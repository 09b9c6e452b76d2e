//! Replies (SPEC section 10): `reply_to_id` on `send_message`, `reply_to` on
//! every Message, rendered from the replied message as it is now.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, Ws};

async fn reply(ws: &mut Ws, room: i64, text: &str, to: Value, temp: &str) -> Value {
    ws.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": text, "local_temp_id": temp, "reply_to_id": to}})).await;
    loop {
        let frame = ws.next().await.expect("a frame");
        let own = frame["data"]["local_temp_id"] == temp || frame["local_temp_id"] == temp;
        if own && (frame["type"] == "new_message" || frame["type"] == "error") {
            return frame;
        }
    }
}

#[tokio::test]
async fn replies_carry_the_replied_message_as_it_is_now() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    let long = "x".repeat(150);
    let first = s.say(&mut a, room, &long).await;
    let answer = reply(&mut b, room, "agreed", first["id"].clone(), "r1").await;
    assert_eq!(answer["type"], "new_message", "{answer}");
    let expected = json!({"id": first["id"], "sender_id": ann.id, "sender_name": "ann", "message_type": "text", "preview": "x".repeat(100), "is_deleted": false});
    assert_eq!(answer["data"]["reply_to"], expected, "a preview is the first 100 characters");
    assert_eq!(a.expect("new_message").await["data"]["reply_to"], expected, "the other side sees it too");
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &ann.token).await;
    assert_eq!(page.json["messages"][0]["reply_to"], Value::Null, "a message that answers nothing");
    assert_eq!(page.json["messages"][1]["reply_to"], expected);

    // Deleting the replied message empties the preview everywhere it shows.
    let id = first["id"].as_i64().expect("id");
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    let shown = &page.json["messages"][1]["reply_to"];
    assert_eq!((shown["is_deleted"].clone(), shown["preview"].clone()), (json!(true), json!("")));
    s.stop().await;
}

#[tokio::test]
async fn a_reply_must_answer_a_message_of_the_same_room() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let carl = s.user("carl").await;
    let other = s.room(&ann, &carl).await;
    let mut a = s.ws(&ann).await;
    let elsewhere = s.say(&mut a, other, "in the other room").await;
    for (to, temp) in [(elsewhere["id"].clone(), "x1"), (json!(999_999), "x2")] {
        let refused = reply(&mut a, room, "nope", to, temp).await;
        assert_eq!(refused["type"], "error");
        assert_eq!(refused["message"], "reply_to_id must be a message of the same room");
    }
    let zero = reply(&mut a, room, "nope", json!(0), "x3").await;
    assert_eq!(zero["message"], "reply_to_id must be positive");
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    assert_eq!(page.json["total"], 0, "nothing was stored");
    s.stop().await;
}
