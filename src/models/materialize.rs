//! The four materializations: view, table, incremental and snapshot.
//!
//! - view: `CREATE OR REPLACE VIEW`; when PostgreSQL refuses (columns renamed, dropped or
//!   retyped) or a table stands there, the view is swapped in (see [`super::ddl`]).
//! - table: built as `<name>__etl_tmp`, then swapped in one transaction.
//! - incremental: the first run, `--full-refresh` and a target that is not a table build it
//!   like a table; otherwise the new rows go to a temporary table and, in one transaction,
//!   are deleted-then-inserted or merged on `unique_key` (or appended without one). Only the
//!   target's columns are written: a column the query gained is ignored until a full refresh.
//! - snapshot (SCD2, check strategy): the first run copies the query with
//!   `dbt_valid_from = now()`, `dbt_valid_to = null`; later runs close the current version of
//!   every key whose check columns changed and insert a new version, in one transaction. Keys
//!   that vanished stay current unless `invalidate_hard_deletes=true`. `--full-refresh` does
//!   not rebuild snapshots: their history cannot be recomputed.

use std::path::Path;

use sqlx::PgConnection;
use sqlx::postgres::PgDatabaseError;

use super::ModelError;
use super::config::{CheckCols, IncrementalStrategy, Materialization, ModelConfig};
use super::ddl::{self, RelationKind, Replacement};
use super::render::{Relation, quote_ident};

/// The three columns every snapshot adds, and the validity columns.
pub const SNAPSHOT_COLUMNS: [&str; 4] = [
    "dbt_scd_id",
    "dbt_updated_at",
    "dbt_valid_from",
    "dbt_valid_to",
];

/// What a model's build did.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// Rows written (none for views).
    pub rows: Option<u64>,
    /// Whether an incremental/snapshot model was built whole.
    pub full: bool,
}

/// Where a failing statement came from, to turn database errors into messages.
#[derive(Clone, Copy)]
pub struct SqlSite<'a> {
    pub what: &'static str,
    pub name: &'a str,
    pub file: &'a Path,
    /// The model's rendered SQL, embedded in the failing statement.
    pub sql: &'a str,
    /// Where the rendered SQL was written, for the position hint.
    pub compiled: Option<&'a Path>,
}

impl SqlSite<'_> {
    /// A database error as a message naming the model, its file, and the line of the rendered
    /// SQL that Postgres points at (when it does).
    pub fn error(&self, statement: &str, error: sqlx::Error) -> ModelError {
        let (message, position) = match error.as_database_error() {
            Some(db) => {
                let pg = db.try_downcast_ref::<PgDatabaseError>();
                let mut message = db.message().to_string();
                if let Some(pg) = pg {
                    if let Some(detail) = pg.detail() {
                        message.push_str(&format!("; {detail}"));
                    }
                    if let Some(hint) = pg.hint() {
                        message.push_str(&format!("; hint: {hint}"));
                    }
                }
                let position = pg
                    .and_then(|pg| match pg.position() {
                        Some(sqlx::postgres::PgErrorPosition::Original(p)) => Some(p),
                        _ => None,
                    })
                    .and_then(|p| self.line_of(statement, p));
                (message, position)
            }
            None => (error.to_string(), None),
        };
        ModelError::Sql {
            what: self.what,
            name: self.name.to_string(),
            file: self.file.to_path_buf(),
            message,
            position,
        }
    }

    /// A failure that is not the database's.
    pub fn fail(&self, message: String) -> ModelError {
        ModelError::Sql {
            what: self.what,
            name: self.name.to_string(),
            file: self.file.to_path_buf(),
            message,
            position: None,
        }
    }

    /// Position `p` (1-based characters in `statement`) as a line of the rendered SQL.
    fn line_of(&self, statement: &str, p: usize) -> Option<String> {
        let byte = statement.char_indices().nth(p.checked_sub(1)?)?.0;
        let start = statement.find(self.sql)?;
        if byte < start || byte > start + self.sql.len() {
            return None;
        }
        let line = 1 + self.sql[..byte - start].matches('\n').count();
        Some(match self.compiled {
            Some(path) => format!("line {line} of {}", path.display()),
            None => format!("line {line} of the rendered SQL"),
        })
    }
}

