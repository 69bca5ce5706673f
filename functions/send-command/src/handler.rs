//! Idempotency: SendCommand has no client token, so each batch gets a deterministic key
//! (execution, route, attempt, instances). One DynamoDB transaction creates the batch's lock
//! item and claims its instances; only the invocation that creates the lock sends. The lock
//! then records the command id. A retry that finds the lock reuses its command id; one that
//! finds a lock without a command id (the earlier attempt died around SendCommand) looks the
//! command up by the key in its comment before deciding to send.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use fleet_core::adapters::{self, SendError, SendRequest};
use fleet_core::ledger::{self, get_s, n, s, Guard, Item, LedgerWrite};
use fleet_core::model::{Batch, BatchInstance, Execution, LedgerState, ReasonCode, SentCommand, Summary, DUPLICATE};
use fleet_core::routing::batch_key;
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub struct Config {
    pub table: String,
    pub output_log_group: Option<String>,
    pub delivery_timeout_seconds: i32,
    /// A claim by another execution older than this is considered abandoned.
    pub stale_claim_seconds: i64,
}

impl Config {
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Self, FleetError> {
        use fleet_core::config::{number, optional, required};
        let group = optional(get, "OUTPUT_LOG_GROUP", "");
        Ok(Config {
            table: required(get, "LEDGER_TABLE")?,
            output_log_group: (!group.is_empty()).then_some(group),
            delivery_timeout_seconds: number(get, "DELIVERY_TIMEOUT_SECONDS", 600)?,
            stale_claim_seconds: number(get, "STALE_CLAIM_SECONDS", 6 * 3600)?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    #[serde(flatten)]
    pub execution: Execution,
    #[serde(default)]
    pub batches: Vec<Batch>,
    /// Commands already in flight: returned with the new ones, so the workflow keeps one list.
    #[serde(default)]
    pub in_flight: Vec<SentCommand>,
    #[serde(default)]
    pub summary: Summary,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub in_flight: Vec<SentCommand>,
    pub summary: Summary,
    pub sent: usize,
    pub reused: usize,
}

/// SendCommand's Comment: at most 100 characters.
const MAX_COMMENT: usize = 100;

/// The command's comment: the batch key (which finds the command again) and the execution name,
/// cut at a character boundary (a rollout's execution name may hold multibyte characters).
fn comment(key: &str, execution_id: &str) -> String {
    let name = execution_id.rsplit(':').next().unwrap_or("");
    let mut c = format!("fleet-install {key} {name}");
    fleet_core::text::truncate_chars(&mut c, MAX_COMMENT);
    c
}

pub async fn handle(
    ssm: &aws_sdk_ssm::Client,
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    payload: Value,
) -> Result<Response, FleetError> {
    let mut req: Request = serde_json::from_value(payload).map_err(|e| {
        FleetError::invalid_input(format!(
            "send-command expects {{executionId, executionStartTime, batches}}: {e}"
        ))
    })?;
    if req.execution.execution_id.is_empty() {
        return Err(FleetError::invalid_input("executionId is empty"));
    }
    // Every id becomes a ledger key when it is claimed: a malformed one stops the call first.
    if let Some(bad) = req
        .batches
        .iter()
        .flat_map(|b| &b.instances)
        .find(|i| !fleet_core::model::is_valid_instance_id(&i.instance_id))
    {
        return Err(FleetError::invalid_input(format!(
            "batch holds malformed instance id {:?} (expected i- and 8 or 17 lowercase hex digits)",
            fleet_core::text::clip(&bad.instance_id, 64)
        )));
    }
    let mut resp = Response {
        in_flight: std::mem::take(&mut req.in_flight),
        summary: req.summary.clone(),
        sent: 0,
        reused: 0,
    };
    for batch in &req.batches {
        if batch.instances.is_empty() {
            continue;
        }
        if batch.instances.len() > fleet_core::routing::MAX_BATCH {
            return Err(FleetError::invalid_input(format!(
                "a batch holds {} instances; SendCommand takes at most 50",
                batch.instances.len()
            )));
        }
        if let Some(cmd) = send_batch(ssm, db, config, &req.execution, batch, &mut resp).await? {
            resp.in_flight.push(cmd);
        }
    }
    tracing::info!(
        sent = resp.sent,
        reused = resp.reused,
        in_flight = resp.in_flight.len(),
        "batches sent"
    );
    Ok(resp)
}

async fn send_batch(
    ssm: &aws_sdk_ssm::Client,
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    exec: &Execution,
    batch: &Batch,
    resp: &mut Response,
) -> Result<Option<SentCommand>, FleetError> {
    let key = batch_key(&exec.execution_id, batch);
    let now = ledger::now_rfc3339();
    let stale_before = (Utc::now() - Duration::seconds(config.stale_claim_seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut writes = vec![LedgerWrite {
        key: ledger::batch_lock_key(&key),
        fields: vec![
            ("kind", s("batch")),
            ("executionArn", s(&exec.execution_id)),
            ("document", s(&batch.document_name)),
            ("attempt", n(batch.attempt)),
            ("instanceCount", n(batch.instances.len())),
            ("updatedAt", s(&now)),
            // Not an instance: no `state` (it stays out of the byState index), and it expires.
            ledger::ttl_field(),
        ],
        guard: Guard::NotExists,
    }];
    for i in &batch.instances {
        let mut f = ledger::base_fields(LedgerState::Installing, exec, &now);
        f.extend([
            ("platform", s(&i.platform)),
            ("document", s(&batch.document_name)),
            ("documentVersion", s(&batch.document_version)),
            ("attempts", n(batch.attempt)),
            ("batchKey", s(&key)),
            ("reasonCode", s("Installing")),
            (
                "reason",
                s(format!("attempt {} sent with {}", batch.attempt, batch.document_name)),
            ),
        ]);
        writes.push(LedgerWrite {
            key: i.instance_id.clone(),
            fields: f,
            guard: Guard::Claim {
                document: batch.document_name.clone(),
                document_version: batch.document_version.clone(),
                stale_before: stale_before.clone(),
            },
        });
    }
    let result = ledger::write_transaction(db, &config.table, exec, writes).await?;
    let lock = ledger::batch_lock_key(&key);
    let mut existing_lock: Option<Item> = None;
    let mut refused_instances: HashSet<String> = HashSet::new();
    for (k, item) in result.refused {
        if k == lock {
            existing_lock = Some(item);
        } else {
            let platform = batch
                .instances
                .iter()
                .find(|i| i.instance_id == k)
                .map(|i| i.platform.clone());
            let code = match get_s(&item, "state") {
                Some("installed") => ReasonCode::AlreadyInstalled,
                Some("installing") => ReasonCode::InProgressElsewhere,
                _ => ReasonCode::SupersededByNewerRun,
            };
            tracing::info!(
                instance = k,
                reason = code.as_str(),
                by = get_s(&item, "executionArn"),
                "instance not claimed"
            );
            resp.summary.add(DUPLICATE, platform.as_deref(), code);
            refused_instances.insert(k);
        }
    }
    let claimed: Vec<BatchInstance> = batch
        .instances
        .iter()
        .filter(|i| !refused_instances.contains(&i.instance_id))
        .cloned()
        .collect();
    let claimed_batch = Batch {
        instances: claimed,
        ..batch.clone()
    };

    if let Some(lock_item) = &existing_lock {
        if let Some(command_id) = get_s(lock_item, "commandId") {
            resp.reused += 1;
            tracing::info!(batch_key = key, command_id, "batch already sent: reusing its command");
            return Ok(Some(SentCommand {
                command_id: command_id.to_string(),
                batch_key: key,
                batch: claimed_batch,
            }));
        }
        let since = get_s(lock_item, "updatedAt")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc) - Duration::seconds(60))
            .unwrap_or_else(|| Utc::now() - Duration::hours(24));
        if let Some(command_id) =
            adapters::find_command_by_comment(ssm, &batch.document_name, since, &comment(&key, &exec.execution_id))
                .await?
        {
            record_command_id(db, config, exec, &lock, &command_id).await?;
            resp.reused += 1;
            tracing::info!(batch_key = key, command_id, "found the command an earlier attempt sent");
            return Ok(Some(SentCommand {
                command_id,
                batch_key: key,
                batch: claimed_batch,
            }));
        }
    }
    if claimed_batch.instances.is_empty() {
        return Ok(None);
    }
    let mut to_send = claimed_batch;
    let mut rejected_once = false;
    loop {
        let request = SendRequest {
            document_name: to_send.document_name.clone(),
            document_version: to_send.document_version.clone(),
            instance_ids: to_send.instance_ids(),
            parameters: to_send.parameters.clone(),
            comment: comment(&key, &exec.execution_id),
            delivery_timeout_seconds: config.delivery_timeout_seconds,
            output_log_group: config.output_log_group.clone(),
        };
        match adapters::send_command(ssm, &request).await {
            Ok(command_id) => {
                record_command_id(db, config, exec, &lock, &command_id).await?;
                resp.sent += 1;
                return Ok(Some(SentCommand {
                    command_id,
                    batch_key: key,
                    batch: to_send,
                }));
            }
            Err(SendError::InvalidInstanceId(message)) if !rejected_once => {
                // SSM rejects the whole call when one id is not a managed, online instance:
                // find which, record them as failed, send the rest.
                rejected_once = true;
                let facts = adapters::describe_ssm(ssm, &to_send.instance_ids()).await?;
                let (ok, bad): (Vec<_>, Vec<_>) = to_send
                    .instances
                    .iter()
                    .cloned()
                    .partition(|i| facts.get(&i.instance_id).is_some_and(|f| f.ping_status == "Online"));
                let bad = if bad.is_empty() { to_send.instances.clone() } else { bad };
                let ok = if ok.len() == to_send.instances.len() {
                    Vec::new()
                } else {
                    ok
                };
                record_rejected(db, config, exec, &bad, &message, &mut resp.summary).await?;
                if ok.is_empty() {
                    return Ok(None);
                }
                to_send = Batch {
                    instances: ok,
                    ..to_send
                };
            }
            Err(SendError::InvalidInstanceId(message)) => {
                record_rejected(db, config, exec, &to_send.instances, &message, &mut resp.summary).await?;
                return Ok(None);
            }
            Err(SendError::Other(e)) => return Err(e),
        }
    }
}

async fn record_command_id(
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    exec: &Execution,
    lock: &str,
    command_id: &str,
) -> Result<(), FleetError> {
    let write = LedgerWrite {
        key: lock.to_string(),
        fields: vec![("commandId", s(command_id)), ("updatedAt", s(ledger::now_rfc3339()))],
        guard: Guard::OwnedByExecution,
    };
    ledger::write_transaction(db, &config.table, exec, vec![write]).await?;
    Ok(())
}

async fn record_rejected(
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    exec: &Execution,
    instances: &[BatchInstance],
    message: &str,
    summary: &mut Summary,
) -> Result<(), FleetError> {
    let now = ledger::now_rfc3339();
    let reason = format!("SSM rejected the instance at send time (not managed or not online): {message}");
    let writes = instances
        .iter()
        .map(|i| {
            let mut f = ledger::base_fields(LedgerState::Failed, exec, &now);
            f.push(("reasonCode", s(ReasonCode::RejectedBySsm.as_str())));
            f.push(("reason", s(&reason)));
            LedgerWrite {
                key: i.instance_id.clone(),
                fields: f,
                guard: Guard::OwnedByExecution,
            }
        })
        .collect();
    ledger::write_all(db, &config.table, exec, writes).await?;
    for i in instances {
        summary.add(
            LedgerState::Failed.as_str(),
            Some(&i.platform),
            ReasonCode::RejectedBySsm,
        );
    }
    tracing::warn!(count = instances.len(), "instances rejected by SSM recorded as failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::transact_write_items::{TransactWriteItemsError, TransactWriteItemsOutput};
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};
    use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
    use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
    use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
    use aws_sdk_ssm::types::{Command, InstanceInformation, PingStatus};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn id(n: u32) -> String {
        format!("i-{n:017x}")
    }

    fn config() -> Config {
        Config {
            table: "ledger".into(),
            output_log_group: Some("/fleet/out".into()),
            delivery_timeout_seconds: 600,
            stale_claim_seconds: 3600,
        }
    }

    fn batch(ids: &[u32]) -> Value {
        serde_json::json!({
            "route": "linux", "documentName": "LinuxDoc", "documentVersion": "1",
            "parameters": {"ServiceName": "fleet-agent"}, "attempt": 1,
            "instances": ids.iter().map(|n| serde_json::json!({"instanceId": id(*n), "platform": "Ubuntu"})).collect::<Vec<_>>()
        })
    }

    fn input(batches: Vec<Value>) -> Value {
        serde_json::json!({
            "executionId": "arn:aws:states:us-east-1:1:execution:install:launch-1",
            "executionStartTime": "2026-11-25T12:00:00.000Z",
            "batches": batches
        })
    }

    fn ok_tx() -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .then_output(|| TransactWriteItemsOutput::builder().build())
    }

    fn cancelled(codes: Vec<(&'static str, Option<Item>)>) -> TransactWriteItemsError {
        let reasons = codes
            .into_iter()
            .map(|(c, item)| CancellationReason::builder().code(c).set_item(item).build())
            .collect();
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .set_cancellation_reasons(Some(reasons))
                .build(),
        )
    }

    #[tokio::test]
    async fn sends_each_batch_once_with_document_version_comment_and_output_config() {
        let tx = ok_tx();
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| {
                r.document_version() == Some("1")
                    && r.comment()
                        .is_some_and(|c| c.starts_with("fleet-install ") && c.ends_with("launch-1"))
                    && r.max_errors() == Some("100%")
                    && r.cloud_watch_output_config()
                        .and_then(|c| c.cloud_watch_log_group_name())
                        == Some("/fleet/out")
                    && r.instance_ids().len() <= 50
            })
            .then_output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-1").build())
                    .build()
            });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx]);
        let ids: Vec<u32> = (0..50).collect();
        let r = handle(&ssm, &db, &config(), input(vec![batch(&ids), batch(&[60, 61])]))
            .await
            .unwrap();
        assert_eq!(r.sent, 2);
        assert_eq!(r.in_flight.len(), 2);
        assert_eq!(r.in_flight[0].command_id, "cmd-1");
        assert_eq!(send.num_calls(), 2);
        // per batch: one claim transaction and one command-id update
        assert_eq!(tx.num_calls(), 4);
    }

    #[tokio::test]
    async fn the_batch_lock_expires_and_carries_no_state() {
        fn lock_ok(r: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput) -> bool {
            let u = r.transact_items()[0].update().unwrap();
            let key = u.key()["instanceId"].as_s().unwrap();
            let names = u.expression_attribute_names().unwrap();
            let values = u.expression_attribute_values().unwrap();
            let field = |attr: &str| {
                names
                    .iter()
                    .find(|(_, v)| v.as_str() == attr)
                    .and_then(|(k, _)| values.get(&k.replacen('#', ":", 1)))
            };
            let ttl = field(fleet_core::ledger::TTL_ATTRIBUTE)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok());
            key.starts_with(fleet_core::ledger::BATCH_PREFIX)
                && ttl.is_some_and(|t| t > Utc::now().timestamp() + 34 * 86400)
                && !names.values().any(|v| v == "state")
                // the instances claimed with it do carry a state and no TTL
                && r.transact_items()[1..].iter().all(|i| {
                    let names = i.update().unwrap().expression_attribute_names().unwrap();
                    names.values().any(|v| v == "state") && !names.values().any(|v| v == "expiresAt")
                })
        }
        let claim = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 3 && lock_ok(r))
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let record = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 1)
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| {
            SendCommandOutput::builder()
                .command(Command::builder().command_id("cmd-1").build())
                .build()
        });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&claim, &record]);
        let r = handle(&ssm, &db, &config(), input(vec![batch(&[1, 2])])).await.unwrap();
        assert_eq!(r.sent, 1);
        assert_eq!(claim.num_calls(), 1);
        assert_eq!(record.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_retried_invocation_reuses_the_recorded_command() {
        let lock_exists = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 3)
            .then_error(|| {
                let mut lock = Item::new();
                lock.insert("commandId".into(), AttributeValue::S("cmd-earlier".into()));
                cancelled(vec![
                    ("ConditionalCheckFailed", Some(lock)),
                    ("None", None),
                    ("None", None),
                ])
            });
        let rest = ok_tx();
        let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| SendCommandOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&lock_exists, &rest]);
        let r = handle(&ssm, &db, &config(), input(vec![batch(&[1, 2])])).await.unwrap();
        assert_eq!(send.num_calls(), 0, "must not send the same batch twice");
        assert_eq!(r.reused, 1);
        assert_eq!(r.in_flight[0].command_id, "cmd-earlier");
    }

    #[tokio::test]
    async fn a_lock_without_command_id_is_resolved_by_the_comment() {
        let lock_exists = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 2)
            .then_error(|| {
                let mut lock = Item::new();
                lock.insert("updatedAt".into(), AttributeValue::S("2026-11-25T12:00:01.000Z".into()));
                cancelled(vec![("ConditionalCheckFailed", Some(lock)), ("None", None)])
            });
        let rest = ok_tx();
        let list = mock!(aws_sdk_ssm::Client::list_commands).then_compute_output(|_| {
            ListCommandsOutput::builder()
                .commands(
                    Command::builder()
                        .command_id("cmd-other")
                        .comment("fleet-install otherkey x")
                        .build(),
                )
                .commands(
                    Command::builder()
                        .command_id("cmd-found")
                        .comment(comment(
                            &batch_key(
                                "arn:aws:states:us-east-1:1:execution:install:launch-1",
                                &serde_json::from_value(batch(&[1])).unwrap(),
                            ),
                            "arn:aws:states:us-east-1:1:execution:install:launch-1",
                        ))
                        .build(),
                )
                .build()
        });
        let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| SendCommandOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&lock_exists, &rest]);
        let r = handle(&ssm, &db, &config(), input(vec![batch(&[1])])).await.unwrap();
        assert_eq!(send.num_calls(), 0);
        assert_eq!(r.in_flight[0].command_id, "cmd-found");
    }

    #[tokio::test]
    async fn instances_owned_by_another_run_are_not_sent() {
        let claim = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 3)
            .then_error(|| {
                let mut installed = Item::new();
                installed.insert("state".into(), AttributeValue::S("installed".into()));
                cancelled(vec![
                    ("None", None),
                    ("ConditionalCheckFailed", Some(installed)),
                    ("None", None),
                ])
            });
        let rest = ok_tx();
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| r.instance_ids() == [id(2)])
            .then_output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-2").build())
                    .build()
            });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&claim, &rest]);
        let r = handle(&ssm, &db, &config(), input(vec![batch(&[1, 2])])).await.unwrap();
        assert_eq!(send.num_calls(), 1);
        assert_eq!(r.in_flight[0].batch.instances.len(), 1);
        assert_eq!(r.summary.by_reason["AlreadyInstalled"], 1);
        assert_eq!(r.summary.by_state[DUPLICATE], 1);
    }

    #[tokio::test]
    async fn an_instance_ssm_rejects_is_recorded_and_the_rest_sent() {
        let tx = ok_tx();
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .sequence()
            .error(|| {
                SendCommandError::InvalidInstanceId(
                    aws_sdk_ssm::types::error::InvalidInstanceId::builder()
                        .message("Instances [[i-1]] not in a valid state")
                        .build(),
                )
            })
            .output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-ok").build())
                    .build()
            })
            .build();
        let describe = mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(|| {
            DescribeInstanceInformationOutput::builder()
                .instance_information_list(
                    InstanceInformation::builder()
                        .instance_id(id(2))
                        .ping_status(PingStatus::Online)
                        .build(),
                )
                .build()
        });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send, &describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx]);
        let r = handle(&ssm, &db, &config(), input(vec![batch(&[1, 2])])).await.unwrap();
        assert_eq!(send.num_calls(), 2);
        assert_eq!(r.in_flight.len(), 1);
        assert_eq!(r.in_flight[0].batch.instance_ids(), vec![id(2)]);
        assert_eq!(r.summary.by_reason["RejectedBySsm"], 1);
        assert_eq!(r.summary.by_state["failed"], 1);
    }

    #[tokio::test]
    async fn throttling_fails_with_throttled_so_the_workflow_backs_off() {
        let tx = ok_tx();
        let send = mock!(aws_sdk_ssm::Client::send_command).then_error(|| {
            SendCommandError::generic(
                aws_sdk_ssm::error::ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx]);
        let err = handle(&ssm, &db, &config(), input(vec![batch(&[1])]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::THROTTLED);
    }

    #[test]
    fn comments_are_cut_at_character_boundaries() {
        // "fleet-install " + 24 hex + " " is 39 bytes; the name's multibyte characters straddle byte 100.
        let exec = format!(
            "arn:aws:states:us-east-1:1:execution:install:r-déploiement-été-{}-w0-c0",
            "日本語".repeat(20)
        );
        let c = comment(&"a".repeat(24), &exec);
        assert_eq!(c.chars().count(), MAX_COMMENT);
        assert!(c.starts_with(&format!("fleet-install {} r-déploiement-été-日本語", "a".repeat(24))));
        assert_eq!(comment("k", "arn:x:execution:m:short"), "fleet-install k short");
    }

    #[tokio::test]
    async fn a_multibyte_execution_name_is_sent_with_a_100_character_comment() {
        let tx = ok_tx();
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| r.comment().is_some_and(|c| c.chars().count() <= 100))
            .then_output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-1").build())
                    .build()
            });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx]);
        let mut payload = input(vec![batch(&[1])]);
        payload["executionId"] = Value::String(format!(
            "arn:aws:states:us-east-1:1:execution:install:x{}",
            "déploiement-été-日本語-".repeat(6)
        ));
        let r = handle(&ssm, &db, &config(), payload).await.unwrap();
        assert_eq!(r.sent, 1);
        assert_eq!(send.num_calls(), 1);
    }

    #[tokio::test]
    async fn empty_and_malformed_input() {
        let ssm = mock_client!(aws_sdk_ssm, []);
        let db = mock_client!(aws_sdk_dynamodb, []);
        let r = handle(&ssm, &db, &config(), input(vec![])).await.unwrap();
        assert!(r.in_flight.is_empty());
        let err = handle(&ssm, &db, &config(), serde_json::json!({"batches": "x"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        let mut bad = batch(&[1]);
        bad["instances"][0]["instanceId"] = Value::String("i-junk; rm -rf /".into());
        let err = handle(&ssm, &db, &config(), input(vec![batch(&[2]), bad]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        assert!(err.to_string().contains("malformed instance id"), "{err}");
        let big: Vec<u32> = (0..51).collect();
        let err = handle(&ssm, &db, &config(), input(vec![batch(&big)]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
    }
}
