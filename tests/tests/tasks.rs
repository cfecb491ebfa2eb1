//! Tasks across a cluster: real `task-app` processes on one NATS and one Redis, killed and frozen
//! as a crash or a stall would, and one embedded instance. Each run of a task is recorded in Redis
//! by the task itself (see `src/bin/task-app.rs`), so that runs are counted and overlaps found
//! from the store, whatever happened to the processes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cohort::prelude::*;
use cohort::state::RedisStore;
use cohort::state::spi::StateStore;
use cohort::testing::{eventually, eventually_some};
use cohort::{App, TaskOutcome};
use cohort_tests::process::{AppProcess, free_port};
use cohort_tests::scrape::{scrape, unix_seconds};
use cohort_tests::servers::Servers;
use cohort_tests::{ANY_LOOPBACK_PORT, Client, base_url};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

/// Held by the test that runs: the time bounds hold for one deployment at a time.
static TURN: Mutex<()> = Mutex::const_new(());

/// A period of the tasks under test.
const PERIOD: u64 = 1_000;
/// How late a tick may start after its time on a busy machine.
const SLACK: u64 = 500;
/// How late after its tick a run records its start (a Redis round trip or two, on a busy machine).
const ALIGNED: u64 = 400;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Run {
    instance: String,
    start: u64,
    end: Option<u64>,
}

fn task_app() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_task-app"))
}

/// Starts `ids` as task-app instances running only `service`, all at once.
async fn start_cluster(servers: &Servers, service: &str, ids: &[&str]) -> Vec<AppProcess> {
    let mut env = servers.env();
    env.push(("COHORT_SERVICES", service.to_owned()));
    futures_util::future::join_all(
        ids.iter()
            .map(|id| AppProcess::start_binary(task_app(), id, false, &env)),
    )
    .await
}

/// The runs of `service`'s task recorded so far.
async fn runs(store: &RedisStore, service: &str) -> Vec<Run> {
    let key = format!("{{cohort:{service}}}:runs");
    match store.get(&key).await.expect("Redis answers") {
        Some(raw) => serde_json::from_slice(&raw.value).expect("a list of runs"),
        None => Vec::new(),
    }
}

