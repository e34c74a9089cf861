//! `etl kafka-to-postgres` against the real broker and PostgreSQL: every message ends in exactly
//! one place, whatever happens to the sink, the broker or the database in between.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Stdio};
use std::time::Duration;

use etl::domain::anomaly::RunningStats;
use etl::generate::stream::{StreamGenerator, StreamMessage, StreamOptions};
use etl::kafka::KafkaSettings;
use etl::kafka::producer::{ProduceOptions, produce_blocking};
use etl::kafka::sink::{self, DB_REJECTED, SinkOptions, SinkSummary};
use etl::telemetry::metrics::{CommitLog, Metrics};
use rand::{RngExt, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{
    TestDb, TestTopic, etl_command, kafka, run_sink, run_sink_on, send, services,
};
use crate::private_kafka::PrivateKafka;
use crate::private_postgres::PrivatePostgres;

/// The topics one sink run reads and writes, all its own.
struct Topics {
    source: TestTopic,
    dead_letters: TestTopic,
    anomalies: TestTopic,
}

impl Topics {
    async fn new(partitions: i32) -> Self {
        Self {
            source: TestTopic::new(partitions).await,
            dead_letters: TestTopic::new(1).await,
            anomalies: TestTopic::new(1).await,
        }
    }

    fn options(&self) -> SinkOptions {
        SinkOptions {
            topic: self.source.name.clone(),
            group: format!("it-sink-{}", Uuid::new_v4().simple()),
            dlq_topic: self.dead_letters.name.clone(),
            anomalies_topic: self.anomalies.name.clone(),
            until_caught_up: true,
            ..SinkOptions::default()
        }
    }

    fn cli_args(&self, group: &str) -> Vec<String> {
        [
            "sink",
            "--topic",
            &self.source.name,
            "--group",
            group,
            "--dlq-topic",
            &self.dead_letters.name,
            "--anomalies-topic",
            &self.anomalies.name,
        ]
        .map(String::from)
        .to_vec()
    }
}

/// `count` generated messages from `users`, with bad and orphan messages mixed in.
fn generate(users: &[Uuid], count: usize, seed: u64) -> Vec<StreamMessage> {
    StreamGenerator::new(
        users,
        StreamOptions {
            seed,
            invalid_ratio: 0.03,
            orphan_ratio: 0.05,
            ..StreamOptions::default()
        },
    )
    .take(count)
    .collect()
}

/// Users the batch files know: enough of `users_raw` for the sink's late-arrival check.
async fn insert_users(pool: &PgPool, users: &[Uuid]) {
    sqlx::query(
        "INSERT INTO users_raw (user_id, first_name, last_name, email, age, income_bracket, \
             customer_tier, risk_profile, city, state, country, registration_date, \
             preferred_categories, is_active, source_system, source_file, source_line) \
         SELECT u, 'Ada', 'Lovelace', 'ada@example.com', 36, 'high', 'gold', 'moderate', 'Austin', \
             'TX', 'US', '2025-01-05', '{travel}', true, 'third_party_registration', \
             'user_registrations_2025_01.csv', n \
         FROM unnest($1::uuid[]) WITH ORDINALITY AS t(u, n)",
    )
    .bind(users)
    .execute(pool)
    .await
    .unwrap();
}

/// What the tables must hold once `messages` went through the sink. The oracle is the
/// generator's own record of what it made (the tx_id, the bad kind it injected), not the
/// validator the sink itself uses.
#[derive(Debug, Default)]
struct Expected {
    valid: HashSet<Uuid>,
    rejects_by_kind: BTreeMap<String, i64>,
    orphan_rows: usize,
}

impl Expected {
    fn of<'a>(messages: impl IntoIterator<Item = &'a StreamMessage>) -> Self {
        let mut expected = Self::default();
        for m in messages {
            match m.injected {
                None => {
                    if expected.valid.insert(m.tx_id) && m.orphan {
                        expected.orphan_rows += 1;
                    }
                }
                Some(kind) => {
                    *expected
                        .rejects_by_kind
                        .entry(kind.as_str().to_string())
                        .or_default() += 1
                }
            }
        }
        expected
    }

    fn rejects(&self) -> i64 {
        self.rejects_by_kind.values().sum()
    }

    /// What is expected once `more` is sent too.
    fn add(&mut self, more: Expected) {
        self.valid.extend(more.valid);
        self.orphan_rows += more.orphan_rows;
        for (kind, n) in more.rejects_by_kind {
            *self.rejects_by_kind.entry(kind).or_default() += n;
        }
    }
}

/// Waits until every valid row of `expected` is in the table and every reject recorded.
async fn await_everything(pool: &PgPool, expected: &Expected) {
    await_rows(pool, expected.valid.len() as i64).await;
    await_count(
        pool,
        "SELECT count(*) FROM transactions_rejected",
        expected.rejects(),
        Duration::from_secs(60),
    )
    .await;
}

/// Waits (at most 120 s) until `transactions_sink` holds `rows` rows.
async fn await_rows(pool: &PgPool, rows: i64) {
    await_count(
        pool,
        "SELECT count(*) FROM transactions_sink",
        rows,
        Duration::from_secs(120),
    )
    .await;
}

