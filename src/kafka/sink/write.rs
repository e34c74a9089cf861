//! One batch, one database transaction: rows, per-user statistics, anomalies for the outbox,
//! rejects and the next offset of every partition commit together, after the dead letters are
//! acknowledged. That is what makes the sink exactly-once into PostgreSQL (ARCHITECTURE §5).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use chrono::Utc;
use rust_decimal::prelude::ToPrimitive;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tracing::{debug, warn};
use uuid::Uuid;

use super::batch::{Batch, Consumed};
use super::dead_letter::{DeadLetter, DeadLetters, Deliveries};
use super::error::{SinkError, UNIQUE_VIOLATION, is_row_rejection, sql_state};
use crate::batch::load::copy_in;
use crate::db::sink::{self as queries, BatchEnd, RejectRow, SINK_COPY};
use crate::domain::anomaly::{RunningStats, Score};
use crate::domain::transaction::Transaction;
use crate::telemetry::metrics::{CommitRecord, SinkMetrics};

/// `error.kind` of a row that passed the validator but that the database refused.
pub const DB_REJECTED: &str = "db_rejected";

/// What one written batch amounted to.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub messages: usize,
    /// Messages at offsets an earlier transaction already wrote (a replay after a crash).
    pub already_written: usize,
    pub inserted: usize,
    /// Valid messages whose tx_id was in the table or earlier in the batch.
    pub duplicates: usize,
    pub rejected: usize,
    pub anomalies: usize,
    pub late_arriving: usize,
    pub next_offsets: BTreeMap<i32, i64>,
}

impl Written {
    /// Adds `other`'s counts to these (its offsets stay out).
    pub fn add_counts(&mut self, other: &Written) {
        self.messages += other.messages;
        self.already_written += other.already_written;
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.anomalies += other.anomalies;
        self.late_arriving += other.late_arriving;
    }
}

pub struct Writer {
    pool: PgPool,
    group: String,
    topic: String,
    dead_letters: DeadLetters,
    metrics: SinkMetrics,
    /// Users seen in `users_raw`; users never leave it, so only unknown ones are looked up again.
    known_users: HashSet<Uuid>,
    synchronous_commit: bool,
    /// The connection batches are written on, kept between batches with the time it was last
    /// used; dropped after an error.
    conn: Option<(PoolConnection<Postgres>, Instant)>,
}

/// How long the writer keeps an idle connection for itself. After a quiet spell it goes back to
/// the pool, whose check on handing it out again catches one that a server or proxy closed
/// meanwhile: better than a failed batch and a retry warning after every lull.
const KEEP_IDLE_CONNECTION: std::time::Duration = std::time::Duration::from_secs(30);

/// Why an attempt at a batch's transaction ended without a commit.
enum Attempt {
    /// The fast path's COPY hit a replayed tx_id or a refused row: try again, carefully.
    Careful,
    Failed(SinkError),
}

impl From<SinkError> for Attempt {
    fn from(err: SinkError) -> Self {
        Self::Failed(err)
    }
}

/// Rows ready for COPY, with what they do to the statistics.
struct Scored {
    copy: Vec<u8>,
    stats: Vec<(Uuid, RunningStats)>,
    outbox: Vec<(Uuid, String)>,
    rows: Vec<(Uuid, Option<chrono::DateTime<Utc>>)>,
}

impl Writer {
    pub fn new(
        pool: PgPool,
        group: &str,
        topic: &str,
        dead_letters: DeadLetters,
        metrics: SinkMetrics,
    ) -> Self {
        Self {
            pool,
            group: group.to_string(),
            topic: topic.to_string(),
            dead_letters,
            metrics,
            known_users: HashSet::new(),
            synchronous_commit: false,
            conn: None,
        }
    }

    /// Wait for the WAL flush at every commit (PostgreSQL's default) instead of not.
    pub fn with_synchronous_commit(mut self, synchronous_commit: bool) -> Self {
        self.synchronous_commit = synchronous_commit;
        self
    }

