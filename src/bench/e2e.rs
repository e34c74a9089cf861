//! `etl bench e2e`: latency from `produced_at` to commit with the sink keeping up with a steady
//! stream (10,000 msg/s for 60 s: p99 ≤ 50 ms end to end, aim 25 ms; the sink's own share,
//! received → commit, p99 ≤ 15 ms).
//!
//! Topics of the run's own on the broker (the local Apache Kafka by default) and a scratch
//! database of the benchmark's own (the generator's users in `users_raw`); the sink runs with its
//! default settings. A short warm-up stream is written
//! first, so that the group join is not counted; then `etl produce`'s sending loop (the
//! producer's defaults, token bucket at `--rate`) sends generated traffic for `--duration`,
//! and the benchmark waits until the sink committed all of it.
//!
//! Latencies are exact, not a histogram's buckets: the sink's commit log
//! ([`crate::telemetry::metrics::CommitLog`]) records, per batch, the time the commit returned
//! minus each inserted row's `produced_at` header, which the producer in this very process
//! stamped just before handing the message to librdkafka. (`ingested_at` in the table would not
//! do: it is the transaction's start, before the commit.) Producer linger, broker, fetch,
//! batching, the database transaction and the dead letters' acknowledgement are all inside;
//! generating a message and the token bucket's wait before it are not. By default the producer
//! shares the benchmark's process, and so its cores, with the sink; with
//! [`ProducerPlacement::Process`] the measured stream comes from `etl produce` running as a process
//! of its own ([`super::producer_process`]), as a user runs it. The report says which.

use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::broker::BenchBroker;
use super::producer_process::ProducerRun;
use super::scratch::{
    BenchRun, CpuReading, ScratchDb, StreamBenchOptions, bench_users, insert_users, traffic,
    wait_for,
};
use super::stats::Distribution;
use super::{BenchError, process_cpu_time};
use crate::generate::stream::StreamGenerator;
use crate::kafka::producer::{
    PRODUCED_AT_HEADER, ProduceOptions, ProduceSummary, produce_blocking,
};
use crate::kafka::sink::{self, SinkOptions, SinkSummary};
use crate::kafka::{KafkaError, KafkaSettings};
use crate::telemetry::metrics::{CommitLog, CommitRecord, Metrics};

/// Targets and aim for the 99th percentile: end to end, and the sink's own share.
pub const TARGET_P99_MS: f64 = 50.0;
pub const AIM_P99_MS: f64 = 25.0;
pub const TARGET_SINK_P99_MS: f64 = 15.0;

#[derive(Debug, Clone)]
pub struct E2eBenchOptions {
    /// The servers, the traffic and the sink's settings; the group is the benchmark's own.
    pub stream: StreamBenchOptions,
    /// Messages per second.
    pub rate: u32,
    pub duration: Duration,
    /// Messages sent and committed before the measured stream.
    pub warmup_messages: u64,
    /// Also read the topic with a plain consumer (the sink's fetch settings, no database) and
    /// report produced_at → received: the share of the latency that is Kafka's.
    pub transport_probe: bool,
    /// Where the measured stream's producer runs.
    pub producer: ProducerPlacement,
}

/// Where `etl bench e2e`'s measured stream is produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProducerPlacement {
    /// `etl produce`'s sending loop on a thread of the benchmark's process, beside the sink.
    InProcess,
    /// `etl produce` run from this executable as a process of its own.
    Process { etl: std::path::PathBuf },
}

impl ProducerPlacement {
    fn describe(&self) -> &'static str {
        match self {
            Self::InProcess => "in the benchmark's process, beside the sink, on the same cores",
            Self::Process { .. } => {
                "`etl produce`, a process of its own (on the same machine's cores); its startup \
                 and final flush are inside the sending time"
            }
        }
    }
}

