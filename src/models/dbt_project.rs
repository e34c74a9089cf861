//! `dbt_project.yml`: where a dbt project keeps its models, seeds, tests and macros, and the
//! folder-level configs of `models:` and `seeds:` (dbt's layout, so that an existing dbt-postgres
//! project builds unmodified).
//!
//! A folder without `dbt_project.yml` is our own layout (see [`Layout::models_folder`]): models
//! anywhere under it, seeds in `seeds/`, singular tests in `tests/`, macros in `macros/`.
//!
//! Folder configs are nested by the node's fqn (project name, folders under the model or seed
//! path, file stem): `models: {shop: {+materialized: table, staging: {+schema: stg}}}`. A key is
//! a config when it starts with `+` or is one of dbt's config names with a non-mapping value (or
//! a config that takes a mapping, such as `column_types`); any other key with a mapping value is
//! a folder. Deeper levels override shallower ones; `tags` add up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ModelError;
use super::config::{ConfigValue, RawConfig};

/// The project's file name; its presence makes a folder a dbt project.
pub const DBT_PROJECT_FILE: &str = "dbt_project.yml";

/// Config names dbt accepts without a `+` in `dbt_project.yml`.
const CONFIG_KEYS: &[&str] = &[
    "materialized",
    "schema",
    "database",
    "alias",
    "tags",
    "enabled",
    "pre_hook",
    "post_hook",
    "persist_docs",
    "full_refresh",
    "unique_key",
    "on_schema_change",
    "incremental_strategy",
    "quote_columns",
    "column_types",
    "delimiter",
    "docs",
    "meta",
    "grants",
    "contract",
    "sql_header",
    "severity",
    "where",
    "store_failures",
    "limit",
    "warn_if",
    "error_if",
    "fail_calc",
    "group",
    "access",
    "indexes",
    "bind",
    "transient",
    "check_cols",
    "strategy",
    "loaded_at_field",
];

/// Configs whose value is a mapping (so a mapping under that key is not a folder).
const MAPPING_CONFIGS: &[&str] = &[
    "persist_docs",
    "column_types",
    "docs",
    "meta",
    "grants",
    "contract",
];

/// Where a project's files are, and its folder configs.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The project folder (the models folder for our own layout).
    pub root: PathBuf,
    /// dbt's project name, the first element of every fqn; none for our own layout.
    pub name: Option<String>,
    pub model_paths: Vec<PathBuf>,
    pub seed_paths: Vec<PathBuf>,
    pub test_paths: Vec<PathBuf>,
    pub macro_paths: Vec<PathBuf>,
    /// `models:` of dbt_project.yml.
    pub models: serde_yaml::Mapping,
    /// `seeds:` of dbt_project.yml.
    pub seeds: serde_yaml::Mapping,
    /// `vars:` of dbt_project.yml (`--vars` wins).
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Keys of dbt_project.yml that the runner does not honour, for the compatibility report.
    pub ignored: Vec<String>,
    /// Whether this is a dbt project (a folder with dbt_project.yml).
    pub dbt: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ProjectFile {
    name: String,
    #[serde(default)]
    model_paths: Option<Vec<String>>,
    #[serde(default)]
    seed_paths: Option<Vec<String>>,
    #[serde(default)]
    test_paths: Option<Vec<String>>,
    #[serde(default)]
    macro_paths: Option<Vec<String>>,
    #[serde(default)]
    models: Option<serde_yaml::Mapping>,
    #[serde(default)]
    seeds: Option<serde_yaml::Mapping>,
    #[serde(default)]
    vars: Option<serde_yaml::Mapping>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_yaml::Value>,
}

/// Keys of dbt_project.yml that change nothing in what is built.
const HARMLESS_KEYS: &[&str] = &[
    "version",
    "config-version",
    "profile",
    "target-path",
    "clean-targets",
    "log-path",
    "packages-install-path",
    "require-dbt-version",
    "flags",
    "analysis-paths",
    "docs-paths",
    "asset-paths",
    "quoting",
    "dbt-cloud",
];

