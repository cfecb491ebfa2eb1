//! Commands: core request/reply, each service announced with the NATS micro protocol
//! (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`), its requests answered in place or on their own task.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::service::ServiceExt;
use async_nats::{Client, RequestErrorKind};
use futures_util::{FutureExt, StreamExt};
use tokio::time::{Instant, timeout};

use super::wire::{into_header_map, metadata_of};
use super::{FLUSH_TIMEOUT, Inner, panic_message, unavailable};
use crate::broker::{Endpoint, RequestHandler, Work};
use crate::error::{Error, ErrorKind};
use crate::message::Message;

/// Sends a command and waits for its reply: see
/// [`Broker::request`](crate::broker::Broker::request).
pub(super) async fn request(
    inner: &Inner,
    subject: &str,
    msg: Message,
    timeout: Duration,
) -> Result<Message, Error> {
    if inner.client.connection_state() == State::Disconnected {
        return Err(inner.not_connected(&format!("send the command to `{subject}`")));
    }
    let request = async_nats::Request::new()
        .headers(into_header_map(msg.meta))
        .payload(msg.payload)
        .timeout(Some(timeout));
    match inner.client.send_request(subject.to_owned(), request).await {
        Ok(reply) => Ok(Message {
            meta: metadata_of(reply.headers.as_ref()),
            payload: reply.payload,
        }),
        Err(err) => Err(match err.kind() {
            RequestErrorKind::NoResponders => no_responders(subject),
            RequestErrorKind::TimedOut if inner.is_connected() => Error::new(
                ErrorKind::Timeout,
                format!("`{subject}` did not answer in {timeout:?}"),
            ),
            RequestErrorKind::TimedOut => {
                inner.not_connected(&format!("get the answer of `{subject}`"))
            }
            RequestErrorKind::MaxPayloadExceeded => Error::new(
                ErrorKind::PayloadTooLarge,
                format!("the command to `{subject}` is larger than the NATS server accepts: {err}"),
            ),
            _ => unavailable(format!(
                "cannot send the command to `{subject}` over NATS: {err}"
            )),
        }),
    }
}

/// Serves these commands on this instance: see [`Broker::serve`](crate::broker::Broker::serve).
pub(super) async fn serve(
    inner: &Inner,
    endpoints: Vec<(Endpoint, RequestHandler)>,
    work: &Work,
) -> Result<(), Error> {
    let mut services = Vec::new();
    let mut intakes = Vec::new();
    for (service, endpoints) in by_service(endpoints) {
        match announce(inner, &service, endpoints, &mut intakes).await {
            Ok(announced) => services.push(announced),
            Err(err) => {
                for announced in services {
                    let _ = announced.stop().await;
                }
                return Err(err);
            }
        }
    }
    // Once the server has seen the subscriptions, any instance's request can reach them.
    if !matches!(
        timeout(FLUSH_TIMEOUT, inner.client.flush()).await,
        Ok(Ok(()))
    ) {
        tracing::warn!(nats = %inner.urls, "NATS did not confirm the command subscriptions in time");
    }

    for (endpoint, handler) in intakes {
        work.tasks.spawn(take_requests(
            endpoint,
            handler,
            work.clone(),
            inner.client.clone(),
        ));
    }
    let stop = work.stop.clone();
    work.tasks.spawn(async move {
        stop.cancelled().await;
        // No more answers to `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` from this instance.
        for service in services {
            let _ = service.stop().await;
        }
    });
    Ok(())
}

/// The endpoints grouped by service, in the order the services first appear.
fn by_service(
    endpoints: Vec<(Endpoint, RequestHandler)>,
) -> Vec<(String, Vec<(Endpoint, RequestHandler)>)> {
    let mut services: Vec<(String, Vec<(Endpoint, RequestHandler)>)> = Vec::new();
    for (endpoint, handler) in endpoints {
        match services
            .iter_mut()
            .find(|(service, _)| *service == endpoint.service)
        {
            Some((_, endpoints)) => endpoints.push((endpoint, handler)),
            None => services.push((endpoint.service.clone(), vec![(endpoint, handler)])),
        }
    }
    services
}

