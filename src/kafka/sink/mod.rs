//! `etl kafka-to-postgres`: the stream sink. A reader validates messages into batches while
//! writers put earlier batches into PostgreSQL, each batch in one transaction with the next
//! offsets (see [`write`]); a relay publishes committed anomalies. Any number of sink processes in
//! one consumer group share the partitions.
//!
//! Lanes: each of the `writers` writers has a connection of its own and a lane of partitions
//! (partition p goes to lane p mod writers), so a partition's batches are written one after the
//! other, in offset order, while other partitions' batches are written beside them. A user's
//! messages share a partition when the key is the user id; when they do not, the writers lock the
//! users' statistics rows while they read them (see [`queries::batch_state`]).
//!
//! Batching, per lane: a batch is shipped when it reaches `batch_size`, when it is `batch_wait`
//! old, or as soon as its writer is free and no further message is waiting. Caught up, that means
//! batches of whatever arrived during the previous write (low latency); backed up, full batches
//! (throughput).

pub mod batch;
pub mod consumer;
pub mod dead_letter;
pub mod error;
mod events;
pub mod relay;
pub mod write;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use batch::{Batch, Consumed};
pub use consumer::Assignment;
pub use error::SinkError;
pub use write::{DB_REJECTED, Written};

use self::consumer::SinkConsumer;
use self::dead_letter::DeadLetters;
use self::relay::Relay;
use self::write::Writer;
use crate::db::sink as queries;
use crate::domain::rules::Rules;
use crate::kafka::{KafkaSettings, config};
use crate::telemetry::metrics::Metrics;

/// The sink's defaults, written once: `SinkOptions::default()` and the CLI's flags use these.
pub const DEFAULT_BATCH_SIZE: usize = 50_000;
/// 64 MiB: above what [`DEFAULT_BATCH_SIZE`] messages of the usual size hold (about 40 MB), so
/// it binds only when messages are large.
pub const DEFAULT_BATCH_BYTES: usize = 64 << 20;
/// [`DEFAULT_BATCH_BYTES`] as the CLI writes it.
pub const DEFAULT_BATCH_BYTES_TEXT: &str = "64MiB";
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(20);
/// [`DEFAULT_BATCH_WAIT`] as the CLI writes it (a unit test checks that they agree).
pub const DEFAULT_BATCH_WAIT_TEXT: &str = "20ms";
pub const DEFAULT_WRITERS: usize = 2;
/// Connections for the default writers, the relay and the readiness checks.
pub const DEFAULT_DB_CONNECTIONS: u32 = 4;

/// Where and how the sink reads and writes. `Default` is what `etl kafka-to-postgres` uses.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub topic: String,
    pub group: String,
    pub dlq_topic: String,
    pub anomalies_topic: String,
    /// Most messages per database transaction.
    pub batch_size: usize,
    /// Most bytes a batch holds in memory (payloads and encoded rows); a batch is shipped once
    /// it reaches this or `batch_size`. The sink holds at most three batches per writer (one
    /// being written, one waiting, one filling), so this bounds its memory whatever the
    /// message size.
    pub batch_bytes: usize,
    /// Longest a batch waits to grow while the writer is idle.
    pub batch_wait: Duration,
    /// Batches written at the same time, each by a writer with a connection of its own and
    /// partitions of its own (at least 1).
    pub writers: usize,
    /// Stop once the high watermarks seen at start are written (trigger-once mode).
    pub until_caught_up: bool,
    /// Longest a transient error is retried once a stop was asked for; the batch is then
    /// abandoned (it is read again on restart) so that the process still ends in time.
    pub stop_grace: Duration,
    /// Serve `/metrics`, `/healthz` and `/readyz` here.
    pub metrics_addr: Option<SocketAddr>,
    /// Wait for PostgreSQL's WAL flush at each batch commit. Off by default: offsets commit with
    /// the data, so a database crash that loses the last commits only makes the sink read those
    /// messages again (exactly-once holds; dead letters and anomalies are at-least-once anyway).
    pub synchronous_commit: bool,
    /// What counts as valid (ARCHITECTURE §4 plus `--extra-categories`); `etl dlq replay` must
    /// run with the same rules, or what it replays comes straight back as a dead letter.
    pub rules: Arc<Rules>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            topic: config::DEFAULT_TOPIC.into(),
            group: config::DEFAULT_GROUP.into(),
            dlq_topic: config::DEFAULT_DLQ_TOPIC.into(),
            anomalies_topic: config::DEFAULT_ANOMALIES_TOPIC.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_wait: DEFAULT_BATCH_WAIT,
            writers: DEFAULT_WRITERS,
            until_caught_up: false,
            stop_grace: Duration::from_secs(5),
            metrics_addr: None,
            synchronous_commit: false,
            rules: Arc::new(Rules::default()),
        }
    }
}

