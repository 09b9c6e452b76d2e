//! The public chatd API as a client sees it: the loopback-only target, REST
//! calls over one keep-alive hyper client, WebSocket connections, and the
//! frames the tool sends and reads. Knows nothing of measurements.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async_with_config, connect_async_with_config};

use crate::error::{BenchError, Context, Result, describe};

/// How long a TCP connect plus WebSocket upgrade may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one REST request may take, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long registering one user may keep retrying on 429/503.
const REGISTER_BUDGET: Duration = Duration::from_secs(120);

/// The chatd under test: always a loopback address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    addr: SocketAddr,
}

impl Target {
    /// Accepts `http://` URLs whose host is a loopback address (127.0.0.0/8,
    /// ::1, or `localhost`, taken as 127.0.0.1) and nothing else: this tool
    /// sends load, and load goes only to this machine.
    pub fn parse(url: &str) -> Result<Target> {
        let uri: Uri = url.parse().context(format!("--url {url:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(BenchError::new(format!(
                    "--url {url:?}: only http:// is supported (a local chatd speaks plain HTTP), not {other}://"
                )));
            }
            None => {
                return Err(BenchError::new(format!("--url {url:?} needs a scheme, as in http://127.0.0.1:8000")));
            }
        }
        let host = uri.host().ok_or_else(|| BenchError::new(format!("--url {url:?} has no host")))?;
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| refuse(host))?
        };
        if !ip.is_loopback() {
            return Err(refuse(host));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(BenchError::new(format!(
                "--url {url:?}: give only scheme, host and port (the API paths are fixed)"
            )));
        }
        Ok(Target { addr: SocketAddr::new(ip, uri.port_u16().unwrap_or(80)) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `host:port`, for the Host header.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn http_url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// The path of `url` when it points at this target (used for the file
    /// URLs the server hands out), else None: the tool fetches nothing else.
    pub fn own_path(&self, url: &str) -> Option<String> {
        let uri: Uri = url.parse().ok()?;
        let other = Target::parse(&format!("{}://{}", uri.scheme_str()?, uri.authority()?.as_str())).ok()?;
        (other == *self).then(|| uri.path_and_query().map_or_else(|| "/".to_string(), |p| p.as_str().to_string()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.addr)
    }
}

fn refuse(host: &str) -> BenchError {
    BenchError::new(format!(
        "refusing --url host {host:?}: chatd-bench only sends load to loopback addresses (127.0.0.0/8, ::1, localhost)"
    ))
}

/// A registered user and their bearer token.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: i64,
    pub token: String,
    pub email: String,
}

/// Two users and their direct room; the sender writes, the receiver reads.
#[derive(Debug, Clone)]
pub struct Pair {
    pub sender: Session,
    pub receiver: Session,
    pub room_id: i64,
}

/// A REST answer, body read in full.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub content_range: Option<String>,
    pub body: Bytes,
}

impl ApiResponse {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context(format!(
            "HTTP {} answer is not JSON ({})",
            self.status,
            self.detail()
        ))
    }

    /// The `detail` of an error answer, else the start of the body.
    pub fn detail(&self) -> String {
        if let Ok(value) = serde_json::from_slice::<Value>(&self.body)
            && let Some(detail) = value.get("detail")
        {
            return detail.to_string();
        }
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(200).collect()
    }
}

/// REST calls over one pooled keep-alive client.
#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    target: Target,
}

impl Api {
    pub fn new(target: Target) -> Api {
        Api::from_source(target, None)
    }

    /// A client whose connections leave from `source` (a loopback address
    /// such as 127.0.0.3), so the server sees it as a client of its own.
    pub fn from_source(target: Target, source: Option<IpAddr>) -> Api {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_local_address(source);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Api { client, target }
    }

