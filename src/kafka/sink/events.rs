//! The sink's internal events. Each logs and counts with the same labels, so that every warning in
//! the log has a number on `/metrics` beside it (as vector's internal events do), and the backoff
//! its three retry loops share.

use std::collections::HashMap;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::error::SinkError;
use crate::telemetry::metrics::{PartitionLabel, SinkMetrics, StageLabel};

fn count_error(metrics: &SinkMetrics, stage: &'static str) {
    metrics.errors.get_or_create(&StageLabel { stage }).inc();
}

/// The group consumer reported an error (broker down, connection reset); librdkafka retries.
pub(crate) fn consumer_error(
    metrics: &SinkMetrics,
    err: &rdkafka::error::KafkaError,
    reason: &str,
) {
    count_error(metrics, "consume");
    warn!(%err, reason, "consumer error; librdkafka retries");
}

/// The context of the sink's producers (dead letters, relay): their client-level errors (all
/// brokers down, a connection reset) are counted under their stage, then librdkafka retries.
pub struct CountingProducerContext {
    pub(crate) metrics: SinkMetrics,
    pub(crate) stage: &'static str,
}

impl rdkafka::ClientContext for CountingProducerContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        count_error(&self.metrics, self.stage);
        warn!(stage = self.stage, %error, reason, "producer error; librdkafka retries");
    }
}

/// A batch was not written for a transient reason and is tried again after `backoff`.
pub(crate) fn batch_retry(
    metrics: &SinkMetrics,
    err: &SinkError,
    backoff: Duration,
    messages: usize,
) {
    count_error(metrics, "write");
    metrics.retries.inc();
    warn!(%err, ?backoff, messages, "batch not written, retrying");
}

/// Publishing anomalies failed; the rows stay in the outbox.
pub(crate) fn relay_failed(metrics: &SinkMetrics, err: &SinkError, backoff: Option<Duration>) {
    count_error(metrics, "relay");
    match backoff {
        Some(backoff) => warn!(%err, ?backoff, "anomaly relay will try again"),
        None => warn!(%err, "anomaly relay stops; the rows stay in the outbox for the next start"),
    }
}

/// Kafka refused the offsets committed after a batch (a partition revoked meanwhile): the lag
/// signal lags a little; the database holds the truth.
pub(crate) fn kafka_commit_refused(metrics: &SinkMetrics, err: &rdkafka::error::KafkaError) {
    count_error(metrics, "kafka_commit");
    debug!(%err, "Kafka offset commit refused (lag signal only)");
}

pub(crate) fn partitions_assigned(
    metrics: &SinkMetrics,
    topic: &str,
    partitions: &[i32],
    stored: &HashMap<i32, i64>,
) {
    metrics.assigned_partitions.inc_by(partitions.len() as i64);
    info!(%topic, ?partitions, ?stored, "partitions assigned");
}

/// Partitions went to another member: their lag is now that member's to report.
pub(crate) fn partitions_revoked(metrics: &SinkMetrics, topic: &str, partitions: &[i32]) {
    metrics.assigned_partitions.dec_by(partitions.len() as i64);
    for &partition in partitions {
        metrics.lag.remove(&PartitionLabel {
            topic: topic.to_string(),
            partition,
        });
    }
    info!(%topic, ?partitions, "partitions revoked");
}

/// Capped exponential backoff: 100 ms, 200 ms, … up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            next: Duration::from_millis(100),
            max,
        }
    }

    /// The wait before the next attempt; each call doubles the one after.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Metrics;

    #[test]
    fn backoff_doubles_from_a_tenth_of_a_second_up_to_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(500));
        let waits: Vec<u128> = (0..5).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn revoked_partitions_lose_their_lag_gauge_and_leave_the_assigned_count() {
        let metrics = Metrics::new();
        let sink = &metrics.sink;
        partitions_assigned(sink, "t", &[0, 1, 2], &HashMap::new());
        for partition in [0, 1, 2] {
            let label = PartitionLabel {
                topic: "t".into(),
                partition,
            };
            sink.lag.get_or_create(&label).set(7);
        }
        partitions_revoked(sink, "t", &[1, 2]);
        let text = metrics.render();
        assert!(text.contains("etl_sink_assigned_partitions 1"), "{text}");
        assert!(text.contains(r#"partition="0"} 7"#), "{text}");
        assert!(!text.contains(r#"partition="1""#), "{text}");
        assert!(!text.contains(r#"partition="2""#), "{text}");
    }

    #[test]
    fn every_error_event_is_counted_by_its_stage() {
        let metrics = Metrics::new();
        let sink = &metrics.sink;
        consumer_error(sink, &rdkafka::error::KafkaError::Canceled, "test");
        kafka_commit_refused(sink, &rdkafka::error::KafkaError::Canceled);
        let relay = SinkError::Relay {
            topic: "anomalies".into(),
            cause: rdkafka::error::KafkaError::Canceled,
        };
        relay_failed(sink, &relay, Some(Duration::from_secs(1)));
        batch_retry(sink, &relay, Duration::from_secs(1), 10);
        batch_retry(sink, &relay, Duration::from_secs(2), 10);
        let text = metrics.render();
        for line in [
            r#"etl_sink_errors_total{stage="consume"} 1"#,
            r#"etl_sink_errors_total{stage="kafka_commit"} 1"#,
            r#"etl_sink_errors_total{stage="relay"} 1"#,
            r#"etl_sink_errors_total{stage="write"} 2"#,
            "etl_sink_retries_attempts_total 2",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
    }
}
