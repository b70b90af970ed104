//! The configuration layer: defaults, precedence, errors that name their key,
//! lists from the environment, redaction, and the docs kept complete.
//!
//! Every test but one passes its environment to `load_with_env`, so none touches
//! the process environment; `process_environment_is_read` checks `load` itself by
//! running this test binary again with variables set.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tempfile::NamedTempFile;
use wsauth_server::config::{
    Config, ConfigError, FIELDS, LimitPolicy, LogFormat, SECRET_KEYS, ServeArgs, StoreKind,
    TlsConfig, env_var, load, load_with_env,
};

const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";
const ADMIN_KEY: &str = "admin-key-0123456789";

fn dev() -> ServeArgs {
    ServeArgs {
        dev: true,
        ..ServeArgs::default()
    }
}

fn with_file(file: &NamedTempFile) -> ServeArgs {
    ServeArgs {
        config: Some(file.path().to_owned()),
        ..dev()
    }
}

fn toml_file(text: &str) -> NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn file_with(bytes: &[u8], suffix: &str) -> NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
    file.write_all(bytes).unwrap();
    file
}

fn load_env(args: &ServeArgs, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load_with_env(args, vars.iter().copied())
}

/// A configuration that passes validation outside development mode.
fn valid() -> Config {
    let mut config = Config {
        admin_key: Some(ADMIN_KEY.to_owned()),
        ..Config::default()
    };
    config.jwt.hs256_secret = Some(SECRET.to_owned());
    config
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------
// Defaults

#[test]
fn defaults_are_the_protocols_numbers() {
    let c = Config::default();
    assert_eq!(c.listen, addr("127.0.0.1:8080"));
    assert_eq!(c.admin_listen, addr("127.0.0.1:9091"));
    assert_eq!(c.admin_key, None);
    assert_eq!(c.path, "/ws");
    assert!(c.allowed_origins.is_empty());
    assert!(!c.allow_query_token);
    assert_eq!(c.node_id, None);
    assert_eq!(c.shutdown_drain_ms, 10_000);

    assert_eq!(c.jwt.hs256_secret, None);
    assert_eq!(c.jwt.hs256_secret_file, None);
    assert!(c.jwt.public_key_files.is_empty());
    assert_eq!(c.jwt.jwks_file, None);
    assert!(c.jwt.algorithms.is_empty());
    assert_eq!(c.jwt.issuer, None);
    assert!(c.jwt.audience.is_empty());
    assert_eq!(c.jwt.leeway_s, 30);
    assert_eq!(c.jwt.max_token_bytes, 8 * 1024);

    assert_eq!(c.session.auth_timeout_ms, 5_000);
    assert_eq!(c.session.heartbeat_ms, 25_000);
    assert_eq!(c.session.idle_timeout_ms, 60_000);
    assert_eq!(c.session.refresh_notice_ms, 60_000);
    assert_eq!(c.session.resume_grace_ms, 30_000);
    assert_eq!(c.session.resume_buffer, 256);
    assert_eq!(c.session.max_sessions_per_user, Some(32));
    assert_eq!(c.session.limit_policy, LimitPolicy::EvictOldest);
    assert_eq!(c.session.max_token_lifetime_s, 24 * 3600);
    assert_eq!(c.session.max_channels, 256);
    assert_eq!(c.session.max_queued_requests, 64);
    assert_eq!(c.app.max_rpc_in_flight, 16);
    assert_eq!(c.app.rpc_timeout_ms, 5_000);

    assert_eq!(c.limits.max_message_bytes, 64 * 1024);
    assert_eq!(c.limits.max_frame_bytes, 64 * 1024);
    assert_eq!(c.limits.handshake_timeout_ms, 5_000);
    assert_eq!(c.limits.messages_per_second, 100);
    assert_eq!(c.limits.message_burst, 200);
    assert_eq!(c.limits.max_unauthenticated_per_ip, 1024);
    assert_eq!(c.limits.max_connections, 100_000);
    assert_eq!(c.limits.outbound_queue, 256);
    assert_eq!(c.limits.listen_backlog, 4096);

    assert_eq!(c.tls, None);
    assert_eq!(c.store.kind, StoreKind::Memory);
    assert_eq!(c.store.url, None);
    assert_eq!(c.store.key_prefix, "wsauth:");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
}

#[test]
fn nothing_configured_loads_the_defaults() {
    let loaded = load_env(
        &dev(),
        &[("PATH", "/usr/bin"), ("WSAUTH_UNRELATED_TOOL", "x")],
    )
    .unwrap();
    assert_eq!(loaded, Config::default());
}

#[test]
fn an_empty_file_and_sections_load_the_defaults() {
    let file = toml_file("[jwt]\n[session]\n[limits]\n[store]\n[log]\n");
    assert_eq!(load_env(&with_file(&file), &[]).unwrap(), Config::default());
}

// ---------------------------------------------------------------------------------
// Precedence: defaults < file < environment < flags

#[test]
fn flags_beat_environment_beats_file_beats_defaults() {
    let file = toml_file(
        r#"
        listen = "127.0.0.1:1001"
        path = "/from-file"
        admin_listen = "127.0.0.1:2001"
        [jwt]
        issuer = "file-issuer"
        leeway_s = 5
        [session]
        heartbeat_ms = 1000
        idle_timeout_ms = 3000
        [store]
        key_prefix = "file:"
        "#,
    );
    let args = ServeArgs {
        listen: Some(addr("127.0.0.1:1003")),
        store: Some(StoreKind::Redis),
        store_url: Some("redis://127.0.0.1:6379/0".into()),
        ..with_file(&file)
    };
    let env = [
        ("WSAUTH_LISTEN", "127.0.0.1:1002"),
        ("WSAUTH_ADMIN_LISTEN", "127.0.0.1:2002"),
        ("WSAUTH_JWT__ISSUER", "env-issuer"),
        ("WSAUTH_SESSION__IDLE_TIMEOUT_MS", "4000"),
        ("WSAUTH_STORE__KIND", "memory"),
    ];
    let c = load_env(&args, &env).unwrap();

    assert_eq!(c.listen, addr("127.0.0.1:1003"), "flag over env over file");
    assert_eq!(c.store.kind, StoreKind::Redis, "flag over env");
    assert_eq!(c.admin_listen, addr("127.0.0.1:2002"), "env over file");
    assert_eq!(c.jwt.issuer.as_deref(), Some("env-issuer"), "env over file");
    assert_eq!(c.session.idle_timeout_ms, 4000, "env over file");
    assert_eq!(c.path, "/from-file", "file over default");
    assert_eq!(c.jwt.leeway_s, 5, "file over default");
    assert_eq!(c.session.heartbeat_ms, 1000, "file over default");
    assert_eq!(c.store.key_prefix, "file:", "file over default");
    assert_eq!(c.session.auth_timeout_ms, 5000, "default");
}

#[test]
fn every_flag_sets_its_key() {
    let cert = file_with(b"cert", ".pem");
    let key = file_with(b"key", ".pem");
    let cli = Cli::try_parse_from([
        "wsauth-server",
        "--listen",
        "0.0.0.0:8443",
        "--admin-listen",
        "127.0.0.1:9999",
        "--admin-key",
        ADMIN_KEY,
        "--path",
        "/socket",
        "--store",
        "redis",
        "--store-url",
        "redis://127.0.0.1/1",
        "--tls-cert",
        cert.path().to_str().unwrap(),
        "--tls-key",
        key.path().to_str().unwrap(),
        "--log-format",
        "json",
        "--dev",
    ])
    .unwrap();
    assert!(cli.serve.dev);
    let c = load_env(
        &cli.serve,
        &[("WSAUTH_PATH", "/env"), ("WSAUTH_LOG__FORMAT", "text")],
    )
    .unwrap();
    assert_eq!(c.listen, addr("0.0.0.0:8443"));
    assert_eq!(c.admin_listen, addr("127.0.0.1:9999"));
    assert_eq!(c.admin_key.as_deref(), Some(ADMIN_KEY));
    assert_eq!(c.path, "/socket");
    assert_eq!(c.store.kind, StoreKind::Redis);
    assert_eq!(c.store.url.as_deref(), Some("redis://127.0.0.1/1"));
    assert_eq!(
        c.tls,
        Some(TlsConfig {
            cert_file: cert.path().to_owned(),
            key_file: key.path().to_owned()
        })
    );
    assert_eq!(c.log.format, LogFormat::Json);
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[test]
fn a_flag_completes_a_section_from_the_file() {
    let cert = file_with(b"cert", ".pem");
    let key = file_with(b"key", ".pem");
    let file = toml_file(&format!("[tls]\ncert_file = {:?}\n", cert.path()));
    let args = ServeArgs {
        tls_key: Some(key.path().to_owned()),
        ..with_file(&file)
    };
    let tls = load_env(&args, &[]).unwrap().tls.unwrap();
    assert_eq!(tls.cert_file, cert.path());
    assert_eq!(tls.key_file, key.path());
}

#[test]
fn half_a_tls_section_names_the_missing_key() {
    let cert = file_with(b"cert", ".pem");
    let args = ServeArgs {
        tls_cert: Some(cert.path().to_owned()),
        ..dev()
    };
    let err = load_env(&args, &[]).unwrap_err();
    assert_eq!(err.key(), "tls.key_file", "{err}");
}

/// `load` reads the process environment. Checked in a child process (this test
/// binary, running only `process_environment_child`) so that no test changes the
/// environment of the others.
#[test]
fn process_environment_is_read() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process_environment_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CONFIG_TEST_CHILD", "1")
        .env("WSAUTH_SESSION__IDLE_TIMEOUT_MS", "123456")
        .env(
            "WSAUTH_ALLOWED_ORIGINS",
            "https://a.example,https://b.example",
        )
        .env("WSAUTH_ADMIN_KEY", "1234567890123456789")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn process_environment_child() {
    if std::env::var_os("CONFIG_TEST_CHILD").is_none() {
        return; // only meaningful when started by `process_environment_is_read`
    }
    let c = load(&dev()).unwrap();
    assert_eq!(c.session.idle_timeout_ms, 123_456);
    assert_eq!(
        c.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(c.admin_key.as_deref(), Some("1234567890123456789"));
}

// ---------------------------------------------------------------------------------
// Environment values

#[test]
fn lists_from_the_environment() {
    let k1 = file_with(b"pem", ".pem");
    let k2 = file_with(b"pem", ".pem");
    let keys = format!("{}, {}", k1.path().display(), k2.path().display());
    let c = load_env(
        &dev(),
        &[
            (
                "WSAUTH_ALLOWED_ORIGINS",
                "https://a.example,https://b.example",
            ),
            ("WSAUTH_JWT__AUDIENCE", "api"),
            ("WSAUTH_JWT__ALGORITHMS", "[RS256, \"ES256\"]"),
            ("WSAUTH_JWT__PUBLIC_KEY_FILES", &keys),
        ],
    )
    .unwrap();
    assert_eq!(
        c.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(c.jwt.audience, ["api"]);
    assert_eq!(c.jwt.algorithms, ["RS256", "ES256"]);
    assert_eq!(
        c.jwt.public_key_files,
        [k1.path().to_owned(), k2.path().to_owned()]
    );
}

#[test]
fn lists_in_the_file_take_a_string_or_a_list() {
    let file = toml_file(
        "allowed_origins = [\"https://a.example\"]\n[jwt]\naudience = \"api\"\nalgorithms = [\"HS256\", \"HS384\"]\n",
    );
    let c = load_env(&with_file(&file), &[]).unwrap();
    assert_eq!(c.allowed_origins, ["https://a.example"]);
    assert_eq!(c.jwt.audience, ["api"]);
    assert_eq!(c.jwt.algorithms, ["HS256", "HS384"]);
}

#[test]
fn an_empty_variable_empties_a_list_from_the_file() {
    let file = toml_file("allowed_origins = [\"https://a.example\"]\n");
    let c = load_env(&with_file(&file), &[("WSAUTH_ALLOWED_ORIGINS", "")]).unwrap();
    assert!(c.allowed_origins.is_empty());
}

#[test]
fn variables_are_converted_to_each_fields_type() {
    let c = load_env(
        &dev(),
        &[
            ("WSAUTH_ALLOW_QUERY_TOKEN", "true"),
            ("WSAUTH_SHUTDOWN_DRAIN_MS", "0"),
            ("WSAUTH_NODE_ID", "12345"),
            ("WSAUTH_SESSION__MAX_SESSIONS_PER_USER", "3"),
            ("WSAUTH_SESSION__LIMIT_POLICY", "reject_new"),
            ("WSAUTH_LIMITS__MESSAGES_PER_SECOND", "7"),
            ("WSAUTH_STORE__KEY_PREFIX", "42"),
            ("WSAUTH_LOG__LEVEL", "debug"),
        ],
    )
    .unwrap();
    assert!(c.allow_query_token);
    assert_eq!(c.shutdown_drain_ms, 0);
    assert_eq!(
        c.node_id.as_deref(),
        Some("12345"),
        "a string of digits stays a string"
    );
    assert_eq!(c.session.max_sessions_per_user, Some(3));
    assert_eq!(c.session.limit_policy, LimitPolicy::RejectNew);
    assert_eq!(c.limits.messages_per_second, 7);
    assert_eq!(c.store.key_prefix, "42");
    assert_eq!(c.log.level, "debug");
}

#[test]
fn a_wrongly_typed_variable_names_its_key_and_variable() {
    let err = load_env(&dev(), &[("WSAUTH_SESSION__HEARTBEAT_MS", "soon")]).unwrap_err();
    assert_eq!(err.key(), "session.heartbeat_ms");
    assert_eq!(
        err.origin(),
        Some("environment variable WSAUTH_SESSION__HEARTBEAT_MS")
    );
    assert!(
        err.to_string().contains("WSAUTH_SESSION__HEARTBEAT_MS"),
        "{err}"
    );

    let err = load_env(&dev(), &[("WSAUTH_LISTEN", "localhost")]).unwrap_err();
    assert_eq!(err.key(), "listen", "{err}");

    let err = load_env(&dev(), &[("WSAUTH_STORE__KIND", "mysql")]).unwrap_err();
    assert_eq!(err.key(), "store.kind");
    assert!(
        err.message().contains("memory") && err.message().contains("redis"),
        "{err}"
    );
}

#[test]
fn a_section_key_with_one_underscore_points_at_the_right_name() {
    let err = load_env(&dev(), &[("WSAUTH_JWT_ISSUER", "x")]).unwrap_err();
    assert_eq!(err.key(), "jwt.issuer");
    assert!(err.to_string().contains("WSAUTH_JWT__ISSUER"), "{err}");
}

#[test]
fn an_unknown_key_in_a_section_variable_is_an_error() {
    let err = load_env(&dev(), &[("WSAUTH_JWT__ISUER", "x")]).unwrap_err();
    assert_eq!(err.key(), "jwt.isuer");
    assert_eq!(err.origin(), Some("environment variable WSAUTH_JWT__ISUER"));
}

// ---------------------------------------------------------------------------------
// File errors

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let file = toml_file("[jwt]\nissuer = \"a\"\nisuer = \"b\"\n");
    let err = load_env(&with_file(&file), &[]).unwrap_err();
    assert_eq!(err.key(), "jwt.isuer");
    let shown = err.to_string();
    assert!(
        shown.contains("jwt.isuer") && shown.contains("not a known key"),
        "{shown}"
    );
    assert!(
        shown.contains(&file.path().display().to_string()),
        "names the file: {shown}"
    );

    let file = toml_file("listn = \"127.0.0.1:1\"\n");
    assert_eq!(load_env(&with_file(&file), &[]).unwrap_err().key(), "listn");

    let file = toml_file("[sesion]\nheartbeat_ms = 1\n");
    assert_eq!(
        load_env(&with_file(&file), &[]).unwrap_err().key(),
        "sesion"
    );

    let file = toml_file("[session.extra]\nx = 1\n");
    assert_eq!(
        load_env(&with_file(&file), &[]).unwrap_err().key(),
        "session.extra"
    );
}

#[test]
fn a_wrong_type_in_the_file_is_named() {
    let file = toml_file("[limits]\nmax_connections = \"many\"\n");
    let err = load_env(&with_file(&file), &[]).unwrap_err();
    assert_eq!(err.key(), "limits.max_connections", "{err}");
}

#[test]
fn a_missing_or_broken_file_is_an_error() {
    let args = ServeArgs {
        config: Some(PathBuf::from("/nonexistent/wsauth.toml")),
        ..dev()
    };
    let err = load_env(&args, &[]).unwrap_err();
    assert_eq!(err.key(), "--config");
    assert!(
        err.to_string().contains("/nonexistent/wsauth.toml"),
        "{err}"
    );

    let file = toml_file("path = \"/ws\"\n[jwt\n");
    let err = load_env(&with_file(&file), &[]).unwrap_err();
    assert_eq!(err.key(), "--config");
    assert!(err.message().contains("line 2"), "{err}");
}

// ---------------------------------------------------------------------------------
// Validation

#[test]
fn the_valid_base_is_valid_and_dev_mode_needs_no_keys() {
    assert_eq!(valid().validate(false), Ok(()));
    assert_eq!(Config::default().validate(true), Ok(()));
    let keys: Vec<String> = Config::default()
        .validation_errors(false)
        .iter()
        .map(|e| e.key().to_owned())
        .collect();
    assert_eq!(
        keys,
        ["admin_key", "jwt"],
        "outside dev mode both keys are required"
    );
}

/// Each case breaks one rule of a valid configuration; the rule must name `key`
/// and say `says`.
#[test]
fn each_validation_error_names_its_key() {
    let missing = PathBuf::from("/nonexistent/file.pem");
    let short_secret_file = file_with(b"too short\n", ".key");
    let pem_a = file_with(b"pem", ".pem");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("x")).unwrap();
    let same_stem_1 = dir.path().join("k1.pem");
    let same_stem_2 = dir.path().join("x/k1.pem");
    std::fs::write(&same_stem_1, "pem").unwrap();
    std::fs::write(&same_stem_2, "pem").unwrap();

    type Case = (&'static str, &'static str, Box<dyn Fn(&mut Config)>);
    let cases: Vec<Case> = vec![
        (
            "admin_listen",
            "must differ",
            Box::new(|c| c.admin_listen = c.listen),
        ),
        ("admin_key", "is required", Box::new(|c| c.admin_key = None)),
        (
            "admin_key",
            "at least 16",
            Box::new(|c| c.admin_key = Some("fifteen-chars!!".into())),
        ),
        ("path", "start with '/'", Box::new(|c| c.path = "ws".into())),
        (
            "path",
            "plain URL path",
            Box::new(|c| c.path = "/ws?x=1".into()),
        ),
        (
            "allowed_origins",
            "no path",
            Box::new(|c| c.allowed_origins = vec!["https://a.example/".into()]),
        ),
        (
            "allowed_origins",
            "leaving the list empty",
            Box::new(|c| c.allowed_origins = vec!["*".into()]),
        ),
        (
            "allowed_origins",
            "not an origin",
            Box::new(|c| c.allowed_origins = vec!["a.example".into()]),
        ),
        (
            "node_id",
            "1 to 64",
            Box::new(|c| c.node_id = Some("two words".into())),
        ),
        (
            "jwt.hs256_secret",
            "at least 32 bytes",
            Box::new(|c| c.jwt.hs256_secret = Some("x".repeat(31))),
        ),
        ("jwt.hs256_secret_file", "together with jwt.hs256_secret", {
            let p = pem_a.path().to_owned();
            Box::new(move |c| c.jwt.hs256_secret_file = Some(p.clone()))
        }),
        ("jwt.hs256_secret_file", "at least 32 bytes", {
            let p = short_secret_file.path().to_owned();
            Box::new(move |c| {
                c.jwt.hs256_secret = None;
                c.jwt.hs256_secret_file = Some(p.clone());
            })
        }),
        ("jwt.hs256_secret_file", "cannot be read", {
            let p = missing.clone();
            Box::new(move |c| {
                c.jwt.hs256_secret = None;
                c.jwt.hs256_secret_file = Some(p.clone());
            })
        }),
        (
            "jwt",
            "no verification key",
            Box::new(|c| c.jwt.hs256_secret = None),
        ),
        ("jwt.public_key_files", "cannot be read", {
            let p = missing.clone();
            Box::new(move |c| c.jwt.public_key_files = vec![p.clone()])
        }),
        ("jwt.public_key_files", "same file stem", {
            let (a, b) = (same_stem_1.clone(), same_stem_2.clone());
            Box::new(move |c| c.jwt.public_key_files = vec![a.clone(), b.clone()])
        }),
        ("jwt.jwks_file", "cannot be read", {
            let p = missing.clone();
            Box::new(move |c| c.jwt.jwks_file = Some(p.clone()))
        }),
        ("jwt.jwks_file", "not a file", {
            let p = dir.path().to_owned();
            Box::new(move |c| c.jwt.jwks_file = Some(p.clone()))
        }),
        (
            "jwt.jwks_url",
            "must be https://",
            Box::new(|c| c.jwt.jwks_url = Some("http://idp.example/jwks".into())),
        ),
        (
            "jwt.jwks_url",
            "must be https://",
            Box::new(|c| c.jwt.jwks_url = Some("http://127.0.0.1.idp.example/jwks".into())),
        ),
        (
            "jwt.jwks_url",
            "must be an https:// URL",
            Box::new(|c| c.jwt.jwks_url = Some("ftp://idp.example/jwks".into())),
        ),
        (
            "jwt.jwks_url",
            "not a URL",
            Box::new(|c| c.jwt.jwks_url = Some("idp.example/jwks".into())),
        ),
        (
            "jwt.jwks_url",
            "user or password",
            Box::new(|c| c.jwt.jwks_url = Some("https://u:p@idp.example/jwks".into())),
        ),
        (
            "jwt.jwks_refresh_s",
            "greater than 0",
            Box::new(|c| c.jwt.jwks_refresh_s = 0),
        ),
        (
            "jwt.jwks_min_refetch_s",
            "greater than 0",
            Box::new(|c| c.jwt.jwks_min_refetch_s = 0),
        ),
        (
            "jwt.jwks_max_stale_s",
            "greater than 0",
            Box::new(|c| c.jwt.jwks_max_stale_s = 0),
        ),
        (
            "jwt.algorithms",
            "`none`",
            Box::new(|c| c.jwt.algorithms = vec!["none".into()]),
        ),
        (
            "jwt.algorithms",
            "`none`",
            Box::new(|c| c.jwt.algorithms = vec!["HS256".into(), "NONE".into()]),
        ),
        (
            "jwt.algorithms",
            "unknown algorithm `HS1024`",
            Box::new(|c| c.jwt.algorithms = vec!["HS1024".into()]),
        ),
        (
            "jwt.algorithms",
            "unknown algorithm `hs256`",
            Box::new(|c| c.jwt.algorithms = vec!["hs256".into()]),
        ),
        (
            "jwt.issuer",
            "not be empty",
            Box::new(|c| c.jwt.issuer = Some(String::new())),
        ),
        (
            "jwt.audience",
            "empty audience",
            Box::new(|c| c.jwt.audience = vec![" ".into()]),
        ),
        (
            "jwt.max_token_bytes",
            "greater than 0",
            Box::new(|c| c.jwt.max_token_bytes = 0),
        ),
        (
            "jwt.max_token_bytes",
            "limits.max_message_bytes",
            Box::new(|c| c.jwt.max_token_bytes = 70_000),
        ),
        (
            "session.auth_timeout_ms",
            "greater than 0",
            Box::new(|c| c.session.auth_timeout_ms = 0),
        ),
        (
            "session.heartbeat_ms",
            "greater than 0",
            Box::new(|c| c.session.heartbeat_ms = 0),
        ),
        (
            "session.idle_timeout_ms",
            "greater than session.heartbeat_ms",
            Box::new(|c| c.session.idle_timeout_ms = 25_000),
        ),
        (
            "session.idle_timeout_ms",
            "greater than session.heartbeat_ms",
            Box::new(|c| c.session.idle_timeout_ms = 0),
        ),
        (
            "session.refresh_notice_ms",
            "greater than 0",
            Box::new(|c| c.session.refresh_notice_ms = 0),
        ),
        (
            "session.resume_buffer",
            "greater than 0",
            Box::new(|c| c.session.resume_buffer = 0),
        ),
        (
            "session.max_sessions_per_user",
            "greater than 0",
            Box::new(|c| c.session.max_sessions_per_user = Some(0)),
        ),
        (
            "session.max_token_lifetime_s",
            "greater than 0",
            Box::new(|c| c.session.max_token_lifetime_s = 0),
        ),
        (
            "session.max_channels",
            "greater than 0",
            Box::new(|c| c.session.max_channels = 0),
        ),
        (
            "session.max_queued_requests",
            "greater than 0",
            Box::new(|c| c.session.max_queued_requests = 0),
        ),
        (
            "app.max_rpc_in_flight",
            "greater than 0",
            Box::new(|c| c.app.max_rpc_in_flight = 0),
        ),
        (
            "app.rpc_timeout_ms",
            "greater than 0",
            Box::new(|c| c.app.rpc_timeout_ms = 0),
        ),
        (
            "limits.max_message_bytes",
            "greater than 0",
            Box::new(|c| c.limits.max_message_bytes = 0),
        ),
        (
            "limits.max_frame_bytes",
            "greater than 0",
            Box::new(|c| c.limits.max_frame_bytes = 0),
        ),
        (
            "limits.max_frame_bytes",
            "must not exceed limits.max_message_bytes",
            Box::new(|c| c.limits.max_frame_bytes = 65_537),
        ),
        (
            "limits.handshake_timeout_ms",
            "greater than 0",
            Box::new(|c| c.limits.handshake_timeout_ms = 0),
        ),
        (
            "limits.messages_per_second",
            "greater than 0",
            Box::new(|c| c.limits.messages_per_second = 0),
        ),
        (
            "limits.message_burst",
            "greater than 0",
            Box::new(|c| c.limits.message_burst = 0),
        ),
        (
            "limits.max_unauthenticated_per_ip",
            "greater than 0",
            Box::new(|c| c.limits.max_unauthenticated_per_ip = 0),
        ),
        (
            "limits.max_connections",
            "greater than 0",
            Box::new(|c| c.limits.max_connections = 0),
        ),
        (
            "limits.outbound_queue",
            "greater than 0",
            Box::new(|c| c.limits.outbound_queue = 0),
        ),
        (
            "limits.listen_backlog",
            "greater than 0",
            Box::new(|c| c.limits.listen_backlog = 0),
        ),
        ("tls.cert_file", "cannot be read", {
            let (cert, key) = (missing.clone(), pem_a.path().to_owned());
            Box::new(move |c| {
                c.tls = Some(TlsConfig {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                })
            })
        }),
        ("tls.key_file", "cannot be read", {
            let (cert, key) = (pem_a.path().to_owned(), missing.clone());
            Box::new(move |c| {
                c.tls = Some(TlsConfig {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                })
            })
        }),
        (
            "store.url",
            "required when store.kind is redis",
            Box::new(|c| c.store.kind = StoreKind::Redis),
        ),
        (
            "store.url",
            "must start with",
            Box::new(|c| {
                c.store.kind = StoreKind::Redis;
                c.store.url = Some("http://user:hunter2@cache".into());
            }),
        ),
        (
            "log.level",
            "not be empty",
            Box::new(|c| c.log.level = " ".into()),
        ),
        (
            "app.rpc_url",
            "must start with http:// or https://",
            Box::new(|c| {
                c.app.rpc_url = Some("ftp://user:hunter2@backend/rpc".into());
                c.app.rpc_secret = Some(SECRET.into());
            }),
        ),
        (
            "app.rpc_url",
            "is not a URL",
            Box::new(|c| {
                c.app.rpc_url = Some("/rpc".into());
                c.app.rpc_secret = Some(SECRET.into());
            }),
        ),
        (
            "app.rpc_url",
            "white space",
            Box::new(|c| {
                c.app.rpc_url = Some(" http://backend/rpc".into());
                c.app.rpc_secret = Some(SECRET.into());
            }),
        ),
        (
            "app.rpc_secret",
            "required when app.rpc_url is set",
            Box::new(|c| c.app.rpc_url = Some("http://backend/rpc".into())),
        ),
        (
            "app.rpc_secret",
            "at least 32 bytes",
            Box::new(|c| {
                c.app.rpc_url = Some("https://backend/rpc".into());
                c.app.rpc_secret = Some("x".repeat(31));
            }),
        ),
        (
            "app.rpc_secret",
            "app.rpc_url is not",
            Box::new(|c| c.app.rpc_secret = Some(SECRET.into())),
        ),
        ("app.rpc_secret_file", "app.rpc_url is not", {
            let p = pem_a.path().to_owned();
            Box::new(move |c| c.app.rpc_secret_file = Some(p.clone()))
        }),
        ("app.rpc_secret_file", "together with app.rpc_secret", {
            let p = pem_a.path().to_owned();
            Box::new(move |c| {
                c.app.rpc_url = Some("http://backend/rpc".into());
                c.app.rpc_secret = Some(SECRET.into());
                c.app.rpc_secret_file = Some(p.clone());
            })
        }),
        ("app.rpc_secret_file", "at least 32 bytes", {
            let p = short_secret_file.path().to_owned();
            Box::new(move |c| {
                c.app.rpc_url = Some("http://backend/rpc".into());
                c.app.rpc_secret_file = Some(p.clone());
            })
        }),
        ("app.rpc_secret_file", "cannot be read", {
            let p = missing.clone();
            Box::new(move |c| {
                c.app.rpc_url = Some("http://backend/rpc".into());
                c.app.rpc_secret_file = Some(p.clone());
            })
        }),
        (
            "app.rpc_methods",
            "has `chat send`",
            Box::new(|c| c.app.rpc_methods = vec!["chat.*".into(), "chat send".into()]),
        ),
        (
            "app.rpc_methods",
            "has `a*b`",
            Box::new(|c| c.app.rpc_methods = vec!["a*b".into()]),
        ),
        (
            "app.rpc_methods",
            "has `**`",
            Box::new(|c| c.app.rpc_methods = vec!["**".into()]),
        ),
        (
            "app.rpc_methods",
            "has ``",
            Box::new(|c| c.app.rpc_methods = vec![String::new()]),
        ),
        (
            "app.rpc_methods",
            "neither a method",
            Box::new(|c| c.app.rpc_methods = vec!["m".repeat(129)]),
        ),
        (
            "app.max_backend_calls",
            "greater than 0",
            Box::new(|c| c.app.max_backend_calls = 0),
        ),
    ];

    for (key, says, break_it) in &cases {
        let mut config = valid();
        break_it(&mut config);
        let errors = config.validation_errors(false);
        let found = errors.iter().find(|e| e.key() == *key);
        let Some(error) = found else {
            panic!("no error for {key}; got {errors:?}");
        };
        assert!(error.message().contains(says), "{key}: {error}");
        let shown = error.to_string();
        assert!(
            shown.starts_with(key),
            "Display names the key first: {shown}"
        );
        assert!(
            config.validate(false).is_err(),
            "{key}: validate must fail too"
        );
    }
}

#[test]
fn the_app_backend_settings_that_are_valid() {
    let secret_file = file_with(format!("{SECRET}\n").as_bytes(), ".key");
    let mut c = valid();
    c.app.rpc_url = Some("http://127.0.0.1:8000/rpc".into());
    c.app.rpc_secret = Some("s".repeat(32));
    c.app.rpc_methods = vec![
        "*".into(),
        "chat.send".into(),
        "chat.*".into(),
        "a-b_c:d/e.F9".into(),
        "m".repeat(128),
        format!("{}*", "m".repeat(127)),
    ];
    assert_eq!(c.validation_errors(false), vec![]);
    c.app.rpc_url = Some("https://user:pw@backend.example/api/rpc?x=1".into());
    c.app.rpc_secret = None;
    c.app.rpc_secret_file = Some(secret_file.path().to_owned());
    assert_eq!(c.validation_errors(false), vec![]);
    assert_eq!(
        c.app.rpc_secret_bytes().unwrap().unwrap(),
        SECRET.as_bytes(),
        "one trailing line break is dropped, as for jwt.hs256_secret_file"
    );
}

#[test]
fn rpc_methods_allow_exact_methods_and_prefixes() {
    let mut c = valid();
    assert!(c.app.allows_method("anything"), "empty allows every method");
    c.app.rpc_methods = vec!["chat.send".into(), "admin/*".into()];
    assert!(c.app.allows_method("chat.send"));
    assert!(!c.app.allows_method("chat.sendx"));
    assert!(!c.app.allows_method("chat"));
    assert!(c.app.allows_method("admin/"));
    assert!(c.app.allows_method("admin/ban"));
    assert!(!c.app.allows_method("admin"));
    c.app.rpc_methods = vec!["*".into()];
    assert!(c.app.allows_method("x"));
}

#[test]
fn the_app_backend_keys_load_from_the_environment_and_never_show_their_secret() {
    let c = load_env(
        &dev(),
        &[
            ("WSAUTH_APP__RPC_URL", "http://:hunter2@127.0.0.1:8000/rpc"),
            ("WSAUTH_APP__RPC_SECRET", SECRET),
            ("WSAUTH_APP__RPC_METHODS", "chat.*, rooms.list"),
            ("WSAUTH_APP__MAX_BACKEND_CALLS", "8"),
        ],
    )
    .unwrap();
    assert_eq!(c.app.rpc_secret.as_deref(), Some(SECRET));
    assert_eq!(c.app.rpc_methods, ["chat.*", "rooms.list"]);
    assert_eq!(c.app.max_backend_calls, 8);
    for shown in [
        format!("{c:?}"),
        format!("{:#?}", c.app),
        serde_json::to_string(&c).unwrap(),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1:8000/rpc"), "{shown}");
    }
    // A bad URL from the environment names its key and its variable, not the URL.
    let err = load_env(
        &dev(),
        &[
            ("WSAUTH_APP__RPC_URL", "gopher://:hunter2@h/rpc"),
            ("WSAUTH_APP__RPC_SECRET", SECRET),
        ],
    )
    .unwrap_err();
    assert_eq!(err.key(), "app.rpc_url");
    assert_eq!(
        err.origin(),
        Some("environment variable WSAUTH_APP__RPC_URL")
    );
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
    // A short secret is named, not shown.
    let short = "short-rpc-secret-31-bytes-xxxxx";
    let err = load_env(
        &dev(),
        &[
            ("WSAUTH_APP__RPC_URL", "http://h/rpc"),
            ("WSAUTH_APP__RPC_SECRET", short),
        ],
    )
    .unwrap_err();
    assert_eq!(err.key(), "app.rpc_secret");
    assert!(!format!("{err} {err:?}").contains(short), "{err}");
}

#[test]
fn the_secret_length_message_is_the_documented_one() {
    let mut c = valid();
    c.jwt.hs256_secret = Some("a".repeat(31));
    let err = c.validate(true).unwrap_err();
    assert!(
        err.to_string()
            .contains("jwt.hs256_secret must be at least 32 bytes"),
        "{err}"
    );
    c.jwt.hs256_secret = Some("a".repeat(32));
    assert_eq!(c.validate(false), Ok(()));
}

#[test]
fn dev_mode_still_checks_everything_else() {
    let c = Config {
        admin_key: Some("short".into()),
        ..Config::default()
    };
    assert_eq!(c.validate(true).unwrap_err().key(), "admin_key");
    let mut c = Config::default();
    c.session.idle_timeout_ms = 1;
    assert_eq!(
        c.validate(true).unwrap_err().key(),
        "session.idle_timeout_ms"
    );
}

#[test]
fn a_secret_file_loses_one_trailing_line_break() {
    let file = file_with(format!("{SECRET}\r\n").as_bytes(), ".key");
    let mut c = valid();
    c.jwt.hs256_secret = None;
    c.jwt.hs256_secret_file = Some(file.path().to_owned());
    assert_eq!(c.validate(false), Ok(()));
    assert_eq!(
        c.jwt.hs256_secret_bytes().unwrap().unwrap(),
        SECRET.as_bytes()
    );

    // 31 bytes and a newline is still 31 bytes.
    let file = file_with(format!("{}\n", "s".repeat(31)).as_bytes(), ".key");
    c.jwt.hs256_secret_file = Some(file.path().to_owned());
    assert_eq!(
        c.validate(false).unwrap_err().key(),
        "jwt.hs256_secret_file"
    );
}

#[test]
fn load_validates_and_names_the_source_of_the_bad_value() {
    let err = load_env(&dev(), &[("WSAUTH_SESSION__IDLE_TIMEOUT_MS", "1000")]).unwrap_err();
    assert_eq!(err.key(), "session.idle_timeout_ms");
    assert_eq!(
        err.origin(),
        Some("environment variable WSAUTH_SESSION__IDLE_TIMEOUT_MS")
    );

    let err = load_env(
        &ServeArgs {
            path: Some("nope".into()),
            ..dev()
        },
        &[],
    )
    .unwrap_err();
    assert_eq!(err.key(), "path");
    assert_eq!(err.origin(), Some("flag --path"));

    let file = toml_file("[limits]\nmax_frame_bytes = 70000\n");
    let err = load_env(&with_file(&file), &[]).unwrap_err();
    assert_eq!(err.key(), "limits.max_frame_bytes");
    assert!(err.origin().unwrap().contains("config file"), "{err}");
}

#[test]
fn load_leaves_the_mode_dependent_rules_to_validate() {
    // Without --dev and without keys, `load` succeeds: the caller may be about to
    // generate development keys. `validate(false)` then requires them.
    let c = load_env(&ServeArgs::default(), &[]).unwrap();
    let err = c.validate(false).unwrap_err();
    assert_eq!(err.key(), "admin_key");
    assert_eq!(c.validate(true), Ok(()));

    // Every other rule is checked by `load` itself.
    let err = load_env(&ServeArgs::default(), &[("WSAUTH_ADMIN_KEY", "short")]).unwrap_err();
    assert_eq!(err.key(), "admin_key");
    let err = load_env(
        &ServeArgs::default(),
        &[("WSAUTH_LIMITS__MAX_CONNECTIONS", "0")],
    )
    .unwrap_err();
    assert_eq!(err.key(), "limits.max_connections");
}

// ---------------------------------------------------------------------------------
// Secrets

#[test]
fn secrets_never_show_in_debug_or_serialized_form() {
    let mut c = valid();
    c.store.url = Some("redis://:hunter2-password@cache:6379/0".into());
    for shown in [
        format!("{c:?}"),
        format!("{c:#?}"),
        format!("{:?}", c.jwt),
        format!("{:?}", c.store),
        serde_json::to_string(&c).unwrap(),
    ] {
        assert!(!shown.contains(ADMIN_KEY), "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
    for shown in [
        format!("{c:?}"),
        format!("{:?}", c.store),
        serde_json::to_string(&c).unwrap(),
    ] {
        assert!(
            shown.contains("@cache:6379/0"),
            "the rest of the URL is shown: {shown}"
        );
    }
    let args = ServeArgs {
        admin_key: Some(ADMIN_KEY.into()),
        store_url: Some("redis://:hunter2@h".into()),
        ..dev()
    };
    let shown = format!("{args:?}");
    assert!(
        !shown.contains(ADMIN_KEY) && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn secrets_never_show_in_errors() {
    // Too short.
    let short = "short-secret-value-31-bytes-xxx";
    let err = load_env(&dev(), &[("WSAUTH_JWT__HS256_SECRET", short)]).unwrap_err();
    assert_eq!(err.key(), "jwt.hs256_secret");
    assert!(!format!("{err} {err:?}").contains(short), "{err}");

    let err = load_env(&dev(), &[("WSAUTH_ADMIN_KEY", "tiny-admin")]).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("tiny-admin"), "{err}");

    // Wrong type in the file: the value is not echoed.
    let file = toml_file("admin_key = 98765432109876543\n");
    let err = load_env(&with_file(&file), &[]).unwrap_err();
    assert_eq!(err.key(), "admin_key");
    assert!(
        !format!("{err} {err:?}").contains("98765432109876543"),
        "{err}"
    );

    let file = toml_file("[jwt]\nhs256_secret = [\"sekrit-in-a-list-0123456789abcdef\"]\n");
    let err = load_env(&with_file(&file), &[]).unwrap_err();
    assert_eq!(err.key(), "jwt.hs256_secret");
    assert!(!format!("{err} {err:?}").contains("sekrit"), "{err}");

    // A syntax error on the secret's own line.
    let file = toml_file("[jwt]\nhs256_secret = \"sekrit-unterminated-0123456789abcdef\n");
    let err = load_env(&with_file(&file), &[]).unwrap_err();
    assert_eq!(err.key(), "--config");
    assert!(!format!("{err} {err:?}").contains("sekrit"), "{err}");

    // A bad redis URL is not echoed (it may carry a password).
    let args = ServeArgs {
        store: Some(StoreKind::Redis),
        store_url: Some("http://:hunter2@h".into()),
        ..dev()
    };
    let err = load_env(&args, &[]).unwrap_err();
    assert_eq!(err.key(), "store.url");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
}

#[test]
fn every_secret_key_is_a_key() {
    for key in SECRET_KEYS {
        assert!(FIELDS.iter().any(|(k, _, _)| k == key), "{key}");
    }
}

// ---------------------------------------------------------------------------------
// FIELDS and docs/configuration.md

/// Every leaf of the serialized value, as (dotted key, value).
fn leaves(value: &serde_json::Value, prefix: &str, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &key, out);
            }
        }
        leaf => out.push((prefix.to_owned(), leaf.clone())),
    }
}

/// Every key of `Config`, with its default value, found by serializing a default
/// config with the optional sections filled in.
fn config_leaves() -> Vec<(String, serde_json::Value)> {
    let config = Config {
        tls: Some(TlsConfig {
            cert_file: "c".into(),
            key_file: "k".into(),
        }),
        ..Config::default()
    };
    let mut out = Vec::new();
    leaves(&serde_json::to_value(&config).unwrap(), "", &mut out);
    let defaults = serde_json::to_value(Config::default()).unwrap();
    out.into_iter()
        .map(|(key, _)| {
            let default = key
                .split('.')
                .try_fold(&defaults, |v, k| v.get(k).filter(|v| !v.is_null()))
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            (key, default)
        })
        .collect()
}

fn shown_default(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "unset".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) if items.is_empty() => "[]".to_owned(),
        other => other.to_string(),
    }
}

