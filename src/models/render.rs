//! Rendering a model's Jinja with dbt's vocabulary (minijinja): `config`, `ref`, `source`,
//! `this`, `is_incremental`, `var`, `env_var`, `target` (`schema`, `name`, `type`),
//! `adapter.quote`, `run_started_at`, `doc`, `execute`, `log`, the project's macros (see
//! [`super::macros`]); and for tests `changed_rows(ref('m'))`, the rows of `m` a test checks
//! with `--test-scope changed` (see [`super::data_tests`]).
//!
//! Rendering also records what the model referenced, which is how the DAG is found. Because a
//! `ref` inside a branch that did not render (`{% if is_incremental() %}`) would be missed, the
//! literal `ref('…')` calls inside Jinja tags are scanned as well ([`scan_calls`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use minijinja::value::{Kwargs, Object};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

use super::ModelError;
use super::config::{ConfigValue, RawConfig};
use super::project::SourceTable;

/// `"schema"."name"`, quoted so that any name is safe in SQL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Relation {
    pub schema: String,
    pub name: String,
}

impl Relation {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The same schema, another name (e.g. the `__etl_tmp` table a model is built into).
    pub fn with_suffix(&self, suffix: &str) -> Self {
        Self::new(self.schema.clone(), format!("{}{suffix}", self.name))
    }

    /// `schema.name` unquoted, for messages.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.name)
        )
    }
}

impl Object for Relation {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "schema" => Some(Value::from(self.schema.clone())),
            "identifier" | "name" | "table" => Some(Value::from(self.name.clone())),
            _ => None,
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_ref(), f)
    }
}

/// Quotes an SQL identifier: `a"b` becomes `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What every template of a project sees besides relations: its macros and docs, the target's
/// name, the time the run started.
#[derive(Debug, Clone)]
pub struct JinjaContext {
    /// Every macro file, joined (see [`super::macros::joined`]).
    pub macros: String,
    /// The macros they define, imported into every template.
    pub macro_names: BTreeSet<String>,
    pub docs: BTreeMap<String, String>,
    /// `target.name` (dbt's profile target; `--target`).
    pub target_name: String,
    pub run_started_at: DateTime<Utc>,
}

impl Default for JinjaContext {
    fn default() -> Self {
        Self {
            macros: String::new(),
            macro_names: BTreeSet::new(),
            docs: BTreeMap::new(),
            target_name: super::DEFAULT_TARGET_NAME.to_string(),
            run_started_at: Utc::now(),
        }
    }
}

/// What templates may refer to.
#[derive(Debug, Clone, Copy)]
pub struct RenderScope<'a> {
    /// The target schema (dbt's default schema).
    pub schema: &'a str,
    /// Every model and seed, and where it builds.
    pub nodes: &'a BTreeMap<String, Relation>,
    pub sources: &'a BTreeMap<(String, String), SourceTable>,
    pub vars: &'a BTreeMap<String, serde_json::Value>,
    /// What `changed_rows(rel)` reads for each relation; a relation not here (and every
    /// relation when none) is read whole.
    pub changed: Option<&'a BTreeMap<Relation, ChangedRows>>,
    pub jinja: &'a JinjaContext,
}

/// `adapter`: `adapter.quote('name')`.
#[derive(Debug)]
struct Adapter;

impl Object for Adapter {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut minijinja::State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match (method, args) {
            ("quote", [name]) => Ok(Value::from_safe_string(quote_ident(
                &name.as_str().map_or_else(|| name.to_string(), String::from),
            ))),
            // dbt's dispatch: the project's `postgres__<name>` macro, else `default__<name>`
            // (a macro namespace, the second argument, is not searched: packages are not
            // supported).
            ("dispatch", [name, ..]) => {
                let name = name.as_str().unwrap_or_default();
                for candidate in [format!("postgres__{name}"), format!("default__{name}")] {
                    let found = _state.lookup(&candidate);
                    if let Some(found) = found.filter(|v| !v.is_undefined()) {
                        return Ok(found);
                    }
                }
                Err(Error::new(
                    ErrorKind::UnknownFunction,
                    format!(
                        "adapter.dispatch({name:?}): no postgres__{name} or default__{name} macro"
                    ),
                ))
            }
            _ => Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("adapter.{method} is not supported (only quote and dispatch)"),
            )),
        }
    }
}

