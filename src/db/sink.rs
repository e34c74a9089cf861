//! The sink's queries: everything one batch writes, in one transaction (ARCHITECTURE §5 "Exactly once").
//! Each function takes the open transaction's connection; the order they run in is the sink's
//! (`kafka::sink::write`): lock the partitions, read their state, COPY the rows, finish. Few
//! statements on purpose: at a steady 10,000 msg/s a batch is a few hundred rows, and a round
//! trip to the server costs as much as writing them.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::batch::copy_text::text;
use crate::domain::anomaly::{RunningStats, Score};
use crate::domain::transaction::Transaction;

/// Columns written by [`sink_row`], in order; `ingested_at` takes its default, the transaction's time.
pub const SINK_COPY: &str = r#"COPY public.transactions_sink ("tx_id", "user_id", "amount", "currency", "merchant", "category", "event_time", "status", "payment_method", "city", "country", "source_system", "transaction_type", "processing_time_ms", "kafka_topic", "kafka_partition", "kafka_offset", "produced_at", "user_txn_count", "user_running_mean", "z_score", "is_anomaly") FROM STDIN"#;

/// A valid transaction with where it came from and what it scored.
pub struct SinkRow<'a> {
    pub tx: &'a Transaction,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub produced_at: Option<DateTime<Utc>>,
    pub score: Score,
}

/// Appends `row` in COPY text format.
pub fn sink_row(out: &mut Vec<u8>, row: &SinkRow<'_>) {
    sink_row_source(
        out,
        row.tx,
        row.topic,
        row.partition,
        row.offset,
        row.produced_at,
    );
    sink_row_score(out, &row.score);
}

/// The part of a row known when the message is read: everything but the user's statistics. The
/// sink encodes it on the reading side, so the writer only appends [`sink_row_score`].
pub fn sink_row_source(
    out: &mut Vec<u8>,
    tx: &Transaction,
    topic: &str,
    partition: i32,
    offset: i64,
    produced_at: Option<DateTime<Utc>>,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{}\t{}\t{}\t{}\t",
        tx.tx_id.hyphenated(),
        tx.user_id.hyphenated(),
        tx.amount,
        tx.currency
    );
    text(out, &tx.merchant);
    let _ = write!(
        out,
        "\t{}\t{}\t{}\t{}\t",
        tx.category,
        tx.event_time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        tx.status,
        tx.payment_method
    );
    for value in [
        &tx.city,
        &tx.country,
        &tx.source_system,
        &tx.transaction_type,
    ] {
        optional(out, value.as_deref());
        out.push(b'\t');
    }
    match tx.processing_time_ms {
        Some(ms) => {
            let _ = write!(out, "{ms}\t");
        }
        None => out.extend_from_slice(b"\\N\t"),
    }
    text(out, topic);
    let _ = write!(out, "\t{partition}\t{offset}\t");
    match produced_at {
        Some(at) => {
            let _ = write!(out, "{}\t", at.to_rfc3339_opts(SecondsFormat::Micros, true));
        }
        None => out.extend_from_slice(b"\\N\t"),
    }
}

/// The statistics columns that end a row, newline included.
pub fn sink_row_score(out: &mut Vec<u8>, score: &Score) {
    let _ = write!(out, "{}\t{}\t", score.count, score.mean);
    match score.z {
        Some(z) => {
            let _ = write!(out, "{z}\t");
        }
        None => out.extend_from_slice(b"\\N\t"),
    }
    out.extend_from_slice(if score.is_anomaly { b"t\n" } else { b"f\n" });
}

fn optional(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => text(out, value),
        None => out.extend_from_slice(b"\\N"),
    }
}

/// Serializes writers of the same partitions, across processes: a process that lost a partition
/// in a rebalance and still writes its last batch cannot interleave with the new owner.
/// Locks are taken in partition order, so two writers cannot deadlock.
pub async fn lock_partitions(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(hashtext($1), p)) \
         FROM (SELECT p FROM unnest($2::int4[]) AS p ORDER BY p) AS ordered",
    )
    .bind(format!("etl-sink/{group}/{topic}"))
    .bind(partitions)
    .execute(conn)
    .await
    .map(drop)
}

