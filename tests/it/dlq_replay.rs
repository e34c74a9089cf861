//! `etl dlq replay` with the real broker, PostgreSQL and sink: after a validator change (a
//! category accepted that was refused when the dead letters were written), replay lands exactly
//! the messages refused for it, and a second replay produces and lands nothing.
//!
//! The oracle is the generator's record of what it injected, not the validator under test.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etl::domain::rules::Rules;
use etl::generate::stream::{InjectedKind, StreamGenerator, StreamMessage, StreamOptions};
use etl::kafka::admin;
use etl::kafka::replay::{self, REPLAYED_FROM_HEADER, ReplayOptions, ReplaySummary};
use etl::kafka::sink::SinkOptions;
use etl::telemetry::metrics::Metrics;
use indicatif::ProgressBar;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestDb, TestTopic, kafka, run_etl, run_sink, send};

async fn run_replay(db: &TestDb, options: &ReplayOptions) -> ReplaySummary {
    tokio::time::timeout(
        Duration::from_secs(120),
        replay::replay(
            &kafka(),
            &db.pool,
            options,
            &ProgressBar::hidden(),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the replay ended within 2 minutes")
    .expect("the replay ran")
}

/// High watermark of every partition.
async fn high_watermarks(topic: &str) -> HashMap<i32, i64> {
    admin::high_watermarks(&kafka(), topic)
        .await
        .expect("watermarks")
        .into_iter()
        .collect()
}

/// A replayed message as read back from the transactions topic.
struct Replayed {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: HashMap<String, String>,
}

/// The `count` messages after `from` (per partition).
async fn read_after(topic: &str, from: &HashMap<i32, i64>, count: usize) -> Vec<Replayed> {
    let consumer: StreamConsumer = kafka()
        .consumer_config(&format!("it-read-{}", Uuid::new_v4().simple()))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, offset) in from {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while out.len() < count {
            let m = consumer.recv().await.expect("reading");
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_string(), v.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Replayed {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} replayed messages in {topic}", out.len()));
    out
}

async fn landed(db: &TestDb) -> HashSet<Uuid> {
    sqlx::query_scalar::<_, Uuid>("SELECT tx_id FROM transactions_sink")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// The columns of one kind's line of `etl dlq replay`'s table.
fn table_line(stdout: &str, kind: &str) -> Vec<u64> {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(kind))
        .unwrap_or_else(|| panic!("no line for {kind} in\n{stdout}"));
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_category_accepted_today_is_replayed_exactly_once_and_lands() {
    let db = TestDb::migrated().await;
    let (source, dead_letters, anomalies) = (
        TestTopic::new(3).await,
        TestTopic::new(2).await,
        TestTopic::new(1).await,
    );
    let users: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let messages: Vec<StreamMessage> = StreamGenerator::new(
        &users,
        StreamOptions {
            seed: 41,
            invalid_ratio: 0.1,
            ..StreamOptions::default()
        },
    )
    .take(3_000)
    .collect();
    let valid: HashSet<Uuid> = messages
        .iter()
        .filter(|m| m.injected.is_none())
        .map(|m| m.tx_id)
        .collect();
    // The generator injects unknown_category as `groceries` (a batch category on the stream):
    // today's rules accept it.
    let groceries: HashMap<Uuid, Vec<u8>> = messages
        .iter()
        .filter(|m| m.injected == Some(InjectedKind::UnknownCategory))
        .map(|m| (m.tx_id, m.key.as_bytes().to_vec()))
        .collect();
    let mut injected: BTreeMap<&str, u64> = BTreeMap::new();
    for kind in messages.iter().filter_map(|m| m.injected) {
        *injected.entry(kind.as_str()).or_default() += 1;
    }
    assert!(groceries.len() >= 10, "{injected:?}");
    send(&kafka(), &source.name, messages).await;

    // Yesterday: the standard rules, groceries dead-lettered with the rest.
    let sink_options = SinkOptions {
        topic: source.name.clone(),
        group: format!("it-sink-{}", Uuid::new_v4().simple()),
        dlq_topic: dead_letters.name.clone(),
        anomalies_topic: anomalies.name.clone(),
        until_caught_up: true,
        ..SinkOptions::default()
    };
    let yesterday = run_sink(&db, &sink_options, Metrics::new()).await;
    assert_eq!(yesterday.inserted as usize, valid.len());
    assert_eq!(landed(&db).await, valid);

    // Today: groceries accepted. A dry run through the command line says what would happen and does
    // nothing.
    let before = high_watermarks(&source.name).await;
    let (ok, stdout, stderr) = run_etl(
        &[
            "dlq",
            "replay",
            "--dlq-topic",
            &dead_letters.name,
            "--topic",
            &source.name,
            "--extra-categories",
            "groceries",
            "--dry-run",
        ],
        Some(&db.url),
    );
    assert!(ok, "dry run failed: {stderr}");
    assert!(stdout.contains("would replay"), "{stdout}");
    assert_eq!(
        table_line(&stdout, "unknown_category"),
        [groceries.len() as u64, 0, 0, 0],
        "{stdout}"
    );
    assert_eq!(
        table_line(&stdout, "bad_uuid"),
        [0, injected["bad_uuid"], 0, 0],
        "{stdout}"
    );
    assert_eq!(
        high_watermarks(&source.name).await,
        before,
        "the dry run produced"
    );

    let today = Arc::new(Rules::with_extra_categories(&["groceries"]).unwrap());
    let replay_options = ReplayOptions {
        dlq_topic: dead_letters.name.clone(),
        topic: source.name.clone(),
        rules: today.clone(),
        ..ReplayOptions::default()
    };
    // Filters: another kind, or letters newer than any there is, select nothing to produce.
    let filtered = run_replay(
        &db,
        &ReplayOptions {
            kinds: vec!["bad_uuid".into()],
            ..replay_options.clone()
        },
    )
    .await;
    let all: u64 = injected.values().sum();
    let totals = filtered.totals();
    assert_eq!(totals.replayed, 0);
    assert_eq!(totals.still_failing, injected["bad_uuid"]);
    assert_eq!(totals.skipped, all - injected["bad_uuid"]);
    let future = run_replay(
        &db,
        &ReplayOptions {
            since: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
            ..replay_options.clone()
        },
    )
    .await;
    assert_eq!(future.totals().skipped, all);
    assert_eq!(
        high_watermarks(&source.name).await,
        before,
        "a filtered replay produced"
    );

    // Two replays at once: between them, each message is produced once.
    let (a, b) = tokio::join!(
        run_replay(&db, &replay_options),
        run_replay(&db, &replay_options)
    );
    for (kind, count) in &injected {
        let (x, y) = (a.by_kind[*kind], b.by_kind[*kind]);
        let (replayable, failing) = if *kind == "unknown_category" {
            (*count, 0)
        } else {
            (0, *count)
        };
        assert_eq!(x.replayed + y.replayed, replayable, "{kind}: {x:?} {y:?}");
        assert_eq!(
            (x.still_failing, y.still_failing),
            (failing, failing),
            "{kind}"
        );
        assert_eq!(x.replayed + x.already_replayed, replayable, "{kind}");
        assert_eq!(y.replayed + y.already_replayed, replayable, "{kind}");
        assert_eq!((x.skipped, y.skipped), (0, 0), "{kind}");
    }
    assert_eq!(a.by_kind.len(), injected.len(), "{a:?}");

    // Exactly the groceries messages were re-produced: original key and bytes, headers kept, plus
    // where each came from.
    let after = high_watermarks(&source.name).await;
    let added: i64 = after.iter().map(|(p, high)| high - before[p]).sum();
    assert_eq!(added as usize, groceries.len());
    let replayed = read_after(&source.name, &before, groceries.len()).await;
    let mut replayed_ids = HashSet::new();
    for m in &replayed {
        let tx: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let tx_id: Uuid = tx["tx_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            m.key.as_deref(),
            Some(groceries[&tx_id].as_slice()),
            "key of {tx_id}"
        );
        assert_eq!(m.headers["error.kind"], "unknown_category");
        assert_eq!(m.headers["source.topic"], source.name);
        let from = &m.headers[REPLAYED_FROM_HEADER];
        assert!(
            from.starts_with(&format!("{}/", dead_letters.name)),
            "{from}"
        );
        replayed_ids.insert(tx_id);
    }
    assert_eq!(replayed_ids, groceries.keys().copied().collect());

    // The sink, running with today's rules, lands them: the table holds exactly the valid
    // messages plus the groceries ones.
    let today_sink = SinkOptions {
        rules: today.clone(),
        ..sink_options.clone()
    };
    let landing = run_sink(&db, &today_sink, Metrics::new()).await;
    assert_eq!(landing.inserted as usize, groceries.len(), "{landing:?}");
    assert_eq!(landing.rejected, 0);
    let expected: HashSet<Uuid> = valid
        .union(&groceries.keys().copied().collect())
        .copied()
        .collect();
    assert_eq!(landed(&db).await, expected);
    let groceries_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transactions_sink WHERE category = 'groceries'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(groceries_rows as usize, groceries.len());

    // A second replay produces nothing and so lands nothing.
    let second = run_replay(&db, &replay_options).await;
    let counts = second.by_kind["unknown_category"];
    assert_eq!(
        (counts.replayed, counts.already_replayed),
        (0, groceries.len() as u64)
    );
    assert_eq!(second.totals().replayed, 0);
    assert_eq!(
        high_watermarks(&source.name).await,
        after,
        "the second replay produced"
    );
    let again = run_sink(&db, &today_sink, Metrics::new()).await;
    assert_eq!((again.consumed, again.inserted), (0, 0));
    assert_eq!(landed(&db).await, expected);
}