    /// One request; `path` never holds a secret, so it may go into errors.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<ApiResponse> {
        self.call_with_range(method, path, token, body, None).await
    }

    /// `GET path` of bytes `first..=last` (an unauthenticated static file).
    pub async fn get_range(&self, path: &str, first: u64, last: u64) -> Result<ApiResponse> {
        self.call_with_range(Method::GET, path, None, None, Some((first, last))).await
    }

    async fn call_with_range(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        range: Option<(u64, u64)>,
    ) -> Result<ApiResponse> {
        let what = format!("{method} {path}");
        let mut builder = Request::builder().method(method).uri(self.target.http_url(path));
        if let Some((first, last)) = range {
            builder = builder.header(header::RANGE, format!("bytes={first}-{last}"));
        }
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(value.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).context(format!("building {what}"))?;
        let exchange = async {
            let response = self.client.request(request).await.context(&what)?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let content_range =
                response.headers().get(header::CONTENT_RANGE).and_then(|value| value.to_str().ok()).map(str::to_string);
            let body = response.into_body().collect().await.context(format!("{what}: reading the body"))?.to_bytes();
            Ok(ApiResponse { status, retry_after, content_range, body })
        };
        timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| BenchError::new(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")))?
    }

    /// Fails early, with advice, when nothing answers at the target.
    pub async fn check_health(&self) -> Result<()> {
        let response = self.call(Method::GET, "/healthz", None, None).await.map_err(|error| {
            BenchError::new(format!("no chatd answering at {} ({error}); start it or pass --url", self.target))
        })?;
        if response.status != StatusCode::OK {
            return Err(BenchError::new(format!(
                "GET /healthz at {} answered HTTP {} {}",
                self.target,
                response.status,
                response.detail()
            )));
        }
        Ok(())
    }

    /// Registers one user, waiting out 429/503 answers (Retry-After, else
    /// a growing pause) for at most two minutes.
    pub async fn register(&self, email: &str, name: &str, password: &str) -> Result<Session> {
        let body = json!({"name": name, "email": email, "password": password});
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let pause = backoff(attempt);
            match self.call(Method::POST, "/api/auth/register", None, Some(&body)).await {
                Ok(response) if response.status.is_success() => {
                    return session_from_auth(&response.json()?, email).context(format!("registering {email}"));
                }
                Ok(response)
                    if matches!(response.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
                        && started.elapsed() < REGISTER_BUDGET =>
                {
                    sleep(response.retry_after.unwrap_or(pause)).await;
                }
                Ok(response) => {
                    return Err(BenchError::new(format!(
                        "registering {email}: HTTP {} {}",
                        response.status,
                        response.detail()
                    )));
                }
                Err(_) if attempt < 4 => sleep(pause).await,
                Err(error) => return Err(error),
            }
        }
    }

    /// Registers `count` users `bench-<run>-<n>@bench.local`, a few at a time
    /// (each registration costs the server an Argon2 hash).
    pub async fn register_users(
        &self,
        run_id: &str,
        first: usize,
        count: usize,
        concurrency: usize,
    ) -> Result<Vec<Session>> {
        let password = format!("bench-password-{run_id}");
        let results: Vec<Result<Session>> = stream::iter(first..first + count)
            .map(|n| {
                let email = format!("bench-{run_id}-{n}@bench.local");
                let name = format!("bench {n}");
                let password = password.clone();
                async move { self.register(&email, &name, &password).await }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// The direct room of the caller and `receiver_id` (201 or 200).
    pub async fn open_room(&self, token: &str, receiver_id: i64) -> Result<i64> {
        let response =
            self.call(Method::POST, "/api/chat/rooms", Some(token), Some(&json!({"receiver_id": receiver_id}))).await?;
        if !response.status.is_success() {
            return Err(BenchError::new(format!(
                "POST /api/chat/rooms: HTTP {} {}",
                response.status,
                response.detail()
            )));
        }
        response
            .json()?
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| BenchError::new("POST /api/chat/rooms: the answer has no integer id"))
    }

    /// A group named `name` of the caller and `member_ids` (201); its room id.
    pub async fn create_group(&self, token: &str, name: &str, member_ids: &[i64]) -> Result<i64> {
        let body = json!({"name": name, "member_ids": member_ids});
        let response = self.call(Method::POST, "/api/chat/rooms", Some(token), Some(&body)).await?;
        if response.status != StatusCode::CREATED {
            return Err(BenchError::new(format!(
                "POST /api/chat/rooms (a group of {}): HTTP {} {}",
                member_ids.len() + 1,
                response.status,
                response.detail()
            )));
        }
        response
            .json()?
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| BenchError::new("POST /api/chat/rooms: the answer has no integer id"))
    }

    /// One pair of fresh users with their direct room.
    pub async fn make_pair(&self, run_id: &str) -> Result<Pair> {
        self.make_pairs(run_id, 1).await?.into_iter().next().ok_or_else(|| BenchError::new("no pair was created"))
    }

    /// `count` pairs of fresh users, each with its direct room.
    pub async fn make_pairs(&self, run_id: &str, count: usize) -> Result<Vec<Pair>> {
        let users = self.register_users(run_id, 0, count * 2, 4).await?;
        let mut users = users.into_iter();
        let mut halves = Vec::with_capacity(count);
        while let (Some(sender), Some(receiver)) = (users.next(), users.next()) {
            halves.push((sender, receiver));
        }
        let results: Vec<Result<Pair>> = stream::iter(halves)
            .map(|(sender, receiver)| async move {
                let room_id = self.open_room(&sender.token, receiver.user_id).await?;
                Ok(Pair { sender, receiver, room_id })
            })
            .buffered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 * 2u64.pow(attempt.min(5)))
}

/// The session in a register or login answer.
pub fn session_from_auth(answer: &Value, email: &str) -> Result<Session> {
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| BenchError::new("the answer has no access_token"))?;
    let user_id = answer
        .pointer("/user/id")
        .and_then(Value::as_i64)
        .ok_or_else(|| BenchError::new("the answer has no user.id"))?;
    Ok(Session { user_id, token: token.to_string(), email: email.to_string() })
}

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a WebSocket could not be opened, sorted for counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// EMFILE/ENFILE on this side.
    TooManyOpenFiles,
    /// EADDRNOTAVAIL: this side ran out of ephemeral ports.
    NoLocalPort,
    Refused,
    Reset,
    /// The server answered the upgrade with this HTTP status.
    Status(u16),
    Timeout,
    Other(String),
}

