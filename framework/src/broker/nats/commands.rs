//! Commands: core request/reply on queue-group subscriptions, each request answered in place or
//! on its own task, with progress messages while it runs when its caller asks for them; each
//! service announced with the NATS micro protocol ([`micro`]). The caller's side of the replies
//! is in [`replies`](super::replies).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, HeaderMap, PublishErrorKind, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};

use super::replies::SILENCE_LIMIT;
use super::replies::Unanswered;
use super::signing::{BAD_SIGNATURE, Signer, warn_refused};
use super::wire::{asks_for_progress, into_header_map, metadata_of};
use super::{Inner, PROGRESS_INTERVAL, micro, server_caught_up};
use crate::broker::spi::{Endpoint, Message, Metadata, RequestHandler, Work};
use crate::broker::stats::EndpointStats;
use crate::broker::{EXECUTOR_LOST, no_responders, timed_out};
use crate::error::{Error, ErrorKind};
use crate::runtime::problem_reply;

/// Sends a command and waits for its reply: see
/// [`Broker::request`](crate::broker::spi::Broker::request).
///
/// The command asks for progress (its reply subject does), so that a silent executor is found out
/// within [`SILENCE_LIMIT`]. Only silence fails a request early: a reply that arrives is taken,
/// whatever happened to the connection meanwhile. A connection that drops makes the request silent like a
/// dead executor does, and a reply sent while it was down is lost with it.
pub(super) fn request<'a>(
    inner: &'a Inner,
    subject: &'a str,
    msg: Message,
    timeout: Duration,
) -> impl Future<Output = Result<Message, Error>> + Send + 'a {
    let mut headers = into_header_map(*msg.meta);
    inner.signer.sign(subject, &mut headers, &msg.payload);
    exchange(inner, subject, headers, msg.payload, timeout)
}

/// [`request`] once its message is signed. It takes the headers and the payload rather than the
/// message, which is several times their size, so that every command in flight holds less.
async fn exchange(
    inner: &Inner,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
    timeout: Duration,
) -> Result<Message, Error> {
    if inner.client.connection_state() == State::Disconnected {
        return Err(inner.not_connected(&format!("send the command to `{subject}`")));
    }
    let (reply_to, pending) = inner.replies.expect();
    let sent = Instant::now();
    let published = inner
        .client
        .publish_with_reply_and_headers(subject.to_owned(), reply_to, headers, payload)
        .await;
    if let Err(err) = published {
        return Err(match err.kind() {
            PublishErrorKind::MaxPayloadExceeded => Error::new(
                ErrorKind::PayloadTooLarge,
                format!("the command to `{subject}` is larger than the NATS server accepts: {err}"),
            ),
            _ => Error::broker_unavailable(format!(
                "cannot send the command to `{subject}` over NATS: {err}"
            )),
        });
    }
    match pending.wait(sent, sent + timeout).await {
        Ok(reply) if reply.status == Some(StatusCode::NO_RESPONDERS) => Err(no_responders(subject)),
        Ok(reply) => {
            let checked = inner.signer.verify(
                reply.subject.as_str(),
                reply.headers.as_ref(),
                &reply.payload,
            );
            if let Err(rejection) = checked {
                warn_refused("a reply", &reply.subject, reply.headers.as_ref(), rejection);
                return Err(refused_reply(subject));
            }
            Ok(Message {
                meta: Box::new(metadata_of(reply.headers.as_ref())),
                payload: reply.payload,
            })
        }
        Err(Unanswered::Deadline) if inner.is_connected() => Err(timed_out(subject, timeout)),
        Err(Unanswered::Deadline) => {
            Err(inner.not_connected(&format!("get the answer of `{subject}`")))
        }
        Err(Unanswered::Silent) => Err(executor_lost(inner, subject)),
        Err(Unanswered::Closed) => Err(Error::broker_unavailable(format!(
            "cannot get the answer of `{subject}`: the connection to NATS at `{}` is closed",
            inner.urls
        ))),
    }
}