/// The next offset to read of each partition, as last committed with the data.
pub async fn stored_offsets(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partitions: Option<&[i32]>,
) -> Result<HashMap<i32, i64>, sqlx::Error> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM etl.sink_offsets \
         WHERE consumer_group = $1 AND topic = $2 AND ($3::int4[] IS NULL OR partition = ANY($3))",
    )
    .bind(group)
    .bind(topic)
    .bind(partitions)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// What a batch's transaction reads once it holds its partitions' locks.
#[derive(Debug, Default)]
pub struct BatchState {
    /// The next offset to write of each locked partition that has one stored.
    pub next_offsets: HashMap<i32, i64>,
    /// The statistics of those of the asked-about users that have any.
    pub stats: HashMap<Uuid, RunningStats>,
    /// Those of the asked-about unknown users that `users_raw` has.
    pub known_users: Vec<Uuid>,
}

/// Reads a batch's stored offsets, its users' statistics and which of `maybe_unknown` the batch
/// files know, in one round trip: at 10,000 msg/s a batch is a few hundred rows, and each round
/// trip is a wait on the server. The statistics rows are locked (in user order, so two writers
/// cannot deadlock on them): a user whose messages reach two partitions, written by two writers
/// at once, gets the other's committed statistics instead of losing its update. Run it after [`lock_partitions`], in a statement of its own: its
/// snapshot must be younger than the lock, or it could miss what the previous holder committed.
pub async fn batch_state(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partitions: &[i32],
    users: &[Uuid],
    maybe_unknown: &[Uuid],
) -> Result<BatchState, sqlx::Error> {
    type Row = (
        String,
        Option<i32>,
        Option<i64>,
        Option<Uuid>,
        Option<f64>,
        Option<f64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "WITH stats AS ( \
             SELECT user_id, txn_count, mean, m2 FROM etl.user_stats \
             WHERE user_id = ANY($4) ORDER BY user_id FOR UPDATE \
         ) \
         SELECT 'offset', partition, next_offset, NULL::uuid, NULL::float8, NULL::float8 \
         FROM etl.sink_offsets \
         WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3) \
         UNION ALL \
         SELECT 'stats', NULL, txn_count, user_id, mean, m2 FROM stats \
         UNION ALL \
         SELECT DISTINCT 'known', NULL::int4, NULL::int8, user_id, NULL::float8, NULL::float8 \
         FROM public.users_raw WHERE user_id = ANY($5)",
    )
    .bind(group)
    .bind(topic)
    .bind(partitions)
    .bind(users)
    .bind(maybe_unknown)
    .fetch_all(conn)
    .await?;
    let mut state = BatchState::default();
    for (kind, partition, number, user, mean, m2) in rows {
        match (kind.as_str(), partition, number, user) {
            ("offset", Some(partition), Some(next), _) => {
                state.next_offsets.insert(partition, next);
            }
            ("stats", _, Some(count), Some(user)) => {
                let stats = RunningStats {
                    count,
                    mean: mean.unwrap_or_default(),
                    m2: m2.unwrap_or_default(),
                };
                state.stats.insert(user, stats);
            }
            ("known", _, _, Some(user)) => state.known_users.push(user),
            _ => {}
        }
    }
    Ok(state)
}

/// A message that is not a valid transaction, for `transactions_rejected`.
pub struct RejectRow<'a> {
    pub partition: i32,
    pub offset: i64,
    pub kind: &'a str,
    pub message: &'a str,
    pub payload: &'a [u8],
}

/// Everything a batch writes besides its rows.
pub struct BatchEnd<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    /// Each user's statistics after the batch.
    pub stats: &'a [(Uuid, RunningStats)],
    /// Anomalies for the relay to publish: tx_id and JSON document.
    pub outbox: &'a [(Uuid, String)],
    pub rejects: &'a [RejectRow<'a>],
    /// The next offset to read of every partition in the batch.
    pub next_offsets: &'a [(i32, i64)],
}

