//! check-status's logic: what a command invocation's status means for the instance, and which
//! failures are worth another attempt.

use crate::model::ReasonCode;

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
    s.push_str(&format!(
        " after {attempts} attempt{}",
        if attempts == 1 { "" } else { "s" }
    ));
    let hint = output_hint.trim();
    if !hint.is_empty() {
        let short: String = hint.lines().last().unwrap_or("").chars().take(200).collect();
        s.push_str(&format!(": {short}"));
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
