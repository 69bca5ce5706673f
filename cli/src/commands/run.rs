//! `run`: send an allowed SSM command document across the fleet through the rollout workflow (canary,
//! waves, failure budget), each chunk a run workflow that waits for its commands however long they
//! run. Everything is checked before anything starts: the document is in the stack's allowlist and
//! exists, and every parameter is one it declares, with an allowed value.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context as _, Result};
use chrono::Utc;
use fleet_core::run::{self as core_run, DeclaredParameter, RunDocument, RunSpec};
use serde::Serialize;
use serde_json::Value;

use crate::args::{execution_name, failure_ratio, group_tags, unique_name, unique_suffix, wave_size};
use crate::cli::RunArgs;
use crate::commands::rollout::{self, RolloutOutcome};
use crate::commands::status::{self, StatusReport};
use crate::context::{Context, Report};
use crate::table::key_values;
use crate::UsageError;

/// The parameter through which SSM's run documents take their execution timeout.
pub const EXECUTION_TIMEOUT_PARAMETER: &str = "executionTimeout";

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow!(UsageError {
        command: "run",
        message: message.into(),
    })
}

/// The run's name from a name or an execution ARN (its last segment).
pub fn run_id(arg: &str) -> String {
    if arg.starts_with("arn:") {
        arg.rsplit(':').next().unwrap_or(arg).to_string()
    } else {
        arg.to_string()
    }
}

/// What `run` prints: the start, or with --wait the run's final status.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RunOutcome {
    Started(Box<Started>),
    NotStarted(Box<rollout::NotStarted>),
    Finished(Box<Finished>),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub name: String,
    pub execution_arn: String,
    pub documents: Vec<RunDocument>,
    pub parameters: BTreeMap<String, Vec<String>>,
    pub execution_timeout: Option<u64>,
    pub input: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finished {
    /// True when the run ended within its failure budget (the execution SUCCEEDED).
    pub within_budget: bool,
    #[serde(flatten)]
    pub status: StatusReport,
}

impl Report for RunOutcome {
    fn to_table(&self) -> String {
        match self {
            RunOutcome::Started(s) => key_values(&[
                ("Started", s.name.clone()),
                ("Execution", s.execution_arn.clone()),
                (
                    "Documents",
                    s.documents
                        .iter()
                        .map(|d| format!("{}: {} ({})", d.family, d.name, d.version))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                (
                    "Parameters",
                    s.parameters
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.join(" | ")))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                (
                    "Timeout",
                    s.execution_timeout
                        .map(|t| format!("{t} s on each instance"))
                        .unwrap_or_else(|| "the document's own".into()),
                ),
                ("Follow", format!("fleet-install status {}", s.name)),
                ("Output", format!("fleet-install output {}", s.name)),
            ]),
            RunOutcome::NotStarted(n) => n.to_table(),
            RunOutcome::Finished(f) => f.status.to_table(),
        }
    }
}

impl RunOutcome {
    /// The exit status: 0 started, or (--wait) ended within its budget; 1 when the run failed or
    /// stopped over its budget; 2 when nothing started (an execution of that name existed).
    pub fn exit_code(&self) -> u8 {
        match self {
            RunOutcome::Started(_) => 0,
            RunOutcome::NotStarted(_) => crate::EXIT_REPORTED_FAILURE,
            RunOutcome::Finished(f) if f.within_budget => 0,
            RunOutcome::Finished(_) => 1,
        }
    }
}

/// Read a document's declared parameters (GetDocument, JSON content).
pub async fn declared_parameters(
    ssm: &aws_sdk_ssm::Client,
    doc: &RunDocument,
) -> Result<BTreeMap<String, DeclaredParameter>> {
    let resp = ssm
        .get_document()
        .name(&doc.name)
        .document_version(&doc.version)
        .document_format(aws_sdk_ssm::types::DocumentFormat::Json)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            use aws_sdk_ssm::operation::get_document::GetDocumentError as E;
            if matches!(
                e.as_service_error(),
                Some(E::InvalidDocument(_)) | Some(E::InvalidDocumentVersion(_))
            ) {
                return Err(usage(format!(
                    "document {} version {} does not exist: {}",
                    doc.name,
                    doc.version,
                    crate::aws::message(&e)
                )));
            }
            return Err(anyhow!(crate::aws::message(&e))).with_context(|| format!("cannot read document {}", doc.name));
        }
    };
    if let Some(t) = resp.document_type() {
        if t.as_str() != "Command" {
            return Err(usage(format!(
                "document {} is a {} document: run sends Command documents only",
                doc.name,
                t.as_str()
            )));
        }
    }
    let content: Value = serde_json::from_str(resp.content().unwrap_or("{}"))
        .with_context(|| format!("document {} has content that is not JSON", doc.name))?;
    Ok(core_run::declared_parameters(&content))
}

