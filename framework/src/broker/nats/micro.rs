//! The NATS micro protocol: `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` answered for each service
//! this instance serves, so that `nats micro ls` and other tools find Cohort's commands, and for
//! one service without endpoints, `CohortEvents`, whose metadata lists the instance's events.
//!
//! Cohort answers them itself instead of through async-nats' service layer, to keep that layer's
//! per-request bookkeeping (client and string clones, a shutdown poll, a stats mutex) off every
//! command: here an endpoint's counts are atomics. The response shapes are async-nats' own types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::service::{Info, PingResponse, endpoint, error::Error as LastError};
use async_nats::{Client, Subscriber};
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::broker::spi::{Announced, AnnouncedEvent, Announcements, Endpoint, EventSchema};
use crate::broker::stats::{CommandStats, Counts, EndpointStats};
use crate::drift::SCHEMA_KEY;
use crate::error::Error;
use crate::message::{Subjects, random_hex};

/// One service of this instance, as the micro protocol shows it.
pub(super) struct Service {
    name: String,
    id: String,
    /// The newest version among its commands, announced as `{version}.0.0`.
    version: u32,
    description: String,
    metadata: HashMap<String, String>,
    started: SystemTime,
    endpoints: Vec<(endpoint::Info, Arc<EndpointStats>)>,
}

/// An endpoint's counts as the micro protocol shows them.
fn endpoint_stats(info: &endpoint::Info, stats: &EndpointStats) -> endpoint::Stats {
    let counts = stats.snapshot();
    endpoint::Stats {
        name: info.name.clone(),
        subject: info.subject.clone(),
        queue_group: info.queue_group.clone(),
        requests: counts.requests as usize,
        errors: counts.errors as usize,
        processing_time: Duration::from_nanos(counts.processing_nanos),
        average_processing_time: Duration::from_nanos(counts.average_nanos),
        last_error: stats.last_error().map(|(code, status)| LastError {
            code: usize::from(code),
            status,
        }),
        data: None,
    }
}

/// `$SRV.STATS`: async-nats' own type keeps its start time in a private type.
#[derive(Serialize)]
struct StatsResponse<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    metadata: &'a HashMap<String, String>,
    started: String,
    endpoints: Vec<endpoint::Stats>,
}

impl Service {
    /// The service `service` of the instance `instance_id`, without endpoints yet.
    pub(super) fn new(service: &str, instance_id: &str) -> Service {
        Service {
            name: micro_name(service),
            id: random_hex(11),
            version: 1,
            description: format!("Cohort service `{service}`"),
            metadata: HashMap::from([(INSTANCE_KEY.to_owned(), instance_id.to_owned())]),
            started: SystemTime::now(),
            endpoints: Vec::new(),
        }
    }

    /// The service without endpoints that announces the events of the instance `instance_id`.
    pub(super) fn events(instance_id: &str, events: &[EventSchema]) -> Service {
        let mut service = Service::new(EVENTS_SERVICE, instance_id);
        service.description = format!(
            "The events of Cohort instance `{instance_id}`, with the hashes of their schemas"
        );
        let listed = serde_json::to_string(events).unwrap_or_default();
        service.metadata.insert(EVENTS_KEY.to_owned(), listed);
        service
    }

    /// Announces `endpoint` and returns the counts its requests go to.
    pub(super) fn add(&mut self, endpoint: &Endpoint) -> Arc<EndpointStats> {
        // Two versions of a command live in one micro service, under distinct names.
        let taken = self.endpoints.iter().any(|(e, _)| e.name == endpoint.name);
        let name = match taken {
            false => endpoint.name.clone(),
            true => format!("{}_v{}", endpoint.name, endpoint.version),
        };
        let mut metadata = endpoint.metadata.clone();
        if !endpoint.description.is_empty() {
            metadata
                .entry("description".to_owned())
                .or_insert_with(|| endpoint.description.clone());
        }
        // Micro versions are semver; a service's commands each have their own version.
        self.version = self.version.max(endpoint.version);
        let stats = Arc::new(EndpointStats::default());
        let info = endpoint::Info {
            name,
            subject: endpoint.subject.clone(),
            queue_group: endpoint.queue_group.clone(),
            metadata,
        };
        self.endpoints.push((info, stats.clone()));
        stats
    }

