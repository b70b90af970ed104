//! The sources of a [`Config`] and their merge: defaults < TOML file < environment
//! < flags.
//!
//! The file and the environment are read here into `figment` dictionaries rather
//! than through figment's own `Toml` and `Env` providers, for two reasons:
//! - figment's `Env` parses every value (`123` becomes a number, `true` a bool,
//!   `[a,b]` an array), so an admin key made of digits would fail to load with an
//!   error that prints it. Here every variable is kept as a string and converted to
//!   the field's type at extraction (`extract_lossy`), and a list may be written as
//!   comma-separated items.
//! - a TOML syntax error as the `toml` crate displays it quotes the offending line,
//!   which may hold a secret. Here it is reported as a line, a column and a message.

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::fields::{SECRET_KEYS, env_var, is_top_level_key, sections};
use super::{Config, ConfigError, LogFormat, StoreKind};

/// The command-line flags of `wsauth-server serve`. Each flag, when given, wins
/// over the environment, the file and the defaults.
#[derive(Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (its keys are listed in docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the WebSocket listener (setting `listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin HTTP listener (setting `admin_listen`).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer key of the admin API (setting `admin_key`). Visible to other local users in
    /// the process list: prefer WSAUTH_ADMIN_KEY or the file.
    #[arg(long, value_name = "KEY")]
    pub admin_key: Option<String>,
    /// URL path of the WebSocket endpoint (setting `path`).
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Store kind [store.kind].
    #[arg(long, value_enum, value_name = "KIND")]
    pub store: Option<StoreKind>,
    /// Store URL, e.g. redis://127.0.0.1:6379/0 [store.url].
    #[arg(long, value_name = "URL")]
    pub store_url: Option<String>,
    /// PEM certificate chain; enables TLS together with --tls-key [tls.cert_file].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key [tls.key_file].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Log line format [log.format].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Development mode: an admin key and a JWT signing secret are generated when
    /// none is configured. Never in production.
    #[arg(long)]
    pub dev: bool,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("admin_key", &super::Redacted(&self.admin_key))
            .field("path", &self.path)
            .field("store", &self.store)
            .field(
                "store_url",
                &self.store_url.as_deref().map(super::redact_url),
            )
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("log_format", &self.log_format)
            .field("dev", &self.dev)
            .finish()
    }
}

/// Which flag sets which key, for [`ConfigError::origin`] and the docs.
pub(crate) const FLAGS: &[(&str, &str)] = &[
    ("listen", "--listen"),
    ("admin_listen", "--admin-listen"),
    ("admin_key", "--admin-key"),
    ("path", "--path"),
    ("store.kind", "--store"),
    ("store.url", "--store-url"),
    ("tls.cert_file", "--tls-cert"),
    ("tls.key_file", "--tls-key"),
    ("log.format", "--log-format"),
];

/// Loads the configuration from every source (the process environment included)
/// and checks every rule that does not depend on the mode, naming the source of a
/// bad value.
///
/// Two rules are left to the caller's [`Config::validate`]`(dev)`, because only the
/// caller knows whether it runs in development mode and fills in what is missing:
/// an `admin_key` and a JWT key are required outside development mode. So a start
/// is: `load`, then (in development mode) generate the missing keys, then
/// `validate(dev)`.
pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
    load_with_env(args, std::env::vars_os())
}

/// [`load`] with the environment given as name/value pairs instead of read from
/// the process, so that tests and embedders need not touch global state.
pub fn load_with_env<I, K, V>(args: &ServeArgs, vars: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    load_with_origins(args, vars).map(|(config, _)| config)
}

/// Where each key's value came from: the source that set it last.
pub struct Origins(Vec<Layer>);

impl Origins {
    /// The file, environment variable or flag that set `key` (or a key under
    /// it); `None`: the default.
    pub fn of(&self, key: &str) -> Option<String> {
        self.0.iter().rev().find_map(|layer| layer.origin_of(key))
    }
}

