//! Logging setup. Logs go to stderr so that command output on stdout stays pipeable.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// Used when `RUST_LOG` is unset: our own info, only warnings from chatty dependencies.
const DEFAULT_FILTER: &str = "info,refinery_core=warn,tokio_postgres=warn,sqlx=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` filters (default `info`); calling it twice is harmless.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Peak resident set size of this process so far (`VmHWM` of `/proc/self/status`, Linux only).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub mod metrics;
