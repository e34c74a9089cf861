//! `--extra-categories`: the one validity rule a deployment may change (ARCHITECTURE §4 plus
//! these), shared by every command that validates or describes stream messages.

use std::sync::Arc;

use crate::domain::rules::Rules;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RulesArgs {
    /// Stream categories accepted beyond ARCHITECTURE §4's twelve, comma-separated snake_case
    /// names, e.g. groceries,pharmacy. Give the sink, `etl dlq replay`, `etl serve` and
    /// `etl schema` the same list: after adding one, `etl dlq replay --kind unknown_category`
    /// re-produces the messages refused for it
    #[arg(
        long,
        env = "ETL_EXTRA_CATEGORIES",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    pub extra_categories: Vec<String>,
}

impl RulesArgs {
    pub fn rules(&self) -> anyhow::Result<Arc<Rules>> {
        let names: Vec<&str> = self
            .extra_categories
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .collect();
        Ok(Arc::new(Rules::with_extra_categories(&names)?))
    }
}
