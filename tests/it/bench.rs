//! Smoke runs of the sink benchmarks (a few seconds each): the plumbing works and the figures
//! add up. They start their own memory:// tansu, so they need tansu built with dynostore
//! (`just install`); without it they say so and pass.

use std::time::Duration;

use etl::bench::BenchError;
use etl::bench::broker::{BenchBroker, BrokerChoice, default_tansu_binary};
use etl::bench::e2e::{self, E2eBenchOptions};
use etl::bench::scratch::StreamBenchOptions;
use etl::bench::sink::{self, SinkBenchOptions};
use tokio_util::sync::CancellationToken;

use etl::kafka::admin;

use crate::helpers::services;

fn tansu_installed() -> bool {
    let tansu = default_tansu_binary();
    let found = std::process::Command::new(&tansu)
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("skipped: no tansu at {} (`just install`)", tansu.display());
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_bench_drains_every_message_and_compares_with_raw_copy() {
    if !tansu_installed() {
        return;
    }
    let options = SinkBenchOptions {
        stream: StreamBenchOptions {
            database_url: services().database_url.clone(),
            invalid_ratio: 0.05,
            users: 200,
            ..StreamBenchOptions::default()
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
    assert!(round.raw_copy_rows_per_second > 0.0 && round.drain_rows_per_second > 0.0);
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
async fn e2e_bench_measures_every_valid_row() {
    if !tansu_installed() {
        return;
    }
    let options = E2eBenchOptions {
        stream: StreamBenchOptions {
            database_url: services().database_url.clone(),
            users: 200,
            ..StreamBenchOptions::default()
        },
        rate: 1_000,
        duration: Duration::from_secs(2),
        warmup_messages: 50,
        ..E2eBenchOptions::default()
    };
    let report = e2e::run(&options, CancellationToken::new()).await.unwrap();
    assert!((1_800..=2_100).contains(&report.sent), "{}", report.sent);
    let latency = report.latency_ms.as_ref().expect("rows were measured");
    assert_eq!(latency.count as u64, report.inserted);
    assert_eq!(report.inserted + report.rejected, report.sent);
    assert!(latency.min > 0.0 && latency.p50 <= latency.p99);
    assert!(report.batches > 0);
}

fn small_e2e(broker: BrokerChoice) -> E2eBenchOptions {
    E2eBenchOptions {
        stream: StreamBenchOptions {
            database_url: services().database_url.clone(),
            users: 200,
            broker,
            ..StreamBenchOptions::default()
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
    let latency = report.latency_ms.as_ref().expect("rows were measured");
    assert_eq!(latency.count as u64, report.inserted);
    assert_eq!(report.inserted + report.rejected, report.sent);
    // Every measured message, rejected ones included, was held by the sink for a while, and never
    // longer than its whole trip from the producer.
    let held = report.sink_hold_ms.as_ref().expect("messages were held");
    assert_eq!(held.count as u64, report.sent);
    assert!(
        held.min > 0.0 && held.p50 <= latency.p50,
        "{held:?} vs {latency:?}"
    );
    assert_eq!(report.broker_cpu_seconds, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn e2e_bench_on_a_running_broker_uses_topics_of_its_own_and_deletes_them() {
    if !tansu_installed() {
        return;
    }
    // A memory:// tansu stands in for someone's Kafka: it can delete topics.
    let running = BenchBroker::start(&BrokerChoice::Tansu, &default_tansu_binary())
        .await
        .unwrap();
    let options = small_e2e(BrokerChoice::Existing(running.address.clone()));
    let report = e2e::run(&options, CancellationToken::new()).await.unwrap();
    assert_eq!(report.broker, format!("the broker at {}", running.address));
    assert_eq!(report.inserted + report.rejected, report.sent);
    let left = admin::describe_topics(&running.settings(), None)
        .await
        .unwrap();
    assert!(
        left.iter()
            .all(|t| !t.name.starts_with("etl-bench-") && t.name != "transactions"),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_bench_refuses_librdkafka_mock_which_cannot_hold_a_prefilled_topic() {
    let options = SinkBenchOptions {
        stream: StreamBenchOptions {
            database_url: services().database_url.clone(),
            broker: BrokerChoice::LibrdkafkaMock,
            ..StreamBenchOptions::default()
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
