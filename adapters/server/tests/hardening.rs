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

// Finding 7's upgrade checks (key, repeated headers, 1002, JSON depth) are in
// the server suite (`tests/suite/server.rs`), which runs on both listeners.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
