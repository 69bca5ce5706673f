//! `status`: one rollout or install execution: its status, error and cause; a rollout's waves
//! (from its output, or from the history while it runs); an install's summary; and from the
//! ledger, the instances the execution touched last, with the failed ones and their reasons.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context as _, Result};
use aws_sdk_sfn::operation::describe_execution::{DescribeExecutionError, DescribeExecutionOutput};
use aws_sdk_sfn::types::HistoryEvent;
use fleet_core::model::{LedgerState, Summary};
use fleet_core::rollout::WaveResult;
use serde::Serialize;
use serde_json::Value;

use crate::cli::StatusArgs;
use crate::context::{Context, Report, StackOutputs};
use crate::ledger::{scan_by_execution, state_label, ExecutionFilter, LedgerRecord};
use crate::table::{key_values, section, Table};

/// The rollout workflow's state whose task output carries each wave's result.
pub const EVALUATE_WAVE: &str = "Evaluate Wave";
/// The rollout workflow's first state: its output has the targets and the planned waves.
pub const PLAN_WAVES: &str = "Plan Waves";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Rollout,
    Install,
    Other,
}

/// The ledger's reason code for an instance whose SSM Agent is older than its install document
/// needs and could not be updated.
pub const AGENT_TOO_OLD: &str = "AgentTooOld";
/// The ledger's reason code for an instance whose SSM Agent was updated (AWS-UpdateSSMAgent) on
/// the way to its install (not final: the install follows).
pub const AGENT_UPDATED: &str = "AgentUpdated";

/// Instances of one platform whose SSM Agent was too old or was updated, as the ledger records them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    pub platform: String,
    /// Reason code AgentTooOld: the agent is below the document's minimum and was not updated.
    pub agent_too_old: u64,
    /// Reason code AgentUpdated: the agent was updated; the install follows.
    pub agent_updated: u64,
}

/// Count the ledger's AgentTooOld and AgentUpdated instances by platform ("unknown" without one).
pub fn agent_rows(rows: &[LedgerRecord]) -> Vec<AgentRow> {
    let mut by: BTreeMap<String, AgentRow> = BTreeMap::new();
    for r in rows {
        let code = r.reason_code.as_deref().unwrap_or_default();
        if code != AGENT_TOO_OLD && code != AGENT_UPDATED {
            continue;
        }
        let platform = r
            .platform
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let e = by.entry(platform.clone()).or_insert_with(|| AgentRow {
            platform,
            ..Default::default()
        });
        if code == AGENT_TOO_OLD {
            e.agent_too_old += 1;
        } else {
            e.agent_updated += 1;
        }
    }
    by.into_values().collect()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerSection {
    /// The execution ARN, or the ARN prefix of a rollout's install executions.
    pub execution_filter: String,
    pub by_state: BTreeMap<String, u64>,
    /// Instances whose SSM Agent was too old (AgentTooOld) or updated (AgentUpdated), by platform.
    pub agent: Vec<AgentRow>,
    pub failed: Vec<LedgerRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub execution_arn: String,
    pub name: String,
    pub kind: Kind,
    pub status: String,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redrive_count: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Rollouts: instances targeted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<u64>,
    /// Rollouts: waves planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waves_planned: Option<u64>,
    /// Rollouts: the waves evaluated so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<WaveResult>>,
    /// What started the run, from the workflow's input: `ec2-running`, `replay`, `rollout <name>
    /// wave <n>`, `sweep <name>` (not the execution's name, which is `name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Installs: counts by state, platform and reason (when it has ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Installs: instances whose SSM Agent the run updated on the way (the summary's agentUpdated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_updated: Option<u64>,
    pub ledger: LedgerSection,
    /// An ad-hoc run's results (`fleet-install run`), in place of the ledger (a run never writes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSection>,
}

/// What a run sent and how its instances ended, from the run results table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSection {
    pub documents: Vec<String>,
    pub by_outcome: BTreeMap<String, u64>,
    /// Instances not succeeded (failed, unreachable, skipped, cancelled), with why.
    pub not_succeeded: Vec<crate::commands::output::ResultView>,
}

impl StatusReport {
    pub fn succeeded(&self) -> bool {
        self.status == "SUCCEEDED"
    }
}

