//! Reactions (SPEC section 10): one emoji per reaction, at most 20 different
//! ones per message, in order of first use, `me` from the viewer's side, the
//! `message_reaction` event live and in replays.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::TestServer;

/// An emoji as a path segment.
fn encoded(emoji: &str) -> String {
    emoji.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test]
async fn reactions_add_remove_and_render_per_viewer() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    let (_, _, cursor) = {
        let mut probe = s.ws_query(&format!("token={}", bob.token)).await.expect("connect");
        let synced = probe.expect("synced").await;
        (probe, (), synced["data"]["cursor"].as_str().expect("cursor").to_owned())
    };
    let message = s.say(&mut a, room, "lunch?").await;
    let id = message["id"].as_i64().expect("id");
    assert_eq!(message["reactions"], json!([]));
    let path = format!("/api/chat/messages/{id}/reactions");
    let first = s.post(&path, &ann.token, json!({"emoji": "👍"})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json, json!({"id": id, "reactions": [{"emoji": "👍", "count": 1, "me": true}]}));
    s.post(&path, &bob.token, json!({"emoji": "🎉"})).await;
    let again = s.post(&path, &bob.token, json!({"emoji": "👍"})).await;
    let twice = s.post(&path, &bob.token, json!({"emoji": "👍"})).await;
    assert_eq!(again.json, twice.json, "adding twice is adding once");
    assert_eq!(
        twice.json["reactions"],
        json!([{"emoji": "👍", "count": 2, "me": true}, {"emoji": "🎉", "count": 1, "me": true}])
    );

    // Live, per viewer.
    let mut seen_by_ann = Vec::new();
    for _ in 0..3 {
        seen_by_ann.push(a.expect("message_reaction").await);
    }
    let last = seen_by_ann.last().expect("events");
    assert_eq!(
        (last["data"]["user_id"].clone(), last["data"]["emoji"].clone(), last["data"]["added"].clone()),
        (json!(bob.id), json!("👍"), json!(true))
    );
    assert_eq!(
        last["data"]["reactions"],
        json!([{"emoji": "👍", "count": 2, "me": true}, {"emoji": "🎉", "count": 1, "me": false}])
    );
    assert!(last["cursor"].is_string(), "stored in the event stream");
    for _ in 0..3 {
        b.expect("message_reaction").await;
    }
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &ann.token).await;
    assert_eq!(
        page.json["messages"][0]["reactions"],
        json!([{"emoji": "👍", "count": 2, "me": true}, {"emoji": "🎉", "count": 1, "me": false}])
    );

    // Removal through the path, idempotent too.
    let removed = s.raw(Method::DELETE, &format!("{path}/{}", encoded("👍")), Some(&bob.token), None, Vec::new()).await;
    assert_eq!(removed.status, StatusCode::OK);
    assert_eq!(
        removed.json["reactions"],
        json!([{"emoji": "👍", "count": 1, "me": false}, {"emoji": "🎉", "count": 1, "me": true}])
    );
    let again = s.raw(Method::DELETE, &format!("{path}/{}", encoded("👍")), Some(&bob.token), None, Vec::new()).await;
    assert_eq!(again.json, removed.json);
    let gone = b.expect_where("message_reaction", |v| v["data"]["added"] == false).await;
    assert_eq!(gone["data"]["emoji"], "👍");

    // A replay from before shows them too, from the current state.
    let mut replay = s.ws_query(&format!("token={}&cursor={cursor}", bob.token)).await.expect("connect");
    let replayed = replay.expect("message_reaction").await;
    assert_eq!(replayed["data"]["reactions"], removed.json["reactions"]);
    s.stop().await;
}

#[tokio::test]
async fn reactions_refuse_what_is_not_one_emoji_or_one_too_many() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let eve = s.user("eve").await;
    let mut a = s.ws(&ann).await;
    let id = s.say(&mut a, room, "react to me").await["id"].as_i64().expect("id");
    let path = format!("/api/chat/messages/{id}/reactions");
    for bad in ["ok", "👍👍", "", " ", "a👍"] {
        let r = s.post(&path, &ann.token, json!({"emoji": bad})).await;
        assert_eq!((r.status, r.detail()), (StatusCode::UNPROCESSABLE_ENTITY, "emoji must be one emoji"), "{bad:?}");
    }
    let strange = s.raw(Method::DELETE, &format!("{path}/ok"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(strange.status, StatusCode::UNPROCESSABLE_ENTITY);
    let outsider = s.post(&path, &eve.token, json!({"emoji": "👍"})).await;
    assert_eq!(outsider.status, StatusCode::NOT_FOUND);
    let twenty = [
        "😀", "😃", "😄", "😁", "😆", "😅", "🤣", "😂", "🙂", "🙃", "😉", "😊", "😇", "🥰", "😍", "🤩", "😘", "😗",
        "😚", "😙",
    ];
    for (i, emoji) in twenty.iter().enumerate() {
        let who = if i % 2 == 0 { &ann } else { &bob };
        assert_eq!(s.post(&path, &who.token, json!({"emoji": emoji})).await.status, StatusCode::OK, "{emoji}");
    }
    let too_many = s.post(&path, &ann.token, json!({"emoji": "🥲"})).await;
    assert_eq!(
        (too_many.status, too_many.detail()),
        (StatusCode::UNPROCESSABLE_ENTITY, "A message may carry at most 20 different reactions")
    );
    assert_eq!(
        s.post(&path, &bob.token, json!({"emoji": "😀"})).await.status,
        StatusCode::OK,
        "an emoji already there is fine"
    );
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);
    let on_deleted = s.post(&path, &bob.token, json!({"emoji": "👍"})).await;
    assert_eq!(on_deleted.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}
