//! Search (SPEC section 10): substring semantics in every script through
//! the trigram index (3+ characters) and a bounded scan (shorter), only the
//! caller's rooms, never a deleted message, keyset paging, highlights.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::TestServer;

fn contents(r: &Value) -> Vec<String> {
    r["results"].as_array().map_or_else(Vec::new, |results| {
        results.iter().map(|x| x["message"]["content"].as_str().unwrap_or("").to_owned()).collect()
    })
}

fn encode(q: &str) -> String {
    q.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test]
async fn search_finds_substrings_in_every_script_only_in_the_callers_rooms() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let carl = s.user("carl").await;
    let other = s.room(&bob, &carl).await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    for text in
        ["Salom, dunyo! Qalaysiz?", "Привет, как дела?", "我们明天一起吃午饭吧", "party 🎉 tonight", "see <you> & me"]
    {
        s.say(&mut a, room, text).await;
    }
    s.say(&mut b, other, "Привет from another room").await;
    let doomed = s.say(&mut a, room, "привет, this one gets deleted").await;
    let id = doomed["id"].as_i64().expect("id");
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);

    let find = |q: &str| {
        let path = format!("/api/chat/search?q={}", encode(q));
        let token = ann.token.clone();
        let s = &s;
        async move { s.get(&path, &token).await }
    };
    assert_eq!(contents(&find("dunyo").await.json), ["Salom, dunyo! Qalaysiz?"], "Uzbek Latin");
    assert_eq!(
        contents(&find("ПРИВЕТ").await.json),
        ["Привет, как дела?"],
        "Cyrillic, any case; not bob's other room, not deleted"
    );
    assert_eq!(contents(&find("一起吃").await.json), ["我们明天一起吃午饭吧"], "Chinese");
    assert_eq!(contents(&find("🎉").await.json), ["party 🎉 tonight"], "one emoji: the short-query scan");
    assert_eq!(contents(&find("明天").await.json), ["我们明天一起吃午饭吧"], "two characters");
    let escaped = find("you").await;
    assert_eq!(escaped.json["results"][0]["highlight"], "see &lt;<mark>you</mark>&gt; &amp; me");
    assert!(escaped.json["results"][0]["message"]["id"].is_i64());
    assert_eq!(find("nothing like it").await.json, json!({"results": [], "next_before_id": null}));
    // Bob sees his other room; carl does not see ann's.
    let bobs = s.get(&format!("/api/chat/search?q={}", encode("привет")), &bob.token).await;
    assert_eq!(contents(&bobs.json).len(), 2);
    let carls = s.get(&format!("/api/chat/search?q={}", encode("привет")), &carl.token).await;
    assert_eq!(contents(&carls.json), ["Привет from another room"]);
    let not_mine = s.get(&format!("/api/chat/search?q=dunyo&room_id={room}"), &carl.token).await;
    assert_eq!(not_mine.status, StatusCode::NOT_FOUND);
    for bad in ["/api/chat/search", "/api/chat/search?q=", "/api/chat/search?q=abc&limit=0"] {
        assert_eq!(s.get(bad, &ann.token).await.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    s.stop().await;
}

#[tokio::test]
async fn search_pages_newest_first_and_follows_edits() {
    let s = TestServer::start().await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.say(&mut a, room, &format!("report number {i}")).await["id"].as_i64().expect("id"));
    }
    let first = s.get("/api/chat/search?q=report&limit=2", &ann.token).await;
    assert_eq!(contents(&first.json), ["report number 4", "report number 3"]);
    let next = first.json["next_before_id"].as_i64().expect("more");
    let second = s.get(&format!("/api/chat/search?q=report&limit=2&before_id={next}"), &ann.token).await;
    assert_eq!(contents(&second.json), ["report number 2", "report number 1"]);
    let last = s.get(&format!("/api/chat/search?q=report&limit=2&before_id={}", ids[1]), &ann.token).await;
    assert_eq!(
        (contents(&last.json), last.json["next_before_id"].clone()),
        (vec!["report number 0".to_owned()], Value::Null)
    );
    // An edit is found by its new text, not its old one.
    let edit = s
        .send_json(
            Method::PUT,
            &format!("/api/chat/messages/{}", ids[0]),
            Some(&ann.token),
            json!({"content": "summary zero"}),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK);
    assert_eq!(contents(&s.get("/api/chat/search?q=summary", &ann.token).await.json), ["summary zero"]);
    assert_eq!(contents(&s.get("/api/chat/search?q=report&limit=10", &ann.token).await.json).len(), 4);
    s.stop().await;
}