impl Default for E2eBenchOptions {
    fn default() -> Self {
        Self {
            stream: StreamBenchOptions::default(),
            rate: 10_000,
            duration: Duration::from_secs(60),
            warmup_messages: 500,
            transport_probe: false,
            producer: ProducerPlacement::InProcess,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct E2eBenchReport {
    pub benchmark: &'static str,
    #[serde(flatten)]
    pub run: BenchRun,
    pub requested_rate: u32,
    pub duration_seconds: f64,
    pub sent: u64,
    /// Messages enqueued per second of sending: what the token bucket held.
    pub achieved_rate: f64,
    pub inserted: u64,
    pub rejected: u64,
    /// From the producer's last send to the sink's last commit.
    pub settle_seconds: f64,
    #[serde(flatten)]
    pub latency: LatencyFigures,
    pub batches: usize,
    pub batches_per_second: f64,
    pub batch_messages: Option<Distribution>,
    pub batch_write_ms: Option<Distribution>,
    /// Σ batch write time ÷ time from the first to the last commit.
    pub writer_busy_share: f64,
    /// Where the producer ran (`ProducerPlacement`).
    pub producer: &'static str,
    /// CPU time of the benchmark's process while sending and settling: the sink, and the
    /// producer when it runs in-process.
    pub process_cpu_seconds: Option<f64>,
    /// CPU time of the `etl produce` process, when it runs as one.
    pub producer_cpu_seconds: Option<f64>,
    /// CPU time of the broker and of the scratch database's server processes, same window.
    pub broker_cpu_seconds: Option<f64>,
    pub postgres_cpu_seconds: Option<f64>,
    /// With `transport_probe`: produced_at → received by a plain consumer, in milliseconds.
    pub transport_latency_ms: Option<Distribution>,
    /// The broker the run used (`--broker`), and the run's topic on it (deleted afterwards).
    pub broker: String,
    pub topic: String,
    pub partitions: i32,
    pub users: u32,
    pub invalid_ratio: f64,
    pub orphan_ratio: f64,
    pub batch_size: usize,
    pub batch_wait_ms: f64,
    /// The producer's `linger.ms`: how long a message may wait to fill a batch before it is sent.
    pub producer_linger_ms: Option<String>,
}

/// The measured rows' latencies, from the sink's commit records, and the verdicts on them.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyFigures {
    /// produced_at → commit of every inserted row, in milliseconds.
    pub latency_ms: Option<Distribution>,
    /// Received by the sink's consumer → commit of every measured message, in milliseconds:
    /// the sink's own share of the latency, whatever the broker.
    pub sink_hold_ms: Option<Distribution>,
    /// Rows that took longer than the target.
    pub rows_over_target: usize,
    pub target_p99_ms: f64,
    pub aim_p99_ms: f64,
    pub target_sink_p99_ms: f64,
    pub meets_target: bool,
    pub sink_meets_target: bool,
}

impl LatencyFigures {
    pub fn of(records: &[CommitRecord]) -> Self {
        let ms = |us: &i64| *us as f64 / 1e3;
        let latency_ms =
            Distribution::of(records.iter().flat_map(|r| r.latencies_us.iter().map(ms)));
        let sink_hold_ms = Distribution::of(records.iter().flat_map(|r| r.held_us.iter().map(ms)));
        let p99_within =
            |d: &Option<Distribution>, target| d.as_ref().is_some_and(|d| d.p99 <= target);
        Self {
            rows_over_target: records
                .iter()
                .flat_map(|r| &r.latencies_us)
                .filter(|us| ms(us) > TARGET_P99_MS)
                .count(),
            meets_target: p99_within(&latency_ms, TARGET_P99_MS),
            sink_meets_target: p99_within(&sink_hold_ms, TARGET_SINK_P99_MS),
            latency_ms,
            sink_hold_ms,
            target_p99_ms: TARGET_P99_MS,
            aim_p99_ms: AIM_P99_MS,
            target_sink_p99_ms: TARGET_SINK_P99_MS,
        }
    }
}

impl E2eBenchReport {
    /// The figures as Markdown with a few lines of context.
    pub fn table(&self) -> String {
        let mut out = format!(
            "## etl bench e2e: {} msg/s for {:.0} s, {} build\n\n",
            self.requested_rate, self.duration_seconds, self.run.build_profile
        );
        out.push_str("| produced_at → commit | p50 | p95 | p99 | p99.9 | max | mean |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
        let l = &self.latency;
        match &l.latency_ms {
            Some(d) => out.push_str(&format!(
                "| ms ({} rows) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                d.count, d.p50, d.p95, d.p99, d.p999, d.max, d.mean
            )),
            None => out.push_str("| ms (no rows) | - | - | - | - | - | - |\n"),
        }
        if let Some(d) = &self.transport_latency_ms {
            out.push_str(&format!(
                "| of which Kafka: produced_at → received by a plain consumer, ms ({} messages) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                d.count, d.p50, d.p95, d.p99, d.p999, d.max, d.mean
            ));
        }
        if let Some(d) = &l.sink_hold_ms {
            out.push_str(&format!(
                "| of which the sink: received by its consumer → commit, ms ({} messages) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                d.count, d.p50, d.p95, d.p99, d.p999, d.max, d.mean
            ));
        }
        out.push('\n');
        let p99 = l.latency_ms.as_ref().map_or(f64::NAN, |d| d.p99);
        let sink_p99 = l.sink_hold_ms.as_ref().map_or(f64::NAN, |d| d.p99);
        out.push_str(&format!(
            "p99 {p99:.1} ms, target ≤ {:.0} ms: {} (aim ≤ {:.0} ms: {}); {} rows over {:.0} ms. \
             The sink's own p99 {sink_p99:.1} ms, target ≤ {:.0} ms: {}.\n\n",
            l.target_p99_ms,
            if l.meets_target { "met" } else { "NOT met" },
            l.aim_p99_ms,
            if p99 <= l.aim_p99_ms {
                "met"
            } else {
                "not met"
            },
            l.rows_over_target,
            l.target_p99_ms,
            l.target_sink_p99_ms,
            if l.sink_meets_target {
                "met"
            } else {
                "NOT met"
            },
        ));
        out.push_str(
            "| batches | p50 | p95 | p99 | max | mean |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for (name, d) in [
            ("messages per batch", &self.batch_messages),
            ("write ms per batch", &self.batch_write_ms),
        ] {
            if let Some(d) = d {
                out.push_str(&format!(
                    "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |\n",
                    d.p50, d.p95, d.p99, d.max, d.mean
                ));
            }
        }
        out.push_str(&format!(
            "\n- Sent {} messages at {:.1} msg/s (requested {}); {} rows inserted, {} rejected; \
             {} batches ({:.1}/s), writer busy {:.0} % of the time; the last commit came {:.3} s \
             after the last send. CPU seconds meanwhile: {}, broker {}, PostgreSQL {}.\n\
             - Sink: default settings (batch_size {}, batch_wait {} ms); producer linger.ms {}; \
             {} partitions, {} users, invalid {:.1} %, orphans {:.1} %; broker: {}.\n\
             - The latency runs from the producer's `produced_at` stamp, set as the message is \
             handed to librdkafka, to the commit of its row: producer queue and linger, broker, \
             fetch, batching, the transaction and the dead letters' acknowledgement are inside; \
             generating the message and the rate limiter's wait are not. The producer: {}.\n",
            self.sent,
            self.achieved_rate,
            self.requested_rate,
            self.inserted,
            self.rejected,
            self.batches,
            self.batches_per_second,
            self.writer_busy_share * 100.0,
            self.settle_seconds,
            match self.producer_cpu_seconds {
                Some(producer) => format!(
                    "etl sink {}, etl produce {producer:.1}",
                    one_decimal(self.process_cpu_seconds)
                ),
                None => format!(
                    "etl (producer and sink) {}",
                    one_decimal(self.process_cpu_seconds)
                ),
            },
            one_decimal(self.broker_cpu_seconds),
            one_decimal(self.postgres_cpu_seconds),
            self.batch_size,
            self.batch_wait_ms,
            self.producer_linger_ms.as_deref().unwrap_or("?"),
            self.partitions,
            self.users,
            self.invalid_ratio * 100.0,
            self.orphan_ratio * 100.0,
            self.broker,
            self.producer,
        ));
        out.push_str(&self.run.machine_line());
        out
    }
}

/// Runs the benchmark; the scratch database and the broker are gone afterwards, even on error.
pub async fn run(
    options: &E2eBenchOptions,
    cancel: CancellationToken,
) -> Result<E2eBenchReport, BenchError> {
    let bench_run = BenchRun::start(&options.stream.database_url);
    let users = bench_users(options.stream.users);
    let mut sink = SinkOptions {
        group: format!("bench-e2e-{}", Uuid::new_v4().simple()),
        until_caught_up: false,
        metrics_addr: None,
        ..options.stream.sink.clone()
    };
    let (broker, settings) = options.stream.start_broker(&mut sink).await?;
    let broker_name = broker.describe();
    // Whatever happens on the broker, its topics are removed afterwards (on a broker of others).
    let measured = async {
        let scratch = options.stream.scratch_db().await?;
        let measured = async {
            insert_users(&scratch.pool, &users).await?;
            measure(
                options, &settings, &sink, &scratch, &broker, &users, &cancel,
            )
            .await
        }
        .await;
        scratch.drop_now().await;
        measured
    }
    .await;
    broker.remove_topics(&settings, &sink).await;
    drop(broker);
    let (produced, summary, records) = measured?;
    let (broker_cpu_seconds, postgres_cpu_seconds) = produced.others_cpu;

    let settle_seconds = records.last().map_or(0.0, |r| {
        let sending_ended = produced.send_started + produced.send_elapsed;
        (r.committed_at - sending_ended)
            .to_std()
            .map_or(0.0, |d| d.as_secs_f64())
    });
    // From the start of the first write to the last commit.
    let span = match (records.first(), records.last()) {
        (Some(first), Some(last)) => {
            (last.committed_at - first.committed_at)
                .to_std()
                .unwrap_or_default()
                + Duration::from_secs_f64(first.write_seconds)
        }
        _ => Duration::ZERO,
    };
    let producer_linger_ms = KafkaSettings {
        overrides: options.stream.overrides.clone(),
        ..KafkaSettings::new("-")
    }
    .producer_config()
    .get("linger.ms")
    .map(str::to_string);
    Ok(E2eBenchReport {
        benchmark: "e2e",
        run: bench_run.finished(),
        requested_rate: options.rate,
        duration_seconds: options.duration.as_secs_f64(),
        sent: produced.sent,
        achieved_rate: produced.sent as f64 / produced.send_elapsed.as_secs_f64().max(1e-9),
        // The warm-up's rows are not in the records; it has no invalid messages.
        inserted: records.iter().map(|r| r.inserted as u64).sum(),
        rejected: summary.rejected,
        settle_seconds,
        latency: LatencyFigures::of(&records),
        batches: records.len(),
        batches_per_second: records.len() as f64 / span.as_secs_f64().max(1e-9),
        batch_messages: Distribution::of(records.iter().map(|r| r.messages as f64)),
        batch_write_ms: Distribution::of(records.iter().map(|r| r.write_seconds * 1e3)),
        writer_busy_share: records.iter().map(|r| r.write_seconds).sum::<f64>()
            / span.as_secs_f64().max(1e-9),
        producer: options.producer.describe(),
        process_cpu_seconds: produced.cpu.map(|d| d.as_secs_f64()),
        producer_cpu_seconds: produced.producer_cpu.map(|d| d.as_secs_f64()),
        broker_cpu_seconds,
        postgres_cpu_seconds,
        transport_latency_ms: produced.transport.and_then(|latencies| {
            Distribution::of(latencies.into_iter().map(|us| us as f64 / 1e3))
        }),
        broker: broker_name,
        topic: sink.topic.clone(),
        partitions: options.stream.partitions,
        users: options.stream.users,
        invalid_ratio: options.stream.invalid_ratio,
        orphan_ratio: options.stream.orphan_ratio,
        batch_size: sink.batch_size,
        batch_wait_ms: sink.batch_wait.as_secs_f64() * 1e3,
        producer_linger_ms,
    })
}

fn one_decimal(value: Option<f64>) -> String {
    value.map_or_else(|| "?".into(), |v| format!("{v:.1}"))
}

/// The measured stream, and when its sending started.
struct Produced {
    sent: u64,
    send_started: chrono::DateTime<Utc>,
    /// From the first send to the last (in-process), or the `etl produce` process's lifetime.
    send_elapsed: Duration,
    /// The benchmark's process.
    cpu: Option<Duration>,
    /// The `etl produce` process, when the producer runs as one.
    producer_cpu: Option<Duration>,
    /// Broker and PostgreSQL CPU seconds.
    others_cpu: (Option<f64>, Option<f64>),
    /// µs from produced_at to receipt by the transport probe, for the measured stream.
    transport: Option<Vec<i64>>,
}

/// How long the sink may take to commit what was sent (the warm-up includes the group join).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts the sink, warms it up, sends the measured stream and waits until it is committed.
/// Returns the producer's summary, the sink's and the measured stream's commit records.
async fn measure(
    options: &E2eBenchOptions,
    settings: &KafkaSettings,
    sink_options: &SinkOptions,
    scratch: &ScratchDb,
    broker: &BenchBroker,
    users: &[Uuid],
    cancel: &CancellationToken,
) -> Result<(Produced, SinkSummary, Vec<CommitRecord>), BenchError> {
    let probe_stop = CancellationToken::new();
    let probe = options.transport_probe.then(|| {
        transport_probe(
            settings,
            &sink_options.topic,
            options.stream.partitions,
            probe_stop.clone(),
        )
    });
    let log = CommitLog::default();
    let mut metrics = Metrics::new();
    metrics.sink.commit_log = Some(log.clone());
    let stop = cancel.child_token();
    let task = {
        let (settings, url, pool) = (settings.clone(), scratch.url.clone(), scratch.pool.clone());
        let (sink_options, stop) = (sink_options.clone(), stop.clone());
        tokio::spawn(
            async move { sink::run(&settings, &url, pool, &sink_options, metrics, stop).await },
        )
    };
    let committed = || log.with(|r| r.iter().map(|r| r.messages as u64).sum::<u64>());

    // Warm-up: valid messages of another seed (other tx_ids), committed before anything counts.
    let warmup = options.warmup_messages.max(1);
    let produce = ProduceOptions {
        topic: sink_options.topic.clone(),
        count: Some(warmup),
        rate: Some(options.rate.clamp(1, 1_000)),
        ..ProduceOptions::default()
    };
    let generator = StreamGenerator::new(
        users,
        traffic(options.stream.seed.wrapping_add(1), 0.0, 0.0),
    );
    let warmed = send(settings, produce, generator, cancel)
        .await
        .and_then(|s| {
            if s.has_failures() || s.sent < warmup {
                Err(undelivered("warm-up", &s))
            } else {
                Ok(())
            }
        });
    let warmed = match warmed {
        Ok(()) => {
            wait_for(
                || committed() >= warmup || task.is_finished(),
                Duration::from_millis(10),
                SETTLE_TIMEOUT,
            )
            .await
        }
        Err(err) => {
            stop.cancel();
            let _ = task.await;
            return Err(err);
        }
    };
    if !warmed || task.is_finished() {
        stop.cancel();
        task.await.expect("the sink task does not panic")?;
        return Err(BenchError::Void(format!(
            "the sink committed {} of {warmup} warm-up messages within {SETTLE_TIMEOUT:?}",
            committed()
        )));
    }
    let warm = log.take();
    tracing::info!(
        batches = warm.len(),
        "warmed up; sending the measured stream"
    );

    let cpu_at_start = process_cpu_time();
    let others_at_start = CpuReading::now(broker, scratch).await;
    let sent = send_measured(options, settings, &sink_options.topic, users, cancel).await;
    let settled = match &sent {
        Ok(sent) => {
            wait_for(
                || committed() >= sent.sent || task.is_finished(),
                Duration::from_millis(10),
                SETTLE_TIMEOUT,
            )
            .await
        }
        Err(_) => false,
    };
    let cpu = process_cpu_time()
        .zip(cpu_at_start)
        .map(|(end, start)| end.saturating_sub(start));
    let others_cpu = CpuReading::now(broker, scratch)
        .await
        .since(&others_at_start);
    stop.cancel();
    probe_stop.cancel();
    let transport = match probe {
        Some(probe) => {
            let received = probe.await.expect("the transport probe does not panic")?;
            let from = sent
                .as_ref()
                .map_or(i64::MAX, |sent| sent.started.timestamp_micros());
            Some(
                received
                    .into_iter()
                    .filter(|(produced_at, _)| *produced_at >= from)
                    .map(|(_, latency)| latency)
                    .collect(),
            )
        }
        None => None,
    };
    let sink_summary = task.await.expect("the sink task does not panic")?;
    let sent = sent?;
    if cancel.is_cancelled() {
        return Err(BenchError::Void("interrupted".into()));
    }
    if !settled {
        return Err(BenchError::Void(format!(
            "the sink committed {} of {} messages within {SETTLE_TIMEOUT:?} of the end",
            committed(),
            sent.sent
        )));
    }
    Ok((
        Produced {
            sent: sent.sent,
            send_started: sent.started,
            send_elapsed: sent.elapsed,
            cpu,
            producer_cpu: sent.producer_cpu,
            others_cpu,
            transport,
        },
        sink_summary,
        log.take(),
    ))
}

/// The sink consumer's fetch wait (`kafka::sink::consumer`), for a probe that fetches alike.
const SINK_FETCH_WAIT_MS: &str = "10";

/// Reads every partition of `topic` from its end with a plain consumer until `stop`; returns
/// (produced_at, receipt − produced_at) in µs for every message with the header. Assigned, not
/// subscribed: no group join to wait for.
fn transport_probe(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<Vec<(i64, i64)>, BenchError>> {
    let (settings, topic) = (settings.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let mut config = settings.consumer_config("bench-e2e-transport-probe");
        config.set("fetch.wait.max.ms", SINK_FETCH_WAIT_MS);
        settings.apply_overrides(&mut config);
        let consumer: BaseConsumer = config
            .create()
            .map_err(KafkaError::client("creating the transport probe"))?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(&topic, partition, Offset::End)
                .map_err(KafkaError::client("assigning the transport probe"))?;
        }
        consumer
            .assign(&assignment)
            .map_err(KafkaError::client("assigning the transport probe"))?;
        let mut received = Vec::new();
        while !stop.is_cancelled() {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let now = Utc::now().timestamp_micros();
            let produced_at = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == PRODUCED_AT_HEADER)
                    .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<i64>().ok())
            });
            if let Some(at) = produced_at {
                received.push((at, now - at));
            }
        }
        Ok(received)
    })
}

