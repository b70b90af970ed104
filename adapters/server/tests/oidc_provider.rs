//! A real OpenID Connect provider in front of wsauth: `oidc-provider` (the certified
//! Node.js server, `tests/oidc/provider.mjs`) on loopback, with a client-credentials
//! client. Its discovery document leads wsauth to its keys, the access tokens it
//! issues authenticate over the WebSocket, and its key rotation (new key published,
//! then signing with it, then the old one retired) is followed with no failed
//! authentication and no restart.
//!
//! Needs `node` and `tests/oidc/node_modules` (`cargo xtask test` runs `npm ci` there);
//! without them the tests skip, or fail when `WSAUTH_REQUIRE_NODE` is set.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{WAIT, auth_outcome as auth};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use wsauth_server::ServerHandle;
use wsauth_server::config::Config;
use wsauth_test_support::{current_test, skip};

/// The provider's client (`tests/oidc/provider.mjs`).
const CLIENT_ID: &str = "wsauth-test";
const CLIENT_SECRET: &str = "wsauth-test-secret-of-a-client-credentials-client";
/// The resource its access tokens are for: their `aud`.
const RESOURCE: &str = "urn:wsauth";

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// `node tests/oidc/provider.mjs`, killed when dropped.
struct Provider {
    child: Child,
    addr: SocketAddr,
    issuer: String,
    log: Arc<Mutex<String>>,
}

impl Provider {
    /// Starts the provider, or says why the test skips and returns `None`.
    async fn start() -> Option<Provider> {
        let script = root().join("tests/oidc/provider.mjs");
        let Some(node) = which("node") else {
            skip(
                &current_test(),
                "`node` is not on PATH",
                "WSAUTH_REQUIRE_NODE",
            );
            return None;
        };
        let version = std::process::Command::new(&node)
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_default();
        let numbers: Vec<u32> = (version.trim_start_matches('v').split('.'))
            .map_while(|n| n.parse().ok())
            .collect();
        if numbers.len() < 2 || (numbers[0], numbers[1]) < (20, 19) {
            skip(
                &current_test(),
                &format!("oidc-provider 9 needs Node 20.19 or later, `node` is {version:?}"),
                "WSAUTH_REQUIRE_NODE",
            );
            return None;
        }
        if !root()
            .join("tests/oidc/node_modules/oidc-provider")
            .is_dir()
        {
            skip(
                &current_test(),
                "tests/oidc/node_modules is missing (`npm ci` in tests/oidc, which `cargo xtask test` runs)",
                "WSAUTH_REQUIRE_NODE",
            );
            return None;
        }
        let mut child = Command::new(node)
            .arg(&script)
            .arg("0")
            // The provider ends when its stdin closes: it never outlives the test.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let collected = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let mut log = collected.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = tokio::time::timeout(WAIT * 3, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if let Some(port) = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["port"].as_u64())
                {
                    return Some(port);
                }
            }
            None
        })
        .await;
        let Ok(Some(port)) = port else {
            let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
            panic!("the provider did not say its port; its stderr:\n{log}");
        };
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        Some(Provider {
            child,
            addr,
            issuer: format!("http://{addr}"),
            log,
        })
    }

    /// `GET /.well-known/openid-configuration`, checked as a relying party does.
    async fn discovery(&self) -> Discovery {
        let (status, body) = request(
            self.addr,
            "GET",
            "/.well-known/openid-configuration",
            &[],
            "",
        )
        .await;
        assert_eq!(status, 200, "discovery: {body}");
        let doc: Value = serde_json::from_str(&body).expect("discovery is JSON");
        assert_eq!(
            doc["issuer"],
            self.issuer.as_str(),
            "the issuer is the URL asked"
        );
        let endpoint = |name: &str| {
            let url = doc[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {doc}"));
            assert!(
                url.starts_with(&self.issuer),
                "{name} {url} is the issuer's"
            );
            url.to_owned()
        };
        let grants = doc["grant_types_supported"]
            .as_array()
            .expect("grant types");
        assert!(grants.contains(&json!("client_credentials")), "{doc}");
        // The provider counts the hits of this path (`jwks_hits`).
        assert_eq!(endpoint("jwks_uri"), format!("{}/jwks", self.issuer));
        Discovery {
            token_endpoint: endpoint("token_endpoint"),
        }
    }

    /// A client-credentials access token from the token endpoint, with the `kid` of its
    /// header.
    async fn token(&self, discovery: &Discovery) -> (String, String) {
        let path = discovery
            .token_endpoint
            .strip_prefix(&self.issuer)
            .expect("token endpoint");
        let basic = STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        let (status, body) = request(
            self.addr,
            "POST",
            path,
            &[
                ("Authorization", &format!("Basic {basic}")),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(status, 200, "token endpoint: {body}");
        let answer: Value = serde_json::from_str(&body).expect("token response is JSON");
        assert_eq!(answer["token_type"], "Bearer", "{answer}");
        let token = answer["access_token"].as_str().expect("access_token");
        let header = part(token, 0);
        assert_eq!(header["alg"], "RS256", "{header}");
        let claims = part(token, 1);
        assert_eq!(claims["sub"], CLIENT_ID, "{claims}");
        assert_eq!(claims["aud"], RESOURCE, "{claims}");
        assert_eq!(claims["iss"], self.issuer.as_str(), "{claims}");
        let kid = header["kid"].as_str().expect("kid").to_owned();
        (token.to_owned(), kid)
    }

    /// Publishes `kids` (RSA keys, made the first time each is named) and signs with the
    /// first: the provider's `POST /__keys`.
    async fn publish(&self, kids: &[&str]) {
        let (status, body) = request(
            self.addr,
            "POST",
            "/__keys",
            &[("Content-Type", "application/json")],
            &json!(kids).to_string(),
        )
        .await;
        assert_eq!(status, 200, "POST /__keys: {body}");
        let (status, body) = request(self.addr, "GET", "/jwks", &[], "").await;
        assert_eq!(status, 200, "jwks: {body}");
        let jwks: Value = serde_json::from_str(&body).expect("jwks is JSON");
        let published: Vec<&str> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert_eq!(published, kids, "the provider publishes {kids:?}");
    }
}

impl Provider {
    /// How often wsauth fetched the provider's JWKS since its last key change.
    async fn jwks_hits(&self) -> u64 {
        let (status, body) = request(self.addr, "GET", "/__keys", &[], "").await;
        assert_eq!(status, 200, "GET /__keys: {body}");
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        answer["jwks_hits"].as_u64().expect("jwks_hits")
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("the provider's stderr:\n{log}");
        }
    }
}

/// What the test takes from the discovery document.
struct Discovery {
    token_endpoint: String,
}

/// A JSON part of a JWT (0 the header, 1 the claims).
fn part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// One HTTP/1.0 request (so the answer is never chunked): (status, body).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    common::http_exchange(addr, &head).await
}

