//! Event-driven completion of the install workflow's commands.
//!
//! "Wait For Commands" is a `.waitForTaskToken` task: the await-commands function records the
//! execution's task token in the ledger under one *wait* item (`wait#<hash of the token>`), with the
//! set of command ids still outstanding, and one *pointer* per command (`command#<command id>`) to
//! that wait. SSM's "EC2 Command Status-change Notification" for a terminal status reaches the same
//! function through an EventBridge rule: it follows the pointer, reads the command's invocations
//! (all final, or the event is early), removes the command from the wait's set with a conditional
//! update (a duplicate event finds it gone), and the update that empties the set resumes the
//! execution with SendTaskSuccess. Tokens never travel in the command's 100-character comment.
//!
//! SSM delivers these events on a best-effort basis. The wait's TimeoutSeconds is derived from the
//! commands' own timeouts (delivery + execution + grace, added up by the workflow's Load Settings);
//! when it passes, the workflow checks the commands' status itself (Check Command Status), so a lost
//! event costs time, never an instance.
//!
//! This module is the pure part (keys, statuses, the event's shape, the bound); the function holds
//! the calls.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::FleetError;

/// Key prefix of a wait item: one per `.waitForTaskToken` wait of an execution.
pub const WAIT_PREFIX: &str = "wait#";
/// Key prefix of a command's pointer to the wait that holds it.
pub const COMMAND_PREFIX: &str = "command#";
/// The wait item's set of command ids not finished yet (a String Set; DynamoDB removes an empty
/// set, so a closed wait has none).
pub const OUTSTANDING: &str = "outstanding";
/// The wait item's task token.
pub const TASK_TOKEN: &str = "taskToken";
/// The pointer's wait key.
pub const WAIT_KEY: &str = "waitKey";
/// Set on the wait item once SendTaskSuccess was accepted (or the token was found closed).
pub const RESUMED_AT: &str = "resumedAt";
/// What resumed it: `event`, `registration` (the commands had finished before the wait began).
pub const RESUMED_BY: &str = "resumedBy";
/// Pointer attributes written when the command is sent: the command as sent (JSON) and the attempts
/// the workflow allows, so that its completion event can write its outcomes before any wait exists.
pub const SENT: &str = "sent";
pub const MAX_ATTEMPTS: &str = "maxAttempts";

/// The fields of a command's pointer (`command#<id>`) that let its event write its outcomes: the
/// command as sent, the execution that sent it and the attempts allowed. Not an instance: no state.
pub fn pointer_fields(
    cmd: &crate::model::SentCommand,
    exec: &crate::model::Execution,
    max_attempts: u32,
) -> Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)> {
    use crate::ledger::{n, s};
    use crate::record::attr;
    vec![
        (attr::KIND, s("commandWait")),
        (attr::EXECUTION_ARN, s(&exec.execution_id)),
        (attr::EXECUTION_STARTED_AT, s(&exec.execution_start_time)),
        (SENT, s(serde_json::to_string(cmd).unwrap_or_default())),
        (MAX_ATTEMPTS, n(max_attempts)),
        crate::ledger::ttl_field(),
    ]
}

/// The command, execution and attempts a pointer keeps (None for a pointer written without them).
pub fn pointer_command(
    pointer: &crate::ledger::Item,
) -> Option<(crate::model::SentCommand, crate::model::Execution, u32)> {
    use crate::ledger::get_s;
    use crate::record::attr;
    let cmd = serde_json::from_str(get_s(pointer, SENT)?).ok()?;
    let max = pointer.get(MAX_ATTEMPTS)?.as_n().ok()?.parse().ok()?;
    let exec = crate::model::Execution {
        execution_id: get_s(pointer, attr::EXECUTION_ARN)?.to_string(),
        execution_start_time: get_s(pointer, attr::EXECUTION_STARTED_AT)?.to_string(),
    };
    Some((cmd, exec, max))
}

/// The EventBridge detail type of a command's status change (one per command).
pub const COMMAND_STATUS_CHANGE: &str = "EC2 Command Status-change Notification";
/// The detail type of one invocation's status change (one per instance): not used to resume.
pub const INVOCATION_STATUS_CHANGE: &str = "EC2 Command Invocation Status-change Notification";

/// A command's final statuses. SSM's API says `Cancelled`; its EventBridge reference lists `Canceled`
/// for the events: both are final, whichever word an event carries.
pub const TERMINAL_STATUSES: &[&str] = &["Success", "Failed", "TimedOut", "Cancelled", "Canceled"];

/// The key of the wait that `task_token` resumes: a hash, so that the token itself appears only
/// inside the item (and keys stay short: a token is up to 2,048 characters).
pub fn wait_key(task_token: &str) -> String {
    let digest = Sha256::digest(task_token.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{WAIT_PREFIX}{hex}")
}

/// The key of a command's pointer to its wait.
pub fn command_key(command_id: &str) -> String {
    format!("{COMMAND_PREFIX}{command_id}")
}

pub fn is_terminal(status: &str) -> bool {
    TERMINAL_STATUSES.contains(&status)
}

/// True when an invocation status is still running, by check-status's own reading of SSM's
/// statuses ([`crate::status::outcome`]: Pending, InProgress, Delayed, Cancelling, and anything
/// not listed yet or unknown).
pub fn is_running(status: &str) -> bool {
    crate::status::outcome(status, "") == crate::status::InvocationOutcome::Running
}

/// True when every invocation listed is final. An empty list (SSM has not listed them yet) is not.
pub fn all_final<'a>(statuses: impl IntoIterator<Item = &'a str>) -> bool {
    let mut any = false;
    for s in statuses {
        any = true;
        if is_running(s) {
            return false;
        }
    }
    any
}

