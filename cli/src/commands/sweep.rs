//! `sweep`: start the sweep workflow (statemachine/sweep.asl.json) now, as its schedule would;
//! with --wait, follow it to the end and show its report: what it found, what it sent and why,
//! what came of it, and compliance before and after.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;
use chrono::{DateTime, Utc};
pub use fleet_core::compliance::SweepReport;
use fleet_core::compliance::{COMPLIANT, OPTED_OUT};
use serde::Serialize;
use serde_json::{json, Value};

use crate::args::{unique_name, unique_suffix};
use crate::cli::SweepArgs;
use crate::context::{Context, Progress, Report};
use crate::table::{key_values, section, Table};

pub use crate::wait::POLL_INTERVAL;

/// The sweep's reasons to send an instance, in the order the report lists them, with their labels
/// (fleet_core::sweep::Work).
pub const WORK: [(&str, &str); 6] = [
    ("neverSeen", "never seen"),
    ("reclassify", "reclassify"),
    ("retry", "retry"),
    ("resume", "resume"),
    ("stale", "stale"),
    ("verify", "verify"),
];

/// `sweep-<UTC yyyymmddThhmmss>-<8 random hex digits>` ([`unique_name`], shared with replay and
/// rollout): two sweeps started within the same second get different names (Step Functions refuses
/// a name twice). Its install executions are named `<name>-c<n>`, well within 80 characters.
pub fn default_name(now: DateTime<Utc>, suffix: &str) -> String {
    unique_name("sweep", now, suffix)
}

/// The sweep workflow's input.
pub fn sweep_input(verify_all: bool) -> Value {
    json!({ "verifyAll": verify_all })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub name: String,
    pub execution_arn: String,
    pub verify_all: bool,
}

impl Report for Started {
    fn to_table(&self) -> String {
        key_values(&[
            ("Started", self.name.clone()),
            ("Execution", self.execution_arn.clone()),
            (
                "Verifies",
                if self.verify_all {
                    "every installed instance (--verify-all)".into()
                } else {
                    "installed instances not verified within the drift check interval".to_string()
                },
            ),
        ])
    }
}

/// The sweep that held the lock when this one started.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub execution_arn: String,
    pub name: String,
}

/// A sweep that has ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finished {
    pub name: String,
    pub execution_arn: String,
    pub status: String,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Set when another sweep held the lock: this one did nothing and left the fleet to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub another_sweep_running: Option<Holder>,
    /// The sweep's report (when it succeeded and held the lock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<SweepReport>,
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        self.status == "SUCCEEDED"
    }

    /// Read a described execution: its status and, from its output, the report or the lock holder.
    pub fn from_description(desc: &DescribeExecutionOutput) -> Finished {
        let output: Option<Value> = desc.output().and_then(|o| serde_json::from_str(o).ok());
        let mut f = Finished {
            name: desc.name().unwrap_or_default().to_string(),
            execution_arn: desc.execution_arn().to_string(),
            status: desc.status().as_str().to_string(),
            started_at: crate::aws::rfc3339(desc.start_date()),
            stopped_at: desc.stop_date().map(crate::aws::rfc3339),
            error: desc.error().map(str::to_string),
            cause: desc.cause().map(str::to_string),
            another_sweep_running: None,
            report: None,
        };
        if !f.succeeded() {
            return f;
        }
        let Some(output) = output else { return f };
        if output.get("acquired").and_then(Value::as_bool) == Some(false) {
            let arn = output.get("holder").and_then(Value::as_str).unwrap_or_default();
            f.another_sweep_running = Some(Holder {
                execution_arn: arn.to_string(),
                name: arn.rsplit(':').next().unwrap_or_default().to_string(),
            });
        } else if output.get("found").is_some() {
            f.report = serde_json::from_value(output).ok();
        }
        f
    }
}

