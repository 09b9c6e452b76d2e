//! Three chatd nodes on one PostgreSQL and one NATS behave as one server
//! (SPEC section 12): every event kind crosses nodes in order, presence and
//! typing too, an idempotent send holds across nodes, and a late commit is
//! never skipped by a cursor (the safe horizon, on a real PostgreSQL).

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::services::{Node, lock, services, shared_database, shared_nats_url};
pub use crate::support::replay;
use crate::support::{Remote, Ws, rand_id};

/// The secret every node of a test's cluster shares (tokens from one node
/// are good on the others).
pub const SECRET: &str = "a-cluster-secret-of-at-least-32-bytes!!";

/// A cluster of `n` nodes on a fresh database of the shared PostgreSQL and
/// the shared NATS (the database name keeps its subjects apart), with one
/// files directory.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub remotes: Vec<Remote>,
    pub database_url: String,
    _files: tempfile::TempDir,
}

impl Cluster {
    pub fn start(name: &str, n: usize) -> Cluster {
        let database_url = shared_database(name);
        Cluster::start_on(&database_url, &shared_nats_url(), n)
    }

    pub fn start_on(database_url: &str, nats_url: &str, n: usize) -> Cluster {
        let files = tempfile::tempdir().expect("files dir");
        let nodes: Vec<Node> = (0..n).map(|_| Node::start(&node_env(database_url, nats_url, files.path()))).collect();
        let remotes = nodes.iter().map(|node| Remote::new(node.addr())).collect();
        Cluster { nodes, remotes, database_url: database_url.to_owned(), _files: files }
    }

    /// The logs of every node, for a failure's message.
    pub fn logs(&self) -> String {
        self.nodes.iter().enumerate().map(|(i, n)| format!("--- node {i} ---\n{}\n", n.logs())).collect()
    }
}

pub fn node_env(database_url: &str, nats_url: &str, files: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("CHAT_DATABASE_URL", database_url.to_owned()),
        ("CHAT_NATS_URL", nats_url.to_owned()),
        ("CHAT_JWT_SECRET", SECRET.to_owned()),
        ("CHAT_STATIC_DIR", files.display().to_string()),
        ("CHAT_RATE_LIMITS", "off".to_owned()),
    ]
}

/// The stored events' frames until one of `kind` satisfies `done`, skipping
/// what is not stored (presence, typing).
async fn stored_until(ws: &mut Ws, kind: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = ws.next().await.unwrap_or_else(|| panic!("closed while waiting for {kind}"));
        if frame.get("cursor").is_none() {
            continue;
        }
        let last = frame["type"] == kind && done(&frame);
        frames.push(frame);
        if last {
            return frames;
        }
    }
}

fn position(frame: &Value) -> i64 {
    frame["cursor"].as_str().and_then(|c| c.strip_prefix("v1.")).and_then(|p| p.parse().ok()).expect("cursor")
}

