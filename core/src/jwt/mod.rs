//! The JWT verifier: a key set (HS secrets, PEM public keys, JWKS) with per-key
//! algorithm allow-lists, and every check of PROTOCOL §2, with `now` as an argument.
//!
//! `jsonwebtoken` does the signature arithmetic; the token's framing, header and
//! claims are parsed and checked here, because the crate on its own leaves several
//! of the protocol's checks off (see `docs/jwt.md`).

mod b64;
mod cache;
mod claims;
mod error;
mod json;
mod keys;
mod verify;

pub use cache::{TokenKey, VerifyCache};
pub use claims::Claims;
pub use error::TokenError;
pub use keys::{KeyError, KeySet};
pub use verify::{
    Verifier, VerifierConfig, b64url, looks_like_jwt, sign, sign_hs256, unverified_issuer,
};
