//! Catalog look-ups and the one-transaction swap every replacing materialization goes through.
//!
//! Swapping a relation: PostgreSQL binds views to tables by OID, so a rename-based swap (dbt's
//! `rename old to backup, rename new, drop backup cascade`) silently drops every view built on
//! the old table. Here, inside one transaction, the definitions of the dependent views (and
//! materialized views), recursively, are read with every name qualified; the old relation is
//! dropped with CASCADE; the new one takes its name; the dependent views are recreated from
//! their definitions, parents first. Readers block on the lock for the length of the
//! transaction and then see the new relation with its views: never a missing or half-built
//! one. What is not carried over: grants and comments on the dependent views, and their
//! owners (they are recreated by the building user). A dependent view that no longer fits the
//! new columns makes the swap fail and roll back, leaving the old relation in place.

use sqlx::{AssertSqlSafe, PgConnection};

use super::render::{Relation, quote_ident};

const RELATION_KIND: &str = include_str!("sql/relation_kind.sql");
const DEPENDENT_VIEWS: &str = include_str!("sql/dependent_views.sql");
const RELATION_COLUMNS: &str = include_str!("sql/relation_columns.sql");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Table,
    View,
    MaterializedView,
    Other,
}

impl RelationKind {
    fn from_relkind(kind: &str) -> Self {
        match kind {
            "r" | "p" => Self::Table,
            "v" => Self::View,
            "m" => Self::MaterializedView,
            _ => Self::Other,
        }
    }

    fn drop_keyword(self) -> &'static str {
        match self {
            Self::Table | Self::Other => "TABLE",
            Self::View => "VIEW",
            Self::MaterializedView => "MATERIALIZED VIEW",
        }
    }
}

/// What a relation is, or None when it does not exist.
pub async fn relation_kind(
    conn: &mut PgConnection,
    relation: &Relation,
) -> Result<Option<RelationKind>, sqlx::Error> {
    let kind: Option<String> = sqlx::query_scalar(RELATION_KIND)
        .bind(&relation.schema)
        .bind(&relation.name)
        .fetch_optional(conn)
        .await?;
    Ok(kind.as_deref().map(RelationKind::from_relkind))
}

/// Column names of a relation (pass `pg_temp` as the schema for a temporary table).
pub async fn columns(
    conn: &mut PgConnection,
    relation: &Relation,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(RELATION_COLUMNS)
        .bind(relation.to_string())
        .fetch_all(conn)
        .await
}

/// Runs one statement (simple protocol, nothing prepared) and returns the rows it affected.
pub async fn execute(conn: &mut PgConnection, sql: &str) -> Result<u64, sqlx::Error> {
    let result = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

#[derive(Debug, Clone)]
struct DependentView {
    relation: Relation,
    materialized: bool,
    definition: String,
}

/// How the new relation comes to be, inside the swap transaction.
#[derive(Debug, Clone, Copy)]
pub enum Replacement<'a> {
    /// A table built beforehand under another name in the same schema: rename it.
    RenameFrom(&'a Relation),
    /// `CREATE VIEW target AS <sql>`.
    View(&'a str),
}

/// Replaces `target` (if it exists) in one transaction, keeping the views that depend on it;
/// see the module documentation.
pub async fn swap(
    conn: &mut PgConnection,
    target: &Relation,
    replacement: Replacement<'_>,
) -> Result<(), sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let existing = relation_kind(&mut tx, target).await?;
    let mut dependents = Vec::new();
    if let Some(kind) = existing {
        execute(&mut tx, "SET LOCAL search_path TO pg_catalog").await?;
        let rows: Vec<(String, String, String, String, i32)> = sqlx::query_as(DEPENDENT_VIEWS)
            .bind(&target.schema)
            .bind(&target.name)
            .fetch_all(&mut *tx)
            .await?;
        execute(&mut tx, "SET LOCAL search_path TO DEFAULT").await?;
        dependents = rows
            .into_iter()
            .map(|(schema, name, kind, definition, _)| DependentView {
                relation: Relation::new(schema, name),
                materialized: kind == "m",
                definition,
            })
            .collect();
        execute(
            &mut tx,
            &format!("DROP {} {target} CASCADE", kind.drop_keyword()),
        )
        .await?;
    }
    match replacement {
        Replacement::RenameFrom(built) => {
            execute(
                &mut tx,
                &format!(
                    "ALTER TABLE {built} RENAME TO {}",
                    quote_ident(&target.name)
                ),
            )
            .await?;
        }
        Replacement::View(sql) => {
            execute(&mut tx, &format!("CREATE VIEW {target} AS\n{sql}")).await?;
        }
    }
    for view in &dependents {
        let keyword = if view.materialized {
            "MATERIALIZED VIEW"
        } else {
            "VIEW"
        };
        let definition = view.definition.trim_end().trim_end_matches(';');
        execute(
            &mut tx,
            &format!("CREATE {keyword} {} AS\n{definition}", view.relation),
        )
        .await?;
    }
    tx.commit().await
}
