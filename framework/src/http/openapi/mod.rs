//! The OpenAPI 3.1 document of the HTTP routes, from the commands' JSON schemas: typed path and
//! query parameters, a request body only where the route reads one, every response a route can
//! give, and components that resolve.

mod info;
mod schemas;

use serde_json::{Map, Value, json};

use crate::message::{JSON, PROBLEM_JSON};
use crate::registry::{CommandDescriptor, HttpRoute, route_params};

use super::cookie::SESSION_COOKIE;
pub use info::ApiInfo;
use schemas::Components;

/// The security scheme of a guarded route: the session cookie.
const COOKIE_AUTH: &str = "cookieAuth";

/// The `components/parameters` entry of the `Idempotency-Key` header every route accepts.
const IDEMPOTENCY_KEY: &str = "IdempotencyKey";

/// The problem responses the framework itself gives, each a `components/responses` entry:
/// (status, name, when).
const PROBLEMS: &[(u16, &str, &str)] = &[
    (
        400,
        "BadRequest",
        "the request is malformed (not JSON, a bad header)",
    ),
    (401, "Unauthorized", "not signed in"),
    (403, "Forbidden", "signed in without the right to this"),
    (408, "RequestTimeout", "the body did not arrive in time"),
    (
        409,
        "IdempotencyKeyInUse",
        "a request with the same `Idempotency-Key` is still running",
    ),
    (413, "PayloadTooLarge", "the body is larger than the limit"),
    (
        422,
        "Invalid",
        "the input breaks its schema; `field` names the field",
    ),
    (
        500,
        "Internal",
        "an unexpected failure, logged under `trace_id`",
    ),
    (
        503,
        "Unavailable",
        "no instance runs the command, or a dependency is unreachable",
    ),
    (
        504,
        "Timeout",
        "the command did not finish before its deadline",
    ),
];