    /// Writes `batch` in one transaction. On error nothing is written and the batch can be
    /// written again as it is: offsets only move with the data.
    ///
    /// The first attempt copies the rows straight into the table, with no savepoint; a conflict
    /// (a replay) or a row the database refuses aborts it, and a careful attempt in a new
    /// transaction learns which tx_ids exist and bisects to the refused rows under savepoints.
    pub async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        let started = Instant::now();
        let mut letters = None;
        let mut conn = self.connection().await?;
        let mut careful = false;
        loop {
            match self
                .attempt(&mut conn, batch, careful, &mut letters, started)
                .await
            {
                Ok(written) => {
                    self.conn = Some((conn, Instant::now()));
                    return Ok(written);
                }
                Err(Attempt::Careful) if !careful => careful = true,
                Err(Attempt::Careful) => unreachable!("a careful attempt never asks for another"),
                Err(Attempt::Failed(err)) => {
                    // The connection may be the reason: the next batch gets a fresh one.
                    conn.close_on_drop();
                    return Err(err);
                }
            }
        }
    }

    /// The writer keeps one connection between batches: no pool round trip (sqlx pings a
    /// connection it hands out) in the way of every batch of a steady stream.
    async fn connection(&mut self) -> Result<PoolConnection<Postgres>, SinkError> {
        match self.conn.take() {
            Some((conn, last_used)) if last_used.elapsed() < KEEP_IDLE_CONNECTION => Ok(conn),
            // An idle one returns to the pool here, which checks it before handing one out.
            _ => self
                .pool
                .acquire()
                .await
                .map_err(SinkError::db("connecting to the database")),
        }
    }

    /// One try at the batch's transaction: lock and read, sort out, copy (fast or careful),
    /// finish and commit. `letters` holds the validator's rejects once a first attempt sent them
    /// to the dead-letter topic, so that a second attempt does not send them again (its messages
    /// can only be fewer: offsets only move forward).
    async fn attempt(
        &mut self,
        conn: &mut PgConnection,
        batch: &Batch,
        careful: bool,
        letters: &mut Option<Deliveries>,
        started: Instant,
    ) -> Result<Written, Attempt> {
        let mut steps = StepTimer::new(Instant::now());
        let mut tx = self.begin(conn).await?;
        let next_offsets = batch.next_offsets();
        let state = self.lock_and_read(&mut tx, batch, &next_offsets).await?;
        steps.mark("lock_and_read");

        let mut sorted = sort_out(batch, &state.next_offsets);
        // The validator's rejects go to the broker now and are awaited just before the commit.
        let validator_rejects = sorted.rejects.len();
        if letters.is_none() {
            *letters = Some(self.dead_letters.enqueue(&dead_letters(&sorted.rejects))?);
        }

        let scored = if careful {
            self.copy_carefully(&mut tx, &mut sorted, &state.stats)
                .await?
        } else {
            copy_fast(&mut tx, &sorted, &state.stats).await?
        };
        steps.mark("copy_rows");

        self.finish(&mut tx, &scored, &sorted.rejects, &next_offsets)
            .await?;
        steps.mark("stats_outbox_rejects_offsets");
        // Rows the database refused were found during the COPY: their letters go now.
        let early = letters.take().expect("enqueued above");
        let late = self
            .dead_letters
            .enqueue(&dead_letters(&sorted.rejects[validator_rejects..]))?;
        early.acknowledged().await?;
        late.acknowledged().await?;
        steps.mark("dead_letters");
        tx.commit()
            .await
            .map_err(SinkError::db("committing the batch"))?;
        steps.mark("commit");

        let committed = Utc::now();
        let written = Written {
            messages: batch.len(),
            already_written: sorted.already_written,
            inserted: scored.rows.len(),
            duplicates: sorted.duplicates,
            rejected: sorted.rejects.len(),
            anomalies: scored.outbox.len(),
            late_arriving: sorted
                .valid
                .iter()
                .filter(|(_, tx)| !self.known_users.contains(&tx.user_id))
                .count(),
            next_offsets,
        };
        self.count(
            batch,
            &written,
            &sorted.rejects,
            &scored,
            committed,
            started,
        );
        debug!(steps = %steps, careful, "batch steps (ms)");
        Ok(written)
    }

    /// Begins the batch's transaction. Safe for exactly-once without synchronous_commit: the
    /// offsets commit in the same transaction as the rows, so a database crash that loses the
    /// last few commits loses their offsets with them, and the sink reads those messages again
    /// from Kafka. What it saves is a WAL flush per batch.
    async fn begin<'c>(
        &self,
        conn: &'c mut PgConnection,
    ) -> Result<sqlx::Transaction<'c, Postgres>, SinkError> {
        let begin = if self.synchronous_commit {
            "BEGIN"
        } else {
            "BEGIN; SET LOCAL synchronous_commit = off"
        };
        conn.begin_with(begin)
            .await
            .map_err(SinkError::db("starting the batch transaction"))
    }

    /// Locks the batch's partitions (another process that still holds one after a rebalance
    /// waits, then sees our offsets), reads their stored offsets and the users' statistics.
    async fn lock_and_read(
        &mut self,
        tx: &mut PgConnection,
        batch: &Batch,
        next_offsets: &BTreeMap<i32, i64>,
    ) -> Result<queries::BatchState, SinkError> {
        let partitions: Vec<i32> = next_offsets.keys().copied().collect();
        queries::lock_partitions(tx, &self.group, &self.topic, &partitions)
            .await
            .map_err(SinkError::db("locking the batch's partitions"))?;
        let (users, maybe_unknown) = self.users_of(batch);
        let state = queries::batch_state(
            tx,
            &self.group,
            &self.topic,
            &partitions,
            &users,
            &maybe_unknown,
        )
        .await
        .map_err(SinkError::db("reading stored offsets and user statistics"))?;
        self.known_users.extend(state.known_users.iter().copied());
        Ok(state)
    }

    /// User statistics, anomalies for the outbox, rejects and the next offsets: one statement.
    async fn finish(
        &self,
        tx: &mut PgConnection,
        scored: &Scored,
        rejects: &[Reject<'_>],
        next_offsets: &BTreeMap<i32, i64>,
    ) -> Result<(), SinkError> {
        let reject_rows: Vec<RejectRow<'_>> = rejects
            .iter()
            .map(|r| RejectRow {
                partition: r.message.partition,
                offset: r.message.offset,
                kind: r.kind,
                message: &r.reason,
                payload: &r.message.payload,
            })
            .collect();
        let offsets: Vec<(i32, i64)> = next_offsets.iter().map(|(p, o)| (*p, *o)).collect();
        queries::finish_batch(
            tx,
            &BatchEnd {
                group: &self.group,
                topic: &self.topic,
                stats: &scored.stats,
                outbox: &scored.outbox,
                rejects: &reject_rows,
                next_offsets: &offsets,
            },
        )
        .await
        .map_err(SinkError::db(
            "writing user statistics, anomalies, rejects and offsets",
        ))
    }

    /// The users of the batch's valid messages, and those of them not known to be in
    /// `users_raw` yet (users never leave it, so only unknown ones are looked up again).
    fn users_of(&self, batch: &Batch) -> (Vec<Uuid>, Vec<Uuid>) {
        let mut users: Vec<Uuid> = batch
            .messages
            .iter()
            .filter_map(|m| m.verdict.as_ref().ok().map(|tx| tx.user_id))
            .collect();
        users.sort_unstable();
        users.dedup();
        let unknown = users
            .iter()
            .filter(|user| !self.known_users.contains(user))
            .copied()
            .collect();
        (users, unknown)
    }

    /// Copies `valid` under a savepoint, again and again: a conflict means a replay, so the
    /// tx_ids that exist are dropped (as duplicates); a refused row is isolated by bisection and
    /// joins `rejects` as `db_rejected`.
    async fn copy_carefully(
        &self,
        conn: &mut PgConnection,
        sorted: &mut Sorted<'_>,
        stats_before: &HashMap<Uuid, RunningStats>,
    ) -> Result<Scored, SinkError> {
        loop {
            let valid = &mut sorted.valid;
            let scored = score(valid, stats_before);
            savepoint(conn, "SAVEPOINT batch_rows").await?;
            let Err(err) = copy_in(conn, SINK_COPY, &scored.copy).await else {
                savepoint(conn, "RELEASE SAVEPOINT batch_rows").await?;
                return Ok(scored);
            };
            savepoint(conn, "ROLLBACK TO SAVEPOINT batch_rows").await?;
            if sql_state(&err).as_deref() == Some(UNIQUE_VIOLATION) {
                let ids: Vec<Uuid> = valid.iter().map(|(_, tx)| tx.tx_id).collect();
                let existing = queries::existing_tx_ids(conn, &ids)
                    .await
                    .map_err(SinkError::db("looking up replayed tx_ids"))?;
                if existing.is_empty() {
                    // Another writer holds the same tx_id uncommitted: it will win, try again.
                    return Err(SinkError::Db {
                        context: "copying rows",
                        cause: err,
                    });
                }
                sorted.duplicates += existing.len();
                valid.retain(|(_, tx)| !existing.contains(&tx.tx_id));
            } else if is_row_rejection(&err) {
                let refused = isolate(conn, valid, stats_before).await?;
                if refused.is_empty() {
                    return Err(SinkError::Db {
                        context: "copying rows",
                        cause: err,
                    });
                }
                let mut refused: HashMap<usize, String> = refused.into_iter().collect();
                let mut kept = Vec::with_capacity(valid.len());
                for (i, (m, tx)) in valid.drain(..).enumerate() {
                    match refused.remove(&i) {
                        Some(reason) => sorted.rejects.push(Reject {
                            message: m,
                            kind: DB_REJECTED,
                            reason,
                        }),
                        None => kept.push((m, tx)),
                    }
                }
                *valid = kept;
            } else {
                return Err(SinkError::Db {
                    context: "copying rows",
                    cause: err,
                });
            }
        }
    }

    fn count(
        &self,
        batch: &Batch,
        written: &Written,
        rejects: &[Reject<'_>],
        scored: &Scored,
        committed: chrono::DateTime<Utc>,
        started: Instant,
    ) {
        let m = &self.metrics;
        m.inserted.inc_by(written.inserted as u64);
        m.duplicates.inc_by(written.duplicates as u64);
        m.anomalies.inc_by(written.anomalies as u64);
        m.late_arriving.inc_by(written.late_arriving as u64);
        for reject in rejects {
            m.reject(reject.kind);
        }
        let mut latencies_us = Vec::new();
        for (_, produced_at) in &scored.rows {
            if let Some(at) = produced_at {
                let latency = (committed - *at).num_microseconds().unwrap_or(0).max(0);
                m.end_to_end_latency.observe(latency as f64 / 1e6);
                if m.commit_log.is_some() {
                    latencies_us.push(latency);
                }
            }
        }
        m.batch_duration.observe(started.elapsed().as_secs_f64());
        if let Some(log) = &m.commit_log {
            let now = Instant::now();
            log.push(CommitRecord {
                committed_at: committed,
                messages: written.messages,
                inserted: written.inserted,
                write_seconds: started.elapsed().as_secs_f64(),
                latencies_us,
                held_us: batch
                    .messages
                    .iter()
                    .map(|m| now.duration_since(m.received_at).as_micros() as i64)
                    .collect(),
            });
        }
        debug!(
            messages = written.messages,
            inserted = written.inserted,
            duplicates = written.duplicates,
            rejected = written.rejected,
            "batch committed"
        );
    }
}

/// A message that does not become a row: the validator's verdict, or the database's.
struct Reject<'a> {
    message: &'a Consumed,
    kind: &'a str,
    reason: String,
}

