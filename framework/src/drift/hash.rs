//! The schema hash of a command or an event: what instances compare to find version drift.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::registry::CommandDescriptor;

/// The first 16 hex digits of the SHA-256 of `command`'s input and output schemas, each as
/// canonical JSON (object keys sorted, no spaces), so that the same types give the same hash in
/// every build.
pub(crate) fn schema_hash(command: &CommandDescriptor) -> String {
    let (input, output) = ((command.input_schema)(), (command.output_schema)());
    hash_schemas(&[input.as_value(), output.as_value()])
}

/// The hash of an event's schema, made like a command's; `None` for an event without one.
pub(crate) fn event_schema_hash(schema: fn() -> Option<schemars::Schema>) -> Option<String> {
    schema().map(|schema| hash_schemas(&[schema.as_value()]))
}

fn hash_schemas(schemas: &[&Value]) -> String {
    let mut canonical = String::new();
    for (i, schema) in schemas.iter().enumerate() {
        if i > 0 {
            // Not a character of JSON text: two schemas cannot trade bytes.
            canonical.push('\n');
        }
        write_canonical(schema, &mut canonical);
    }
    Sha256::digest(canonical.as_bytes())
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Writes `value` as JSON with every object's keys in order, whatever order the map keeps.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_order_of_keys_does_not_change_the_hash() {
        let a = json!({"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}});
        let mut b = serde_json::Map::new();
        b.insert(
            "properties".into(),
            json!({"qty": {"type": "integer"}, "sku": {"type": "string"}}),
        );
        b.insert("type".into(), json!("object"));
        let unit = json!({"type": "null"});
        assert_eq!(
            hash_schemas(&[&a, &unit]),
            hash_schemas(&[&Value::Object(b), &unit])
        );
    }

    #[test]
    fn a_changed_field_input_or_output_changes_the_hash() {
        let v1 = json!({"properties": {"sku": {"type": "string"}}});
        let v2 = json!({"properties": {"sku": {"type": "integer"}}});
        let out = json!({"type": "string"});
        let hash = hash_schemas(&[&v1, &out]);
        assert_eq!(hash.len(), 16);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(hash, hash_schemas(&[&v2, &out]));
        assert_ne!(
            hash,
            hash_schemas(&[&out, &v1]),
            "input and output are told apart"
        );
    }

    #[test]
    fn an_event_is_hashed_like_a_command_of_one_schema_or_not_at_all() {
        let event = || Some(schemars::json_schema!({"properties": {"sku": {"type": "string"}}}));
        let schema = json!({"properties": {"sku": {"type": "string"}}});
        assert_eq!(event_schema_hash(event), Some(hash_schemas(&[&schema])));
        assert_eq!(event_schema_hash(|| None), None);
    }
}
