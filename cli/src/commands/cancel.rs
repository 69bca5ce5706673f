//! `cancel`: stop a run. Its rollout execution and the run executions of its chunks are stopped
//! (no wave starts, no command is sent any more), every command still in flight is cancelled
//! (CancelCommand), and the instances it was cancelled on are recorded as cancelled in the run's
//! results. An instance whose invocation had already ended keeps its real outcome.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context as _, Result};
use aws_sdk_sfn::types::ExecutionStatus;
use fleet_core::run::{self as core_run, RunOutcome};
use fleet_core::run_store::{self, RunResult};
use serde::Serialize;

use crate::cli::CancelArgs;
use crate::commands::run::run_id;
use crate::commands::status::execution_arn;
use crate::context::{Context, Report};
use crate::table::{key_values, section, Table};

/// The error a cancelled run's executions stop with.
pub const CANCELLED_ERROR: &str = "FleetInstall.Cancelled";

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelReport {
    pub run: String,
    /// The rollout execution's status before the cancel.
    pub run_status: String,
    /// Executions stopped by this call (the rollout's and its chunks').
    pub executions_stopped: Vec<String>,
    /// Commands CancelCommand was sent for.
    pub commands_cancelled: Vec<String>,
    /// Instances recorded as cancelled.
    pub cancelled: Vec<String>,
    /// Instances whose invocation had already ended: recorded with their real outcome.
    pub already_finished: BTreeMap<String, String>,
}

impl Report for CancelReport {
    fn to_table(&self) -> String {
        let mut out = key_values(&[
            ("Run", self.run.clone()),
            ("Was", self.run_status.clone()),
            ("Stopped", format!("{} execution(s)", self.executions_stopped.len())),
            ("Commands", format!("{} cancelled", self.commands_cancelled.len())),
            (
                "Cancelled",
                format!("{} instance(s) recorded as cancelled", self.cancelled.len()),
            ),
            (
                "Finished first",
                format!(
                    "{} instance(s) had already ended; their outcome is kept",
                    self.already_finished.len()
                ),
            ),
        ]);
        let mut t = Table::new(&["INSTANCE", "RECORDED AS"]);
        for i in &self.cancelled {
            t.row([i.clone(), "cancelled".to_string()]);
        }
        for (i, o) in &self.already_finished {
            t.row([i.clone(), o.clone()]);
        }
        out.push('\n');
        out.push_str(&section("Instances in flight when cancelled", &t, "none"));
        out
    }
}

async fn stop(sfn: &aws_sdk_sfn::Client, arn: &str, cause: &str) -> Result<bool> {
    match sfn
        .stop_execution()
        .execution_arn(arn)
        .error(CANCELLED_ERROR)
        .cause(cause)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) => {
            use aws_sdk_sfn::operation::stop_execution::StopExecutionError as E;
            if matches!(e.as_service_error(), Some(E::ExecutionDoesNotExist(_))) {
                return Ok(false);
            }
            Err(anyhow!(crate::aws::message(&e))).with_context(|| format!("cannot stop execution {arn}"))
        }
    }
}