    /// Subscribes to `$SRV.{verb}`, `$SRV.{verb}.{name}` and `$SRV.{verb}.{name}.{id}`.
    pub(super) async fn listen(self, client: &Client) -> Result<Discovery, Error> {
        let mut requests = SelectAll::new();
        for subject in [
            "$SRV.*".to_owned(),
            format!("$SRV.*.{}", self.name),
            format!("$SRV.*.{}.{}", self.name, self.id),
        ] {
            let subscriber = client.subscribe(subject).await.map_err(|err| {
                Error::unavailable(format!(
                    "cannot announce the service `{}` on NATS: {err}",
                    self.name
                ))
            })?;
            requests.push(subscriber);
        }
        Ok(Discovery {
            service: self,
            requests,
        })
    }

    /// The answer to `$SRV.{verb}...`; `None` for a verb the protocol does not have.
    fn answer(&self, verb: &str) -> Option<Vec<u8>> {
        let version = format!("{}.0.0", self.version);
        let encoded = match verb {
            "PING" => serde_json::to_vec(&PingResponse {
                kind: "io.nats.micro.v1.ping_response".to_owned(),
                name: self.name.clone(),
                id: self.id.clone(),
                version: version.clone(),
                metadata: self.metadata.clone(),
            }),
            "INFO" => serde_json::to_vec(&Info {
                kind: "io.nats.micro.v1.info_response".to_owned(),
                name: self.name.clone(),
                id: self.id.clone(),
                description: self.description.clone(),
                version: version.clone(),
                metadata: self.metadata.clone(),
                endpoints: self
                    .endpoints
                    .iter()
                    .map(|(info, _)| info.clone())
                    .collect(),
            }),
            "STATS" => serde_json::to_vec(&StatsResponse {
                kind: "io.nats.micro.v1.stats_response",
                name: &self.name,
                id: &self.id,
                version: &version,
                metadata: &self.metadata,
                started: humantime::format_rfc3339_nanos(self.started).to_string(),
                endpoints: self
                    .endpoints
                    .iter()
                    .map(|(info, stats)| endpoint_stats(info, stats))
                    .collect(),
            }),
            _ => return None,
        };
        encoded.ok()
    }
}

/// A service listening for discovery requests.
pub(super) struct Discovery {
    service: Service,
    requests: SelectAll<Subscriber>,
}

impl Discovery {
    /// Answers discovery requests until `stop`; then unsubscribes (the subscriptions drop).
    pub(super) async fn answer(mut self, client: Client, stop: CancellationToken) {
        loop {
            let request = tokio::select! {
                () = stop.cancelled() => break,
                request = self.requests.next() => match request {
                    Some(request) => request,
                    None => break,
                },
            };
            let verb = request.subject.split('.').nth(1).unwrap_or_default();
            let (Some(reply_to), Some(body)) = (request.reply, self.service.answer(verb)) else {
                continue;
            };
            if let Err(err) = client.publish(reply_to, body.into()).await {
                tracing::debug!(error = %err, "could not answer a $SRV request");
            }
        }
    }
}

/// The metadata key under which a service names the Cohort instance it runs in.
const INSTANCE_KEY: &str = "cohort.instance";

/// The name of the service that announces an instance's events: not a Cohort service name,
/// which cannot have an upper-case letter.
const EVENTS_SERVICE: &str = "CohortEvents";

/// The metadata key of an instance's events: a JSON array of [`EventSchema`].
const EVENTS_KEY: &str = "cohort.events";

/// A `$SRV.STATS` answer, as any micro service gives it.
#[derive(Deserialize)]
struct StatsReport {
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    endpoints: Vec<endpoint::Stats>,
}

/// A `$SRV.INFO` answer, as any micro service gives it (Go's sends `null` for empty metadata).
#[derive(Deserialize)]
struct InfoReport {
    #[serde(default)]
    name: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    endpoints: Vec<EndpointReport>,
}