/// `dbt`: the few cross-database macros of dbt's own namespace that staging models call, as
/// dbt-postgres renders them (`dbt.date_trunc('day', c)`, `dbt.type_string()` …).
#[derive(Debug)]
struct DbtMacros;

impl Object for DbtMacros {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut minijinja::State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let arg = |i: usize| {
            args.get(i)
                .map(|a| a.as_str().map_or_else(|| a.to_string(), String::from))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::MissingArgument,
                        format!("dbt.{method}() needs more arguments"),
                    )
                })
        };
        let sql = match method {
            "date_trunc" => format!("date_trunc('{}', {})", arg(0)?, arg(1)?),
            "dateadd" => format!("{} + ((interval '1 {}') * ({}))", arg(2)?, arg(0)?, arg(1)?),
            "current_timestamp" => "now()".into(),
            "type_string" => "TEXT".into(),
            "type_timestamp" => "timestamp".into(),
            "type_float" => "float".into(),
            "type_numeric" => "numeric(28,6)".into(),
            "type_bigint" => "bigint".into(),
            "type_int" => "integer".into(),
            "type_boolean" => "boolean".into(),
            "cast" => format!("cast({} as {})", arg(0)?, arg(1)?),
            "safe_cast" => format!("cast({} as {})", arg(0)?, arg(1)?),
            _ => {
                return Err(Error::new(
                    ErrorKind::UnknownMethod,
                    format!("dbt.{method}() is not supported"),
                ));
            }
        };
        Ok(Value::from_safe_string(sql))
    }
}

/// `run_started_at`: prints as Python prints an aware datetime; `strftime` and `isoformat`.
#[derive(Debug)]
struct StartedAt(DateTime<Utc>);

impl Object for StartedAt {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut minijinja::State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match (method, args) {
            ("strftime", [format]) => {
                let format = format.as_str().unwrap_or_default();
                let mut out = String::new();
                fmt::write(&mut out, format_args!("{}", self.0.format(format))).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        format!("run_started_at.strftime: bad format {format:?}"),
                    )
                })?;
                Ok(Value::from(out))
            }
            ("isoformat", []) => Ok(Value::from(
                self.0.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
            )),
            _ => Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("run_started_at.{method} is not supported (strftime, isoformat)"),
            )),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d %H:%M:%S%.6f+00:00"))
    }
}

/// The rows of a relation loaded after `since`, by its `loaded_at_field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedRows {
    pub field: String,
    pub since: DateTime<Utc>,
}

impl ChangedRows {
    /// `(SELECT * FROM rel WHERE "field" > '…'::timestamptz)`: a subquery, to be aliased.
    pub fn subquery(&self, relation: &Relation) -> String {
        format!(
            "(SELECT * FROM {relation} WHERE {} > {})",
            quote_ident(&self.field),
            self.since_literal()
        )
    }

    /// `since` as an SQL literal (formatted here, not taken from any input).
    pub fn since_literal(&self) -> String {
        format!(
            "'{}'::timestamptz",
            self.since
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    }
}

/// A rendered template and what it referred to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    pub sql: String,
    pub config: RawConfig,
    pub refs: BTreeSet<String>,
    pub sources: BTreeSet<(String, String)>,
    /// The relations passed to `changed_rows()`.
    pub changed: BTreeSet<Relation>,
}

#[derive(Debug, Default)]
struct Capture {
    config: RawConfig,
    refs: BTreeSet<String>,
    sources: BTreeSet<(String, String)>,
    changed: BTreeSet<Relation>,
    failure: Option<Failure>,
}

#[derive(Debug)]
enum Failure {
    UnknownRef(String),
    UnknownSource(String, String),
}

fn lock(capture: &Mutex<Capture>) -> MutexGuard<'_, Capture> {
    capture
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Renders `template` (the text of `file`, model `model`).
pub fn render(
    scope: &RenderScope<'_>,
    model: &str,
    file: &Path,
    template: &str,
    is_incremental: bool,
) -> Result<Rendered, ModelError> {
    let capture = Arc::new(Mutex::new(Capture::default()));
    let env = environment(scope, model, is_incremental, &capture)?;
    let file_name = file.display().to_string();
    let source = with_macro_imports(scope.jinja, template);
    let result = env
        .template_from_named_str(&file_name, &source)
        .and_then(|t| t.render(()));
    finish(result, &capture, model, file)
}

