//! Dead letters: the original bytes of a message we cannot write, to `transactions_error`, with
//! headers saying why and where it came from (DESIGN §4). Sent and acknowledged before the batch's
//! database transaction commits, so a crash in between sends a letter twice but never loses one.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::error::SinkError;
use crate::kafka::KafkaSettings;

/// How long librdkafka keeps trying to deliver one letter before we see an error and back off.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// One message to dead-letter.
pub struct DeadLetter<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub kind: &'a str,
    pub message: &'a str,
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    source_topic: String,
}

impl DeadLetters {
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        source_topic: &str,
    ) -> Result<Self, SinkError> {
        let producer = settings
            .producer_config()
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .set("linger.ms", "1")
            .create()
            .map_err(SinkError::Config)?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            source_topic: source_topic.to_string(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every letter and waits until each is acknowledged (`acks=all`).
    pub async fn send(&self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        let mut deliveries = Vec::with_capacity(letters.len());
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
                Ok(delivery) => deliveries.push(delivery),
                Err((cause, _)) => return Err(self.failed(letters.len(), cause)),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((cause, _))) => return Err(self.failed(letters.len(), cause)),
                Err(_cancelled) => {
                    return Err(self.failed(letters.len(), rdkafka::error::KafkaError::Canceled));
                }
            }
        }
        Ok(())
    }

    fn failed(&self, count: usize, cause: rdkafka::error::KafkaError) -> SinkError {
        SinkError::DeadLetter {
            topic: self.topic.clone(),
            count,
            cause,
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
