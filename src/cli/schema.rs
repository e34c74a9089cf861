//! `etl schema`: prints the JSON Schema of the stream message.

use super::rules::RulesArgs;
use crate::domain::schema::transaction_schema;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub rules: RulesArgs,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        let schema = transaction_schema(&*self.rules.rules()?);
        println!("{}", serde_json::to_string_pretty(&schema)?);
        Ok(())
    }
}
