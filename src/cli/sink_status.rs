//! The sink's live status line on a terminal: produced/s, landed/s, lag, rejects, anomalies,
//! read once a second from the sink's own metrics (what `/metrics` serves), so it shows what
//! Prometheus would.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::Metrics;

/// The sink's totals at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub inserted: f64,
    pub duplicates: f64,
    pub rejected: f64,
    pub anomalies: f64,
    /// Messages in the topic not yet written, over the partitions this process holds.
    pub lag: f64,
}

impl Totals {
    /// From the Prometheus text the sink serves.
    pub fn of(text: &str) -> Self {
        Self {
            inserted: sum(text, "etl_sink_inserted_rows_total"),
            duplicates: sum(text, "etl_sink_duplicates_messages_total"),
            rejected: sum(text, "etl_sink_rejected_messages_total"),
            anomalies: sum(text, "etl_sink_anomalies_rows_total"),
            lag: sum(text, "etl_sink_lag_messages"),
        }
    }

    /// Messages that reached the topic: those written plus those still waiting.
    fn arrived(&self) -> f64 {
        self.inserted + self.duplicates + self.rejected + self.lag
    }

    /// The status line, with rates over `seconds` since `before`.
    pub fn line(&self, before: &Self, seconds: f64) -> String {
        let rate = |now: f64, then: f64| ((now - then) / seconds.max(1e-9)).max(0.0);
        format!(
            "produced {:.0}/s · landed {:.0}/s · lag {:.0} · rejected {:.0} · anomalies {:.0} · {:.0} rows in all",
            rate(self.arrived(), before.arrived()),
            rate(self.inserted, before.inserted),
            self.lag,
            self.rejected,
            self.anomalies,
            self.inserted,
        )
    }
}

/// Σ of the samples of metric `name` (every label set).
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Draws the line on stderr once a second until `stop`, when stderr is a terminal; nothing
/// otherwise (logs and pipes get the summary at the end only).
pub fn spawn(metrics: Metrics, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
    bar.set_draw_target(ProgressDrawTarget::stderr());
    Some(tokio::spawn(async move {
        let mut before = (Instant::now(), Totals::of(&metrics.render()));
        bar.set_message("waiting for the first batch…");
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let now = (Instant::now(), Totals::of(&metrics.render()));
            bar.set_message(now.1.line(&before.1, (now.0 - before.0).as_secs_f64()));
            bar.tick();
            before = now;
        }
        bar.finish_and_clear();
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_every_label_set_of_their_metric_only() {
        let text = "\
# HELP etl_sink_rejected_messages Messages dead-lettered, by error kind
etl_sink_rejected_messages_total{kind=\"not_json\"} 3
etl_sink_rejected_messages_total{kind=\"bad_uuid\"} 2
etl_sink_inserted_rows_total 100
etl_sink_inserted_rows_total_other 7
etl_sink_lag_messages{topic=\"t\",partition=\"0\"} 4
etl_sink_lag_messages{topic=\"t\",partition=\"1\"} 6
";
        let totals = Totals::of(text);
        assert_eq!(totals.rejected, 5.0);
        assert_eq!(totals.inserted, 100.0);
        assert_eq!(totals.lag, 10.0);
        assert_eq!(totals.anomalies, 0.0);
    }

    #[test]
    fn the_line_shows_rates_over_the_interval_and_totals() {
        let before = Totals {
            inserted: 1_000.0,
            lag: 50.0,
            ..Totals::default()
        };
        let now = Totals {
            inserted: 3_000.0,
            rejected: 40.0,
            anomalies: 2.0,
            lag: 10.0,
            ..Totals::default()
        };
        // Arrived: 1,050 → 3,050 in 2 s; landed 1,000 → 3,000.
        assert_eq!(
            now.line(&before, 2.0),
            "produced 1000/s · landed 1000/s · lag 10 · rejected 40 · anomalies 2 · 3000 rows in all"
        );
    }

    #[test]
    fn the_names_are_those_the_sink_serves() {
        let metrics = Metrics::new();
        metrics.sink.inserted.inc_by(9);
        assert_eq!(Totals::of(&metrics.render()).inserted, 9.0);
    }
}