/// Check the documents and parameters and build what the workflow sends.
pub async fn spec(ssm: &aws_sdk_ssm::Client, allowlist: &[String], args: &RunArgs) -> Result<RunSpec> {
    let documents = args
        .documents
        .iter()
        .map(|d| core_run::parse_document(d).map_err(usage))
        .collect::<Result<Vec<_>>>()?;
    core_run::check_documents(&documents).map_err(usage)?;
    if let Some(d) = documents.iter().find(|d| !allowlist.contains(&d.name)) {
        return Err(usage(format!(
            "document {} is not in the stack's allowlist ({}): add it to the stack's RunDocuments parameter \
             and update the stack; nothing was started",
            d.name,
            allowlist.join(", ")
        )));
    }
    let mut parameters = core_run::parse_parameters(&args.parameters).map_err(usage)?;
    if let Some(t) = args.execution_timeout {
        if parameters.contains_key(EXECUTION_TIMEOUT_PARAMETER) {
            return Err(usage(format!(
                "give the execution timeout once: --execution-timeout or --parameter {EXECUTION_TIMEOUT_PARAMETER}=..."
            )));
        }
        parameters.insert(EXECUTION_TIMEOUT_PARAMETER.into(), vec![t.to_string()]);
    }
    let mut timeout: Option<u64> = None;
    for doc in &documents {
        let declared = declared_parameters(ssm, doc).await?;
        if args.execution_timeout.is_some() && !declared.contains_key(EXECUTION_TIMEOUT_PARAMETER) {
            return Err(usage(format!(
                "--execution-timeout: document {} declares no {EXECUTION_TIMEOUT_PARAMETER} parameter; its steps' \
                 own timeouts bound it",
                doc.name
            )));
        }
        core_run::check_parameters(&doc.name, &declared, &parameters).map_err(|e| usage(e.to_string()))?;
        // The longest the command may run on an instance: what the run gives, else the document's default.
        let t = parameters
            .get(EXECUTION_TIMEOUT_PARAMETER)
            .and_then(|v| v.first())
            .and_then(|v| v.parse::<u64>().ok());
        timeout = timeout.max(t);
    }
    Ok(RunSpec {
        documents,
        parameters,
        execution_timeout: timeout,
    })
}

pub async fn run(ctx: &Context, args: &RunArgs) -> Result<RunOutcome> {
    let size = wave_size(args.waves.wave_size, args.waves.wave_percent)?;
    let ratio = failure_ratio(args.max_failure_ratio)?;
    if args.instance_ids.len() > fleet_core::adapters::EC2_FILTER_VALUES {
        return Err(usage(format!(
            "--instance-ids takes at most {} ids ({} given): target more with --tag or --all",
            fleet_core::adapters::EC2_FILTER_VALUES,
            args.instance_ids.len()
        )));
    }
    if let Some(bad) = args
        .instance_ids
        .iter()
        .find(|id| !fleet_core::model::is_valid_instance_id(id))
    {
        return Err(usage(format!(
            "--instance-ids: {bad:?} is not an instance id (i- and 8 or 17 hex digits)"
        )));
    }
    let name = execution_name(
        &args
            .name
            .clone()
            .unwrap_or_else(|| unique_name("run", Utc::now(), &unique_suffix())),
    )?;
    let outputs = ctx.outputs().await?;
    let spec = spec(&ctx.ssm(), &outputs.run_documents()?, args).await?;
    let mut input = rollout::rollout_input(
        &group_tags(&args.tags),
        args.waves.canary,
        size,
        ratio,
        args.pause_seconds,
    );
    input["instanceIds"] = serde_json::json!(args.instance_ids);
    input["all"] = Value::Bool(args.all);
    input["run"] = serde_json::to_value(&spec)?;
    input["source"] = Value::String("run".into());
    let sfn = ctx.sfn();
    let started = match rollout::start(&sfn, outputs.rollout_state_machine()?, &name, input.clone()).await? {
        RolloutOutcome::Started(s) => s,
        RolloutOutcome::NotStarted(n) => {
            // A scheduler's retry (same name, same input) follows the run it started before; anything else
            // under that name is not this run.
            if args.wait && same_run(&sfn, &n.existing.execution_arn, &input).await {
                eprintln!(
                    "following run {name}, started before with the same input ({})",
                    n.existing.status
                );
                rollout::Started {
                    name: name.clone(),
                    execution_arn: n.existing.execution_arn.clone(),
                    input,
                }
            } else {
                return Ok(RunOutcome::NotStarted(Box::new(n)));
            }
        }
        RolloutOutcome::Finished(_) => unreachable!("start never waits"),
    };
    if !args.wait {
        return Ok(RunOutcome::Started(Box::new(Started {
            name: started.name,
            execution_arn: started.execution_arn,
            documents: spec.documents,
            parameters: spec.parameters,
            execution_timeout: spec.execution_timeout,
            input: started.input,
        })));
    }
    crate::wait::announce(ctx.progress, &started.execution_arn);
    // The bar counts the run's waves evaluated out of those planned, as rollout --wait does.
    let desc = rollout::wait(&sfn, &started.execution_arn, ctx.progress).await?;
    let report = status::report(&sfn, &ctx.dynamodb(), &outputs, &desc).await?;
    let within_budget = report.succeeded();
    if !within_budget {
        crate::wait::report_failure(
            "run",
            &report.name,
            &report.status,
            report.cause.as_deref(),
            report.error.as_deref(),
        );
    }
    Ok(RunOutcome::Finished(Box::new(Finished {
        within_budget,
        status: report,
    })))
}