/// wsauth with the provider as its only key source, as an operator configures it.
fn config(provider: &Provider) -> Config {
    let mut c = common::test_config();
    c.jwt.hs256_secret = None;
    // Discovery in the server: it reads the document the test checked above, and
    // requires its `issuer` (and so every token's `iss`) to be this one.
    c.jwt.oidc_issuer = Some(provider.issuer.clone());
    c.jwt.audience = vec![RESOURCE.to_owned()];
    c.jwt.algorithms = vec!["RS256".to_owned()];
    c.jwt.jwks_min_refetch_s = 1;
    c
}

/// The value of the series `name` (no labels) in the server's metrics.
fn metric(server: &ServerHandle, name: &str) -> f64 {
    let exposition = server.metrics.render(0);
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{exposition}"))
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT * 2;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rotation an operator plans: the provider publishes the new key beside the old one,
/// signs with it once relying parties have fetched it (here a 1 s `jwks_refresh_s`; the
/// provider's JWKS has no `Cache-Control`), and retires the old key later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_authenticate_and_a_planned_key_rotation_never_fails_one() {
    let Some(provider) = Provider::start().await else {
        return;
    };
    let discovery = provider.discovery().await;
    let mut c = config(&provider);
    c.jwt.jwks_refresh_s = 1;
    let server = common::server(c).await;
    let ws = server.ws_addr;
    assert!(
        provider.jwks_hits().await >= 1,
        "discovery led the server to the provider's keys"
    );

    // Stage [k1]: the provider's token authenticates; `sub` is the client's id.
    let (k1_token, kid) = provider.token(&discovery).await;
    assert_eq!(kid, "k1");
    assert_eq!(auth(ws, &k1_token).await, Ok(CLIENT_ID.to_owned()));

    // Stage [k1, k2]: the new key is published, k1 still signs.
    provider.publish(&["k1", "k2"]).await;
    let (token, kid) = provider.token(&discovery).await;
    assert_eq!(kid, "k1", "the first published key signs");
    assert_eq!(auth(ws, &token).await, Ok(CLIENT_ID.to_owned()));
    assert_eq!(auth(ws, &k1_token).await, Ok(CLIENT_ID.to_owned()));
    until("the server to fetch k2", || {
        metric(&server, "wsauth_jwks_keys") == 2.0
    })
    .await;

    // Stage [k2, k1]: the provider signs with k2; its first token authenticates.
    provider.publish(&["k2", "k1"]).await;
    let (k2_token, kid) = provider.token(&discovery).await;
    assert_eq!(kid, "k2", "the new key signs");
    assert_eq!(auth(ws, &k2_token).await, Ok(CLIENT_ID.to_owned()));
    assert_eq!(auth(ws, &k1_token).await, Ok(CLIENT_ID.to_owned()));

    // Stage [k2]: k1 retired. Fresh tokens authenticate; once the server has the
    // document without k1, k1's tokens (verified and cached before) are refused.
    provider.publish(&["k2"]).await;
    let (token, kid) = provider.token(&discovery).await;
    assert_eq!(kid, "k2");
    assert_eq!(auth(ws, &token).await, Ok(CLIENT_ID.to_owned()));
    until("the server to drop k1", || {
        metric(&server, "wsauth_jwks_keys") == 1.0
    })
    .await;
    assert_eq!(auth(ws, &k2_token).await, Ok(CLIENT_ID.to_owned()));
    assert_eq!(auth(ws, &k1_token).await, Err("AUTH_FAILED".to_owned()));
    server.shutdown().await;
}

