//! `etl produce`: synthetic transactions to Kafka, user ids taken from the monthly user files.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::generate::stream::{EventClock, StreamGenerator, StreamOptions};
use crate::generate::user_ids::load_user_ids;
use crate::kafka::producer::{ProduceOptions, Progress, produce_blocking};
use crate::shutdown;
use crate::telemetry::metrics::ProduceMetrics;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder with the monthly user files (user_registrations_*.csv) written by `etl generate-monthly`
    #[arg(long, env = "PRODUCE_USERS_DIR", default_value = "data/incoming")]
    pub users_dir: PathBuf,
    /// Topic to send to
    #[arg(long, env = "KAFKA_TOPIC", default_value = crate::kafka::config::DEFAULT_TOPIC)]
    pub topic: String,
    /// Messages per second (token bucket); unlimited when not given
    #[arg(long, env = "PRODUCE_RATE", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
    /// Stop after this many messages
    #[arg(long, env = "PRODUCE_COUNT", conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Stop after this long, e.g. 30s, 5m, 1h30m; without --count or --duration, until Ctrl-C
    #[arg(long, env = "PRODUCE_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Share of deliberately bad messages (0–1), the 14 kinds taking turns
    #[arg(long, env = "PRODUCE_INVALID_RATIO", default_value_t = 0.0, value_parser = parse_ratio)]
    pub invalid_ratio: f64,
    /// Share of messages from users in no user file (0–1): late-arriving dimension members
    #[arg(long, env = "PRODUCE_ORPHAN_RATIO", default_value_t = 0.0, value_parser = parse_ratio)]
    pub orphan_ratio: f64,
    /// Seed: the same seed sends the same transactions (tx_ids included); random when not given
    #[arg(long, env = "PRODUCE_SEED")]
    pub seed: Option<u64>,
    /// Event timestamps start here (RFC 3339) and advance by 1/rate (1 ms without --rate),
    /// making them deterministic too; otherwise the wall clock
    #[arg(long, env = "PRODUCE_START_TIME", conflicts_with = "backfill_days")]
    pub start_time: Option<DateTime<Utc>>,
    /// Spread event timestamps over the past N days (demo data for daily charts)
    #[arg(long, env = "PRODUCE_BACKFILL_DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub backfill_days: Option<u32>,
    /// Pad every message to at least this size with a `padding` field the sink ignores, e.g.
    /// 100KB: large messages for capacity tests (the broker's limit is about 1 MB by default)
    #[arg(long, env = "PRODUCE_PAD_TO", value_parser = super::sink::parse_bytes)]
    pub pad_to: Option<usize>,
    /// Longest wait for outstanding deliveries at the end, e.g. 30s
    #[arg(long, env = "PRODUCE_FLUSH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub flush_timeout: Duration,
    /// Serve Prometheus /metrics (sent, delivered, failed), /healthz and /readyz on this
    /// address while producing, e.g. 0.0.0.0:9187
    #[arg(long, env = "PRODUCE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Args {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let users = load_user_ids(&self.users_dir)?;
        tracing::info!(users = users.ids.len(), files = users.files.len(), skipped_rows = users.skipped_rows, dir = %self.users_dir.display(), "loaded user ids");
        let seed = self.seed.unwrap_or_else(rand::random);
        let clock = self.clock();
        let generator = StreamGenerator::new(
            &users.ids,
            StreamOptions {
                seed,
                invalid_ratio: self.invalid_ratio,
                orphan_ratio: self.orphan_ratio,
                clock,
            },
        );
        let options = ProduceOptions {
            topic: self.topic.clone(),
            rate: self.rate,
            count: self.count,
            duration: self.duration,
            flush_timeout: self.flush_timeout,
            ..ProduceOptions::default()
        };
        let bar = progress_bar(self.count);
        let cancel = shutdown::on_signal();
        let kafka = global.kafka();
        let progress = bar.clone();
        let metrics = ProduceMetrics::new();
        let serve_stop = tokio_util::sync::CancellationToken::new();
        let server = match self.metrics_addr {
            Some(addr) => {
                let render = {
                    let metrics = metrics.clone();
                    Arc::new(move || metrics.render())
                };
                let router = crate::http::ops::router_rendering(render, Vec::new());
                let (bound, handle) = crate::http::ops::serve(addr, router, serve_stop.clone())
                    .await
                    .with_context(|| format!("serving /metrics on {addr}"))?;
                tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
                Some(handle)
            }
            None => None,
        };
        let counted = metrics.clone();
        let pad_to = self.pad_to.unwrap_or(0);
        let messages = generator.map(move |m| m.padded_to(pad_to));
        let summary = tokio::task::spawn_blocking(move || {
            produce_blocking(&kafka, &options, messages, &cancel, |p| {
                counted.observe(p);
                show(&progress, p);
            })
        })
        .await
        .context("the sending thread panicked")??;
        serve_stop.cancel();
        if let Some(server) = server {
            let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        }
        bar.finish_and_clear();
        println!("{summary}");
        println!(
            "users      {} from {} file(s) in {}",
            users.ids.len(),
            users.files.len(),
            self.users_dir.display()
        );
        println!("seed       {seed} (repeat with --seed {seed})");
        if summary.has_failures() {
            bail!(
                "{} of {} messages were not delivered to {}",
                summary.sent - summary.delivered,
                summary.sent,
                summary.topic
            );
        }
        Ok(())
    }

    fn clock(&self) -> EventClock {
        if let Some(start) = self.start_time {
            let step = match self.rate {
                Some(rate) => TimeDelta::nanoseconds(1_000_000_000 / i64::from(rate)),
                None => TimeDelta::milliseconds(1),
            };
            EventClock::Fixed { start, step }
        } else if let Some(days) = self.backfill_days {
            EventClock::Backfill {
                end: Utc::now(),
                days,
            }
        } else {
            EventClock::Now
        }
    }
}

/// A bar towards `count`, or a spinner; drawn on stderr only when a person is watching.
fn progress_bar(count: Option<u64>) -> ProgressBar {
    let bar = match count {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} sent {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

fn show(bar: &ProgressBar, p: &Progress) {
    bar.set_position(p.sent);
    let rate = p.sent as f64 / p.elapsed.as_secs_f64().max(1e-9);
    bar.set_message(format!(
        "{rate:.0}/s, {} delivered, {} failed",
        p.delivered, p.failed
    ));
}

/// `30s`, `5m`, `1h30m`, `250ms`, `2d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration; use e.g. 30s, 5m, 1h30m or 250ms");
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ms" => number / 1e3,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3_600.0,
            "d" => number * 86_400.0,
            _ => return Err(invalid()),
        };
        total += Duration::try_from_secs_f64(seconds).map_err(|_| invalid())?;
        rest = tail;
    }
    if text.is_empty() {
        return Err(invalid());
    }
    Ok(total)
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{text}` is not a share between 0 and 1, e.g. 0.05"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn ratios() {
        assert_eq!(parse_ratio("0.05"), Ok(0.05));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("-0.1").is_err());
    }
}