/// The measured stream as sent, wherever its producer ran.
struct MeasuredSend {
    sent: u64,
    started: chrono::DateTime<Utc>,
    elapsed: Duration,
    producer_cpu: Option<Duration>,
}

/// Sends the measured stream: generated traffic at `--rate` for `--duration`, from the
/// benchmark's process or from an `etl produce` process.
async fn send_measured(
    options: &E2eBenchOptions,
    settings: &KafkaSettings,
    topic: &str,
    users: &[Uuid],
    cancel: &CancellationToken,
) -> Result<MeasuredSend, BenchError> {
    let stream = &options.stream;
    match &options.producer {
        ProducerPlacement::InProcess => {
            let produce = ProduceOptions {
                topic: topic.to_string(),
                rate: Some(options.rate),
                duration: Some(options.duration),
                ..ProduceOptions::default()
            };
            let generator = StreamGenerator::new(
                users,
                traffic(stream.seed, stream.invalid_ratio, stream.orphan_ratio),
            );
            let started = Utc::now();
            let summary = send(settings, produce, generator, cancel).await?;
            if summary.has_failures() && !cancel.is_cancelled() {
                return Err(undelivered("measured stream", &summary));
            }
            Ok(MeasuredSend {
                sent: summary.sent,
                started,
                elapsed: summary.send_elapsed,
                producer_cpu: None,
            })
        }
        ProducerPlacement::Process { etl } => {
            let sent = ProducerRun {
                etl,
                settings,
                topic,
                users,
                seed: stream.seed,
                invalid_ratio: stream.invalid_ratio,
                orphan_ratio: stream.orphan_ratio,
                rate: options.rate,
                duration: options.duration,
            }
            .run(cancel)
            .await?;
            Ok(MeasuredSend {
                sent: sent.sent,
                started: sent.started,
                elapsed: sent.elapsed,
                producer_cpu: sent.cpu,
            })
        }
    }
}

