//! The rules a [`Config`] must satisfy before the server starts.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Config, ConfigError, JwtConfig, SUPPORTED_ALGORITHMS, StoreKind};

/// The shortest HMAC secret accepted, in bytes (PROTOCOL §2).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// The shortest admin key accepted, in characters.
pub const MIN_ADMIN_KEY_CHARS: usize = 16;

impl Config {
    /// Checks every rule and returns the first problem, naming its key. With `dev`
    /// (development mode) a missing `admin_key` and a missing JWT key are allowed,
    /// because the server generates them; every other rule still applies.
    ///
    /// Reads the files the configuration names (`hs256_secret_file`, to check its
    /// length) and checks that the others exist.
    pub fn validate(&self, dev: bool) -> Result<(), ConfigError> {
        match self.validation_errors(dev).into_iter().next() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Every problem, in a fixed order (the order of the keys in [`super::FIELDS`]),
    /// so that an operator can fix them all in one go.
    pub fn validation_errors(&self, dev: bool) -> Vec<ConfigError> {
        let mut v = Errors::default();
        self.check_top_level(dev, &mut v);
        self.check_jwt(dev, &mut v);
        self.check_session(&mut v);
        self.check_limits(&mut v);
        self.check_tls(&mut v);
        self.check_store(&mut v);
        if self.log.level.trim().is_empty() {
            v.push("log.level", "must not be empty (e.g. \"info\")");
        }
        self.check_app(&mut v);
        v.0
    }

    fn check_app(&self, v: &mut Errors) {
        let app = &self.app;
        v.positive("app.max_rpc_in_flight", app.max_rpc_in_flight as u64);
        v.positive("app.rpc_timeout_ms", app.rpc_timeout_ms);
        if let Some(url) = &app.rpc_url
            && let Err(problem) = check_rpc_url(url)
        {
            // The URL itself is not shown: it may hold a password.
            v.push("app.rpc_url", problem);
        }
        match (&app.rpc_secret, &app.rpc_secret_file) {
            (Some(_), Some(_)) => v.push(
                "app.rpc_secret_file",
                "cannot be set together with app.rpc_secret: set one of them",
            ),
            (None, None) if app.rpc_url.is_some() => v.push(
                "app.rpc_secret",
                "is required when app.rpc_url is set (or app.rpc_secret_file): it signs every \
                 backend request",
            ),
            (Some(_), None) if app.rpc_url.is_none() => v.push(
                "app.rpc_secret",
                "is set but app.rpc_url is not: there is no backend to sign requests for",
            ),
            (None, Some(_)) if app.rpc_url.is_none() => v.push(
                "app.rpc_secret_file",
                "is set but app.rpc_url is not: there is no backend to sign requests for",
            ),
            (Some(secret), None) if secret.len() < MIN_HMAC_SECRET_BYTES => v.push(
                "app.rpc_secret",
                format!("must be at least {MIN_HMAC_SECRET_BYTES} bytes"),
            ),
            (None, Some(path)) => match app.rpc_secret_bytes() {
                Err(e) => v.0.push(e),
                Ok(Some(bytes)) if bytes.len() < MIN_HMAC_SECRET_BYTES => v.push(
                    "app.rpc_secret_file",
                    format!(
                        "must hold at least {MIN_HMAC_SECRET_BYTES} bytes ({})",
                        path.display()
                    ),
                ),
                Ok(_) => {}
            },
            _ => {}
        }
        for pattern in &app.rpc_methods {
            if !is_method_pattern(pattern) {
                v.push(
                    "app.rpc_methods",
                    format!(
                        "has `{}`, which is neither a method (1 to {MAX_METHOD_CHARS} characters \
                         of A-Z a-z 0-9 . _ : / -) nor such a prefix followed by `*`, nor `*`",
                        pattern.escape_debug()
                    ),
                );
            }
        }
        v.positive("app.max_backend_calls", app.max_backend_calls as u64);
    }

    fn check_top_level(&self, dev: bool, v: &mut Errors) {
        if self.admin_listen == self.listen && self.listen.port() != 0 {
            v.push(
                "admin_listen",
                format!("must differ from listen ({})", self.listen),
            );
        }
        match &self.admin_key {
            None if !dev => v.push(
                "admin_key",
                "is required (set WSAUTH_ADMIN_KEY or admin_key in the file; \
                 --dev generates one for development)",
            ),
            Some(key) if key.chars().count() < MIN_ADMIN_KEY_CHARS => v.push(
                "admin_key",
                format!("must be at least {MIN_ADMIN_KEY_CHARS} characters"),
            ),
            _ => {}
        }
        if let Some(key) = &self.api_key
            && key.chars().count() < MIN_ADMIN_KEY_CHARS
        {
            v.push(
                "api_key",
                format!("must be at least {MIN_ADMIN_KEY_CHARS} characters"),
            );
        }
        if !self.path.starts_with('/') {
            v.push("path", "must start with '/'");
        } else if self
            .path
            .contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
        {
            v.push("path", "must be a plain URL path (no spaces, '?' or '#')");
        }
        for origin in &self.allowed_origins {
            if let Err(problem) = check_origin(origin) {
                v.push("allowed_origins", format!("has `{origin}`, {problem}"));
            }
        }
        if let Some(id) = &self.node_id {
            let ok = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                v.push("node_id", "must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
            }
        }
    }

    fn check_jwt(&self, dev: bool, v: &mut Errors) {
        let jwt = &self.jwt;
        match (&jwt.hs256_secret, &jwt.hs256_secret_file) {
            (Some(_), Some(_)) => v.push(
                "jwt.hs256_secret_file",
                "cannot be set together with jwt.hs256_secret: set one of them",
            ),
            (Some(secret), None) if secret.len() < MIN_HMAC_SECRET_BYTES => v.push(
                "jwt.hs256_secret",
                format!("must be at least {MIN_HMAC_SECRET_BYTES} bytes"),
            ),
            (None, Some(path)) => match jwt.hs256_secret_bytes() {
                Err(e) => v.0.push(e),
                Ok(Some(bytes)) if bytes.len() < MIN_HMAC_SECRET_BYTES => v.push(
                    "jwt.hs256_secret_file",
                    format!(
                        "must hold at least {MIN_HMAC_SECRET_BYTES} bytes ({})",
                        path.display()
                    ),
                ),
                Ok(_) => {}
            },
            _ => {}
        }

        let mut kids: BTreeMap<&str, &Path> = BTreeMap::new();
        for path in &jwt.public_key_files {
            if let Err(problem) = check_file(path) {
                v.push("jwt.public_key_files", problem);
                continue;
            }
            match JwtConfig::kid_of(path) {
                None => v.push(
                    "jwt.public_key_files",
                    format!(
                        "has {}, whose file stem (its kid) is not UTF-8",
                        path.display()
                    ),
                ),
                Some(kid) => {
                    if let Some(other) = kids.insert(kid, path) {
                        v.push(
                            "jwt.public_key_files",
                            format!(
                                "has {} and {} with the same file stem `{kid}`: the stem is the \
                                 key's kid and must be unique",
                                other.display(),
                                path.display()
                            ),
                        );
                    }
                }
            }
        }
        if let Some(path) = &jwt.jwks_file
            && let Err(problem) = check_file(path)
        {
            v.push("jwt.jwks_file", problem);
        }
        for (key, url) in [
            ("jwt.jwks_url", &jwt.jwks_url),
            ("jwt.oidc_issuer", &jwt.oidc_issuer),
            ("jwt.introspection_url", &jwt.introspection_url),
        ] {
            if let Some(url) = url
                && let Err(problem) = check_jwks_url(url)
            {
                v.push(key, problem);
            }
        }
        if jwt.jwks_url.is_some() && jwt.oidc_issuer.is_some() {
            v.push(
                "jwt.oidc_issuer",
                "cannot be set together with jwt.jwks_url: discovery finds the JWKS URL",
            );
        }
        self.check_issuers(v);
        self.check_introspection(v);
        for (key, value) in [
            ("jwt.jwks_refresh_s", jwt.jwks_refresh_s),
            ("jwt.jwks_min_refetch_s", jwt.jwks_min_refetch_s),
            ("jwt.jwks_max_stale_s", jwt.jwks_max_stale_s),
        ] {
            if value == 0 {
                v.push(key, "must be greater than 0");
            }
        }
        if !jwt.has_verification() && !dev {
            v.push(
                "jwt",
                "has no verification key: set jwt.hs256_secret, jwt.hs256_secret_file, \
                 jwt.public_key_files, jwt.jwks_file, jwt.jwks_url, jwt.oidc_issuer, \
                 [[jwt.issuers]] or jwt.introspection_url (--dev generates a secret for \
                 development)",
            );
        }

        for alg in &jwt.algorithms {
            if alg.eq_ignore_ascii_case("none") {
                v.push(
                    "jwt.algorithms",
                    "must not contain `none`: unsigned tokens are never accepted",
                );
            } else if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                v.push(
                    "jwt.algorithms",
                    format!(
                        "has unknown algorithm `{alg}` (supported: {})",
                        SUPPORTED_ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        if jwt.issuer.as_deref().is_some_and(|i| i.trim().is_empty()) {
            v.push("jwt.issuer", "must not be empty when set");
        }
        if jwt.audience.iter().any(|a| a.trim().is_empty()) {
            v.push("jwt.audience", "must not contain an empty audience");
        }
        if jwt
            .required_typ
            .as_deref()
            .is_some_and(|t| t.trim().is_empty() || t.contains(char::is_whitespace))
        {
            v.push(
                "jwt.required_typ",
                "must be a media type such as at+jwt when set",
            );
        }
        if jwt.max_token_bytes == 0 {
            v.push("jwt.max_token_bytes", "must be greater than 0");
        } else if jwt.max_token_bytes > self.limits.max_message_bytes {
            v.push(
                "jwt.max_token_bytes",
                format!(
                    "must not exceed limits.max_message_bytes ({}): a token travels in a message",
                    self.limits.max_message_bytes
                ),
            );
        }
    }

    fn check_session(&self, v: &mut Errors) {
        let s = &self.session;
        v.positive("session.auth_timeout_ms", s.auth_timeout_ms);
        v.positive("session.heartbeat_ms", s.heartbeat_ms);
        if s.idle_timeout_ms <= s.heartbeat_ms {
            v.push(
                "session.idle_timeout_ms",
                format!(
                    "must be greater than session.heartbeat_ms ({}): a client answering every \
                     ping must never be idle",
                    s.heartbeat_ms
                ),
            );
        }
        v.positive("session.refresh_notice_ms", s.refresh_notice_ms);
        v.positive("session.resume_buffer", s.resume_buffer as u64);
        if s.max_sessions_per_user == Some(0) {
            v.push(
                "session.max_sessions_per_user",
                "must be greater than 0 (leave it unset for no limit)",
            );
        }
        v.positive("session.max_token_lifetime_s", s.max_token_lifetime_s);
        v.positive("session.max_channels", s.max_channels as u64);
        v.positive("session.max_queued_requests", s.max_queued_requests as u64);
    }

    fn check_limits(&self, v: &mut Errors) {
        let l = &self.limits;
        v.positive("limits.max_message_bytes", l.max_message_bytes as u64);
        v.positive("limits.max_frame_bytes", l.max_frame_bytes as u64);
        if l.max_frame_bytes > l.max_message_bytes {
            v.push(
                "limits.max_frame_bytes",
                format!(
                    "must not exceed limits.max_message_bytes ({})",
                    l.max_message_bytes
                ),
            );
        }
        v.positive("limits.handshake_timeout_ms", l.handshake_timeout_ms);
        v.positive(
            "limits.messages_per_second",
            u64::from(l.messages_per_second),
        );
        v.positive("limits.message_burst", u64::from(l.message_burst));
        v.positive("limits.frames_per_second", u64::from(l.frames_per_second));
        v.positive("limits.frame_burst", u64::from(l.frame_burst));
        v.positive(
            "limits.max_unauthenticated_per_ip",
            l.max_unauthenticated_per_ip as u64,
        );
        v.positive("limits.max_unauthenticated", l.max_unauthenticated as u64);
        v.positive("limits.max_json_depth", l.max_json_depth as u64);
        v.positive("limits.max_connections", l.max_connections as u64);
        v.positive("limits.outbound_queue", l.outbound_queue as u64);
        if l.outbound_queue_bytes < 65_536 {
            v.push("limits.outbound_queue_bytes", "must be at least 65536");
        }
        v.positive("limits.listen_backlog", u64::from(l.listen_backlog));
    }

    fn check_tls(&self, v: &mut Errors) {
        if let Some(tls) = &self.tls {
            if let Err(problem) = check_file(&tls.cert_file) {
                v.push("tls.cert_file", problem);
            }
            if let Err(problem) = check_file(&tls.key_file) {
                v.push("tls.key_file", problem);
            }
        }
    }

    fn check_store(&self, v: &mut Errors) {
        v.positive("store.call_timeout_ms", self.store.call_timeout_ms);
        v.positive("store.max_notice_lag_ms", self.store.max_notice_lag_ms);
        match (&self.store.kind, &self.store.url) {
            (StoreKind::Redis, None) => v.push("store.url", "is required when store.kind is redis"),
            (StoreKind::Redis, Some(url)) => {
                const SCHEMES: &[&str] = &["redis://", "rediss://", "redis+unix://", "unix://"];
                if !SCHEMES.iter().any(|s| url.starts_with(s)) {
                    // The URL itself is not shown: it may hold a password.
                    v.push(
                        "store.url",
                        format!("must start with one of {}", SCHEMES.join(", ")),
                    );
                }
            }
            (StoreKind::Memory, _) => {}
        }
    }
}

#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ConfigError::new(key, message));
    }

    fn positive(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.push(key, "must be greater than 0");
        }
    }
}

/// `https://`, or `http://` on a loopback host (a JWKS fetched in the clear
/// from elsewhere could be swapped on the way); no user or password in it.
impl Config {
    /// `[[jwt.issuers]]`: each names its issuer once, has a key source, and
    /// its files and URLs are usable.
    fn check_issuers(&self, v: &mut Errors) {
        const KEY: &str = "jwt.issuers";
        let mut seen: Vec<&str> = self.jwt.issuer.as_deref().into_iter().collect();
        for (i, entry) in self.jwt.issuers.iter().enumerate() {
            let at = format!("entry {} ", i + 1);
            match entry.effective_issuer() {
                None => v.push(KEY, format!("{at}has no issuer: set issuer or oidc_issuer")),
                Some(issuer) if issuer.trim().is_empty() => {
                    v.push(KEY, format!("{at}has an empty issuer"));
                }
                Some(issuer) if seen.contains(&issuer) => v.push(
                    KEY,
                    format!(
                        "{at}repeats the issuer {issuer:?} (of jwt.issuer or another entry): \
                         each issuer has one set of keys"
                    ),
                ),
                Some(issuer) => seen.push(issuer),
            }
            if entry.public_key_files.is_empty()
                && entry.jwks_file.is_none()
                && entry.jwks_url.is_none()
                && entry.oidc_issuer.is_none()
            {
                v.push(
                    KEY,
                    format!(
                        "{at}has no key source: set public_key_files, jwks_file, jwks_url or \
                         oidc_issuer"
                    ),
                );
            }
            if entry.jwks_url.is_some() && entry.oidc_issuer.is_some() {
                v.push(
                    KEY,
                    format!("{at}sets both jwks_url and oidc_issuer: set one"),
                );
            }
            for url in [&entry.jwks_url, &entry.oidc_issuer].into_iter().flatten() {
                if let Err(problem) = check_jwks_url(url) {
                    v.push(KEY, format!("{at}URL {problem}"));
                }
            }
            for path in entry.public_key_files.iter().chain(&entry.jwks_file) {
                if let Err(problem) = check_file(path) {
                    v.push(KEY, format!("{at}{problem}"));
                }
            }
            for alg in &entry.algorithms {
                if alg.eq_ignore_ascii_case("none") || !SUPPORTED_ALGORITHMS.contains(&alg.as_str())
                {
                    v.push(
                        KEY,
                        format!("{at}has an algorithm wsauth cannot accept: {alg}"),
                    );
                }
            }
        }
    }