/// Pairs of finished runs whose times overlap.
fn overlaps(runs: &[Run]) -> Vec<(Run, Run)> {
    let finished: Vec<&Run> = runs.iter().filter(|r| r.end.is_some()).collect();
    let mut found = Vec::new();
    for (i, a) in finished.iter().enumerate() {
        for b in &finished[i + 1..] {
            if a.start < b.end.unwrap_or(0) && b.start < a.end.unwrap_or(0) {
                found.push(((*a).clone(), (*b).clone()));
            }
        }
    }
    found
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_run_a_one_second_task_once_a_second_never_twice_at_once() {
    let _turn = TURN.lock().await;
    let servers = Servers::start().await;
    let _cluster = start_cluster(&servers, "ticks", &["t1", "t2", "t3"]).await;
    let store = RedisStore::connect(&servers.redis.url())
        .await
        .expect("Redis");

    let from = now_millis();
    tokio::time::sleep(Duration::from_millis(10 * PERIOD + SLACK)).await;
    let runs = runs(&store, "ticks").await;
    let window: Vec<&Run> = runs
        .iter()
        .filter(|r| r.start >= from && r.start < from + 10 * PERIOD)
        .collect();
    assert!(
        (9..=11).contains(&window.len()),
        "10 s of a 1 s task on 3 instances must run it 9 to 11 times, not {}: {runs:?}",
        window.len()
    );
    assert_eq!(overlaps(&runs), vec![], "no two runs at once");
}

/// Waits for a run that has just started (so it is still going when the test acts on it), and
/// returns the instance that holds the task's lease for it.
async fn holder_of_a_run(store: &RedisStore) -> String {
    eventually_some("a run in progress", Duration::from_secs(5), async || {
        let runs = runs(store, "ticks").await;
        let now = now_millis();
        runs.iter()
            .rev()
            .find(|r| r.end.is_none() && now.saturating_sub(r.start) < 100)
            .map(|r| r.instance.clone())
    })
    .await
}

/// Kills (`KILL`) or freezes (`STOP`) the instance running the task, and checks that the next
/// tick runs on another instance within one period.
async fn next_tick_runs_elsewhere_after(signal: &str) {
    let _turn = TURN.lock().await;
    let servers = Servers::start().await;
    let mut cluster = start_cluster(&servers, "ticks", &["h1", "h2", "h3"]).await;
    let store = RedisStore::connect(&servers.redis.url())
        .await
        .expect("Redis");

    let holder = holder_of_a_run(&store).await;
    let process = cluster
        .iter_mut()
        .find(|p| p.id == holder)
        .expect("the holder is one of ours");
    process.signal(signal).await;
    let hit = now_millis();

    let next = eventually_some(
        "a run on another instance after the signal",
        Duration::from_secs(5),
        async || {
            runs(&store, "ticks")
                .await
                .into_iter()
                .find(|r| r.start > hit && r.instance != holder)
        },
    )
    .await;
    assert!(
        next.start - hit <= PERIOD + SLACK,
        "the next tick must run elsewhere within one period of the {signal}: it ran {} ms later",
        next.start - hit
    );

    if signal == "STOP" {
        // Thawed, the stalled holder finds its lease gone and drops its run; the others go on.
        process.signal("CONT").await;
        tokio::time::sleep(Duration::from_millis(3 * PERIOD)).await;
        let runs = runs(&store, "ticks").await;
        assert_eq!(overlaps(&runs), vec![], "no two finished runs at once");
        let stalled = runs.iter().rfind(|r| r.instance == holder && r.start < hit);
        assert!(
            stalled.is_some_and(|r| r.end.is_none()),
            "the stalled run must have been dropped, not finished: {stalled:?} in {runs:?}"
        );
    } else {
        process.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_tick_runs_elsewhere_after_the_holder_is_killed() {
    next_tick_runs_elsewhere_after("KILL").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_tick_runs_elsewhere_while_the_holder_is_frozen() {
    next_tick_runs_elsewhere_after("STOP").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_overruns_its_period_never_runs_twice_at_once() {
    let _turn = TURN.lock().await;
    let servers = Servers::start().await;
    let _cluster = start_cluster(&servers, "overrun", &["o1", "o2", "o3"]).await;
    let store = RedisStore::connect(&servers.redis.url())
        .await
        .expect("Redis");

    let what = "three finished runs of the 2.5 s task";
    let runs = eventually_some(what, Duration::from_secs(15), async || {
        let runs = runs(&store, "overrun").await;
        (runs.iter().filter(|r| r.end.is_some()).count() >= 3).then_some(runs)
    })
    .await;
    assert_eq!(overlaps(&runs), vec![], "no two runs at once");
    // The ticks a run overlapped are skipped, not run late: every run starts at a whole second.
    for run in &runs {
        assert!(
            run.start % PERIOD < ALIGNED,
            "a run started {} ms after its tick: {runs:?}",
            run.start % PERIOD
        );
    }
    for pair in runs.windows(2) {
        assert!(
            pair[1].start >= pair[0].end.unwrap_or(u64::MAX),
            "a run starts only after the one before ended: {runs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_start_runs_once_for_three_instances_and_the_others_wait_for_it() {
    let _turn = TURN.lock().await;
    let servers = Servers::start().await;
    let store = RedisStore::connect(&servers.redis.url())
        .await
        .expect("Redis");
    let ports = [free_port(), free_port(), free_port()];
    // When each instance first answered /readyz with 200, watched from before it starts.
    let ready_at: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let watchers: Vec<_> = ports
        .iter()
        .map(|port| {
            let url = format!("http://127.0.0.1:{port}/readyz");
            let ready_at = ready_at.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    let reply = client.get(&url).send().await;
                    if reply.is_ok_and(|r| r.status().is_success()) {
                        ready_at.lock().expect("lock").push(now_millis());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();

    let mut env = servers.env();
    env.push(("COHORT_SERVICES", "migrations".to_owned()));
    let starts = ["m1", "m2", "m3"].iter().zip(ports).map(|(id, port)| {
        let mut env = env.clone();
        env.push(("COHORT_HTTP_ADDR", format!("127.0.0.1:{port}")));
        async move { AppProcess::start_binary(task_app(), id, false, &env).await }
    });
    let _cluster = futures_util::future::join_all(starts).await;
    for watcher in watchers {
        tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("every instance turns ready")
            .expect("the watcher runs");
    }

    let runs = runs(&store, "migrations").await;
    assert_eq!(runs.len(), 1, "one run for three instances: {runs:?}");
    let finished = runs[0].end.expect("the run finished");
    let ready_at = ready_at.lock().expect("lock").clone();
    assert!(
        ready_at.iter().all(|&at| at >= finished),
        "no instance may be ready before the start-up task finished at {finished}: ready at {ready_at:?}"
    );
}

// The embedded deployment runs tasks too.

#[task(service = "embedded", every = "1s")]
async fn embedded_tick(ctx: Ctx) -> Result<(), Error> {
    // Each run's token is larger than the last run's.
    let token = ctx
        .fencing_token()
        .expect("a task's run has a fencing token");
    let last = ctx.state().get::<u64>("last_token").await?.unwrap_or(0);
    if token <= last {
        return Err(Error::internal(format!("token {token} after {last}")));
    }
    ctx.state().put("last_token", &token).await?;
    Ok(())
}

#[task(service = "embedded", on_start)]
async fn embedded_setup(ctx: Ctx) -> Result<(), Error> {
    ctx.state().put("set_up", &true).await?;
    Ok(())
}

#[tokio::test]
async fn an_embedded_instance_runs_its_tasks() {
    let running = App::default()
        .http_addr(None)
        .configure(|c| c.services = Some(vec!["embedded".to_owned()]))
        .start()
        .await
        .expect("starts");
    let status = |name: &str| {
        running
            .tasks()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("task `{name}` listed"))
    };
    let setup = status("embedded_setup");
    assert_eq!(setup.runs, 1, "on_start ran before the start returned");
    assert_eq!(setup.last_outcome, Some(TaskOutcome::Succeeded));

    eventually("two ticks ran", Duration::from_secs(5), async || {
        status("embedded_tick").runs >= 2
    })
    .await;
    let tick = status("embedded_tick");
    assert_eq!(tick.last_outcome, Some(TaskOutcome::Succeeded));
    assert!(
        tick.next_run
            .is_some_and(|next| next > SystemTime::now() - Duration::from_secs(1))
    );
    running.shutdown().await.expect("shuts down");
}

/// Attempts of `flaky_migration`: the first fails.
static MIGRATION_ATTEMPTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[task(service = "flaky", on_start)]
async fn flaky_migration(_ctx: Ctx) -> Result<(), Error> {
    match MIGRATION_ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
        0 => Err(Error::internal("the schema is locked")),
        _ => Ok(()),
    }
}

#[tokio::test]
async fn a_failed_start_up_task_stops_the_start_and_runs_again_at_the_next() {
    let store: Arc<dyn StateStore> = Arc::new(cohort::state::MemoryStore::new());
    let start = || {
        App::default()
            .http_addr(None)
            .store(store.clone())
            .configure(|c| c.services = Some(vec!["flaky".to_owned()]))
            .start()
    };
    let Err(failed) = start().await else {
        panic!("a failed start-up task must stop the start");
    };
    assert_eq!(failed.code(), "start_task_failed", "{failed}");
    assert!(
        failed.message().contains("the schema is locked"),
        "{failed}"
    );

    let running = start()
        .await
        .expect("the next start runs it again, and it succeeds");
    running.shutdown().await.expect("shuts down");
    let running = start().await.expect("a start after it succeeded");
    running.shutdown().await.expect("shuts down");
    assert_eq!(
        MIGRATION_ATTEMPTS.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "run until it succeeded, then never again for this version"
    );
}

// What an instance shows of its tasks: the metrics and the dashboard.

/// Runs of `chore` so far.
static CHORES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// Holds `chore`'s third run until the test lets it finish.
static CHORE_GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

fn locked_shed() -> Error {
    Error::unavailable("the shed is locked")
}

/// Succeeds, then fails, then runs until the test lets it finish.
#[task(service = "chores", every = "1s")]
async fn chore(_ctx: Ctx) -> Result<(), Error> {
    match CHORES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
        0 => Ok(()),
        1 => Err(locked_shed()),
        _ => {
            let _ = CHORE_GATE.acquire().await;
            Ok(())
        }
    }
}

fn unix_millis(at: SystemTime) -> u64 {
    u64::try_from(
        at.duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("in range")
}

#[tokio::test]
async fn a_task_shows_its_runs_in_the_metrics_and_on_the_dashboard() {
    let running = App::default()
        .http_addr(ANY_LOOPBACK_PORT)
        .configure(|c| {
            c.services = Some(vec!["chores".to_owned()]);
            c.dashboard = true;
        })
        .start()
        .await
        .expect("starts");
    let status = eventually_some("the third run going", Duration::from_secs(10), async || {
        running
            .tasks()
            .into_iter()
            .find(|t| t.name == "chore" && t.running && t.runs == 2)
    })
    .await;
    let last_run = status.last_run.expect("the second run's start");
    let next_run = status.next_run.expect("the third run's tick");

    let base = base_url(&running);
    let metrics = scrape(&format!("{base}/metrics")).await;
    let series = |metric: &str| format!("{metric}{{task=\"chores.chore\"}}");
    let runs = |outcome: &str| {
        format!("cohort_task_runs_total{{task=\"chores.chore\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(metrics.of(&runs("ok")), 1.0);
    assert_eq!(metrics.of(&runs("error")), 1.0);
    assert_eq!(metrics.value(&runs("lease_lost")), None);
    assert_eq!(
        metrics.of(&series("cohort_task_duration_seconds_count")),
        2.0
    );
    assert_eq!(metrics.of(&series("cohort_task_running")), 1.0);
    let last = series("cohort_task_last_run_timestamp_seconds");
    assert_eq!(metrics.of(&last), unix_seconds(last_run));
    let next = series("cohort_task_next_run_timestamp_seconds");
    assert_eq!(metrics.of(&next), unix_seconds(next_run));

    let data = Client::new(base).get("/_cohort/data").await;
    assert_eq!(data.status, 200, "{}", data.text);
    let row = json!({
        "task": "chores.chore",
        "schedule": "every 1s",
        "next_run": unix_millis(next_run),
        "last_run": unix_millis(last_run),
        "last_outcome": "error",
        "last_error": locked_shed().to_string(),
        "runs": 2,
        "running": true,
    });
    assert_eq!(data.body["tasks"], json!([row]), "{}", data.text);

    CHORE_GATE.add_permits(1);
    running.shutdown().await.expect("shuts down");
}
