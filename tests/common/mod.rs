//! Shared helpers of the integration tests: start the real server on ephemeral
//! loopback ports, mint tokens, and talk to it with real WebSocket clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsauth_server::config::Config;
use wsauth_server::{App, ServerHandle, start, start_with_app};

pub const SECRET: &str = "integration-tests-secret-of-32-bytes-or-more";
pub const ADMIN_KEY: &str = "integration-admin-key";

/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A configuration for tests: ephemeral loopback ports, a known secret and admin key.
pub fn test_config() -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        admin_key: Some(ADMIN_KEY.to_owned()),
        shutdown_drain_ms: 3_000,
        ..Config::default()
    };
    c.jwt.hs256_secret = Some(SECRET.to_owned());
    c
}

/// Starts a server with `config`.
pub async fn server(config: Config) -> ServerHandle {
    config.validate(false).expect("valid test config");
    start(config, None).await.expect("server starts")
}

/// Starts a server with `config` whose calls `app` answers.
pub async fn started_with_app(config: Config, app: App) -> ServerHandle {
    config.validate(false).expect("valid test config");
    start_with_app(config, None, app)
        .await
        .expect("server starts")
}

/// Starts a server with `config` on the Redis store ([`on_redis`]).
pub async fn server_on_redis(config: Config) -> ServerHandle {
    server(on_redis(config)).await
}

/// `config` on the Redis store: one `redis-server` for the whole test binary, a
/// key prefix per server. Without `redis-server` installed (and
/// `WSAUTH_REQUIRE_REDIS` unset) it stays on the in-memory store and says so.
pub fn on_redis(mut config: Config) -> Config {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIXES: AtomicU64 = AtomicU64::new(0);
    let test = format!("{} on Redis", wsauth_test_support::current_test());
    if wsauth_test_support::redis::available(&test) {
        let redis = wsauth_test_support::redis::RedisServer::shared();
        config.store.kind = wsauth_server::config::StoreKind::Redis;
        config.store.url = Some(redis.url());
        config.store.key_prefix = format!("suite{}:", PREFIXES.fetch_add(1, Ordering::Relaxed));
    }
    config
}

/// Starts a server with `config` on a given store.
pub async fn start_with_store<S: wsauth_store::Store>(
    config: Config,
    verifier: wsauth_core::jwt::Verifier,
    hub: std::sync::Arc<wsauth_store::hub::Hub>,
    store: std::sync::Arc<S>,
) -> ServerHandle {
    wsauth_server::server::start_with_store(config, verifier, hub, store, App::new())
        .await
        .expect("server starts")
}

/// The server suite's cases about the listener itself (`tests/suite/server.rs`):
/// the tokio-tungstenite server owns its listener, so they all run.
#[allow(unused_macros)]
macro_rules! listener_case {
    (why = $why:literal; $(#[$attr:meta])* async fn $name:ident() $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $name() $body
    };
}

/// Mints an HS256 token with `claims` (merged over `sub` and a 1 h `exp`).
pub fn token(sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now_s() + 3600, "iat": now_s()});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    wsauth_core::jwt::sign_hs256(SECRET.as_bytes(), &claims)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test client.
pub struct Client {
    pub ws: Ws,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Close(u16),
    NoCloseFrame,
}

