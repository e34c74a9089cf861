//! The sink's queries: everything one batch writes, in one transaction (DESIGN §5 "Exactly once").
//! Each function takes the open transaction's connection; the order they run in is the sink's
//! (`kafka::sink::write`).

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

pub async fn store_offsets(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    next: &[(i32, i64)],
) -> Result<(), sqlx::Error> {
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = next.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO etl.sink_offsets (consumer_group, topic, partition, next_offset) \
         SELECT $1, $2, p, o FROM unnest($3::int4[], $4::int8[]) AS t(p, o) \
         ON CONFLICT (consumer_group, topic, partition) DO UPDATE \
         SET next_offset = GREATEST(etl.sink_offsets.next_offset, EXCLUDED.next_offset), \
             updated_at = now()",
    )
    .bind(group)
    .bind(topic)
    .bind(partitions)
    .bind(offsets)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn user_stats(
    conn: &mut PgConnection,
    users: &[Uuid],
) -> Result<HashMap<Uuid, RunningStats>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, f64, f64)> = sqlx::query_as(
        "SELECT user_id, txn_count, mean, m2 FROM etl.user_stats WHERE user_id = ANY($1)",
    )
    .bind(users)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user, count, mean, m2)| (user, RunningStats { count, mean, m2 }))
        .collect())
}

pub async fn store_user_stats(
    conn: &mut PgConnection,
    stats: &[(Uuid, RunningStats)],
) -> Result<(), sqlx::Error> {
    if stats.is_empty() {
        return Ok(());
    }
    let users: Vec<Uuid> = stats.iter().map(|(u, _)| *u).collect();
    let counts: Vec<i64> = stats.iter().map(|(_, s)| s.count).collect();
    let means: Vec<f64> = stats.iter().map(|(_, s)| s.mean).collect();
    let m2s: Vec<f64> = stats.iter().map(|(_, s)| s.m2).collect();
    sqlx::query(
        "INSERT INTO etl.user_stats (user_id, txn_count, mean, m2) \
         SELECT * FROM unnest($1::uuid[], $2::int8[], $3::float8[], $4::float8[]) \
         ON CONFLICT (user_id) DO UPDATE SET txn_count = EXCLUDED.txn_count, \
             mean = EXCLUDED.mean, m2 = EXCLUDED.m2, updated_at = now()",
    )
    .bind(users)
    .bind(counts)
    .bind(means)
    .bind(m2s)
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

/// Which of `users` the batch files know.
pub async fn known_users(
    conn: &mut PgConnection,
    users: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let rows: Vec<(Uuid,)> =
        sqlx::query_as("SELECT DISTINCT user_id FROM public.users_raw WHERE user_id = ANY($1)")
            .bind(users)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// A message that is not a valid transaction, for `transactions_rejected`.
pub struct RejectRow<'a> {
    pub partition: i32,
    pub offset: i64,
    pub kind: &'a str,
    pub message: &'a str,
    pub payload: &'a [u8],
}

pub async fn insert_rejects(
    conn: &mut PgConnection,
    topic: &str,
    rejects: &[RejectRow<'_>],
) -> Result<(), sqlx::Error> {
    if rejects.is_empty() {
        return Ok(());
    }
    let partitions: Vec<i32> = rejects.iter().map(|r| r.partition).collect();
    let offsets: Vec<i64> = rejects.iter().map(|r| r.offset).collect();
    let kinds: Vec<&str> = rejects.iter().map(|r| r.kind).collect();
    let messages: Vec<&str> = rejects.iter().map(|r| r.message).collect();
    let payloads: Vec<&[u8]> = rejects.iter().map(|r| r.payload).collect();
    sqlx::query(
        "INSERT INTO public.transactions_rejected \
             (kafka_topic, kafka_partition, kafka_offset, error_kind, error_message, payload) \
         SELECT $1, * FROM unnest($2::int4[], $3::int8[], $4::text[], $5::text[], $6::bytea[]) \
         ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING",
    )
    .bind(topic)
    .bind(partitions)
    .bind(offsets)
    .bind(kinds)
    .bind(messages)
    .bind(payloads)
    .execute(conn)
    .await
    .map(drop)
}

/// Anomalies for the relay to publish; `payloads` are JSON documents.
pub async fn insert_outbox(
    conn: &mut PgConnection,
    entries: &[(Uuid, String)],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = entries.iter().map(|(id, _)| *id).collect();
    let payloads: Vec<&str> = entries.iter().map(|(_, p)| p.as_str()).collect();
    sqlx::query(
        "INSERT INTO etl.anomaly_outbox (tx_id, payload) \
         SELECT id, payload::jsonb FROM unnest($1::uuid[], $2::text[]) AS t(id, payload) \
         ON CONFLICT (tx_id) DO NOTHING",
    )
    .bind(ids)
    .bind(payloads)
    .execute(conn)
    .await
    .map(drop)
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