/// Runs one statement, turning a failure into a model error.
pub async fn run(
    conn: &mut PgConnection,
    site: &SqlSite<'_>,
    sql: &str,
) -> Result<u64, ModelError> {
    ddl::execute(conn, sql)
        .await
        .map_err(|e| site.error(sql, e))
}

/// How a model is built this time: the materialization, and for incremental models whether
/// the target already exists (so the template renders with `is_incremental()` true).
pub async fn is_incremental(
    conn: &mut PgConnection,
    config: &ModelConfig,
    target: &Relation,
    full_refresh: bool,
) -> Result<bool, sqlx::Error> {
    if config.materialized != Materialization::Incremental || full_refresh {
        return Ok(false);
    }
    Ok(ddl::relation_kind(conn, target).await? == Some(RelationKind::Table))
}

/// Builds `target` from `sql` (already rendered with the right `is_incremental()`), after the
/// rendered `sql_header` if any. `swap_lock` serialises swaps within this process (two swaps
/// recreating the same dependent view could otherwise deadlock).
pub async fn materialize(
    conn: &mut PgConnection,
    config: &ModelConfig,
    target: &Relation,
    site: &SqlSite<'_>,
    header: Option<&str>,
    incremental: bool,
    swap_lock: &tokio::sync::Mutex<()>,
) -> Result<Built, ModelError> {
    // Sent with the statement it precedes, in one query string: one (implicit) transaction,
    // so that `set local` lasts for that statement.
    let header = header
        .map(|h| h.trim().trim_end_matches(';').trim())
        .filter(|h| !h.is_empty())
        .map_or_else(String::new, |h| format!("{h};\n"));
    let header = header.as_str();
    let sql = site.sql;
    let existing = ddl::relation_kind(conn, target)
        .await
        .map_err(|e| site.error("", e))?;
    match config.materialized {
        Materialization::View => {
            if matches!(existing, None | Some(RelationKind::View)) {
                let statement = format!("CREATE OR REPLACE VIEW {target} AS\n{sql}");
                match ddl::execute(conn, &statement).await {
                    Ok(_) => return Ok(Built::default()),
                    // No view yet: the error is the model's own.
                    Err(e) if existing.is_none() => return Err(site.error(&statement, e)),
                    // Columns changed: swapped below; a real error shows up there again.
                    Err(_) => {}
                }
            }
            let _guard = swap_lock.lock().await;
            ddl::swap(conn, target, Replacement::View(sql))
                .await
                .map_err(|e| site.error(&format!("CREATE VIEW {target} AS\n{sql}"), e))?;
            Ok(Built::default())
        }
        Materialization::Table => build_table(conn, target, site, header, "", swap_lock).await,
        Materialization::Incremental if !incremental => {
            build_table(conn, target, site, header, "", swap_lock).await
        }
        Materialization::Incremental => {
            incremental_update(conn, config, target, site, header).await
        }
        Materialization::Snapshot if existing == Some(RelationKind::Table) => {
            snapshot_update(conn, config, target, site, header).await
        }
        Materialization::Snapshot => {
            let select = format!(
                "SELECT etl_src.*,\n  {scd} AS \"dbt_scd_id\",\n  now() AS \"dbt_updated_at\",\n  \
                 now() AS \"dbt_valid_from\",\n  NULL::timestamptz AS \"dbt_valid_to\"\nFROM (\n",
                scd = scd_id(&config.unique_key, "etl_src")
            );
            build_table(conn, target, site, header, &select, swap_lock).await
        }
    }
}

/// `md5(key|key|valid_from)`, dbt's surrogate key of a snapshot version.
fn scd_id(keys: &[String], alias: &str) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("coalesce({alias}.{}::text, '')", quote_ident(k)))
        .collect();
    format!("md5(concat_ws('|', {}, now()::text))", parts.join(", "))
}