impl Layout {
    /// `dir` as a dbt project when it holds dbt_project.yml, else as our models folder.
    pub fn discover(dir: &Path) -> Result<Self, ModelError> {
        let file = dir.join(DBT_PROJECT_FILE);
        if file.is_file() {
            Self::dbt(dir, &file)
        } else {
            Ok(Self::models_folder(dir))
        }
    }

    /// Our own layout: models anywhere under `dir`, seeds in `seeds/`, tests in `tests/`,
    /// macros in `macros/`.
    pub fn models_folder(dir: &Path) -> Self {
        Self {
            root: dir.to_path_buf(),
            model_paths: vec![dir.to_path_buf()],
            seed_paths: vec![dir.join("seeds")],
            test_paths: vec![dir.join("tests")],
            macro_paths: vec![dir.join("macros")],
            ..Self::default()
        }
    }

    fn dbt(dir: &Path, file: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(file).map_err(|source| ModelError::Unreadable {
            path: file.to_path_buf(),
            source,
        })?;
        let bad = |message: String| ModelError::Yaml {
            path: file.to_path_buf(),
            message,
        };
        let project: ProjectFile = serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let paths = |given: Option<Vec<String>>, default: &str| -> Vec<PathBuf> {
            given
                .unwrap_or_else(|| vec![default.to_string()])
                .iter()
                .map(|p| dir.join(p))
                .collect()
        };
        let mut ignored = Vec::new();
        for (key, value) in &project.rest {
            if HARMLESS_KEYS.contains(&key.as_str()) {
                continue;
            }
            match key.as_str() {
                "snapshot-paths" => {
                    let paths: Vec<String> =
                        serde_yaml::from_value(value.clone()).unwrap_or_default();
                    let has_snapshots = paths.iter().any(|p| {
                        std::fs::read_dir(dir.join(p)).is_ok_and(|entries| {
                            entries
                                .flatten()
                                .any(|e| e.path().extension().is_some_and(|x| x == "sql"))
                        })
                    });
                    if has_snapshots {
                        ignored.push(format!("{key}: {{% snapshot %}} blocks are not built (etl's snapshots are models with materialized='snapshot')"));
                    }
                }
                "snapshots" => {
                    ignored.push(format!("{key}: snapshot configs are not applied"));
                }
                // dbt < 1.0 names of model-paths and seed-paths, read below.
                "source-paths" | "data-paths" => {}
                "on-run-start" | "on-run-end" => {
                    if !value.is_null() {
                        ignored.push(format!("{key}: hooks are not run"));
                    }
                }
                "tests" | "data_tests" => {
                    ignored.push(format!("{key}: project-level test configs are not applied"));
                }
                "dispatch" | "query-comment" | "sources" | "exposures" | "metrics"
                | "semantic-models" | "saved-queries" | "unit_tests" => {
                    ignored.push(format!("{key}: not interpreted"));
                }
                other => ignored.push(format!("{other}: unknown key, not interpreted")),
            }
        }
        for file in ["packages.yml", "dependencies.yml"] {
            if dir.join(file).is_file() {
                ignored.push(format!(
                    "{file}: packages are not installed; their macros and tests are unavailable"
                ));
            }
        }
        let vars = project
            .vars
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| {
                let key = k.as_str()?.to_string();
                let value = serde_json::to_value(v).ok()?;
                Some((key, value))
            })
            .collect();
        let legacy = |key: &str| -> Option<Vec<String>> {
            project
                .rest
                .get(key)
                .and_then(|v| serde_yaml::from_value(v.clone()).ok())
        };
        let model_paths = project.model_paths.or_else(|| legacy("source-paths"));
        let seed_paths = project.seed_paths.or_else(|| legacy("data-paths"));
        Ok(Self {
            root: dir.to_path_buf(),
            model_paths: paths(model_paths, "models"),
            seed_paths: paths(seed_paths, "seeds"),
            test_paths: paths(project.test_paths, "tests"),
            macro_paths: paths(project.macro_paths, "macros"),
            name: Some(project.name),
            models: project.models.unwrap_or_default(),
            seeds: project.seeds.unwrap_or_default(),
            vars,
            ignored,
            dbt: true,
        })
    }

    /// Whether `path` lies in a seed, test or macro path (so is not a model).
    pub fn is_special(&self, path: &Path) -> bool {
        self.seed_paths
            .iter()
            .chain(&self.test_paths)
            .chain(&self.macro_paths)
            .any(|p| path.starts_with(p))
    }

    /// The fqn of a file found under `base`: project name, folders, file stem.
    pub fn fqn(&self, base: &Path, path: &Path) -> Vec<String> {
        let relative = path.strip_prefix(base).unwrap_or(path);
        let mut fqn: Vec<String> = self.name.iter().cloned().collect();
        let parts: Vec<String> = relative
            .components()
            .filter_map(|c| c.as_os_str().to_str().map(String::from))
            .collect();
        if let Some((file, folders)) = parts.split_last() {
            fqn.extend(folders.iter().cloned());
            let stem = Path::new(file)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or(file);
            fqn.push(stem.to_string());
        }
        fqn
    }
}