/// The error of a request to `subject` whose reply failed its signature check. Taken at once
/// rather than waiting on for a genuine one: an instance with another key would never send one.
fn refused_reply(subject: &str) -> Error {
    Error::unavailable("the reply of the command could not be verified; the command may have run")
        .with_code(BAD_SIGNATURE)
        .with_cause(format!(
            "the reply to the command to `{subject}` failed its signature check: is \
             COHORT_CLUSTER_KEY the same on every instance?"
        ))
}

/// The error of a request to `subject` that heard nothing for [`SILENCE_LIMIT`]. The command may
/// have run, in full or in part.
fn executor_lost(inner: &Inner, subject: &str) -> Error {
    let why = match inner.is_connected() {
        true => "the instance running it died or hangs, or the connection dropped meanwhile".into(),
        false => format!(
            "this instance lost its connection to NATS at `{}`",
            inner.urls
        ),
    };
    Error::unavailable(
        "the instance running the command was lost; it may have run, in full or in part",
    )
    .with_code(EXECUTOR_LOST)
    .with_cause(format!(
        "no word about the command to `{subject}` for {SILENCE_LIMIT:?}: {why}"
    ))
}

/// Serves these commands on this instance: see [`Broker::serve`](crate::broker::spi::Broker::serve).
pub(super) async fn serve(
    inner: &Inner,
    endpoints: Vec<(Endpoint, RequestHandler)>,
    work: &Work,
) -> Result<(), Error> {
    let mut intakes = Vec::new();
    let mut services = Vec::new();
    // On an error the subscriptions made so far drop, which unsubscribes them.
    for (service, endpoints) in by_service(endpoints) {
        let mut announced = micro::Service::new(&service, &inner.instance_id);
        for (endpoint, handler) in endpoints {
            intakes.push(subscribe(inner, &mut announced, &endpoint, handler).await?);
        }
        services.push(announced.listen(&inner.client).await?);
    }
    // Once the server has seen the subscriptions, any instance's request can reach them.
    if !server_caught_up(&inner.client).await {
        tracing::warn!(nats = %inner.urls, "NATS did not confirm the command subscriptions in time");
    }
    for (requests, served) in intakes {
        work.tasks
            .spawn(take_requests(requests, served, work.clone()));
    }
    for discovery in services {
        let answering = discovery.answer(inner.client.clone(), work.stop.clone());
        work.tasks.spawn(answering);
    }
    Ok(())
}

