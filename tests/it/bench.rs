//! Smoke runs of the sink benchmarks (a few seconds each) on the tests' Apache Kafka: the
//! plumbing works and the figures add up.

use std::time::Duration;

use etl::bench::BenchError;
use etl::bench::broker::BrokerChoice;
use etl::bench::e2e::{self, E2eBenchOptions, ProducerPlacement};
use etl::bench::scratch::StreamBenchOptions;
use etl::bench::sink::{self, SinkBenchOptions};
use tokio_util::sync::CancellationToken;

use etl::kafka::admin;

use crate::helpers::{kafka, services};

fn stream_options() -> StreamBenchOptions {
    StreamBenchOptions {
        database_url: services().database_url.clone(),
        users: 200,
        broker: BrokerChoice::Existing(services().kafka_brokers.clone()),
        ..StreamBenchOptions::default()
    }
}

/// Topic names on the broker now.
async fn topic_names() -> Vec<String> {
    admin::describe_topics(&kafka(), None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_bench_drains_every_message_and_compares_with_a_raw_copy_of_the_same_rows() {
    let options = SinkBenchOptions {
        stream: StreamBenchOptions {
            invalid_ratio: 0.05,
            ..stream_options()
        },
        count: 2_000,
        rounds: 1,
        ..SinkBenchOptions::default()
    };
    let report = sink::run(&options, CancellationToken::new()).await.unwrap();
    assert_eq!(report.valid_rows + report.invalid, 2_000);
    assert!(report.invalid > 0);
    let round = &report.rounds[0];
    assert_eq!(round.inserted, report.valid_rows);
    assert_eq!(round.rejected, report.invalid);
    // The baseline wrote the very rows the sink did, and the ratio compares the two rates.
    assert_eq!(round.raw_copy_rows, report.valid_rows);
    assert_eq!(report.writers, 2);
    let raw_rate = report.valid_rows as f64 / round.raw_copy_seconds;
    assert!((round.raw_copy_rows_per_second - raw_rate).abs() < 1e-6 * raw_rate);
    assert!(
        (round.ratio - round.drain_rows_per_second / round.raw_copy_rows_per_second).abs() < 1e-9
    );
    // Kafka's high watermarks add up to the messages sent: the sink's own caught-up stop ends
    // the drain.
    assert_eq!(report.watermark_messages, 2_000);
    assert_eq!(report.stop, sink::DrainStop::UntilCaughtUp);
    assert_eq!(
        round
            .batch_messages
            .as_ref()
            .map(|d| d.mean * d.count as f64),
        Some(2_000.0)
    );
    assert!(report.table().contains("| median |"));
}

#[tokio::test(flavor = "multi_thread")]
async fn e2e_bench_on_kafka_measures_every_row_and_deletes_its_topics() {
    let report = e2e::run(
        &small_e2e(stream_options().broker),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // 1,000 msg/s for 2 s: the rate limiter holds the rate to within 2 % (its own target), the
    // last token of the window may or may not fall inside it.
    assert!(
        (1_960..=2_040).contains(&report.sent),
        "1,000 msg/s for 2 s sent {}",
        report.sent
    );
    let latency = report
        .latency
        .latency_ms
        .as_ref()
        .expect("rows were measured");
    assert_eq!(latency.count as u64, report.inserted);
    assert_eq!(report.inserted + report.rejected, report.sent);
    assert!(latency.min > 0.0 && latency.p50 <= latency.p99);
    let held = report
        .latency
        .sink_hold_ms
        .as_ref()
        .expect("messages were held");
    assert_eq!(held.count as u64, report.sent);
    assert!(report.batches > 0);
    assert!(
        report.broker.contains(&services().kafka_brokers),
        "{}",
        report.broker
    );
    assert!(report.topic.starts_with("etl-bench-"), "{}", report.topic);
    assert!(
        !topic_names().await.contains(&report.topic),
        "{} was left behind",
        report.topic
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn e2e_bench_with_the_producer_as_a_process_of_its_own_measures_every_row() {
    let options = E2eBenchOptions {
        producer: ProducerPlacement::Process {
            etl: env!("CARGO_BIN_EXE_etl").into(),
        },
        stream: StreamBenchOptions {
            invalid_ratio: 0.02,
            ..stream_options()
        },
        ..small_e2e(stream_options().broker)
    };
    let report = e2e::run(&options, CancellationToken::new()).await.unwrap();
    // What the topic gained while `etl produce` ran: 1,000 msg/s for 2 s.
    assert!(
        (1_960..=2_040).contains(&report.sent),
        "1,000 msg/s for 2 s sent {}",
        report.sent
    );
    assert_eq!(report.inserted + report.rejected, report.sent);
    assert!(report.rejected > 0, "the child sent the invalid share too");
    let latency = report
        .latency
        .latency_ms
        .as_ref()
        .expect("rows were measured");
    assert_eq!(latency.count as u64, report.inserted);
    // The child's CPU is counted apart from the benchmark's process.
    assert!(
        report.producer_cpu_seconds.is_some_and(|s| s > 0.0),
        "{:?}",
        report.producer_cpu_seconds
    );
    assert!(report.table().contains("etl produce"), "{}", report.table());
}

fn small_e2e(broker: BrokerChoice) -> E2eBenchOptions {
    E2eBenchOptions {
        stream: StreamBenchOptions {
            broker,
            ..stream_options()
        },
        rate: 1_000,
        duration: Duration::from_secs(2),
        warmup_messages: 50,
        ..E2eBenchOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn e2e_bench_on_librdkafka_mock_measures_the_sinks_share_of_every_message() {
    let options = small_e2e(BrokerChoice::LibrdkafkaMock);
    let report = e2e::run(&options, CancellationToken::new()).await.unwrap();
    assert_eq!(report.broker, "librdkafka mock cluster");
    let latency = report
        .latency
        .latency_ms
        .as_ref()
        .expect("rows were measured");
    assert_eq!(latency.count as u64, report.inserted);
    assert_eq!(report.inserted + report.rejected, report.sent);
    // Every measured message, rejected ones included, was held by the sink for a while, and never
    // longer than its whole trip from the producer.
    let held = report
        .latency
        .sink_hold_ms
        .as_ref()
        .expect("messages were held");
    assert_eq!(held.count as u64, report.sent);
    assert!(
        held.min > 0.0 && held.p50 <= latency.p50,
        "{held:?} vs {latency:?}"
    );
    assert_eq!(report.broker_cpu_seconds, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_bench_refuses_librdkafka_mock_which_cannot_hold_a_prefilled_topic() {
    let options = SinkBenchOptions {
        stream: StreamBenchOptions {
            broker: BrokerChoice::LibrdkafkaMock,
            ..stream_options()
        },
        ..SinkBenchOptions::default()
    };
    let err = sink::run(&options, CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(matches!(err, BenchError::MockCannotPrefill), "{err}");
}

#[test]
fn every_sink_and_e2e_bench_variable_is_documented() {
    use clap::CommandFactory;
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example"),
    )
    .unwrap();
    let cli = etl::cli::Cli::command();
    let bench = cli.find_subcommand("bench").unwrap();
    for name in ["sink", "e2e"] {
        for arg in bench.find_subcommand(name).unwrap().get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_str().unwrap();
                assert!(
                    example.contains(env),
                    ".env.example lacks {env} (bench {name})"
                );
            }
        }
    }
}
