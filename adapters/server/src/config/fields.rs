//! Every configuration key, its environment variable and its default, as the
//! operator's reference (`docs/configuration.md`) shows them.

/// Every key: (dotted key, environment variable, default as the docs show it).
/// A default of `unset` means the key has no value unless given one.
///
/// Tests check this list against the fields of [`super::Config`] (by serializing
/// it), against [`super::Config::default`], against [`env_var`] and against
/// `docs/configuration.md`.
#[rustfmt::skip]
pub const FIELDS: &[(&str, &str, &str)] = &[
    ("listen", "WSAUTH_LISTEN", "127.0.0.1:8080"),
    ("admin_listen", "WSAUTH_ADMIN_LISTEN", "127.0.0.1:9091"),
    ("admin_key", "WSAUTH_ADMIN_KEY", "unset"),
    ("api_key", "WSAUTH_API_KEY", "unset"),
    ("path", "WSAUTH_PATH", "/ws"),
    ("allowed_origins", "WSAUTH_ALLOWED_ORIGINS", "[]"),
    ("allow_query_token", "WSAUTH_ALLOW_QUERY_TOKEN", "false"),
    ("node_id", "WSAUTH_NODE_ID", "unset"),
    ("shutdown_drain_ms", "WSAUTH_SHUTDOWN_DRAIN_MS", "10000"),
    ("jwt.hs256_secret", "WSAUTH_JWT__HS256_SECRET", "unset"),
    ("jwt.hs256_secret_file", "WSAUTH_JWT__HS256_SECRET_FILE", "unset"),
    ("jwt.public_key_files", "WSAUTH_JWT__PUBLIC_KEY_FILES", "[]"),
    ("jwt.jwks_file", "WSAUTH_JWT__JWKS_FILE", "unset"),
    ("jwt.jwks_url", "WSAUTH_JWT__JWKS_URL", "unset"),
    ("jwt.oidc_issuer", "WSAUTH_JWT__OIDC_ISSUER", "unset"),
    ("jwt.issuers", "WSAUTH_JWT__ISSUERS", "[]"),
    ("jwt.introspection_url", "WSAUTH_JWT__INTROSPECTION_URL", "unset"),
    ("jwt.introspection_client_id", "WSAUTH_JWT__INTROSPECTION_CLIENT_ID", "unset"),
    ("jwt.introspection_client_secret", "WSAUTH_JWT__INTROSPECTION_CLIENT_SECRET", "unset"),
    ("jwt.introspection_client_secret_file", "WSAUTH_JWT__INTROSPECTION_CLIENT_SECRET_FILE", "unset"),
    ("jwt.introspection_cache_entries", "WSAUTH_JWT__INTROSPECTION_CACHE_ENTRIES", "10000"),
    ("jwt.introspection_timeout_ms", "WSAUTH_JWT__INTROSPECTION_TIMEOUT_MS", "2000"),
    ("jwt.jwks_start_without_keys", "WSAUTH_JWT__JWKS_START_WITHOUT_KEYS", "false"),
    ("jwt.jwks_refresh_s", "WSAUTH_JWT__JWKS_REFRESH_S", "300"),
    ("jwt.jwks_min_refetch_s", "WSAUTH_JWT__JWKS_MIN_REFETCH_S", "10"),
    ("jwt.jwks_max_stale_s", "WSAUTH_JWT__JWKS_MAX_STALE_S", "86400"),
    ("jwt.algorithms", "WSAUTH_JWT__ALGORITHMS", "[]"),
    ("jwt.issuer", "WSAUTH_JWT__ISSUER", "unset"),
    ("jwt.audience", "WSAUTH_JWT__AUDIENCE", "[]"),
    ("jwt.leeway_s", "WSAUTH_JWT__LEEWAY_S", "30"),
    ("jwt.max_token_bytes", "WSAUTH_JWT__MAX_TOKEN_BYTES", "8192"),
    ("jwt.required_typ", "WSAUTH_JWT__REQUIRED_TYP", "unset"),
    ("jwt.verify_cache_entries", "WSAUTH_JWT__VERIFY_CACHE_ENTRIES", "10000"),
    ("session.auth_timeout_ms", "WSAUTH_SESSION__AUTH_TIMEOUT_MS", "5000"),
    ("session.heartbeat_ms", "WSAUTH_SESSION__HEARTBEAT_MS", "25000"),
    ("session.idle_timeout_ms", "WSAUTH_SESSION__IDLE_TIMEOUT_MS", "60000"),
    ("session.refresh_notice_ms", "WSAUTH_SESSION__REFRESH_NOTICE_MS", "60000"),
    ("session.resume_grace_ms", "WSAUTH_SESSION__RESUME_GRACE_MS", "30000"),
    ("session.resume_buffer", "WSAUTH_SESSION__RESUME_BUFFER", "256"),
    ("session.resume_buffer_bytes", "WSAUTH_SESSION__RESUME_BUFFER_BYTES", "1048576"),
    ("session.replay_budget_bytes", "WSAUTH_SESSION__REPLAY_BUDGET_BYTES", "1073741824"),
    ("session.max_sessions_per_user", "WSAUTH_SESSION__MAX_SESSIONS_PER_USER", "32"),
    ("session.limit_policy", "WSAUTH_SESSION__LIMIT_POLICY", "evict_oldest"),
    ("session.max_token_lifetime_s", "WSAUTH_SESSION__MAX_TOKEN_LIFETIME_S", "86400"),
    ("session.max_channels", "WSAUTH_SESSION__MAX_CHANNELS", "256"),
    ("session.max_queued_requests", "WSAUTH_SESSION__MAX_QUEUED_REQUESTS", "64"),
    ("limits.max_message_bytes", "WSAUTH_LIMITS__MAX_MESSAGE_BYTES", "65536"),
    ("limits.max_frame_bytes", "WSAUTH_LIMITS__MAX_FRAME_BYTES", "65536"),
    ("limits.handshake_timeout_ms", "WSAUTH_LIMITS__HANDSHAKE_TIMEOUT_MS", "5000"),
    ("limits.messages_per_second", "WSAUTH_LIMITS__MESSAGES_PER_SECOND", "100"),
    ("limits.message_burst", "WSAUTH_LIMITS__MESSAGE_BURST", "200"),
    ("limits.frames_per_second", "WSAUTH_LIMITS__FRAMES_PER_SECOND", "1000"),
    ("limits.frame_burst", "WSAUTH_LIMITS__FRAME_BURST", "2000"),
    ("limits.max_unauthenticated_per_ip", "WSAUTH_LIMITS__MAX_UNAUTHENTICATED_PER_IP", "1024"),
    ("limits.max_unauthenticated", "WSAUTH_LIMITS__MAX_UNAUTHENTICATED", "10000"),
    ("limits.max_json_depth", "WSAUTH_LIMITS__MAX_JSON_DEPTH", "64"),
    ("limits.max_connections", "WSAUTH_LIMITS__MAX_CONNECTIONS", "100000"),
    ("limits.outbound_queue", "WSAUTH_LIMITS__OUTBOUND_QUEUE", "256"),
    ("limits.outbound_queue_bytes", "WSAUTH_LIMITS__OUTBOUND_QUEUE_BYTES", "1048576"),
    ("limits.listen_backlog", "WSAUTH_LIMITS__LISTEN_BACKLOG", "4096"),
    ("tls.cert_file", "WSAUTH_TLS__CERT_FILE", "unset"),
    ("tls.key_file", "WSAUTH_TLS__KEY_FILE", "unset"),
    ("store.kind", "WSAUTH_STORE__KIND", "memory"),
    ("store.url", "WSAUTH_STORE__URL", "unset"),
    ("store.key_prefix", "WSAUTH_STORE__KEY_PREFIX", "wsauth:"),
    ("store.call_timeout_ms", "WSAUTH_STORE__CALL_TIMEOUT_MS", "1000"),
    ("store.max_notice_lag_ms", "WSAUTH_STORE__MAX_NOTICE_LAG_MS", "10000"),
    ("log.format", "WSAUTH_LOG__FORMAT", "text"),
    ("log.level", "WSAUTH_LOG__LEVEL", "info"),
    ("features.session_limits", "WSAUTH_FEATURES__SESSION_LIMITS", "true"),
    ("features.resume", "WSAUTH_FEATURES__RESUME", "true"),
    ("features.dashboard", "WSAUTH_FEATURES__DASHBOARD", "true"),
    ("app.max_rpc_in_flight", "WSAUTH_APP__MAX_RPC_IN_FLIGHT", "16"),
    ("app.rpc_timeout_ms", "WSAUTH_APP__RPC_TIMEOUT_MS", "5000"),
    ("app.rpc_url", "WSAUTH_APP__RPC_URL", "unset"),
    ("app.rpc_secret", "WSAUTH_APP__RPC_SECRET", "unset"),
    ("app.rpc_secret_file", "WSAUTH_APP__RPC_SECRET_FILE", "unset"),
    ("app.rpc_methods", "WSAUTH_APP__RPC_METHODS", "[]"),
    ("app.max_backend_calls", "WSAUTH_APP__MAX_BACKEND_CALLS", "256"),
];

