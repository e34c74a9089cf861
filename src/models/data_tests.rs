//! Data tests: the generic ones of schema.yml (not_null, unique, accepted_values,
//! relationships) as queries returning the failing rows, and singular tests, which are such
//! queries already. A test passes when its query returns no row; the failures are counted.
//!
//! # Test scope
//!
//! dbt checks every row every time ([`TestScope::All`], the default). An incremental build
//! after a few thousand new rows then spends most of its time re-checking millions of rows that
//! passed before. With [`TestScope::Changed`], a test on a model that declares a
//! `loaded_at_field` (a column saying when a row was loaded, with the promise that a row whose
//! content changes gets a later value) checks only the rows loaded since the test last passed:
//!
//! - Each run records, per relation a test reads that way, the latest `loaded_at_field` value
//!   it saw (its high-water mark), with a hash of the test's definition (its SQL and the SQL of
//!   those models).
//! - The next run with `Changed` checks the rows whose `loaded_at_field` is later than that mark
//!   minus a lookback (for loads that commit out of order), provided the test passed then with
//!   the same definition. Otherwise (first run, a changed test or model, a failure since,
//!   `--full-refresh`) it checks everything.
//! - Generic tests scope the model they are declared on: `not_null`, `accepted_values` and
//!   `relationships` check its recent rows (against the whole parent); `unique` checks the
//!   values of its recent rows against the whole model. Singular tests scope what they read
//!   through `changed_rows(ref('m'))`.
//!
//! What this does not see: a parent that loses keys older rows point at (relationships), and
//! rows changed without a later `loaded_at_field`. A run with `All` (the default) checks those.
//!
//! # Unique indexes
//!
//! In either scope, a `unique` test on a column that a valid unique index of the table covers
//! alone (not partial, not an expression) passes without reading the table: PostgreSQL refuses
//! any duplicate, so a duplicate fails the build that writes it instead.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgConnection};

use super::project::{GenericKind, GenericTest};
use super::render::{ChangedRows, Relation, quote_ident};

/// Which rows data tests check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TestScope {
    /// Every row, every run (dbt's way).
    #[default]
    All,
    /// On models with a `loaded_at_field`, the rows loaded since the test last passed (see the
    /// module documentation); everything else in full.
    Changed,
}

impl TestScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Changed => "changed",
        }
    }
}

/// The definition a test's high-water marks belong to: its query with every row in scope (SQL
/// and bound values), and for each relation it may scope, that model's SQL and
/// `loaded_at_field`.
pub fn definition_hash<'a>(
    full: &TestQuery,
    scoped: impl IntoIterator<Item = (&'a Relation, &'a str, &'a str)>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(full.sql.as_bytes());
    for value in full.values.iter().flatten() {
        hasher.update([1u8]);
        hasher.update(value.as_bytes());
    }
    for (relation, field, model_sql) in scoped {
        for part in [relation.display_name().as_str(), field, model_sql] {
            hasher.update([0u8]);
            hasher.update(part.as_bytes());
        }
    }
    format!("{:x}", hasher.finalize())
}

/// High-water marks by relation (`schema.name`), as stored in `etl.test_results.watermarks`.
pub type Watermarks = BTreeMap<String, DateTime<Utc>>;

/// The high-water marks recorded when the test last passed with this definition, if it did.
pub async fn last_pass_watermarks(
    conn: &mut PgConnection,
    test_name: &str,
    definition: &str,
) -> Result<Option<Watermarks>, sqlx::Error> {
    let found: Option<Option<sqlx::types::Json<Watermarks>>> = sqlx::query_scalar(
        "SELECT watermarks FROM etl.test_results \
         WHERE test_name = $1 AND definition_hash = $2 AND status = 'pass' \
         ORDER BY started_at DESC LIMIT 1",
    )
    .bind(test_name)
    .bind(definition)
    .fetch_optional(conn)
    .await?;
    Ok(found.flatten().map(|json| json.0))
}

/// The latest `field` value of `relation` (of its rows after `since`, when given).
pub async fn high_water(
    conn: &mut PgConnection,
    relation: &Relation,
    field: &str,
    since: Option<&ChangedRows>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let field = quote_ident(field);
    let statement = match since {
        Some(rows) => format!(
            "SELECT max({field})::timestamptz FROM {relation} WHERE {field} > {}",
            rows.since_literal()
        ),
        None => format!("SELECT max({field})::timestamptz FROM {relation}"),
    };
    sqlx::query_scalar(AssertSqlSafe(statement))
        .persistent(false)
        .fetch_one(conn)
        .await
}

/// A query returning the failing rows; `values` is bound as `$1` (a text array).
#[derive(Debug, Clone, PartialEq)]
pub struct TestQuery {
    pub sql: String,
    pub values: Option<Vec<String>>,
}

