//! fleet-install: the operator CLI. Arguments in, one command run, results on stdout.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = fleet_install::cli::Cli::parse();
    match fleet_install::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            fleet_install::context::Progress::stderr().clear();
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
