//! `rollout`: start the rollout workflow for some tags; with --wait, follow it to the end and
//! show its status.

use anyhow::{anyhow, Context as _, Result};
use chrono::{DateTime, Utc};
use fleet_core::rollout::WaveSize;
use serde::Serialize;
use serde_json::{json, Value};

use crate::args::{
    describe_tags, execution_name, failure_ratio, group_tags, unique_name, unique_suffix, wave_size, TagFilter,
};
use crate::cli::RolloutArgs;
use crate::commands::status::{self, Ev, StatusReport};
use crate::context::{Context, Progress, Report};
use crate::start::{start_execution, Existing, StartOutcome};
use crate::table::key_values;
use crate::wait::Position;

pub use crate::wait::POLL_INTERVAL;

/// The rollout workflow's input (statemachine/rollout.asl.json, plan-rollout).
pub fn rollout_input(
    tags: &[TagFilter],
    canary: usize,
    size: WaveSize,
    max_failure_ratio: f64,
    pause_seconds: u32,
) -> Value {
    let (wave_size, wave_percent) = match size {
        WaveSize::Count(n) => (n, 0.0),
        WaveSize::Percent(p) => (0, p),
    };
    json!({
        "tags": tags,
        "canary": canary,
        "waveSize": wave_size,
        "wavePercent": wave_percent,
        "maxFailureRatio": max_failure_ratio,
        "pauseSeconds": pause_seconds,
    })
}

/// `rollout-<UTC yyyymmddThhmmss>-<8 random hex digits>` (suffix: [`unique_suffix`]): two rollouts
/// started within the same second never share a name. Its install executions are named
/// `<name>-w<wave>-c<chunk>`, well within 80 characters.
pub fn default_name(now: DateTime<Utc>, suffix: &str) -> String {
    unique_name("rollout", now, suffix)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub name: String,
    pub execution_arn: String,
    pub input: Value,
}

impl Report for Started {
    fn to_table(&self) -> String {
        let tags: Vec<TagFilter> = serde_json::from_value(self.input["tags"].clone()).unwrap_or_default();
        let waves = match (self.input["waveSize"].as_u64(), self.input["wavePercent"].as_f64()) {
            (Some(n), _) if n > 0 => format!("{n} instances"),
            (_, Some(p)) => format!("{p}% of the targets"),
            _ => String::new(),
        };
        key_values(&[
            ("Started", self.name.clone()),
            ("Execution", self.execution_arn.clone()),
            ("Tags", describe_tags(&tags)),
            (
                "Plan",
                format!(
                    "canary {}, then waves of {waves}; stop above failure ratio {}; pause {} s",
                    self.input["canary"], self.input["maxFailureRatio"], self.input["pauseSeconds"]
                ),
            ),
            ("Follow", format!("fleet-install status {}", self.name)),
        ])
    }
}

/// An execution of the rollout's name already existed: StartExecution would have returned it (a
/// running one with the same input) or refused the name; nothing was started.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotStarted {
    pub name: String,
    /// Always false: tells this answer from a start in JSON.
    pub started: bool,
    pub reason: String,
    /// The execution that had the name: its ARN, status and start.
    #[serde(flatten)]
    pub existing: Existing,
}

impl Report for NotStarted {
    fn to_table(&self) -> String {
        key_values(&[
            ("Not started", format!("{}: {}", self.name, self.reason)),
            ("Execution", self.existing.execution_arn.clone()),
            ("Follow", format!("fleet-install status {}", self.name)),
        ])
    }
}

/// What `rollout` prints: the start, or with --wait the final status, or that an execution of
/// that name already existed.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RolloutOutcome {
    Started(Started),
    NotStarted(NotStarted),
    Finished(Box<StatusReport>),
}

impl Report for RolloutOutcome {
    fn to_table(&self) -> String {
        match self {
            RolloutOutcome::Started(s) => s.to_table(),
            RolloutOutcome::NotStarted(n) => n.to_table(),
            RolloutOutcome::Finished(r) => r.to_table(),
        }
    }
}

impl RolloutOutcome {
    /// False when --wait saw the rollout end in anything but SUCCEEDED, or when nothing started.
    pub fn ok(&self) -> bool {
        match self {
            RolloutOutcome::Started(_) => true,
            RolloutOutcome::NotStarted(_) => false,
            RolloutOutcome::Finished(r) => r.succeeded(),
        }
    }
}

