//! The server's configuration: what it is, where it comes from, and what makes it
//! valid. `docs/configuration.md` is the operator's reference; a test keeps it in
//! step with [`FIELDS`].
//!
//! # Sources
//! In increasing precedence: built-in defaults ([`Config::default`]) < the TOML file
//! named by `--config FILE` < environment variables (`WSAUTH_<KEY>` for a top-level
//! key, `WSAUTH_<SECTION>__<KEY>` for a key of a section) < command-line flags
//! ([`ServeArgs`]). [`load`] merges them with `figment` and checks every rule that
//! does not depend on the mode; the caller then runs [`Config::validate`]`(dev)`,
//! which also requires an admin key and a JWT key outside development mode:
//!
//! ```no_run
//! # use wsauth_server::config::{self, ServeArgs};
//! # fn start(args: ServeArgs) -> Result<(), config::ConfigError> {
//! let mut config = config::load(&args)?;
//! if args.dev {
//!     // generate what is missing: config.admin_key, config.jwt.hs256_secret
//! }
//! config.validate(args.dev)?;
//! # Ok(()) }
//! ```
//!
//! Every error is a [`ConfigError`] naming the dotted key (`session.idle_timeout_ms`)
//! and, when known, the source that set it; none ever prints a secret's value.
//!
//! # Secrets
//! `admin_key`, `jwt.hs256_secret`, `app.rpc_secret` and the password part of
//! `store.url` and `app.rpc_url` are redacted by `Debug` and by `Serialize`
//! (written as `"<redacted>"`), so a config can be logged or shown on an admin
//! endpoint as it is.

mod fields;
mod sources;
mod validate;

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

pub use fields::{FIELDS, SECRET_KEYS, env_var};
pub use sources::{Origins, ServeArgs, load, load_toml_text, load_with_env, load_with_origins};
pub(crate) use validate::check_jwks_url;
pub use validate::{MIN_ADMIN_KEY_CHARS, MIN_HMAC_SECRET_BYTES};

/// The JWT algorithms the server can verify, as they are spelled in a token's
/// `alg` header and in `jwt.algorithms`.
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// How `Debug` and `Serialize` show a secret that is set.
pub const REDACTED: &str = "<redacted>";

/// The whole configuration of one server process.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the WebSocket listener ["127.0.0.1:8080"].
    pub listen: SocketAddr,
    /// Address of the admin HTTP listener (revocations, health) ["127.0.0.1:9091"].
    pub admin_listen: SocketAddr,
    /// Bearer key of the admin API; required unless in development mode, at least
    /// 16 characters when set.
    #[serde(serialize_with = "serialize_secret")]
    pub admin_key: Option<String>,
    /// Bearer key of the server API (`/api/publish`, `/api/send`), for the
    /// application's backend; at least 16 characters when set. The admin key is
    /// accepted there too.
    #[serde(serialize_with = "serialize_secret")]
    pub api_key: Option<String>,
    /// URL path of the WebSocket endpoint ["/ws"]; starts with '/'.
    pub path: String,
    /// Origins allowed to connect, exact `scheme://host[:port]`; empty allows every
    /// origin (the server warns at start).
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_origins: Vec<String>,
    /// Accept `?access_token=` on the upgrade request [false]: URLs end up in logs.
    pub allow_query_token: bool,
    /// This node's name in logs and in the store; see [`Config::effective_node_id`].
    pub node_id: Option<String>,
    /// Graceful shutdown budget in milliseconds \[10000\]; 0 closes at once.
    pub shutdown_drain_ms: u64,
    /// Token verification.
    pub jwt: JwtConfig,
    /// Session timers and per-session limits.
    pub session: SessionSettings,
    /// Transport limits.
    pub limits: Limits,
    /// TLS termination by the server; `None` (section absent) serves plain `ws://`.
    pub tls: Option<TlsConfig>,
    /// Where sessions, revocations and channel fan-out live.
    pub store: StoreConfig,
    /// Logging.
    pub log: LogConfig,
    /// Switches for rolling features out gradually.
    pub features: Features,
    /// Application calls (`rpc`, PROTOCOL §8).
    pub app: AppSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            admin_key: None,
            api_key: None,
            path: "/ws".to_owned(),
            allowed_origins: Vec::new(),
            allow_query_token: false,
            node_id: None,
            shutdown_drain_ms: 10_000,
            jwt: JwtConfig::default(),
            session: SessionSettings::default(),
            limits: Limits::default(),
            tls: None,
            store: StoreConfig::default(),
            log: LogConfig::default(),
            features: Features::default(),
            app: AppSettings::default(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("admin_key", &Redacted(&self.admin_key))
            .field("api_key", &Redacted(&self.api_key))
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
            .field("features", &self.features)
            .field("app", &self.app)
            .finish()
    }
}

