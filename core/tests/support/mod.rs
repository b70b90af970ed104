//! Shared helpers of the core's integration tests.
#![allow(dead_code)]

use wsauth_core::SessionConfig;
use wsauth_sim::{StoreSettings, World};

/// 2026-01-01T00:00:00Z: every test world starts here.
pub const T0: u64 = 1_767_225_600_000;
/// `T0` in seconds, for claims.
pub const T0_S: u64 = T0 / 1000;

/// A stand-in verifier for model tests, where the machine and not the JWT layer is
/// under test: `sym:<sub>:<exp seconds>[:<jti>[:<channel,channel>]]` (the same one the
/// state-machine fuzz target uses).
pub use wsauth_sim::fuzzing::symbolic_verifier;

/// A symbolic token for `sub` expiring `ttl_s` after `T0`.
pub fn sym(sub: &str, ttl_s: i64, jti: &str, channels: &str) -> String {
    let exp = (T0_S as i64 + ttl_s).max(0);
    format!("sym:{sub}:{exp}:{jti}:{channels}")
}

/// A world with the default settings and the symbolic verifier.
pub fn symbolic_world(config: SessionConfig, store: StoreSettings) -> World {
    let leeway = config.leeway_ms;
    World::new(T0, config, store, symbolic_verifier(leeway))
}
