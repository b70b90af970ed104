//! `wss://` served directly with rustls, from PEM files. The acceptor sits in a
//! [`TlsSlot`] that a reload swaps: each new connection takes the acceptor in
//! the slot when it is accepted, open ones keep theirs.

use std::path::Path;
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::server::StartError;

/// A TLS acceptor for the certificate chain and key in these PEM files.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, StartError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartError::Tls(format!("tls.cert_file {}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "tls.cert_file {}: no certificate found",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| StartError::Tls(format!("tls.key_file {}: {e}", key_file.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            StartError::Tls(format!(
                "tls.cert_file {} and tls.key_file {} do not fit: {e}",
                cert_file.display(),
                key_file.display()
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The acceptor new connections use (`None`: the listener serves plain `ws://`).
/// Cheap to clone; clones share the slot.
#[derive(Clone, Default)]
pub struct TlsSlot(Arc<RwLock<Option<TlsAcceptor>>>);

impl TlsSlot {
    /// The acceptor in use, if the listener serves TLS.
    pub fn get(&self) -> Option<TlsAcceptor> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `acceptor` in use for the connections accepted from now on.
    pub fn set(&self, acceptor: TlsAcceptor) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(acceptor);
    }
}
