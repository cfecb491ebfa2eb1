//! The commands' JSON schemas as the OpenAPI document holds them: their `$defs` moved into
//! `components/schemas` (named once for the whole document) and the ranges of integer types
//! stated, so that every reference resolves and every value the schema allows decodes.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::constraints::integer_range;

const DEFS_PREFIX: &str = "#/$defs/";
const COMPONENTS_PREFIX: &str = "#/components/schemas/";

/// The `components/schemas` of the document, filled as the commands' schemas are added.
#[derive(Default)]
pub(super) struct Components {
    schemas: Map<String, Value>,
}

impl Components {
    /// `schema` ready for the document: its definitions moved here, under their own name unless
    /// another type took it (then `Name2`, `Name3`...), and its references rewritten to match.
    pub(super) fn adopt(&mut self, schema: schemars::Schema) -> Value {
        let mut schema = schema.to_value();
        let defs = match schema.as_object_mut() {
            Some(object) => {
                object.remove("$schema");
                object.remove("$defs")
            }
            None => None,
        };
        let defs = match defs {
            Some(Value::Object(defs)) => defs,
            _ => Map::new(),
        };
        let names = self.names_for(&defs);
        for (name, mut def) in defs {
            rewrite(&mut def, &names);
            let final_name = &names[&name];
            self.schemas.entry(final_name.clone()).or_insert(def);
        }
        rewrite(&mut schema, &names);
        schema
    }

    /// The name each definition gets: its own, when free or held by the same schema.
    fn names_for(&self, defs: &Map<String, Value>) -> HashMap<String, String> {
        let unchanged: HashMap<String, String> = defs
            .keys()
            .map(|name| (name.clone(), name.clone()))
            .collect();
        let mut names = HashMap::new();
        let mut taken: Vec<String> = Vec::new();
        for (name, def) in defs {
            let mut as_is = def.clone();
            rewrite(&mut as_is, &unchanged);
            let mut candidate = name.clone();
            let mut suffix = 1;
            while taken.contains(&candidate)
                || self
                    .schemas
                    .get(&candidate)
                    .is_some_and(|held| held != &as_is)
            {
                suffix += 1;
                candidate = format!("{name}{suffix}");
            }
            taken.push(candidate.clone());
            names.insert(name.clone(), candidate);
        }
        names
    }

    pub(super) fn insert(&mut self, name: &str, schema: Value) {
        self.schemas.insert(name.to_owned(), schema);
    }

    pub(super) fn into_map(self) -> Map<String, Value> {
        self.schemas
    }
}

/// Points every `$ref` of `schema` at `components/schemas`, and states the range of every integer
/// type (schemars gives `format: uint32` but no `maximum`: a client would not know the bound).
fn rewrite(schema: &mut Value, names: &HashMap<String, String>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get_mut("$ref")
                && let Some(name) = reference.strip_prefix(DEFS_PREFIX)
            {
                let name = names.get(name).map_or(name, String::as_str);
                *reference = format!("{COMPONENTS_PREFIX}{name}");
            }
            state_integer_range(object);
            object.values_mut().for_each(|value| rewrite(value, names));
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite(item, names)),
        _ => {}
    }
}

fn state_integer_range(schema: &mut Map<String, Value>) {
    let Some((min, max)) = schema
        .get("format")
        .and_then(Value::as_str)
        .and_then(integer_range)
    else {
        return;
    };
    schema.entry("minimum").or_insert(min);
    schema.entry("maximum").or_insert(max);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(value: Value) -> schemars::Schema {
        schemars::Schema::try_from(value).expect("an object")
    }

    #[test]
    fn definitions_move_to_components_and_references_follow() {
        let mut components = Components::default();
        let adopted = components.adopt(schema(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
            "$defs": {"Item": {"properties": {"qty": {"type": "integer", "format": "uint32", "minimum": 1}}}},
        })));
        assert_eq!(
            adopted,
            json!({"properties": {"item": {"$ref": "#/components/schemas/Item"}}})
        );
        let item = &components.into_map()["Item"];
        assert_eq!(
            item["properties"]["qty"],
            json!({"type": "integer", "format": "uint32", "minimum": 1, "maximum": u32::MAX})
        );
    }

    #[test]
    fn a_second_type_of_the_same_name_gets_a_name_of_its_own() {
        let mut components = Components::default();
        let first = json!({"properties": {"a": {"$ref": "#/$defs/Item"}}, "$defs": {"Item": {"type": "string"}}});
        let second = json!({"properties": {"b": {"$ref": "#/$defs/Item"}}, "$defs": {"Item": {"type": "boolean"}}});
        components.adopt(schema(first.clone()));
        components.adopt(schema(first));
        let adopted = components.adopt(schema(second));
        assert_eq!(
            adopted["properties"]["b"]["$ref"],
            "#/components/schemas/Item2"
        );
        let schemas = components.into_map();
        assert_eq!(schemas["Item"], json!({"type": "string"}));
        assert_eq!(schemas["Item2"], json!({"type": "boolean"}));
        assert_eq!(schemas.len(), 2);
    }
}
