//! `etl models …`: looking at the models without building them.

use std::path::PathBuf;

use crate::models::{self, BuildOptions, GraphFormat};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the DAG of seeds, models (and with --tests, data tests) as Mermaid or Graphviz dot
    Graph(GraphArgs),
}

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Folder of the models
    #[arg(long, env = "ETL_MODELS_DIR", default_value = models::DEFAULT_MODELS_DIR)]
    pub models_dir: PathBuf,

    /// Output format
    #[arg(long, env = "ETL_MODELS_GRAPH_FORMAT", value_enum, default_value_t = GraphFormat::Mermaid)]
    pub format: GraphFormat,

    /// Include data tests as nodes
    #[arg(long, env = "ETL_MODELS_GRAPH_TESTS")]
    pub tests: bool,

    /// Values for var('x'), as a YAML mapping (needed when a model's ref depends on a var)
    #[arg(long, env = "ETL_MODELS_VARS")]
    pub vars: Option<String>,
}

impl Command {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Graph(args) => {
                let options = BuildOptions {
                    models_dir: args.models_dir,
                    vars: models::parse_vars(args.vars.as_deref().unwrap_or_default())?,
                    ..BuildOptions::default()
                };
                let plan = models::plan(&options)?;
                print!("{}", plan.graph(args.format, args.tests));
                Ok(())
            }
        }
    }
}
