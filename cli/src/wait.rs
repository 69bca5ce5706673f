//! `rollout --wait` and `sweep --wait`: follow a Step Functions execution until it ends, with a
//! progress bar on a terminal (crate::progress), and say on stderr how an execution that did not
//! succeed ended.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;

use crate::context::Progress;
use crate::progress::WaitProgress;

/// How often `--wait` describes the execution.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Where a running execution is, for the progress bar.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// What it is doing, after the bar.
    pub message: String,
    /// Steps done and steps in all (waves evaluated of the waves planned), once the total is known.
    pub steps: Option<(u64, u64)>,
}

/// Off a terminal (no progress bar), say on stderr which execution `--wait` follows.
pub fn announce(progress: Progress, execution_arn: &str) {
    if !progress.enabled() {
        eprintln!("started {execution_arn}");
    }
}

/// Poll DescribeExecution every `interval` until the execution ends (neither RUNNING nor
/// PENDING_REDRIVE) and return its description. On a terminal (`progress` enabled) a progress
/// bar labelled `label` shows the time waited and `position` (given the status) after each poll,
/// and at the end the status the execution ended in; off a terminal `position` is not called.
pub async fn until_done<F, Fut>(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
    label: &str,
    progress: Progress,
    interval: Duration,
    mut position: F,
) -> Result<DescribeExecutionOutput>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Position>,
{
    let bar = if progress.enabled() {
        WaitProgress::new(label)
    } else {
        WaitProgress::hidden()
    };
    loop {
        // an error drops the bar, which clears it
        let desc = sfn
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .with_context(|| format!("cannot describe execution {execution_arn}"))?;
        let status = desc.status().as_str();
        if status != "RUNNING" && status != "PENDING_REDRIVE" {
            bar.finish(status);
            return Ok(desc);
        }
        if bar.is_shown() {
            let Position { message, steps } = position(status.to_string()).await;
            let done = match steps {
                Some((done, total)) => {
                    bar.set_total(total);
                    done
                }
                None => 0,
            };
            bar.update(done, &message);
        }
        tokio::time::sleep(interval).await;
    }
}

/// How `--wait` reports an execution that did not succeed: `<what> <name> <status>: <cause>`,
/// the error when there is no cause.
pub fn failure_message(what: &str, name: &str, status: &str, cause: Option<&str>, error: Option<&str>) -> String {
    format!(
        "{what} {name} {status}: {}",
        cause.or(error).unwrap_or("no cause recorded")
    )
}

/// Print [`failure_message`] on stderr.
pub fn report_failure(what: &str, name: &str, status: &str, cause: Option<&str>, error: Option<&str>) {
    eprintln!("{}", failure_message(what, name, status, cause, error));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_messages_prefer_the_cause() {
        assert_eq!(
            failure_message("sweep", "sweep-1", "FAILED", Some("{\"Error\":\"X\"}"), Some("E")),
            "sweep sweep-1 FAILED: {\"Error\":\"X\"}"
        );
        assert_eq!(
            failure_message("rollout", "r", "TIMED_OUT", None, Some("States.Timeout")),
            "rollout r TIMED_OUT: States.Timeout"
        );
        assert_eq!(
            failure_message("rollout", "r", "ABORTED", None, None),
            "rollout r ABORTED: no cause recorded"
        );
    }
}