/// [`load_with_env`], and where each value came from.
pub fn load_with_origins<I, K, V>(
    args: &ServeArgs,
    vars: I,
) -> Result<(Config, Origins), ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut layers = Vec::new();
    if let Some(path) = &args.config {
        layers.push(file_layer(path)?);
    }
    layers.push(env_layer(vars)?);
    layers.push(flag_layer(args));

    let figment = layers.iter().fold(Figment::new(), |figment, layer| {
        figment.merge(layer.clone())
    });
    let origin_of = |key: &str| {
        // The last layer that has the key is the one whose value won.
        layers.iter().rev().find_map(|layer| layer.origin_of(key))
    };
    let attach = |error: ConfigError| match origin_of(error.key()) {
        Some(origin) => error.with_origin(origin),
        None => error,
    };

    let config: Config = figment.extract_lossy().map_err(|e| {
        let error = from_figment(&e);
        // A missing key was set nowhere: name the source of its section instead.
        let mut key = error.key();
        loop {
            if let Some(origin) = origin_of(key) {
                return error.with_origin(origin);
            }
            match key.rsplit_once('.') {
                Some((parent, _)) => key = parent,
                None => return error,
            }
        }
    })?;
    // Development mode lifts exactly the two rules left to the caller.
    config.validate(true).map_err(attach)?;
    Ok((config, Origins(layers)))
}

/// One source: a dictionary, and for each dotted key it sets, a description of
/// where it came from.
#[derive(Clone)]
struct Layer {
    name: &'static str,
    dict: Dict,
    origins: Vec<(String, String)>,
}

impl Layer {
    fn new(name: &'static str) -> Self {
        Layer {
            name,
            dict: Dict::new(),
            origins: Vec::new(),
        }
    }

    fn set(&mut self, key: &str, value: Value, origin: String) {
        let path: Vec<&str> = key.split('.').collect();
        insert(&mut self.dict, &path, value);
        self.origins.push((key.to_owned(), origin));
    }

    /// Where `key` (or a key under it) was set in this layer.
    fn origin_of(&self, key: &str) -> Option<String> {
        self.origins
            .iter()
            .rev()
            .find(|(k, _)| {
                k == key
                    || k.strip_prefix(key)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|(_, origin)| origin.clone())
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert((*first).to_owned(), value);
        return;
    }
    let entry = dict
        .entry((*first).to_owned())
        .or_insert_with(|| Value::Dict(Tag::Default, Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::Dict(Tag::Default, Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "--config",
            format!("file {} cannot be read: {e}", path.display()),
        )
    })?;
    text_layer(&text, path)
}

/// Loads a configuration from TOML text alone (no environment, no flags) and checks
/// it as a production start would: what the `config_loader` fuzz target drives.
pub fn load_toml_text(text: &str) -> Result<Config, ConfigError> {
    let layer = text_layer(text, Path::new("<text>"))?;
    let config: Config = Figment::new()
        .merge(layer)
        .extract()
        .map_err(|e| from_figment(&e))?;
    config.validate(false)?;
    Ok(config)
}

fn text_layer(text: &str, path: &Path) -> Result<Layer, ConfigError> {
    let text = text.to_owned();
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}: ")
        });
        // `message()` only: the error's `Display` quotes the line, which may hold a
        // secret.
        ConfigError::new(
            "--config",
            format!(
                "file {} is not valid TOML: {}{}",
                path.display(),
                at.unwrap_or_default(),
                e.message().trim_end()
            ),
        )
    })?;

    let origin = format!("config file {}", path.display());
    let mut layer = Layer::new("config file");
    let mut leaves = Vec::new();
    toml_leaves(&table, "", &mut leaves);
    for key in leaves {
        layer.origins.push((key, origin.clone()));
    }
    layer.dict = table.into_iter().map(|(k, v)| (k, from_toml(v))).collect();
    Ok(layer)
}

fn toml_leaves(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => {
                out.push(dotted.clone());
                toml_leaves(inner, &dotted, out);
            }
            _ => out.push(dotted),
        }
    }
}

