use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use super::VerifyCache;
use super::b64;
use super::json::{Header as RawHeader, ObjectError, RawClaims};
use super::keys::{Key, KeyError, KeySet};
use super::{Claims, TokenError};

/// What the verifier checks beyond the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierConfig {
    /// When set, `iss` is required and must equal it.
    pub issuer: Option<String>,
    /// When not empty, `aud` is required and must contain one of these.
    pub audience: Vec<String>,
    /// Clock leeway for `exp`, `nbf` and `iat`, in seconds \[30\].
    pub leeway_s: u64,
    /// Largest token accepted, checked before any decoding \[8192\].
    pub max_token_bytes: usize,
    /// Algorithms accepted at all; `None`: every supported one.
    pub algorithms: Option<Vec<Algorithm>>,
    /// Longest lifetime accepted, in seconds: a token whose `exp` lies further
    /// than this from `max(iat, now)` is refused ([`TokenError::LifetimeTooLong`]),
    /// so that no token outlives the revocations of its `jti` or `sub`. `None`:
    /// no bound.
    pub max_lifetime_s: Option<u64>,
    /// When set, the header's `typ` is required and must equal it (ASCII
    /// case-insensitively, an `application/` prefix on either side ignored),
    /// e.g. `at+jwt` (RFC 9068). `None`: `typ`, when present, is `JWT` or
    /// `at+jwt`.
    pub required_typ: Option<String>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            issuer: None,
            audience: Vec::new(),
            leeway_s: 30,
            max_token_bytes: 8192,
            algorithms: None,
            max_lifetime_s: None,
            required_typ: None,
        }
    }
}

/// Checks tokens against a [`KeySet`] and a [`VerifierConfig`] (PROTOCOL §2).
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: KeySet,
    config: VerifierConfig,
}

/// Latest `exp`/`nbf`/`iat` accepted: 9999-12-31T23:59:59Z.
const MAX_NUMERIC_DATE_S: f64 = 253_402_300_799.0;

const SUPPORTED: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Verifier {
    /// A verifier; at least one key is needed.
    pub fn new(keys: KeySet, config: VerifierConfig) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Verifier { keys, config })
    }

    /// The settings.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Verifies `token` at `now_ms` (Unix ms): framing, header, key, signature, then
    /// claims and times. Each failure is one [`TokenError`], hence one protocol code.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, TokenError> {
        let payload = self.verify_signature(token)?;
        self.claims_of(&payload, now_ms)
    }

    /// [`Verifier::verify`] through `cache`: a token verified earlier with an
    /// asymmetric algorithm (RSA, ECDSA, EdDSA) is answered from the cache until
    /// its `exp` plus leeway; HMAC tokens, cheaper to check than to look up, are
    /// always verified. The lock is never held during a signature check.
    pub fn verify_cached(
        &self,
        token: &str,
        now_ms: u64,
        cache: &Mutex<VerifyCache>,
    ) -> Result<Arc<Claims>, TokenError> {
        let lock = || cache.lock().unwrap_or_else(|e| e.into_inner());
        let key = VerifyCache::key(token);
        if let Some(claims) = lock().get(&key, now_ms) {
            return Ok(claims);
        }
        let (payload, alg) = self.verify_signature_and_alg(token)?;
        let claims = Arc::new(self.claims_of(&payload, now_ms)?);
        if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            let leeway_ms = self.config.leeway_s.saturating_mul(1000);
            let until = crate::rules::token_ends_at(claims.exp_ms, leeway_ms);
            lock().insert(key, claims.clone(), until, now_ms);
        }
        Ok(claims)
    }

    fn claims_of(&self, payload: &[u8], now_ms: u64) -> Result<Claims, TokenError> {
        self.config.check_claims_json(payload, now_ms)
    }

    /// The signature layer alone: size, framing, header checks, key selection and
    /// signature. Returns the decoded payload.
    pub fn verify_signature(&self, token: &str) -> Result<Vec<u8>, TokenError> {
        self.verify_signature_and_alg(token)
            .map(|(payload, _)| payload)
    }

    fn verify_signature_and_alg(&self, token: &str) -> Result<(Vec<u8>, Algorithm), TokenError> {
        if token.len() > self.config.max_token_bytes {
            return Err(TokenError::TooLarge {
                max: self.config.max_token_bytes,
            });
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected three dot-separated parts"));
        };
        match parts.count() {
            0 => {}
            2 => return Err(TokenError::EncryptedOrNested),
            _ => return Err(TokenError::Malformed("expected three dot-separated parts")),
        }
        let header_bytes = b64::decode(header_b64)
            .map_err(|_| TokenError::Malformed("header is not base64url"))?;
        let header = match RawHeader::parse(&header_bytes) {
            Ok(header) => header,
            Err(ObjectError::Duplicate) => return Err(TokenError::DuplicateName),
            Err(ObjectError::NotAnObject) => {
                return Err(TokenError::Malformed("header is not a JSON object"));
            }
        };
        let alg = self.check_header(&header)?;
        let kid = match &header.kid {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(TokenError::Malformed("kid is not a string")),
        };
        let payload = b64::decode(payload_b64)
            .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
        let signature = b64::decode(signature_b64)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        if signature.is_empty() {
            return Err(TokenError::BadSignature);
        }
        let message = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        let candidates = self.candidates(kid, alg)?;
        let provider = jsonwebtoken::crypto::CryptoProvider::try_get_default()
            .ok_or(TokenError::AlgorithmNotAllowed)?;
        for key in candidates {
            let Ok(verifier) = (provider.verifier_factory)(&alg, &key.key) else {
                continue;
            };
            if jsonwebtoken::signature::Verifier::verify(verifier.as_ref(), message, &signature)
                .is_ok()
            {
                return Ok((payload, alg));
            }
        }
        Err(TokenError::BadSignature)
    }

    fn check_header(&self, header: &RawHeader) -> Result<Algorithm, TokenError> {
        let Some(Value::String(alg)) = &header.alg else {
            return Err(TokenError::Malformed("header lacks a string alg"));
        };
        if header.crit {
            return Err(TokenError::CriticalHeader);
        }
        let nested = header
            .cty
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|c| c.eq_ignore_ascii_case("JWT"));
        if nested || header.enc {
            return Err(TokenError::EncryptedOrNested);
        }
        let typ = header.typ.as_ref().map(|t| t.as_str().map(media_type));
        match (&self.config.required_typ, typ) {
            (Some(required), typ) => {
                if typ
                    .flatten()
                    .is_none_or(|t| !t.eq_ignore_ascii_case(media_type(required)))
                {
                    return Err(TokenError::BadType);
                }
            }
            (None, None) => {}
            (None, Some(typ)) => {
                let ok = typ.is_some_and(|t| {
                    t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("at+jwt")
                });
                if !ok {
                    return Err(TokenError::BadType);
                }
            }
        }
        let alg: Algorithm = alg.parse().map_err(|_| TokenError::AlgorithmNotAllowed)?;
        if !SUPPORTED.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        if let Some(allowed) = &self.config.algorithms
            && !allowed.contains(&alg)
        {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        Ok(alg)
    }

    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<&Key>, TokenError> {
        match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(TokenError::UnknownKid)?;
                if key.algorithms.contains(&alg) {
                    Ok(vec![key])
                } else {
                    Err(TokenError::NoMatchingKey)
                }
            }
            None => {
                let keys: Vec<&Key> = self
                    .keys
                    .keys
                    .iter()
                    .filter(|k| k.algorithms.contains(&alg))
                    .collect();
                if keys.is_empty() {
                    Err(TokenError::NoMatchingKey)
                } else {
                    Ok(keys)
                }
            }
        }
    }
}

