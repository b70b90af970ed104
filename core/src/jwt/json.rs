//! JSON object readers that refuse duplicate member names, which serde_json would
//! otherwise resolve silently (the last one wins). Known members are picked out in
//! one pass; names are borrowed from the input when they have no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// What went wrong reading an object.
pub(crate) enum ObjectError {
    NotAnObject,
    Duplicate,
}

const DUPLICATE: &str = "duplicate member name";

/// Reads a top-level object: members named in `known` land in `found` (by index),
/// the others in `rest` when it is given, or are skipped.
fn read_object(
    bytes: &[u8],
    known: &[&str],
    found: &mut [Option<Value>],
    rest: Option<&mut Map<String, Value>>,
) -> Result<(), ObjectError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Seed { known, found, rest };
    match seed.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().starts_with(DUPLICATE) => Err(ObjectError::Duplicate),
        Err(_) => Err(ObjectError::NotAnObject),
    }
}

struct Seed<'k, 'f> {
    known: &'k [&'k str],
    found: &'f mut [Option<Value>],
    rest: Option<&'f mut Map<String, Value>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut access: A) -> Result<(), A::Error> {
        let mut seen: Vec<Cow<'de, str>> = Vec::with_capacity(8);
        while let Some(key) = access.next_key::<Cow<'de, str>>()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(DUPLICATE));
            }
            match self.known.iter().position(|k| *k == key) {
                Some(i) => self.found[i] = Some(access.next_value::<Value>()?),
                None => match self.rest.as_deref_mut() {
                    Some(rest) => {
                        let value = access.next_value::<Value>()?;
                        rest.insert(key.clone().into_owned(), value);
                    }
                    None => {
                        access.next_value::<IgnoredAny>()?;
                    }
                },
            }
            seen.push(key);
        }
        Ok(())
    }
}

/// The header members the verifier looks at.
pub(crate) struct Header {
    pub(crate) alg: Option<Value>,
    pub(crate) kid: Option<Value>,
    pub(crate) typ: Option<Value>,
    pub(crate) cty: Option<Value>,
    pub(crate) crit: bool,
    pub(crate) enc: bool,
}

impl Header {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header, ObjectError> {
        const KNOWN: [&str; 6] = ["alg", "kid", "typ", "cty", "crit", "enc"];
        let mut found: [Option<Value>; 6] = Default::default();
        read_object(bytes, &KNOWN, &mut found, None)?;
        let [alg, kid, typ, cty, crit, enc] = found;
        Ok(Header {
            alg,
            kid,
            typ,
            cty,
            crit: crit.is_some(),
            enc: enc.is_some(),
        })
    }
}

/// The registered claims, and every other claim in `rest`.
pub(crate) struct RawClaims {
    pub(crate) exp: Option<Value>,
    pub(crate) sub: Option<Value>,
    pub(crate) nbf: Option<Value>,
    pub(crate) iat: Option<Value>,
    pub(crate) jti: Option<Value>,
    pub(crate) iss: Option<Value>,
    pub(crate) aud: Option<Value>,
    pub(crate) channels: Option<Value>,
    pub(crate) rest: Map<String, Value>,
}

impl RawClaims {
    pub(crate) fn parse(bytes: &[u8]) -> Result<RawClaims, ObjectError> {
        const KNOWN: [&str; 8] = ["exp", "sub", "nbf", "iat", "jti", "iss", "aud", "channels"];
        let mut found: [Option<Value>; 8] = Default::default();
        let mut rest = Map::new();
        read_object(bytes, &KNOWN, &mut found, Some(&mut rest))?;
        let [exp, sub, nbf, iat, jti, iss, aud, channels] = found;
        Ok(RawClaims {
            exp,
            sub,
            nbf,
            iat,
            jti,
            iss,
            aud,
            channels,
            rest,
        })
    }
}