impl Config {
    /// The node name to use: `node_id` when set, else `<hostname>-<pid>`, else (no
    /// host name to be found) `node-<random hex>-<pid>`.
    pub fn effective_node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let pid = std::process::id();
        match hostname() {
            Some(host) => format!("{host}-{pid}"),
            None => {
                use std::hash::{BuildHasher, RandomState};
                let random = RandomState::new().hash_one(pid);
                format!("node-{random:016x}-{pid}")
            }
        }
    }

    /// Things that are allowed but worth a warning line at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.allowed_origins.is_empty() {
            out.push("allowed_origins is empty: browsers from every origin may connect".to_owned());
        }
        if self.allow_query_token {
            out.push(
                "allow_query_token is on: tokens in URLs end up in proxy and access logs"
                    .to_owned(),
            );
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            out.push(format!(
                "listen {} is not a loopback address and tls is not configured: tokens travel \
                 in clear text unless a proxy terminates TLS",
                self.listen
            ));
        }
        out
    }
}

fn hostname() -> Option<String> {
    let from_file = |p: &str| std::fs::read_to_string(p).ok();
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Token verification: the keys, the algorithms and the claims to require.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// An HMAC secret, at least 32 bytes. Prefer `hs256_secret_file`.
    #[serde(serialize_with = "serialize_secret")]
    pub hs256_secret: Option<String>,
    /// A file holding the HMAC secret (its bytes, less one trailing line break);
    /// mutually exclusive with `hs256_secret`.
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM public keys (RSA, EC or Ed25519); each key's `kid` is its file stem.
    #[serde(deserialize_with = "string_or_list")]
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS document (`{"keys":[…]}`); each key's `kid` is its own.
    pub jwks_file: Option<PathBuf>,
    /// An identity provider's JWKS, fetched at start and refreshed in the
    /// background: `https://`, or `http://` on a loopback host only.
    pub jwks_url: Option<String>,
    /// An OpenID Connect issuer: its discovery document
    /// (`/.well-known/openid-configuration`) names the JWKS URL, which is then
    /// used as `jwks_url` is. Its `issuer` must equal this exactly; tokens'
    /// `iss` must too, unless `issuer` is set.
    pub oidc_issuer: Option<String>,
    /// More issuers, each with its own keys: a token goes to the one whose
    /// `issuer` equals its `iss`, before any `kid` is looked at.
    pub issuers: Vec<IssuerConfig>,
    /// An OAuth 2.0 introspection endpoint (RFC 7662) for opaque tokens:
    /// `https://`, or `http://` on a loopback host only.
    pub introspection_url: Option<String>,
    /// The client id wsauth authenticates to `introspection_url` with (HTTP Basic).
    pub introspection_client_id: Option<String>,
    /// Its client secret. Prefer `introspection_client_secret_file`.
    #[serde(serialize_with = "serialize_secret")]
    pub introspection_client_secret: Option<String>,
    /// A file holding the client secret; mutually exclusive with
    /// `introspection_client_secret`.
    pub introspection_client_secret_file: Option<PathBuf>,
    /// Active introspection answers kept, by token hash, until the token's
    /// `exp` \[10000\].
    pub introspection_cache_entries: usize,
    /// Longest wait on the introspection endpoint, in ms \[2000\].
    pub introspection_timeout_ms: u64,
    /// Start even when the first fetch of `jwks_url` fails (tokens signed with
    /// its keys are refused until a fetch succeeds) [false].
    pub jwks_start_without_keys: bool,
    /// Seconds between fetches of `jwks_url` when the response has no
    /// `Cache-Control: max-age` \[300\].
    pub jwks_refresh_s: u64,
    /// An unknown `kid` fetches `jwks_url` again at most once per this many
    /// seconds \[10\].
    pub jwks_min_refetch_s: u64,
    /// `/readyz` answers 503 once the last good fetch of `jwks_url` is older than
    /// this many seconds \[86400\].
    pub jwks_max_stale_s: u64,
    /// Algorithms accepted; empty accepts every supported one
    /// ([`SUPPORTED_ALGORITHMS`]). `none` is never accepted.
    #[serde(deserialize_with = "string_or_list")]
    pub algorithms: Vec<String>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Accepted audiences: when not empty, a token's `aud` must contain one of them.
    #[serde(deserialize_with = "string_or_list")]
    pub audience: Vec<String>,
    /// Clock leeway in seconds for `exp`, `nbf` and `iat` \[30\].
    pub leeway_s: u64,
    /// Largest token accepted, in bytes, checked before decoding \[8192\].
    pub max_token_bytes: usize,
    /// When set, a token's header `typ` is required and must equal it (any
    /// case, `application/` prefix allowed), e.g. `at+jwt` (RFC 9068).
    pub required_typ: Option<String>,
    /// Tokens signed with RSA, ECDSA or EdDSA kept verified, until their `exp`
    /// \[10000\]; 0 turns the cache off.
    pub verify_cache_entries: usize,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            hs256_secret_file: None,
            public_key_files: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            oidc_issuer: None,
            issuers: Vec::new(),
            introspection_url: None,
            introspection_client_id: None,
            introspection_client_secret: None,
            introspection_client_secret_file: None,
            introspection_cache_entries: 10_000,
            introspection_timeout_ms: 2_000,
            jwks_start_without_keys: false,
            jwks_refresh_s: 300,
            jwks_min_refetch_s: 10,
            jwks_max_stale_s: 86_400,
            algorithms: Vec::new(),
            issuer: None,
            audience: Vec::new(),
            leeway_s: 30,
            max_token_bytes: 8192,
            required_typ: None,
            verify_cache_entries: 10_000,
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("hs256_secret", &Redacted(&self.hs256_secret))
            .field("hs256_secret_file", &self.hs256_secret_file)
            .field("public_key_files", &self.public_key_files)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url)
            .field("oidc_issuer", &self.oidc_issuer)
            .field("issuers", &self.issuers)
            .field("introspection_url", &self.introspection_url)
            .field("introspection_client_id", &self.introspection_client_id)
            .field(
                "introspection_client_secret",
                &Redacted(&self.introspection_client_secret),
            )
            .field(
                "introspection_client_secret_file",
                &self.introspection_client_secret_file,
            )
            .field(
                "introspection_cache_entries",
                &self.introspection_cache_entries,
            )
            .field("introspection_timeout_ms", &self.introspection_timeout_ms)
            .field("jwks_start_without_keys", &self.jwks_start_without_keys)
            .field("jwks_refresh_s", &self.jwks_refresh_s)
            .field("jwks_min_refetch_s", &self.jwks_min_refetch_s)
            .field("jwks_max_stale_s", &self.jwks_max_stale_s)
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("required_typ", &self.required_typ)
            .field("verify_cache_entries", &self.verify_cache_entries)
            .finish()
    }
}