impl VerifierConfig {
    /// Checks a JSON object of claims by the rules a verified token's payload
    /// follows (types, `sub`, `exp`, issuer, audience, times with the leeway):
    /// a JWT's payload once its signature verified, or an introspection answer
    /// (RFC 7662), whose members have the same names.
    pub fn check_claims_json(&self, json: &[u8], now_ms: u64) -> Result<Claims, TokenError> {
        let claims = match RawClaims::parse(json) {
            Ok(claims) => claims,
            Err(ObjectError::Duplicate) => return Err(TokenError::DuplicateName),
            Err(ObjectError::NotAnObject) => {
                return Err(TokenError::Malformed("claims are not a JSON object"));
            }
        };
        self.check_claims(claims, now_ms)
    }

    fn check_claims(&self, raw: RawClaims, now_ms: u64) -> Result<Claims, TokenError> {
        let claims = parse_claims(raw)?;
        if let Some(expected) = &self.issuer {
            match &claims.iss {
                None => return Err(TokenError::MissingClaim("iss")),
                Some(i) if i != expected => return Err(TokenError::WrongIssuer),
                Some(_) => {}
            }
        }
        if !self.audience.is_empty() {
            if claims.aud.is_empty() {
                return Err(TokenError::MissingClaim("aud"));
            }
            if !claims.aud.iter().any(|a| self.audience.contains(a)) {
                return Err(TokenError::WrongAudience);
            }
        }
        let leeway_ms = self.leeway_s.saturating_mul(1000);
        if now_ms >= crate::rules::token_ends_at(claims.exp_ms, leeway_ms) {
            return Err(TokenError::Expired);
        }
        let in_future = |at: Option<u64>| at.is_some_and(|t| t > now_ms.saturating_add(leeway_ms));
        if in_future(claims.nbf_ms) {
            return Err(TokenError::NotYetValid);
        }
        if in_future(claims.iat_ms) {
            return Err(TokenError::IssuedInFuture);
        }
        if let Some(max_s) = self.max_lifetime_s {
            let from = claims.iat_ms.unwrap_or(0).max(now_ms);
            if claims.exp_ms.saturating_sub(from) > max_s.saturating_mul(1000) {
                return Err(TokenError::LifetimeTooLong { max_s });
            }
        }
        Ok(claims)
    }
}

