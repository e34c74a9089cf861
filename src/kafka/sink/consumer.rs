//! The sink's group consumer. On assignment it starts each partition at the next offset stored
//! with the data in `etl.sink_offsets` (the earliest when none is stored), never at Kafka's own
//! committed offset, which is only a lag signal (ARCHITECTURE §5). The reader hears of every
//! assignment and revocation so that it can drop what it holds for partitions it lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sqlx::Connection;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, warn};

use rdkafka::statistics::Statistics;

use super::error::SinkError;
use super::events::{self, Backoff};
use crate::db::sink as queries;
use crate::kafka::KafkaSettings;
use crate::telemetry::metrics::{PartitionLabel, SinkMetrics};

pub type SinkConsumer = StreamConsumer<SinkContext>;

/// What the group coordinator just did to this process's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

pub struct SinkContext {
    database_url: String,
    group: String,
    topic: String,
    events: UnboundedSender<Assignment>,
    shutting_down: Arc<AtomicBool>,
    metrics: SinkMetrics,
}

impl ClientContext for SinkContext {
    /// Client-level errors (all brokers down, a connection reset) come here, not through the
    /// message stream; librdkafka reconnects by itself.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        events::consumer_error(&self.metrics, &error, reason);
    }

    /// librdkafka's statistics carry each assigned partition's lag behind the high watermark,
    /// measured from the offsets we commit after every database commit.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (&partition, stats) in &topic.partitions {
            // Partition -1 is librdkafka's internal "unassigned" bucket; -1 lag means unknown.
            if partition < 0 || stats.consumer_lag < 0 {
                continue;
            }
            let label = PartitionLabel {
                topic: self.topic.clone(),
                partition,
            };
            self.metrics
                .lag
                .get_or_create(&label)
                .set(stats.consumer_lag);
        }
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let Some(stored) = self.stored_offsets(&partitions) else {
                    let _ = consumer.unassign();
                    return;
                };
                for &partition in &partitions {
                    let start = stored
                        .get(&partition)
                        .map_or(Offset::Beginning, |next| Offset::Offset(*next));
                    let _ = tpl.set_partition_offset(&self.topic, partition, start);
                }
                if let Err(err) = consumer.assign(tpl) {
                    error!(%err, "assigning partitions failed");
                }
                events::partitions_assigned(&self.metrics, &self.topic, &partitions, &stored);
                let _ = self.events.send(Assignment::Assigned(partitions));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                events::partitions_revoked(&self.metrics, &self.topic, &partitions);
                let _ = self.events.send(Assignment::Revoked(partitions));
                let _ = consumer.unassign();
            }
            other => {
                error!(?other, "rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}

impl SinkContext {
    /// The stored offsets, read on a thread of its own: librdkafka calls us synchronously from
    /// inside the consumer's poll, possibly on an async worker, where we must not wait on the
    /// runtime. Retries until the database answers or the sink is shutting down (`None`).
    fn stored_offsets(&self, partitions: &[i32]) -> Option<HashMap<i32, i64>> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    runtime.block_on(self.read_offsets_retrying(partitions))
                })
                .join()
                .ok()
                .flatten()
        })
    }

    async fn read_offsets_retrying(&self, partitions: &[i32]) -> Option<HashMap<i32, i64>> {
        let mut backoff = Backoff::new(Duration::from_secs(5));
        loop {
            let attempt = async {
                let mut conn = sqlx::PgConnection::connect(&self.database_url).await?;
                let stored =
                    queries::stored_offsets(&mut conn, &self.group, &self.topic, Some(partitions))
                        .await?;
                let _ = conn.close().await;
                Ok::<_, sqlx::Error>(stored)
            };
            match attempt.await {
                Ok(stored) => return Some(stored),
                Err(err) if !self.shutting_down.load(Ordering::Relaxed) => {
                    let backoff = backoff.next_wait();
                    warn!(%err, ?backoff, "cannot read stored offsets for the new assignment, retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(_) => return None,
            }
        }
    }
}

/// Lower fetch wait than librdkafka's 500 ms default: at a steady trickle the broker should hand
/// messages over as they come, or the end-to-end latency target is lost waiting on the fetch.
const FETCH_WAIT_MS: &str = "10";
/// How often librdkafka reports statistics (the lag gauge).
const STATISTICS_INTERVAL_MS: &str = "5000";

pub fn create(
    settings: &KafkaSettings,
    database_url: &str,
    group: &str,
    topic: &str,
    events: UnboundedSender<Assignment>,
    shutting_down: Arc<AtomicBool>,
    metrics: SinkMetrics,
) -> Result<SinkConsumer, SinkError> {
    let mut config = settings.consumer_config(group);
    config
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    settings.apply_overrides(&mut config);
    let context = SinkContext {
        database_url: database_url.to_string(),
        group: group.to_string(),
        topic: topic.to_string(),
        events,
        shutting_down,
        metrics,
    };
    config
        .create_with_context(context)
        .map_err(SinkError::Config)
}
