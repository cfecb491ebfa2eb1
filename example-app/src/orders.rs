//! Stock and orders. An order is one unit of work: the stock it takes, the order it records and
//! the `OrderPlaced` it announces commit together or not at all, and concurrent orders on any
//! number of instances never sell more than there is.

use cohort::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::accounts::admin;
use crate::settings::{ORDER_QUANTITY_LIMIT, ShopConfig};

/// What a SKU is made of (its length is bounded too, where it is declared).
const SKU_PATTERN: &str = "^[A-Za-z0-9_-]+$";

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct SetStock {
    /// A stock-keeping unit: letters, digits, `-` and `_`.
    #[schemars(length(min = 1, max = 32), pattern(SKU_PATTERN))]
    pub sku: String,
    #[schemars(range(max = 1_000_000_000))]
    pub qty: u64,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Stock {
    pub sku: String,
    pub qty: u64,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct PlaceOrder {
    /// A stock-keeping unit: letters, digits, `-` and `_`.
    #[schemars(length(min = 1, max = 32), pattern(SKU_PATTERN))]
    pub sku: String,
    /// 1 to 1000 per order; a deployment may allow fewer (`SHOP_MAX_ORDER_QUANTITY`).
    #[schemars(range(min = 1, max = ORDER_QUANTITY_LIMIT))]
    pub qty: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Order {
    pub id: u64,
    pub sku: String,
    pub qty: u64,
    /// The user who placed it: the only one who may read it.
    pub placed_by: String,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct OrderId {
    pub id: u64,
}

/// Published when an order has been placed. `JsonSchema` gives it a schema hash, which the
/// instances compare to find a build that changed it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Event)]
#[event(name = "order_placed")]
pub struct OrderPlaced {
    pub id: u64,
    pub sku: String,
    pub qty: u64,
}

/// Sets the stock of a SKU (admins only).
#[command(service = "orders", version = 1, guard = admin)]
#[http(PUT, "/stock/{sku}")]
pub async fn set_stock(ctx: Ctx, input: SetStock) -> Result<Stock, Error> {
    ctx.state().put(&stock_key(&input.sku), &input.qty).await?;
    Ok(Stock {
        sku: input.sku,
        qty: input.qty,
    })
}

/// The stock of a SKU (0 when never set).
#[command(service = "orders", version = 1)]
#[http(GET, "/stock/{sku}")]
pub async fn get_stock(ctx: Ctx, input: StockQuery) -> Result<Stock, Error> {
    let qty = ctx
        .state()
        .get::<u64>(&stock_key(&input.sku))
        .await?
        .unwrap_or(0);
    Ok(Stock {
        sku: input.sku,
        qty,
    })
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct StockQuery {
    /// A stock-keeping unit: letters, digits, `-` and `_`.
    #[schemars(length(min = 1, max = 32), pattern(SKU_PATTERN))]
    pub sku: String,
}

/// Takes `qty` of a SKU's stock, or fails with 409 leaving it untouched: for other services and
/// plain NATS clients (a warehouse system, say).
#[command(service = "orders", version = 1, timeout = "5s")]
pub async fn take_stock(ctx: Ctx, input: PlaceOrder) -> Result<Stock, Error> {
    let sku = input.sku.clone();
    ctx.transaction(async move |tx| {
        tx.take(&stock_key(&input.sku), input.qty, out_of_stock(&input.sku));
        Ok(())
    })
    .await?;
    get_stock(ctx, StockQuery { sku }).await
}

/// Places an order for the signed-in user: takes the stock, records the order and announces it,
/// as one unit of work.
#[command(service = "orders", version = 1, guard = cohort::guard::signed_in)]
#[http(POST, "/orders", status = 201)]
pub async fn place_order(ctx: Ctx, input: PlaceOrder) -> Result<Order, Error> {
    let max = ctx.config::<ShopConfig>().max_order_quantity;
    if input.qty > u64::from(max) {
        return Err(Error::invalid("qty", format!("at most {max} per order")));
    }
    let placed_by = cohort::guard::principal(&ctx).await?.name;
    // The events and calls of the order name its user.
    let ctx = ctx.with_principal(&placed_by);
    // Like a database sequence: unique and increasing, with a gap when the order fails.
    let id = ctx.state().increment("order:next_id", 1).await? as u64;
    // The unit returns the order it records: a repeat of the request (an Idempotency-Key) that
    // finds the unit applied gets that order back, not one with the id it drew itself.
    let order = ctx
        .transaction(async move |tx| {
            let order = Order {
                id,
                sku: input.sku.clone(),
                qty: input.qty,
                placed_by: placed_by.clone(),
            };
            tx.take(&stock_key(&order.sku), order.qty, out_of_stock(&order.sku));
            tx.put(&order_key(id), &order)?;
            tx.add(ORDERS_RECORDED, 1);
            tx.emit(&OrderPlaced {
                id,
                sku: order.sku.clone(),
                qty: order.qty,
            })?;
            Ok(order)
        })
        .await?;
    // Logged inside the command's span: the line carries the request's trace id.
    tracing::info!(order = order.id, sku = %order.sku, "order placed");
    Ok(order)
}

/// How many orders were recorded, counted in the unit that records each.
#[command(service = "orders", version = 1)]
pub async fn orders_recorded(ctx: Ctx) -> Result<u64, Error> {
    Ok(ctx.state().get(ORDERS_RECORDED).await?.unwrap_or(0))
}

fn out_of_stock(sku: &str) -> Error {
    Error::conflict(format!("not enough `{sku}` in stock")).with_code("insufficient_stock")
}

/// An order by id, for the user who placed it. Another user's order is "not found", like one
/// that does not exist: whether it does is none of their business.
#[command(service = "orders", version = 1, guard = cohort::guard::signed_in)]
#[http(GET, "/orders/{id}")]
pub async fn get_order(ctx: Ctx, input: OrderId) -> Result<Order, Error> {
    let user = cohort::guard::principal(&ctx).await?.name;
    ctx.state()
        .get::<Order>(&order_key(input.id))
        .await?
        .filter(|order| order.placed_by == user)
        .ok_or_else(|| Error::not_found(format!("no order {}", input.id)))
}

/// The count of orders recorded.
const ORDERS_RECORDED: &str = "orders:recorded";

fn stock_key(sku: &str) -> String {
    format!("stock:{sku}")
}

fn order_key(id: u64) -> String {
    format!("order:{id}")
}
