//! Command-line interface: global settings plus one file per subcommand.

pub mod bench;
mod global;
pub mod migrate;
pub mod produce;
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
    /// Benchmarks that start the broker they measure against.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Apply the schema migrations in `migrations/` (every other command also does this on start).
    Migrate(migrate::Args),
    /// Send synthetic transactions to Kafka (DESIGN §4), user ids taken from the monthly user files.
    Produce(produce::Args),
    /// Create, list and inspect Kafka topics and consumer-group lag, for people without Kafdrop.
    #[command(subcommand)]
    Topics(topics::Command),
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Bench(bench) => bench.run(&self.global).await,
            Command::Migrate(args) => args.run(&self.global).await,
            Command::Produce(args) => args.run(&self.global).await,
            Command::Topics(command) => command.run(&self.global).await,
        }
    }
}
