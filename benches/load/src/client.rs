//! One WebSocket client connection: open, send and await JSON messages, classify failures.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub type Ws = WebSocketStream<TcpStream>;

/// Why an operation failed; `key()` is the name it is counted under.
#[derive(Debug, Clone, PartialEq)]
pub enum Fail {
    /// TCP connect failed.
    Connect(std::io::ErrorKind),
    /// The upgrade was refused with an HTTP status (and the body's `code`).
    Http(u16, Option<String>),
    /// A WebSocket or I/O error after connecting.
    Transport(String),
    /// A close frame (with its code) arrived instead of the awaited reply.
    Closed(Option<u16>),
    /// The TCP connection ended without a close frame.
    Eof,
    /// No reply in time; the stage named.
    Timeout(&'static str),
    /// The server answered with `{"type":"error","code":…}`.
    Server(String),
    /// Some other message arrived.
    Unexpected(String),
}

impl Fail {
    pub fn key(&self) -> String {
        match self {
            Fail::Connect(kind) => format!("tcp:{kind:?}"),
            Fail::Http(status, Some(code)) => format!("http:{status}:{code}"),
            Fail::Http(status, None) => format!("http:{status}"),
            Fail::Transport(kind) => format!("ws:{kind}"),
            Fail::Closed(Some(code)) => format!("close:{code}"),
            Fail::Closed(None) => "close:none".to_string(),
            Fail::Eof => "eof".to_string(),
            Fail::Timeout(stage) => format!("timeout:{stage}"),
            Fail::Server(code) => code.clone(),
            Fail::Unexpected(t) => format!("unexpected:{t}"),
        }
    }

    /// True when the connection is gone (further requests on it are pointless).
    pub fn is_transport(&self) -> bool {
        !matches!(self, Fail::Server(_))
    }

    pub fn from_ws(e: WsError) -> Fail {
        match e {
            WsError::Http(resp) => {
                let code = resp
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_string));
                Fail::Http(resp.status().as_u16(), code)
            }
            WsError::Io(io) => Fail::Transport(format!("io:{:?}", io.kind())),
            WsError::ConnectionClosed | WsError::AlreadyClosed => Fail::Transport("closed".into()),
            WsError::Protocol(p) => Fail::Transport(format!("protocol:{}", short(&p.to_string()))),
            WsError::Capacity(_) => Fail::Transport("capacity".into()),
            WsError::Utf8(_) => Fail::Transport("utf8".into()),
            WsError::Url(_) => Fail::Transport("url".into()),
            WsError::HttpFormat(_) => Fail::Transport("http-format".into()),
            other => Fail::Transport(short(&other.to_string())),
        }
    }
}

/// The first few words of an error message, as a counter key.
fn short(s: &str) -> String {
    s.split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join("-")
        .to_lowercase()
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

/// Signs the benchmark's tokens: one hour of life, `channels: ["bench:*"]`.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
        }
    }

    pub fn token(&self, sub: &str, jti: &str) -> String {
        let now = now_secs();
        let claims = json!({
            "sub": sub,
            "iat": now,
            "exp": now + 3600,
            "jti": jti,
            "channels": ["bench:*"],
        });
        wsauth_core::jwt::sign_hs256(&self.secret, &claims)
    }
}

/// TCP connect and WebSocket upgrade, optionally with `Authorization: Bearer`.
pub async fn open(target: &Target, bearer: Option<&str>) -> Result<Ws, Fail> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| Fail::Connect(e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let mut req = target
        .url
        .as_str()
        .into_client_request()
        .map_err(Fail::from_ws)?;
    if let Some(token) = bearer {
        let v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Fail::Transport("bad-header".into()))?;
        req.headers_mut().insert(AUTHORIZATION, v);
    }
    // A small read buffer: tungstenite zeroes the whole buffer before each read, and
    // at the default 128 KiB that memset was the load tool's largest cost.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
        .await
        .map_err(Fail::from_ws)?;
    Ok(ws)
}

pub async fn send(ws: &mut Ws, v: &Value) -> Result<(), Fail> {
    ws.send(Message::text(v.to_string()))
        .await
        .map_err(Fail::from_ws)
}

/// The next JSON message, skipping pings and pongs.
pub async fn recv(ws: &mut Ws) -> Result<Value, Fail> {
    loop {
        match ws.next().await {
            None => return Err(Fail::Eof),
            Some(Err(e)) => return Err(Fail::from_ws(e)),
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|_| Fail::Unexpected("non-json".into()));
            }
            Some(Ok(Message::Close(f))) => return Err(Fail::Closed(f.map(|f| u16::from(f.code)))),
            Some(Ok(Message::Binary(_))) => return Err(Fail::Unexpected("binary".into())),
            Some(Ok(_)) => {}
        }
    }
}

/// Reads until a message of type `want` arrives (skipping notices such as `expiring`);
/// an `error` message fails with its code.
pub async fn expect(ws: &mut Ws, want: &str) -> Result<Value, Fail> {
    loop {
        let v = recv(ws).await?;
        match v.get("type").and_then(Value::as_str) {
            Some(t) if t == want => return Ok(v),
            Some("error") => {
                let code = v
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("error-without-code");
                return Err(Fail::Server(code.to_string()));
            }
            Some("expiring" | "message" | "left") => {}
            Some(other) => return Err(Fail::Unexpected(other.to_string())),
            None => return Err(Fail::Unexpected("no-type".into())),
        }
    }
}

/// `fut` bounded by `d`, failing with `Timeout(stage)`.
pub async fn within<T>(
    d: Duration,
    stage: &'static str,
    fut: impl Future<Output = Result<T, Fail>>,
) -> Result<T, Fail> {
    tokio::time::timeout(d, fut)
        .await
        .unwrap_or(Err(Fail::Timeout(stage)))
}

/// Closes cleanly with 1000 (which ends the session for good) and waits, bounded, for the
/// server's close frame and the end of the TCP connection. Returns the time until the close
/// frame arrived and until the connection ended (`None` if not within 5 s).
pub async fn close(mut ws: Ws) -> (Option<Duration>, Option<Duration>) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let start = std::time::Instant::now();
    let mut reply = None;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                reply.get_or_insert(start.elapsed());
            }
        }
    })
    .await
    .is_ok();
    (reply, ended.then(|| start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_keys() {
        assert_eq!(
            Fail::Connect(std::io::ErrorKind::ConnectionRefused).key(),
            "tcp:ConnectionRefused"
        );
        assert_eq!(
            Fail::Http(429, Some("RATE_LIMITED".into())).key(),
            "http:429:RATE_LIMITED"
        );
        assert_eq!(Fail::Closed(Some(4401)).key(), "close:4401");
        assert_eq!(Fail::Server("TOKEN_EXPIRED".into()).key(), "TOKEN_EXPIRED");
        assert_eq!(Fail::Timeout("auth").key(), "timeout:auth");
        assert!(!Fail::Server("FORBIDDEN".into()).is_transport());
        assert!(Fail::Eof.is_transport());
    }

    #[test]
    fn tokens_are_hs256_jwts_with_the_bench_claims() {
        let t = Signer::new("0123456789abcdef0123456789abcdef").token("u1", "j1");
        assert_eq!(t.split('.').count(), 3);
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t.split('.').nth(1).unwrap())
            .unwrap();
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["sub"], "u1");
        assert_eq!(v["channels"][0], "bench:*");
        assert!(v["exp"].as_u64().unwrap() > v["iat"].as_u64().unwrap());
    }
}
