//! `GET /metrics`: the gauges read at scrape time (connections, pending events, tasks), then the
//! text.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::join_all;
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use tokio::time::timeout;

use super::{Metrics, QualifiedName, SubscriptionLabels};
use crate::broker::spi::{SubscriptionSpec, SubscriptionStats};
use crate::runtime::Runtime;

/// How long a scrape waits for the broker or the store to answer: a scrape must not hang on an
/// outage, which the connection gauges then show.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a scrape reads besides the recorded metrics: the broker and store of the instance, and the
/// subscriptions it runs, whose pending events the broker knows.
pub(crate) struct Scraper {
    runtime: Arc<Runtime>,
    subscriptions: Vec<(QualifiedName, SubscriptionSpec)>,
}

impl Scraper {
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        subscriptions: Vec<(QualifiedName, SubscriptionSpec)>,
    ) -> Scraper {
        Scraper {
            runtime,
            subscriptions,
        }
    }

    async fn render(&self) -> Response {
        let Some(metrics) = &self.runtime.metrics else {
            return axum::http::StatusCode::NOT_FOUND.into_response();
        };
        self.refresh(metrics).await;
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode()).into_response()
    }

    /// Reads the tasks' gauges, and those that only the broker and the store know, all at once.
    async fn refresh(&self, metrics: &Metrics) {
        metrics.show_tasks(&crate::task::run_here(&self.runtime));
        let broker = &self.runtime.broker;
        let connected = broker.is_ready();
        metrics.broker_connected.set(i64::from(connected));
        let store = async {
            let answered = timeout(PROBE_TIMEOUT, self.runtime.store.ping()).await;
            metrics
                .store_connected
                .set(i64::from(matches!(answered, Ok(Ok(())))));
        };
        // Without the broker, the last counts stand: asking would only wait out the timeout.
        let pending = self
            .subscriptions
            .iter()
            .filter(|_| connected)
            .map(|(subscription, spec)| async move {
                match timeout(PROBE_TIMEOUT, broker.subscription_stats(spec)).await {
                    Ok(Ok(Some(SubscriptionStats { pending: count, .. }))) => {
                        let labels = SubscriptionLabels {
                            subscription: *subscription,
                        };
                        let count = i64::try_from(count).unwrap_or(i64::MAX);
                        metrics.pending.get_or_create(&labels).set(count);
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, subscription = %spec.durable, "cannot read the pending events")
                    }
                    Err(_) => {
                        tracing::debug!(subscription = %spec.durable, "the broker did not tell the pending events in time")
                    }
                }
            });
        futures_util::join!(store, join_all(pending));
    }
}

/// The router of `GET /metrics`.
pub(crate) fn router(scraper: Arc<Scraper>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let scraper = scraper.clone();
            async move { scraper.render().await }
        }),
    )
}
