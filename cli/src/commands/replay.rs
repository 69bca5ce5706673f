//! `replay`: re-run what failed. Either redrive failed executions (Step Functions resumes
//! them at the failed step; possible within 14 days of their end), or start new install
//! executions for the instances the ledger records as failed. The ledger's claim refuses
//! instances that are already installed, so replaying is safe.

use anyhow::{anyhow, Context as _, Result};
use aws_sdk_sfn::types::ExecutionStatus;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use fleet_core::model::LedgerState;
use serde::Serialize;
use serde_json::json;

use crate::args::{cut_name, since, unique_name, unique_suffix};
use crate::cli::ReplayArgs;
use crate::context::{Context, Progress, Report};
use crate::ledger::query_by_state;
use crate::start::{start_execution, StartOutcome};
use crate::table::{key_values, section, Table};

/// Step Functions redrives Standard executions up to 14 days after they stopped.
pub const REDRIVE_WINDOW_DAYS: i64 = 14;
/// At most this many instances per install execution (start-install and plan-rollout use the same).
pub const INSTANCES_PER_EXECUTION: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveRow {
    /// install or rollout
    pub workflow: String,
    pub name: String,
    pub execution_arn: String,
    pub stopped_at: String,
    /// redriven, would redrive, failed
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayRow {
    pub name: String,
    pub instances: usize,
    /// started, would start, not started (an execution of that name already existed: `reason`
    /// says which, `executionArn` is its), failed
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub instance_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum ReplayReport {
    #[serde(rename_all = "camelCase")]
    Redrive {
        dry_run: bool,
        /// Failed executions that stopped too long ago to be redriven (or before --failed-since).
        not_eligible: usize,
        executions: Vec<RedriveRow>,
    },
    #[serde(rename_all = "camelCase")]
    Reinstall {
        dry_run: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        failed_since: Option<String>,
        failed_instances: usize,
        executions: Vec<ReplayRow>,
    },
}

impl ReplayReport {
    /// False when something could not be redriven or started.
    pub fn ok(&self) -> bool {
        match self {
            ReplayReport::Redrive { executions, .. } => executions.iter().all(|e| e.action != "failed"),
            ReplayReport::Reinstall { executions, .. } => executions
                .iter()
                .all(|e| e.action != "failed" && e.action != NOT_STARTED),
        }
    }
}

fn action(action: &str, reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!("{action}: {r}"),
        None => action.to_string(),
    }
}

impl Report for ReplayReport {
    fn to_table(&self) -> String {
        match self {
            ReplayReport::Redrive {
                dry_run,
                not_eligible,
                executions,
            } => {
                let mut t = Table::new(&["WORKFLOW", "EXECUTION", "STOPPED", "ACTION"]);
                for e in executions {
                    t.row([
                        e.workflow.clone(),
                        e.name.clone(),
                        e.stopped_at.clone(),
                        action(&e.action, &e.reason),
                    ]);
                }
                let mut out = section(
                    &format!(
                        "Failed executions stopped within {REDRIVE_WINDOW_DAYS} days{}",
                        if *dry_run { " (dry run: nothing redriven)" } else { "" }
                    ),
                    &t,
                    "none",
                );
                if *not_eligible > 0 {
                    out.push_str(&format!(
                        "{not_eligible} older failed execution(s) cannot be redriven: run `fleet-install replay` without --redrive to re-install their failed instances.\n"
                    ));
                }
                out
            }
            ReplayReport::Reinstall {
                dry_run,
                failed_since,
                failed_instances,
                executions,
            } => {
                let mut out = key_values(&[
                    (
                        "Failed",
                        format!(
                            "{failed_instances} instance(s) in the ledger{}",
                            failed_since.as_ref().map(|s| format!(" since {s}")).unwrap_or_default()
                        ),
                    ),
                    (
                        "Mode",
                        if *dry_run {
                            "dry run: nothing started".into()
                        } else {
                            String::new()
                        },
                    ),
                ]);
                let mut t = Table::new(&["EXECUTION", "INSTANCES", "ACTION", "EXECUTION ARN"]).numeric(&[1]);
                for e in executions {
                    t.row([
                        e.name.clone(),
                        e.instances.to_string(),
                        action(&e.action, &e.reason),
                        e.execution_arn.clone().unwrap_or_default(),
                    ]);
                }
                out.push('\n');
                out.push_str(&section("Install executions", &t, "none (nothing failed)"));
                out
            }
        }
    }
}

pub async fn run(ctx: &Context, args: &ReplayArgs) -> Result<ReplayReport> {
    let failed_since = args.failed_since.as_deref().map(since).transpose()?;
    let outputs = ctx.outputs().await?;
    let sfn = ctx.sfn();
    let now = Utc::now();
    if args.redrive {
        let machines = [
            ("install", outputs.install_state_machine()?),
            ("rollout", outputs.rollout_state_machine()?),
        ];
        let since = failed_since
            .as_deref()
            .map(|s| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)))
            .transpose()?;
        redrive(&sfn, &machines, now, since, args.dry_run, ctx.progress).await
    } else {
        reinstall(
            &sfn,
            &ctx.dynamodb(),
            outputs.ledger_table()?,
            outputs.install_state_machine()?,
            failed_since.as_deref(),
            args.dry_run,
            now,
            ctx.progress,
        )
        .await
    }
}