/// The failing-rows query of a generic test on `model`; `to` is the relationships target.
/// With `changed`, only the model's rows loaded since then are checked (for `unique`, their
/// values against every row).
pub fn generic_query(
    test: &GenericTest,
    model: &Relation,
    to: Option<&Relation>,
    changed: Option<&ChangedRows>,
) -> TestQuery {
    let col = quote_ident(&test.column);
    let every_row = |alias: &str| match &test.where_clause {
        Some(condition) => format!("(SELECT * FROM {model} WHERE {condition}) AS {alias}"),
        None => format!("{model} AS {alias}"),
    };
    let from = |alias: &str| match (changed, &test.where_clause) {
        (None, _) => every_row(alias),
        (Some(rows), Some(condition)) => format!(
            "(SELECT * FROM {model} WHERE ({condition}) AND {} > {}) AS {alias}",
            quote_ident(&rows.field),
            rows.since_literal()
        ),
        (Some(rows), None) => format!("{} AS {alias}", rows.subquery(model)),
    };
    let mut values = None;
    let sql = match &test.kind {
        GenericKind::NotNull => {
            format!("SELECT t.{col} FROM {} WHERE t.{col} IS NULL", from("t"))
        }
        GenericKind::Unique if changed.is_some() => format!(
            "SELECT t.{col}, count(*) AS occurrences FROM {} WHERE t.{col} IS NOT NULL \
             AND t.{col} IN (SELECT c.{col} FROM {}) \
             GROUP BY t.{col} HAVING count(*) > 1",
            every_row("t"),
            from("c")
        ),
        GenericKind::Unique => format!(
            "SELECT t.{col}, count(*) AS occurrences FROM {} WHERE t.{col} IS NOT NULL \
             GROUP BY t.{col} HAVING count(*) > 1",
            from("t")
        ),
        // One failing row per value, as dbt counts them.
        GenericKind::AcceptedValues(accepted) => {
            values = Some(accepted.clone());
            format!(
                "SELECT t.{col}, count(*) AS occurrences FROM {} WHERE t.{col} IS NOT NULL \
                 AND t.{col}::text <> ALL($1::text[]) GROUP BY t.{col}",
                from("t")
            )
        }
        GenericKind::Relationships { field, .. } => {
            let field = quote_ident(field);
            let to = to.map_or_else(|| "NULL".to_string(), ToString::to_string);
            format!(
                "SELECT child.{col} FROM {} LEFT JOIN {to} AS parent ON child.{col} = parent.{field} \
                 WHERE child.{col} IS NOT NULL AND parent.{field} IS NULL",
                from("child")
            )
        }
        GenericKind::Custom { .. } => {
            unreachable!("the project's generic tests are rendered from their macro")
        }
    };
    TestQuery { sql, values }
}

/// For `unique` with `changed`: the same failing rows as [`generic_query`], counted value by
/// value (lateral). This reads the model once per recent value, by an index on the column
/// where there is one, also through a view whose joins keep PostgreSQL from pushing an
/// IN-list down to the tables' indexes; without an index it is much worse. The runner runs
/// whichever of the two the planner costs lower ([`plan_cost`]).
pub fn unique_per_value_query(
    test: &GenericTest,
    model: &Relation,
    changed: &ChangedRows,
) -> Option<TestQuery> {
    if test.kind != GenericKind::Unique {
        return None;
    }
    let col = quote_ident(&test.column);
    let (every_row, recent) = match &test.where_clause {
        Some(condition) => (
            format!("(SELECT * FROM {model} WHERE {condition})"),
            format!(
                "(SELECT * FROM {model} WHERE ({condition}) AND {} > {})",
                quote_ident(&changed.field),
                changed.since_literal()
            ),
        ),
        None => (model.to_string(), changed.subquery(model)),
    };
    Some(TestQuery {
        sql: format!(
            "SELECT c.{col}, n.occurrences \
             FROM (SELECT DISTINCT r.{col} FROM {recent} AS r WHERE r.{col} IS NOT NULL) AS c \
             CROSS JOIN LATERAL (SELECT count(*) AS occurrences FROM {every_row} AS t \
             WHERE t.{col} = c.{col}) AS n \
             WHERE n.occurrences > 1"
        ),
        values: None,
    })
}

/// How the message of a `unique` test that a unique index answered begins.
pub const UNIQUE_INDEX_PASS: &str = "guaranteed by the unique index";

/// The unique index that makes `column` of `relation` unique, if there is one (a table's, see
/// `sql/unique_index.sql`): a `unique` test on it then passes without reading a row.
pub async fn unique_index(
    conn: &mut PgConnection,
    relation: &Relation,
    column: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(include_str!("sql/unique_index.sql"))
        .bind(&relation.schema)
        .bind(&relation.name)
        .bind(column)
        .fetch_optional(conn)
        .await
}

/// The planner's total cost of counting a test's failing rows (EXPLAIN, nothing runs).
pub async fn plan_cost(conn: &mut PgConnection, query: &TestQuery) -> Result<f64, sqlx::Error> {
    let statement = format!("EXPLAIN (FORMAT JSON) {}", count_statement(query));
    let mut q =
        sqlx::query_scalar::<_, serde_json::Value>(AssertSqlSafe(statement)).persistent(false);
    if let Some(values) = &query.values {
        q = q.bind(values.clone());
    }
    let plan = q.fetch_one(conn).await?;
    Ok(plan[0]["Plan"]["Total Cost"].as_f64().unwrap_or(f64::MAX))
}

