//! JSON objects only. serde's derives also read a struct from its positional form (`["candidate:1 …", "0", 0]`)
//! and an internally tagged enum from `["leave"]` or `["offer", "v=0"]`; a type whose derive carries
//! `#[serde(remote = "Self")]` and implements [`FromObject`] is read by [`deserialize_object`] from an object and
//! nothing else, any other JSON being serde's `invalid type`. The signaling frames use it, and so do the
//! gateway's HTTP bodies.

use serde::Deserializer;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// A type read by its derived (`remote = "Self"`) deserializer, from a map only.
pub trait FromObject: Sized {
    /// What a refusal says was expected, e.g. "a signaling message object".
    const EXPECTING: &'static str;
    fn from_object<'de, D: Deserializer<'de>>(object: D) -> Result<Self, D::Error>;
}

/// Deserialises `T` from a JSON object, refusing any other JSON value with serde's `invalid type`.
pub fn deserialize_object<'de, D: Deserializer<'de>, T: FromObject>(deserializer: D) -> Result<T, D::Error> {
    struct ObjectVisitor<T>(PhantomData<T>);
    impl<'de, T: FromObject> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(T::EXPECTING)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::from_object(MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_map(ObjectVisitor(PhantomData))
}