/// Ann on node 0, Bob on node 2, their room made on node 1: every stored
/// event kind one makes reaches the other on another node, in the order
/// made, with increasing cursors; and a replay from the first cursor on a
/// third node gives the same frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: run by .ci/cluster.sh via --ignored"]
async fn every_event_kind_crosses_nodes_in_order() {
    let cluster = Cluster::start("every_event_kind", 3);
    let [a, b, c] = &cluster.remotes[..] else { unreachable!() };
    let ann = a.user("ann").await;
    let bob = c.user("bob").await;
    let (mut bob_ws, _, start) = replay(c, &bob, None).await;
    let room = b.room(&ann, &bob).await;
    let created = stored_until(&mut bob_ws, "room_created", |_| true).await;
    assert_eq!(created.last().expect("room_created")["data"]["id"], room);

    let mut ann_ws = a.ws(&ann).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(a.say(&mut ann_ws, room, &format!("hello {i}")).await["id"].as_i64().expect("id"));
    }
    let edited = a
        .send_json(
            Method::PUT,
            &format!("/api/chat/messages/{}", ids[3]),
            Some(&ann.token),
            json!({"content": "edited"}),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text());
    let liked = b.post(&format!("/api/chat/messages/{}/like", ids[4]), &bob.token, json!({})).await;
    assert!(liked.status.is_success(), "{}", liked.text());
    let deleted =
        c.send_json(Method::DELETE, &format!("/api/chat/messages/{}", ids[5]), Some(&ann.token), json!({})).await;
    assert!(deleted.status.is_success(), "{}", deleted.text());
    let read = c.post(&format!("/api/chat/rooms/{room}/read"), &bob.token, json!({})).await;
    assert!(read.status.is_success(), "{}", read.text());

    let frames = stored_until(&mut bob_ws, "message_read", |_| true).await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap_or("")).collect();
    let mut expected = vec!["new_message"; 10];
    expected.extend(["message_update", "message_like", "message_delete", "message_read"]);
    assert_eq!(kinds, expected, "{}", cluster.logs());
    let texts: Vec<&str> = frames[..10].iter().map(|f| f["data"]["content"].as_str().unwrap_or("")).collect();
    assert_eq!(texts, (0..10).map(|i| format!("hello {i}")).collect::<Vec<_>>());
    assert_eq!(frames[10]["data"]["content"], "edited");
    assert_eq!(frames[11]["data"]["like_count"], 1);
    assert_eq!(frames[12]["data"]["id"], ids[5]);
    let positions: Vec<i64> = frames.iter().map(position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "cursors must grow: {positions:?}");

    // Ann, on her node, saw Bob's like and read mark too.
    let seen = stored_until(&mut ann_ws, "message_read", |_| true).await;
    assert!(seen.iter().any(|f| f["type"] == "message_like"), "{seen:?}");

    // The same history from the start cursor, replayed by node 1.
    let (_, replayed, _) = replay(b, &bob, Some(&start)).await;
    let replayed: Vec<&str> = replayed.iter().map(|f| f["type"].as_str().unwrap_or("")).collect();
    let mut all = vec!["room_created"];
    all.extend(expected.iter().copied());
    assert_eq!(replayed, all);
}

/// Presence and typing between nodes: Bob connecting on node 2 is online
/// for Ann on node 0; his typing reaches her; leaving makes him offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: run by .ci/cluster.sh via --ignored"]
async fn presence_and_typing_cross_nodes() {
    let cluster = Cluster::start("presence_typing", 3);
    let [a, _, c] = &cluster.remotes[..] else { unreachable!() };
    let ann = a.user("ann").await;
    let bob = a.user("bob").await;
    let room = a.room(&ann, &bob).await;
    let mut ann_ws = a.ws(&ann).await;

    let mut bob_ws = c.ws(&bob).await;
    let online = ann_ws.expect_where("presence", |f| f["data"]["user_id"] == bob.id).await;
    assert_eq!(online["data"]["is_online"], true, "{online}");
    let listed = a.get("/api/chat/online-users", &ann.token).await;
    assert!(listed.text().contains(&format!("\"id\":{}", bob.id)), "{}", listed.text());

    bob_ws.send(json!({"type": "typing", "data": {"room_id": room, "is_typing": true}})).await;
    let typing = ann_ws.expect("typing").await;
    assert_eq!(typing["data"]["user_id"], bob.id);
    assert_eq!(typing["data"]["is_typing"], true);

    bob_ws.close().await;
    let offline = ann_ws.expect_where("presence", |f| f["data"]["user_id"] == bob.id).await;
    assert_eq!(offline["data"]["is_online"], false, "{offline}\n{}", cluster.logs());
}