/// Renders the project's generic test `test` (a `{% test %}` block) with `model` (the
/// relation, or a subquery when the test has a `where`), `column_name` (none for a test on the
/// model) and the YAML arguments as keyword arguments.
pub fn render_generic_test(
    scope: &RenderScope<'_>,
    name: &str,
    file: &Path,
    test: &str,
    model: Value,
    column_name: Option<&str>,
    args: &serde_yaml::Mapping,
) -> Result<Rendered, ModelError> {
    let capture = Arc::new(Mutex::new(Capture::default()));
    let env = environment(scope, name, false, &capture)?;
    let mut context: BTreeMap<String, Value> = BTreeMap::new();
    let mut call_args = vec!["model=model".to_string()];
    context.insert("model".into(), model);
    if let Some(column) = column_name {
        context.insert("column_name".into(), Value::from(column));
        call_args.push("column_name=column_name".into());
    }
    for (key, value) in args {
        // Argument names were checked to be names when the YAML was read.
        let Some(key) = key.as_str().filter(|k| super::macros::is_identifier(k)) else {
            continue;
        };
        context.insert(key.to_string(), test_argument(scope, value));
        call_args.push(format!("{key}={key}"));
    }
    let source = format!(
        "{{% from {:?} import test_{test} %}}{{{{ test_{test}({}) }}}}",
        super::macros::MACROS_TEMPLATE,
        call_args.join(", ")
    );
    let result = env
        .template_from_named_str(&file.display().to_string(), &source)
        .and_then(|t| t.render(&context));
    finish(result, &capture, name, file)
}

/// The schema the project's own `generate_schema_name(custom_schema_name, node)` macro gives a
/// node (`node` has `name`, `resource_type`, `fqn`, `original_file_path`).
pub fn render_schema_name(
    scope: &RenderScope<'_>,
    custom: Option<&str>,
    name: &str,
    resource_type: &str,
    fqn: &[String],
    file: &Path,
) -> Result<String, ModelError> {
    let capture = Arc::new(Mutex::new(Capture::default()));
    let env = environment(scope, name, false, &capture)?;
    let node = Value::from(BTreeMap::from([
        ("name", Value::from(name)),
        ("resource_type", Value::from(resource_type)),
        ("fqn", Value::from(fqn.to_vec())),
        (
            "original_file_path",
            Value::from(file.display().to_string()),
        ),
    ]));
    let context = BTreeMap::from([
        (
            "custom_schema_name",
            custom.map_or(Value::from(()), Value::from),
        ),
        ("node", node),
    ]);
    let source = format!(
        "{{% from {:?} import generate_schema_name %}}{{{{ generate_schema_name(custom_schema_name, node) }}}}",
        super::macros::MACROS_TEMPLATE
    );
    let result = env
        .template_from_named_str(&file.display().to_string(), &source)
        .and_then(|t| t.render(&context));
    Ok(finish(result, &capture, name, file)?.sql.trim().to_string())
}

/// A YAML test argument as Jinja sees it: `ref('x')`/`source('a','b')` strings as relations.
fn test_argument(scope: &RenderScope<'_>, value: &serde_yaml::Value) -> Value {
    if let Some(text) = value.as_str() {
        match super::project::parse_relation_ref(text) {
            Some(super::project::RelationRef::Ref(name)) => {
                if let Some(relation) = scope.nodes.get(&name) {
                    return Value::from_object(relation.clone());
                }
            }
            Some(super::project::RelationRef::Source(source, table)) => {
                if let Some(found) = scope.sources.get(&(source, table)) {
                    return Value::from_object(Relation::new(
                        found.schema.clone(),
                        found.identifier.clone(),
                    ));
                }
            }
            None => {}
        }
    }
    serde_json::to_value(value).map_or_else(|_| Value::from(()), |json| json_to_value(&json))
}

/// `{% from '<macros>' import a, b %}` before the template, on its first line (so line numbers
/// stay), when the project has macros.
fn with_macro_imports(jinja: &JinjaContext, template: &str) -> String {
    if jinja.macro_names.is_empty() {
        return template.to_string();
    }
    let names: Vec<&str> = jinja.macro_names.iter().map(String::as_str).collect();
    format!(
        "{{% from {:?} import {} %}}{template}",
        super::macros::MACROS_TEMPLATE,
        names.join(", ")
    )
}

