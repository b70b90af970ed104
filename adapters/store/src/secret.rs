//! Random session ids and resume tokens, and the hash the store keeps instead.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use sha2::{Digest, Sha256};
use wsauth_core::Secret;

fn random_b64(bytes: usize) -> String {
    let mut buf = [0u8; 32];
    let buf = &mut buf[..bytes.min(32)];
    rand::rng().fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new session id: `s_` and 128 random bits.
pub fn new_session_id() -> String {
    format!("s_{}", random_b64(16))
}

/// A new resume token: `r_` and 256 random bits.
pub fn new_resume_token() -> Secret {
    Secret::new(format!("r_{}", random_b64(32)))
}

/// The SHA-256 of a resume token: what a store keeps.
pub fn hash_resume_token(token: &Secret) -> [u8; 32] {
    Sha256::digest(token.expose().as_bytes()).into()
}
