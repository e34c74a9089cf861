//! `etl topics lag`: how far a consumer group's committed offsets trail the high watermarks.
//!
//! For the sink these commits are only a lag signal (its real position lives in
//! `etl.sink_offsets`), which is exactly what Kafdrop and this command show.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::admin::{blocking, describe_blocking};
use super::config::REQUEST_TIMEOUT;
use super::{KafkaError, KafkaSettings};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Next offset the group will read; None when the group never committed on this partition.
    pub committed: Option<i64>,
    pub high: i64,
}

impl PartitionLag {
    /// Messages not yet consumed by the group; None without a committed offset.
    pub fn lag(&self) -> Option<i64> {
        self.committed.map(|c| (self.high - c).max(0))
    }
}

/// Lag of `group` on every partition it has committed offsets for (all partitions of `topic`
/// when one is named). A group with no commits at all is an error that lists the known groups.
pub async fn group_lag(
    settings: &KafkaSettings,
    group: &str,
    topic: Option<&str>,
) -> Result<Vec<PartitionLag>, KafkaError> {
    let consumer: BaseConsumer = settings
        .consumer_config(group)
        .create()
        .map_err(KafkaError::client("creating a Kafka client"))?;
    let brokers = settings.brokers.clone();
    let group = group.to_string();
    let topic = topic.map(str::to_string);
    blocking(move || lag_blocking(&consumer, &brokers, &group, topic.as_deref())).await
}

fn lag_blocking(
    consumer: &BaseConsumer,
    brokers: &str,
    group: &str,
    topic: Option<&str>,
) -> Result<Vec<PartitionLag>, KafkaError> {
    let topics = describe_blocking(consumer, brokers, topic)?;
    let mut wanted = TopicPartitionList::new();
    for t in &topics {
        for p in &t.partitions {
            wanted.add_partition(&t.name, p.id);
        }
    }
    let committed = consumer
        .committed_offsets(wanted, REQUEST_TIMEOUT)
        .map_err(KafkaError::client(format!(
            "reading the committed offsets of group `{group}`"
        )))?;
    let mut rows = Vec::new();
    for t in &topics {
        for p in &t.partitions {
            let offset = committed
                .find_partition(&t.name, p.id)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            if offset.is_some() || topic.is_some() {
                rows.push(PartitionLag {
                    topic: t.name.clone(),
                    partition: p.id,
                    committed: offset,
                    high: p.high,
                });
            }
        }
    }
    if rows.iter().all(|r| r.committed.is_none()) {
        // No ListGroups here: tansu 0.6 fails that request, and the name is usually a typo anyway.
        return Err(KafkaError::UnknownGroup {
            group: group.to_string(),
        });
    }
    Ok(rows)
}
