//! Issue 15 ("Hardening"), findings 6 and 7, over real sockets: each case is a
//! finding reproduced against the server, which must now refuse it.

#[path = "../../../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::json;

// ----- Finding 6: token lifetime --------------------------------------------

/// A token valid until 2286 would outlive every revocation of its `jti` or
/// `sub` (kept `session.max_token_lifetime_s`): refused, on the header and
/// by message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_outliving_its_revocations_is_refused_invalid_token() {
    let s = server(test_config()).await;
    let ancient = token(
        "alice",
        json!({"iat": 1_000_000_000u64, "exp": 9_999_999_999u64, "jti": "j-2286"}),
    );
    let auth = format!("Bearer {ancient}");
    let (status, body) = Client::connect_with(s.ws_addr, &[("Authorization", &auth)])
        .await
        .err()
        .expect("the upgrade is refused");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("INVALID_TOKEN"), "{body}");
    assert!(!body.contains(&ancient));

    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "auth", "id": 1, "token": ancient}))
        .await;
    let error = c.expect_fatal("INVALID_TOKEN", 4401).await;
    assert!(!error.to_string().contains(&ancient));

    // A token within the bound still authenticates.
    let day = token("alice", json!({"exp": now_s() + 86_000}));
    let (_c, reply) = Client::authed(s.ws_addr, &day).await;
    assert_eq!(reply["user_id"], "alice");
}

// ----- Finding 7: the upgrade -------------------------------------------------

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends an upgrade request whose headers after the fixed ones are `extra`
/// (each line ending in CRLF); returns the status and the socket.
async fn raw_upgrade(addr: SocketAddr, extra: &str) -> (u16, TcpStream) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sec_websocket_key_that_is_not_16_bytes_of_base64_gets_400() {
    let s = server(test_config()).await;
    for key in [
        "x",
        "dGhlIHNhbXBsZSBub25j",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ==AA",
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        let (status, _) = raw_upgrade(s.ws_addr, &format!("Sec-WebSocket-Key: {key}\r\n")).await;
        assert_eq!(status, 400, "key {key:?}");
    }
    let (status, _) = raw_upgrade(s.ws_addr, &format!("Sec-WebSocket-Key: {GOOD_KEY}\r\n")).await;
    assert_eq!(status, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_origin_key_or_authorization_headers_get_400() {
    let mut config = test_config();
    config.allowed_origins = vec!["https://good.example".into()];
    let s = server(config).await;
    let key = format!("Sec-WebSocket-Key: {GOOD_KEY}\r\n");
    let t = token("alice", json!({}));
    let cases = [
        // An evil first Origin must not pass because a good one follows.
        format!("{key}Origin: https://evil.example\r\nOrigin: https://good.example\r\n"),
        format!("{key}Origin: https://good.example\r\nOrigin: https://good.example\r\n"),
        format!("{key}Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"),
        format!("{key}Authorization: Bearer {t}\r\nAuthorization: Bearer {t}\r\n"),
    ];
    for extra in cases {
        let (status, _) = raw_upgrade(s.ws_addr, &extra).await;
        assert_eq!(status, 400, "{extra}");
    }
    let (status, _) =
        raw_upgrade(s.ws_addr, &format!("{key}Origin: https://good.example\r\n")).await;
    assert_eq!(status, 101);
}

/// The close code of the first close frame the server sends, skipping its
/// other frames; `None` when the socket ends without one.
async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
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
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_are_closed_1002() {
    let s = server(test_config()).await;
    let cases: [(&str, Vec<u8>); 4] = [
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i']),
        ("RSV1 without an extension", masked(0xC1, b"hi")),
        ("opcode 3", masked(0x83, b"")),
        ("126-byte ping", masked(0x89, &[0u8; 126])),
    ];
    for (what, frame) in cases {
        let (status, mut tcp) =
            raw_upgrade(s.ws_addr, &format!("Sec-WebSocket-Key: {GOOD_KEY}\r\n")).await;
        assert_eq!(status, 101);
        tcp.write_all(&frame).await.expect("frame");
        assert_eq!(close_code(&mut tcp).await, Some(1002), "{what}");
    }
}

/// `data` nested `depth` arrays deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_nested_deeper_than_the_limit_is_bad_request() {
    let s = server(test_config()).await;
    let alice = token("alice", json!({}));
    // 30,000 deep crashed a subscriber; 65 is one past the default 64. A
    // malformed message is fatal, as every malformed message.
    for depth in [30_000, 65] {
        let (mut c, _) = Client::authed(s.ws_addr, &alice).await;
        c.send_text(&format!(
            r#"{{"type":"publish","id":2,"channel":"general","data":{}}}"#,
            nested(depth)
        ))
        .await;
        let error = c.expect_fatal("BAD_REQUEST", 4400).await;
        assert_eq!(error["id"], 2, "{error}");
    }
    // At the limit, the message goes on (to the missing handler).
    let (mut c, _) = Client::authed(s.ws_addr, &alice).await;
    c.send_text(&format!(
        r#"{{"type":"rpc","id":4,"method":"chat.send","data":{}}}"#,
        nested(64)
    ))
    .await;
    let reply = c.recv().await;
    assert_eq!(reply["code"], "METHOD_NOT_FOUND", "{reply}");
    c.send_text(&format!(
        r#"{{"type":"rpc","id":5,"method":"chat.send","data":{}}}"#,
        nested(65)
    ))
    .await;
    c.expect_fatal("BAD_REQUEST", 4400).await;
}

// ----- Finding 7: the unauthenticated cap ------------------------------------

/// Connections still in their TLS handshake count against the cap: a client
/// opening TCP connections and never starting TLS cannot hold more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_in_progress_count_as_unauthenticated() {
    use std::sync::Arc;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/testdata/tls");
    let mut config = test_config();
    config.tls = Some(wsauth_server::config::TlsConfig {
        cert_file: format!("{dir}/cert.pem").into(),
        key_file: format!("{dir}/key.pem").into(),
    });
    config.limits.max_unauthenticated_per_ip = 2;
    config.limits.handshake_timeout_ms = 20_000;
    let s = server(config).await;
    let idle: Vec<TcpStream> = vec![
        TcpStream::connect(s.ws_addr).await.expect("tcp"),
        TcpStream::connect(s.ws_addr).await.expect("tcp"),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(s.ws_addr).await.expect("tcp");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "over the cap, the connection is closed before TLS: {read:?}"
    );

    // Once the idle ones go, a real client gets in.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(format!("{dir}/ca.pem")).expect("ca"))
        .expect("root");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = TcpStream::connect(s.ws_addr).await.expect("tcp");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let url = format!("wss://localhost:{}/ws", s.ws_addr.port());
    tokio_tungstenite::client_async(url, tls)
        .await
        .expect("upgrade over TLS");
}

// ----- The dashboard and the admin listener ----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_may_not_be_framed() {
    let s = server(test_config()).await;
    let mut tcp = TcpStream::connect(s.admin_addr).await.expect("connect");
    tcp.write_all(b"GET /dashboard HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let head = text.split("\r\n\r\n").next().expect("head");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nx-frame-options: deny\r\n"), "{head}");
    let csp = head
        .lines()
        .find(|l| l.starts_with("content-security-policy:"))
        .expect("a CSP");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
}
