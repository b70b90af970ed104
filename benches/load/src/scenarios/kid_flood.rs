//! `kid-flood` (issue 14): valid RS256 auths at a steady rate while a flood of tokens with
//! unknown `kid`s arrives, against a `wsauth-server` this scenario starts with `jwt.jwks_url`
//! pointing at a JWKS it serves itself on loopback (counting the fetches).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wsauth_core::jwt::{b64url, sign};

use super::*;
use crate::client::now_secs;

const RSA_KEY: &[u8] = include_bytes!("../../../../core/testdata/keys/rsa.key");
const RSA_PUB: &[u8] = include_bytes!("../../../../core/testdata/keys/rsa.pub.pem");
/// The `kid` of the one key the JWKS publishes.
const KID: &str = "load-rsa";

/// What the flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloodToken {
    /// A JWT whose `kid` no key has (refused with `AUTH_FAILED`).
    UnknownKid,
    /// The control: no JWT at all, refused at its framing (`INVALID_TOKEN`), so that what the
    /// flood's connections cost can be told from what its `kid`s cost.
    Malformed,
}

/// What one `kid-flood` run does.
#[derive(Debug, Clone)]
pub struct Flood {
    pub secs: f64,
    /// Tokens with an unknown `kid` per second (0: the baseline, valid auths only).
    pub flood_rate: f64,
    pub flood_concurrency: usize,
    pub flood_token: FloodToken,
    /// Valid RS256 auths per second.
    pub valid_rate: f64,
    /// The server's `jwt.jwks_min_refetch_s`.
    pub min_refetch_s: u64,
    pub server_bin: std::path::PathBuf,
}

/// The JWKS document: the RS256 test key with `kid` [`KID`].
fn jwks() -> String {
    let public = DecodingKey::from_rsa_pem(RSA_PUB).expect("the RSA test key");
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_decoding_key(&public, Some(Algorithm::RS256)).expect("a JWK"),
    )
    .unwrap_or_default();
    jwk["kid"] = json!(KID);
    json!({ "keys": [jwk] }).to_string()
}

/// Serves the JWKS on a loopback port (one answer per connection); counts the requests.
async fn serve_jwks(hits: Arc<AtomicU64>) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/jwks", listener.local_addr()?);
    let body = jwks();
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/jwk-set+json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let answer = answer.clone();
            let hits = hits.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::Relaxed);
                let _ = tcp.write_all(answer.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    Ok(url)
}

/// A free loopback port (bound, then released for the server).
pub(super) fn free_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The server, killed when dropped.
pub(super) struct Server(pub(super) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `wsauth-server` on `listen` with the JWKS at `jwks_url` and the limits a flood from
/// one address needs; returns once it accepts connections.
async fn start_server(f: &Flood, listen: SocketAddr, jwks_url: &str) -> Result<Server, String> {
    let admin = free_addr().map_err(|e| format!("no free port: {e}"))?;
    let child = Command::new(&f.server_bin)
        .args(["--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .env_remove("WSAUTH_JWT__HS256_SECRET")
        .env("WSAUTH_ADMIN_KEY", format!("kid-flood-{}", now_secs()))
        .env("WSAUTH_JWT__JWKS_URL", jwks_url)
        .env(
            "WSAUTH_JWT__JWKS_MIN_REFETCH_S",
            f.min_refetch_s.to_string(),
        )
        .env("WSAUTH_LIMITS__MAX_UNAUTHENTICATED_PER_IP", "100000")
        .env("WSAUTH_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", f.server_bin.display()))?;
    let server = Server(child);
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{} did not listen on {listen} within 15 s",
        f.server_bin.display()
    ))
}

