//! check-status's logic: what a command invocation's status means for the instance, and which
//! failures are worth another attempt.

use crate::model::ReasonCode;
use crate::routing::{self, ExitCode};

/// Where one instance's invocation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationOutcome {
    /// Not finished yet (Pending, InProgress, Delayed, Cancelling, or not listed yet).
    Running,
    Succeeded,
    /// Finished without success. `retryable` failures are re-sent while attempts remain.
    Failed {
        code: ReasonCode,
        retryable: bool,
    },
}

/// Interpret SSM's Status and StatusDetails of one command invocation.
pub fn outcome(status: &str, status_details: &str) -> InvocationOutcome {
    use InvocationOutcome::*;
    match status {
        "Success" => Succeeded,
        "Pending" | "InProgress" | "Delayed" | "Cancelling" => Running,
        "Cancelled" => Failed {
            code: ReasonCode::Cancelled,
            retryable: false,
        },
        "TimedOut" => match status_details {
            "DeliveryTimedOut" | "Delivery Timed Out" => Failed {
                code: ReasonCode::DeliveryTimedOut,
                retryable: true,
            },
            _ => Failed {
                code: ReasonCode::ExecutionTimedOut,
                retryable: true,
            },
        },
        "Failed" => match status_details {
            "Undeliverable" => Failed {
                code: ReasonCode::Undeliverable,
                retryable: true,
            },
            "AccessDenied" | "Access Denied" => Failed {
                code: ReasonCode::AccessDenied,
                retryable: false,
            },
            "InvalidPlatform" | "Invalid Platform" => Failed {
                code: ReasonCode::CommandFailed,
                retryable: false,
            },
            _ => Failed {
                code: ReasonCode::CommandFailed,
                retryable: true,
            },
        },
        // Statuses SSM documents but rarely shows for invocations.
        "Undeliverable" => Failed {
            code: ReasonCode::Undeliverable,
            retryable: true,
        },
        "Terminated" => Failed {
            code: ReasonCode::Cancelled,
            retryable: false,
        },
        _ => Running,
    }
}

/// The outcome of one invocation of a batch's command: SSM's status first; then, when the script ran
/// and exited non-zero, what the install document's exit code means (routing::EXIT_CODES: its own
/// reason code, retried only when it can clear on its own). Any failure of an agent update ends as
/// AgentTooOld (retried only when SSM could not deliver or finish it).
pub fn invocation_outcome(
    route: &str,
    status: &str,
    status_details: &str,
    response_code: Option<i32>,
) -> InvocationOutcome {
    use InvocationOutcome::*;
    let base = outcome(status, status_details);
    let update = route == routing::AGENT_UPDATE_ROUTE;
    match base {
        // The script ran and exited non-zero (the only retryable CommandFailed).
        Failed {
            code: ReasonCode::CommandFailed,
            retryable: true,
        } => {
            if update {
                return Failed {
                    code: ReasonCode::AgentTooOld,
                    retryable: false,
                };
            }
            match response_code.and_then(|c| routing::exit_code(route, c)) {
                Some(e) => Failed {
                    code: e.reason_code,
                    retryable: e.retry,
                },
                None => base,
            }
        }
        Failed { retryable, .. } if update => Failed {
            code: ReasonCode::AgentTooOld,
            retryable,
        },
        other => other,
    }
}

fn attempts_text(attempts: u32) -> String {
    format!("{attempts} attempt{}", if attempts == 1 { "" } else { "s" })
}

fn last_line(output: &str) -> String {
    output.trim().lines().last().unwrap_or("").chars().take(200).collect()
}

/// The reason for an install that ended with one of its document's exit codes: what happened, what
/// to do, and why it was (not) retried.
pub fn exit_code_reason(e: &ExitCode, attempts: u32, min_agent_version: Option<&str>, output_hint: &str) -> String {
    let mut s = format!("{} (exit code {}): {}", e.meaning, e.code, e.fix);
    if e.reason_code == ReasonCode::BadParameter {
        if let Some(min) = min_agent_version {
            s.push_str(&format!(" (the document needs SSM Agent {min} or later)"));
        }
    }
    if e.retry {
        s.push_str(&format!("; still failing after {}", attempts_text(attempts)));
    } else {
        s.push_str(&format!(
            "; not retried, a resend fails the same way (attempt {attempts})"
        ));
    }
    let hint = last_line(output_hint);
    if !hint.is_empty() {
        s.push_str(&format!(". Output: {hint}"));
    }
    s
}

/// The reason for an instance whose SSM Agent update failed: the agent is still too old for the install.
pub fn agent_update_failed_reason(
    agent_version: Option<&str>,
    min_agent_version: Option<&str>,
    status: &str,
    status_details: &str,
    response_code: Option<i32>,
    attempts: u32,
    output_hint: &str,
) -> String {
    let failure = failure_reason(status, status_details, response_code, attempts, output_hint);
    format!(
        "{}: update it on the instance (AWS-UpdateSSMAgent failed: {failure}) and run the install again",
        crate::agent::too_old(
            agent_version.unwrap_or(""),
            min_agent_version.unwrap_or(routing::ENV_VAR_MIN_AGENT_VERSION)
        )
    )
}

/// A person-readable reason for a final failure.
pub fn failure_reason(
    status: &str,
    status_details: &str,
    response_code: Option<i32>,
    attempts: u32,
    output_hint: &str,
) -> String {
    let mut s = status.to_string();
    if !status_details.is_empty() && status_details != status {
        s.push_str(&format!(" ({status_details})"));
    }
    if let Some(code) = response_code.filter(|c| *c >= 0) {
        s.push_str(&format!(", exit code {code}"));
    }
    s.push_str(&format!(" after {}", attempts_text(attempts)));
    let hint = last_line(output_hint);
    if !hint.is_empty() {
        s.push_str(&format!(": {hint}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use InvocationOutcome::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome("Success", "Success"), Succeeded);
        for s in ["Pending", "InProgress", "Delayed", "Cancelling"] {
            assert_eq!(outcome(s, ""), Running, "{s}");
        }
        assert_eq!(
            outcome("Failed", "Failed"),
            Failed {
                code: ReasonCode::CommandFailed,
                retryable: true
            }
        );
        assert_eq!(
            outcome("Failed", "Undeliverable"),
            Failed {
                code: ReasonCode::Undeliverable,
                retryable: true
            }
        );
        assert_eq!(
            outcome("Failed", "Access Denied"),
            Failed {
                code: ReasonCode::AccessDenied,
                retryable: false
            }
        );
        assert_eq!(
            outcome("TimedOut", "Delivery Timed Out"),
            Failed {
                code: ReasonCode::DeliveryTimedOut,
                retryable: true
            }
        );
        assert_eq!(
            outcome("TimedOut", "Execution Timed Out"),
            Failed {
                code: ReasonCode::ExecutionTimedOut,
                retryable: true
            }
        );
        assert_eq!(
            outcome("Cancelled", "Cancelled"),
            Failed {
                code: ReasonCode::Cancelled,
                retryable: false
            }
        );
    }

    #[test]
    fn failure_reason_reads_well() {
        let r = failure_reason(
            "Failed",
            "Failed",
            Some(4),
            3,
            "downloading\nchecksum mismatch for agent.rpm\n",
        );
        assert_eq!(
            r,
            "Failed, exit code 4 after 3 attempts: checksum mismatch for agent.rpm"
        );
        let r = failure_reason("TimedOut", "Delivery Timed Out", Some(-1), 1, "");
        assert_eq!(r, "TimedOut (Delivery Timed Out) after 1 attempt");
    }
}
