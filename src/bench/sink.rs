//! `etl bench sink`: how fast the stream sink drains a backed-up topic, next to the least work
//! PostgreSQL can be asked to do for the same rows (drain ≥ 0.9 of a raw COPY that uses as many
//! connections at once as the sink has writers: the server's real ingest limit).
//!
//! Once: the sink's topics (names of the run's own, on the local Apache Kafka by default), N
//! generated messages (a small share invalid, a few orphans) produced to the topic, and a scratch
//! database with the generator's users in `users_raw`. Then each round, alternating which goes
//! first:
//! - raw COPY: the valid rows, encoded beforehand as the sink encodes them
//!   ([`crate::db::sink::sink_row`], with the scores the sink would give them), split in as many
//!   parts as the sink has writers, each part one `COPY` in one transaction on a connection of
//!   its own, all at once, into a twin of `transactions_sink` (`LIKE … INCLUDING ALL`: same
//!   checks, key and indexes);
//! - drain: [`crate::kafka::sink::run`] with a fresh consumer group over the pre-filled topic,
//!   timed from the first message consumed to the commit of the last batch (the group join
//!   before it is reported apart, as is the whole run).
//!
//! The sink's tables are emptied between rounds. Figures are ratios against the raw COPY of the
//! same round, because the machine may be shared.
//!
//! The drain stops with `until_caught_up` when the broker's high watermarks add up to the
//! messages sent, as Kafka's do. A broker whose watermarks do not (some Kafka-protocol brokers
//! report a partition's last record batch's base offset plus one) would stop `until_caught_up`
//! early; then the benchmark stops the sink itself once its commit log holds every message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::broker::{BenchBroker, BrokerChoice};
use super::scratch::{
    BenchRun, Borrowed, CpuReading, ScratchDb, StreamBenchOptions, bench_users, insert_users,
    traffic, wait_for,
};
use super::stats::{Distribution, median};
use super::{BenchError, process_cpu_time};
use crate::batch::load::copy_in;
use crate::db::sink::{SINK_COPY, SinkRow, sink_row};
use crate::domain::anomaly::RunningStats;
use crate::domain::transaction::validate;
use crate::generate::stream::{StreamGenerator, StreamMessage};
use crate::kafka::KafkaSettings;
use crate::kafka::admin;
use crate::kafka::producer::{ProduceOptions, produce_blocking};
use crate::kafka::sink::{self, SinkOptions, SinkSummary};
use crate::telemetry::metrics::{CommitLog, CommitRecord, Metrics};

/// The target: drain rows/s ≥ 0.9 × rows/s of a raw COPY over as many connections as writers.
pub const TARGET_SHARE_OF_RAW_COPY: f64 = 0.9;

#[derive(Debug, Clone)]
pub struct SinkBenchOptions {
    /// The servers, the traffic and the sink's settings; the group is the benchmark's own each
    /// round.
    pub stream: StreamBenchOptions,
    /// Messages pre-filled into the topic.
    pub count: u64,
    pub rounds: u32,
    /// Longest one drain may take before the benchmark gives up.
    pub drain_timeout: Duration,
}