impl ConnectFailure {
    /// A short key to count failures by.
    pub fn label(&self) -> String {
        match self {
            ConnectFailure::TooManyOpenFiles => "too_many_open_files".to_string(),
            ConnectFailure::NoLocalPort => "no_local_port".to_string(),
            ConnectFailure::Refused => "connection_refused".to_string(),
            ConnectFailure::Reset => "connection_reset".to_string(),
            ConnectFailure::Status(code) => format!("http_{code}"),
            ConnectFailure::Timeout => "timeout".to_string(),
            ConnectFailure::Other(_) => "other".to_string(),
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::TooManyOpenFiles => {
                f.write_str("too many open files in chatd-bench (raise its limit: `ulimit -n 65536` before running)")
            }
            ConnectFailure::NoLocalPort => f.write_str("no free local port (ephemeral ports used up)"),
            ConnectFailure::Refused => f.write_str("connection refused"),
            ConnectFailure::Reset => f.write_str("connection reset by the server"),
            ConnectFailure::Status(code) => write!(f, "upgrade refused with HTTP {code}"),
            ConnectFailure::Timeout => write!(f, "no upgrade within {CONNECT_TIMEOUT:?}"),
            ConnectFailure::Other(text) => f.write_str(text),
        }
    }
}

impl From<tungstenite::Error> for ConnectFailure {
    fn from(error: tungstenite::Error) -> ConnectFailure {
        match &error {
            tungstenite::Error::Io(io_error) => match (io_error.raw_os_error(), io_error.kind()) {
                (Some(23 | 24), _) => ConnectFailure::TooManyOpenFiles,
                (Some(99), _) => ConnectFailure::NoLocalPort,
                (_, io::ErrorKind::ConnectionRefused) => ConnectFailure::Refused,
                (_, io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => ConnectFailure::Reset,
                _ => ConnectFailure::Other(describe(&error)),
            },
            tungstenite::Error::Http(response) => ConnectFailure::Status(response.status().as_u16()),
            _ => ConnectFailure::Other(describe(&error)),
        }
    }
}

/// The client configuration for connections that carry traffic.
pub fn busy_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
}

