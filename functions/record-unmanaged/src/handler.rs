use fleet_core::ledger::{self, note_write, s, Guard, LedgerWrite};
use fleet_core::model::{Execution, InstanceNote, LedgerState, ReasonCode, Summary, DUPLICATE};
use fleet_core::record::attr;
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum Request {
    /// Record unmanaged and skipped instances (the normal path).
    #[serde(rename_all = "camelCase")]
    Record {
        #[serde(flatten)]
        execution: Execution,
        #[serde(default)]
        unmanaged: Vec<InstanceNote>,
        #[serde(default)]
        skipped: Vec<InstanceNote>,
        /// Managed instances without a route (from group-by-platform).
        #[serde(default)]
        unrouted: Vec<InstanceNote>,
        #[serde(default)]
        summary: Summary,
    },
    /// A state failed after its retries: record every instance of the run that it has not
    /// finished as failed with the error, then fail the execution here. When the execution is
    /// redriven this state runs again with a higher redrive count and lets the workflow resume.
    #[serde(rename_all = "camelCase")]
    WorkflowFailure {
        #[serde(flatten)]
        execution: Execution,
        failure: Value,
        failed_state: String,
        #[serde(default)]
        failed_at_redrive: u32,
        #[serde(default)]
        redrive_count: u32,
        /// The execution's input: its instance ids, or the ledger key of a rollout chunk.
        input: RunInput,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInput {
    #[serde(default)]
    pub instance_ids: Vec<String>,
    #[serde(default)]
    pub targets_key: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub summary: Option<Summary>,
    pub recorded: usize,
    /// Instances a newer run (or an installed state) already owns: left as they are.
    pub refused: usize,
    pub resume: bool,
}

pub async fn handle(client: &aws_sdk_dynamodb::Client, table: &str, payload: Value) -> Result<Response, FleetError> {
    let req: Request = serde_json::from_value(payload).map_err(|e| {
        FleetError::invalid_input(format!(
            "record-unmanaged expects mode \"record\" or \"workflowFailure\": {e}"
        ))
    })?;
    match req {
        Request::Record {
            execution,
            unmanaged,
            skipped,
            unrouted,
            mut summary,
        } => {
            let now = ledger::now_rfc3339();
            let mut notes: Vec<(&InstanceNote, LedgerState)> = Vec::new();
            notes.extend(unmanaged.iter().map(|n| (n, LedgerState::Unmanaged)));
            notes.extend(skipped.iter().map(|n| (n, LedgerState::Skipped)));
            notes.extend(unrouted.iter().map(|n| (n, LedgerState::Skipped)));
            // A malformed id is never a ledger key: it is counted in the summary (skipped,
            // MalformedInstanceId) and logged with the reason, not written.
            let (valid, malformed): (Vec<_>, Vec<_>) = notes
                .iter()
                .partition(|(n, _)| fleet_core::model::is_valid_instance_id(&n.instance_id));
            for (n, _) in &malformed {
                tracing::warn!(
                    instance_id = fleet_core::text::clip(&n.instance_id, 64),
                    reason = n.reason,
                    "malformed instance id: counted as skipped, not written to the ledger"
                );
                summary.add(
                    LedgerState::Skipped.as_str(),
                    n.platform.as_deref(),
                    ReasonCode::MalformedInstanceId,
                );
            }
            let writes: Vec<LedgerWrite> = valid
                .iter()
                .map(|(n, st)| note_write(n, *st, &execution, &now))
                .collect();
            let result = ledger::write_all(client, table, &execution, writes).await?;
            let refused: std::collections::HashSet<&str> = result.refused.iter().map(|(k, _)| k.as_str()).collect();
            for (n, st) in &valid {
                if refused.contains(n.instance_id.as_str()) {
                    summary.add(DUPLICATE, n.platform.as_deref(), ReasonCode::SupersededByNewerRun);
                } else {
                    summary.add(st.as_str(), n.platform.as_deref(), n.reason_code);
                }
            }
            tracing::info!(
                recorded = result.written.len(),
                refused = result.refused.len(),
                "recorded unmanaged and skipped instances"
            );
            Ok(Response {
                summary: Some(summary),
                recorded: result.written.len(),
                refused: result.refused.len(),
                resume: false,
            })
        }
        Request::WorkflowFailure {
            execution,
            failure,
            failed_state,
            failed_at_redrive,
            redrive_count,
            input,
        } => {
            if redrive_count > failed_at_redrive {
                tracing::info!(
                    failed_state,
                    redrive_count,
                    "execution was redriven: resuming the workflow"
                );
                return Ok(Response {
                    summary: None,
                    recorded: 0,
                    refused: 0,
                    resume: true,
                });
            }
            let error = failure
                .get("Error")
                .and_then(|v| v.as_str())
                .unwrap_or("States.TaskFailed");
            let cause = failure.get("Cause").and_then(|v| v.as_str()).unwrap_or("");
            let cause_short: String = cause.chars().take(400).collect();
            let reason = format!(
                "workflow failed in \"{failed_state}\": {error}: {cause_short} (redrive the execution to resume)"
            );
            let mut ids = input.instance_ids;
            if let Some(key) = input.targets_key.filter(|k| !k.is_empty()) {
                ids.extend(ledger::load_target_chunk(client, table, &key).await?);
            }
            ids.sort();
            ids.dedup();
            let now = ledger::now_rfc3339();
            let writes: Vec<LedgerWrite> = ids
                .iter()
                .filter(|id| fleet_core::model::is_valid_instance_id(id))
                .map(|id| {
                    let mut f = ledger::base_fields(LedgerState::Failed, &execution, &now);
                    f.push((attr::REASON_CODE, s(ReasonCode::WorkflowError.as_str())));
                    f.push((attr::REASON, s(&reason)));
                    LedgerWrite {
                        key: id.clone(),
                        fields: f,
                        guard: Guard::Unfinished,
                    }
                })
                .collect();
            let result = ledger::write_all(client, table, &execution, writes).await?;
            tracing::error!(
                failed_state,
                error,
                recorded = result.written.len(),
                "workflow failed; instances recorded as failed"
            );
            Err(FleetError::WorkflowFailed(format!(
                "{failed_state} failed with {error}; {} instance(s) recorded as failed in the ledger. Cause: {cause_short}",
                result.written.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::transact_write_items::{TransactWriteItemsError, TransactWriteItemsOutput};
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn id(n: u32) -> String {
        format!("i-{n:017x}")
    }

    fn note(n: u32, code: &str) -> Value {
        serde_json::json!({"instanceId": id(n), "reasonCode": code, "reason": "because", "platform": "Ubuntu"})
    }

    fn exec() -> Value {
        serde_json::json!({"executionId": "arn:aws:states:us-east-1:1:execution:m:e", "executionStartTime": "2026-11-25T12:00:00.000Z"})
    }

    fn with_exec(mut v: Value) -> Value {
        v.as_object_mut().unwrap().extend(exec().as_object().unwrap().clone());
        v
    }

    #[tokio::test]
    async fn writes_in_transactions_of_100_and_counts_refusals() {
        // The first transaction has a refused item (a newer run owns it): that item is dropped and the rest retried.
        let first = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 100)
            .sequence()
            .error(|| {
                let mut reasons: Vec<CancellationReason> = (0..100)
                    .map(|_| CancellationReason::builder().code("None").build())
                    .collect();
                reasons[7] = CancellationReason::builder()
                    .code("ConditionalCheckFailed")
                    .item("state", AttributeValue::S("installed".into()))
                    .build();
                TransactWriteItemsError::TransactionCanceledException(
                    TransactionCanceledException::builder()
                        .set_cancellation_reasons(Some(reasons))
                        .build(),
                )
            })
            .build();
        let rest = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&first, &rest]);
        let unmanaged: Vec<Value> = (0..120).map(|n| note(n, "NoInstanceProfile")).collect();
        let skipped = vec![note(500, "OptedOut")];
        let r = handle(
            &client,
            "ledger",
            with_exec(serde_json::json!({"mode": "record", "unmanaged": unmanaged, "skipped": skipped})),
        )
        .await
        .unwrap();
        assert_eq!(r.recorded, 120);
        assert_eq!(r.refused, 1);
        let s = r.summary.unwrap();
        assert_eq!(s.by_state["unmanaged"], 119);
        assert_eq!(s.by_state["skipped"], 1);
        assert_eq!(s.by_state[DUPLICATE], 1);
        // 100 (refused one) + 99 retried + 21 in the second chunk
        assert_eq!(first.num_calls(), 1);
        assert_eq!(rest.num_calls(), 2);
    }

    #[tokio::test]
    async fn malformed_ids_are_counted_but_never_written_as_keys() {
        let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                r.transact_items().iter().all(|i| {
                    let key = i.update().unwrap().key()["instanceId"].as_s().unwrap();
                    fleet_core::model::is_valid_instance_id(key)
                })
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
        let junk = |text: &str| serde_json::json!({"instanceId": text, "reasonCode": "MalformedInstanceId", "reason": "not an EC2 instance id"});
        let r = handle(
            &client,
            "ledger",
            with_exec(serde_json::json!({"mode": "record",
                "skipped": [junk("not-an-id"), junk("i-日本語-x"), junk(""), note(1, "OptedOut")]})),
        )
        .await
        .unwrap();
        assert_eq!(r.recorded, 1);
        assert_eq!(rule.num_calls(), 1);
        let s = r.summary.unwrap();
        assert_eq!(s.by_state["skipped"], 4);
        assert_eq!(s.by_reason["MalformedInstanceId"], 3);
        // only malformed ids: no call at all
        let client = mock_client!(aws_sdk_dynamodb, []);
        let r = handle(
            &client,
            "ledger",
            with_exec(serde_json::json!({"mode": "record", "skipped": [junk("bogus")]})),
        )
        .await
        .unwrap();
        assert_eq!(r.recorded, 0);
    }

    #[tokio::test]
    async fn throttled_transaction_is_throttled_error() {
        let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(|| {
            TransactWriteItemsError::generic(
                aws_sdk_dynamodb::error::ErrorMetadata::builder()
                    .code("ProvisionedThroughputExceededException")
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_dynamodb, [&rule]);
        let err = handle(
            &client,
            "ledger",
            with_exec(serde_json::json!({"mode": "record", "unmanaged": [note(1, "AgentNotReporting")]})),
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::THROTTLED);
    }

    #[tokio::test]
    async fn workflow_failure_records_then_fails_and_resumes_after_redrive() {
        let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 2)
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
        let input = |redrive: u32| {
            with_exec(serde_json::json!({
                "mode": "workflowFailure",
                "failure": {"Error": "FleetInstall.Transient", "Cause": "ssm unavailable"},
                "failedState": "Send Install Commands",
                "failedAtRedrive": 0,
                "redriveCount": redrive,
                "input": {"instanceIds": [id(1), id(2), "junk"], "source": "ec2-running"}
            }))
        };
        let err = handle(&client, "ledger", input(0)).await.unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::WORKFLOW_FAILED);
        assert!(err.to_string().contains("Send Install Commands"), "{err}");
        assert_eq!(rule.num_calls(), 1);
        let r = handle(&client, "ledger", input(1)).await.unwrap();
        assert!(r.resume);
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn malformed_input_is_invalid_input() {
        let client = mock_client!(aws_sdk_dynamodb, []);
        let err = handle(&client, "ledger", serde_json::json!({"mode": "nonsense"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        let err = handle(&client, "ledger", serde_json::json!({"mode": "record"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
    }
}
