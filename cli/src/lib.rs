//! fleet-install's operator CLI: one module per command, each with a function that takes SDK
//! clients (tested with aws-smithy-mocks) and a report that prints as a table or JSON.

pub mod agent;
pub mod args;
pub mod aws;
pub mod cli;
pub mod commands;
pub mod context;
pub mod dhmc;
pub mod ledger;
pub mod progress;
pub mod start;
pub mod table;
pub mod wait;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::commands::{
    cancel, compliance, output, prereq, preview, replay, rollout, run as run_cmd, status, sweep, unmanaged,
};
use crate::context::Context;

/// Exit status when the command ran but what it reports failed (a rollout that did not
/// succeed, a role or execution that could not be read or changed). Usage errors exit with 2
/// too, as clap's do.
pub const EXIT_REPORTED_FAILURE: u8 = 2;

/// A usage error found after parsing (it needs the stack's outputs, say): `main` prints it
/// like clap's own usage errors, with the subcommand's usage line, and exits with 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// The subcommand whose usage is shown.
    pub command: &'static str,
    pub message: String,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// Run one command. Errors (bad arguments, AWS calls that fail) come back as `Err`.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Context::load(&cli.global).await;
    let ok = match &cli.command {
        Command::Prereq(a) => {
            let r = prereq::run(&ctx, a).await?;
            ctx.emit(&r)?;
            r.failed() == 0
        }
        Command::Preview(a) => {
            ctx.emit(&preview::run(&ctx, a).await?)?;
            true
        }
        Command::Rollout(a) => {
            let r = rollout::run(&ctx, a).await?;
            ctx.emit(&r)?;
            r.ok()
        }
        Command::Status(a) => {
            ctx.emit(&status::run(&ctx, a).await?)?;
            true
        }
        Command::Unmanaged(a) => {
            ctx.emit(&unmanaged::run(&ctx, a).await?)?;
            true
        }
        Command::Replay(a) => {
            let r = replay::run(&ctx, a).await?;
            ctx.emit(&r)?;
            r.ok()
        }
        Command::Sweep(a) => {
            let r = sweep::run(&ctx, a).await?;
            ctx.emit(&r)?;
            r.ok()
        }
        Command::Compliance(a) => {
            ctx.emit(&compliance::run(&ctx, a).await?)?;
            true
        }
        Command::Run(a) => {
            // 0 started or ended within its budget, 1 over budget or failed, 2 nothing started.
            let r = run_cmd::run(&ctx, a).await?;
            ctx.emit(&r)?;
            return Ok(ExitCode::from(r.exit_code()));
        }
        Command::Output(a) => {
            ctx.emit(&output::run(&ctx, a).await?)?;
            true
        }
        Command::Cancel(a) => {
            ctx.emit(&cancel::run(&ctx, a).await?)?;
            true
        }
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REPORTED_FAILURE)
    })
}