pub async fn run(ctx: &Context, args: &RolloutArgs) -> Result<RolloutOutcome> {
    let t = &args.targets;
    let size = wave_size(t.waves.wave_size, t.waves.wave_percent)?;
    let ratio = failure_ratio(args.max_failure_ratio)?;
    let name = execution_name(
        &args
            .name
            .clone()
            .unwrap_or_else(|| default_name(Utc::now(), &unique_suffix())),
    )?;
    let input = rollout_input(&group_tags(&t.tags), t.waves.canary, size, ratio, args.pause_seconds);
    let outputs = ctx.outputs().await?;
    let sfn = ctx.sfn();
    let started = match start(&sfn, outputs.rollout_state_machine()?, &name, input).await? {
        RolloutOutcome::Started(s) => s,
        other => return Ok(other),
    };
    if !args.wait {
        return Ok(RolloutOutcome::Started(started));
    }
    crate::wait::announce(ctx.progress, &started.execution_arn);
    let desc = wait(&sfn, &started.execution_arn, ctx.progress).await?;
    let report = status::report(&sfn, &ctx.dynamodb(), &outputs, &desc).await?;
    if !report.succeeded() {
        crate::wait::report_failure(
            "rollout",
            &report.name,
            &report.status,
            report.cause.as_deref(),
            report.error.as_deref(),
        );
    }
    Ok(RolloutOutcome::Finished(Box::new(report)))
}

/// Start the rollout: [`RolloutOutcome::Started`], or [`RolloutOutcome::NotStarted`] when an
/// execution of that name already existed (never reported as started).
pub async fn start(
    sfn: &aws_sdk_sfn::Client,
    state_machine_arn: &str,
    name: &str,
    input: Value,
) -> Result<RolloutOutcome> {
    let outcome = start_execution(sfn, state_machine_arn, name, &input.to_string())
        .await
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("cannot start rollout {name} on {state_machine_arn}"))?;
    Ok(match outcome {
        StartOutcome::Started { execution_arn } => RolloutOutcome::Started(Started {
            name: name.to_string(),
            execution_arn,
            input,
        }),
        StartOutcome::Existing(existing) => RolloutOutcome::NotStarted(NotStarted {
            name: name.to_string(),
            started: false,
            reason: existing.describe(),
            existing,
        }),
    })
}

/// Poll DescribeExecution every 2 s until the execution ends; on a terminal, a progress bar of
/// the waves evaluated of the waves planned, with the time waited and the last wave's counts.
pub async fn wait(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
    progress: Progress,
) -> Result<aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput> {
    crate::wait::until_done(
        sfn,
        execution_arn,
        "rollout",
        progress,
        POLL_INTERVAL,
        |run_status| async move {
            match status::history(sfn, execution_arn).await {
                Ok(events) => {
                    let events: Vec<Ev> = events.iter().map(Ev::from).collect();
                    position(&run_status, &status::rollout_progress(&events))
                }
                Err(e) => Position {
                    message: format!("{run_status} ({e:#})"),
                    steps: None,
                },
            }
        },
    )
    .await
}

/// Where the rollout is: the waves evaluated of the waves planned (once planned), and a message.
pub fn position(status: &str, p: &status::RolloutProgress) -> Position {
    Position {
        message: progress_line(status, p),
        steps: p.waves_planned.map(|n| (p.waves.len() as u64, n)),
    }
}

