//! `etl topics …` as a user runs it: the real binary against the real broker.

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::helpers::{TestTopic, kafka, run_etl};
use crate::kafka_roundtrip::produce_keyed;

#[tokio::test]
async fn tail_shows_the_newest_messages_with_key_and_headers() {
    let topic = TestTopic::new(3).await;
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
    assert_eq!(cols[0], group);
    assert_eq!(cols[2], "0");
    assert_eq!(cols[3], "1");
    let high: i64 = cols[4].parse().unwrap();
    assert_eq!(cols[5].parse::<i64>().unwrap(), (high - 1).max(0));

    let unknown = format!("it-nobody-{}", Uuid::new_v4().simple());
    let (ok, _, stderr) = run_etl(&["topics", "lag", "--group", &unknown], None);
    assert!(!ok);
    assert!(stderr.contains("has no committed offsets"), "{stderr}");
}
