//! Claims as the store keeps them: every field of [`Claims`], in JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use wsauth_core::jwt::Claims;

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredClaims {
    sub: String,
    exp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    aud: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    extra: Map<String, Value>,
}

impl From<&Claims> for StoredClaims {
    fn from(c: &Claims) -> Self {
        StoredClaims {
            sub: c.sub.clone(),
            exp_ms: c.exp_ms,
            nbf_ms: c.nbf_ms,
            iat_ms: c.iat_ms,
            jti: c.jti.clone(),
            iss: c.iss.clone(),
            aud: c.aud.clone(),
            channels: c.channels.clone(),
            extra: c.extra.clone(),
        }
    }
}

impl From<StoredClaims> for Claims {
    fn from(s: StoredClaims) -> Self {
        let mut c = Claims::new(s.sub, s.exp_ms);
        c.nbf_ms = s.nbf_ms;
        c.iat_ms = s.iat_ms;
        c.jti = s.jti;
        c.iss = s.iss;
        c.aud = s.aud;
        c.channels = s.channels;
        c.extra = s.extra;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_survives_the_round_trip() {
        let mut c = Claims::new("alice", 1_767_225_600_000);
        c.nbf_ms = Some(1);
        c.iat_ms = Some(2_000);
        c.jti = Some("j".into());
        c.iss = Some("https://issuer".into());
        c.aud = vec!["api".into(), "ws".into()];
        c.channels = Some(vec!["team:*".into()]);
        c.extra.insert("role".into(), Value::from("admin"));
        let text = serde_json::to_string(&StoredClaims::from(&c)).expect("encodes");
        let back: Claims = serde_json::from_str::<StoredClaims>(&text)
            .expect("decodes")
            .into();
        assert_eq!(back, c);
    }
}
