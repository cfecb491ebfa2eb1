//! Micro-benchmarks of Cohort's per-command overhead, without a network: the envelope, the
//! input and output JSON, the dispatch table, the embedded broker and a whole command run
//! in-process.
//!
//! `cargo bench -j2 -p cohort-bench --bench overhead` measures; `cargo test` runs each
//! benchmark once, as a smoke test.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cohort::broker::MemoryBroker;
use cohort::broker::spi::{
    Broker, Endpoint, Message, Metadata, RequestHandler, Subjects, Work, header,
};
use cohort::prelude::*;
use cohort::{App, Command, Running};
use divan::{Bencher, black_box};
use example_app::echo::{EchoIn, EchoOut, echo};
use futures_util::FutureExt;
use tokio::runtime::Runtime;

fn main() {
    // Each benchmark runs for at least this long (the defaults stop after 100 samples, a few
    // milliseconds for these); the whole set still takes a few seconds. `--min-time` overrides.
    divan::Divan::default()
        .min_time(Duration::from_millis(250))
        .config_with_args()
        .main();
}

/// The request body of the HTTP benchmark (`scripts/bench`): 64 characters of text, n = 42.
const BODY: &[u8] =
    br#"{"text":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_","n":42}"#;

/// A command's W3C trace context: a child of the one its client sent.
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A message id as events carry it (24 hex digits).
const MESSAGE_ID: &str = "6a0c2e94b1d7f3580e4a9c2b";

/// A session id as the cookie carries it (64 hex digits).
const SESSION_ID: &str = "5f2b8c0e9d4a7b13c6e0f8a2d5b9c1e47a3f6d0b8e2c5a9f1d4b7e0c3a6f9d2b";

const INSTANCE_ID: &str = "a1b2c3d4";

/// How long a command may take, as `COHORT_COMMAND_TIMEOUT` defaults it.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The metadata a command carries once the HTTP layer and `invoke` have filled it in: a child
/// of the caller's trace, the session cookie, a deadline, a message id and the sending instance.
fn typical_metadata() -> Metadata {
    Metadata::from_headers([
        (header::MESSAGE_ID, MESSAGE_ID),
        (header::TRACEPARENT, TRACEPARENT),
        (header::SESSION, SESSION_ID),
        (header::DEADLINE, &deadline()),
        (header::INSTANCE, INSTANCE_ID),
    ])
}

/// A deadline `TIMEOUT` from now, in milliseconds since the Unix epoch, as header text.
fn deadline() -> String {
    let at = SystemTime::now() + TIMEOUT;
    let millis = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    millis.as_millis().to_string()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
}

/// The reply's `n` must be 43, or a broken path would be benchmarked as a fast one.
fn assert_echoed(reply: &Message) {
    assert_eq!(reply.status(), 200, "reply: {reply:?}");
    let out: EchoOut = serde_json::from_slice(&reply.payload).expect("an EchoOut");
    assert_eq!(out.n, 43);
}

/// Drops `value` inside the timed section: what a command allocates it also frees, and divan
/// would otherwise keep a whole sample's outputs alive and free them untimed.
fn dropped<T>(value: T) {
    drop(black_box(value));
}

// Every group fixes its sample size: divan's tuning stops at one iteration per sample when the
// first, cold sample happens to be slow, and single ~100 ns iterations measure mostly the timer.

/// The envelope: metadata to headers and back, as every command and reply crosses the broker.
#[divan::bench_group(sample_size = 100)]
mod envelope {
    use super::*;

    /// Builds a command's metadata (ids, trace, deadline) and moves it into header pairs.
    #[divan::bench]
    fn encode_typical_into_headers() {
        let mut headers = Vec::with_capacity(8);
        typical_metadata().into_headers(|name, value| headers.push((name, value)));
        dropped(headers);
    }

    /// `Metadata::headers()` of a ready metadata (clones it, then as above).
    #[divan::bench]
    fn headers_of_ready_metadata(bencher: Bencher) {
        let meta = typical_metadata();
        bencher.bench(|| dropped(black_box(&meta).headers()));
    }

    /// `Metadata::from_headers` over the (name, value) pairs of a typical command.
    #[divan::bench]
    fn decode_from_headers(bencher: Bencher) {
        let headers = typical_metadata().headers();
        bencher.bench(|| {
            dropped(Metadata::from_headers(
                black_box(&headers)
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            ))
        });
    }
}

/// The body: the echo input decoded and its answer encoded, against plain serde_json.
#[divan::bench_group(sample_size = 100)]
mod body {
    use super::*;

    #[divan::bench]
    fn decode_input_cohort() {
        dropped(cohort::__private::decode_input::<EchoIn>(black_box(BODY)).expect("valid input"));
    }

    #[divan::bench]
    fn decode_input_serde_json() {
        dropped(serde_json::from_slice::<EchoIn>(black_box(BODY)).expect("valid input"));
    }

    #[divan::bench]
    fn encode_output_cohort(bencher: Bencher) {
        bencher
            .with_inputs(echo_out)
            .bench_values(|out| dropped(cohort::__private::encode_output(Ok::<_, Error>(out))));
    }

    #[divan::bench]
    fn encode_output_serde_json(bencher: Bencher) {
        bencher
            .with_inputs(echo_out)
            .bench_values(|out| dropped(serde_json::to_vec(&out).map(Bytes::from)));
    }