/// A batch sorted out against what is already written.
struct Sorted<'a> {
    /// The first message of each tx_id, in (partition, offset) order.
    valid: Vec<(&'a Consumed, &'a Transaction)>,
    rejects: Vec<Reject<'a>>,
    /// Messages at offsets an earlier transaction already wrote (a replay after a crash).
    already_written: usize,
    /// Valid messages whose tx_id came earlier in the batch, or (careful path) is in the table.
    duplicates: usize,
}

/// Skips the messages below the stored next offsets (written by an earlier transaction, perhaps
/// of another process), orders the rest by partition and offset, and splits them into valid
/// messages (first of each tx_id), duplicates and rejects. Pure.
fn sort_out<'a>(batch: &'a Batch, stored: &HashMap<i32, i64>) -> Sorted<'a> {
    let mut messages: Vec<&Consumed> = batch
        .messages
        .iter()
        .filter(|m| {
            stored
                .get(&m.partition)
                .is_none_or(|next| m.offset >= *next)
        })
        .collect();
    messages.sort_by_key(|m| (m.partition, m.offset));
    let mut sorted = Sorted {
        valid: Vec::with_capacity(messages.len()),
        rejects: Vec::new(),
        already_written: batch.len() - messages.len(),
        duplicates: 0,
    };
    let mut seen = HashSet::new();
    for m in messages {
        match &m.verdict {
            Ok(tx) if seen.insert(tx.tx_id) => sorted.valid.push((m, tx)),
            Ok(_) => sorted.duplicates += 1,
            Err(rejection) => sorted.rejects.push(Reject {
                message: m,
                kind: rejection.kind.as_str(),
                reason: rejection.message.clone(),
            }),
        }
    }
    sorted
}

