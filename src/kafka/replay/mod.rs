//! `etl dlq replay`: re-validates the dead-letter topic with today's rules and re-produces what
//! now passes to the transactions topic (original key and headers, plus
//! [`REPLAYED_FROM_HEADER`]). Reads each partition from its start up to the high watermark seen
//! when it started, then stops.
//!
//! Idempotence: a tx_id is re-produced into a topic at most once, ever. Each chunk of messages is
//! claimed in `etl.dlq_replays` inside a database transaction that commits only after the broker
//! acknowledged every message of the chunk (idempotent producer, `acks=all`); what another run
//! claimed before is counted as already replayed and not sent. Keying on the tx_id, not on the
//! letter's offset, also covers a letter the sink sent twice and a replayed message that came
//! back as a dead letter. One window remains: a crash after the acknowledgement and before the
//! commit re-produces that chunk on the next run, and the sink's primary key on tx_id drops
//! those copies.
//!
//! Consumer-group offsets would not do: letters skipped by `--kind`/`--since`, and those still
//! failing, must stay replayable by a later run with other filters or a newer validator, so
//! nothing about the read position is remembered; the topic is read from its start every time.

mod ledger;
mod summary;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

pub use summary::{KindCounts, ReplaySummary};

use super::admin::describe_topics;
use super::producer::PRODUCED_AT_HEADER;
use super::{KafkaError, KafkaSettings, config};
use crate::domain::rules::Rules;
use crate::domain::transaction::validate_with;
use crate::kafka::sink::DB_REJECTED;

/// Added to every re-produced message: `dlq_topic/partition/offset` of the letter it came from.
pub const REPLAYED_FROM_HEADER: &str = "x-etl-replayed-from";
/// The dead-letter header that names why a message was rejected (ARCHITECTURE §4).
pub const ERROR_KIND_HEADER: &str = "error.kind";
/// The kind counted for a letter without an `error.kind` header.
pub const UNKNOWN_KIND: &str = "unknown";
/// Messages claimed and produced together; a crash re-sends at most this many.
const CHUNK: usize = 500;

/// What to replay; `Default` is what `etl dlq replay` does without flags.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub dlq_topic: String,
    pub topic: String,
    /// Only letters of these `error.kind`s; empty means every kind but `db_rejected` (the
    /// database refused those rows: they pass the validator and would only come back).
    pub kinds: Vec<String>,
    /// Only letters dead-lettered (Kafka timestamp) at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Count what would happen; produce nothing, record nothing.
    pub dry_run: bool,
    /// Today's rules; the sink must run with the same ones.
    pub rules: Arc<Rules>,
    /// Give up when no message arrives for this long although the topic holds more.
    pub idle_timeout: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            dlq_topic: config::DEFAULT_DLQ_TOPIC.into(),
            topic: config::DEFAULT_TOPIC.into(),
            kinds: Vec::new(),
            since: None,
            dry_run: false,
            rules: Arc::new(Rules::default()),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl ReplayOptions {
    fn selects_kind(&self, kind: &str) -> bool {
        if self.kinds.is_empty() {
            kind != DB_REJECTED
        } else {
            self.kinds.iter().any(|k| k == kind)
        }
    }

    fn selects_time(&self, timestamp_ms: Option<i64>) -> bool {
        match self.since {
            None => true,
            Some(since) => timestamp_ms.is_some_and(|t| t >= since.timestamp_millis()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(
        "re-producing to `{topic}` failed: {cause}; this chunk was not recorded as replayed, \
         so running the replay again sends it again"
    )]
    Produce {
        topic: String,
        cause: rdkafka::error::KafkaError,
    },
    #[error("PostgreSQL failed while {context}: {cause}")]
    Database { context: String, cause: sqlx::Error },
    #[error(
        "no message from `{topic}` for {timeout:?} although partitions {partitions:?} hold more; \
         is the broker healthy?"
    )]
    Stalled {
        topic: String,
        partitions: Vec<i32>,
        timeout: Duration,
    },
}

fn database(context: &'static str) -> impl FnOnce(sqlx::Error) -> ReplayError {
    move |cause| ReplayError::Database {
        context: context.into(),
        cause,
    }
}

