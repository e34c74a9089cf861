//! A model's configuration: `{{ config(...) }}` in its file, over `config:` in YAML.

use std::collections::BTreeMap;
use std::fmt;

/// A config value as both YAML and Jinja can write it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigValue {
    Text(String),
    List(Vec<String>),
    Bool(bool),
    Number(f64),
    /// A mapping from YAML (`column_types: {…}`).
    Map(serde_yaml::Value),
    /// Maps and other shapes we do not interpret (e.g. dbt's `post_hook` objects).
    Other(String),
}

impl ConfigValue {
    pub fn from_yaml(value: &serde_yaml::Value) -> Self {
        match value {
            serde_yaml::Value::String(s) => Self::Text(s.clone()),
            serde_yaml::Value::Bool(b) => Self::Bool(*b),
            serde_yaml::Value::Number(n) => Self::Number(n.as_f64().unwrap_or_default()),
            serde_yaml::Value::Sequence(items) => Self::List(
                items
                    .iter()
                    .map(|i| match i {
                        serde_yaml::Value::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
            ),
            serde_yaml::Value::Mapping(_) => Self::Map(value.clone()),
            other => Self::Other(format!("{other:?}")),
        }
    }

    pub fn from_jinja(value: &minijinja::Value) -> Self {
        use minijinja::value::ValueKind;
        match value.kind() {
            ValueKind::String => Self::Text(value.as_str().unwrap_or_default().to_string()),
            ValueKind::Bool => Self::Bool(value.is_true()),
            ValueKind::Number => Self::Number(value.to_string().parse().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => Self::List(
                value
                    .try_iter()
                    .map(|items| {
                        items
                            .map(|i| i.as_str().map_or_else(|| i.to_string(), String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => Self::Other(value.to_string()),
        }
    }

    /// A string or a list of strings, as a list (`unique_key='id'` or `['a','b']`).
    pub fn as_list(&self) -> Option<Vec<String>> {
        match self {
            Self::Text(s) => Some(vec![s.clone()]),
            Self::List(items) => Some(items.clone()),
            _ => None,
        }
    }
}

/// Raw settings by key; later layers override earlier ones.
pub type RawConfig = BTreeMap<String, ConfigValue>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Materialization {
    #[default]
    View,
    Table,
    Incremental,
    Snapshot,
}

impl Materialization {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::Table => "table",
            Self::Incremental => "incremental",
            Self::Snapshot => "snapshot",
        }
    }
}

impl fmt::Display for Materialization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IncrementalStrategy {
    /// Delete the target rows whose unique key arrives again, then insert the new rows.
    #[default]
    DeleteInsert,
    /// `MERGE`: update matched rows, insert the others.
    Merge,
    /// No unique key: the new rows are appended.
    Append,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warn,
    #[default]
    Error,
}

impl Severity {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "warn" => Some(Self::Warn),
            "error" => Some(Self::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Which columns a snapshot compares to detect a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CheckCols {
    /// Every column of the query except the unique key.
    #[default]
    All,
    Columns(Vec<String>),
}

/// A dbt-like `config()` index entry (`indexes=[{'columns': ['a'], 'unique': True}]`) is not
/// interpreted; these are the settings that are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelConfig {
    pub materialized: Materialization,
    pub unique_key: Vec<String>,
    pub tags: Vec<String>,
    pub incremental_strategy: IncrementalStrategy,
    pub check_cols: CheckCols,
    /// For singular tests: `{{ config(severity='warn') }}`.
    pub severity: Severity,
    /// `enabled=false` leaves the model out of the project.
    pub enabled: bool,
    /// Snapshots: close the current version of keys the query no longer returns.
    pub invalidate_hard_deletes: bool,
    /// SQL run after the model is built, rendered with `{{ this }}` etc., e.g.
    /// `post_hook="create index if not exists m_id_idx on {{ this }} (id)"`.
    pub post_hook: Vec<String>,
    /// SQL run before the model is built (dbt's `pre_hook`), rendered the same way.
    pub pre_hook: Vec<String>,
    /// The column saying when a row was loaded (dbt's `loaded_at_field`), with the promise that a
    /// row whose content changes gets a later value: with `--test-scope changed`, tests on the
    /// model check only the rows loaded since they last passed.
    pub loaded_at_field: Option<String>,
    /// dbt's `sql_header`: SQL run just before the statement that computes the model's rows
    /// (CREATE TABLE … AS, the incremental or snapshot temporary table), in the same
    /// transaction, e.g. `sql_header="set local jit = off"`. Views compute nothing when built
    /// and ignore it.
    pub sql_header: Option<String>,
}

impl ModelConfig {
    /// Interprets the merged raw settings; unknown keys are ignored (dbt has many).
    pub fn from_raw(raw: &RawConfig) -> Result<Self, String> {
        let text = |key: &str| -> Result<Option<String>, String> {
            match raw.get(key) {
                None => Ok(None),
                Some(ConfigValue::Text(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("{key} must be a string, not {other:?}")),
            }
        };
        let list = |key: &str| -> Result<Vec<String>, String> {
            match raw.get(key) {
                None => Ok(Vec::new()),
                Some(value) => value
                    .as_list()
                    .ok_or_else(|| format!("{key} must be a string or a list, not {value:?}")),
            }
        };
        let materialized = match text("materialized")?.as_deref() {
            None | Some("view") => Materialization::View,
            Some("table") => Materialization::Table,
            Some("incremental") => Materialization::Incremental,
            Some("snapshot") => Materialization::Snapshot,
            Some(other) => {
                return Err(format!(
                    "materialized={other:?}; use view, table, incremental or snapshot"
                ));
            }
        };
        let unique_key = list("unique_key")?;
        let incremental_strategy = match text("incremental_strategy")?.as_deref() {
            None if unique_key.is_empty() => IncrementalStrategy::Append,
            None | Some("delete+insert") => IncrementalStrategy::DeleteInsert,
            Some("merge") => IncrementalStrategy::Merge,
            Some("append") => IncrementalStrategy::Append,
            Some(other) => {
                return Err(format!(
                    "incremental_strategy={other:?}; use delete+insert, merge or append"
                ));
            }
        };
        if materialized == Materialization::Incremental
            && incremental_strategy != IncrementalStrategy::Append
            && unique_key.is_empty()
        {
            return Err("incremental_strategy delete+insert and merge need a unique_key".into());
        }
        if materialized == Materialization::Snapshot {
            if unique_key.is_empty() {
                return Err("a snapshot needs unique_key".into());
            }
            match text("strategy")?.as_deref() {
                None | Some("check") => {}
                Some(other) => {
                    return Err(format!(
                        "snapshot strategy={other:?}; only strategy='check' (with check_cols) is supported"
                    ));
                }
            }
        }
        let check_cols = match raw.get("check_cols") {
            None => CheckCols::All,
            Some(ConfigValue::Text(s)) if s == "all" => CheckCols::All,
            Some(value) => CheckCols::Columns(value.as_list().ok_or("check_cols must be a list")?),
        };
        let severity = match text("severity")? {
            None => Severity::Error,
            Some(s) => Severity::parse(&s).ok_or(format!("severity={s:?}; use warn or error"))?,
        };
        let enabled = match raw.get("enabled") {
            None => true,
            Some(ConfigValue::Bool(b)) => *b,
            Some(other) => return Err(format!("enabled must be true or false, not {other:?}")),
        };
        let invalidate_hard_deletes =
            match (raw.get("invalidate_hard_deletes"), raw.get("hard_deletes")) {
                (Some(ConfigValue::Bool(b)), _) => *b,
                (_, Some(ConfigValue::Text(mode))) => mode == "invalidate",
                _ => false,
            };
        Ok(Self {
            post_hook: list("post_hook")?,
            pre_hook: list("pre_hook")?,
            loaded_at_field: text("loaded_at_field")?,
            sql_header: text("sql_header")?,
            invalidate_hard_deletes,
            materialized,
            unique_key,
            tags: list("tags")?,
            incremental_strategy,
            check_cols,
            severity,
            enabled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, ConfigValue)]) -> RawConfig {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn defaults_to_view() {
        let config = ModelConfig::from_raw(&RawConfig::new()).unwrap();
        assert_eq!(config.materialized, Materialization::View);
        assert!(config.enabled);
    }

    #[test]
    fn incremental_needs_a_key_for_merge() {
        let bad = raw(&[
            ("materialized", ConfigValue::Text("incremental".into())),
            ("incremental_strategy", ConfigValue::Text("merge".into())),
        ]);
        assert!(ModelConfig::from_raw(&bad).is_err());
        let good = raw(&[
            ("materialized", ConfigValue::Text("incremental".into())),
            (
                "unique_key",
                ConfigValue::List(vec!["a".into(), "b".into()]),
            ),
        ]);
        let config = ModelConfig::from_raw(&good).unwrap();
        assert_eq!(
            config.incremental_strategy,
            IncrementalStrategy::DeleteInsert
        );
        assert_eq!(config.unique_key, ["a", "b"]);
    }

    #[test]
    fn unknown_materialization_is_refused() {
        let bad = raw(&[("materialized", ConfigValue::Text("ephemeral".into()))]);
        assert!(
            ModelConfig::from_raw(&bad)
                .unwrap_err()
                .contains("ephemeral")
        );
    }
}
