//! Sending a message stream to Kafka at a steady rate and accounting for every message.
//!
//! The loop is synchronous on purpose: librdkafka's own threads do the I/O, and the sending
//! thread does nothing per message but pace, enqueue and count; async futures per message would
//! cost more than the message. Only failed deliveries are reported back
//! (`delivery.report.only.error`): a report per success costs librdkafka an event and us a
//! callback per message, while success is what remains once the producer has accounted for
//! everything it was given (see the end of [`produce_blocking`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use tokio_util::sync::CancellationToken;

use super::admin::topic_names_blocking;
use super::{KafkaError, KafkaSettings};
use crate::generate::stream::{StreamMessage, decimal};

/// How long purged messages may take to be reported after a flush timed out.
const PURGE_REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Header with the send time in microseconds since the epoch, for end-to-end latency.
pub const PRODUCED_AT_HEADER: &str = "produced_at";
/// Header naming the defect of a deliberately bad message. For reconciliation in tests only:
/// the sink must never read it.
pub const INJECTED_HEADER: &str = "x-etl-injected";

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Broker unreachable or topic missing: the same errors, and sentences, as every Kafka command.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("cannot create a Kafka producer, check the -X settings: {0}")]
    Config(#[source] ClientError),
}

/// What to send where, how fast and for how long. Without `count` and `duration`, until cancelled.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub topic: String,
    /// Messages per second; `None` sends as fast as the broker takes them.
    pub rate: Option<u32>,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// Longest wait for outstanding deliveries at the end; what is still in flight then fails.
    pub flush_timeout: Duration,
    /// How often the progress callback runs.
    pub progress_interval: Duration,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        Self {
            topic: "transactions".into(),
            rate: None,
            count: None,
            duration: None,
            flush_timeout: Duration::from_secs(30),
            progress_interval: Duration::from_millis(200),
        }
    }
}

/// A message the loop can send: the generator's, or the benchmark's pre-serialized one.
pub trait Outgoing {
    fn key(&self) -> &[u8];
    fn payload(&self) -> &[u8];
    /// The injected defect's kind, for the `x-etl-injected` header and the summary.
    fn injected(&self) -> Option<&'static str> {
        None
    }
    fn orphan(&self) -> bool {
        false
    }
}

impl Outgoing for StreamMessage {
    fn key(&self) -> &[u8] {
        self.key.as_bytes()
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn injected(&self) -> Option<&'static str> {
        self.injected.map(|k| k.as_str())
    }
    fn orphan(&self) -> bool {
        self.orphan
    }
}

/// Counts while running, for a progress bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

/// Why sending stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    CountReached,
    DurationElapsed,
    Cancelled,
    SourceExhausted,
    /// librdkafka refused a message outright (too large, unknown partition …).
    EnqueueFailed,
}

/// The final account: every sent message is delivered or failed once the producer is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceSummary {
    pub topic: String,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Key and value bytes of delivered messages (before compression).
    pub delivered_bytes: u64,
    /// Deliberately bad messages sent, by kind.
    pub injected: BTreeMap<&'static str, u64>,
    pub orphans: u64,
    /// From the first send to the last enqueue.
    pub send_elapsed: Duration,
    /// From the first send until every delivery was reported.
    pub elapsed: Duration,
    pub stop: StopReason,
    /// The first delivery or enqueue error, for the user to act on.
    pub first_error: Option<String>,
}

impl ProduceSummary {
    /// Messages enqueued per second of sending: what `--rate` controls.
    pub fn send_rate(&self) -> f64 {
        per_second(self.sent, self.send_elapsed)
    }

    /// Messages acknowledged per second, flush included: the throughput.
    pub fn delivery_rate(&self) -> f64 {
        per_second(self.delivered, self.elapsed)
    }