/// A send retried on another node with the same temp id is the same
/// message: one row, the original's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: run by .ci/cluster.sh via --ignored"]
async fn an_idempotent_send_holds_across_nodes() {
    let cluster = Cluster::start("idempotent_send", 3);
    let [a, _, c] = &cluster.remotes[..] else { unreachable!() };
    let ann = a.user("ann").await;
    let bob = a.user("bob").await;
    let room = a.room(&ann, &bob).await;
    let temp = format!("t-{}", rand_id());
    let send = json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": "once", "local_temp_id": temp}});
    let mut on_a = a.ws(&ann).await;
    on_a.send(send.clone()).await;
    let first = on_a.expect_where("new_message", |f| f["data"]["local_temp_id"] == temp.as_str()).await;
    on_a.close().await;
    // The retry, after a dropped connection, on another node.
    let mut on_c = c.ws(&ann).await;
    on_c.send(send).await;
    let again = on_c.expect_where("new_message", |f| f["data"]["local_temp_id"] == temp.as_str()).await;
    assert_eq!(first["data"]["id"], again["data"]["id"], "{first} / {again}");
    let page = c.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
    assert_eq!(page.json["total"], 1, "{}", page.text());
}

/// PostgreSQL text cannot hold U+0000: a message or a scheduled message
/// carrying one is refused as bad input, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: run by .ci/cluster.sh via --ignored"]
async fn content_with_a_nul_is_refused_and_nothing_is_stored() {
    let cluster = Cluster::start("nul_content", 1);
    let a = &cluster.remotes[0];
    let ann = a.user("ann").await;
    let bob = a.user("bob").await;
    let room = a.room(&ann, &bob).await;
    let mut ws = a.ws(&ann).await;
    let later = chatd::time::rfc3339_ms(chatd::time::now_ms() + 3_600_000);
    for (temp, send_at) in [("now", None), ("later", Some(later.as_str()))] {
        let mut data = json!({"room_id": room, "message_type": "text", "content": "a\u{0}b", "local_temp_id": temp});
        if let Some(at) = send_at {
            data["send_at"] = json!(at);
        }
        ws.send(json!({"type": "send_message", "data": data})).await;
        let error = ws.expect("error").await;
        assert!(error["message"].as_str().is_some_and(|m| m.contains("NUL")), "{temp}: {error}");
        assert_eq!(error["local_temp_id"], temp, "{error}");
    }
    let page = a.get(&format!("/api/chat/rooms/{room}/messages"), &ann.token).await;
    assert_eq!(page.json["total"], 0, "{}", page.text());
    let scheduled = a.get("/api/chat/scheduled", &ann.token).await;
    assert_eq!(scheduled.status, StatusCode::OK, "{}", scheduled.text());
    assert_eq!(scheduled.json["scheduled"].as_array().map(Vec::len), Some(0), "{}", scheduled.text());
}

/// The safe horizon on a real PostgreSQL: a transaction that took an
/// event position and has not committed holds back every later position,
/// on every node, live and in replays; once it commits, both arrive, in
/// position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: run by .ci/cluster.sh via --ignored"]
async fn a_late_commit_is_never_skipped_by_a_cursor() {
    let cluster = Cluster::start("late_commit", 2);
    let [a, b] = &cluster.remotes[..] else { unreachable!() };
    let ann = a.user("ann").await;
    let bob = a.user("bob").await;
    let room = a.room(&ann, &bob).await;
    let (mut bob_ws, _, _) = replay(b, &bob, None).await;

    // A slow writer: takes its position (41), then waits before committing.
    let (client, connection) =
        tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.batch_execute("BEGIN").await.expect("begin");
    let message: i64 = client
        .query_one(
            "INSERT INTO chat_messages (room_id, sender_id, receiver_id, content, created_at)
             VALUES ($1, $2, $3, 'slow', 0) RETURNING id",
            &[&room, &ann.id, &bob.id],
        )
        .await
        .expect("insert")
        .get(0);
    let slow: i64 = client
        .query_one(
            "INSERT INTO events (room_id, kind, data, created_at) VALUES ($1, 'new_message', $2, 0) RETURNING position",
            &[&room, &json!({"message_id": message}).to_string()],
        )
        .await
        .expect("event")
        .get(0);

    // Meanwhile a message commits with a later position (42).
    let mut ann_ws = a.ws(&ann).await;
    ann_ws
        .send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": "fast"}}))
        .await;
    // Stored (its row is there), but not released while 41 is pending.
    let stored = count_soon(&cluster.database_url, "SELECT count(*) FROM chat_messages WHERE content = 'fast'").await;
    assert_eq!(stored, 1, "{}", cluster.logs());
    bob_ws.expect_none("new_message", Duration::from_millis(800)).await;
    let events = b.get("/api/chat/events?cursor=v1.0", &bob.token).await;
    let served: Vec<i64> = events.json["events"].as_array().expect("events").iter().map(position).collect();
    assert!(served.iter().all(|p| *p < slow), "a replay passed a pending position {slow}: {}", events.text());
    let through = events.json["cursor"].as_str().and_then(|c| c.strip_prefix("v1.")).and_then(|p| p.parse().ok());
    assert!(through.is_some_and(|p: i64| p < slow), "a cursor passed a pending position {slow}: {}", events.text());

    client.batch_execute("COMMIT").await.expect("commit");
    let first = bob_ws.expect("new_message").await;
    let second = bob_ws.expect("new_message").await;
    assert_eq!(first["data"]["content"], "slow", "{first}");
    assert_eq!(position(&first), slow);
    assert_eq!(second["data"]["content"], "fast", "{second}");
    assert!(position(&second) > slow);
}

