//! The OpenAPI 3.1 document of the HTTP routes, from the commands' JSON schemas.

use serde_json::{Map, Value, json};

use crate::message::{JSON, PROBLEM_JSON};
use crate::registry::{CommandDescriptor, route_params};

use super::cookie::SESSION_COOKIE;

/// The security scheme of a guarded route: the session cookie.
const COOKIE_AUTH: &str = "cookieAuth";

/// An OpenAPI 3.1 document of the HTTP routes, from the commands' JSON schemas.
pub(super) fn openapi(commands: &[&'static CommandDescriptor]) -> Value {
    let mut paths = Map::new();
    for command in commands {
        let Some(http) = command.http else { continue };
        let params: Vec<Value> = route_params(http.path)
            .map(|name| serde_json::json!({"name": name, "in": "path", "required": true, "schema": {}}))
            .collect();
        let mut operation = json!({
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
        if command.guard.is_some() {
            guarded(&mut operation);
        }
        let path_item = paths
            .entry(http.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = path_item {
            item.insert(http.method.to_ascii_lowercase(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Cohort API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                COOKIE_AUTH: {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
            "schemas": {"Problem": problem_schema()},
        },
    })
}

/// A guarded route needs the session cookie, and may answer 401 (not signed in) or 403 (signed
/// in without the right).
fn guarded(operation: &mut Value) {
    operation["security"] = json!([{COOKIE_AUTH: []}]);
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        })
    };
    operation["responses"]["401"] = problem("not signed in");
    operation["responses"]["403"] = problem("signed in without the right to this");
}

/// The schema of the RFC 9457 problem documents Cohort sends ([`Problem`](crate::Problem)).
fn problem_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "field": {"type": "string"},
            "trace_id": {"type": "string"},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Ctx;
    use crate::error::Error;
    use crate::registry::{HttpRoute, Location};
    use bytes::Bytes;
    use futures_util::future::BoxFuture;

    fn noop(_: Ctx, _: Bytes) -> BoxFuture<'static, Result<Bytes, Error>> {
        Box::pin(async { Ok(Bytes::new()) })
    }

    fn deny(_: &Ctx) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Err(Error::unauthorized("no")) })
    }

    fn command(
        name: &'static str,
        path: &'static str,
        guarded: bool,
    ) -> &'static CommandDescriptor {
        Box::leak(Box::new(CommandDescriptor {
            service: "shop",
            version: 1,
            name,
            description: "",
            timeout_ms: None,
            idempotent: false,
            input_schema: || schemars::schema_for!(()),
            output_schema: || schemars::schema_for!(()),
            http: Some(HttpRoute {
                method: "GET",
                path,
                status: 200,
            }),
            guard: guarded.then_some(deny as crate::registry::GuardFn),
            handler: noop,
            location: Location {
                file: "x.rs",
                line: 1,
            },
        }))
    }

    #[test]
    fn guarded_routes_need_the_session_cookie_and_may_answer_401_and_403() {
        let doc = openapi(&[
            command("open", "/open", false),
            command("shut", "/shut", true),
        ]);
        let scheme = &doc["components"]["securitySchemes"]["cookieAuth"];
        assert_eq!(
            scheme,
            &json!({"type": "apiKey", "in": "cookie", "name": "cohort_session"})
        );
        let shut = &doc["paths"]["/shut"]["get"];
        assert_eq!(shut["security"], json!([{"cookieAuth": []}]));
        for status in ["401", "403"] {
            let schema = &shut["responses"][status]["content"][PROBLEM_JSON]["schema"];
            assert_eq!(schema["$ref"], "#/components/schemas/Problem", "{status}");
        }
        let open = &doc["paths"]["/open"]["get"];
        assert!(open.get("security").is_none(), "{open}");
        assert!(open["responses"].get("401").is_none(), "{open}");
        assert_eq!(doc["components"]["schemas"]["Problem"]["type"], "object");
    }
}
