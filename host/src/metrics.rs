//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! Counters and histograms are updated where the work happens (one atomic add or a short
//! lock per observation); gauges that describe the store (queue depth and the oldest due
//! delivery per endpoint) and the scanners (head lag) are computed when the page is scraped.
//! One process-wide registry, like the process it describes.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub endpoint: String,
    /// `delivered`, `retry`, `dead_lettered`, `disabled`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChainLabel {
    pub chain: String,
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    pub attempts: Family<OutcomeLabels, Counter>,
    pub attempt_seconds: Family<EndpointLabel, Histogram>,
    pub plugin_call_seconds: Family<PluginLabel, Histogram>,
    pub plugin_failures: Family<PluginLabel, Counter>,
    pub commit_seconds: Histogram,
    pub commit_batch: Histogram,
    pub queue_depth: Family<EndpointLabel, Gauge>,
    pub oldest_due_seconds: Family<EndpointLabel, Gauge>,
    pub chain_lag_blocks: Family<ChainLabel, Gauge>,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("hookgate");
        let metrics = Self {
            attempts: Family::default(),
            attempt_seconds: Family::new_with_constructor(seconds_histogram),
            plugin_call_seconds: Family::new_with_constructor(seconds_histogram),
            plugin_failures: Family::default(),
            commit_seconds: seconds_histogram(),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            queue_depth: Family::default(),
            oldest_due_seconds: Family::default(),
            chain_lag_blocks: Family::default(),
            // Replaced below, once every metric is registered in it.
            registry: Registry::default(),
        };
        registry.register(
            "delivery_attempts",
            "Delivery attempts by endpoint and outcome",
            metrics.attempts.clone(),
        );
        registry.register(
            "delivery_attempt_seconds",
            "Time from sending an attempt to its outcome",
            metrics.attempt_seconds.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Wall-clock time of each plugin call",
            metrics.plugin_call_seconds.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin calls that failed (trap, limit, bad output)",
            metrics.plugin_failures.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time to apply and commit one group-commit batch",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "store_commit_batch_commands",
            "Commands applied in one group commit",
            metrics.commit_batch.clone(),
        );
        registry.register(
            "queue_depth",
            "Pending deliveries per endpoint (read from the store at scrape time)",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_due_seconds",
            "How long the oldest due delivery of each endpoint has been waiting",
            metrics.oldest_due_seconds.clone(),
        );
        registry.register(
            "chain_lag_blocks",
            "Blocks between the node's head and the scanner's cursor",
            metrics.chain_lag_blocks.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// An attempt's outcome; `took` is `None` when nothing was sent (a disabled endpoint).
    pub fn attempt(&self, endpoint: &str, outcome: &str, took: Option<Duration>) {
        self.attempts
            .get_or_create(&OutcomeLabels {
                endpoint: endpoint.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(took) = took {
            self.attempt_seconds
                .get_or_create(&EndpointLabel {
                    endpoint: endpoint.to_owned(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// Sets the scrape-time gauges: per endpoint (pending deliveries, seconds the oldest due
    /// one has waited) and per chain (blocks behind the head).
    pub fn set_state(&self, queues: &[(String, u64, u64)], chains: &[(String, u64)]) {
        self.queue_depth.clear();
        self.oldest_due_seconds.clear();
        for (endpoint, depth, waited) in queues {
            let label = EndpointLabel {
                endpoint: endpoint.clone(),
            };
            self.queue_depth
                .get_or_create(&label)
                .set(i64::try_from(*depth).unwrap_or(i64::MAX));
            self.oldest_due_seconds
                .get_or_create(&label)
                .set(i64::try_from(*waited).unwrap_or(i64::MAX));
        }
        for (chain, lag) in chains {
            self.chain_lag_blocks
                .get_or_create(&ChainLabel {
                    chain: chain.clone(),
                })
                .set(i64::try_from(*lag).unwrap_or(i64::MAX));
        }
    }

    pub fn plugin_call(&self, plugin: &str, took: Duration, failed: bool) {
        let label = PluginLabel {
            plugin: plugin.to_owned(),
        };
        self.plugin_call_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if failed {
            self.plugin_failures.get_or_create(&label).inc();
        }
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
