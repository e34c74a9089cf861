//! From a models folder to an ordered plan, without a database: discover, render (with
//! `is_incremental()` false), wire the DAG, check refs and cycles, apply the selection.
//!
//! Execution order: a node runs after its parents; a model also waits for the data tests of its
//! parents, so that a failing error-level test can keep bad data from flowing downstream (dbt's
//! `build`). Generic tests are attached to the model they are declared on; a singular test is
//! attached to every model it refs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::config::{ConfigValue, Materialization, ModelConfig, RawConfig, Severity};
use super::dbt_project::folder_config;
use super::graph::Dag;
use super::macros;
use super::project::{GenericKind, GenericTest, Project, RelationRef, column_types};
use super::render::{
    JinjaContext, Relation, RenderScope, Rendered, ScannedCall, render, render_config_text,
    render_schema_name, scan_calls,
};
use super::select::{Selectable, Selector};
use super::{BuildOptions, ModelError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeKind {
    Seed,
    Model,
    Test,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Model => "model",
            Self::Test => "test",
        }
    }
}

/// What a data test checks.
#[derive(Debug, Clone, PartialEq)]
pub enum TestSpec {
    Generic(GenericTest),
    /// A `tests/*.sql` file, rendered; it fails when its query returns rows.
    Singular {
        sql: String,
        /// The file's template, rendered again when `changed_rows()` reads fewer rows.
        template: String,
        /// The relations it reads through `changed_rows()`: models with a `loaded_at_field`.
        changed: Vec<Relation>,
    },
}

#[derive(Debug, Clone)]
pub enum NodeSpec {
    Seed {
        column_types: BTreeMap<String, String>,
        /// dbt's `quote_columns` (default true): keep the header's case (else names fold to
        /// lower case, as unquoted names do).
        quote_columns: bool,
        /// The CSV delimiter (`delimiter` config), `,` by default.
        delimiter: u8,
    },
    Model {
        config: ModelConfig,
        /// The template, rendered again at build time with the real `is_incremental()`.
        template: String,
        /// Rendered with `is_incremental()` false.
        rendered: Rendered,
    },
    Test {
        spec: TestSpec,
        severity: Severity,
        /// Models and seeds whose downstream this test guards.
        attached: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub path: PathBuf,
    pub tags: Vec<String>,
    /// Where a seed or model lands; none for tests.
    pub relation: Option<Relation>,
    pub spec: NodeSpec,
}

impl Node {
    pub fn materialization(&self) -> Option<Materialization> {
        match &self.spec {
            NodeSpec::Model { config, .. } => Some(config.materialized),
            _ => None,
        }
    }

    /// `table analytics.dim_users`, `seed analytics.rates`, `test unique_…`.
    pub fn label(&self) -> String {
        match (&self.spec, &self.relation) {
            (NodeSpec::Model { config, .. }, Some(relation)) => {
                format!("{} {}", config.materialized, relation.display_name())
            }
            (NodeSpec::Seed { .. }, Some(relation)) => format!("seed {}", relation.display_name()),
            _ => format!("test {}", self.name),
        }
    }
}

impl Selectable for Node {
    fn name(&self) -> &str {
        &self.name
    }

