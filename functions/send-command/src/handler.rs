//! Idempotency: SendCommand has no client token, so each batch gets a deterministic key
//! (execution, route, attempt, instances). One DynamoDB transaction creates the batch's lock
//! item and claims its instances; only the invocation that creates the lock sends. The lock
//! then records the command id. A retry that finds the lock reuses its command id; one that
//! finds a lock without a command id (the earlier attempt died around SendCommand) looks the
//! command up by the key in its comment before deciding to send. The lock also records the
//! instances the command carries, so that a reuse tracks exactly those.
//!
//! At send time the document name comes from this function's environment, by the batch's route
//! (linux, windows): the stack's documents are replaced under new names on update, and a resend
//! planned before the update still names the old one. Before a resend (attempt > 1) the
//! instances' tags are read again and those that now carry the opt-out tag key are not sent.

use fleet_core::record::attr;
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};

use chrono::{Duration, Utc};
use fleet_core::adapters::{self, FoundCommand, SendError, SendRequest};
use fleet_core::ledger::{self, get_s, n, s, Guard, Item, LedgerWrite};
use fleet_core::model::{Batch, BatchInstance, Execution, LedgerState, ReasonCode, SentCommand, Summary, DUPLICATE};
use fleet_core::routing::{batch_key, AGENT_UPDATE_DOCUMENT, AGENT_UPDATE_ROUTE, DOCUMENT_NAME_VARIABLES};
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub struct Config {
    pub table: String,
    pub output_log_group: Option<String>,
    pub delivery_timeout_seconds: i32,
    /// A claim by another execution older than this is considered abandoned.
    pub stale_claim_seconds: i64,
    /// Instances carrying this tag key (any value) are not sent a resend.
    pub opt_out_tag: String,
    /// The current document name of each route (linux, windows), from LINUX_DOCUMENT_NAME and
    /// WINDOWS_DOCUMENT_NAME. A route without one keeps the name its batch carries.
    pub documents: BTreeMap<String, String>,
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
            opt_out_tag: optional(get, "OPT_OUT_TAG_KEY", "fleet-install:opt-out"),
            documents: [
                (DOCUMENT_NAME_VARIABLES[0].0, optional(get, "LINUX_DOCUMENT_NAME", "")),
                (DOCUMENT_NAME_VARIABLES[1].0, optional(get, "WINDOWS_DOCUMENT_NAME", "")),
                // AWS's own document: its name never changes.
                (AGENT_UPDATE_ROUTE, AGENT_UPDATE_DOCUMENT.to_string()),
            ]
            .into_iter()
            .filter(|(_, name)| !name.is_empty())
            .map(|(route, name)| (route.to_string(), name))
            .collect(),
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
    /// Failed instances with attempts left (check-status's retry batches), sent with `batches` when a
    /// round looks at pending instances and re-sends failures together.
    #[serde(default)]
    pub retry: Vec<Batch>,
    /// The workflow's attempts per instance: with it, each command's pointer (`command#<id>`) is written
    /// as it is sent, so that its completion event can write its outcomes at once.
    #[serde(default)]
    pub max_attempts: Option<u32>,
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

/// Batches sent at the same time by one invocation.
const SEND_CONCURRENCY: usize = 4;

/// What sending one batch counted: instances recorded on the way, commands sent or found sent before.
#[derive(Debug, Default)]
struct Tally {
    summary: Summary,
    sent: usize,
    reused: usize,
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

/// The document a batch is sent with: the current name of its route's document (from the
/// environment), which differs from the batch's when the stack was updated after the batch was
/// planned.
fn current_document(config: &Config, batch: &Batch) -> String {
    match config.documents.get(&batch.route) {
        Some(current) if *current != batch.document_name => {
            tracing::info!(
                route = batch.route,
                planned = batch.document_name,
                current = current.as_str(),
                attempt = batch.attempt,
                "install document renamed since the batch was planned (stack update): sending with the current document"
            );
            current.clone()
        }
        Some(current) => current.clone(),
        None => {
            tracing::warn!(
                route = batch.route,
                document = batch.document_name,
                "no current document configured for this route: sending with the batch's document"
            );
            batch.document_name.clone()
        }
    }
}

pub async fn handle(
    ssm: &aws_sdk_ssm::Client,
    ec2: &aws_sdk_ec2::Client,
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
    let retry = std::mem::take(&mut req.retry);
    req.batches.extend(retry);
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
    if let Some(batch) = req
        .batches
        .iter()
        .find(|b| b.instances.len() > fleet_core::routing::MAX_BATCH)
    {
        return Err(FleetError::invalid_input(format!(
            "a batch holds {} instances; SendCommand takes at most 50",
            batch.instances.len()
        )));
    }
    // Opt-out holds at every send: before a resend, read the tags again (DescribeInstances with
    // the instance-id filter, 200 ids a call, every resend batch of this call together).
    let resend_ids: Vec<String> = req
        .batches
        .iter()
        .filter(|b| b.attempt > 1)
        .flat_map(|b| b.instance_ids())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let opted_out: HashSet<String> = if resend_ids.is_empty() {
        HashSet::new()
    } else {
        adapters::describe_ec2(ec2, &resend_ids, &config.opt_out_tag)
            .await?
            .into_values()
            .filter(|f| f.opted_out)
            .map(|f| f.instance_id)
            .collect()
    };
    // A few batches at a time: a round's commands go out together, so the first does not wait for the
    // last to be sent before its completion can end the wait (SendCommand is throttled well above this).
    // Each batch counts apart; results are taken in the batches' order.
    let max_attempts = req.max_attempts;
    let sends = futures::stream::iter(req.batches.iter().filter(|b| !b.instances.is_empty()).map(|batch| {
        let opted_out = &opted_out;
        let exec = &req.execution;
        async move {
            let mut tally = Tally::default();
            let cmd = send_batch(ssm, ec2, db, config, exec, batch, opted_out, max_attempts, &mut tally).await?;
            Ok::<_, FleetError>((cmd, tally))
        }
    }))
    .buffered(SEND_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    for result in sends {
        let (cmd, tally) = result?;
        resp.summary.merge(tally.summary);
        resp.sent += tally.sent;
        resp.reused += tally.reused;
        resp.in_flight.extend(cmd);
    }
    tracing::info!(
        sent = resp.sent,
        reused = resp.reused,
        in_flight = resp.in_flight.len(),
        "batches sent"
    );
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
async fn send_batch(
    ssm: &aws_sdk_ssm::Client,
    ec2: &aws_sdk_ec2::Client,
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    exec: &Execution,
    planned: &Batch,
    opted_out: &HashSet<String>,
    max_attempts: Option<u32>,
    resp: &mut Tally,
) -> Result<Option<SentCommand>, FleetError> {
    // The key comes from the batch as planned (execution, route, attempt, instances): a retried
    // invocation finds the same lock whatever the document is called now and whoever opted out since.
    let key = batch_key(&exec.execution_id, planned);
    let planned_document = planned.document_name.clone();
    let batch = &Batch {
        document_name: current_document(config, planned),
        ..planned.clone()
    };
    let now = ledger::now_rfc3339();
    let stale_before = (Utc::now() - Duration::seconds(config.stale_claim_seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (now_opted_out, to_claim): (Vec<BatchInstance>, Vec<BatchInstance>) = batch
        .instances
        .iter()
        .cloned()
        .partition(|i| batch.attempt > 1 && opted_out.contains(&i.instance_id));
    let mut writes = vec![LedgerWrite {
        key: ledger::batch_lock_key(&key),
        fields: vec![
            (attr::KIND, s("batch")),
            (attr::EXECUTION_ARN, s(&exec.execution_id)),
            (attr::DOCUMENT, s(&batch.document_name)),
            ("attempt", n(batch.attempt)),
            ("instanceCount", n(batch.instances.len())),
            (attr::UPDATED_AT, s(&now)),
            // Not an instance: no `state` (it stays out of the byState index), and it expires.
            ledger::ttl_field(),
        ],
        guard: Guard::NotExists,
    }];
    for i in &to_claim {
        let mut f = ledger::base_fields(LedgerState::Installing, exec, &now);
        f.extend([
            (attr::PLATFORM, s(&i.platform)),
            (attr::DOCUMENT, s(&batch.document_name)),
            (attr::DOCUMENT_VERSION, s(&batch.document_version)),
            (attr::BATCH_KEY, s(&key)),
        ]);
        if batch.is_agent_update() {
            // `attempts` counts the install's attempts only.
            f.extend([
                (attr::AGENT_UPDATE_ATTEMPTS, n(batch.attempt)),
                (attr::REASON_CODE, s("UpdatingAgent")),
                (
                    attr::REASON,
                    s(format!(
                        "{}: {} sent (attempt {}); the install follows",
                        fleet_core::agent::too_old(
                            i.agent_version.as_deref().unwrap_or(""),
                            batch
                                .min_agent_version
                                .as_deref()
                                .unwrap_or(fleet_core::routing::ENV_VAR_MIN_AGENT_VERSION)
                        ),
                        batch.document_name,
                        batch.attempt
                    )),
                ),
            ]);
        } else if batch.verify {
            f.extend([
                (attr::ATTEMPTS, n(batch.attempt)),
                (attr::REASON_CODE, s("Verifying")),
                (
                    attr::REASON,
                    s(format!(
                        "verification sent with {} (attempt {}): puts the agent back if it is gone or stopped",
                        batch.document_name, batch.attempt
                    )),
                ),
            ]);
        } else {
            f.extend([
                (attr::ATTEMPTS, n(batch.attempt)),
                (attr::REASON_CODE, s("Installing")),
                (
                    attr::REASON,
                    s(format!("attempt {} sent with {}", batch.attempt, batch.document_name)),
                ),
            ]);
        }
        writes.push(LedgerWrite {
            key: i.instance_id.clone(),
            fields: f,
            // A verification claims an installed instance; an install never claims one that has
            // this document and version already.
            guard: if batch.verify {
                Guard::ClaimVerify {
                    stale_before: stale_before.clone(),
                }
            } else {
                Guard::Claim {
                    document: batch.document_name.clone(),
                    document_version: batch.document_version.clone(),
                    stale_before: stale_before.clone(),
                }
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
            let code = match get_s(&item, attr::STATE) {
                Some("installed") => ReasonCode::AlreadyInstalled,
                Some("installing") => ReasonCode::InProgressElsewhere,
                _ => ReasonCode::SupersededByNewerRun,
            };
            tracing::info!(
                instance = k,
                reason = code.as_str(),
                by = get_s(&item, attr::EXECUTION_ARN),
                "instance not claimed"
            );
            resp.summary.add(DUPLICATE, platform.as_deref(), code);
            refused_instances.insert(k);
        }
    }

    if let Some(lock_item) = &existing_lock {
        // An earlier invocation created the lock: if it sent, track what its command carries
        // (the lock records those instances; the opt-out read now does not undo a send).
        let sent_with = |command_id: String, targets: Option<Vec<String>>| {
            let instances = batch
                .instances
                .iter()
                .filter(|i| !refused_instances.contains(&i.instance_id))
                .filter(|i| targets.as_ref().is_none_or(|t| t.contains(&i.instance_id)))
                .cloned()
                .collect();
            SentCommand {
                command_id,
                batch_key: key.clone(),
                batch: Batch {
                    instances,
                    ..batch.clone()
                },
            }
        };
        if let Some(command_id) = get_s(lock_item, attr::COMMAND_ID) {
            resp.reused += 1;
            tracing::info!(batch_key = key, command_id, "batch already sent: reusing its command");
            return Ok(Some(sent_with(command_id.to_string(), sent_instances(lock_item))));
        }
        let since = get_s(lock_item, attr::UPDATED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc) - Duration::seconds(60))
            .unwrap_or_else(|| Utc::now() - Duration::hours(24));
        // The earlier invocation may have sent with another document name (before a stack
        // update): look under the one its lock records, then the current and the planned names.
        let mut documents: Vec<&str> = Vec::new();
        for d in [
            get_s(lock_item, attr::DOCUMENT),
            Some(&batch.document_name),
            Some(&planned_document),
        ]
        .into_iter()
        .flatten()
        {
            if !documents.contains(&d) {
                documents.push(d);
            }
        }
        let wanted = comment(&key, &exec.execution_id);
        for document in documents {
            if let Some(FoundCommand {
                command_id,
                instance_ids,
            }) = adapters::find_command_by_comment(ssm, document, since, &wanted).await?
            {
                record_command_id(db, config, exec, &lock, &command_id, &instance_ids, None).await?;
                resp.reused += 1;
                tracing::info!(
                    batch_key = key,
                    command_id,
                    document,
                    "found the command an earlier attempt sent"
                );
                let targets = (!instance_ids.is_empty()).then_some(instance_ids);
                return Ok(Some(sent_with(command_id, targets)));
            }
        }
    }
    // This invocation sends: instances that now carry the opt-out tag are recorded as skipped.
    if !now_opted_out.is_empty() {
        record_opted_out(db, config, exec, batch.attempt, &now_opted_out, &mut resp.summary).await?;
    }
    let claimed: Vec<BatchInstance> = to_claim
        .into_iter()
        .filter(|i| !refused_instances.contains(&i.instance_id))
        .collect();
    if claimed.is_empty() {
        return Ok(None);
    }
    let mut to_send = Batch {
        instances: claimed,
        ..batch.clone()
    };
    let mut rejected_once = false;
    let mut denied_once = false;
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
                let sent = SentCommand {
                    command_id,
                    batch_key: key,
                    batch: to_send,
                };
                let pointer = max_attempts.map(|max| (&sent, max));
                record_command_id(
                    db,
                    config,
                    exec,
                    &lock,
                    &sent.command_id,
                    &request.instance_ids,
                    pointer,
                )
                .await?;
                resp.sent += 1;
                return Ok(Some(sent));
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
            Err(SendError::Other(e)) if e.error_type() == fleet_core::error::ACCESS_DENIED && !denied_once => {
                // The role denies SendCommand to instances that carry the opt-out tag (ssm:resourceTag):
                // one was tagged after its tags were last read. Read them again; if that explains the
                // denial, record those as skipped and send the rest; if not, the role really lacks it.
                denied_once = true;
                let facts = adapters::describe_ec2(ec2, &to_send.instance_ids(), &config.opt_out_tag).await?;
                let (opted, rest): (Vec<_>, Vec<_>) = to_send
                    .instances
                    .iter()
                    .cloned()
                    .partition(|i| facts.get(&i.instance_id).is_some_and(|f| f.opted_out));
                if opted.is_empty() {
                    return Err(e);
                }
                tracing::info!(
                    opted_out = opted.len(),
                    "SendCommand denied: instances opted out since their tags were read"
                );
                record_opted_out(db, config, exec, to_send.attempt, &opted, &mut resp.summary).await?;
                if rest.is_empty() {
                    return Ok(None);
                }
                to_send = Batch {
                    instances: rest,
                    ..to_send
                };
            }
            Err(SendError::Other(e)) => return Err(e),
        }
    }
}

/// The instances a lock records its command was sent to (absent on locks written before this
/// was recorded: then every instance of the batch is assumed sent).
fn sent_instances(lock: &Item) -> Option<Vec<String>> {
    let list = lock.get(SENT_INSTANCES).and_then(|v| v.as_l().ok())?;
    Some(list.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
}

/// The lock's attribute that lists the instances its command carries.
const SENT_INSTANCES: &str = "sentInstanceIds";

async fn record_opted_out(
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    exec: &Execution,
    attempt: u32,
    instances: &[BatchInstance],
    summary: &mut Summary,
) -> Result<(), FleetError> {
    let now = ledger::now_rfc3339();
    let writes = instances
        .iter()
        .map(|i| {
            let note = fleet_core::model::InstanceNote {
                instance_id: i.instance_id.clone(),
                reason_code: ReasonCode::OptedOut,
                reason: format!(
                    "opted out by tag {} before attempt {attempt}: not sent again",
                    config.opt_out_tag
                ),
                platform: Some(i.platform.clone()),
            };
            LedgerWrite {
                // Only while this execution owns the instance (it claimed it for an earlier attempt).
                guard: Guard::OwnedByExecution,
                ..ledger::note_write(&note, LedgerState::Skipped, exec, &now)
            }
        })
        .collect();
    let result = ledger::write_all(db, &config.table, exec, writes).await?;
    let refused: HashSet<&str> = result.refused.iter().map(|(k, _)| k.as_str()).collect();
    for i in instances {
        if refused.contains(i.instance_id.as_str()) {
            summary.add(DUPLICATE, Some(&i.platform), ReasonCode::SupersededByNewerRun);
        } else {
            summary.add(LedgerState::Skipped.as_str(), Some(&i.platform), ReasonCode::OptedOut);
        }
    }
    tracing::info!(
        count = instances.len(),
        tag = config.opt_out_tag,
        attempt,
        "instances opted out since the last attempt: recorded as skipped, not sent"
    );
    Ok(())
}

async fn record_command_id(
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    exec: &Execution,
    lock: &str,
    command_id: &str,
    instance_ids: &[String],
    pointer: Option<(&SentCommand, u32)>,
) -> Result<(), FleetError> {
    let mut fields = vec![
        (attr::COMMAND_ID, s(command_id)),
        (attr::UPDATED_AT, s(ledger::now_rfc3339())),
    ];
    if !instance_ids.is_empty() {
        fields.push((
            SENT_INSTANCES,
            aws_sdk_dynamodb::types::AttributeValue::L(instance_ids.iter().map(s).collect()),
        ));
    }
    let mut writes = vec![LedgerWrite {
        key: lock.to_string(),
        fields,
        guard: Guard::OwnedByExecution,
    }];
    // In the same transaction: the command's pointer, which its completion event follows to write
    // its outcomes (fleet_core::completion). A retried send finds it there and leaves it.
    if let Some((sent, max)) = pointer {
        writes.push(LedgerWrite {
            key: fleet_core::completion::command_key(command_id),
            fields: fleet_core::completion::pointer_fields(sent, exec, max),
            guard: Guard::NotExists,
        });
    }
    ledger::write_transaction(db, &config.table, exec, writes).await?;
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
            f.push((attr::REASON_CODE, s(ReasonCode::RejectedBySsm.as_str())));
            f.push((attr::REASON, s(&reason)));
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
            opt_out_tag: "fleet-install:opt-out".into(),
            documents: BTreeMap::from([
                ("linux".to_string(), "LinuxDoc".to_string()),
                ("windows".to_string(), "WinDoc".to_string()),
            ]),
        }
    }

    fn no_ec2() -> aws_sdk_ec2::Client {
        mock_client!(aws_sdk_ec2, [])
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

    /// SendCommand answering every call with this command id.
    fn sends_as(command_id: &'static str) -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_ssm::Client::send_command).then_output(move || {
            SendCommandOutput::builder()
                .command(Command::builder().command_id(command_id).build())
                .build()
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
        let r = handle(
            &ssm,
            &no_ec2(),
            &db,
            &config(),
            input(vec![batch(&ids), batch(&[60, 61])]),
        )
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
    async fn batches_sent_a_few_at_a_time_come_back_in_their_order() {
        let tx = ok_tx();
        let send = sends_as("cmd");
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx]);
        // more batches than are sent at once, of different sizes
        let batches: Vec<Value> = (0..(SEND_CONCURRENCY as u32 * 2 + 1))
            .map(|b| batch(&(b * 100..b * 100 + 1 + b).collect::<Vec<_>>()))
            .collect();
        let planned: Vec<Batch> = batches
            .iter()
            .map(|b| serde_json::from_value(b.clone()).unwrap())
            .collect();
        let r = handle(&ssm, &no_ec2(), &db, &config(), input(batches)).await.unwrap();
        assert_eq!(r.sent, planned.len());
        assert_eq!(send.num_calls(), planned.len());
        let exec = "arn:aws:states:us-east-1:1:execution:install:launch-1";
        let keys: Vec<String> = r.in_flight.iter().map(|c| c.batch_key.clone()).collect();
        let want: Vec<String> = planned.iter().map(|b| batch_key(exec, b)).collect();
        assert_eq!(keys, want);
        for (c, b) in r.in_flight.iter().zip(&planned) {
            assert_eq!(c.batch.instance_ids(), b.instance_ids());
        }
    }

    #[tokio::test]
    async fn a_sent_command_gets_its_pointer_with_the_command_in_the_same_transaction_as_its_id() {
        let claim = ok_tx();
        let with_pointer = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                let items = r.transact_items();
                items.len() == 2
                    && items[1].update().is_some_and(|u| {
                        let v = u.expression_attribute_values().unwrap();
                        u.key()[attr::INSTANCE_ID] == s("command#cmd-1")
                            && u.condition_expression() == Some("attribute_not_exists(#pk)")
                            && v.values().any(|x| x == &n(3))
                            && v.values()
                                .any(|x| x.as_s().is_ok_and(|t| t.contains("\"commandId\":\"cmd-1\"")))
                    })
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let send = sends_as("cmd-1");
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&with_pointer, &claim]);
        let mut req = input(vec![batch(&[1, 2])]);
        req["maxAttempts"] = serde_json::json!(3);
        let r = handle(&ssm, &no_ec2(), &db, &config(), req).await.unwrap();
        assert_eq!(r.sent, 1);
        assert_eq!(with_pointer.num_calls(), 1);
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
        let r = handle(&ssm, &no_ec2(), &db, &config(), input(vec![batch(&[1, 2])]))
            .await
            .unwrap();
        assert_eq!(r.sent, 1);
        assert_eq!(claim.num_calls(), 1);
        assert_eq!(record.num_calls(), 1);
    }

    fn resend(ids: &[u32], document: &str) -> Value {
        let mut b = batch(ids);
        b["attempt"] = 2.into();
        b["documentName"] = document.into();
        b
    }

    fn ec2_with_opt_out(opted_out: &'static [u32]) -> aws_smithy_mocks::Rule {
        use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
        use aws_sdk_ec2::types::{Instance, Reservation, Tag};
        mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| {
                r.instance_ids().is_empty()
                    && r.filters().len() == 1
                    && r.filters()[0].name() == Some("instance-id")
                    && r.filters()[0].values().len() <= 200
            })
            .then_compute_output(move |r| {
                let mut res = Reservation::builder();
                for v in r.filters()[0].values() {
                    let n = u32::from_str_radix(&v[2..], 16).unwrap();
                    let mut i = Instance::builder().instance_id(v);
                    if opted_out.contains(&n) {
                        // the key alone opts out, whatever the value
                        i = i.tags(Tag::builder().key("fleet-install:opt-out").value("false").build());
                    } else {
                        i = i.tags(Tag::builder().key("team").value("web").build());
                    }
                    res = res.instances(i.build());
                }
                DescribeInstancesOutput::builder().reservations(res.build()).build()
            })
    }

    fn key_of(item: &aws_sdk_dynamodb::types::TransactWriteItem) -> String {
        item.update().unwrap().key()["instanceId"].as_s().unwrap().clone()
    }

    fn value_of(item: &aws_sdk_dynamodb::types::TransactWriteItem, attr: &str) -> Option<String> {
        let u = item.update().unwrap();
        let (name, _) = u
            .expression_attribute_names()?
            .iter()
            .find(|(_, v)| v.as_str() == attr)?;
        let v = u.expression_attribute_values()?.get(&name.replacen('#', ":", 1))?;
        v.as_s().ok().cloned()
    }

    #[tokio::test]
    async fn a_resend_skips_instances_that_opted_out_since_and_records_them() {
        let describe = ec2_with_opt_out(&[2]);
        let claim = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                let keys: Vec<String> = r.transact_items().iter().map(key_of).collect();
                keys.len() == 3 && keys[0].starts_with("batch#") && keys[1..] == [id(1), id(3)]
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let skipped = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                let items = r.transact_items();
                items.len() == 1
                    && key_of(&items[0]) == id(2)
                    && value_of(&items[0], "state").as_deref() == Some("skipped")
                    && value_of(&items[0], "reasonCode").as_deref() == Some("OptedOut")
                    && items[0].update().unwrap().condition_expression() == Some("#exec = :exec")
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let record = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 1 && key_of(&r.transact_items()[0]).starts_with("batch#"))
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| r.instance_ids() == [id(1), id(3)])
            .then_output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-2").build())
                    .build()
            });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&claim, &skipped, &record]);
        let r = handle(&ssm, &ec2, &db, &config(), input(vec![resend(&[1, 2, 3], "LinuxDoc")]))
            .await
            .unwrap();
        assert_eq!(describe.num_calls(), 1);
        assert_eq!(send.num_calls(), 1);
        assert_eq!(skipped.num_calls(), 1);
        assert_eq!(r.in_flight[0].batch.instance_ids(), vec![id(1), id(3)]);
        assert_eq!(r.summary.by_state["skipped"], 1);
        assert_eq!(r.summary.by_reason["OptedOut"], 1);
    }

    fn denied() -> SendCommandError {
        SendCommandError::generic(
            aws_sdk_ssm::error::ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("User: arn:aws:sts::1:assumed-role/r/s is not authorized to perform: ssm:SendCommand with an explicit deny in an identity-based policy")
                .build(),
        )
    }

    #[tokio::test]
    async fn a_send_denied_because_an_instance_was_tagged_since_skips_it_and_sends_the_rest() {
        // The role's Deny on opted-out instances refuses the whole call: the tags are read again.
        let describe = ec2_with_opt_out(&[2]);
        let refused = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| r.instance_ids().len() == 3)
            .then_error(denied);
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| r.instance_ids() == [id(1), id(3)])
            .then_output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-3").build())
                    .build()
            });
        let tx = ok_tx();
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&refused, &send]);
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx]);
        let r = handle(&ssm, &ec2, &db, &config(), input(vec![batch(&[1, 2, 3])]))
            .await
            .unwrap();
        assert_eq!(refused.num_calls(), 1);
        assert_eq!(describe.num_calls(), 1);
        assert_eq!(send.num_calls(), 1);
        assert_eq!(r.in_flight[0].batch.instance_ids(), vec![id(1), id(3)]);
        assert_eq!(r.summary.by_reason["OptedOut"], 1);
    }

    #[tokio::test]
    async fn a_send_denied_for_another_reason_is_an_access_denied_error() {
        let describe = ec2_with_opt_out(&[]);
        let refused = mock!(aws_sdk_ssm::Client::send_command).then_error(denied);
        let tx = ok_tx();
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&refused]);
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx]);
        let err = handle(&ssm, &ec2, &db, &config(), input(vec![batch(&[1, 2])]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::ACCESS_DENIED, "{err}");
        assert_eq!(refused.num_calls(), 1, "a denial nothing explains is not retried");
        assert_eq!(describe.num_calls(), 1);
    }

    #[tokio::test]
    async fn resend_tags_are_read_200_ids_a_call_and_first_sends_do_not_read_them() {
        let describe = ec2_with_opt_out(&[]);
        let tx = ok_tx();
        let send = sends_as("cmd");
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx]);
        let batches: Vec<Value> = (0..5u32)
            .map(|b| resend(&(b * 50..b * 50 + 50).collect::<Vec<_>>(), "LinuxDoc"))
            .chain(std::iter::once(batch(&[900, 901])))
            .collect();
        let r = handle(&ssm, &ec2, &db, &config(), input(batches)).await.unwrap();
        assert_eq!(r.sent, 6);
        assert_eq!(describe.num_calls(), 2); // 250 resend ids: 200 + 50; the first send's ids are not read
    }

    #[tokio::test]
    async fn failures_to_resend_go_out_after_the_new_batches_and_their_tags_are_read() {
        let describe = ec2_with_opt_out(&[]);
        let tx = ok_tx();
        let send = sends_as("cmd");
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx]);
        let mut req = input(vec![batch(&[1, 2])]);
        req["retry"] = serde_json::json!([resend(&[7, 8, 9], "LinuxDoc")]);
        let r = handle(&ssm, &ec2, &db, &config(), req).await.unwrap();
        assert_eq!(r.sent, 2);
        assert_eq!(r.in_flight.len(), 2);
        assert_eq!(r.in_flight[0].batch.instance_ids(), vec![id(1), id(2)]);
        assert_eq!(r.in_flight[1].batch.instance_ids(), vec![id(7), id(8), id(9)]);
        assert!(r.in_flight[1].batch.attempt > 1);
        // opt-out is read again for the resend only
        assert_eq!(describe.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_resend_planned_before_a_stack_update_uses_the_current_document() {
        let claim = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                r.transact_items().len() == 2
                    && r.transact_items()
                        .iter()
                        .all(|i| value_of(i, "document").as_deref() == Some("LinuxDoc"))
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let record = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 1)
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| r.document_name() == Some("LinuxDoc") && r.document_version() == Some("1"))
            .then_output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-new").build())
                    .build()
            });
        let describe = ec2_with_opt_out(&[]);
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&claim, &record]);
        // the batch still names the document the update deleted
        let old = resend(&[1], "fleet-install-LinuxInstallDocument-OLD");
        let r = handle(&ssm, &ec2, &db, &config(), input(vec![old.clone()]))
            .await
            .unwrap();
        assert_eq!(send.num_calls(), 1);
        assert_eq!(r.in_flight[0].batch.document_name, "LinuxDoc");
        // the batch key does not depend on the document name: a retry finds the same lock
        let planned: Batch = serde_json::from_value(old).unwrap();
        let current = Batch {
            document_name: "LinuxDoc".into(),
            ..planned.clone()
        };
        assert_eq!(batch_key("arn:e", &planned), batch_key("arn:e", &current));
        // with no current name configured for the route, the batch's own name is kept
        let mut c = config();
        c.documents.clear();
        assert_eq!(current_document(&c, &planned), "fleet-install-LinuxInstallDocument-OLD");
        let env = BTreeMap::from([
            ("LEDGER_TABLE", "t"),
            ("LINUX_DOCUMENT_NAME", "L2"),
            ("WINDOWS_DOCUMENT_NAME", "W2"),
        ]);
        let c = Config::from_env(&|k: &str| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.documents["linux"], "L2");
        assert_eq!(c.documents["windows"], "W2");
        assert_eq!(c.opt_out_tag, "fleet-install:opt-out");
    }

    #[tokio::test]
    async fn a_retry_after_an_update_finds_the_command_sent_under_the_old_document_name() {
        let lock_exists = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 3)
            .then_error(|| {
                let mut lock = Item::new();
                lock.insert("updatedAt".into(), AttributeValue::S("2026-11-25T12:00:01.000Z".into()));
                lock.insert("document".into(), AttributeValue::S("OldDoc".into()));
                cancelled(vec![
                    ("ConditionalCheckFailed", Some(lock)),
                    ("None", None),
                    ("None", None),
                ])
            });
        let rest = ok_tx();
        let list_old = mock!(aws_sdk_ssm::Client::list_commands)
            .match_requests(|r| r.filters().iter().any(|f| f.value() == "OldDoc"))
            .then_compute_output(|_| {
                let key = batch_key(
                    "arn:aws:states:us-east-1:1:execution:install:launch-1",
                    &serde_json::from_value(resend(&[1, 2], "OldDoc")).unwrap(),
                );
                ListCommandsOutput::builder()
                    .commands(
                        Command::builder()
                            .command_id("cmd-old")
                            .comment(comment(&key, "arn:aws:states:us-east-1:1:execution:install:launch-1"))
                            .instance_ids(id(1))
                            .build(),
                    )
                    .build()
            });
        let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| SendCommandOutput::builder().build());
        let describe = ec2_with_opt_out(&[]);
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list_old, &send]);
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&lock_exists, &rest]);
        let r = handle(&ssm, &ec2, &db, &config(), input(vec![resend(&[1, 2], "OldDoc")]))
            .await
            .unwrap();
        assert_eq!(send.num_calls(), 0, "never sent twice");
        assert_eq!(list_old.num_calls(), 1);
        assert_eq!(r.in_flight[0].command_id, "cmd-old");
        // the command carried only instance 1: only that one is tracked
        assert_eq!(r.in_flight[0].batch.instance_ids(), vec![id(1)]);
    }

    #[tokio::test]
    async fn a_reused_command_tracks_only_the_instances_it_was_sent_to() {
        let lock_exists = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 2)
            .then_error(|| {
                let mut lock = Item::new();
                lock.insert("commandId".into(), AttributeValue::S("cmd-earlier".into()));
                lock.insert(
                    "sentInstanceIds".into(),
                    AttributeValue::L(vec![AttributeValue::S(id(1))]),
                );
                cancelled(vec![("ConditionalCheckFailed", Some(lock)), ("None", None)])
            });
        let rest = ok_tx();
        // instance 2 opted out before the earlier invocation sent; it still carries the tag
        let describe = ec2_with_opt_out(&[2]);
        let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| SendCommandOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&lock_exists, &rest]);
        let r = handle(&ssm, &ec2, &db, &config(), input(vec![resend(&[1, 2], "LinuxDoc")]))
            .await
            .unwrap();
        assert_eq!(send.num_calls(), 0);
        assert_eq!(r.reused, 1);
        assert_eq!(r.in_flight[0].batch.instance_ids(), vec![id(1)]);
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
        let r = handle(&ssm, &no_ec2(), &db, &config(), input(vec![batch(&[1, 2])]))
            .await
            .unwrap();
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
        let r = handle(&ssm, &no_ec2(), &db, &config(), input(vec![batch(&[1])]))
            .await
            .unwrap();
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
        let r = handle(&ssm, &no_ec2(), &db, &config(), input(vec![batch(&[1, 2])]))
            .await
            .unwrap();
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
        let r = handle(&ssm, &no_ec2(), &db, &config(), input(vec![batch(&[1, 2])]))
            .await
            .unwrap();
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
        let err = handle(&ssm, &no_ec2(), &db, &config(), input(vec![batch(&[1])]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::THROTTLED);
    }

    fn update_field<'a>(
        r: &'a aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput,
        i: usize,
        name: &str,
    ) -> Option<&'a AttributeValue> {
        let u = r.transact_items()[i].update()?;
        let (placeholder, _) = u.expression_attribute_names()?.iter().find(|(_, v)| *v == name)?;
        let value = placeholder.replacen('#', ":", 1);
        u.expression_attribute_values()?.get(&value)
    }

    #[tokio::test]
    async fn an_agent_update_batch_sends_aws_update_ssm_agent_without_parameters_and_counts_no_install_attempt() {
        let claim = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                r.transact_items().len() == 3
                    && (1..3).all(|i| {
                        update_field(r, i, "attempts").is_none()
                            && update_field(r, i, "agentUpdateAttempts") == Some(&AttributeValue::N("1".into()))
                            && update_field(r, i, "reasonCode") == Some(&AttributeValue::S("UpdatingAgent".into()))
                            && update_field(r, i, "document") == Some(&AttributeValue::S("AWS-UpdateSSMAgent".into()))
                    })
                    && update_field(r, 1, "reason")
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|s| {
                            s.starts_with("SSM Agent 3.3.1142.0 is older than 3.3.2746.0")
                                && s.contains("AWS-UpdateSSMAgent sent")
                        })
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let rest = ok_tx();
        let send = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| {
                r.document_name() == Some("AWS-UpdateSSMAgent")
                    && r.document_version() == Some("$DEFAULT")
                    && r.parameters().is_none_or(|p| p.is_empty())
                    && r.instance_ids() == [id(1), id(2)]
            })
            .then_output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-update").build())
                    .build()
            });
        let install = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| r.document_name() == Some("L2") && r.document_version() == Some("1"))
            .then_output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-install").build())
                    .build()
            });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send, &install]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&claim, &rest]);
        let update = serde_json::json!({
            "route": "agent-update", "documentName": "AWS-UpdateSSMAgent", "documentVersion": "$DEFAULT",
            "parameters": {}, "attempt": 1, "minAgentVersion": "3.3.2746.0",
            "instances": [
                {"instanceId": id(1), "platform": "Ubuntu", "agentVersion": "3.3.1142.0"},
                {"instanceId": id(2), "platform": "Windows", "agentVersion": "3.2.582.0"}
            ]
        });
        // the route's document is AWS's, whatever the stack's documents are called
        let env = BTreeMap::from([("LEDGER_TABLE", "t"), ("LINUX_DOCUMENT_NAME", "L2")]);
        let c = Config::from_env(&|k: &str| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.documents["agent-update"], "AWS-UpdateSSMAgent");
        let mut c = config();
        c.documents = Config::from_env(&|k: &str| env.get(k).map(|v| v.to_string()))
            .unwrap()
            .documents;
        let r = handle(&ssm, &no_ec2(), &db, &c, input(vec![update, batch(&[3])]))
            .await
            .unwrap();
        assert_eq!((send.num_calls(), install.num_calls()), (1, 1));
        assert_eq!(claim.num_calls(), 1);
        assert_eq!(r.sent, 2);
        let sent = &r.in_flight[0];
        assert_eq!(sent.command_id, "cmd-update");
        assert!(sent.batch.is_agent_update());
        assert_eq!(sent.batch.min_agent_version.as_deref(), Some("3.3.2746.0"));
        assert_eq!(sent.batch.instances[0].agent_version.as_deref(), Some("3.3.1142.0"));
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
        let r = handle(&ssm, &no_ec2(), &db, &config(), payload).await.unwrap();
        assert_eq!(r.sent, 1);
        assert_eq!(send.num_calls(), 1);
    }

    #[tokio::test]
    async fn empty_and_malformed_input() {
        let ssm = mock_client!(aws_sdk_ssm, []);
        let db = mock_client!(aws_sdk_dynamodb, []);
        let r = handle(&ssm, &no_ec2(), &db, &config(), input(vec![])).await.unwrap();
        assert!(r.in_flight.is_empty());
        let err = handle(&ssm, &no_ec2(), &db, &config(), serde_json::json!({"batches": "x"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        let mut bad = batch(&[1]);
        bad["instances"][0]["instanceId"] = Value::String("i-junk; rm -rf /".into());
        let err = handle(&ssm, &no_ec2(), &db, &config(), input(vec![batch(&[2]), bad]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        assert!(err.to_string().contains("malformed instance id"), "{err}");
        let big: Vec<u32> = (0..51).collect();
        let err = handle(&ssm, &no_ec2(), &db, &config(), input(vec![batch(&big)]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
    }
}
