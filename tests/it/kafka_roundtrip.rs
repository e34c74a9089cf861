//! The broker path itself: keyed messages in, a consumer group reads them all and commits.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use etl::kafka::lag::group_lag;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::helpers::{TestTopic, kafka};

const MESSAGES: usize = 1_000;
const KEYS: usize = 37;

/// Sends `count` messages keyed `user-{i % KEYS}` with a `seq` header; returns (key, partition) seen.
pub async fn produce_keyed(topic: &str, count: usize) -> HashMap<String, i32> {
    let producer: FutureProducer = kafka()
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let deliveries: Vec<_> = (0..count)
        .map(|i| {
            let key = format!("user-{}", i % KEYS);
            let payload = format!(r#"{{"seq":{i}}}"#);
            let seq = i.to_string();
            let record = FutureRecord::to(topic).key(&key).payload(&payload).headers(
                OwnedHeaders::new().insert(Header {
                    key: "seq",
                    value: Some(&seq),
                }),
            );
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue")
        })
        .collect();
    let mut partitions = HashMap::new();
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let delivered = delivery.await.expect("delivery future").expect("delivered");
        partitions.insert(format!("user-{}", i % KEYS), delivered.partition);
    }
    partitions
}

#[tokio::test]
async fn a_thousand_keyed_messages_come_back_through_a_consumer_group() {
    let topic = TestTopic::new(3).await;
    let key_partition = produce_keyed(&topic.name, MESSAGES).await;

    let group = format!("it-group-{}", Uuid::new_v4().simple());
    let consumer: StreamConsumer = kafka().consumer_config(&group).create().unwrap();
    consumer.subscribe(&[&topic.name]).unwrap();

    let mut seen: BTreeMap<usize, (String, i32)> = BTreeMap::new();
    let mut last_seq_per_key: HashMap<String, usize> = HashMap::new();
    let mut next_offsets: HashMap<i32, i64> = HashMap::new();
    tokio::time::timeout(Duration::from_secs(90), async {
        while seen.len() < MESSAGES {
            let m = consumer.recv().await.expect("consume");
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let seq_header = m.headers().unwrap().get(0);
            assert_eq!(seq_header.key, "seq");
            let seq: usize = std::str::from_utf8(seq_header.value.unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                m.payload().unwrap(),
                format!(r#"{{"seq":{seq}}}"#).as_bytes()
            );
            if let Some(previous) = last_seq_per_key.insert(key.clone(), seq) {
                assert!(
                    previous < seq,
                    "order within key {key} broken: {previous} then {seq}"
                );
            }
            next_offsets.insert(m.partition(), m.offset() + 1);
            seen.insert(seq, (key, m.partition()));
        }
    })
    .await
    .expect("all messages within 90 s");

    assert_eq!(seen.len(), MESSAGES);
    for (seq, (key, partition)) in &seen {
        assert_eq!(key, &format!("user-{}", seq % KEYS));
        assert_eq!(
            key_partition[key], *partition,
            "a key always maps to one partition"
        );
    }
    let used: std::collections::HashSet<i32> = key_partition.values().copied().collect();
    assert!(used.len() > 1, "37 keys should spread over 3 partitions");

    let mut commit = TopicPartitionList::new();
    for (partition, next) in &next_offsets {
        commit
            .add_partition_offset(&topic.name, *partition, Offset::Offset(*next))
            .unwrap();
    }
    consumer.commit(&commit, CommitMode::Sync).unwrap();

    let lag = group_lag(&kafka(), &group, Some(&topic.name))
        .await
        .unwrap();
    assert_eq!(lag.len(), 3);
    let committed: i64 = lag.iter().map(|p| p.committed.unwrap_or(0)).sum();
    assert_eq!(
        committed, MESSAGES as i64,
        "committed offsets cover every message"
    );
    assert!(lag.iter().all(|p| p.lag() == Some(0)), "{lag:?}");
}
