//! Shared helpers of the core's integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use wsauth_core::SessionConfig;
use wsauth_core::jwt::{Claims, TokenError};
use wsauth_core::sim::{StoreConfig, VerifyFn, World};

/// 2026-01-01T00:00:00Z: every test world starts here.
pub const T0: u64 = 1_767_225_600_000;
/// `T0` in seconds, for claims.
pub const T0_S: u64 = T0 / 1000;

/// A stand-in verifier for model tests, where the machine and not the JWT layer is
/// under test: `sym:<sub>:<exp seconds>[:<jti>[:<channel,channel>]]` is a valid
/// signature; `bad:…` has a bad signature; anything else is malformed.
pub fn symbolic_verifier(leeway_ms: u64) -> VerifyFn {
    Arc::new(move |token: &str, now: u64| {
        let (valid, rest) = if let Some(rest) = token.strip_prefix("sym:") {
            (true, rest)
        } else if let Some(rest) = token.strip_prefix("bad:") {
            (false, rest)
        } else {
            return Err(TokenError::Malformed("not a symbolic token"));
        };
        if !valid {
            return Err(TokenError::BadSignature);
        }
        let mut parts = rest.splitn(4, ':');
        let sub = parts.next().unwrap_or_default();
        let exp_s: u64 = parts
            .next()
            .and_then(|e| e.parse().ok())
            .ok_or(TokenError::MissingClaim("exp"))?;
        if sub.is_empty() {
            return Err(TokenError::MissingClaim("sub"));
        }
        let mut claims = Claims::new(sub, exp_s * 1000);
        claims.jti = parts.next().filter(|j| !j.is_empty()).map(str::to_owned);
        claims.channels = parts.next().map(|c| {
            c.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        });
        if now >= claims.exp_ms + leeway_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    })
}

/// A symbolic token for `sub` expiring `ttl_s` after `T0`.
pub fn sym(sub: &str, ttl_s: i64, jti: &str, channels: &str) -> String {
    let exp = (T0_S as i64 + ttl_s).max(0);
    format!("sym:{sub}:{exp}:{jti}:{channels}")
}

/// A world with the default settings and the symbolic verifier.
pub fn symbolic_world(config: SessionConfig, store: StoreConfig) -> World {
    let leeway = config.leeway_ms;
    World::new(T0, config, store, symbolic_verifier(leeway))
}
