//! A receiver for load: it counts requests and keeps the first arrival time of each
//! `webhook-id`, and does nothing else, so it costs the measured machine as little as it can.
//! Used by the benchmarks and the large-backlog test.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::Gateway;
use super::measure::percentiles;

/// Arrival times by `webhook-id`, first arrival only; counts every request.
///
/// The receiver is part of the measured machine (it shares the two cores with the gateway), so
/// it does as little as it can: one map insert per request, and a wake-up only when the count
/// a waiter asked for is reached, not on every arrival.
pub struct Arrivals {
    first: Mutex<HashMap<String, Instant>>,
    pub requests: AtomicUsize,
    distinct: AtomicUsize,
    /// The distinct count [`Arrivals::wait_for`] is waiting for.
    target: AtomicUsize,
    reached: Notify,
}

impl Arrivals {
    pub fn new(capacity: usize) -> Self {
        Self {
            first: Mutex::new(HashMap::with_capacity(capacity)),
            requests: AtomicUsize::new(0),
            distinct: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            reached: Notify::new(),
        }
    }

    fn record(&self, webhook_id: Option<String>) {
        let now = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Some(id) = webhook_id else { return };
        let mut first = self.first.lock().unwrap();
        let before = first.len();
        first.entry(id).or_insert(now);
        let distinct = first.len();
        drop(first);
        if distinct > before {
            self.distinct.fetch_max(distinct, Ordering::AcqRel);
            if distinct >= self.target.load(Ordering::Acquire) {
                self.reached.notify_waiters();
            }
        }
    }

    pub fn distinct(&self) -> usize {
        self.distinct.load(Ordering::Acquire)
    }

    pub fn arrival(&self, id: &str) -> Option<Instant> {
        self.first.lock().unwrap().get(id).copied()
    }

    /// Waits until `count` distinct events arrived; false at the deadline.
    pub async fn wait_for(&self, count: usize, within: Duration) -> bool {
        let reached = self.reached.notified();
        tokio::pin!(reached);
        // Register before publishing the target, so an arrival in between cannot be missed.
        reached.as_mut().enable();
        self.target.store(count, Ordering::Release);
        if self.distinct() >= count {
            return true;
        }
        tokio::time::timeout(within, reached).await.is_ok() || self.distinct() >= count
    }
}

/// A keep-alive HTTP/1.1 receiver answering 204 to everything, except that while `hang` is
/// set, requests to paths under `/hang` get no answer at all (and are not counted).
pub async fn start_receiver(arrivals: Arc<Arrivals>, hang: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the receiver");
    let address = listener.local_addr().expect("receiver address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let arrivals = arrivals.clone();
            let hang = hang.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let arrivals = arrivals.clone();
                    let hang = hang.clone();
                    async move {
                        if hang.load(Ordering::Acquire) && request.uri().path().starts_with("/hang")
                        {
                            std::future::pending::<()>().await;
                        }
                        let webhook_id = request
                            .headers()
                            .get("webhook-id")
                            .and_then(|value| value.to_str().ok())
                            .map(str::to_owned);
                        let _ = request.into_body().collect().await;
                        arrivals.record(webhook_id);
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(204)
                                .body(Empty::<Bytes>::new())
                                .expect("a 204 response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// Publishes `event(seq)` open loop at `rate` per second (each at its scheduled instant, so a
/// slow gateway cannot slow the offered load down) until `stop` is set or `seconds` pass;
/// returns each accepted event's id with its scheduled instant.
pub async fn open_loop(
    gateway: Arc<Gateway>,
    rate: u64,
    seconds: u64,
    stop: Arc<AtomicBool>,
    event: impl Fn(u64) -> serde_json::Value,
) -> Vec<(String, Instant)> {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::new();
    for seq in 0u32.. {
        let at = started + interval * seq;
        if stop.load(Ordering::Acquire) || at.duration_since(started).as_secs() >= seconds {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let poster = gateway.poster();
        let body = event(u64::from(seq));
        tasks.push(tokio::spawn(async move {
            let answer = poster.post_json("/v1/events", &body).await.ok()?;
            Some((answer.json["id"].as_str()?.to_owned(), at))
        }));
    }
    let mut sent = Vec::new();
    for task in tasks {
        if let Ok(Some(one)) = task.await {
            sent.push(one);
        }
    }
    sent
}

/// Percentiles of publish-to-arrival latency for `sent`, waiting (up to `within`) for each.
pub async fn latency_line(
    arrivals: &Arrivals,
    sent: &[(String, Instant)],
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    let mut latencies = Vec::with_capacity(sent.len());
    let mut missing = 0;
    for (id, at) in sent {
        loop {
            if let Some(arrived) = arrivals.arrival(id) {
                latencies.push(arrived.saturating_duration_since(*at));
                break;
            }
            if Instant::now() > deadline {
                missing += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    format!("{} ({missing} missing)", percentiles(&mut latencies))
}
