//! `etl bench …`: benchmarks that are not tests. Figures go to stdout (and JSON where noted);
//! build with --release for figures that mean something.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::bench::batch::{BatchBenchOptions, run};
use crate::bench::broker::BrokerChoice;
use crate::bench::e2e::{self, E2eBenchOptions, ProducerPlacement};
use crate::bench::models::{self, ModelsBenchOptions};
use crate::bench::produce::{self, ProduceBenchOptions};
use crate::bench::scratch::StreamBenchOptions;
use crate::bench::sink::{self, SinkBenchOptions};
use crate::generate::monthly::{Month, MonthlyOptions};
use crate::shutdown;

use super::GlobalArgs;
use super::generate_monthly::progress_bar;

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// generate-monthly for one month, then load-batch of it against a raw COPY of the same files
    /// into the same tables, in a scratch database that is dropped afterwards.
    Batch(BatchArgs),
    /// Messages/s and MB/s that `etl produce` delivers with acks=all (topics of the run's own on
    /// the broker, the local Apache Kafka by default), next to the transport ceiling: the same
    /// messages pre-serialized, sent with the same settings; the share of the ceiling is the
    /// median of the rounds' ratios.
    Produce(ProduceArgs),
    /// Plan time of `etl build-models` (discovery, rendering, DAG, selection; no database) for a
    /// generated project of N models; the median of several runs (target ≤ 200 ms for 100).
    Plan(PlanArgs),
    /// A full `build-models` over generated stream and batch transactions, then an incremental
    /// build after new stream rows, in a scratch database that is dropped afterwards.
    Models(ModelsArgs),
    /// Rows/s of `etl kafka-to-postgres` draining a pre-filled topic (of the run's own, on the
    /// local Apache Kafka by default), next to a raw COPY of the same rows over as many
    /// connections as the sink has writers, in a scratch database that is dropped afterwards.
    Sink(SinkArgs),
    /// Latency from produced_at to commit while `etl kafka-to-postgres` (default settings)
    /// follows a stream sent at a fixed rate, on topics of the run's own (the local Apache Kafka
    /// by default) and a scratch database that is dropped afterwards.
    E2e(E2eArgs),
}

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// Stream transactions copied into transactions_sink before the full build
    #[arg(long, default_value_t = 1_000_000)]
    pub stream: u64,
    /// Batch transactions, spread over --months monthly files
    #[arg(long, default_value_t = 1_000_000)]
    pub batch: u64,
    /// User rows over all monthly files (restatements included)
    #[arg(long, default_value_t = 300_000)]
    pub users: u64,
    /// Monthly files to generate, from 2025-01
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=24))]
    pub months: u32,
    /// New stream rows before the incremental build
    #[arg(long, default_value_t = 10_000)]
    pub new_rows: u64,
    /// Seed of the generated files and stream
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Models to build
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// Models built in parallel
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Folder for the generated files; its CSV files are replaced
    #[arg(long, default_value_os_t = std::env::temp_dir().join("etl-bench-models"))]
    pub dir: PathBuf,
    /// Keep the scratch database afterwards (its name is printed) to look into the built models
    #[arg(long)]
    pub keep_database: bool,
    /// Which rows the incremental build's data tests check (see `build-models --test-scope`);
    /// the full build always checks every row
    #[arg(long, value_enum, default_value = "changed")]
    pub test_scope: crate::models::TestScope,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Models in the generated project
    #[arg(long, env = "BENCH_MODELS", default_value_t = 100)]
    pub models: usize,
    /// Timed plans; the median is reported
    #[arg(long, env = "BENCH_RUNS", default_value_t = 15,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Keep the generated project in this folder instead of a temporary one
    #[arg(long, env = "BENCH_PLAN_DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// User rows to generate
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    /// Batch transactions to generate
    #[arg(long, default_value_t = 1_000_000)]
    pub transactions: u64,
    /// Seed of the generated month
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Month to generate, YYYY-MM
    #[arg(long, default_value = "2025-01")]
    pub month: String,
    /// Rounds of (raw COPY, loader), alternating which goes first; the median ratio is reported
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Folder for the generated files; this month's files there are replaced
    #[arg(long, default_value_os_t = std::env::temp_dir().join("etl-bench-batch"))]
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Messages per phase
    #[arg(long, env = "BENCH_COUNT", default_value_t = 2_000_000)]
    pub count: u64,
    /// Partitions of the benchmark topic
    #[arg(long, env = "BENCH_PARTITIONS", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Distinct users (message keys)
    #[arg(long, env = "BENCH_USERS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,
    /// The broker: HOST:PORT of a running one (default: KAFKA_BROKERS, the local Apache Kafka
    /// of `just up`) or `librdkafka-mock`; the run's topics are deleted afterwards
    #[arg(long, env = "BENCH_BROKER")]
    pub broker: Option<BrokerChoice>,
    /// Rounds of both phases, alternating; the share of the ceiling is the median of the
    /// rounds' ratios, the rates reported are each phase's best round
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Also time a paced run at this rate (messages/s) for --rate-check-duration; 0 skips it
    #[arg(long, env = "BENCH_RATE_CHECK", default_value_t = 10_000)]
    pub rate_check: u32,
    /// Length of the paced run, e.g. 10s
    #[arg(long, env = "BENCH_RATE_CHECK_DURATION", default_value = "10s",
          value_parser = super::produce::parse_duration)]
    pub rate_check_duration: std::time::Duration,
    /// Where to write the figures as JSON
    #[arg(long, env = "BENCH_JSON", default_value = "bench-results/produce.json")]
    pub json: PathBuf,
}

