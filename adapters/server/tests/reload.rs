//! Reloading the key and certificate files without a restart: `POST
//! /admin/reload` and SIGHUP swap the JWT keys and the TLS certificate; a bad
//! file is refused and the old one stays in force; each part is reloaded on its
//! own. Keys are the verifier tests' (`core/testdata/keys`); certificates are
//! `tests/testdata/reload`'s.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, WAIT, auth_outcome as auth, http, now_s};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;
use wsauth_core::jwt::sign;
use wsauth_server::config::{Config, TlsConfig};

fn test_key(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../core/testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

fn tls_file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/testdata/reload/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test certificate")
}

/// Replaces `path`'s content the way an operator's tooling does: a new file
/// renamed over the old one.
fn replace(path: &Path, content: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, content).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

/// An ES256 token (the P-256 test key: the old key) for `sub`.
fn old_token(sub: &str) -> String {
    let key = EncodingKey::from_ec_pem(&test_key("p256.key")).expect("p256");
    let claims = json!({"sub": sub, "exp": now_s() + 3600});
    sign(&key, Algorithm::ES256, Some("current"), &claims).expect("sign")
}

/// An EdDSA token (the Ed25519 test key: the new key) for `sub`.
fn new_token(sub: &str) -> String {
    let key = EncodingKey::from_ed_pem(&test_key("ed25519.key")).expect("ed25519");
    let claims = json!({"sub": sub, "exp": now_s() + 3600});
    sign(&key, Algorithm::EdDSA, Some("current"), &claims).expect("sign")
}

/// An HS256 token signed with `secret`.
fn hs_token(secret: &str, sub: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("secret");
    let claims = json!({"sub": sub, "exp": now_s() + 3600});
    sign(&key, Algorithm::HS256, None, &claims).expect("sign")
}

/// A configuration whose only key is the public key file `key` (kid
/// `current`, its file stem).
fn config_with_key_file(key: &Path) -> Config {
    let mut c = common::test_config();
    c.jwt.hs256_secret = None;
    c.jwt.public_key_files = vec![key.to_path_buf()];
    c
}

/// A directory holding `current.pem`, the old (P-256) public key.
fn key_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("current.pem");
    std::fs::write(&path, test_key("p256.pub.pem")).expect("write");
    (dir, path)
}

fn refused() -> Result<String, String> {
    Err("AUTH_FAILED".to_owned())
}

/// `POST /admin/reload` with the admin key: (status, body).
async fn reload(admin: SocketAddr) -> (u16, Value) {
    let (status, body) = http(admin, "POST", "/admin/reload", Some(ADMIN_KEY), None).await;
    let body = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body}"));
    (status, body)
}

