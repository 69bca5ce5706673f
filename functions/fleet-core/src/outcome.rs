//! What one finished command means for each of its instances, and the ledger write of a final
//! outcome. check-status reads every command of a round this way; await-commands reads each command
//! the same way as soon as its completion event arrives, so an instance's outcome reaches the ledger
//! when its command ends, not when the round's last command does.
//!
//! Both may write the same outcome: each write names the command it comes from (`outcomeOf`), and
//! the ledger refuses a second write of the same command's outcome (`Guard::Outcome`), so the first
//! write stands (its `updatedAt` is when the outcome landed) and the second learns it is there.

use std::collections::HashMap;

use crate::adapters::Invocation;
use crate::ledger::{self, get_s, n, s, Guard, Item, LedgerWrite};
use crate::model::{BatchInstance, Execution, LedgerState, ReasonCode, SentCommand};
use crate::record::attr;
use crate::routing;
use crate::status::{
    agent_update_failed_reason, exit_code_reason, failure_reason, invocation_outcome, verification, InvocationOutcome,
};

/// An instance's final outcome from one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Final {
    pub instance: BatchInstance,
    pub state: LedgerState,
    pub code: ReasonCode,
    pub reason: String,
    pub status_detail: String,
    /// The document found (or left) the agent installed and running: `verifiedAt` is now.
    pub verified: bool,
    /// A verification found the agent gone or stopped: counted as drift.
    pub drift: bool,
}

/// One command's instances, by what comes next for them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Evaluation {
    /// Ended for good: written to the ledger.
    pub finals: Vec<Final>,
    /// AWS-UpdateSSMAgent succeeded: on to the install.
    pub updated: Vec<BatchInstance>,
    /// Failed with attempts left: sent again as the next attempt.
    pub retry: Vec<BatchInstance>,
    /// Not finished (or not listed yet).
    pub running: Vec<BatchInstance>,
}

impl Evaluation {
    /// True when no instance of the command is still running.
    pub fn ended(&self) -> bool {
        self.running.is_empty()
    }
}

/// Read one command's invocations (by instance id) against its batch.
pub fn evaluate(cmd: &SentCommand, invocations: &HashMap<String, Invocation>, max_attempts: u32) -> Evaluation {
    let mut e = Evaluation::default();
    let route = cmd.batch.route.as_str();
    for inst in &cmd.batch.instances {
        let Some(inv) = invocations.get(&inst.instance_id) else {
            e.running.push(inst.clone());
            continue;
        };
        let done = |state, code, reason: String, verified, drift| Final {
            instance: inst.clone(),
            state,
            code,
            reason,
            status_detail: inv.status_details.clone(),
            verified,
            drift,
        };
        match invocation_outcome(route, &inv.status, &inv.status_details, inv.response_code) {
            InvocationOutcome::Running => e.running.push(inst.clone()),
            // The agent is updated: not final, the instance goes on to its install.
            InvocationOutcome::Succeeded if cmd.batch.is_agent_update() => e.updated.push(inst.clone()),
            InvocationOutcome::Succeeded if cmd.batch.verify => {
                let (code, what) = verification(&inv.output);
                let reason = format!("verified by {} (attempt {}): {what}", cmd.command_id, cmd.batch.attempt);
                e.finals.push(done(
                    LedgerState::Installed,
                    code,
                    reason,
                    true,
                    code == ReasonCode::DriftRepaired,
                ));
            }
            InvocationOutcome::Succeeded => {
                let reason = format!("installed by {} (attempt {})", cmd.command_id, cmd.batch.attempt);
                e.finals
                    .push(done(LedgerState::Installed, ReasonCode::Installed, reason, true, false));
            }
            InvocationOutcome::Failed { retryable: true, .. } if cmd.batch.attempt < max_attempts => {
                e.retry.push(inst.clone())
            }
            // The agent could not be updated: too old for the install, which is not sent. Not a
            // failed install: recorded as unmanaged, with what to do.
            InvocationOutcome::Failed { code, .. } if cmd.batch.is_agent_update() => {
                let reason = agent_update_failed_reason(
                    inst.agent_version.as_deref(),
                    cmd.batch.min_agent_version.as_deref(),
                    &inv.status,
                    &inv.status_details,
                    inv.response_code,
                    cmd.batch.attempt,
                    &inv.output,
                );
                e.finals.push(done(LedgerState::Unmanaged, code, reason, false, false));
            }
            InvocationOutcome::Failed { code, .. } => {
                let exit = inv
                    .response_code
                    .and_then(|c| routing::exit_code(route, c))
                    .filter(|x| x.reason_code == code);
                let reason = match exit {
                    Some(x) => exit_code_reason(
                        x,
                        cmd.batch.attempt,
                        routing::document_of_route(route).map(|d| d.min_agent_version),
                        &inv.output,
                    ),
                    None => failure_reason(
                        &inv.status,
                        &inv.status_details,
                        inv.response_code,
                        cmd.batch.attempt,
                        &inv.output,
                    ),
                };
                // A verification that fails: the agent was installed and is not any more.
                let reason = if cmd.batch.verify {
                    format!("verification failed, the agent is not installed and running: {reason}")
                } else {
                    reason
                };
                e.finals
                    .push(done(LedgerState::Failed, code, reason, false, cmd.batch.verify));
            }
        }
    }
    e
}