/// A rotation the server has not seen coming (no refresh due for minutes): the first
/// token signed with the new key finds an unknown `kid`, which waits for a refetch of
/// the provider's keys instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_a_key_the_server_has_not_fetched_yet_authenticates_on_its_first_try() {
    let Some(provider) = Provider::start().await else {
        return;
    };
    let discovery = provider.discovery().await;
    let server = common::server(config(&provider)).await;
    let started = tokio::time::Instant::now();
    let ws = server.ws_addr;
    let (k1_token, _) = provider.token(&discovery).await;
    assert_eq!(auth(ws, &k1_token).await, Ok(CLIENT_ID.to_owned()));

    provider.publish(&["k1", "k2"]).await;
    provider.publish(&["k2", "k1"]).await;
    let (k2_token, kid) = provider.token(&discovery).await;
    assert_eq!(kid, "k2");
    // A refetch may start once the last fetch (the start's) is older than
    // `jwks_min_refetch_s` (1 s), as it is for any real rotation.
    tokio::time::sleep_until(started + Duration::from_millis(1_100)).await;
    assert_eq!(
        auth(ws, &k2_token).await,
        Ok(CLIENT_ID.to_owned()),
        "the first token with the unknown kid k2 authenticates"
    );
    assert_eq!(provider.jwks_hits().await, 1, "one refetch, no restart");
    assert_eq!(auth(ws, &k1_token).await, Ok(CLIENT_ID.to_owned()));
    server.shutdown().await;
}

/// `jwt.oidc_issuer` must equal the discovery document's `issuer` exactly: with a
/// trailing slash it is another issuer, and the server does not start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_issuer_other_than_the_discovery_documents_stops_the_start() {
    let Some(provider) = Provider::start().await else {
        return;
    };
    let mut c = config(&provider);
    c.jwt.oidc_issuer = Some(format!("{}/", provider.issuer));
    c.validate(false).expect("a valid configuration");
    let Err(error) = wsauth_server::start(c, None).await else {
        panic!("the server started with a mismatched issuer");
    };
    let message = error.to_string();
    assert!(
        message.contains("issuer")
            && message.contains(&format!("{:?}", provider.issuer))
            && message.contains(&format!("{:?}", format!("{}/", provider.issuer))),
        "the error names both issuers: {message}"
    );
}