/// A `typ` value without its optional `application/` prefix (RFC 7515 §4.1.9).
fn media_type(typ: &str) -> &str {
    match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    }
}

/// The `iss` claim of a token whose signature is not checked yet, to choose
/// the one issuer whose keys may check it (`[[jwt.issuers]]`): `Ok(None)` when
/// the token has no `iss`. Refuses what verification would refuse as malformed
/// (not three parts, not base64url, not a JSON object, a duplicate name, `iss`
/// not a string). The answer is a routing hint only: the chosen issuer's
/// verifier checks the signature, then `iss` again.
pub fn unverified_issuer(
    token: &str,
    max_token_bytes: usize,
) -> Result<Option<String>, TokenError> {
    if token.len() > max_token_bytes {
        return Err(TokenError::TooLarge {
            max: max_token_bytes,
        });
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload_b64), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let payload =
        b64::decode(payload_b64).map_err(|_| TokenError::Malformed("payload is not base64url"))?;
    match RawClaims::parse(&payload) {
        Ok(claims) => optional_string(claims.iss, "iss"),
        Err(ObjectError::Duplicate) => Err(TokenError::DuplicateName),
        Err(ObjectError::NotAnObject) => Err(TokenError::Malformed("claims are not a JSON object")),
    }
}

/// Whether `token` has the shape of a JWS compact token (three dot-separated
/// base64url parts, the first a JSON object), as opposed to an opaque token for
/// introspection. Nothing is verified.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    b64::decode(header).is_ok_and(|bytes| RawHeader::parse(&bytes).is_ok())
}

/// Each claim checked for its type, in a fixed order, so the first wrong one is
/// the one reported.
fn parse_claims(raw: RawClaims) -> Result<Claims, TokenError> {
    let exp_ms = numeric_date(raw.exp, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    let sub = match raw.sub {
        None => return Err(TokenError::MissingClaim("sub")),
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(_) => return Err(TokenError::WrongClaimType("sub")),
    };
    let nbf_ms = numeric_date(raw.nbf, "nbf")?;
    let iat_ms = numeric_date(raw.iat, "iat")?;
    let jti = optional_string(raw.jti, "jti")?;
    let iss = optional_string(raw.iss, "iss")?;
    let aud = match raw.aud {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a],
        Some(Value::Array(list)) => strings(list, "aud")?,
        Some(_) => return Err(TokenError::WrongClaimType("aud")),
    };
    let channels = match raw.channels {
        None => None,
        Some(Value::Array(list)) => Some(strings(list, "channels")?),
        Some(_) => return Err(TokenError::WrongClaimType("channels")),
    };
    Ok(Claims {
        sub,
        exp_ms,
        nbf_ms,
        iat_ms,
        jti,
        iss,
        aud,
        channels,
        extra: raw.rest,
    })
}

/// A list claim whose every element must be a string.
fn strings(list: Vec<Value>, name: &'static str) -> Result<Vec<String>, TokenError> {
    list.into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            _ => Err(TokenError::WrongClaimType(name)),
        })
        .collect()
}

/// A NumericDate in ms: a JSON number of seconds (fractions kept to the ms);
/// negative values count as 0, values past year 9999 are refused.
fn numeric_date(value: Option<Value>, name: &'static str) -> Result<Option<u64>, TokenError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(TokenError::WrongClaimType(name));
    };
    let seconds = n.as_f64().ok_or(TokenError::WrongClaimType(name))?;
    if !seconds.is_finite() || seconds > MAX_NUMERIC_DATE_S {
        return Err(TokenError::WrongClaimType(name));
    }
    if let Some(whole) = n.as_u64() {
        return Ok(Some(whole * 1000));
    }
    Ok(Some((seconds.max(0.0) * 1000.0) as u64))
}

fn optional_string(value: Option<Value>, name: &'static str) -> Result<Option<String>, TokenError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenError::WrongClaimType(name)),
    }
}

/// Signs `claims` with an HS256 secret (tests, benches, the `token` command).
/// Returns an empty string for an empty secret, which no configuration allows.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    match EncodingKey::from_secret(secret) {
        Ok(key) => sign(&key, Algorithm::HS256, None, claims).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Signs `claims` with any key and algorithm, with an optional `kid`.
pub fn sign(
    key: &EncodingKey,
    alg: Algorithm,
    kid: Option<&str>,
    claims: &Value,
) -> Result<String, KeyError> {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key)
        .map_err(|_| KeyError::Unsupported("key does not fit the algorithm"))
}

/// Base64url of bytes, for hand-made tokens in tests.
pub fn b64url(bytes: &[u8]) -> String {
    b64::encode(bytes)
}