    fn tags(&self) -> &[String] {
        &self.tags
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn is_test(&self) -> bool {
        self.kind == NodeKind::Test
    }
}

/// Every node of the project, the DAG, and the selected nodes in build order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub project: Project,
    pub nodes: Vec<Node>,
    /// Lineage: ref/source edges between seeds, models and tests.
    pub dag: Dag,
    /// Indices into `nodes` of what will run, in build order.
    pub order: Vec<usize>,
    /// Execution dependencies among selected nodes (lineage plus "after the parents' tests").
    pub run_parents: BTreeMap<usize, Vec<usize>>,
    /// The target schema.
    pub schema: String,
    /// Every seed and model by name, and where it builds.
    pub relations: BTreeMap<String, Relation>,
    /// Macros, docs, target name and start time, for rendering at build time.
    pub jinja: JinjaContext,
    /// `--vars` over dbt_project.yml's `vars:`.
    pub vars: BTreeMap<String, serde_json::Value>,
}

impl Plan {
    pub fn index_of(&self, name: &str, kind: NodeKind) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name && n.kind == kind)
    }

    /// Names of the selected nodes in build order.
    pub fn ordered_names(&self) -> Vec<&str> {
        self.order
            .iter()
            .map(|&i| self.nodes[i].name.as_str())
            .collect()
    }

    /// What `--dbt-compat-report` prints: everything in the project that was ignored or not
    /// honoured, one line each, and the features no project file can ask for.
    pub fn compat_report(&self) -> String {
        let mut out = String::new();
        let layout = &self.project.layout;
        let _ = writeln!(
            out,
            "project {} ({}): {} models, {} seeds, {} tests, {} macro files",
            layout.name.as_deref().unwrap_or("(etl models folder)"),
            self.project.dir.display(),
            self.nodes
                .iter()
                .filter(|n| n.kind == NodeKind::Model)
                .count(),
            self.nodes
                .iter()
                .filter(|n| n.kind == NodeKind::Seed)
                .count(),
            self.nodes
                .iter()
                .filter(|n| n.kind == NodeKind::Test)
                .count(),
            self.project.macros.len(),
        );
        if self.project.compat.is_empty() {
            out.push_str("nothing in the project was ignored\n");
        } else {
            let _ = writeln!(
                out,
                "ignored or not honoured ({}):",
                self.project.compat.len()
            );
            for line in &self.project.compat {
                let _ = writeln!(out, "  - {line}");
            }
        }
        out.push_str(
            "never supported: profiles.yml (the target is DATABASE_URL and --schema), packages \
             (dbt_utils …), ephemeral models, snapshot blocks, Python models, source freshness, \
             docs generation, store_failures, macros returning lists or dicts with return()\n",
        );
        out
    }

    /// The plan as printed by `--list`: one line per node in build order.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        let width = self.order.len().to_string().len();
        for (n, &i) in self.order.iter().enumerate() {
            let node = &self.nodes[i];
            let _ = writeln!(
                out,
                "{:>width$}. {:<50} {}",
                n + 1,
                node.label(),
                node.path.display()
            );
        }
        out
    }

    /// The lineage in Mermaid (`flowchart LR`) or Graphviz dot: seeds, models, and with
    /// `with_tests` the data tests. Nodes are named by their names (tests prefixed `test:`).
    pub fn graph(&self, format: GraphFormat, with_tests: bool) -> String {
        let shown: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| with_tests || self.nodes[i].kind != NodeKind::Test)
            .collect();
        let name = |i: usize| {
            let node = &self.nodes[i];
            match node.kind {
                NodeKind::Test => format!("test:{}", node.name),
                _ => node.name.clone(),
            }
        };
        let mut edges: Vec<(usize, usize)> = Vec::new();
        for &i in &shown {
            let mut children: Vec<usize> = self.dag.children[i]
                .iter()
                .copied()
                .filter(|c| shown.contains(c))
                .collect();
            children.sort_by_key(|&c| name(c));
            edges.extend(children.into_iter().map(|c| (i, c)));
        }
        let mut shown = shown;
        shown.sort_by_key(|&i| name(i));
        edges.sort_by_key(|&(p, c)| (name(p), name(c)));
        let mut out = String::new();
        match format {
            GraphFormat::Mermaid => {
                // Mermaid ids are words: anything else becomes `_`, the label keeps the name.
                let id = |i: usize| {
                    name(i)
                        .chars()
                        .map(|c| {
                            if c.is_alphanumeric() || c == '_' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect::<String>()
                };
                out.push_str("flowchart LR\n");
                for &i in &shown {
                    let label = name(i).replace('"', "#quot;");
                    let shape = match self.nodes[i].kind {
                        NodeKind::Seed => format!("[(\"{label}\")]"),
                        NodeKind::Model => format!("[\"{label}\"]"),
                        NodeKind::Test => format!("{{{{\"{label}\"}}}}"),
                    };
                    let _ = writeln!(out, "  {}{shape}", id(i));
                }
                for (p, c) in edges {
                    let _ = writeln!(out, "  {} --> {}", id(p), id(c));
                }
            }
            GraphFormat::Dot => {
                let id = |i: usize| format!("\"{}\"", name(i).replace('"', "\\\""));
                out.push_str("digraph models {\n  rankdir=LR;\n");
                for &i in &shown {
                    let shape = match self.nodes[i].kind {
                        NodeKind::Seed => "cylinder",
                        NodeKind::Model => "box",
                        NodeKind::Test => "diamond",
                    };
                    let _ = writeln!(out, "  {} [label={}, shape={shape}];", id(i), id(i));
                }
                for (p, c) in edges {
                    let _ = writeln!(out, "  {} -> {};", id(p), id(c));
                }
                out.push_str("}\n");
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

/// dbt's default `generate_schema_name`: the target schema, or `<target>_<custom>`.
pub fn schema_name(target: &str, custom: Option<&str>) -> String {
    match custom.map(str::trim) {
        None | Some("") => target.to_string(),
        Some(custom) => format!("{target}_{custom}"),
    }
}

/// Config keys that change what is built and are honoured (others are reported).
const HONOURED: &[&str] = &[
    "materialized",
    "unique_key",
    "tags",
    "incremental_strategy",
    "check_cols",
    "strategy",
    "severity",
    "enabled",
    "invalidate_hard_deletes",
    "hard_deletes",
    "post_hook",
    "pre_hook",
    "loaded_at_field",
    "sql_header",
    "schema",
    "alias",
];

/// Plans a build of `options.models_dir`. No database is touched.
pub fn plan(options: &BuildOptions) -> Result<Plan, ModelError> {
    let mut project = Project::discover(&options.models_dir)?;
    for (model, file) in &project.undeclared {
        tracing::warn!(%model, file = %file.display(), "YAML describes a model that has no .sql file; its tests are ignored");
    }
    let mut vars = project.layout.vars.clone();
    vars.extend(options.vars.clone());
    let jinja = JinjaContext {
        macros: macros::joined(&project.macros),
        macro_names: macros::macro_names(&project.macros),
        docs: project.docs.clone(),
        target_name: options.target_name.clone(),
        run_started_at: chrono::Utc::now(),
    };
    for name in ["generate_alias_name", "generate_database_name"] {
        if jinja.macro_names.contains(name) {
            project.compat.push(format!(
                "macro {name}: not honoured (dbt's default applies)"
            ));
        }
    }

    if options.tolerant {
        drop_unrenderable(&mut project, &options.schema, &vars, &jinja);
    }

    // Folder and YAML configs first: they say where each node builds before any template is
    // rendered; a model's own config() may still move it (then every model renders again).
    let mut base_configs: BTreeMap<String, RawConfig> = BTreeMap::new();
    for model in &project.models {
        let mut raw = folder_config(&project.layout.models, &model.fqn);
        let yaml: RawConfig = project
            .yaml_configs
            .get(&model.name)
            .map(|yaml| {
                yaml.iter()
                    .filter_map(|(k, v)| {
                        Some((k.as_str()?.replace('-', "_"), ConfigValue::from_yaml(v)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        merge_config(&mut raw, yaml);
        base_configs.insert(model.name.clone(), raw);
    }
    let mut seed_configs: BTreeMap<String, RawConfig> = BTreeMap::new();
    for seed in &project.seeds {
        let mut raw = folder_config(&project.layout.seeds, &seed.fqn);
        merge_config(&mut raw, seed.config.clone());
        seed_configs.insert(seed.name.clone(), raw);
    }
    // YAML values may hold Jinja (`+enabled: "{{ var('x', false) }}"`): render them, except
    // the SQL that is rendered when the model is built (hooks, headers: `{{ this }}`).
    for (name, raw) in base_configs.iter_mut().chain(seed_configs.iter_mut()) {
        for (key, value) in raw.iter_mut() {
            if let ConfigValue::Text(text) = value
                && text.contains("{{")
                && !["post_hook", "pre_hook", "sql_header"].contains(&key.as_str())
            {
                *value = render_config_text(text, &vars, &options.schema, &options.target_name)
                    .map_err(|message| ModelError::BadConfig {
                        model: name.clone(),
                        file: project
                            .layout
                            .root
                            .join(super::dbt_project::DBT_PROJECT_FILE),
                        message,
                    })?;
            }
        }
    }
    // The project's own generate_schema_name macro, when it has one, names the schemas.
    let no_relations = BTreeMap::new();
    let schema_scope = RenderScope {
        schema: &options.schema,
        nodes: &no_relations,
        sources: &project.sources,
        vars: &vars,
        changed: None,
        jinja: &jinja,
    };
    let own_schema_names = jinja.macro_names.contains("generate_schema_name");
    let fqn_of = |name: &str| -> (&'static str, Vec<String>, PathBuf) {
        match project.models.iter().find(|m| m.name == name) {
            Some(m) => ("model", m.fqn.clone(), m.path.clone()),
            None => project
                .seeds
                .iter()
                .find(|s| s.name == name)
                .map(|s| ("seed", s.fqn.clone(), s.path.clone()))
                .unwrap_or(("model", Vec::new(), PathBuf::new())),
        }
    };
    let relation_of = |name: &str, raw: &RawConfig| -> Result<Relation, ModelError> {
        let text = |key: &str| match raw.get(key) {
            Some(ConfigValue::Text(t)) => Some(t.clone()),
            _ => None,
        };
        let custom = text("schema");
        let schema = if own_schema_names {
            let (resource_type, fqn, path) = fqn_of(name);
            render_schema_name(
                &schema_scope,
                custom.as_deref(),
                name,
                resource_type,
                &fqn,
                &path,
            )?
        } else {
            schema_name(&options.schema, custom.as_deref())
        };
        Ok(Relation::new(
            schema,
            text("alias").unwrap_or_else(|| name.to_string()),
        ))
    };
    let mut relations: BTreeMap<String, Relation> = BTreeMap::new();
    for (name, raw) in base_configs.iter().chain(&seed_configs) {
        relations.insert(name.clone(), relation_of(name, raw)?);
    }
    let render_all = |relations: &BTreeMap<String, Relation>| -> Result<Vec<Rendered>, ModelError> {
        let scope = RenderScope {
            schema: &options.schema,
            nodes: relations,
            sources: &project.sources,
            vars: &vars,
            changed: None,
            jinja: &jinja,
        };
        project
            .models
            .iter()
            .map(|model| render(&scope, &model.name, &model.path, &model.sql, false))
            .collect()
    };
    let mut rendered_models = render_all(&relations)?;
    let mut configs: BTreeMap<String, RawConfig> = BTreeMap::new();
    let mut moved = false;
    for (model, rendered) in project.models.iter().zip(&rendered_models) {
        let mut raw = base_configs[&model.name].clone();
        merge_config(&mut raw, rendered.config.clone());
        let relation = relation_of(&model.name, &raw)?;
        if relations[&model.name] != relation {
            moved = true;
            relations.insert(model.name.clone(), relation);
        }
        configs.insert(model.name.clone(), raw);
    }
    if moved {
        rendered_models = render_all(&relations)?;
    }
    let scope = RenderScope {
        schema: &options.schema,
        nodes: &relations,
        sources: &project.sources,
        vars: &vars,
        changed: None,
        jinja: &jinja,
    };
    let names: BTreeSet<String> = relations.keys().cloned().collect();

    let mut nodes: Vec<Node> = Vec::new();
    // Refs of each node by name, resolved to indices once every node exists.
    let mut refs: Vec<BTreeSet<String>> = Vec::new();
    let mut disabled = BTreeSet::new();
    for seed in &project.seeds {
        let raw = &seed_configs[&seed.name];
        report_ignored(
            &mut project.compat,
            "seed",
            &seed.name,
            raw,
            &["column_types", "quote_columns", "delimiter"],
        );
        let bad = |message: String| ModelError::BadConfig {
            model: seed.name.clone(),
            file: seed.path.clone(),
            message,
        };
        let config = ModelConfig::from_raw(raw).map_err(&bad)?;
        if !config.enabled {
            disabled.insert(seed.name.clone());
            continue;
        }
        let mut types = match raw.get("column_types") {
            Some(ConfigValue::Map(map)) => column_types(map).map_err(&bad)?,
            _ => BTreeMap::new(),
        };
        types.extend(seed.column_types.clone());
        // dbt-postgres quotes seed columns unless told not to.
        let quote_columns = !matches!(raw.get("quote_columns"), Some(ConfigValue::Bool(false)));
        let delimiter = match raw.get("delimiter") {
            None => b',',
            Some(ConfigValue::Text(d)) if d.len() == 1 => d.as_bytes()[0],
            Some(other) => {
                return Err(bad(format!(
                    "delimiter must be one character, not {other:?}"
                )));
            }
        };
        nodes.push(Node {
            name: seed.name.clone(),
            kind: NodeKind::Seed,
            path: seed.path.clone(),
            tags: config.tags.clone(),
            relation: Some(relations[&seed.name].clone()),
            spec: NodeSpec::Seed {
                column_types: types,
                quote_columns,
                delimiter,
            },
        });
        refs.push(BTreeSet::new());
    }
    for (model, rendered) in project.models.iter().zip(rendered_models) {
        let scanned = check_scanned(&scope, &model.name, &model.path, &model.sql)?;
        let raw = &configs[&model.name];
        report_ignored(&mut project.compat, "model", &model.name, raw, &[]);
        let config = ModelConfig::from_raw(raw).map_err(|message| ModelError::BadConfig {
            model: model.name.clone(),
            file: model.path.clone(),
            message,
        })?;
        if !config.enabled {
            disabled.insert(model.name.clone());
            continue;
        }
        let mut model_refs = rendered.refs.clone();
        model_refs.extend(scanned);
        refs.push(model_refs);
        nodes.push(Node {
            name: model.name.clone(),
            kind: NodeKind::Model,
            path: model.path.clone(),
            tags: config.tags.clone(),
            relation: Some(relations[&model.name].clone()),
            spec: NodeSpec::Model {
                config,
                template: model.sql.clone(),
                rendered,
            },
        });
    }
    for test in &project.generic_tests {
        if disabled.contains(&test.model) {
            continue;
        }
        let mut test_refs = BTreeSet::from([test.model.clone()]);
        if let GenericKind::Relationships {
            to: RelationRef::Ref(to),
            ..
        } = &test.kind
        {
            if !names.contains(to) {
                return Err(ModelError::Yaml {
                    path: test.file.clone(),
                    message: format!(
                        "test {} checks against ref('{to}'), which is neither a model nor a seed",
                        test.name
                    ),
                });
            }
            test_refs.insert(to.clone());
        }
        if let GenericKind::Relationships {
            to: RelationRef::Source(source, table),
            ..
        } = &test.kind
            && !project
                .sources
                .contains_key(&(source.clone(), table.clone()))
        {
            return Err(ModelError::Yaml {
                path: test.file.clone(),
                message: format!(
                    "test {} checks against source('{source}', '{table}'), which no YAML declares",
                    test.name
                ),
            });
        }
        if let GenericKind::Custom { args, .. } = &test.kind {
            // A project's test may compare with other models: `to: ref('x')` arguments.
            for value in args.values() {
                if let Some(RelationRef::Ref(to)) =
                    value.as_str().and_then(super::project::parse_relation_ref)
                {
                    if !names.contains(&to) {
                        return Err(ModelError::Yaml {
                            path: test.file.clone(),
                            message: format!(
                                "test {} refs {to}, which is neither a model nor a seed",
                                test.name
                            ),
                        });
                    }
                    test_refs.insert(to);
                }
            }
        }
        refs.push(test_refs);
        nodes.push(Node {
            name: test.name.clone(),
            kind: NodeKind::Test,
            path: test.file.clone(),
            tags: Vec::new(),
            relation: None,
            spec: NodeSpec::Test {
                spec: TestSpec::Generic(test.clone()),
                severity: test.severity,
                attached: vec![test.model.clone()],
            },
        });
    }
    for test in &project.singular_tests {
        let rendered = render(&scope, &test.name, &test.path, &test.sql, false)?;
        let scanned = check_scanned(&scope, &test.name, &test.path, &test.sql)?;
        let config =
            ModelConfig::from_raw(&rendered.config).map_err(|message| ModelError::BadConfig {
                model: test.name.clone(),
                file: test.path.clone(),
                message,
            })?;
        if !config.enabled {
            continue;
        }
        let mut test_refs = rendered.refs.clone();
        test_refs.extend(scanned);
        refs.push(test_refs.clone());
        nodes.push(Node {
            name: test.name.clone(),
            kind: NodeKind::Test,
            path: test.path.clone(),
            tags: config.tags.clone(),
            relation: None,
            spec: NodeSpec::Test {
                spec: TestSpec::Singular {
                    sql: rendered.sql,
                    template: test.sql.clone(),
                    changed: rendered.changed.into_iter().collect(),
                },
                severity: config.severity,
                attached: test_refs.into_iter().collect(),
            },
        });
    }

    check_changed_rows(&nodes, &options.schema)?;

    // Lineage. A ref to a disabled model is an unknown ref.
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.kind != NodeKind::Test)
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut dag = Dag::new(nodes.iter().map(|n| n.name.clone()).collect());
    for (child, node_refs) in refs.iter().enumerate() {
        for name in node_refs {
            let Some(&parent) = index.get(name.as_str()) else {
                let node = &nodes[child];
                let line = first_line_of_ref(
                    &std::fs::read_to_string(&node.path).unwrap_or_default(),
                    name,
                );
                return Err(ModelError::UnknownRef {
                    model: node.name.clone(),
                    file: node.path.clone(),
                    line,
                    target: name.clone(),
                });
            };
            dag.add_edge(parent, child);
        }
    }
    let rank = |i: usize| i as u64;
    let lineage_order = dag
        .topological_order(rank)
        .map_err(|cycle| ModelError::Cycle {
            cycle: cycle.join(" → "),
        })?;

    let selected = select(options, &nodes, &dag)?;
    let (order, run_parents) = execution_order(&nodes, &dag, &selected, &lineage_order);
    Ok(Plan {
        project,
        nodes,
        dag,
        order,
        run_parents,
        schema: options.schema.clone(),
        relations,
        jinja,
        vars,
    })
}

/// For the compatibility report: leaves out (and reports) every model and singular test whose
/// template does not render, and then those that ref them, until everything left renders.
fn drop_unrenderable(
    project: &mut Project,
    schema: &str,
    vars: &BTreeMap<String, serde_json::Value>,
    jinja: &JinjaContext,
) {
    loop {
        let relations: BTreeMap<String, Relation> = project
            .models
            .iter()
            .map(|m| m.name.clone())
            .chain(project.seeds.iter().map(|s| s.name.clone()))
            .map(|name| (name.clone(), Relation::new(schema, name)))
            .collect();
        let scope = RenderScope {
            schema,
            nodes: &relations,
            sources: &project.sources,
            vars,
            changed: None,
            jinja,
        };
        let mut failed = Vec::new();
        for model in &project.models {
            if let Err(error) = render(&scope, &model.name, &model.path, &model.sql, false)
                .and_then(|_| check_scanned(&scope, &model.name, &model.path, &model.sql))
            {
                failed.push((model.name.clone(), error.to_string()));
            }
        }
        let mut failed_tests = Vec::new();
        for test in &project.singular_tests {
            if let Err(error) = render(&scope, &test.name, &test.path, &test.sql, false)
                .and_then(|_| check_scanned(&scope, &test.name, &test.path, &test.sql))
            {
                failed_tests.push((test.name.clone(), error.to_string()));
            }
        }
        if failed.is_empty() && failed_tests.is_empty() {
            return;
        }
        for (name, message) in &failed {
            project
                .compat
                .push(format!("model {name} cannot be built: {message}"));
        }
        for (name, message) in &failed_tests {
            project
                .compat
                .push(format!("test {name} cannot be run: {message}"));
        }
        project
            .models
            .retain(|m| !failed.iter().any(|(name, _)| *name == m.name));
        project
            .singular_tests
            .retain(|t| !failed_tests.iter().any(|(name, _)| *name == t.name));
        let models = &project.models;
        let seeds = &project.seeds;
        let known = |name: &str| {
            models.iter().any(|m| m.name == name) || seeds.iter().any(|s| s.name == name)
        };
        project.generic_tests.retain(|t| {
            let target_known = match &t.kind {
                GenericKind::Relationships {
                    to: RelationRef::Ref(to),
                    ..
                } => known(to),
                _ => true,
            };
            known(&t.model) && target_known
        });
    }
}

/// `over` on top of `raw`; `tags` add up (as dbt's do).
fn merge_config(raw: &mut RawConfig, over: RawConfig) {
    for (key, value) in over {
        if key == "tags"
            && let (Some(before), Some(added)) = (
                raw.get("tags").and_then(ConfigValue::as_list),
                value.as_list(),
            )
        {
            let mut tags = before;
            tags.extend(
                added
                    .into_iter()
                    .filter(|t| !tags.contains(t))
                    .collect::<Vec<_>>(),
            );
            raw.insert(key, ConfigValue::List(tags));
            continue;
        }
        raw.insert(key, value);
    }
}

/// One line of the compatibility report per config key that is not honoured.
fn report_ignored(
    compat: &mut Vec<String>,
    what: &str,
    name: &str,
    raw: &RawConfig,
    also_honoured: &[&str],
) {
    for key in raw.keys() {
        if !HONOURED.contains(&key.as_str()) && !also_honoured.contains(&key.as_str()) {
            compat.push(format!("{what} {name}: config {key} is ignored"));
        }
    }
}

/// `changed_rows()` reads a model by its `loaded_at_field`, so it must have one.
fn check_changed_rows(nodes: &[Node], schema: &str) -> Result<(), ModelError> {
    for node in nodes {
        let NodeSpec::Test {
            spec: TestSpec::Singular { changed, .. },
            ..
        } = &node.spec
        else {
            continue;
        };
        for relation in changed {
            if loaded_at_field(nodes, schema, relation).is_none() {
                return Err(ModelError::BadConfig {
                    model: node.name.clone(),
                    file: node.path.clone(),
                    message: format!(
                        "changed_rows({}) needs a model with a loaded_at_field config",
                        relation.display_name()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The `loaded_at_field` of the model built at `relation`, if it has one.
pub fn loaded_at_field<'a>(
    nodes: &'a [Node],
    _schema: &str,
    relation: &Relation,
) -> Option<&'a str> {
    nodes.iter().find_map(|n| match &n.spec {
        NodeSpec::Model { config, .. } if n.relation.as_ref() == Some(relation) => {
            config.loaded_at_field.as_deref()
        }
        _ => None,
    })
}

/// Literal refs and sources in every branch must exist; returns the ref names.
fn check_scanned(
    scope: &RenderScope<'_>,
    model: &str,
    file: &Path,
    template: &str,
) -> Result<BTreeSet<String>, ModelError> {
    let mut refs = BTreeSet::new();
    for call in scan_calls(template) {
        match call {
            ScannedCall::Ref { name, line } => {
                if !scope.nodes.contains_key(&name) {
                    return Err(ModelError::UnknownRef {
                        model: model.to_string(),
                        file: file.to_path_buf(),
                        line,
                        target: name,
                    });
                }
                refs.insert(name);
            }
            ScannedCall::Source {
                source,
                table,
                line,
            } => {
                if !scope.sources.contains_key(&(source.clone(), table.clone())) {
                    return Err(ModelError::UnknownSource {
                        model: model.to_string(),
                        file: file.to_path_buf(),
                        line,
                        source_name: source,
                        table,
                    });
                }
            }
        }
    }
    Ok(refs)
}

fn first_line_of_ref(template: &str, name: &str) -> usize {
    scan_calls(template)
        .into_iter()
        .find_map(|c| match c {
            ScannedCall::Ref { name: n, line } if n == name => Some(line),
            _ => None,
        })
        .unwrap_or(0)
}

/// Seeds and models chosen by `--select` minus `--exclude`, plus the tests attached to them
/// whose every ref is chosen or already built (dbt's "eager" indirect selection, restricted to
/// tests whose attached models are all selected).
fn select(
    options: &BuildOptions,
    nodes: &[Node],
    dag: &Dag,
) -> Result<BTreeSet<usize>, ModelError> {
    let resources: BTreeSet<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].kind != NodeKind::Test)
        .collect();
    let cwd = std::env::current_dir().unwrap_or_default();
    let matches = |text: &str| -> Result<BTreeSet<usize>, ModelError> {
        let selector = Selector::parse(text)?;
        selector.matches(nodes, dag, &options.models_dir, &cwd)
    };
    let mut chosen: BTreeSet<usize> = if options.select.is_empty() {
        resources.clone()
    } else {
        let mut chosen = BTreeSet::new();
        for text in &options.select {
            chosen.extend(matches(text)?);
        }
        chosen
    };
    let mut excluded_tests = BTreeSet::new();
    for text in &options.exclude {
        for i in matches(text)? {
            if nodes[i].kind == NodeKind::Test {
                excluded_tests.insert(i);
            }
            chosen.remove(&i);
        }
    }
    // Tests named explicitly stay chosen; the others follow their models.
    let mut selected: BTreeSet<usize> = chosen.clone();
    for (i, node) in nodes.iter().enumerate() {
        if let NodeSpec::Test { attached, .. } = &node.spec {
            if excluded_tests.contains(&i) {
                selected.remove(&i);
                continue;
            }
            // A test that refs nothing runs with a full build only.
            let attached_chosen = if attached.is_empty() {
                options.select.is_empty()
            } else {
                attached.iter().all(|name| {
                    resources
                        .iter()
                        .any(|&r| nodes[r].name == *name && chosen.contains(&r))
                })
            };
            if attached_chosen {
                selected.insert(i);
            }
        }
    }
    Ok(selected)
}

/// The selected nodes in build order, and what each waits for: its selected parents, plus the
/// selected tests attached to those parents.
fn execution_order(
    nodes: &[Node],
    dag: &Dag,
    selected: &BTreeSet<usize>,
    lineage_order: &[usize],
) -> (Vec<usize>, BTreeMap<usize, Vec<usize>>) {
    let mut tests_of: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in selected {
        if let NodeSpec::Test { attached, .. } = &nodes[i].spec {
            for name in attached {
                tests_of.entry(name.as_str()).or_default().push(i);
            }
        }
    }
    let mut test_ancestors: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let mut run_parents: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in selected {
        let mut parents: BTreeSet<usize> = BTreeSet::new();
        for &parent in &dag.parents[i] {
            if !selected.contains(&parent) {
                continue;
            }
            parents.insert(parent);
            if nodes[i].kind != NodeKind::Test {
                for &test in tests_of
                    .get(nodes[parent].name.as_str())
                    .into_iter()
                    .flatten()
                {
                    // A test that also depends on this node (a singular test reading parent
                    // and child) runs after it instead.
                    let ancestors = test_ancestors
                        .entry(test)
                        .or_insert_with(|| dag.ancestors(test));
                    if !ancestors.contains(&i) {
                        parents.insert(test);
                    }
                }
            }
        }
        run_parents.insert(i, parents.into_iter().collect());
    }
    // Order: lineage position (so parents come first), which the extra test edges respect
    // because a test follows its models in lineage and precedes their children there too.
    let mut run_dag = Dag::new(nodes.iter().map(|n| n.name.clone()).collect());
    for (&child, parents) in &run_parents {
        for &parent in parents {
            run_dag.add_edge(parent, child);
        }
    }
    let position: BTreeMap<usize, u64> = lineage_order
        .iter()
        .enumerate()
        .map(|(p, &i)| (i, p as u64))
        .collect();
    let order = run_dag
        .topological_order(|i| position.get(&i).copied().unwrap_or(u64::MAX))
        .unwrap_or_else(|_| lineage_order.to_vec());
    let order = order.into_iter().filter(|i| selected.contains(i)).collect();
    (order, run_parents)
}
