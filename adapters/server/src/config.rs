//! The server's configuration: built-in defaults, then a TOML file (`--config`),
//! then environment variables (`WSAUTH_<KEY>`, `WSAUTH_<SECTION>__<KEY>`), then
//! command-line flags, each overriding the one before. `docs/configuration.md`
//! lists every key; a test keeps the two in step.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

/// The whole configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the WebSocket listener binds.
    pub listen: SocketAddr,
    /// Where the operator listener (health, admin API) binds.
    pub admin_listen: SocketAddr,
    /// The admin API's bearer key (at least 16 characters).
    pub admin_key: Option<String>,
    /// The WebSocket path.
    pub path: String,
    /// Origins allowed to connect; empty: all.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_origins: Vec<String>,
    /// Accept `?access_token=`.
    pub allow_query_token: bool,
    /// This node's name in logs.
    pub node_id: Option<String>,
    /// How long a graceful shutdown may take, in ms.
    pub shutdown_drain_ms: u64,
    /// Token verification.
    pub jwt: JwtConfig,
    /// Session timings and limits.
    pub session: SessionSettings,
    /// Connection limits.
    pub limits: Limits,
    /// TLS (`wss://`) served directly.
    pub tls: TlsConfig,
    /// The session store.
    pub store: StoreConfig,
    /// Logging.
    pub log: LogConfig,
}

/// The `jwt` section.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// An HS256/384/512 secret (at least 32 bytes).
    pub hs256_secret: Option<String>,
    /// A file holding the HS secret (trailing whitespace ignored).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM public keys (RSA, EC P-256/P-384, Ed25519); the `kid` is the file stem.
    #[serde(deserialize_with = "paths_string_or_list")]
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS file of public keys.
    pub jwks_file: Option<PathBuf>,
    /// Algorithms accepted; empty: every supported one.
    #[serde(deserialize_with = "string_or_list")]
    pub algorithms: Vec<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accepted `aud` values; when not empty, `aud` is required.
    #[serde(deserialize_with = "string_or_list")]
    pub audience: Vec<String>,
    /// Clock leeway, in seconds.
    pub leeway_s: u64,
    /// Largest token accepted, in bytes.
    pub max_token_bytes: usize,
}

/// The `session` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Time from the upgrade to a completed authentication, in ms.
    pub auth_timeout_ms: u64,
    /// Ping interval, in ms.
    pub heartbeat_ms: u64,
    /// Silence after which a connection is closed, in ms.
    pub idle_timeout_ms: u64,
    /// Longest lead of the `expiring` notice, in ms.
    pub refresh_notice_ms: u64,
    /// How long a detached session stays resumable, in ms.
    pub resume_grace_ms: u64,
    /// Messages kept per session for replay.
    pub resume_buffer: usize,
    /// Sessions per user; absent: unlimited.
    pub max_sessions_per_user: Option<usize>,
    /// What the limit does.
    pub limit_policy: LimitPolicy,
    /// How long a user revocation refuses older tokens, in seconds.
    pub max_token_lifetime_s: u64,
    /// Channels one session may join.
    pub max_channels: usize,
    /// Requests a client may pipeline while one is answered.
    pub max_queued_requests: usize,
}

/// The per-user limit's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LimitPolicy {
    /// Close the oldest session (`SESSION_REPLACED`).
    #[default]
    EvictOldest,
    /// Refuse the new one (`TOO_MANY_SESSIONS`).
    RejectNew,
}

/// The `limits` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message, in bytes.
    pub max_message_bytes: usize,
    /// Largest frame, in bytes.
    pub max_frame_bytes: usize,
    /// Time for the whole upgrade (and TLS), in ms.
    pub handshake_timeout_ms: u64,
    /// Sustained data frames per second per connection.
    pub messages_per_second: u32,
    /// Burst of data frames.
    pub message_burst: u32,
    /// Unauthenticated connections per client IP.
    pub max_unauthenticated_per_ip: usize,
    /// Open sockets in all.
    pub max_connections: usize,
    /// Messages queued per connection before `SLOW_CONSUMER`.
    pub outbound_queue: usize,
}

