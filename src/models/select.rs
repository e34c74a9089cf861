//! `--select` / `--exclude` syntax: `name`, `+name` (with ancestors), `name+` (with
//! descendants), `+name+`, `tag:x`, `path:models/marts` (relative to the working directory or
//! to the models folder). The graph operators work on `tag:` and `path:` too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::ModelError;
use super::graph::Dag;

/// What a selector looks at in a node. The plan's nodes implement it, so that this module needs
/// nothing from the plan (which uses selectors) and the two do not import each other.
pub trait Selectable {
    fn name(&self) -> &str;
    fn tags(&self) -> &[String];
    /// The file the node comes from.
    fn path(&self) -> &Path;
    fn is_test(&self) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Name(String),
    Tag(String),
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub text: String,
    pub method: Method,
    pub ancestors: bool,
    pub descendants: bool,
}

impl Selector {
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let bad = |message: &str| ModelError::BadSelector {
            selector: text.to_string(),
            message: message.to_string(),
        };
        let trimmed = text.trim();
        let (ancestors, rest) = match trimmed.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let (descendants, rest) = match rest.strip_suffix('+') {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let method = match rest.split_once(':') {
            Some(("tag", tag)) if !tag.is_empty() => Method::Tag(tag.to_string()),
            Some(("path", path)) if !path.is_empty() => Method::Path(PathBuf::from(path)),
            Some((method, _)) => {
                return Err(bad(&format!(
                    "unknown method {method:?}; use a name, tag:x or path:dir, with + for \
                     ancestors/descendants"
                )));
            }
            None if rest.is_empty() => return Err(bad("empty selector")),
            None => Method::Name(rest.to_string()),
        };
        Ok(Self {
            text: text.to_string(),
            method,
            ancestors,
            descendants,
        })
    }

    /// Indices of the nodes this selector picks: seeds and models, or tests named directly.
    pub fn matches(
        &self,
        nodes: &[impl Selectable],
        dag: &Dag,
        models_dir: &Path,
        cwd: &Path,
    ) -> Result<BTreeSet<usize>, ModelError> {
        let bad = |message: String| ModelError::BadSelector {
            selector: self.text.clone(),
            message,
        };
        let base: BTreeSet<usize> = match &self.method {
            Method::Name(name) => {
                let found: BTreeSet<usize> = (0..nodes.len())
                    .filter(|&i| nodes[i].name() == name)
                    .collect();
                if found.is_empty() {
                    return Err(bad(format!(
                        "no model, seed or test is named {name:?} in {}",
                        models_dir.display()
                    )));
                }
                found
            }
            Method::Tag(tag) => (0..nodes.len())
                .filter(|&i| nodes[i].tags().iter().any(|t| t == tag))
                .collect(),
            Method::Path(path) => {
                let roots: Vec<PathBuf> = [cwd.join(path), models_dir.join(path)]
                    .into_iter()
                    .filter_map(|p| p.canonicalize().ok())
                    .collect();
                if roots.is_empty() {
                    return Err(bad(format!(
                        "{} exists neither in the working directory nor in {}",
                        path.display(),
                        models_dir.display()
                    )));
                }
                (0..nodes.len())
                    .filter(|&i| !nodes[i].is_test())
                    .filter(|&i| {
                        nodes[i]
                            .path()
                            .canonicalize()
                            .is_ok_and(|p| roots.iter().any(|root| p.starts_with(root)))
                    })
                    .collect()
            }
        };
        let mut picked = base.clone();
        for &i in &base {
            if self.ancestors {
                picked.extend(dag.ancestors(i));
            }
            if self.descendants {
                picked.extend(dag.descendants(i));
            }
        }
        // Graph operators bring seeds and models; tests follow the models they are attached to.
        Ok(picked
            .into_iter()
            .filter(|&i| base.contains(&i) || !nodes[i].is_test())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_graph_operators_and_methods() {
        let s = Selector::parse("+dim_users+").unwrap();
        assert_eq!(s.method, Method::Name("dim_users".into()));
        assert!(s.ancestors && s.descendants);
        let s = Selector::parse("tag:nightly+").unwrap();
        assert_eq!(s.method, Method::Tag("nightly".into()));
        assert!(!s.ancestors && s.descendants);
        let s = Selector::parse("path:models/marts").unwrap();
        assert_eq!(s.method, Method::Path("models/marts".into()));
        assert!(Selector::parse("config:x").is_err());
        assert!(Selector::parse("+").is_err());
    }
}