/// `CREATE TABLE tmp AS <prefix><sql>)` (the prefix wraps the query when given), then swap.
async fn build_table(
    conn: &mut PgConnection,
    target: &Relation,
    site: &SqlSite<'_>,
    header: &str,
    wrap_prefix: &str,
    swap_lock: &tokio::sync::Mutex<()>,
) -> Result<Built, ModelError> {
    let tmp = target.with_suffix("__etl_tmp");
    run(conn, site, &format!("DROP TABLE IF EXISTS {tmp}")).await?;
    let body = if wrap_prefix.is_empty() {
        site.sql.to_string()
    } else {
        format!("{wrap_prefix}{}\n) AS etl_src", site.sql)
    };
    let statement = format!("{header}CREATE TABLE {tmp} AS\n{body}");
    let rows = run(conn, site, &statement).await?;
    let _guard = swap_lock.lock().await;
    if let Err(e) = ddl::swap(conn, target, Replacement::RenameFrom(&tmp)).await {
        let _ = ddl::execute(conn, &format!("DROP TABLE IF EXISTS {tmp}")).await;
        return Err(site.error("", e));
    }
    Ok(Built {
        rows: Some(rows),
        full: true,
    })
}

/// The new rows into a temporary table, then one transaction to fold them into the target.
async fn incremental_update(
    conn: &mut PgConnection,
    config: &ModelConfig,
    target: &Relation,
    site: &SqlSite<'_>,
    header: &str,
) -> Result<Built, ModelError> {
    let mut tx = sqlx::Connection::begin(&mut *conn)
        .await
        .map_err(|e| site.error("", e))?;
    let tmp = Relation::new("pg_temp", format!("{}__etl_incr", target.name));
    let statement = format!(
        "{header}CREATE TEMPORARY TABLE {} ON COMMIT DROP AS\n{}",
        quote_ident(&tmp.name),
        site.sql
    );
    run(&mut tx, site, &statement).await?;
    let columns = shared_columns(&mut tx, site, target, &tmp, &config.unique_key).await?;
    let list = column_list(&columns, None);
    let keys = column_list(&config.unique_key, None);
    let rows = match config.incremental_strategy {
        IncrementalStrategy::Append => {
            run(
                &mut tx,
                site,
                &format!("INSERT INTO {target} ({list})\nSELECT {list} FROM {tmp}"),
            )
            .await?
        }
        IncrementalStrategy::DeleteInsert => {
            run(
                &mut tx,
                site,
                &format!("DELETE FROM {target}\nWHERE ({keys}) IN (SELECT {keys} FROM {tmp})"),
            )
            .await?;
            run(
                &mut tx,
                site,
                &format!("INSERT INTO {target} ({list})\nSELECT {list} FROM {tmp}"),
            )
            .await?
        }
        IncrementalStrategy::Merge => {
            let on = key_match(&config.unique_key, "t", "s");
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !config.unique_key.contains(c))
                .map(|c| format!("{0} = s.{0}", quote_ident(c)))
                .collect();
            let matched = if updates.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            let values = column_list(&columns, Some("s"));
            run(
                &mut tx,
                site,
                &format!(
                    "MERGE INTO {target} AS t\nUSING {tmp} AS s\nON {on}\n\
                     WHEN MATCHED THEN {matched}\n\
                     WHEN NOT MATCHED THEN INSERT ({list}) VALUES ({values})"
                ),
            )
            .await?
        }
    };
    tx.commit().await.map_err(|e| site.error("", e))?;
    Ok(Built {
        rows: Some(rows),
        full: false,
    })
}