/// The `tls` section: both files, or neither.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

/// Which store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In memory, one node.
    #[default]
    Memory,
    /// Redis or Valkey, several nodes.
    Redis,
}

/// The `store` section.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory` or `redis`.
    pub kind: StoreKind,
    /// `redis://…` (required for redis).
    pub url: Option<String>,
    /// Prefix of every key the store writes.
    pub key_prefix: String,
}

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `log` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `wsauth_server=debug`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            admin_key: None,
            path: "/ws".into(),
            allowed_origins: Vec::new(),
            allow_query_token: false,
            node_id: None,
            shutdown_drain_ms: 10_000,
            jwt: JwtConfig::default(),
            session: SessionSettings::default(),
            limits: Limits::default(),
            tls: TlsConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            hs256_secret_file: None,
            public_key_files: Vec::new(),
            jwks_file: None,
            algorithms: Vec::new(),
            issuer: None,
            audience: Vec::new(),
            leeway_s: 30,
            max_token_bytes: 8192,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            auth_timeout_ms: 5_000,
            heartbeat_ms: 25_000,
            idle_timeout_ms: 60_000,
            refresh_notice_ms: 60_000,
            resume_grace_ms: 30_000,
            resume_buffer: 256,
            max_sessions_per_user: None,
            limit_policy: LimitPolicy::EvictOldest,
            max_token_lifetime_s: 86_400,
            max_channels: 256,
            max_queued_requests: 64,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_frame_bytes: 64 * 1024,
            handshake_timeout_ms: 5_000,
            messages_per_second: 100,
            message_burst: 200,
            max_unauthenticated_per_ip: 1024,
            max_connections: 100_000,
            outbound_queue: 256,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Memory,
            url: None,
            key_prefix: "wsauth:".into(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

fn redact(v: &Option<String>) -> &'static str {
    if v.is_some() { "<set>" } else { "<none>" }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("admin_key", &redact(&self.admin_key))
            .field("path", &self.path)
            .field("allowed_origins", &self.allowed_origins)
            .field("allow_query_token", &self.allow_query_token)
            .field("node_id", &self.node_id)
            .field("shutdown_drain_ms", &self.shutdown_drain_ms)
            .field("jwt", &self.jwt)
            .field("session", &self.session)
            .field("limits", &self.limits)
            .field("tls", &self.tls)
            .field("store", &self.store)
            .field("log", &self.log)
            .finish()
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("hs256_secret", &redact(&self.hs256_secret))
            .field("hs256_secret_file", &self.hs256_secret_file)
            .field("public_key_files", &self.public_key_files)
            .field("jwks_file", &self.jwks_file)
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A Redis URL may carry a password.
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("url", &redact(&self.url))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// A list given as a list, or as one comma-separated string (handy in env vars).
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

fn paths_string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(string_or_list(d)?.into_iter().map(PathBuf::from).collect())
}

/// Flags of `wsauth-server` (and `wsauth-server serve`).
#[derive(Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `listen`: where the WebSocket listener binds.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// `admin_listen`: where the operator listener binds.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// `admin_key` (prefer the WSAUTH_ADMIN_KEY variable: flags show in `ps`).
    #[arg(long, value_name = "KEY")]
    pub admin_key: Option<String>,
    /// `path`: the WebSocket path.
    #[arg(long)]
    pub path: Option<String>,
    /// `store.kind`: memory or redis.
    #[arg(long, value_name = "KIND")]
    pub store: Option<String>,
    /// `store.url`.
    #[arg(long, value_name = "URL")]
    pub store_url: Option<String>,
    /// `tls.cert_file`.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// `tls.key_file`.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// `log.format`: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Development mode: generate a key when none is configured (loopback only).
    #[arg(long)]
    pub dev: bool,
}

