//! CSV seeds (`models/seeds/*.csv`) as tables: polars infers the column types from the whole
//! file (integers → bigint, decimals → double precision, true/false → boolean, anything else →
//! text; YAML `seeds: [{name, config: {column_types: {col: numeric}}}]` overrides), PostgreSQL's
//! COPY reads the file itself.
//!
//! A seed is loaded when its table is missing, when the file's content changed (its SHA-256 is
//! kept in the table's comment) or with `--full-refresh`; otherwise it is left alone. Loading
//! builds the table aside and swaps it in, so views on it survive (see [`super::ddl`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use polars::prelude::{CsvReadOptions, DataType, SerReader};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::ModelError;
use super::ddl::{self, Replacement};
use super::render::{Relation, quote_ident};

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
    column_types: &BTreeMap<String, String>,
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
    let marker = format!("etl seed sha256:{:x}", Sha256::digest(&data));
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
    let columns = infer_columns(&data, column_types).map_err(fail)?;
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
        "COPY {tmp} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)",
        names.join(", ")
    );
    let mut sink = conn.copy_in_raw(&copy).await.map_err(db_fail)?;
    if let Err(e) = sink.send(data).await {
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

/// Column names and PostgreSQL types, inferred by polars from every row.
pub fn infer_columns(
    data: &[u8],
    overrides: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let frame = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(None)
        .into_reader_with_file_handle(Cursor::new(data))
        .finish()
        .map_err(|e| format!("polars could not read it as CSV: {e}"))?;
    Ok(frame
        .schema()
        .iter()
        .map(|(name, dtype)| {
            let name = name.to_string();
            let sql_type = overrides
                .get(&name)
                .cloned()
                .unwrap_or_else(|| sql_type(dtype).to_string());
            (name, sql_type)
        })
        .collect())
}

fn sql_type(dtype: &DataType) -> &'static str {
    match dtype {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => "bigint",
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => "bigint",
        DataType::UInt64 => "numeric",
        DataType::Float32 | DataType::Float64 => "double precision",
        _ => "text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_inferred_and_overridable() {
        let csv = b"currency_code,rate_to_usd,active,rank\nUSD,1.0,true,1\nEUR,1.08,false,2\n";
        let columns = infer_columns(csv, &BTreeMap::new()).unwrap();
        assert_eq!(
            columns,
            vec![
                ("currency_code".to_string(), "text".to_string()),
                ("rate_to_usd".to_string(), "double precision".to_string()),
                ("active".to_string(), "boolean".to_string()),
                ("rank".to_string(), "bigint".to_string()),
            ]
        );
        let overrides = BTreeMap::from([("rate_to_usd".to_string(), "numeric(12,6)".to_string())]);
        let columns = infer_columns(csv, &overrides).unwrap();
        assert_eq!(columns[1].1, "numeric(12,6)");
    }
}
