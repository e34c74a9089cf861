//! dbt's Jinja blocks that minijinja does not know, translated when files are read:
//!
//! - `{% test name(model, column_name, …) %} … {% endtest %}` (a generic test the project
//!   defines) becomes `{% macro test_name(…) %} … {% endmacro %}`;
//! - `{% docs name %} … {% enddocs %}` blocks are taken out and kept for `doc('name')`;
//! - `{% materialization %}` and `{% snapshot %}` blocks are left out (and reported).
//!
//! Every macro of the project is made callable from every model and test by importing it from
//! one template that holds all macro files (see [`super::render`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;

use super::project::MacroFile;

/// The template name the macro files are joined under.
pub const MACROS_TEMPLATE: &str = "__etl_macros__";

static TEST_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{%(-?)\s*test\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(").expect("valid regex")
});
static TEST_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{%(-?)\s*endtest\s*(-?)%\}").expect("valid regex"));
static DOCS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)\{%-?\s*docs\s+([A-Za-z_][A-Za-z0-9_]*)\s*-?%\}(.*?)\{%-?\s*enddocs\s*-?%\}")
        .expect("valid regex")
});
static UNSUPPORTED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?s)\{%-?\s*(materialization|snapshot)\b.*?%\}.*?\{%-?\s*end(materialization|snapshot)\s*-?%\}",
    )
    .expect("valid regex")
});
static MACRO_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{%-?\s*macro\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(").expect("valid regex")
});

/// The text without its `{% docs %}` blocks, and those blocks by name (trimmed).
pub fn split_docs(text: &str) -> (String, BTreeMap<String, String>) {
    let mut docs = BTreeMap::new();
    for found in DOCS.captures_iter(text) {
        docs.insert(found[1].to_string(), found[2].trim().to_string());
    }
    // Keep the line count, so that template errors still name the right line.
    let rest = DOCS.replace_all(text, |found: &regex::Captures<'_>| {
        "\n".repeat(found[0].matches('\n').count())
    });
    (rest.into_owned(), docs)
}

/// `{% test %}` blocks as macros; unsupported blocks removed (their kinds returned).
pub fn translate(text: &str) -> (String, Vec<String>) {
    let mut unsupported = Vec::new();
    let text = UNSUPPORTED.replace_all(text, |found: &regex::Captures<'_>| {
        unsupported.push(found[1].to_string());
        "\n".repeat(found[0].matches('\n').count())
    });
    let text = TEST_START.replace_all(&text, "{%$1 macro test_$2(");
    let text = TEST_END.replace_all(&text, "{%$1 endmacro $2%}");
    (text.into_owned(), unsupported)
}

/// Names of the macros the files define (generic tests as `test_<name>`).
pub fn macro_names(files: &[MacroFile]) -> BTreeSet<String> {
    files
        .iter()
        .flat_map(|f| MACRO_NAME.captures_iter(&f.text))
        .map(|found| found[1].to_string())
        .collect()
}

/// Names of the generic tests the files define (`{% test name(…) %}`).
pub fn generic_tests(files: &[MacroFile]) -> BTreeSet<String> {
    macro_names(files)
        .into_iter()
        .filter_map(|name| name.strip_prefix("test_").map(String::from))
        .collect()
}

/// The macro files as one template (each file on its own lines).
pub fn joined(files: &[MacroFile]) -> String {
    let mut out = String::new();
    for file in files {
        out.push_str(&file.text);
        out.push('\n');
    }
    out
}

/// Whether `text` can be a Jinja name (so it can go into a template as one).
pub fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_blocks_become_macros_and_docs_are_taken_out() {
        let (text, docs) =
            split_docs("{% docs status %}\nOne of: placed, shipped.\n{% enddocs %}\nrest");
        assert_eq!(docs["status"], "One of: placed, shipped.");
        assert_eq!(text, "\n\n\nrest");
        let (text, unsupported) = translate(
            "{%- test positive(model, column_name) -%}\nselect 1\n{%- endtest %}\n\
             {% materialization m, default %}x{% endmaterialization %}",
        );
        assert_eq!(
            text,
            "{%- macro test_positive(model, column_name) -%}\nselect 1\n{%- endmacro %}\n"
        );
        assert_eq!(unsupported, ["materialization"]);
        let files = [MacroFile {
            path: "m.sql".into(),
            text,
        }];
        assert_eq!(
            generic_tests(&files),
            BTreeSet::from(["positive".to_string()])
        );
        assert!(is_identifier("column_name") && !is_identifier("a-b") && !is_identifier("1a"));
    }
}