/// The progress bar's message (the bar shows the time waited): the status, the targets, the
/// waves evaluated and the last wave's counts.
pub fn progress_line(status: &str, p: &status::RolloutProgress) -> String {
    let mut line = status.to_string();
    if let Some(t) = p.targets {
        line.push_str(&format!(", {t} targets"));
    }
    let planned = p.waves_planned.map(|n| format!("/{n}")).unwrap_or_default();
    line.push_str(&format!(", {}{planned} waves evaluated", p.waves.len()));
    if let Some(w) = p.waves.last() {
        line.push_str(&format!(
            "; {}: {} installed, {} failed, ratio {:.3}",
            w.label, w.installed, w.failed, w.failure_ratio
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::TagPair;
    use aws_sdk_sfn::operation::start_execution::StartExecutionOutput;
    use aws_smithy_mocks::{mock, mock_client};

    #[test]
    fn input_groups_tags_and_zeroes_the_unused_size() {
        let tags = group_tags(&[
            TagPair {
                key: "env".into(),
                value: "prod".into(),
            },
            TagPair {
                key: "env".into(),
                value: "staging".into(),
            },
            TagPair {
                key: "team".into(),
                value: "web".into(),
            },
        ]);
        assert_eq!(
            rollout_input(&tags, 10, WaveSize::Percent(10.0), 0.05, 300),
            json!({"tags": [{"key": "env", "values": ["prod", "staging"]}, {"key": "team", "values": ["web"]}],
                   "canary": 10, "waveSize": 0, "wavePercent": 10.0, "maxFailureRatio": 0.05, "pauseSeconds": 300})
        );
        let v = rollout_input(&tags, 0, WaveSize::Count(50), 0.0, 0);
        assert_eq!(
            (v["waveSize"].as_u64(), v["wavePercent"].as_f64()),
            (Some(50), Some(0.0))
        );
        let t = DateTime::parse_from_rfc3339("2026-11-25T18:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(default_name(t, "0000abcd"), "rollout-20261125T180000-0000abcd");
    }

    #[tokio::test]
    async fn start_sends_name_and_input() {
        let rule = mock!(aws_sdk_sfn::Client::start_execution)
            .match_requests(|r| {
                r.name() == Some("rollout-1")
                    && r.state_machine_arn() == Some("arn:aws:states:r:1:stateMachine:Rollout")
                    && r.input().is_some_and(|i| i.contains("\"canary\":2"))
            })
            .then_output(|| {
                StartExecutionOutput::builder()
                    .execution_arn("arn:aws:states:r:1:execution:Rollout:rollout-1")
                    .start_date(aws_smithy_types::DateTime::from_secs(0))
                    .build()
                    .unwrap()
            });
        let sfn = mock_client!(aws_sdk_sfn, [&crate::start::tests::not_there(), &rule]);
        let input = rollout_input(&[], 2, WaveSize::Count(5), 0.1, 60);
        let RolloutOutcome::Started(s) = start(&sfn, "arn:aws:states:r:1:stateMachine:Rollout", "rollout-1", input)
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(s.execution_arn, "arn:aws:states:r:1:execution:Rollout:rollout-1");
        let text = s.to_table();
        println!("{text}");
        assert!(
            text.contains("Plan       canary 2, then waves of 5 instances; stop above failure ratio 0.1; pause 60 s")
        );
        assert!(RolloutOutcome::Started(s).ok());
    }

    #[test]
    fn default_names_differ_within_a_second() {
        let t = DateTime::parse_from_rfc3339("2026-11-25T18:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (a, b) = (default_name(t, &unique_suffix()), default_name(t, &unique_suffix()));
        assert_ne!(a, b, "two rollouts in the same second must not share a name");
        assert!(a.starts_with("rollout-20261125T180000-"), "{a}");
        assert_eq!(a.chars().count(), "rollout-20261125T180000-".len() + 8);
        // its install executions' names (`<name>-w<wave>-c<chunk>`) stay within 80 characters
        assert!(execution_name(&format!("{a}-w9999-c9999")).is_ok());
    }

    #[tokio::test]
    async fn a_running_rollout_of_that_name_is_not_reported_started() {
        // `rollout --name r` twice with the same arguments: StartExecution would return the running
        // execution as though it had started it.
        const ARN: &str = "arn:aws:states:r:1:execution:Rollout:rollout-1";
        let running = crate::start::tests::running(ARN, 1_700_000_000);
        let rule = crate::start::tests::started(ARN, 1_700_000_000);
        let sfn = mock_client!(aws_sdk_sfn, aws_smithy_mocks::RuleMode::MatchAny, [&running, &rule]);
        let input = rollout_input(&[], 2, WaveSize::Count(5), 0.1, 60);
        let o = start(&sfn, "arn:aws:states:r:1:stateMachine:Rollout", "rollout-1", input)
            .await
            .unwrap();
        assert_eq!(rule.num_calls(), 0);
        assert!(!o.ok(), "nothing started: a reported failure");
        let text = o.to_table();
        println!("{text}");
        assert!(!text.contains("Started"), "{text}");
        assert!(
            text.contains("Not started  rollout-1: an execution of this name already exists (RUNNING since 2023-11-14T22:13:20Z); nothing was started\n"),
            "{text}"
        );
        assert!(text.contains(&format!("Execution    {ARN}\n")), "{text}");
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["started"], false);
        assert_eq!(json["executionArn"], ARN);
        assert_eq!(json["status"], "RUNNING");
    }

    #[test]
    fn progress_lines() {
        let p = status::RolloutProgress {
            targets: Some(118),
            waves_planned: Some(11),
            waves: vec![fleet_core::rollout::WaveResult {
                wave: 0,
                label: "canary".into(),
                instances: 10,
                installed: 10,
                ..Default::default()
            }],
        };
        assert_eq!(
            progress_line("RUNNING", &p),
            "RUNNING, 118 targets, 1/11 waves evaluated; canary: 10 installed, 0 failed, ratio 0.000"
        );
        assert_eq!(position("RUNNING", &p).steps, Some((1, 11)));
        let unplanned = status::RolloutProgress::default();
        assert_eq!(
            position("RUNNING", &unplanned),
            Position {
                message: "RUNNING, 0 waves evaluated".into(),
                steps: None
            }
        );
    }
}
