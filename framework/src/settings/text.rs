//! Settings written as text: durations, addresses, comma lists. Environment variables are text
//! only, so each of these types reads the same from `COHORT_COMMAND_TIMEOUT=30s` as from
//! `command_timeout = "30s"` in the file.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A value read from the text of a setting. The error describes what was expected without
/// repeating the text, which may be a secret.
pub(crate) trait FromText: Sized {
    fn from_text(text: &str) -> Result<Self, String>;
}

/// A duration written `250ms`, `30s`, `2m`, `7d`.
pub(crate) struct Span(pub(crate) Duration);

impl FromText for Span {
    fn from_text(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text.trim())
            .map(Span)
            .map_err(|_| "expected a duration such as `250ms`, `5s` or `2m`".to_owned())
    }
}

impl FromText for String {
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

/// A [`FromText`] value, from a string.
pub(crate) struct Parsed<T>(pub(crate) T);

impl<'de, T: FromText> serde::Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor(PhantomData))
    }
}

struct TextVisitor<T>(PhantomData<T>);

impl<T: FromText> Visitor<'_> for TextVisitor<T> {
    type Value = Parsed<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("text")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        T::from_text(text).map(Parsed).map_err(E::custom)
    }
}

/// A list of [`FromText`] values: a comma-separated string (what a variable holds) or an array.
pub(crate) struct List<T>(pub(crate) Vec<T>);

impl<'de, T: FromText> serde::Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: FromText> Visitor<'de> for ListVisitor<T> {
    type Value = List<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a comma-separated list or an array")
    }

    fn visit_str<E: de::Error>(self, list: &str) -> Result<Self::Value, E> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| T::from_text(item).map_err(E::custom))
            .collect::<Result<_, _>>()
            .map(List)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(Parsed(item)) = items.next_element::<Parsed<T>>()? {
            list.push(item);
        }
        Ok(List(list))
    }
}

/// For a `Vec<String>` setting: `SHOP_ADMINS=alice,bob` or `admins = ["alice", "bob"]` in the
/// file. Use it as `#[serde(default, deserialize_with = "cohort::settings::list")]`.
pub fn list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    serde::Deserialize::deserialize(deserializer).map(|List(list)| list)
}

/// For a [`Duration`] setting written `250ms`, `30s`, `2m`, `7d`. Use it as
/// `#[serde(deserialize_with = "cohort::settings::duration")]`.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    serde::Deserialize::deserialize(deserializer).map(|Parsed(Span(duration))| duration)
}
