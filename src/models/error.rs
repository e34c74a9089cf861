//! Why models could not be planned or built. Each variant names the model and its file, so the
//! message alone says where to look.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}; check --models-dir (ETL_MODELS_DIR)")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML for sources/models/seeds: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error(
        "two models are named {name}: {first} and {second}; model names are file stems and must \
         be unique, rename one of them"
    )]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{file} line {line}: {message} (rendering {model})")]
    Template {
        model: String,
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{file} line {line}: model {model} refs {target}, which is neither a model nor a seed; \
         check the spelling or add models/{target}.sql"
    )]
    UnknownRef {
        model: String,
        file: PathBuf,
        line: usize,
        target: String,
    },
    #[error(
        "{file} line {line}: model {model} uses source('{source_name}', '{table}'), which no YAML \
         file declares; add it under `sources:` (name, schema, tables)"
    )]
    UnknownSource {
        model: String,
        file: PathBuf,
        line: usize,
        source_name: String,
        table: String,
    },
    #[error("{file}: model {model} has a bad config: {message}")]
    BadConfig {
        model: String,
        file: PathBuf,
        message: String,
    },
    #[error("the models form a cycle: {cycle}; a model cannot depend on itself, even indirectly")]
    Cycle { cycle: String },
    #[error("--select/--exclude {selector:?}: {message}")]
    BadSelector { selector: String, message: String },
    #[error("--vars is not a YAML mapping like '{{key: value}}': {0}")]
    BadVars(String),
    #[error("--cron {expression:?} is not a cron expression: {message}")]
    BadCron { expression: String, message: String },
    /// A statement of a model, seed or test failed. `position` is a line in the compiled SQL.
    #[error("{what} {name} ({file}) failed: {message}{}", position.as_ref().map(|p| format!(" ({p})")).unwrap_or_default())]
    Sql {
        what: &'static str,
        name: String,
        file: PathBuf,
        message: String,
        position: Option<String>,
    },
    #[error("seed {seed} ({file}): {message}")]
    Seed {
        seed: String,
        file: PathBuf,
        message: String,
    },
    #[error("{context} failed: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot write {path}: {source}; check --target-dir (ETL_MODELS_TARGET_DIR)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    pub(crate) fn database(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { context, source }
    }
}
