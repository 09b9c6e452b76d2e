//! `GET /metrics`: Prometheus text whose counters move with the traffic.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::attachments::{file, sample};
use crate::support::TestServer;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn counters_move_with_traffic() {
    let s = TestServer::start().await;
    let before = s.raw(Method::GET, "/metrics", None, None, Vec::new()).await;
    assert_eq!(before.status, StatusCode::OK);
    assert!(before.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(value(&before.text(), "chatd_messages_stored_total{type=\"text\"}"), 0.0);

    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    s.say(&mut a, room, "counted").await;
    b.expect("new_message").await;
    a.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "image", "local_temp_id": "img", "files_data": [file("p.png", &sample("png"), "image/png")]}})).await;
    a.expect_where("new_message", |v| v["data"]["local_temp_id"] == "img").await;
    s.get("/api/chat/nothing-here", &ann.token).await;

    let text = s.raw(Method::GET, "/metrics", None, None, Vec::new()).await.text();
    assert_eq!(value(&text, "chatd_ws_connections"), 2.0);
    assert_eq!(value(&text, "chatd_users_connected"), 2.0);
    assert_eq!(value(&text, "chatd_messages_stored_total{type=\"text\"}"), 1.0);
    assert_eq!(value(&text, "chatd_messages_stored_total{type=\"image\"}"), 1.0);
    assert_eq!(value(&text, "chatd_attachment_bytes_total"), sample("png").len() as f64);
    assert!(value(&text, "chatd_events_delivered_total") >= 4.0);
    assert!(value(&text, "chatd_writer_batch_size_count") >= 4.0, "register x2, room, messages");
    assert!(value(&text, "chatd_writer_commit_seconds_count") >= 4.0);
    // The WAL gauge is the file's size as it is now (SQLite only).
    if s.state.config.database_url.is_none() {
        let wal = std::fs::metadata(s.dir.path().join("data/chatd.sqlite3-wal")).map_or(0, |m| m.len());
        let shown = value(&text, "chatd_wal_bytes{db=\"chatd\"}");
        assert!(shown > 0.0 && (shown - wal as f64).abs() <= 1024.0 * 1024.0, "{shown} vs {wal}");
    }
    assert_eq!(value(&text, "chatd_http_requests_total{route=\"register\",status=\"201\"}"), 2.0);
    assert_eq!(value(&text, "chatd_http_requests_total{route=\"not_found\",status=\"404\"}"), 1.0);
    assert!(value(&text, "chatd_http_request_duration_seconds_count{route=\"register\"}") >= 2.0);
    a.close().await;
    b.close().await;
    s.stop().await;
}

#[tokio::test]
async fn an_idle_writer_keeps_the_wal_under_its_limit() {
    let s = TestServer::start_with(|c| c.wal_limit_bytes = 256 * 1024).await;
    let (ann, _bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    for i in 0..300 {
        s.say(&mut a, room, &format!("message {i} {}", "x".repeat(400))).await;
    }
    let wal = s.dir.path().join("data/chatd.sqlite3-wal");
    let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    // Each message was its own commit: several MB of log were written.
    let mut last = size();
    for _ in 0..100 {
        if last <= 256 * 1024 {
            break;
        }
        // Any write lets the idle writer look again.
        s.say(&mut a, room, "nudge").await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        last = size();
    }
    assert!(last <= 256 * 1024, "the WAL is {last} bytes");
    s.stop().await;
}
