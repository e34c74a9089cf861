//! The demo's one summary: every figure from the step that made it or from the tables, and the
//! checks that they add up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// What the batch step did and what the batch tables hold.
#[derive(Debug, Clone, Default)]
pub struct BatchFigures {
    /// Files loaded by this run, and files skipped because their content was loaded before.
    pub files_loaded: usize,
    pub files_already_loaded: usize,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// In the tables: users_raw, transactions_batch_raw, etl.batch_rejects.
    pub users_in_table: i64,
    pub transactions_in_table: i64,
    pub rejects_in_table: i64,
}

/// The stream of this run: what the producer sent (the generator's own record) and where each
/// message ended, read from the tables by offset.
#[derive(Debug, Clone, Default)]
pub struct StreamFigures {
    pub topic: String,
    /// Acknowledged by the broker.
    pub produced: u64,
    /// Deliberately bad messages the generator made, by kind.
    pub injected: BTreeMap<String, u64>,
    /// Messages from users in no user file.
    pub orphans: u64,
    /// Rows in transactions_sink from this run's offsets.
    pub landed: i64,
    /// Rows in transactions_rejected from this run's offsets, by kind.
    pub rejected: BTreeMap<String, i64>,
    /// Valid messages whose tx_id was already in the table (the sink's count).
    pub duplicates: u64,
    /// Rows the sink landed for users not (yet) in users_raw.
    pub late_arriving: u64,
    pub anomalies: u64,
    /// Messages of earlier runs the sink caught up with before this run produced.
    pub drained_before: u64,
    pub produce_seconds: f64,
    pub sink_seconds: f64,
}

impl StreamFigures {
    pub fn rejected_total(&self) -> i64 {
        self.rejected.values().sum()
    }

    /// produced = landed + rejected + duplicates.
    pub fn adds_up(&self) -> bool {
        i64::try_from(self.produced).ok()
            == Some(self.landed + self.rejected_total() + self.duplicates as i64)
    }

    /// Every kind the generator injected was rejected as that kind, as often, and nothing else.
    pub fn rejects_match_injected(&self) -> bool {
        self.injected.len() == self.rejected.len()
            && self
                .injected
                .iter()
                .all(|(kind, n)| self.rejected.get(kind).copied() == i64::try_from(*n).ok())
    }
}

#[derive(Debug, Clone, Default)]
pub struct ModelFigures {
    /// (model, materialization, rows written), in build order.
    pub models: Vec<(String, String, Option<u64>)>,
    pub models_failed: usize,
    pub tests_passed: usize,
    pub tests_failed: usize,
    /// Failed tests: name and failing rows.
    pub failures: Vec<(String, Option<u64>)>,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct TopMerchant {
    pub date: NaiveDate,
    pub merchant: String,
    pub revenue_usd: f64,
    pub transactions: i64,
}

#[derive(Debug, Clone)]
pub struct Anomaly {
    pub tx_id: Uuid,
    pub user_id: Uuid,
    pub amount: f64,
    pub currency: String,
    pub merchant: String,
    pub event_time: DateTime<Utc>,
    pub z_score: Option<f64>,
    pub user_txn_count: i64,
}

#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    pub batch: BatchFigures,
    pub stream: StreamFigures,
    pub models: ModelFigures,
    pub top_merchants: Vec<TopMerchant>,
    pub anomalies: Vec<Anomaly>,
    pub dashboard_url: String,
    pub elapsed: Duration,
}