fn count(map: &BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

/// Compliant over running instances that should have the agent: `0.900 (90 of 100)`.
fn ratio_text(ratio: f64, compliant: u64, should: u64) -> String {
    format!("{ratio:.3} ({compliant} of {should})")
}

/// The sweep's report (fleet_core::compliance::SweepReport, the output of the sweep's last
/// state, "Report Compliance") as text.
fn report_table(r: &SweepReport) -> String {
    let found = &r.found.by_bucket;
    let should = r.running.saturating_sub(count(found, OPTED_OUT));
    let mut out = key_values(&[
        ("Running instances", r.running.to_string()),
        (
            "Compliance",
            format!(
                "{} before -> {} after",
                ratio_text(r.ratio_before, count(found, COMPLIANT), should),
                ratio_text(r.ratio_after, r.compliant_after, should)
            ),
        ),
        (
            "Oldest not compliant",
            r.found
                .oldest_not_compliant
                .as_ref()
                .map(|o| {
                    format!(
                        "{} ({}) since {} (as found)",
                        o.instance_id,
                        o.reason,
                        o.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                })
                .unwrap_or_default(),
        ),
    ]);
    let t = crate::commands::compliance::bucket_table(found, &r.found.by_reason);
    out.push('\n');
    out.push_str(&section("Found (by bucket; not compliant by reason)", &t, "none"));
    let mut sent = Table::new(&["WHY", "INSTANCES"]).numeric(&[1]);
    for (key, label) in WORK {
        sent.row([label.to_string(), count(&r.work, key).to_string()]);
    }
    // a reason this version does not know yet is shown, not dropped
    for (key, n) in r.work.iter().filter(|(k, _)| !WORK.iter().any(|(w, _)| w == k)) {
        sent.row([key.clone(), n.to_string()]);
    }
    sent.row(["total".to_string(), r.sent.to_string()]);
    out.push('\n');
    out.push_str(&section(
        &format!(
            "Sent to {} install execution(s){}",
            r.install_executions,
            if r.failed_executions > 0 {
                format!(", {} of which failed", r.failed_executions)
            } else {
                String::new()
            }
        ),
        &sent,
        "none",
    ));
    let mut outcome = Table::new(&["OUTCOME", "INSTANCES", "WHAT"]).numeric(&[1]);
    for (label, n, what) in [
        (
            "installed",
            r.installed,
            "the agent installed and running when the commands ended (verified and repaired included)",
        ),
        (
            "verified",
            r.verified,
            "the agent was installed and running: nothing changed",
        ),
        (
            "drift repaired",
            r.drift_repaired,
            "the agent was removed or stopped, and was put back",
        ),
        (
            "drift unrepaired",
            r.drift_unrepaired,
            "the agent was removed or stopped, and could not be put back",
        ),
        ("failed", r.failed, "the install command failed (the ledger has why)"),
        (
            "gone",
            r.gone,
            "ledger items of instances that no longer exist: marked gone, they expire",
        ),
    ] {
        outcome.row([label.to_string(), n.to_string(), what.to_string()]);
    }
    out.push('\n');
    out.push_str(&section("Outcome", &outcome, "none"));
    out
}

impl Report for Finished {
    fn to_table(&self) -> String {
        let mut out = key_values(&[
            ("Sweep", self.name.clone()),
            ("Execution", self.execution_arn.clone()),
            ("Status", self.status.clone()),
            ("Started", self.started_at.clone()),
            ("Stopped", self.stopped_at.clone().unwrap_or_default()),
            ("Error", self.error.clone().unwrap_or_default()),
            ("Cause", self.cause.clone().unwrap_or_default()),
            (
                "Another sweep",
                self.another_sweep_running
                    .as_ref()
                    .map(|h| {
                        format!(
                            "{} was running ({}): this one did nothing and left the fleet to it",
                            h.name, h.execution_arn
                        )
                    })
                    .unwrap_or_default(),
            ),
        ]);
        if let Some(r) = &self.report {
            out.push('\n');
            out.push_str(&report_table(r));
        } else if self.succeeded() && self.another_sweep_running.is_none() {
            out.push_str("Report: the execution's output has no sweep report\n");
        }
        out
    }
}

/// What `sweep` prints: the start, or with --wait the end.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SweepOutcome {
    Started(Started),
    Finished(Box<Finished>),
}

impl Report for SweepOutcome {
    fn to_table(&self) -> String {
        match self {
            SweepOutcome::Started(s) => s.to_table(),
            SweepOutcome::Finished(f) => f.to_table(),
        }
    }
}

impl SweepOutcome {
    /// False when --wait saw the sweep end in anything but SUCCEEDED (failed, timed out, aborted).
    pub fn ok(&self) -> bool {
        match self {
            SweepOutcome::Started(_) => true,
            SweepOutcome::Finished(f) => f.succeeded(),
        }
    }
}

pub async fn run(ctx: &Context, args: &SweepArgs) -> Result<SweepOutcome> {
    let outputs = ctx.outputs().await?;
    let sfn = ctx.sfn();
    let name = default_name(Utc::now(), &unique_suffix());
    let started = start(&sfn, outputs.sweep_state_machine()?, &name, args.verify_all).await?;
    if !args.wait {
        return Ok(SweepOutcome::Started(started));
    }
    crate::wait::announce(ctx.progress, &started.execution_arn);
    let desc = wait(&sfn, &started.execution_arn, ctx.progress).await?;
    let finished = Finished::from_description(&desc);
    if !finished.succeeded() {
        crate::wait::report_failure(
            "sweep",
            &finished.name,
            &finished.status,
            finished.cause.as_deref(),
            finished.error.as_deref(),
        );
    }
    Ok(SweepOutcome::Finished(Box::new(finished)))
}

pub async fn start(
    sfn: &aws_sdk_sfn::Client,
    state_machine_arn: &str,
    name: &str,
    verify_all: bool,
) -> Result<Started> {
    let resp = sfn
        .start_execution()
        .state_machine_arn(state_machine_arn)
        .name(name)
        .input(sweep_input(verify_all).to_string())
        .send()
        .await
        .map_err(|e| anyhow!(crate::aws::message(&e)))
        .with_context(|| format!("cannot start sweep {name} on {state_machine_arn}"))?;
    Ok(Started {
        name: name.to_string(),
        execution_arn: resp.execution_arn().to_string(),
        verify_all,
    })
}

/// Poll DescribeExecution every 2 s until the execution ends; on a terminal, a progress bar shows
/// the time waited and the state the sweep is in.
pub async fn wait(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
    progress: Progress,
) -> Result<DescribeExecutionOutput> {
    wait_every(sfn, execution_arn, progress, POLL_INTERVAL).await
}

async fn wait_every(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
    progress: Progress,
    interval: Duration,
) -> Result<DescribeExecutionOutput> {
    crate::wait::until_done(sfn, execution_arn, "sweep", progress, interval, |status| async move {
        let state = current_state(sfn, execution_arn).await.ok().flatten();
        crate::wait::Position {
            message: progress_line(&status, state.as_deref()),
            steps: None,
        }
    })
    .await
}

/// The state the execution entered last (the newest events of its history).
async fn current_state(sfn: &aws_sdk_sfn::Client, execution_arn: &str) -> Result<Option<String>> {
    let resp = sfn
        .get_execution_history()
        .execution_arn(execution_arn)
        .reverse_order(true)
        .max_results(25)
        .send()
        .await
        .map_err(|e| anyhow!(crate::aws::message(&e)))?;
    Ok(resp
        .events()
        .iter()
        .find_map(|e| e.state_entered_event_details().map(|d| d.name().to_string())))
}

/// The progress bar's message (the bar shows the time waited): the status and the state the
/// sweep is in.
pub fn progress_line(status: &str, state: Option<&str>) -> String {
    let mut line = status.to_string();
    if let Some(s) = state {
        line.push_str(&format!(", in {s}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sfn::types::ExecutionStatus;
    use aws_smithy_mocks::{mock, mock_client};

    const SM: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:fleet-install-Sweep";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T18:04:05Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn names_are_unique_within_a_second_and_valid() {
        let a = default_name(now(), &unique_suffix());
        let b = default_name(now(), &unique_suffix());
        assert_ne!(a, b, "two sweeps in the same second must not collide");
        assert!(a.starts_with("sweep-20261125T180405-"), "{a}");
        assert_eq!(a.chars().count(), "sweep-20261125T180405-".len() + 8);
        // its install executions (`<name>-c<n>`) are valid names too
        assert!(crate::args::execution_name(&format!("{a}-c999")).is_ok());
        assert_eq!(default_name(now(), "0000abcd"), "sweep-20261125T180405-0000abcd");
        assert_eq!(sweep_input(true), json!({"verifyAll": true}));
        assert_eq!(sweep_input(false), json!({"verifyAll": false}));
    }

    fn report_json() -> Value {
        json!({
            "running": 100,
            "found": {
                "running": 100,
                "byBucket": {"compliant": 88, "not_compliant": 10, "skipped": 1, "opted_out": 1},
                "byReason": {"NeverSeen": 6, "Failed": 3, "NoInstanceProfile": 1},
                "byPlatform": {"Ubuntu": {"compliant": 88, "not_compliant": 10}},
                "oldestNotCompliant": {"instanceId": "i-0000000000000000c", "reason": "NoInstanceProfile", "since": "2026-11-24T00:00:00Z"}
            },
            "ratioBefore": 0.8888888888888888,
            "ratioAfter": 0.9595959595959596,
            "compliantAfter": 95,
            "work": {"neverSeen": 6, "retry": 3, "reclassify": 1, "verify": 20},
            "sent": 30,
            "installed": 28,
            "verified": 19,
            "driftRepaired": 1,
            "driftUnrepaired": 0,
            "failed": 2,
            "installExecutions": 1,
            "failedExecutions": 0,
            "gone": 2
        })
    }

    fn described(status: ExecutionStatus, output: Option<Value>) -> DescribeExecutionOutput {
        let mut b = DescribeExecutionOutput::builder()
            .execution_arn(format!(
                "{}:sweep-20261125T180405-0000abcd",
                SM.replace(":stateMachine:", ":execution:")
            ))
            .state_machine_arn(SM)
            .name("sweep-20261125T180405-0000abcd")
            .status(status)
            .start_date(aws_smithy_types::DateTime::from_secs(now().timestamp()))
            .stop_date(aws_smithy_types::DateTime::from_secs(now().timestamp() + 95));
        if let Some(o) = output {
            b = b.output(o.to_string());
        }
        b.build().unwrap()
    }

    #[test]
    fn the_report_reads_what_was_found_sent_and_done() {
        let f = Finished::from_description(&described(ExecutionStatus::Succeeded, Some(report_json())));
        assert!(f.succeeded() && f.another_sweep_running.is_none());
        let r = f.report.as_ref().unwrap();
        assert_eq!((r.sent, r.installed, r.gone), (30, 28, 2));
        assert_eq!(r.found.by_reason["NeverSeen"], 6);
        let text = f.to_table();
        println!("{text}");
        assert!(text.contains("Status     SUCCEEDED\n"), "{text}");
        assert!(
            text.contains("Compliance            0.889 (88 of 99) before -> 0.960 (95 of 99) after\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "BUCKET         REASON             INSTANCES\n\
                 compliant                                88\n\
                 not_compliant                            10\n\
                 \x20              NeverSeen                  6\n\
                 \x20              Failed                     3\n\
                 \x20              NoInstanceProfile          1\n\
                 skipped                                   1\n\
                 opted_out                                 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "Sent to 1 install execution(s)\n\
                 WHY         INSTANCES\n\
                 never seen          6\n\
                 reclassify          1\n\
                 retry               3\n\
                 resume              0\n\
                 stale               0\n\
                 verify             20\n\
                 total              30\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\ninstalled                28  the agent installed"),
            "{text}"
        );
        assert!(text.contains("\nverified                 19  "), "{text}");
        assert!(text.contains("\ndrift repaired            1  "), "{text}");
        assert!(text.contains("\ndrift unrepaired          0  "), "{text}");
        assert!(text.contains("\nfailed                    2  "), "{text}");
        assert!(text.contains("\ngone                      2  "), "{text}");
        let json = serde_json::to_value(SweepOutcome::Finished(Box::new(f.clone()))).unwrap();
        assert_eq!(json["status"], "SUCCEEDED");
        assert_eq!(json["report"]["work"]["neverSeen"], 6);
        assert_eq!(json["report"]["driftRepaired"], 1);
        assert_eq!(json["report"]["found"]["byBucket"]["compliant"], 88);
        assert!(json.get("anotherSweepRunning").is_none());
        assert!(SweepOutcome::Finished(Box::new(f)).ok());
    }

    #[test]
    fn another_sweep_running_is_named() {
        let holder = format!(
            "{}:sweep-20261125T180000-12345678",
            SM.replace(":stateMachine:", ":execution:")
        );
        let f = Finished::from_description(&described(
            ExecutionStatus::Succeeded,
            Some(json!({"acquired": false, "holder": holder, "verifyAll": false})),
        ));
        let h = f.another_sweep_running.clone().unwrap();
        assert_eq!(h.name, "sweep-20261125T180000-12345678");
        assert_eq!(h.execution_arn, holder);
        assert!(f.report.is_none());
        let text = f.to_table();
        println!("{text}");
        assert!(
            text.contains("Another sweep  sweep-20261125T180000-12345678 was running (arn:aws:states:"),
            "{text}"
        );
        assert!(!text.contains("Sent to"));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["anotherSweepRunning"]["name"], "sweep-20261125T180000-12345678");
        // the sweep did what it should (leave the fleet to the other one): success
        assert!(SweepOutcome::Finished(Box::new(f)).ok());
        // an output that is not a report is said to be so, not shown as zeros
        let odd = Finished::from_description(&described(ExecutionStatus::Succeeded, Some(json!({"x": 1}))));
        assert!(odd.report.is_none() && odd.another_sweep_running.is_none());
        assert!(odd
            .to_table()
            .contains("Report: the execution's output has no sweep report\n"));
    }

    #[test]
    fn a_failed_sweep_is_a_reported_failure() {
        for status in [
            ExecutionStatus::Failed,
            ExecutionStatus::TimedOut,
            ExecutionStatus::Aborted,
        ] {
            let mut d = described(status.clone(), None);
            d.error = Some("FleetInstall.SweepFailed".into());
            d.cause = Some("{\"Error\":\"FleetInstall.AccessDenied\"}".into());
            let f = Finished::from_description(&d);
            assert!(!f.succeeded());
            let text = f.to_table();
            assert!(text.contains(&format!("Status     {}\n", status.as_str())), "{text}");
            assert!(text.contains("Error      FleetInstall.SweepFailed\n"), "{text}");
            assert!(!SweepOutcome::Finished(Box::new(f)).ok(), "{status:?}");
        }
    }

    #[tokio::test]
    async fn start_sends_the_name_and_verify_all() {
        use aws_sdk_sfn::operation::start_execution::StartExecutionOutput;
        let rule = mock!(aws_sdk_sfn::Client::start_execution)
            .match_requests(|r| {
                r.name() == Some("sweep-1")
                    && r.state_machine_arn() == Some(SM)
                    && r.input() == Some(r#"{"verifyAll":true}"#)
            })
            .then_output(|| {
                StartExecutionOutput::builder()
                    .execution_arn("arn:aws:states:us-east-1:123456789012:execution:fleet-install-Sweep:sweep-1")
                    .start_date(aws_smithy_types::DateTime::from_secs(0))
                    .build()
                    .unwrap()
            });
        let sfn = mock_client!(aws_sdk_sfn, [&rule]);
        let s = start(&sfn, SM, "sweep-1", true).await.unwrap();
        assert_eq!(rule.num_calls(), 1);
        let text = s.to_table();
        assert!(
            text.contains("Execution  arn:aws:states:us-east-1:123456789012:execution:fleet-install-Sweep:sweep-1\n")
        );
        assert!(text.contains("--verify-all"));
        assert!(SweepOutcome::Started(s).ok());
    }

    #[tokio::test]
    async fn a_refused_start_says_which_sweep() {
        use aws_sdk_sfn::operation::start_execution::StartExecutionError;
        use aws_sdk_sfn::types::error::ExecutionAlreadyExists;
        let rule = mock!(aws_sdk_sfn::Client::start_execution).then_error(|| {
            StartExecutionError::ExecutionAlreadyExists(
                ExecutionAlreadyExists::builder()
                    .message("Execution Already Exists")
                    .build(),
            )
        });
        let sfn = mock_client!(aws_sdk_sfn, [&rule]);
        let err = start(&sfn, SM, "sweep-1", false).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("cannot start sweep sweep-1 on arn:"), "{text}");
        assert!(
            text.contains("ExecutionAlreadyExists: Execution Already Exists"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn wait_polls_until_the_end() {
        let polls = mock!(aws_sdk_sfn::Client::describe_execution)
            .sequence()
            .output(|| described(ExecutionStatus::Running, None))
            .output(|| described(ExecutionStatus::Succeeded, Some(report_json())))
            .build();
        let sfn = mock_client!(aws_sdk_sfn, [&polls]);
        let d = wait_every(&sfn, "arn:x", Progress::disabled(), Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(polls.num_calls(), 2);
        assert_eq!(d.status(), &ExecutionStatus::Succeeded);
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress_line("RUNNING", Some("Install Chunks")),
            "RUNNING, in Install Chunks"
        );
        assert_eq!(progress_line("PENDING_REDRIVE", None), "PENDING_REDRIVE");
    }
}