/// Joins the queue group of `endpoint`, announced as part of `service`.
async fn subscribe(
    inner: &Inner,
    service: &mut micro::Service,
    endpoint: &Endpoint,
    handler: RequestHandler,
) -> Result<(Subscriber, Arc<Served>), Error> {
    // Read before subscribing, so that a reconnection in between shows as a difference.
    let subscribed_on = inner.client.statistics().connects.load(Ordering::Relaxed);
    let requests = inner
        .client
        .queue_subscribe(endpoint.subject.clone(), endpoint.queue_group.clone())
        .await
        .map_err(|err| {
            Error::unavailable(format!(
                "cannot serve `{}` on NATS: {err}",
                endpoint.subject
            ))
        })?;
    let served = Served {
        stats: service.add(endpoint),
        handler,
        client: inner.client.clone(),
        signer: inner.signer.clone(),
        plain_success: PlainSuccess::of(&inner.instance_id),
        progress: into_header_map(Metadata {
            status: Some(100),
            instance: Some(inner.instance_id.clone()),
            ..Metadata::default()
        }),
        subscribed_on,
    };
    Ok((requests, Arc::new(served)))
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

/// One endpoint on this instance: what runs its requests, where the replies go, what it counts.
struct Served {
    handler: RequestHandler,
    client: Client,
    signer: Signer,
    stats: Arc<EndpointStats>,
    plain_success: PlainSuccess,
    /// The headers of a progress message from this instance.
    progress: HeaderMap,
    /// The client's count of connections to NATS when it subscribed.
    subscribed_on: u64,
}

/// The metadata of nearly every reply, a success from this instance with no session change (no
/// status: absent means 200), and its headers built once: cloning them skips hashing and checking
/// each header again.
struct PlainSuccess {
    meta: Metadata,
    headers: HeaderMap,
}

impl PlainSuccess {
    fn of(instance_id: &str) -> PlainSuccess {
        let meta = Metadata {
            instance: Some(instance_id.to_owned()),
            ..Metadata::default()
        };
        let headers = into_header_map(meta.clone());
        PlainSuccess { meta, headers }
    }

    /// The headers of a reply with `meta`.
    fn headers(&self, meta: Metadata) -> HeaderMap {
        match meta == self.meta {
            true => self.headers.clone(),
            false => into_header_map(meta),
        }
    }
}

/// Takes the requests of one endpoint until the work stops, then leaves its queue group without
/// dropping any request the server has routed here.
async fn take_requests(mut requests: Subscriber, served: Arc<Served>, work: Work) {
    let mut intake = Intake::default();
    let mut taken: u64 = 0;
    let stopped = work.stop.cancelled();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            request = requests.next() => match request {
                Some(request) => {
                    taken += 1;
                    intake.start(request, &served, &work);
                }
                None => return,
            },
        }
    }
    // A server that took the subscription again after a reconnection counts from zero, while the
    // client counts from the start: `leave` needs the two counts to agree.
    let connections = served.client.statistics().connects.load(Ordering::Relaxed);
    let counts_agree = connections == served.subscribed_on;
    leave(
        &served.client,
        &mut requests,
        counts_agree.then_some(taken),
        |request| intake.start(request, &served, &work),
    )
    .await;
    // The work ends once the server has seen the unsubscribe: a caller told that this instance
    // stopped must not have its next request routed here, where nothing takes it any more.
    if !server_caught_up(&served.client).await {
        tracing::debug!("NATS did not confirm in time that an endpoint left");
    }
}

/// Requests a leaving endpoint may still be sent, beyond those it has taken: more than can be on
/// their way to it, few enough to leave quickly under load.
const LEAVING_ALLOWANCE: u64 = 1000;
/// A leaving endpoint that has had no request for this long unsubscribes at once.
const LEAVING_QUIET: Duration = Duration::from_millis(100);

/// Leaves the queue group, answering with `start` every request routed here until then.
///
/// A plain unsubscribe would drop the requests that the server routed here before it saw the
/// unsubscribe (they are still on their way), and their callers would wait for their deadline:
/// a lost request in every rolling restart under load. async-nats' `drain` drops the subscription
/// before the server confirms too. So the endpoint asks the server to stop after
/// `LEAVING_ALLOWANCE` more requests: the client keeps the subscription until exactly those have
/// arrived, and under load they arrive within milliseconds. Without load that may not happen;
/// after `LEAVING_QUIET` without a request, and an echo from the server that brought none either,
/// nothing is on its way, and it unsubscribes.
///
/// `taken` is the number of requests taken from the subscription, `None` when the client and the
/// server count differently (after a reconnection): then the endpoint drains, which narrows the
/// window in which a request can be lost but does not close it.
async fn leave(
    client: &Client,
    requests: &mut Subscriber,
    taken: Option<u64>,
    mut start: impl FnMut(async_nats::Message),
) {
    let left = match taken {
        Some(taken) => requests.unsubscribe_after(taken + LEAVING_ALLOWANCE).await,
        None => requests.drain().await,
    };
    if let Err(err) = left {
        tracing::debug!(error = %err, "could not unsubscribe an endpoint");
    }
    loop {
        match timeout(LEAVING_QUIET, requests.next()).await {
            Ok(Some(request)) => start(request),
            Ok(None) => return,
            // A starved process sees a quiet that is not one: what the server sent before an echo
            // of its own is in the subscription once the echo is back.
            Err(_quiet) => {
                server_caught_up(client).await;
                match requests.next().now_or_never() {
                    Some(Some(request)) => start(request),
                    Some(None) => return,
                    None => break,
                }
            }
        }
    }
    if let Err(err) = requests.unsubscribe().await {
        tracing::debug!(error = %err, "could not unsubscribe an endpoint");
    }
    while let Some(request) = requests.next().await {
        start(request);
    }
}

