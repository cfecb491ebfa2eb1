//! Decoding inputs and encoding outputs, with errors that name the field at fault.

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::Error;

/// Decodes a command input or an event. Malformed JSON is a 400; JSON of the wrong shape is a 422
/// whose `field` is the path of the offending field (`items[0].qty`). An empty body reads as `{}`.
/// A whole number written as a float (`2.0`) fills an integer field, as JSON Schema says it may.
pub fn decode_input<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
    let payload = if payload.is_empty() { b"{}" } else { payload };
    // The plain decoder is the fast path; tracking the path costs, so only a failure pays for it.
    serde_json::from_slice(payload).or_else(|_| decode_again(payload))
}

/// The second try of a payload serde refused: with whole floats as integers, naming the field
/// at fault if it still does not decode.
fn decode_again<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return decode_with_path(payload);
    };
    whole_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(path_error)
}

/// Rewrites `2.0` as `2` throughout: serde reads no integer from a float, though JSON Schema
/// counts it as one (and a float field reads an integer as well).
fn whole_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(number) if number.is_f64() => {
            let float = number.as_f64().unwrap_or(f64::NAN);
            // Exact below 2^63 and 2^64: a larger float is no integer serde could take anyway.
            if float.fract() == 0.0 && float.abs() < 9.223_372_036_854_776e18 {
                *value = Value::from(float as i64);
            } else if float.fract() == 0.0 && (0.0..1.844_674_407_370_955_2e19).contains(&float) {
                *value = Value::from(float as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

fn decode_with_path<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(malformed_json)?;
    Ok(value)
}

/// The 400 of a body that is not JSON.
pub(crate) fn malformed_json(err: impl std::fmt::Display) -> Error {
    Error::bad_request(format!("malformed JSON: {err}")).with_code("malformed_json")
}

fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => malformed_json(inner),
        Category::Data => {
            let message = strip_position(&inner.to_string());
            let field = match missing_field(&message) {
                Some(name) if path == "." => name.to_owned(),
                Some(name) => format!("{path}.{name}"),
                None => path,
            };
            Error::invalid(field, message)
        }
    }
}

/// serde names a missing field in the message only; the path points at its parent.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// serde_json appends " at line 1 column 12", which means nothing to an HTTP client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Encodes a handler's result as the reply body.
pub fn encode_output<T: Serialize, E: Into<Error>>(result: Result<T, E>) -> Result<Bytes, Error> {
    let output = result.map_err(Into::into)?;
    serde_json::to_vec(&output)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("cannot encode the output: {e}")))
}

/// A subscription's result with its error converted.
pub fn into_event_result<E: Into<Error>>(result: Result<(), E>) -> Result<(), Error> {
    result.map_err(Into::into)
}

/// The input of a command that takes none: whatever was sent is ignored.
pub fn no_input(_payload: &[u8]) -> Result<(), Error> {
    Ok(())
}

// What a handler's types must be, each as a trait of its own whose `on_unimplemented` says, on the
// user's type, what to write. The blanket impls are `do_not_recommend`, so that rustc reports the
// missing trait itself rather than the serde bound under it, and the traits require what they
// stand for as supertraits: a use that needs only `Serialize` of a type then fails with an error
// that rustc recognizes as implied by the one about `Encode`, and drops.

/// A type sent as JSON: a command's output, the input given to `ctx.call`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent as JSON: it does not implement `Serialize`",
    label = "not `Serialize`",
    note = "add `#[derive(serde::Serialize)]` to `{Self}`: command outputs and the inputs given to `ctx.call` cross the network as JSON",
    note = "for a type of another crate, enable that crate's `serde` feature"
)]
pub trait Encode: Serialize {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + ?Sized> Encode for T {}

/// A type received as JSON: a command's input, the output `ctx.call` returns.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be received as JSON: it does not implement `Deserialize`",
    label = "not `Deserialize`",
    note = "add `#[derive(serde::Deserialize)]` to `{Self}`: command inputs and the outputs `ctx.call` returns cross the network as JSON",
    note = "for a type of another crate, enable that crate's `serde` feature"
)]
pub trait Decode: DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<T: DeserializeOwned> Decode for T {}

/// A type described by a JSON schema: a command's input and output.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no JSON schema: it does not implement `JsonSchema`",
    label = "not `JsonSchema`",
    note = "add `#[derive(schemars::JsonSchema)]` to `{Self}`: a command publishes the schemas of its input and output",
    note = "for a type of another crate, enable the `schemars` feature that covers it"
)]
pub trait Describe: JsonSchema {}

#[diagnostic::do_not_recommend]
impl<T: JsonSchema + ?Sized> Describe for T {}

/// The error type of a handler: anything `cohort::Error` converts from.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of a Cohort handler",
    label = "not convertible into `cohort::Error`",
    note = "return `Result<T, cohort::Error>` and make errors with `Error::conflict(..)`, `Error::internal(..)`, ...; for an error type of your own, implement `From<{Self}> for cohort::Error`",
    note = "convert a `String` where it is made: `.map_err(cohort::Error::internal)?`; another crate's error: `.map_err(|e| cohort::Error::internal(e.to_string()))?`"
)]
pub trait IntoError {
    /// The error as a `cohort::Error`.
    fn into_error(self) -> Error;
}

#[diagnostic::do_not_recommend]
impl<E: Into<Error>> IntoError for E {
    fn into_error(self) -> Error {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        sku: String,
        items: Vec<Item>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        qty: u32,
    }

    #[test]
    fn malformed_json_is_400() {
        let err = decode_input::<Order>(b"{\"sku\": ").expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::BadRequest);
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let err =
            decode_input::<Order>(br#"{"sku":"a","items":[{"qty":"x"}]}"#).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert_eq!(err.field(), Some("items[0].qty"));
        assert!(!err.message().contains("line"), "{}", err.message());
    }

    #[test]
    fn missing_field_is_named() {
        let err = decode_input::<Order>(br#"{"items":[]}"#).expect_err("must fail");
        assert_eq!(err.field(), Some("sku"));
        let err = decode_input::<Order>(br#"{"sku":"a","items":[{}]}"#).expect_err("must fail");
        assert_eq!(err.field(), Some("items[0].qty"));
    }

    #[test]
    fn whole_floats_fill_integer_fields() {
        let order = decode_input::<Order>(br#"{"sku":"a","items":[{"qty":2.0}]}"#);
        assert_eq!(order.expect("decodes").items[0].qty, 2);
        let err =
            decode_input::<Order>(br#"{"sku":"a","items":[{"qty":2.5}]}"#).expect_err("not whole");
        assert_eq!(err.field(), Some("items[0].qty"));
    }

    #[test]
    fn trailing_garbage_is_400() {
        let err = decode_input::<Item>(br#"{"qty":1} x"#).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::BadRequest);
    }
}
