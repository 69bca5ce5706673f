use std::collections::{BTreeMap, HashMap};

use fleet_core::adapters::{self, Invocation};
use fleet_core::ledger::{self, n, s, Guard, LedgerWrite};
use fleet_core::model::{
    AgentUpdated, Batch, BatchInstance, Execution, LedgerState, ReasonCode, SentCommand, Summary, DUPLICATE,
};
use fleet_core::outcome::{self, Final};
use fleet_core::record::attr;
use fleet_core::routing::MAX_BATCH;
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    #[serde(flatten)]
    pub execution: Execution,
    #[serde(default)]
    pub commands: Vec<SentCommand>,
    pub max_attempts: u32,
    #[serde(default)]
    pub summary: Summary,
    /// Failed instances found by earlier checks, not re-sent yet: the workflow re-sends once no command is
    /// running, so that one resend carries every failure (fuller batches, fewer transitions).
    #[serde(default)]
    pub retry: Vec<Batch>,
    /// Instances still to be looked at by filter-managed (registering): returned with those whose agent
    /// update succeeded here, which go back through filter-managed to their install.
    #[serde(default)]
    pub pending: Vec<String>,
    /// Instances whose agent this execution updated earlier: returned with those updated here.
    #[serde(default)]
    pub agent_updated: Vec<AgentUpdated>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// Commands with instances still running (only those instances are listed).
    pub in_flight: Vec<SentCommand>,
    /// Failed instances with attempts left, regrouped into batches for the next attempt.
    pub retry: Vec<Batch>,
    pub summary: Summary,
    pub finished: bool,
    /// The pending instances given, and those whose agent update succeeded in this check.
    pub pending: Vec<String>,
    pub agent_updated: Vec<AgentUpdated>,
    /// What this check recorded (not the execution's running total): published as metrics.
    #[serde(skip)]
    pub recorded: Recorded,
}

/// Outcomes one check wrote to the ledger.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Installed now (a fresh install, or a drift put back; not a verification that found it there).
    pub installed: u64,
    pub failed: u64,
    pub drift_repaired: u64,
}

/// (route, document, version, parameters, minimum agent, next attempt): instances that can share a resend.
type RetryKey = (String, String, String, String, Option<String>, u32, bool);

/// The instances to re-send as `attempt` with the same document and parameters as `batch`.
fn retry_group<'g>(
    groups: &'g mut BTreeMap<RetryKey, (Batch, Vec<BatchInstance>)>,
    batch: &Batch,
    attempt: u32,
) -> &'g mut Vec<BatchInstance> {
    let key = (
        batch.route.clone(),
        batch.document_name.clone(),
        batch.document_version.clone(),
        serde_json::to_string(&batch.parameters).unwrap_or_default(),
        batch.min_agent_version.clone(),
        attempt,
        batch.verify,
    );
    &mut groups
        .entry(key)
        .or_insert_with(|| {
            (
                Batch {
                    attempt,
                    instances: Vec::new(),
                    ..batch.clone()
                },
                Vec::new(),
            )
        })
        .1
}

