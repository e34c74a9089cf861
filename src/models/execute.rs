//! Running a plan: nodes start as soon as everything they wait for has finished, up to
//! `threads` at a time. A seed or model that fails (or is skipped), and an error-level test
//! that fails, skip everything that waits for them; other branches go on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::config::Severity;
use super::data_tests::{
    TestQuery, TestScope, UNIQUE_INDEX_PASS, Watermarks, count_failures, count_statement,
    definition_hash, generic_query, high_water, last_pass_watermarks, plan_cost, unique_index,
    unique_per_value_query,
};
use super::materialize::{self, SqlSite};
use super::plan::{Node, NodeKind, NodeSpec, Plan, TestSpec, loaded_at_field};
use super::project::{GenericKind, RelationRef};
use super::render::{ChangedRows, Relation, RenderScope, quote_ident, render, render_generic_test};
use super::results::{NodeResult, RunSummary, Status, TestCoverage, record};

use super::seeds::load_seed;
use super::{BuildOptions, ModelError, Progress};

fn test_site<'a>(node: &'a Node, sql: &'a str) -> SqlSite<'a> {
    SqlSite {
        what: "test",
        name: &node.name,
        file: &node.path,
        sql,
        compiled: None,
    }
}

/// What a test found, and which rows it checked.
struct TestOutcome {
    status: Status,
    failures: u64,
    coverage: Option<TestCoverage>,
    /// Why it passed without reading rows, if it did.
    message: Option<String>,
}

struct Context {
    pool: PgPool,
    plan: Arc<Plan>,
    options: BuildOptions,
    swap_lock: tokio::sync::Mutex<()>,
}

impl Context {
    /// What templates see when rendered during the build; `changed` is what `changed_rows()`
    /// reads (`None`: every relation whole).
    fn render_scope<'a>(
        &'a self,
        changed: Option<&'a BTreeMap<Relation, ChangedRows>>,
    ) -> RenderScope<'a> {
        RenderScope {
            schema: &self.plan.schema,
            nodes: &self.plan.relations,
            sources: &self.plan.project.sources,
            vars: &self.plan.vars,
            changed,
            jinja: &self.plan.jinja,
        }
    }
}