/// An SSM Run Command event, as EventBridge delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEvent {
    pub detail_type: String,
    pub command_id: String,
    pub status: String,
    pub document_name: String,
    /// Only on invocation events.
    pub instance_id: Option<String>,
}

impl CommandEvent {
    /// True for the one kind of event that can end a wait: a command reaching a final status.
    pub fn ends_command(&self) -> bool {
        self.detail_type == COMMAND_STATUS_CHANGE && is_terminal(&self.status)
    }
}

#[derive(Deserialize)]
struct RawEvent {
    source: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    detail: Option<RawDetail>,
}

#[derive(Deserialize)]
struct RawDetail {
    #[serde(rename = "command-id")]
    command_id: Option<String>,
    status: Option<String>,
    #[serde(rename = "document-name")]
    document_name: Option<String>,
    #[serde(rename = "instance-id")]
    instance_id: Option<String>,
}

/// True when the payload is an EventBridge event (not a call from the workflow).
pub fn is_event(payload: &Value) -> bool {
    payload.get("detail-type").is_some() && payload.get("source").is_some()
}

/// Read an SSM Run Command event. Anything else is an error naming what is wrong: the rule only
/// matches `aws.ssm` Run Command events, so another shape is a misconfigured target.
pub fn parse_event(payload: &Value) -> Result<CommandEvent, FleetError> {
    let raw: RawEvent = serde_json::from_value(payload.clone())
        .map_err(|e| FleetError::invalid_input(format!("not an EventBridge event: {e}")))?;
    if raw.source.as_deref() != Some("aws.ssm") {
        return Err(FleetError::invalid_input(format!(
            "expected an aws.ssm event, got source {:?}",
            raw.source.unwrap_or_default()
        )));
    }
    let detail_type = raw.detail_type.unwrap_or_default();
    if detail_type != COMMAND_STATUS_CHANGE && detail_type != INVOCATION_STATUS_CHANGE {
        return Err(FleetError::invalid_input(format!(
            "expected a Run Command status-change event, got {detail_type:?}"
        )));
    }
    let detail = raw
        .detail
        .ok_or_else(|| FleetError::invalid_input("the event has no detail"))?;
    let command_id = detail.command_id.unwrap_or_default();
    if command_id.is_empty() || command_id.len() > 64 {
        return Err(FleetError::invalid_input(format!(
            "the event's command-id {:?} is not a command id",
            crate::text::clip(&command_id, 64)
        )));
    }
    Ok(CommandEvent {
        detail_type,
        command_id,
        status: detail.status.unwrap_or_default(),
        document_name: detail.document_name.unwrap_or_default(),
        instance_id: detail.instance_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command_event(status: &str) -> Value {
        json!({
            "version": "0", "id": "e1", "detail-type": COMMAND_STATUS_CHANGE, "source": "aws.ssm",
            "account": "123456789012", "time": "2026-12-02T10:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"],
            "detail": {"command-id": "11111111-2222-3333-4444-555555555555", "document-name": "Install-Linux",
                       "expire-after": "2026-12-02T10:10:00.000Z", "parameters": {},
                       "requested-date-time": "2026-12-02T09:59:00.000Z", "status": status}
        })
    }

    #[test]
    fn terminal_command_events_end_a_command_and_others_do_not() {
        for status in ["Success", "Failed", "TimedOut", "Cancelled", "Canceled"] {
            let e = parse_event(&command_event(status)).unwrap();
            assert!(e.ends_command(), "{status}");
            assert_eq!(e.command_id, "11111111-2222-3333-4444-555555555555");
            assert_eq!(e.document_name, "Install-Linux");
        }
        for status in ["Pending", "InProgress", "Cancelling", ""] {
            assert!(!parse_event(&command_event(status)).unwrap().ends_command(), "{status}");
        }
        let mut inv = command_event("Success");
        inv["detail-type"] = json!(INVOCATION_STATUS_CHANGE);
        inv["detail"]["instance-id"] = json!("i-0123456789abcdef0");
        let e = parse_event(&inv).unwrap();
        assert!(!e.ends_command());
        assert_eq!(e.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    }

    #[test]
    fn other_payloads_are_refused_with_the_reason() {
        let mut other = command_event("Success");
        other["source"] = json!("aws.ec2");
        assert!(parse_event(&other).unwrap_err().to_string().contains("aws.ssm"));
        let mut kind = command_event("Success");
        kind["detail-type"] = json!("EC2 Automation Step Status-change Notification");
        assert!(parse_event(&kind).unwrap_err().to_string().contains("Run Command"));
        let mut no_id = command_event("Success");
        no_id["detail"]["command-id"] = json!("");
        assert!(parse_event(&no_id).unwrap_err().to_string().contains("command-id"));
        assert!(!is_event(&json!({"action": "register", "taskToken": "t"})));
        assert!(is_event(&command_event("Success")));
    }

    #[test]
    fn keys_hash_the_token_and_name_the_command() {
        let k = wait_key("AAAA-token");
        assert!(k.starts_with(WAIT_PREFIX));
        assert_eq!(k.len(), WAIT_PREFIX.len() + 32);
        assert_eq!(k, wait_key("AAAA-token"));
        assert_ne!(k, wait_key("AAAA-token2"));
        assert!(!k.contains("AAAA"));
        assert_eq!(command_key("c-1"), "command#c-1");
    }

    #[test]
    fn invocations_are_final_only_when_every_one_is() {
        assert!(all_final(["Success", "Failed", "TimedOut", "Cancelled"]));
        assert!(!all_final(["Success", "InProgress"]));
        assert!(!all_final(["Pending"]));
        assert!(!all_final(["Delayed"]));
        assert!(!all_final(Vec::<&str>::new()));
    }
}