/// Redrive every FAILED execution of the given state machines that stopped within the last
/// 14 days (and at or after `since`).
pub async fn redrive(
    sfn: &aws_sdk_sfn::Client,
    machines: &[(&str, &str)],
    now: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
    dry_run: bool,
    progress: Progress,
) -> Result<ReplayReport> {
    let window_start = now - Duration::days(REDRIVE_WINDOW_DAYS);
    let from = since.map_or(window_start, |s| s.max(window_start));
    let mut rows = Vec::new();
    let mut not_eligible = 0;
    for (workflow, arn) in machines {
        progress.update(format!("listing failed {workflow} executions"));
        let mut candidates = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = sfn
                .list_executions()
                .state_machine_arn(*arn)
                .status_filter(ExecutionStatus::Failed)
                .max_results(1000)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| anyhow!(crate::aws::message(&e)))
                .with_context(|| format!("cannot list failed executions of {arn}"))?;
            for e in resp.executions() {
                let stopped = e.stop_date().and_then(crate::aws::to_utc);
                match stopped {
                    Some(t) if t >= from => candidates.push((t, e.name().to_string(), e.execution_arn().to_string())),
                    _ => not_eligible += 1,
                }
            }
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        candidates.sort();
        for (stopped, name, execution_arn) in candidates {
            progress.update(format!("redriving {name}"));
            let (action, reason) = if dry_run {
                ("would redrive", None)
            } else {
                match sfn.redrive_execution().execution_arn(&execution_arn).send().await {
                    Ok(_) => ("redriven", None),
                    Err(e) => ("failed", Some(crate::aws::message(&e))),
                }
            };
            rows.push(RedriveRow {
                workflow: workflow.to_string(),
                name,
                execution_arn,
                stopped_at: stopped.to_rfc3339_opts(SecondsFormat::Secs, true),
                action: action.into(),
                reason,
            });
        }
    }
    progress.clear();
    Ok(ReplayReport::Redrive {
        dry_run,
        not_eligible,
        executions: rows,
    })
}

/// A replay row's action when StartExecution found an execution of that name: nothing started.
pub const NOT_STARTED: &str = "not started";

/// The install executions a replay starts: `replay-<UTC yyyymmddThhmmss>-<suffix>-<n>` (suffix: 8
/// random hex digits, [`unique_suffix`], so that replays started within the same second never share
/// a name), n from 1, at most 1,000 instances each; names within Step Functions' 80 characters (cut
/// at character boundaries).
pub fn plan_chunks(ids: &[String], now: DateTime<Utc>, suffix: &str) -> Vec<(String, Vec<String>)> {
    let base = unique_name("replay", now, suffix);
    ids.chunks(INSTANCES_PER_EXECUTION)
        .enumerate()
        .map(|(n, c)| (cut_name(&base, &format!("-{}", n + 1)), c.to_vec()))
        .collect()
}