    fn echo_out() -> EchoOut {
        let input: EchoIn = serde_json::from_slice(BODY).expect("valid input");
        EchoOut {
            text: input.text,
            n: i128::from(input.n) + 1,
            instance: INSTANCE_ID.to_owned(),
        }
    }
}

/// The dispatch table: a command's subject, and finding its handler by subject.
#[divan::bench_group(sample_size = 400)]
mod dispatch {
    use super::*;

    /// The commands of a typical app: 20 of them over five services.
    fn app_subjects() -> Vec<String> {
        let subjects = Subjects::default();
        let commands = [
            ("orders", ["place", "cancel", "get", "list"]),
            ("accounts", ["register", "login", "logout", "me"]),
            ("inventory", ["reserve", "release", "stock", "restock"]),
            ("billing", ["charge", "refund", "invoice", "balance"]),
            ("audit", ["record", "search", "count", "export"]),
        ];
        commands
            .iter()
            .flat_map(|(service, names)| names.map(|name| subjects.command(service, 1, name)))
            .collect()
    }

    /// `Subjects::command`: `cohort.cmd.orders.v1.place`.
    #[divan::bench]
    fn subject_command(bencher: Bencher) {
        let subjects = Subjects::default();
        bencher.bench(|| {
            dropped(black_box(&subjects).command(black_box("orders"), 1, black_box("place")))
        });
    }

    /// A `HashMap<String, _>` of 20 subjects, looked up by a `&str` subject.
    #[divan::bench]
    fn lookup_20_commands(bencher: Bencher) {
        let table: HashMap<String, usize> = app_subjects()
            .into_iter()
            .enumerate()
            .map(|(i, subject)| (subject, i))
            .collect();
        let subject = Subjects::default().command("billing", 1, "refund");
        bencher.bench(|| black_box(&table).get(black_box(subject.as_str())).copied());
    }

    /// The same lookup as the memory broker does it: under a read lock, cloning the handler.
    #[divan::bench]
    fn lookup_20_commands_locked(bencher: Bencher) {
        let handler: RequestHandler = Arc::new(|msg| async move { msg }.boxed());
        let table: RwLock<HashMap<String, RequestHandler>> = RwLock::new(
            app_subjects()
                .into_iter()
                .map(|subject| (subject, handler.clone()))
                .collect(),
        );
        let subject = Subjects::default().command("billing", 1, "refund");
        bencher.bench(|| {
            let table = black_box(&table).read().unwrap_or_else(|p| p.into_inner());
            dropped(table.get(black_box(subject.as_str())).cloned());
        });
    }
}

/// Whole round trips in one process: the embedded broker alone, and a command through it.
#[divan::bench_group(sample_size = 20)]
mod in_process {
    use super::*;

    /// The embedded broker alone: a request to an endpoint whose handler answers with the message.
    #[divan::bench]
    fn memory_broker_round_trip(bencher: Bencher) {
        let rt = runtime();
        let broker = MemoryBroker::new();
        let subjects = Subjects::default();
        let subject = subjects.command("bench", 1, "ping");
        let endpoint = Endpoint::new(&subjects, "bench", 1, "ping");
        let handler: RequestHandler = Arc::new(|msg| async move { msg }.boxed());
        let work = Work::default();
        rt.block_on(broker.serve(vec![(endpoint, handler)], &work))
            .expect("serving the endpoint");
        let msg = Message::new(Bytes::from_static(BODY));
        let reply = rt
            .block_on(broker.request(&subject, msg.clone(), TIMEOUT))
            .expect("a reply");
        assert_eq!(reply, msg);
        bencher.bench(|| {
            dropped(
                rt.block_on(broker.request(&subject, msg.clone(), TIMEOUT))
                    .expect("a reply"),
            )
        });
        work.stop.cancel();
        work.tasks.close();
        rt.block_on(work.tasks.wait());
    }

    /// A whole command in-process, without HTTP: envelope → `Ctx` → decode → `echo` → encode →
    /// reply, through the app's command handler on the embedded broker. Building the request's
    /// metadata is not timed (see `envelope`); dropping the reply is.
    #[divan::bench]
    fn command_echo(bencher: Bencher) {
        let rt = runtime();
        let broker = MemoryBroker::new();
        let running: Running = rt
            .block_on(
                App::default()
                    .http_addr(None)
                    .instance_id(INSTANCE_ID)
                    .broker(Arc::new(broker.clone()))
                    .start(),
            )
            .expect("the app starts");
        // The example app's own `echo`: the command the HTTP benchmark drives.
        let subject = Subjects::default().command(
            <echo as Command>::SERVICE,
            <echo as Command>::VERSION,
            <echo as Command>::NAME,
        );
        let request = Message {
            meta: Box::new(typical_metadata()),
            payload: Bytes::from_static(BODY),
        };
        let reply = rt
            .block_on(broker.request(&subject, request.clone(), TIMEOUT))
            .expect("a reply");
        assert_echoed(&reply);
        // A fresh deadline per request, as `invoke` sets it, however long the run takes.
        let fresh_request = || {
            let mut msg = request.clone();
            msg.meta.set_header(header::DEADLINE, &deadline());
            msg
        };
        bencher.with_inputs(fresh_request).bench_values(|msg| {
            dropped(
                rt.block_on(broker.request(&subject, msg, TIMEOUT))
                    .expect("a reply"),
            )
        });
        rt.block_on(running.shutdown()).expect("a clean shutdown");
    }
}
