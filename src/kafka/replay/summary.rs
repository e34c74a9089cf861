//! What a replay did, per `error.kind` of the dead letters it read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Dead letters of one kind, by outcome. Every letter read counts in exactly one column.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindCounts {
    /// Valid under today's rules and re-produced (with `--dry-run`: would be).
    pub replayed: u64,
    /// Still invalid: left where they are.
    pub still_failing: u64,
    /// Valid, but their tx_id was re-produced before (an earlier replay, or a second copy of the
    /// same letter in this one).
    pub already_replayed: u64,
    /// Not selected by `--kind` / `--since` (or `db_rejected`, which needs `--kind db_rejected`).
    pub skipped: u64,
}

impl KindCounts {
    pub fn total(&self) -> u64 {
        self.replayed + self.still_failing + self.already_replayed + self.skipped
    }
}

/// The outcome of one `etl dlq replay`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplaySummary {
    pub by_kind: BTreeMap<String, KindCounts>,
    pub dry_run: bool,
    /// Stopped by SIGINT/SIGTERM before the end of the topic.
    pub interrupted: bool,
    pub elapsed: Duration,
}

impl ReplaySummary {
    pub fn kind(&mut self, kind: &str) -> &mut KindCounts {
        if !self.by_kind.contains_key(kind) {
            self.by_kind.insert(kind.to_string(), KindCounts::default());
        }
        self.by_kind.get_mut(kind).expect("just inserted")
    }

    pub fn totals(&self) -> KindCounts {
        self.by_kind
            .values()
            .fold(KindCounts::default(), |a, c| KindCounts {
                replayed: a.replayed + c.replayed,
                still_failing: a.still_failing + c.still_failing,
                already_replayed: a.already_replayed + c.already_replayed,
                skipped: a.skipped + c.skipped,
            })
    }

    /// A table for people: one line per kind, then the totals.
    pub fn render(&self, dlq_topic: &str, topic: &str) -> String {
        let replayed = if self.dry_run {
            "would replay"
        } else {
            "replayed"
        };
        let width = self
            .by_kind
            .keys()
            .map(String::len)
            .chain([5])
            .max()
            .unwrap_or(5);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:width$}  {replayed:>12}  {:>13}  {:>16}  {:>8}",
            "kind", "still failing", "already replayed", "skipped"
        );
        let mut line = |name: &str, c: &KindCounts| {
            let _ = writeln!(
                out,
                "{name:width$}  {:>12}  {:>13}  {:>16}  {:>8}",
                c.replayed, c.still_failing, c.already_replayed, c.skipped
            );
        };
        for (kind, counts) in &self.by_kind {
            line(kind, counts);
        }
        let totals = self.totals();
        line("total", &totals);
        let _ = write!(
            out,
            "{} dead letters of {dlq_topic} read in {:.1}s; {} {}re-produced to {topic}{}",
            totals.total(),
            self.elapsed.as_secs_f64(),
            totals.replayed,
            if self.dry_run { "would be " } else { "" },
            if self.interrupted {
                " (interrupted: run it again to go on)"
            } else {
                ""
            },
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_and_the_table_names_every_kind() {
        let mut s = ReplaySummary::default();
        s.kind("unknown_currency").replayed += 3;
        s.kind("unknown_currency").already_replayed += 1;
        s.kind("bad_uuid").still_failing += 2;
        s.kind("db_rejected").skipped += 4;
        let t = s.totals();
        assert_eq!(
            (t.replayed, t.still_failing, t.already_replayed, t.skipped),
            (3, 2, 1, 4)
        );
        assert_eq!(t.total(), 10);
        let table = s.render("dlq", "tx");
        assert!(table.contains("unknown_currency"), "{table}");
        assert!(table.contains("10 dead letters of dlq"), "{table}");
        s.dry_run = true;
        assert!(s.render("dlq", "tx").contains("would replay"));
    }
}