pub async fn handle(
    ssm: &aws_sdk_ssm::Client,
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    payload: Value,
) -> Result<Response, FleetError> {
    let req: Request = serde_json::from_value(payload).map_err(|e| {
        FleetError::invalid_input(format!(
            "check-status expects {{executionId, executionStartTime, commands, maxAttempts}}: {e}"
        ))
    })?;
    if req.max_attempts == 0 {
        return Err(FleetError::invalid_input("maxAttempts must be at least 1"));
    }
    // Outcomes are written under the instance ids: a malformed one stops the call first.
    if let Some(bad) = req
        .commands
        .iter()
        .map(|c| &c.batch)
        .chain(&req.retry)
        .flat_map(|b| &b.instances)
        .find(|i| !fleet_core::model::is_valid_instance_id(&i.instance_id))
    {
        return Err(FleetError::invalid_input(format!(
            "command holds malformed instance id {:?} (expected i- and 8 or 17 lowercase hex digits)",
            fleet_core::text::clip(&bad.instance_id, 64)
        )));
    }
    let mut in_flight = Vec::new();
    let mut finals: Vec<(Final, &SentCommand)> = Vec::new();
    let mut updated: Vec<(BatchInstance, &SentCommand)> = Vec::new();
    let mut retry_groups: BTreeMap<RetryKey, (Batch, Vec<BatchInstance>)> = BTreeMap::new();
    for b in &req.retry {
        retry_group(&mut retry_groups, b, b.attempt).extend(b.instances.iter().cloned());
    }
    for cmd in &req.commands {
        let invocations: HashMap<String, Invocation> = adapters::list_invocations(ssm, &cmd.command_id)
            .await?
            .into_iter()
            .map(|i| (i.instance_id.clone(), i))
            .collect();
        let e = outcome::evaluate(cmd, &invocations, req.max_attempts);
        for inst in &e.retry {
            tracing::info!(
                instance = inst.instance_id,
                attempt = cmd.batch.attempt,
                command = cmd.command_id,
                "attempt failed; will retry"
            );
        }
        retry_group(&mut retry_groups, &cmd.batch, cmd.batch.attempt + 1).extend(e.retry);
        finals.extend(e.finals.into_iter().map(|f| (f, cmd)));
        updated.extend(e.updated.into_iter().map(|i| (i, cmd)));
        if !e.running.is_empty() {
            in_flight.push(SentCommand {
                batch: Batch {
                    instances: e.running,
                    ..cmd.batch.clone()
                },
                ..cmd.clone()
            });
        }
    }
    // Outcomes the commands' completion events wrote already are read (one BatchGetItem per 100), not
    // written again: a write the guard would refuse still costs a transaction, and DynamoDB's work.
    let keys: Vec<String> = finals.iter().map(|(f, _)| f.instance.instance_id.clone()).collect();
    let before = if keys.is_empty() {
        HashMap::new()
    } else {
        ledger::get_items(db, table, &keys).await?
    };
    let recorded_by_event: std::collections::HashSet<&str> = finals
        .iter()
        .filter(|(f, cmd)| {
            before
                .get(&f.instance.instance_id)
                .is_some_and(|item| outcome::already_recorded(item, &req.execution, &cmd.command_id))
        })
        .map(|(f, _)| f.instance.instance_id.as_str())
        .collect();
    let now = ledger::now_rfc3339();
    let mut writes: Vec<LedgerWrite> = finals
        .iter()
        .filter(|(f, _)| !recorded_by_event.contains(f.instance.instance_id.as_str()))
        .map(|(f, cmd)| outcome::final_write(f, cmd, &req.execution, &now))
        .collect();
    // Updated agents: still installing (this execution keeps the instance), on the way to the install.
    writes.extend(updated.iter().map(|(inst, cmd)| {
        let mut fields = ledger::base_fields(LedgerState::Installing, &req.execution, &now);
        let from = inst.agent_version.as_deref().unwrap_or("");
        fields.extend([
            (attr::REASON_CODE, s(ReasonCode::AgentUpdated.as_str())),
            (attr::REASON,
                s(format!(
                    "SSM Agent {} updated by AWS-UpdateSSMAgent (command {}); the install follows once SSM reports the new version",
                    if from.is_empty() { "(version unknown)" } else { from },
                    cmd.command_id
                )),
            ),
            (attr::PLATFORM, s(&inst.platform)),
            (attr::AGENT_UPDATE_COMMAND_ID, s(&cmd.command_id)),
            (attr::AGENT_UPDATE_ATTEMPTS, n(cmd.batch.attempt)),
            (attr::AGENT_UPDATED_AT, s(&now)),
        ]);
        if !from.is_empty() {
            fields.push((attr::AGENT_UPDATED_FROM, s(from)));
        }
        LedgerWrite {
            key: inst.instance_id.clone(),
            fields,
            guard: Guard::OwnedByExecution,
        }
    }));
    let result = ledger::write_all(db, table, &req.execution, writes).await?;
    // Refused: another run owns the instance, or (a final outcome) the completion event of its
    // command wrote the same outcome first; that one is this execution's and counts as recorded.
    let outcome_of: HashMap<&str, &str> = finals
        .iter()
        .map(|(f, cmd)| (f.instance.instance_id.as_str(), cmd.command_id.as_str()))
        .collect();
    let refused: std::collections::HashSet<&str> = result
        .refused
        .iter()
        .filter(|(k, item)| {
            !outcome_of
                .get(k.as_str())
                .is_some_and(|cid| outcome::already_recorded(item, &req.execution, cid))
        })
        .map(|(k, _)| k.as_str())
        .collect();
    let mut summary = req.summary;
    let mut recorded = Recorded::default();
    for (f, _) in &finals {
        if !refused.contains(f.instance.instance_id.as_str()) {
            match (f.state, f.code) {
                (LedgerState::Installed, ReasonCode::Verified) => {}
                (LedgerState::Installed, code) => {
                    recorded.installed += 1;
                    recorded.drift_repaired += u64::from(code == ReasonCode::DriftRepaired);
                }
                (LedgerState::Failed, _) => recorded.failed += 1,
                _ => {}
            }
        }
        if refused.contains(f.instance.instance_id.as_str()) {
            // A newer run took the instance over: its outcome is that run's to record.
            summary.add(DUPLICATE, Some(&f.instance.platform), ReasonCode::SupersededByNewerRun);
        } else {
            summary.add(f.state.as_str(), Some(&f.instance.platform), f.code);
            if f.drift && f.state == LedgerState::Failed {
                summary.drift_unrepaired += 1;
            }
        }
    }
    let mut pending = req.pending;
    let mut agent_updated = req.agent_updated;
    let mut now_updated = Vec::new();
    for (inst, _) in &updated {
        if refused.contains(inst.instance_id.as_str()) {
            summary.add(DUPLICATE, Some(&inst.platform), ReasonCode::SupersededByNewerRun);
        } else {
            summary.agent_updated += 1;
            if !pending.contains(&inst.instance_id) {
                pending.push(inst.instance_id.clone());
            }
            now_updated.push(inst.instance_id.clone());
        }
    }
    if !now_updated.is_empty() {
        agent_updated.push(AgentUpdated {
            updated_at: now.clone(),
            instance_ids: now_updated,
        });
    }
    let mut retry = Vec::new();
    for (_, (template, mut instances)) in retry_groups {
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        for chunk in instances.chunks(MAX_BATCH) {
            retry.push(Batch {
                instances: chunk.to_vec(),
                ..template.clone()
            });
        }
    }
    let finished = in_flight.is_empty() && retry.is_empty();
    tracing::info!(
        commands = req.commands.len(),
        finished_instances = finals.len(),
        retrying = retry.iter().map(|b| b.instances.len()).sum::<usize>(),
        still_running = in_flight.iter().map(|c| c.batch.instances.len()).sum::<usize>(),
        agents_updated = updated.len(),
        "checked command status"
    );
    Ok(Response {
        in_flight,
        retry,
        summary,
        finished,
        pending,
        agent_updated,
        recorded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::transact_write_items::{TransactWriteItemsError, TransactWriteItemsOutput};
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_ssm::operation::list_command_invocations::{ListCommandInvocationsError, ListCommandInvocationsOutput};
    use aws_sdk_ssm::types::{CommandInvocation, CommandInvocationStatus, CommandPlugin};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn id(n: u32) -> String {
        format!("i-{n:017x}")
    }

    fn command(cid: &str, attempt: u32, ids: &[u32]) -> Value {
        serde_json::json!({
            "commandId": cid, "batchKey": "k", "route": "linux", "documentName": "LinuxDoc", "documentVersion": "1",
            "parameters": {"ServiceName": "fleet-agent"}, "attempt": attempt,
            "instances": ids.iter().map(|n| serde_json::json!({"instanceId": id(*n), "platform": "Ubuntu"})).collect::<Vec<_>>()
        })
    }

    /// BatchGetItem: no outcome written by a completion event yet.
    fn nothing_recorded() -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_dynamodb::Client::batch_get_item)
            .then_output(|| aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput::builder().build())
    }

    fn input(commands: Vec<Value>) -> Value {
        serde_json::json!({
            "executionId": "arn:aws:states:us-east-1:1:execution:install:e",
            "executionStartTime": "2026-11-25T12:00:00.000Z",
            "commands": commands, "maxAttempts": 3
        })
    }

    fn inv(n: u32, status: CommandInvocationStatus, details: &str, code: i32, out: &str) -> CommandInvocation {
        CommandInvocation::builder()
            .instance_id(id(n))
            .status(status)
            .status_details(details)
            .command_plugins(
                CommandPlugin::builder()
                    .name("installAgent")
                    .response_code(code)
                    .output(out)
                    .build(),
            )
            .build()
    }

    #[tokio::test]
    async fn sorts_outcomes_into_final_retry_and_running() {
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations)
            .match_requests(|r| r.command_id() == Some("c1"))
            .sequence()
            .output(|| {
                ListCommandInvocationsOutput::builder()
                    .command_invocations(inv(1, CommandInvocationStatus::Success, "Success", 0, "agent running"))
                    .command_invocations(inv(2, CommandInvocationStatus::Failed, "Failed", 1, "install failed"))
                    .next_token("page2")
                    .build()
            })
            .output(|| {
                ListCommandInvocationsOutput::builder()
                    .command_invocations(inv(3, CommandInvocationStatus::InProgress, "InProgress", -1, ""))
                    .command_invocations(inv(4, CommandInvocationStatus::Failed, "Access Denied", -1, ""))
                    .build()
            })
            .build();
        let last = mock!(aws_sdk_ssm::Client::list_command_invocations)
            .match_requests(|r| r.command_id() == Some("c3"))
            .then_output(|| {
                ListCommandInvocationsOutput::builder()
                    .command_invocations(inv(
                        9,
                        CommandInvocationStatus::TimedOut,
                        "Execution Timed Out",
                        -1,
                        "still downloading",
                    ))
                    .build()
            });
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 3)
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &last]);
        let none = nothing_recorded();
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx, &none]);
        let r = handle(
            &ssm,
            &db,
            "ledger",
            input(vec![command("c1", 1, &[1, 2, 3, 4, 5]), command("c3", 3, &[9])]),
        )
        .await
        .unwrap();
        // 1 installed, 4 access denied (final), 9 timed out on its last attempt (final)
        assert_eq!(r.summary.by_state["installed"], 1);
        assert_eq!(r.summary.by_state["failed"], 2);
        assert_eq!(r.summary.by_reason["AccessDenied"], 1);
        assert_eq!(r.summary.by_reason["ExecutionTimedOut"], 1);
        // 2 failed with attempts left: retried as attempt 2
        assert_eq!(r.retry.len(), 1);
        assert_eq!(r.retry[0].attempt, 2);
        assert_eq!(r.retry[0].instance_ids(), vec![id(2)]);
        // 3 in progress, 5 not listed yet: still running
        assert_eq!(r.in_flight.len(), 1);
        assert_eq!(r.in_flight[0].batch.instance_ids(), vec![id(3), id(5)]);
        assert!(!r.finished);
        assert_eq!(list.num_calls(), 2);
        assert_eq!(tx.num_calls(), 1);
    }

    fn field<'a>(
        r: &'a aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput,
        key: &str,
        name: &str,
    ) -> Option<&'a str> {
        let u = r.transact_items().iter().filter_map(|i| i.update()).find(|u| {
            u.key()
                .get("instanceId")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some(key)
        })?;
        let (placeholder, _) = u.expression_attribute_names()?.iter().find(|(_, v)| *v == name)?;
        u.expression_attribute_values()?
            .get(&placeholder.replacen('#', ":", 1))
            .and_then(|v| v.as_s().ok().or(v.as_n().ok()))
            .map(String::as_str)
    }

    #[tokio::test]
    async fn exit_codes_end_permanent_failures_at_once_and_retry_the_rest() {
        // windows command, attempt 1 of 3: 2, 3, 5, 6, 8, 10 are final now; 4, 7, 9 and an unknown 1 are retried
        let codes = [2, 3, 4, 5, 6, 7, 8, 9, 10, 1];
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
            let mut out = ListCommandInvocationsOutput::builder();
            for code in codes {
                out = out.command_invocations(inv(
                    code as u32,
                    CommandInvocationStatus::Failed,
                    "Failed",
                    code,
                    &format!("fleet-install: ERROR: code {code}"),
                ));
            }
            out.build()
        });
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                r.transact_items().len() == 6
                    && field(r, &id(5), "reasonCode") == Some("ChecksumMismatch")
                    && field(r, &id(5), "state") == Some("failed")
                    && field(r, &id(5), "attempts") == Some("1")
                    && field(r, &id(5), "reason").is_some_and(|s| {
                        s.contains("exit code 5") && s.contains("not retried") && s.ends_with("ERROR: code 5")
                    })
                    && field(r, &id(2), "reason").is_some_and(|s| s.contains("SSM Agent 3.3.2746.0 or later"))
                    && field(r, &id(10), "reasonCode") == Some("RebootRequired")
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, [&list]);
        let none = nothing_recorded();
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx, &none]);
        let mut cmd = command("c1", 1, &[2, 3, 4, 5, 6, 7, 8, 9, 10, 1]);
        cmd["route"] = "windows".into();
        cmd["documentName"] = "WinDoc".into();
        let r = handle(&ssm, &db, "ledger", input(vec![cmd])).await.unwrap();
        assert_eq!(tx.num_calls(), 1);
        assert_eq!(r.summary.by_state["failed"], 6);
        for reason in [
            "BadParameter",
            "UnsupportedPlatform",
            "ChecksumMismatch",
            "InstallFailed",
            "InstallerTimedOut",
            "RebootRequired",
        ] {
            assert_eq!(r.summary.by_reason[reason], 1, "{reason}");
        }
        let mut retried: Vec<String> = r.retry.iter().flat_map(|b| b.instance_ids()).collect();
        retried.sort();
        assert_eq!(retried, vec![id(1), id(4), id(7), id(9)]);
        assert!(r.retry.iter().all(|b| b.attempt == 2 && b.route == "windows"));
        // on the last attempt a retried code ends with its own reason code
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(|| {
            ListCommandInvocationsOutput::builder()
                .command_invocations(inv(4, CommandInvocationStatus::Failed, "Failed", 4, "download failed"))
                .build()
        });
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                field(r, &id(4), "reasonCode") == Some("DownloadFailed")
                    && field(r, &id(4), "reason").is_some_and(|s| s.contains("still failing after 3 attempts"))
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, [&list]);
        let none = nothing_recorded();
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx, &none]);
        let r = handle(&ssm, &db, "ledger", input(vec![command("c3", 3, &[4])]))
            .await
            .unwrap();
        assert_eq!(r.summary.by_reason["DownloadFailed"], 1);
        assert!(r.retry.is_empty());
    }

    fn update_command(cid: &str, attempt: u32, ids: &[u32]) -> Value {
        serde_json::json!({
            "commandId": cid, "batchKey": "k", "route": "agent-update", "documentName": "AWS-UpdateSSMAgent",
            "documentVersion": "$DEFAULT", "parameters": {}, "attempt": attempt, "minAgentVersion": "3.3.2746.0",
            "instances": ids.iter().map(|n| serde_json::json!({"instanceId": id(*n), "platform": "Ubuntu", "agentVersion": "3.3.1142.0"})).collect::<Vec<_>>()
        })
    }

    #[tokio::test]
    async fn an_updated_agent_goes_back_to_filter_managed_and_a_failed_update_ends_agent_too_old() {
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(|| {
            ListCommandInvocationsOutput::builder()
                .command_invocations(inv(1, CommandInvocationStatus::Success, "Success", 0, "updated"))
                .command_invocations(inv(
                    2,
                    CommandInvocationStatus::Failed,
                    "Failed",
                    1,
                    "updater could not download",
                ))
                .command_invocations(inv(3, CommandInvocationStatus::TimedOut, "Delivery Timed Out", -1, ""))
                .command_invocations(inv(4, CommandInvocationStatus::Success, "Success", 0, "updated"))
                .build()
        });
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                r.transact_items().len() == 3
                    // updated: still installing, the install's attempts untouched
                    && field(r, &id(1), "state") == Some("installing")
                    && field(r, &id(1), "reasonCode") == Some("AgentUpdated")
                    && field(r, &id(1), "agentUpdatedFrom") == Some("3.3.1142.0")
                    && field(r, &id(1), "agentUpdateCommandId") == Some("u1")
                    && field(r, &id(1), "attempts").is_none()
                    // failed: unmanaged AgentTooOld with what to do, never an install failure
                    && field(r, &id(2), "state") == Some("unmanaged")
                    && field(r, &id(2), "reasonCode") == Some("AgentTooOld")
                    && field(r, &id(2), "attempts").is_none()
                    && field(r, &id(2), "commandId").is_none()
                    && field(r, &id(2), "reason").is_some_and(|s| {
                        s.starts_with("SSM Agent 3.3.1142.0 is older than 3.3.2746.0")
                            && s.contains("AWS-UpdateSSMAgent failed: Failed, exit code 1 after 1 attempt: updater could not download")
                    })
            })
            .sequence()
            .error(|| {
                // instance 4 was taken over by a newer run
                TransactWriteItemsError::TransactionCanceledException(
                    aws_sdk_dynamodb::types::error::TransactionCanceledException::builder()
                        // written in this order: the failed update (2), then the updated agents (1, 4)
                        .cancellation_reasons(CancellationReason::builder().code("None").build())
                        .cancellation_reasons(CancellationReason::builder().code("None").build())
                        .cancellation_reasons(CancellationReason::builder().code("ConditionalCheckFailed").build())
                        .build(),
                )
            })
            .build();
        let rest = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, [&list]);
        let none = nothing_recorded();
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx, &rest, &none]);
        let mut req = input(vec![update_command("u1", 1, &[1, 2, 3, 4])]);
        req["pending"] = serde_json::json!([id(9)]);
        req["agentUpdated"] = serde_json::json!([{"updatedAt": "2026-11-25T12:00:00.000Z", "instanceIds": [id(8)]}]);
        let r = handle(&ssm, &db, "ledger", req).await.unwrap();
        // 1 is pending again (filter-managed sends it on to its install), with the time of its update
        assert_eq!(r.pending, vec![id(9), id(1)]);
        assert_eq!(r.agent_updated.len(), 2);
        assert_eq!(r.agent_updated[1].instance_ids, vec![id(1)]);
        assert_eq!(r.summary.agent_updated, 1);
        assert_eq!(r.summary.by_state.get("installed"), None);
        // 2: AgentTooOld, counted as unmanaged; 4: another run's
        assert_eq!(r.summary.by_state["unmanaged"], 1);
        assert_eq!(r.summary.by_reason["AgentTooOld"], 1);
        assert_eq!(r.summary.by_reason["SupersededByNewerRun"], 1);
        // 3: not delivered, the update is sent again
        assert_eq!(r.retry.len(), 1);
        assert!(r.retry[0].is_agent_update() && r.retry[0].attempt == 2);
        assert_eq!(r.retry[0].min_agent_version.as_deref(), Some("3.3.2746.0"));
        assert_eq!(r.retry[0].instances[0].agent_version.as_deref(), Some("3.3.1142.0"));
        assert_eq!(r.retry[0].instance_ids(), vec![id(3)]);
        assert!(r.in_flight.is_empty());
    }

    #[tokio::test]
    async fn an_outcome_its_completion_event_wrote_first_counts_as_recorded_not_as_another_runs() {
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(|| {
            ListCommandInvocationsOutput::builder()
                .command_invocations(inv(1, CommandInvocationStatus::Success, "Success", 0, ""))
                .command_invocations(inv(2, CommandInvocationStatus::Success, "Success", 0, ""))
                .command_invocations(inv(3, CommandInvocationStatus::Success, "Success", 0, ""))
                .build()
        });
        let exec = "arn:aws:states:us-east-1:1:execution:install:e";
        let item = |iid: String, by_exec: &str| {
            HashMap::from([
                (attr::INSTANCE_ID.to_string(), s(iid)),
                (attr::EXECUTION_ARN.to_string(), s(by_exec)),
                (attr::OUTCOME_OF.to_string(), s("c1")),
            ])
        };
        // 1: its event wrote it; 2: read as this execution's, but a newer run takes it before the write
        let read = {
            let (one, two) = (
                item(id(1), exec),
                item(id(2), "arn:aws:states:us-east-1:1:execution:install:older"),
            );
            mock!(aws_sdk_dynamodb::Client::batch_get_item)
                .match_requests(|r| r.request_items().unwrap()["ledger"].keys().len() == 3)
                .then_output(move || {
                    aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput::builder()
                        .responses("ledger", vec![one.clone(), two.clone()])
                        .build()
                })
        };
        let newer = item(id(2), "arn:aws:states:us-east-1:1:execution:install:newer");
        // only 2 and 3 are written; 2 is refused
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 2)
            .sequence()
            .error(move || {
                TransactWriteItemsError::TransactionCanceledException(
                    aws_sdk_dynamodb::types::error::TransactionCanceledException::builder()
                        .cancellation_reasons(
                            CancellationReason::builder()
                                .code("ConditionalCheckFailed")
                                .set_item(Some(newer.clone()))
                                .build(),
                        )
                        .cancellation_reasons(CancellationReason::builder().code("None").build())
                        .build(),
                )
            })
            .build();
        let rest = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 1)
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, [&list]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&read, &tx, &rest]);
        let r = handle(&ssm, &db, "ledger", input(vec![command("c1", 1, &[1, 2, 3])]))
            .await
            .unwrap();
        // 1: written by the event, this execution's outcome; 2: a newer run owns it; 3: written now
        assert_eq!(r.summary.by_state["installed"], 2);
        assert_eq!(r.summary.by_state[DUPLICATE], 1);
        assert_eq!(r.summary.by_reason["SupersededByNewerRun"], 1);
        assert_eq!(r.recorded.installed, 2);
        assert_eq!(read.num_calls(), 1);
        assert_eq!(tx.num_calls(), 1);
        assert_eq!(rest.num_calls(), 1);
        assert!(r.finished);
    }

    #[tokio::test]
    async fn invocation_does_not_exist_right_after_send_means_running() {
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_error(|| {
            ListCommandInvocationsError::generic(
                aws_sdk_ssm::error::ErrorMetadata::builder()
                    .code("InvocationDoesNotExist")
                    .build(),
            )
        });
        let ssm = mock_client!(aws_sdk_ssm, [&list]);
        let db = mock_client!(aws_sdk_dynamodb, []);
        let r = handle(&ssm, &db, "ledger", input(vec![command("c1", 1, &[1, 2])]))
            .await
            .unwrap();
        assert_eq!(r.in_flight.len(), 1);
        assert_eq!(r.in_flight[0].batch.instances.len(), 2);
        assert!(!r.finished);
        assert_eq!(r.summary.total(), 0);
    }

    #[tokio::test]
    async fn throttled_listing_is_throttled() {
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_error(|| {
            ListCommandInvocationsError::generic(
                aws_sdk_ssm::error::ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .build(),
            )
        });
        let ssm = mock_client!(aws_sdk_ssm, [&list]);
        let db = mock_client!(aws_sdk_dynamodb, []);
        let err = handle(&ssm, &db, "ledger", input(vec![command("c1", 1, &[1])]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::THROTTLED);
    }

    #[tokio::test]
    async fn carried_retries_merge_with_new_failures_into_full_batches() {
        // 30 failures from an earlier check (attempt 2 next) plus 25 new ones from this check: one resend of 50
        // and one of 5, not a resend per check.
        let failed: Vec<u32> = (100..125).collect();
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
            let mut out = ListCommandInvocationsOutput::builder();
            for n in 100..125 {
                out = out.command_invocations(inv(n, CommandInvocationStatus::Failed, "Failed", 1, "install failed"));
            }
            out.build()
        });
        let ssm = mock_client!(aws_sdk_ssm, [&list]);
        let db = mock_client!(aws_sdk_dynamodb, []);
        let carried: Vec<u32> = (1..=30).collect();
        let mut carried_batch = command("c0", 2, &carried);
        carried_batch.as_object_mut().unwrap().remove("commandId");
        carried_batch.as_object_mut().unwrap().remove("batchKey");
        let mut req = input(vec![command("c1", 1, &failed)]);
        req["retry"] = serde_json::json!([carried_batch]);
        let r = handle(&ssm, &db, "ledger", req).await.unwrap();
        assert_eq!(
            r.retry.iter().map(|b| b.instances.len()).collect::<Vec<_>>(),
            vec![50, 5]
        );
        assert!(r.retry.iter().all(|b| b.attempt == 2));
        let mut all: Vec<String> = r.retry.iter().flat_map(|b| b.instance_ids()).collect();
        all.sort();
        let mut want: Vec<String> = carried.iter().chain(failed.iter()).map(|n| id(*n)).collect();
        want.sort();
        assert_eq!(all, want, "every failure is re-sent exactly once");
        assert!(r.in_flight.is_empty() && !r.finished);
    }

    #[tokio::test]
    async fn nothing_in_flight_is_finished_and_bad_input_is_invalid() {
        let ssm = mock_client!(aws_sdk_ssm, []);
        let db = mock_client!(aws_sdk_dynamodb, []);
        let r = handle(&ssm, &db, "ledger", input(vec![])).await.unwrap();
        assert!(r.finished);
        let err = handle(&ssm, &db, "ledger", serde_json::json!({"commands": []}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        // a malformed id is refused before any call (the mocks above allow none)
        let mut bad = command("c1", 1, &[1]);
        bad["instances"][0]["instanceId"] = Value::String("i-NOTHEX".into());
        let err = handle(&ssm, &db, "ledger", input(vec![bad])).await.unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        assert!(err.to_string().contains("malformed instance id"), "{err}");
    }
}