/// Closes changed versions and inserts new ones, in one transaction.
async fn snapshot_update(
    conn: &mut PgConnection,
    config: &ModelConfig,
    target: &Relation,
    site: &SqlSite<'_>,
    header: &str,
) -> Result<Built, ModelError> {
    let mut tx = sqlx::Connection::begin(&mut *conn)
        .await
        .map_err(|e| site.error("", e))?;
    let tmp = Relation::new("pg_temp", format!("{}__etl_snap", target.name));
    let statement = format!(
        "{header}CREATE TEMPORARY TABLE {} ON COMMIT DROP AS\n{}",
        quote_ident(&tmp.name),
        site.sql
    );
    run(&mut tx, site, &statement).await?;
    let columns = shared_columns(&mut tx, site, target, &tmp, &config.unique_key).await?;
    let columns: Vec<String> = columns
        .into_iter()
        .filter(|c| !SNAPSHOT_COLUMNS.contains(&c.as_str()))
        .collect();
    let check: Vec<String> = match &config.check_cols {
        CheckCols::All => columns
            .iter()
            .filter(|c| !config.unique_key.contains(c))
            .cloned()
            .collect(),
        CheckCols::Columns(cols) => {
            if let Some(missing) = cols.iter().find(|c| !columns.contains(c)) {
                return Err(site.fail(format!(
                    "check_cols names {missing}, which the snapshot query and table do not both have"
                )));
            }
            cols.clone()
        }
    };
    let on = key_match(&config.unique_key, "t", "s");
    let changed = if check.is_empty() {
        "false".to_string()
    } else {
        format!(
            "({}) IS DISTINCT FROM ({})",
            column_list(&check, Some("t")),
            column_list(&check, Some("s"))
        )
    };
    run(
        &mut tx,
        site,
        &format!(
            "UPDATE {target} AS t SET \"dbt_valid_to\" = now()\nFROM {tmp} AS s\n\
             WHERE {on} AND t.\"dbt_valid_to\" IS NULL AND {changed}"
        ),
    )
    .await?;
    if config.invalidate_hard_deletes {
        run(
            &mut tx,
            site,
            &format!(
                "UPDATE {target} AS t SET \"dbt_valid_to\" = now()\n\
                 WHERE t.\"dbt_valid_to\" IS NULL AND NOT EXISTS (SELECT 1 FROM {tmp} AS s WHERE {on})"
            ),
        )
        .await?;
    }
    let list = column_list(&columns, None);
    let values = column_list(&columns, Some("s"));
    let inserted = run(
        &mut tx,
        site,
        &format!(
            "INSERT INTO {target} ({list}, \"dbt_scd_id\", \"dbt_updated_at\", \"dbt_valid_from\", \"dbt_valid_to\")\n\
             SELECT {values}, {scd}, now(), now(), NULL\nFROM {tmp} AS s\n\
             WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {on} AND t.\"dbt_valid_to\" IS NULL)",
            scd = scd_id(&config.unique_key, "s"),
        ),
    )
    .await?;
    tx.commit().await.map_err(|e| site.error("", e))?;
    Ok(Built {
        rows: Some(inserted),
        full: false,
    })
}

/// The target's columns that the new rows also have (target order); the keys must be there.
async fn shared_columns(
    conn: &mut PgConnection,
    site: &SqlSite<'_>,
    target: &Relation,
    tmp: &Relation,
    keys: &[String],
) -> Result<Vec<String>, ModelError> {
    let target_columns = ddl::columns(conn, target)
        .await
        .map_err(|e| site.error("", e))?;
    let new_columns = ddl::columns(conn, tmp)
        .await
        .map_err(|e| site.error("", e))?;
    let missing = |what: String| {
        site.fail(format!(
            "{what}; run with --full-refresh to rebuild {}",
            target.display_name()
        ))
    };
    for key in keys {
        if !new_columns.contains(key) || !target_columns.contains(key) {
            return Err(missing(format!(
                "unique_key column {key} is missing from the query or the table"
            )));
        }
    }
    let added: Vec<&String> = new_columns
        .iter()
        .filter(|c| !target_columns.contains(c))
        .collect();
    if !added.is_empty() {
        tracing::warn!(model = site.name, columns = ?added, "the query has columns the table lacks; they are ignored until --full-refresh");
    }
    Ok(target_columns
        .into_iter()
        .filter(|c| new_columns.contains(c))
        .collect())
}

fn column_list(columns: &[String], alias: Option<&str>) -> String {
    columns
        .iter()
        .map(|c| match alias {
            Some(a) => format!("{a}.{}", quote_ident(c)),
            None => quote_ident(c),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_match(keys: &[String], left: &str, right: &str) -> String {
    keys.iter()
        .map(|k| format!("{left}.{0} = {right}.{0}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}
