//! Private file links (SPEC section 11): a stored file is served only with a
//! valid, unexpired signature; renders sign links for those who can see the
//! message; share links for someone outside; `CHAT_FILE_LINKS=public`.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::attachments::{file, sample, url_path};
use crate::support::{TestServer, TestUser, Ws};

/// Sends an image and returns (message id, its file URL as rendered).
async fn send_image(s: &TestServer, ws: &mut Ws, room: i64) -> (i64, String) {
    let png = sample("png");
    ws.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "image", "content": "", "local_temp_id": "img", "files_data": [file("a.png", &png, "image/png")]}})).await;
    let m = ws.expect("new_message").await;
    let url = m["data"]["files_data"][0]["file_path"].as_str().expect("url").to_owned();
    let _ = s;
    (m["data"]["id"].as_i64().expect("id"), url)
}

/// Path and query of a URL this server rendered.
fn local(s: &TestServer, url: &str) -> String {
    url.strip_prefix(&format!("http://{}", s.addr)).unwrap_or(url).to_owned()
}

async fn status(s: &TestServer, url: &str) -> StatusCode {
    s.raw(Method::GET, &local(s, url), None, None, Vec::new()).await.status
}

fn param<'a>(url: &'a str, name: &str) -> &'a str {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query.split('&').find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('='))).unwrap_or("")
}

#[tokio::test]
async fn files_are_served_only_with_a_valid_unexpired_signature() {
    let s = TestServer::start().await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let (_, url) = send_image(&s, &mut a, room).await;
    let exp: u64 = param(&url, "exp").parse().expect("exp");
    assert_eq!(exp % 3600, 0, "rounded to the hour");
    assert!(exp >= chatd::time::now_ms() as u64 / 1000 + 86_400, "valid at least a day");
    assert_eq!(status(&s, &url).await, StatusCode::OK);
    let path = url_path(&url);
    let sig = param(&url, "sig");
    let rel = path.split("/static/").nth(1).expect("rel");
    let past = chatd::time::now_ms() as u64 / 1000 - 1;
    let expired = format!("{path}?exp={past}&sig={}", s.state.keys.file_signer().sign(rel, past));
    for bad in [
        path.to_owned(),
        format!("{path}?exp={exp}"),
        format!("{path}?sig={sig}"),
        format!("{path}?exp={}&sig={sig}", exp + 3600),
        format!("{path}?exp={exp}&sig={}", sig.replace(|c: char| c.is_ascii_alphabetic(), "A")),
        expired,
    ] {
        let r = s.raw(Method::GET, &local(&s, &bad), None, None, Vec::new()).await;
        assert_eq!((r.status, r.json.clone()), (StatusCode::NOT_FOUND, json!({"detail": "Not found"})), "{bad}");
    }
    // The same link within the hour, on REST as on the WebSocket.
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &ann.token).await;
    assert_eq!(page.json["messages"][0]["files_data"][0]["file_path"], url.as_str());
    s.stop().await;
}

#[tokio::test]
async fn a_removed_member_gets_no_new_link_and_a_share_link_opens_for_anyone() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let r = s.post("/api/chat/rooms", &ann.token, json!({"name": "Photos", "member_ids": [bob.id]})).await;
    let group = r.json["id"].as_i64().expect("group");
    let mut a = s.ws(&ann).await;
    let (id, url) = send_image(&s, &mut a, group).await;
    let share = |who: &TestUser, index: usize, body: Value| {
        let token = who.token.clone();
        let s = &s;
        async move { s.post(&format!("/api/chat/messages/{id}/files/{index}/share"), &token, body).await }
    };
    let shared = share(&bob, 0, json!({"ttl_secs": 120})).await;
    assert_eq!(shared.status, StatusCode::CREATED, "{}", shared.text());
    let link = shared.json["url"].as_str().expect("url").to_owned();
    let until = chatd::time::parse_rfc3339_ms(shared.json["expires_at"].as_str().expect("expires_at")).expect("time");
    assert!((until / 1000 - chatd::time::now_ms() / 1000 - 120).abs() <= 2, "{}", shared.json);
    assert_eq!(status(&s, &link).await, StatusCode::OK, "no token needed");
    for (body, want) in [
        (json!({"ttl_secs": 59}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"ttl_secs": 604_801}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        assert_eq!(share(&bob, 0, body).await.status, want);
    }
    assert_eq!(share(&bob, 1, json!({"ttl_secs": 60})).await.status, StatusCode::NOT_FOUND, "no second file");
    // Bob is removed: no render reaches him, so no new link, and no share.
    let removed = s
        .raw(Method::DELETE, &format!("/api/chat/rooms/{group}/members/{}", bob.id), Some(&ann.token), None, Vec::new())
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text());
    assert_eq!(s.get(&format!("/api/chat/rooms/{group}/messages"), &bob.token).await.status, StatusCode::NOT_FOUND);
    assert_eq!(share(&bob, 0, json!({"ttl_secs": 60})).await.status, StatusCode::NOT_FOUND);
    // Links handed out before keep working until their expiry.
    assert_eq!(status(&s, &url).await, StatusCode::OK);
    // A deleted message: no file, no share.
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{id}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(share(&ann, 0, json!({"ttl_secs": 60})).await.status, StatusCode::NOT_FOUND);
    assert_eq!(status(&s, &url).await, StatusCode::NOT_FOUND, "the file is gone");
    s.stop().await;
}

#[tokio::test]
async fn public_links_keep_part_one_paths() {
    let s = TestServer::start_with(|c| c.file_links = chatd::config::FileLinks::Public).await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let (_, url) = send_image(&s, &mut a, room).await;
    assert!(!url.contains('?'), "{url}");
    assert_eq!(status(&s, &url).await, StatusCode::OK);
    s.stop().await;
}
