//! The benchmark harness behind `etl bench`: reusable pieces (a throwaway broker, a scratch
//! database, exact percentiles) and one module per benchmark.

pub mod batch;
pub mod broker;
pub mod e2e;
pub mod models;
pub mod plan;
pub mod produce;
pub mod producer_process;
pub mod scratch;
pub mod sink;
pub mod stats;

use std::time::Duration;

use crate::db::DbError;
use crate::kafka::KafkaError;
use crate::kafka::producer::ProduceError;
use crate::kafka::sink::SinkError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the benchmark broker at {address} did not answer within 30 s; {hint}")]
    BrokerNotReady { address: String, hint: String },
    #[error(
        "librdkafka's mock cluster keeps only the last 5 MB of each partition, so a pre-filled \
         topic does not fit; `etl bench sink` needs a real broker (the default, or --broker HOST:PORT)"
    )]
    MockCannotPrefill,
    #[error("cannot start librdkafka's mock cluster: {0}")]
    MockStart(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(
        "{failed} of {sent} messages were not delivered in the `{phase}` phase ({first_error}); the figures would be meaningless"
    )]
    Undelivered {
        phase: String,
        sent: u64,
        failed: u64,
        first_error: String,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("benchmark database step failed while {context}: {source}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the sink failed during the benchmark: {0}")]
    Sink(#[from] SinkError),
    #[error("{0}; the figures would be meaningless")]
    Void(String),
}

impl BenchError {
    fn sql(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Sql { context, source }
    }
}

/// `release` or `debug`: figures from a debug build say little.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Logical CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1-minute load average on Linux; `None` elsewhere.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine's CPU time counters (the `cpu` line of /proc/stat, in ticks): all of it, and the
/// part stolen by the hypervisor for other guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    total: u64,
    stolen: u64,
}

impl CpuTicks {
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal (guest time is inside user already)
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        Some(Self {
            total: ticks.iter().sum(),
            stolen: *ticks.get(7)?,
        })
    }

    pub fn stolen_share_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let stolen = self.stolen.checked_sub(earlier.stolen)?;
        (total > 0).then(|| stolen as f64 / total as f64)
    }
}

/// CPU time of this whole process so far (Linux: utime + stime of /proc/self/stat, in ticks
/// of 10 ms).
pub(crate) fn process_cpu_time() -> Option<Duration> {
    cpu_time_of("self")
}

/// CPU time of process `pid` so far (Linux only; `None` when it is gone or not readable).
pub(crate) fn cpu_time_of(pid: &str) -> Option<Duration> {
    stat_ticks(pid, StatTicks::Own)
}

/// CPU time of this process's children that have exited and been waited for (Linux only).
pub(crate) fn children_cpu_time() -> Option<Duration> {
    stat_ticks("self", StatTicks::WaitedForChildren)
}

/// Which pair of CPU counters of /proc/PID/stat to read.
#[derive(Clone, Copy)]
enum StatTicks {
    /// utime + stime.
    Own,
    /// cutime + cstime.
    WaitedForChildren,
}

fn stat_ticks(pid: &str, which: StatTicks) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces; utime is
    // field 14 of proc(5), the 12th after the name.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let first = match which {
        StatTicks::Own => 11,
        StatTicks::WaitedForChildren => 13,
    };
    let ticks: u64 =
        fields.get(first)?.parse::<u64>().ok()? + fields.get(first + 1)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time used between two readings, when both were taken.
pub(crate) fn cpu_between(start: Option<Duration>, end: Option<Duration>) -> Option<Duration> {
    Some(end?.saturating_sub(start?))
}

/// A load average for a report line.
pub(crate) fn show_load(load: Option<f64>) -> String {
    load.map_or_else(|| "unknown".to_string(), |l| format!("{l:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stolen_share_is_steal_over_all_ticks_between_two_readings() {
        let start = CpuTicks::parse("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 2 3\n").unwrap();
        let end = CpuTicks::parse("cpu  200 0 90 1400 10 0 0 100 0 0\n").unwrap();
        // Δ: user 100, system 40, idle 600, steal 60 of 800 ticks.
        assert_eq!(end.stolen_share_since(&start), Some(0.075));
        assert_eq!(start.stolen_share_since(&end), None);
        assert_eq!(CpuTicks::parse("intr 1 2 3"), None);
    }
}