    pub fn megabytes_per_second(&self) -> f64 {
        self.delivered_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn invalid(&self) -> u64 {
        self.injected.values().sum()
    }

    /// Whether anything was lost: the command exits non-zero then.
    pub fn has_failures(&self) -> bool {
        self.failed > 0 || self.delivered < self.sent
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

impl fmt::Display for ProduceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stop = match self.stop {
            StopReason::CountReached => "count reached",
            StopReason::DurationElapsed => "duration elapsed",
            StopReason::Cancelled => "interrupted",
            StopReason::SourceExhausted => "no more messages",
            StopReason::EnqueueFailed => "a message was refused",
        };
        writeln!(f, "topic      {} ({stop})", self.topic)?;
        writeln!(f, "sent       {}", self.sent)?;
        writeln!(f, "delivered  {}", self.delivered)?;
        writeln!(f, "failed     {}", self.failed)?;
        writeln!(f, "orphans    {} (user in no user file)", self.orphans)?;
        let kinds: Vec<String> = self
            .injected
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if kinds.is_empty() {
            writeln!(f, "invalid    0")?;
        } else {
            writeln!(f, "invalid    {} ({})", self.invalid(), kinds.join(", "))?;
        }
        writeln!(
            f,
            "elapsed    {:.2} s (sending {:.2} s)",
            self.elapsed.as_secs_f64(),
            self.send_elapsed.as_secs_f64()
        )?;
        write!(
            f,
            "rate       {:.0} msg/s sent, {:.0} msg/s delivered, {:.2} MB/s",
            self.send_rate(),
            self.delivery_rate(),
            self.megabytes_per_second()
        )?;
        if let Some(error) = &self.first_error {
            write!(f, "\nfirst error: {error}")?;
        }
        Ok(())
    }
}

/// Failed-delivery reports land here, on librdkafka's polling thread.
#[derive(Default)]
struct DeliveryCounters {
    failed: AtomicU64,
    failed_bytes: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct DeliveryTracker {
    topic: String,
    counters: Arc<DeliveryCounters>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            // Only with a `-X delivery.report.only.error=false` override; success is derived.
            Ok(_) => {}
            Err((error, m)) => {
                let bytes = m.payload_len() + m.key().map_or(0, <[u8]>::len);
                self.counters
                    .failed_bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                let failed = self.counters.failed.fetch_add(1, Ordering::Relaxed);
                if failed == 0 {
                    tracing::warn!(topic = %self.topic, partition = m.partition(), %error, "a message could not be delivered");
                    let mut first = self
                        .counters
                        .first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert_with(|| {
                        format!("delivery to {} failed: {error}", self.topic)
                    });
                }
            }
        }
    }
}

/// The shortest pause of a paced sender. At 10,000 msg/s a token comes every 100 µs, and a
/// sleep per message would cost a context switch each; waking once a millisecond sends the
/// tokens saved meanwhile in a burst far shorter than any linger, at the same average rate.
const MIN_PACING_SLEEP: Duration = Duration::from_millis(1);

/// Paces sending: `rate` tokens a second, at most `capacity` saved up, one token per message.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket that starts with one token and saves up at most 100 ms of sending: enough to
    /// catch up after the thread was descheduled on a busy machine (so the average holds), small
    /// enough that the catch-up burst is not something a consumer notices.
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            capacity: (rate / 10.0).max(1.0),
            tokens: 1.0,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Sends `messages` to `options.topic` and waits (at most `flush_timeout`) for every delivery
