//! `etl load-batch`

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget};

use crate::batch::{LoadOptions, find_files, load_file};
use crate::db;
use crate::generate::monthly::Month;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of the monthly files
    #[arg(long, env = "ETL_BATCH_DIR", default_value = crate::batch::load::DEFAULT_DIR)]
    pub dir: PathBuf,

    /// Only this month's files, as YYYY-MM
    #[arg(long, env = "ETL_BATCH_MONTH", value_parser = parse_month)]
    pub month: Option<Month>,

    /// Replace the rows of files whose content changed since they were loaded (atomically, per file)
    #[arg(long, env = "ETL_BATCH_RELOAD")]
    pub reload: bool,

    /// Write this process's peak resident memory (KiB) to this file at the end: `etl bench
    /// batch` runs the loader as a child process and reads the loader's own figure from it
    #[arg(long, hide = true)]
    pub peak_rss_file: Option<PathBuf>,
}

fn parse_month(text: &str) -> Result<Month, String> {
    Month::parse(text).ok_or_else(|| format!("{text:?} is not a month like 2025-08"))
}

impl Args {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        db::migrate::migrate(&global.database_url).await?;
        let pool = db::connect(&global.database_url, 2).await?;
        let options = LoadOptions {
            dir: self.dir,
            month: self.month,
            reload: self.reload,
            ..LoadOptions::default()
        };
        let files = find_files(&options)?;
        let mut outcomes = Vec::with_capacity(files.len());
        for file in &files {
            let spinner = spinner(format!("loading {}", file.path.display()));
            outcomes.push(load_file(&pool, file, &options).await);
            spinner.finish_and_clear();
        }
        if let Some(path) = &self.peak_rss_file {
            let peak = crate::telemetry::peak_rss_kib()
                .context("the peak resident memory is unknown (no /proc/self/status)")?;
            std::fs::write(path, format!("{peak}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if outcomes.is_empty() {
            println!("{}: no monthly files to load", options.dir.display());
        }
        let mut failed = 0;
        for outcome in &outcomes {
            match outcome {
                Ok(outcome) => println!("{outcome}"),
                Err(error) => {
                    failed += 1;
                    eprintln!("error: {error}");
                }
            }
        }
        if failed > 0 {
            bail!(
                "{failed} of {} files could not be loaded (see above)",
                outcomes.len()
            );
        }
        Ok(())
    }
}

/// A spinner on stderr while a file loads, when a person watches; nothing otherwise.
fn spinner(message: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner().with_message(message);
    spinner.set_draw_target(ProgressDrawTarget::stderr());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}
