use serde_json::{Map, Value};

/// The claims of a verified token, typed. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    /// `sub`: a non-empty string.
    pub sub: String,
    /// `exp`, in milliseconds.
    pub exp_ms: u64,
    /// `nbf`, in milliseconds, when present.
    pub nbf_ms: Option<u64>,
    /// `iat`, in milliseconds, when present.
    pub iat_ms: Option<u64>,
    /// `jti`, when present.
    pub jti: Option<String>,
    /// `iss`, when present.
    pub iss: Option<String>,
    /// `aud`: a string or a list of strings on the wire; empty when absent.
    pub aud: Vec<String>,
    /// `channels`: the channel patterns this token allows; `None` when absent.
    pub channels: Option<Vec<String>>,
    /// Every other claim, as it was.
    pub extra: Map<String, Value>,
}

impl Claims {
    /// Minimal claims for a subject and an expiry, for tests and embedders.
    pub fn new(sub: impl Into<String>, exp_ms: u64) -> Self {
        Claims {
            sub: sub.into(),
            exp_ms,
            nbf_ms: None,
            iat_ms: None,
            jti: None,
            iss: None,
            aud: Vec::new(),
            channels: None,
            extra: Map::new(),
        }
    }

    /// `iat` in whole seconds, as revocation by subject compares it.
    pub fn iat_s(&self) -> Option<u64> {
        self.iat_ms.map(|ms| ms / 1000)
    }

    /// The claims as a JWT payload carries them: `sub`, `exp` and (when present)
    /// `nbf` and `iat` in whole seconds, `jti`, `iss`, `aud` (a string when there is
    /// one audience, a list when several, absent when none), `channels` when
    /// present, and every custom claim of `extra`. A registered claim wins over an
    /// `extra` member of the same name.
    ///
    /// For handing the session's identity to an application (the RPC proxy); the
    /// token itself is never part of it.
    pub fn to_wire(&self) -> Map<String, Value> {
        let mut wire = self.extra.clone();
        wire.insert("sub".to_owned(), Value::from(self.sub.as_str()));
        wire.insert("exp".to_owned(), Value::from(self.exp_ms / 1000));
        if let Some(nbf) = self.nbf_ms {
            wire.insert("nbf".to_owned(), Value::from(nbf / 1000));
        } else {
            wire.remove("nbf");
        }
        if let Some(iat) = self.iat_s() {
            wire.insert("iat".to_owned(), Value::from(iat));
        } else {
            wire.remove("iat");
        }
        let optional = [("jti", &self.jti), ("iss", &self.iss)];
        for (name, value) in optional {
            match value {
                Some(v) => wire.insert(name.to_owned(), Value::from(v.as_str())),
                None => wire.remove(name),
            };
        }
        match self.aud.as_slice() {
            [] => wire.remove("aud"),
            [one] => wire.insert("aud".to_owned(), Value::from(one.as_str())),
            many => wire.insert("aud".to_owned(), Value::from(many.to_vec())),
        };
        match &self.channels {
            Some(channels) => wire.insert("channels".to_owned(), Value::from(channels.clone())),
            None => wire.remove("channels"),
        };
        wire
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::Claims;
    use crate::jwt::{KeySet, Verifier, VerifierConfig, sign_hs256};

    const SECRET: &[u8] = b"claims-test-secret-of-32-bytes-or-more";
    const NOW_S: u64 = 1_767_225_600;

    fn verify(payload: &Value) -> Claims {
        let mut keys = KeySet::new();
        keys.add_hmac_secret(None, SECRET).expect("secret");
        let verifier = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
        let token = sign_hs256(SECRET, payload);
        verifier.verify(&token, NOW_S * 1000).expect("verifies")
    }

    #[test]
    fn to_wire_round_trips_through_verification() {
        let payloads = [
            json!({"sub": "alice", "exp": NOW_S + 600}),
            json!({
                "sub": "bob", "exp": NOW_S + 600, "nbf": NOW_S - 5, "iat": NOW_S - 10,
                "jti": "t-1", "iss": "https://issuer.example", "aud": "api",
                "channels": ["room:*", "user:bob"], "tenant": "acme",
                "roles": ["admin", "dev"], "nested": {"a": [1, 2, {"b": null}]}
            }),
            json!({"sub": "carol", "exp": NOW_S + 1, "aud": ["a", "b"], "channels": []}),
        ];
        for payload in payloads {
            let claims = verify(&payload);
            let wire = Value::Object(claims.to_wire());
            assert_eq!(wire, payload, "the wire form is the payload");
            assert_eq!(verify(&wire), claims, "and it verifies to the same claims");
        }
    }

    #[test]
    fn to_wire_spells_the_typed_fields() {
        let mut claims = Claims::new("dave", 1_700_000_000_999);
        claims.iat_ms = Some(1_699_999_999_500);
        claims.aud = vec!["x".into(), "y".into()];
        // A registered claim in `extra` does not override the typed field.
        claims.extra.insert("sub".into(), json!("mallory"));
        claims.extra.insert("iss".into(), json!("stale"));
        claims.extra.insert("plan".into(), json!("pro"));
        let wire = Value::Object(claims.to_wire());
        assert_eq!(
            wire,
            json!({
                "sub": "dave", "exp": 1_700_000_000u64, "iat": 1_699_999_999u64,
                "aud": ["x", "y"], "plan": "pro"
            })
        );
    }
}