/// The fast path: every row in one COPY, no savepoint. A conflict (a replay) or a refused row
/// asks for the careful path in a new transaction.
async fn copy_fast(
    conn: &mut PgConnection,
    sorted: &Sorted<'_>,
    stats_before: &HashMap<Uuid, RunningStats>,
) -> Result<Scored, Attempt> {
    let scored = score(&sorted.valid, stats_before);
    match copy_in(conn, SINK_COPY, &scored.copy).await {
        Ok(()) => Ok(scored),
        Err(err)
            if sql_state(&err).as_deref() == Some(UNIQUE_VIOLATION) || is_row_rejection(&err) =>
        {
            debug!(%err, "the batch's COPY failed; trying again carefully");
            Err(Attempt::Careful)
        }
        Err(err) => Err(SinkError::Db {
            context: "copying rows",
            cause: err,
        }
        .into()),
    }
}

/// Scores `valid` (in offset order) against the statistics before the batch.
fn score(valid: &[(&Consumed, &Transaction)], before: &HashMap<Uuid, RunningStats>) -> Scored {
    let mut stats: HashMap<Uuid, RunningStats> = HashMap::new();
    let mut scored = Scored {
        copy: Vec::with_capacity(valid.len() * 300),
        stats: Vec::new(),
        outbox: Vec::new(),
        rows: Vec::with_capacity(valid.len()),
    };
    for (m, tx) in valid {
        let user = stats
            .entry(tx.user_id)
            .or_insert_with(|| before.get(&tx.user_id).copied().unwrap_or_default());
        let score = user.push(tx.amount.to_f64().unwrap_or_default());
        scored.copy.extend_from_slice(&m.row_source);
        queries::sink_row_score(&mut scored.copy, &score);
        if score.is_anomaly {
            scored.outbox.push((tx.tx_id, anomaly_payload(tx, &score)));
        }
        scored.rows.push((tx.tx_id, m.produced_at));
    }
    scored.stats = stats.into_iter().collect();
    scored.stats.sort_unstable_by_key(|(user, _)| *user);
    scored
}