impl JwtConfig {
    /// Whether any verification key is configured.
    pub fn has_key(&self) -> bool {
        self.hs256_secret.is_some()
            || self.hs256_secret_file.is_some()
            || !self.public_key_files.is_empty()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
            || self.oidc_issuer.is_some()
    }

    /// Whether tokens can be checked at all: a key of this section, an entry of
    /// `issuers`, or an introspection endpoint.
    pub fn has_verification(&self) -> bool {
        self.has_key() || !self.issuers.is_empty() || self.introspection_url.is_some()
    }

    /// The introspection client secret, from `introspection_client_secret` or
    /// read from `introspection_client_secret_file`; `None` when neither is set.
    pub fn introspection_secret(&self) -> Result<Option<String>, ConfigError> {
        const KEY: &str = "jwt.introspection_client_secret_file";
        match (
            &self.introspection_client_secret,
            &self.introspection_client_secret_file,
        ) {
            (Some(secret), _) => Ok(Some(secret.clone())),
            (None, Some(path)) => String::from_utf8(read_secret_file(KEY, path)?)
                .map(Some)
                .map_err(|_| ConfigError::new(KEY, "is not UTF-8")),
            (None, None) => Ok(None),
        }
    }

    /// The HMAC secret's bytes, from `hs256_secret` or read from
    /// `hs256_secret_file` (less one trailing `\n` or `\r\n`); `None` when neither
    /// is set. Errors name the key and never contain the secret.
    pub fn hs256_secret_bytes(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        match (&self.hs256_secret, &self.hs256_secret_file) {
            (Some(secret), _) => Ok(Some(secret.as_bytes().to_vec())),
            (None, Some(path)) => read_secret_file("jwt.hs256_secret_file", path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The `kid` that a key read from `public_key_files` gets: its file stem
    /// (`keys/2026-01.pem` → `2026-01`).
    pub fn kid_of(path: &Path) -> Option<&str> {
        path.file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
    }
}

/// One issuer of `[[jwt.issuers]]`: the `iss` it answers for, the claims and
/// algorithms it requires, and its own keys (at least one source).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` this entry answers for, compared byte for byte; defaults to
    /// `oidc_issuer`.
    pub issuer: Option<String>,
    /// Accepted audiences (see `jwt.audience`).
    #[serde(deserialize_with = "string_or_list")]
    pub audience: Vec<String>,
    /// Accepted algorithms (see `jwt.algorithms`).
    #[serde(deserialize_with = "string_or_list")]
    pub algorithms: Vec<String>,
    /// PEM public keys; each key's `kid` is its file stem.
    #[serde(deserialize_with = "string_or_list")]
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS document.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched as `jwt.jwks_url` is.
    pub jwks_url: Option<String>,
    /// An OpenID Connect issuer whose discovery document names the JWKS URL.
    pub oidc_issuer: Option<String>,
}

impl IssuerConfig {
    /// The `iss` this entry answers for.
    pub fn effective_issuer(&self) -> Option<&str> {
        self.issuer.as_deref().or(self.oidc_issuer.as_deref())
    }
}

/// A secret file's bytes less one trailing `\n` or `\r\n`; an error names `key`.
fn read_secret_file(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new(key, format!("cannot be read ({}): {e}", path.display())))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(bytes)
}

/// Session timers and per-session limits (PROTOCOL §3–§4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Time from the upgrade to a completed `auth` or `resume` \[5000\].
    pub auth_timeout_ms: u64,
    /// Interval of the server's pings \[25000\].
    pub heartbeat_ms: u64,
    /// Silence after which a connection is closed \[60000\]; must exceed
    /// `heartbeat_ms`.
    pub idle_timeout_ms: u64,
    /// Longest lead of the `expiring` notice \[60000\].
    pub refresh_notice_ms: u64,
    /// How long a dropped session stays resumable \[30000\]; 0 disables resume.
    pub resume_grace_ms: u64,
    /// Messages kept per session for replay on resume \[256\].
    pub resume_buffer: usize,
    /// Bytes of messages kept per session for replay \[1048576\]; 0: no byte bound.
    pub resume_buffer_bytes: usize,
    /// With the in-memory store, bytes in all replay buffers past which new
    /// sessions are refused with `INTERNAL` \[1073741824\]; 0: no bound.
    pub replay_budget_bytes: usize,
    /// Sessions per `sub` \[32\]; 0 is an error. Unlimited only with
    /// `features.session_limits = false`.
    pub max_sessions_per_user: Option<usize>,
    /// What a new session over `max_sessions_per_user` does \[evict_oldest\].
    pub limit_policy: LimitPolicy,
    /// How long a `sub` revocation refuses the user's older tokens, in seconds
    /// \[86400\]: the longest lifetime of a token the issuer hands out.
    pub max_token_lifetime_s: u64,
    /// Channels one session may join at once \[256\].
    pub max_channels: usize,
    /// Requests a client may pipeline while one is being answered \[64\].
    pub max_queued_requests: usize,
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
            resume_buffer_bytes: 1024 * 1024,
            replay_budget_bytes: 1024 * 1024 * 1024,
            max_sessions_per_user: Some(32),
            limit_policy: LimitPolicy::EvictOldest,
            max_token_lifetime_s: 86_400,
            max_channels: 256,
            max_queued_requests: 64,
        }
    }
}