#[derive(Deserialize)]
struct EndpointReport {
    subject: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

impl InfoReport {
    /// The Cohort instance it runs in, or, for another program, its service's name and id.
    fn instance(&self) -> String {
        match self.metadata.as_ref().and_then(|m| m.get(INSTANCE_KEY)) {
            Some(instance) => instance.clone(),
            None => format!("{}/{}", self.name, self.id),
        }
    }

    /// The events it announces; none when it lists none, or a list that does not parse.
    fn events(&self) -> Vec<EventSchema> {
        let listed = self.metadata.as_ref().and_then(|m| m.get(EVENTS_KEY));
        listed
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default()
    }
}

/// Asks every micro service on the server for its `$SRV.{verb}` answer. Every service answers at
/// once; the gathering ends after `window`, and a service slower than that is left out, as is an
/// answer that does not parse.
async fn ask_all<T: DeserializeOwned>(
    client: &Client,
    verb: &str,
    window: Duration,
) -> Result<Vec<T>, Error> {
    let cannot = |err: &dyn std::fmt::Display| {
        Error::unavailable(format!("cannot ask the instances for their {verb}: {err}"))
    };
    let deadline = tokio::time::Instant::now() + window;
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| cannot(&e))?;
    client
        .publish_with_reply(format!("$SRV.{verb}"), inbox, bytes::Bytes::new())
        .await
        .map_err(|e| cannot(&e))?;
    let mut parsed = Vec::new();
    while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers.next()).await {
        parsed.extend(serde_json::from_slice::<T>(&answer.payload).ok());
    }
    Ok(parsed)
}

/// The `$SRV.STATS` of every Cohort instance, gathered for `window`: the endpoints whose subjects
/// start with `commands` (this deployment's).
pub(super) async fn gather_stats(
    client: &Client,
    commands: &str,
    window: Duration,
) -> Result<Vec<CommandStats>, Error> {
    let reports = ask_all::<StatsReport>(client, "STATS", window).await?;
    let stats = reports
        .iter()
        .filter_map(|report| Some((report.metadata.get(INSTANCE_KEY)?, &report.endpoints)))
        .flat_map(|(instance, endpoints)| {
            endpoints
                .iter()
                .filter(|e| e.subject.starts_with(commands))
                .map(move |e| CommandStats::new(instance, &e.subject, counts_of(e)))
        });
    Ok(stats.collect())
}

/// The `$SRV.INFO` of every micro service, Cohort's or not, gathered for `window`: the endpoints
/// whose subjects start with `commands` (this deployment's), with their schema hashes, and the
/// events of this deployment's `subjects`.
pub(super) async fn gather_announced(
    client: &Client,
    commands: &str,
    subjects: &Subjects,
    window: Duration,
) -> Result<Announcements, Error> {
    let reports = ask_all::<InfoReport>(client, "INFO", window).await?;
    let mut announced = Announcements::default();
    for report in &reports {
        let instance = report.instance();
        let endpoints = report.endpoints.iter();
        announced.commands.extend(
            endpoints
                .filter(|e| e.subject.starts_with(commands))
                .map(|e| {
                    let schema = e.metadata.as_ref().and_then(|m| m.get(SCHEMA_KEY));
                    Announced::new(&instance, &e.subject, schema.map(String::as_str))
                }),
        );
        announced.events.extend(
            report
                .events()
                .into_iter()
                .filter(|e| e.subject == subjects.event_filter(e.event()))
                .map(|event| AnnouncedEvent {
                    instance: instance.clone(),
                    event,
                }),
        );
    }
    Ok(announced)
}

