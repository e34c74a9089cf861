//! What a models folder holds: model files, singular tests, seeds and the YAML that declares
//! sources, column tests and configs (dbt's layout and file formats).
//!
//! - `**/*.sql` outside `tests/` and `seeds/` (directly under the models folder): a model named by
//!   its file stem;
//! - `tests/**/*.sql`: singular data tests (fail when they return rows);
//! - `seeds/**/*.csv`: seeds, loaded as tables named by their stem;
//! - `**/*.yml`, `**/*.yaml`: `sources:`, `models:` (columns and their tests, config) and `seeds:`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ModelError;
use super::config::{ConfigValue, RawConfig, Severity};
use super::dbt_project::Layout;
use super::macros;

/// A source table declared in YAML: `source('name', 'table')` becomes `"schema"."identifier"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    pub source: String,
    pub table: String,
    pub schema: String,
    pub identifier: String,
    pub file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ModelFile {
    pub name: String,
    /// Project name, folders under the model path, name: where folder configs apply.
    pub fqn: Vec<String>,
    pub path: PathBuf,
    pub sql: String,
}

#[derive(Debug, Clone)]
pub struct SeedFile {
    pub name: String,
    pub fqn: Vec<String>,
    pub path: PathBuf,
    /// `seeds: [{name, config: {column_types: {col: type}}}]`: types that override inference.
    pub column_types: BTreeMap<String, String>,
    /// The rest of the seed's YAML `config:` (schema, tags, enabled, quote_columns …).
    pub config: RawConfig,
}

/// A file of `{% macro %}` (and `{% test %}`, translated to macros named `test_<name>`) blocks.
#[derive(Debug, Clone)]
pub struct MacroFile {
    pub path: PathBuf,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct SingularTestFile {
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
}

/// One generic test declared on a column in YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericTest {
    /// Unique name, dbt-like: `not_null_dim_users_user_id`.
    pub name: String,
    pub model: String,
    /// Empty for a test declared on the model rather than on a column.
    pub column: String,
    pub kind: GenericKind,
    pub severity: Severity,
    /// `config: {where: "..."}`: only rows matching this condition are tested.
    pub where_clause: Option<String>,
    pub file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GenericKind {
    NotNull,
    Unique,
    AcceptedValues(Vec<String>),
    /// Every non-null value must exist in `to.field`; `to` is a model/seed name or a source.
    Relationships {
        to: RelationRef,
        field: String,
    },
    /// A generic test the project defines with `{% test name(model, column_name, …) %}`,
    /// with its arguments from YAML.
    Custom {
        test: String,
        args: serde_yaml::Mapping,
    },
}

impl GenericKind {
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotNull => "not_null",
            Self::Unique => "unique",
            Self::AcceptedValues(_) => "accepted_values",
            Self::Relationships { .. } => "relationships",
            Self::Custom { .. } => "custom",
        }
    }
}

/// `ref('x')` or `source('a', 'b')` written as text in YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelationRef {
    Ref(String),
    Source(String, String),
}