/// Application calls (`rpc`, PROTOCOL §8), and the HTTP backend the standalone
/// server forwards them to ([`crate::proxy`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSettings {
    /// Calls one session may have in flight \[16\]; one more is answered `BUSY`.
    pub max_rpc_in_flight: usize,
    /// Time a call may take before it is answered `UNAVAILABLE` \[5000\]; also the
    /// proxy's timeout for one backend request.
    pub rpc_timeout_ms: u64,
    /// The application's HTTP endpoint (`http://` or `https://`) that each call is
    /// `POST`ed to; `None`: no proxy. Userinfo in it is redacted in `Debug`.
    #[serde(serialize_with = "serialize_url")]
    pub rpc_url: Option<String>,
    /// The key that signs each backend request (HMAC-SHA256), at least 32 bytes.
    /// Prefer `rpc_secret_file`.
    #[serde(serialize_with = "serialize_secret")]
    pub rpc_secret: Option<String>,
    /// A file holding the signing key (its bytes, less one trailing line break);
    /// mutually exclusive with `rpc_secret`.
    pub rpc_secret_file: Option<PathBuf>,
    /// Methods forwarded: each an exact method or a prefix ending in `*` (a lone
    /// `*` is every method); empty forwards every method. Others are
    /// `METHOD_NOT_FOUND` without a backend request.
    #[serde(deserialize_with = "string_or_list")]
    pub rpc_methods: Vec<String>,
    /// Backend requests one node makes at once \[256\]; a call past it waits for a
    /// slot (within `rpc_timeout_ms`).
    pub max_backend_calls: usize,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            max_rpc_in_flight: 16,
            rpc_timeout_ms: 5_000,
            rpc_url: None,
            rpc_secret: None,
            rpc_secret_file: None,
            rpc_methods: Vec::new(),
            max_backend_calls: 256,
        }
    }
}

