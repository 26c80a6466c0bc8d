//! The PostgreSQL delivery queue against a real PostgreSQL server (a throwaway cluster this
//! test process starts): migrations, batched publish, claims shared by concurrent claimers,
//! leases fenced by their token, settlement, notifications, and the claim's plan on a table
//! that was vacuumed empty.

#[path = "support/postgres.rs"]
mod postgres;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hookgate::events::{default_body, fingerprint};
use hookgate::ids::{DeliveryId, EventId};
use hookgate::plugins::Rendered;
use hookgate::queue::{
    AttemptReport, Decision, DeliveryContent, NewDelivery, NewEvent, PublishOutcome,
};
use hookgate::store::postgres::PgStore;
use hookgate::store::postgres::claims::{Claims, renew_once};
use hookgate::store::postgres::migrate::{MIGRATIONS, migrate};
use hookgate::store::postgres::queue::{CLAIM, ClaimToken, Listener, Notice, PgQueue, Settlement};
use hookgate::store::{AttemptRecord, PendingDelivery};
use hookgate::time::now_millis;
use serde_json::Value;
use serde_json::value::RawValue;

const LEASE: Duration = Duration::from_secs(60);

/// A migrated, empty database of this test's own, with its queue.
async fn fresh_queue() -> (PgStore, PgQueue, String) {
    let url = postgres::cluster().fresh_database().await;
    let store = PgStore::connect(&url, 8).expect("a pool");
    migrate(&store).await.expect("migrations apply");
    (store.clone(), PgQueue::new(store), url)
}

/// An event of `event_type` with one default-body delivery per endpoint.
fn event(event_type: &str, data: &str, key: Option<&str>, endpoints: &[&str]) -> NewEvent {
    let id = EventId::new();
    let created_at = now_millis();
    NewEvent {
        id,
        event_type: event_type.to_owned(),
        created_at,
        data: RawValue::from_string(data.to_owned()).unwrap(),
        idempotency_key: key.map(str::to_owned),
        fingerprint: fingerprint(event_type, data),
        deliveries: endpoints
            .iter()
            .map(|endpoint| NewDelivery {
                id: DeliveryId::new(),
                endpoint_id: (*endpoint).to_owned(),
                content: DeliveryContent::Ready(Rendered::default_json(default_body(
                    id, event_type, created_at, data,
                ))),
            })
            .collect(),
    }
}

fn ready(delivery: &PendingDelivery) -> (DeliveryId, bytes::Bytes) {
    match delivery {
        PendingDelivery::Ready { record, body } => (record.id, body.clone()),
        PendingDelivery::Unrendered { record, .. } => panic!("{} is unrendered", record.id),
    }
}

fn attempt(number: u32, status: u16) -> AttemptRecord {
    AttemptRecord {
        number,
        at: now_millis(),
        status_code: Some(status),
        latency_ms: 3,
        error: (status >= 300).then(|| format!("HTTP {status}")),
        response_snippet: None,
    }
}

fn settlement(id: DeliveryId, token: ClaimToken, number: u32, decision: Decision) -> Settlement {
    let status = match decision {
        Decision::Delivered => 200,
        Decision::DisableEndpoint { .. } => 410,
        _ => 500,
    };
    Settlement {
        report: AttemptReport {
            delivery_id: id,
            endpoint_id: "orders".to_owned(),
            attempt: Some(attempt(number, status)),
            decision,
        },
        token,
    }
}

