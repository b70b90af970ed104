//! Reloading the key and certificate files without a restart (SIGHUP,
//! `POST /admin/reload`): the JWT key files ([`TokenVerifier::reload`]) and the TLS
//! certificate and key ([`TlsSlot`]), each all-or-nothing and independent of the
//! other. A refused file leaves the old keys or certificate in force. The
//! configuration file itself is not re-read.

use std::sync::Arc;

use tracing::{info, warn};

use crate::config::TlsConfig;
use crate::metrics::Metrics;
use crate::tls::TlsSlot;
use crate::verify::{KeySource, TokenVerifier};

/// What reloads the files: cheap to clone, for a signal handler or the admin
/// API.
#[derive(Clone)]
pub struct Reloader {
    keys: KeySource,
    tls: TlsSlot,
    tls_files: Option<TlsConfig>,
    metrics: Arc<Metrics>,
}

/// What one reload did, part by part: `Ok(true)` reloaded, `Ok(false)` nothing
/// to reload (no key file configured; no TLS served), `Err` refused (the old
/// files stay in force), naming the file and why.
#[derive(Debug)]
pub struct Reloaded {
    /// The JWT key files.
    pub keys: Result<bool, String>,
    /// The TLS certificate and key.
    pub tls: Result<bool, String>,
}

impl Reloaded {
    /// Whether no part was refused.
    pub fn ok(&self) -> bool {
        self.keys.is_ok() && self.tls.is_ok()
    }
}

impl Reloader {
    /// A reloader of `keys`' files and, when `tls` holds an acceptor, of the
    /// certificate and key in `tls_files`.
    pub fn new(
        keys: KeySource,
        tls: TlsSlot,
        tls_files: Option<TlsConfig>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Reloader {
            keys,
            tls,
            tls_files,
            metrics,
        }
    }

    /// Re-reads the files (blocking: file reads), logs one line per refused part
    /// and one for the outcome, and counts it in `wsauth_config_reloads_total`.
    /// `trigger` says what asked (`SIGHUP`, `admin`), for the log.
    pub fn reload(&self, trigger: &'static str) -> Reloaded {
        let keys = self.keys.reload();
        let tls = self.reload_tls();
        if let Err(cause) = &keys {
            warn!(trigger, %cause, "reload: the key files were refused; the old keys stay in force");
        }
        if let Err(cause) = &tls {
            warn!(trigger, %cause, "reload: the TLS certificate was refused; the old one stays in force");
        }
        let reloaded = Reloaded { keys, tls };
        let outcome = if reloaded.ok() { "ok" } else { "failed" };
        self.metrics.config_reloaded(outcome);
        info!(
            trigger,
            outcome,
            keys = matches!(reloaded.keys, Ok(true)),
            tls = matches!(reloaded.tls, Ok(true)),
            "reload"
        );
        reloaded
    }

    fn reload_tls(&self) -> Result<bool, String> {
        let Some(files) = &self.tls_files else {
            return Ok(false);
        };
        if self.tls.get().is_none() {
            return Ok(false);
        }
        let acceptor =
            crate::tls::acceptor(&files.cert_file, &files.key_file).map_err(|e| e.to_string())?;
        self.tls.set(acceptor);
        Ok(true)
    }
}