/// `n` valid RS256 tokens (unique `sub` and `jti`, so none is a cache hit), signed before the
/// measured phase on the blocking pool: an RSA signature costs the tool about a millisecond.
async fn valid_tokens(run_id: &str, n: u64) -> Vec<String> {
    let key = Arc::new(EncodingKey::from_rsa_pem(RSA_KEY).expect("the RSA test key"));
    let now = now_secs();
    let halves = [(0, n / 2), (n / 2, n)].map(|(from, to)| {
        let (key, run_id) = (key.clone(), run_id.to_owned());
        tokio::task::spawn_blocking(move || {
            (from..to)
                .map(|i| valid_token(&key, &run_id, i, now))
                .collect::<Vec<_>>()
        })
    });
    let mut tokens = Vec::new();
    for half in halves {
        tokens.extend(half.await.unwrap_or_default());
    }
    tokens
}

/// Valid token `i` of the run: RS256, `kid` [`KID`], its own `sub` and `jti`.
fn valid_token(key: &EncodingKey, run_id: &str, i: u64, now: u64) -> String {
    let sub = format!("load-{run_id}-{i}");
    let claims = json!({"sub": sub, "jti": sub, "iat": now, "exp": now + 3600,
                        "channels": ["bench:*"]});
    sign(key, Algorithm::RS256, Some(KID), &claims).unwrap_or_default()
}