#[test]
fn fields_list_every_key_of_config_with_its_default() {
    let leaves = config_leaves();
    for (key, default) in &leaves {
        let Some((_, env, documented)) = FIELDS.iter().find(|(k, _, _)| k == key) else {
            panic!("{key} is missing from FIELDS");
        };
        assert_eq!(*env, env_var(key), "{key}");
        assert_eq!(*documented, shown_default(default), "default of {key}");
    }
    for (key, _, _) in FIELDS {
        assert!(
            leaves.iter().any(|(k, _)| k == key),
            "FIELDS lists {key}, which Config lacks"
        );
    }
}

#[test]
fn every_field_can_be_set_from_its_environment_variable() {
    let files: Vec<NamedTempFile> = (0..4).map(|_| file_with(b"x", ".pem")).collect();
    let path = |i: usize| files[i].path().to_str().unwrap().to_owned();
    let secret_file = file_with(SECRET.as_bytes(), ".key");
    // A value for every key that differs from its default.
    let value = |key: &str| -> String {
        match key {
            "listen" => "127.0.0.1:1".into(),
            "admin_listen" => "127.0.0.1:2".into(),
            "admin_key" => ADMIN_KEY.into(),
            "path" => "/other".into(),
            "allowed_origins" => "https://a.example".into(),
            "allow_query_token" => "true".into(),
            "node_id" => "node-7".into(),
            "jwt.hs256_secret" => SECRET.into(),
            "jwt.hs256_secret_file" => secret_file.path().to_str().unwrap().into(),
            "jwt.public_key_files" => path(0),
            "jwt.jwks_file" => path(1),
            "jwt.jwks_url" => "https://idp.example/.well-known/jwks.json".into(),
            "jwt.jwks_start_without_keys" => "true".into(),
            "jwt.algorithms" => "HS256".into(),
            "jwt.issuer" | "jwt.audience" => "x".into(),
            "jwt.required_typ" => "at+jwt".into(),
            "session.limit_policy" => "reject_new".into(),
            "session.max_sessions_per_user" => "2".into(),
            "tls.cert_file" => path(2),
            "tls.key_file" => path(3),
            "store.kind" => "redis".into(),
            "store.url" => "redis://h".into(),
            "store.key_prefix" => "p:".into(),
            "app.rpc_url" => "http://127.0.0.1:8000/rpc".into(),
            "app.rpc_secret" => SECRET.into(),
            "app.rpc_secret_file" => secret_file.path().to_str().unwrap().into(),
            "app.rpc_methods" => "chat.*".into(),
            "api_key" => "an-api-key-of-sixteen-chars".into(),
            "jwt.issuers" => format!(
                r#"[{{ issuer = "https://a.example/", jwks_file = "{}" }}]"#,
                path(0)
            ),
            "jwt.oidc_issuer" | "jwt.introspection_url" => "https://id.example".into(),
            "jwt.introspection_client_id" => "wsauth".into(),
            "jwt.introspection_client_secret" => SECRET.into(),
            "jwt.introspection_client_secret_file" => secret_file.path().to_str().unwrap().into(),
            "log.format" => "json".into(),
            "log.level" => "debug".into(),
            k if k.starts_with("features.") => "off".into(),
            "limits.max_frame_bytes" | "jwt.max_token_bytes" | "session.heartbeat_ms" => {
                "1000".into()
            }
            _ => "77777".into(),
        }
    };
    let defaults = serde_json::to_value(Config::default()).unwrap();
    for (key, env, _) in FIELDS {
        let v = value(key);
        let mut vars = vec![(env.to_string(), v.clone())];
        if *key == "tls.cert_file" || *key == "tls.key_file" {
            vars.push(("WSAUTH_TLS__CERT_FILE".into(), path(2)));
            vars.push(("WSAUTH_TLS__KEY_FILE".into(), path(3)));
        }
        if *key == "store.url" {
            vars.push(("WSAUTH_STORE__KIND".into(), "redis".into()));
        }
        if *key == "store.kind" {
            vars.push(("WSAUTH_STORE__URL".into(), "redis://h".into()));
        }
        if *key == "app.rpc_secret" || *key == "app.rpc_secret_file" {
            vars.push(("WSAUTH_APP__RPC_URL".into(), "http://h/rpc".into()));
        }
        if *key == "app.rpc_url" {
            vars.push(("WSAUTH_APP__RPC_SECRET".into(), SECRET.into()));
        }
        if key.starts_with("jwt.introspection_") {
            vars.push((
                "WSAUTH_JWT__INTROSPECTION_URL".into(),
                "https://id.example/introspect".into(),
            ));
            vars.push((
                "WSAUTH_JWT__INTROSPECTION_CLIENT_ID".into(),
                "client".into(),
            ));
        }
        let loaded = load_with_env(&dev(), vars.clone())
            .unwrap_or_else(|e| panic!("{key} from {env}={v}: {e}"));
        let loaded = serde_json::to_value(&loaded).unwrap();
        let get = |root: &serde_json::Value| {
            key.split('.')
                .try_fold(root.clone(), |v, k| v.get(k).cloned())
        };
        assert_ne!(get(&loaded), get(&defaults), "{env} did not change {key}");
    }
}