impl Default for SinkBenchOptions {
    fn default() -> Self {
        Self {
            stream: StreamBenchOptions::default(),
            count: 1_000_000,
            rounds: 3,
            drain_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainStop {
    /// The sink's own `until_caught_up`.
    UntilCaughtUp,
    /// The benchmark cancels the sink once the commit log holds every message sent.
    ExpectedCount,
}

/// One round's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SinkRound {
    pub round: u32,
    /// Rows the baseline's COPY wrote (counted in the table afterwards).
    pub raw_copy_rows: u64,
    pub raw_copy_seconds: f64,
    pub raw_copy_rows_per_second: f64,
    /// From the first message consumed to the commit of the last batch.
    pub drain_seconds: f64,
    pub drain_rows_per_second: f64,
    pub drain_messages_per_second: f64,
    /// Drain rows/s ÷ raw COPY rows/s.
    pub ratio: f64,
    /// From calling `sink::run` to the first message consumed: mostly the group join.
    pub startup_seconds: f64,
    /// `sink::run` from call to return: startup, drain and shutdown.
    pub sink_run_seconds: f64,
    /// Σ batch write time ÷ drain time: near 1, the database side is the bottleneck; well
    /// below, the reading and validating side is.
    pub writer_busy_share: f64,
    /// CPU time of the etl process (reader, writer, librdkafka) during the drain.
    pub process_cpu_seconds: Option<f64>,
    /// CPU time of the broker during the drain (serving the fetches).
    pub broker_cpu_seconds: Option<f64>,
    /// CPU time of the scratch database's server processes per row written: what each row
    /// costs PostgreSQL, whatever else the machine is doing.
    pub raw_copy_postgres_cpu_us_per_row: Option<f64>,
    pub drain_postgres_cpu_us_per_row: Option<f64>,
    pub inserted: u64,
    pub rejected: u64,
    pub anomalies: u64,
    pub batch_messages: Option<Distribution>,
    pub batch_write_ms: Option<Distribution>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SinkBenchReport {
    pub benchmark: &'static str,
    #[serde(flatten)]
    pub run: BenchRun,
    pub messages: u64,
    pub valid_rows: u64,
    pub invalid: u64,
    /// Messages whose user is in no user file (late-arriving for the sink).
    pub orphans: u64,
    pub partitions: i32,
    pub users: u32,
    pub seed: u64,
    pub batch_size: usize,
    pub batch_wait_ms: f64,
    /// The sink's writers, and the raw COPY's connections.
    pub writers: usize,
    /// Mean size of a row in COPY text.
    pub copy_bytes_per_row: f64,
    pub prefill_messages_per_second: f64,
    /// The broker the run used (`--broker`).
    pub broker: String,
    /// Σ (high − low) over the topic's partitions after the pre-fill, as the broker reports it.
    pub watermark_messages: i64,
    pub stop: DrainStop,
    pub rounds: Vec<SinkRound>,
    #[serde(flatten)]
    pub medians: Medians,
}

/// The rounds' medians and the verdict on them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Medians {
    pub median_raw_copy_rows_per_second: f64,
    pub median_drain_rows_per_second: f64,
    pub median_drain_messages_per_second: f64,
    /// Median of the rounds' ratios.
    pub median_ratio: f64,
    pub target_ratio: f64,
    pub meets_target: bool,
}

impl Medians {
    pub fn of(rounds: &[SinkRound]) -> Self {
        let median_of = |f: fn(&SinkRound) -> f64| median(rounds.iter().map(f)).unwrap_or(f64::NAN);
        let median_ratio = median_of(|r| r.ratio);
        Self {
            median_raw_copy_rows_per_second: median_of(|r| r.raw_copy_rows_per_second),
            median_drain_rows_per_second: median_of(|r| r.drain_rows_per_second),
            median_drain_messages_per_second: median_of(|r| r.drain_messages_per_second),
            median_ratio,
            target_ratio: TARGET_SHARE_OF_RAW_COPY,
            meets_target: median_ratio >= TARGET_SHARE_OF_RAW_COPY,
        }
    }
}

impl SinkBenchReport {
    /// The figures as a Markdown table with a few lines of context.
    pub fn table(&self) -> String {
        let mut out = format!(
            "## etl bench sink: {} messages ({} valid rows, {} invalid, {} orphans), {} build\n\n",
            self.messages, self.valid_rows, self.invalid, self.orphans, self.run.build_profile
        );
        out.push_str(
            "| round | raw COPY rows/s | drain rows/s | drain msg/s | drain / raw | drain s | startup s | batches | mean batch | batch write p50 / max ms | writer busy | etl / broker CPU s | PG CPU µs/row raw / drain |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rounds {
            let (batches, mean) = r
                .batch_messages
                .as_ref()
                .map_or((0, 0.0), |d| (d.count, d.mean));
            let write = r
                .batch_write_ms
                .as_ref()
                .map_or_else(|| "-".into(), |d| format!("{:.0} / {:.0}", d.p50, d.max));
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {} | {:.0} % | {} / {} | {} / {} |\n",
                r.round,
                r.raw_copy_rows_per_second,
                r.drain_rows_per_second,
                r.drain_messages_per_second,
                r.ratio,
                r.drain_seconds,
                r.startup_seconds,
                batches,
                mean,
                write,
                r.writer_busy_share * 100.0,
                one_decimal(r.process_cpu_seconds),
                one_decimal(r.broker_cpu_seconds),
                one_decimal(r.raw_copy_postgres_cpu_us_per_row),
                one_decimal(r.drain_postgres_cpu_us_per_row),
            ));
        }
        let m = &self.medians;
        out.push_str(&format!(
            "| median | {:.0} | {:.0} | {:.0} | {:.2} | | | | | | | | |\n\n",
            m.median_raw_copy_rows_per_second,
            m.median_drain_rows_per_second,
            m.median_drain_messages_per_second,
            m.median_ratio,
        ));
        out.push_str(&format!(
            "Drain / raw COPY over {} connections (median of {} rounds): **{:.2}**, target ≥ {:.2}: {}.\n\n",
            self.writers,
            self.rounds.len(),
            m.median_ratio,
            m.target_ratio,
            if m.meets_target { "met" } else { "NOT met" }
        ));
        let stop = match self.stop {
            DrainStop::UntilCaughtUp => "the sink's `until_caught_up`".to_string(),
            DrainStop::ExpectedCount => format!(
                "the benchmark, once every message was committed (the broker's watermarks add up \
                 to {} of {} messages, so `until_caught_up` would stop early)",
                self.watermark_messages, self.messages
            ),
        };
        out.push_str(&format!(
            "- Drain: `kafka::sink::run`, fresh consumer group per round, timed from the first message \
             consumed to the last commit; stopped by {stop}. Startup (group join) is apart.\n\
             - Raw COPY: the same valid rows, encoded beforehand with `db::sink::sink_row`, in {} \
             parts, each one `COPY` in one transaction on a connection of its own, all at once, \
             into `LIKE transactions_sink INCLUDING ALL` ({:.0} bytes/row).\n\
             - Sink: {} writers, batch_size {}, batch_wait {} ms; {} partitions, {} users; pre-fill \
             {:.0} msg/s into {}.\n",
            self.writers,
            self.copy_bytes_per_row,
            self.writers,
            self.batch_size,
            self.batch_wait_ms,
            self.partitions,
            self.users,
            self.prefill_messages_per_second,
            self.broker,
        ));
        out.push_str(&self.run.machine_line());
        out
    }
}

