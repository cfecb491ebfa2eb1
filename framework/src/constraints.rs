//! The constraints a command's input declares in its JSON schema (`length`, `range`, `pattern`,
//! ...), enforced exactly as the schema states them: the OpenAPI document and the runtime read the
//! same schema, so what one promises the other does.
//!
//! An input whose schema declares nothing that decoding does not already check (the common case,
//! and the echo benchmark's) only has its body checked to be a JSON object; the rest runs only for
//! inputs that declare constraints, with a validator compiled once at start-up.

use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::registry::CommandDescriptor;

/// What is checked of a command's input before its handler decodes it.
pub(crate) enum InputRules {
    /// Anything: the input is not an object (or there is none), and decoding checks it all.
    Decoding,
    /// A JSON object: serde would also read a struct from an array, which the schema forbids.
    Object,
    /// A JSON object valid under the input's schema.
    Schema(Box<jsonschema::Validator>),
}

impl InputRules {
    /// The rules of `command`'s input. A schema the validator cannot compile (a bad `pattern`) is
    /// an error, for start-up to refuse.
    pub(crate) fn of(command: &CommandDescriptor) -> Result<InputRules, Error> {
        let schema = (command.input_schema)();
        let schema = schema.as_value();
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Ok(InputRules::Decoding);
        }
        if !declares_constraints(schema) {
            return Ok(InputRules::Object);
        }
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|err| {
                Error::internal(format!(
                    "the input schema of `{}` at {} cannot be enforced: {err}",
                    command.name, command.location
                ))
                .with_code("invalid_registry")
            })?;
        Ok(InputRules::Schema(Box::new(validator)))
    }

    /// Refuses an input that breaks the rules with a 422 naming the field. Malformed JSON passes:
    /// the decoder reports it, with its position.
    pub(crate) fn check(&self, payload: &[u8]) -> Result<(), Error> {
        match self {
            InputRules::Decoding => Ok(()),
            InputRules::Object => match payload.iter().find(|b| !b.is_ascii_whitespace()) {
                None | Some(b'{') => Ok(()),
                Some(_) => Err(not_an_object()),
            },
            InputRules::Schema(validator) => {
                let payload = if payload.is_empty() { b"{}" } else { payload };
                let Ok(input) = serde_json::from_slice::<Value>(payload) else {
                    return Ok(());
                };
                match validator.validate(&input) {
                    Ok(()) => Ok(()),
                    Err(violation) => Err(invalid(&violation)),
                }
            }
        }
    }
}

fn not_an_object() -> Error {
    Error::new(ErrorKind::Invalid, "the input must be a JSON object")
}

/// The 422 of a violated constraint. The message masks the value: it may be a password.
fn invalid(violation: &jsonschema::ValidationError<'_>) -> Error {
    use jsonschema::error::ValidationErrorKind as Kind;
    let mut field = field_path(violation.instance_path().as_str());
    let named = match violation.kind() {
        Kind::Required { property } => property.as_str().map(str::to_owned),
        Kind::AdditionalProperties { unexpected } => unexpected.first().cloned(),
        _ => None,
    };
    if let Some(name) = named {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(&name);
    }
    if field.is_empty() {
        let message = violation.masked_with("the input").to_string();
        return Error::new(ErrorKind::Invalid, message);
    }
    let message = violation.masked_with(field.as_str()).to_string();
    Error::invalid(field, message)
}

/// A JSON pointer (`/items/0/qty`) as Cohort names fields (`items[0].qty`).
fn field_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.bytes().all(|b| b.is_ascii_digit()) && !segment.is_empty() {
            path.push('[');
            path.push_str(&segment);
            path.push(']');
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    path
}

/// Keywords that constrain a value beyond its type, which decoding does not check.
const CONSTRAINTS: &[&str] = &[
    "minLength",
    "maxLength",
    "pattern",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "const",
    "contains",
    "not",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
];

/// Whether `schema` (or any schema within it) declares a constraint decoding does not enforce. A
/// `minimum` or `maximum` that is only the range of the integer type, and the `format` of a
/// number, say what serde checks anyway.
pub(crate) fn declares_constraints(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.iter().any(|(keyword, value)| {
            let constrains = match keyword.as_str() {
                "minimum" | "maximum" => !is_type_bound(map, keyword, value),
                "format" => {
                    value.as_str().is_some_and(|f| integer_range(f).is_none())
                        && !is_number_format(value)
                }
                "properties" | "$defs" | "definitions" => false,
                keyword => CONSTRAINTS.contains(&keyword),
            };
            constrains || declares_constraints(value)
        }),
        Value::Array(items) => items.iter().any(declares_constraints),
        _ => false,
    }
}

fn is_number_format(format: &Value) -> bool {
    matches!(format.as_str(), Some("float" | "double"))
}

fn is_type_bound(schema: &serde_json::Map<String, Value>, keyword: &str, value: &Value) -> bool {
    let Some((min, max)) = schema
        .get("format")
        .and_then(Value::as_str)
        .and_then(integer_range)
    else {
        return false;
    };
    let bound = if keyword == "minimum" { min } else { max };
    value == &bound
}

