//! `output`: what the instances of a run printed, from the run results table: the last lines of
//! each instance's output and where the full output is (CloudWatch Logs group and stream).

use anyhow::{anyhow, bail, Result};
use fleet_core::run_store::{self, RunResult};
use serde::Serialize;

use crate::cli::OutputArgs;
use crate::commands::run::run_id;
use crate::context::{Context, Report};
use crate::table::{key_values, section, Table};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputReport {
    pub run: String,
    /// Only this instance (`--instance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub results: Vec<ResultView>,
}

/// One instance's result as `output` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultView {
    pub instance_id: String,
    pub outcome: String,
    pub status: String,
    pub status_details: String,
    pub exit_code: Option<i32>,
    pub platform: String,
    pub document: String,
    pub command_id: String,
    pub reason: String,
    /// The last lines the instance printed.
    pub output: String,
    pub log_group: String,
    pub log_stream: String,
    pub updated_at: String,
}

impl From<RunResult> for ResultView {
    fn from(r: RunResult) -> Self {
        ResultView {
            instance_id: r.instance_id,
            outcome: r.outcome.map(|o| o.as_str().to_string()).unwrap_or_default(),
            status: r.status,
            status_details: r.status_details,
            exit_code: r.exit_code,
            platform: r.platform,
            document: r.document,
            command_id: r.command_id,
            reason: r.reason,
            output: r.output,
            log_group: r.log_group,
            log_stream: r.log_stream,
            updated_at: r.updated_at,
        }
    }
}

impl Report for OutputReport {
    fn to_table(&self) -> String {
        if let (Some(_), Some(r)) = (&self.instance, self.results.first()) {
            let mut out = key_values(&[
                ("Run", self.run.clone()),
                ("Instance", r.instance_id.clone()),
                ("Outcome", r.outcome.clone()),
                ("Status", format!("{} ({})", r.status, r.status_details)),
                ("Exit code", r.exit_code.map(|c| c.to_string()).unwrap_or_default()),
                ("Platform", r.platform.clone()),
                ("Document", r.document.clone()),
                ("Command", r.command_id.clone()),
                ("Reason", r.reason.clone()),
                ("Log group", r.log_group.clone()),
                ("Log stream", r.log_stream.clone()),
                ("Updated", r.updated_at.clone()),
            ]);
            out.push_str("\nOutput (last lines; the full output is in the log stream above)\n");
            if r.output.is_empty() {
                out.push_str("  (none)\n");
            }
            for line in r.output.lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
            return out;
        }
        let mut t = Table::new(&["INSTANCE", "OUTCOME", "STATUS", "EXIT", "PLATFORM", "LAST LINE"]).numeric(&[3]);
        for r in &self.results {
            let last = r
                .output
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(r.reason.as_str());
            t.row([
                r.instance_id.clone(),
                r.outcome.clone(),
                r.status.clone(),
                r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                r.platform.clone(),
                fleet_core::text::clip(last, 100).to_string(),
            ]);
        }
        let title = format!(
            "Run {} ({} instances; `fleet-install output {} --instance ID` shows one in full)",
            self.run,
            self.results.len(),
            self.run
        );
        section(&title, &t, "no results yet")
    }
}

pub async fn run(ctx: &Context, args: &OutputArgs) -> Result<OutputReport> {
    let id = run_id(&args.run);
    let outputs = ctx.outputs().await?;
    let results = run_store::query_results(&ctx.dynamodb(), outputs.run_results_table()?, &id)
        .await
        .map_err(|e| anyhow!("cannot read the results of run {id}: {e}"))?;
    if results.is_empty() {
        bail!("no results for run {id:?}: is it the name of a run (`fleet-install run`)? It may not have reached its first wave yet");
    }
    let results: Vec<ResultView> = match &args.instance {
        Some(i) => {
            let one: Vec<ResultView> = results
                .into_iter()
                .filter(|r| &r.instance_id == i)
                .map(ResultView::from)
                .collect();
            if one.is_empty() {
                bail!("run {id} has no result for instance {i}");
            }
            one
        }
        None => results.into_iter().map(ResultView::from).collect(),
    };
    Ok(OutputReport {
        run: id,
        instance: args.instance.clone(),
        results,
    })
}