fn one_decimal(value: Option<f64>) -> String {
    value.map_or_else(|| "?".into(), |v| format!("{v:.1}"))
}

/// The generated messages and the baseline's COPY text of their valid rows.
struct Traffic {
    messages: Arc<Vec<StreamMessage>>,
    copy: Vec<u8>,
    valid: u64,
    invalid: u64,
    orphans: u64,
}

impl Traffic {
    /// Generates the messages and encodes their valid rows as the sink would: partitions taken
    /// in turn, offsets counted per partition, scores from each user's running statistics in
    /// message order. CPU-bound: run it on a blocking thread.
    fn generate(users: &[Uuid], options: &SinkBenchOptions, topic: &str) -> Self {
        let messages: Vec<StreamMessage> = StreamGenerator::new(
            users,
            traffic(
                options.stream.seed,
                options.stream.invalid_ratio,
                options.stream.orphan_ratio,
            ),
        )
        .take(options.count as usize)
        .collect();
        let partitions = options.stream.partitions.max(1) as usize;
        let mut next_offsets = vec![0i64; partitions];
        let mut stats: HashMap<Uuid, RunningStats> = HashMap::new();
        let produced_at = Some(Utc::now());
        let mut copy = Vec::with_capacity(messages.len() * 360);
        let (mut valid, mut invalid, mut orphans) = (0, 0, 0);
        for (i, message) in messages.iter().enumerate() {
            let partition = i % partitions;
            let offset = next_offsets[partition];
            next_offsets[partition] += 1;
            orphans += u64::from(message.orphan);
            let Ok(tx) = validate(&message.payload) else {
                invalid += 1;
                continue;
            };
            valid += 1;
            let score = stats
                .entry(tx.user_id)
                .or_default()
                .push(tx.amount.to_f64().unwrap_or_default());
            let row = SinkRow {
                tx: &tx,
                topic,
                partition: partition as i32,
                offset,
                produced_at,
                score,
            };
            sink_row(&mut copy, &row);
        }
        Self {
            messages: Arc::new(messages),
            copy,
            valid,
            invalid,
            orphans,
        }
    }
}