/// The client configuration for connections that only sit there: small
/// buffers, so ten thousand of them fit in this process too.
pub fn idle_ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// Opens `GET /api/chat/ws?token=...` (the token never reaches an error
/// message).
pub async fn connect_ws(
    target: &Target,
    token: &str,
    config: WebSocketConfig,
) -> std::result::Result<WsStream, ConnectFailure> {
    connect_ws_at(target, token, None, config).await
}

/// Opens `GET /api/chat/ws?token=...&cursor=...`: with a cursor the server
/// replays every stored event after it before `synced`. Cursors are URL-safe
/// by contract (SPEC section 9), so they go into the query as they are.
pub async fn connect_ws_at(
    target: &Target,
    token: &str,
    cursor: Option<&str>,
    config: WebSocketConfig,
) -> std::result::Result<WsStream, ConnectFailure> {
    let url = match cursor {
        Some(cursor) => target.ws_url(&format!("/api/chat/ws?token={token}&cursor={cursor}")),
        None => target.ws_url(&format!("/api/chat/ws?token={token}")),
    };
    match timeout(CONNECT_TIMEOUT, connect_async_with_config(url, Some(config), true)).await {
        Err(_) => Err(ConnectFailure::Timeout),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(error)) => Err(ConnectFailure::from(error)),
    }
}

/// A TCP connection to the target from the loopback address `source`
/// (any 127.0.0.0/8 address works on Linux without configuration), so that
/// the server sees another client IP.
pub async fn connect_tcp_from(target: &Target, source: Ipv4Addr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = timeout(CONNECT_TIMEOUT, socket.connect(target.addr()))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no connection within {CONNECT_TIMEOUT:?}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `connect_ws` from the loopback address `source`.
pub async fn connect_ws_from(
    target: &Target,
    token: &str,
    config: WebSocketConfig,
    source: Ipv4Addr,
) -> std::result::Result<WsStream, ConnectFailure> {
    let url = target.ws_url(&format!("/api/chat/ws?token={token}"));
    let attempt = async {
        let stream = connect_tcp_from(target, source).await.map_err(tungstenite::Error::Io)?;
        let (ws, _response) = client_async_with_config(url, MaybeTlsStream::Plain(stream), Some(config)).await?;
        Ok::<_, tungstenite::Error>(ws)
    };
    match timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(ConnectFailure::Timeout),
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(error)) => Err(ConnectFailure::from(error)),
    }
}

/// `connect_ws` for set-up steps, where any failure ends the run.
pub async fn connect_ws_or_fail(target: &Target, session: &Session) -> Result<WsStream> {
    connect_ws(target, &session.token, busy_ws_config())
        .await
        .map_err(|failure| BenchError::new(format!("opening the WebSocket of {}: {failure}", session.email)))
}

/// Sends a close frame and waits briefly for the server's; errors are moot.
pub async fn close_quietly(mut ws: WsStream) {
    let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// A `send_message` frame with a text body.
pub fn text_message_frame(room_id: i64, content: &str, local_temp_id: &str) -> String {
    json!({
        "type": "send_message",
        "data": {
            "room_id": room_id,
            "message_type": "text",
            "content": content,
            "local_temp_id": local_temp_id,
        }
    })
    .to_string()
}

/// `size` bytes of printable ASCII (so also `size` characters), no
/// whitespace at either end.
pub fn text_content(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size).map(|i| char::from(ALPHABET[i % ALPHABET.len()])).collect()
}

/// A stored file as the `new_message` echo describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoedFile {
    pub file_path: String,
    pub file_size: Option<u64>,
}

/// The parts of a `new_message` Message the tool looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoedMessage {
    pub id: i64,
    pub room_id: i64,
    pub local_temp_id: Option<String>,
    pub sender_id: Option<i64>,
    pub files: Vec<EchoedFile>,
}

/// A server → client event, reduced to what the tool needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    NewMessage(EchoedMessage),
    Error {
        message: String,
        local_temp_id: Option<String>,
    },
    /// Any other type (presence, pong, ...), by name.
    Other(String),
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    local_temp_id: Value,
}

#[derive(Deserialize)]
struct RawMessage {
    id: i64,
    room_id: i64,
    #[serde(default)]
    local_temp_id: Value,
    #[serde(default)]
    sender_details: Option<RawUser>,
    #[serde(default)]
    files_data: Option<Vec<RawFile>>,
}

