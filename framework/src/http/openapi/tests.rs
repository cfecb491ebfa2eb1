use super::*;
use crate::context::Ctx;
use crate::error::Error;
use crate::registry::{Location, Package};
use bytes::Bytes;
use futures_util::future::BoxFuture;

fn noop(_: Ctx, _: Bytes) -> BoxFuture<'static, Result<Bytes, Error>> {
    Box::pin(async { Ok(Bytes::new()) })
}

fn deny(_: &Ctx) -> BoxFuture<'_, Result<(), Error>> {
    Box::pin(async { Err(Error::unauthorized("no")) })
}

#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct Line {
    /// The stock-keeping unit.
    #[schemars(length(min = 1, max = 8))]
    sku: String,
    qty: u32,
    note: Option<String>,
    item: Item,
}

#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct Item {
    #[schemars(range(min = 1))]
    count: u16,
}

fn command(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    guarded: bool,
) -> &'static CommandDescriptor {
    Box::leak(Box::new(CommandDescriptor {
        service: "shop",
        version: 1,
        name,
        description: "Does it.\n\nAt length.",
        timeout_ms: None,
        idempotent: false,
        input_schema: crate::__private::schema_for::<Line>,
        output_schema: crate::__private::schema_for::<Item>,
        http: Some(HttpRoute {
            method,
            path,
            status: 200,
        }),
        guard: guarded.then_some(deny as crate::registry::GuardFn),
        handler: noop,
        location: Location {
            file: "x.rs",
            line: 1,
        },
        package: Package {
            name: "shop",
            version: "1.2.3",
        },
    }))
}

fn document() -> Value {
    let commands = [
        command("read", "GET", "/lines/{sku}", false),
        command("write", "PUT", "/lines/{sku}", true),
    ];
    openapi(&commands, &ApiInfo::of_routes(&commands))
}

#[test]
fn path_parameters_take_their_fields_schema() {
    let doc = document();
    let read = &doc["paths"]["/lines/{sku}"]["get"];
    let sku = &read["parameters"][0];
    assert_eq!(sku["in"], "path");
    assert_eq!(sku["required"], true);
    assert_eq!(sku["description"], "The stock-keeping unit.");
    assert_eq!(
        sku["schema"],
        json!({"type": "string", "minLength": 1, "maxLength": 8})
    );
}

#[test]
fn get_takes_scalar_fields_from_the_query_and_no_body() {
    let doc = document();
    let read = &doc["paths"]["/lines/{sku}"]["get"];
    assert!(read.get("requestBody").is_none(), "{read}");
    let names: Vec<_> = read["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.get("$ref").is_none())
        .map(|p| {
            (
                p["name"].as_str(),
                p["in"].as_str(),
                p["required"].as_bool(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (Some("sku"), Some("path"), Some(true)),
            (Some("note"), Some("query"), Some(false)),
            (Some("qty"), Some("query"), Some(true)),
        ]
    );
    let qty = &read["parameters"][2]["schema"];
    assert_eq!(qty["maximum"], u32::MAX);
}

#[test]
fn put_takes_a_body_without_the_path_fields() {
    let doc = document();
    let write = &doc["paths"]["/lines/{sku}"]["put"];
    let body = &write["requestBody"];
    assert_eq!(body["required"], true);
    let schema = &body["content"][JSON]["schema"];
    assert!(schema["properties"].get("sku").is_none(), "{schema}");
    assert_eq!(schema["required"], json!(["qty", "item"]));
    assert_eq!(
        schema["properties"]["item"]["$ref"],
        "#/components/schemas/Item"
    );
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut references = Vec::new();
    collect_refs(&doc, &mut references);
    assert!(!references.is_empty());
    for reference in references {
        let pointer = reference.strip_prefix('#').expect("a local reference");
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
    let item = &doc["components"]["schemas"]["Item"]["properties"]["count"];
    assert_eq!(item["minimum"], 1);
    assert_eq!(item["maximum"], u16::MAX);
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("$ref") {
                into.push(reference.clone());
            }
            object.values().for_each(|v| collect_refs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}

#[test]
fn guarded_routes_need_the_session_cookie_and_may_answer_401_and_403() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["cookieAuth"];
    assert_eq!(
        scheme,
        &json!({"type": "apiKey", "in": "cookie", "name": "cohort_session"})
    );
    let write = &doc["paths"]["/lines/{sku}"]["put"];
    assert_eq!(write["security"], json!([{"cookieAuth": []}]));
    assert_eq!(
        write["responses"]["401"]["$ref"],
        "#/components/responses/Unauthorized"
    );
    assert_eq!(
        write["responses"]["403"]["$ref"],
        "#/components/responses/Forbidden"
    );
    let read = &doc["paths"]["/lines/{sku}"]["get"];
    assert!(read.get("security").is_none(), "{read}");
    assert!(read["responses"].get("401").is_none(), "{read}");
    assert_eq!(
        read["responses"]["422"]["$ref"],
        "#/components/responses/Invalid"
    );
    assert_eq!(doc["components"]["schemas"]["Problem"]["type"], "object");
}

#[test]
fn the_info_names_the_package_of_the_routes_unless_the_app_does() {
    let doc = document();
    assert_eq!(doc["info"], json!({"title": "shop", "version": "1.2.3"}));
    let commands = [command("read", "GET", "/lines/{sku}", false)];
    let info = ApiInfo::new("Shop", "2.0").description("The shop.");
    let doc = openapi(&commands, &info);
    assert_eq!(
        doc["info"],
        json!({"title": "Shop", "version": "2.0", "description": "The shop."})
    );
    let read = &doc["paths"]["/lines/{sku}"]["get"];
    assert_eq!(read["summary"], "Does it.");
    assert_eq!(read["description"], "At length.");
}

#[test]
fn every_route_takes_the_idempotency_key_header_and_may_answer_409() {
    let doc = document();
    let header = &doc["components"]["parameters"]["IdempotencyKey"];
    assert_eq!(header["name"], "Idempotency-Key");
    assert_eq!(header["in"], "header");
    assert_eq!(header["required"], false);
    assert_eq!(header["schema"]["maxLength"], 255);
    for operation in ["get", "put"].map(|m| &doc["paths"]["/lines/{sku}"][m]) {
        let parameters = operation["parameters"].as_array().expect("parameters");
        let reference = json!({"$ref": "#/components/parameters/IdempotencyKey"});
        assert!(parameters.contains(&reference), "{operation}");
        assert_eq!(
            operation["responses"]["409"]["$ref"],
            "#/components/responses/IdempotencyKeyInUse"
        );
    }
}
