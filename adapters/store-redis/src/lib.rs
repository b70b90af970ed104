//! The Redis store for wsauth: several `wsauth-server` nodes share sessions,
//! resume tokens, the per-user index, revocations and channel fan-out through one
//! Redis (or Valkey) primary.

#[cfg(feature = "testing")]
pub mod testing;
