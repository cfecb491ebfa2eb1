//! What the macros register, read back from `inventory` as the runtime reads it.

use std::time::Duration;

use cohort::__private::{
    CommandDescriptor, EventDescriptor, StartPosition, SubscriptionDescriptor, inventory,
};
use cohort::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
pub struct PlaceOrder {
    pub id: u64,
    pub sku: String,
}

#[derive(Serialize, JsonSchema)]
pub struct Placed {
    pub id: u64,
}

/// Places an order.
///
/// Charges the card first.
#[command(service = "orders", version = 2, timeout = "5s")]
#[http(POST, "/orders/{id}", status = 201)]
pub async fn place_order(_ctx: Ctx, input: PlaceOrder) -> Result<Placed, Error> {
    Ok(Placed { id: input.id })
}

/// Not the description: the option wins.
#[http(GET, "/orders/count")]
#[cohort::command(
    service = "orders",
    name = "count-orders",
    description = "Counts the orders."
)]
async fn count_orders(_ctx: Ctx) -> cohort::Result<u64> {
    Ok(0)
}

/// An error type of the user's own, converted by the handler.
pub struct OutOfStock;

impl From<OutOfStock> for Error {
    fn from(_: OutOfStock) -> Self {
        Error::internal("out of stock")
    }
}

// Named like the handler's locals, which must not shadow it.
#[command(service = "stock", timeout = "250ms")]
async fn input(_ctx: Ctx, input: PlaceOrder) -> Result<(), OutOfStock> {
    if input.sku.is_empty() {
        Err(OutOfStock)
    } else {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Event)]
pub struct OrderPlaced {
    pub id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "request_seen")]
pub struct HTTPRequest {}

#[derive(Serialize, Deserialize, Event)]
pub struct HTTPRequestSeen {}

/// Stock ran low.
#[derive(Serialize, Deserialize, JsonSchema, Event)]
pub struct StockLow {
    pub sku: String,
}

#[subscription(service = "stock")]
async fn reorder(_ctx: Ctx, _event: StockLow) -> Result<(), Error> {
    Ok(())
}

#[subscription(service = "audit", every_instance)]
async fn record_order(_ctx: Ctx, event: OrderPlaced) -> Result<(), Error> {
    let _ = event.id;
    Ok(())
}

#[subscription(service = "audit", every_instance, start = "last:100")]
async fn replay_orders(_ctx: Ctx, _event: OrderPlaced) -> Result<(), Error> {
    Ok(())
}

#[subscription(service = "audit", every_instance, start = "since:10m")]
async fn recent_orders(_ctx: Ctx, _event: OrderPlaced) -> Result<(), Error> {
    Ok(())
}

#[subscription(service = "audit", every_instance, start = "new")]
async fn new_orders(_ctx: Ctx, _event: OrderPlaced) -> Result<(), Error> {
    Ok(())
}

#[subscription(service = "audit", name = "log-request", every_instance = false)]
async fn log_request(_ctx: Ctx, _event: HTTPRequest) -> cohort::Result<()> {
    Ok(())
}

fn command(name: &str) -> &'static CommandDescriptor {
    inventory::iter::<CommandDescriptor>
        .into_iter()
        .find(|command| command.name == name)
        .unwrap_or_else(|| panic!("no command `{name}` is registered"))
}

fn subscription(name: &str) -> &'static SubscriptionDescriptor {
    inventory::iter::<SubscriptionDescriptor>
        .into_iter()
        .find(|subscription| subscription.name == name)
        .unwrap_or_else(|| panic!("no subscription `{name}` is registered"))
}

/// The source line a location names.
fn line_at(location: cohort::__private::Location) -> &'static str {
    assert!(location.file.ends_with("expand.rs"), "{}", location.file);
    include_str!("expand.rs")
        .lines()
        .nth(location.line as usize - 1)
        .unwrap_or_default()
}

#[test]
fn command_with_input_and_http_below() {
    let place = command("place_order");
    assert_eq!(place.service, "orders");
    assert_eq!(place.version, 2);
    assert_eq!(place.timeout_ms, Some(5_000));
    assert_eq!(
        place.description,
        "Places an order.\n\nCharges the card first."
    );
    let http = place
        .http
        .expect("the #[http] below #[command] is expanded with it");
    assert_eq!(
        (http.method, http.path, http.status),
        ("POST", "/orders/{id}", 201)
    );
    assert!(line_at(place.location).contains("async fn place_order"));
    let input = (place.input_schema)();
    assert!(
        input.get("properties").and_then(|p| p.get("sku")).is_some(),
        "{input:?}"
    );
    let output = (place.output_schema)();
    assert!(
        output.get("properties").and_then(|p| p.get("id")).is_some(),
        "{output:?}"
    );
}