fn from_toml(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::from(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::from(b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(items) => {
            Value::Array(Tag::Default, items.into_iter().map(from_toml).collect())
        }
        toml::Value::Table(table) => Value::Dict(
            Tag::Default,
            table.into_iter().map(|(k, v)| (k, from_toml(v))).collect(),
        ),
    }
}

/// `WSAUTH_<KEY>` and `WSAUTH_<SECTION>__<KEY>`, every value a string.
///
/// A variable whose name starts with `WSAUTH_` but names neither a key nor a
/// section is left alone (other tools may share the prefix), except a section
/// written with a single underscore (`WSAUTH_JWT_ISSUER`), which is an error
/// pointing at the right name.
fn env_layer<I, K, V>(vars: I) -> Result<Layer, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut layer = Layer::new("environment");
    for (name, value) in vars {
        // A name that is not UTF-8 cannot be one of ours.
        let Some(name) = name.as_ref().to_str() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("WSAUTH_") else {
            continue;
        };
        let key = rest.to_ascii_lowercase().replace("__", ".");
        let origin = format!("environment variable {name}");
        let first = key.split('.').next().unwrap_or_default();

        if sections().any(|s| s == first) {
            if !key.contains('.') {
                return Err(ConfigError::new(
                    key.clone(),
                    format!("is a section: set its keys as {}__<KEY>", env_var(&key)),
                )
                .with_origin(origin));
            }
        } else if !is_top_level_key(first) {
            if let Some(section) = sections().find(|s| first.starts_with(&format!("{s}_"))) {
                let meant = format!("{section}.{}", &first[section.len() + 1..]);
                return Err(ConfigError::new(
                    meant.clone(),
                    format!(
                        "is not read: a section's keys take two underscores, as in {}",
                        env_var(&meant)
                    ),
                )
                .with_origin(origin));
            }
            continue;
        }

        let Some(value) = value.as_ref().to_str() else {
            return Err(ConfigError::new(key, "is not valid UTF-8").with_origin(origin));
        };
        if key == "jwt.issuers" {
            // A list of tables: written as a TOML array of inline tables.
            let parsed = toml::from_str::<toml::Table>(&format!("issuers = {value}"))
                .ok()
                .and_then(|mut t| t.remove("issuers"));
            let Some(list) = parsed else {
                return Err(ConfigError::new(
                    key,
                    "must be a TOML array of inline tables, as in \
                     [{ issuer = \"https://id.example/\", jwks_url = \"https://…\" }]",
                )
                .with_origin(origin));
            };
            layer.set(&key, from_toml(list), origin);
            continue;
        }
        layer.set(&key, Value::from(value.to_owned()), origin);
    }
    Ok(layer)
}

fn flag_layer(args: &ServeArgs) -> Layer {
    let mut layer = Layer::new("command-line flags");
    let mut set = |key: &str, value: String| {
        let flag = FLAGS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(key, |(_, flag)| flag);
        layer.set(key, Value::from(value), format!("flag {flag}"));
    };
    if let Some(addr) = args.listen {
        set("listen", addr.to_string());
    }
    if let Some(addr) = args.admin_listen {
        set("admin_listen", addr.to_string());
    }
    if let Some(key) = &args.admin_key {
        set("admin_key", key.clone());
    }
    if let Some(path) = &args.path {
        set("path", path.clone());
    }
    if let Some(kind) = args.store {
        let name = match kind {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
        };
        set("store.kind", name.to_owned());
    }
    if let Some(url) = &args.store_url {
        set("store.url", url.clone());
    }
    if let Some(path) = &args.tls_cert {
        set("tls.cert_file", path.to_string_lossy().into_owned());
    }
    if let Some(path) = &args.tls_key {
        set("tls.key_file", path.to_string_lossy().into_owned());
    }
    if let Some(format) = args.log_format {
        let name = match format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        set("log.format", name.to_owned());
    }
    layer
}

/// A figment extraction error as a [`ConfigError`] naming the dotted key, with the
/// offending value left out when the key is a secret.
fn from_figment(error: &figment::Error) -> ConfigError {
    // List indices (`jwt.audience.0`) are not keys.
    let mut path: Vec<String> = error
        .path
        .iter()
        .filter(|s| !s.bytes().all(|b| b.is_ascii_digit()))
        .cloned()
        .collect();
    let message = match &error.kind {
        Kind::UnknownField(field, expected) => {
            // figment puts the unknown key at the end of the path already.
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!(
                "is not a known key (expected one of: {})",
                expected.join(", ")
            )
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field) {
                path.push(field.to_string());
            }
            match path.first() {
                Some(section) if path.len() > 1 => {
                    format!("is required when the [{section}] section is present")
                }
                _ => "is required".to_owned(),
            }
        }
        Kind::UnknownVariant(found, expected) => {
            format!("must be one of: {} (found `{found}`)", expected.join(", "))
        }
        kind if SECRET_KEYS.contains(&path.join(".").as_str()) => match kind {
            Kind::InvalidType(_, expected) => format!("has the wrong type: expected {expected}"),
            Kind::InvalidValue(_, expected) => format!("is invalid: expected {expected}"),
            _ => "is invalid".to_owned(),
        },
        kind => format!("is invalid: {kind}"),
    };
    let key = if path.is_empty() {
        "config".to_owned()
    } else {
        path.join(".")
    };
    ConfigError::new(key, message)
}
