//! `etl dlq replay`: re-validate dead letters and re-produce those that now pass.

use std::io::IsTerminal;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::GlobalArgs;
use super::rules::RulesArgs;
use crate::cli::produce::parse_duration;
use crate::db;
use crate::kafka::config;
use crate::kafka::replay::{self, ReplayOptions};
use crate::shutdown;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Re-validate the dead-letter topic with today's rules and re-produce what now passes.
    ///
    /// Reads every partition of the dead-letter topic from its start up to its end as seen at
    /// start, then stops. A letter that is valid under today's rules (see --extra-categories) is
    /// re-produced to --topic with its original key and headers plus x-etl-replayed-from
    /// (`dlq_topic/partition/offset`); one that still fails stays where it is and is not
    /// dead-lettered again. Prints a summary per error.kind: replayed, still failing, already
    /// replayed, skipped.
    ///
    /// Idempotent: a tx_id is re-produced into a topic at most once. Every chunk of messages is
    /// recorded in etl.dlq_replays in a database transaction that commits only once the broker
    /// has acknowledged the chunk, so a second run (or two at once) sends nothing twice. Only a
    /// crash between the acknowledgement and that commit can send a chunk again, and the sink's
    /// primary key on tx_id then drops the copies. No consumer-group offsets are committed: what
    /// is skipped or still failing must stay replayable by a later run.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Dead-letter topic to read
    #[arg(long, env = "KAFKA_DLQ_TOPIC", default_value = config::DEFAULT_DLQ_TOPIC)]
    pub dlq_topic: String,
    /// Topic to re-produce valid messages to
    #[arg(long, env = "KAFKA_TOPIC", default_value = config::DEFAULT_TOPIC)]
    pub topic: String,
    /// Only letters whose error.kind header is one of these (comma-separated or repeated), e.g.
    /// unknown_category. Without it every kind but db_rejected (rows the database refused pass
    /// the validator and would only come back; name it to replay them)
    #[arg(
        long,
        env = "DLQ_REPLAY_KIND",
        value_delimiter = ',',
        value_name = "KIND"
    )]
    pub kind: Vec<String>,
    /// Only letters dead-lettered at or after this time: RFC 3339 (2025-08-15T10:30:00Z) or an age
    /// such as 2h or 7d
    #[arg(long, env = "DLQ_REPLAY_SINCE", value_parser = parse_since, value_name = "TIME")]
    pub since: Option<DateTime<Utc>>,
    /// Count what would be replayed; produce nothing, record nothing
    #[arg(long, env = "DLQ_REPLAY_DRY_RUN")]
    pub dry_run: bool,
    #[command(flatten)]
    pub rules: RulesArgs,
}

impl Command {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        match self {
            Command::Replay(args) => args.run(global).await,
        }
    }
}

impl ReplayArgs {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let rules = self.rules.rules()?;
        db::migrate::migrate(&global.database_url).await?;
        let pool = db::connect(&global.database_url, 2).await?;
        let options = ReplayOptions {
            dlq_topic: self.dlq_topic,
            topic: self.topic,
            kinds: self.kind,
            since: self.since,
            dry_run: self.dry_run,
            rules,
            ..ReplayOptions::default()
        };
        let bar = progress_bar();
        let summary = replay::replay(
            &global.kafka(),
            &pool,
            &options,
            &bar,
            shutdown::on_signal(),
        )
        .await;
        bar.finish_and_clear();
        println!("{}", summary?.render(&options.dlq_topic, &options.topic));
        Ok(())
    }
}

/// RFC 3339, or an age before now (`2h`, `7d`).
fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(time.with_timezone(&Utc));
    }
    let age = parse_duration(text).map_err(|_| {
        format!("`{text}` is neither an RFC 3339 time (2025-08-15T10:30:00Z) nor an age (2h, 7d)")
    })?;
    chrono::TimeDelta::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| format!("`{text}` reaches too far back"))
}

/// A bar over the letters to read, on stderr when a person watches.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} dead letters read ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        assert_eq!(
            parse_since("2025-08-15T10:30:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2025-08-15T08:30:00+00:00"
        );
        let two_hours_ago = parse_since("2h").unwrap();
        let age = Utc::now() - two_hours_ago;
        assert!((age.num_seconds() - 7_200).abs() < 60, "{age}");
        assert!(parse_since("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn every_variable_of_replay_and_schema_is_in_the_env_example() {
        use clap::CommandFactory;
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
        let cli = crate::cli::Cli::command();
        let replay = cli
            .find_subcommand("dlq")
            .and_then(|d| d.find_subcommand("replay"))
            .unwrap();
        let schema = cli.find_subcommand("schema").unwrap();
        let mut seen = 0;
        for arg in replay.get_arguments().chain(schema.get_arguments()) {
            if let Some(env) = arg.get_env() {
                let env = env.to_str().unwrap();
                assert!(example.contains(env), ".env.example lacks {env}");
                seen += 1;
            }
        }
        assert!(seen >= 6, "{seen} variables");
    }
}