/// Runs every node of `plan.order`; the summary holds one result per node.
pub async fn execute(
    pool: &PgPool,
    plan: Arc<Plan>,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<RunSummary, ModelError> {
    let run_id = Uuid::new_v4();
    let started_at = Utc::now();
    let clock = Instant::now();
    let schemas: BTreeSet<&str> = plan
        .order
        .iter()
        .filter_map(|&i| plan.nodes[i].relation.as_ref())
        .map(|r| r.schema.as_str())
        .collect();
    for schema in schemas {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        )))
        .execute(pool)
        .await
        .map_err(ModelError::database("creating the models' schema"))?;
    }
    let context = Arc::new(Context {
        pool: pool.clone(),
        plan: plan.clone(),
        options: options.clone(),
        swap_lock: tokio::sync::Mutex::new(()),
    });

    let total = plan.order.len();
    progress.planned(total);
    let position: BTreeMap<usize, usize> = plan
        .order
        .iter()
        .enumerate()
        .map(|(p, &i)| (i, p))
        .collect();
    let mut waiting: BTreeMap<usize, usize> = BTreeMap::new();
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in &plan.order {
        let parents = plan.run_parents.get(&i).map_or(&[][..], Vec::as_slice);
        waiting.insert(i, parents.len());
        for &p in parents {
            children.entry(p).or_default().push(i);
        }
    }
    // Ready nodes by build-order position, so the order is stable with one thread.
    let mut ready: BTreeSet<(usize, usize)> = waiting
        .iter()
        .filter(|&(_, &n)| n == 0)
        .map(|(&i, _)| (position[&i], i))
        .collect();
    let mut outcome: BTreeMap<usize, (Status, Option<Severity>)> = BTreeMap::new();
    let mut results = Vec::with_capacity(total);
    let mut running: JoinSet<(usize, NodeResult)> = JoinSet::new();
    let mut tasks: std::collections::HashMap<tokio::task::Id, usize> =
        std::collections::HashMap::new();
    let threads = options.threads.max(1);

    loop {
        while running.len() < threads {
            let Some((_, node)) = ready.pop_first() else {
                break;
            };
            let blocker = plan
                .run_parents
                .get(&node)
                .into_iter()
                .flatten()
                .find(|p| blocks(&plan.nodes[**p], outcome.get(p)));
            if let Some(&blocker) = blocker {
                let result = skipped(&plan.nodes[node], &plan.nodes[blocker]);
                finish(
                    &context,
                    run_id,
                    node,
                    result,
                    &mut outcome,
                    &mut results,
                    progress,
                    total,
                    &children,
                    &mut waiting,
                    &mut ready,
                    &position,
                )
                .await;
                continue;
            }
            let context = context.clone();
            let handle = running.spawn(async move { (node, run_node(&context, node).await) });
            tasks.insert(handle.id(), node);
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        let (node, result) = match joined {
            Ok((_, done)) => done,
            Err(e) => {
                let node = tasks[&e.id()];
                let mut result = base_result(&plan.nodes[node]);
                result.status = Status::Error;
                result.message = Some(format!("the build task failed: {e}"));
                (node, result)
            }
        };
        finish(
            &context,
            run_id,
            node,
            result,
            &mut outcome,
            &mut results,
            progress,
            total,
            &children,
            &mut waiting,
            &mut ready,
            &position,
        )
        .await;
    }

    let summary = RunSummary {
        run_id,
        started_at,
        finished_at: Utc::now(),
        elapsed: clock.elapsed(),
        results,
    };
    if let Some(dir) = &options.target_dir {
        summary.write_json(dir)?;
    }
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    context: &Context,
    run_id: Uuid,
    node: usize,
    result: NodeResult,
    outcome: &mut BTreeMap<usize, (Status, Option<Severity>)>,
    results: &mut Vec<NodeResult>,
    progress: &dyn Progress,
    total: usize,
    children: &BTreeMap<usize, Vec<usize>>,
    waiting: &mut BTreeMap<usize, usize>,
    ready: &mut BTreeSet<(usize, usize)>,
    position: &BTreeMap<usize, usize>,
) {
    if let Err(e) = record(&context.pool, run_id, &result).await {
        tracing::warn!(error = %e, node = %result.name, "could not append to the run history");
    }
    outcome.insert(node, (result.status, result.severity));
    progress.finished(results.len() + 1, total, &result);
    results.push(result);
    for &child in children.get(&node).into_iter().flatten() {
        let left = waiting.entry(child).or_default();
        *left = left.saturating_sub(1);
        if *left == 0 {
            ready.insert((position[&child], child));
        }
    }
}

/// Whether a finished parent keeps its children from running.
fn blocks(parent: &Node, outcome: Option<&(Status, Option<Severity>)>) -> bool {
    let Some(&(status, severity)) = outcome else {
        return false;
    };
    match parent.kind {
        NodeKind::Seed | NodeKind::Model => matches!(status, Status::Error | Status::Skipped),
        NodeKind::Test => {
            status == Status::Skipped
                || (matches!(status, Status::Fail | Status::Error)
                    && severity.unwrap_or_default() == Severity::Error)
        }
    }
}

fn base_result(node: &Node) -> NodeResult {
    let (severity, model, column) = match &node.spec {
        NodeSpec::Test {
            spec: TestSpec::Generic(test),
            severity,
            ..
        } => (
            Some(*severity),
            Some(test.model.clone()),
            Some(test.column.clone()).filter(|c| !c.is_empty()),
        ),
        NodeSpec::Test {
            severity, attached, ..
        } => (Some(*severity), attached.first().cloned(), None),
        _ => (None, None, None),
    };
    NodeResult {
        name: node.name.clone(),
        kind: node.kind,
        status: Status::Skipped,
        materialization: match node.kind {
            NodeKind::Seed => Some("seed".into()),
            _ => node.materialization().map(|m| m.to_string()),
        },
        relation: node.relation.as_ref().map(Relation::display_name),
        file: node.path.clone(),
        rows: None,
        failures: None,
        severity,
        model,
        column,
        message: None,
        coverage: None,
        started_at: Utc::now(),
        duration: Duration::ZERO,
    }
}

fn skipped(node: &Node, blocker: &Node) -> NodeResult {
    NodeResult {
        message: Some(format!(
            "skipped: upstream {} {} did not succeed",
            blocker.kind.as_str(),
            blocker.name
        )),
        ..base_result(node)
    }
}