impl Report for StatusReport {
    fn to_table(&self) -> String {
        let mut out = key_values(&[
            ("Execution", self.execution_arn.clone()),
            ("Name", self.name.clone()),
            (
                "Workflow",
                match self.kind {
                    Kind::Rollout if self.run.is_some() => "run (the rollout workflow with a run workflow per chunk)",
                    Kind::Rollout => "rollout",
                    Kind::Install => "install",
                    Kind::Other => "other",
                }
                .into(),
            ),
            ("Status", self.status.clone()),
            ("Started", self.started_at.clone()),
            ("Stopped", self.stopped_at.clone().unwrap_or_default()),
            (
                "Redriven",
                self.redrive_count
                    .filter(|n| *n > 0)
                    .map(|n| format!("{n} time(s)"))
                    .unwrap_or_default(),
            ),
            ("Source", self.source.clone().unwrap_or_default()),
            ("Targets", self.targets.map(|t| t.to_string()).unwrap_or_default()),
            (
                "Agent",
                self.agent_updated
                    .map(|n| format!("{n} instance(s) had their SSM Agent updated on the way to the install"))
                    .unwrap_or_default(),
            ),
            ("Error", self.error.clone().unwrap_or_default()),
            ("Cause", self.cause.clone().unwrap_or_default()),
        ]);
        if let Some(waves) = &self.waves {
            let mut t = if self.run.is_some() {
                run_wave_table()
            } else {
                wave_table()
            };
            for w in waves {
                wave_row(&mut t, w);
            }
            let title = match self.waves_planned {
                Some(p) => format!("Waves ({} of {p} evaluated)", waves.len()),
                None => "Waves".to_string(),
            };
            out.push('\n');
            out.push_str(&section(&title, &t, "none evaluated"));
        }
        if let Some(s) = &self.summary {
            out.push('\n');
            out.push_str(&summary_text(s));
        }
        if let Some(run) = &self.run {
            out.push('\n');
            out.push_str(&run_text(run, &self.name));
            return out;
        }
        let mut states = Table::new(&["STATE", "INSTANCES"]).numeric(&[1]);
        for (state, n) in &self.ledger.by_state {
            states.row([state.clone(), n.to_string()]);
        }
        out.push('\n');
        out.push_str(&section(
            "Ledger (instances this execution touched last)",
            &states,
            "no instance",
        ));
        if let Some(note) = &self.ledger.note {
            out.push_str(&format!("Note: {note}\n"));
        }
        if !self.ledger.agent.is_empty() {
            let mut agent = Table::new(&["PLATFORM", "AGENT TOO OLD", "AGENT UPDATED"]).numeric(&[1, 2]);
            for a in &self.ledger.agent {
                agent.row([
                    a.platform.clone(),
                    a.agent_too_old.to_string(),
                    a.agent_updated.to_string(),
                ]);
            }
            out.push('\n');
            out.push_str(&section(
                "SSM Agent (ledger: AgentTooOld, below the install document's minimum and not updated; AgentUpdated, updated on the way)",
                &agent,
                "none",
            ));
        }
        let mut failed =
            Table::new(&["INSTANCE", "PLATFORM", "REASON CODE", "ATTEMPTS", "UPDATED", "REASON"]).numeric(&[3]);
        for r in &self.ledger.failed {
            failed.row([
                r.instance_id.clone(),
                r.platform.clone().unwrap_or_default(),
                r.reason_code.clone().unwrap_or_default(),
                r.attempts.map(|a| a.to_string()).unwrap_or_default(),
                r.updated_at.clone().unwrap_or_default(),
                r.reason.clone().unwrap_or_default(),
            ]);
        }
        out.push('\n');
        out.push_str(&section("Failed instances", &failed, "none"));
        out
    }
}

pub fn wave_table() -> Table {
    Table::new(&[
        "WAVE",
        "LABEL",
        "INSTANCES",
        "INSTALLED",
        "FAILED",
        "UNMANAGED",
        "SKIPPED",
        "DUPLICATE",
        "FAILURE RATIO",
    ])
    .numeric(&[0, 2, 3, 4, 5, 6, 7, 8])
}

/// A run's waves: the same counts, named for a command (WaveResult counts a run's succeeded as
/// installed and its unreachable as unmanaged).
pub fn run_wave_table() -> Table {
    Table::new(&[
        "WAVE",
        "LABEL",
        "INSTANCES",
        "SUCCEEDED",
        "FAILED",
        "UNREACHABLE",
        "SKIPPED",
        "DUPLICATE",
        "FAILURE RATIO",
    ])
    .numeric(&[0, 2, 3, 4, 5, 6, 7, 8])
}

