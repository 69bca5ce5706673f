//! fleet-install's operator CLI: one module per command, each with a function that takes SDK
//! clients (tested with aws-smithy-mocks) and a report that prints as a table or JSON.

pub mod args;
pub mod aws;
pub mod cli;
pub mod commands;
pub mod context;
pub mod ledger;
pub mod table;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::commands::{prereq, preview, replay, rollout, status, unmanaged};
use crate::context::Context;

/// Exit status when the command ran but what it reports failed (a rollout that did not
/// succeed, a role or execution that could not be changed).
pub const EXIT_REPORTED_FAILURE: u8 = 2;

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
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REPORTED_FAILURE)
    })
}