fn uuid(id: DeliveryId) -> uuid::Uuid {
    uuid::Uuid::from_u128(id.as_u128())
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The first column of every row `sql` returns.
async fn column<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Vec<T> {
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

/// Publishes `count` events with one `orders` delivery each, claims them all, and returns
/// the claim's token and the deliveries' ids, oldest first.
async fn publish_and_claim(queue: &PgQueue, count: usize) -> (ClaimToken, Vec<DeliveryId>) {
    let events: Vec<NewEvent> = (0..count)
        .map(|n| event("order.paid", &format!(r#"{{"n":{n}}}"#), None, &["orders"]))
        .collect();
    queue.publish(&events, None).await.unwrap();
    let claimed = queue.claim("orders", 10, LEASE).await.unwrap();
    let ids: Vec<DeliveryId> = claimed.deliveries.iter().map(|d| ready(d).0).collect();
    assert_eq!(ids.len(), count);
    (claimed.token, ids)
}

/// Whether a claim on `endpoint` now finds nothing due.
async fn nothing_claimable(queue: &PgQueue, endpoint: &str) -> bool {
    queue
        .claim(endpoint, 50, LEASE)
        .await
        .unwrap()
        .deliveries
        .is_empty()
}

/// Claims `orders` deliveries until one is found or `within` passes.
async fn claim_within(
    queue: &PgQueue,
    within: Duration,
) -> hookgate::store::postgres::queue::Claimed {
    let deadline = Instant::now() + within;
    loop {
        let claimed = queue.claim("orders", 10, LEASE).await.unwrap();
        if !claimed.deliveries.is_empty() || Instant::now() > deadline {
            return claimed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_even_when_several_nodes_start_together() {
    let url = postgres::cluster().fresh_database().await;
    let runs = (0..3).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let store = PgStore::connect(&url, 1).unwrap();
            migrate(&store).await.unwrap()
        })
    });
    let mut applied = Vec::new();
    for run in runs {
        let report = run.await.unwrap();
        assert_eq!(report.version, MIGRATIONS.len() as i32);
        applied.extend(report.applied);
    }
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, all, "each migration applied by exactly one node");

    let name = url.rsplit('=').next().unwrap();
    let client = postgres::cluster().connect(name).await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM schema_migrations").await,
        MIGRATIONS.len() as i64
    );
    for table in [
        "events",
        "deliveries",
        "bodies",
        "attempts",
        "queue",
        "endpoint_states",
    ] {
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap_or_else(|err| panic!("{table}: {err}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_another_build_is_refused() {
    let (store, _, url) = fresh_queue().await;
    let client = postgres::connect(&url).await;
    client
        .execute(
            "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    let message = migrate(&store).await.unwrap_err().to_string();
    assert!(
        message.contains("migration 1 (queue) in the database differs from this build"),
        "{message}"
    );

    client
        .execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (99, 'future', '')",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE schema_migrations SET checksum = $1 WHERE version = 1",
            &[&sha256_hex(MIGRATIONS[0].sql)],
        )
        .await
        .unwrap();
    let message = migrate(&store).await.unwrap_err().to_string();
    assert!(
        message.contains("schema version 99 (future), newer"),
        "{message}"
    );
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_has_statement_and_idle_transaction_timeouts_and_the_queue_its_vacuum_settings()
 {
    let (store, _, _) = fresh_queue().await;
    let client = store.client().await.unwrap();
    let show = |name: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(show("statement_timeout").await, "30s");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "1min");
    assert_eq!(show("application_name").await, "hookgate");

    let options: Vec<String> = client
        .query_one(
            "SELECT reloptions FROM pg_class WHERE relname = 'queue'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for expected in [
        "autovacuum_vacuum_scale_factor=0",
        "autovacuum_vacuum_threshold=10000",
        "autovacuum_vacuum_cost_delay=0",
    ] {
        assert!(
            options.iter().any(|o| o == expected),
            "{expected} in {options:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_take_every_due_delivery_exactly_once() {
    let (_, queue, _) = fresh_queue().await;
    let queue = std::sync::Arc::new(queue);
    let mut published = HashSet::new();
    let mut bodies = std::collections::HashMap::new();
    for batch in 0..4 {
        let events: Vec<NewEvent> = (0..500)
            .map(|n| {
                event(
                    "order.paid",
                    &format!(r#"{{"batch":{batch},"n":{n}}}"#),
                    None,
                    &["orders"],
                )
            })
            .collect();
        for event in &events {
            for delivery in &event.deliveries {
                published.insert(delivery.id);
                let DeliveryContent::Ready(payload) = &delivery.content else {
                    unreachable!()
                };
                bodies.insert(delivery.id, payload.body.clone());
            }
        }
        let answer = queue.publish(&events, None).await.unwrap();
        assert!(answer.held.is_none());
        assert!(
            answer
                .outcomes
                .iter()
                .all(|o| matches!(o, PublishOutcome::Created(_)))
        );
    }

    let claimers = (0..4).map(|_| {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = queue.claim("orders", 50, LEASE).await.unwrap();
                if claimed.deliveries.is_empty() {
                    return mine;
                }
                mine.extend(claimed.deliveries.iter().map(ready));
            }
        })
    });
    let mut seen = HashSet::new();
    for claimer in claimers {
        for (id, body) in claimer.await.unwrap() {
            assert!(seen.insert(id), "{id} claimed twice");
            assert_eq!(body, bodies[&id], "{id} carries its published body");
        }
    }
    assert_eq!(seen, published, "every delivery claimed");
    assert!(
        nothing_claimable(&queue, "other").await,
        "another endpoint's claim takes none of these"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_delivery_waits_for_its_lease_and_a_late_result_from_the_old_holder_is_refused() {
    let (_, queue, url) = fresh_queue().await;
    let events = [event("order.paid", r#"{"n":1}"#, None, &["orders"])];
    let id = events[0].deliveries[0].id;
    let held = queue
        .publish(&events, Some(Duration::from_millis(500)))
        .await
        .unwrap()
        .held
        .expect("held by the publisher");
    assert!(
        nothing_claimable(&queue, "orders").await,
        "nobody else takes a held delivery"
    );

    let reclaimed = claim_within(&queue, Duration::from_secs(10)).await;
    assert_eq!(
        reclaimed.deliveries.len(),
        1,
        "claimable once the lease ran out"
    );
    assert_ne!(reclaimed.token, held);

    let late = queue
        .settle(&[settlement(id, held, 1, Decision::Delivered)])
        .await
        .unwrap();
    assert_eq!(late.refused, [id], "the old holder lost the lease");
    let client = postgres::connect(&url).await;
    assert_eq!(count(&client, "SELECT count(*) FROM attempts").await, 0);

    let current = queue
        .settle(&[settlement(id, reclaimed.token, 1, Decision::Delivered)])
        .await
        .unwrap();
    assert!(current.refused.is_empty());
    assert_eq!(
        count(&client, "SELECT count(*) FROM queue").await,
        0,
        "delivered rows leave"
    );
    let row = client
        .query_one(
            "SELECT status, attempt_count FROM deliveries WHERE id = $1",
            &[&uuid(id)],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "delivered");
    assert_eq!(row.get::<_, i32>(1), 1);
    let again = queue
        .settle(&[settlement(id, reclaimed.token, 1, Decision::Delivered)])
        .await
        .unwrap();
    assert_eq!(again.refused, [id], "a settled delivery settles once");
    assert_eq!(count(&client, "SELECT count(*) FROM attempts").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_fall_due_by_the_database_clock_and_dead_letters_and_410s_leave_the_queue() {
    let (_, queue, url) = fresh_queue().await;
    let (token, ids) = publish_and_claim(&queue, 3).await;

    let soon = now_millis() + 300;
    let later = now_millis() + 3_600_000;
    let settled = queue
        .settle(&[
            settlement(ids[0], token, 1, Decision::Retry { at: soon }),
            settlement(ids[1], token, 1, Decision::Retry { at: later }),
            settlement(
                ids[2],
                token,
                1,
                Decision::DisableEndpoint {
                    reason: "the receiver answered 410 Gone".to_owned(),
                },
            ),
        ])
        .await
        .unwrap();
    assert!(settled.refused.is_empty());

    let retried = claim_within(&queue, Duration::from_secs(10)).await;
    assert_eq!(retried.deliveries.len(), 1, "only the retry that fell due");
    let PendingDelivery::Ready { record, .. } = &retried.deliveries[0] else {
        panic!("ready")
    };
    assert_eq!(record.id, ids[0]);
    assert_eq!(record.attempt_count, 1, "the next attempt is number 2");
    assert_eq!(record.last_error.as_deref(), Some("HTTP 500"));

    queue
        .settle(&[settlement(
            ids[0],
            retried.token,
            2,
            Decision::DeadLetter {
                reason: "retries exhausted".to_owned(),
            },
        )])
        .await
        .unwrap();
    let client = postgres::connect(&url).await;
    let row = client
        .query_one(
            "SELECT status, attempt_count, last_error, dead_lettered_at IS NOT NULL
               FROM deliveries WHERE id = $1",
            &[&uuid(ids[0])],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "dead_lettered");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, String>(2), "retries exhausted");
    assert!(row.get::<_, bool>(3));
    let left: Vec<uuid::Uuid> = column(&client, "SELECT delivery_id FROM queue").await;
    assert_eq!(
        left,
        [uuid(ids[1])],
        "only the retry due in an hour is queued"
    );
    let reason: String = client
        .query_one(
            "SELECT disabled_reason FROM endpoint_states WHERE endpoint_id = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "the receiver answered 410 Gone");
    assert_eq!(count(&client, "SELECT count(*) FROM attempts").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_with_the_first_event_and_refuses_other_content() {
    let (_, queue, url) = fresh_queue().await;
    let first = event(
        "order.paid",
        r#"{"order":"A-1"}"#,
        Some("key-1"),
        &["orders", "crm"],
    );
    let Published(created) = outcome(&queue, std::slice::from_ref(&first)).await;
    assert_eq!(created.deliveries.len(), 2);

    let retry = event(
        "order.paid",
        r#"{"order":"A-1"}"#,
        Some("key-1"),
        &["orders", "crm"],
    );
    let other = event(
        "order.paid",
        r#"{"order":"B-2"}"#,
        Some("key-1"),
        &["orders"],
    );
    let fresh = event(
        "order.paid",
        r#"{"order":"C-3"}"#,
        Some("key-2"),
        &["orders"],
    );
    let same_in_batch = event(
        "order.paid",
        r#"{"order":"C-3"}"#,
        Some("key-2"),
        &["orders"],
    );
    let answer = queue
        .publish(&[retry, other, fresh.clone(), same_in_batch], None)
        .await
        .unwrap();
    match &answer.outcomes[..] {
        [
            PublishOutcome::Replayed(replayed),
            PublishOutcome::Conflict { key },
            PublishOutcome::Created(created_now),
            PublishOutcome::Replayed(replayed_in_batch),
        ] => {
            assert_eq!(replayed.id, first.id);
            let ids = |s: &hookgate::queue::EventSummary| {
                s.deliveries.iter().map(|d| d.id).collect::<HashSet<_>>()
            };
            assert_eq!(ids(replayed), ids(&created), "the first event's deliveries");
            assert_eq!(key, "key-1");
            assert_eq!(created_now.id, fresh.id);
            assert_eq!(replayed_in_batch.id, fresh.id);
        }
        other => panic!("unexpected outcomes {other:#?}"),
    }
    let client = postgres::connect(&url).await;
    assert_eq!(count(&client, "SELECT count(*) FROM events").await, 2);
    assert_eq!(count(&client, "SELECT count(*) FROM queue").await, 3);
}

struct Published(hookgate::queue::EventSummary);

async fn outcome(queue: &PgQueue, events: &[NewEvent]) -> Published {
    match queue
        .publish(events, None)
        .await
        .unwrap()
        .outcomes
        .remove(0)
    {
        PublishOutcome::Created(summary) => Published(summary),
        other => panic!("not created: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_for_any_node_wakes_the_listeners_of_the_others() {
    let (store, queue, _) = fresh_queue().await;
    let mut listener = Listener::start(&store).await.unwrap();
    queue
        .publish(
            &[event(
                "order.paid",
                "{}",
                None,
                &["orders", "crm", "orders"],
            )],
            None,
        )
        .await
        .unwrap();
    let payload = tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("a notification within 10 s")
        .expect("the listener is connected");
    assert_eq!(payload, Notice::Due("crm\norders".to_owned()));

    queue
        .publish(&[event("order.paid", "{}", None, &["orders"])], Some(LEASE))
        .await
        .unwrap();
    queue
        .publish(&[event("order.paid", "{}", None, &["late"])], None)
        .await
        .unwrap();
    let payload = tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("a notification within 10 s")
        .expect("the listener is connected");
    assert_eq!(
        payload,
        Notice::Due("late".to_owned()),
        "inside the gap the announcement waits for its end; held deliveries are announced to nobody"
    );
}

/// Every node of `plan` with `Node Type` `kind`, with the names of the subplans above it.
fn nodes<'a>(
    plan: &'a Value,
    kind: &str,
    above: Vec<String>,
    found: &mut Vec<(&'a Value, Vec<String>)>,
) {
    let mut above = above;
    if let Some(name) = plan["Subplan Name"].as_str() {
        above.push(name.to_owned());
    }
    if plan["Node Type"] == kind {
        found.push((plan, above.clone()));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, kind, above.clone(), found);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_locks_once_in_its_cte_even_after_the_queue_was_vacuumed_empty() {
    let (_, queue, url) = fresh_queue().await;
    // A busy day that drained: rows came and went, then vacuum saw an empty table and the
    // statistics say so.
    for _ in 0..3 {
        let events: Vec<NewEvent> = (0..500)
            .map(|n| event("order.paid", &format!(r#"{{"n":{n}}}"#), None, &["orders"]))
            .collect();
        queue.publish(&events, None).await.unwrap();
        loop {
            let claimed = queue.claim("orders", 500, LEASE).await.unwrap();
            if claimed.deliveries.is_empty() {
                break;
            }
            let done: Vec<Settlement> = claimed
                .deliveries
                .iter()
                .map(|d| settlement(ready(d).0, claimed.token, 1, Decision::Delivered))
                .collect();
            queue.settle(&done).await.unwrap();
        }
    }
    let mut client = postgres::connect(&url).await;
    client.batch_execute("VACUUM ANALYZE queue").await.unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM queue").await, 0);

    // Then a burst arrives before autovacuum looks again: the planner still believes the
    // table is empty, which is when the IN (SELECT … SKIP LOCKED) form re-ran its lock.
    let events: Vec<NewEvent> = (0..2_000)
        .map(|n| event("order.paid", &format!(r#"{{"n":{n}}}"#), None, &["orders"]))
        .collect();
    queue.publish(&events, None).await.unwrap();

    let txn = client.transaction().await.unwrap();
    let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {CLAIM}");
    let token = uuid::Uuid::new_v4();
    let row = txn
        .query_one(&explain, &[&"orders", &100_i64, &token, &60_000.0_f64])
        .await
        .unwrap();
    let plan: Value = row.get(0);
    let plan = &plan[0]["Plan"];
    let mut locks = Vec::new();
    nodes(plan, "LockRows", Vec::new(), &mut locks);
    assert_eq!(locks.len(), 1, "one locking step: {plan:#}");
    let (lock, above) = &locks[0];
    assert_eq!(lock["Actual Loops"], 1, "the lock ran once: {plan:#}");
    assert_eq!(lock["Actual Rows"], 100, "and took the limit: {plan:#}");
    assert!(
        above.iter().any(|name| name == "CTE due"),
        "inside the materialized CTE: {above:?}"
    );
    let claimed: i64 = txn
        .query_one("SELECT count(*) FROM queue WHERE claim = $1", &[&token])
        .await
        .unwrap()
        .get(0);
    assert_eq!(claimed, 100);
    txn.rollback().await.unwrap();
}

/// A config for the real binary on `url` (a key-value PostgreSQL connection string).
fn config_file(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("hookgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"test-admin-token-0123456789\"\n\n\
             [store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 2\n"
        ),
    )
    .unwrap();
    path
}

fn hookgate(args: &[&str], config: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("HOOKGATE_CONFIG")
        .env_remove("HOOKGATE_DATABASE_URL")
        .output()
        .expect("run hookgate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_applies_the_schema_once() {
    let url = postgres::cluster().fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &url);

    let first = hookgate(&["store", "migrate"], &config);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{first:?}");
    let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    let latest = versions.last().copied().unwrap_or(0);
    assert_eq!(
        stdout.trim(),
        format!("applied migrations {versions:?}; schema is at version {latest}")
    );
    let again = hookgate(&["store", "migrate"], &config);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        format!("schema is up to date at version {latest}")
    );
}

#[test]
fn store_migrate_names_an_unreachable_database() {
    let dir = tempfile::tempdir().unwrap();
    // A socket directory with no server in it: refused at once, no network involved.
    let url = format!("host={} user=postgres dbname=none", dir.path().display());
    let config = config_file(dir.path(), &url);
    let output = hookgate(&["store", "migrate"], &config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot get a PostgreSQL connection"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_scans_a_chain_and_another_takes_over_when_its_session_dies() {
    use hookgate::store::postgres::leader::ChainLease;
    let (store, _, url) = fresh_queue().await;
    let first = ChainLease::try_acquire(&store, "ethereum")
        .await
        .unwrap()
        .expect("the first node takes the lease");
    assert!(first.is_held().await);
    assert!(
        ChainLease::try_acquire(&store, "ethereum")
            .await
            .unwrap()
            .is_none(),
        "a second node does not scan the same chain"
    );
    let other_chain = ChainLease::try_acquire(&store, "polygon").await.unwrap();
    assert!(other_chain.is_some(), "another chain has its own lease");

    // The holder's session ends as a killed node's would: the server drops it.
    let admin = postgres::connect(&url).await;
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
              WHERE locktype = 'advisory' AND granted
                AND (classid::bigint << 32 | objid::bigint) = $1",
            &[&hookgate::store::postgres::leader::chain_lock_key(
                "ethereum",
            )],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, 1, "one session held ethereum's lock");

    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        if let Some(lease) = ChainLease::try_acquire(&store, "ethereum").await.unwrap() {
            break lease;
        }
        assert!(
            Instant::now() < deadline,
            "the lease was not freed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(second.is_held().await);
    assert!(
        !first.is_held().await,
        "the old holder knows it lost the lease"
    );
}

/// The same units of work as on redb, on PostgreSQL: a config with one chain, an `xpub`
/// (anvil's, see `support/chain.rs`) and one endpoint for payment events.
fn payments_config() -> hookgate::config::Config {
    let text = "[server]\nadmin_token = \"test-admin-token-0123456789\"\n\
        [egress]\nallowed_networks = [\"127.0.0.1\"]\n\
        [payments]\nxpub = \"xpub6DyUKdwoLWmUJ4Tn9Bbsdtx7B5Ws18mEN19e5HT52ikE53FiUheSQXrZUNPovqfyKmw4579A1Mm3GXXKM39N64uooBfJ4tNAzFsEbodRTx4\"\n\
        [[chains]]\nname = \"anvil\"\nchain_id = 31337\nrpc_url = \"http://127.0.0.1:9\"\nconfirmations = 3\n\
        [[endpoints]]\nid = \"orders\"\nurl = \"http://127.0.0.1:9/hooks\"\nsecret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n\
        event_types = [\"payment.created\"]\n";
    hookgate::config::Config::from_toml(text, std::path::Path::new("test.toml"), |_| None)
        .expect("a valid config")
}

fn subscriptions(config: &hookgate::config::Config) -> hookgate::delivery::Subscriptions {
    use hookgate::delivery::{Endpoint, Subscriber};
    let subscribers = config
        .endpoints
        .iter()
        .map(|endpoint| {
            let record = hookgate::store::StoredEndpoint {
                config: endpoint.clone(),
                from_config: true,
                created_at: 0,
                updated_at: 0,
            };
            let runtime = Endpoint::from_config(endpoint, &config.delivery).unwrap();
            std::sync::Arc::new(Subscriber::new(
                std::sync::Arc::new(runtime),
                std::sync::Arc::new(record),
                None,
            ))
        })
        .collect();
    hookgate::delivery::Subscriptions::new(subscribers)
}

/// Emits an event, then fails: the store error must undo the event with everything else.
struct FailsAfterEmitting;

impl hookgate::queue::UnitOfWork for FailsAfterEmitting {
    type Output = ();

    fn apply(
        &mut self,
        txn: &mut dyn hookgate::queue::Txn,
    ) -> Result<(), hookgate::store::StoreError> {
        txn.take_address_index()?;
        txn.emit(hookgate::queue::Emit {
            event_type: "payment.created".to_owned(),
            data: RawValue::from_string("{}".to_owned()).unwrap(),
            idempotency_key: "never-committed".to_owned(),
        })?;
        Err(hookgate::store::StoreError::Unavailable {
            message: "the unit failed".to_owned(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_its_event_and_its_deliveries_commit_together_through_the_redb_units_of_work() {
    use hookgate::payments::{CreateRequest, Created, Payments};
    use hookgate::store::postgres::txn::PgUnits;
    let (store, queue, url) = fresh_queue().await;
    let config = payments_config();
    let subscriptions = subscriptions(&config);
    let mut create = Payments::new(&config)
        .unwrap()
        .validate(
            CreateRequest {
                chain: "anvil".to_owned(),
                token: None,
                amount: "1.5".to_owned(),
                expires_at: None,
                address: None,
                metadata: Some(
                    RawValue::from_string(r#"{"order": "A-17", "n": 1.50}"#.to_owned()).unwrap(),
                ),
            },
            now_millis(),
        )
        .unwrap();
    let pg = store.clone();
    let (created, committed, failed) = tokio::task::spawn_blocking(move || {
        let mut units = PgUnits::connect(&pg, LEASE).unwrap();
        let (created, committed) = units.run(&subscriptions, &mut create).unwrap();
        let failed = units
            .run(&subscriptions, &mut FailsAfterEmitting)
            .map(|_| ());
        (created, committed, failed)
    })
    .await
    .unwrap();

    let Created::Payment(payment) = created else {
        panic!("created: {created:?}")
    };
    assert_eq!(
        format!("{:#x}", payment.address),
        "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
        "anvil's account 0, the xpub's child 0"
    );
    assert_eq!(
        committed.deliver_now.len(),
        1,
        "one delivery, for this node's lane"
    );
    let delivery = &committed.deliver_now[0];
    assert_eq!(delivery.endpoint_id, "orders");
    let body: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(body["type"], "payment.created");
    assert_eq!(body["data"]["payment_id"], payment.id.to_string());
    assert!(
        std::str::from_utf8(&delivery.body)
            .unwrap()
            .contains(r#""metadata":{"order": "A-17", "n": 1.50}"#),
        "metadata byte for byte: {}",
        String::from_utf8_lossy(&delivery.body)
    );
    assert!(
        failed.unwrap_err().to_string().contains("the unit failed"),
        "the failing unit's error reaches its caller"
    );

    let client = postgres::connect(&url).await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM payments WHERE open").await,
        1
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM addresses WHERE ended_at_ms IS NULL"
        )
        .await,
        1
    );
    let types: Vec<String> = column(&client, "SELECT type FROM events").await;
    assert_eq!(
        types,
        ["payment.created"],
        "the failed unit's event was rolled back"
    );
    let next_index: i64 = client
        .query_one(
            "SELECT value FROM counters WHERE name = 'address_index'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next_index, 1, "the failed unit's index was rolled back");
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM queue WHERE claim IS NOT NULL AND due_at > now()"
        )
        .await,
        1,
        "the delivery is queued under this node's lease"
    );
    assert!(
        nothing_claimable(&queue, "orders").await,
        "the committing node holds the new delivery"
    );
}

/// Seconds from now until delivery `id`'s row falls due, by the database clock.
async fn due_in(client: &tokio_postgres::Client, id: DeliveryId) -> f64 {
    client
        .query_one(
            "SELECT extract(epoch FROM due_at - now())::float8 FROM queue WHERE delivery_id = $1",
            &[&uuid::Uuid::from_u128(id.as_u128())],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewal_skips_rows_others_lock_and_drops_what_is_no_longer_held() {
    let (store, queue, url) = fresh_queue().await;
    let (token, ids) = publish_and_claim(&queue, 3).await;
    let claims = Claims::default();
    claims.hold(ids.iter().copied(), token);
    let (locked, taken_over, mine) = (ids[0], ids[1], ids[2]);

    // Another transaction holds one row's lock (as the writer does while settling it);
    // another node took one over after a stall.
    let mut other = postgres::connect(&url).await;
    let writer = other.transaction().await.unwrap();
    writer
        .execute(
            "SELECT 1 FROM queue WHERE delivery_id = $1 FOR UPDATE",
            &[&uuid::Uuid::from_u128(locked.as_u128())],
        )
        .await
        .unwrap();
    let client = postgres::connect(&url).await;
    client
        .execute(
            "UPDATE queue SET claim = gen_random_uuid() WHERE delivery_id = $1",
            &[&uuid::Uuid::from_u128(taken_over.as_u128())],
        )
        .await
        .unwrap();

    let long = Duration::from_secs(3_600);
    tokio::time::timeout(Duration::from_secs(10), renew_once(&store, &claims, long))
        .await
        .expect("the renewal does not wait for a locked row")
        .unwrap();
    assert!(due_in(&client, mine).await > 3_000.0, "renewed");
    assert!(
        due_in(&client, locked).await < 120.0,
        "skipped, not waited for"
    );
    assert_eq!(claims.len(), 2, "the row taken over is no longer held");
    assert!(claims.take(taken_over).is_none());

    // Once the lock is gone, the next renewal catches the skipped row; a settled (deleted)
    // row stops being held.
    writer.rollback().await.unwrap();
    client
        .execute(
            "DELETE FROM queue WHERE delivery_id = $1",
            &[&uuid::Uuid::from_u128(mine.as_u128())],
        )
        .await
        .unwrap();
    renew_once(&store, &claims, long).await.unwrap();
    assert!(due_in(&client, locked).await > 3_000.0);
    assert_eq!(claims.len(), 1);
    assert!(claims.take(locked).is_some());
}
