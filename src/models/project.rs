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
use super::config::Severity;

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
    pub path: PathBuf,
    pub sql: String,
}

#[derive(Debug, Clone)]
pub struct SeedFile {
    pub name: String,
    pub path: PathBuf,
    /// `seeds: [{name, config: {column_types: {col: type}}}]`: types that override inference.
    pub column_types: BTreeMap<String, String>,
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
}

impl GenericKind {
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotNull => "not_null",
            Self::Unique => "unique",
            Self::AcceptedValues(_) => "accepted_values",
            Self::Relationships { .. } => "relationships",
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
}

#[derive(Debug, Default, Deserialize)]
struct YamlFile {
    #[serde(default)]
    sources: Vec<YamlSource>,
    #[serde(default)]
    models: Vec<YamlModel>,
    #[serde(default)]
    seeds: Vec<YamlSeed>,
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
}

#[derive(Debug, Deserialize)]
struct YamlModel {
    name: String,
    #[serde(default)]
    config: Option<serde_yaml::Mapping>,
    #[serde(default)]
    columns: Vec<YamlColumn>,
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
    config: Option<YamlSeedConfig>,
}

#[derive(Debug, Deserialize)]
struct YamlSeedConfig {
    #[serde(default)]
    column_types: BTreeMap<String, String>,
}

impl Project {
    /// Reads the folder. Fails on unreadable files, bad YAML and duplicate model names.
    pub fn discover(dir: &Path) -> Result<Project, ModelError> {
        let mut files = Vec::new();
        walk(dir, &mut files)?;
        files.sort();
        let mut project = Project {
            dir: dir.to_path_buf(),
            ..Project::default()
        };
        let mut yaml_files = Vec::new();
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in files {
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            let top = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default()
                .to_string();
            let is_nested = relative.components().count() > 1;
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else {
                continue;
            };
            match ext.as_str() {
                "yml" | "yaml" => yaml_files.push(path),
                "sql" if is_nested && top == "tests" => {
                    let sql = read(&path)?;
                    project.singular_tests.push(SingularTestFile {
                        name: stem,
                        path,
                        sql,
                    });
                }
                "sql" if is_nested && top == "seeds" => {}
                "sql" => {
                    if let Some(first) = names.get(&stem) {
                        return Err(ModelError::DuplicateName {
                            name: stem,
                            first: first.clone(),
                            second: path,
                        });
                    }
                    names.insert(stem.clone(), path.clone());
                    let sql = read(&path)?;
                    project.models.push(ModelFile {
                        name: stem,
                        path,
                        sql,
                    });
                }
                "csv" if is_nested && top == "seeds" => {
                    if let Some(first) = names.get(&stem) {
                        return Err(ModelError::DuplicateName {
                            name: stem,
                            first: first.clone(),
                            second: path,
                        });
                    }
                    names.insert(stem.clone(), path.clone());
                    project.seeds.push(SeedFile {
                        name: stem,
                        path,
                        column_types: BTreeMap::new(),
                    });
                }
                _ => {}
            }
        }
        for path in yaml_files {
            project.read_yaml(&path)?;
        }
        Ok(project)
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
        for source in file.sources {
            let schema = source.schema.unwrap_or_else(|| source.name.clone());
            for table in source.tables {
                let key = (source.name.clone(), table.name.clone());
                self.sources.insert(
                    key,
                    SourceTable {
                        source: source.name.clone(),
                        identifier: table.identifier.unwrap_or_else(|| table.name.clone()),
                        table: table.name,
                        schema: schema.clone(),
                        file: path.to_path_buf(),
                    },
                );
            }
        }
        let model_names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        let seed_names: Vec<&str> = self.seeds.iter().map(|s| s.name.as_str()).collect();
        let mut tests = Vec::new();
        let mut undeclared = Vec::new();
        for model in file.models {
            let known = model_names.contains(&model.name.as_str())
                || seed_names.contains(&model.name.as_str());
            if !known {
                undeclared.push((model.name.clone(), path.to_path_buf()));
                continue;
            }
            if let Some(config) = model.config {
                self.yaml_configs.insert(model.name.clone(), config);
            }
            for column in model.columns {
                for test in column.tests.iter().chain(&column.data_tests) {
                    tests.push(
                        parse_generic_test(&model.name, &column.name, test, path)
                            .map_err(yaml_error)?,
                    );
                }
            }
        }
        for seed in file.seeds {
            if let Some(found) = self.seeds.iter_mut().find(|s| s.name == seed.name) {
                found.column_types = seed.config.map(|c| c.column_types).unwrap_or_default();
            }
        }
        self.undeclared.extend(undeclared);
        self.generic_tests.extend(tests);
        dedupe_test_names(&mut self.generic_tests);
        Ok(())
    }
}