/// Finds the rows the database refuses by copying halves under savepoints that are always
/// rolled back: O(k log n) copies for k bad rows among n. Returns (index in `valid`, reason).
async fn isolate(
    conn: &mut PgConnection,
    valid: &[(&Consumed, &Transaction)],
    before: &HashMap<Uuid, RunningStats>,
) -> Result<Vec<(usize, String)>, SinkError> {
    let mut refused = Vec::new();
    let mid = valid.len() / 2;
    let mut pending = vec![(0, mid), (mid, valid.len())];
    while let Some((lo, hi)) = pending.pop() {
        if lo >= hi {
            continue;
        }
        let scored = score(&valid[lo..hi], before);
        savepoint(conn, "SAVEPOINT probe").await?;
        let result = copy_in(conn, SINK_COPY, &scored.copy).await;
        savepoint(conn, "ROLLBACK TO SAVEPOINT probe").await?;
        match result {
            Ok(()) => {}
            Err(err) if is_row_rejection(&err) => {
                if hi - lo == 1 {
                    let reason = match &err {
                        sqlx::Error::Database(db) => db.message().to_string(),
                        other => other.to_string(),
                    };
                    warn!(tx_id = %valid[lo].1.tx_id, %reason, "database refused a row");
                    refused.push((lo, reason));
                } else {
                    let mid = lo + (hi - lo) / 2;
                    pending.push((lo, mid));
                    pending.push((mid, hi));
                }
            }
            Err(err) => {
                return Err(SinkError::Db {
                    context: "isolating refused rows",
                    cause: err,
                });
            }
        }
    }
    Ok(refused)
}