async fn run_node(context: &Context, index: usize) -> NodeResult {
    let node = &context.plan.nodes[index];
    let mut result = base_result(node);
    let clock = Instant::now();
    let outcome = match &node.spec {
        NodeSpec::Seed { .. } => run_seed(context, node).await,
        NodeSpec::Model { .. } => run_model(context, node).await,
        NodeSpec::Test { spec, severity, .. } => run_test(context, node, spec, *severity)
            .await
            .map(|outcome| {
                result.coverage = outcome.coverage;
                result.message = outcome.message;
                (outcome.status, Some(outcome.failures))
            }),
    };
    result.duration = clock.elapsed();
    match outcome {
        Ok((status, count)) => {
            result.status = status;
            match node.kind {
                NodeKind::Test => {
                    result.failures = count;
                    if let Some(n) = count.filter(|n| *n > 0) {
                        result.message = Some(format!("{n} failing rows"));
                    }
                }
                _ => result.rows = count,
            }
        }
        Err(error) => {
            result.status = Status::Error;
            result.message = Some(error.to_string());
        }
    }
    result
}

async fn run_seed(context: &Context, node: &Node) -> Result<(Status, Option<u64>), ModelError> {
    let NodeSpec::Seed {
        column_types,
        quote_columns,
        delimiter,
    } = &node.spec
    else {
        unreachable!("run_seed is called for seeds");
    };
    let target = node.relation.as_ref().expect("seeds have a relation");
    let mut conn = context
        .pool
        .acquire()
        .await
        .map_err(ModelError::database("getting a connection"))?;
    let outcome = load_seed(
        &mut conn,
        &node.name,
        &node.path,
        target,
        &super::seeds::SeedFormat {
            column_types: column_types.clone(),
            quote_columns: *quote_columns,
            delimiter: *delimiter,
        },
        context.options.full_refresh,
        &context.swap_lock,
    )
    .await?;
    Ok((Status::Success, outcome.rows))
}

async fn run_model(context: &Context, node: &Node) -> Result<(Status, Option<u64>), ModelError> {
    let NodeSpec::Model {
        config,
        template,
        rendered,
    } = &node.spec
    else {
        unreachable!("run_model is called for models");
    };
    let target = node.relation.as_ref().expect("models have a relation");
    let mut conn = context
        .pool
        .acquire()
        .await
        .map_err(ModelError::database("getting a connection"))?;
    let incremental =
        materialize::is_incremental(&mut conn, config, target, context.options.full_refresh)
            .await
            .map_err(|e| {
                SqlSite {
                    what: "model",
                    name: &node.name,
                    file: &node.path,
                    sql: "",
                    compiled: None,
                }
                .error("", e)
            })?;
    let scope = context.render_scope(None);
    let sql = if incremental {
        render(&scope, &node.name, &node.path, template, true)?.sql
    } else {
        rendered.sql.clone()
    };
    let compiled = write_compiled(context, node, &sql)?;
    let site = SqlSite {
        what: "model",
        name: &node.name,
        file: &node.path,
        sql: &sql,
        compiled: compiled.as_deref(),
    };
    let header = match &config.sql_header {
        Some(header) => Some(render(&scope, &node.name, &node.path, header, incremental)?.sql),
        None => None,
    };
    for hook in &config.pre_hook {
        let hook = render(&scope, &node.name, &node.path, hook, incremental)?.sql;
        if hook.trim().is_empty() {
            continue;
        }
        let site = SqlSite { sql: &hook, ..site };
        materialize::run(&mut conn, &site, &hook).await?;
    }
    let built = materialize::materialize(
        &mut conn,
        config,
        target,
        &site,
        header.as_deref(),
        incremental,
        &context.swap_lock,
    )
    .await?;
    for hook in &config.post_hook {
        let hook = render(&scope, &node.name, &node.path, hook, incremental)?.sql;
        // A hook inside `{% if … %}` may render to nothing this time.
        if hook.trim().is_empty() {
            continue;
        }
        let site = SqlSite { sql: &hook, ..site };
        materialize::run(&mut conn, &site, &hook).await?;
    }
    Ok((Status::Success, built.rows))
}

/// `<target-dir>/compiled/<model>.sql`, so that error positions can be looked up.
fn write_compiled(
    context: &Context,
    node: &Node,
    sql: &str,
) -> Result<Option<PathBuf>, ModelError> {
    let Some(dir) = &context.options.target_dir else {
        return Ok(None);
    };
    let dir = dir.join("compiled");
    let path = dir.join(format!("{}.sql", node.name));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, format!("{sql}\n")))
        .map_err(|source| ModelError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(Some(path))
}