/// Instructions one render may run. Real models take hundreds; nested loops over `range(100000)`
/// would take 10^10, which is a hang, not a model (issue 17).
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// An environment with dbt's functions, capturing what the template refers to.
fn environment(
    scope: &RenderScope<'_>,
    model: &str,
    is_incremental: bool,
    capture: &Arc<Mutex<Capture>>,
) -> Result<Environment<'static>, ModelError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    let schema = scope.schema.to_string();
    if !scope.jinja.macros.is_empty() {
        env.add_template_owned(super::macros::MACROS_TEMPLATE, scope.jinja.macros.clone())
            .map_err(|error| ModelError::Template {
                model: model.to_string(),
                file: super::macros::MACROS_TEMPLATE.into(),
                line: error.line().unwrap_or(0),
                message: error
                    .detail()
                    .map_or_else(|| error.kind().to_string(), String::from),
            })?;
    }
    let this = scope
        .nodes
        .get(model)
        .cloned()
        .unwrap_or_else(|| Relation::new(schema.clone(), model));
    env.add_global("this", Value::from_object(this));
    env.add_global(
        "target",
        Value::from(BTreeMap::from([
            ("schema", Value::from(schema.clone())),
            ("name", Value::from(scope.jinja.target_name.clone())),
            ("type", Value::from("postgres")),
            ("threads", Value::from(1)),
        ])),
    );
    env.add_global("adapter", Value::from_object(Adapter));
    env.add_global("dbt", Value::from_object(DbtMacros));
    env.add_global(
        "run_started_at",
        Value::from_object(StartedAt(scope.jinja.run_started_at)),
    );
    env.add_global("execute", Value::from(true));
    // dbt's `return(x)` ends a macro with a value; here the macro renders the value instead,
    // which is the same for the usual `{{ return(adapter.dispatch('m')(…)) }}`.
    env.add_function("return", |value: Value| value);
    env.set_unknown_method_callback(python_method);
    env.add_function("log", |_message: Value, _kwargs: Kwargs| String::new());
    {
        let docs = scope.jinja.docs.clone();
        env.add_function("doc", move |name: String| -> Result<String, Error> {
            docs.get(&name).cloned().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("doc({name:?}): no {{% docs {name} %}} block"),
                )
            })
        });
    }
    {
        let capture = capture.clone();
        env.add_function("config", move |kwargs: Kwargs| -> Result<String, Error> {
            let mut capture = lock(&capture);
            for key in kwargs.args() {
                let value: Value = kwargs.get(key)?;
                capture
                    .config
                    .insert(key.to_string(), ConfigValue::from_jinja(&value));
            }
            Ok(String::new())
        });
    }
    {
        let capture = capture.clone();
        let nodes = scope.nodes.clone();
        env.add_function(
            "ref",
            move |first: String, second: Option<String>| -> Result<Value, Error> {
                // ref('package', 'model') names the model second.
                let name = second.unwrap_or(first);
                let mut capture = lock(&capture);
                let Some(relation) = nodes.get(&name) else {
                    capture.failure = Some(Failure::UnknownRef(name.clone()));
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("unknown ref {name:?}"),
                    ));
                };
                capture.refs.insert(name.clone());
                Ok(Value::from_object(relation.clone()))
            },
        );
    }
    {
        let capture = capture.clone();
        let sources = scope.sources.clone();
        env.add_function(
            "source",
            move |source: String, table: String| -> Result<Value, Error> {
                let mut capture = lock(&capture);
                let key = (source, table);
                let Some(found) = sources.get(&key) else {
                    capture.failure = Some(Failure::UnknownSource(key.0.clone(), key.1.clone()));
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("unknown source {:?}.{:?}", key.0, key.1),
                    ));
                };
                capture.sources.insert(key);
                Ok(Value::from_object(Relation::new(
                    found.schema.clone(),
                    found.identifier.clone(),
                )))
            },
        );
    }
    env.add_function("is_incremental", move || is_incremental);
    {
        let capture = capture.clone();
        let changed = scope.changed.cloned();
        env.add_function(
            "changed_rows",
            move |relation: Value| -> Result<Value, Error> {
                let Some(found) = relation.downcast_object_ref::<Relation>() else {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "changed_rows() takes a relation: changed_rows(ref('model'))",
                    ));
                };
                lock(&capture).changed.insert(found.clone());
                Ok(match changed.as_ref().and_then(|c| c.get(found)) {
                    Some(rows) => Value::from_safe_string(rows.subquery(found)),
                    None => relation.clone(),
                })
            },
        );
    }
    {
        let vars = scope.vars.clone();
        env.add_function(
            "var",
            move |name: String, default: Option<Value>| -> Result<Value, Error> {
                match (vars.get(&name), default) {
                    (Some(value), _) => Ok(json_to_value(value)),
                    (None, Some(default)) => Ok(default),
                    (None, None) => Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!(
                            "var({name:?}) has no value and no default; pass --vars '{{{name}: …}}'"
                        ),
                    )),
                }
            },
        );
    }
    env.add_function(
        "env_var",
        |name: String, default: Option<String>| -> Result<String, Error> {
            match (std::env::var(&name), default) {
                (Ok(value), _) => Ok(value),
                (Err(_), Some(default)) => Ok(default),
                (Err(_), None) => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("environment variable {name} is not set and has no default"),
                )),
            }
        },
    );

    Ok(env)
}

