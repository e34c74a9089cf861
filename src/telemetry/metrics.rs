//! Every Prometheus metric, declared once with its unit and help text.
//!
//! One [`Metrics`] per process: the sink and the relay count into it, `/metrics` renders it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Where in the sink an error happened: `consume` (the group consumer), `write` (a batch's
/// transaction, retried), `relay` (publishing anomalies), `kafka_commit` (the lag signal).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: i32,
}

/// The sink's counters, histograms and gauges.
#[derive(Clone)]
pub struct SinkMetrics {
    pub consumed: Counter,
    pub inserted: Counter,
    pub duplicates: Counter,
    pub rejected: Family<KindLabel, Counter>,
    pub late_arriving: Counter,
    pub anomalies: Counter,
    pub outbox_published: Counter,
    pub batch_duration: Histogram,
    pub end_to_end_latency: Histogram,
    pub lag: Family<PartitionLabel, Gauge>,
    pub assigned_partitions: Gauge,
    pub retries: Counter,
    pub errors: Family<StageLabel, Counter>,
    /// Exact figures of every committed batch, for benchmarks and tests; `None` (the default)
    /// in production, where the histograms suffice.
    pub commit_log: Option<CommitLog>,
}

/// One committed batch, exactly: what the histograms only bucket.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    /// Just after the database commit returned.
    pub committed_at: chrono::DateTime<chrono::Utc>,
    /// Messages in the batch, whatever became of them.
    pub messages: usize,
    pub inserted: usize,
    /// From the start of the batch's write to its commit.
    pub write_seconds: f64,
    /// `produced_at` header to commit of each inserted row that had the header, in µs.
    pub latencies_us: Vec<i64>,
    /// Receipt by the sink's consumer to commit of each message of the batch, in µs: the
    /// sink's own share of `latencies_us`.
    pub held_us: Vec<i64>,
}

/// Every [`CommitRecord`] of a sink, in commit order, shared with whoever reads them.
#[derive(Clone, Default)]
pub struct CommitLog(Arc<Mutex<Vec<CommitRecord>>>);

