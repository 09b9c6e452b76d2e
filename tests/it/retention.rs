//! Message retention (`CHAT_MESSAGE_RETENTION_DAYS`): messages older than
//! the retention go in the background with their likes, reactions, quotes,
//! files and thumbnails and their search entries; younger ones, and files a
//! younger message still uses, stay. Off by default.

use std::time::Duration;

use serde_json::{Value, json};

use crate::attachments::file;
use crate::forwarding::disk_path;
use crate::search::{stop_and_check_index, wait_for_indexer};
use crate::support::{TestServer, WAIT};
use crate::thumbnails::{encoded, send_image};

const DAY_MS: i64 = 86_400_000;

fn ids(page: &Value) -> Vec<i64> {
    page["messages"].as_array().map_or_else(Vec::new, |m| m.iter().filter_map(|m| m["id"].as_i64()).collect())
}

fn db(s: &TestServer) -> rusqlite::Connection {
    rusqlite::Connection::open(chatd::store::db_path(&s.dir.path().join("data"))).expect("open the database")
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

#[tokio::test]
async fn messages_past_retention_go_with_their_files_and_younger_ones_stay() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let carl = s.user("carl").await;
    let with_carl = s.room(&bob, &carl).await;
    let mut b = s.ws(&bob).await;
    let cursor = b.expect("synced").await["data"]["cursor"].as_str().expect("cursor").to_owned();
    let mut a = s.ws(&ann).await;

    // To be aged: a text with a like and a reaction, an image bob forwards
    // (its file stays with the copy), an image with a thumbnail (both go).
    let text = s.say(&mut a, room, "an old secret about llamas").await;
    let text_id = text["id"].as_i64().expect("id");
    assert!(s.post(&format!("/api/chat/messages/{text_id}/like"), &bob.token, json!({})).await.status.is_success());
    let r = s.post(&format!("/api/chat/messages/{text_id}/reactions"), &bob.token, json!({"emoji": "🦙"})).await;
    assert!(r.status.is_success(), "{}", r.text());
    let png = encoded(640, 320, image::ImageFormat::Png);
    a.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "image", "content": "shared llama", "local_temp_id": "shared", "files_data": [file("shared.png", &crate::attachments::sample("png"), "image/png")]}})).await;
    let shared = a.expect_where("new_message", |v| v["data"]["local_temp_id"] == "shared").await["data"].clone();
    let shared_id = shared["id"].as_i64().expect("id");
    let alone = send_image(&mut a, room, "alone.png", "image/png", &png, "alone").await;
    let alone_id = alone["id"].as_i64().expect("id");
    let update = b.expect_where("message_update", |v| v["data"]["id"] == alone_id).await;
    let thumb = update["data"]["files_data"][0]["thumbnail_path"].as_str().expect("a thumbnail").to_owned();
    let (alone_file, thumb_file) =
        (disk_path(&s, alone["files_data"][0]["file_path"].as_str().expect("path")), disk_path(&s, &thumb));
    let shared_file = disk_path(&s, shared["files_data"][0]["file_path"].as_str().expect("path"));

    // Younger: the forwarded copy, a reply quoting the old text, a new text.
    let r =
        s.post(&format!("/api/chat/messages/{shared_id}/forward"), &bob.token, json!({"room_ids": [with_carl]})).await;
    assert!(r.status.is_success(), "{}", r.text());
    let copy_id = r.json["messages"][0]["id"].as_i64().expect("copy");
    a.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": "about those llamas", "local_temp_id": "reply", "reply_to_id": text_id}})).await;
    let reply = a.expect_where("new_message", |v| v["data"]["local_temp_id"] == "reply").await["data"].clone();
    assert_eq!(reply["reply_to"]["id"], text_id);
    let fresh = s.say(&mut a, room, "a fresh llama fact").await;
    wait_for_indexer(&s).await;
    let quota_before = count(&db(&s), &format!("SELECT storage_bytes FROM users WHERE id = {}", ann.id));
    assert!(quota_before > 0);

    // Forty days pass for the first three; then a server with 30 days' retention.
    let mut config = s.state.config.clone();
    let old = format!("{text_id}, {shared_id}, {alone_id}");
    let dir = s.stop().await;
    {
        let s_db = rusqlite::Connection::open(chatd::store::db_path(&dir.path().join("data"))).expect("open");
        let aged = s_db
            .execute(
                &format!("UPDATE chat_messages SET created_at = created_at - 40 * {DAY_MS} WHERE id IN ({old})"),
                [],
            )
            .expect("age");
        assert_eq!(aged, 3);
    }
    config.message_retention = Some(Duration::from_secs(30 * 86_400));
    let s = TestServer::start_in(dir, config).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let page = loop {
        let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &ann.token).await.json;
        if !ids(&page).contains(&text_id) {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "retention never removed the old messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ids(&page), [reply["id"].as_i64().expect("id"), fresh["id"].as_i64().expect("id")]);
    assert_eq!(page["messages"][0]["reply_to"], Value::Null, "the quote let go of the removed message");
    assert_eq!(page["messages"][0]["content"], "about those llamas", "the reply itself stays");
    let copies = s.get(&format!("/api/chat/rooms/{with_carl}/messages"), &carl.token).await.json;
    assert_eq!(ids(&copies), [copy_id], "the younger copy stays");

    // Files: the shared one stays with its copy; the other and its thumbnail go.
    assert!(shared_file.exists(), "a younger message still uses it");
    for gone in [&alone_file, &thumb_file] {
        let deadline = tokio::time::Instant::now() + WAIT;
        while gone.exists() {
            assert!(tokio::time::Instant::now() < deadline, "{} was never removed", gone.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Nothing of them is left in the database, and the quota is given back.
    let conn = db(&s);
    for table in ["message_likes", "message_reactions"] {
        assert_eq!(count(&conn, &format!("SELECT count(*) FROM {table} WHERE message_id IN ({old})")), 0, "{table}");
    }
    assert_eq!(count(&conn, &format!("SELECT count(*) FROM chat_messages WHERE id IN ({old})")), 0);
    let quota_after = count(&conn, &format!("SELECT storage_bytes FROM users WHERE id = {}", ann.id));
    let freed = (crate::attachments::sample("png").len() + png.len()) as i64;
    assert_eq!(quota_after, quota_before - freed, "the uploader's quota is given back");
    assert_eq!(count(&conn, "SELECT count(*) FROM pragma_foreign_key_check"), 0);

    // Search forgets them; a replay from before them skips them.
    wait_for_indexer(&s).await;
    let found = s.get("/api/chat/search?q=llama", &ann.token).await.json;
    let found: Vec<i64> =
        found["results"].as_array().expect("results").iter().filter_map(|r| r["message"]["id"].as_i64()).collect();
    assert_eq!(found, [fresh["id"].as_i64().expect("id"), reply["id"].as_i64().expect("id")]);
    let replay = s.get(&format!("/api/chat/events?cursor={cursor}&limit=1000"), &bob.token).await.json;
    let replayed: Vec<i64> = replay["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "new_message")
        .filter_map(|e| e["data"]["id"].as_i64())
        .collect();
    assert_eq!(replayed, [copy_id, reply["id"].as_i64().expect("id"), fresh["id"].as_i64().expect("id")]);
    stop_and_check_index(s).await;
}

#[tokio::test]
async fn retention_goes_in_small_batches_oldest_first_and_stops_at_the_first_young_message() {
    let s = TestServer::start().await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    for i in 0..1_200 {
        a.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": format!("m{i}"), "local_temp_id": format!("b{i}")}})).await;
    }
    a.expect_where("new_message", |v| v["data"]["local_temp_id"] == "b1199").await;
    let first: i64 = count(&db(&s), "SELECT min(id) FROM chat_messages");
    // The oldest 1,100 are 40 days old; one in the middle of them is young.
    let young = first + 700;
    db(&s)
        .execute(
            &format!("UPDATE chat_messages SET created_at = created_at - 40 * {DAY_MS} WHERE id < ?1 AND id <> ?2"),
            [first + 1_100, young],
        )
        .expect("age");
    let cutoff = chatd::time::now_ms() - 30 * DAY_MS;
    let mut batches = Vec::new();
    loop {
        let expired = s.state.writer.expire_messages(cutoff).await.expect("expire");
        if expired.removed == 0 {
            break;
        }
        batches.push(expired.removed);
    }
    assert_eq!(batches, [500, 200], "at most 500 a batch; the young one stops it");
    assert_eq!(count(&db(&s), "SELECT min(id) FROM chat_messages"), young);
    assert_eq!(count(&db(&s), "SELECT count(*) FROM chat_messages"), 500);
}