/// A valid letter waiting for its chunk to be claimed and produced.
struct Candidate {
    claim: ledger::Claim,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

/// Replays the dead-letter topic as `options` says. `progress` gets the number of letters to
/// read as its length and advances per letter.
pub async fn replay(
    settings: &KafkaSettings,
    pool: &PgPool,
    options: &ReplayOptions,
    progress: &ProgressBar,
    cancel: CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let info = describe_topics(settings, Some(&options.dlq_topic))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| KafkaError::UnknownTopic {
            topic: options.dlq_topic.clone(),
        })?;
    let mut assignment = TopicPartitionList::new();
    // The offset each partition must reach: the high watermark as it was at start.
    let mut pending: HashMap<i32, i64> = HashMap::new();
    for p in &info.partitions {
        if p.low < p.high {
            assignment
                .add_partition_offset(&info.name, p.id, Offset::Offset(p.low))
                .map_err(KafkaError::client("building the partition assignment"))?;
            pending.insert(p.id, p.high);
        }
    }
    progress.set_length(info.retained().max(0) as u64);
    let mut summary = ReplaySummary {
        dry_run: options.dry_run,
        ..ReplaySummary::default()
    };
    if pending.is_empty() {
        summary.elapsed = started.elapsed();
        return Ok(summary);
    }

    // A group id is required by librdkafka; no offset is ever committed under it.
    let consumer: StreamConsumer = settings
        .consumer_config("etl-dlq-replay")
        .create()
        .map_err(KafkaError::client("creating a Kafka consumer"))?;
    consumer
        .assign(&assignment)
        .map_err(KafkaError::client(format!("assigning {}", info.name)))?;
    let producer: Option<FutureProducer> = if options.dry_run {
        None
    } else {
        Some(
            settings
                .producer_config()
                .create()
                .map_err(KafkaError::client("creating a Kafka producer"))?,
        )
    };

    let mut chunk: Vec<Candidate> = Vec::with_capacity(CHUNK);
    // tx_ids selected in this run: a second copy of a letter is not sent twice.
    let mut seen: HashSet<Uuid> = HashSet::new();
    while !pending.is_empty() {
        let received = tokio::select! {
            _ = cancel.cancelled() => {
                summary.interrupted = true;
                break;
            }
            r = tokio::time::timeout(options.idle_timeout, consumer.recv()) => r,
        };
        let message = match received {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                return Err(KafkaError::client(format!("reading {}", info.name))(e).into());
            }
            Err(_) => {
                let mut partitions: Vec<i32> = pending.keys().copied().collect();
                partitions.sort_unstable();
                return Err(ReplayError::Stalled {
                    topic: info.name.clone(),
                    partitions,
                    timeout: options.idle_timeout,
                });
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        let high = high_of(&info, partition);
        if offset >= high {
            // Written after the replay started (e.g. by a sink running beside it): the next
            // run's business.
            continue;
        }
        progress.inc(1);
        if offset + 1 >= high {
            pending.remove(&partition);
        }
        let kind = header_text(&message, ERROR_KIND_HEADER).unwrap_or_else(|| UNKNOWN_KIND.into());
        let payload = message.payload().unwrap_or_default();
        if !options.selects_kind(&kind) || !options.selects_time(message.timestamp().to_millis()) {
            summary.kind(&kind).skipped += 1;
            continue;
        }
        let tx = match validate_with(payload, &options.rules) {
            Ok(tx) => tx,
            Err(_) => {
                summary.kind(&kind).still_failing += 1;
                continue;
            }
        };
        if !seen.insert(tx.tx_id) {
            summary.kind(&kind).already_replayed += 1;
            continue;
        }
        chunk.push(Candidate {
            headers: replay_headers(&message, &info.name),
            key: message.key().map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            claim: ledger::Claim {
                tx_id: tx.tx_id,
                partition,
                offset,
                kind,
            },
        });
        if chunk.len() >= CHUNK {
            flush(pool, producer.as_ref(), options, &mut chunk, &mut summary).await?;
        }
    }
    flush(pool, producer.as_ref(), options, &mut chunk, &mut summary).await?;
    summary.elapsed = started.elapsed();
    let totals = summary.totals();
    info!(
        dlq_topic = %options.dlq_topic,
        topic = %options.topic,
        replayed = totals.replayed,
        still_failing = totals.still_failing,
        already_replayed = totals.already_replayed,
        skipped = totals.skipped,
        dry_run = options.dry_run,
        "dead-letter replay finished"
    );
    Ok(summary)
}

fn high_of(info: &super::admin::TopicInfo, partition: i32) -> i64 {
    info.partitions
        .iter()
        .find(|p| p.id == partition)
        .map_or(0, |p| p.high)
}

/// Claims the chunk's tx_ids, produces the claimed ones, waits for every acknowledgement, then
/// commits the claims; with no producer (dry run) only looks the ids up.
async fn flush(
    pool: &PgPool,
    producer: Option<&FutureProducer>,
    options: &ReplayOptions,
    chunk: &mut Vec<Candidate>,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    if chunk.is_empty() {
        return Ok(());
    }
    let candidates = std::mem::take(chunk);
    let Some(producer) = producer else {
        let ids: Vec<Uuid> = candidates.iter().map(|c| c.claim.tx_id).collect();
        let known = ledger::already_replayed(pool, &options.topic, &ids)
            .await
            .map_err(database("looking up replayed transactions"))?;
        for c in &candidates {
            let counts = summary.kind(&c.claim.kind);
            if known.contains(&c.claim.tx_id) {
                counts.already_replayed += 1;
            } else {
                counts.replayed += 1;
            }
        }
        return Ok(());
    };

    let mut db = pool
        .begin()
        .await
        .map_err(database("starting the replay ledger transaction"))?;
    let claims: Vec<ledger::Claim> = candidates.iter().map(|c| c.claim.clone()).collect();
    let claimed = ledger::claim(&mut db, &options.topic, &options.dlq_topic, &claims)
        .await
        .map_err(database("claiming transactions in etl.dlq_replays"))?;
    let mut deliveries = Vec::with_capacity(claimed.len());
    for c in candidates {
        if !claimed.contains(&c.claim.tx_id) {
            summary.kind(&c.claim.kind).already_replayed += 1;
            continue;
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&options.topic)
            .payload(&c.payload)
            .headers(c.headers);
        if let Some(key) = c.key.as_deref() {
            record = record.key(key);
        }
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push((delivery, c.claim.kind)),
            // Dropping `db` rolls the claims back: nothing of this chunk counts as replayed.
            Err((cause, _)) => {
                return Err(ReplayError::Produce {
                    topic: options.topic.clone(),
                    cause,
                });
            }
        }
    }
    let mut kinds = Vec::with_capacity(deliveries.len());
    for (delivery, kind) in deliveries {
        match delivery.await {
            Ok(Ok(_)) => kinds.push(kind),
            Ok(Err((cause, _))) => {
                return Err(ReplayError::Produce {
                    topic: options.topic.clone(),
                    cause,
                });
            }
            Err(_cancelled) => {
                return Err(ReplayError::Produce {
                    topic: options.topic.clone(),
                    cause: rdkafka::error::KafkaError::Canceled,
                });
            }
        }
    }
    db.commit()
        .await
        .map_err(database("committing the replay ledger"))?;
    for kind in kinds {
        summary.kind(&kind).replayed += 1;
    }
    Ok(())
}

