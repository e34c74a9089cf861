use std::process::ExitCode;

use clap::Parser;
use etl::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal (production sets real variables); a malformed one is worth a word.
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("warning: ignoring .env: {err}");
    }
    let cli = Cli::parse();
    etl::telemetry::init(cli.global.log_format);
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", etl::cli::error_report(&err));
            ExitCode::FAILURE
        }
    }
}