/// How one endpoint starts its requests.
///
/// Most commands finish without waiting on anything (no I/O, no timer): those are answered right
/// where they are taken, which saves a task and, above all, waking another worker thread for
/// every request. A command that does wait goes on with its own task from where it stopped. An
/// endpoint whose commands compute for long before their first wait would hold up the requests
/// behind them, so after a few slow ones in a row it spawns every request for a while. In a row,
/// because one slow step is more often the operating system preempting the thread than the command.
#[derive(Default)]
struct Intake {
    /// Requests to spawn at once before trying to answer in place again.
    spawn_next: u32,
    /// Requests in a row that took longer than `IN_PLACE_LIMIT` in place.
    slow_in_a_row: u32,
}

/// The longest a command may compute in place before it counts as slow.
const IN_PLACE_LIMIT: Duration = Duration::from_millis(1);
/// Slow requests in a row after which an endpoint stops answering in place.
const SLOW_IN_A_ROW: u32 = 3;
/// Requests an endpoint then spawns before it tries again.
const SPAWN_AFTER_SLOW: u32 = 1000;

impl Intake {
    fn start(&mut self, mut request: async_nats::Message, served: &Arc<Served>, work: &Work) {
        let Some(reply_to) = request.reply.take() else {
            tracing::debug!(subject = %request.subject, "a command without a reply subject is dropped");
            return;
        };
        let started = Instant::now();
        let spawn = self.must_spawn();
        // A panic in the handler's first step must not take the endpoint down with it.
        let answered = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let answering = answer(request, reply_to, served.clone(), started);
            if spawn {
                work.tasks.spawn(answering);
                return;
            }
            let mut answering = Box::pin(answering);
            if (&mut answering).now_or_never().is_none() {
                work.tasks.spawn(answering);
            }
        }));
        if let Err(panic) = answered {
            tracing::error!(
                error = %Error::panicked("a command handler", panic.as_ref()),
                "a command handler panicked; its caller gets no answer"
            );
        }
        if !spawn {
            self.answered_in_place(started.elapsed());
        }
    }

    /// Whether the next request goes to a task of its own at once.
    fn must_spawn(&mut self) -> bool {
        let spawn = self.spawn_next > 0;
        self.spawn_next = self.spawn_next.saturating_sub(1);
        spawn
    }

    /// Counts a request that took `took` in place.
    fn answered_in_place(&mut self, took: Duration) {
        self.slow_in_a_row = match took > IN_PLACE_LIMIT {
            true => self.slow_in_a_row + 1,
            false => 0,
        };
        if self.slow_in_a_row == SLOW_IN_A_ROW {
            self.slow_in_a_row = 0;
            self.spawn_next = SPAWN_AFTER_SLOW;
        }
    }
}

