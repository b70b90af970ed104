//! The `wsauth-server` binary as a user runs it: development mode on embedded
//! defaults, the `token` command, refused configurations, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wsauth_core::jwt::{KeySet, Verifier, VerifierConfig};

const BIN: &str = env!("CARGO_BIN_EXE_wsauth-server");

fn command() -> Command {
    let mut cmd = Command::new(BIN);
    // Only what the test sets: no WSAUTH_* from the outside.
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

struct Running {
    child: Child,
    url: String,
    token: String,
    secret: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server in development mode on ephemeral ports and reads its banner.
fn start_dev() -> Running {
    let mut child = command()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    // The logs: drained so that a full pipe never blocks the server.
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut token, mut secret, mut banner) = (None, None, None, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while token.is_none() {
        assert!(Instant::now() < deadline, "no banner in time");
        let line = lines.next().expect("banner line").expect("utf8");
        let line = line.trim().to_owned();
        banner |= line.contains("DEVELOPMENT MODE");
        if let Some(u) = line.strip_prefix("WebSocket") {
            url = Some(u.trim().to_owned());
        } else if let Some(s) = line.strip_prefix("export WSAUTH_JWT__HS256_SECRET=") {
            secret = Some(s.to_owned());
        } else if line.starts_with("eyJ") {
            token = Some(line);
        }
    }
    assert!(banner, "the development-mode warning is printed");
    // Keep reading so that the server never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    Running {
        child,
        url: url.expect("url line"),
        token: token.expect("token"),
        secret: secret.expect("secret line"),
    }
}

#[tokio::test]
async fn one_command_runs_the_server_on_embedded_defaults_and_its_sample_token_works() {
    let running = start_dev();
    assert!(
        running.url.starts_with("ws://127.0.0.1:") && running.url.ends_with("/ws"),
        "{}",
        running.url
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(running.url.as_str())
        .await
        .expect("connect");
    let auth = format!(r#"{{"type":"auth","id":1,"token":"{}"}}"#, running.token);
    ws.send(Message::text(auth)).await.expect("send");
    let reply = loop {
        match ws.next().await.expect("open").expect("message") {
            Message::Text(t) => {
                break serde_json::from_str::<serde_json::Value>(t.as_str()).expect("json");
            }
            _ => continue,
        }
    };
    assert_eq!(reply["type"], "authenticated", "{reply}");
    assert_eq!(reply["user_id"], "alice");
    ws.send(Message::text(
        r#"{"type":"join","id":2,"channel":"team:1"}"#,
    ))
    .await
    .expect("send");
    let joined = loop {
        if let Message::Text(t) = ws.next().await.expect("open").expect("message") {
            break serde_json::from_str::<serde_json::Value>(t.as_str()).expect("json");
        }
    };
    assert_eq!(joined["type"], "joined", "the sample token allows team:*");

    // SIGTERM: the socket is closed with 1001 and the process exits cleanly.
    let pid = running.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => break None,
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, Some(1001));
    let mut running = running;
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn the_token_command_mints_with_the_configured_secret() {
    let secret = "a-secret-for-the-token-command-32b!";
    let out = command()
        .env("WSAUTH_JWT__HS256_SECRET", secret)
        .args([
            "token",
            "--sub",
            "bob",
            "--ttl",
            "10m",
            "--channels",
            "team:*,general",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    let mut keys = KeySet::new();
    keys.add_hmac_secret(None, secret.as_bytes()).expect("key");
    let verifier = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let claims = verifier
        .verify(&token, now)
        .expect("the minted token verifies");
    assert_eq!(claims.sub, "bob");
    assert_eq!(
        claims.channels,
        Some(vec!["team:*".to_owned(), "general".to_owned()])
    );
    let ttl = claims.exp_ms.saturating_sub(now);
    assert!((595_000..=601_000).contains(&ttl), "ttl {ttl}");

    let out = command()
        .args(["token", "--sub", "bob"])
        .output()
        .expect("runs");
    assert!(!out.status.success(), "no secret configured");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WSAUTH_JWT__HS256_SECRET"));
}

#[test]
fn a_wrong_value_stops_the_start_naming_the_key() {
    let out = command()
        .env("WSAUTH_SESSION__IDLE_TIMEOUT_MS", "10")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("session.idle_timeout_ms"), "{err}");

    let out = command()
        .args(["--listen", "0.0.0.0:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "no key and not loopback: refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let out = command()
        .env("WSAUTH_JWT__HS256_SECRET", "short")
        .env("WSAUTH_ADMIN_KEY", "an-admin-key-long-enough")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jwt.hs256_secret") && !err.contains("short\""),
        "{err}"
    );
}

#[test]
fn the_dev_secret_line_is_usable_by_the_token_command() {
    let running = start_dev();
    let out = command()
        .env("WSAUTH_JWT__HS256_SECRET", &running.secret)
        .args(["token", "--sub", "carol"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unreachable_redis_stops_the_start_with_a_clear_message() {
    // A port nothing listens on (bound, then released), and a password in the URL
    // that must not be printed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let started = Instant::now();
    let out = command()
        .env("WSAUTH_STORE__KIND", "redis")
        .env(
            "WSAUTH_STORE__URL",
            format!("redis://:hunter2-password@127.0.0.1:{port}/"),
        )
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert!(!out.status.success(), "no Redis, no start");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gives up instead of hanging"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use Redis at store.url"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password is not printed: {err}"
    );
}

#[test]
fn a_weak_rsa_key_stops_the_start_naming_the_file_and_its_size() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../core/testdata/keys/rsa1024.pub.pem"
    );
    let out = command()
        .env("WSAUTH_JWT__PUBLIC_KEY_FILES", key)
        .env("WSAUTH_ADMIN_KEY", "an-admin-key-long-enough")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert!(!out.status.success(), "a 1024-bit RSA key, no start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rsa1024.pub.pem") && err.contains("RSA modulus of 1024 bits"),
        "{err}"
    );
}

#[test]
fn an_admin_listener_off_loopback_without_tls_is_warned_about_at_start() {
    let mut child = command()
        .env(
            "WSAUTH_JWT__HS256_SECRET",
            "cli-tests-secret-of-at-least-32-bytes!",
        )
        .env("WSAUTH_ADMIN_KEY", "an-admin-key-long-enough")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    // The logs, up to the `listening` line, or whatever came within 10 s.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before_listening = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("listening") => break,
            Ok(line) => before_listening.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = before_listening.join("\n");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("admin_listen") && l.contains("TLS")),
        "no warning about the admin listener: {log}"
    );
    assert!(!log.contains("an-admin-key-long-enough"));
}

#[test]
fn a_server_whose_only_keys_are_an_identity_providers_is_not_in_development_mode() {
    // A JWKS URL nobody answers, and a start without its keys: the server
    // runs on the provider's keys alone, never on a generated secret.
    let mut child = command()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("WSAUTH_JWT__JWKS_URL", "http://127.0.0.1:9/jwks")
        .env("WSAUTH_JWT__JWKS_START_WITHOUT_KEYS", "true")
        .env("WSAUTH_ADMIN_KEY", "an-admin-key-of-some-length")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // Logs and the banner both go to stdout; stderr is drained.
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("listening")) {
        assert!(Instant::now() < deadline, "not listening in time: {seen:?}");
        match lines.next() {
            Some(Ok(line)) => seen.push(line),
            _ => panic!("the server stopped: {seen:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let printed: Vec<String> = lines.map_while(Result::ok).collect();
    let everything = format!("{printed:?} {seen:?}");
    assert!(
        !everything.contains("DEVELOPMENT MODE") && !everything.contains("HS256_SECRET"),
        "a development secret was added: {everything}"
    );
}

// ----- check-config --------------------------------------------------------------

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../core/testdata/keys");
const TLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/testdata/tls");

/// The `wsauth-server: …` line a run printed on stderr.
fn refusal_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.starts_with("wsauth-server: "))
        .unwrap_or_else(|| panic!("no refusal in {}", String::from_utf8_lossy(&out.stderr)))
        .to_owned()
}

#[test]
fn check_config_prints_every_setting_with_where_it_came_from_and_no_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("wsauth.toml");
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:0\"\n[jwt]\npublic_key_files = [\"{KEYS}/rsa.pub.pem\"]\n"),
    )
    .expect("write");
    // Nothing listens on port 9 of loopback (discard is never run here): the
    // check must neither connect to Redis nor fetch the JWKS URL.
    let out = command()
        .env("WSAUTH_ADMIN_KEY", "admin-key-that-must-stay-hidden")
        .env("WSAUTH_STORE__KIND", "redis")
        .env(
            "WSAUTH_STORE__URL",
            "redis://:hunter2-password@127.0.0.1:9/0",
        )
        .env(
            "WSAUTH_JWT__ISSUERS",
            r#"[{issuer = "https://id.example", jwks_url = "http://127.0.0.1:9/jwks"}]"#,
        )
        .args(["check-config", "--config"])
        .arg(&file)
        .args(["--path", "/socket"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("The configuration is valid.\n"), "{text}");
    assert!(!text.contains("DEVELOPMENT MODE"), "{text}");
    for secret in ["admin-key-that-must-stay-hidden", "hunter2"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    let line_of = |key: &str| {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} is unset"))
            })
            .collect();
        assert_eq!(lines.len(), 1, "{key} once in:\n{text}");
        lines[0].to_owned()
    };
    for (key, _, _) in wsauth_server::config::FIELDS {
        line_of(key);
    }
    let file_origin = format!("# config file {}", file.display());
    assert!(line_of("listen").ends_with(&file_origin), "{text}");
    assert!(line_of("jwt.public_key_files").ends_with(&file_origin));
    assert!(line_of("admin_key").contains(r#"admin_key = "<redacted>""#));
    assert!(line_of("admin_key").ends_with("# environment variable WSAUTH_ADMIN_KEY"));
    assert!(line_of("store.url").contains("redis://<redacted>@127.0.0.1:9/0"));
    assert!(line_of("path").contains(r#"path = "/socket""#));
    assert!(line_of("path").ends_with("# flag --path"));
    assert!(
        line_of("session.heartbeat_ms").ends_with("= 25000  # default")
            || line_of("session.heartbeat_ms").contains("25000")
    );
    assert!(line_of("session.heartbeat_ms").ends_with("# default"));
    assert!(line_of("jwt.hs256_secret").starts_with("# jwt.hs256_secret is unset"));
    // What was read, and what was left alone.
    assert!(
        text.contains("  jwt: 1 key(s) from the configuration\n"),
        "{text}"
    );
    assert!(
        text.contains("jwt.issuers entry 1 (https://id.example): 0 key(s) from the configuration; jwks_url not fetched (no network)"),
        "{text}"
    );
    assert!(
        text.contains("store: redis, store.url is well formed (not connected)"),
        "{text}"
    );
}

#[test]
fn check_config_refuses_with_the_message_and_exit_code_of_a_failed_start() {
    let listen = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let production = [
        ("WSAUTH_ADMIN_KEY", "an-admin-key-long-enough"),
        (
            "WSAUTH_JWT__HS256_SECRET",
            "a-secret-of-at-least-thirty-two-bytes!",
        ),
    ];
    // (what, environment, arguments)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "a bad value",
            vec![("WSAUTH_SESSION__IDLE_TIMEOUT_MS", "10".to_owned())],
            listen.to_vec(),
        ),
        (
            "a weak RSA key",
            vec![(
                "WSAUTH_JWT__PUBLIC_KEY_FILES",
                format!("{KEYS}/rsa1024.pub.pem"),
            )],
            listen.to_vec(),
        ),
        (
            "a key file that is not there",
            vec![("WSAUTH_JWT__JWKS_FILE", format!("{KEYS}/missing.json"))],
            listen.to_vec(),
        ),
        (
            "a certificate and a key that do not fit",
            vec![
                ("WSAUTH_TLS__CERT_FILE", format!("{TLS}/cert.pem")),
                ("WSAUTH_TLS__KEY_FILE", format!("{KEYS}/rsa.key")),
            ],
            listen.to_vec(),
        ),
        (
            "a store URL that does not parse",
            vec![
                ("WSAUTH_STORE__KIND", "redis".to_owned()),
                ("WSAUTH_STORE__URL", "redis://:pw@[::1/0".to_owned()),
            ],
            listen.to_vec(),
        ),
        (
            "development mode off loopback",
            vec![("WSAUTH_ADMIN_KEY", "an-admin-key-long-enough".to_owned())],
            vec!["--listen", "0.0.0.0:0", "--admin-listen", "127.0.0.1:0"],
        ),
    ];
    for (what, env, args) in cases {
        let run = |check: bool| {
            let mut cmd = command();
            if what != "development mode off loopback" {
                for (name, value) in production {
                    cmd.env(name, value);
                }
            }
            for (name, value) in &env {
                cmd.env(name, value);
            }
            if check {
                cmd.arg("check-config");
            }
            let mut child = cmd
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("runs");
            // A start that is not refused would run: stop it after a while.
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().expect("wait").is_none() {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not refused (check: {check})"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            child.wait_with_output().expect("output")
        };
        let (checked, started) = (run(true), run(false));
        assert!(!checked.status.success(), "{what}: check-config passed");
        assert_eq!(
            checked.status.code(),
            started.status.code(),
            "{what}: exit codes"
        );
        assert_eq!(
            refusal_line(&checked),
            refusal_line(&started),
            "{what}: messages"
        );
        assert!(
            !refusal_line(&checked).contains("pw@"),
            "{what}: a password printed"
        );
    }
}