/// `etl produce`'s sending loop on a blocking thread.
async fn send(
    settings: &KafkaSettings,
    produce: ProduceOptions,
    generator: StreamGenerator,
    cancel: &CancellationToken,
) -> Result<ProduceSummary, BenchError> {
    let (settings, cancel) = (settings.clone(), cancel.clone());
    tokio::task::spawn_blocking(move || {
        produce_blocking(&settings, &produce, generator, &cancel, |_| {})
    })
    .await
    .expect("the producer thread does not panic")
    .map_err(BenchError::from)
}

fn undelivered(phase: &str, summary: &ProduceSummary) -> BenchError {
    BenchError::Undelivered {
        phase: phase.to_string(),
        sent: summary.sent,
        failed: summary.failed,
        first_error: summary
            .first_error
            .clone()
            .unwrap_or_else(|| "interrupted".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One batch's commit record with these latencies (ms) end to end and in the sink.
    fn record(latencies_ms: &[f64], held_ms: &[f64]) -> CommitRecord {
        let us = |ms: &[f64]| ms.iter().map(|m| (m * 1e3) as i64).collect();
        CommitRecord {
            committed_at: Utc::now(),
            messages: latencies_ms.len(),
            inserted: latencies_ms.len(),
            write_seconds: 0.005,
            latencies_us: us(latencies_ms),
            held_us: us(held_ms),
        }
    }

    fn report(records: &[CommitRecord]) -> E2eBenchReport {
        E2eBenchReport {
            benchmark: "e2e",
            run: BenchRun {
                started_at: "2026-01-01T00:00:00Z".into(),
                build_profile: "release",
                cpus: 2,
                load_average_at_start: Some(1.0),
                load_average_at_end: Some(2.0),
                database_transport: "tcp 127.0.0.1:5432".into(),
                cpu_stolen_share: Some(0.031),
                cpu_ticks_at_start: None,
            },
            requested_rate: 10_000,
            duration_seconds: 60.0,
            sent: 600_000,
            achieved_rate: 9_999.5,
            inserted: 594_000,
            rejected: 6_000,
            settle_seconds: 0.012,
            latency: LatencyFigures::of(records),
            batches: 3_000,
            batches_per_second: 50.0,
            batch_messages: Distribution::of([150.0, 200.0, 250.0]),
            batch_write_ms: Distribution::of([5.0, 6.0, 9.0]),
            writer_busy_share: 0.4,
            producer: ProducerPlacement::InProcess.describe(),
            process_cpu_seconds: Some(30.0),
            producer_cpu_seconds: None,
            broker_cpu_seconds: Some(12.0),
            postgres_cpu_seconds: None,
            transport_latency_ms: Distribution::of([4.0, 6.0, 9.0]),
            broker: "the broker at 127.0.0.1:9092".into(),
            topic: "etl-bench-0000-transactions".into(),
            partitions: 3,
            users: 10_000,
            invalid_ratio: 0.01,
            orphan_ratio: 0.02,
            batch_size: 10_000,
            batch_wait_ms: 20.0,
            producer_linger_ms: Some("10".into()),
        }
    }

    #[test]
    fn the_table_shows_exact_percentiles_and_every_verdict() {
        let latencies: Vec<f64> = (1..=100).map(f64::from).map(|x| x / 4.0).collect();
        let table = report(&[
            record(&latencies[..60], &[1.0, 2.0]),
            record(&latencies[60..], &[3.0]),
        ])
        .table();
        // 0.25 … 25 ms: p50 = 12.625, p99 = 24.7525, max = 25.
        assert!(
            table.contains("| ms (100 rows) | 12.6 | 23.8 | 24.8 | 25.0 | 25.0 | 12.6 |"),
            "{table}"
        );
        assert!(
            table.contains("target ≤ 50 ms: met (aim ≤ 25 ms: met); 0 rows over 50 ms."),
            "{table}"
        );
        assert!(
            table.contains("The sink's own p99 3.0 ms, target ≤ 15 ms: met."),
            "{table}"
        );
        assert!(table.contains("| messages per batch | 200 |"), "{table}");
        assert!(table.contains("9999.5 msg/s (requested 10000)"), "{table}");
        assert!(table.contains("producer linger.ms 10"), "{table}");
        assert!(
            table.contains("etl (producer and sink) 30.0, broker 12.0, PostgreSQL ?."),
            "{table}"
        );
        assert!(
            table.contains("a plain consumer, ms (3 messages) | 6.0 | 8.7 |"),
            "{table}"
        );
        assert!(
            table.contains("received by its consumer → commit, ms (3 messages) | 2.0 |"),
            "{table}"
        );
        assert!(
            table.contains("broker: the broker at 127.0.0.1:9092."),
            "{table}"
        );
        assert!(table.contains("the rate limiter's wait are not"), "{table}");
        assert!(
            table.contains("CPU stolen by the hypervisor 3.1 %"),
            "{table}"
        );
        assert!(
            table.contains("The producer: in the benchmark's process"),
            "{table}"
        );
    }

    #[test]
    fn a_producer_process_has_its_cpu_shown_apart_from_the_sinks() {
        let mut report = report(&[record(&[10.0], &[1.0])]);
        report.producer = ProducerPlacement::Process { etl: "etl".into() }.describe();
        report.producer_cpu_seconds = Some(5.0);
        let table = report.table();
        assert!(
            table.contains("etl sink 30.0, etl produce 5.0, broker 12.0"),
            "{table}"
        );
        assert!(
            table.contains("The producer: `etl produce`, a process of its own"),
            "{table}"
        );
    }

    #[test]
    fn a_slow_tail_fails_the_target_and_counts_its_rows() {
        let mut latencies = vec![10.0; 95];
        latencies.extend([80.0; 5]);
        let figures = LatencyFigures::of(&[record(&latencies, &[1.0; 100])]);
        assert!(!figures.meets_target);
        assert!(figures.sink_meets_target);
        assert_eq!(figures.rows_over_target, 5);
        let report = report(&[record(&latencies, &[1.0; 100])]);
        assert!(
            report.table().contains("target ≤ 50 ms: NOT met"),
            "{}",
            report.table()
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["latency_ms"]["max"], 80.0);
        assert_eq!(json["meets_target"], false);
    }

    #[test]
    fn a_slow_sink_fails_its_own_target_even_when_the_whole_trip_is_fast() {
        let mut held = vec![2.0; 95];
        held.extend([16.0; 5]);
        let figures = LatencyFigures::of(&[record(&[20.0; 100], &held)]);
        assert!(figures.meets_target);
        assert!(!figures.sink_meets_target);
    }

    #[test]
    fn no_rows_render_without_figures_and_meet_no_target() {
        let figures = LatencyFigures::of(&[]);
        assert!(!figures.meets_target && !figures.sink_meets_target);
        assert!(report(&[]).table().contains("| ms (no rows) |"));
    }
}