#[derive(Deserialize)]
struct RawUser {
    id: i64,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    file_path: String,
    #[serde(default)]
    file_size: Option<u64>,
}

/// Parses one text frame; None when it is not an event (not JSON, no
/// `type`, or a `new_message` without id and room).
pub fn parse_event(text: &str) -> Option<ServerEvent> {
    let raw: RawEvent = serde_json::from_str(text).ok()?;
    match raw.kind.as_str() {
        "new_message" => {
            let message: RawMessage = serde_json::from_value(raw.data).ok()?;
            Some(ServerEvent::NewMessage(EchoedMessage {
                id: message.id,
                room_id: message.room_id,
                local_temp_id: temp_id_text(&message.local_temp_id),
                sender_id: message.sender_details.map(|user| user.id),
                files: message
                    .files_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|file| EchoedFile { file_path: file.file_path, file_size: file.file_size })
                    .collect(),
            }))
        }
        "error" => Some(ServerEvent::Error {
            message: raw
                .message
                .or_else(|| raw.data.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default(),
            local_temp_id: temp_id_text(&raw.local_temp_id)
                .or_else(|| raw.data.get("local_temp_id").and_then(temp_id_text)),
        }),
        other => Some(ServerEvent::Other(other.to_string())),
    }
}

fn temp_id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// What one read from a WebSocket amounted to.
#[derive(Debug)]
pub enum Incoming {
    Event(ServerEvent),
    /// A text frame that is not an event.
    Unparsed,
    /// Control or binary frames: nothing to act on.
    Nothing,
    /// The connection is over; the reason says how.
    Closed(String),
}

/// Sorts the result of `ws.next()`.
pub fn classify(item: Option<std::result::Result<Message, tungstenite::Error>>) -> Incoming {
    match item {
        None => Incoming::Closed("connection ended".to_string()),
        Some(Err(error)) => Incoming::Closed(describe(&error)),
        Some(Ok(Message::Text(text))) => match parse_event(text.as_str()) {
            Some(event) => Incoming::Event(event),
            None => Incoming::Unparsed,
        },
        Some(Ok(Message::Close(frame))) => Incoming::Closed(match frame {
            Some(frame) => {
                format!("closed by the server with code {} {:?}", u16::from(frame.code), frame.reason.as_str())
            }
            None => "closed by the server without a code".to_string(),
        }),
        Some(Ok(_)) => Incoming::Nothing,
    }
}

