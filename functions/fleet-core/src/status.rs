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

/// The line the install documents print last on success (`FLEET_INSTALL_RESULT=...`).
pub const RESULT_LINE_PREFIX: &str = "FLEET_INSTALL_RESULT=";

/// What a successful install document run did, from its result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallResult {
    /// Already installed and running: nothing changed.
    Verified,
    /// Installed but stopped: started.
    Started,
    /// Not installed: installed now.
    Installed,
}

/// The result line in a command's output (the last one wins); None when there is none (an older
/// document, or output cut by SSM before it).
pub fn install_result(output: &str) -> Option<InstallResult> {
    output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(RESULT_LINE_PREFIX))
        .and_then(|v| match v.trim() {
            "verified" => Some(InstallResult::Verified),
            "started" => Some(InstallResult::Started),
            "installed" => Some(InstallResult::Installed),
            _ => None,
        })
}

/// A verification's outcome when the document succeeded: verified, or the drift it repaired (the
/// "already installed" path is short, so its result line is never cut: no line means the
/// document took a longer path, which is a repair).
pub fn verification(output: &str) -> (crate::model::ReasonCode, &'static str) {
    use crate::model::ReasonCode;
    match install_result(output) {
        Some(InstallResult::Verified) => (ReasonCode::Verified, "the agent is installed and running"),
        Some(InstallResult::Started) => (
            ReasonCode::DriftRepaired,
            "the agent's service was stopped: started it again",
        ),
        Some(InstallResult::Installed) => (ReasonCode::DriftRepaired, "the agent was gone: installed it again"),
        None => (
            ReasonCode::DriftRepaired,
            "the agent was not installed and running: the document put it back (no result line in the output)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines() {
        use crate::model::ReasonCode;
        assert_eq!(
            install_result("a\nFLEET_INSTALL_RESULT=verified\n"),
            Some(InstallResult::Verified)
        );
        assert_eq!(
            install_result("FLEET_INSTALL_RESULT=verified\nFLEET_INSTALL_RESULT=installed"),
            Some(InstallResult::Installed)
        );
        assert_eq!(
            install_result("  FLEET_INSTALL_RESULT=started\r\n"),
            Some(InstallResult::Started)
        );
        assert_eq!(install_result("FLEET_INSTALL_RESULT=maybe"), None);
        assert_eq!(install_result(""), None);
        assert_eq!(verification("FLEET_INSTALL_RESULT=verified").0, ReasonCode::Verified);
        assert_eq!(
            verification("FLEET_INSTALL_RESULT=started").0,
            ReasonCode::DriftRepaired
        );
        assert_eq!(verification("log lines, cut").0, ReasonCode::DriftRepaired);
    }
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

    fn inv(route: &str, status: &str, details: &str, code: i32) -> InvocationOutcome {
        invocation_outcome(route, status, details, Some(code))
    }

    #[test]
    fn install_exit_codes_decide_the_reason_and_the_retry() {
        let failed = |route: &str, code: i32| inv(route, "Failed", "Failed", code);
        for (code, reason, retryable) in [
            (2, ReasonCode::BadParameter, false),
            (3, ReasonCode::UnsupportedPlatform, false),
            (4, ReasonCode::DownloadFailed, true),
            (5, ReasonCode::ChecksumMismatch, false),
            (6, ReasonCode::InstallFailed, false),
            (7, ReasonCode::ServiceNotRunning, true),
        ] {
            for route in ["linux", "windows"] {
                assert_eq!(
                    failed(route, code),
                    Failed {
                        code: reason,
                        retryable
                    },
                    "{route} {code}"
                );
            }
        }
        for (code, reason, retryable) in [
            (8, ReasonCode::InstallerTimedOut, false),
            (9, ReasonCode::RebootStarted, true),
            (10, ReasonCode::RebootRequired, false),
        ] {
            assert_eq!(
                failed("windows", code),
                Failed {
                    code: reason,
                    retryable
                },
                "{code}"
            );
            // the Linux document never returns these: a generic, retried failure
            assert_eq!(
                failed("linux", code),
                Failed {
                    code: ReasonCode::CommandFailed,
                    retryable: true
                }
            );
        }
        // an unexpected code (1) stays a generic, retried failure
        assert_eq!(
            failed("windows", 1),
            Failed {
                code: ReasonCode::CommandFailed,
                retryable: true
            }
        );
        // SSM's own statuses come first, whatever the response code
        assert_eq!(inv("linux", "Success", "Success", 0), Succeeded);
        assert_eq!(inv("linux", "InProgress", "InProgress", 5), Running);
        assert_eq!(
            inv("linux", "TimedOut", "Execution Timed Out", 4),
            Failed {
                code: ReasonCode::ExecutionTimedOut,
                retryable: true
            }
        );
        assert_eq!(
            inv("linux", "Failed", "Undeliverable", 4),
            Failed {
                code: ReasonCode::Undeliverable,
                retryable: true
            }
        );
        assert_eq!(
            invocation_outcome("linux", "Failed", "Failed", None),
            Failed {
                code: ReasonCode::CommandFailed,
                retryable: true
            }
        );
    }

    #[test]
    fn a_failed_agent_update_ends_agent_too_old_and_only_delivery_is_retried() {
        assert_eq!(inv("agent-update", "Success", "Success", 0), Succeeded);
        assert_eq!(
            inv("agent-update", "Failed", "Failed", 1),
            Failed {
                code: ReasonCode::AgentTooOld,
                retryable: false
            }
        );
        // not our documents' codes: 5 is not a checksum mismatch here
        assert_eq!(
            inv("agent-update", "Failed", "Failed", 5),
            Failed {
                code: ReasonCode::AgentTooOld,
                retryable: false
            }
        );
        assert_eq!(
            inv("agent-update", "TimedOut", "Delivery Timed Out", -1),
            Failed {
                code: ReasonCode::AgentTooOld,
                retryable: true
            }
        );
        assert_eq!(
            inv("agent-update", "Failed", "Access Denied", -1),
            Failed {
                code: ReasonCode::AgentTooOld,
                retryable: false
            }
        );
        let r = agent_update_failed_reason(
            Some("3.3.1142.0"),
            Some("3.3.2746.0"),
            "Failed",
            "Failed",
            Some(1),
            1,
            "downloading agent\nfailed to download the updater\n",
        );
        assert!(
            r.starts_with("SSM Agent 3.3.1142.0 is older than 3.3.2746.0, which the install document needs"),
            "{r}"
        );
        assert!(
            r.contains("update it on the instance (AWS-UpdateSSMAgent failed: Failed, exit code 1 after 1 attempt: failed to download the updater)"),
            "{r}"
        );
    }

    #[test]
    fn exit_code_reasons_say_what_to_fix_and_why_not_retried() {
        let e = routing::exit_code("linux", 5).unwrap();
        let r = exit_code_reason(e, 1, Some("3.3.2746.0"), "x\nchecksum mismatch for agent.rpm\n");
        assert!(
            r.starts_with("the downloaded installer does not match its SHA-256 (exit code 5): "),
            "{r}"
        );
        assert!(r.contains("InstallerSha256"), "{r}");
        assert!(r.contains("not retried"), "{r}");
        assert!(r.ends_with("Output: checksum mismatch for agent.rpm"), "{r}");
        let r = exit_code_reason(routing::exit_code("linux", 2).unwrap(), 1, Some("3.3.2746.0"), "");
        assert!(
            r.contains("AWS-UpdateSSMAgent") && r.contains("SSM Agent 3.3.2746.0 or later"),
            "{r}"
        );
        let r = exit_code_reason(routing::exit_code("linux", 4).unwrap(), 3, None, "");
        assert!(r.contains("still failing after 3 attempts"), "{r}");
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
