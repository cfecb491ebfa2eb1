//! The OpenAPI 3.1 document of the HTTP routes, from the commands' JSON schemas.

use serde_json::{Map, Value};

use crate::message::{JSON, PROBLEM_JSON};
use crate::registry::{CommandDescriptor, route_params};

/// An OpenAPI 3.1 document of the HTTP routes, from the commands' JSON schemas.
pub(super) fn openapi(commands: &[&'static CommandDescriptor]) -> Value {
    let mut paths = Map::new();
    for command in commands {
        let Some(http) = command.http else { continue };
        let params: Vec<Value> = route_params(http.path)
            .map(|name| serde_json::json!({"name": name, "in": "path", "required": true, "schema": {}}))
            .collect();
        let operation = serde_json::json!({
            "operationId": command.name,
            "summary": command.description,
            "tags": [command.service],
            "parameters": params,
            "requestBody": {"content": {JSON: {"schema": (command.input_schema)()}}},
            "responses": {
                http.status.to_string(): {"description": "success", "content": {JSON: {"schema": (command.output_schema)()}}},
                "default": {"description": "an RFC 9457 problem", "content": {PROBLEM_JSON: {}}},
            },
        });
        let path_item = paths
            .entry(http.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = path_item {
            item.insert(http.method.to_ascii_lowercase(), operation);
        }
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Cohort API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
    })
}
