//! `etl.dlq_replays`: which transactions `etl dlq replay` re-produced into which topic.
//!
//! A chunk's tx_ids are claimed (inserted) in a database transaction that stays open until the
//! broker acknowledged the chunk's messages, and commits only then. A tx_id someone else already
//! claimed comes back unclaimed and is not produced; a second replay running at the same time
//! waits on the row locks of the first and then finds the ids taken.

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One dead letter about to be re-produced.
#[derive(Debug, Clone)]
pub struct Claim {
    pub tx_id: Uuid,
    pub partition: i32,
    pub offset: i64,
    pub kind: String,
}

/// Inserts the claims that are new; returns the tx_ids this call claimed. Rows are inserted in
/// tx_id order, so two replays claiming overlapping chunks wait for each other instead of
/// deadlocking.
pub async fn claim(
    conn: &mut PgConnection,
    target_topic: &str,
    dlq_topic: &str,
    claims: &[Claim],
) -> sqlx::Result<HashSet<Uuid>> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.tx_id).collect();
    let partitions: Vec<i32> = claims.iter().map(|c| c.partition).collect();
    let offsets: Vec<i64> = claims.iter().map(|c| c.offset).collect();
    let kinds: Vec<&str> = claims.iter().map(|c| c.kind.as_str()).collect();
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO etl.dlq_replays \
             (target_topic, tx_id, dlq_topic, dlq_partition, dlq_offset, error_kind) \
         SELECT $1, t.tx_id, $2, t.p, t.o, t.k \
         FROM unnest($3::uuid[], $4::integer[], $5::bigint[], $6::text[]) AS t(tx_id, p, o, k) \
         ORDER BY t.tx_id \
         ON CONFLICT (target_topic, tx_id) DO NOTHING \
         RETURNING tx_id",
    )
    .bind(target_topic)
    .bind(dlq_topic)
    .bind(&ids)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&kinds)
    .fetch_all(conn)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// Which of `tx_ids` were already replayed into `target_topic` (for `--dry-run`, which claims
/// nothing).
pub async fn already_replayed(
    pool: &PgPool,
    target_topic: &str,
    tx_ids: &[Uuid],
) -> sqlx::Result<HashSet<Uuid>> {
    let found: Vec<Uuid> = sqlx::query_scalar(
        "SELECT tx_id FROM etl.dlq_replays WHERE target_topic = $1 AND tx_id = ANY($2)",
    )
    .bind(target_topic)
    .bind(tx_ids)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().collect())
}