/// What a run of the sink did.
#[derive(Debug, Default, Clone)]
pub struct SinkSummary {
    pub consumed: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub anomalies: u64,
    pub late_arriving: u64,
    pub published: u64,
    pub batches: u64,
    pub elapsed: Duration,
    /// Where `/metrics` was served, when it was.
    pub metrics_addr: Option<SocketAddr>,
}

/// Runs the sink until `cancel` (SIGINT/SIGTERM) or, with `until_caught_up`, until the end of
/// the topic as it was at start. On stop the batch in hand is written and committed first.
pub async fn run(
    settings: &KafkaSettings,
    database_url: &str,
    pool: PgPool,
    options: &SinkOptions,
    metrics: Metrics,
    cancel: CancellationToken,
) -> Result<SinkSummary, SinkError> {
    let started = Instant::now();
    let writers = options.writers.max(1);
    enough_connections(writers, pool.options().get_max_connections())?;
    // Who signals whom: `cancel` is the caller's (SIGINT/SIGTERM); `stop_reading` ends the reader,
    // cancelled by the caller, the caught-up watch or a failed relay; the writers then write
    // what they were handed and end. `shutting_down` tells the consumer's rebalance callback to
    // stop retrying database reads.
    let stop_reading = cancel.child_token();
    let shutting_down = Arc::new(AtomicBool::new(false));
    let (assignments_tx, mut assignments) = mpsc::unbounded_channel();
    let consumer = Arc::new(consumer::create(
        settings,
        database_url,
        &options.group,
        &options.topic,
        assignments_tx,
        shutting_down.clone(),
        metrics.sink.clone(),
    )?);
    let watermarks = high_watermarks(
        &consumer,
        &settings.brokers,
        &options.topic,
        [options.dlq_topic.clone(), options.anomalies_topic.clone()],
    )
    .await?;

    let mut summary = SinkSummary::default();
    let anomalies_committed = Arc::new(Notify::new());
    let background = Background::start(
        settings,
        &pool,
        &consumer,
        options,
        &metrics,
        watermarks,
        &anomalies_committed,
        &stop_reading,
    )
    .await?;
    summary.metrics_addr = metrics.served_at.get().copied();

    let dead_letters =
        DeadLetters::new(settings, &options.dlq_topic, &options.topic, &metrics.sink)?;
    let writer_waits = Arc::new(Notify::new());
    let writer_gone = CancellationToken::new();
    let mut lanes = Vec::with_capacity(writers);
    let mut writer_tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let writer = Writer::new(
            pool.clone(),
            &options.group,
            &options.topic,
            dead_letters.clone(),
            metrics.sink.clone(),
        )
        .with_synchronous_commit(options.synchronous_commit);
        let (lane, inbox) = Lane::new(writer_waits.clone());
        lanes.push(lane);
        let gone = writer_gone.clone();
        let task = write_batches(
            writer,
            inbox,
            consumer.clone(),
            options.clone(),
            metrics.clone(),
            anomalies_committed.clone(),
            cancel.clone(),
        );
        writer_tasks.push(tokio::spawn(async move {
            // However the writer ends, the reader must stop handing it batches.
            let _gone = gone.drop_guard();
            task.await
        }));
    }

    consumer
        .subscribe(&[&options.topic])
        .map_err(crate::kafka::KafkaError::client(format!(
            "subscribing to `{}`",
            options.topic
        )))?;
    info!(topic = %options.topic, group = %options.group, writers = lanes.len(), "sink started");

    let consumed = read_batches(
        &consumer,
        &mut assignments,
        lanes,
        Wakeups {
            writer_waits: &writer_waits,
            writer_gone: &writer_gone,
        },
        options,
        &metrics,
        &stop_reading,
    )
    .await;
    // The order of the shutdown: writers finish their batches, then the background tasks end
    // (the relay publishes what the last batches committed), then the group is left.
    shutting_down.store(true, Ordering::Relaxed);
    let written = join_writers(writer_tasks).await;
    let published = background.shutdown().await;
    // Leave the group now rather than at drop, so the partitions move on without a session timeout.
    consumer.unsubscribe();
    close(consumer).await;
    let written = written?;
    summary.published = published?;
    summary.consumed = consumed;
    summary.inserted = written.inserted as u64;
    summary.duplicates = written.duplicates as u64;
    summary.rejected = written.rejected as u64;
    summary.anomalies = written.anomalies as u64;
    summary.late_arriving = written.late_arriving as u64;
    summary.batches = written.messages as u64;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// What runs beside the reader and the writers: `/metrics` (when asked for), the caught-up