/// Sends `count` text messages into a room over `ws`, at most `window`
/// unacknowledged, and waits for every echo (set-up for other measurements).
pub async fn send_texts(
    ws: &mut WsStream,
    room_id: i64,
    count: usize,
    size: usize,
    temp_prefix: &str,
    window: usize,
) -> Result<()> {
    let content = text_content(size);
    let mut sent = 0;
    let mut acknowledged = 0;
    while acknowledged < count {
        while sent < count && sent - acknowledged < window.max(1) {
            let frame = text_message_frame(room_id, &content, &format!("{temp_prefix}{sent}"));
            ws.send(Message::text(frame)).await.context("sending a set-up message")?;
            sent += 1;
        }
        let item = timeout(REQUEST_TIMEOUT, ws.next())
            .await
            .map_err(|_| BenchError::new(format!("no echo for a set-up message within {REQUEST_TIMEOUT:?}")))?;
        match classify(item) {
            Incoming::Event(ServerEvent::NewMessage(message))
                if message.local_temp_id.as_deref().is_some_and(|id| id.starts_with(temp_prefix)) =>
            {
                acknowledged += 1;
            }
            Incoming::Event(ServerEvent::Error { message, .. }) => {
                return Err(BenchError::new(format!("the server refused a set-up message: {message}")));
            }
            Incoming::Closed(reason) => {
                return Err(BenchError::new(format!("the WebSocket closed while sending set-up messages: {reason}")));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        for (url, authority) in [
            ("http://127.0.0.1:8000", "127.0.0.1:8000"),
            ("http://127.0.0.1:18000/", "127.0.0.1:18000"),
            ("http://127.1.2.3:9", "127.1.2.3:9"),
            ("http://localhost:8000", "127.0.0.1:8000"),
            ("http://[::1]:8000", "[::1]:8000"),
            ("http://127.0.0.1", "127.0.0.1:80"),
        ] {
            let target = Target::parse(url).expect(url);
            assert_eq!(target.authority(), authority, "{url}");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "http://10.0.0.1:8000",
            "http://192.168.1.10:8000",
            "http://0.0.0.0:8000",
            "http://example.com:8000",
            "http://8.8.8.8",
            "http://[::]:8000",
            "https://127.0.0.1:8000",
            "127.0.0.1:8000",
            "http://127.0.0.1:8000/api",
        ] {
            assert!(Target::parse(url).is_err(), "{url} should be refused");
        }
    }

    #[test]
    fn own_path_only_for_urls_of_the_target() {
        let target = Target::parse("http://127.0.0.1:18000").expect("target");
        assert_eq!(
            target.own_path("http://127.0.0.1:18000/static/chat_files/voices/a.mp3"),
            Some("/static/chat_files/voices/a.mp3".to_string())
        );
        assert_eq!(target.own_path("http://10.1.1.1:18000/static/x"), None);
        assert_eq!(target.own_path("http://127.0.0.1:8000/static/x"), None);
    }

    #[test]
    fn new_message_event_is_parsed() {
        let text = r#"{"type":"new_message","data":{"id":41,"room_id":7,"content":"hi",
            "message_type":"text","local_temp_id":"b1-0-3","files_data":null,
            "sender_details":{"id":5,"name":"a","email":"a@x","avatar_url":null,"is_online":true}}}"#;
        assert_eq!(
            parse_event(text),
            Some(ServerEvent::NewMessage(EchoedMessage {
                id: 41,
                room_id: 7,
                local_temp_id: Some("b1-0-3".to_string()),
                sender_id: Some(5),
                files: Vec::new(),
            }))
        );
    }

    #[test]
    fn new_message_with_files_lists_them() {
        let text = r#"{"type":"new_message","data":{"id":1,"room_id":2,"local_temp_id":null,
            "files_data":[{"file_name":"a.mp3","file_path":"http://127.0.0.1:1/static/a.mp3",
            "file_size":10,"mime_type":"audio/mpeg","duration":1.5}]}}"#;
        let Some(ServerEvent::NewMessage(message)) = parse_event(text) else {
            panic!("not a new_message");
        };
        assert_eq!(message.local_temp_id, None);
        assert_eq!(
            message.files,
            vec![EchoedFile { file_path: "http://127.0.0.1:1/static/a.mp3".to_string(), file_size: Some(10) }]
        );
    }

    #[test]
    fn error_event_keeps_message_and_temp_id() {
        let text = r#"{"type":"error","message":"File too large. Maximum size: 50.0MB","local_temp_id":"u-1"}"#;
        assert_eq!(
            parse_event(text),
            Some(ServerEvent::Error {
                message: "File too large. Maximum size: 50.0MB".to_string(),
                local_temp_id: Some("u-1".to_string())
            })
        );
        let bare = r#"{"type":"error","message":"bad","local_temp_id":null}"#;
        assert!(matches!(parse_event(bare), Some(ServerEvent::Error { local_temp_id: None, .. })));
    }

    #[test]
    fn other_events_and_garbage() {
        assert_eq!(parse_event(r#"{"type":"pong"}"#), Some(ServerEvent::Other("pong".to_string())));
        assert_eq!(parse_event("not json"), None);
        assert_eq!(parse_event(r#"{"data":{}}"#), None);
    }

    #[test]
    fn text_frame_is_a_send_message() {
        let frame: Value = serde_json::from_str(&text_message_frame(3, "abc", "t-1")).expect("json");
        assert_eq!(frame["type"], "send_message");
        assert_eq!(frame["data"]["room_id"], 3);
        assert_eq!(frame["data"]["message_type"], "text");
        assert_eq!(frame["data"]["content"], "abc");
        assert_eq!(frame["data"]["local_temp_id"], "t-1");
    }

    #[test]
    fn text_content_has_the_asked_length() {
        assert_eq!(text_content(1), "a");
        assert_eq!(text_content(100).len(), 100);
        assert_eq!(text_content(5000).chars().count(), 5000);
    }
}