impl CommitLog {
    pub fn push(&self, record: CommitRecord) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }

    /// Runs `f` on the records so far, without copying them.
    pub fn with<T>(&self, f: impl FnOnce(&[CommitRecord]) -> T) -> T {
        f(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The records so far; the log is empty afterwards.
    pub fn take(&self) -> Vec<CommitRecord> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl SinkMetrics {
    pub fn reject(&self, kind: &str) {
        self.rejected
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }
}

/// The registry plus typed handles into it.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub sink: SinkMetrics,
    /// Where `/metrics` is served, once it is (a port chosen by the OS is known only then).
    pub served_at: Arc<OnceLock<SocketAddr>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let sink = SinkMetrics {
            consumed: Counter::default(),
            inserted: Counter::default(),
            duplicates: Counter::default(),
            rejected: Family::default(),
            late_arriving: Counter::default(),
            anomalies: Counter::default(),
            outbox_published: Counter::default(),
            // 1 ms … ~33 s: a batch is a few milliseconds when caught up, seconds when draining.
            batch_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            // 1 ms … ~16 s: the end-to-end target is 50 ms, the interesting part is below it.
            end_to_end_latency: Histogram::new(exponential_buckets(0.001, 1.5, 25)),
            lag: Family::default(),
            assigned_partitions: Gauge::default(),
            retries: Counter::default(),
            errors: Family::default(),
            commit_log: None,
        };
        let mut registry = Registry::with_prefix("etl_sink");
        registry.register_with_unit(
            "consumed",
            "Messages read from the topic (valid or not)",
            Unit::Other("messages".into()),
            sink.consumed.clone(),
        );
        registry.register_with_unit(
            "inserted",
            "Rows written to transactions_sink",
            Unit::Other("rows".into()),
            sink.inserted.clone(),
        );
        registry.register_with_unit(
            "duplicates",
            "Valid messages whose tx_id was already written (producer retries, replays)",
            Unit::Other("messages".into()),
            sink.duplicates.clone(),
        );
        registry.register_with_unit(
            "rejected",
            "Messages dead-lettered, by error kind",
            Unit::Other("messages".into()),
            sink.rejected.clone(),
        );
        registry.register_with_unit(
            "late_arriving_users",
            "Rows whose user_id is not (yet) in users_raw",
            Unit::Other("rows".into()),
            sink.late_arriving.clone(),
        );
        registry.register_with_unit(
            "anomalies",
            "Rows flagged as anomalies (|z| > 3)",
            Unit::Other("rows".into()),
            sink.anomalies.clone(),
        );
        registry.register_with_unit(
            "outbox_published",
            "Anomalies published from the outbox to the anomalies topic",
            Unit::Other("messages".into()),
            sink.outbox_published.clone(),
        );
        registry.register_with_unit(
            "batch_duration",
            "Time to write one batch: database transaction and dead letters",
            Unit::Seconds,
            sink.batch_duration.clone(),
        );
        registry.register_with_unit(
            "end_to_end_latency",
            "From the produced_at header to the commit of the row",
            Unit::Seconds,
            sink.end_to_end_latency.clone(),
        );
        registry.register_with_unit(
            "lag",
            "High watermark minus the next offset written, per partition",
            Unit::Other("messages".into()),
            sink.lag.clone(),
        );
        registry.register_with_unit(
            "assigned",
            "Partitions of the topic this process holds in its consumer group",
            Unit::Other("partitions".into()),
            sink.assigned_partitions.clone(),
        );
        registry.register_with_unit(
            "retries",
            "Batches retried after a transient database or broker error",
            Unit::Other("attempts".into()),
            sink.retries.clone(),
        );
        // No unit suffix: the name the alerts use is etl_sink_errors_total{stage}.
        registry.register(
            "errors",
            "Errors by stage (count): consume, write (retried), relay, kafka_commit (lag signal only)",
            sink.errors.clone(),
        );
        Self {
            registry: Arc::new(registry),
            sink,
            served_at: Arc::new(OnceLock::new()),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Labels of one HTTP request: the route as declared (`/transactions/{tx_id}`, not the id) and
/// the response status, so that the number of series stays bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// 0.25 ms … ~4 s: lookups take a millisecond, aggregates tens of them.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// `etl serve`'s metrics: request durations per route and status.
#[derive(Clone)]
pub struct HttpMetrics {
    pub registry: Arc<Registry>,
    pub request_duration: Family<RouteLabel, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    pub fn new() -> Self {
        let request_duration =
            Family::<RouteLabel, Histogram>::new_with_constructor(request_buckets as fn() -> _);
        let mut registry = Registry::with_prefix("etl_http");
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response, by method, route and status",
            Unit::Seconds,
            request_duration.clone(),
        );
        Self {
            registry: Arc::new(registry),
            request_duration,
        }
    }

    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.request_duration
            .get_or_create(&RouteLabel {
                method: method.into(),
                route: route.into(),
                status,
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `etl produce`'s metrics (with `--metrics-addr`): what it sent and what the broker
/// acknowledged or refused, so that the producer's rate sits beside the sinks' on a dashboard.
#[derive(Clone)]
pub struct ProduceMetrics {
    pub registry: Arc<Registry>,
    pub sent: Counter,
    pub delivered: Counter,
    pub failed: Counter,
}

impl Default for ProduceMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProduceMetrics {
    pub fn new() -> Self {
        let (sent, delivered, failed) =
            (Counter::default(), Counter::default(), Counter::default());
        let mut registry = Registry::with_prefix("etl_produce");
        registry.register_with_unit(
            "sent",
            "Messages handed to the Kafka client (valid or deliberately invalid)",
            Unit::Other("messages".into()),
            sent.clone(),
        );
        registry.register_with_unit(
            "delivered",
            "Messages the broker acknowledged",
            Unit::Other("messages".into()),
            delivered.clone(),
        );
        registry.register_with_unit(
            "failed",
            "Messages whose delivery failed",
            Unit::Other("messages".into()),
            failed.clone(),
        );
        Self {
            registry: Arc::new(registry),
            sent,
            delivered,
            failed,
        }
    }

    /// Brings the counters up to a progress report's running totals. The producer reports
    /// totals, not increments; a total that went down (never expected) is ignored.
    pub fn observe(&self, progress: &crate::kafka::producer::Progress) {
        for (counter, total) in [
            (&self.sent, progress.sent),
            (&self.delivered, progress.delivered),
            (&self.failed, progress.failed),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Outcome of one scheduled build: `success`, `failure` (a node failed, errored or was
/// skipped), `error` (the build could not run at all) or `busy` (another scheduler held the lock).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Status of a data test that did not pass: `fail`, `warn` or `error` (could not run).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TestStatusLabel {
    pub status: &'static str,
}

/// A scheduled `etl build-models`' metrics (`--every`/`--cron` with `--metrics-addr`): what
/// Prometheus needs to chart run durations and alert on failing tests or stale marts. A one-off
/// build ends before any scrape, so it keeps its history in `etl.model_runs` only.
#[derive(Clone)]
pub struct ModelMetrics {
    pub registry: Arc<Registry>,
    pub run_duration: Histogram,
    pub runs: Family<OutcomeLabel, Counter>,
    pub test_failures: Family<TestStatusLabel, Counter>,
    /// Unix time of the last build in which every node succeeded or passed.
    pub last_success: Gauge,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelMetrics {
    pub fn new() -> Self {
        // 1 s … ~2.3 h: a small mart builds in seconds, a full refresh of a big one in an hour.
        let run_duration = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let runs = Family::default();
        let test_failures = Family::default();
        let last_success = Gauge::default();
        let mut registry = Registry::with_prefix("etl_models");
        registry.register_with_unit(
            "run_duration",
            "Wall time of one scheduled build: seeds, models and data tests",
            Unit::Seconds,
            run_duration.clone(),
        );
        // No unit suffix: the names the alerts use are etl_models_runs_total{outcome} and
        // etl_models_test_failures_total{status}.
        registry.register(
            "runs",
            "Scheduled builds by outcome (count): success, failure, error, busy",
            runs.clone(),
        );
        registry.register(
            "test_failures",
            "Data tests that did not pass, by status (count): fail, warn, error",
            test_failures.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "Unix time at which the last fully successful build finished",
            Unit::Seconds,
            last_success.clone(),
        );
        Self {
            registry: Arc::new(registry),
            run_duration,
            runs,
            test_failures,
            last_success,
        }
    }

    /// Counts one build that ran (whatever its nodes did).
    pub fn record(&self, summary: &crate::models::RunSummary) {
        use crate::models::{NodeKind, Status};
        self.run_duration.observe(summary.elapsed.as_secs_f64());
        for result in summary.results.iter().filter(|r| r.kind == NodeKind::Test) {
            let status = match result.status {
                Status::Fail => "fail",
                Status::Warn => "warn",
                Status::Error => "error",
                _ => continue,
            };
            self.test_failures
                .get_or_create(&TestStatusLabel { status })
                .inc();
        }
        let outcome = if summary.success() {
            self.last_success.set(summary.finished_at.timestamp());
            "success"
        } else {
            "failure"
        };
        self.runs.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts a tick that built nothing: `error` or `busy`.
    pub fn record_no_build(&self, outcome: &'static str) {
        self.runs.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_has_units_help_and_labels() {
        let metrics = Metrics::new();
        metrics.sink.inserted.inc_by(3);
        metrics.sink.reject("not_json");
        let text = metrics.render();
        assert!(
            text.contains("# HELP etl_sink_inserted_rows Rows written"),
            "{text}"
        );
        assert!(text.contains("etl_sink_inserted_rows_total 3"), "{text}");
        assert!(
            text.contains(r#"etl_sink_rejected_messages_total{kind="not_json"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("etl_sink_end_to_end_latency_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn http_durations_are_labelled_by_route_template_and_status() {
        let metrics = HttpMetrics::new();
        metrics.observe("GET", "/transactions/{tx_id}", 404, 0.002);
        let text = metrics.render();
        assert!(
            text.contains(r#"etl_http_request_duration_seconds_count{method="GET",route="/transactions/{tx_id}",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# UNIT etl_http_request_duration_seconds seconds"),
            "{text}"
        );
    }

    #[test]
    fn a_scheduled_build_counts_its_duration_outcome_and_failed_tests() {
        use crate::models::{NodeKind, NodeResult, RunSummary, Status};
        let node = |name: &str, kind, status| NodeResult {
            name: name.into(),
            kind,
            status,
            materialization: None,
            relation: None,
            file: "models/x.sql".into(),
            rows: None,
            failures: None,
            severity: None,
            model: None,
            column: None,
            message: None,
            coverage: None,
            started_at: chrono::Utc::now(),
            duration: std::time::Duration::from_millis(5),
        };
        let finished_at = chrono::DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let mut summary = RunSummary {
            run_id: uuid::Uuid::nil(),
            started_at: finished_at,
            finished_at,
            elapsed: std::time::Duration::from_secs(3),
            results: vec![
                node("dim_users", NodeKind::Model, Status::Success),
                node("unique_dim_users", NodeKind::Test, Status::Pass),
                node("not_null_x", NodeKind::Test, Status::Fail),
            ],
        };
        let metrics = ModelMetrics::new();
        metrics.record(&summary);
        summary.results.truncate(2);
        metrics.record(&summary);
        metrics.record_no_build("busy");
        let text = metrics.render();
        for expected in [
            "etl_models_run_duration_seconds_count 2",
            r#"etl_models_test_failures_total{status="fail"} 1"#,
            r#"etl_models_runs_total{outcome="failure"} 1"#,
            r#"etl_models_runs_total{outcome="success"} 1"#,
            r#"etl_models_runs_total{outcome="busy"} 1"#,
            "etl_models_last_success_timestamp_seconds 1750000000",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[test]
    fn the_producer_counts_follow_its_running_totals() {
        use crate::kafka::producer::Progress;
        let metrics = ProduceMetrics::new();
        let at = |sent, delivered, failed| Progress {
            sent,
            delivered,
            failed,
            elapsed: std::time::Duration::from_secs(1),
        };
        metrics.observe(&at(10, 7, 1));
        metrics.observe(&at(25, 20, 1));
        metrics.observe(&at(25, 19, 1));
        let text = metrics.render();
        for expected in [
            "etl_produce_sent_messages_total 25",
            "etl_produce_delivered_messages_total 20",
            "etl_produce_failed_messages_total 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[test]
    fn the_commit_log_is_shared_and_drained_by_take() {
        let log = CommitLog::default();
        let writer = log.clone();
        writer.push(CommitRecord {
            committed_at: chrono::Utc::now(),
            messages: 3,
            inserted: 2,
            write_seconds: 0.01,
            latencies_us: vec![1_500, 2_500],
            held_us: vec![700, 900],
        });
        assert_eq!(log.with(|r| r.iter().map(|r| r.messages).sum::<usize>()), 3);
        assert_eq!(log.take().len(), 1);
        assert!(log.with(<[CommitRecord]>::is_empty));
    }
}