/// watch (with `until_caught_up`) and the anomaly relay.
struct Background {
    server: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
    caught_up_watch: Option<tokio::task::JoinHandle<()>>,
    relay: tokio::task::JoinHandle<Result<u64, SinkError>>,
    relay_stop: CancellationToken,
}

impl Background {
    #[allow(clippy::too_many_arguments)]
    async fn start(
        settings: &KafkaSettings,
        pool: &PgPool,
        consumer: &Arc<SinkConsumer>,
        options: &SinkOptions,
        metrics: &Metrics,
        watermarks: BTreeMap<i32, (i64, i64)>,
        anomalies_committed: &Arc<Notify>,
        stop_reading: &CancellationToken,
    ) -> Result<Self, SinkError> {
        let mut server = None;
        if let Some(addr) = options.metrics_addr {
            let router = crate::http::ops::router(
                metrics.clone(),
                readiness_probes(pool.clone(), consumer.clone(), &options.topic),
            );
            let serve_stop = CancellationToken::new();
            let (bound, handle) = crate::http::ops::serve(addr, router, serve_stop.clone())
                .await
                .map_err(|err| SinkError::Metrics { addr, cause: err })?;
            info!(%bound, "serving /metrics, /healthz and /readyz");
            let _ = metrics.served_at.set(bound);
            server = Some((handle, serve_stop));
        }
        let caught_up_watch = options.until_caught_up.then(|| {
            tokio::spawn(watch_caught_up(
                pool.clone(),
                options.group.clone(),
                options.topic.clone(),
                watermarks,
                stop_reading.clone(),
            ))
        });
        let relay = Relay::new(
            settings,
            pool.clone(),
            &options.anomalies_topic,
            metrics.sink.clone(),
        )?;
        let relay_stop = CancellationToken::new();
        let relay = {
            let (committed, relay_stop, stop_reading) = (
                anomalies_committed.clone(),
                relay_stop.clone(),
                stop_reading.clone(),
            );
            tokio::spawn(async move {
                let published = relay.run(&committed, relay_stop).await;
                if published.is_err() {
                    // Anomalies could no longer be published: stop rather than pile them up.
                    stop_reading.cancel();
                }
                published
            })
        };
        Ok(Self {
            server,
            caught_up_watch,
            relay,
            relay_stop,
        })
    }

    /// Ends them in order: the watch, the relay (after a last round over the outbox), the
    /// server. Returns what the relay published.
    async fn shutdown(self) -> Result<u64, SinkError> {
        if let Some(watch) = self.caught_up_watch {
            watch.abort();
        }
        self.relay_stop.cancel();
        let published = self.relay.await.expect("the relay task does not panic");
        if let Some((server, serve_stop)) = self.server {
            serve_stop.cancel();
            let _ = tokio::time::timeout(SERVER_STOP_TIMEOUT, server).await;
        }
        published
    }
}