/// Keys whose values are never printed: not by `Debug`, not by `Serialize`, not in
/// any [`super::ConfigError`]. (`store.url` and `app.rpc_url` are shown with their
/// password redacted.)
pub const SECRET_KEYS: &[&str] = &[
    "admin_key",
    "api_key",
    "jwt.hs256_secret",
    "jwt.introspection_client_secret",
    "store.url",
    "app.rpc_url",
    "app.rpc_secret",
];

/// The environment variable of a dotted key: `WSAUTH_` and the key in capitals,
/// with `__` between a section and its key (`jwt.issuer` → `WSAUTH_JWT__ISSUER`).
pub fn env_var(key: &str) -> String {
    format!("WSAUTH_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// The top-level keys that are sections (`jwt`, `session`, …).
pub(crate) fn sections() -> impl Iterator<Item = &'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    FIELDS.iter().filter_map(move |(key, _, _)| {
        let (section, _) = key.split_once('.')?;
        if seen.contains(&section) {
            None
        } else {
            seen.push(section);
            Some(section)
        }
    })
}

/// Whether `key` is a top-level key that is not a section.
pub(crate) fn is_top_level_key(key: &str) -> bool {
    FIELDS.iter().any(|(k, _, _)| *k == key && !k.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_rule() {
        for (key, env, _) in FIELDS {
            assert_eq!(env_var(key), *env, "{key}");
        }
    }

    #[test]
    fn sections_are_listed_once() {
        let all: Vec<_> = sections().collect();
        assert_eq!(
            all,
            [
                "jwt", "session", "limits", "tls", "store", "log", "features", "app"
            ]
        );
    }
}
