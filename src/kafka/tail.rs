//! `etl topics tail`: print what is in a topic (key, headers, value) without Kafdrop.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::admin::{blocking, describe_blocking, metadata_consumer};
use super::{KafkaError, KafkaSettings};

/// What to print.
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub topic: String,
    /// Start at the first retained message instead of the last `max`.
    pub from_beginning: bool,
    /// With `from_beginning`, stop after this many; otherwise print this many of the newest.
    pub max: Option<usize>,
    /// Keep printing new messages until cancelled (or `max` reached, with `from_beginning`).
    pub follow: bool,
    /// Give up when no message arrives for this long while existing messages are still expected.
    pub idle_timeout: Duration,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self {
            topic: "transactions".into(),
            from_beginning: false,
            max: None,
            follow: false,
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// Newest messages shown when neither `--max` nor `--from-beginning` is given.
pub const DEFAULT_TAIL: usize = 10;

/// One message as read from the topic, decoupled from librdkafka's borrowed buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailedMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub value: Option<Vec<u8>>,
}

impl TailedMessage {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            headers,
            value: m.payload().map(<[u8]>::to_vec),
        }
    }

    /// Two lines: where the message is, its time, key and headers; then the value.
    pub fn render_text(&self) -> String {
        let time = self
            .timestamp_ms
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| "-".into());
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_deref().map_or("(null)".into(), lossy)))
            .collect();
        format!(
            "{}/{}@{} {} key={} headers=[{}]\n{}",
            self.topic,
            self.partition,
            self.offset,
            time,
            self.key.as_deref().map_or("(null)".into(), lossy),
            headers.join(", "),
            self.value.as_deref().map_or("(null)".into(), lossy),
        )
    }

    /// One JSON object; bytes that are not UTF-8 are shown with escapes.
    pub fn render_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_deref().map(lossy).into()))
            .collect();
        json!({
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": self.key.as_deref().map(lossy),
            "headers": headers,
            "value": self.value.as_deref().map(lossy),
        })
    }
}

/// UTF-8 text as is; anything else with its invalid bytes escaped, so nothing is hidden.
fn lossy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// Reads the topic as `options` says and hands each message to `emit`, oldest first per partition.
/// Returns how many messages were emitted.
pub async fn tail(
    settings: &KafkaSettings,
    options: &TailOptions,
    cancel: CancellationToken,
    emit: &mut (dyn FnMut(&TailedMessage) -> std::io::Result<()> + Send),
) -> Result<usize, KafkaError> {
    let topic = options.topic.clone();
    let metadata = metadata_consumer(settings)?;
    let brokers = settings.brokers.clone();
    let info = blocking(move || describe_blocking(&metadata, &brokers, Some(&topic)))
        .await?
        .remove(0);

    let backlog = if options.from_beginning {
        None
    } else {
        Some(options.max.unwrap_or(DEFAULT_TAIL) as i64)
    };
    let mut assignment = TopicPartitionList::new();
    // The offset each partition must reach before the existing backlog has been read.
    let mut pending: HashMap<i32, i64> = HashMap::new();
    for p in &info.partitions {
        let start = match backlog {
            Some(n) => (p.high - n).max(p.low),
            None => p.low,
        };
        assignment
            .add_partition_offset(&info.name, p.id, Offset::Offset(start))
            .map_err(KafkaError::client("building the partition assignment"))?;
        if start < p.high {
            pending.insert(p.id, p.high);
        }
    }

    let consumer: StreamConsumer = settings
        .consumer_config("etl-topics-tail")
        .create()
        .map_err(KafkaError::client("creating a Kafka consumer"))?;
    consumer
        .assign(&assignment)
        .map_err(KafkaError::client(format!("assigning {}", info.name)))?;

    // The newest `n` of the backlog are only known once all of it is read, so it is collected first.
    let mut backlog_messages: Vec<TailedMessage> = Vec::new();
    let mut emitted = 0usize;
    let limit = if options.from_beginning {
        options.max
    } else {
        None
    };
    loop {
        let reading_backlog = !pending.is_empty();
        if !reading_backlog {
            if let Some(n) = backlog {
                backlog_messages.sort_by_key(|m| (m.timestamp_ms, m.partition, m.offset));
                let skip = backlog_messages.len().saturating_sub(n as usize);
                for m in backlog_messages.drain(..).skip(skip) {
                    emit(&m)?;
                    emitted += 1;
                }
            }
            if !options.follow || limit.is_some_and(|l| emitted >= l) {
                break;
            }
        }
        let received = tokio::select! {
            _ = cancel.cancelled() => break,
            r = tokio::time::timeout(options.idle_timeout, consumer.recv()), if reading_backlog => r,
            r = consumer.recv(), if !reading_backlog => Ok(r),
        };
        let message = match received {
            Ok(Ok(m)) => TailedMessage::from_message(&m),
            Ok(Err(e)) => return Err(KafkaError::client(format!("reading {}", info.name))(e)),
            Err(_) => {
                return Err(KafkaError::client(format!(
                    "reading {}: no message for {:?} although the topic holds more",
                    info.name, options.idle_timeout
                ))(
                    rdkafka::error::KafkaError::NoMessageReceived
                ));
            }
        };
        if let Some(&high) = pending.get(&message.partition)
            && message.offset + 1 >= high
        {
            pending.remove(&message.partition);
        }
        if backlog.is_some() && reading_backlog {
            backlog_messages.push(message);
        } else {
            emit(&message)?;
            emitted += 1;
            if limit.is_some_and(|l| emitted >= l) {
                break;
            }
        }
    }
    Ok(emitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rendering_shows_key_headers_and_escaped_bytes() {
        let m = TailedMessage {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            timestamp_ms: Some(0),
            key: Some(b"user-1".to_vec()),
            headers: vec![
                ("produced_at".into(), Some(b"123".to_vec())),
                ("n".into(), None),
            ],
            value: Some(vec![b'{', 0xff, b'}']),
        };
        let text = m.render_text();
        assert_eq!(
            text,
            "t/2@7 1970-01-01T00:00:00.000Z key=user-1 headers=[produced_at=123, n=(null)]\n{\\xff}"
        );
        assert_eq!(m.render_json()["headers"]["produced_at"], "123");
    }
}
