//! `etl bench …`: benchmarks that are not tests. Numbers go to stdout; run with `just bench-batch`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::batch::bench::{BatchBenchOptions, run};
use crate::generate::monthly::{Month, MonthlyOptions};

use super::GlobalArgs;
use super::generate_monthly::progress_bar;

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// generate-monthly for one month, then load-batch of it against a raw COPY of the same files
    /// into the same tables, in a scratch database that is dropped afterwards.
    Batch(BatchArgs),
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

impl Bench {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        match self {
            Self::Batch(args) => {
                let month = Month::parse(&args.month)
                    .with_context(|| format!("--month {:?} is not like 2025-01", args.month))?;
                let options = BatchBenchOptions {
                    month: MonthlyOptions {
                        month,
                        users: args.users,
                        transactions: args.transactions,
                        seed: args.seed,
                        invalid_ratio: 0.0,
                    },
                    dir: args.dir,
                    database_url: global.database_url.clone(),
                    rounds: args.rounds,
                };
                let profile = if cfg!(debug_assertions) {
                    "dev (unoptimized)"
                } else {
                    "release"
                };
                println!("build profile: {profile}");
                let report = run(&options, progress_bar()).await?;
                println!("{report}");
                Ok(())
            }
        }
    }
}
