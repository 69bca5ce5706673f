//! Starting an execution, and knowing whether this call started it.
//!
//! StartExecution with the name of an execution that is still running and the same input does not
//! fail: it returns the running execution (Step Functions makes the call idempotent), so a caller
//! that took its answer as "started" would report a start that never happened. So the name is
//! looked up first (DescribeExecution): an execution of that name that exists is reported as
//! such, and nothing is started. If the lookup cannot be made (no permission, say), the answer's
//! startDate tells: an execution that began well before the call is not this call's.

use aws_sdk_sfn::operation::describe_execution::DescribeExecutionError;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// How much older than the call a returned execution must be to be taken for an earlier one when
/// the name could not be looked up first (leaves room for the local clock to be off).
pub const CLOCK_SLACK_SECONDS: i64 = 60;

/// An execution that had this name before the call: nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Existing {
    pub execution_arn: String,
    /// RUNNING, SUCCEEDED, ...
    pub status: String,
    /// RFC 3339, seconds.
    pub started_at: String,
}

impl Existing {
    /// `an execution of this name already exists (RUNNING since 2026-11-25T18:00:00Z); nothing was started`
    pub fn describe(&self) -> String {
        format!(
            "an execution of this name already exists ({} since {}); nothing was started",
            self.status, self.started_at
        )
    }
}

/// What a start call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// This call started the execution.
    Started { execution_arn: String },
    /// An execution of that name already existed; this call started nothing.
    Existing(Existing),
}

/// Start `name` on the state machine with `input`, unless an execution of that name exists.
/// Errors are the service's message ("ExecutionAlreadyExists: ...", when one of that name ended
/// or has another input, or appeared between the lookup and the start).
pub async fn start_execution(
    sfn: &aws_sdk_sfn::Client,
    state_machine_arn: &str,
    name: &str,
    input: &str,
) -> Result<StartOutcome, String> {
    let called_at = Utc::now();
    let mut looked_up = false;
    if let Ok(arn) = crate::commands::status::execution_arn(state_machine_arn, name) {
        match sfn.describe_execution().execution_arn(&arn).send().await {
            Ok(d) => {
                return Ok(StartOutcome::Existing(Existing {
                    execution_arn: d.execution_arn().to_string(),
                    status: d.status().as_str().to_string(),
                    started_at: crate::aws::rfc3339(d.start_date()),
                }))
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DescribeExecutionError::ExecutionDoesNotExist(_))
                ) =>
            {
                looked_up = true
            }
            // Cannot tell beforehand: the answer's startDate will.
            Err(_) => {}
        }
    }
    let resp = sfn
        .start_execution()
        .state_machine_arn(state_machine_arn)
        .name(name)
        .input(input)
        .send()
        .await
        .map_err(|e| crate::aws::message(&e))?;
    let execution_arn = resp.execution_arn().to_string();
    let began = crate::aws::to_utc(resp.start_date());
    if !looked_up && began.is_some_and(|b| began_before(b, called_at)) {
        // Only a running execution is returned this way.
        return Ok(StartOutcome::Existing(Existing {
            execution_arn,
            status: "RUNNING".into(),
            started_at: crate::aws::rfc3339(resp.start_date()),
        }));
    }
    Ok(StartOutcome::Started { execution_arn })
}