/// Runs the benchmark; the scratch database and the broker are gone afterwards, even on error.
pub async fn run(
    options: &SinkBenchOptions,
    cancel: CancellationToken,
) -> Result<SinkBenchReport, BenchError> {
    if options.stream.broker == BrokerChoice::LibrdkafkaMock {
        return Err(BenchError::MockCannotPrefill);
    }
    let bench_run = BenchRun::start(&options.stream.database_url);
    let users = bench_users(options.stream.users);
    let mut sink = SinkOptions {
        until_caught_up: false,
        metrics_addr: None,
        ..options.stream.sink.clone()
    };

    tracing::info!(
        messages = options.count,
        "generating the traffic and its baseline rows"
    );
    let mut traffic = {
        let (users, options, topic) = (users.clone(), options.clone(), sink.topic.clone());
        tokio::task::spawn_blocking(move || Traffic::generate(&users, &options, &topic))
            .await
            .expect("the generator does not panic")
    };

    let (broker, settings) = options.stream.start_broker(&mut sink).await?;
    let measured = prefill_and_drain(
        options,
        &broker,
        &settings,
        &sink,
        &mut traffic,
        &users,
        &cancel,
    )
    .await;
    broker.remove_topics(&settings, &sink).await;
    let broker_name = broker.describe();
    drop(broker);
    let PrefilledRounds {
        prefill_messages_per_second,
        watermark_messages,
        stop,
        rounds,
    } = measured?;

    Ok(SinkBenchReport {
        benchmark: "sink",
        run: bench_run.finished(),
        messages: options.count,
        valid_rows: traffic.valid,
        invalid: traffic.invalid,
        orphans: traffic.orphans,
        partitions: options.stream.partitions,
        users: options.stream.users,
        seed: options.stream.seed,
        batch_size: sink.batch_size,
        batch_wait_ms: sink.batch_wait.as_secs_f64() * 1e3,
        writers: sink.writers.max(1),
        copy_bytes_per_row: traffic.copy.len() as f64 / traffic.valid.max(1) as f64,
        prefill_messages_per_second,
        broker: broker_name,
        watermark_messages,
        stop,
        medians: Medians::of(&rounds),
        rounds,
    })
}

/// What happens on the broker: the pre-fill, then the rounds on a scratch database.
struct PrefilledRounds {
    prefill_messages_per_second: f64,
    watermark_messages: i64,
    stop: DrainStop,
    rounds: Vec<SinkRound>,
}

async fn prefill_and_drain(
    options: &SinkBenchOptions,
    broker: &BenchBroker,
    settings: &KafkaSettings,
    sink: &SinkOptions,
    traffic: &mut Traffic,
    users: &[Uuid],
    cancel: &CancellationToken,
) -> Result<PrefilledRounds, BenchError> {
    let prefill_messages_per_second = prefill(settings, &sink.topic, traffic, cancel).await?;
    // Only the rows are needed from here on.
    traffic.messages = Arc::new(Vec::new());
    let watermark_messages: i64 = admin::describe_topics(settings, Some(&sink.topic))
        .await?
        .iter()
        .map(admin::TopicInfo::retained)
        .sum();
    let stop = if u64::try_from(watermark_messages).ok() == Some(options.count) {
        DrainStop::UntilCaughtUp
    } else {
        tracing::warn!(
            watermark_messages,
            sent = options.count,
            "the broker's high watermarks do not add up to the messages sent; the benchmark \
             stops each drain itself instead of relying on until_caught_up"
        );
        DrainStop::ExpectedCount
    };

    let scratch = options.stream.scratch_db().await?;
    let bench = Bench {
        scratch: &scratch,
        broker,
        settings,
        sink,
        traffic,
        stop,
        count: options.count,
        timeout: options.drain_timeout,
        cancel,
    };
    let measured = measure(&bench, users, options.rounds.max(1)).await;
    scratch.drop_now().await;
    Ok(PrefilledRounds {
        prefill_messages_per_second,
        watermark_messages,
        stop,
        rounds: measured?,
    })
}