impl fmt::Debug for AppSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSettings")
            .field("max_rpc_in_flight", &self.max_rpc_in_flight)
            .field("rpc_timeout_ms", &self.rpc_timeout_ms)
            .field("rpc_url", &self.rpc_url.as_deref().map(redact_url))
            .field("rpc_secret", &Redacted(&self.rpc_secret))
            .field("rpc_secret_file", &self.rpc_secret_file)
            .field("rpc_methods", &self.rpc_methods)
            .field("max_backend_calls", &self.max_backend_calls)
            .finish()
    }
}

impl AppSettings {
    /// The signing key's bytes, from `rpc_secret` or read from `rpc_secret_file`
    /// (less one trailing `\n` or `\r\n`); `None` when neither is set. Errors name
    /// the key and never contain the secret.
    pub fn rpc_secret_bytes(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        match (&self.rpc_secret, &self.rpc_secret_file) {
            (Some(secret), _) => Ok(Some(secret.as_bytes().to_vec())),
            (None, Some(path)) => read_secret_file("app.rpc_secret_file", path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Whether `rpc_methods` lets `method` through: the list is empty, or an item
    /// equals it, or an item `prefix*` has `method` start with `prefix`.
    pub fn allows_method(&self, method: &str) -> bool {
        method_allowed(&self.rpc_methods, method)
    }
}

/// [`AppSettings::allows_method`] for a list of patterns.
pub(crate) fn method_allowed(patterns: &[String], method: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => method.starts_with(prefix),
                None => pattern == method,
            })
}

/// What happens when a user would exceed `session.max_sessions_per_user`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitPolicy {
    /// Close the user's oldest session with `SESSION_REPLACED`.
    #[default]
    EvictOldest,
    /// Refuse the new session with `TOO_MANY_SESSIONS`.
    RejectNew,
}