/// What the stream benchmarks share: traffic, broker, sink pool and report file.
#[derive(Debug, clap::Args)]
pub struct StreamBenchArgs {
    /// Partitions of the benchmark topic
    #[arg(long, env = "BENCH_PARTITIONS", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Distinct users (message keys), all of them in users_raw
    #[arg(long, env = "BENCH_USERS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,
    /// Seed of the generated traffic
    #[arg(long, env = "BENCH_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Share of invalid messages (dead-lettered by the sink), 0.0–1.0
    #[arg(long, env = "BENCH_INVALID_RATIO", default_value_t = 0.01)]
    pub invalid_ratio: f64,
    /// Share of messages whose user is in no user file (late-arriving), 0.0–1.0
    #[arg(long, env = "BENCH_ORPHAN_RATIO", default_value_t = 0.02)]
    pub orphan_ratio: f64,
    /// The sink's batch size (as --batch-size of kafka-to-postgres)
    #[arg(long, env = "SINK_BATCH_SIZE",
          default_value_t = crate::kafka::sink::SinkOptions::default().batch_size as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// The sink's batch wait (as --batch-wait of kafka-to-postgres), e.g. 20ms
    #[arg(long, env = "SINK_BATCH_WAIT", default_value = crate::kafka::sink::DEFAULT_BATCH_WAIT_TEXT,
          value_parser = super::produce::parse_duration)]
    pub batch_wait: std::time::Duration,
    /// The sink's writers (as --writers of kafka-to-postgres)
    #[arg(long, env = "SINK_WRITERS",
          default_value_t = crate::kafka::sink::SinkOptions::default().writers as u64,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub writers: u64,
    /// Database connections of the sink
    #[arg(long, env = "SINK_DB_CONNECTIONS",
          default_value_t = crate::kafka::sink::DEFAULT_DB_CONNECTIONS)]
    pub db_connections: u32,
    /// The broker: HOST:PORT of a running one (default: KAFKA_BROKERS, the local Apache Kafka
    /// of `just up`; the benchmark's topics get names of their own and are deleted afterwards),
    /// or `librdkafka-mock` (librdkafka's mock cluster in this process; e2e only, it keeps 5 MB
    /// per partition)
    #[arg(long, env = "BENCH_BROKER")]
    pub broker: Option<BrokerChoice>,
}

/// `--broker`, or the brokers every other command talks to.
fn broker_or_default(broker: Option<BrokerChoice>, global: &GlobalArgs) -> BrokerChoice {
    broker.unwrap_or_else(|| BrokerChoice::Existing(global.kafka().brokers))
}

impl StreamBenchArgs {
    fn options(&self, global: &GlobalArgs) -> StreamBenchOptions {
        StreamBenchOptions {
            database_url: global.database_url.clone(),
            partitions: self.partitions,
            users: self.users,
            seed: self.seed,
            invalid_ratio: self.invalid_ratio,
            orphan_ratio: self.orphan_ratio,
            broker: broker_or_default(self.broker.clone(), global),
            // -X applies here too; the broker address is the benchmark's own.
            overrides: global.kafka().overrides,
            sink: crate::kafka::sink::SinkOptions {
                batch_size: self.batch_size as usize,
                batch_wait: self.batch_wait,
                writers: self.writers as usize,
                ..Default::default()
            },
            db_connections: self.db_connections,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Messages pre-filled into the topic
    #[arg(long, env = "BENCH_SINK_COUNT", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Rounds of (raw COPY, drain), alternating which goes first; medians are reported
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    #[command(flatten)]
    pub stream: StreamBenchArgs,
    /// Where to write the figures as JSON (and Markdown beside it, .md)
    #[arg(
        long,
        env = "BENCH_SINK_JSON",
        default_value = "bench-results/sink.json"
    )]
    pub json: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// Messages per second
    #[arg(long, env = "BENCH_E2E_RATE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// How long to send, e.g. 60s
    #[arg(long, env = "BENCH_E2E_DURATION", default_value = "60s",
          value_parser = super::produce::parse_duration)]
    pub duration: std::time::Duration,
    /// Also read the topic with a plain consumer and report how much of the latency is Kafka's
    #[arg(long, env = "BENCH_E2E_TRANSPORT_PROBE")]
    pub transport_probe: bool,
    /// Where the measured stream's producer runs: `in-process` (a thread of the benchmark,
    /// sharing its process with the sink) or `process` (`etl produce` as a process of its own,
    /// as in `just stream`)
    #[arg(long, env = "BENCH_E2E_PRODUCER", value_enum, default_value_t = ProducerArg::InProcess)]
    pub producer: ProducerArg,
    #[command(flatten)]
    pub stream: StreamBenchArgs,
    /// Where to write the figures as JSON (and Markdown beside it, .md)
    #[arg(long, env = "BENCH_E2E_JSON", default_value = "bench-results/e2e.json")]
    pub json: PathBuf,
}

