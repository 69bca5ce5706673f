//! fleet-install: the operator CLI. Arguments in, one command run, results on stdout.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = fleet_install::cli::Cli::parse();
    match fleet_install::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            fleet_install::context::Progress::stderr().clear();
            if let Some(usage) = err.downcast_ref::<fleet_install::UsageError>() {
                let mut cmd = fleet_install::cli::Cli::command();
                cmd.build();
                let sub = cmd.find_subcommand_mut(usage.command).cloned();
                // Prints "error: ...", the usage line and a hint; exits with 2.
                sub.unwrap_or(cmd)
                    .error(ErrorKind::ArgumentConflict, &usage.message)
                    .exit();
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