/// The ledger write of a final outcome, guarded so that only the execution that sent the command
/// writes it, once per command.
pub fn final_write(f: &Final, cmd: &SentCommand, exec: &Execution, now: &str) -> LedgerWrite {
    let mut fields = ledger::base_fields(f.state, exec, now);
    fields.extend([
        (attr::REASON_CODE, s(f.code.as_str())),
        (attr::REASON, s(&f.reason)),
        (attr::PLATFORM, s(&f.instance.platform)),
        (attr::OUTCOME_OF, s(&cmd.command_id)),
    ]);
    if cmd.batch.is_agent_update() {
        // `attempts` and `commandId` stay the install's.
        fields.extend([
            (attr::AGENT_UPDATE_COMMAND_ID, s(&cmd.command_id)),
            (attr::AGENT_UPDATE_ATTEMPTS, n(cmd.batch.attempt)),
        ]);
    } else {
        fields.extend([
            (attr::COMMAND_ID, s(&cmd.command_id)),
            (attr::ATTEMPTS, n(cmd.batch.attempt)),
            (attr::DOCUMENT, s(&cmd.batch.document_name)),
            (attr::DOCUMENT_VERSION, s(&cmd.batch.document_version)),
        ]);
    }
    if !f.status_detail.is_empty() {
        fields.push((attr::STATUS_DETAIL, s(&f.status_detail)));
    }
    if f.verified {
        // Installed and running now: the sweep's backoff starts over.
        fields.extend([(attr::VERIFIED_AT, s(now)), (attr::SWEEP_ATTEMPTS, n(0))]);
    }
    if f.drift {
        fields.extend([(attr::LAST_DRIFT_AT, s(now)), (attr::ADD_DRIFT_COUNT, n(1))]);
    }
    LedgerWrite {
        key: f.instance.instance_id.clone(),
        fields,
        guard: Guard::Outcome {
            command_id: cmd.command_id.clone(),
        },
    }
}

/// A refused outcome write met this item: true when it already holds this execution's outcome from
/// this command (written first by the other reader), false when another run owns the instance.
pub fn already_recorded(item: &Item, exec: &Execution, command_id: &str) -> bool {
    get_s(item, attr::EXECUTION_ARN) == Some(exec.execution_id.as_str())
        && get_s(item, attr::OUTCOME_OF) == Some(command_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Batch;

    fn id(n: u32) -> String {
        format!("i-{n:017x}")
    }

    fn cmd(attempt: u32, ids: &[u32]) -> SentCommand {
        SentCommand {
            command_id: "c1".into(),
            batch_key: "k".into(),
            batch: Batch {
                route: "linux".into(),
                document_name: "LinuxDoc".into(),
                document_version: "1".into(),
                parameters: Default::default(),
                attempt,
                instances: ids
                    .iter()
                    .map(|n| BatchInstance {
                        instance_id: id(*n),
                        platform: "Ubuntu".into(),
                        agent_version: None,
                    })
                    .collect(),
                min_agent_version: None,
                verify: false,
            },
        }
    }

    fn inv(n: u32, status: &str, code: i32) -> (String, Invocation) {
        (
            id(n),
            Invocation {
                instance_id: id(n),
                status: status.into(),
                status_details: status.into(),
                response_code: Some(code),
                output: String::new(),
            },
        )
    }

    #[test]
    fn a_command_splits_into_finals_retries_and_running() {
        let c = cmd(1, &[1, 2, 3, 4, 5]);
        // 5 is not listed yet: running
        let invs = HashMap::from([
            inv(1, "Success", 0),
            inv(2, "Failed", 4),
            inv(3, "Failed", 5),
            inv(4, "InProgress", -1),
        ]);
        let e = evaluate(&c, &invs, 3);
        let finals: Vec<(String, LedgerState, ReasonCode)> = e
            .finals
            .iter()
            .map(|f| (f.instance.instance_id.clone(), f.state, f.code))
            .collect();
        assert_eq!(
            finals,
            vec![
                (id(1), LedgerState::Installed, ReasonCode::Installed),
                (id(3), LedgerState::Failed, ReasonCode::ChecksumMismatch)
            ]
        );
        assert_eq!(
            e.retry.iter().map(|i| i.instance_id.clone()).collect::<Vec<_>>(),
            vec![id(2)]
        );
        assert_eq!(
            e.running.iter().map(|i| i.instance_id.clone()).collect::<Vec<_>>(),
            vec![id(4), id(5)]
        );
        assert!(!e.ended());
        // the last attempt: a retryable failure is final
        let e = evaluate(&cmd(3, &[2]), &HashMap::from([inv(2, "Failed", 4)]), 3);
        assert_eq!(e.finals.len(), 1);
        assert_eq!(e.finals[0].state, LedgerState::Failed);
        assert!(e.retry.is_empty() && e.ended());
    }

    #[test]
    fn an_outcome_write_names_its_command_and_is_guarded_by_it() {
        let c = cmd(1, &[1]);
        let e = evaluate(&c, &HashMap::from([inv(1, "Success", 0)]), 3);
        let exec = Execution {
            execution_id: "arn:exec".into(),
            execution_start_time: "2026-12-03T00:00:00.000Z".into(),
        };
        let w = final_write(&e.finals[0], &c, &exec, "2026-12-03T00:01:00.000Z");
        assert_eq!(w.key, id(1));
        assert!(matches!(&w.guard, Guard::Outcome { command_id } if command_id == "c1"));
        let field = |k: &str| w.fields.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(field(attr::OUTCOME_OF), Some(s("c1")));
        assert_eq!(field(attr::COMMAND_ID), Some(s("c1")));
        assert_eq!(field(attr::STATE), Some(s("installed")));
        let mut item = Item::new();
        item.insert(attr::EXECUTION_ARN.into(), s("arn:exec"));
        item.insert(attr::OUTCOME_OF.into(), s("c1"));
        assert!(already_recorded(&item, &exec, "c1"));
        assert!(!already_recorded(&item, &exec, "c2"));
        item.insert(attr::EXECUTION_ARN.into(), s("arn:newer"));
        assert!(!already_recorded(&item, &exec, "c1"));
    }
}