    /// The introspection endpoint's client credentials.
    fn check_introspection(&self, v: &mut Errors) {
        let jwt = &self.jwt;
        if jwt.introspection_client_secret.is_some()
            && jwt.introspection_client_secret_file.is_some()
        {
            v.push(
                "jwt.introspection_client_secret_file",
                "cannot be set together with jwt.introspection_client_secret: set one of them",
            );
        }
        if let Err(e) = jwt.introspection_secret() {
            v.0.push(e);
        }
        if jwt.introspection_url.is_some() && jwt.introspection_client_id.is_none() {
            v.push(
                "jwt.introspection_client_id",
                "is required with jwt.introspection_url",
            );
        }
        if jwt.introspection_timeout_ms == 0 {
            v.push("jwt.introspection_timeout_ms", "must be greater than 0");
        }
    }
}

pub(crate) fn check_jwks_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "is not a URL".to_owned())?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry a user or password".to_owned());
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err("must have a host".to_owned());
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(
            "must be https:// (http:// only on a loopback host such as 127.0.0.1): keys \
             fetched in the clear could be replaced on the way"
                .to_owned(),
        ),
        _ => Err("must be an https:// URL".to_owned()),
    }
}

fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("names {}, which is not a file", path.display())),
        Err(e) => Err(format!(
            "names {}, which cannot be read: {e}",
            path.display()
        )),
    }
}

/// The longest method name of an `rpc` call (PROTOCOL §8).
const MAX_METHOD_CHARS: usize = wsauth_core::protocol::MAX_METHOD_BYTES;

/// An `http://` or `https://` URL with a host. The problem never quotes the URL.
fn check_rpc_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("is not a URL ({e}): expected http://host[:port]/path"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".to_owned());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host (http://host[:port]/path)".to_owned());
    }
    if url.trim() != url {
        return Err("must not start or end with white space".to_owned());
    }
    Ok(())
}

/// An exact method, a method prefix followed by `*`, or a lone `*`.
fn is_method_pattern(pattern: &str) -> bool {
    crate::app::MethodPattern::parse(pattern).is_ok()
}

/// `scheme://host[:port]`, as a browser sends it in `Origin`.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Err("but every origin is allowed by leaving the list empty");
    }
    let Some((scheme, host)) = origin.split_once("://") else {
        return Err("which is not an origin (scheme://host[:port])");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    if !scheme_ok || host.is_empty() {
        return Err("which is not an origin (scheme://host[:port])");
    }
    if host.contains(['/', '?', '#']) || host.contains(char::is_whitespace) {
        return Err("but an origin has no path: a browser sends scheme://host[:port] only");
    }
    Ok(())
}
