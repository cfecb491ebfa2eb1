//! Contender "orders baseline": the example app's `POST /orders` written by hand with axum,
//! async-nats and the redis crate, in the shape of the Cohort cluster.
//!
//! Every process answers `bench.orders` in a queue group; with an HTTP address it also serves
//! the API the orders benchmark uses, and sends each order there as a NATS request, so that it
//! runs on any process (this one or another), like a Cohort command. The process that runs an
//! order reads the session (the caller must be signed in), then one Lua script takes the stock,
//! draws the order id, writes the order, counts it and appends the `order_placed` event to the
//! outbox; then it publishes the event to JetStream and removes it from the outbox, as Cohort's
//! unit of work does.
//!
//! The rest of the API is served by the HTTP process itself, straight from Redis:
//! `POST /accounts` (accepts anyone: the benchmark only signs in), `POST /sessions` (sets the
//! `cohort_session` cookie), `PUT /stock/{sku}` (for the names in `SHOP_ADMINS`),
//! `GET /stock/{sku}` and `GET /audit` (`orders_recorded`).
//!
//! Env: `BENCH_NATS_URL` (default nats://127.0.0.1:4222), `BENCH_REDIS_URL` (default
//! redis://127.0.0.1:6379), `BENCH_ADDR` (default 127.0.0.1:8090; `off` = responder only),
//! `BENCH_INSTANCE` (default `orders-baseline`), `SHOP_ADMINS` (comma list, default none).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap, Message, RequestErrorKind};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap as HttpHeaders, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Router, serve};
use cohort_bench::{env_or, json_error, json_response};
use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ORDERS_SUBJECT: &str = "bench.orders";
const EVENT_SUBJECT: &str = "bench.events.orders.order_placed";
const OUTBOX: &str = "outbox:orders";
const ORDERS_RECORDED: &str = "orders:recorded";
const SESSION_COOKIE: &str = "cohort_session";
const SESSION_TTL_SECS: u64 = 24 * 3600;
const MAX_QTY: u64 = 1000;

/// The unit of an order, atomic on the server. `KEYS`: the stock, the id sequence, the count of
/// orders, the outbox; `ARGV`: qty, sku, the user as a JSON string, the event's subject, its
/// headers as JSON.
/// Returns `{id, outbox entry id}`, or `{0}` when the stock is short (nothing written).
const PLACE_ORDER: &str = r#"
local qty = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') < qty then return {0} end
redis.call('DECRBY', KEYS[1], qty)
local id = redis.call('INCR', KEYS[2])
local order = '{"id":' .. id .. ',"sku":"' .. ARGV[2] .. '","qty":' .. qty .. ',"placed_by":' .. ARGV[3] .. '}'
redis.call('SET', 'order:' .. id, order)
redis.call('INCR', KEYS[3])
local event = '{"id":' .. id .. ',"sku":"' .. ARGV[2] .. '","qty":' .. qty .. '}'
local entry = redis.call('XADD', KEYS[4], '*', 's', ARGV[4], 'h', ARGV[5], 'p', event)
return {id, entry}
"#;

#[derive(Debug, Deserialize, Serialize)]
struct PlaceOrder {
    sku: String,
    qty: u64,
}

/// What the HTTP process sends the responders: the order and the caller's session.
#[derive(Debug, Deserialize, Serialize)]
struct OrderRequest {
    session: String,
    #[serde(flatten)]
    order: PlaceOrder,
}

#[derive(Debug, Serialize)]
struct Order<'a> {
    id: u64,
    sku: &'a str,
    qty: u64,
    placed_by: &'a str,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stock {
    sku: String,
    qty: u64,
}

#[derive(Debug, Deserialize)]
struct Credentials {
    username: String,
}

/// A session's record in Redis: who signed in.
#[derive(Debug, Serialize, Deserialize)]
struct Principal {
    name: String,
}

#[derive(Clone)]
struct Shared {
    nats: Client,
    jetstream: jetstream::Context,
    redis: ConnectionManager,
    place_order: Arc<Script>,
    admins: Arc<Vec<String>>,
    instance: Arc<str>,
}

