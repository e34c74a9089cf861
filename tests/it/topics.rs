//! `etl topics …` as a user runs it: the real binary against the real broker.

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::helpers::{TestTopic, etl_command, kafka, run_etl, services};
use crate::kafka_roundtrip::produce_keyed;

/// The `seq` headers of the messages `etl topics tail` printed, in the order printed.
fn seqs_shown(stdout: &str, topic: &str) -> Vec<u32> {
    stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{topic}/")))
        .filter_map(|l| l.split("headers=[seq=").nth(1))
        .map(|rest| rest.trim_end_matches(']').parse().unwrap())
        .collect()
}

#[tokio::test]
async fn tail_shows_the_newest_messages_with_key_and_headers() {
    // One partition: "newest" is then the order of production, whatever the keys.
    let topic = TestTopic::new(1).await;
    produce_keyed(&topic.name, 20).await;

    let (ok, stdout, stderr) = run_etl(&["topics", "tail", &topic.name, "--max", "5"], None);
    assert!(ok, "{stderr}");
    let headers: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(&topic.name))
        .collect();
    assert_eq!(headers.len(), 5, "{stdout}");
    for line in &headers {
        assert!(line.contains(" key=user-"), "{line}");
        assert!(line.contains("headers=[seq="), "{line}");
    }
    let mut newest = seqs_shown(&stdout, &topic.name);
    newest.sort_unstable();
    assert_eq!(newest, [15, 16, 17, 18, 19], "the newest five:\n{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with(r#"{"seq":"#))
            .count(),
        5
    );

    let (ok, stdout, stderr) = run_etl(
        &["topics", "tail", &topic.name, "--from-beginning", "--json"],
        None,
    );
    assert!(ok, "{stderr}");
    let messages: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(messages.len(), 20, "the whole topic from the beginning");
}

/// As a user types it, `etl topics tail --max 5` with no topic named: the stream topic from
/// `KAFKA_TOPIC` (here a test topic, so the demo's `transactions` gets no test messages).
#[tokio::test]
async fn tail_without_a_topic_reads_the_stream_topic() {
    let topic = TestTopic::new(3).await;
    produce_keyed(&topic.name, 5).await;

    let output = etl_command(&services().database_url, &services().kafka_brokers)
        .env("KAFKA_TOPIC", &topic.name)
        .args(["topics", "tail", "--max", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut seqs = seqs_shown(&stdout, &topic.name);
    seqs.sort_unstable();
    assert_eq!(seqs, [0, 1, 2, 3, 4], "{stdout}");
}

#[tokio::test]
async fn tail_of_a_missing_topic_says_how_to_create_it() {
    let name = format!("it-missing-{}", Uuid::new_v4().simple());
    let (ok, _, stderr) = run_etl(&["topics", "tail", &name], None);
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[tokio::test]
async fn create_is_idempotent_and_list_shows_partitions_and_offsets() {
    let name = format!("it-create-{}", Uuid::new_v4().simple());
    let (ok, stdout, stderr) = run_etl(&["topics", "create", &name, "--partitions", "2"], None);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("{name}: created")), "{stdout}");
    // Adopt it so that it is deleted at the end whatever happens below.
    let topic = TestTopic { name };
    let (ok, stdout, stderr) = run_etl(
        &["topics", "create", &topic.name, "--partitions", "2"],
        None,
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("{}: exists", topic.name)),
        "{stdout}"
    );

    produce_keyed(&topic.name, 10).await;
    let (ok, stdout, stderr) = run_etl(&["topics", "list", &topic.name], None);
    assert!(ok, "{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    let total: i64 = rows.iter().map(|r| r[5].parse::<i64>().unwrap()).sum();
    assert_eq!(total, 10, "{stdout}");
}

#[tokio::test]
async fn lag_shows_a_group_per_partition() {
    let topic = TestTopic::new(3).await;
    produce_keyed(&topic.name, 30).await;
    let group = format!("it-lag-{}", Uuid::new_v4().simple());
    let consumer: StreamConsumer = kafka().consumer_config(&group).create().unwrap();
    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset(&topic.name, 0, Offset::Offset(1))
        .unwrap();
    consumer.commit(&commit, CommitMode::Sync).unwrap();

    let (ok, stdout, stderr) = run_etl(&["topics", "lag", "--group", &group], None);
    assert!(ok, "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.contains(&topic.name))
        .unwrap_or_else(|| panic!("no row for the topic:\n{stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // The broker's own high watermark, not the output's column, says what the lag must be.
    let (_, high) = consumer
        .fetch_watermarks(&topic.name, 0, std::time::Duration::from_secs(10))
        .unwrap();
    assert!(high > 1, "partition 0 got {high} of the 30 messages");
    assert_eq!(cols[0], group);
    assert_eq!(cols[2], "0");
    assert_eq!(cols[3], "1");
    assert_eq!(cols[4].parse::<i64>().unwrap(), high);
    assert_eq!(cols[5].parse::<i64>().unwrap(), high - 1);

    let unknown = format!("it-nobody-{}", Uuid::new_v4().simple());
    let (ok, _, stderr) = run_etl(&["topics", "lag", "--group", &unknown], None);
    assert!(!ok);
    assert!(stderr.contains("has no committed offsets"), "{stderr}");
}
