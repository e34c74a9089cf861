//! Dead letters: the original bytes of a message we cannot write, to `transactions_error`, with
//! headers saying why and where it came from (ARCHITECTURE §4). Sent and acknowledged before the batch's
//! database transaction commits, so a crash or a retried batch may send a letter twice but never
//! loses one (at-least-once; `source.partition` and `source.offset` tell copies apart).

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};

use super::error::SinkError;
use crate::kafka::KafkaSettings;
use crate::telemetry::metrics::SinkMetrics;

/// One message to dead-letter.
pub struct DeadLetter<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub kind: &'a str,
    pub message: &'a str,
}

/// Cheap to clone: the clones share one producer.
#[derive(Clone)]
pub struct DeadLetters {
    producer: Arc<super::SinkProducer>,
    topic: String,
    source_topic: String,
}

impl DeadLetters {
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        source_topic: &str,
        metrics: &SinkMetrics,
    ) -> Result<Self, SinkError> {
        let producer = super::producer(settings, "1", metrics, "dead_letter")?;
        Ok(Self {
            producer: Arc::new(producer),
            topic: topic.to_string(),
            source_topic: source_topic.to_string(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Hands every letter to the producer and returns at once; `Deliveries::acknowledged` waits
    /// for the broker. The writer enqueues a batch's letters before its database work, so the
    /// round trip to the broker overlaps the COPY instead of adding to it.
    pub fn enqueue(&self, letters: &[DeadLetter<'_>]) -> Result<Deliveries, SinkError> {
        let mut pending = Vec::with_capacity(letters.len());
        for letter in letters {
            let partition = letter.partition.to_string();
            let offset = letter.offset.to_string();
            let headers = OwnedHeaders::new_with_capacity(5)
                .insert(header("error.kind", letter.kind))
                .insert(header("error.message", letter.message))
                .insert(header("source.topic", &self.source_topic))
                .insert(header("source.partition", &partition))
                .insert(header("source.offset", &offset));
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
                .payload(letter.payload)
                .headers(headers);
            if let Some(key) = letter.key {
                record = record.key(key);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((cause, _)) => return Err(failed(&self.topic, letters.len(), cause)),
            }
        }
        Ok(Deliveries {
            pending,
            topic: self.topic.clone(),
        })
    }
}

/// Letters handed to the producer, not yet known to be acknowledged.
#[must_use = "a dead letter counts only once the broker acknowledged it"]
pub struct Deliveries {
    pending: Vec<DeliveryFuture>,
    topic: String,
}

impl Deliveries {
    /// Waits until the broker acknowledged every letter (`acks=all`).
    pub async fn acknowledged(self) -> Result<(), SinkError> {
        let count = self.pending.len();
        for delivery in self.pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((cause, _))) => return Err(failed(&self.topic, count, cause)),
                Err(_cancelled) => {
                    return Err(failed(
                        &self.topic,
                        count,
                        rdkafka::error::KafkaError::Canceled,
                    ));
                }
            }
        }
        Ok(())
    }
}

fn failed(topic: &str, count: usize, cause: rdkafka::error::KafkaError) -> SinkError {
    SinkError::DeadLetter {
        topic: topic.to_string(),
        count,
        cause,
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