/// Polls a count on a connection of its own until it is nonzero (bounded
/// by the tests' wait); answers the last count.
async fn count_soon(database_url: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    loop {
        let count: i64 = client.query_one(sql, &[]).await.expect("count").get(0);
        if count > 0 || tokio::time::Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keeps `lock` in use for tests that share the services explicitly.
#[allow(dead_code)]
fn shared_postgres_port() -> u16 {
    lock(&services().0).port()
}

/// A logout on one node ends the token on every node: the others refuse
/// it over REST and close its WebSockets with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: run by .ci/cluster.sh via --ignored"]
async fn a_logout_on_one_node_ends_the_token_on_every_node() {
    let cluster = Cluster::start("logout", 2);
    let [a, b] = &cluster.remotes[..] else { unreachable!() };
    let ann = a.user("ann").await;
    // Node 1 knows the token (it has seen it) before the logout.
    assert_eq!(b.get("/api/auth/me", &ann.token).await.status, StatusCode::OK);
    let mut on_b = b.ws(&ann).await;
    let out = a.send_json(Method::POST, "/api/auth/logout", Some(&ann.token), json!({})).await;
    assert!(out.status.is_success(), "{}", out.text());
    assert_eq!(on_b.close_code().await, Some(1008), "{}", cluster.logs());
    assert_eq!(b.get("/api/auth/me", &ann.token).await.status, StatusCode::UNAUTHORIZED);
}

/// A node that dies (SIGKILL) does not leave its users online: another node
/// notices its heartbeat stopped and announces them offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: run by .ci/cluster.sh via --ignored"]
async fn a_dead_nodes_users_go_offline() {
    let mut cluster = Cluster::start("dead_node", 2);
    let ann = cluster.remotes[1].user("ann").await;
    let bob = cluster.remotes[1].user("bob").await;
    cluster.remotes[1].room(&ann, &bob).await;
    let mut ann_ws = cluster.remotes[1].ws(&ann).await;
    let _bob_ws = cluster.remotes[0].ws(&bob).await;
    ann_ws.expect_where("presence", |f| f["data"]["user_id"] == bob.id && f["data"]["is_online"] == true).await;

    cluster.nodes[0].kill();
    // Heartbeats every 3 s, a node is gone after 15 s of silence.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ann_ws.next_within(left).await {
            Ok(Some(f)) if f["type"] == "presence" && f["data"]["user_id"] == bob.id => {
                assert_eq!(f["data"]["is_online"], false, "{f}");
                break;
            }
            Ok(Some(_)) => continue,
            _ => panic!("bob stayed online after his node died\n{}", cluster.logs()),
        }
    }
    let online = cluster.remotes[1].get("/api/chat/online-users", &ann.token).await;
    assert!(!online.text().contains(&format!("\"id\":{}", bob.id)), "{}", online.text());
}
