//! The outbox relay: anomalies committed with their batch wait in `etl.anomaly_outbox` until this
//! loop publishes them to the `anomalies` topic (key tx_id) and marks them published.
//! At-least-once: a crash between the broker's acknowledgement and the mark publishes a row twice;
//! nothing committed is ever skipped.

use std::time::Duration;

use super::error::SinkError;
use super::events::{self, Backoff};
use crate::db::sink as queries;
use crate::kafka::KafkaSettings;
use crate::telemetry::metrics::SinkMetrics;
use rdkafka::producer::FutureRecord;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Rows published per database transaction.
const CLAIM: i64 = 500;
/// How often the outbox is looked at without a signal (rows left by a crashed process).
const POLL: Duration = Duration::from_secs(1);

pub struct Relay {
    pool: PgPool,
    producer: super::SinkProducer,
    topic: String,
    metrics: SinkMetrics,
}

impl Relay {
    pub fn new(
        settings: &KafkaSettings,
        pool: PgPool,
        topic: &str,
        metrics: SinkMetrics,
    ) -> Result<Self, SinkError> {
        let producer = super::producer(settings, "5", &metrics, "relay")?;
        Ok(Self {
            pool,
            producer,
            topic: topic.to_string(),
            metrics,
        })
    }

    /// Publishes until `stop`, then empties the outbox once more. A transient error (broker or
    /// database away) is retried with backoff while the rows wait in the outbox; any other error
    /// ends the relay with it, and the sink with the relay.
    pub async fn run(
        self,
        anomalies_committed: &Notify,
        stop: CancellationToken,
    ) -> Result<u64, SinkError> {
        let mut published = 0;
        let mut backoff = Backoff::new(super::MAX_BACKOFF);
        let mut wait = POLL;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = anomalies_committed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            match self.drain(&mut published).await {
                Ok(()) => {
                    backoff = Backoff::new(super::MAX_BACKOFF);
                    wait = POLL;
                }
                Err(err) if err.is_transient() => {
                    wait = backoff.next_wait();
                    events::relay_failed(&self.metrics, &err, Some(wait));
                }
                Err(err) => {
                    events::relay_failed(&self.metrics, &err, None);
                    return Err(err);
                }
            }
        }
        if let Err(err) = self.drain(&mut published).await {
            // The rows stay in the outbox; the next start publishes them.
            events::relay_failed(&self.metrics, &err, None);
        }
        Ok(published)
    }

    /// Publishes until the outbox is empty, adding to `published` as it goes.
    async fn drain(&self, published: &mut u64) -> Result<(), SinkError> {
        loop {
            match self.publish_some().await? {
                0 => return Ok(()),
                n => *published += n,
            }
        }
    }

    /// Claims up to [`CLAIM`] unpublished rows, publishes them, marks them. Returns how many.
    pub async fn publish_some(&self) -> Result<u64, SinkError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(SinkError::db("starting the relay transaction"))?;
        let rows = queries::claim_outbox(&mut tx, CLAIM)
            .await
            .map_err(SinkError::db("reading the anomaly outbox"))?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut deliveries = Vec::with_capacity(rows.len());
        for (_, tx_id, payload) in &rows {
            let key = tx_id.to_string();
            let record = FutureRecord::to(&self.topic).key(&key).payload(payload);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((cause, _)) => return Err(self.failed(cause)),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((cause, _))) => return Err(self.failed(cause)),
                Err(_) => return Err(self.failed(rdkafka::error::KafkaError::Canceled)),
            }
        }
        let ids: Vec<i64> = rows.iter().map(|(id, _, _)| *id).collect();
        queries::mark_published(&mut tx, &ids)
            .await
            .map_err(SinkError::db("marking anomalies published"))?;
        tx.commit()
            .await
            .map_err(SinkError::db("committing the relay transaction"))?;
        self.metrics.outbox_published.inc_by(ids.len() as u64);
        Ok(ids.len() as u64)
    }

    fn failed(&self, cause: rdkafka::error::KafkaError) -> SinkError {
        SinkError::Relay {
            topic: self.topic.clone(),
            cause,
        }
    }
}
