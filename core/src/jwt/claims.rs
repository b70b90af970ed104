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
}