/// The table holds exactly the valid tx_ids once, the rejects are exactly the invalid messages by
/// kind, and every row's statistics are those of its user's rows in offset order.
async fn assert_exact(pool: &PgPool, expected: &Expected) {
    let rows: Vec<(Uuid,)> = sqlx::query_as("SELECT tx_id FROM transactions_sink")
        .fetch_all(pool)
        .await
        .unwrap();
    let written: HashSet<Uuid> = rows.iter().map(|(id,)| *id).collect();
    assert_eq!(rows.len(), written.len(), "a tx_id was written twice");
    assert_eq!(
        written.len(),
        expected.valid.len(),
        "rows vs distinct valid tx_ids"
    );
    assert!(
        written == expected.valid,
        "the written tx_ids are not the valid ones"
    );
    let by_kind: BTreeMap<String, i64> = sqlx::query_as(
        "SELECT error_kind, count(*) FROM transactions_rejected GROUP BY error_kind",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(by_kind, expected.rejects_by_kind);
    assert_stats_recompute(pool).await;
}

/// Welford over each user's rows in offset order gives the stored row values and `etl.user_stats`.
async fn assert_stats_recompute(pool: &PgPool) {
    type Row = (Uuid, f64, i64, f64, Option<f64>, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT user_id, amount::float8, user_txn_count, user_running_mean, z_score, is_anomaly \
         FROM transactions_sink ORDER BY user_id, kafka_partition, kafka_offset",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut stats: HashMap<Uuid, RunningStats> = HashMap::new();
    for (user, amount, count, mean, z, anomaly) in rows {
        let score = stats.entry(user).or_default().push(amount);
        assert_eq!(score.count, count, "user_txn_count of a row of {user}");
        assert!((score.mean - mean).abs() <= 1e-6 * mean.abs().max(1.0));
        match (score.z, z) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0)),
            other => panic!("z_score of a row of {user}: {other:?}"),
        }
        assert_eq!(score.is_anomaly, anomaly);
    }
    let stored: Vec<(Uuid, i64, f64, f64)> =
        sqlx::query_as("SELECT user_id, txn_count, mean, m2 FROM etl.user_stats")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), stats.len(), "users in etl.user_stats");
    for (user, count, mean, m2) in stored {
        let s = stats[&user];
        assert_eq!(s.count, count);
        assert!((s.mean - mean).abs() <= 1e-6 * mean.abs().max(1.0));
        assert!((s.m2 - m2).abs() <= 1e-6 * m2.abs().max(1.0));
    }
}

