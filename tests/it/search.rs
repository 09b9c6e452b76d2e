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

    // Through the index (the unit tests cover the unindexed tail).
    wait_for_indexer(&s).await;
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
    assert_eq!(contents(&find("y 🎉 t").await.json), ["party 🎉 tonight"], "emoji inside a trigram");
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

/// FTS5 stops reading a query at a NUL: such a query once answered 500
/// ("unterminated string"). Found by schemathesis.
#[tokio::test]
async fn a_query_holding_a_nul_is_answered_through_the_index_or_the_scan() {
    let s = TestServer::start().await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    s.say(&mut a, room, "hello wor\0ld again").await;
    s.say(&mut a, room, "nothing to see").await;
    wait_for_indexer(&s).await;
    for (q, found) in [("wor\0ld", 1), ("ag\0", 0), ("r\0l", 1), ("a\0b", 0), ("\0", 1)] {
        let r = s.get(&format!("/api/chat/search?q={}", encode(q)), &ann.token).await;
        assert_eq!(r.status, StatusCode::OK, "{q:?}: {}", r.text());
        assert_eq!(contents(&r.json).len(), found, "{q:?}");
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
    stop_and_check_index(s).await;
}

/// Waits until the server's indexer has applied every event so far (it runs
/// on its own thread after each commit).
pub(crate) async fn wait_for_indexer(s: &TestServer) {
    if s.state.config.database_url.is_some() {
        // PostgreSQL's search reads the messages themselves: nothing to wait for.
        return;
    }
    let data = s.dir.path().join("data");
    let conn = rusqlite::Connection::open(chatd::store::search::index_path(&data)).expect("open");
    conn.execute("ATTACH DATABASE ?1 AS chat", [chatd::store::db_path(&data).to_string_lossy()]).expect("attach");
    for _ in 0..250 {
        let behind: i64 = conn
            .query_row(
                "SELECT (SELECT MAX(id) FROM chat.events) - COALESCE((SELECT position FROM search_state), -1)",
                [],
                |r| r.get(0),
            )
            .expect("positions");
        if behind == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the indexer never caught up");
}

#[tokio::test]
async fn a_left_room_and_deleted_messages_stay_hidden_across_a_restart() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let r = s.post("/api/chat/rooms", &ann.token, json!({"name": "Trip", "member_ids": [bob.id]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let group = r.json["id"].as_i64().expect("id");
    let mut a = s.ws(&ann).await;
    s.say(&mut a, group, "the itinerary for Samarqand").await;
    let gone = s.say(&mut a, group, "itinerary draft, ignore").await["id"].as_i64().expect("id");
    wait_for_indexer(&s).await;
    assert_eq!(contents(&s.get("/api/chat/search?q=itinerary", &bob.token).await.json).len(), 2);
    // Deleting an indexed message takes it out of the index.
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{gone}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(
        contents(&s.get("/api/chat/search?q=itinerary", &bob.token).await.json),
        ["the itinerary for Samarqand"]
    );
    // Bob leaves: nothing of the group is found for him any more.
    let left = s
        .raw(Method::DELETE, &format!("/api/chat/rooms/{group}/members/{}", bob.id), Some(&bob.token), None, Vec::new())
        .await;
    assert_eq!(left.status, StatusCode::OK, "{}", left.text());
    assert_eq!(contents(&s.get("/api/chat/search?q=itinerary", &bob.token).await.json), Vec::<String>::new());
    assert_eq!(
        s.get("/api/chat/search?q=itinerary", &ann.token).await.json["results"].as_array().map(Vec::len),
        Some(1)
    );
    a.close().await;
    // The index is on disk: after a restart the same answers, and new
    // messages are found before and after the writer indexes them.
    let s = s.restart().await;
    assert_eq!(
        contents(&s.get("/api/chat/search?q=SAMARQAND", &ann.token).await.json),
        ["the itinerary for Samarqand"]
    );
    assert_eq!(contents(&s.get("/api/chat/search?q=itinerary", &bob.token).await.json), Vec::<String>::new());
    let mut a = s.ws(&ann).await;
    s.say(&mut a, group, "Samarqand again").await;
    wait_for_indexer(&s).await;
    assert_eq!(
        contents(&s.get("/api/chat/search?q=samarqand", &ann.token).await.json),
        ["Samarqand again", "the itinerary for Samarqand"]
    );
    stop_and_check_index(s).await;
}

/// Stops the server, lets the indexer apply whatever it had not, and checks
/// that the index holds exactly the live messages: an edit or delete the
/// indexer missed leaves a row here, a message it missed lacks one.
pub(crate) async fn stop_and_check_index(s: TestServer) {
    if s.state.config.database_url.is_some() {
        // No index file on PostgreSQL (its trigram index is the database's).
        s.stop().await;
        return;
    }
    let dir = s.stop().await;
    let data = dir.path().join("data");
    let db = chatd::store::db_path(&data);
    let index = chatd::store::search::index_path(&data);
    let mut indexer = chatd::store::search::Indexer::open(&index, &db).expect("indexer");
    while indexer.step().expect("step") > 0 {}
    let conn = rusqlite::Connection::open(&index).expect("open");
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')", []).expect("integrity");
    conn.execute("ATTACH DATABASE ?1 AS chat", [db.to_string_lossy()]).expect("attach");
    let ids = |sql: &str| -> Vec<i64> {
        let mut stmt = conn.prepare(sql).expect("prepare");
        stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    assert_eq!(
        ids("SELECT rowid FROM messages_fts ORDER BY rowid"),
        ids("SELECT id FROM chat.chat_messages WHERE is_deleted = 0 AND content <> '' ORDER BY id"),
        "the index holds the live messages"
    );
}