/// How long the `/metrics` server may take to finish its requests at stop.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a stop takes after SIGTERM, write attempts themselves aside: a writer's backoff
/// in progress ([`MAX_BACKOFF`]), retries for `stop_grace` ending with one more backoff, the
/// relay's last round over the outbox ([`DELIVERY_TIMEOUT`]), leaving the group
/// ([`CLOSE_TIMEOUT`]) and closing `/metrics`. A deployment waits longer than this before it
/// kills the process (deploy/k8s/sink.yaml, checked by tests/it/deploy.rs).
pub fn longest_stop(options: &SinkOptions) -> Duration {
    MAX_BACKOFF
        + options.stop_grace
        + MAX_BACKOFF
        + DELIVERY_TIMEOUT
        + CLOSE_TIMEOUT
        + SERVER_STOP_TIMEOUT
}

/// Waits for every writer; their counts added up, or the first error.
async fn join_writers(
    tasks: Vec<tokio::task::JoinHandle<Result<Written, SinkError>>>,
) -> Result<Written, SinkError> {
    let mut written: Result<Written, SinkError> = Ok(Written::default());
    for task in tasks {
        let lane_written = task.await.expect("the writer task does not panic");
        written = match (written, lane_written) {
            (Ok(mut total), Ok(lane)) => {
                total.add_counts(&lane);
                Ok(total)
            }
            (Err(err), _) | (Ok(_), Err(err)) => Err(err),
        };
    }
    written
}

/// Each writer keeps a connection of its own, and the relay needs one besides.
pub fn enough_connections(writers: usize, connections: u32) -> Result<(), SinkError> {
    if (connections as usize) < writers + 1 {
        return Err(SinkError::TooFewConnections {
            writers,
            connections,
        });
    }
    Ok(())
}

/// How long librdkafka keeps trying to deliver a dead letter or an anomaly before we see an
/// error and back off.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The producer of dead letters and of the relay.
type SinkProducer = rdkafka::producer::FutureProducer<events::CountingProducerContext>;

/// A producer for dead letters or the relay: the house settings (`acks=all`, idempotent), a
/// delivery timeout short enough to surface as a retried error, their own linger, and client
/// errors counted under `stage`.
fn producer(
    settings: &KafkaSettings,
    linger_ms: &str,
    metrics: &crate::telemetry::metrics::SinkMetrics,
    stage: &'static str,
) -> Result<SinkProducer, SinkError> {
    settings
        .producer_config()
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .set("linger.ms", linger_ms)
        .create_with_context(events::CountingProducerContext {
            metrics: metrics.clone(),
            stage,
        })
        .map_err(SinkError::Config)
}

/// How long closing the consumer (leaving the group) may take before we stop waiting for it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Closes the consumer on a thread of its own: librdkafka's close blocks until the group
/// coordinator answers (tansu may hold a pending JoinGroup for minutes), and that must neither
/// hang the caller (a stop has 10 s) nor the runtime's shutdown, which waits for every blocking
/// task. Past the timeout the close goes on in the background; the data is safe either way,
/// since offsets live in the database.
async fn close(consumer: Arc<SinkConsumer>) {
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("sink-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = closed_tx.send(());
        });
    if spawned.is_err() || tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
        warn!(timeout = ?CLOSE_TIMEOUT, "the broker did not confirm that the sink left the group; going on");
    }
}

/// The reader's end of one writer: the batch growing for it and how to hand it over.
struct Lane {
    batch: Batch,
    deadline: Option<tokio::time::Instant>,
    batches: mpsc::Sender<Batch>,
    /// Batches handed to this lane's writer so far.
    shipped: u64,
    /// While the writer waits for a batch: how many it had taken by then; [`BUSY`] otherwise.
    waiting_after: Arc<AtomicU64>,
}