pub async fn run(ctx: &Context, args: &CancelArgs) -> Result<CancelReport> {
    let id = run_id(&args.run);
    let outputs = ctx.outputs().await?;
    let sfn = ctx.sfn();
    let ssm = ctx.ssm();
    let db = ctx.dynamodb();
    let table = outputs.run_results_table()?;
    let rollout_arn = execution_arn(outputs.rollout_state_machine()?, &id)?;
    let desc = sfn
        .describe_execution()
        .execution_arn(&rollout_arn)
        .send()
        .await
        .map_err(|e| anyhow!(crate::aws::message(&e)))
        .with_context(|| format!("no run named {id:?} ({rollout_arn})"))?;
    let input: serde_json::Value = desc
        .input()
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    if input.get("run").is_none_or(|r| r.is_null()) {
        anyhow::bail!("{id} is a rollout, not a run: `cancel` stops runs (`fleet-install run`) only");
    }
    let cause = format!(
        "cancelled with fleet-install cancel at {}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let mut report = CancelReport {
        run: id.clone(),
        run_status: desc.status().as_str().to_string(),
        ..Default::default()
    };
    // 1. No new wave, no new send: the rollout first, then its chunks' run executions.
    if desc.status() == &ExecutionStatus::Running && stop(&sfn, &rollout_arn, &cause).await? {
        report.executions_stopped.push(rollout_arn.clone());
    }
    let prefix = format!("{id}-w");
    let mut token = None;
    loop {
        let page = sfn
            .list_executions()
            .state_machine_arn(outputs.run_state_machine()?)
            .status_filter(ExecutionStatus::Running)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .context("cannot list the run's chunk executions")?;
        for e in page.executions() {
            if e.name().starts_with(&prefix) && stop(&sfn, e.execution_arn(), &cause).await? {
                report.executions_stopped.push(e.execution_arn().to_string());
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    // 2. Cancel every command still in flight, then record what became of its instances.
    let results = run_store::query_results(&db, table, &id)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut in_flight: BTreeMap<String, Vec<RunResult>> = BTreeMap::new();
    for r in results {
        if r.outcome == Some(RunOutcome::Running) && !r.command_id.is_empty() {
            in_flight.entry(r.command_id.clone()).or_default().push(r);
        }
    }
    let mut recorded = Vec::new();
    for (command_id, rows) in &in_flight {
        let ids: Vec<String> = rows.iter().map(|r| r.instance_id.clone()).collect();
        for chunk in ids.chunks(50) {
            match ssm
                .cancel_command()
                .command_id(command_id)
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    use aws_sdk_ssm::operation::cancel_command::CancelCommandError as E;
                    // A command that has ended (or that SSM no longer knows) cannot be cancelled:
                    // its invocations tell what happened.
                    if !matches!(e.as_service_error(), Some(E::InvalidCommandId(_))) {
                        return Err(anyhow!(crate::aws::message(&e)))
                            .with_context(|| format!("cannot cancel command {command_id}"));
                    }
                }
            }
        }
        report.commands_cancelled.push(command_id.clone());
        let invocations = invocation_statuses(&ssm, command_id).await?;
        for r in rows {
            let (status, details) = invocations.get(&r.instance_id).cloned().unwrap_or_default();
            let outcome = core_run::run_outcome(&status);
            let mut row = r.clone();
            if matches!(outcome, RunOutcome::Succeeded | RunOutcome::Failed) {
                // Ended before the cancel reached it: its real outcome.
                row.outcome = Some(outcome);
                row.status = status.clone();
                row.status_details = details;
                if outcome == RunOutcome::Failed {
                    row.reason = format!("{} ({}), before the run was cancelled", row.status, row.status_details);
                }
                report
                    .already_finished
                    .insert(r.instance_id.clone(), outcome.as_str().to_string());
            } else {
                row.outcome = Some(RunOutcome::Cancelled);
                row.status = if status.is_empty() { "Cancelled".into() } else { status };
                row.status_details = if details.is_empty() {
                    "Cancelled".into()
                } else {
                    details
                };
                row.reason = cause.clone();
                report.cancelled.push(r.instance_id.clone());
            }
            recorded.push(row);
        }
    }
    run_store::put_results(&db, table, &recorded)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    report.cancelled.sort();
    Ok(report)
}

/// Each instance's Status and StatusDetails in a command (fleet-core's paged ListCommandInvocations;
/// a command SSM no longer knows has none).
async fn invocation_statuses(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<BTreeMap<String, (String, String)>> {
    Ok(fleet_core::adapters::list_invocations(ssm, command_id)
        .await
        .map_err(|e| anyhow!("cannot list the invocations of command {command_id}: {e}"))?
        .into_iter()
        .map(|i| (i.instance_id, (i.status, i.status_details)))
        .collect())
}
