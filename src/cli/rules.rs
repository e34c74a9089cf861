//! `--extra-currencies`: the one validity rule a deployment may change (ARCHITECTURE §4 plus
//! these), shared by every command that validates or describes stream messages.

use std::sync::Arc;

use crate::domain::rules::Rules;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RulesArgs {
    /// Currencies accepted beyond dim_currencies' USD EUR GBP CAD AUD, comma-separated, e.g.
    /// CHF,JPY. Give the sink, `etl dlq replay`, `etl serve` and `etl schema` the same list: after
    /// adding one, `etl dlq replay --kind unknown_currency` re-produces what was refused for it
    #[arg(long, env = "ETL_EXTRA_CURRENCIES", value_delimiter = ',', value_name = "CODES")]
    pub extra_currencies: Vec<String>,
}

impl RulesArgs {
    pub fn rules(&self) -> anyhow::Result<Arc<Rules>> {
        let codes: Vec<&str> = self
            .extra_currencies
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .collect();
        Ok(Arc::new(Rules::with_extra_currencies(&codes)?))
    }
}