impl Client {
    /// Connects without a token.
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::connect_with(addr, &[])
            .await
            .expect("upgrade accepted")
    }

    /// Connects with extra upgrade headers; `Err((status, body))` when refused.
    pub async fn connect_with(
        addr: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        Self::connect_url(&format!("ws://{addr}/ws"), headers).await
    }

    pub async fn connect_url(url: &str, headers: &[(&str, &str)]) -> Result<Client, (u16, String)> {
        let mut request = url.into_client_request().expect("request");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("name"),
                value.parse().expect("value"),
            );
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((ws, _))) => Ok(Client { ws }),
            Ok(Err(WsError::Http(response))) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((status, body))
            }
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => panic!("connect timed out"),
        }
    }

    /// Connects and authenticates by message; returns the `authenticated` reply.
    pub async fn authed(addr: SocketAddr, token: &str) -> (Client, Value) {
        let mut c = Client::connect(addr).await;
        c.send(json!({"type": "auth", "id": 1, "token": token}))
            .await;
        let reply = c.recv().await;
        assert_eq!(reply["type"], "authenticated", "{reply}");
        (c, reply)
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next JSON message (pings are answered and skipped). Panics on close.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time")
                .expect("stream open")
                .expect("no socket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the JSON messages before and the end.
    pub async fn until_closed(&mut self) -> (Vec<Value>, Ended) {
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the server closes in time");
            match next {
                Some(Ok(Message::Text(t))) => {
                    seen.push(serde_json::from_str(t.as_str()).expect("JSON"))
                }
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                    return (seen, Ended::Close(u16::from(code)));
                }
                Some(Ok(Message::Close(None))) => return (seen, Ended::Close(1005)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (seen, Ended::NoCloseFrame),
            }
        }
    }

    /// Expects a fatal error with `code`, then the close `close`.
    pub async fn expect_fatal(&mut self, code: &str, close: u16) -> Value {
        let (seen, ended) = self.until_closed().await;
        let error = seen
            .iter()
            .rev()
            .find(|m| m["type"] == "error")
            .cloned()
            .unwrap_or_else(|| panic!("no error before the close; saw {seen:?}"));
        assert_eq!(error["code"], code, "{error}");
        assert_eq!(error["fatal"], true, "{error}");
        assert_eq!(ended, Ended::Close(close), "close code after {code}");
        error
    }

    pub async fn close(mut self, code: u16) {
        let frame = CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        let _ = self.ws.close(Some(frame)).await;
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_connection(self) {
        drop(self.ws);
    }
}

/// `POST /admin/revoke` with the admin key: (status, body).
pub async fn revoke(addr: SocketAddr, body: Value) -> (u16, String) {
    http(addr, "POST", "/admin/revoke", Some(ADMIN_KEY), Some(body)).await
}

/// A raw HTTP/1.1 request to the admin listener: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    http_raw(addr, method, path, key, &body).await
}

/// [`http`] with a body of any text: (status, body).
pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http_exchange(addr, &request).await
}

/// Sends `request` (a whole HTTP request, which closes the connection) and
/// reads the answer: (status, body).
pub async fn http_exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("HTTP connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the server answers")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A store that can be switched off: the in-memory store, or `Unavailable` for every
/// call while `down` is set. For the `INTERNAL` paths and readiness. With
/// `slow_joins_ms` set, every `subscribe` answers that much later (a slow Redis).
pub struct SwitchableStore {
    pub inner: wsauth_store::MemoryStore,
    pub down: std::sync::atomic::AtomicBool,
    pub slow_joins_ms: std::sync::atomic::AtomicU64,
}

impl SwitchableStore {
    async fn pause(&self, operation: &str) {
        let ms = self.slow_joins_ms.load(std::sync::atomic::Ordering::SeqCst);
        if operation == "subscribe" && ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    fn check(&self) -> Result<(), wsauth_store::StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(wsauth_store::StoreError::Unavailable(
                "switched off by the test".into(),
            ))
        } else {
            Ok(())
        }
    }
}

macro_rules! delegate {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $out:ty; )*) => {
        impl wsauth_store::Store for SwitchableStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$out, wsauth_store::StoreError> {
                    self.check()?;
                    self.pause(stringify!($name)).await;
                    self.inner.$name($($arg),*).await
                }
            )*
        }
    };
}

