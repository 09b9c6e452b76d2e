//! The rendered-page cache (issue 15): the newest page, served from one
//! rendering per room, is never stale after any change that shows on it,
//! and never shows one viewer's per-viewer fields to another.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, TestUser, WAIT};

const NEWEST: &str = "messages?page=1&per_page=50";

/// The newest page as the cache serves it, and the same messages read
/// afresh (a keyset read, which never goes through the cache).
async fn cached_and_fresh(s: &TestServer, room: i64, user: &TestUser) -> (Value, Value) {
    let cached = s.get(&format!("/api/chat/rooms/{room}/{NEWEST}"), &user.token).await;
    assert_eq!(cached.status, StatusCode::OK, "{}", cached.text());
    let fresh = s.get(&format!("/api/chat/rooms/{room}/messages?before_id={}&limit=50", i64::MAX), &user.token).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text());
    (cached.json, fresh.json)
}

/// Reads the newest page twice (so the second is a hit), then checks that it
/// matches a fresh read and holds what `expect` wants.
async fn check(s: &TestServer, room: i64, user: &TestUser, what: &str, expect: impl Fn(&Value) -> bool) {
    let (cached, fresh) = cached_and_fresh(s, room, user).await;
    assert_eq!(cached["messages"], fresh["messages"], "after {what}: the cached page differs from a fresh read");
    assert!(expect(&cached), "after {what}: {cached}");
    let (again, _) = cached_and_fresh(s, room, user).await;
    assert_eq!(again, cached, "after {what}: a hit gives the same page");
}

fn newest(page: &Value) -> &Value {
    page["messages"].as_array().and_then(|m| m.last()).unwrap_or(&Value::Null)
}

async fn delete(s: &TestServer, path: &str, user: &TestUser) -> StatusCode {
    s.raw(Method::DELETE, path, Some(&user.token), None, Vec::new()).await.status
}

#[tokio::test]
async fn the_newest_page_is_never_stale_after_any_change() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut ws = s.ws(&ann).await;
    let first = s.say(&mut ws, room, "first").await;
    check(&s, room, &bob, "the first message", |p| p["total"] == 1).await;
    assert!(s.state.pages.usage().0 >= 1, "the page is cached");

    let sent = s.say(&mut ws, room, "second").await;
    let id = sent["id"].as_i64().expect("id");
    check(&s, room, &bob, "a send", |p| p["total"] == 2 && newest(p)["content"] == "second").await;

    let path = format!("/api/chat/messages/{id}");
    let edit = s.send_json(Method::PUT, &path, Some(&ann.token), json!({"content": "edited"})).await;
    assert_eq!(edit.status, StatusCode::OK);
    check(&s, room, &bob, "an edit", |p| newest(p)["content"] == "edited" && newest(p)["edited_at"].is_string()).await;

    assert_eq!(s.post(&format!("/api/chat/messages/{id}/like"), &bob.token, json!({})).await.status, StatusCode::OK);
    check(&s, room, &bob, "a like", |p| newest(p)["like_count"] == 1 && newest(p)["is_liked"] == true).await;
    check(&s, room, &ann, "a like, for the sender", |p| newest(p)["is_liked"] == false).await;
    assert_eq!(delete(&s, &format!("/api/chat/messages/{id}/like"), &bob).await, StatusCode::OK);
    check(&s, room, &bob, "an unlike", |p| newest(p)["like_count"] == 0 && newest(p)["is_liked"] == false).await;

    let react = s.post(&format!("/api/chat/messages/{id}/reactions"), &bob.token, json!({"emoji": "👍"})).await;
    assert_eq!(react.status, StatusCode::OK);
    let thumbs = json!([{"emoji": "👍", "count": 1, "me": true}]);
    check(&s, room, &bob, "a reaction", |p| newest(p)["reactions"] == thumbs).await;
    let encoded = percent_encoding::utf8_percent_encode("👍", percent_encoding::NON_ALPHANUMERIC).to_string();
    assert_eq!(delete(&s, &format!("/api/chat/messages/{id}/reactions/{encoded}"), &bob).await, StatusCode::OK);
    check(&s, room, &bob, "a reaction removed", |p| newest(p)["reactions"] == json!([])).await;

    check(&s, room, &ann, "nothing yet read", |p| newest(p)["is_read"] == false).await;
    assert_eq!(s.post(&format!("/api/chat/rooms/{room}/read"), &bob.token, json!({})).await.status, StatusCode::OK);
    check(&s, room, &ann, "a read mark", |p| newest(p)["is_read"] == true && newest(p)["read_count"] == 1).await;

    let reply = json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": "re", "reply_to_id": first["id"], "local_temp_id": "re-1"}});
    ws.send(reply).await;
    ws.expect_where("new_message", |v| v["data"]["local_temp_id"] == "re-1").await;
    check(&s, room, &bob, "a reply", |p| newest(p)["reply_to"]["preview"] == "first").await;
    let first_id = first["id"].as_i64().expect("id");
    assert_eq!(delete(&s, &format!("/api/chat/messages/{first_id}"), &ann).await, StatusCode::OK);
    check(&s, room, &bob, "a delete", |p| {
        p["messages"][0]["is_deleted"] == true && newest(p)["reply_to"]["is_deleted"] == true
    })
    .await;
    ws.close().await;
}