/// Transport limits (PROTOCOL §1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message, in bytes, after reassembling frames \[65536\].
    pub max_message_bytes: usize,
    /// Largest single frame, in bytes \[65536\]; at most `max_message_bytes`.
    pub max_frame_bytes: usize,
    /// Time for the whole upgrade (TLS included) to complete \[5000\].
    pub handshake_timeout_ms: u64,
    /// Sustained data frames per second per connection \[100\].
    pub messages_per_second: u32,
    /// Burst of data frames per connection \[200\].
    pub message_burst: u32,
    /// Sustained frames of any kind (pings and continuation frames included)
    /// per second per connection \[1000\].
    pub frames_per_second: u32,
    /// Burst of frames of any kind per connection \[2000\].
    pub frame_burst: u32,
    /// Connections per client network (an IPv4 address, an IPv6 /64) not yet
    /// authenticated, counted from TCP accept, before TLS \[1024\].
    pub max_unauthenticated_per_ip: usize,
    /// Connections not yet authenticated on the node, from every client \[10000\].
    pub max_unauthenticated: usize,
    /// Deepest nesting of arrays and objects in a message's `data` \[64\].
    pub max_json_depth: usize,
    /// Open sockets in total \[100000\].
    pub max_connections: usize,
    /// Messages queued per connection before `SLOW_CONSUMER` \[256\].
    pub outbound_queue: usize,
    /// Bytes queued per connection before `SLOW_CONSUMER` \[1048576\].
    pub outbound_queue_bytes: usize,
    /// Connections the kernel queues for `accept` \[4096\] (capped by
    /// `net.core.somaxconn`). Past it, a new connection's SYN is dropped and its
    /// client waits a second to retry.
    pub listen_backlog: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65_536,
            max_frame_bytes: 65_536,
            handshake_timeout_ms: 5_000,
            messages_per_second: 100,
            message_burst: 200,
            frames_per_second: 1_000,
            frame_burst: 2_000,
            max_unauthenticated_per_ip: 1024,
            max_unauthenticated: 10_000,
            max_json_depth: 64,
            max_connections: 100_000,
            outbound_queue: 256,
            outbound_queue_bytes: 1024 * 1024,
            listen_backlog: 4096,
        }
    }
}

/// TLS termination by the server itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: PathBuf,
}

/// Where sessions, revocations and channel fan-out live.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The store's kind \[memory\].
    pub kind: StoreKind,
    /// Connection URL; required for `redis` (`redis://`, `rediss://`,
    /// `redis+unix://` or `unix://`). Its password is redacted in `Debug`.
    #[serde(serialize_with = "serialize_url")]
    pub url: Option<String>,
    /// Prefix of every key the server writes ["wsauth:"].
    pub key_prefix: String,
    /// Longest wait on one store call, in ms \[1000\]. A call that takes longer
    /// fails closed (`INTERNAL`): with the store down, an auth or a resume is
    /// answered within about this long.
    pub call_timeout_ms: u64,
    /// Longest time a node may go without reading its notice stream (Redis), in
    /// ms \[10000\]. Past it the node closes its connections 1011 (resumable) and
    /// reports not ready until it reads the stream again.
    pub max_notice_lag_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Memory,
            url: None,
            key_prefix: "wsauth:".to_owned(),
            call_timeout_ms: 1_000,
            max_notice_lag_ms: 10_000,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("key_prefix", &self.key_prefix)
            .field("call_timeout_ms", &self.call_timeout_ms)
            .field("max_notice_lag_ms", &self.max_notice_lag_ms)
            .finish()
    }
}