/// The statement that counts a test's failing rows.
pub fn count_statement(query: &TestQuery) -> String {
    format!("SELECT count(*) FROM (\n{}\n) AS etl_test_rows", query.sql)
}

/// Runs the test; the number of failing rows.
pub async fn count_failures(
    conn: &mut PgConnection,
    query: &TestQuery,
) -> Result<i64, sqlx::Error> {
    let statement = count_statement(query);
    let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(statement)).persistent(false);
    if let Some(values) = &query.values {
        q = q.bind(values.clone());
    }
    q.fetch_one(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::config::Severity;
    use crate::models::project::RelationRef;

    fn test(kind: GenericKind) -> GenericTest {
        GenericTest {
            name: "t".into(),
            model: "m".into(),
            column: "c".into(),
            kind,
            severity: Severity::Error,
            where_clause: None,
            file: "schema.yml".into(),
        }
    }

    #[test]
    fn relationships_join_the_target() {
        let m = Relation::new("analytics", "m");
        let d = Relation::new("analytics", "d");
        let q = generic_query(
            &test(GenericKind::Relationships {
                to: RelationRef::Ref("d".into()),
                field: "id".into(),
            }),
            &m,
            Some(&d),
            None,
        );
        assert!(
            q.sql
                .contains("LEFT JOIN \"analytics\".\"d\" AS parent ON child.\"c\" = parent.\"id\"")
        );
        assert_eq!(q.values, None);
        let q = generic_query(
            &test(GenericKind::AcceptedValues(vec!["a".into()])),
            &m,
            None,
            None,
        );
        assert_eq!(q.values, Some(vec!["a".to_string()]));
    }

    #[test]
    fn changed_scope_reads_recent_rows_and_unique_compares_them_with_all() {
        let m = Relation::new("analytics", "m");
        let rows = ChangedRows {
            field: "_loaded_at".into(),
            since: DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        let recent = "(SELECT * FROM \"analytics\".\"m\" WHERE \"_loaded_at\" > \
                      '2025-01-02T03:04:05.000000Z'::timestamptz)";
        let q = generic_query(&test(GenericKind::NotNull), &m, None, Some(&rows));
        assert_eq!(
            q.sql,
            format!("SELECT t.\"c\" FROM {recent} AS t WHERE t.\"c\" IS NULL")
        );
        let q = generic_query(&test(GenericKind::Unique), &m, None, Some(&rows));
        assert!(
            q.sql.starts_with(
                "SELECT t.\"c\", count(*) AS occurrences FROM \"analytics\".\"m\" AS t"
            )
        );
        assert!(
            q.sql
                .contains(&format!("t.\"c\" IN (SELECT c.\"c\" FROM {recent} AS c)"))
        );
        let mut with_where = test(GenericKind::NotNull);
        with_where.where_clause = Some("x > 1".into());
        let q = generic_query(&with_where, &m, None, Some(&rows));
        assert!(
            q.sql
                .contains("WHERE (x > 1) AND \"_loaded_at\" > '2025-01-02")
        );
    }

    #[test]
    fn unique_can_also_count_value_by_value() {
        let m = Relation::new("analytics", "m");
        let rows = ChangedRows {
            field: "_loaded_at".into(),
            since: DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        assert!(unique_per_value_query(&test(GenericKind::NotNull), &m, &rows).is_none());
        let q = unique_per_value_query(&test(GenericKind::Unique), &m, &rows).unwrap();
        assert!(q.sql.contains("CROSS JOIN LATERAL (SELECT count(*) AS occurrences FROM \"analytics\".\"m\" AS t WHERE t.\"c\" = c.\"c\")"));
        assert!(
            q.sql.contains(
                "WHERE \"_loaded_at\" > '2025-01-02T03:04:05.000000Z'::timestamptz) AS r"
            )
        );
    }

    #[test]
    fn the_definition_hash_follows_the_test_and_the_models() {
        let m = Relation::new("analytics", "m");
        let query = |sql: &str, values: Option<&[&str]>| TestQuery {
            sql: sql.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        };
        let one = query("select 1", None);
        let a = definition_hash(&one, [(&m, "_loaded_at", "select x")]);
        assert_eq!(a, definition_hash(&one, [(&m, "_loaded_at", "select x")]));
        let two = query("select 2", None);
        assert_ne!(a, definition_hash(&two, [(&m, "_loaded_at", "select x")]));
        assert_ne!(a, definition_hash(&one, [(&m, "_loaded_at", "select y")]));
        assert_ne!(a, definition_hash(&one, [(&m, "loaded_at", "select x")]));
        let values = |v: &[&str]| definition_hash(&query("select 1", Some(v)), []);
        assert_ne!(values(&["a", "b"]), values(&["a", "b", "c"]));
        assert_ne!(values(&["ab"]), values(&["a", "b"]));
    }
}