/// The Python methods dbt templates call on strings and dicts, which minijinja lacks.
fn python_method(
    _state: &mut minijinja::State<'_, '_>,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    let unknown = || {
        let message = if value.is_undefined() {
            format!(
                "{method}() is called on something undefined (a package's macro, such as \
                 dbt_utils.{method}? packages are not supported)"
            )
        } else {
            format!("{}.{method}() is not supported", value.kind())
        };
        Error::new(ErrorKind::UnknownMethod, message)
    };
    let text_arg = |i: usize| args.get(i).and_then(|a| a.as_str().map(String::from));
    if let Some(text) = value.as_str() {
        let chars = text_arg(0);
        let trim_set = |c: char| match &chars {
            Some(set) => set.contains(c),
            None => c.is_whitespace(),
        };
        return Ok(match method {
            "upper" => Value::from(text.to_uppercase()),
            "lower" => Value::from(text.to_lowercase()),
            "strip" => Value::from(text.trim_matches(trim_set)),
            "lstrip" => Value::from(text.trim_start_matches(trim_set)),
            "rstrip" => Value::from(text.trim_end_matches(trim_set)),
            "startswith" => Value::from(text.starts_with(&text_arg(0).ok_or_else(unknown)?)),
            "endswith" => Value::from(text.ends_with(&text_arg(0).ok_or_else(unknown)?)),
            "replace" => Value::from(text.replace(
                &text_arg(0).ok_or_else(unknown)?,
                &text_arg(1).ok_or_else(unknown)?,
            )),
            "split" => Value::from(match text_arg(0) {
                Some(sep) => text
                    .split(sep.as_str())
                    .map(Value::from)
                    .collect::<Vec<_>>(),
                None => text.split_whitespace().map(Value::from).collect::<Vec<_>>(),
            }),
            "join" => Value::from(
                args.first()
                    .ok_or_else(unknown)?
                    .try_iter()?
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
                    .collect::<Vec<_>>()
                    .join(text),
            ),
            _ => return Err(unknown()),
        });
    }
    if value.kind() == minijinja::value::ValueKind::Map {
        return match method {
            "get" => {
                let key = args.first().ok_or_else(unknown)?;
                Ok(value
                    .get_item(key)
                    .ok()
                    .filter(|v| !v.is_undefined())
                    .or_else(|| args.get(1).cloned())
                    .unwrap_or(Value::from(())))
            }
            "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "values" => Ok(Value::from(
                value
                    .try_iter()?
                    .map(|k| value.get_item(&k).unwrap_or_default())
                    .collect::<Vec<_>>(),
            )),
            "items" => Ok(Value::from(
                value
                    .try_iter()?
                    .map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        Value::from(vec![k, v])
                    })
                    .collect::<Vec<_>>(),
            )),
            _ => Err(unknown()),
        };
    }
    Err(unknown())
}

/// The rendered SQL and what it referred to, or the error, naming what failed.
fn finish(
    result: Result<String, Error>,
    capture: &Mutex<Capture>,
    model: &str,
    file: &Path,
) -> Result<Rendered, ModelError> {
    let mut capture = lock(capture);
    match result {
        Ok(sql) => Ok(Rendered {
            sql: clean_sql(&sql),
            config: std::mem::take(&mut capture.config),
            refs: std::mem::take(&mut capture.refs),
            sources: std::mem::take(&mut capture.sources),
            changed: std::mem::take(&mut capture.changed),
        }),
        Err(error) => {
            let line = error.line().unwrap_or(0);
            Err(match capture.failure.take() {
                Some(Failure::UnknownRef(target)) => ModelError::UnknownRef {
                    model: model.to_string(),
                    file: file.to_path_buf(),
                    line,
                    target,
                },
                Some(Failure::UnknownSource(source_name, table)) => ModelError::UnknownSource {
                    model: model.to_string(),
                    file: file.to_path_buf(),
                    line,
                    source_name,
                    table,
                },
                None => ModelError::Template {
                    model: model.to_string(),
                    file: file.to_path_buf(),
                    line,
                    message: error
                        .detail()
                        .map_or_else(|| error.kind().to_string(), String::from),
                },
            })
        }
    }
}