/// The folder configs that apply to the node at `fqn` (deeper wins; `tags` add up).
pub fn folder_config(tree: &serde_yaml::Mapping, fqn: &[String]) -> RawConfig {
    let mut raw = RawConfig::new();
    let mut tags: Vec<String> = Vec::new();
    let mut level = Some(tree);
    let mut depth = 0;
    while let Some(map) = level {
        for (key, value) in map {
            let Some(key) = key.as_str() else { continue };
            let Some(name) = config_name(key, value) else {
                continue;
            };
            let value = ConfigValue::from_yaml(value);
            if name == "tags" {
                match &value {
                    ConfigValue::Text(t) => tags.push(t.clone()),
                    ConfigValue::List(list) => tags.extend(list.iter().cloned()),
                    _ => {}
                }
                continue;
            }
            raw.insert(name, value);
        }
        level = fqn
            .get(depth)
            .and_then(|part| map.get(part.as_str()))
            .and_then(|v| v.as_mapping());
        depth += 1;
    }
    if !tags.is_empty() {
        tags.dedup();
        raw.insert("tags".into(), ConfigValue::List(tags));
    }
    raw
}

/// The config a key sets (without `+`, `-` as `_`), or none when the key is a folder.
fn config_name(key: &str, value: &serde_yaml::Value) -> Option<String> {
    if let Some(name) = key.strip_prefix('+') {
        return Some(name.replace('-', "_"));
    }
    let name = key.replace('-', "_");
    if !CONFIG_KEYS.contains(&name.as_str()) {
        return None;
    }
    if value.is_mapping() && !MAPPING_CONFIGS.contains(&name.as_str()) {
        // A folder that happens to have a config's name.
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fqn(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn folder_configs_nest_and_tags_add_up() {
        let tree: serde_yaml::Mapping = serde_yaml::from_str(
            "shop:\n  +materialized: view\n  +tags: base\n  marts:\n    materialized: table\n    \
             +schema: marts\n    tags: [m]\n    finance:\n      +enabled: false\n  staging:\n    \
             +post-hook: 'select 1'\n",
        )
        .unwrap();
        let raw = folder_config(&tree, &fqn(&["shop", "marts", "finance", "revenue"]));
        assert_eq!(
            raw.get("materialized"),
            Some(&ConfigValue::Text("table".into()))
        );
        assert_eq!(raw.get("schema"), Some(&ConfigValue::Text("marts".into())));
        assert_eq!(raw.get("enabled"), Some(&ConfigValue::Bool(false)));
        assert_eq!(
            raw.get("tags"),
            Some(&ConfigValue::List(vec!["base".into(), "m".into()]))
        );
        let raw = folder_config(&tree, &fqn(&["shop", "staging", "stg_orders"]));
        assert_eq!(
            raw.get("materialized"),
            Some(&ConfigValue::Text("view".into()))
        );
        assert_eq!(
            raw.get("post_hook"),
            Some(&ConfigValue::Text("select 1".into()))
        );
        assert!(folder_config(&tree, &fqn(&["other", "x"])).is_empty());
    }

    #[test]
    fn fqn_is_project_folders_and_stem() {
        let layout = Layout {
            name: Some("shop".into()),
            ..Layout::default()
        };
        assert_eq!(
            layout.fqn(Path::new("p/models"), Path::new("p/models/marts/a.sql")),
            fqn(&["shop", "marts", "a"])
        );
    }
}
