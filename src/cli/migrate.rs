//! `etl migrate`

use crate::db::{migrate, redact_url};

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let applied = migrate::migrate(&global.database_url).await?;
        let target = redact_url(&global.database_url);
        if applied.is_empty() {
            println!("{target}: schema is up to date");
        } else {
            for m in &applied {
                println!("{target}: applied V{}__{}", m.version, m.name);
            }
        }
        Ok(())
    }
}
