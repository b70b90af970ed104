//! A JSON object reader that refuses duplicate member names, which serde_json
//! would otherwise resolve silently (the last one wins).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// A top-level JSON object whose member names are unique.
pub(crate) struct UniqueObject(pub(crate) Map<String, Value>);

/// What went wrong reading the object.
pub(crate) enum ObjectError {
    NotAnObject,
    Duplicate,
}

impl UniqueObject {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Map<String, Value>, ObjectError> {
        match serde_json::from_slice::<UniqueObject>(bytes) {
            Ok(o) => Ok(o.0),
            Err(e) if e.to_string().starts_with(DUPLICATE) => Err(ObjectError::Duplicate),
            Err(_) => Err(ObjectError::NotAnObject),
        }
    }
}

const DUPLICATE: &str = "duplicate member name";

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.insert(key, value).is_some() {
                        return Err(serde::de::Error::custom(DUPLICATE));
                    }
                }
                Ok(UniqueObject(map))
            }
        }
        d.deserialize_map(V)
    }
}
