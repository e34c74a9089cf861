//! `etl demo`

use std::path::PathBuf;

use anyhow::bail;

use crate::db;
use crate::demo::{self, DemoOptions};
use crate::generate::monthly::Month;
use crate::kafka::sink;
use crate::shutdown;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the monthly CSV files
    #[arg(long, env = "ETL_BATCH_DIR", default_value = crate::batch::load::DEFAULT_DIR)]
    pub data_dir: PathBuf,
    /// The first month of batch files, as YYYY-MM
    #[arg(long, default_value = "2025-06", value_parser = parse_month)]
    pub first_month: Month,
    /// Months of batch files
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=24))]
    pub months: u32,
    /// User rows per month
    #[arg(long, default_value_t = 2_000)]
    pub users: u64,
    /// Batch transactions per month
    #[arg(long, default_value_t = 10_000)]
    pub transactions: u64,
    /// Seed of the batch files: the same files every run, so a second run loads nothing new
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Streamed transactions
    #[arg(long, default_value_t = 200_000)]
    pub stream: u64,
    /// Share of invalid streamed messages (0-1)
    #[arg(long, default_value_t = 0.02)]
    pub invalid_ratio: f64,
    /// Share of streamed messages from users in no user file (0-1)
    #[arg(long, default_value_t = 0.01)]
    pub orphan_ratio: f64,
    /// Seed of the stream; new each run unless given, so every run lands new transactions
    #[arg(long)]
    pub stream_seed: Option<u64>,
    /// Spread the stream's event times over this many past days
    #[arg(long, default_value_t = 30)]
    pub backfill_days: u32,
    /// Folder of the models
    #[arg(long, env = "ETL_MODELS_DIR", default_value = crate::models::DEFAULT_MODELS_DIR)]
    pub models_dir: PathBuf,
    #[command(flatten)]
    pub topics: super::sink::SinkTopicsArgs,
    /// Where `etl serve` shows the dashboard, for the summary
    #[arg(
        long,
        env = "ETL_DASHBOARD_URL",
        default_value = "http://127.0.0.1:8080/"
    )]
    pub dashboard_url: String,
}

fn parse_month(text: &str) -> Result<Month, String> {
    Month::parse(text).ok_or_else(|| format!("{text:?} is not a month like 2025-06"))
}

impl Args {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        db::migrate::migrate(&global.database_url).await?;
        let pool = db::connect(&global.database_url, sink::DEFAULT_DB_CONNECTIONS).await?;
        let months = std::iter::successors(Some(self.first_month), |m| Some(m.next()))
            .take(self.months as usize)
            .collect();
        let options = DemoOptions {
            data_dir: self.data_dir,
            months,
            users: self.users,
            transactions: self.transactions,
            batch_invalid_ratio: 0.005,
            seed: self.seed,
            stream_count: self.stream,
            invalid_ratio: self.invalid_ratio,
            orphan_ratio: self.orphan_ratio,
            stream_seed: self.stream_seed.unwrap_or_else(rand::random),
            backfill_days: self.backfill_days,
            models_dir: self.models_dir,
            sink: self.topics.options(),
            dashboard_url: self.dashboard_url,
        };
        let step = |what: &str| eprintln!("== {what}");
        let summary = demo::run(
            &global.kafka(),
            &global.database_url,
            &pool,
            &options,
            &shutdown::on_signal(),
            &step,
        )
        .await?;
        println!("{}", summary.render());
        println!(
            "stream seed {} (repeat with --stream-seed {0})",
            options.stream_seed
        );
        if !summary.all_good() {
            bail!("the demo's checks failed (see the summary above)");
        }
        Ok(())
    }
}
