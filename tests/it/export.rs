//! Export (issue 14): `GET /api/chat/export` is a zip of everything the
//! caller can see, checked against the REST API; `chatd export` writes the
//! same offline.

use std::io::Read;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::attachments::{file, sample};
use crate::support::TestServer;

fn entry(zip: &mut zip::ZipArchive<std::io::Cursor<Vec<u8>>>, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    zip.by_name(name).unwrap_or_else(|e| panic!("{name}: {e}")).read_to_end(&mut out).expect("read");
    out
}

#[tokio::test]
async fn an_export_holds_what_the_api_shows_and_nothing_else() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let carl = s.user("carl").await;
    let with_carl = s.room(&ann, &carl).await;
    let not_anns = s.room(&bob, &carl).await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    let png = sample("png");
    for i in 0..7 {
        s.say(&mut a, room, &format!("hello {i}")).await;
    }
    a.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "image", "content": "map", "local_temp_id": "img", "files_data": [file("map.png", &png, "image/png")]}})).await;
    a.expect_where("new_message", |v| v["data"]["local_temp_id"] == "img").await;
    s.say(&mut a, with_carl, "to carl").await;
    s.say(&mut b, not_anns, "not for ann").await;

    let r = s.raw(Method::GET, "/api/chat/export", Some(&ann.token), None, Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/zip");
    assert_eq!(r.headers["content-length"], r.body.len().to_string().as_str());
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(r.body.to_vec())).expect("a zip");
    let rooms: Value = serde_json::from_slice(&entry(&mut zip, "rooms.json")).expect("json");
    let mut ids: Vec<i64> = rooms.as_array().expect("list").iter().filter_map(|r| r["id"].as_i64()).collect();
    ids.sort_unstable();
    let api = s.get("/api/chat/rooms", &ann.token).await;
    let mut api_ids: Vec<i64> =
        api.json["rooms"].as_array().expect("rooms").iter().filter_map(|r| r["id"].as_i64()).collect();
    api_ids.sort_unstable();
    assert_eq!(ids, api_ids, "the caller's rooms, no other");
    assert!(!ids.contains(&not_anns));
    assert_eq!(rooms[0]["members"].as_array().map(Vec::len), Some(2));
    for id in api_ids {
        let exported: Value = serde_json::from_slice(&entry(&mut zip, &format!("rooms/{id}.json"))).expect("json");
        let page = s.get(&format!("/api/chat/rooms/{id}/messages?per_page=100"), &ann.token).await;
        let want: Vec<(Value, Value)> = page.json["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| (m["id"].clone(), m["content"].clone()))
            .collect();
        let got: Vec<(Value, Value)> =
            exported.as_array().expect("list").iter().map(|m| (m["id"].clone(), m["content"].clone())).collect();
        assert_eq!(got, want, "room {id}: the same messages, oldest first");
    }
    // The image's file is inside, under the path the message names.
    let exported: Value = serde_json::from_slice(&entry(&mut zip, &format!("rooms/{room}.json"))).expect("json");
    let path = exported.as_array().and_then(|m| m.last()).expect("last")["files_data"][0]["file_path"]
        .as_str()
        .expect("path")
        .to_owned();
    assert!(path.starts_with("/static/chat_files/images/") && !path.contains('?'), "{path}");
    assert_eq!(entry(&mut zip, path.trim_start_matches('/')), png);
    assert_eq!(s.raw(Method::GET, "/api/chat/export", None, None, Vec::new()).await.status, StatusCode::UNAUTHORIZED);
    a.close().await;
    b.close().await;

    // Offline, the same contents.
    let dir = s.stop().await;
    let out = dir.path().join("ann.zip");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["export", "--email", "ann@test.io", "--out"])
        .arg(&out)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--static-dir")
        .arg(dir.path().join("static"))
        .output()
        .expect("run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut offline = zip::ZipArchive::new(std::io::Cursor::new(std::fs::read(&out).expect("zip"))).expect("a zip");
    assert_eq!(offline.len(), zip.len());
    let ids = |bytes: Vec<u8>| -> Vec<Value> {
        let list: Value = serde_json::from_slice(&bytes).expect("json");
        list.as_array().expect("list").iter().map(|m| m["id"].clone()).collect()
    };
    let name = format!("rooms/{room}.json");
    assert_eq!(ids(entry(&mut offline, &name)), ids(entry(&mut zip, &name)), "the same messages (presence may differ)");
}
