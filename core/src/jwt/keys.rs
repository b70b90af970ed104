use std::fmt;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations,
    OctetKeyPairParameters, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

/// Why a key could not be added to a [`KeySet`]. Never contains key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// An HMAC secret shorter than 32 bytes.
    #[error("HMAC secret must be at least 32 bytes (got {0})")]
    ShortSecret(usize),
    /// The PEM could not be read as a public key.
    #[error("not a usable public key PEM: {0}")]
    BadPem(&'static str),
    /// A private key was given where a public key is expected.
    #[error("a private key was given where a public key is expected")]
    PrivateKey,
    /// A key type or curve this verifier does not support.
    #[error("unsupported key type: {0}")]
    Unsupported(&'static str),
    /// The JWKS JSON is not a key set.
    #[error("not a JWKS document: {0}")]
    BadJwks(String),
    /// Two keys with the same `kid`.
    #[error("duplicate kid {0:?}")]
    DuplicateKid(String),
    /// A verifier needs at least one key.
    #[error("no verification key configured")]
    NoKeys,
    /// An RSA key whose modulus is too short to be safe (or too long to verify
    /// cheaply), or whose size could not be read.
    #[error("RSA modulus of {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted")]
    RsaKeySize {
        /// The modulus's length in bits (0 when it could not be read).
        bits: usize,
    },
    /// A published JWKS (fetched from an identity provider) holding a symmetric
    /// (`oct`) key: a secret has no business in a public document.
    #[error("a published JWKS must not hold symmetric (oct) keys")]
    SymmetricInPublished,
    /// A JWKS with more keys than accepted.
    #[error("JWKS has {count} keys; at most {max} are accepted")]
    TooManyKeys {
        /// How many keys the document has.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// RFC 7518 §3.3 requires 2048 bits at least; 1024-bit moduli are within reach of
/// well-funded attackers.
pub const MIN_RSA_BITS: usize = 2048;
/// Verification time grows with the square of the modulus: a bound keeps one
/// configured key from making every verification slow.
pub const MAX_RSA_BITS: usize = 8192;

/// The key itself if its RSA modulus is within [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`].
fn checked_rsa(key: DecodingKey) -> Result<DecodingKey, KeyError> {
    let bits = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, .. } => bit_length(n),
        DecodingKeyKind::SecretOrDer(der) => pkcs1_modulus(der).map_or(0, bit_length),
    };
    if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        Ok(key)
    } else {
        Err(KeyError::RsaKeySize { bits })
    }
}

/// The length in bits of a big-endian unsigned integer.
fn bit_length(bytes: &[u8]) -> usize {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    match bytes.get(start) {
        Some(first) => (bytes.len() - start) * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// The modulus of a DER PKCS#1 `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`,
/// RFC 8017 §A.1.1), which is what the PEM reader keeps for an RSA key.
fn pkcs1_modulus(der: &[u8]) -> Option<&[u8]> {
    // One DER element: its tag, then its contents and what follows it.
    fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    let (sequence, _) = element(der, 0x30)?;
    let (modulus, _) = element(sequence, 0x02)?;
    Some(modulus)
}

/// One verification key, bound to the algorithms it may check.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) key: DecodingKey,
}

const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The keys a [`super::Verifier`] may use. Each key is bound to its algorithm
/// family, so an HMAC key never checks an asymmetric token or the reverse.
#[derive(Clone, Default)]
pub struct KeySet {
    pub(crate) keys: Vec<Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for k in &self.keys {
            list.entry(&format_args!("{:?} {:?}", k.kid, k.algorithms));
        }
        list.finish()
    }
}

impl KeySet {
    /// An empty key set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn push(
        &mut self,
        kid: Option<&str>,
        algorithms: Vec<Algorithm>,
        key: DecodingKey,
    ) -> Result<(), KeyError> {
        if let Some(kid) = kid
            && self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
        {
            return Err(KeyError::DuplicateKid(kid.to_owned()));
        }
        self.keys.push(Key {
            kid: kid.map(str::to_owned),
            algorithms,
            key,
        });
        Ok(())
    }

    /// Adds an HMAC secret (HS256, HS384, HS512). At least 32 bytes.
    pub fn add_hmac_secret(&mut self, kid: Option<&str>, secret: &[u8]) -> Result<(), KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::ShortSecret(secret.len()));
        }
        let key = DecodingKey::from_secret(secret).map_err(|_| KeyError::ShortSecret(0))?;
        self.push(kid, HMAC.to_vec(), key)
    }

    /// Adds a PEM public key: RSA (`PUBLIC KEY` or `RSA PUBLIC KEY`; RS* and PS*),
    /// EC P-256 (ES256), EC P-384 (ES384) or Ed25519 (EdDSA).
    pub fn add_public_key_pem(&mut self, kid: Option<&str>, pem: &[u8]) -> Result<(), KeyError> {
        let text = std::str::from_utf8(pem).map_err(|_| KeyError::BadPem("not text"))?;
        if text.contains("PRIVATE KEY") {
            return Err(KeyError::PrivateKey);
        }
        if !text.contains("-----BEGIN ") {
            return Err(KeyError::BadPem("no PEM block"));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return self.push(kid, RSA.to_vec(), checked_rsa(key)?);
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            let alg = match key.kind() {
                DecodingKeyKind::SecretOrDer(point) if point.len() == 65 => Algorithm::ES256,
                DecodingKeyKind::SecretOrDer(point) if point.len() == 97 => Algorithm::ES384,
                _ => return Err(KeyError::Unsupported("EC curve other than P-256 or P-384")),
            };
            return self.push(kid, vec![alg], key);
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            return self.push(kid, vec![Algorithm::EdDSA], key);
        }
        Err(KeyError::BadPem("not an RSA, EC or Ed25519 public key"))
    }

    /// Adds every signing key of a JWKS document; returns how many. A key's `alg`,
    /// when present, narrows it to that algorithm; `use: enc` keys are skipped.
    pub fn add_jwks_json(&mut self, json: &str) -> Result<usize, KeyError> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| KeyError::BadJwks(e.classify_name()))?;
        let mut added = 0;
        for jwk in set.keys.iter().filter(|jwk| verifies_signatures(jwk)) {
            let (family, key) = jwk_key(jwk)?;
            let algorithms = match jwk.common.key_algorithm {
                None => family,
                Some(ka) => {
                    let alg = key_algorithm(ka).ok_or(KeyError::Unsupported("JWK alg"))?;
                    if !family.contains(&alg) {
                        return Err(KeyError::BadJwks(
                            "JWK alg does not fit its key type".into(),
                        ));
                    }
                    vec![alg]
                }
            };
            self.push(jwk.common.key_id.as_deref(), algorithms, key)?;
            added += 1;
        }
        Ok(added)
    }
}