/// The kind of store.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In-process: one node, nothing survives a restart.
    #[default]
    Memory,
    /// Redis: several nodes share sessions, revocations and channels.
    Redis,
}

/// Logging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Line format \[text\].
    pub format: LogFormat,
    /// Filter in `tracing` `EnvFilter` syntax ["info"], e.g. `info,wsauth=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Switches that turn features off for a gradual rollout; each is on by default
/// and reported by `GET /api/stats`. (Query-token auth has its own switch,
/// `allow_query_token`, off by default.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Features {
    /// Enforce `session.max_sessions_per_user` [true].
    pub session_limits: bool,
    /// Keep dropped sessions resumable for `session.resume_grace_ms` [true].
    pub resume: bool,
    /// Serve `GET /dashboard` on the admin listener [true].
    pub dashboard: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            session_limits: true,
            resume: true,
            dashboard: true,
        }
    }
}

/// The log line format.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration problem: the dotted key (`session.idle_timeout_ms`), what is
/// wrong with it and, when known, the source that set it. Never contains a
/// secret's value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key} {message}{}", origin.as_ref().map(|o| format!(" (set by {o})")).unwrap_or_default())]
pub struct ConfigError {
    key: String,
    message: String,
    origin: Option<String>,
}

impl ConfigError {
    /// A problem with `key`; `message` completes the sentence that starts with the
    /// key ("must be at least 32 bytes") and must not contain a secret.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
            origin: None,
        }
    }

    /// The same problem, noting the source that set the key.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// The dotted key, e.g. `jwt.hs256_secret`; `--config` for the file itself.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The source that set the key, e.g. `environment variable WSAUTH_LISTEN`.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

/// Shows whether a secret is set, never its value.
struct Redacted<'a>(&'a Option<String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => write!(f, "Some({REDACTED:?})"),
            None => f.write_str("None"),
        }
    }
}

fn serialize_secret<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

fn serialize_url<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(url) => s.serialize_some(&redact_url(url)),
        None => s.serialize_none(),
    }
}

/// `redis://user:pass@host:6379/0` → `redis://<redacted>@host:6379/0`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    // The last '@' anywhere: an unencoded '/' or '@' in a password must not make
    // the password show. Over-redacting a path with '@' in it costs nothing.
    match rest.rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

/// A list given as a list, or as one string of comma-separated items (which is
/// how environment variables carry lists): `"https://a.example, https://b.example"`.
/// Items are trimmed and empty items dropped; an enclosing `[…]` and quotes around
/// items are accepted too.
fn string_or_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    struct ListVisitor<T>(PhantomData<T>);

    impl<'de, T: From<String>> Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings or a comma-separated string")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<T>, E> {
            Ok(split_list(s).map(T::from).collect())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                out.push(T::from(item));
            }
            Ok(out)
        }
    }

    deserializer.deserialize_any(ListVisitor(PhantomData))
}

pub(crate) fn split_list(s: &str) -> impl Iterator<Item = String> + '_ {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| item.strip_prefix(*q).and_then(|i| i.strip_suffix(*q)));
            unquoted.unwrap_or(item).to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_at_commas() {
        let items: Vec<String> = split_list(" a , b,,c ").collect();
        assert_eq!(items, ["a", "b", "c"]);
        let items: Vec<String> = split_list(r#"["a", 'b']"#).collect();
        assert_eq!(items, ["a", "b"]);
        assert_eq!(split_list("").count(), 0);
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:pw@h:6379/0"),
            "redis://<redacted>@h:6379/0"
        );
        assert_eq!(redact_url("redis://u:p@ss@h"), "redis://<redacted>@h");
        assert_eq!(redact_url("redis://:p/w@h"), "redis://<redacted>@h");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("no scheme"), "no scheme");
    }
}