async fn run_test(
    context: &Context,
    node: &Node,
    spec: &TestSpec,
    severity: Severity,
) -> Result<TestOutcome, ModelError> {
    let plan = &context.plan;
    // What the test may read by `loaded_at_field` (see `data_tests`): the model a generic
    // test is declared on, the `changed_rows()` of a singular test.
    let relation_of = |name: &str| {
        plan.relations
            .get(name)
            .cloned()
            .unwrap_or_else(|| Relation::new(plan.schema.clone(), name))
    };
    let scoped: Vec<(Relation, String)> = match spec {
        // The project's own generic tests read the model as they please: every row.
        TestSpec::Generic(test) if matches!(test.kind, GenericKind::Custom { .. }) => Vec::new(),
        TestSpec::Generic(test) => vec![relation_of(&test.model)],
        TestSpec::Singular { changed, .. } => changed.clone(),
    }
    .into_iter()
    .filter_map(|relation| {
        let field = loaded_at_field(&plan.nodes, &plan.schema, &relation)?.to_string();
        Some((relation, field))
    })
    .collect();
    let query =
        |changed: Option<&BTreeMap<Relation, ChangedRows>>| -> Result<TestQuery, ModelError> {
            Ok(match spec {
                TestSpec::Singular { sql, .. } if changed.is_none() => TestQuery {
                    sql: sql.clone(),
                    values: None,
                },
                TestSpec::Singular { template, .. } => {
                    let scope = context.render_scope(changed);
                    TestQuery {
                        sql: render(&scope, &node.name, &node.path, template, false)?.sql,
                        values: None,
                    }
                }
                TestSpec::Generic(test) => {
                    let model = relation_of(&test.model);
                    if let GenericKind::Custom {
                        test: macro_name,
                        args,
                    } = &test.kind
                    {
                        return custom_test_query(context, node, test, &model, macro_name, args);
                    }
                    let to = match &test.kind {
                        GenericKind::Relationships { to, .. } => Some(match to {
                            RelationRef::Ref(name) => relation_of(name),
                            RelationRef::Source(source, table) => {
                                let found = &plan.project.sources[&(source.clone(), table.clone())];
                                Relation::new(found.schema.clone(), found.identifier.clone())
                            }
                        }),
                        _ => None,
                    };
                    generic_query(
                        test,
                        &model,
                        to.as_ref(),
                        changed.and_then(|c| c.get(&model)),
                    )
                }
            })
        };
    let every_row = query(None)?;
    let mut conn = context
        .pool
        .acquire()
        .await
        .map_err(ModelError::database("getting a connection"))?;
    if let TestSpec::Generic(test) = spec
        && test.kind == GenericKind::Unique
    {
        let model = relation_of(&test.model);
        if let Some(index) = unique_index(&mut conn, &model, &test.column)
            .await
            .map_err(|e| test_site(node, "").error("", e))?
        {
            return Ok(TestOutcome {
                status: Status::Pass,
                failures: 0,
                coverage: None,
                message: Some(format!("{UNIQUE_INDEX_PASS} {index}")),
            });
        }
    }

    let (coverage, changed) = if scoped.is_empty() {
        (None, BTreeMap::new())
    } else {
        let (coverage, changed) = coverage(&mut conn, context, node, &scoped, &every_row).await?;
        (Some(coverage), changed)
    };
    let query = if changed.is_empty() {
        every_row
    } else {
        let scoped = query(Some(&changed))?;
        // `unique` has a second shape; the planner picks (see `unique_per_value_query`).
        let per_value = match spec {
            TestSpec::Generic(test) => changed
                .values()
                .next()
                .and_then(|rows| unique_per_value_query(test, &relation_of(&test.model), rows)),
            TestSpec::Singular { .. } => None,
        };
        match per_value {
            Some(per_value) => cheaper(&mut conn, node, scoped, per_value).await?,
            None => scoped,
        }
    };
    let failures = count_failures(&mut conn, &query)
        .await
        .map_err(|e| test_site(node, &query.sql).error(&count_statement(&query), e))?;
    let failures = u64::try_from(failures).unwrap_or_default();
    let status = match (failures, severity) {
        (0, _) => Status::Pass,
        (_, Severity::Warn) => Status::Warn,
        (_, Severity::Error) => Status::Fail,
    };
    Ok(TestOutcome {
        status,
        failures,
        coverage,
        message: None,
    })
}