fn run_text(run: &RunSection, name: &str) -> String {
    let mut by = Table::new(&["OUTCOME", "INSTANCES"]).numeric(&[1]);
    for (k, v) in &run.by_outcome {
        by.row([k.clone(), v.to_string()]);
    }
    let mut failed = Table::new(&["INSTANCE", "OUTCOME", "STATUS", "EXIT", "PLATFORM", "REASON"]).numeric(&[3]);
    for r in &run.not_succeeded {
        failed.row([
            r.instance_id.clone(),
            r.outcome.clone(),
            r.status.clone(),
            r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            r.platform.clone(),
            r.reason.clone(),
        ]);
    }
    format!(
        "{}\n{}\n{}",
        key_values(&[
            ("Documents", run.documents.join(", ")),
            ("Output", format!("fleet-install output {name}")),
        ]),
        section("Results by outcome (run results table)", &by, "no result yet"),
        section("Instances that did not succeed", &failed, "none")
    )
}

pub fn wave_row(t: &mut Table, w: &WaveResult) {
    t.row([
        w.wave.to_string(),
        w.label.clone(),
        w.instances.to_string(),
        w.installed.to_string(),
        w.failed.to_string(),
        w.unmanaged.to_string(),
        w.skipped.to_string(),
        w.duplicate.to_string(),
        format!("{:.3}", w.failure_ratio),
    ]);
}

fn summary_text(s: &Summary) -> String {
    let mut by_state = Table::new(&["STATE", "INSTANCES"]).numeric(&[1]);
    for (k, v) in &s.by_state {
        by_state.row([k.clone(), v.to_string()]);
    }
    let mut by_platform = Table::new(&["PLATFORM", "STATE", "INSTANCES"]).numeric(&[2]);
    for (p, states) in &s.by_platform {
        for (k, v) in states {
            by_platform.row([p.clone(), k.clone(), v.to_string()]);
        }
    }
    let mut by_reason = Table::new(&["REASON CODE", "INSTANCES"]).numeric(&[1]);
    for (k, v) in &s.by_reason {
        by_reason.row([k.clone(), v.to_string()]);
    }
    format!(
        "{}\n{}\n{}",
        section("Summary by state", &by_state, "no instance"),
        section("Summary by platform", &by_platform, "no instance"),
        section("Summary by reason", &by_reason, "none")
    )
}

pub async fn run(ctx: &Context, args: &StatusArgs) -> Result<StatusReport> {
    let outputs = ctx.outputs().await?;
    let sfn = ctx.sfn();
    let desc = describe(&sfn, &args.execution, &outputs).await?;
    report(&sfn, &ctx.dynamodb(), &outputs, &desc).await
}

/// `arn:...:stateMachine:<sm>` + name -> `arn:...:execution:<sm>:<name>`.
pub fn execution_arn(state_machine_arn: &str, name: &str) -> Result<String> {
    if !state_machine_arn.contains(":stateMachine:") {
        bail!("{state_machine_arn} is not a state machine ARN");
    }
    Ok(format!(
        "{}:{name}",
        state_machine_arn.replacen(":stateMachine:", ":execution:", 1)
    ))
}

/// Describe an execution given its ARN, or its name (looked up in the rollout, then the
/// install state machine).
pub async fn describe(
    sfn: &aws_sdk_sfn::Client,
    execution: &str,
    outputs: &StackOutputs,
) -> Result<DescribeExecutionOutput> {
    if execution.starts_with("arn:") {
        return sfn
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .with_context(|| format!("cannot describe execution {execution}"));
    }
    let mut tried = Vec::new();
    for sm in [outputs.rollout_state_machine()?, outputs.install_state_machine()?] {
        let arn = execution_arn(sm, execution)?;
        match sfn.describe_execution().execution_arn(&arn).send().await {
            Ok(d) => return Ok(d),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DescribeExecutionError::ExecutionDoesNotExist(_))
                ) =>
            {
                tried.push(arn)
            }
            Err(e) => {
                return Err(anyhow!(crate::aws::message(&e)))
                    .with_context(|| format!("cannot describe execution {arn}"))
            }
        }
    }
    bail!("no execution named {execution:?}: tried {}", tried.join(" and "))
}

/// The whole history of an execution, oldest event first.
pub async fn history(sfn: &aws_sdk_sfn::Client, execution_arn: &str) -> Result<Vec<HistoryEvent>> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let resp = sfn
            .get_execution_history()
            .execution_arn(execution_arn)
            .max_results(1000)
            .include_execution_data(true)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .with_context(|| format!("cannot read the history of {execution_arn}"))?;
        events.extend(resp.events().iter().cloned());
        token = resp.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(events)
}

/// The parts of a history event the wave view reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
    pub kind: String,
    /// The state's name (state entered/exited events).
    pub name: Option<String>,
    /// The task's or state's output.
    pub output: Option<String>,
}