impl DemoSummary {
    /// True when the stream adds up, its rejects are exactly what was injected, and every
    /// model built and every test passed.
    pub fn all_good(&self) -> bool {
        self.stream.adds_up()
            && self.stream.rejects_match_injected()
            && self.models.models_failed == 0
            && self.models.tests_failed == 0
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let b = &self.batch;
        let s = &self.stream;
        let m = &self.models;
        let _ = writeln!(
            out,
            "\n== etl demo: summary ({:.0} s)\n",
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "Batch    {} file(s) loaded, {} already loaded before: {} rows loaded, {} rejected \
             (in the tables now: {} users, {} transactions, {} rejected rows)",
            b.files_loaded,
            b.files_already_loaded,
            b.rows_loaded,
            b.rows_rejected,
            b.users_in_table,
            b.transactions_in_table,
            b.rejects_in_table
        );
        let _ = writeln!(
            out,
            "Stream   {} produced to {} in {:.1} s; the sink caught up in {:.1} s{}",
            s.produced,
            s.topic,
            s.produce_seconds,
            s.sink_seconds,
            if s.drained_before > 0 {
                format!(" (and first drained {} earlier messages)", s.drained_before)
            } else {
                String::new()
            }
        );
        let kinds: Vec<String> = s.rejected.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "         {} produced = {} landed + {} rejected + {} duplicates: {}",
            s.produced,
            s.landed,
            s.rejected_total(),
            s.duplicates,
            if s.adds_up() {
                "adds up"
            } else {
                "DOES NOT ADD UP"
            }
        );
        let _ = writeln!(
            out,
            "         rejected by kind: {}; {}",
            if kinds.is_empty() {
                "none".into()
            } else {
                kinds.join(", ")
            },
            if s.rejects_match_injected() {
                "exactly the kinds and counts the generator injected"
            } else {
                "NOT what the generator injected"
            }
        );
        let _ = writeln!(
            out,
            "         {} rows of late-arriving users (not in users_raw; {} messages came from users \
             in no user file), {} anomalies",
            s.late_arriving, s.orphans, s.anomalies
        );
        let _ = writeln!(
            out,
            "Models   {} built in {:.1} s, {} failed; tests: {} passed, {} failed",
            m.models.len(),
            m.seconds,
            m.models_failed,
            m.tests_passed,
            m.tests_failed
        );
        for (name, materialization, rows) in &m.models {
            let rows = rows.map_or_else(|| "-".to_string(), |r| r.to_string());
            let _ = writeln!(
                out,
                "         {name:<28} {materialization:<12} {rows:>9} rows"
            );
        }
        for (test, rows) in &m.failures {
            let _ = writeln!(
                out,
                "         FAILED {test}: {} failing rows",
                rows.map_or_else(|| "?".into(), |r| r.to_string())
            );
        }
        match self.top_merchants.first() {
            Some(first) => {
                let _ = writeln!(out, "Top 5 merchants on {} (approved, USD)", first.date);
                for t in &self.top_merchants {
                    let _ = writeln!(
                        out,
                        "         {:<24} {:>12.2} {:>6} transactions",
                        t.merchant, t.revenue_usd, t.transactions
                    );
                }
            }
            None => out.push_str("Top 5 merchants: no revenue in the mart\n"),
        }
        if self.anomalies.is_empty() {
            out.push_str("Latest anomalies: none\n");
        } else {
            out.push_str("Latest anomalies\n");
            for a in &self.anomalies {
                let _ = writeln!(
                    out,
                    "         {} {:>10.2} {} at {:<20} z {:>6} (user {}, transaction #{}) tx {}",
                    a.event_time.format("%Y-%m-%d %H:%M"),
                    a.amount,
                    a.currency,
                    a.merchant,
                    a.z_score.map_or_else(|| "-".into(), |z| format!("{z:.1}")),
                    a.user_id,
                    a.user_txn_count,
                    a.tx_id
                );
            }
        }
        let _ = writeln!(
            out,
            "Dashboard {} (start it with `just serve`)",
            self.dashboard_url
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamFigures {
        StreamFigures {
            topic: "transactions".into(),
            produced: 1_000,
            injected: BTreeMap::from([("not_json".into(), 12), ("bad_amount".into(), 8)]),
            landed: 970,
            rejected: BTreeMap::from([("not_json".into(), 12), ("bad_amount".into(), 8)]),
            duplicates: 10,
            ..StreamFigures::default()
        }
    }

    #[test]
    fn the_stream_adds_up_only_when_every_message_is_accounted_for() {
        let mut s = stream();
        assert!(s.adds_up());
        s.landed -= 1;
        assert!(!s.adds_up());
        s.duplicates += 1;
        assert!(s.adds_up());
    }

    #[test]
    fn rejects_must_be_exactly_the_injected_kinds_and_counts() {
        let mut s = stream();
        assert!(s.rejects_match_injected());
        s.rejected.insert("bad_amount".into(), 7);
        assert!(!s.rejects_match_injected());
        s.rejected.insert("bad_amount".into(), 8);
        s.rejected.insert("too_large".into(), 1);
        assert!(!s.rejects_match_injected());
    }

    #[test]
    fn the_summary_says_whether_it_adds_up_and_shows_each_part() {
        let mut summary = DemoSummary {
            stream: stream(),
            dashboard_url: "http://127.0.0.1:8080/".into(),
            ..DemoSummary::default()
        };
        assert!(summary.all_good());
        let text = summary.render();
        assert!(
            text.contains("1000 produced = 970 landed + 20 rejected + 10 duplicates: adds up"),
            "{text}"
        );
        assert!(text.contains("bad_amount 8, not_json 12"), "{text}");
        assert!(text.contains("http://127.0.0.1:8080/"), "{text}");
        summary.models.tests_failed = 1;
        summary.models.failures = vec![("unique_fct_transactions_tx_id".into(), Some(3))];
        assert!(!summary.all_good());
        assert!(
            summary
                .render()
                .contains("FAILED unique_fct_transactions_tx_id: 3 failing rows")
        );
        summary.stream.landed = 0;
        assert!(summary.render().contains("DOES NOT ADD UP"));
    }
}