/// A configuration problem, naming the key. Never prints a secret value.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {key}: {problem}")]
pub struct ConfigError {
    /// The dotted key (`session.idle_timeout_ms`), or the source that failed.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

fn problem(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// Loads the configuration from defaults, the file, the environment and `args`.
pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
    load_from(args, Env::prefixed("WSAUTH_").split("__"))
}

/// Like [`load`], with the environment provider given (tests use a fixed one).
pub fn load_from(args: &ServeArgs, env: Env) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = &args.config {
        if !file.exists() {
            return Err(problem(
                "--config",
                format!("{} does not exist", file.display()),
            ));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(env);
    let mut flags = serde_json::Map::new();
    let mut put = |path: &[&str], value: serde_json::Value| {
        let mut map = &mut flags;
        for part in &path[..path.len() - 1] {
            map = map
                .entry(part.to_string())
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
                .expect("flag sections are objects");
        }
        map.insert(path[path.len() - 1].to_owned(), value);
    };
    if let Some(v) = args.listen {
        put(&["listen"], v.to_string().into());
    }
    if let Some(v) = args.admin_listen {
        put(&["admin_listen"], v.to_string().into());
    }
    if let Some(v) = &args.admin_key {
        put(&["admin_key"], v.clone().into());
    }
    if let Some(v) = &args.path {
        put(&["path"], v.clone().into());
    }
    if let Some(v) = &args.store {
        put(&["store", "kind"], v.clone().into());
    }
    if let Some(v) = &args.store_url {
        put(&["store", "url"], v.clone().into());
    }
    if let Some(v) = &args.tls_cert {
        put(&["tls", "cert_file"], v.display().to_string().into());
    }
    if let Some(v) = &args.tls_key {
        put(&["tls", "key_file"], v.display().to_string().into());
    }
    if let Some(v) = &args.log_format {
        put(&["log", "format"], v.clone().into());
    }
    figment = figment.merge(Serialized::globals(serde_json::Value::Object(flags)));
    figment.extract::<Config>().map_err(|e| {
        let key = if e.path.is_empty() {
            "config".to_owned()
        } else {
            e.path.join(".")
        };
        // figment's message names the key and the expected type; never a value of ours.
        let problem = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => format!("unknown key `{field}`"),
            figment::error::Kind::InvalidType(actual, expected) => {
                format!("expected {expected}, found {actual}")
            }
            figment::error::Kind::InvalidValue(_, expected) => {
                format!("invalid value, expected {expected}")
            }
            figment::error::Kind::UnknownVariant(v, expected) => {
                format!(
                    "unknown value `{v}`, expected one of {}",
                    expected.join(", ")
                )
            }
            other => other.to_string(),
        };
        ConfigError { key, problem }
    })
}

const ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

impl Config {
    /// Checks every value; `dev` allows starting with no key (one is generated).
    pub fn validate(&self, dev: bool) -> Result<(), ConfigError> {
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(problem(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        if !self.path.starts_with('/') {
            return Err(problem("path", "must start with '/'"));
        }
        match &self.admin_key {
            Some(k) if k.len() < 16 => {
                return Err(problem("admin_key", "must be at least 16 characters"));
            }
            None if !dev => {
                return Err(problem("admin_key", "is required (the admin API needs it)"));
            }
            _ => {}
        }
        let j = &self.jwt;
        if j.hs256_secret.is_some() && j.hs256_secret_file.is_some() {
            return Err(problem(
                "jwt.hs256_secret",
                "give either jwt.hs256_secret or jwt.hs256_secret_file, not both",
            ));
        }
        if let Some(s) = &j.hs256_secret
            && s.len() < 32
        {
            return Err(problem("jwt.hs256_secret", "must be at least 32 bytes"));
        }
        for (key, path) in j
            .hs256_secret_file
            .iter()
            .map(|p| ("jwt.hs256_secret_file", p))
            .chain(
                j.public_key_files
                    .iter()
                    .map(|p| ("jwt.public_key_files", p)),
            )
            .chain(j.jwks_file.iter().map(|p| ("jwt.jwks_file", p)))
        {
            if !path.is_file() {
                return Err(problem(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        let no_keys = j.hs256_secret.is_none()
            && j.hs256_secret_file.is_none()
            && j.public_key_files.is_empty()
            && j.jwks_file.is_none();
        if no_keys && !dev {
            return Err(problem(
                "jwt",
                "no key configured: set jwt.hs256_secret, jwt.hs256_secret_file, jwt.public_key_files or jwt.jwks_file",
            ));
        }
        for alg in &j.algorithms {
            if alg.eq_ignore_ascii_case("none") {
                return Err(problem("jwt.algorithms", "`none` is never accepted"));
            }
            if !ALGORITHMS.contains(&alg.as_str()) {
                return Err(problem(
                    "jwt.algorithms",
                    format!("unknown algorithm `{alg}`; known: {}", ALGORITHMS.join(" ")),
                ));
            }
        }
        positive("jwt.max_token_bytes", j.max_token_bytes as u64)?;
        let s = &self.session;
        positive("session.auth_timeout_ms", s.auth_timeout_ms)?;
        positive("session.heartbeat_ms", s.heartbeat_ms)?;
        positive("session.idle_timeout_ms", s.idle_timeout_ms)?;
        if s.idle_timeout_ms <= s.heartbeat_ms {
            return Err(problem(
                "session.idle_timeout_ms",
                "must be greater than session.heartbeat_ms",
            ));
        }
        positive("session.max_token_lifetime_s", s.max_token_lifetime_s)?;
        positive("session.max_channels", s.max_channels as u64)?;
        if s.max_sessions_per_user == Some(0) {
            return Err(problem(
                "session.max_sessions_per_user",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        let l = &self.limits;
        positive("limits.max_message_bytes", l.max_message_bytes as u64)?;
        positive("limits.max_frame_bytes", l.max_frame_bytes as u64)?;
        if l.max_frame_bytes > l.max_message_bytes {
            return Err(problem(
                "limits.max_frame_bytes",
                "must not exceed limits.max_message_bytes",
            ));
        }
        positive("limits.handshake_timeout_ms", l.handshake_timeout_ms)?;
        positive(
            "limits.messages_per_second",
            u64::from(l.messages_per_second),
        )?;
        positive("limits.message_burst", u64::from(l.message_burst))?;
        positive(
            "limits.max_unauthenticated_per_ip",
            l.max_unauthenticated_per_ip as u64,
        )?;
        positive("limits.max_connections", l.max_connections as u64)?;
        positive("limits.outbound_queue", l.outbound_queue as u64)?;
        match (&self.tls.cert_file, &self.tls.key_file) {
            (None, None) => {}
            (Some(c), Some(k)) => {
                if !c.is_file() {
                    return Err(problem(
                        "tls.cert_file",
                        format!("{} is not a readable file", c.display()),
                    ));
                }
                if !k.is_file() {
                    return Err(problem(
                        "tls.key_file",
                        format!("{} is not a readable file", k.display()),
                    ));
                }
            }
            (Some(_), None) => {
                return Err(problem("tls.key_file", "is required with tls.cert_file"));
            }
            (None, Some(_)) => {
                return Err(problem("tls.cert_file", "is required with tls.key_file"));
            }
        }
        if self.store.kind == StoreKind::Redis && self.store.url.is_none() {
            return Err(problem(
                "store.url",
                "is required when store.kind = \"redis\"",
            ));
        }
        Ok(())
    }

    /// Every key as `(dotted key, environment variable)`, for the documentation test.
    pub fn keys() -> Vec<(String, String)> {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, v, out);
                    }
                }
                _ => out.push(prefix.to_owned()),
            }
        }
        let mut keys = Vec::new();
        if let Ok(v) = serde_json::to_value(Config::default()) {
            walk("", &v, &mut keys);
        }
        keys.into_iter()
            .map(|k| {
                let env = format!("WSAUTH_{}", k.replace('.', "__").to_uppercase());
                (k, env)
            })
            .collect()
    }
}
