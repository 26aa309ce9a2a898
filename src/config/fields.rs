//! The field names a `Deserialize` struct accepts, read from serde itself.
//!
//! Targets and jobs are a shared struct (`TargetCommon`, `JobCommon`) plus a kind-specific one.
//! serde cannot combine `flatten` with `deny_unknown_fields`, so the loader splits each table by
//! key instead; asking serde for the shared struct's field list keeps that split in one place
//! (the struct definition) rather than in a hand-written list that could drift.

use serde::de::{self, Deserialize, Deserializer, Visitor};

struct FieldGrabber<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field list captured")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for FieldGrabber<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The names of the fields of struct `T` as serde sees them (after renames).
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldGrabber(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_common_fields() {
        let f = super::struct_fields::<crate::targets::TargetCommon>();
        assert_eq!(f, &["medium", "offsite", "keep", "timeouts"]);
    }
}