/// Produces every generated message to `topic`; all must be delivered. Returns messages/s.
async fn prefill(
    settings: &KafkaSettings,
    topic: &str,
    traffic: &Traffic,
    cancel: &CancellationToken,
) -> Result<f64, BenchError> {
    tracing::info!(
        topic,
        messages = traffic.messages.len(),
        "pre-filling the topic"
    );
    let count = traffic.messages.len() as u64;
    let produce = ProduceOptions {
        topic: topic.to_string(),
        count: Some(count),
        flush_timeout: Duration::from_secs(120),
        ..ProduceOptions::default()
    };
    let (settings, messages, cancel) = (settings.clone(), traffic.messages.clone(), cancel.clone());
    let summary = tokio::task::spawn_blocking(move || {
        produce_blocking(
            &settings,
            &produce,
            messages.iter().map(Borrowed),
            &cancel,
            |_| {},
        )
    })
    .await
    .expect("the producer thread does not panic")?;
    if summary.has_failures() || summary.sent < count {
        return Err(BenchError::Undelivered {
            phase: "pre-fill".into(),
            sent: count,
            failed: count - summary.delivered.min(count),
            first_error: summary
                .first_error
                .unwrap_or_else(|| "interrupted".to_string()),
        });
    }
    Ok(summary.delivery_rate())
}

/// What every round works with.
struct Bench<'a> {
    scratch: &'a ScratchDb,
    broker: &'a BenchBroker,
    settings: &'a KafkaSettings,
    sink: &'a SinkOptions,
    traffic: &'a Traffic,
    stop: DrainStop,
    count: u64,
    timeout: Duration,
    cancel: &'a CancellationToken,
}

async fn measure(
    bench: &Bench<'_>,
    users: &[Uuid],
    rounds: u32,
) -> Result<Vec<SinkRound>, BenchError> {
    let pool = &bench.scratch.pool;
    insert_users(pool, users).await?;
    sqlx::raw_sql(
        "CREATE SCHEMA bench; \
         CREATE TABLE bench.transactions_sink (LIKE public.transactions_sink INCLUDING ALL)",
    )
    .execute(pool)
    .await
    .map_err(BenchError::sql("creating the baseline table"))?;
    let mut results = Vec::new();
    for round in 1..=rounds {
        sqlx::raw_sql(
            "TRUNCATE bench.transactions_sink, public.transactions_sink, \
             public.transactions_rejected, etl.user_stats, etl.anomaly_outbox, etl.sink_offsets",
        )
        .execute(pool)
        .await
        .map_err(BenchError::sql("emptying the tables between rounds"))?;
        tracing::info!(round, rounds, "benchmark round");
        // Alternating the order keeps cache warmth and checkpoints from favouring one side.
        let (raw, drained) = if round % 2 == 1 {
            let raw = raw_copy(bench).await?;
            (raw, drain(bench).await?)
        } else {
            let drained = drain(bench).await?;
            (raw_copy(bench).await?, drained)
        };
        let result = SinkRound::new(round, &raw, &drained, bench.traffic);
        tracing::info!(
            round,
            raw_copy_rows_per_second = result.raw_copy_rows_per_second,
            drain_rows_per_second = result.drain_rows_per_second,
            ratio = result.ratio,
            "round done"
        );
        results.push(result);
        if bench.cancel.is_cancelled() {
            break;
        }
    }
    Ok(results)
}

/// The baseline's rows, time and PostgreSQL CPU time.
struct RawCopy {
    rows: u64,
    elapsed: Duration,
    postgres_cpu: Option<f64>,
}

/// The baseline: every valid row, in as many parts as the sink has writers, each part one
/// `COPY` in one transaction on a connection of its own, all at once.
async fn raw_copy(bench: &Bench<'_>) -> Result<RawCopy, BenchError> {
    let statement = SINK_COPY.replacen("public.transactions_sink", "bench.transactions_sink", 1);
    let parts = split_rows(&bench.traffic.copy, bench.sink.writers.max(1));
    let mut connections = Vec::with_capacity(parts.len());
    for _ in &parts {
        connections.push(
            bench
                .scratch
                .pool
                .acquire()
                .await
                .map_err(BenchError::sql("connecting"))?,
        );
    }
    let cpu = CpuReading::now(bench.broker, bench.scratch).await;
    let started = Instant::now();
    let copies = connections.iter_mut().zip(parts).map(|(conn, rows)| {
        let statement = statement.as_str();
        async move {
            let mut tx = conn
                .begin()
                .await
                .map_err(BenchError::sql("starting a baseline transaction"))?;
            copy_in(&mut tx, statement, rows)
                .await
                .map_err(BenchError::sql("raw COPY"))?;
            tx.commit()
                .await
                .map_err(BenchError::sql("committing the baseline"))
        }
    });
    futures::future::try_join_all(copies).await?;
    let elapsed = started.elapsed();
    let (_, postgres_cpu) = CpuReading::now(bench.broker, bench.scratch)
        .await
        .since(&cpu);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM bench.transactions_sink")
        .fetch_one(&bench.scratch.pool)
        .await
        .map_err(BenchError::sql("counting the baseline's rows"))?;
    Ok(RawCopy {
        rows: rows as u64,
        elapsed,
        postgres_cpu,
    })
}

