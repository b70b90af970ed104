use crate::ErrorCode;

/// Why a token was refused. Each variant maps to exactly one protocol code
/// ([`TokenError::code`]). Messages never contain the token or any part of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Larger than the configured cap; checked before any decoding.
    #[error("token is larger than {max} bytes")]
    TooLarge {
        /// The cap in bytes.
        max: usize,
    },
    /// Not three dot-separated base64url parts of JSON objects.
    #[error("token is not a well-formed JWT ({0})")]
    Malformed(&'static str),
    /// A JWE (five parts) or a nested JWT (`cty: JWT`).
    #[error("encrypted or nested tokens are not accepted")]
    EncryptedOrNested,
    /// A `crit` header is present.
    #[error("token has a `crit` header")]
    CriticalHeader,
    /// `typ` present and neither `JWT` nor `at+jwt`; or, with a required
    /// `typ` configured, absent or another.
    #[error("token `typ` is not an accepted type")]
    BadType,
    /// A claim name appears twice (in the header or the claims).
    #[error("token has duplicate member names")]
    DuplicateName,
    /// A required claim is missing.
    #[error("token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type or an unusable value.
    #[error("token claim `{0}` has the wrong type")]
    WrongClaimType(&'static str),
    /// `alg: none`, or an algorithm this verifier does not accept.
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The `kid` names no configured key.
    #[error("token `kid` names no configured key")]
    UnknownKid,
    /// No configured key accepts the token's algorithm.
    #[error("no configured key for the token's algorithm")]
    NoMatchingKey,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `iss` does not match the configured issuer.
    #[error("token issuer does not match")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("token audience does not match")]
    WrongAudience,
    /// Past `exp` plus the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` in the future beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` in the future beyond the leeway.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp` lies further from `max(iat, now)` than the configured longest
    /// lifetime: such a token would outlive its revocations.
    #[error("token lifetime is longer than {max_s} seconds")]
    LifetimeTooLong {
        /// The longest lifetime accepted, in seconds.
        max_s: u64,
    },
    /// The identity provider answered that the token is not active
    /// (introspection's `active: false`).
    #[error("token is not active")]
    Inactive,
    /// The token could not be checked: the identity provider that must answer
    /// for it is unreachable or answered nothing usable. Fails closed.
    #[error("token could not be checked: the identity provider is unavailable")]
    Unavailable,
    /// The token's `jti` or `sub` is revoked (decided by the store, not the verifier).
    #[error("token revoked")]
    Revoked,
}

impl TokenError {
    /// The protocol code this failure is reported as.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::TooLarge { .. }
            | TokenError::Malformed(_)
            | TokenError::EncryptedOrNested
            | TokenError::CriticalHeader
            | TokenError::BadType
            | TokenError::DuplicateName
            | TokenError::MissingClaim(_)
            | TokenError::WrongClaimType(_)
            | TokenError::LifetimeTooLong { .. } => ErrorCode::InvalidToken,
            TokenError::AlgorithmNotAllowed
            | TokenError::UnknownKid
            | TokenError::NoMatchingKey
            | TokenError::BadSignature
            | TokenError::WrongIssuer
            | TokenError::WrongAudience
            | TokenError::Inactive => ErrorCode::AuthFailed,
            TokenError::Unavailable => ErrorCode::Internal,
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::NotYetValid | TokenError::IssuedInFuture => ErrorCode::TokenNotYetValid,
            TokenError::Revoked => ErrorCode::TokenRevoked,
        }
    }
}