/// The range of an integer `format` as schemars writes it: what decoding a Rust integer enforces.
pub(crate) fn integer_range(format: &str) -> Option<(Value, Value)> {
    let range = match format {
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "int64" | "int" => (i64::MIN.into(), i64::MAX.into()),
        "uint8" => (0.into(), u8::MAX.into()),
        "uint16" => (0.into(), u16::MAX.into()),
        "uint32" => (0.into(), u32::MAX.into()),
        "uint64" | "uint" => (0.into(), u64::MAX.into()),
        _ => return None,
    };
    Some(range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_types_declare_no_constraints() {
        for schema in [
            json!({"type": "object", "properties": {"text": {"type": "string"}, "n": {"type": "integer", "format": "int64"}}}),
            json!({"type": "integer", "format": "uint64", "minimum": 0}),
            json!({"type": "integer", "format": "uint8", "minimum": 0, "maximum": 255}),
            json!({"type": "number", "format": "double"}),
        ] {
            assert!(!declares_constraints(&schema), "{schema}");
        }
    }

    #[test]
    fn constraints_are_found_wherever_they_are() {
        for schema in [
            json!({"properties": {"sku": {"type": "string", "maxLength": 3}}}),
            json!({"$defs": {"Item": {"properties": {"qty": {"type": "integer", "format": "uint32", "minimum": 1}}}}}),
            json!({"type": "integer", "format": "uint8", "maximum": 9}),
            json!({"type": "string", "format": "email"}),
            json!({"properties": {"code": {"pattern": "^[a-z]+$"}}}),
        ] {
            assert!(declares_constraints(&schema), "{schema}");
        }
    }

    fn rules(schema: fn() -> schemars::Schema) -> Result<InputRules, Error> {
        use crate::registry::{Location, Package};
        fn noop(
            _: crate::Ctx,
            _: bytes::Bytes,
        ) -> futures_util::future::BoxFuture<'static, Result<bytes::Bytes, Error>> {
            Box::pin(async { Ok(bytes::Bytes::new()) })
        }
        InputRules::of(&CommandDescriptor {
            service: "shop",
            version: 1,
            name: "order",
            description: "",
            timeout_ms: None,
            idempotent: false,
            input_schema: schema,
            output_schema: || schemars::json_schema!({}),
            http: None,
            guard: None,
            handler: noop,
            location: Location {
                file: "shop.rs",
                line: 7,
            },
            package: Package {
                name: "shop",
                version: "1.0.0",
            },
        })
    }

    #[test]
    fn violations_name_the_field_and_never_echo_the_value() {
        let rules = rules(|| {
            schemars::json_schema!({
                "type": "object",
                "properties": {
                    "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
                    "secret": {"type": "string", "maxLength": 3},
                },
                "additionalProperties": false,
                "$defs": {"Line": {"type": "object", "required": ["qty"], "properties": {"qty": {"type": "integer", "minimum": 1}}}},
            })
        })
        .expect("compiles");
        assert!(matches!(rules, InputRules::Schema(_)));
        let check = |payload: &str| rules.check(payload.as_bytes()).expect_err("refused");
        let err = check(r#"{"lines": [{"qty": 1}, {"qty": 0}]}"#);
        assert_eq!(
            (err.kind(), err.field()),
            (ErrorKind::Invalid, Some("lines[1].qty"))
        );
        let err = check(r#"{"lines": [{}]}"#);
        assert_eq!(err.field(), Some("lines[0].qty"));
        let err = check(r#"{"secret": "hunter2"}"#);
        assert_eq!(err.field(), Some("secret"));
        assert!(!err.message().contains("hunter2"), "{err}");
        assert_eq!(check(r#"{"extra": 1}"#).field(), Some("extra"));
        assert!(rules.check(br#"{"lines": [{"qty": 2.0}]}"#).is_ok());
        assert!(rules.check(b"").is_ok());
        assert!(rules.check(b"{not json").is_ok(), "left to the decoder");
    }

    #[test]
    fn an_input_without_constraints_is_only_checked_to_be_an_object() {
        let rules = rules(|| {
            schemars::json_schema!({"type": "object", "properties": {"n": {"type": "integer", "format": "int64"}}})
        })
        .expect("compiles");
        assert!(matches!(rules, InputRules::Object));
        assert!(rules.check(br#" {"n": 1}"#).is_ok());
        assert!(rules.check(b"").is_ok());
        assert_eq!(
            rules.check(b"[1]").map_err(|e| e.kind()),
            Err(ErrorKind::Invalid)
        );
    }

    #[test]
    fn a_pattern_that_does_not_compile_stops_the_start() {
        let err = rules(|| {
            schemars::json_schema!({"type": "object", "properties": {"sku": {"type": "string", "pattern": "(["}}})
        })
        .err()
        .expect("refused");
        assert!(err.message().contains("`order` at shop.rs:7"), "{err}");
    }

    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(field_path(""), "");
        assert_eq!(field_path("/sku"), "sku");
        assert_eq!(field_path("/items/0/qty"), "items[0].qty");
        assert_eq!(field_path("/a~1b"), "a/b");
    }
}
