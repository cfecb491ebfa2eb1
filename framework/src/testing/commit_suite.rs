//! The part of the store conformance suite about units of work: [`StateStore::commit`] and the
//! outbox. Run by [`run_store_suite`](super::run_store_suite).

use std::time::Duration;

use bytes::Bytes;

use crate::message::Message;
use crate::state::spi::{Commit, Marker, OutboxEvent, Outcome, StateStore, Write};

pub(super) async fn run(store: &dyn StateStore, prefix: &str) {
    let key = |name: &str| format!("{prefix}:{name}");
    let outbox = key("outbox");
    applies_everything(store, &key("all"), &outbox).await;
    conflicts_apply_nothing(store, &key("conflict"), &outbox).await;
    bounded_adds_refuse(store, &key("bounded"), &outbox).await;
    adds_to_no_integer_refuse(store, &key("text"), &outbox).await;
    markers_apply_once(store, &key("marker"), &outbox).await;
    refused_units_leave_no_marker(store, &key("unmarked"), &outbox).await;
    outbox_hands_out_by_age(store, &key("aged"), &key("aged-outbox")).await;
}

fn json(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

fn put(key: &str, value: &'static str) -> Write {
    Write::Put {
        key: key.to_owned(),
        value: json(value),
        ttl: None,
    }
}

fn add(key: &str, by: i64, min: Option<i64>) -> Write {
    Write::Add {
        key: key.to_owned(),
        by,
        min,
    }
}

fn event(subject: &str, id: &str) -> OutboxEvent {
    let mut message = Message::new(json("{\"n\":1}"));
    message
        .meta
        .set_header(crate::message::header::MESSAGE_ID, id);
    OutboxEvent {
        subject: subject.to_owned(),
        message,
    }
}

fn unit(outbox: &str, writes: Vec<Write>) -> Commit {
    Commit {
        outbox: outbox.to_owned(),
        writes,
        ..Commit::default()
    }
}

async fn commit(store: &dyn StateStore, unit: Commit, what: &str) -> Outcome {
    store
        .commit(unit)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn value(store: &dyn StateStore, key: &str) -> Option<Bytes> {
    store.get(key).await.expect("get").map(|v| v.value)
}

async fn applied(store: &dyn StateStore, marker: &str) -> Option<Bytes> {
    store.applied(marker).await.expect("read the marker")
}

async fn applies_everything(store: &dyn StateStore, key: &str, outbox: &str) {
    let (a, b, n) = (format!("{key}:a"), format!("{key}:b"), format!("{key}:n"));
    store.put(&b, json("0"), None).await.expect("put");
    let mut all = unit(
        outbox,
        vec![put(&a, "\"x\""), Write::Delete { key: b.clone() }],
    );
    all.writes.push(add(&n, 5, None));
    all.writes.push(add(&n, -2, Some(0)));
    all.events = vec![event("suite.evt.a", "e1"), event("suite.evt.b", "e2")];
    let Outcome::Committed(ids) = commit(store, all, "a unit of writes and events").await else {
        panic!("a unit that checks nothing must commit");
    };
    assert_eq!(ids.len(), 2, "one outbox id per event: {ids:?}");
    assert_eq!(value(store, &a).await, Some(json("\"x\"")), "the put");
    assert_eq!(value(store, &b).await, None, "the delete");
    assert_eq!(value(store, &n).await, Some(json("3")), "both adds");

    let pending = store
        .outbox(outbox, Duration::ZERO, 10)
        .await
        .expect("outbox");
    let listed: Vec<&str> = pending.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(listed, ids, "the outbox lists the unit's events in order");
    assert_eq!(
        pending[1].event,
        event("suite.evt.b", "e2"),
        "events keep subject, headers, body"
    );
    store
        .outbox_remove(outbox, &ids[..1])
        .await
        .expect("remove");
    let left = store
        .outbox(outbox, Duration::ZERO, 10)
        .await
        .expect("outbox");
    assert_eq!(left.len(), 1, "a removed entry is gone, the other stays");
    store.outbox_remove(outbox, &ids).await.expect("remove");
}

async fn conflicts_apply_nothing(store: &dyn StateStore, key: &str, outbox: &str) {
    let version = store.put(key, json("1"), None).await.expect("put");
    store
        .put(key, json("2"), None)
        .await
        .expect("a write in between");
    let mut stale = unit(
        outbox,
        vec![put(key, "3"), add(&format!("{key}:n"), 1, None)],
    );
    stale.reads = vec![(key.to_owned(), Some(version))];
    stale.events = vec![event("suite.evt.c", "e3")];
    assert_eq!(
        commit(store, stale, "a unit that read a stale version").await,
        Outcome::Conflict(key.to_owned())
    );
    assert_eq!(value(store, key).await, Some(json("2")), "nothing written");
    assert_eq!(
        value(store, &format!("{key}:n")).await,
        None,
        "nothing added"
    );
    let absent = format!("{key}:absent");
    let mut fresh = unit(outbox, vec![put(&absent, "1")]);
    fresh.reads = vec![(absent.clone(), None)];
    assert!(
        matches!(
            commit(store, fresh.clone(), "first").await,
            Outcome::Committed(_)
        ),
        "a unit that read a key as absent commits while it is"
    );
    assert_eq!(
        commit(store, fresh, "second").await,
        Outcome::Conflict(absent),
        "and conflicts once it exists"
    );
    let left = store
        .outbox(outbox, Duration::ZERO, 10)
        .await
        .expect("outbox");
    assert!(
        left.is_empty(),
        "a conflicting unit emits nothing: {left:?}"
    );
}

async fn bounded_adds_refuse(store: &dyn StateStore, key: &str, outbox: &str) {
    store.put(key, json("5"), None).await.expect("put");
    let other = format!("{key}:other");
    let too_much = unit(outbox, vec![put(&other, "1"), add(key, -6, Some(0))]);
    assert_eq!(
        commit(store, too_much, "taking more than there is").await,
        Outcome::BelowMin(1),
        "the refusal names the bounded add"
    );
    assert_eq!(value(store, key).await, Some(json("5")), "nothing taken");
    assert_eq!(value(store, &other).await, None, "nothing else written");
    let all = unit(outbox, vec![add(key, -5, Some(0))]);
    assert!(matches!(
        commit(store, all, "taking all").await,
        Outcome::Committed(_)
    ));
    assert_eq!(
        value(store, key).await,
        Some(json("0")),
        "down to the minimum"
    );
}

/// Adding to text, to a fraction or past [`MAX_SUM`](crate::state::spi::MAX_SUM) refuses the
/// whole unit, whatever its shape: with other writes, or alone with a marker (an event applied
/// once).
async fn adds_to_no_integer_refuse(store: &dyn StateStore, key: &str, outbox: &str) {
    let (other, marker) = (format!("{key}:other"), format!("{key}:applied"));
    let marked = |writes| Commit {
        marker: Some(Marker {
            key: marker.clone(),
            value: json("1"),
            ttl: Duration::from_secs(60),
        }),
        ..unit(outbox, writes)
    };
    for held in ["\"five\"", "5.0", "9007199254740991", "9223372036854775807"] {
        store.put(key, json(held), None).await.expect("put");
        for unit in [
            marked(vec![put(&other, "1"), add(key, 1, None)]),
            marked(vec![add(key, 1, None)]),
        ] {
            let err = (store.commit(unit).await).expect_err(&format!("adding 1 to {held}"));
            assert_eq!(err.kind(), crate::ErrorKind::Conflict, "{err}");
            assert!(
                err.to_string().contains(key),
                "the error names the key: {err}"
            );
            assert_eq!(value(store, key).await, Some(json(held)), "unchanged");
            assert_eq!(value(store, &other).await, None, "nothing else written");
            assert_eq!(applied(store, &marker).await, None, "no marker");
        }
    }
}

async fn markers_apply_once(store: &dyn StateStore, key: &str, outbox: &str) {
    let mut read_as_absent = unit(outbox, vec![put(key, "9")]);
    read_as_absent.reads = vec![(key.to_owned(), None)];
    let mut once = unit(outbox, vec![add(key, 1, None)]);
    once.marker = Some(Marker {
        key: format!("{key}:applied"),
        value: json("{\"result\":7}"),
        ttl: Duration::from_secs(60),
    });
    assert!(matches!(
        commit(store, once.clone(), "first").await,
        Outcome::Committed(_)
    ));
    assert_eq!(
        commit(store, once, "again").await,
        Outcome::Applied(json("{\"result\":7}")),
        "a unit whose marker exists replays its result"
    );
    assert_eq!(value(store, key).await, Some(json("1")), "applied once");
    assert_eq!(
        commit(store, read_as_absent, "after the add").await,
        Outcome::Conflict(key.to_owned()),
        "the add gave the key a version"
    );
    assert_eq!(
        applied(store, &format!("{key}:applied")).await,
        Some(json("{\"result\":7}")),
        "the marker holds the result"
    );
    assert_eq!(applied(store, &format!("{key}:never")).await, None);
}

/// A unit refused by a check after its marker was looked at leaves no marker: the event it
/// marks is applied when it comes again with a unit that passes.
async fn refused_units_leave_no_marker(store: &dyn StateStore, key: &str, outbox: &str) {
    let (stock, text) = (format!("{key}:stock"), format!("{key}:text"));
    store.put(&text, json("\"five\""), None).await.expect("put");
    let marked = |writes| Commit {
        marker: Some(Marker {
            key: format!("{key}:applied"),
            value: json("1"),
            ttl: Duration::from_secs(60),
        }),
        ..unit(outbox, writes)
    };
    assert_eq!(
        commit(store, marked(vec![add(&stock, -1, Some(0))]), "below").await,
        Outcome::BelowMin(0)
    );
    let err = (store.commit(marked(vec![add(&text, 1, None)])).await).expect_err("adding to text");
    assert_eq!(err.kind(), crate::ErrorKind::Conflict, "{err}");
    assert_eq!(
        applied(store, &format!("{key}:applied")).await,
        None,
        "no marker after a refusal"
    );
    assert!(matches!(
        commit(store, marked(vec![add(&stock, 1, Some(0))]), "passing").await,
        Outcome::Committed(_)
    ));
    assert_eq!(value(store, &stock).await, Some(json("1")), "applied then");
}

async fn outbox_hands_out_by_age(store: &dyn StateStore, key: &str, outbox: &str) {
    let mut emits = unit(outbox, vec![]);
    emits.events = vec![event("suite.evt.d", "e4")];
    let Outcome::Committed(ids) = commit(store, emits, key).await else {
        panic!("a unit of one event commits");
    };
    let young = store
        .outbox(outbox, Duration::from_secs(30), 10)
        .await
        .expect("outbox");
    assert!(
        young.is_empty(),
        "an entry younger than asked is not handed out: {young:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let old = store
        .outbox(outbox, Duration::from_millis(20), 10)
        .await
        .expect("outbox");
    assert_eq!(old.len(), 1, "an entry older than asked is");
    store.outbox_remove(outbox, &ids).await.expect("remove");
}