impl Bench {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        match self {
            Bench::Batch(args) => args.run(global).await,
            Bench::Produce(args) => args.run(global).await,
            Bench::Plan(args) => args.run(),
            Bench::Models(args) => args.run(global).await,
            Bench::Sink(args) => args.run(global).await,
            Bench::E2e(args) => args.run(global).await,
        }
    }
}

/// The first line of a benchmark's report: figures from an unoptimized build say little.
fn print_build_profile() {
    let profile = if cfg!(debug_assertions) {
        "dev (unoptimized)"
    } else {
        "release"
    };
    println!("build profile: {profile}");
}

fn warn_if_debug(command: &str) {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this is a debug build; `cargo run --release -- bench {command}` measures what ships"
        );
    }
}

/// Writes `json` to `path` and, when given, `markdown` beside it (`.md`).
fn write_figures(
    path: &std::path::Path,
    json: &impl serde::Serialize,
    markdown: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(json)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("figures written to {}", path.display());
    if let Some(markdown) = markdown {
        let md = path.with_extension("md");
        std::fs::write(&md, markdown).with_context(|| format!("writing {}", md.display()))?;
        println!("table written to {}", md.display());
    }
    Ok(())
}

impl BatchArgs {
    async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let month = Month::parse(&self.month)
            .with_context(|| format!("--month {:?} is not like 2025-01", self.month))?;
        let options = BatchBenchOptions {
            month: MonthlyOptions {
                month,
                users: self.users,
                transactions: self.transactions,
                seed: self.seed,
                invalid_ratio: 0.0,
            },
            dir: self.dir,
            database_url: global.database_url.clone(),
            rounds: self.rounds,
            ..BatchBenchOptions::default()
        };
        print_build_profile();
        let report = run(&options, progress_bar()).await?;
        println!("{report}");
        Ok(())
    }
}

impl ProduceArgs {
    async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        warn_if_debug("produce");
        let options = ProduceBenchOptions {
            count: self.count,
            partitions: self.partitions,
            users: self.users,
            broker: broker_or_default(self.broker, global),
            // -X applies here too; the broker address is the benchmark's own.
            overrides: global.kafka().overrides,
            rounds: self.rounds,
            rate_check: (self.rate_check > 0)
                .then_some((self.rate_check, self.rate_check_duration)),
            ..ProduceBenchOptions::default()
        };
        let report = produce::run(&options, shutdown::on_signal()).await?;
        println!("{}", report.table());
        write_figures(&self.json, &report, None)
    }
}

impl SinkArgs {
    async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        warn_if_debug("sink");
        let options = SinkBenchOptions {
            stream: self.stream.options(global),
            count: self.count,
            rounds: self.rounds,
            ..SinkBenchOptions::default()
        };
        let report = sink::run(&options, shutdown::on_signal()).await?;
        let table = report.table();
        println!("{table}");
        write_figures(&self.json, &report, Some(&table))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProducerArg {
    InProcess,
    Process,
}

impl E2eArgs {
    async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        warn_if_debug("e2e");
        let producer = match self.producer {
            ProducerArg::InProcess => ProducerPlacement::InProcess,
            ProducerArg::Process => ProducerPlacement::Process {
                etl: std::env::current_exe().context("finding the etl executable")?,
            },
        };
        let options = E2eBenchOptions {
            producer,
            stream: self.stream.options(global),
            rate: self.rate,
            duration: self.duration,
            transport_probe: self.transport_probe,
            ..E2eBenchOptions::default()
        };
        let report = e2e::run(&options, shutdown::on_signal()).await?;
        let table = report.table();
        println!("{table}");
        write_figures(&self.json, &report, Some(&table))
    }
}

impl PlanArgs {
    fn run(self) -> anyhow::Result<()> {
        print_build_profile();
        let report = crate::bench::plan::run(&crate::bench::plan::PlanBenchOptions {
            models: self.models,
            runs: self.runs as usize,
            dir: self.dir,
            ..Default::default()
        })?;
        println!("{report}");
        Ok(())
    }
}

impl ModelsArgs {
    async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let options = ModelsBenchOptions {
            database_url: global.database_url.clone(),
            models_dir: self.models_dir,
            stream: self.stream,
            batch: self.batch,
            users: self.users,
            months: self.months,
            new_rows: self.new_rows,
            seed: self.seed,
            dir: self.dir,
            threads: self.threads,
            keep_database: self.keep_database,
            test_scope: self.test_scope,
        };
        print_build_profile();
        let report = models::run(&options, progress_bar()).await?;
        println!("{report}");
        Ok(())
    }
}