impl KeySet {
    /// Adds the keys of a JWKS an identity provider publishes (fetched over the
    /// network), all or none: refused when it has more than `max_keys` entries,
    /// any symmetric (`oct`) key, or no key that may verify signatures, on top of
    /// what [`KeySet::add_jwks_json`] refuses (bad or duplicate keys, RSA outside
    /// 2048–8192 bits, an `alg` that does not fit its key). Keys marked for
    /// encryption only (`use: enc`, or `key_ops` without `verify`) are skipped.
    /// On an error `self` is unchanged.
    pub fn add_published_jwks_json(
        &mut self,
        json: &str,
        max_keys: usize,
    ) -> Result<usize, KeyError> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| KeyError::BadJwks(e.classify_name()))?;
        if set.keys.len() > max_keys {
            return Err(KeyError::TooManyKeys {
                count: set.keys.len(),
                max: max_keys,
            });
        }
        if set
            .keys
            .iter()
            .any(|jwk| matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
        {
            return Err(KeyError::SymmetricInPublished);
        }
        let mut next = self.clone();
        match next.add_jwks_json(json)? {
            0 => Err(KeyError::BadJwks(
                "no key that may verify signatures".into(),
            )),
            added => {
                *self = next;
                Ok(added)
            }
        }
    }
}

/// Whether a JWK may verify signatures: not `use: enc`, and `verify` among its
/// `key_ops` when it lists any.
fn verifies_signatures(jwk: &Jwk) -> bool {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return false;
    }
    match &jwk.common.key_operations {
        Some(ops) => ops.iter().any(|op| matches!(op, KeyOperations::Verify)),
        None => true,
    }
}

/// A JWK's key and the algorithms of its family.
fn jwk_key(jwk: &Jwk) -> Result<(Vec<Algorithm>, DecodingKey), KeyError> {
    match &jwk.algorithm {
        AlgorithmParameters::OctetKey(p) => {
            let secret = super::b64::decode(&p.value)
                .map_err(|_| KeyError::BadJwks("bad oct key".into()))?;
            if secret.len() < 32 {
                return Err(KeyError::ShortSecret(secret.len()));
            }
            let key = DecodingKey::from_secret(&secret).map_err(|_| KeyError::ShortSecret(0))?;
            Ok((HMAC.to_vec(), key))
        }
        AlgorithmParameters::RSA(_) => {
            let key =
                DecodingKey::from_jwk(jwk).map_err(|_| KeyError::BadJwks("bad RSA key".into()))?;
            Ok((RSA.to_vec(), checked_rsa(key)?))
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let alg = match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => {
                    return Err(KeyError::Unsupported("EC curve other than P-256 or P-384"));
                }
            };
            let key =
                DecodingKey::from_jwk(jwk).map_err(|_| KeyError::BadJwks("bad EC key".into()))?;
            Ok((vec![alg], key))
        }
        AlgorithmParameters::OctetKeyPair(p) => Ok((vec![Algorithm::EdDSA], okp_key(jwk, p)?)),
        _ => Err(KeyError::Unsupported("unknown JWK key type")),
    }
}

fn okp_key(jwk: &Jwk, p: &OctetKeyPairParameters) -> Result<DecodingKey, KeyError> {
    if p.curve != EllipticCurve::Ed25519 {
        return Err(KeyError::Unsupported("OKP curve other than Ed25519"));
    }
    // A public key of another length would only fail (or worse) at verification
    // time: refuse it while loading.
    let x = super::b64::decode(&p.x).map_err(|_| KeyError::BadJwks("bad OKP key".into()))?;
    if x.len() != 32 {
        return Err(KeyError::BadJwks("an Ed25519 key is 32 bytes".into()));
    }
    DecodingKey::from_jwk(jwk).map_err(|_| KeyError::BadJwks("bad OKP key".into()))
}

fn key_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

trait ClassifyName {
    fn classify_name(&self) -> String;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> String {
        match self.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "not valid JSON".into()
            }
            _ => "missing or mistyped members".into(),
        }
    }
}