/// A token whose `kid` (`i`, with the run) no JWKS holds; its signature is never checked.
fn unknown_kid_token(run_id: &str, i: u64) -> String {
    let header = format!(r#"{{"alg":"RS256","kid":"flood-{run_id}-{i}"}}"#);
    let claims = format!(r#"{{"sub":"mallory","exp":{}}}"#, now_secs() + 3600);
    format!(
        "{}.{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.as_bytes()),
        b64url(&[7u8; 256])
    )
}

/// Connects, sends `auth` with `token` and waits for the answer; the latency is `auth` sent →
/// the answer.
async fn auth(target: &Target, token: &str, want: &str) -> Result<(Ws, Duration), Fail> {
    let mut ws = open(target, None).await?;
    let start = Instant::now();
    send(&mut ws, &auth_msg(token)).await?;
    expect(&mut ws, want).await?;
    Ok((ws, start.elapsed()))
}

/// `kid-flood`. Latency: a valid token's `auth` sent → `authenticated`. A flood token counts
/// as answered when it is refused with `AUTH_FAILED` (`INVALID_TOKEN` for the control).
pub async fn kid_flood(ctx: Arc<Ctx>, f: Flood) -> Result<Report, String> {
    let hits = Arc::new(AtomicU64::new(0));
    let jwks_url = serve_jwks(hits.clone())
        .await
        .map_err(|e| format!("cannot serve the JWKS: {e}"))?;
    let listen = free_addr().map_err(|e| format!("no free port: {e}"))?;
    let server = start_server(&f, listen, &jwks_url).await?;
    let server_started = Instant::now();
    let target = Arc::new(Target {
        url: format!("ws://{listen}/ws"),
        addr: listen,
    });
    let mut report = Report::new("kid-flood", &target.url);
    let n_valid = (f.valid_rate * f.secs).round() as u64;
    let n_flood = (f.flood_rate * f.secs).round() as u64;
    eprintln!("signing {n_valid} RS256 tokens");
    ctx.progress.phase("sign", 0);
    let tokens = valid_tokens(&ctx.run_id, n_valid).await;
    let valid = Collector::new(ctx.progress.clone());
    let flood = Collector::new(ctx.progress.clone());
    ctx.progress.phase("kid-flood", n_valid + n_flood);
    let cpu = CpuMeter::start(Some(server.0.id()));
    let t0 = Instant::now();
    let valid_ramp = Ramp {
        rate: f.valid_rate,
        concurrency: 64,
    };
    let flood_ramp = Ramp {
        rate: f.flood_rate,
        concurrency: f.flood_concurrency,
    };
    let kind = f.flood_token;
    let (valid_handles, flood_handles) = tokio::join!(
        ramp(n_valid, valid_ramp, |i, permit| {
            let (ctx, target, valid) = (ctx.clone(), target.clone(), valid.clone());
            let token = tokens.get(i as usize).cloned().unwrap_or_default();
            async move {
                let res = within(ctx.timeout, "auth", auth(&target, &token, "authenticated")).await;
                drop(permit);
                match res {
                    Ok((ws, d)) => {
                        valid.ok(d);
                        close(ws).await;
                    }
                    Err(e) => valid.fail(e.key()),
                }
            }
        }),
        ramp(n_flood, flood_ramp, |i, permit| {
            let (ctx, target, flood) = (ctx.clone(), target.clone(), flood.clone());
            async move {
                let (token, refusal) = match kind {
                    FloodToken::UnknownKid => (unknown_kid_token(&ctx.run_id, i), "AUTH_FAILED"),
                    FloodToken::Malformed => (format!("malformed-{i}"), "INVALID_TOKEN"),
                };
                let res = within(ctx.timeout, "auth", auth(&target, &token, "authenticated")).await;
                drop(permit);
                match res {
                    Err(Fail::Server(code)) if code == refusal => flood.ok(Duration::ZERO),
                    Err(e) => flood.fail(e.key()),
                    Ok(_) => flood.fail("accepted".into()),
                }
            }
        }),
    );
    settled(&ctx.progress, n_valid + n_flood).await;
    report
        .extra
        .insert("cpu".into(), cpu.finish(n_valid + n_flood));
    ctx.progress.finish();
    report.duration = valid.last_instant().saturating_duration_since(t0);
    let flood_secs = flood
        .last_instant()
        .saturating_duration_since(t0)
        .as_secs_f64();
    let (_, panicked) = join_all(valid_handles).await;
    let (_, flood_panicked) = join_all(flood_handles).await;
    drop(server);
    // At most the start's fetch, then one per `jwks_min_refetch_s` while the server ran.
    let server_secs = server_started.elapsed().as_secs_f64();
    let bound = (server_secs / f.min_refetch_s.max(1) as f64).floor() as u64 + 1;
    let (hist, failures) = valid.take();
    let (refused, flood_failures) = flood.take();
    report.hist = hist;
    report.failures = failures;
    merge_failures(&mut report.failures, flood_failures, "flood:");
    if panicked + flood_panicked > 0 {
        report
            .failures
            .insert("panic".into(), panicked + flood_panicked);
    }
    report.attempted = n_valid;
    report.successes = report.hist.len();
    let hits = hits.load(Ordering::Relaxed);
    for (k, v) in [
        ("valid_rate", json!(f.valid_rate)),
        ("flood_target_rate", json!(f.flood_rate)),
        ("flood_concurrency", json!(f.flood_concurrency)),
        ("flood_token", json!(format!("{:?}", f.flood_token))),
        ("flood_tokens", json!(n_flood)),
        ("flood_refused", json!(refused.len())),
        (
            "flood_rate_achieved",
            json!((refused.len() as f64 / flood_secs.max(1e-9)).round()),
        ),
        ("jwks_min_refetch_s", json!(f.min_refetch_s)),
        ("jwks_hits", json!(hits)),
        ("jwks_hits_bound", json!(bound)),
        ("server_up_s", json!((server_secs * 10.0).round() / 10.0)),
    ] {
        report.extra.insert(k.into(), v);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsauth_core::jwt::{KeySet, TokenError, Verifier, VerifierConfig};

    #[test]
    fn the_served_jwks_verifies_the_valid_tokens_and_knows_no_flood_kid() {
        let mut keys = KeySet::new();
        assert_eq!(keys.add_published_jwks_json(&jwks(), 10).unwrap(), 1);
        let verifier = Verifier::new(keys, VerifierConfig::default()).unwrap();
        let key = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
        let now = now_secs();
        let claims = verifier
            .verify(&valid_token(&key, "r", 7, now), now * 1000)
            .unwrap();
        assert_eq!(claims.sub, "load-r-7");
        assert_eq!(
            verifier.verify(&unknown_kid_token("r", 7), now * 1000),
            Err(TokenError::UnknownKid)
        );
    }
}