/// report. Blocks the calling thread: run it on a blocking task. Delivery failures do not make
/// this an `Err`; they are in the summary ([`ProduceSummary::has_failures`]).
pub fn produce_blocking<M: Outgoing>(
    settings: &KafkaSettings,
    options: &ProduceOptions,
    messages: impl IntoIterator<Item = M>,
    cancel: &CancellationToken,
    mut on_progress: impl FnMut(&Progress),
) -> Result<ProduceSummary, ProduceError> {
    let counters = Arc::new(DeliveryCounters::default());
    let context = DeliveryTracker {
        topic: options.topic.clone(),
        counters: counters.clone(),
    };
    let producer: ThreadedProducer<DeliveryTracker> = settings
        .producer_config()
        .set("delivery.report.only.error", "true")
        .create_with_context(context)
        .map_err(ProduceError::Config)?;
    check_topic(&producer, settings, &options.topic)?;
    tracing::info!(topic = %options.topic, rate = ?options.rate, count = ?options.count, duration = ?options.duration, "producing");

    let start = Instant::now();
    let deadline = options.duration.map(|d| start + d);
    let mut bucket = options.rate.map(|r| TokenBucket::new(r, start));
    let mut next_progress = start + options.progress_interval;
    let mut sent = 0u64;
    let mut sent_bytes = 0u64;
    let mut orphans = 0u64;
    let mut injected: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut enqueue_error = None;
    let mut messages = messages.into_iter();
    // Live: what is neither waiting in librdkafka nor failed has been acknowledged.
    let progress = |sent: u64, in_flight: i32, now: Instant| {
        let failed = counters.failed.load(Ordering::Relaxed);
        Progress {
            sent,
            delivered: sent.saturating_sub(u64::try_from(in_flight).unwrap_or(0) + failed),
            failed,
            elapsed: now - start,
        }
    };

    let stop = 'send: loop {
        if options.count.is_some_and(|c| sent >= c) {
            break StopReason::CountReached;
        }
        let mut now = Instant::now();
        if now >= next_progress {
            on_progress(&progress(sent, producer.in_flight_count(), now));
            next_progress = now + options.progress_interval;
        }
        if let Some(bucket) = &mut bucket {
            while let Err(wait) = bucket.take(now) {
                if cancel.is_cancelled() {
                    break 'send StopReason::Cancelled;
                }
                std::thread::sleep(wait.max(MIN_PACING_SLEEP));
                now = Instant::now();
            }
        }
        // The token takes a lock; every 256 messages is still well under a millisecond.
        if sent.is_multiple_of(256) && cancel.is_cancelled() {
            break StopReason::Cancelled;
        }
        if deadline.is_some_and(|d| now >= d) {
            break StopReason::DurationElapsed;
        }
        let Some(message) = messages.next() else {
            break StopReason::SourceExhausted;
        };

        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let mut produced_at = [0u8; 20];
        let produced_at = decimal(u64::try_from(micros).unwrap_or(u64::MAX), &mut produced_at);
        let kind = message.injected();
        let mut headers = OwnedHeaders::new_with_capacity(2).insert(Header {
            key: PRODUCED_AT_HEADER,
            value: Some(produced_at),
        });
        if let Some(kind) = kind {
            headers = headers.insert(Header {
                key: INJECTED_HEADER,
                value: Some(kind),
            });
        }
        let bytes = message.key().len() + message.payload().len();
        let mut record = BaseRecord::to(&options.topic)
            .key(message.key())
            .payload(message.payload())
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // The local queue is full: the broker is slower than we are. Wait for room.
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if cancel.is_cancelled() {
                        break 'send StopReason::Cancelled;
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err((error, _)) => {
                    tracing::error!(topic = %options.topic, %error, "librdkafka refused a message");
                    enqueue_error = Some(format!("sending to {} failed: {error}", options.topic));
                    break 'send StopReason::EnqueueFailed;
                }
            }
        }
        sent += 1;
        sent_bytes += bytes as u64;
        orphans += u64::from(message.orphan());
        if let Some(kind) = kind {
            *injected.entry(kind).or_default() += 1;
        }
    };
    let send_elapsed = start.elapsed();

    // Bounded: what is not delivered by then is purged, and the purge reports those messages as
    // failed. Anything librdkafka still holds after that counts as failed too, so `delivered`
    // below is exactly what the broker acknowledged.
    let mut unaccounted = 0;
    if let Err(error) = producer.flush(options.flush_timeout) {
        tracing::warn!(topic = %options.topic, %error, timeout = ?options.flush_timeout, "deliveries still outstanding after the flush timeout; giving up on them");
        producer.purge(PurgeConfig::default().queue().inflight());
        let _ = producer.flush(PURGE_REPORT_TIMEOUT);
        unaccounted = u64::try_from(producer.in_flight_count()).unwrap_or(0);
    }
    drop(producer);
    let elapsed = start.elapsed();
    let failed = counters.failed.load(Ordering::Relaxed) + unaccounted;
    let failed_bytes =
        counters.failed_bytes.load(Ordering::Relaxed) + unaccounted * (sent_bytes / sent.max(1));
    on_progress(&Progress {
        sent,
        delivered: sent.saturating_sub(failed),
        failed,
        elapsed,
    });

    let first_error = enqueue_error.or_else(|| {
        counters
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    });
    let summary = ProduceSummary {
        topic: options.topic.clone(),
        sent,
        delivered: sent.saturating_sub(failed),
        failed,
        delivered_bytes: sent_bytes.saturating_sub(failed_bytes),
        injected,
        orphans,
        send_elapsed,
        elapsed,
        stop,
        first_error,
    };
    tracing::info!(topic = %summary.topic, sent = summary.sent, delivered = summary.delivered, failed = summary.failed, "produced");
    Ok(summary)
}

/// Fails fast, with a sentence the user can act on, when the broker or the topic is not there;
/// otherwise every message would only fail after `message.timeout.ms`.
fn check_topic(
    producer: &ThreadedProducer<DeliveryTracker>,
    settings: &KafkaSettings,
    topic: &str,
) -> Result<(), KafkaError> {
    if topic_names_blocking(producer.client(), &settings.brokers, Some(topic))?
        .iter()
        .any(|t| t == topic)
    {
        Ok(())
    } else {
        Err(KafkaError::UnknownTopic {
            topic: topic.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_holds_the_rate_and_limits_bursts() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_000, start);
        // Simulate a sender that checks every 100 µs for 10 s.
        let mut taken = 0u32;
        for step in 1..=100_000u64 {
            let now = start + Duration::from_micros(step * 100);
            while bucket.take(now).is_ok() {
                taken += 1;
            }
        }
        assert!((9_999..=10_001).contains(&taken), "{taken}");
        // A long stall saves up at most 100 ms worth.
        let later = start + Duration::from_secs(60);
        let mut burst = 0;
        while bucket.take(later).is_ok() {
            burst += 1;
        }
        assert_eq!(burst, 100);
        let wait = bucket.take(later).unwrap_err();
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
    }

    #[test]
    fn summary_reads_well_and_counts_losses() {
        let summary = ProduceSummary {
            topic: "transactions".into(),
            sent: 10,
            delivered: 9,
            failed: 1,
            delivered_bytes: 9_000,
            injected: [("not_json", 2)].into_iter().collect(),
            orphans: 1,
            send_elapsed: Duration::from_secs(1),
            elapsed: Duration::from_secs(2),
            stop: StopReason::CountReached,
            first_error: Some("delivery to transactions failed: timed out".into()),
        };
        assert!(summary.has_failures());
        let text = summary.to_string();
        assert!(text.contains("invalid    2 (not_json=2)"), "{text}");
        assert!(text.contains("failed     1"), "{text}");
        assert!(text.contains("first error"), "{text}");
    }
}
