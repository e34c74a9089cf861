//! Command-line interface: global settings plus one file per subcommand.

pub mod bench;
pub mod build_models;
pub mod demo;
pub mod dlq;
pub mod generate_monthly;
mod global;
pub mod load_batch;
pub mod migrate;
pub mod models;
pub mod produce;
pub mod rules;
pub mod schema;
pub mod serve;
pub mod sink;
mod sink_status;
pub mod topics;

use clap::{Parser, Subcommand};

pub use global::GlobalArgs;

/// Batch-plus-stream dimensional ETL: monthly CSV files and a Kafka transaction stream into a
/// PostgreSQL star schema.
///
/// Every flag can also be set through the environment variable named in its help; a `.env` file
/// in the working directory is read when present (see `.env.example`).
#[derive(Debug, Parser)]
#[command(name = "etl", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write one month of users and batch transactions into CSV files (same arguments, same bytes).
    GenerateMonthly(generate_monthly::Args),
    /// Validate the monthly CSV files and land them in users_raw / transactions_batch_raw.
    LoadBatch(load_batch::Args),
    /// Send synthetic transactions to Kafka (ARCHITECTURE §4), user ids taken from the monthly user files.
    Produce(produce::Args),
    /// The stream sink: validate, dead-letter, write exactly once into PostgreSQL, score anomalies.
    #[command(name = "kafka-to-postgres", visible_alias = "sink")]
    KafkaToPostgres(sink::Args),
    /// Build the SQL models in models/ (dbt style): seeds, models, data tests; once or on a schedule.
    BuildModels(build_models::Args),
    /// Inspect the SQL models without building them: `etl models graph`.
    #[command(subcommand)]
    Models(models::Command),
    /// Apply the schema migrations in `migrations/` (every other command also does this on start).
    Migrate(migrate::Args),
    /// Create, list and inspect Kafka topics and consumer-group lag, for people without Kafdrop.
    #[command(subcommand)]
    Topics(topics::Command),
    /// The REST API, the live dashboard and the stream page, with /metrics and /openapi.json.
    Serve(serve::Args),
    /// Dead letters: `etl dlq replay` re-produces those that today's rules accept.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Print the JSON Schema of the stream message, generated from the validator's rules.
    ///
    /// Draft 2020-12, rendered from the same rules the sink validates with (src/domain/rules.rs),
    /// so it changes with --extra-categories and never by hand. `etl serve` serves it at
    /// /schema/transaction.json. What JSON Schema cannot express (at most 2 decimals in amount,
    /// a field given twice, bytes that are not UTF-8 or not JSON) is listed in its description;
    /// the sink's validator stays the authority.
    Schema(schema::Args),
    /// Benchmarks, not tests: batch, produce, sink (drain), e2e, models, plan, serve.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// The whole pipeline once on the running services (batch, stream, models), ending in one
    /// summary that adds up: what `just demo` runs.
    Demo(demo::Args),
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::GenerateMonthly(args) => args.run().await,
            Command::LoadBatch(args) => args.run(&self.global).await,
            Command::Produce(args) => args.run(&self.global).await,
            Command::KafkaToPostgres(args) => args.run(&self.global).await,
            Command::BuildModels(args) => args.run(&self.global).await,
            Command::Models(command) => command.run().await,
            Command::Migrate(args) => args.run(&self.global).await,
            Command::Topics(command) => command.run(&self.global).await,
            Command::Serve(args) => args.run(&self.global).await,
            Command::Dlq(command) => command.run(&self.global).await,
            Command::Schema(args) => args.run().await,
            Command::Bench(bench) => bench.run(&self.global).await,
            Command::Demo(args) => args.run(&self.global).await,
        }
    }
}

/// The error and its causes on one line, each cause once: many of our errors already quote their
/// cause in their own sentence, and repeating it would only bury the advice.
pub fn error_report(err: &anyhow::Error) -> String {
    let mut report = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !report.contains(&cause) {
            report.push_str(": ");
            report.push_str(&cause);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::error_report;

    #[test]
    fn causes_already_quoted_are_not_repeated() {
        let io = std::io::Error::other("disk full");
        let quoted = anyhow::Error::new(io).context("writing x.csv failed: disk full");
        assert_eq!(error_report(&quoted), "writing x.csv failed: disk full");
        let io = std::io::Error::other("disk full");
        let plain = anyhow::Error::new(io).context("writing x.csv");
        assert_eq!(error_report(&plain), "writing x.csv: disk full");
    }
}
