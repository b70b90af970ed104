//! `wsauth-server check-config`: the configuration loaded and checked exactly as
//! a start would (files, keys, TLS, the store URL's syntax), with no network and
//! no listener, then printed with every secret redacted and where each value came
//! from.

use std::ffi::OsStr;

use serde_json::Value;

use crate::config::{self, Config, ConfigError, FIELDS, ServeArgs, StoreKind};
use crate::dev;
use crate::server::StartError;

/// Why a configuration would not start, and the exit code a start gives it.
#[derive(Debug)]
pub enum Refusal {
    /// Refused while loading or validating (exit code 2).
    Config(ConfigError),
    /// Development mode off loopback (exit code 2).
    DevelopmentOffLoopback,
    /// Refused while reading keys, certificates or the store URL (exit code 1).
    Start(StartError),
}

impl Refusal {
    /// The exit code of a start refused for the same reason.
    pub fn exit_code(&self) -> u8 {
        match self {
            Refusal::Config(_) | Refusal::DevelopmentOffLoopback => 2,
            Refusal::Start(_) => 1,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Config(e) => e.fmt(f),
            Refusal::DevelopmentOffLoopback => f.write_str(DEV_OFF_LOOPBACK),
            Refusal::Start(e) => e.fmt(f),
        }
    }
}

/// The message of a start in development mode on an address other than loopback.
pub const DEV_OFF_LOOPBACK: &str = "no JWT key is configured (jwt.hs256_secret, jwt.hs256_secret_file, jwt.public_key_files or jwt.jwks_file); development mode only runs on a loopback address";

/// Whether a start with `config` runs in development mode (generated keys), or
/// the refusal when it would do so off loopback.
pub fn development_mode(args: &ServeArgs, config: &Config) -> Result<bool, Refusal> {
    let no_keys = dev::has_no_keys(config);
    if no_keys && !config.listen.ip().is_loopback() {
        return Err(Refusal::DevelopmentOffLoopback);
    }
    Ok(args.dev || no_keys)
}

/// Loads and checks the configuration from `args` and `vars` as a start would;
/// the report to print, or why a start would be refused.
pub fn check_config<I, K, V>(args: &ServeArgs, vars: I) -> Result<String, Refusal>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let (config, origins) = config::load_with_origins(args, vars).map_err(Refusal::Config)?;
    let dev_mode = development_mode(args, &config)?;
    // A development start fills in the keys it lacks before this check.
    let generated = dev_mode && dev::has_no_keys(&config);
    config.validate(generated).map_err(Refusal::Config)?;

    let mut out = String::new();
    out.push_str(if generated {
        "The configuration is valid. A start runs in DEVELOPMENT MODE: no JWT key is configured, so it generates an HS256 secret and an admin key for the run.\n"
    } else {
        "The configuration is valid.\n"
    });
    out.push_str("\nChecked as a start checks them, without the network:\n");
    for line in crate::verify::check_offline(&config).map_err(Refusal::Start)? {
        out.push_str(&format!("  {line}\n"));
    }
    if let Some(tls) = &config.tls {
        crate::tls::acceptor(&tls.cert_file, &tls.key_file).map_err(Refusal::Start)?;
        out.push_str("  tls: the certificate and the key are read and fit\n");
    }
    match (&config.store.kind, &config.store.url) {
        (StoreKind::Redis, Some(url)) => {
            wsauth_store_redis::check_url(url).map_err(|e| {
                Refusal::Start(StartError::Store(format!(
                    "cannot use Redis at store.url: {e}"
                )))
            })?;
            out.push_str("  store: redis, store.url is well formed (not connected)\n");
        }
        _ => out.push_str("  store: in memory\n"),
    }

    out.push_str(
        "\nEffective settings (dotted keys, values in JSON, secrets redacted; each line says where its value came from):\n",
    );
    let values = serde_json::to_value(&config).unwrap_or(Value::Null);
    let lines: Vec<(String, String)> = FIELDS
        .iter()
        .map(|(key, _, _)| {
            let value = key
                .split('.')
                .try_fold(&values, |v, part| v.get(part))
                .filter(|v| !v.is_null());
            let setting = match value {
                Some(value) => format!("{key} = {value}"),
                None => format!("# {key} is unset"),
            };
            let from = origins.of(key).unwrap_or_else(|| "default".to_owned());
            (setting, from)
        })
        .collect();
    let width = lines
        .iter()
        .map(|(s, _)| s.len())
        .max()
        .unwrap_or(0)
        .min(60);
    for (setting, from) in lines {
        out.push_str(&format!("{setting:<width$}  # {from}\n"));
    }
    Ok(out)
}