const BUSY: u64 = u64::MAX;

impl Lane {
    fn new(woke: Arc<Notify>) -> (Self, Inbox) {
        // One batch may wait while the writer writes another; a third waits in the reader.
        let (batches_tx, batches) = mpsc::channel(1);
        let waiting_after = Arc::new(AtomicU64::new(BUSY));
        let lane = Self {
            batch: Batch::default(),
            deadline: None,
            batches: batches_tx,
            shipped: 0,
            waiting_after: waiting_after.clone(),
        };
        let inbox = Inbox {
            batches,
            taken: 0,
            waiting_after,
            woke,
        };
        (lane, inbox)
    }

    /// The writer waits and has every batch shipped to it: a partial batch goes over only
    /// then, since while the writer is busy it had better grow than queue behind the batch
    /// being written.
    fn writer_idle(&self) -> bool {
        self.waiting_after.load(Ordering::Acquire) == self.shipped
    }

    async fn ship(&mut self) -> Result<(), ()> {
        self.deadline = None;
        self.shipped += 1;
        self.batches
            .send(std::mem::take(&mut self.batch))
            .await
            .map_err(|_| ())
    }
}

/// What wakes the reader besides messages: a writer that waits for a batch, or one that ended.
struct Wakeups<'a> {
    writer_waits: &'a Notify,
    writer_gone: &'a CancellationToken,
}

/// The reader: messages into their lane's batch, batches to the lanes' writers. Returns how
/// many it consumed.
async fn read_batches(
    consumer: &SinkConsumer,
    assignments: &mut mpsc::UnboundedReceiver<Assignment>,
    mut lanes: Vec<Lane>,
    wakeups: Wakeups<'_>,
    options: &SinkOptions,
    metrics: &Metrics,
    stop_reading: &CancellationToken,
) -> u64 {
    let mut consumed = 0u64;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    'reading: loop {
        for lane in lanes.iter_mut() {
            let full =
                lane.batch.len() >= options.batch_size || lane.batch.bytes() >= options.batch_bytes;
            if full && lane.ship().await.is_err() {
                break 'reading;
            }
        }
        // While a writer is busy its batch keeps growing whatever its age.
        let deadline = lanes
            .iter()
            .filter(|l| l.writer_idle())
            .filter_map(|l| l.deadline)
            .min();
        let waiting = lanes.iter().any(|l| !l.batch.is_empty());
        let idle_with_batch = lanes.iter().any(|l| !l.batch.is_empty() && l.writer_idle());
        tokio::select! {
            biased;
            _ = stop_reading.cancelled() => break,
            // A writer stopped on an error: its batches would never be written.
            _ = wakeups.writer_gone.cancelled() => break,
            Some(event) = assignments.recv() => {
                if let Assignment::Revoked(partitions) = event {
                    let dropped: usize = lanes.iter_mut().map(|l| l.batch.abandon(&partitions)).sum();
                    if dropped > 0 {
                        info!(dropped, ?partitions, "dropped messages of revoked partitions; their new owner reads them again");
                    }
                }
            }
            // Checked before reading, so that a steady flood cannot keep an idle writer waiting.
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                let now = tokio::time::Instant::now();
                for lane in lanes.iter_mut() {
                    if lane.writer_idle() && lane.deadline.is_some_and(|d| d <= now) && lane.ship().await.is_err() {
                        break 'reading;
                    }
                }
            }
            message = consumer.recv() => match message {
                Ok(message) => {
                    let lane = lane_of(message.partition(), lanes.len());
                    let lane = &mut lanes[lane];
                    lane.batch.push(Consumed::from_message(&message, &options.rules));
                    consumed += 1;
                    metrics.sink.consumed.inc();
                    lane.deadline.get_or_insert_with(|| tokio::time::Instant::now() + options.batch_wait);
                }
                // Broker errors surface here while librdkafka reconnects by itself.
                Err(err) => events::consumer_error(&metrics.sink, &err, "fetch"),
            },
            // No message is waiting: whatever an idle writer's lane holds goes now.
            _ = std::future::ready(()), if idle_with_batch => {
                for lane in lanes.iter_mut() {
                    if !lane.batch.is_empty() && lane.writer_idle() && lane.ship().await.is_err() {
                        break 'reading;
                    }
                }
            }
            _ = wakeups.writer_waits.notified(), if waiting => {}
        }
    }
    for lane in lanes.iter_mut() {
        if !lane.batch.is_empty() {
            let _ = lane.ship().await;
        }
    }
    consumed
}