fn counts_of(endpoint: &endpoint::Stats) -> Counts {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    Counts {
        requests: endpoint.requests as u64,
        errors: endpoint.errors as u64,
        processing_nanos: nanos(endpoint.processing_time),
        average_nanos: nanos(endpoint.average_processing_time),
        last_error: endpoint
            .last_error
            .as_ref()
            .map(|e| format!("{}:{}", e.code, e.status)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn endpoint(name: &str, version: u32) -> Endpoint {
        Endpoint {
            service: "catalog".to_owned(),
            version,
            name: name.to_owned(),
            description: String::new(),
            subject: format!("cohort.cmd.catalog.v{version}.{name}"),
            queue_group: format!("cohort.catalog.v{version}.{name}"),
            metadata: HashMap::new(),
        }
    }

    fn answer(service: &Service, verb: &str) -> serde_json::Value {
        let body = service.answer(verb).expect("a verb of the protocol");
        serde_json::from_slice(&body).expect("JSON")
    }

    #[test]
    fn two_versions_of_a_command_are_two_endpoints_of_the_newest_service_version() {
        let mut service = Service::new("catalog", "i-1");
        service.add(&endpoint("list", 1));
        service.add(&endpoint("list", 2));
        let info = answer(&service, "INFO");
        assert_eq!(info["version"], "2.0.0");
        assert_eq!(info["metadata"]["cohort.instance"], "i-1");
        let names: Vec<&str> = info["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(names, ["list", "list_v2"]);
        assert_eq!(service.answer("RESTART"), None);
    }

    #[test]
    fn stats_count_requests_errors_and_time() {
        let mut service = Service::new("catalog", "i-1");
        let stats = service.add(&endpoint("list", 1));
        stats.record(&Message::new("[]"), Duration::from_millis(2));
        let mut failed = Message::new(Error::conflict("the name is taken").to_problem_json());
        failed.meta.status = Some(409);
        stats.record(&failed, Duration::from_millis(4));
        let counted = &answer(&service, "STATS")["endpoints"][0];
        assert_eq!(counted["num_requests"], 2);
        assert_eq!(counted["num_errors"], 1);
        assert_eq!(counted["processing_time"], 6_000_000);
        assert_eq!(counted["average_processing_time"], 3_000_000);
        assert_eq!(counted["last_error"], "409:the name is taken");
    }

    #[test]
    fn an_info_answer_names_the_instance_and_each_schema_hash() {
        let mut service = Service::new("catalog", "i-1");
        let mut list = endpoint("list", 1);
        list.metadata
            .insert(SCHEMA_KEY.to_owned(), "0123456789abcdef".to_owned());
        service.add(&list);
        let body = service.answer("INFO").expect("INFO");
        let report: InfoReport = serde_json::from_slice(&body).expect("an INFO answer");
        assert_eq!(report.instance(), "i-1");
        let schema = report.endpoints[0]
            .metadata
            .as_ref()
            .map(|m| &m[SCHEMA_KEY]);
        assert_eq!(schema.map(String::as_str), Some("0123456789abcdef"));

        let foreign: InfoReport =
            serde_json::from_str(r#"{"name":"pricing","id":"x1","metadata":null,"endpoints":[]}"#)
                .expect("a service without metadata");
        assert_eq!(foreign.instance(), "pricing/x1");
    }

    #[test]
    fn the_events_service_lists_the_events_in_its_metadata() {
        let placed = EventSchema::new("cohort.evt.*.order_placed", "0123456789abcdef", &["a.b"]);
        let service = Service::events("i-1", std::slice::from_ref(&placed));
        let info = answer(&service, "INFO");
        assert_eq!(info["name"], "CohortEvents");
        assert_eq!(info["endpoints"], serde_json::json!([]));
        assert_eq!(
            info["metadata"]["cohort.events"],
            r#"[{"subject":"cohort.evt.*.order_placed","schema":"0123456789abcdef","subscriptions":["a.b"]}]"#
        );
        let report: InfoReport =
            serde_json::from_slice(&service.answer("INFO").expect("INFO")).expect("parses");
        assert_eq!(report.events(), [placed]);
        let garbled: InfoReport =
            serde_json::from_str(r#"{"metadata":{"cohort.events":"[{"}}"#).expect("parses");
        assert_eq!(garbled.events(), []);
    }

    #[test]
    fn micro_names_fit_nats() {
        assert_eq!(micro_name("orders.v1 x"), "orders_v1_x");
    }
}