/// `copy` (COPY text, one row per line) in `parts` parts of about equal size, cut between rows.
fn split_rows(copy: &[u8], parts: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(parts);
    let mut rest = copy;
    for left in (1..=parts.max(1)).rev() {
        if left == 1 || rest.is_empty() {
            out.push(rest);
            break;
        }
        let target = rest.len() / left;
        let cut = rest[target..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| target + i + 1);
        let (part, tail) = rest.split_at(cut);
        out.push(part);
        rest = tail;
    }
    out.retain(|part| !part.is_empty());
    out
}

/// One drain of the pre-filled topic by the sink.
struct Drained {
    startup: Duration,
    drain: Duration,
    run: Duration,
    cpu: Option<Duration>,
    broker_cpu: Option<f64>,
    postgres_cpu: Option<f64>,
    summary: SinkSummary,
    records: Vec<CommitRecord>,
}

async fn drain(bench: &Bench<'_>) -> Result<Drained, BenchError> {
    let log = CommitLog::default();
    let mut metrics = Metrics::new();
    metrics.sink.commit_log = Some(log.clone());
    let options = SinkOptions {
        group: format!("bench-sink-{}", Uuid::new_v4().simple()),
        until_caught_up: bench.stop == DrainStop::UntilCaughtUp,
        ..bench.sink.clone()
    };
    let stop = bench.cancel.child_token();
    let called = Instant::now();
    let called_at = Utc::now();
    let task = {
        let (settings, url, pool) = (
            bench.settings.clone(),
            bench.scratch.url.clone(),
            bench.scratch.pool.clone(),
        );
        let (metrics, stop) = (metrics.clone(), stop.clone());
        tokio::spawn(async move { sink::run(&settings, &url, pool, &options, metrics, stop).await })
    };

    let consumed = metrics.sink.consumed.clone();
    let started = wait_for(
        || consumed.get() > 0 || task.is_finished(),
        Duration::from_millis(1),
        bench.timeout,
    )
    .await;
    let first_consumed_at = Utc::now();
    let cpu_at_start = process_cpu_time();
    let others_at_start = CpuReading::now(bench.broker, bench.scratch).await;
    let committed = || log.with(|r| r.iter().map(|r| r.messages as u64).sum::<u64>());
    let finished = started
        && match bench.stop {
            DrainStop::ExpectedCount => {
                wait_for(
                    || committed() >= bench.count || task.is_finished(),
                    Duration::from_millis(5),
                    bench.timeout,
                )
                .await
            }
            DrainStop::UntilCaughtUp => {
                wait_for(
                    || task.is_finished(),
                    Duration::from_millis(10),
                    bench.timeout,
                )
                .await
            }
        };
    let cpu = process_cpu_time()
        .zip(cpu_at_start)
        .map(|(end, start)| end.saturating_sub(start));
    let (broker_cpu, postgres_cpu) = CpuReading::now(bench.broker, bench.scratch)
        .await
        .since(&others_at_start);
    stop.cancel();
    let summary = task.await.expect("the sink task does not panic")?;
    let run = called.elapsed();
    if bench.cancel.is_cancelled() {
        return Err(BenchError::Void("interrupted".into()));
    }
    if !finished {
        return Err(BenchError::Void(format!(
            "the drain did not finish within {:?} ({} of {} messages committed)",
            bench.timeout,
            committed(),
            bench.count
        )));
    }
    let (valid, invalid) = (bench.traffic.valid, bench.traffic.invalid);
    if summary.inserted != valid || summary.rejected != invalid {
        return Err(BenchError::Void(format!(
            "the sink wrote {} rows and {} rejects, the topic holds {valid} valid and {invalid} \
             invalid messages",
            summary.inserted, summary.rejected
        )));
    }
    let records = log.take();
    let last_commit = records
        .last()
        .map_or_else(Utc::now, |record| record.committed_at);
    Ok(Drained {
        startup: (first_consumed_at - called_at).to_std().unwrap_or_default(),
        drain: (last_commit - first_consumed_at)
            .to_std()
            .unwrap_or_default(),
        run,
        cpu,
        broker_cpu,
        postgres_cpu,
        summary,
        records,
    })
}

