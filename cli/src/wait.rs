//! `rollout --wait` and `sweep --wait`: follow a Step Functions execution until it ends, with a
//! progress line on a terminal, and say on stderr how an execution that did not succeed ended.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;

use crate::context::Progress;

/// How often `--wait` describes the execution.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Off a terminal (no progress line), say on stderr which execution `--wait` follows.
pub fn announce(progress: Progress, execution_arn: &str) {
    if !progress.enabled() {
        eprintln!("started {execution_arn}");
    }
}

/// Poll DescribeExecution every `interval` until the execution ends (neither RUNNING nor
/// PENDING_REDRIVE) and return its description. On a terminal, `line` (given the status and the
/// time waited so far) says where the execution is; it is not called otherwise.
pub async fn until_done<F, Fut>(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
    progress: Progress,
    interval: Duration,
    mut line: F,
) -> Result<DescribeExecutionOutput>
where
    F: FnMut(String, Duration) -> Fut,
    Fut: Future<Output = String>,
{
    let began = Instant::now();
    loop {
        let desc = sfn
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .with_context(|| format!("cannot describe execution {execution_arn}"))?;
        let status = desc.status().as_str();
        if status != "RUNNING" && status != "PENDING_REDRIVE" {
            progress.clear();
            return Ok(desc);
        }
        if progress.enabled() {
            progress.update(line(status.to_string(), began.elapsed()).await);
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
