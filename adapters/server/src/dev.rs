//! Development mode: when no key is configured and the server listens on loopback,
//! it generates an HS256 secret and an admin key, and prints how to connect.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use wsauth_core::jwt::sign_hs256;

use crate::config::Config;

/// Secrets generated for one development run.
pub struct DevSecrets {
    /// The HS256 secret (printed: this is a development key).
    pub hs256_secret: String,
    /// The admin key, when none was configured.
    pub admin_key: Option<String>,
}

/// Whether the configuration names no way to verify tokens at all (no key,
/// JWKS URL, discovery, issuer entry or introspection endpoint).
pub fn has_no_keys(config: &Config) -> bool {
    !config.jwt.has_verification()
}

fn random_text(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Generates the development secrets and puts them into `config`.
pub fn prepare(config: &mut Config) -> DevSecrets {
    let hs256_secret = random_text(32);
    config.jwt.hs256_secret = Some(hs256_secret.clone());
    let admin_key = if config.admin_key.is_none() {
        let key = random_text(24);
        config.admin_key = Some(key.clone());
        Some(key)
    } else {
        None
    };
    DevSecrets {
        hs256_secret,
        admin_key,
    }
}

/// Mints a token with the HS256 secret.
pub fn mint(secret: &str, sub: &str, ttl_s: u64, channels: &[String], now_s: u64) -> String {
    let mut claims = serde_json::json!({
        "sub": sub,
        "iat": now_s,
        "exp": now_s + ttl_s,
        "jti": random_text(12),
    });
    if !channels.is_empty() {
        claims["channels"] = serde_json::json!(channels);
    }
    sign_hs256(secret.as_bytes(), &claims)
}

/// The banner printed at a development start.
pub fn banner(
    config: &Config,
    ws_port: u16,
    admin_port: u16,
    secrets: &DevSecrets,
    now_s: u64,
) -> String {
    let token = mint(
        &secrets.hs256_secret,
        "alice",
        3600,
        &["general".into(), "team:*".into()],
        now_s,
    );
    let host = config.listen.ip();
    let url = format!("ws://{host}:{ws_port}{}", config.path);
    let mut out = String::new();
    out.push_str("\n  ==============================================================\n");
    out.push_str("   wsauth-server is running in DEVELOPMENT MODE\n");
    out.push_str("   A random HS256 secret was generated for this run only.\n");
    out.push_str("   Never use development mode in production: configure a key.\n");
    out.push_str("  ==============================================================\n\n");
    out.push_str(&format!("  WebSocket   {url}\n"));
    let admin = format!("http://{}:{admin_port}", config.admin_listen.ip());
    out.push_str(&format!("  Admin       {admin}/healthz\n"));
    if config.features.dashboard
        && let Some(key) = config.admin_key.as_deref()
    {
        // The key rides in the fragment, which the browser never sends or logs.
        out.push_str(&format!("  Dashboard   {admin}/dashboard#key={key}\n"));
    }
    out.push_str(&format!("  Metrics     {admin}/metrics\n\n"));
    out.push_str(&format!(
        "  export WSAUTH_JWT__HS256_SECRET={}\n",
        secrets.hs256_secret
    ));
    if let Some(key) = &secrets.admin_key {
        out.push_str(&format!("  export WSAUTH_ADMIN_KEY={key}\n"));
    }
    out.push_str("  (with these set, `wsauth-server token --sub bob` mints more tokens)\n\n");
    out.push_str("  Sample token for alice, valid 1 h, channels general and team:*:\n");
    out.push_str(&format!("  {token}\n\n"));
    out.push_str("  Connect (Python: pip install websockets):\n");
    out.push_str(&format!(
        "  python3 -m websockets {url}\n  then send: {{\"type\":\"auth\",\"id\":1,\"token\":\"{token}\"}}\n\n"
    ));
    out
}
