//! Logs (issue 14): no colour codes when stderr is not a terminal, JSON
//! lines with `--log-format json`, a request id on every request (taken
//! from `X-Request-Id` or made, returned, and in the request's log lines),
//! an access line per request that names the route, never the raw path.

use hyper::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::abuse::Spawned;
use crate::support::TestServer;

/// One HTTP/1.1 request on its own connection; the raw answer.
async fn request(server: &Spawned, head: &str) -> String {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn request_ids_are_returned_taken_or_made() {
    let s = TestServer::start().await;
    let given =
        s.raw_with(hyper::Method::GET, "/healthz", None, None, Vec::new(), &[("x-request-id", "edge-42.a")]).await;
    assert_eq!(given.headers["x-request-id"], "edge-42.a");
    let made = s.raw(hyper::Method::GET, "/healthz", None, None, Vec::new()).await;
    let other = s.raw(hyper::Method::GET, "/nope", None, None, Vec::new()).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let (a, b) =
        (made.headers["x-request-id"].to_str().unwrap_or(""), other.headers["x-request-id"].to_str().unwrap_or(""));
    assert!(!a.is_empty() && a != b, "{a} {b}");
    let refused =
        s.raw_with(hyper::Method::GET, "/healthz", None, None, Vec::new(), &[("x-request-id", "no spaces <b>")]).await;
    assert_ne!(refused.headers["x-request-id"], "no spaces <b>", "an id a log cannot carry is replaced");
    s.stop().await;
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_never_a_token() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Spawned::spawn(dir.path(), None, &[("RUST_LOG", "info"), ("CHAT_LOG_FORMAT", "json")]).await;
    let answer = request(&server, "GET /api/auth/me HTTP/1.1\r\nhost: x\r\nx-request-id: trace-7\r\nauthorization: Bearer sekrit-token\r\nconnection: close\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 401") && answer.to_ascii_lowercase().contains("x-request-id: trace-7"),
        "{answer}"
    );
    let ws =
        request(&server, "GET /api/chat/ws?token=sekrit-token HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(ws.starts_with("HTTP/1.1 4"), "{ws}");
    let mut logs = String::new();
    for _ in 0..50 {
        logs = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        if logs.matches("\"access\"").count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!logs.contains('\u{1b}'), "no colour codes in a file");
    assert!(!logs.contains("sekrit-token"), "a token never reaches the log");
    let lines: Vec<Value> = logs.lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "access").collect();
    let me = access.iter().find(|l| l["fields"]["route"] == "me").expect("an access line for /me");
    assert_eq!(me["span"]["id"], "trace-7");
    assert_eq!(
        (me["fields"]["status"].clone(), me["fields"]["method"].clone()),
        (serde_json::json!(401), serde_json::json!("GET"))
    );
    assert!(me["fields"]["ms"].as_f64().is_some());
    assert!(access.iter().any(|l| l["fields"]["route"] == "websocket"), "{access:?}");
}

#[tokio::test]
async fn text_logs_to_a_file_have_no_colour() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Spawned::spawn(dir.path(), None, &[("RUST_LOG", "info")]).await;
    let answer = request(&server, "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"));
    let mut logs = String::new();
    for _ in 0..50 {
        logs = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        if logs.contains("route=") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(logs.contains("route=\"healthz\"") || logs.contains("route=healthz"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
}