async fn savepoint(conn: &mut PgConnection, statement: &'static str) -> Result<(), SinkError> {
    sqlx::query(statement)
        .execute(conn)
        .await
        .map(drop)
        .map_err(SinkError::db("managing a savepoint"))
}

/// The message for the `anomalies` topic: the transaction plus what flagged it.
fn anomaly_payload(tx: &Transaction, score: &Score) -> String {
    serde_json::json!({
        "tx_id": tx.tx_id,
        "user_id": tx.user_id,
        "amount": tx.amount.to_f64(),
        "currency": tx.currency,
        "merchant": tx.merchant,
        "category": tx.category,
        "timestamp": tx.event_time,
        "status": tx.status,
        "payment_method": tx.payment_method,
        "city": tx.city,
        "country": tx.country,
        "source_system": tx.source_system,
        "transaction_type": tx.transaction_type,
        "processing_time_ms": tx.processing_time_ms,
        "z_score": score.z,
        "user_txn_count": score.count,
        "user_running_mean": score.mean,
    })
    .to_string()
}

/// Milliseconds spent in each step of a batch, for `RUST_LOG=etl::kafka::sink=debug`.
struct StepTimer {
    last: Instant,
    steps: Vec<(&'static str, f64)>,
}

impl StepTimer {
    fn new(start: Instant) -> Self {
        Self {
            last: start,
            steps: Vec::with_capacity(8),
        }
    }

    fn mark(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps
            .push((step, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }
}

impl std::fmt::Display for StepTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (step, ms)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{step}={ms:.1}")?;
        }
        Ok(())
    }
}

