//! The real server on 127.0.0.1:0 with temporary directories, an HTTP client
//! and a WebSocket client with bounded waits. Every test goes through these.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use chatd::config::Config;
use chatd::state::AppState;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The other nodes of its cluster (`CHATD_IT_NODES` with
    /// `CHATD_IT_POSTGRES`): same database and bus, data of their own.
    others: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    /// The HTTP and WebSocket client of this server (`Deref`: `s.get(…)`).
    remote: Remote,
}

/// A client of a chatd at `addr`: this process's test server, or another
/// process (the cluster tests' nodes).
pub struct Remote {
    pub addr: SocketAddr,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::ops::Deref for TestServer {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_tests(dir.path());
        adjust(&mut config);
        TestServer::start_in(dir, config).await
    }

    /// A server with every rate limit on (at its default unless adjusted).
    #[allow(dead_code)]
    pub async fn start_limited(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_tests_with_rate_limits(dir.path());
        adjust(&mut config);
        TestServer::start_in(dir, config).await
    }

    pub async fn start_in(dir: TempDir, mut config: Config) -> TestServer {
        if config.database_url.is_none()
            && let Ok(server) = std::env::var("CHATD_IT_POSTGRES")
        {
            // The suite against the PostgreSQL store: a database of its own
            // per server (`CHATD_IT_POSTGRES=postgres://…/db cargo test --test it`).
            config.database_url = Some(fresh_database(&server).await);
            config.nats_url = std::env::var("CHATD_IT_NATS").ok();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        config.addr = addr;
        config.base_url = format!("http://{addr}");
        let server = chatd::server::start(config).await.expect("start");
        let state = server.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        let mut others = Vec::new();
        let nodes: usize = std::env::var("CHATD_IT_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
        if state.config.database_url.is_some() {
            for node in 1..nodes {
                let mut config = state.config.clone();
                config.data_dir = dir.path().join(format!("node-{node}"));
                others.push(start_node(config).await);
            }
        }
        TestServer { addr, dir, state, stop: Some(stop), task: Some(task), others, remote: Remote::new(addr) }
    }

    /// Runs the shutdown path and waits for it to finish.
    pub async fn stop(mut self) -> TempDir {
        for (stop, task) in self.others.drain(..) {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("shutdown in time").expect("node task");
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("shutdown in time").expect("server task");
        }
        self.dir
    }

    /// Stops the server and starts a new one on the same data and static
    /// directories (and the same configuration).
    #[allow(dead_code)]
    pub async fn restart(self) -> TestServer {
        let config = self.state.config.clone();
        let dir = self.stop().await;
        TestServer::start_in(dir, config).await
    }

    /// One integer a query answers, on whichever store the server runs
    /// (SQLite, or PostgreSQL under `CHATD_IT_POSTGRES`): for tests that
    /// check what was (not) written. Write the SQL for both (no `?1`/`$1`).
    #[allow(dead_code)]
    pub async fn sql_i64(&self, sql: &str) -> i64 {
        self.sql_one(sql).await
    }

    /// One text a query answers (see `sql_i64`).
    #[allow(dead_code)]
    pub async fn sql_text(&self, sql: &str) -> String {
        self.sql_one(sql).await
    }

    async fn sql_one<T>(&self, sql: &str) -> T
    where
        T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a> + Send + 'static,
    {
        match self.state.config.database_url.clone() {
            None => {
                let sql = sql.to_owned();
                self.state.reader.run_blocking(move |c| Ok(c.query_row(&sql, [], |r| r.get(0))?)).expect("query")
            }
            Some(url) => {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
                tokio::spawn(connection);
                client.query_one(sql, &[]).await.expect("query").get(0)
            }
        }
    }

    #[allow(dead_code)]
    /// The signed link (path and query) of a stored file, as a render now gives it.
    pub fn file_link(&self, rel_path: &str) -> String {
        let url = self.state.links.file_url(rel_path);
        url.strip_prefix(self.state.links.base_url()).unwrap_or(&url).to_owned()
    }

    pub fn static_dir(&self) -> std::path::PathBuf {
        self.state.config.static_dir.clone()
    }
}

impl Remote {
    pub fn new(addr: SocketAddr) -> Remote {
        Remote { addr, http: Client::builder(TokioExecutor::new()).build_http() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        self.raw_with(method, path, token, content_type, body, &[]).await
    }

    pub async fn raw_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("request");
        let res = tokio::time::timeout(WAIT, self.http.request(req)).await.expect("answer in time").expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Reply { status, headers, body, json }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.raw(Method::GET, path, Some(token), None, Vec::new()).await
    }

    pub async fn send_json(&self, method: Method, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.raw(method, path, token, Some("application/json"), body.to_string().into_bytes()).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send_json(Method::POST, path, Some(token), body).await
    }

    /// Registers a user named `name` (email `<name>@test.io`).
    pub async fn user(&self, name: &str) -> TestUser {
        let r = self
            .send_json(
                Method::POST,
                "/api/auth/register",
                None,
                json!({"name": name, "email": format!("{name}@test.io"), "password": "password123"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "register {name}: {}", r.text());
        TestUser {
            id: r.json["user"]["id"].as_i64().expect("id"),
            token: r.json["access_token"].as_str().expect("token").to_owned(),
        }
    }

    /// Two users and their room.
    pub async fn pair(&self, a: &str, b: &str) -> (TestUser, TestUser, i64) {
        let a = self.user(a).await;
        let b = self.user(b).await;
        let room = self.room(&a, &b).await;
        (a, b, room)
    }

    pub async fn room(&self, a: &TestUser, b: &TestUser) -> i64 {
        let r = self.post("/api/chat/rooms", &a.token, json!({"receiver_id": b.id})).await;
        assert!(r.status.is_success(), "room: {}", r.text());
        r.json["id"].as_i64().expect("room id")
    }

    pub async fn ws(&self, user: &TestUser) -> Ws {
        self.ws_query(&format!("token={}", user.token)).await.expect("ws connect")
    }

    pub async fn ws_query(&self, query: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://{}/api/chat/ws?{query}", self.addr);
        let (stream, _) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.expect("connect in time")?;
        Ok(Ws { stream })
    }

    /// Sends a text message over a fresh connection and waits for its echo.
    pub async fn say(&self, ws: &mut Ws, room: i64, text: &str) -> Value {
        let temp = format!("t-{}", rand_id());
        ws.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": text, "local_temp_id": temp}})).await;
        let echo = ws.expect_where("new_message", |v| v["data"]["local_temp_id"] == temp.as_str()).await;
        echo["data"].clone()
    }
}

/// Another node of a test server's cluster, serving on its own port.
async fn start_node(mut config: Config) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    config.addr = listener.local_addr().expect("addr");
    let server = chatd::server::start(config).await.expect("start node");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

/// A new, empty database on the PostgreSQL server of `url`; its URL.
async fn fresh_database(url: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("CHATD_IT_POSTGRES");
    tokio::spawn(connection);
    let name = format!("it_{}", rand_id());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{name}")
}

/// Opens a WebSocket (any node) with `cursor` and reads the replay up to `synced`:
/// answers the frames before it and the synced cursor.
pub async fn replay(s: &Remote, user: &TestUser, cursor: Option<&str>) -> (Ws, Vec<Value>, String) {
    let query = match cursor {
        Some(c) => format!("token={}&cursor={c}", user.token),
        None => format!("token={}", user.token),
    };
    let mut ws = s.ws_query(&query).await.expect("connect");
    let mut frames = Vec::new();
    loop {
        let frame = ws.next().await.expect("a frame before synced");
        if frame["type"] == "synced" {
            let cursor = frame["data"]["cursor"].as_str().expect("synced cursor").to_owned();
            return (ws, frames, cursor);
        }
        if !matches!(frame["type"].as_str(), Some("presence" | "typing")) {
            frames.push(frame);
        }
    }
}

pub fn rand_id() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    u64::from_le_bytes(b)
}

pub struct TestUser {
    pub id: i64,
    pub token: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn detail(&self) -> &str {
        self.json["detail"].as_str().unwrap_or("")
    }
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        tokio::time::timeout(WAIT, self.stream.send(WsMessage::text(text))).await.expect("send in time").expect("send");
    }

    /// The next JSON frame, skipping pings; None if the connection closed.
    #[allow(dead_code)]
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(WAIT).await.expect("a frame in time")
    }

    /// Err(()) on timeout, Ok(None) when closed.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<Value>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Err(()),
                Ok(frame) => frame,
            };
            match frame {
                Some(Ok(WsMessage::Text(t))) => return Ok(Some(serde_json::from_str(t.as_str()).expect("json frame"))),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return Ok(None),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The close code the server sends, skipping other frames (bounded).
    pub async fn close_code(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("no close in time"),
                Ok(Some(Ok(WsMessage::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(None) | Ok(Some(Err(_))) => return None,
            }
        }
    }

    /// Waits for a frame of `kind`, failing on anything else but presence/typing noise.
    pub async fn expect(&mut self, kind: &str) -> Value {
        self.expect_where(kind, |_| true).await
    }

    pub async fn expect_where(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Ok(Some(v)) if v["type"] == kind && pred(&v) => return v,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("connection closed while waiting for {kind}"),
                Err(()) => panic!("no {kind} in time"),
            }
        }
    }

    /// Asserts that no frame of `kind` arrives within `wait`.
    pub async fn expect_none(&mut self, kind: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Ok(Some(v)) if v["type"] == kind => panic!("unexpected {kind}: {v}"),
                Ok(Some(_)) => continue,
                Ok(None) | Err(()) => return,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