delegate! {
    fn create_session(&self, claims: std::sync::Arc<wsauth_core::jwt::Claims>, now_ms: u64) -> wsauth_store::CreateOutcome;
    fn resume_session(&self, session_id: &str, resume_token: &wsauth_core::Secret, now_ms: u64) -> Option<(wsauth_core::ResumedSession, u64)>;
    fn refresh_session(&self, session_id: &str, epoch: u64, claims: std::sync::Arc<wsauth_core::jwt::Claims>, now_ms: u64) -> wsauth_store::RefreshOutcome;
    fn note_expiring_sent(&self, session_id: &str, epoch: u64) -> ();
    fn subscribe(&self, session_id: &str, epoch: u64, channel: &str) -> ();
    fn unsubscribe(&self, session_id: &str, epoch: u64, channel: &str) -> ();
    fn publish(&self, channel: &str, from: Option<&str>, data: wsauth_core::Payload, now_ms: u64) -> usize;
    fn send_to_user(&self, sub: &str, data: wsauth_core::Payload, now_ms: u64) -> usize;
    fn detach(&self, session_id: &str, epoch: u64, now_ms: u64) -> ();
    fn end_session(&self, session_id: &str, epoch: u64) -> ();
    fn revoke(&self, revocation: wsauth_core::Revocation, now_ms: u64) -> usize;
    fn session(&self, session_id: &str) -> Option<wsauth_store::SessionInfo>;
    fn sessions_of(&self, sub: &str) -> Vec<wsauth_store::SessionInfo>;
    fn is_revoked(&self, claims: &wsauth_core::jwt::Claims, now_ms: u64) -> bool;
    fn ping(&self) -> ();
    fn purge_expired(&self, now_ms: u64) -> ();
    fn stats(&self) -> wsauth_store::StoreStats;
}

/// A [`SwitchableStore`] for `config` (validated), with its verifier and hub.
pub fn switchable_store(
    config: &Config,
) -> (
    wsauth_core::jwt::Verifier,
    std::sync::Arc<wsauth_store::hub::Hub>,
    std::sync::Arc<SwitchableStore>,
) {
    config.validate(false).expect("valid test config");
    let verifier = wsauth_server::server::build_verifier(config, None).expect("verifier");
    let hub = wsauth_store::hub::Hub::new(config.limits.outbound_queue);
    let store = std::sync::Arc::new(SwitchableStore {
        inner: wsauth_store::MemoryStore::new(
            wsauth_server::server::store_settings(config),
            hub.clone() as std::sync::Arc<dyn wsauth_store::Notify>,
        ),
        down: std::sync::atomic::AtomicBool::new(false),
        slow_joins_ms: std::sync::atomic::AtomicU64::new(0),
    });
    (verifier, hub, store)
}

/// Starts a server on a [`SwitchableStore`].
pub async fn server_with_switchable_store(
    config: Config,
) -> (ServerHandle, std::sync::Arc<SwitchableStore>) {
    let (verifier, hub, store) = switchable_store(&config);
    (
        start_with_store(config, verifier, hub, store.clone()).await,
        store,
    )
}

/// Authenticates with `token` on a new connection: `Ok(user_id)` or
/// `Err(code)`; a success is closed with 1000.
pub async fn auth_outcome(addr: SocketAddr, token: &str) -> Result<String, String> {
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "auth", "id": 1, "token": token}))
        .await;
    let reply = c.recv().await;
    if reply["type"] == "authenticated" {
        c.close(1000).await;
        Ok(reply["user_id"].as_str().unwrap_or_default().to_owned())
    } else {
        Err(reply["code"].as_str().unwrap_or("?").to_owned())
    }
}

/// A valid `Sec-WebSocket-Key` (RFC 6455's sample).
pub const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends an upgrade request whose headers after the fixed ones are `extra`
/// (each line ending in CRLF); returns the status and the socket.
pub async fn raw_upgrade(addr: SocketAddr, extra: &str) -> (u16, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("an answer in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "closed before a full answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&got);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, tcp)
}

/// The close code of the first close frame the server sends, skipping its
/// other frames; `None` when the socket ends without one.
pub async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
    loop {
        let mut head = [0u8; 2];
        let read = tokio::time::timeout(WAIT, tcp.read_exact(&mut head))
            .await
            .expect("the server answers or closes in time");
        read.ok()?;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut ext = [0u8; 2];
            tcp.read_exact(&mut ext).await.ok()?;
            len = u64::from(u16::from_be_bytes(ext));
        } else if len == 127 {
            let mut ext = [0u8; 8];
            tcp.read_exact(&mut ext).await.ok()?;
            len = u64::from_be_bytes(ext);
        }
        let mut payload = vec![0u8; len as usize];
        tcp.read_exact(&mut payload).await.ok()?;
        if head[0] & 0x0f == 0x8 {
            return Some(
                payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
            );
        }
    }
}

/// A client frame with `first` (FIN, RSV, opcode) and a masked payload.
pub fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![first];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}
