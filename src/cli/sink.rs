//! `etl kafka-to-postgres` (alias `sink`): the stream sink.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::produce::parse_duration;
use crate::db;
use crate::kafka::config;
use crate::kafka::sink::{self, SinkOptions};
use crate::shutdown;
use crate::telemetry::metrics::Metrics;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topics: SinkTopicsArgs,
    /// Most messages per database transaction (a backed-up topic fills batches to this size)
    #[arg(long, env = "SINK_BATCH_SIZE", default_value_t = sink::DEFAULT_BATCH_SIZE as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Most bytes a batch may hold in memory (payloads and encoded rows), e.g. 64MiB, 500MB;
    /// the sink holds at most three batches per writer, so this bounds its memory when
    /// messages are large (librdkafka's fetch queue, queued.max.messages.kbytes, comes on top)
    #[arg(long, env = "SINK_BATCH_BYTES", default_value = sink::DEFAULT_BATCH_BYTES_TEXT,
          value_parser = parse_bytes)]
    pub batch_bytes: usize,
    /// Longest a batch waits to grow while the database is free, e.g. 20ms. A batch is written
    /// earlier when no further message is waiting, so this bounds latency under steady traffic
    #[arg(long, env = "SINK_BATCH_WAIT", default_value = sink::DEFAULT_BATCH_WAIT_TEXT,
          value_parser = parse_duration)]
    pub batch_wait: Duration,
    /// Stop once the topic's end as seen at start is written (trigger-once, e.g. from cron)
    #[arg(long, env = "SINK_UNTIL_CAUGHT_UP")]
    pub until_caught_up: bool,
    /// Serve Prometheus /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9187
    #[arg(long, env = "ETL_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Wait for PostgreSQL's WAL flush at every batch commit. Not needed for exactly-once (offsets
    /// commit with the rows, so what a database crash loses is read again from Kafka); costs a
    /// flush per batch
    #[arg(long, env = "SINK_SYNCHRONOUS_COMMIT")]
    pub synchronous_commit: bool,
    /// Batches written at the same time, each by a writer with a database connection and
    /// partitions of its own (partition p goes to writer p mod N); a partition's batches are
    /// always written in order
    #[arg(long, env = "SINK_WRITERS", default_value_t = sink::DEFAULT_WRITERS as u64,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub writers: u64,
    /// Database connections for the writers, the relay and the checks (at least writers + 1)
    #[arg(long, env = "SINK_DB_CONNECTIONS", default_value_t = sink::DEFAULT_DB_CONNECTIONS)]
    pub db_connections: u32,
    #[command(flatten)]
    pub rules: super::rules::RulesArgs,
}

/// The topics and consumer group a sink uses: `etl kafka-to-postgres`'s and `etl demo`'s.
#[derive(Debug, clap::Args)]
pub struct SinkTopicsArgs {
    /// Topic to read transactions from
    #[arg(long, env = "KAFKA_TOPIC", default_value = config::DEFAULT_TOPIC)]
    pub topic: String,
    /// Consumer group; every sink process in one group shares the partitions
    #[arg(long, env = "KAFKA_GROUP", default_value = config::DEFAULT_GROUP)]
    pub group: String,
    /// Dead-letter topic for messages that are not valid transactions
    #[arg(long, env = "KAFKA_DLQ_TOPIC", default_value = config::DEFAULT_DLQ_TOPIC)]
    pub dlq_topic: String,
    /// Topic the anomaly relay publishes to
    #[arg(long, env = "KAFKA_ANOMALIES_TOPIC", default_value = config::DEFAULT_ANOMALIES_TOPIC)]
    pub anomalies_topic: String,
}

impl SinkTopicsArgs {
    /// Default sink options on these topics and group.
    pub fn options(self) -> SinkOptions {
        SinkOptions {
            topic: self.topic,
            group: self.group,
            dlq_topic: self.dlq_topic,
            anomalies_topic: self.anomalies_topic,
            ..SinkOptions::default()
        }
    }
}

impl Args {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        // Before anything connects: a setting that cannot work should say so at once.
        sink::enough_connections(self.writers as usize, self.db_connections)?;
        let rules = self.rules.rules()?;
        db::migrate::migrate(&global.database_url).await?;
        let pool = db::connect(&global.database_url, self.db_connections).await?;
        let options = SinkOptions {
            batch_size: self.batch_size as usize,
            batch_bytes: self.batch_bytes,
            batch_wait: self.batch_wait,
            writers: self.writers as usize,
            until_caught_up: self.until_caught_up,
            metrics_addr: self.metrics_addr,
            synchronous_commit: self.synchronous_commit,
            rules,
            ..self.topics.options()
        };
        let cancel = shutdown::on_signal();
        let metrics = Metrics::new();
        let status_stop = CancellationToken::new();
        let status = super::sink_status::spawn(metrics.clone(), status_stop.clone());
        let summary = sink::run(
            &global.kafka(),
            &global.database_url,
            pool,
            &options,
            metrics,
            cancel,
        )
        .await;
        status_stop.cancel();
        if let Some(status) = status {
            let _ = status.await;
        }
        let summary = summary?;
        println!(
            "consumed {} messages in {:.1}s: {} rows inserted, {} duplicates, {} rejected (dead-lettered to {}), \
             {} late-arriving users' rows, {} anomalies ({} published to {})",
            summary.consumed,
            summary.elapsed.as_secs_f64(),
            summary.inserted,
            summary.duplicates,
            summary.rejected,
            options.dlq_topic,
            summary.late_arriving,
            summary.anomalies,
            summary.published,
            options.anomalies_topic,
        );
        Ok(())
    }
}

/// `64MiB`, `500MB`, `512KiB`, `1GiB` or a bare number of bytes; at least 1 KiB.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let invalid = || format!("`{text}` is not a size; use e.g. 64MiB, 500MB or 1048576");
    let text = text.trim();
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let unit: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(invalid()),
    };
    let bytes = number * unit;
    if !(1024.0..=usize::MAX as f64).contains(&bytes) {
        return Err(format!("`{text}` is out of range; the least is 1KiB"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_in_decimal_and_binary_units() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("1.5 KiB"), Ok(1_536));
        assert_eq!(parse_bytes("2048"), Ok(2_048));
        assert_eq!(parse_bytes("1gib"), Ok(1 << 30));
        assert!(parse_bytes("10").is_err(), "below 1 KiB");
        assert!(parse_bytes("64 mebibytes").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("MiB").is_err());
    }
}