/// Writes the statistics, the outbox, the rejects and the offsets in one statement (data-modifying
/// CTEs all run, read or not): one round trip instead of four. Offsets only move forward.
pub async fn finish_batch(conn: &mut PgConnection, end: &BatchEnd<'_>) -> Result<(), sqlx::Error> {
    let users: Vec<Uuid> = end.stats.iter().map(|(u, _)| *u).collect();
    let counts: Vec<i64> = end.stats.iter().map(|(_, s)| s.count).collect();
    let means: Vec<f64> = end.stats.iter().map(|(_, s)| s.mean).collect();
    let m2s: Vec<f64> = end.stats.iter().map(|(_, s)| s.m2).collect();
    let anomaly_ids: Vec<Uuid> = end.outbox.iter().map(|(id, _)| *id).collect();
    let anomaly_payloads: Vec<&str> = end.outbox.iter().map(|(_, p)| p.as_str()).collect();
    let reject_partitions: Vec<i32> = end.rejects.iter().map(|r| r.partition).collect();
    let reject_offsets: Vec<i64> = end.rejects.iter().map(|r| r.offset).collect();
    let reject_kinds: Vec<&str> = end.rejects.iter().map(|r| r.kind).collect();
    let reject_messages: Vec<&str> = end.rejects.iter().map(|r| r.message).collect();
    let reject_payloads: Vec<&[u8]> = end.rejects.iter().map(|r| r.payload).collect();
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = end.next_offsets.iter().copied().unzip();
    sqlx::query(
        "WITH stats AS ( \
             INSERT INTO etl.user_stats (user_id, txn_count, mean, m2) \
             SELECT * FROM unnest($3::uuid[], $4::int8[], $5::float8[], $6::float8[]) \
             ON CONFLICT (user_id) DO UPDATE SET txn_count = EXCLUDED.txn_count, \
                 mean = EXCLUDED.mean, m2 = EXCLUDED.m2, updated_at = now() \
         ), outbox AS ( \
             INSERT INTO etl.anomaly_outbox (tx_id, payload) \
             SELECT id, payload::jsonb FROM unnest($7::uuid[], $8::text[]) AS t(id, payload) \
             ON CONFLICT (tx_id) DO NOTHING \
         ), rejects AS ( \
             INSERT INTO public.transactions_rejected \
                 (kafka_topic, kafka_partition, kafka_offset, error_kind, error_message, payload) \
             SELECT $2, * FROM unnest($9::int4[], $10::int8[], $11::text[], $12::text[], $13::bytea[]) \
             ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING \
         ) \
         INSERT INTO etl.sink_offsets (consumer_group, topic, partition, next_offset) \
         SELECT $1, $2, p, o FROM unnest($14::int4[], $15::int8[]) AS t(p, o) \
         ON CONFLICT (consumer_group, topic, partition) DO UPDATE \
         SET next_offset = GREATEST(etl.sink_offsets.next_offset, EXCLUDED.next_offset), \
             updated_at = now()",
    )
    .bind(end.group)
    .bind(end.topic)
    .bind(users)
    .bind(counts)
    .bind(means)
    .bind(m2s)
    .bind(anomaly_ids)
    .bind(anomaly_payloads)
    .bind(reject_partitions)
    .bind(reject_offsets)
    .bind(reject_kinds)
    .bind(reject_messages)
    .bind(reject_payloads)
    .bind(partitions)
    .bind(offsets)
    .execute(conn)
    .await
    .map(drop)
}

/// Which of `tx_ids` are already in the table (replays, producer retries).
pub async fn existing_tx_ids(
    conn: &mut PgConnection,
    tx_ids: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let rows: Vec<(Uuid,)> =
        sqlx::query_as("SELECT tx_id FROM public.transactions_sink WHERE tx_id = ANY($1)")
            .bind(tx_ids)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Up to `limit` unpublished outbox rows, locked so that two relays never publish the same ones
/// at the same time (they may still publish one twice across a crash: at-least-once).
pub async fn claim_outbox(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<(i64, Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tx_id, payload::text FROM etl.anomaly_outbox \
         WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE etl.anomaly_outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await
        .map(drop)
}