fn valid_sku(sku: &str) -> bool {
    (1..=32).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn session_key(id: &str) -> String {
    format!("session:{id}")
}

fn stock_key(sku: &str) -> String {
    format!("stock:{sku}")
}

/// A reply on NATS: the HTTP status in three digits, then the JSON body.
fn reply(status: StatusCode, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(3 + body.len());
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(body);
    out.into()
}

fn error_reply(status: StatusCode, message: &str) -> Bytes {
    reply(
        status,
        serde_json::json!({ "error": message })
            .to_string()
            .as_bytes(),
    )
}

/// The signed-in user of session `id`, if any.
async fn principal(shared: &Shared, id: &str) -> redis::RedisResult<Option<String>> {
    let mut redis = shared.redis.clone();
    let record: Option<Vec<u8>> = redis::cmd("GET")
        .arg(session_key(id))
        .query_async(&mut redis)
        .await?;
    Ok(record
        .and_then(|r| serde_json::from_slice::<Principal>(&r).ok())
        .map(|p| p.name))
}

/// Runs one order: the session check, the unit's script, then the event out of the outbox.
async fn place_order(shared: &Shared, request: &OrderRequest) -> Bytes {
    let user = match principal(shared, &request.session).await {
        Ok(Some(user)) => user,
        Ok(None) => return error_reply(StatusCode::UNAUTHORIZED, "sign in first"),
        Err(_) => return error_reply(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable"),
    };
    let PlaceOrder { sku, qty } = &request.order;
    let headers = event_headers(shared, &user, &request.session);
    let (Ok(user_json), Ok(headers_json)) = (serde_json::to_string(&user), headers_json(&headers))
    else {
        return error_reply(StatusCode::INTERNAL_SERVER_ERROR, "encode failed");
    };
    let mut redis = shared.redis.clone();
    let placed: redis::RedisResult<(u64, Option<String>)> = shared
        .place_order
        .key(stock_key(sku))
        .key("order:next_id")
        .key(ORDERS_RECORDED)
        .key(OUTBOX)
        .arg(qty)
        .arg(sku)
        .arg(user_json)
        .arg(EVENT_SUBJECT)
        .arg(headers_json)
        .invoke_async(&mut redis)
        .await;
    let (id, entry) = match placed {
        Ok((id, Some(entry))) if id > 0 => (id, entry),
        Ok(_) => return error_reply(StatusCode::CONFLICT, "not enough stock"),
        Err(_) => return error_reply(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable"),
    };
    let event = serde_json::json!({ "id": id, "sku": sku, "qty": qty }).to_string();
    relay(shared, entry, headers, event).await;
    let order = Order {
        id,
        sku: sku.as_str(),
        qty: *qty,
        placed_by: &user,
    };
    match serde_json::to_vec(&order) {
        Ok(body) => reply(StatusCode::CREATED, &body),
        Err(_) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, "encode failed"),
    }
}

/// The headers of an event, the same Cohort's carry (so the outbox entries and the stream's
/// messages have the same size): a message id, the deadline, the instance, who placed it and
/// from which session, the service and the trace.
fn event_headers(shared: &Shared, user: &str, session: &str) -> HeaderMap {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let deadline = (now + Duration::from_secs(30)).as_millis().to_string();
    let trace = format!(
        "00-{:032x}-{:016x}-01",
        rand::random::<u128>(),
        rand::random::<u64>()
    );
    let mut headers = HeaderMap::new();
    let message_id = format!("{:024x}", rand::random::<u128>() >> 32);
    headers.insert("Cohort-Deadline", deadline.as_str());
    headers.insert("Cohort-Instance", shared.instance.as_ref());
    headers.insert("Cohort-Message-Id", message_id.as_str());
    headers.insert("Cohort-Principal", user);
    headers.insert("Cohort-Service", "orders");
    headers.insert("Cohort-Session", session);
    headers.insert("traceparent", trace.as_str());
    headers
}

fn headers_json(headers: &HeaderMap) -> serde_json::Result<String> {
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .filter_map(|(name, values)| Some((name.to_string(), values.first()?.as_str().into())))
        .collect();
    serde_json::to_string(&map)
}

/// Publishes the outbox entry's event to JetStream, waits until it is stored, and removes the
/// entry off the caller's path. An entry whose publish failed stays in the outbox.
async fn relay(shared: &Shared, entry: String, mut headers: HeaderMap, event: String) {
    headers.insert("Nats-Msg-Id", entry.as_str());
    let stored = match shared
        .jetstream
        .publish_with_headers(EVENT_SUBJECT, headers, event.into())
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if !stored {
        eprintln!("orders baseline: event {entry} stays in the outbox");
        return;
    }
    let mut redis = shared.redis.clone();
    tokio::spawn(async move {
        let removed: redis::RedisResult<u64> = redis::cmd("XDEL")
            .arg(OUTBOX)
            .arg(&entry)
            .query_async(&mut redis)
            .await;
        if let Err(e) = removed {
            eprintln!("orders baseline: could not remove {entry} from the outbox: {e}");
        }
    });
}

async fn respond(shared: Shared, msg: Message) {
    let Some(reply_to) = msg.reply else { return };
    let answer = match serde_json::from_slice::<OrderRequest>(&msg.payload) {
        Ok(request) => place_order(&shared, &request).await,
        Err(_) => error_reply(StatusCode::BAD_REQUEST, "malformed order request"),
    };
    if let Err(e) = shared.nats.publish(reply_to, answer).await {
        eprintln!("orders baseline: reply failed: {e}");
    }
}

async fn run_responder(shared: Shared, instance: String) -> Result<(), BoxError> {
    use futures_util::StreamExt as _;
    let queue = format!("{ORDERS_SUBJECT}.q");
    let mut sub = shared
        .nats
        .queue_subscribe(ORDERS_SUBJECT, queue.clone())
        .await?;
    shared.nats.flush().await?;
    eprintln!("orders baseline {instance}: responder ready on {ORDERS_SUBJECT} (queue {queue})");
    while let Some(msg) = sub.next().await {
        // An order waits on Redis and JetStream: each runs on its own task.
        tokio::spawn(respond(shared.clone(), msg));
    }
    Err("subscription closed".into())
}

/// The `cohort_session` cookie of a request.
fn session_of(headers: &HttpHeaders) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

async fn post_order(State(shared): State<Shared>, headers: HttpHeaders, body: Bytes) -> Response {
    let Ok(order) = serde_json::from_slice::<PlaceOrder>(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "malformed order");
    };
    if !valid_sku(&order.sku) || !(1..=MAX_QTY).contains(&order.qty) {
        return json_error(StatusCode::BAD_REQUEST, "invalid sku or qty");
    }
    let Some(session) = session_of(&headers) else {
        return json_error(StatusCode::UNAUTHORIZED, "sign in first");
    };
    let request = OrderRequest {
        session: session.to_owned(),
        order,
    };
    let Ok(payload) = serde_json::to_vec(&request) else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "encode failed");
    };
    match shared.nats.request(ORDERS_SUBJECT, payload.into()).await {
        Ok(msg) => relay_reply(&msg.payload),
        Err(e) => match e.kind() {
            RequestErrorKind::NoResponders => {
                json_error(StatusCode::SERVICE_UNAVAILABLE, "no responders")
            }
            RequestErrorKind::TimedOut => json_error(StatusCode::GATEWAY_TIMEOUT, "timed out"),
            _ => json_error(StatusCode::BAD_GATEWAY, "nats request failed"),
        },
    }
}