/// A dead letter for each reject.
fn dead_letters<'a>(rejects: &'a [Reject<'a>]) -> Vec<DeadLetter<'a>> {
    rejects
        .iter()
        .map(|r| DeadLetter {
            partition: r.message.partition,
            offset: r.message.offset,
            key: r.message.key.as_deref(),
            payload: &r.message.payload,
            kind: r.kind,
            message: &r.reason,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::stream::{StreamGenerator, StreamMessage, StreamOptions};

    fn messages(count: usize, invalid_ratio: f64) -> Vec<StreamMessage> {
        let users = [Uuid::from_u128(1), Uuid::from_u128(2)];
        StreamGenerator::new(
            &users,
            StreamOptions {
                seed: 3,
                invalid_ratio,
                ..StreamOptions::default()
            },
        )
        .take(count)
        .collect()
    }

    fn consumed(partition: i32, offset: i64, m: &StreamMessage) -> Consumed {
        Consumed::new("t", partition, offset, m.payload.clone(), None)
    }

    #[test]
    fn sorting_out_skips_what_is_written_orders_by_offset_and_splits_the_rest() {
        let generated = messages(40, 0.25);
        let mut batch = Batch::default();
        // Partition 1 first and backwards, partition 0 after: order must not matter.
        for (i, m) in generated.iter().enumerate().rev() {
            batch.push(consumed((i % 2) as i32, i as i64, m));
        }
        // The same valid message again at a later offset: a duplicate within the batch.
        let first_valid = generated.iter().position(|m| m.injected.is_none()).unwrap();
        batch.push(consumed(0, 100, &generated[first_valid]));
        // Offsets below 10 of partition 0 are already written.
        let stored = HashMap::from([(0, 10)]);
        let sorted = sort_out(&batch, &stored);

        let skipped = (0..10).filter(|i| i % 2 == 0).count();
        assert_eq!(sorted.already_written, skipped);
        let kept: Vec<usize> = (0..40).filter(|i| i % 2 == 1 || *i >= 10).collect();
        let injected = kept
            .iter()
            .filter(|&&i| generated[i].injected.is_some())
            .count();
        assert_eq!(sorted.rejects.len(), injected);
        for r in &sorted.rejects {
            let i = r.message.offset as usize;
            assert_eq!(Some(r.kind), generated[i].injected.map(|k| k.as_str()));
        }
        let duplicate = usize::from(first_valid % 2 == 1 || first_valid >= 10);
        assert_eq!(sorted.duplicates, duplicate);
        assert_eq!(sorted.valid.len(), kept.len() - injected + 1 - duplicate);
        let order: Vec<(i32, i64)> = sorted
            .valid
            .iter()
            .map(|(m, _)| (m.partition, m.offset))
            .collect();
        let mut ascending = order.clone();
        ascending.sort_unstable();
        assert_eq!(
            order, ascending,
            "valid messages in (partition, offset) order"
        );
    }

    #[test]
    fn scoring_continues_each_users_statistics_from_before_the_batch() {
        let generated = messages(30, 0.0);
        let batch: Batch = generated
            .iter()
            .enumerate()
            .map(|(i, m)| consumed(0, i as i64, m))
            .collect();
        let sorted = sort_out(&batch, &HashMap::new());
        let first_user = sorted.valid[0].1.user_id;
        let mut before = HashMap::new();
        let mut prior = RunningStats::default();
        for amount in [10.0, 12.0, 11.0] {
            prior.push(amount);
        }
        before.insert(first_user, prior);
        let scored = score(&sorted.valid, &before);

        // The oracle: the same Welford pushes, started from `before`.
        let mut expected: HashMap<Uuid, RunningStats> = before.clone();
        let mut anomalies = 0;
        for (_, tx) in &sorted.valid {
            let s = expected
                .entry(tx.user_id)
                .or_default()
                .push(tx.amount.to_f64().unwrap());
            anomalies += usize::from(s.is_anomaly);
        }
        assert_eq!(scored.rows.len(), sorted.valid.len());
        assert_eq!(scored.outbox.len(), anomalies);
        let users: Vec<Uuid> = scored.stats.iter().map(|(u, _)| *u).collect();
        let mut sorted_users = users.clone();
        sorted_users.sort_unstable();
        assert_eq!(users, sorted_users, "statistics in user order (lock order)");
        for (user, stats) in &scored.stats {
            assert_eq!(stats.count, expected[user].count);
            assert!((stats.mean - expected[user].mean).abs() < 1e-9);
        }
        assert_eq!(
            scored
                .stats
                .iter()
                .find(|(u, _)| *u == first_user)
                .unwrap()
                .1
                .count,
            3 + sorted
                .valid
                .iter()
                .filter(|(_, tx)| tx.user_id == first_user)
                .count() as i64
        );
        // One COPY line per row.
        assert_eq!(
            scored.copy.iter().filter(|b| **b == b'\n').count(),
            scored.rows.len()
        );
    }
}