/// Every message of a topic (single partition), read from the beginning.
/// The `expected` messages of a one-partition topic, checking that it holds no more.
async fn read_topic(settings: &KafkaSettings, topic: &str, expected: usize) -> Vec<DeadLetter> {
    let consumer: StreamConsumer = settings
        .consumer_config(&format!("it-read-{}", Uuid::new_v4().simple()))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while out.len() < expected {
            let m = consumer.recv().await.expect("reading");
            let headers: HashMap<String, String> = m
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
            out.push(DeadLetter {
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {expected} messages in {topic}", out.len()));
    // And not one more: a letter sent twice (a batch written again) would be past `expected`.
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("the topic's watermarks");
    assert_eq!(high, expected as i64, "messages in {topic}");
    out
}

struct DeadLetter {
    payload: Vec<u8>,
    headers: HashMap<String, String>,
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits (polling the database, no fixed sleep) until `sql` returns at least `at_least`.
async fn await_count(pool: &PgPool, sql: &'static str, at_least: i64, within: Duration) -> i64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = count(pool, sql).await;
        if n >= at_least {
            return n;
        }
        if tokio::time::Instant::now() >= deadline {
            let per_partition: Vec<(i32, i64, Option<i64>)> = sqlx::query_as(
                "SELECT kafka_partition, count(*), (SELECT next_offset FROM etl.sink_offsets o \
                 WHERE o.partition = s.kafka_partition LIMIT 1) FROM transactions_sink s GROUP BY 1 ORDER BY 1",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            panic!(
                "`{sql}` reached only {n} of {at_least} within {within:?}; rows and stored offsets per partition: {per_partition:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn users(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::new_v4()).collect()
}

/// Two writers write at once, and a producer that does not key by user spreads each user over
/// both partitions, so both writers' batches update the same users' statistics: none of those
/// updates may be lost (the statistics rows are locked while read). The users have statistics
/// already, from messages keyed by user: a user's very first row, created by two writers at
/// once, is the one case the lock cannot cover (there is no row to lock yet).
#[tokio::test(flavor = "multi_thread")]
async fn two_writers_lose_no_statistics_update_of_a_user_in_two_partitions() {
    let db = TestDb::migrated().await;
    let topics = Topics::new(2).await;
    let users = users(3);
    insert_users(&db.pool, &users).await;
    let mut messages: Vec<StreamMessage> = StreamGenerator::new(
        &users,
        StreamOptions {
            seed: 41,
            ..StreamOptions::default()
        },
    )
    .take(6_300)
    .collect();
    let spread = messages.split_off(300);
    let mut expected = Expected::of(&messages);
    let options = SinkOptions {
        writers: 2,
        batch_size: 20,
        ..topics.options()
    };
    send(&kafka(), &topics.source.name, messages).await;
    run_sink(&db, &options, Metrics::new()).await;

    let spread: Vec<StreamMessage> = spread
        .into_iter()
        .map(|mut message| {
            message.key = format!("{}/{}", message.key, message.sequence % 8).into();
            message
        })
        .collect();
    expected.add(Expected::of(&spread));
    send(&kafka(), &topics.source.name, spread).await;
    // Small fetches, so that both partitions' messages arrive interleaved and the two writers'
    // small batches overlap all the time.
    let settings = KafkaSettings {
        overrides: vec![("max.partition.fetch.bytes".into(), "2048".into())],
        ..kafka()
    };
    run_sink_on(&settings, &db, &options, Metrics::new()).await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM transactions_sink").await as usize,
        expected.valid.len()
    );

    type PerUser = (Uuid, i64, i64, i64, i64, f64, f64);
    let per_user: Vec<PerUser> = sqlx::query_as(
        "SELECT t.user_id, count(*), count(DISTINCT t.user_txn_count), \
             count(DISTINCT t.kafka_partition), s.txn_count, s.mean, avg(t.amount)::float8 \
         FROM transactions_sink t JOIN etl.user_stats s USING (user_id) \
         GROUP BY t.user_id, s.txn_count, s.mean",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(per_user.len(), users.len());
    for (user, rows, distinct_counts, partitions, txn_count, mean, average) in per_user {
        assert_eq!(
            partitions, 2,
            "{user} must be in both partitions for this test"
        );
        assert_eq!(txn_count, rows, "statistics of {user} lost an update");
        assert_eq!(
            distinct_counts, rows,
            "two rows of {user} saw the same count"
        );
        assert!(
            (mean - average).abs() < 1e-6 * average.abs().max(1.0),
            "{user}: {mean} vs {average}"
        );
    }
}

/// A backed-up topic of large messages: batches are shipped at the byte budget, not at the row
/// count, so what the sink holds is bounded by its batch settings; every message still lands.
#[tokio::test(flavor = "multi_thread")]
async fn large_messages_are_batched_by_their_bytes_and_every_one_lands() {
    const PADDING: usize = 100_000;
    let db = TestDb::migrated().await;
    let topics = Topics::new(1).await;
    let users = users(10);
    insert_users(&db.pool, &users).await;
    // Valid messages made large by a field the validator ignores.
    let messages: Vec<StreamMessage> = StreamGenerator::new(
        &users,
        StreamOptions {
            seed: 61,
            ..StreamOptions::default()
        },
    )
    .take(200)
    .map(|m| m.padded_to(PADDING))
    .collect();
    let expected = Expected::of(&messages);
    assert_eq!(expected.valid.len(), 200);
    send(&kafka(), &topics.source.name, messages).await;

    let budget = 2 << 20;
    let log = CommitLog::default();
    let mut metrics = Metrics::new();
    metrics.sink.commit_log = Some(log.clone());
    let options = SinkOptions {
        writers: 1,
        batch_bytes: budget,
        // Without the byte budget nothing but the row count would end a batch early: the whole
        // backlog arrives in one fetch and a batch may wait 10 s to grow.
        batch_wait: Duration::from_secs(10),
        ..topics.options()
    };
    let settings = KafkaSettings {
        overrides: vec![
            ("max.partition.fetch.bytes".into(), "52428800".into()),
            ("fetch.max.bytes".into(), "52428800".into()),
        ],
        ..kafka()
    };
    run_sink_on(&settings, &db, &options, metrics).await;
    assert_exact(&db.pool, &expected).await;
    let batches: Vec<usize> = log.take().iter().map(|r| r.messages).collect();
    assert_eq!(batches.iter().sum::<usize>(), 200);
    // A batch is shipped as soon as it holds the budget: the message that crosses it is its last.
    let most = budget.div_ceil(PADDING);
    assert!(
        batches.iter().all(|&n| n <= most),
        "batches of {batches:?} messages; at most {most} fit in {budget} bytes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_ends_in_the_table_or_the_dead_letter_topic() {
    let db = TestDb::migrated().await;
    let topics = Topics::new(3).await;
    let users = users(150);
    insert_users(&db.pool, &users).await;
    let messages = generate(&users, 4_000, 7);
    let expected = Expected::of(&messages);
    assert!(
        expected.rejects() > 50 && expected.orphan_rows > 50,
        "{expected:?}"
    );
    send(&kafka(), &topics.source.name, messages).await;

    // Running, not caught-up-and-gone: the served /metrics is scraped while the sink runs.
    let options = SinkOptions {
        metrics_addr: any_port(),
        until_caught_up: false,
        ..topics.options()
    };
    let running = RunningSink::start(&kafka(), &db, &options);
    let port = served_port(&running.metrics).await;
    // The counters rise after each commit: await them, not the rows in the table.
    await_scraped(
        port,
        "etl_sink_inserted_rows_total",
        expected.valid.len() as f64,
    )
    .await;
    await_scraped(
        port,
        "etl_sink_rejected_messages_total",
        expected.rejects() as f64,
    )
    .await;
    await_scraped(
        port,
        "etl_sink_end_to_end_latency_seconds_count",
        expected.valid.len() as f64,
    )
    .await;
    let served = http_get(port, "/metrics").await.unwrap();
    let summary = running.stop().await;

    assert_eq!(summary.consumed, 4_000);
    assert_eq!(summary.inserted as usize, expected.valid.len());
    assert_eq!(summary.rejected as i64, expected.rejects());
    assert_eq!(summary.late_arriving as usize, expected.orphan_rows);
    assert_exact(&db.pool, &expected).await;

    // The dead-letter topic holds exactly the rejects: same bytes, headers naming kind and source.
    let letters = read_topic(
        &kafka(),
        &topics.dead_letters.name,
        expected.rejects() as usize,
    )
    .await;
    let rejected: Vec<(i32, i64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT kafka_partition, kafka_offset, error_kind, payload FROM transactions_rejected",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let by_source: HashMap<(i32, i64), (String, Vec<u8>)> = rejected
        .into_iter()
        .map(|(p, o, kind, payload)| ((p, o), (kind, payload)))
        .collect();
    assert_eq!(letters.len(), by_source.len());
    for letter in &letters {
        let h = &letter.headers;
        assert_eq!(h["source.topic"], topics.source.name);
        assert!(!h["error.message"].is_empty());
        let key = (
            h["source.partition"].parse().unwrap(),
            h["source.offset"].parse().unwrap(),
        );
        let (kind, payload) = &by_source[&key];
        assert_eq!(&h["error.kind"], kind);
        assert_eq!(&letter.payload, payload);
    }

    // Anomalies: flagged rows = outbox rows, all published, and the topic has them.
    let anomalies = count(
        &db.pool,
        "SELECT count(*) FROM transactions_sink WHERE is_anomaly",
    )
    .await;
    assert!(
        anomalies > 0,
        "the generator's outliers should flag some rows"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM etl.anomaly_outbox WHERE published_at IS NOT NULL"
        )
        .await,
        anomalies
    );
    let published = read_topic(&kafka(), &topics.anomalies.name, anomalies as usize).await;
    let body: serde_json::Value = serde_json::from_slice(&published[0].payload).unwrap();
    for field in [
        "tx_id",
        "amount",
        "z_score",
        "user_txn_count",
        "user_running_mean",
    ] {
        assert!(body.get(field).is_some(), "{field} missing in {body}");
    }

    // What the metrics endpoint served while running is what the summary says.
    let text = served;
    assert_eq!(
        sample_sum(&text, "etl_sink_inserted_rows_total"),
        summary.inserted as f64,
        "{text}"
    );
    assert_eq!(
        sample_sum(&text, "etl_sink_late_arriving_users_rows_total"),
        expected.orphan_rows as f64,
        "{text}"
    );
    for (kind, n) in &expected.rejects_by_kind {
        let line = format!(r#"etl_sink_rejected_messages_total{{kind="{kind}"}} {n}"#);
        assert!(text.contains(&line), "{line} missing in {text}");
    }
    assert_eq!(
        sample_sum(&text, "etl_sink_assigned_partitions"),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample_sum(&text, "etl_sink_end_to_end_latency_seconds_count"),
        summary.inserted as f64,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_and_readiness_are_served_while_running() {
    let db = TestDb::migrated().await;
    let topics = Topics::new(1).await;
    let options = SinkOptions {
        until_caught_up: false,
        metrics_addr: any_port(),
        ..topics.options()
    };
    let cancel = CancellationToken::new();
    let metrics = Metrics::new();
    let running = {
        let (url, pool, cancel, metrics) = (
            db.url.clone(),
            db.pool.clone(),
            cancel.clone(),
            metrics.clone(),
        );
        tokio::spawn(
            async move { sink::run(&kafka(), &url, pool, &options, metrics, cancel).await },
        )
    };
    let port = served_port(&metrics).await;
    let get = |path: &'static str| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http_get(port, path).await {
                return response;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let health = get("/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = get("/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let metrics = get("/metrics").await;
    assert!(
        metrics.contains("# HELP etl_sink_consumed_messages"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# UNIT etl_sink_batch_duration_seconds seconds"),
        "{metrics}"
    );
    cancel.cancel();
    running.await.unwrap().expect("a clean stop");
}

/// A bare HTTP/1.1 GET, so the tests need no HTTP client crate.
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// A sink running in this process, on the test's database, until [`RunningSink::stop`].
struct RunningSink {
    task: tokio::task::JoinHandle<Result<SinkSummary, etl::kafka::sink::SinkError>>,
    cancel: CancellationToken,
    metrics: Metrics,
}

impl RunningSink {
    fn start(settings: &KafkaSettings, db: &TestDb, options: &SinkOptions) -> Self {
        let (cancel, metrics) = (CancellationToken::new(), Metrics::new());
        let task = {
            let (settings, url, pool, options) = (
                settings.clone(),
                db.url.clone(),
                db.pool.clone(),
                options.clone(),
            );
            let (cancel, metrics) = (cancel.clone(), metrics.clone());
            tokio::spawn(async move {
                sink::run(&settings, &url, pool, &options, metrics, cancel).await
            })
        };
        Self {
            task,
            cancel,
            metrics,
        }
    }

    /// Stops it as SIGTERM would and returns its summary; it must stop cleanly.
    async fn stop(self) -> SinkSummary {
        self.cancel.cancel();
        self.task.await.unwrap().expect("a clean stop")
    }
}

/// Serve metrics on a port the OS chooses (no race with another test for a "free" port).
fn any_port() -> Option<std::net::SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

/// The port an in-process sink serves metrics on, once it does.
async fn served_port(metrics: &Metrics) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(addr) = metrics.served_at.get() {
            return addr.port();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink serves no metrics"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A counter or gauge of the sink serving metrics on `port`, summed over its labels; 0 when
/// it has no sample yet.
async fn scrape(port: u16, name: &str) -> f64 {
    let text = http_get(port, "/metrics").await.expect("scraping a sink");
    sample_sum(&text, name)
}

fn sample_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits (scraping, no fixed sleep) until `name` on `port` reaches `at_least`; returns it.
async fn await_scraped(port: u16, name: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let value = scrape(port, name).await;
        if value >= at_least {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} on port {port} reached only {value} of {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_change_nothing() {
    let db = TestDb::migrated().await;
    let topics = Topics::new(3).await;
    let users = users(100);
    insert_users(&db.pool, &users).await;
    let messages = generate(&users, 2_000, 11);
    let expected = Expected::of(&messages);
    send(&kafka(), &topics.source.name, messages.clone()).await;
    let options = topics.options();
    run_sink(&db, &options, Metrics::new()).await;
    assert_exact(&db.pool, &expected).await;
    let snapshot = table_snapshot(&db.pool).await;

    // The producer again with the same seed: the same tx_ids at new offsets (their bad messages
    // are dead-lettered again: new offsets, new letters).
    let replayed = Expected::of(&messages);
    send(&kafka(), &topics.source.name, messages).await;
    let summary = run_sink(&db, &options, Metrics::new()).await;
    assert_eq!(summary.inserted, 0);
    assert_eq!(summary.duplicates as usize, expected.valid.len());
    assert_eq!(
        table_snapshot(&db.pool).await,
        snapshot,
        "a replay changed the rows"
    );
    assert_stats_recompute(&db.pool).await;

    // The group's Kafka offsets reset to the beginning, then new messages: the sink joins the
    // group and reads on from the offsets stored with the data, not from the reset ones, so it
    // consumes the new messages only.
    reset_group_offsets(&options.group, &topics.source.name, 3).await;
    let fresh = generate(&users, 300, 12);
    let mut expected = expected;
    expected.add(replayed);
    expected.add(Expected::of(&fresh));
    send(&kafka(), &topics.source.name, fresh).await;
    let summary = run_sink(&db, &options, Metrics::new()).await;
    assert_eq!(
        summary.consumed, 300,
        "offsets stored with the data decide where to start"
    );
    assert_exact(&db.pool, &expected).await;
    let rows = table_snapshot(&db.pool).await;
    assert!(
        snapshot.iter().all(|row| rows.contains(row)),
        "a row written before changed"
    );
}

/// Rows and statistics, in an order that does not depend on how they were written.
async fn table_snapshot(pool: &PgPool) -> Vec<(Uuid, i64, Option<f64>, bool, i32, i64)> {
    sqlx::query_as(
        "SELECT tx_id, user_txn_count, z_score, is_anomaly, kafka_partition, kafka_offset \
         FROM transactions_sink ORDER BY tx_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn reset_group_offsets(group: &str, topic: &str, partitions: i32) {
    let consumer: BaseConsumer = kafka().consumer_config(group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .unwrap();
    }
    tokio::task::spawn_blocking(move || {
        consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("resetting the group's offsets")
    })
    .await
    .unwrap();
}

/// A sink process of its own, killed on drop.
struct SinkProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl SinkProcess {
    /// Logs go to a file in the temp folder (a pipe nobody reads would stall the process).
    fn spawn(db: &TestDb, args: &[String]) -> Self {
        let log = std::env::temp_dir().join(format!("etl-it-sink-{}.log", Uuid::new_v4().simple()));
        let child = etl_command(&db.url, &services().kafka_brokers)
            .args(args)
            .env("RUST_LOG", "info,librdkafka=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting etl sink");
        Self { child, log }
    }

    /// Like [`SinkProcess::spawn`], serving metrics on a port the OS chooses; returns the port
    /// once the process says which it got.
    async fn spawn_serving(db: &TestDb, args: &[String]) -> (Self, u16) {
        let mut args = args.to_vec();
        args.extend(["--metrics-addr".into(), "127.0.0.1:0".into()]);
        let sink = Self::spawn(db, &args);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(&sink.log).unwrap_or_default();
            let port = log
                .lines()
                .filter(|l| l.contains("serving /metrics"))
                .find_map(|l| {
                    l.split("bound=127.0.0.1:")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                });
            if let Some(port) = port {
                return (sink, port);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sink process says nowhere where it serves metrics:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!(
                "--- sink process {} ({}):\n{log}",
                self.child.id(),
                self.log.display()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Small batches, so that a stream takes many of them and a kill lands mid-stream.
fn small_batches(mut args: Vec<String>) -> Vec<String> {
    args.extend(["--batch-size".into(), "500".into()]);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_with_sigkill_again_and_again_and_restarted_at_once_it_ends_exactly_right() {
    let db = TestDb::migrated().await;
    let topics = Topics::new(3).await;
    let users = users(2_000);
    insert_users(&db.pool, &users).await;
    let messages = generate(&users, 100_000, 23);
    let expected = Expected::of(&messages);
    let valid = expected.valid.len() as i64;
    send(&kafka(), &topics.source.name, messages).await;

    let group = format!("it-crash-{}", Uuid::new_v4().simple());
    let args = small_batches(topics.cli_args(&group));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut kill_points: Vec<i64> = (0..4)
        .map(|_| rng.random_range(1_000..(valid - 20_000)))
        .collect();
    kill_points.sort_unstable();
    for point in kill_points {
        // Started at once after the previous kill: Apache Kafka hands the new member the
        // partitions when the killed one's session times out, with no help from the test.
        let mut sink = SinkProcess::spawn(&db, &args);
        // Kill it at a moment chosen by the data it wrote, plus a random extra delay, so some
        // kills land mid-batch.
        await_count(
            &db.pool,
            "SELECT count(*) FROM transactions_sink",
            point,
            Duration::from_secs(300),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
        sink.kill();
        let written = count(&db.pool, "SELECT count(*) FROM transactions_sink").await;
        assert!(
            written < valid,
            "the kill came after the stream was drained ({written} rows): it tested nothing"
        );
    }
    let mut last_args = args.clone();
    last_args.push("--until-caught-up".into());
    let output = etl_command(&db.url, &services().kafka_brokers)
        .args(&last_args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_exact(&db.pool, &expected).await;
}

/// Two sink processes in one group on six partitions; once both hold partitions and wrote, one
/// is killed with SIGKILL mid-stream and not restarted: the survivor takes all six partitions
/// over when the killed member's session expires, and the table reconciles exactly.
#[tokio::test(flavor = "multi_thread")]
async fn two_sinks_share_six_partitions_and_the_survivor_of_a_sigkill_takes_all_six() {
    let db = TestDb::migrated().await;
    let topics = Topics::new(6).await;
    let users = users(600);
    insert_users(&db.pool, &users).await;
    let group = format!("it-pair-{}", Uuid::new_v4().simple());
    let args = small_batches(topics.cli_args(&group));
    let (mut first, first_port) = SinkProcess::spawn_serving(&db, &args).await;
    let (survivor, survivor_port) = SinkProcess::spawn_serving(&db, &args).await;
    // Both members hold partitions before anything is sent, so both have work to do.
    await_assignment(&[first_port, survivor_port], &[3, 3]).await;

    let stream = generate(&users, 30_000, 31);
    let expected = Expected::of(&stream);
    let (before, after) = {
        let mut all = stream;
        let after = all.split_off(6_000);
        (all, after)
    };
    let before_valid = Expected::of(&before).valid.len();
    send(&kafka(), &topics.source.name, before).await;
    await_rows(&db.pool, before_valid as i64).await;
    // Both wrote (the counters rise after each commit: awaited, not read once).
    let wrote_first = await_scraped(first_port, "etl_sink_inserted_rows_total", 1.0).await;
    let wrote_survivor = await_scraped(survivor_port, "etl_sink_inserted_rows_total", 1.0).await;
    assert!(wrote_first > 0.0 && wrote_survivor > 0.0);

    // Mid-stream: the rest is sent while the first process writes, and it is killed as soon as
    // it wrote some of it.
    let producing = {
        let topic = topics.source.name.clone();
        tokio::spawn(async move { send(&kafka(), &topic, after).await })
    };
    await_scraped(
        first_port,
        "etl_sink_inserted_rows_total",
        wrote_first + 500.0,
    )
    .await;
    first.kill();
    let at_kill = count(&db.pool, "SELECT count(*) FROM transactions_sink").await;
    assert!(
        (at_kill as usize) < expected.valid.len(),
        "the kill came after the stream was drained: it tested nothing"
    );
    producing.await.unwrap();
    await_assignment(&[survivor_port], &[6]).await;
    await_everything(&db.pool, &expected).await;
    survivor.terminate();
    let mut survivor = survivor;
    assert!(survivor.child.wait().unwrap().success());
    assert_exact(&db.pool, &expected).await;
}

/// Waits until the sinks serving metrics on `ports` hold these numbers of partitions.
async fn await_assignment(ports: &[u16], partitions: &[usize]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut held = Vec::new();
        for &port in ports {
            held.push(scrape(port, "etl_sink_assigned_partitions").await as usize);
        }
        if held == partitions {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sinks hold {held:?} partitions, not {partitions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_within_ten_seconds_and_loses_nothing() {
    let db = TestDb::migrated().await;
    let topics = Topics::new(3).await;
    let users = users(300);
    let messages = generate(&users, 30_000, 41);
    let expected = Expected::of(&messages);
    send(&kafka(), &topics.source.name, messages).await;
    let group = format!("it-term-{}", Uuid::new_v4().simple());
    let args = small_batches(topics.cli_args(&group));
    let mut sink = SinkProcess::spawn(&db, &args);
    await_rows(&db.pool, 2_000).await;
    sink.terminate();
    let stopped = tokio::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = sink.child.wait().unwrap();
        (status, sink)
    })
    .await
    .unwrap()
    .0;
    let took = stopped.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let written = count(&db.pool, "SELECT count(*) FROM transactions_sink").await;
    assert!(
        (written as usize) < expected.valid.len(),
        "the stop came after the stream was drained ({written} rows): it tested nothing"
    );

    // Nothing lost: what the stored offsets cover is written, nothing beyond them is.
    assert_offsets_cover_exactly_what_is_written(&db.pool).await;
    let output = etl_command(&db.url, &services().kafka_brokers)
        .args(&args)
        .arg("--until-caught-up")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_exact(&db.pool, &expected).await;
}

/// Per partition, rows and rejects occupy offsets below the stored next offset only.
async fn assert_offsets_cover_exactly_what_is_written(pool: &PgPool) {
    let beyond = count(
        pool,
        "SELECT count(*) FROM transactions_sink s JOIN etl.sink_offsets o \
         ON o.partition = s.kafka_partition AND o.topic = s.kafka_topic \
         WHERE s.kafka_offset >= o.next_offset",
    )
    .await;
    assert_eq!(beyond, 0, "rows beyond the stored offsets");
    let accounted = count(
        pool,
        "SELECT (SELECT count(*) FROM transactions_sink) + (SELECT count(*) FROM transactions_rejected)",
    )
    .await;
    let covered = count(
        pool,
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM etl.sink_offsets",
    )
    .await;
    // Replayed tx_ids are the only valid messages without a row; this stream has none.
    assert_eq!(
        accounted, covered,
        "every offset below the stored ones is a row or a reject"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_the_database_refuses_is_isolated_and_dead_lettered_alone() {
    let db = TestDb::migrated().await;
    let topics = Topics::new(1).await;
    let users = users(50);
    let mut messages = generate(&users, 500, 53);
    // A constraint the validator does not know about, as a DBA might add one.
    sqlx::query("ALTER TABLE transactions_sink ADD CONSTRAINT no_refused_merchant CHECK (merchant <> 'Refused Ltd')")
        .execute(&db.pool)
        .await
        .unwrap();
    let refused: Vec<usize> = vec![17, 250, 251, 499];
    for &i in &refused {
        if messages[i].injected.is_some() {
            // Only valid messages can be refused by the database: take a valid one of another
            // seed (another tx_id) in its place.
            messages[i] = generate(&users, 100, 900 + i as u64)
                .into_iter()
                .find(|m| m.injected.is_none())
                .expect("a valid message among 100");
        }
        let mut body: serde_json::Value = serde_json::from_slice(&messages[i].payload).unwrap();
        body["merchant"] = "Refused Ltd".into();
        messages[i].payload = body.to_string().into_bytes();
    }
    let mut expected = Expected::of(&messages);
    let refused_ids: HashSet<Uuid> = refused.iter().map(|&i| messages[i].tx_id).collect();
    expected.valid.retain(|id| !refused_ids.contains(id));
    *expected
        .rejects_by_kind
        .entry(DB_REJECTED.into())
        .or_default() += refused.len() as i64;
    send(&kafka(), &topics.source.name, messages).await;

    run_sink(&db, &topics.options(), Metrics::new()).await;
    assert_exact(&db.pool, &expected).await;
    let letters = read_topic(
        &kafka(),
        &topics.dead_letters.name,
        expected.rejects() as usize,
    )
    .await;
    let db_rejected: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| l.headers["error.kind"] == DB_REJECTED)
        .collect();
    assert_eq!(db_rejected.len(), refused.len());
    assert!(db_rejected[0].headers["error.message"].contains("no_refused_merchant"));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_mid_stream_the_sink_recovers_by_itself() {
    let server = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap();
    etl::db::migrate::migrate(&server.url).await.unwrap();
    let pool = etl::db::connect(&server.url, 4).await.unwrap();
    let topics = Topics::new(3).await;
    let users = users(200);
    let messages = generate(&users, 20_000, 61);
    let expected = Expected::of(&messages);
    let (first, second) = {
        let mut all = messages;
        let second = all.split_off(8_000);
        (all, second)
    };
    send(&kafka(), &topics.source.name, first).await;
    let options = SinkOptions {
        until_caught_up: false,
        batch_size: 500,
        ..topics.options()
    };
    let cancel = CancellationToken::new();
    let running = {
        let (url, pool, cancel, options) = (
            server.url.clone(),
            pool.clone(),
            cancel.clone(),
            options.clone(),
        );
        tokio::spawn(async move {
            sink::run(&kafka(), &url, pool, &options, Metrics::new(), cancel).await
        })
    };
    await_rows(&pool, 1_000).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    send(&kafka(), &topics.source.name, second).await;
    let mut running = std::pin::pin!(running);
    let caught_up = async {
        await_rows(&pool, expected.valid.len() as i64).await;
        await_count(
            &pool,
            "SELECT count(*) FROM transactions_rejected",
            expected.rejects(),
            Duration::from_secs(60),
        )
        .await;
    };
    // A sink that gave up would otherwise look like a stall until the wait times out.
    tokio::select! {
        () = caught_up => {}
        stopped = &mut running => panic!("the sink stopped by itself after the restart: {stopped:?}"),
    }
    cancel.cancel();
    running
        .await
        .unwrap()
        .expect("a clean stop after the restart");
    assert_exact(&pool, &expected).await;
    drop(server);
}

/// librdkafka's mock cluster, one broker, with the sink's topics under their default names and
/// `partitions` partitions to read: for fault injection only.
fn mock_cluster(
    partitions: i32,
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    for (topic, partitions) in [
        ("transactions", partitions),
        ("transactions_error", 1),
        ("anomalies", 1),
    ] {
        mock.create_topic(topic, partitions, 1).unwrap();
    }
    mock
}

/// The broker goes away (librdkafka's mock cluster, for the fault) and comes back: the sink
/// counts the consumer's errors on its served /metrics and recovers by itself.
#[tokio::test(flavor = "multi_thread")]
async fn broker_down_for_a_while_the_sink_counts_the_errors_and_recovers_by_itself() {
    let mock = mock_cluster(3);
    let settings = KafkaSettings::new(mock.bootstrap_servers());
    let db = TestDb::migrated().await;
    let users = users(100);
    let messages = generate(&users, 6_000, 71);
    let expected = Expected::of(&messages);
    let (first, second) = {
        let mut all = messages;
        let second = all.split_off(3_000);
        (all, second)
    };
    send(&settings, "transactions", first).await;
    let options = SinkOptions {
        group: format!("it-down-{}", Uuid::new_v4().simple()),
        until_caught_up: false,
        batch_size: 300,
        metrics_addr: any_port(),
        ..SinkOptions::default()
    };
    let running = RunningSink::start(&settings, &db, &options);
    let port = served_port(&running.metrics).await;
    await_count(
        &db.pool,
        "SELECT count(*) FROM transactions_sink",
        300,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(scrape(port, "etl_sink_errors_total").await, 0.0);
    mock.broker_down(1).unwrap();
    // The outage lasts until the sink has seen it: a client error of its consumer or of its
    // producers (dead letters, relay), counted by stage and served.
    await_scraped(port, "etl_sink_errors_total", 1.0).await;
    mock.broker_up(1).unwrap();
    send(&settings, "transactions", second).await;
    await_everything(&db.pool, &expected).await;
    running.stop().await;
    assert_exact(&db.pool, &expected).await;
}

/// The local kind of outage: Apache Kafka itself (a broker of the test's own) is stopped and
/// started again while a 100,000-message stream is produced and sunk; the producer and the sink
/// ride it out by themselves and the table reconciles exactly.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_restarted_mid_stream_the_sink_recovers_by_itself() {
    let mut broker = PrivateKafka::start().await;
    let settings = KafkaSettings::new(&broker.brokers);
    for (topic, partitions) in [
        ("transactions", 3),
        ("transactions_error", 1),
        ("anomalies", 1),
    ] {
        etl::kafka::admin::create_topics(
            &settings,
            &[etl::kafka::admin::TopicSpec::new(topic, partitions)],
        )
        .await
        .unwrap();
    }
    let db = TestDb::migrated().await;
    let users = users(1_000);
    insert_users(&db.pool, &users).await;
    let messages = generate(&users, 100_000, 73);
    let expected = Expected::of(&messages);
    let options = SinkOptions {
        group: format!("it-restart-{}", Uuid::new_v4().simple()),
        until_caught_up: false,
        batch_size: 2_000,
        ..SinkOptions::default()
    };
    let cancel = CancellationToken::new();
    let running = {
        let (url, pool, cancel, settings) = (
            db.url.clone(),
            db.pool.clone(),
            cancel.clone(),
            settings.clone(),
        );
        tokio::spawn(async move {
            sink::run(&settings, &url, pool, &options, Metrics::new(), cancel).await
        })
    };
    // A paced stream (about 10 s), so the restart falls in the middle of it.
    let producing = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || {
            let options = ProduceOptions {
                topic: "transactions".into(),
                rate: Some(10_000),
                ..ProduceOptions::default()
            };
            produce_blocking(
                &settings,
                &options,
                messages,
                &CancellationToken::new(),
                |_| {},
            )
        })
    };
    await_rows(&db.pool, 10_000).await;
    broker.stop().await;
    let at_stop = count(&db.pool, "SELECT count(*) FROM transactions_sink").await;
    broker.start_again().await;
    let produced = producing.await.unwrap().expect("producing");
    assert!(!produced.has_failures(), "{produced:?}");
    assert_eq!(produced.delivered, 100_000);
    assert!(
        (at_stop as usize) < expected.valid.len(),
        "the broker stopped after the stream was drained: the test tested nothing"
    );
    let mut running = std::pin::pin!(running);
    tokio::select! {
        () = await_everything(&db.pool, &expected) => {}
        stopped = &mut running => panic!("the sink stopped by itself after the restart: {stopped:?}"),
    }
    cancel.cancel();
    running
        .await
        .unwrap()
        .expect("a clean stop after the restart");
    assert_exact(&db.pool, &expected).await;
}