/// True when the execution's input is `input`: the same run, started before under the same name.
async fn same_run(sfn: &aws_sdk_sfn::Client, execution_arn: &str, input: &Value) -> bool {
    match sfn.describe_execution().execution_arn(execution_arn).send().await {
        Ok(d) => d
            .input()
            .and_then(|i| serde_json::from_str::<Value>(i).ok())
            .is_some_and(|i| &i == input),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ssm::operation::get_document::GetDocumentOutput;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let argv: Vec<&str> = ["fleet-install", "run"].iter().chain(extra).copied().collect();
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Run(a) => a,
            _ => panic!(),
        }
    }

    const SHELL: &str = r#"{"schemaVersion": "1.2", "parameters": {
        "commands": {"type": "StringList"},
        "workingDirectory": {"type": "String", "default": ""},
        "executionTimeout": {"type": "String", "default": "3600",
            "allowedPattern": "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)"}},
        "runtimeConfig": {"aws:runShellScript": {"properties": [{"runCommand": "{{ commands }}"}]}}}"#;

    fn ssm() -> (aws_sdk_ssm::Client, aws_smithy_mocks::Rule) {
        let get = mock!(aws_sdk_ssm::Client::get_document)
            .match_requests(|r| r.name() == Some("AWS-RunShellScript"))
            .then_output(|| {
                GetDocumentOutput::builder()
                    .content(SHELL)
                    .document_type(aws_sdk_ssm::types::DocumentType::Command)
                    .build()
            });
        (mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&get]), get)
    }

    fn allowlist() -> Vec<String> {
        vec!["AWS-RunShellScript".into(), "AWS-RunPowerShellScript".into()]
    }

    #[tokio::test]
    async fn a_valid_run_takes_the_execution_timeout_as_the_documents_parameter() {
        let (ssm, _) = ssm();
        let a = args(&[
            "--document",
            "AWS-RunShellScript",
            "--parameter",
            "commands=uptime",
            "--parameter",
            "commands=df -h",
            "--execution-timeout",
            "2400",
            "--all",
        ]);
        let spec = spec(&ssm, &allowlist(), &a).await.unwrap();
        assert_eq!(spec.parameters["commands"], vec!["uptime", "df -h"]);
        assert_eq!(spec.parameters["executionTimeout"], vec!["2400"]);
        assert_eq!(spec.execution_timeout, Some(2400));
    }

    #[tokio::test]
    async fn refusals_are_usage_errors_that_name_the_problem_before_anything_starts() {
        for (extra, says, reads_document) in [
            (
                vec!["--document", "AWS-RunRemoteScript", "--all"],
                "not in the stack's allowlist",
                false,
            ),
            (
                vec!["--document", "AWS-RunShellScript", "--parameter", "comands=x", "--all"],
                "\"comands\" is not declared",
                true,
            ),
            (
                vec!["--document", "AWS-RunShellScript", "--all"],
                "\"commands\" is required",
                true,
            ),
            (
                vec![
                    "--document",
                    "AWS-RunShellScript",
                    "--parameter",
                    "commands=x",
                    "--parameter",
                    "executionTimeout=0",
                    "--all",
                ],
                "\"executionTimeout\"",
                true,
            ),
        ] {
            let (ssm, get) = ssm();
            let err = spec(&ssm, &allowlist(), &args(&extra)).await.unwrap_err();
            let usage = err
                .downcast_ref::<UsageError>()
                .unwrap_or_else(|| panic!("{extra:?}: {err:#}"));
            assert!(usage.message.contains(says), "{extra:?}: {}", usage.message);
            assert_eq!(get.num_calls() > 0, reads_document, "{extra:?}");
        }
    }

    #[test]
    fn targets_are_exactly_one_of_tag_ids_or_all() {
        let parse = |extra: &[&str]| {
            crate::cli::Cli::try_parse_from(
                ["fleet-install", "run", "--document", "AWS-RunShellScript"]
                    .iter()
                    .chain(extra)
                    .copied(),
            )
        };
        assert!(parse(&[]).is_err());
        assert!(parse(&["--all", "--tag", "a=b"]).is_err());
        assert!(parse(&["--tag", "a=b"]).is_ok());
        let a = args(&[
            "--document",
            "X-1",
            "--instance-ids",
            "i-0123456789abcdef0,i-0123456789abcdef1",
        ]);
        assert_eq!(a.instance_ids.len(), 2);
        for bad in ["0", "172801", "-5", "1h"] {
            let e = parse(&["--all", "--execution-timeout", bad]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("--execution-timeout"), "{e}");
        }
    }

    #[test]
    fn run_ids_come_from_names_or_arns() {
        assert_eq!(run_id("run-1"), "run-1");
        assert_eq!(run_id("arn:aws:states:us-east-1:1:execution:sm:run-1"), "run-1");
    }
}