fn docs() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    std::fs::read_to_string(path).expect("docs/configuration.md")
}

#[test]
fn the_docs_list_every_key_with_its_variable_and_default() {
    let docs = docs();
    let mut missing = Vec::new();
    for (key, _) in config_leaves() {
        let Some((_, env, default)) = FIELDS.iter().find(|(k, _, _)| *k == key) else {
            missing.push(format!("{key}: not in FIELDS"));
            continue;
        };
        let cell = format!("| `{key}` |");
        let Some(row) = docs.lines().find(|line| line.starts_with(&cell)) else {
            missing.push(format!("{key}: no table row starting with {cell}"));
            continue;
        };
        if !row.contains(&format!("`{env}`")) {
            missing.push(format!("{key}: its row lacks `{env}`"));
        }
        let default_shown = if *default == "unset" {
            row.contains("unset")
        } else {
            row.contains(&format!("`{default}`"))
        };
        if !default_shown {
            missing.push(format!("{key}: its row lacks the default {default}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md is out of date:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_docs_example_file_is_a_valid_config() {
    let docs = docs();
    let start = docs.find("```toml\n").expect("an example TOML block") + "```toml\n".len();
    let end = start + docs[start..].find("```").unwrap();
    let example = &docs[start..end];
    let mut config: Config = toml::from_str(example).unwrap_or_else(|e| panic!("{e}"));
    // The example says the admin key comes from the environment.
    assert_eq!(config.admin_key, None);
    config.admin_key = Some(ADMIN_KEY.to_owned());
    // The files it names do not exist here; everything else must be right.
    let errors: Vec<_> = config
        .validation_errors(false)
        .into_iter()
        .filter(|e| !e.message().contains("cannot be read"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_ne!(config, Config::default());
}

#[test]
fn app_limits_reach_the_core() {
    let mut c = Config::default();
    c.app.max_rpc_in_flight = 3;
    c.app.rpc_timeout_ms = 750;
    let session = wsauth_server::server::session_config(&c);
    assert_eq!(session.max_rpc_in_flight, 3);
    assert_eq!(session.rpc_timeout_ms, 750);
}

#[test]
fn a_jwks_url_is_https_or_http_on_loopback_and_counts_as_a_key() {
    for url in [
        "https://idp.example/.well-known/jwks.json",
        "http://127.0.0.1:8000/jwks",
        "http://127.8.9.10/jwks",
        "http://[::1]:8000/jwks",
        "http://localhost/jwks",
    ] {
        let mut c = valid();
        c.jwt.hs256_secret = None;
        c.jwt.jwks_url = Some(url.into());
        c.validate(false)
            .unwrap_or_else(|e| panic!("{url} refused: {e}"));
    }
}