/// The value of `wsauth_config_reloads_total{outcome}`.
fn reloads(server: &wsauth_server::ServerHandle, outcome: &str) -> f64 {
    let exposition = server.metrics.render(0);
    let series = format!("wsauth_config_reloads_total{{outcome=\"{outcome}\"}}");
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str())?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{exposition}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_public_key_file_is_used_after_a_reload_and_the_old_key_stops() {
    let (_dir, path) = key_dir();
    let server = common::server(config_with_key_file(&path)).await;
    assert_eq!(
        auth(server.ws_addr, &old_token("alice")).await,
        Ok("alice".into())
    );

    replace(&path, &test_key("ed25519.pub.pem"));
    assert_eq!(
        auth(server.ws_addr, &new_token("bob")).await,
        refused(),
        "the new file is not read before a reload"
    );
    let (status, _) = http(server.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(status, 401, "the admin key is required");
    let (status, body) = reload(server.admin_addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"reloaded": {"keys": true, "tls": false}}));

    assert_eq!(
        auth(server.ws_addr, &new_token("bob")).await,
        Ok("bob".into())
    );
    // Verified (and cached) before the reload: refused all the same.
    assert_eq!(auth(server.ws_addr, &old_token("alice")).await, refused());
    assert_eq!(reloads(&server, "ok"), 1.0);
    assert_eq!(reloads(&server, "failed"), 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_file_is_refused_naming_it_and_the_old_key_stays() {
    let (_dir, path) = key_dir();
    let server = common::server(config_with_key_file(&path)).await;
    let private = test_key("ed25519.key");
    let bad: [&[u8]; 3] = [b"not a key at all\n", &private, b""];
    for (i, content) in bad.into_iter().enumerate() {
        replace(&path, content);
        let (status, body) = reload(server.admin_addr).await;
        assert_eq!(status, 500, "{body}");
        let error = body["error"].as_str().expect("error");
        assert!(
            error.starts_with("keys: ") && error.contains(&path.display().to_string()),
            "names the part and the file: {error}"
        );
        assert_eq!(body["reloaded"], json!({"keys": false, "tls": false}));
        assert!(!error.contains("PRIVATE KEY"), "no content: {error}");
        assert_eq!(
            auth(server.ws_addr, &old_token("alice")).await,
            Ok("alice".into()),
            "the old key still verifies"
        );
        assert_eq!(auth(server.ws_addr, &new_token("bob")).await, refused());
        assert_eq!(reloads(&server, "failed"), (i + 1) as f64);
    }
    // An unreadable file (here: gone).
    std::fs::remove_file(&path).expect("remove");
    let (status, body) = reload(server.admin_addr).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        auth(server.ws_addr, &old_token("alice")).await,
        Ok("alice".into())
    );
    assert_eq!(reloads(&server, "ok"), 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_is_reloaded_and_a_too_short_secret_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    let (old, new) = ("o".repeat(40), "n".repeat(40));
    std::fs::write(&path, format!("{old}\n")).expect("write");
    let mut config = common::test_config();
    config.jwt.hs256_secret = None;
    config.jwt.hs256_secret_file = Some(path.clone());
    let server = common::server(config).await;
    assert_eq!(
        auth(server.ws_addr, &hs_token(&old, "alice")).await,
        Ok("alice".into())
    );

    replace(&path, b"too-short\n");
    let (status, body) = reload(server.admin_addr).await;
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().expect("error");
    assert!(
        error.contains("jwt.hs256_secret_file") && error.contains(&path.display().to_string()),
        "{error}"
    );
    assert!(!error.contains("too-short"), "never the secret: {error}");
    assert_eq!(
        auth(server.ws_addr, &hs_token(&old, "alice")).await,
        Ok("alice".into())
    );

    replace(&path, format!("{new}\n").as_bytes());
    let (status, body) = reload(server.admin_addr).await;
    assert_eq!(
        (status, &body["reloaded"]["keys"]),
        (200, &json!(true)),
        "{body}"
    );
    assert_eq!(
        auth(server.ws_addr, &hs_token(&new, "bob")).await,
        Ok("bob".into())
    );
    assert_eq!(
        auth(server.ws_addr, &hs_token(&old, "alice")).await,
        refused()
    );
    assert_eq!(
        (reloads(&server, "ok"), reloads(&server, "failed")),
        (1.0, 1.0)
    );
    server.shutdown().await;
}

/// A TLS client trusting the test CA.
fn connector() -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(&tls_file("ca.pem")).expect("ca");
    roots.add(ca).expect("root");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(addr: SocketAddr) -> TlsStream {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(WAIT, connector().connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake")
}

/// The certificate a new TLS client receives.
async fn served_certificate(addr: SocketAddr) -> Vec<u8> {
    let tls = tls_connect(addr).await;
    let (_, connection) = tls.get_ref();
    connection.peer_certificates().expect("certificates")[0].to_vec()
}

fn der(pem_file: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(&tls_file(pem_file))
        .expect("certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_serves_new_connections_and_a_mismatched_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, tls_file("a.cert.pem")).expect("write");
    std::fs::write(&key, tls_file("a.key.pem")).expect("write");
    let keys = dir.path().join("current.pem");
    std::fs::write(&keys, test_key("p256.pub.pem")).expect("write");
    let mut config = config_with_key_file(&keys);
    config.tls = Some(TlsConfig {
        cert_file: cert.clone(),
        key_file: key.clone(),
    });
    let server = common::server(config).await;
    assert_eq!(served_certificate(server.ws_addr).await, der("a.cert.pem"));
    // A connection open across the reload.
    let url = format!("wss://localhost:{}/ws", server.ws_addr.port());
    let (mut open, _) = tokio_tungstenite::client_async(url, tls_connect(server.ws_addr).await)
        .await
        .expect("upgrade over TLS");

    replace(&cert, &tls_file("b.cert.pem"));
    replace(&key, &tls_file("b.key.pem"));
    assert_eq!(
        served_certificate(server.ws_addr).await,
        der("a.cert.pem"),
        "not before a reload"
    );
    let (status, body) = reload(server.admin_addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"reloaded": {"keys": true, "tls": true}}));
    assert_eq!(served_certificate(server.ws_addr).await, der("b.cert.pem"));

    // The connection opened before is untouched.
    let auth = json!({"type": "auth", "id": 1, "token": old_token("alice")});
    open.send(Message::text(auth.to_string()))
        .await
        .expect("send");
    let reply = loop {
        match tokio::time::timeout(WAIT, open.next())
            .await
            .expect("reply")
        {
            Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(&t).expect("json"),
            Some(Ok(_)) => continue,
            other => panic!("the open connection ended: {other:?}"),
        }
    };
    assert_eq!(reply["type"], "authenticated", "{reply}");

    // A key that does not fit the certificate: refused, the old pair stays, and
    // the key files are reloaded all the same.
    replace(&key, &tls_file("a.key.pem"));
    replace(&keys, &test_key("ed25519.pub.pem"));
    let (status, body) = reload(server.admin_addr).await;
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().expect("error");
    assert!(
        error.starts_with("tls: ") && error.contains(&key.display().to_string()),
        "{error}"
    );
    assert!(!error.contains("PRIVATE KEY"), "{error}");
    assert_eq!(body["reloaded"], json!({"keys": true, "tls": false}));
    assert_eq!(served_certificate(server.ws_addr).await, der("b.cert.pem"));
    // A certificate file that is no PEM: refused too.
    replace(&key, &tls_file("b.key.pem"));
    replace(&cert, b"garbage");
    let (status, body) = reload(server.admin_addr).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains(&cert.display().to_string())
    );
    assert_eq!(served_certificate(server.ws_addr).await, der("b.cert.pem"));
    assert_eq!(
        (reloads(&server, "ok"), reloads(&server, "failed")),
        (1.0, 2.0)
    );
    drop(open);
    server.shutdown().await;
}