/// Start install executions for every instance the ledger records as failed.
#[allow(clippy::too_many_arguments)]
pub async fn reinstall(
    sfn: &aws_sdk_sfn::Client,
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    install_state_machine: &str,
    failed_since: Option<&str>,
    dry_run: bool,
    now: DateTime<Utc>,
    progress: Progress,
) -> Result<ReplayReport> {
    progress.update("reading failed instances from the ledger");
    let mut ids: Vec<String> = query_by_state(db, table, LedgerState::Failed, failed_since)
        .await?
        .into_iter()
        .map(|r| r.instance_id)
        .collect();
    ids.sort();
    ids.dedup();
    let mut rows = Vec::new();
    for (name, chunk) in plan_chunks(&ids, now, &unique_suffix()) {
        let mut row = ReplayRow {
            name: name.clone(),
            instances: chunk.len(),
            action: "would start".into(),
            execution_arn: None,
            reason: None,
            instance_ids: chunk.clone(),
        };
        if !dry_run {
            progress.update(format!("starting {name}"));
            let input = json!({"instanceIds": chunk, "source": "replay"});
            match start_execution(sfn, install_state_machine, &name, &input.to_string()).await {
                Ok(StartOutcome::Started { execution_arn }) => {
                    row.action = "started".into();
                    row.execution_arn = Some(execution_arn);
                }
                Ok(StartOutcome::Existing(e)) => {
                    row.action = NOT_STARTED.into();
                    row.reason = Some(e.describe());
                    row.execution_arn = Some(e.execution_arn);
                }
                Err(e) => {
                    row.action = "failed".into();
                    row.reason = Some(e);
                }
            }
        }
        rows.push(row);
    }
    progress.clear();
    Ok(ReplayReport::Reinstall {
        dry_run,
        failed_since: failed_since.map(str::to_string),
        failed_instances: ids.len(),
        executions: rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tests::item;
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_sdk_sfn::operation::list_executions::ListExecutionsOutput;
    use aws_sdk_sfn::operation::redrive_execution::{RedriveExecutionError, RedriveExecutionOutput};
    use aws_sdk_sfn::operation::start_execution::StartExecutionOutput;
    use aws_sdk_sfn::types::error::ExecutionNotRedrivable;
    use aws_sdk_sfn::types::ExecutionListItem;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T18:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn chunks_of_a_thousand_with_numbered_names() {
        let ids: Vec<String> = (0..2001).map(|n| format!("i-{n:017x}")).collect();
        let c = plan_chunks(&ids, now(), "0000abcd");
        assert_eq!(
            c.iter().map(|(n, ids)| (n.as_str(), ids.len())).collect::<Vec<_>>(),
            vec![
                ("replay-20261125T180000-0000abcd-1", 1000),
                ("replay-20261125T180000-0000abcd-2", 1000),
                ("replay-20261125T180000-0000abcd-3", 1)
            ]
        );
        assert!(plan_chunks(&[], now(), "0000abcd").is_empty());
    }

    fn one_failed_instance() -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_dynamodb::Client::query).then_output(|| {
            QueryOutput::builder()
                .items(item("i-0000000000000000a", "failed", "2026-11-25T01:00:00.000Z"))
                .build()
        })
    }

    async fn replay_at(sfn: &aws_sdk_sfn::Client, db: &aws_sdk_dynamodb::Client) -> ReplayReport {
        reinstall(
            sfn,
            db,
            "ledger",
            "arn:aws:states:r:1:stateMachine:Install",
            Some("2026-11-25T00:00:00.000Z"),
            false,
            now(),
            Progress::disabled(),
        )
        .await
        .unwrap()
    }

    fn rows(r: &ReplayReport) -> &[ReplayRow] {
        match r {
            ReplayReport::Reinstall { executions, .. } => executions,
            ReplayReport::Redrive { .. } => panic!(),
        }
    }

    #[tokio::test]
    async fn two_replays_in_the_same_second_start_two_executions() {
        let q = one_failed_instance();
        let d = crate::start::tests::not_there();
        // Step Functions' answer names the execution it was asked to start.
        let start = mock!(aws_sdk_sfn::Client::start_execution).then_compute_output(|r| {
            StartExecutionOutput::builder()
                .execution_arn(format!("arn:aws:states:r:1:execution:Install:{}", r.name().unwrap()))
                .start_date(aws_smithy_types::DateTime::from_secs(Utc::now().timestamp()))
                .build()
                .unwrap()
        });
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&q]);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&d, &start]);
        let first = replay_at(&sfn, &db).await;
        let second = replay_at(&sfn, &db).await;
        assert_eq!(start.num_calls(), 2);
        let (a, b) = (&rows(&first)[0], &rows(&second)[0]);
        assert_ne!(a.name, b.name, "the same second, the same name");
        assert_ne!(a.execution_arn, b.execution_arn);
        for row in [a, b] {
            assert_eq!(row.action, "started");
            assert!(row.name.starts_with("replay-20261125T180000-"), "{}", row.name);
            assert!(row.name.ends_with("-1"), "{}", row.name);
            assert_eq!(row.name.chars().count(), "replay-20261125T180000-".len() + 8 + 2);
            assert!(crate::args::execution_name(&row.name).is_ok());
        }
    }

    #[tokio::test]
    async fn an_execution_that_already_existed_is_not_reported_started() {
        // StartExecution with the name of a running execution and the same input returns it as if
        // it had started it: the CLI looks the name up and says so instead.
        let q = one_failed_instance();
        let existing = mock!(aws_sdk_sfn::Client::describe_execution).then_compute_output(|r| {
            aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput::builder()
                .execution_arn(r.execution_arn().unwrap())
                .state_machine_arn("arn:aws:states:r:1:stateMachine:Install")
                .status(ExecutionStatus::Running)
                .start_date(aws_smithy_types::DateTime::from_secs(now().timestamp()))
                .build()
                .unwrap()
        });
        let start = mock!(aws_sdk_sfn::Client::start_execution).then_compute_output(|r| {
            StartExecutionOutput::builder()
                .execution_arn(format!("arn:aws:states:r:1:execution:Install:{}", r.name().unwrap()))
                .start_date(aws_smithy_types::DateTime::from_secs(now().timestamp()))
                .build()
                .unwrap()
        });
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&q]);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&existing, &start]);
        let r = replay_at(&sfn, &db).await;
        assert_eq!(start.num_calls(), 0);
        let row = &rows(&r)[0];
        assert_eq!(row.action, NOT_STARTED);
        assert!(row
            .execution_arn
            .as_deref()
            .is_some_and(|a| a.ends_with(&format!(":{}", row.name))));
        assert!(!r.ok(), "nothing new started: a reported failure");
        let text = r.to_table();
        println!("{text}");
        assert!(
            text.contains(
                "  not started: an execution of this name already exists (RUNNING since 2026-11-25T18:00:00Z); nothing was started  arn:"
            ),
            "{text}"
        );
        assert!(!text.contains("  started  arn:"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["executions"][0]["action"], "not started");
    }

    fn execution(name: &str, days_ago: i64) -> ExecutionListItem {
        let stopped = now() - Duration::days(days_ago);
        ExecutionListItem::builder()
            .execution_arn(format!("arn:aws:states:r:1:execution:Install:{name}"))
            .state_machine_arn("arn:aws:states:r:1:stateMachine:Install")
            .name(name)
            .status(ExecutionStatus::Failed)
            .start_date(aws_smithy_types::DateTime::from_secs(stopped.timestamp() - 60))
            .stop_date(aws_smithy_types::DateTime::from_secs(stopped.timestamp()))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn redrives_recent_failures_and_reports_refusals() {
        let list = mock!(aws_sdk_sfn::Client::list_executions)
            .match_requests(|r| r.status_filter() == Some(&ExecutionStatus::Failed))
            .then_output(|| {
                ListExecutionsOutput::builder()
                    .executions(execution("recent", 1))
                    .executions(execution("stuck", 2))
                    .executions(execution("old", 15))
                    .build()
                    .unwrap()
            });
        let ok = mock!(aws_sdk_sfn::Client::redrive_execution)
            .match_requests(|r| r.execution_arn().is_some_and(|a| a.ends_with(":recent")))
            .then_output(|| {
                RedriveExecutionOutput::builder()
                    .redrive_date(aws_smithy_types::DateTime::from_secs(0))
                    .build()
                    .unwrap()
            });
        let refused = mock!(aws_sdk_sfn::Client::redrive_execution)
            .match_requests(|r| r.execution_arn().is_some_and(|a| a.ends_with(":stuck")))
            .then_error(|| {
                RedriveExecutionError::ExecutionNotRedrivable(
                    ExecutionNotRedrivable::builder()
                        .message("Execution has exceeded the redrive limit")
                        .build(),
                )
            });
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&list, &ok, &refused]);
        let r = redrive(
            &sfn,
            &[("install", "arn:aws:states:r:1:stateMachine:Install")],
            now(),
            None,
            false,
            Progress::disabled(),
        )
        .await
        .unwrap();
        let ReplayReport::Redrive {
            not_eligible,
            executions,
            ..
        } = &r
        else {
            panic!()
        };
        assert_eq!(*not_eligible, 1);
        assert_eq!(
            executions
                .iter()
                .map(|e| (e.name.as_str(), e.action.as_str()))
                .collect::<Vec<_>>(),
            vec![("stuck", "failed"), ("recent", "redriven")]
        );
        assert!(!r.ok());
        let text = r.to_table();
        println!("{text}");
        assert!(text.contains("failed: ExecutionNotRedrivable: Execution has exceeded the redrive limit"));
        assert!(text.contains("1 older failed execution(s) cannot be redriven"));
    }

    #[tokio::test]
    async fn reinstalls_failed_instances_from_the_ledger() {
        let q = mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(|r| {
                r.expression_attribute_values()
                    .is_some_and(|v| v.get(":s") == Some(&aws_sdk_dynamodb::types::AttributeValue::S("failed".into())))
            })
            .then_output(|| {
                QueryOutput::builder()
                    .items(item("i-0000000000000000b", "failed", "2026-11-25T01:00:00.000Z"))
                    .items(item("i-0000000000000000a", "failed", "2026-11-25T02:00:00.000Z"))
                    .items(item("batch#x", "failed", "2026-11-25T02:00:00.000Z"))
                    .items(item("rollout#r1#w0#c0", "failed", "2026-11-25T02:00:00.000Z"))
                    .build()
            });
        let start = mock!(aws_sdk_sfn::Client::start_execution)
            .match_requests(|r| {
                r.name()
                    .is_some_and(|n| n.starts_with("replay-20261125T180000-") && n.ends_with("-1"))
                    && r.input()
                        == Some(r#"{"instanceIds":["i-0000000000000000a","i-0000000000000000b"],"source":"replay"}"#)
            })
            .then_output(|| {
                StartExecutionOutput::builder()
                    .execution_arn("arn:aws:states:r:1:execution:Install:replay-20261125T180000-0000abcd-1")
                    .start_date(aws_smithy_types::DateTime::from_secs(Utc::now().timestamp()))
                    .build()
                    .unwrap()
            });
        let db = mock_client!(aws_sdk_dynamodb, [&q]);
        let sfn = mock_client!(aws_sdk_sfn, [&crate::start::tests::not_there(), &start]);
        let r = reinstall(
            &sfn,
            &db,
            "ledger",
            "arn:aws:states:r:1:stateMachine:Install",
            None,
            false,
            now(),
            Progress::disabled(),
        )
        .await
        .unwrap();
        assert!(r.ok());
        assert_eq!(start.num_calls(), 1);
        let text = r.to_table();
        println!("{text}");
        assert!(
            text.contains(
                "          2  started  arn:aws:states:r:1:execution:Install:replay-20261125T180000-0000abcd-1"
            ),
            "{text}"
        );
    }
}