/// Whether an execution that began at `began` is older than a call made at `called_at`, beyond
/// what a local clock that is off could explain.
pub fn began_before(began: DateTime<Utc>, called_at: DateTime<Utc>) -> bool {
    began < called_at - Duration::seconds(CLOCK_SLACK_SECONDS)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;
    use aws_sdk_sfn::operation::start_execution::StartExecutionOutput;
    use aws_sdk_sfn::types::error::ExecutionDoesNotExist;
    use aws_sdk_sfn::types::ExecutionStatus;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    pub const SM: &str = "arn:aws:states:r:1:stateMachine:Install";

    /// DescribeExecution of a name that does not exist yet.
    pub fn not_there() -> Rule {
        mock!(aws_sdk_sfn::Client::describe_execution).then_error(|| {
            DescribeExecutionError::ExecutionDoesNotExist(
                ExecutionDoesNotExist::builder()
                    .message("Execution Does Not Exist")
                    .build(),
            )
        })
    }

    /// DescribeExecution of `arn`: running since `started`.
    pub fn running(arn: &'static str, started: i64) -> Rule {
        mock!(aws_sdk_sfn::Client::describe_execution)
            .match_requests(move |r| r.execution_arn() == Some(arn))
            .then_output(move || {
                DescribeExecutionOutput::builder()
                    .execution_arn(arn)
                    .state_machine_arn(SM)
                    .name(arn.rsplit(':').next().unwrap())
                    .status(ExecutionStatus::Running)
                    .start_date(aws_smithy_types::DateTime::from_secs(started))
                    .build()
                    .unwrap()
            })
    }

    /// StartExecution answering `arn`, started at `started`.
    pub fn started(arn: &'static str, started: i64) -> Rule {
        mock!(aws_sdk_sfn::Client::start_execution).then_output(move || {
            StartExecutionOutput::builder()
                .execution_arn(arn)
                .start_date(aws_smithy_types::DateTime::from_secs(started))
                .build()
                .unwrap()
        })
    }

    fn now() -> i64 {
        Utc::now().timestamp()
    }

    #[tokio::test]
    async fn a_new_name_is_started() {
        let (d, s) = (not_there(), started("arn:aws:states:r:1:execution:Install:a", now()));
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&d, &s]);
        let o = start_execution(&sfn, SM, "a", "{}").await.unwrap();
        assert_eq!(
            o,
            StartOutcome::Started {
                execution_arn: "arn:aws:states:r:1:execution:Install:a".into()
            }
        );
        assert_eq!((d.num_calls(), s.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn a_running_execution_of_that_name_is_not_reported_started() {
        // StartExecution would return it (same name, same input): it is never called.
        let d = running("arn:aws:states:r:1:execution:Install:a", 1_700_000_000);
        let s = started("arn:aws:states:r:1:execution:Install:a", 1_700_000_000);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&d, &s]);
        let o = start_execution(&sfn, SM, "a", "{}").await.unwrap();
        let StartOutcome::Existing(e) = o else { panic!("{o:?}") };
        assert_eq!(e.execution_arn, "arn:aws:states:r:1:execution:Install:a");
        assert_eq!(e.status, "RUNNING");
        assert_eq!(
            e.describe(),
            "an execution of this name already exists (RUNNING since 2023-11-14T22:13:20Z); nothing was started"
        );
        assert_eq!(s.num_calls(), 0);
    }

    #[tokio::test]
    async fn without_the_lookup_an_old_start_date_tells() {
        use aws_sdk_sfn::types::error::InvalidArn;
        let denied = mock!(aws_sdk_sfn::Client::describe_execution)
            .then_error(|| DescribeExecutionError::InvalidArn(InvalidArn::builder().message("no").build()));
        let old = started("arn:aws:states:r:1:execution:Install:a", now() - 3600);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&denied, &old]);
        let o = start_execution(&sfn, SM, "a", "{}").await.unwrap();
        assert!(
            matches!(o, StartOutcome::Existing(ref e) if e.status == "RUNNING"),
            "{o:?}"
        );
        // a fresh one is this call's, even with the local clock a little off
        let denied = mock!(aws_sdk_sfn::Client::describe_execution)
            .then_error(|| DescribeExecutionError::InvalidArn(InvalidArn::builder().message("no").build()));
        let fresh = started("arn:aws:states:r:1:execution:Install:b", now() - 20);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&denied, &fresh]);
        let o = start_execution(&sfn, SM, "b", "{}").await.unwrap();
        assert!(matches!(o, StartOutcome::Started { .. }), "{o:?}");
    }

    #[tokio::test]
    async fn a_refused_start_is_the_services_message() {
        use aws_sdk_sfn::operation::start_execution::StartExecutionError;
        use aws_sdk_sfn::types::error::ExecutionAlreadyExists;
        let d = not_there();
        let s = mock!(aws_sdk_sfn::Client::start_execution).then_error(|| {
            StartExecutionError::ExecutionAlreadyExists(
                ExecutionAlreadyExists::builder()
                    .message("Execution Already Exists")
                    .build(),
            )
        });
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&d, &s]);
        let e = start_execution(&sfn, SM, "a", "{}").await.unwrap_err();
        assert_eq!(e, "ExecutionAlreadyExists: Execution Already Exists");
    }
}