/// The HTTP answer of a responder's reply (see [`reply`]).
fn relay_reply(payload: &Bytes) -> Response {
    let status = payload
        .get(..3)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    match status {
        Some(status) => json_response(status, payload.slice(3..)),
        None => json_error(StatusCode::BAD_GATEWAY, "malformed reply"),
    }
}

async fn post_account() -> Response {
    json_response(StatusCode::CREATED, "{}")
}

async fn post_session(State(shared): State<Shared>, body: Bytes) -> Response {
    let Ok(credentials) = serde_json::from_slice::<Credentials>(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "malformed credentials");
    };
    let id = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let Ok(record) = serde_json::to_vec(&Principal {
        name: credentials.username,
    }) else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "encode failed");
    };
    let mut redis = shared.redis.clone();
    let stored: redis::RedisResult<()> = redis::cmd("SET")
        .arg(session_key(&id))
        .arg(record)
        .arg("EX")
        .arg(SESSION_TTL_SECS)
        .query_async(&mut redis)
        .await;
    if stored.is_err() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable");
    }
    let mut response = json_response(StatusCode::OK, "{}");
    if let Ok(cookie) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly")) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn put_stock(
    State(shared): State<Shared>,
    Path(sku): Path<String>,
    headers: HttpHeaders,
    body: Bytes,
) -> Response {
    #[derive(Deserialize)]
    struct Qty {
        qty: u64,
    }
    let Ok(Qty { qty }) = serde_json::from_slice(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "malformed stock");
    };
    if !valid_sku(&sku) {
        return json_error(StatusCode::BAD_REQUEST, "invalid sku");
    }
    let user = match session_of(&headers) {
        Some(id) => principal(&shared, id).await,
        None => Ok(None),
    };
    match user {
        Ok(Some(user)) if shared.admins.contains(&user) => {}
        Ok(_) => return json_error(StatusCode::FORBIDDEN, "admins only"),
        Err(_) => return json_error(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable"),
    }
    let mut redis = shared.redis.clone();
    let set: redis::RedisResult<()> = redis::cmd("SET")
        .arg(stock_key(&sku))
        .arg(qty)
        .query_async(&mut redis)
        .await;
    match set {
        Ok(()) => stock_response(sku, qty),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable"),
    }
}

