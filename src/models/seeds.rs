//! CSV seeds as tables, typed as dbt-postgres types them (see [`super::seed_types`]; YAML
//! `seeds: [{name, config: {column_types: {col: numeric}}}]` overrides), written with COPY.
//!
//! A seed is loaded when its table is missing, when the file's content or its settings changed
//! (their SHA-256 is kept in the table's comment) or with `--full-refresh`; otherwise it is
//! left alone. Loading builds the table aside and swaps it in, so views on it survive (see
//! [`super::ddl`]).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::ModelError;
use super::ddl::{self, Replacement};
use super::render::{Relation, quote_ident};
use super::seed_types::read_seed;

/// How a seed file is read: dbt's `column_types`, `quote_columns` and `delimiter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFormat {
    pub column_types: BTreeMap<String, String>,
    pub quote_columns: bool,
    pub delimiter: u8,
}

impl Default for SeedFormat {
    fn default() -> Self {
        Self {
            column_types: BTreeMap::new(),
            quote_columns: true,
            delimiter: b',',
        }
    }
}

const TABLE_COMMENT: &str = include_str!("sql/table_comment.sql");

#[derive(Debug, Clone, Default)]
pub struct SeedOutcome {
    /// Rows loaded; none when the table was already up to date.
    pub rows: Option<u64>,
}

/// Loads the seed at `path` into `target` unless it is already there with the same content.
pub async fn load_seed(
    conn: &mut PgConnection,
    name: &str,
    path: &Path,
    target: &Relation,
    format: &SeedFormat,
    full_refresh: bool,
    swap_lock: &tokio::sync::Mutex<()>,
) -> Result<SeedOutcome, ModelError> {
    let fail = |message: String| ModelError::Seed {
        seed: name.to_string(),
        file: path.to_path_buf(),
        message,
    };
    let db_fail = |e: sqlx::Error| fail(e.to_string());
    let data = std::fs::read(path).map_err(|source| ModelError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hasher = Sha256::new();
    hasher.update(&data);
    hasher.update(format!("{format:?}").as_bytes());
    let marker = format!("etl seed sha256:{:x}", hasher.finalize());
    if !full_refresh {
        let comment: Option<Option<String>> = sqlx::query_scalar(TABLE_COMMENT)
            .bind(&target.schema)
            .bind(&target.name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_fail)?;
        if comment.flatten().as_deref() == Some(marker.as_str()) {
            return Ok(SeedOutcome { rows: None });
        }
    }
    let table = read_seed(
        &data,
        &format.column_types,
        format.quote_columns,
        format.delimiter,
    )
    .map_err(fail)?;
    let columns = &table.columns;
    let tmp = target.with_suffix("__etl_tmp");
    let definition: Vec<String> = columns
        .iter()
        .map(|(column, sql_type)| format!("{} {sql_type}", quote_ident(column)))
        .collect();
    let names: Vec<String> = columns.iter().map(|(c, _)| quote_ident(c)).collect();
    ddl::execute(conn, &format!("DROP TABLE IF EXISTS {tmp}"))
        .await
        .map_err(db_fail)?;
    ddl::execute(
        conn,
        &format!("CREATE TABLE {tmp} ({})", definition.join(", ")),
    )
    .await
    .map_err(db_fail)?;
    let copy = format!(
        "COPY {tmp} ({}) FROM STDIN WITH (FORMAT csv)",
        names.join(", ")
    );
    let mut sink = conn.copy_in_raw(&copy).await.map_err(db_fail)?;
    if let Err(e) = sink.send(table.csv).await {
        let _ = sink.abort(e.to_string()).await;
        return Err(db_fail(e));
    }
    let rows = sink.finish().await.map_err(db_fail)?;
    // The marker is our own hex digest, safe to inline (COMMENT takes no parameters).
    ddl::execute(conn, &format!("COMMENT ON TABLE {tmp} IS '{marker}'"))
        .await
        .map_err(db_fail)?;
    let _guard = swap_lock.lock().await;
    if let Err(e) = ddl::swap(conn, target, Replacement::RenameFrom(&tmp)).await {
        let _ = ddl::execute(conn, &format!("DROP TABLE IF EXISTS {tmp}")).await;
        return Err(db_fail(e));
    }
    Ok(SeedOutcome { rows: Some(rows) })
}