/// Everything under the models folder, read but not yet rendered.
#[derive(Debug, Clone, Default)]
pub struct Project {
    pub dir: PathBuf,
    pub models: Vec<ModelFile>,
    pub seeds: Vec<SeedFile>,
    pub singular_tests: Vec<SingularTestFile>,
    pub sources: BTreeMap<(String, String), SourceTable>,
    pub generic_tests: Vec<GenericTest>,
    /// `models: [{name, config: {...}}]` in YAML, overridden by the model's own `config(...)`.
    pub yaml_configs: BTreeMap<String, serde_yaml::Mapping>,
    /// Model names that YAML describes without a model file (tests on them are dropped).
    pub undeclared: Vec<(String, PathBuf)>,
    /// Where the files are, and dbt_project.yml's folder configs.
    pub layout: Layout,
    /// Macro files (macro paths, and `generic/` under the test paths).
    pub macros: Vec<MacroFile>,
    /// `{% docs name %}` blocks by name.
    pub docs: BTreeMap<String, String>,
    /// What was ignored or not honoured, one line each (`--dbt-compat-report`).
    pub compat: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct YamlFile {
    #[serde(default)]
    sources: Vec<YamlSource>,
    #[serde(default)]
    models: Vec<YamlModel>,
    #[serde(default)]
    seeds: Vec<YamlSeed>,
    #[serde(default)]
    snapshots: Vec<serde_yaml::Value>,
    #[serde(default)]
    unit_tests: Vec<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
struct YamlSource {
    name: String,
    schema: Option<String>,
    #[serde(default)]
    tables: Vec<YamlSourceTable>,
}

#[derive(Debug, Deserialize)]
struct YamlSourceTable {
    name: String,
    identifier: Option<String>,
    #[serde(default)]
    columns: Vec<YamlColumn>,
    #[serde(default)]
    tests: Vec<serde_yaml::Value>,
    #[serde(default)]
    data_tests: Vec<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
struct YamlModel {
    name: String,
    #[serde(default)]
    config: Option<serde_yaml::Mapping>,
    #[serde(default)]
    columns: Vec<YamlColumn>,
    /// Tests on the model as a whole (no column).
    #[serde(default)]
    tests: Vec<serde_yaml::Value>,
    #[serde(default)]
    data_tests: Vec<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
struct YamlColumn {
    name: String,
    #[serde(default)]
    tests: Vec<serde_yaml::Value>,
    /// dbt ≥ 1.8 spelling of `tests`.
    #[serde(default)]
    data_tests: Vec<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
struct YamlSeed {
    name: String,
    #[serde(default)]
    config: Option<serde_yaml::Mapping>,
    #[serde(default)]
    columns: Vec<YamlColumn>,
    #[serde(default)]
    tests: Vec<serde_yaml::Value>,
    #[serde(default)]
    data_tests: Vec<serde_yaml::Value>,
}

impl Project {
    /// Reads a models folder or a dbt project (see [`Layout::discover`]). Fails on unreadable
    /// files, bad YAML and duplicate model names.
    pub fn discover(dir: &Path) -> Result<Project, ModelError> {
        let layout = Layout::discover(dir)?;
        let mut project = Project {
            dir: dir.to_path_buf(),
            compat: layout.ignored.clone(),
            layout: layout.clone(),
            ..Project::default()
        };
        let mut yaml_files = Vec::new();
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut claim = |stem: &str, path: &Path| -> Result<(), ModelError> {
            if let Some(first) = names.get(stem) {
                return Err(ModelError::DuplicateName {
                    name: stem.to_string(),
                    first: first.clone(),
                    second: path.to_path_buf(),
                });
            }
            names.insert(stem.to_string(), path.to_path_buf());
            Ok(())
        };
        for base in &layout.model_paths {
            for path in files_under(base)? {
                if layout.is_special(&path) {
                    continue;
                }
                match (extension(&path).as_str(), stem(&path)) {
                    ("yml" | "yaml", _) => yaml_files.push(path),
                    ("md", _) => project.read_docs(&path)?,
                    ("sql", Some(stem)) => {
                        claim(&stem, &path)?;
                        let sql = read(&path)?;
                        project.models.push(ModelFile {
                            fqn: layout.fqn(base, &path),
                            name: stem,
                            path,
                            sql,
                        });
                    }
                    ("py", _) => project
                        .compat
                        .push(format!("{}: Python models are not built", path.display())),
                    _ => {}
                }
            }
        }
        for base in &layout.seed_paths {
            for path in files_under(base)? {
                match (extension(&path).as_str(), stem(&path)) {
                    ("yml" | "yaml", _) => yaml_files.push(path),
                    ("csv", Some(stem)) => {
                        claim(&stem, &path)?;
                        project.seeds.push(SeedFile {
                            fqn: layout.fqn(base, &path),
                            name: stem,
                            path,
                            column_types: BTreeMap::new(),
                            config: RawConfig::new(),
                        });
                    }
                    _ => {}
                }
            }
        }
        for base in &layout.test_paths {
            for path in files_under(base)? {
                let generic = path
                    .strip_prefix(base)
                    .ok()
                    .and_then(|r| r.components().next())
                    .is_some_and(|c| c.as_os_str() == "generic");
                match (extension(&path).as_str(), stem(&path)) {
                    ("yml" | "yaml", _) => yaml_files.push(path),
                    ("sql", _) if generic => project.read_macros(&path)?,
                    ("sql", Some(stem)) => {
                        let sql = read(&path)?;
                        project.singular_tests.push(SingularTestFile {
                            name: stem,
                            path,
                            sql,
                        });
                    }
                    _ => {}
                }
            }
        }
        for base in &layout.macro_paths {
            for path in files_under(base)? {
                match extension(&path).as_str() {
                    "sql" => project.read_macros(&path)?,
                    "md" => project.read_docs(&path)?,
                    _ => {}
                }
            }
        }
        for path in yaml_files {
            project.read_yaml(&path)?;
        }
        Ok(project)
    }

    /// A macro file: `{% macro %}` and `{% test %}` blocks; `{% docs %}` blocks are read too.
    fn read_macros(&mut self, path: &Path) -> Result<(), ModelError> {
        let text = read(path)?;
        let (text, docs) = macros::split_docs(&text);
        self.docs.extend(docs);
        let (text, unsupported) = macros::translate(&text);
        for block in unsupported {
            self.compat.push(format!(
                "{}: {{% {block} %}} blocks are not supported and were left out",
                path.display()
            ));
        }
        self.macros.push(MacroFile {
            path: path.to_path_buf(),
            text,
        });
        Ok(())
    }

    /// A Markdown file of `{% docs name %}` blocks, for `doc('name')`.
    fn read_docs(&mut self, path: &Path) -> Result<(), ModelError> {
        let text = read(path)?;
        self.docs.extend(macros::split_docs(&text).1);
        Ok(())
    }

    fn read_yaml(&mut self, path: &Path) -> Result<(), ModelError> {
        let text = read(path)?;
        let yaml_error = |message: String| ModelError::Yaml {
            path: path.to_path_buf(),
            message,
        };
        // An empty file (or one holding only comments) is fine.
        let value: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| yaml_error(e.to_string()))?;
        if value.is_null() {
            return Ok(());
        }
        let file: YamlFile =
            serde_yaml::from_value(value).map_err(|e| yaml_error(e.to_string()))?;
        for source in &file.sources {
            let schema = source.schema.clone().unwrap_or_else(|| source.name.clone());
            for table in &source.tables {
                let key = (source.name.clone(), table.name.clone());
                self.sources.insert(
                    key,
                    SourceTable {
                        source: source.name.clone(),
                        identifier: table
                            .identifier
                            .clone()
                            .unwrap_or_else(|| table.name.clone()),
                        table: table.name.clone(),
                        schema: schema.clone(),
                        file: path.to_path_buf(),
                    },
                );
            }
        }
        let defined = macros::generic_tests(&self.macros);
        let mut tests = Vec::new();
        let mut add_tests =
            |target: &str, column: &str, entries: &[serde_yaml::Value], project: &mut Project| {
                for entry in entries {
                    match parse_generic_test(target, column, entry, path, &defined) {
                        Ok(test) => tests.push(test),
                        Err(TestParseError::Unknown(message)) if project.layout.dbt => {
                            project
                                .compat
                                .push(format!("{}: {message}; left out", path.display()));
                        }
                        Err(TestParseError::Unknown(message) | TestParseError::Bad(message)) => {
                            return Err(yaml_error(message));
                        }
                    }
                }
                Ok(())
            };
        for source in &file.sources {
            for table in &source.tables {
                let declared = !table.tests.is_empty()
                    || !table.data_tests.is_empty()
                    || table
                        .columns
                        .iter()
                        .any(|c| !c.tests.is_empty() || !c.data_tests.is_empty());
                if declared {
                    self.compat.push(format!(
                        "{}: tests on source {}.{} are not run",
                        path.display(),
                        source.name,
                        table.name
                    ));
                }
            }
        }
        let model_names: Vec<String> = self.models.iter().map(|m| m.name.clone()).collect();
        let seed_names: Vec<String> = self.seeds.iter().map(|s| s.name.clone()).collect();
        let mut undeclared = Vec::new();
        for model in file.models {
            let known = model_names.contains(&model.name) || seed_names.contains(&model.name);
            if !known {
                undeclared.push((model.name.clone(), path.to_path_buf()));
                continue;
            }
            if let Some(config) = model.config {
                self.yaml_configs.insert(model.name.clone(), config);
            }
            let model_tests: Vec<serde_yaml::Value> =
                model.tests.into_iter().chain(model.data_tests).collect();
            add_tests(&model.name, "", &model_tests, self)?;
            for column in model.columns {
                let column_tests: Vec<serde_yaml::Value> =
                    column.tests.into_iter().chain(column.data_tests).collect();
                add_tests(&model.name, &column.name, &column_tests, self)?;
            }
        }
        for seed in file.seeds {
            if !seed_names.contains(&seed.name) {
                undeclared.push((seed.name.clone(), path.to_path_buf()));
                continue;
            }
            let seed_tests: Vec<serde_yaml::Value> =
                seed.tests.into_iter().chain(seed.data_tests).collect();
            add_tests(&seed.name, "", &seed_tests, self)?;
            for column in seed.columns {
                let column_tests: Vec<serde_yaml::Value> =
                    column.tests.into_iter().chain(column.data_tests).collect();
                add_tests(&seed.name, &column.name, &column_tests, self)?;
            }
            let found = self
                .seeds
                .iter_mut()
                .find(|s| s.name == seed.name)
                .expect("checked above");
            for (key, value) in seed.config.unwrap_or_default() {
                let Some(key) = key.as_str() else { continue };
                if key == "column_types" {
                    found.column_types = column_types(&value).map_err(yaml_error)?;
                } else {
                    found
                        .config
                        .insert(key.replace('-', "_"), ConfigValue::from_yaml(&value));
                }
            }
        }
        for (what, count) in [
            ("snapshots", file.snapshots.len()),
            ("unit_tests", file.unit_tests.len()),
        ] {
            if count > 0 {
                self.compat.push(format!(
                    "{}: {count} {what} declared in YAML are not run",
                    path.display()
                ));
            }
        }
        self.undeclared.extend(undeclared);
        self.generic_tests.extend(tests);
        dedupe_test_names(&mut self.generic_tests);
        Ok(())
    }
}

/// `column_types: {col: type}` as written in YAML or dbt_project.yml.
pub fn column_types(value: &serde_yaml::Value) -> Result<BTreeMap<String, String>, String> {
    let map = value.as_mapping().ok_or_else(|| {
        format!("column_types must be a mapping of column to type, not {value:?}")
    })?;
    map.iter()
        .map(|(k, v)| match (k.as_str(), v.as_str()) {
            (Some(k), Some(v)) => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("column_types: {k:?}: {v:?} is not column: type")),
        })
        .collect()
}

/// Why a test entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestParseError {
    /// A test neither built in nor defined by the project (e.g. a package's).
    Unknown(String),
    Bad(String),
}

/// Keys of a test entry that configure the test rather than pass it an argument.
const TEST_CONFIG_KEYS: &[&str] = &[
    "severity",
    "where",
    "tags",
    "enabled",
    "meta",
    "store_failures",
    "store_failures_as",
    "limit",
    "warn_if",
    "error_if",
    "fail_calc",
    "alias",
    "schema",
    "database",
];

/// Parses one entry of a `tests:` (or `data_tests:`) list: a bare name or
/// `{name: {args…, arguments: {…}, config: {…}}}`. `column` is empty for a model-level test;
/// `defined` are the generic tests the project defines.
pub fn parse_generic_test(
    model: &str,
    column: &str,
    entry: &serde_yaml::Value,
    file: &Path,
    defined: &std::collections::BTreeSet<String>,
) -> Result<GenericTest, TestParseError> {
    let on = if column.is_empty() {
        model.to_string()
    } else {
        format!("{model}.{column}")
    };
    let bad = |message: String| TestParseError::Bad(message);
    let (kind_name, entry_map) = match entry {
        serde_yaml::Value::String(name) => (name.clone(), serde_yaml::Mapping::new()),
        serde_yaml::Value::Mapping(map) if map.len() == 1 => {
            let (key, value) = map.iter().next().expect("one entry");
            let name = key
                .as_str()
                .ok_or_else(|| bad(format!("test name {key:?} on {on} is not a string")))?;
            let args = match value {
                serde_yaml::Value::Mapping(args) => args.clone(),
                serde_yaml::Value::Null => serde_yaml::Mapping::new(),
                other => {
                    return Err(bad(format!(
                        "test {name} on {on}: expected a mapping of arguments, got {other:?}"
                    )));
                }
            };
            (name.to_string(), args)
        }
        other => {
            return Err(bad(format!(
                "test on {on}: expected a name or a one-key mapping, got {other:?}"
            )));
        }
    };
    // Arguments at the top level or under `arguments:` (dbt ≥ 1.10); settings under `config:`
    // or, the older way, at the top level.
    let mut config = serde_yaml::Mapping::new();
    let mut args = serde_yaml::Mapping::new();
    let mut custom_name = None;
    for (key, value) in &entry_map {
        match key.as_str().unwrap_or_default() {
            "config" => config.extend(value.as_mapping().cloned().unwrap_or_default()),
            "arguments" => args.extend(value.as_mapping().cloned().unwrap_or_default()),
            "name" => custom_name = value.as_str().map(String::from),
            "description" | "test_name" => {}
            k if TEST_CONFIG_KEYS.contains(&k) => {
                config.entry(key.clone()).or_insert_with(|| value.clone());
            }
            _ => {
                args.insert(key.clone(), value.clone());
            }
        }
    }
    let setting = |key: &str| config.get(key).and_then(|v| v.as_str()).map(String::from);
    let severity = match setting("severity") {
        None => Severity::Error,
        Some(text) => Severity::parse(&text).ok_or_else(|| {
            bad(format!(
                "test {kind_name} on {on}: severity must be warn or error, not {text:?}"
            ))
        })?,
    };
    let where_clause = setting("where");
    let needs_column = |kind: &str| {
        if column.is_empty() {
            Err(bad(format!(
                "test {kind} on {model} must be declared on a column"
            )))
        } else {
            Ok(())
        }
    };
    let kind = match kind_name.as_str() {
        "not_null" => {
            needs_column("not_null")?;
            GenericKind::NotNull
        }
        "unique" => {
            needs_column("unique")?;
            GenericKind::Unique
        }
        "accepted_values" => {
            needs_column("accepted_values")?;
            let values = args
                .get("values")
                .and_then(|v| v.as_sequence())
                .ok_or_else(|| bad(format!("accepted_values on {on} needs `values: [...]`")))?;
            GenericKind::AcceptedValues(
                values
                    .iter()
                    .map(|v| match v {
                        serde_yaml::Value::String(s) => s.clone(),
                        serde_yaml::Value::Bool(b) => b.to_string(),
                        serde_yaml::Value::Number(n) => n.to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
            )
        }
        "relationships" => {
            needs_column("relationships")?;
            let to = args
                .get("to")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad(format!("relationships on {on} needs `to: ref('model')`")))?;
            let to = parse_relation_ref(to).ok_or_else(|| {
                bad(format!(
                    "relationships on {on}: `to: {to}` is not ref('x') or source('a','b')"
                ))
            })?;
            let field = args
                .get("field")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad(format!("relationships on {on} needs `field: column`")))?
                .to_string();
            GenericKind::Relationships { to, field }
        }
        name if defined.contains(name) => {
            let bad_arg = args
                .keys()
                .filter_map(|k| k.as_str())
                .find(|k| !macros::is_identifier(k));
            if let Some(bad_arg) = bad_arg {
                return Err(bad(format!(
                    "test {name} on {on}: argument {bad_arg:?} is not a name"
                )));
            }
            GenericKind::Custom {
                test: name.to_string(),
                args: args.clone(),
            }
        }
        other => {
            return Err(TestParseError::Unknown(format!(
                "unknown test {other:?} on {on}; known: not_null, unique, accepted_values, \
                 relationships and the project's {{% test %}} blocks (or write a singular test)"
            )));
        }
    };
    let mut named_args = args;
    if !column.is_empty() {
        named_args.insert("column_name".into(), column.into());
    }
    let name = custom_name.unwrap_or_else(|| dbt_test_name(&kind_name, model, &named_args));
    Ok(GenericTest {
        name,
        model: model.to_string(),
        column: column.to_string(),
        kind,
        severity,
        where_clause,
        file: file.to_path_buf(),
    })
}

/// dbt's name for a generic test: `<test>_<model>_<arguments>` (sorted by name, values
/// flattened, anything but letters, digits and `_` as `_`, joined by `__`). (dbt shortens only
/// the file and alias of a long one, not its name.)
pub fn dbt_test_name(test: &str, model: &str, args: &serde_yaml::Mapping) -> String {
    let mut sorted: Vec<(String, &serde_yaml::Value)> = args
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
        .filter(|(k, _)| k != "model")
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut flat = Vec::new();
    for (_, value) in sorted {
        match value {
            serde_yaml::Value::Mapping(map) => flat.extend(map.values().map(python_str)),
            serde_yaml::Value::Sequence(items) => flat.extend(items.iter().map(python_str)),
            other => flat.push(python_str(other)),
        }
    }
    let clean: Vec<String> = flat.iter().map(|part| clean_name(part)).collect();
    format!("{test}_{model}_{}", clean.join("__"))
}

/// Runs of anything but ASCII letters, digits and `_` become one `_`.
fn clean_name(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

/// A YAML value as Python's `str()` prints what PyYAML reads from it.
fn python_str(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::Null => "None".into(),
        serde_yaml::Value::Bool(true) => "True".into(),
        serde_yaml::Value::Bool(false) => "False".into(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Sequence(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| match i {
                    serde_yaml::Value::String(s) => format!("'{s}'"),
                    other => python_str(other),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        serde_yaml::Value::Mapping(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("'{}': {}", python_str(k), python_str(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        serde_yaml::Value::Tagged(tagged) => python_str(&tagged.value),
    }
}

/// `ref('x')`, `ref("x")`, `source('a', 'b')`, also inside `{{ }}`.
pub fn parse_relation_ref(text: &str) -> Option<RelationRef> {
    let text = text.trim();
    let text = text
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .unwrap_or(text)
        .trim();
    let (function, rest) = text.split_once('(')?;
    let inner = rest.trim_end().strip_suffix(')')?;
    let args: Vec<String> = inner
        .split(',')
        .map(|a| a.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .collect();
    match (function.trim(), args.as_slice()) {
        ("ref", [name]) if !name.is_empty() => Some(RelationRef::Ref(name.clone())),
        ("source", [source, table]) => Some(RelationRef::Source(source.clone(), table.clone())),
        _ => None,
    }
}

/// Two tests with the same generated name (e.g. one declared twice) get `_2`, `_3` … suffixes.
fn dedupe_test_names(tests: &mut [GenericTest]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for test in tests.iter_mut() {
        let count = seen.entry(test.name.clone()).or_default();
        *count += 1;
        if *count > 1 {
            test.name = format!("{}_{}", test.name, count);
        }
    }
}

fn read(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// Every file under `dir` (none when it does not exist), sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut files = Vec::new();
    if dir.is_dir() {
        walk(dir, &mut files)?;
    }
    files.sort();
    Ok(files)
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn stem(path: &Path) -> Option<String> {
    path.file_stem().and_then(|s| s.to_str()).map(String::from)
}

/// Every file under `dir`, recursively; hidden entries (`.git`, editor files) are skipped.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ModelError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ModelError::Unreadable {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| ModelError::Unreadable {
            path: path.clone(),
            source,
        })?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_refs_parse() {
        assert_eq!(
            parse_relation_ref("ref('dim_users')"),
            Some(RelationRef::Ref("dim_users".into()))
        );
        assert_eq!(
            parse_relation_ref("{{ source(\"raw\", 'users_raw') }}"),
            Some(RelationRef::Source("raw".into(), "users_raw".into()))
        );
        assert_eq!(parse_relation_ref("dim_users"), None);
    }

    #[test]
    fn generic_tests_parse_with_severity() {
        let defined = std::collections::BTreeSet::from(["positive".to_string()]);
        let parse = |text: &str, column: &str| {
            let yaml: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
            parse_generic_test("m", column, &yaml, Path::new("s.yml"), &defined)
        };
        let test = parse(
            "{accepted_values: {values: [a, b], config: {severity: warn}}}",
            "c",
        )
        .unwrap();
        assert_eq!(test.severity, Severity::Warn);
        assert_eq!(
            test.kind,
            GenericKind::AcceptedValues(vec!["a".into(), "b".into()])
        );
        assert_eq!(test.name, "accepted_values_m_c__a__b");
        // dbt >= 1.10 puts the arguments under `arguments:`; same test, same name.
        let nested = parse(
            "{accepted_values: {arguments: {values: [a, b]}, config: {severity: warn}}}",
            "c",
        )
        .unwrap();
        assert_eq!(nested, test);
        assert!(matches!(
            parse("not_a_test", "c"),
            Err(TestParseError::Unknown(_))
        ));
        let custom = parse(
            "{positive: {arguments: {strict: true}, where: 'x > 0'}}",
            "c",
        )
        .unwrap();
        assert_eq!(custom.name, "positive_m_c__True");
        assert_eq!(custom.where_clause.as_deref(), Some("x > 0"));
        assert!(matches!(custom.kind, GenericKind::Custom { .. }));
        assert!(matches!(parse("unique", ""), Err(TestParseError::Bad(_))));
    }

    #[test]
    fn test_names_are_dbt_names() {
        let args: serde_yaml::Mapping = serde_yaml::from_str(
            "{column_name: status, values: [placed, shipped, completed, return_pending, returned]}",
        )
        .unwrap();
        // The name dbt 1.10 gives this test of jaffle_shop (long names are not shortened).
        assert_eq!(
            dbt_test_name("accepted_values", "orders", &args),
            "accepted_values_orders_status__placed__shipped__completed__return_pending__returned"
        );
        let args: serde_yaml::Mapping = serde_yaml::from_str(
            "{column_name: customer_id, to: \"ref('customers')\", field: customer_id}",
        )
        .unwrap();
        assert_eq!(
            dbt_test_name("relationships", "orders", &args),
            "relationships_orders_customer_id__customer_id__ref_customers_"
        );
    }
}
