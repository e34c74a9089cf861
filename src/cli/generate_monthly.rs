//! `etl generate-monthly`

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::generate::files::write_month;
use crate::generate::monthly::{Month, MonthlyOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Year of the month to generate
    #[arg(long, env = "ETL_YEAR")]
    pub year: i32,

    /// Month to generate, 1-12
    #[arg(long, env = "ETL_MONTH", value_parser = clap::value_parser!(u32).range(1..=12))]
    pub month: u32,

    /// User rows to write (from the second month on, ~10 % restate earlier users)
    #[arg(long, env = "ETL_USERS", default_value_t = 1_000)]
    pub users: u64,

    /// Batch transactions to write, by users of this month or earlier months in --out-dir
    #[arg(long, env = "ETL_TRANSACTIONS", default_value_t = 5_000)]
    pub transactions: u64,

    /// Folder of the monthly files; earlier months there are read for restatements and references
    #[arg(long, env = "ETL_OUT_DIR", default_value = "data/incoming")]
    pub out_dir: PathBuf,

    /// Seed of every random choice: the same arguments give byte-identical files
    #[arg(long, env = "ETL_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Share of rows in each file written deliberately bad (bad UUID, age, date, tier, width, empty user_id)
    #[arg(long, env = "ETL_INVALID_RATIO", default_value_t = 0.0)]
    pub invalid_ratio: f64,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let month = Month::new(self.year, self.month).with_context(|| {
            format!(
                "{}-{:02} is not a month between 2000 and 2100",
                self.year, self.month
            )
        })?;
        let options = MonthlyOptions {
            month,
            users: self.users,
            transactions: self.transactions,
            seed: self.seed,
            invalid_ratio: self.invalid_ratio,
        };
        let progress = progress_bar();
        let out_dir = self.out_dir.clone();
        let report =
            tokio::task::spawn_blocking(move || write_month(&out_dir, &options, &progress))
                .await
                .context("the generator stopped unexpectedly")??;
        println!(
            "{}: {} user rows ({} restated, {} invalid)",
            report.users_file.display(),
            report.user_rows,
            report.restated_rows,
            report.bad_user_rows.len()
        );
        println!(
            "{}: {} transactions ({} invalid)",
            report.transactions_file.display(),
            report.transaction_rows,
            report.bad_transaction_rows.len()
        );
        Ok(())
    }
}

/// A bar on stderr when a person watches; nothing when output goes to a file or a pipe.
pub(crate) fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {wide_bar} {human_pos}/{human_len} rows, {per_sec}, eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