/// An OpenAPI 3.1 document of the HTTP routes of `commands`.
pub(super) fn openapi(commands: &[&'static CommandDescriptor], info: &ApiInfo) -> Value {
    let mut components = Components::default();
    components.insert("Problem", problem_schema());
    let mut paths = Map::new();
    for command in commands {
        let Some(http) = command.http else { continue };
        let operation = operation(command, http, &mut components);
        let item = paths
            .entry(template(http.path))
            .or_insert_with(|| Value::Object(Map::new()));
        item[http.method.to_ascii_lowercase()] = operation;
    }
    let mut info_object = json!({"title": info.title, "version": info.version});
    if let Some(description) = &info.description {
        info_object["description"] = description.as_str().into();
    }
    let responses: Map<String, Value> = PROBLEMS
        .iter()
        .map(|(_, name, when)| ((*name).to_owned(), problem_response(when)))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": info_object,
        "paths": paths,
        "components": {
            "schemas": components.into_map(),
            "responses": responses,
            "parameters": {IDEMPOTENCY_KEY: idempotency_key_parameter()},
            "securitySchemes": {
                COOKIE_AUTH: {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
    })
}

/// The operation of one route.
fn operation(command: &CommandDescriptor, http: HttpRoute, components: &mut Components) -> Value {
    let input = Input::new(components.adopt((command.input_schema)()));
    let output = components.adopt((command.output_schema)());
    let path_params: Vec<&str> = route_params(http.path).collect();
    let mut parameters: Vec<Value> = path_params
        .iter()
        .map(|name| input.parameter(name, "path"))
        .collect();
    let (summary, description) = summary(command.description);
    let mut operation = json!({
        "operationId": command.name,
        "summary": summary,
        "tags": [command.service],
        "responses": responses(command, http, output),
    });
    if !description.is_empty() {
        operation["description"] = description.into();
    }
    if reads_body(http.method) {
        if let Some(body) = input.body(&path_params) {
            operation["requestBody"] = body;
        }
    } else {
        parameters.extend(
            input
                .scalar_fields()
                .filter(|name| !path_params.contains(name))
                .map(|name| input.parameter(name, "query")),
        );
    }
    parameters.push(json!({"$ref": format!("#/components/parameters/{IDEMPOTENCY_KEY}")}));
    operation["parameters"] = parameters.into();
    if command.guard.is_some() {
        operation["security"] = json!([{COOKIE_AUTH: []}]);
    }
    operation
}

/// Whether the input of a route with `method` is read from its body (otherwise from the query).
fn reads_body(method: &str) -> bool {
    !matches!(method, "GET" | "DELETE" | "HEAD" | "OPTIONS")
}

/// The first line of a doc comment, and the rest.
fn summary(doc: &str) -> (&str, &str) {
    let doc = doc.trim();
    match doc.split_once("\n\n") {
        Some((first, rest)) => (first.trim(), rest.trim()),
        None => (doc, ""),
    }
}

/// An axum path as an OpenAPI path template: `{*rest}` is `{rest}`.
fn template(path: &str) -> String {
    path.replace("{*", "{")
}

/// A command's input schema, read for its parameters and body.
struct Input {
    schema: Value,
}

impl Input {
    fn new(schema: Value) -> Input {
        Input { schema }
    }

    /// Whether the command takes no input at all (its input type is `()`).
    fn is_none(&self) -> bool {
        self.schema.get("type").and_then(Value::as_str) == Some("null")
    }

    fn property(&self, name: &str) -> Value {
        self.schema["properties"]
            .get(name)
            .cloned()
            .unwrap_or_else(|| json!({}))
    }

    fn is_required(&self, name: &str) -> bool {
        self.schema["required"]
            .as_array()
            .is_some_and(|required| required.iter().any(|r| r == name))
    }

    /// The fields a query parameter can fill: those of a scalar type.
    fn scalar_fields(&self) -> impl Iterator<Item = &str> {
        let properties = self.schema["properties"].as_object().into_iter().flatten();
        properties
            .filter(|(_, schema)| is_scalar(schema))
            .map(|(name, _)| name.as_str())
    }

    /// The parameter that fills the field `name`, typed by the field's schema.
    fn parameter(&self, name: &str, location: &str) -> Value {
        let mut schema = self.property(name);
        let description = schema.as_object_mut().and_then(|s| s.remove("description"));
        let mut parameter = json!({
            "name": name,
            "in": location,
            "required": location == "path" || self.is_required(name),
            "schema": schema,
        });
        if let Some(description) = description {
            parameter["description"] = description;
        }
        parameter
    }

    /// The request body: the input without the fields the path fills. None when nothing is left
    /// for the body to carry.
    fn body(&self, path_params: &[&str]) -> Option<Value> {
        if self.is_none() {
            return None;
        }
        let mut body = self.schema.clone();
        if let Some(properties) = body.get_mut("properties").and_then(Value::as_object_mut) {
            properties.retain(|name, _| !path_params.contains(&name.as_str()));
            if properties.is_empty() && !path_params.is_empty() {
                return None;
            }
        }
        if let Some(required) = body.get_mut("required").and_then(Value::as_array_mut) {
            required.retain(|name| !path_params.iter().any(|param| name == param));
        }
        // An object whose fields are all optional may be left out: it reads as `{}`.
        let is_object = body.get("type").and_then(Value::as_str) == Some("object");
        let has_required = body["required"].as_array().is_some_and(|r| !r.is_empty());
        Some(json!({
            "required": has_required || !is_object,
            "content": {JSON: {"schema": body}},
        }))
    }
}

/// Whether a value of `schema` can be written as a single query or path parameter.
fn is_scalar(schema: &Value) -> bool {
    let scalar = |t: &Value| {
        matches!(
            t.as_str(),
            Some("string" | "integer" | "number" | "boolean")
        )
    };
    match schema.get("type") {
        Some(Value::Array(types)) => types.iter().all(|t| scalar(t) || t == "null"),
        Some(t) => scalar(t),
        None => false,
    }
}

/// The success of a route and the problems it can give.
fn responses(command: &CommandDescriptor, http: HttpRoute, output: Value) -> Value {
    let mut responses = Map::new();
    let success = match http.status {
        204 => json!({"description": "success, without content"}),
        _ => json!({"description": "success", "content": {JSON: {"schema": output}}}),
    };
    responses.insert(http.status.to_string(), success);
    for (status, name, _) in PROBLEMS {
        if matches!(status, 401 | 403) && command.guard.is_none() {
            continue;
        }
        let reference = format!("#/components/responses/{name}");
        responses.insert(status.to_string(), json!({"$ref": reference}));
    }
    // A handler may return any error (a 404, a 409...): each comes as a problem too.
    let other = "an error the command returns (`code` says which)";
    responses.insert("default".to_owned(), problem_response(other));
    responses.into()
}

/// The `Idempotency-Key` header as `http::request` accepts it: 1 to 255 visible ASCII characters.
fn idempotency_key_parameter() -> Value {
    json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": "Retry safely: a repeat with the same key and body gets the first response.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    })
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

/// The schema of the RFC 9457 problem documents Cohort sends ([`Problem`](crate::Problem)).
fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem document.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 100, "maximum": 599},
            "detail": {"type": "string"},
            "code": {"type": "string", "description": "A stable machine-readable code."},
            "field": {"type": "string", "description": "The path of the input field at fault."},
            "trace_id": {"type": "string", "description": "The trace the details were logged under."},
        },
    })
}

#[cfg(test)]
mod tests;