/// Starts one micro service for `service` and subscribes its endpoints, which go to `intakes`.
async fn announce(
    inner: &Inner,
    service: &str,
    endpoints: Vec<(Endpoint, RequestHandler)>,
    intakes: &mut Vec<(async_nats::service::endpoint::Endpoint, RequestHandler)>,
) -> Result<async_nats::service::Service, Error> {
    // Micro versions are semver; a service's commands each have their own version.
    let version = endpoints.iter().map(|(e, _)| e.version).max().unwrap_or(1);
    let announced = inner
        .client
        .service_builder()
        .description(format!("Cohort service `{service}`"))
        .metadata(HashMap::from([(
            "cohort.instance".to_owned(),
            inner.instance_id.clone(),
        )]))
        .start(micro_name(service), format!("{version}.0.0"))
        .await
        .map_err(|err| {
            unavailable(format!(
                "cannot announce the service `{service}` on NATS: {err}"
            ))
        })?;

    let mut names = HashSet::new();
    for (endpoint, handler) in endpoints {
        // Two versions of a command live in one micro service, under distinct names.
        let name = if names.insert(endpoint.name.clone()) {
            endpoint.name
        } else {
            format!("{}_v{}", endpoint.name, endpoint.version)
        };
        let mut metadata = endpoint.metadata;
        if !endpoint.description.is_empty() {
            metadata
                .entry("description".to_owned())
                .or_insert(endpoint.description);
        }
        let subject = endpoint.subject;
        let added = announced
            .endpoint_builder()
            .name(&name)
            .metadata(metadata)
            .queue_group(endpoint.queue_group)
            .add(&subject)
            .await;
        match added {
            Ok(added) => intakes.push((added, handler)),
            Err(err) => {
                let _ = announced.stop().await;
                return Err(unavailable(format!(
                    "cannot serve `{subject}` on NATS: {err}"
                )));
            }
        }
    }
    Ok(announced)
}

/// Takes the requests of one endpoint until the work stops; then unsubscribes and still answers
/// the requests that had already arrived.
async fn take_requests(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    handler: RequestHandler,
    work: Work,
    client: Client,
) {
    let mut intake = Intake::default();
    let stopped = work.stop.cancelled();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            request = endpoint.next() => match request {
                Some(request) => intake.start(request, &handler, &work),
                None => break,
            },
        }
    }
    if let Err(err) = endpoint.stop().await {
        tracing::debug!(error = %err, "could not unsubscribe an endpoint");
    }
    while let Some(request) = endpoint.next().await {
        intake.start(request, &handler, &work);
    }
    // Have the server see the unsubscribe before this instance reports the endpoint stopped.
    let _ = timeout(FLUSH_TIMEOUT, client.flush()).await;
}

/// How one endpoint starts its requests.
///
/// Most commands finish without waiting on anything (no I/O, no timer): those are answered right
/// where they are taken, which saves a task and, above all, waking another worker thread for
/// every request. A command that does wait goes on with its own task from where it stopped. An
/// endpoint whose commands compute for long before their first wait would hold up the requests
/// behind them, so it spawns every request for a while.
#[derive(Default)]
struct Intake {
    /// Requests to spawn at once before trying to answer in place again.
    spawn_next: u32,
}

/// The longest a command may compute in place before its endpoint stops answering in place.
const IN_PLACE_LIMIT: Duration = Duration::from_millis(1);
/// Requests an endpoint then spawns before it tries again.
const SPAWN_AFTER_SLOW: u32 = 1000;

impl Intake {
    fn start(
        &mut self,
        request: async_nats::service::Request,
        handler: &RequestHandler,
        work: &Work,
    ) {
        let answering = answer(request, handler.clone());
        if self.spawn_next > 0 {
            self.spawn_next -= 1;
            work.tasks.spawn(answering);
            return;
        }
        let mut answering = Box::pin(answering);
        let started = Instant::now();
        // A panic in the first step must not take the endpoint down with it.
        match std::panic::catch_unwind(AssertUnwindSafe(|| (&mut answering).now_or_never())) {
            Ok(Some(())) => {}
            Ok(None) => {
                work.tasks.spawn(answering);
            }
            Err(panic) => tracing::error!(
                panic = panic_message(&*panic),
                "a command handler panicked; its caller gets no answer"
            ),
        }
        if started.elapsed() > IN_PLACE_LIMIT {
            self.spawn_next = SPAWN_AFTER_SLOW;
        }
    }
}

async fn answer(mut request: async_nats::service::Request, handler: RequestHandler) {
    let msg = Message {
        meta: metadata_of(request.message.headers.as_ref()),
        payload: std::mem::take(&mut request.message.payload),
    };
    let reply = handler(msg).await;
    let headers = into_header_map(reply.meta);
    if let Err(err) = request
        .respond_with_headers(Ok(reply.payload), headers)
        .await
    {
        // A request published without a reply subject, or the connection is gone.
        tracing::debug!(subject = %request.message.subject, error = %err, "could not send a reply");
    }
}

/// Micro service names allow `A-Z a-z 0-9 _ -` only.
fn micro_name(service: &str) -> String {
    service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn no_responders(subject: &str) -> Error {
    Error::new(
        ErrorKind::NoResponders,
        format!("no instance serves `{subject}`"),
    )
    .with_code("no_responders")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_names_fit_nats() {
        assert_eq!(micro_name("orders.v1 x"), "orders_v1_x");
    }
}