impl From<&HistoryEvent> for Ev {
    fn from(e: &HistoryEvent) -> Self {
        Ev {
            kind: e.r#type().as_str().to_string(),
            name: e
                .state_entered_event_details()
                .map(|d| d.name().to_string())
                .or_else(|| e.state_exited_event_details().map(|d| d.name().to_string())),
            output: e
                .task_succeeded_event_details()
                .and_then(|d| d.output())
                .or_else(|| e.lambda_function_succeeded_event_details().and_then(|d| d.output()))
                .or_else(|| e.state_exited_event_details().and_then(|d| d.output()))
                .map(str::to_string),
        }
    }
}

/// What a rollout's history says so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutProgress {
    pub targets: Option<u64>,
    pub waves_planned: Option<u64>,
    pub waves: Vec<WaveResult>,
}

/// Read the planned targets and every evaluated wave from a rollout's history: the outputs of
/// "Evaluate Wave" (its task result, or the state's output) and of "Plan Waves".
pub fn rollout_progress(events: &[Ev]) -> RolloutProgress {
    let mut p = RolloutProgress::default();
    let mut waves: BTreeMap<usize, WaveResult> = BTreeMap::new();
    let mut current: Option<&str> = None;
    for ev in events {
        let output = ev.output.as_deref().and_then(|o| serde_json::from_str::<Value>(o).ok());
        let state = match ev.kind.as_str() {
            "TaskStateEntered" => {
                current = ev.name.as_deref();
                continue;
            }
            "TaskSucceeded" | "LambdaFunctionSucceeded" => current,
            "TaskStateExited" => ev.name.as_deref(),
            _ => continue,
        };
        let Some(output) = output else { continue };
        match state {
            Some(EVALUATE_WAVE) => {
                if let Some(w) = output
                    .get("result")
                    .and_then(|r| serde_json::from_value::<WaveResult>(r.clone()).ok())
                {
                    waves.insert(w.wave, w);
                }
            }
            Some(PLAN_WAVES) => {
                if let Some(t) = output.get("targets").and_then(Value::as_u64) {
                    p.targets = Some(t);
                }
                match output.get("waves") {
                    Some(Value::Array(a)) => p.waves_planned = Some(a.len() as u64),
                    Some(Value::Number(n)) => p.waves_planned = n.as_u64(),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    p.waves = waves.into_values().collect();
    p
}

fn kind_of(desc: &DescribeExecutionOutput, outputs: &StackOutputs) -> Kind {
    let sm = desc.state_machine_arn();
    if outputs.rollout_state_machine().ok() == Some(sm) {
        Kind::Rollout
    } else if outputs.install_state_machine().ok() == Some(sm) {
        Kind::Install
    } else {
        Kind::Other
    }
}

/// What started a run, as its input says (`source`: start-install's `ec2-running`, `replay`, the
/// rollout's `rollout <name> wave <n>`, the sweep's `sweep <name>`).
pub fn source(input: Option<&Value>) -> Option<String> {
    input?
        .get("source")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The status report of a described execution.
pub async fn report(
    sfn: &aws_sdk_sfn::Client,
    db: &aws_sdk_dynamodb::Client,
    outputs: &StackOutputs,
    desc: &DescribeExecutionOutput,
) -> Result<StatusReport> {
    let kind = kind_of(desc, outputs);
    let output: Option<Value> = desc.output().and_then(|o| serde_json::from_str(o).ok());
    let input: Option<Value> = desc.input().and_then(|i| serde_json::from_str(i).ok());
    let name = desc.name().unwrap_or_default().to_string();
    let mut r = StatusReport {
        execution_arn: desc.execution_arn().to_string(),
        name: name.clone(),
        kind,
        status: desc.status().as_str().to_string(),
        started_at: crate::aws::rfc3339(desc.start_date()),
        stopped_at: desc.stop_date().map(crate::aws::rfc3339),
        redrive_count: desc.redrive_count(),
        error: desc.error().map(str::to_string),
        cause: desc.cause().map(str::to_string),
        targets: None,
        waves_planned: None,
        waves: None,
        source: source(input.as_ref()),
        summary: None,
        agent_updated: None,
        ledger: LedgerSection::default(),
        run: None,
    };
    let filter = match kind {
        Kind::Rollout => {
            let from_output = output.as_ref().and_then(|o| {
                let waves = serde_json::from_value::<Vec<WaveResult>>(o.get("waves")?.clone()).ok()?;
                Some((o.get("targets").and_then(Value::as_u64), waves))
            });
            match from_output {
                Some((targets, waves)) => {
                    r.targets = targets;
                    r.waves = Some(waves);
                }
                None => {
                    let events: Vec<Ev> = history(sfn, desc.execution_arn()).await?.iter().map(Ev::from).collect();
                    let p = rollout_progress(&events);
                    r.targets = p.targets;
                    r.waves_planned = p.waves_planned;
                    r.waves = Some(p.waves);
                }
            }
            if name.chars().count() > 70 {
                r.ledger.note = Some(format!(
                    "the rollout name has {} characters: install executions whose name passed 80 characters were cut and are not counted",
                    name.chars().count()
                ));
            }
            ExecutionFilter::Prefix(execution_arn(outputs.install_state_machine()?, &format!("{name}-w"))?)
        }
        Kind::Install | Kind::Other => {
            // The output's `source` ("Report Summary") is the execution's name: the run's source is
            // in its input.
            if let Some(o) = &output {
                r.summary = o
                    .get("summary")
                    .and_then(|s| serde_json::from_value::<Summary>(s.clone()).ok());
                r.agent_updated = o
                    .get("summary")
                    .and_then(|s| s.get("agentUpdated"))
                    .and_then(Value::as_u64);
            }
            ExecutionFilter::Exact(desc.execution_arn().to_string())
        }
    };
    if let Some(spec) = input
        .as_ref()
        .and_then(|i| i.get("run"))
        .filter(|r| !r.is_null())
        .and_then(|r| serde_json::from_value::<fleet_core::run::RunSpec>(r.clone()).ok())
    {
        // A run: its results table, never the ledger.
        let results = fleet_core::run_store::query_results(db, outputs.run_results_table()?, &name)
            .await
            .map_err(|e| anyhow!("cannot read the results of run {name}: {e}"))?;
        let mut section = RunSection {
            documents: spec
                .documents
                .iter()
                .map(|d| format!("{} ({}, {})", d.name, d.family, d.version))
                .collect(),
            ..Default::default()
        };
        for res in results {
            let outcome = res.outcome.map(|o| o.as_str()).unwrap_or("unknown").to_string();
            *section.by_outcome.entry(outcome.clone()).or_default() += 1;
            if outcome != "succeeded" {
                section.not_succeeded.push(res.into());
            }
        }
        r.run = Some(section);
        return Ok(r);
    }
    let rows = scan_by_execution(db, outputs.ledger_table()?, &filter).await?;
    r.ledger.execution_filter = match &filter {
        ExecutionFilter::Exact(a) => a.clone(),
        ExecutionFilter::Prefix(p) => format!("{p}*"),
    };
    for row in &rows {
        *r.ledger.by_state.entry(state_label(row).to_string()).or_default() += 1;
    }
    r.ledger.agent = agent_rows(&rows);
    r.ledger.failed = rows.into_iter().filter(|row| row.is(LedgerState::Failed)).collect();
    r.ledger.failed.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, name: Option<&str>, output: Option<Value>) -> Ev {
        Ev {
            kind: kind.into(),
            name: name.map(str::to_string),
            output: output.map(|o| o.to_string()),
        }
    }

    fn result(wave: usize, installed: u64, failed: u64) -> Value {
        let ratio = failed as f64 / (installed + failed) as f64;
        serde_json::json!({"wave": wave, "label": if wave == 0 { "canary".to_string() } else { format!("wave {wave}") },
            "instances": installed + failed, "installed": installed, "failed": failed, "unmanaged": 0, "skipped": 0,
            "duplicate": 0, "failureRatio": ratio})
    }

    #[test]
    fn waves_are_read_from_evaluate_wave_outputs() {
        let events = vec![
            ev("ExecutionStarted", None, None),
            ev("TaskStateEntered", Some(PLAN_WAVES), None),
            ev(
                "LambdaFunctionSucceeded",
                None,
                Some(serde_json::json!({"rolloutId": "r", "targets": 30, "optedOut": 1, "waves": [{}, {}, {}]})),
            ),
            ev(
                "TaskStateExited",
                Some(PLAN_WAVES),
                Some(serde_json::json!({"targets": 30, "optedOut": 1, "waves": 3})),
            ),
            ev("MapStateEntered", Some("Install Wave"), None),
            ev("TaskStateEntered", Some("Install Chunk"), None),
            ev(
                "TaskSucceeded",
                None,
                Some(serde_json::json!({"ExecutionArn": "arn:x", "Output": "{}"})),
            ),
            ev("TaskStateEntered", Some(EVALUATE_WAVE), None),
            ev(
                "TaskSucceeded",
                None,
                Some(
                    serde_json::json!({"result": result(0, 10, 0), "results": [], "budgetExceeded": false, "moreWaves": true, "message": "m"}),
                ),
            ),
            ev(
                "TaskStateExited",
                Some(EVALUATE_WAVE),
                Some(serde_json::json!({"result": result(0, 10, 0), "budgetExceeded": false})),
            ),
            ev("TaskStateEntered", Some(EVALUATE_WAVE), None),
            ev(
                "LambdaFunctionSucceeded",
                None,
                Some(serde_json::json!({"result": result(1, 9, 1)})),
            ),
            ev("TaskStateEntered", Some(EVALUATE_WAVE), None),
            ev("TaskSucceeded", None, Some(Value::String("not a wave".into()))),
        ];
        let p = rollout_progress(&events);
        assert_eq!(p.targets, Some(30));
        assert_eq!(p.waves_planned, Some(3));
        assert_eq!(p.waves.len(), 2);
        assert_eq!(p.waves[1].failed, 1);
        assert!((p.waves[1].failure_ratio - 0.1).abs() < 1e-9);
        assert_eq!(rollout_progress(&[]), RolloutProgress::default());
    }

    #[test]
    fn names_resolve_to_execution_arns() {
        assert_eq!(
            execution_arn(
                "arn:aws:states:eu-west-1:123456789012:stateMachine:fleet-install-Rollout",
                "r1"
            )
            .unwrap(),
            "arn:aws:states:eu-west-1:123456789012:execution:fleet-install-Rollout:r1"
        );
        assert!(execution_arn("arn:aws:sqs:x", "r").is_err());
    }

    #[test]
    fn a_stopped_rollout_reads_well() {
        let r = StatusReport {
            execution_arn: "arn:aws:states:eu-west-1:1:execution:Rollout:rollout-20261125T180000".into(),
            name: "rollout-20261125T180000".into(),
            kind: Kind::Rollout,
            status: "FAILED".into(),
            started_at: "2026-11-25T18:00:00Z".into(),
            stopped_at: Some("2026-11-25T18:20:00Z".into()),
            redrive_count: Some(0),
            error: Some("FleetInstall.FailureBudgetExceeded".into()),
            cause: Some(
                "canary: 7 installed, 3 failed, 0 unmanaged, 0 skipped; failure ratio 0.300 exceeds budget 0.050"
                    .into(),
            ),
            targets: Some(118),
            waves_planned: Some(11),
            waves: Some(vec![serde_json::from_value(result(0, 7, 3)).unwrap()]),
            source: None,
            summary: None,
            agent_updated: None,
            ledger: LedgerSection {
                execution_filter: "arn:aws:states:eu-west-1:1:execution:Install:rollout-20261125T180000-w*".into(),
                by_state: BTreeMap::from([("failed".into(), 3), ("installed".into(), 7)]),
                agent: vec![],
                failed: vec![LedgerRecord {
                    instance_id: "i-0123456789abcdef0".into(),
                    state: Some(LedgerState::Failed),
                    reason_code: Some("CommandFailed".into()),
                    reason: Some("exit code 5: checksum mismatch".into()),
                    platform: Some("Ubuntu".into()),
                    attempts: Some(3),
                    updated_at: Some("2026-11-25T18:15:00.000Z".into()),
                    ..Default::default()
                }],
                note: None,
            },
            run: None,
        };
        let text = r.to_table();
        println!("{text}");
        assert!(text.contains("Status     FAILED\n"));
        assert!(text.contains("Error      FleetInstall.FailureBudgetExceeded\n"));
        assert!(text.contains("Waves (1 of 11 evaluated)\n"));
        assert!(
            text.contains("   0  canary         10          7       3          0        0          0          0.300"),
            "{text}"
        );
        assert!(text.contains("i-0123456789abcdef0  Ubuntu    CommandFailed"));
        assert!(!r.succeeded());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kind"], "rollout");
        assert!(json.get("summary").is_none());
    }
    #[tokio::test]
    async fn bookkeeping_items_never_count_as_instances() {
        use crate::ledger::tests::item;
        use aws_sdk_dynamodb::operation::scan::ScanOutput;
        use aws_sdk_dynamodb::types::AttributeValue;
        use aws_smithy_mocks::{mock, mock_client};

        let arn = "arn:aws:states:r:1:execution:Install:run-1";
        let touched = |mut i: crate::ledger::Item| {
            i.insert(crate::ledger::attr::EXECUTION_ARN.into(), AttributeValue::S(arn.into()));
            i
        };
        let scan = mock!(aws_sdk_dynamodb::Client::scan)
            .match_requests(|r| r.table_name() == Some("ledger"))
            .sequence()
            .output(move || {
                ScanOutput::builder()
                    .items(touched(item(
                        "i-0000000000000000a",
                        "failed",
                        "2026-11-25T01:00:00.000Z",
                    )))
                    .items(touched(item("batch#linux-doc-1", "failed", "2026-11-25T01:00:00.000Z")))
                    .last_evaluated_key(
                        crate::ledger::attr::INSTANCE_ID,
                        AttributeValue::S("batch#linux-doc-1".into()),
                    )
                    .build()
            })
            .output(move || {
                ScanOutput::builder()
                    .items(touched(item(
                        "rollout#r#w0#c0",
                        "installed",
                        "2026-11-25T01:00:00.000Z",
                    )))
                    .items(touched(item(
                        "i-0000000000000000b",
                        "installed",
                        "2026-11-25T01:00:00.000Z",
                    )))
                    .build()
            })
            .build();
        let db = mock_client!(aws_sdk_dynamodb, [&scan]);
        let sfn = mock_client!(aws_sdk_sfn, []);
        let outputs = StackOutputs::new(
            BTreeMap::from([
                ("LedgerTableName".to_string(), "ledger".to_string()),
                (
                    "InstallStateMachineArn".to_string(),
                    "arn:aws:states:r:1:stateMachine:Install".to_string(),
                ),
                (
                    "RolloutStateMachineArn".to_string(),
                    "arn:aws:states:r:1:stateMachine:Rollout".to_string(),
                ),
            ]),
            "test",
        );
        let desc = DescribeExecutionOutput::builder()
            .execution_arn(arn)
            .state_machine_arn("arn:aws:states:r:1:stateMachine:Install")
            .name("run-1")
            .status(aws_sdk_sfn::types::ExecutionStatus::Succeeded)
            .start_date(aws_smithy_types::DateTime::from_secs(0))
            .build()
            .unwrap();
        let r = report(&sfn, &db, &outputs, &desc).await.unwrap();
        assert_eq!(scan.num_calls(), 2);
        assert_eq!(r.kind, Kind::Install);
        assert_eq!(
            r.ledger.by_state,
            BTreeMap::from([("failed".to_string(), 1), ("installed".to_string(), 1)])
        );
        assert_eq!(
            r.ledger
                .failed
                .iter()
                .map(|f| f.instance_id.as_str())
                .collect::<Vec<_>>(),
            vec!["i-0000000000000000a"]
        );
        assert!(!r.to_table().contains('#'));
    }
    #[tokio::test]
    async fn the_source_is_the_runs_not_the_execution_name() {
        use aws_sdk_dynamodb::operation::scan::ScanOutput;
        use aws_smithy_mocks::{mock, mock_client};

        let scan = mock!(aws_sdk_dynamodb::Client::scan).then_output(|| ScanOutput::builder().build());
        let db = mock_client!(aws_sdk_dynamodb, aws_smithy_mocks::RuleMode::MatchAny, [&scan]);
        let sfn = mock_client!(aws_sdk_sfn, []);
        let outputs = StackOutputs::new(
            BTreeMap::from([
                ("LedgerTableName".to_string(), "ledger".to_string()),
                (
                    "InstallStateMachineArn".to_string(),
                    "arn:aws:states:r:1:stateMachine:Install".to_string(),
                ),
                (
                    "RolloutStateMachineArn".to_string(),
                    "arn:aws:states:r:1:stateMachine:Rollout".to_string(),
                ),
            ]),
            "test",
        );
        for (name, source) in [
            ("replay-20261125T180000-0000abcd-1", "replay"),
            ("a1b2c3", "ec2-running"),
            ("rollout-1-w2-c0", "rollout rollout-1 wave 2"),
            (
                "sweep-20261125T180000-0000abcd-c0",
                "sweep sweep-20261125T180000-0000abcd",
            ),
        ] {
            // "Report Summary" puts the execution's name in the output's `source`; the input has the run's.
            let desc = DescribeExecutionOutput::builder()
                .execution_arn(format!("arn:aws:states:r:1:execution:Install:{name}"))
                .state_machine_arn("arn:aws:states:r:1:stateMachine:Install")
                .name(name)
                .status(aws_sdk_sfn::types::ExecutionStatus::Succeeded)
                .start_date(aws_smithy_types::DateTime::from_secs(0))
                .input(serde_json::json!({"instanceIds": ["i-0000000000000000a"], "source": source}).to_string())
                .output(serde_json::json!({"source": name, "summary": {"byState": {"installed": 1}}}).to_string())
                .build()
                .unwrap();
            let r = report(&sfn, &db, &outputs, &desc).await.unwrap();
            assert_eq!(r.source.as_deref(), Some(source));
            assert_eq!(r.name, name);
            let text = r.to_table();
            assert!(text.contains(&format!("\nSource     {source}\n")), "{text}");
            assert!(text.contains(&format!("\nName       {name}\n")), "{text}");
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["source"], source);
            assert_eq!(json["name"], name);
        }
        // No source in the input (started by hand): none shown, not the name.
        let desc = DescribeExecutionOutput::builder()
            .execution_arn("arn:aws:states:r:1:execution:Install:by-hand")
            .state_machine_arn("arn:aws:states:r:1:stateMachine:Install")
            .name("by-hand")
            .status(aws_sdk_sfn::types::ExecutionStatus::Running)
            .start_date(aws_smithy_types::DateTime::from_secs(0))
            .input(r#"{"instanceIds": []}"#)
            .build()
            .unwrap();
        let r = report(&sfn, &db, &outputs, &desc).await.unwrap();
        assert_eq!(r.source, None);
        assert!(!r.to_table().contains("Source"), "{}", r.to_table());
    }

    #[tokio::test]
    async fn agent_too_old_and_updated_are_counted_by_platform() {
        use crate::ledger::tests::item;
        use aws_sdk_dynamodb::operation::scan::ScanOutput;
        use aws_sdk_dynamodb::types::AttributeValue;
        use aws_smithy_mocks::{mock, mock_client};

        let arn = "arn:aws:states:r:1:execution:Install:run-2";
        let row = |id: &str, state: &str, code: &str, platform: &str| {
            let mut i = item(id, state, "2026-11-25T01:00:00.000Z");
            i.insert(crate::ledger::attr::EXECUTION_ARN.into(), AttributeValue::S(arn.into()));
            i.insert(crate::ledger::attr::REASON_CODE.into(), AttributeValue::S(code.into()));
            i.insert(crate::ledger::attr::PLATFORM.into(), AttributeValue::S(platform.into()));
            i
        };
        let scan = mock!(aws_sdk_dynamodb::Client::scan).then_output(move || {
            ScanOutput::builder()
                .items(row("i-0000000000000000a", "unmanaged", "AgentTooOld", "Ubuntu"))
                .items(row("i-0000000000000000b", "unmanaged", "AgentTooOld", "Ubuntu"))
                .items(row("i-0000000000000000c", "failed", "AgentTooOld", "Windows"))
                .items(row("i-0000000000000000d", "in_progress", "AgentUpdated", "Ubuntu"))
                .items(row("i-0000000000000000e", "installed", "Installed", "Ubuntu"))
                .items(row("i-0000000000000000f", "failed", "CommandFailed", "RHEL"))
                .build()
        });
        let db = mock_client!(aws_sdk_dynamodb, [&scan]);
        let sfn = mock_client!(aws_sdk_sfn, []);
        let outputs = StackOutputs::new(
            BTreeMap::from([
                ("LedgerTableName".to_string(), "ledger".to_string()),
                (
                    "InstallStateMachineArn".to_string(),
                    "arn:aws:states:r:1:stateMachine:Install".to_string(),
                ),
                (
                    "RolloutStateMachineArn".to_string(),
                    "arn:aws:states:r:1:stateMachine:Rollout".to_string(),
                ),
            ]),
            "test",
        );
        let output = serde_json::json!({"source": "api", "summary": {"byState": {"installed": 1}, "byPlatform": {}, "byReason": {}, "agentUpdated": 2}});
        let desc = DescribeExecutionOutput::builder()
            .execution_arn(arn)
            .state_machine_arn("arn:aws:states:r:1:stateMachine:Install")
            .name("run-2")
            .status(aws_sdk_sfn::types::ExecutionStatus::Succeeded)
            .start_date(aws_smithy_types::DateTime::from_secs(0))
            .output(output.to_string())
            .build()
            .unwrap();
        let r = report(&sfn, &db, &outputs, &desc).await.unwrap();
        assert_eq!(
            r.ledger.agent,
            vec![
                AgentRow {
                    platform: "Ubuntu".into(),
                    agent_too_old: 2,
                    agent_updated: 1
                },
                AgentRow {
                    platform: "Windows".into(),
                    agent_too_old: 1,
                    agent_updated: 0
                },
            ]
        );
        assert_eq!(r.agent_updated, Some(2));
        let text = r.to_table();
        println!("{text}");
        assert!(
            text.contains("Agent      2 instance(s) had their SSM Agent updated on the way to the install\n"),
            "{text}"
        );
        assert!(text.contains("PLATFORM  AGENT TOO OLD  AGENT UPDATED\nUbuntu                2              1\nWindows               1              0\n"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ledger"]["agent"][0]["agentTooOld"], 2);
        assert_eq!(json["agentUpdated"], 2);
        // Without such instances the section is left out.
        assert!(agent_rows(&[]).is_empty());
    }
}