#[tokio::test]
async fn group_membership_and_presence_reach_the_cached_page() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let cy = s.user("cy").await;
    let group = s.post("/api/chat/rooms", &ann.token, json!({"name": "g", "member_ids": [bob.id]})).await;
    let room = group.json["id"].as_i64().expect("room id");
    let mut ws = s.ws(&ann).await;
    s.say(&mut ws, room, "hello").await;
    assert_eq!(s.post(&format!("/api/chat/rooms/{room}/read"), &bob.token, json!({})).await.status, StatusCode::OK);
    check(&s, room, &ann, "bob read it", |p| newest(p)["read_count"] == 1).await;
    let outsider = s.get(&format!("/api/chat/rooms/{room}/{NEWEST}"), &cy.token).await;
    assert_eq!(outsider.status, StatusCode::NOT_FOUND, "a cached page is no reason to show it to a stranger");

    let add = s.post(&format!("/api/chat/rooms/{room}/members"), &ann.token, json!({"user_ids": [cy.id]})).await;
    assert_eq!(add.status, StatusCode::OK);
    check(&s, room, &cy, "cy joined", |p| p["total"] == 1).await;
    check(&s, room, &ann, "cy joined (read up to now)", |p| newest(p)["read_count"] == 2).await;
    assert_eq!(delete(&s, &format!("/api/chat/rooms/{room}/members/{}", cy.id), &ann).await, StatusCode::OK);
    let gone = s.get(&format!("/api/chat/rooms/{room}/{NEWEST}"), &cy.token).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "a removed member no longer sees the page");
    check(&s, room, &ann, "cy left", |p| newest(p)["read_count"] == 1).await;

    // Presence is stored after the connection opens or closes, with no
    // answer to wait for: the page must follow within a moment.
    ws.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (cached, fresh) = cached_and_fresh(&s, room, &bob).await;
        if cached["messages"] == fresh["messages"] && newest(&fresh)["sender_details"]["is_online"] == false {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page still shows ann online: {cached}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ws = s.ws(&ann).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (cached, fresh) = cached_and_fresh(&s, room, &bob).await;
        if cached["messages"] == fresh["messages"] && newest(&fresh)["sender_details"]["is_online"] == true {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page still shows ann offline: {cached}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ws.close().await;
}

#[tokio::test]
async fn two_viewers_never_see_each_others_fields() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let cy = s.user("cy").await;
    let group = s.post("/api/chat/rooms", &ann.token, json!({"name": "g", "member_ids": [bob.id, cy.id]})).await;
    let room = group.json["id"].as_i64().expect("room id");
    let mut ws = s.ws(&ann).await;
    let by_ann = s.say(&mut ws, room, "from ann").await["id"].as_i64().expect("id");
    let mut bob_ws = s.ws(&bob).await;
    let by_bob = s.say(&mut bob_ws, room, "from bob").await["id"].as_i64().expect("id");
    s.post(&format!("/api/chat/messages/{by_bob}/like"), &ann.token, json!({})).await;
    s.post(&format!("/api/chat/messages/{by_ann}/reactions"), &bob.token, json!({"emoji": "🎉"})).await;
    s.post(&format!("/api/chat/messages/{by_ann}/reactions"), &cy.token, json!({"emoji": "🎉"})).await;

    // Each reads twice, in turn, so that every read after the first is a hit.
    for _ in 0..2 {
        for (viewer, name) in [(&ann, "ann"), (&bob, "bob"), (&cy, "cy")] {
            let (cached, fresh) = cached_and_fresh(&s, room, viewer).await;
            assert_eq!(cached["messages"], fresh["messages"], "{name}");
            let [from_ann, from_bob] = [&cached["messages"][0], &cached["messages"][1]];
            assert_eq!(from_ann["is_sender"], viewer.id == ann.id, "{name}");
            assert_eq!(from_bob["is_sender"], viewer.id == bob.id, "{name}");
            assert_eq!(from_bob["is_liked"], viewer.id == ann.id, "{name}: only ann liked it");
            assert_eq!(from_ann["is_liked"], false, "{name}");
            let me = viewer.id == bob.id || viewer.id == cy.id;
            assert_eq!(from_ann["reactions"], json!([{"emoji": "🎉", "count": 2, "me": me}]), "{name}");
        }
    }
    assert_eq!(s.state.pages.usage().0, 1, "one rendering serves all three");
    ws.close().await;
    bob_ws.close().await;
}

#[tokio::test]
async fn cached_file_links_are_those_a_rendering_now_gives_and_thumbnails_arrive() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut ws = s.ws(&ann).await;
    let png = crate::thumbnails::encoded(64, 48, image::ImageFormat::Png);
    let sent = crate::thumbnails::send_image(&mut ws, room, "a.png", "image/png", &png, "img-1").await;
    let id = sent["id"].as_i64().expect("id");
    // The thumbnail worker may finish between any two reads here, so this
    // page is not compared with a second read; the one after the thumbnail's
    // update is.
    let (cached, _) = cached_and_fresh(&s, room, &bob).await;
    assert_eq!(newest(&cached)["id"], id, "the image is on the cached page");
    ws.expect_where("message_update", |v| {
        v["data"]["id"] == id && v["data"]["files_data"][0]["thumbnail_path"].is_string()
    })
    .await;
    let (cached, _) = cached_and_fresh(&s, room, &bob).await;
    let file = &newest(&cached)["files_data"][0];
    assert!(file["thumbnail_path"].is_string(), "the thumbnail's update reached the page: {file}");
    check(&s, room, &bob, "a thumbnail", |_| true).await;
    for link in [&file["file_path"], &file["thumbnail_path"]] {
        let link = link.as_str().expect("link");
        let path = link.strip_prefix(&s.url("")).expect("absolute link");
        let rel = path.split('?').next().and_then(|p| p.strip_prefix("/static/")).expect("static path");
        assert_eq!(path, s.file_link(rel), "the link a rendering now gives, valid for the whole lifetime");
        let fetched = s.raw(Method::GET, path, None, None, Vec::new()).await;
        assert_eq!(fetched.status, StatusCode::OK, "{path}");
    }
    ws.close().await;
}
