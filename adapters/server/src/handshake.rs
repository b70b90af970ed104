//! The HTTP side of the WebSocket upgrade, written out by hand so that the
//! authentication (which may wait on the store) happens before the `101` is sent,
//! and so that the whole head is read under one deadline (slow-loris).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wsauth_core::ErrorBody;

/// Largest upgrade request head accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A parsed upgrade request.
#[derive(Debug)]
pub struct UpgradeRequest {
    /// The path, without the query.
    pub path: String,
    /// The query, without `?`.
    pub query: Option<String>,
    /// Headers as received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// `Sec-WebSocket-Key`.
    pub key: Vec<u8>,
    /// Bytes read past the head (a client that did not wait for the 101).
    pub leftover: Vec<u8>,
}

impl UpgradeRequest {
    /// Header pairs as `inspect_upgrade` takes them.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

/// Why an upgrade request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or closed.
    #[error("connection closed during the upgrade: {0}")]
    Io(#[from] std::io::Error),
    /// The head did not arrive in time.
    #[error("upgrade request not received within {0:?}")]
    Timeout(Duration),
    /// Over [`MAX_HEAD_BYTES`].
    #[error("upgrade request head too large")]
    TooLarge,
    /// Not an HTTP/1.1 GET WebSocket upgrade.
    #[error("not a WebSocket upgrade request: {0}")]
    NotAnUpgrade(&'static str),
}

impl HandshakeError {
    /// The HTTP status to answer with, when an answer is still possible.
    pub fn status(&self) -> Option<u16> {
        match self {
            HandshakeError::Io(_) | HandshakeError::Timeout(_) => None,
            HandshakeError::TooLarge => Some(431),
            HandshakeError::NotAnUpgrade(_) => Some(400),
        }
    }
}

/// Reads and checks the upgrade request head.
pub async fn read_upgrade_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<UpgradeRequest, HandshakeError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_len = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = find_head_end(&buf[searched_from..]) {
            break searched_from + pos;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HandshakeError::TooLarge);
        }
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(HandshakeError::TooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HandshakeError::NotAnUpgrade("malformed HTTP request")),
    }
    if req.method != Some("GET") {
        return Err(HandshakeError::NotAnUpgrade("method must be GET"));
    }
    if req.version != Some(1) {
        return Err(HandshakeError::NotAnUpgrade("HTTP/1.1 required"));
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut version_13 = false;
    let mut key = None;
    let mut pairs = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let v = h.value;
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= token_list_contains(v, "websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= token_list_contains(v, "upgrade");
        } else if h.name.eq_ignore_ascii_case("sec-websocket-version") {
            version_13 |= v == b"13";
        } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(v.to_vec());
        }
        pairs.push((h.name.to_owned(), v.to_vec()));
    }
    if !upgrade || !connection_upgrade {
        return Err(HandshakeError::NotAnUpgrade("missing Upgrade: websocket"));
    }
    if !version_13 {
        return Err(HandshakeError::NotAnUpgrade(
            "Sec-WebSocket-Version must be 13",
        ));
    }
    let key = key.ok_or(HandshakeError::NotAnUpgrade("missing Sec-WebSocket-Key"))?;
    Ok(UpgradeRequest {
        path,
        query,
        headers: pairs,
        key,
        leftover: buf[head_len..].to_vec(),
    })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn token_list_contains(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value)
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Answers the upgrade with a refusal and a JSON body (PROTOCOL §2).
pub async fn write_refusal<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    body: &ErrorBody,
) -> std::io::Result<()> {
    write_plain(stream, status, "application/json", &body.to_json()).await
}

/// Answers with a status and a body, and closes.
pub async fn write_plain<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// Completes the upgrade.
pub async fn write_switching_protocols<S: AsyncWrite + Unpin>(
    stream: &mut S,
    key: &[u8],
    subprotocol: Option<&str>,
) -> std::io::Result<()> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = subprotocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &str) -> Result<UpgradeRequest, HandshakeError> {
        let mut bytes = raw.as_bytes();
        read_upgrade_request(&mut bytes).await
    }

    const OK: &str = "GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[tokio::test]
    async fn parses_a_valid_upgrade() {
        let r = parse(OK).await.expect("valid");
        assert_eq!(r.path, "/ws");
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.key, b"dGhlIHNhbXBsZSBub25jZQ==");
        assert!(r.leftover.is_empty());
    }

    #[tokio::test]
    async fn refuses_what_is_not_an_upgrade() {
        for (raw, why) in [
            ("POST /ws HTTP/1.1\r\n\r\n", "method"),
            ("GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", "upgrade"),
            (
                "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: a\r\n\r\n",
                "version",
            ),
            ("garbage\r\n\r\n", "malformed"),
        ] {
            let err = parse(raw).await.expect_err(why);
            assert_eq!(err.status(), Some(400), "{why}");
        }
    }

    #[tokio::test]
    async fn refuses_an_oversized_head() {
        let raw = format!(
            "GET /ws HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(matches!(parse(&raw).await, Err(HandshakeError::TooLarge)));
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
            b"dGhlIHNhbXBsZSBub25jZQ==",
        );
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