/// The binary, with `key` as its public key file and its JSON logs (on stdout)
/// collected; killed when dropped.
struct Binary {
    child: std::process::Child,
    ws: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_binary(key: &Path) -> Binary {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsauth-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WSAUTH_JWT__PUBLIC_KEY_FILES", key)
        .env("WSAUTH_ADMIN_KEY", "an-admin-key-long-enough")
        .env("WSAUTH_LOG__FORMAT", "json")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (ws_tx, ws_rx) = std::sync::mpsc::channel();
    let collected = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["fields"]["message"] == "listening"
                && let Some(ws) = v["fields"]["ws"].as_str()
            {
                let _ = ws_tx.send(ws.parse::<SocketAddr>().expect("address"));
            }
            collected.lock().expect("logs").push(line);
        }
    });
    let mut binary = Binary {
        child,
        ws: SocketAddr::from(([127, 0, 0, 1], 0)),
        logs,
    };
    match ws_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(ws) => binary.ws = ws,
        Err(_) => panic!("the server does not listen: {:?}", binary.logs),
    }
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_key_files_of_the_running_binary() {
    let (_dir, path) = key_dir();
    let binary = start_binary(&path);
    assert_eq!(
        auth(binary.ws, &old_token("alice")).await,
        Ok("alice".into())
    );

    let new_key = test_key("ed25519.pub.pem");
    replace(&path, &new_key);
    assert_eq!(auth(binary.ws, &new_token("bob")).await, refused());
    let pid = binary.child.id() as libc::pid_t;
    // SAFETY: sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + WAIT;
    loop {
        match auth(binary.ws, &new_token("bob")).await {
            Ok(sub) => break assert_eq!(sub, "bob"),
            Err(code) => {
                assert_eq!(code, "AUTH_FAILED");
                assert!(Instant::now() < deadline, "the new key is not in use");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(auth(binary.ws, &old_token("alice")).await, refused());

    // A bad file at the next SIGHUP: refused with one line naming the file,
    // never its content; the process keeps serving with the last good key.
    replace(&path, &test_key("ed25519.key"));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + WAIT;
    let refusal = loop {
        let found = binary
            .logs
            .lock()
            .expect("logs")
            .iter()
            .find(|l| l.contains("key files were refused"))
            .cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "no refusal logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refusal.contains(&path.display().to_string()), "{refusal}");
    assert_eq!(auth(binary.ws, &new_token("bob")).await, Ok("bob".into()));
    let logs = binary.logs.lock().expect("logs").join("\n");
    let secret_line = String::from_utf8(test_key("ed25519.key")).expect("pem");
    let secret_line = secret_line.lines().nth(1).expect("base64 line");
    assert!(!logs.contains(secret_line), "no key content in the logs");
    assert!(!logs.contains("PRIVATE KEY"), "{logs}");
}
