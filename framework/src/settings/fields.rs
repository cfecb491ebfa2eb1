//! The keys of a settings struct, learned from its `Deserialize` impl: a derived impl names its
//! fields when it asks for a struct. Only these keys are looked up in the environment, so an
//! unrelated variable that shares the prefix is never mistaken for a setting.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The keys of `T`, or `None` when `T` does not deserialize from a struct with named fields.
pub(crate) fn of<T: for<'de> Deserialize<'de>>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    // Always an error: the field names are all that is wanted.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("only the field names were asked for"))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct with named fields"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Shop {
        max_order_quantity: u32,
        #[serde(rename = "admin_names")]
        admins: Vec<String>,
    }

    #[test]
    fn names_the_keys_of_a_struct_and_nothing_else() {
        assert_eq!(
            super::of::<Shop>(),
            Some(&["max_order_quantity", "admin_names"][..])
        );
        assert_eq!(super::of::<u32>(), None);
        assert_eq!(super::of::<std::collections::HashMap<String, u32>>(), None);
    }
}