impl SinkRound {
    fn new(round: u32, raw: &RawCopy, drained: &Drained, traffic: &Traffic) -> Self {
        let per_second = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        let per_row = |cpu: Option<f64>, rows: u64| cpu.map(|c| c * 1e6 / rows.max(1) as f64);
        let raw_copy_rows_per_second = per_second(traffic.valid, raw.elapsed);
        let drain_rows_per_second = per_second(drained.summary.inserted, drained.drain);
        Self {
            round,
            raw_copy_rows: raw.rows,
            raw_copy_seconds: raw.elapsed.as_secs_f64(),
            raw_copy_rows_per_second,
            drain_seconds: drained.drain.as_secs_f64(),
            drain_rows_per_second,
            drain_messages_per_second: per_second(drained.summary.consumed, drained.drain),
            ratio: drain_rows_per_second / raw_copy_rows_per_second.max(1e-9),
            startup_seconds: drained.startup.as_secs_f64(),
            sink_run_seconds: drained.run.as_secs_f64(),
            writer_busy_share: drained.records.iter().map(|r| r.write_seconds).sum::<f64>()
                / drained.drain.as_secs_f64().max(1e-9),
            process_cpu_seconds: drained.cpu.map(|d| d.as_secs_f64()),
            broker_cpu_seconds: drained.broker_cpu,
            raw_copy_postgres_cpu_us_per_row: per_row(raw.postgres_cpu, traffic.valid),
            drain_postgres_cpu_us_per_row: per_row(drained.postgres_cpu, drained.summary.inserted),
            inserted: drained.summary.inserted,
            rejected: drained.summary.rejected,
            anomalies: drained.summary.anomalies,
            batch_messages: Distribution::of(drained.records.iter().map(|r| r.messages as f64)),
            batch_write_ms: Distribution::of(drained.records.iter().map(|r| r.write_seconds * 1e3)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> SinkBenchReport {
        report_of(vec![
            round(1, 130_000.0, 100_000.0),
            round(2, 120_000.0, 96_000.0),
            round(3, 100_000.0, 99_000.0),
        ])
    }

    fn round(round: u32, raw: f64, drain: f64) -> SinkRound {
        SinkRound {
            round,
            raw_copy_rows: 990_000,
            raw_copy_seconds: 1e6 / raw,
            raw_copy_rows_per_second: raw,
            drain_seconds: 1e6 / drain,
            drain_rows_per_second: drain,
            drain_messages_per_second: drain * 1.01,
            ratio: drain / raw,
            startup_seconds: 3.0,
            sink_run_seconds: 3.0 + 1e6 / drain,
            writer_busy_share: 0.9,
            process_cpu_seconds: Some(9.5),
            broker_cpu_seconds: Some(2.3),
            raw_copy_postgres_cpu_us_per_row: Some(20.0),
            drain_postgres_cpu_us_per_row: Some(27.5),
            inserted: 990_000,
            rejected: 10_000,
            anomalies: 900,
            batch_messages: Distribution::of([10_000.0; 100]),
            batch_write_ms: Distribution::of([80.0, 90.0, 120.0]),
        }
    }

    fn report_of(rounds: Vec<SinkRound>) -> SinkBenchReport {
        SinkBenchReport {
            benchmark: "sink",
            run: BenchRun {
                started_at: "2026-01-01T00:00:00Z".into(),
                build_profile: "release",
                cpus: 2,
                load_average_at_start: Some(2.5),
                load_average_at_end: None,
                database_transport: "tcp 127.0.0.1:5432".into(),
                cpu_stolen_share: Some(0.031),
                cpu_ticks_at_start: None,
            },
            messages: 1_000_000,
            valid_rows: 990_000,
            invalid: 10_000,
            orphans: 20_000,
            partitions: 3,
            users: 10_000,
            seed: 1,
            batch_size: 10_000,
            batch_wait_ms: 20.0,
            writers: 2,
            copy_bytes_per_row: 330.0,
            prefill_messages_per_second: 200_000.0,
            broker: "the broker at 127.0.0.1:9092".into(),
            watermark_messages: 999_000,
            stop: DrainStop::ExpectedCount,
            medians: Medians::of(&rounds),
            rounds,
        }
    }

    #[test]
    fn the_table_has_a_row_per_round_the_median_and_the_verdict() {
        let table = report().table();
        assert!(
            table.contains("| 1 | 130000 | 100000 | 101000 | 0.77 |"),
            "{table}"
        );
        assert!(table.contains("| 2 | 120000 | 96000 |"), "{table}");
        // Ratios 0.77, 0.80, 0.99: the median ratio is 0.80, not 99000 / 120000 (0.83) of the
        // medians.
        assert!(
            table.contains("| median | 120000 | 99000 | 99990 | 0.80 |"),
            "{table}"
        );
        assert!(
            table.contains(
                "over 2 connections (median of 3 rounds): **0.80**, target ≥ 0.90: NOT met"
            ),
            "{table}"
        );
        assert!(table.contains("add up to 999000 of 1000000"), "{table}");
        assert!(
            table.contains("load average 2.50 at start, unknown at end"),
            "{table}"
        );
        assert!(
            table.contains("| 100 | 10000 | 90 / 120 | 90 % | 9.5 / 2.3 | 20.0 / 27.5 |"),
            "{table}"
        );
    }

    #[test]
    fn the_json_names_the_stop_and_keeps_every_round() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["stop"], "expected_count");
        assert_eq!(json["rounds"].as_array().unwrap().len(), 3);
        assert_eq!(json["median_ratio"], 0.8);
        assert_eq!(json["meets_target"], false);
        assert_eq!(json["rounds"][0]["batch_messages"]["p50"], 10_000.0);
    }

    #[test]
    fn the_target_is_met_from_a_median_ratio_of_nine_tenths() {
        let met = Medians::of(&[round(1, 100.0, 90.0), round(2, 100.0, 95.0)]);
        assert!(met.meets_target, "{met:?}");
        let missed = Medians::of(&[round(1, 100.0, 89.0), round(2, 100.0, 89.9)]);
        assert!(!missed.meets_target, "{missed:?}");
    }

    #[test]
    fn the_baseline_rows_split_between_rows_into_parts_of_about_equal_size() {
        let copy = b"aaaa\nbb\ncccc\ndd\neeee\n";
        let parts = split_rows(copy, 2);
        assert_eq!(parts, [&b"aaaa\nbb\ncccc\n"[..], &b"dd\neeee\n"[..]]);
        assert_eq!(parts.concat(), copy);
        assert_eq!(split_rows(copy, 1), [&copy[..]]);
        assert_eq!(split_rows(b"a\n", 3), [&b"a\n"[..]]);
        assert_eq!(split_rows(copy, 5).concat(), copy);
        assert!(split_rows(b"", 2).is_empty());
    }

    #[test]
    fn baseline_rows_are_the_valid_messages_encoded_like_the_sink() {
        let options = SinkBenchOptions {
            stream: StreamBenchOptions {
                invalid_ratio: 0.05,
                ..StreamBenchOptions::default()
            },
            count: 2_000,
            ..SinkBenchOptions::default()
        };
        let traffic = Traffic::generate(&bench_users(50), &options, "transactions");
        assert_eq!(traffic.valid + traffic.invalid, 2_000);
        assert!((60..=140).contains(&traffic.invalid), "{}", traffic.invalid);
        let lines = traffic
            .copy
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty());
        assert_eq!(lines.count() as u64, traffic.valid);
        let first = std::str::from_utf8(
            &traffic.copy[..traffic.copy.iter().position(|b| *b == b'\n').unwrap()],
        )
        .unwrap();
        // 22 columns, the topic in the 15th, a user's first transaction has no z-score.
        let fields: Vec<&str> = first.split('\t').collect();
        assert_eq!(fields.len(), 22, "{first}");
        assert_eq!(fields[14], "transactions");
        assert_eq!(fields[20], "\\N");
    }
}