async fn get_stock(State(shared): State<Shared>, Path(sku): Path<String>) -> Response {
    if !valid_sku(&sku) {
        return json_error(StatusCode::BAD_REQUEST, "invalid sku");
    }
    match get_count(&shared, &stock_key(&sku)).await {
        Ok(qty) => stock_response(sku, qty),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable"),
    }
}

fn stock_response(sku: String, qty: u64) -> Response {
    match serde_json::to_vec(&Stock { sku, qty }) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "encode failed"),
    }
}

async fn get_audit(State(shared): State<Shared>) -> Response {
    match get_count(&shared, ORDERS_RECORDED).await {
        Ok(n) => json_response(
            StatusCode::OK,
            serde_json::json!({ "orders_recorded": n }).to_string(),
        ),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable"),
    }
}

/// The integer at `key`, 0 when absent.
async fn get_count(shared: &Shared, key: &str) -> redis::RedisResult<u64> {
    let mut redis = shared.redis.clone();
    let value: Option<u64> = redis::cmd("GET").arg(key).query_async(&mut redis).await?;
    Ok(value.unwrap_or(0))
}

/// The events stream, as Cohort makes its own: file storage, limits retention, the same
/// duplicate window.
async fn ensure_stream(jetstream: &jetstream::Context) -> Result<(), BoxError> {
    jetstream
        .get_or_create_stream(stream::Config {
            name: "BENCH_EVENTS".to_owned(),
            subjects: vec!["bench.events.>".to_owned()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let nats_url = env_or("BENCH_NATS_URL", "nats://127.0.0.1:4222");
    let redis_url = env_or("BENCH_REDIS_URL", "redis://127.0.0.1:6379");
    let addr = env_or("BENCH_ADDR", "127.0.0.1:8090");
    let instance = env_or("BENCH_INSTANCE", "orders-baseline");
    let admins = env_or("SHOP_ADMINS", "")
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();

    let nats = async_nats::ConnectOptions::new()
        .name(format!("bench-orders-baseline-{instance}"))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(&nats_url)
        .await?;
    let jetstream = jetstream::new(nats.clone());
    ensure_stream(&jetstream).await?;
    let redis = redis::Client::open(redis_url)?
        .get_connection_manager()
        .await?;
    let shared = Shared {
        nats,
        jetstream,
        redis,
        place_order: Arc::new(Script::new(PLACE_ORDER)),
        admins: Arc::new(admins),
        instance: instance.as_str().into(),
    };

    let responder = tokio::spawn(run_responder(shared.clone(), instance.clone()));
    if addr == "off" {
        return responder.await?;
    }
    let app = Router::new()
        .route("/orders", post(post_order))
        .route("/accounts", post(post_account))
        .route("/sessions", post(post_session))
        .route("/stock/{sku}", put(put_stock).get(get_stock))
        .route("/audit", get(get_audit))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("orders baseline {instance}: listening on {addr}");
    tokio::select! {
        r = serve(listener, app) => r?,
        r = responder => r??,
    }
    Ok(())
}

// The same allocator as the Cohort contenders, so that the comparison measures the code only.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