/// The failing-rows query of a generic test the project defines: its macro rendered with the
/// model (as `(select * from model where …) dbt_subquery` when the test has a `where`, as dbt
/// does), the column and the YAML arguments.
fn custom_test_query(
    context: &Context,
    node: &Node,
    test: &super::project::GenericTest,
    model: &Relation,
    macro_name: &str,
    args: &serde_yaml::Mapping,
) -> Result<TestQuery, ModelError> {
    let model_value = match &test.where_clause {
        Some(condition) => minijinja::Value::from_safe_string(format!(
            "(select * from {model} where {condition}) dbt_subquery"
        )),
        None => minijinja::Value::from_object(model.clone()),
    };
    let column = Some(test.column.as_str()).filter(|c| !c.is_empty());
    let rendered = render_generic_test(
        &context.render_scope(None),
        &node.name,
        &node.path,
        macro_name,
        model_value,
        column,
        args,
    )?;
    Ok(TestQuery {
        sql: rendered.sql,
        values: None,
    })
}

/// Which rows a test reads by `loaded_at_field` (`scoped`: relation and field), and what it
/// records for the next run; see `data_tests`. The rows are those after the marks of its last
/// pass with the same definition (minus the lookback) with `--test-scope changed`, when every
/// scoped relation has one; otherwise none, and the test reads every row.
async fn coverage(
    conn: &mut sqlx::PgConnection,
    context: &Context,
    node: &Node,
    scoped: &[(Relation, String)],
    every_row: &TestQuery,
) -> Result<(TestCoverage, BTreeMap<Relation, ChangedRows>), ModelError> {
    let plan = &context.plan;
    let options = &context.options;
    let model_sql = |relation: &Relation| {
        plan.nodes
            .iter()
            .find_map(|n| match &n.spec {
                NodeSpec::Model { rendered, .. } if n.name == relation.name => {
                    Some(rendered.sql.as_str())
                }
                _ => None,
            })
            .unwrap_or_default()
    };
    let definition = definition_hash(
        every_row,
        scoped
            .iter()
            .map(|(relation, field)| (relation, field.as_str(), model_sql(relation))),
    );
    let failed = |e| test_site(node, "").error("", e);
    let previous = if options.test_scope == TestScope::Changed && !options.full_refresh {
        last_pass_watermarks(conn, &node.name, &definition)
            .await
            .map_err(failed)?
    } else {
        None
    };
    let lookback =
        chrono::Duration::from_std(options.test_lookback).unwrap_or(chrono::Duration::MAX);
    let mut watermarks = Watermarks::new();
    let mut changed = BTreeMap::new();
    for (relation, field) in scoped {
        let before = previous
            .as_ref()
            .and_then(|p| p.get(&relation.display_name()).copied());
        let since = before.map(|mark| ChangedRows {
            field: field.clone(),
            since: mark.checked_sub_signed(lookback).unwrap_or(mark),
        });
        // Read before the test, so that the test sees at least what the mark covers.
        let seen = high_water(conn, relation, field, since.as_ref())
            .await
            .map_err(failed)?;
        if let Some(mark) = seen.max(before) {
            watermarks.insert(relation.display_name(), mark);
        }
        if let Some(rows) = since {
            changed.insert(relation.clone(), rows);
        }
    }
    // Scoped only when every relation it can scope has a mark to start from.
    if changed.len() < scoped.len() {
        changed.clear();
    }
    let coverage = TestCoverage {
        since: changed.values().map(|rows| rows.since).min(),
        watermarks,
        definition,
    };
    Ok((coverage, changed))
}

/// Whichever of two queries for the same failing rows the planner costs lower.
async fn cheaper(
    conn: &mut sqlx::PgConnection,
    node: &Node,
    a: TestQuery,
    b: TestQuery,
) -> Result<TestQuery, ModelError> {
    let a_cost = plan_cost(conn, &a)
        .await
        .map_err(|e| test_site(node, &a.sql).error("", e))?;
    let b_cost = plan_cost(conn, &b)
        .await
        .map_err(|e| test_site(node, &b.sql).error("", e))?;
    Ok(if b_cost < a_cost { b } else { a })
}