/// A config value from YAML that holds Jinja (`+enabled: "{{ var('load', false) }}"`), rendered
/// as dbt renders dbt_project.yml: with `var`, `env_var` and `target`. `True`/`False` become
/// booleans.
pub fn render_config_text(
    text: &str,
    vars: &BTreeMap<String, serde_json::Value>,
    target_schema: &str,
    target_name: &str,
) -> Result<ConfigValue, String> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    let vars = vars.clone();
    env.add_function(
        "var",
        move |name: String, default: Option<Value>| -> Result<Value, Error> {
            match (vars.get(&name), default) {
                (Some(value), _) => Ok(json_to_value(value)),
                (None, Some(default)) => Ok(default),
                (None, None) => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("var({name:?}) has no value and no default"),
                )),
            }
        },
    );
    env.add_function("env_var", |name: String, default: Option<String>| {
        std::env::var(&name).ok().or(default).unwrap_or_default()
    });
    env.add_global(
        "target",
        Value::from(BTreeMap::from([
            ("schema", Value::from(target_schema)),
            ("name", Value::from(target_name)),
            ("type", Value::from("postgres")),
        ])),
    );
    let rendered = env
        .render_str(text, ())
        .map_err(|e| format!("{text:?}: {e}"))?;
    Ok(match rendered.trim() {
        "True" | "true" => ConfigValue::Bool(true),
        "False" | "false" => ConfigValue::Bool(false),
        other => ConfigValue::Text(other.to_string()),
    })
}

/// Trailing whitespace and semicolons go: the SQL is wrapped in DDL.
fn clean_sql(sql: &str) -> String {
    sql.trim_end()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .trim_start_matches('\n')
        .to_string()
}