/// The lane of a partition: a partition always goes to the same writer.
fn lane_of(partition: i32, writers: usize) -> usize {
    partition.unsigned_abs() as usize % writers.max(1)
}

/// The writer's end of a lane.
struct Inbox {
    batches: mpsc::Receiver<Batch>,
    taken: u64,
    waiting_after: Arc<AtomicU64>,
    woke: Arc<Notify>,
}

impl Inbox {
    async fn next(&mut self) -> Option<Batch> {
        self.waiting_after.store(self.taken, Ordering::Release);
        self.woke.notify_one();
        let batch = self.batches.recv().await;
        self.waiting_after.store(BUSY, Ordering::Release);
        self.taken += 1;
        batch
    }
}

/// The writer: each batch in one transaction, retried with capped exponential backoff while the
/// error is transient. Kafka offsets are committed afterwards, only as a lag signal.
async fn write_batches(
    mut writer: Writer,
    mut inbox: Inbox,
    consumer: Arc<SinkConsumer>,
    options: SinkOptions,
    metrics: Metrics,
    anomalies_committed: Arc<Notify>,
    cancel: CancellationToken,
) -> Result<Written, SinkError> {
    let mut total = Written::default();
    let mut batch_count = 0usize;
    while let Some(batch) = inbox.next().await {
        let written = write_retrying(&mut writer, &batch, &options, &metrics, &cancel).await?;
        batch_count += 1;
        if written.anomalies > 0 {
            anomalies_committed.notify_one();
        }
        commit_to_kafka(&consumer, &options.topic, &written.next_offsets, &metrics);
        total.add_counts(&written);
    }
    // For a run, `messages` counts batches.
    total.messages = batch_count;
    Ok(total)
}

/// The longest wait between two attempts at a batch or at publishing anomalies.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

async fn write_retrying(
    writer: &mut Writer,
    batch: &Batch,
    options: &SinkOptions,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> Result<Written, SinkError> {
    let mut backoff = events::Backoff::new(MAX_BACKOFF);
    let mut give_up_at: Option<Instant> = None;
    loop {
        match writer.write(batch).await {
            Ok(written) => return Ok(written),
            Err(err) if err.is_transient() => {
                if cancel.is_cancelled() {
                    let at = *give_up_at.get_or_insert_with(|| Instant::now() + options.stop_grace);
                    if Instant::now() >= at {
                        return Err(SinkError::Abandoned(Box::new(err)));
                    }
                }
                let backoff = backoff.next_wait();
                events::batch_retry(&metrics.sink, &err, backoff, batch.len());
                tokio::time::sleep(backoff).await;
            }
            Err(err) => return Err(err),
        }
    }
}

fn commit_to_kafka(
    consumer: &SinkConsumer,
    topic: &str,
    next: &BTreeMap<i32, i64>,
    metrics: &Metrics,
) {
    let mut tpl = TopicPartitionList::new();
    for (&partition, &offset) in next {
        let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(offset));
    }
    // Partitions revoked meanwhile refuse the commit; the database has the truth anyway.
    if let Err(err) = consumer.commit(&tpl, CommitMode::Async) {
        events::kafka_commit_refused(&metrics.sink, &err);
    }
}