/// Starts the command of `request` here and now; the returned future sends its reply. What needs
/// no waiting happens before that future starts, so that it holds only what lives across a wait:
/// every command's future is boxed, and a large one costs the allocator's slow path.
fn answer(
    request: async_nats::Message,
    reply_to: Subject,
    served: Arc<Served>,
    started: Instant,
) -> impl Future<Output = ()> + Send + 'static {
    let progress = asks_for_progress(&reply_to);
    let checked = served.signer.verify(
        request.subject.as_str(),
        request.headers.as_ref(),
        &request.payload,
    );
    let handling = match checked {
        Ok(()) => (served.handler)(Message {
            meta: Box::new(metadata_of(request.headers.as_ref())),
            payload: request.payload,
        }),
        Err(rejection) => {
            warn_refused(
                "a command",
                &request.subject,
                request.headers.as_ref(),
                rejection,
            );
            Box::pin(std::future::ready(refusal(&request.subject, &served)))
        }
    };
    let subject = request.subject;
    async move {
        // The reply in a block of its own: its space is not kept while the reply is sent.
        let (headers, payload) = {
            let reply = match progress {
                false => handling.await,
                true => with_progress(handling, &served, &reply_to).await,
            };
            served.stats.record(&reply, started.elapsed());
            let mut headers = served.plain_success.headers(*reply.meta);
            served.signer.sign(&reply_to, &mut headers, &reply.payload);
            (headers, reply.payload)
        };
        let sent = served
            .client
            .publish_with_headers(reply_to, headers, payload)
            .await;
        if let Err(err) = sent {
            // The connection is gone; the caller times out and may try again.
            tracing::debug!(%subject, error = %err, "could not send a reply");
        }
    }
}

/// The 401 reply to a command to `subject` that failed its signature check; no handler ran.
fn refusal(subject: &str, served: &Served) -> Message {
    let err = Error::unauthorized(format!(
        "the command to `{subject}` is refused: it does not carry a valid Cohort-Signature, and \
         this cluster accepts only messages signed with its cluster key"
    ))
    .with_code(BAD_SIGNATURE);
    let meta = Metadata {
        instance: served.plain_success.meta.instance.clone(),
        ..Metadata::default()
    };
    problem_reply(meta, &err)
}

/// Runs a command whose caller asked for progress. One that finishes without waiting (most do)
/// needs no timer and sends nothing but its reply.
async fn with_progress(
    mut handling: BoxFuture<'static, Message>,
    served: &Served,
    reply_to: &Subject,
) -> Message {
    match std::future::poll_fn(|cx| Poll::Ready(handling.poll_unpin(cx))).await {
        Poll::Ready(reply) => reply,
        // Boxed: its timer and the progress it sends would make every command's future larger.
        Poll::Pending => Box::pin(keep_posted(handling, served, reply_to)).await,
    }
}

/// Runs a command that has waited, sending its caller a progress message every
/// [`PROGRESS_INTERVAL`] from now until the reply is there.
async fn keep_posted(
    mut handling: BoxFuture<'static, Message>,
    served: &Served,
    reply_to: &Subject,
) -> Message {
    let mut ticks = interval_at(Instant::now() + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            reply = &mut handling => return reply,
            _ = ticks.tick() => {
                let mut progress = served.progress.clone();
                served.signer.sign(reply_to, &mut progress, &[]);
                let sent = served
                    .client
                    .publish_with_headers(reply_to.clone(), progress, Bytes::new())
                    .await;
                if let Err(err) = sent {
                    // The caller will take this instance as lost, as it should: it cannot hear it.
                    tracing::debug!(%reply_to, error = %err, "could not send progress");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = Duration::from_millis(5);
    const FAST: Duration = Duration::from_micros(20);

    #[test]
    fn a_slow_step_now_and_then_keeps_answering_in_place() {
        let mut intake = Intake::default();
        for _ in 0..10 {
            intake.answered_in_place(SLOW);
            intake.answered_in_place(SLOW);
            intake.answered_in_place(FAST);
            assert!(
                !intake.must_spawn(),
                "two slow steps in a row are not a slow endpoint"
            );
        }
    }

    #[test]
    fn slow_steps_in_a_row_spawn_the_next_requests_for_a_while() {
        let mut intake = Intake::default();
        for _ in 0..SLOW_IN_A_ROW {
            assert!(!intake.must_spawn());
            intake.answered_in_place(SLOW);
        }
        let spawned = std::iter::from_fn(|| Some(intake.must_spawn()))
            .take_while(|&spawn| spawn)
            .count();
        assert_eq!(spawned, SPAWN_AFTER_SLOW as usize);
        assert!(!intake.must_spawn(), "then it tries in place again");
    }
}