fn json_to_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        serde_json::Value::String(s) => Value::from(s.clone()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(json_to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

/// A literal `ref('x')` or `source('a', 'b')` call found inside a Jinja tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScannedCall {
    Ref {
        name: String,
        line: usize,
    },
    Source {
        source: String,
        table: String,
        line: usize,
    },
}

/// Finds literal `ref`/`source` calls inside `{{ }}` and `{% %}` (not in `{# #}` comments), in
/// branches that rendering may skip, with their line numbers.
pub fn scan_calls(template: &str) -> Vec<ScannedCall> {
    let mut calls = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while let Some(start) = template[i..].find('{').map(|p| p + i) {
        let close = match bytes.get(start + 1) {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            Some(b'#') => {
                i = template[start..]
                    .find("#}")
                    .map_or(template.len(), |p| start + p + 2);
                continue;
            }
            _ => {
                i = start + 1;
                continue;
            }
        };
        let end = template[start + 2..]
            .find(close)
            .map_or(template.len(), |p| start + 2 + p);
        let tag = &template[start + 2..end];
        let tag_line = 1 + template[..start].matches('\n').count();
        scan_tag(tag, tag_line, &mut calls);
        i = (end + 2).min(template.len());
    }
    calls
}

fn scan_tag(tag: &str, tag_line: usize, calls: &mut Vec<ScannedCall>) {
    for function in ["ref", "source"] {
        let pattern = format!("{function}(");
        let mut from = 0;
        while let Some(pos) = tag[from..].find(&pattern).map(|p| p + from) {
            from = pos + pattern.len();
            let preceded_by_ident = tag[..pos]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
            if preceded_by_ident {
                continue;
            }
            let Some(args) = literal_args(&tag[from..]) else {
                continue;
            };
            let line = tag_line + tag[..pos].matches('\n').count();
            match (function, args.as_slice()) {
                ("ref", [name]) | ("ref", [_, name]) => calls.push(ScannedCall::Ref {
                    name: name.clone(),
                    line,
                }),
                ("source", [source, table]) => calls.push(ScannedCall::Source {
                    source: source.clone(),
                    table: table.clone(),
                    line,
                }),
                _ => {}
            }
        }
    }
}

/// `'a', "b")` → `["a", "b"]` when every argument is a string literal.
fn literal_args(text: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut rest = text.trim_start();
    loop {
        let quote = rest.chars().next()?;
        if quote == ')' && args.is_empty() {
            return None;
        }
        if quote != '\'' && quote != '"' {
            return None;
        }
        let end = rest[1..].find(quote)? + 1;
        args.push(rest[1..end].to_string());
        rest = rest[end + 1..].trim_start();
        match rest.chars().next()? {
            ',' => rest = rest[1..].trim_start(),
            ')' => return Some(args),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type ScopeParts = (
        BTreeMap<String, Relation>,
        BTreeMap<(String, String), SourceTable>,
        BTreeMap<String, serde_json::Value>,
    );

    fn scope_parts() -> ScopeParts {
        let nodes = ["a", "b"]
            .iter()
            .map(|s| (s.to_string(), Relation::new("analytics", *s)))
            .collect();
        let sources = BTreeMap::from([(
            ("raw".to_string(), "t".to_string()),
            SourceTable {
                source: "raw".into(),
                table: "t".into(),
                schema: "public".into(),
                identifier: "t".into(),
                file: "sources.yml".into(),
            },
        )]);
        let vars = BTreeMap::from([("days".to_string(), serde_json::json!(7))]);
        (nodes, sources, vars)
    }

    #[test]
    fn renders_dbt_vocabulary() {
        let (nodes, sources, vars) = scope_parts();
        let scope = RenderScope {
            schema: "analytics",
            nodes: &nodes,
            sources: &sources,
            vars: &vars,
            changed: None,
            jinja: &JinjaContext::default(),
        };
        let template = "{{ config(materialized='incremental', unique_key=['x','y'], tags=['t']) }}\n\
            select * from {{ ref('a') }} join {{ source('raw', 't') }} using (id)\n\
            {% if is_incremental() %}where x > (select max(x) from {{ this }}){% endif %}\n\
            and d > {{ var('days') }} and e = {{ var('missing', 3) }};\n";
        let out = render(&scope, "m", Path::new("m.sql"), template, true).unwrap();
        assert_eq!(
            out.sql,
            "select * from \"analytics\".\"a\" join \"public\".\"t\" using (id)\n\
             where x > (select max(x) from \"analytics\".\"m\")\nand d > 7 and e = 3"
        );
        assert_eq!(out.refs, BTreeSet::from(["a".to_string()]));
        assert_eq!(
            out.config.get("unique_key"),
            Some(&ConfigValue::List(vec!["x".into(), "y".into()]))
        );
        let off = render(&scope, "m", Path::new("m.sql"), template, false).unwrap();
        assert!(!off.sql.contains("max(x)"));
    }

    #[test]
    fn a_template_that_would_run_for_hours_stops_at_its_fuel() {
        let (nodes, sources, vars) = scope_parts();
        let scope = RenderScope {
            schema: "analytics",
            nodes: &nodes,
            sources: &sources,
            vars: &vars,
            changed: None,
            jinja: &JinjaContext::default(),
        };
        // 10^10 iterations without the bound.
        let template = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}\
                        {% endfor %}select 1";
        let started = std::time::Instant::now();
        let err = render(&scope, "m", Path::new("m.sql"), template, false).unwrap_err();
        assert!(err.to_string().contains("fuel"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn renders_what_real_projects_use() {
        let (mut nodes, sources, vars) = scope_parts();
        nodes.insert("b".into(), Relation::new("analytics_marts", "b"));
        let files = [super::super::project::MacroFile {
            path: "macros/m.sql".into(),
            text: super::super::macros::translate(
                "{% macro cents_to_dollars(col, scale=2) -%}\n({{ col }} / 100)::numeric(16, {{ scale }})\n{%- endmacro %}\n\
                 {% macro twice(col) %}{{ cents_to_dollars(col) }} * 2{% endmacro %}\n\
                 {% test positive(model, column_name) %}select * from {{ model }} where {{ column_name }} <= 0{% endtest %}\n\
                 {% macro cents(c) -%}{{ return(adapter.dispatch('cents')(c)) }}{%- endmacro %}\n\
                 {% macro default__cents(c) -%}({{ c }} / 100){%- endmacro %}\n\
                 {% macro postgres__cents(c) -%}({{ c }}::numeric / 100){%- endmacro %}",
            )
            .0,
        }];
        let jinja = JinjaContext {
            macros: super::super::macros::joined(&files),
            macro_names: super::super::macros::macro_names(&files),
            docs: BTreeMap::from([("d".to_string(), "The docs.".to_string())]),
            target_name: "ci".into(),
            run_started_at: "2025-01-02T03:04:05Z".parse().unwrap(),
        };
        let scope = RenderScope {
            schema: "analytics",
            nodes: &nodes,
            sources: &sources,
            vars: &vars,
            changed: None,
            jinja: &jinja,
        };
        let template = "{#- a comment -#}\n{% set methods = ['card', 'cash'] %}\nselect\n\
            {%- for m in methods %}\n  sum({{ adapter.quote(m) }}){% if not loop.last %},{% endif %}\n\
            {%- endfor %}\n, {{ twice('amount') }}, '{{ target.name }}', '{{ run_started_at.strftime('%Y') }}'\n\
            from {{ ref('b') }} -- {{ doc('d') }} {{ cents('x') }} {{ 'a,b'.split(',') | length }} {{ {'k': 1}.get('z', 2) }}";
        let out = render(&scope, "m", Path::new("m.sql"), template, false).unwrap();
        assert_eq!(
            out.sql,
            "select\n  sum(\"card\"),\n  sum(\"cash\")\n, (amount / 100)::numeric(16, 2) * 2, 'ci', '2025'\n\
             from \"analytics_marts\".\"b\" -- The docs. (x::numeric / 100) 2 2"
        );
        let test = render_generic_test(
            &scope,
            "positive_b_x",
            Path::new("schema.yml"),
            "positive",
            Value::from_object(Relation::new("analytics_marts", "b")),
            Some("x"),
            &serde_yaml::Mapping::new(),
        )
        .unwrap();
        assert_eq!(
            test.sql,
            "select * from \"analytics_marts\".\"b\" where x <= 0"
        );
    }

    #[test]
    fn the_projects_generate_schema_name_names_schemas() {
        let (nodes, sources, vars) = scope_parts();
        let files = [super::super::project::MacroFile {
            path: "macros/s.sql".into(),
            text: "{% macro generate_schema_name(custom_schema_name, node) %}\n\
                   {% if node.resource_type == 'seed' %}{{ custom_schema_name | trim }}\n\
                   {% elif custom_schema_name is none %}{{ target.schema }}\n\
                   {% else %}{{ target.schema }}_x_{{ custom_schema_name }}{% endif %}\n\
                   {% endmacro %}"
                .into(),
        }];
        let jinja = JinjaContext {
            macros: super::super::macros::joined(&files),
            macro_names: super::super::macros::macro_names(&files),
            ..JinjaContext::default()
        };
        let scope = RenderScope {
            schema: "analytics",
            nodes: &nodes,
            sources: &sources,
            vars: &vars,
            changed: None,
            jinja: &jinja,
        };
        let name = |custom: Option<&str>, kind: &str| {
            render_schema_name(&scope, custom, "n", kind, &[], Path::new("n.sql")).unwrap()
        };
        assert_eq!(name(Some(" raw "), "seed"), "raw");
        assert_eq!(name(None, "model"), "analytics");
        assert_eq!(name(Some("marts"), "model"), "analytics_x_marts");
    }

    #[test]
    fn unknown_ref_names_the_line() {
        let (nodes, sources, vars) = scope_parts();
        let scope = RenderScope {
            schema: "analytics",
            nodes: &nodes,
            sources: &sources,
            vars: &vars,
            changed: None,
            jinja: &JinjaContext::default(),
        };
        let err = render(
            &scope,
            "m",
            Path::new("models/m.sql"),
            "select 1\nfrom {{ ref('nope') }}",
            false,
        )
        .unwrap_err();
        match err {
            ModelError::UnknownRef { line, target, .. } => {
                assert_eq!((line, target.as_str()), (2, "nope"));
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn scanning_finds_refs_in_every_branch() {
        let calls = scan_calls(
            "{# {{ ref('commented') }} #}\nselect 1 -- ref('sql_comment')\n\
             {% if x %}\n{{ ref(\"b\") }}{% else %}{{ source('raw', 't') }}{% endif %}\n{{ my_ref('no') }}",
        );
        assert_eq!(
            calls,
            vec![
                ScannedCall::Ref {
                    name: "b".into(),
                    line: 4
                },
                ScannedCall::Source {
                    source: "raw".into(),
                    table: "t".into(),
                    line: 4
                },
            ]
        );
    }
}