/// (low, high) watermark of every partition of `topic`, as the broker reports them now. Also
/// checks that the topics the sink writes to exist, so that a missing one stops it at start
/// rather than after the first bad message.
async fn high_watermarks(
    consumer: &Arc<SinkConsumer>,
    brokers: &str,
    topic: &str,
    written_to: [String; 2],
) -> Result<BTreeMap<i32, (i64, i64)>, SinkError> {
    let consumer = consumer.clone();
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    let found = crate::kafka::admin::blocking(move || {
        let timeout = crate::kafka::config::REQUEST_TIMEOUT;
        let metadata = consumer
            .fetch_metadata(None, timeout)
            .map_err(crate::kafka::KafkaError::unreachable(&brokers))?;
        for required in written_to {
            if !metadata
                .topics()
                .iter()
                .any(|t| t.name() == required && t.error().is_none())
            {
                return Err(crate::kafka::KafkaError::UnknownTopic { topic: required });
            }
        }
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(crate::kafka::KafkaError::UnknownTopic { topic });
        }
        let mut marks = BTreeMap::new();
        for partition in partitions {
            let mark = consumer
                .fetch_watermarks(&topic, partition, timeout)
                .map_err(crate::kafka::KafkaError::client(format!(
                    "reading the watermarks of {topic}/{partition}"
                )))?;
            marks.insert(partition, mark);
        }
        Ok(marks)
    })
    .await?;
    Ok(found)
}

/// Stops the sink once every partition's stored offset reached the high watermark seen at start
/// (whichever process of the group wrote it).
async fn watch_caught_up(
    pool: PgPool,
    group: String,
    topic: String,
    targets: BTreeMap<i32, (i64, i64)>,
    stop: CancellationToken,
) {
    loop {
        let done = match pool.acquire().await {
            Ok(mut conn) => match queries::stored_offsets(&mut conn, &group, &topic, None).await {
                Ok(stored) => targets.iter().all(|(partition, (low, high))| {
                    high <= low || stored.get(partition).is_some_and(|next| next >= high)
                }),
                Err(_) => false,
            },
            Err(_) => false,
        };
        if done {
            info!(%topic, "caught up with the high watermarks seen at start");
            stop.cancel();
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn readiness_probes(
    pool: PgPool,
    consumer: Arc<SinkConsumer>,
    topic: &str,
) -> Vec<crate::http::ops::Probe> {
    let topic = topic.to_string();
    let database: crate::http::ops::Probe = Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            let ping = sqlx::query("SELECT 1").execute(&pool);
            match tokio::time::timeout(Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(format!("database: {err}")),
                Err(_) => Err("database: no answer within 2 s".into()),
            }
        })
    });
    let broker: crate::http::ops::Probe = Arc::new(move || {
        let consumer = consumer.clone();
        let topic = topic.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(2))
                    .map(drop)
                    .map_err(|err| format!("broker: {err}"))
            })
            .await
            .unwrap_or_else(|err| Err(format!("broker probe failed: {err}")))
        })
    });
    vec![database, broker]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_writes_the_default_batch_wait_as_the_options_hold_it() {
        assert_eq!(
            crate::cli::produce::parse_duration(DEFAULT_BATCH_WAIT_TEXT),
            Ok(DEFAULT_BATCH_WAIT)
        );
        assert_eq!(
            crate::cli::sink::parse_bytes(DEFAULT_BATCH_BYTES_TEXT),
            Ok(DEFAULT_BATCH_BYTES)
        );
        assert!(enough_connections(DEFAULT_WRITERS, DEFAULT_DB_CONNECTIONS).is_ok());
    }

    #[test]
    fn each_writer_needs_a_connection_and_the_relay_one_more() {
        assert!(enough_connections(2, 3).is_ok());
        let err = enough_connections(4, 4).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("4 writers need at least 5 database connections"),
            "{err}"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn a_partition_always_goes_to_the_same_lane_and_lanes_share_partitions_evenly() {
        let lanes: Vec<usize> = (0..6).map(|p| lane_of(p, 2)).collect();
        assert_eq!(lanes, [0, 1, 0, 1, 0, 1]);
        assert_eq!(lane_of(5, 1), 0);
        assert_eq!(lane_of(5, 0), 0, "no writers means one");
    }
}