/// Parses one entry of a column's `tests:` list: a bare name or `{name: {args…, config: {…}}}`.
fn parse_generic_test(
    model: &str,
    column: &str,
    entry: &serde_yaml::Value,
    file: &Path,
) -> Result<GenericTest, String> {
    let (kind_name, args) = match entry {
        serde_yaml::Value::String(name) => (name.clone(), serde_yaml::Mapping::new()),
        serde_yaml::Value::Mapping(map) if map.len() == 1 => {
            let (key, value) = map.iter().next().expect("one entry");
            let name = key
                .as_str()
                .ok_or_else(|| format!("test name {key:?} on {model}.{column} is not a string"))?;
            let args = match value {
                serde_yaml::Value::Mapping(args) => args.clone(),
                serde_yaml::Value::Null => serde_yaml::Mapping::new(),
                other => {
                    return Err(format!(
                        "test {name} on {model}.{column}: expected a mapping of arguments, got {other:?}"
                    ));
                }
            };
            (name.to_string(), args)
        }
        other => {
            return Err(format!(
                "test on {model}.{column}: expected a name or a one-key mapping, got {other:?}"
            ));
        }
    };
    let config = args
        .get("config")
        .and_then(|c| c.as_mapping())
        .cloned()
        .unwrap_or_default();
    let setting = |key: &str| {
        config
            .get(key)
            .or_else(|| args.get(key))
            .and_then(|v| v.as_str())
            .map(String::from)
    };
    let severity = match setting("severity") {
        None => Severity::Error,
        Some(text) => Severity::parse(&text).ok_or_else(|| {
            format!(
                "test {kind_name} on {model}.{column}: severity must be warn or error, not {text:?}"
            )
        })?,
    };
    let where_clause = setting("where");
    let kind = match kind_name.as_str() {
        "not_null" => GenericKind::NotNull,
        "unique" => GenericKind::Unique,
        "accepted_values" => {
            let values = args
                .get("values")
                .and_then(|v| v.as_sequence())
                .ok_or_else(|| {
                    format!("accepted_values on {model}.{column} needs `values: [...]`")
                })?;
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
            let to = args.get("to").and_then(|v| v.as_str()).ok_or_else(|| {
                format!("relationships on {model}.{column} needs `to: ref('model')`")
            })?;
            let to = parse_relation_ref(to).ok_or_else(|| {
                format!(
                    "relationships on {model}.{column}: `to: {to}` is not ref('x') or source('a','b')"
                )
            })?;
            let field = args
                .get("field")
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("relationships on {model}.{column} needs `field: column`"))?
                .to_string();
            GenericKind::Relationships { to, field }
        }
        other => {
            return Err(format!(
                "unknown test {other:?} on {model}.{column}; known: not_null, unique, \
                 accepted_values, relationships (or write a singular test in tests/)"
            ));
        }
    };
    let name = match &kind {
        GenericKind::Relationships { to, field } => {
            let to = match to {
                RelationRef::Ref(name) => name.clone(),
                RelationRef::Source(source, table) => format!("{source}_{table}"),
            };
            format!("relationships_{model}_{column}__{field}__{to}")
        }
        kind => format!("{}_{model}_{column}", kind.label()),
    };
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
        let yaml: serde_yaml::Value =
            serde_yaml::from_str("{accepted_values: {values: [a, b], config: {severity: warn}}}")
                .unwrap();
        let test = parse_generic_test("m", "c", &yaml, Path::new("s.yml")).unwrap();
        assert_eq!(test.severity, Severity::Warn);
        assert_eq!(
            test.kind,
            GenericKind::AcceptedValues(vec!["a".into(), "b".into()])
        );
        assert_eq!(test.name, "accepted_values_m_c");
        let bad: serde_yaml::Value = serde_yaml::from_str("not_a_test").unwrap();
        assert!(parse_generic_test("m", "c", &bad, Path::new("s.yml")).is_err());
    }
}