#[test]
fn command_without_input_and_http_above() {
    let count = command("count-orders");
    assert_eq!(
        (count.service, count.version, count.timeout_ms),
        ("orders", 1, None)
    );
    assert_eq!(count.description, "Counts the orders.");
    let http = count
        .http
        .expect("the #[http] above #[command] is expanded with it");
    assert_eq!(
        (http.method, http.path, http.status),
        ("GET", "/orders/count", 200)
    );
    assert!(line_at(count.location).contains("async fn count_orders"));
}

#[test]
fn command_without_http_or_doc() {
    let stock = command("input");
    assert_eq!((stock.service, stock.timeout_ms), ("stock", Some(250)));
    assert_eq!(stock.description, "");
    assert!(stock.http.is_none());
}

#[test]
fn commands_are_types_for_typed_calls() {
    use cohort::Command;
    assert_eq!(place_order::SERVICE, "orders");
    assert_eq!(place_order::VERSION, 2);
    assert_eq!(place_order::NAME, "place_order");
    assert_eq!(place_order::TIMEOUT_MS, Some(5_000));
    assert_eq!(<count_orders as Command>::NAME, "count-orders");
    // The associated types are the function's: these only compile if they are.
    let _: fn(<place_order as Command>::Input) -> PlaceOrder = |input| input;
    let _: fn(<place_order as Command>::Output) -> Placed = |output| output;
    let _: fn(<count_orders as Command>::Input) = |()| ();
    let _: fn(<count_orders as Command>::Output) -> u64 = |output| output;
}

#[test]
fn events_are_named_in_snake_case_unless_named() {
    assert_eq!(<OrderPlaced as cohort::Event>::NAME, "order_placed");
    assert_eq!(
        <HTTPRequestSeen as cohort::Event>::NAME,
        "http_request_seen"
    );
    assert_eq!(<HTTPRequest as cohort::Event>::NAME, "request_seen");
}

#[test]
fn subscriptions_register_their_event() {
    let record = subscription("record_order");
    assert_eq!(
        (record.service, record.event, record.every_instance),
        ("audit", "order_placed", true)
    );
    assert!(line_at(record.location).contains("async fn record_order"));
    let log = subscription("log-request");
    assert_eq!((log.event, log.every_instance), ("request_seen", false));
}

fn event(name: &str) -> &'static EventDescriptor {
    inventory::iter::<EventDescriptor>
        .into_iter()
        .find(|event| event.name == name)
        .unwrap_or_else(|| panic!("no event `{name}` is registered"))
}

#[test]
fn an_event_has_a_schema_when_its_type_implements_json_schema() {
    let schema = <StockLow as cohort::Event>::schema().expect("StockLow derives JsonSchema");
    assert_eq!(schema.get("title"), Some(&"StockLow".into()));
    assert!(
        schema
            .get("properties")
            .and_then(|p| p.get("sku"))
            .is_some()
    );
    assert_eq!((event("stock_low").schema)(), Some(schema.clone()));
    assert_eq!((subscription("reorder").event_schema)(), Some(schema));

    assert_eq!(<OrderPlaced as cohort::Event>::schema(), None);
    assert_eq!((event("order_placed").schema)(), None);
    assert_eq!((subscription("record_order").event_schema)(), None);
}

#[test]
fn every_instance_subscriptions_keep_their_start() {
    let start = |name| subscription(name).start;
    assert_eq!(start("record_order"), StartPosition::Resume);
    assert_eq!(start("replay_orders"), StartPosition::Last(100));
    assert_eq!(
        start("recent_orders"),
        StartPosition::Since(Duration::from_secs(600))
    );
    assert_eq!(start("new_orders"), StartPosition::New);
}

/// Cleans up every half minute.
#[task(service = "stock", every = "30s")]
async fn sweep(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

#[cohort::task(service = "stock", name = "nightly_report", cron = "0 3 * * *")]
async fn report(_ctx: Ctx) -> cohort::Result<()> {
    Ok(())
}

#[task(service = "stock", on_start)]
async fn migrate(_ctx: Ctx) -> Result<(), OutOfStock> {
    Ok(())
}

fn task(name: &str) -> &'static cohort::__private::TaskDescriptor {
    inventory::iter::<cohort::__private::TaskDescriptor>
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("task `{name}` registered"))
}

#[test]
fn tasks_register_their_schedule_and_the_apps_version() {
    use cohort::__private::TaskSchedule;
    let sweep = task("sweep");
    assert_eq!(sweep.service, "stock");
    assert_eq!(sweep.schedule, TaskSchedule::Every { ms: 30_000 });
    assert_eq!(sweep.app_version, env!("CARGO_PKG_VERSION"));
    assert!(line_at(sweep.location).contains("async fn sweep"));
    assert_eq!(
        task("nightly_report").schedule,
        TaskSchedule::Cron {
            expression: "0 3 * * *"
        }
    );
    assert_eq!(task("migrate").schedule, TaskSchedule::OnStart);
}
