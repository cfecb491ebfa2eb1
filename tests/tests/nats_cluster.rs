//! NATS without a single point of failure: the example shop as two real example-app processes on
//! a 3-node NATS cluster, its events stream and consumers on all three nodes, under a load of
//! orders while the node that leads the events stream is killed with SIGKILL, then restarted.
//!
//! Requests fail only in the moments after the kill, few of them, and each is answered within
//! seconds; after that, none fails. The node rejoins by itself, and the books balance exactly:
//! every order confirmed once, its event counted once.

use std::time::{Duration, Instant};

use cohort_tests::faults::{
    ORDER_OR_503, assert_none, failures, load_of_orders, open_books, scene, wait_for_warm_up,
};
use cohort_tests::load::{Attempt, Fault, Record, listing};
use cohort_tests::process::AppProcess;
use cohort_tests::servers::Servers;
use tokio::time::sleep;

/// The nodes of the cluster; the events stream has a copy on each.
const NODES: usize = 3;
/// The stream whose leader is killed: the worst case, the one every event is stored through.
const EVENTS_STREAM: &str = "COHORT_EVENTS";
/// How long the load lasts.
const LOAD: Duration = Duration::from_secs(20);
/// How long the node stays down.
const DOWN: Duration = Duration::from_secs(5);
/// The moments after the kill in which requests may fail: the clients that were connected to the
/// node reconnect, and the streams it led elect new leaders.
const WINDOW: Duration = Duration::from_secs(5);
/// The share of the requests in [`WINDOW`] that may fail.
const FAILING_AT_MOST: f64 = 0.01;

#[tokio::test]
async fn orders_add_up_when_the_node_leading_the_events_is_killed() {
    let mut servers = Servers::start_clustered(NODES).await;
    let instances = AppProcess::start_all(&["c1", "c2"], &servers.env()).await;
    let books = open_books(&servers, &instances[0]).await;
    let targets = instances.iter().map(AppProcess::url).collect();
    let load = load_of_orders(&books, targets, LOAD, "node-kill");
    wait_for_warm_up(&load).await;
    let leader = servers
        .nats
        .stream_leader(EVENTS_STREAM)
        .await
        .expect("the events stream has a leader");
    let leads_meta = servers.nats.meta_leader().await == Some(leader);
    let killed = Instant::now();
    servers.nats.kill(leader).await;
    sleep(DOWN).await;
    let restarted = Instant::now();
    servers.nats.restart(leader).await;
    let rejoined = restarted.elapsed();
    let record = load.finish().await;

    let mut found = failures(&books, &record, &[Fault::at(killed)], &ORDER_OR_503).await;
    found.extend(failed_beyond_allowance(&record, killed));
    let what = format!(
        "node {} (leading {EVENTS_STREAM}{}) was killed, down {DOWN:?}, current again \
         {rejoined:.2?} after its restart",
        servers.nats.name(leader),
        if leads_meta {
            " and the meta group"
        } else {
            ""
        },
    );
    let scene = format!(
        "{}; {}",
        scene(&what, &record, killed),
        rates(&record, killed)
    );
    assert_none(&found, &record, &scene);
}

/// The attempts in flight during the [`WINDOW`] after `killed`, and the others.
fn by_window(record: &Record, killed: Instant) -> (Vec<&Attempt>, Vec<&Attempt>) {
    record
        .attempts
        .iter()
        .partition(|attempt| attempt.started < killed + WINDOW && attempt.ended() > killed)
}

/// Those of `attempts` that failed (answered anything but the order), described.
fn failed(attempts: &[&Attempt]) -> Vec<String> {
    attempts
        .iter()
        .filter(|attempt| attempt.status != Some(201))
        .map(ToString::to_string)
        .collect()
}

/// What failed beyond the allowance: more than [`FAILING_AT_MOST`] of the attempts in the window
/// after the kill, and any attempt that failed outside it.
fn failed_beyond_allowance(record: &Record, killed: Instant) -> Vec<String> {
    let mut found = Vec::new();
    let (window, outside) = by_window(record, killed);
    let failed_in_window = failed(&window);
    let allowed = (window.len() as f64 * FAILING_AT_MOST).floor() as usize;
    if failed_in_window.len() > allowed {
        found.push(format!(
            "{} of the {} attempts in the {WINDOW:?} after the kill failed, more than {allowed}:{}",
            failed_in_window.len(),
            window.len(),
            listing(&failed_in_window, 5)
        ));
    }
    let failed_outside = failed(&outside);
    if !failed_outside.is_empty() {
        found.push(format!(
            "{} attempts failed outside the {WINDOW:?} after the kill:{}",
            failed_outside.len(),
            listing(&failed_outside, 5)
        ));
    }
    found
}

/// The orders per second before the kill, in the window after it, and after the window, and how
/// many of the window's attempts failed.
fn rates(record: &Record, killed: Instant) -> String {
    let first = record.attempts.iter().map(|a| a.started).min();
    let last = record.attempts.iter().map(Attempt::ended).max();
    let (Some(first), Some(last)) = (first, last) else {
        return "no attempts".to_owned();
    };
    let window_end = killed + WINDOW;
    let rate = |from: Instant, to: Instant| {
        let placed = record
            .attempts
            .iter()
            .filter(|a| a.status == Some(201) && (from..to).contains(&a.ended()))
            .count();
        placed as f64 / to.saturating_duration_since(from).as_secs_f64().max(0.001)
    };
    let (window, _) = by_window(record, killed);
    format!(
        "orders/s: {:.0} before the kill, {:.0} in the {WINDOW:?} after it, {:.0} after that; \
         {} of {} attempts in the window failed",
        rate(first, killed),
        rate(killed, window_end),
        rate(window_end, last),
        failed(&window).len(),
        window.len()
    )
}
