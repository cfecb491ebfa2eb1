//! The OpenAPI contract of the example shop: the document's shape (typed parameters, bodies only
//! where read, every response, references that resolve, the constraints of the inputs), and the
//! runtime refusing with a 422 naming the field each input that breaks one of those constraints.

use cohort_tests::{Client, assert_problem, base_url, start_embedded};
use serde_json::{Value, json};

async fn document(client: &Client) -> Value {
    let reply = client.get("/openapi.json").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

#[tokio::test]
async fn the_document_types_parameters_and_sends_bodies_only_where_read() {
    let running = start_embedded(|_| {}).await;
    let doc = document(&Client::new(base_url(&running))).await;
    assert_eq!(doc["openapi"], "3.1.0");
    // No `api_info` here: the default names the package that declares the routes.
    assert_eq!(
        doc["info"],
        json!({"title": "example-app", "version": env!("CARGO_PKG_VERSION")})
    );

    let get_order = &doc["paths"]["/orders/{id}"]["get"];
    assert!(get_order.get("requestBody").is_none(), "{get_order}");
    assert_eq!(
        get_order["parameters"],
        json!([{"name": "id", "in": "path", "required": true, "schema":
            {"type": "integer", "format": "uint64", "minimum": 0, "maximum": u64::MAX}},
            {"$ref": "#/components/parameters/IdempotencyKey"}])
    );
    let log_out = &doc["paths"]["/sessions"]["delete"];
    assert!(log_out.get("requestBody").is_none(), "{log_out}");
    assert_eq!(
        log_out["parameters"],
        json!([{"$ref": "#/components/parameters/IdempotencyKey"}])
    );
    assert_eq!(
        doc["components"]["parameters"]["IdempotencyKey"]["schema"],
        json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"})
    );
    assert!(
        log_out["responses"]["204"].get("content").is_none(),
        "{log_out}"
    );

    let sku = &doc["paths"]["/stock/{sku}"]["get"]["parameters"][0];
    assert_eq!(sku["in"], "path");
    assert_eq!(sku["schema"]["pattern"], "^[A-Za-z0-9_-]+$");
    assert_eq!(sku["schema"]["minLength"], 1);
    assert_eq!(sku["schema"]["maxLength"], 32);

    let set_stock = &doc["paths"]["/stock/{sku}"]["put"];
    let body = &set_stock["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(set_stock["requestBody"]["required"], true);
    assert!(
        body["properties"].get("sku").is_none(),
        "the path fills it: {body}"
    );
    assert_eq!(body["required"], json!(["qty"]));
    assert_eq!(body["properties"]["qty"]["maximum"], 1_000_000_000);

    let place_order = &doc["paths"]["/orders"]["post"];
    let qty =
        &place_order["requestBody"]["content"]["application/json"]["schema"]["properties"]["qty"];
    assert_eq!(
        (&qty["minimum"], &qty["maximum"]),
        (&json!(1), &json!(1000))
    );
    let responses = &place_order["responses"];
    for status in [
        "201", "400", "401", "403", "408", "413", "422", "500", "503", "504", "default",
    ] {
        assert!(responses.get(status).is_some(), "{status}: {responses}");
    }
    let credentials =
        &doc["paths"]["/accounts"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(credentials["properties"]["username"]["minLength"], 3);
    assert_eq!(credentials["properties"]["username"]["maxLength"], 32);
    running.shutdown().await.expect("shuts down");
}

#[test]
fn api_info_reads_the_calling_package() {
    let info = cohort::api_info!();
    assert_eq!(info.title, "cohort-tests");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        info.description.as_deref(),
        Some(env!("CARGO_PKG_DESCRIPTION")).filter(|d| !d.is_empty())
    );
}

#[tokio::test]
async fn every_reference_in_the_document_resolves() {
    let running = start_embedded(|_| {}).await;
    let doc = document(&Client::new(base_url(&running))).await;
    let mut references = Vec::new();
    references_in(&doc, &mut references);
    assert!(references.len() > 20, "{references:?}");
    for reference in references {
        let pointer = reference.strip_prefix('#').expect("a local reference");
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
    // A nested type of the output (the audit's maps are inline; the problem is a component).
    assert_eq!(doc["components"]["schemas"]["Problem"]["type"], "object");
    running.shutdown().await.expect("shuts down");
}

fn references_in(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("$ref") {
                into.push(reference.clone());
            }
            object.values().for_each(|v| references_in(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| references_in(v, into)),
        _ => {}
    }
}

/// Asserts a 422 whose problem names `field`.
fn assert_invalid(reply: &cohort_tests::Reply, field: &str) {
    assert_problem(reply, 422);
    assert_eq!(reply.body["field"], field, "{}", reply.text);
}

#[tokio::test]
async fn each_declared_constraint_is_enforced_with_a_422_naming_the_field() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    for (body, field) in [
        (json!({"username": "al", "password": "pw"}), "username"),
        (
            json!({"username": "a".repeat(33), "password": "pw"}),
            "username",
        ),
        (json!({"username": "carol", "password": ""}), "password"),
        (
            json!({"username": "carol", "password": "x".repeat(257)}),
            "password",
        ),
        (json!({"password": "pw"}), "username"),
    ] {
        assert_invalid(&client.post("/accounts", body).await, field);
    }
    let reply = client
        .post(
            "/accounts",
            json!({"username": "carol", "password": "hunter2x"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);

    assert_invalid(&client.get("/stock/not%20a%20sku").await, "sku");
    assert_invalid(
        &client.get(&format!("/stock/{}", "s".repeat(33))).await,
        "sku",
    );
    assert_eq!(client.get("/stock/tea-1_X").await.status, 200);

    client.sign_in_admin().await;
    assert_invalid(
        &client
            .put("/stock/tea", json!({"qty": 1_000_000_001u64}))
            .await,
        "qty",
    );
    assert_eq!(
        client.put("/stock/tea", json!({"qty": 5})).await.status,
        200
    );
    for (body, field) in [
        (json!({"sku": "tea", "qty": 0}), "qty"),
        (json!({"sku": "tea", "qty": 1001}), "qty"),
        (json!({"sku": "", "qty": 1}), "sku"),
        (json!({"sku": "tea!", "qty": 1}), "sku"),
    ] {
        assert_invalid(&client.post("/orders", body).await, field);
    }
    let message = client
        .post(
            "/accounts",
            json!({"username": "al", "password": "secret-pw"}),
        )
        .await;
    assert!(!message.text.contains("secret-pw"), "{}", message.text);
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn inputs_are_read_as_the_schema_says() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    // JSON Schema counts `2.0` as an integer; serde alone would refuse it.
    let reply = client.post("/echo", json!({"text": "hi", "n": 2.0})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["n"], 3);
    // The schema allows every i64, so every i64 has its n + 1.
    let reply = client
        .post("/echo", json!({"text": "hi", "n": i64::MAX}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["n"].to_string(), "9223372036854775808");
    // serde would read a struct from an array: the schema says object.
    let reply = client.post("/echo", json!(["hi", 1])).await;
    assert_problem(&reply, 422);
    // A path parameter takes the whole range of its u64 field.
    let reply = client.get(&format!("/orders/{}", u64::MAX)).await;
    assert_problem(&reply, 401);
    running.shutdown().await.expect("shuts down");
}