/// The letter's headers as they are, plus where it was replayed from and when it was produced
/// (the sink's end-to-end latency reads that one).
fn replay_headers<M: Message>(message: &M, dlq_topic: &str) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for h in original.iter() {
            if h.key == PRODUCED_AT_HEADER || h.key == REPLAYED_FROM_HEADER {
                continue;
            }
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let from = format!("{dlq_topic}/{}/{}", message.partition(), message.offset());
    let produced_at = Utc::now().timestamp_micros().to_string();
    headers
        .insert(Header {
            key: REPLAYED_FROM_HEADER,
            value: Some(&from),
        })
        .insert(Header {
            key: PRODUCED_AT_HEADER,
            value: Some(&produced_at),
        })
}

fn header_text<M: Message>(message: &M, key: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_kinds_everything_but_db_rejected_is_selected() {
        let all = ReplayOptions::default();
        assert!(all.selects_kind("unknown_currency"));
        assert!(!all.selects_kind(DB_REJECTED));
        let some = ReplayOptions {
            kinds: vec![DB_REJECTED.into()],
            ..ReplayOptions::default()
        };
        assert!(some.selects_kind(DB_REJECTED));
        assert!(!some.selects_kind("unknown_currency"));
    }

    #[test]
    fn since_compares_the_kafka_timestamp_and_skips_letters_without_one() {
        let since = DateTime::from_timestamp_millis(1_000).unwrap();
        let options = ReplayOptions {
            since: Some(since),
            ..ReplayOptions::default()
        };
        assert!(options.selects_time(Some(1_000)));
        assert!(!options.selects_time(Some(999)));
        assert!(!options.selects_time(None));
        assert!(ReplayOptions::default().selects_time(None));
    }
}
