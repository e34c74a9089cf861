//! `etl produce` against the real broker: what arrives, that it repeats, and how fast it is sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::TimeDelta;
use etl::domain::catalog::USERS_CSV_HEADER;
use etl::domain::transaction::validate;
use etl::generate::stream::{EventClock, InjectedKind, StreamGenerator, StreamOptions};
use etl::kafka::producer::{
    INJECTED_HEADER, PRODUCED_AT_HEADER, ProduceOptions, ProduceSummary, StopReason,
    produce_blocking,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestTopic, kafka, run_etl, run_etl_with_brokers};

const PARTITIONS: i32 = 3;

/// A folder with one monthly user file of `n` users, removed on drop.
struct UsersDir {
    path: PathBuf,
    ids: Vec<Uuid>,
}

impl UsersDir {
    fn new(n: usize) -> Self {
        let path = std::env::temp_dir().join(format!("etl-it-users-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        let mut csv = format!("{USERS_CSV_HEADER}\n");
        for id in &ids {
            csv.push_str(&format!(
                "{id},Ada,Lovelace,ada@example.com,36,high,gold,moderate,Austin,TX,US,\
                 2025-01-05T10:00:00,\"travel,technology\",true,third_party_registration\n"
            ));
        }
        std::fs::write(path.join("user_registrations_2025_01.csv"), csv).unwrap();
        Self { path, ids }
    }
}

impl Drop for UsersDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One message as it came back from the broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Received {
    key: Option<String>,
    headers: BTreeMap<String, String>,
    payload: Vec<u8>,
}

/// Every message of `topic` (assigned partitions, no group to join), `expected` of them.
async fn read_all(topic: &str, expected: usize) -> Vec<Received> {
    let consumer: StreamConsumer = kafka()
        .consumer_config(&format!("it-produce-{}", Uuid::new_v4().simple()))
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::with_capacity(expected);
    tokio::time::timeout(Duration::from_secs(120), async {
        while out.len() < expected {
            let m = consumer.recv().await.expect("reading the topic");
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let value = h.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                            (h.key.to_string(), value.unwrap_or_default())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Received {
                key: m.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
                headers,
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "only {} of {expected} messages arrived in {topic}",
            out.len()
        )
    });
    out
}

/// Sends `count` generated messages through the library, as `etl produce` does.
async fn produce(
    topic: &str,
    users: &[Uuid],
    stream: StreamOptions,
    options: ProduceOptions,
    cancel: CancellationToken,
) -> ProduceSummary {
    let generator = StreamGenerator::new(users, stream);
    let options = ProduceOptions {
        topic: topic.to_string(),
        ..options
    };
    tokio::task::spawn_blocking(move || {
        produce_blocking(&kafka(), &options, generator, &cancel, |_| {})
    })
    .await
    .unwrap()
    .expect("producing")
}

fn epoch_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

#[tokio::test]
async fn messages_arrive_keyed_with_headers_valid_or_failing_as_injected() {
    const COUNT: usize = 7_000;
    let topic = TestTopic::new(PARTITIONS).await;
    let users = UsersDir::new(300);
    let known: HashSet<Uuid> = users.ids.iter().copied().collect();
    let before = epoch_micros();
    let summary = produce(
        &topic.name,
        &users.ids,
        StreamOptions {
            seed: 42,
            invalid_ratio: 0.1,
            orphan_ratio: 0.1,
            clock: EventClock::Now,
        },
        ProduceOptions {
            count: Some(COUNT as u64),
            ..ProduceOptions::default()
        },
        CancellationToken::new(),
    )
    .await;
    let after = epoch_micros();
    assert_eq!(summary.stop, StopReason::CountReached);
    assert_eq!(
        (summary.sent, summary.delivered, summary.failed),
        (COUNT as u64, COUNT as u64, 0)
    );
    assert!(!summary.has_failures());

    let received = read_all(&topic.name, COUNT).await;
    let mut kinds: HashMap<String, u64> = HashMap::new();
    let (mut valid, mut orphans) = (0u64, 0u64);
    let mut tx_ids = HashSet::new();
    for m in &received {
        let produced_at: u128 = m.headers[PRODUCED_AT_HEADER].parse().unwrap();
        assert!(
            (before..=after).contains(&produced_at),
            "produced_at {produced_at} outside the run"
        );
        let key = m.key.as_deref().expect("every message has a key");
        match m.headers.get(INJECTED_HEADER) {
            Some(kind) => {
                assert!(
                    InjectedKind::parse(kind).is_some(),
                    "unknown injected kind {kind}"
                );
                let rejection = validate(&m.payload).expect_err(kind);
                assert_eq!(rejection.kind.as_str(), kind, "{rejection}");
                *kinds.entry(kind.clone()).or_default() += 1;
            }
            None => {
                let tx = validate(&m.payload)
                    .unwrap_or_else(|r| panic!("{r}: {}", String::from_utf8_lossy(&m.payload)));
                assert_eq!(tx.user_id.to_string(), key, "key = user_id");
                assert!(tx_ids.insert(tx.tx_id), "tx_id {} sent twice", tx.tx_id);
                // The raw JSON carries every ARCHITECTURE §4 field.
                let json: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(json.as_object().unwrap().len(), 14, "{json}");
                assert_eq!(json["source_system"], "streaming_kafka");
                valid += 1;
                orphans += u64::from(!known.contains(&tx.user_id));
            }
        }
    }
    assert_eq!(kinds.len(), 14, "every injected kind appears: {kinds:?}");
    let invalid: u64 = kinds.values().sum();
    assert_eq!(invalid, summary.invalid());
    let invalid_share = invalid as f64 / COUNT as f64;
    assert!(
        (0.08..=0.12).contains(&invalid_share),
        "invalid share {invalid_share}"
    );
    let orphan_share = orphans as f64 / valid as f64;
    assert!(
        (0.08..=0.12).contains(&orphan_share),
        "orphan share {orphan_share}"
    );
}

#[tokio::test]
async fn the_same_seed_sends_the_same_transactions() {
    let users = UsersDir::new(50);
    let first = TestTopic::new(PARTITIONS).await;
    let second = TestTopic::new(PARTITIONS).await;
    let users_dir = users.path.to_str().unwrap();
    for topic in [&first, &second] {
        let (ok, stdout, stderr) = run_etl(
            &[
                "produce",
                "--users-dir",
                users_dir,
                "--topic",
                &topic.name,
                "--count",
                "500",
                "--seed",
                "99",
                "--invalid-ratio",
                "0.05",
                "--orphan-ratio",
                "0.05",
                "--start-time",
                "2025-08-15T10:30:00Z",
            ],
            None,
        );
        assert!(ok, "etl produce failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("delivered  500"), "{stdout}");
        assert!(stdout.contains("seed       99"), "{stdout}");
    }
    let comparable = |messages: Vec<Received>| {
        let mut messages: Vec<(Option<String>, Option<String>, Vec<u8>)> = messages
            .into_iter()
            .map(|m| (m.key, m.headers.get(INJECTED_HEADER).cloned(), m.payload))
            .collect();
        messages.sort();
        messages
    };
    let a = comparable(read_all(&first.name, 500).await);
    let b = comparable(read_all(&second.name, 500).await);
    assert_eq!(
        a, b,
        "keys, payloads (timestamps included) and injected kinds repeat"
    );

    // A different seed gives different transactions.
    let other = produce(
        &second.name,
        &users.ids,
        StreamOptions {
            seed: 100,
            ..StreamOptions::default()
        },
        ProduceOptions {
            count: Some(1),
            ..ProduceOptions::default()
        },
        CancellationToken::new(),
    )
    .await;
    assert_eq!(other.delivered, 1);
    let all = read_all(&second.name, 501).await;
    let ids: HashSet<Uuid> = all
        .iter()
        .filter_map(|m| validate(&m.payload).ok())
        .map(|t| t.tx_id)
        .collect();
    let valid = all.iter().filter(|m| validate(&m.payload).is_ok()).count();
    assert_eq!(
        ids.len(),
        valid,
        "seed 100 must not repeat a tx_id of seed 99"
    );
}

#[tokio::test]
async fn the_rate_is_held_and_duration_respected() {
    let topic = TestTopic::new(PARTITIONS).await;
    let users = UsersDir::new(20);
    // 2,000 msg/s for 2 s. Only a lower bound could flake on a busy machine, so it is loose;
    // the token bucket makes overshooting impossible, so the upper bound is tight.
    let summary = produce(
        &topic.name,
        &users.ids,
        StreamOptions {
            clock: EventClock::Fixed {
                start: "2025-01-01T00:00:00Z".parse().unwrap(),
                step: TimeDelta::milliseconds(1),
            },
            ..StreamOptions::default()
        },
        ProduceOptions {
            rate: Some(2_000),
            duration: Some(Duration::from_secs(2)),
            ..ProduceOptions::default()
        },
        CancellationToken::new(),
    )
    .await;
    assert_eq!(summary.stop, StopReason::DurationElapsed);
    assert_eq!(summary.delivered, summary.sent);
    let rate = summary.send_rate();
    assert!(rate <= 2_000.0 * 1.02, "{rate} msg/s exceeds the limit");
    assert!(rate >= 2_000.0 * 0.7, "{rate} msg/s is far below the limit");
    assert!(
        summary.sent <= 4_000 + 20,
        "{} sent in 2 s at 2,000/s",
        summary.sent
    );
    eprintln!(
        "rate accuracy: {rate:.1} msg/s for --rate 2000 ({} sent)",
        summary.sent
    );
}

#[tokio::test]
async fn cancelling_stops_sending_and_flushes_what_was_sent() {
    let topic = TestTopic::new(PARTITIONS).await;
    let users = UsersDir::new(20);
    let cancel = CancellationToken::new();
    let generator = StreamGenerator::new(&users.ids, StreamOptions::default());
    let options = ProduceOptions {
        topic: topic.name.clone(),
        rate: Some(5_000),
        progress_interval: Duration::from_millis(10),
        ..ProduceOptions::default()
    };
    let trigger = cancel.clone();
    let summary = tokio::task::spawn_blocking(move || {
        produce_blocking(&kafka(), &options, generator, &cancel, |p| {
            // Ctrl-C, as the signal handler would deliver it, once something was sent.
            if p.sent >= 500 {
                trigger.cancel();
            }
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(summary.stop, StopReason::Cancelled);
    assert!(summary.sent >= 500);
    assert_eq!(
        summary.delivered, summary.sent,
        "everything sent is flushed"
    );
    read_all(&topic.name, summary.sent as usize).await;
}

/// Fault injection with librdkafka's mock cluster: a real broker that refuses every produce
/// request would also be fine, but tansu 0.6 answers a refused idempotent batch by leaving its
/// storage in a state that brings it down later, so the shared test broker is not used for this.
#[test]
fn delivery_failures_are_counted_and_fail_the_command() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("transactions", PARTITIONS, 1).unwrap();
    // Every produce request is refused with a permanent error: nothing can be delivered.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 1_000],
    );
    let users = UsersDir::new(5);
    let (ok, stdout, stderr) = run_etl_with_brokers(
        &[
            "produce",
            "--users-dir",
            users.path.to_str().unwrap(),
            "--topic",
            "transactions",
            "--count",
            "200",
        ],
        None,
        &mock.bootstrap_servers(),
    );
    assert!(!ok, "a lost message must fail the command:\n{stdout}");
    assert!(stdout.contains("failed     "), "{stdout}");
    assert!(!stdout.contains("failed     0"), "{stdout}");
    assert!(stderr.contains("were not delivered"), "{stderr}");
}

#[test]
fn missing_user_files_say_to_generate_them() {
    let empty = std::env::temp_dir().join(format!("etl-it-no-users-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, _, stderr) = run_etl(
        &[
            "produce",
            "--users-dir",
            empty.to_str().unwrap(),
            "--count",
            "1",
        ],
        None,
    );
    std::fs::remove_dir_all(&empty).unwrap();
    assert!(!ok);
    assert!(stderr.contains("no user_registrations_*.csv"), "{stderr}");
    assert!(stderr.contains("etl generate-monthly"), "{stderr}");
}

#[test]
fn every_produce_and_bench_variable_is_documented() {
    use clap::CommandFactory;
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example"),
    )
    .unwrap();
    let cli = etl::cli::Cli::command();
    let produce = cli.find_subcommand("produce").unwrap();
    let bench = cli
        .find_subcommand("bench")
        .and_then(|b| b.find_subcommand("produce"))
        .unwrap();
    for arg in produce.get_arguments().chain(bench.get_arguments()) {
        if let Some(env) = arg.get_env() {
            let env = env.to_str().unwrap();
            assert!(example.contains(env), ".env.example lacks {env}");
        }
    }
}
