//! Data tests: the generic ones of schema.yml (not_null, unique, accepted_values,
//! relationships) as queries returning the failing rows, and singular tests, which are such
//! queries already. A test passes when its query returns no row; the failures are counted.

use sqlx::{AssertSqlSafe, PgConnection};

use super::project::{GenericKind, GenericTest};
use super::render::{Relation, quote_ident};

/// A query returning the failing rows; `values` is bound as `$1` (a text array).
#[derive(Debug, Clone, PartialEq)]
pub struct TestQuery {
    pub sql: String,
    pub values: Option<Vec<String>>,
}

/// The failing-rows query of a generic test on `model`; `to` is the relationships target.
pub fn generic_query(test: &GenericTest, model: &Relation, to: Option<&Relation>) -> TestQuery {
    let col = quote_ident(&test.column);
    let from = |alias: &str| match &test.where_clause {
        Some(condition) => format!("(SELECT * FROM {model} WHERE {condition}) AS {alias}"),
        None => format!("{model} AS {alias}"),
    };
    let mut values = None;
    let sql = match &test.kind {
        GenericKind::NotNull => {
            format!("SELECT t.{col} FROM {} WHERE t.{col} IS NULL", from("t"))
        }
        GenericKind::Unique => format!(
            "SELECT t.{col}, count(*) AS occurrences FROM {} WHERE t.{col} IS NOT NULL \
             GROUP BY t.{col} HAVING count(*) > 1",
            from("t")
        ),
        GenericKind::AcceptedValues(accepted) => {
            values = Some(accepted.clone());
            format!(
                "SELECT t.{col} FROM {} WHERE t.{col} IS NOT NULL AND t.{col}::text <> ALL($1::text[])",
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
    };
    TestQuery { sql, values }
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
        );
        assert_eq!(q.values, Some(vec!["a".to_string()]));
    }
}
