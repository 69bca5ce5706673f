//! The DynamoDB ledger: one item per instance (key `instanceId`), plus the workflow's own items:
//! one per sent batch (key `batch#<key>`) that makes SendCommand idempotent, and one per rollout
//! chunk (key `rollout#...`) that holds its instance ids. Those carry a TTL (`expiresAt`) and
//! never a `state`, so they do not appear in the byState index.
//!
//! Every instance write is conditional and goes through TransactWriteItems (up to 100 items a
//! call): a condition that fails drops that one item, with the item it met, and the rest is
//! written again. So an older run never overwrites a newer state, and a call is made per 100
//! instances rather than per instance.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;

use crate::error::FleetError;
use crate::model::{is_valid_instance_id, Execution, InstanceNote, LedgerState};
use crate::record::attr;

/// TransactWriteItems takes at most 100 items.
pub const MAX_TRANSACTION: usize = 100;

/// Key prefix of a batch's send lock (`batch#<batch key>`): makes SendCommand idempotent.
pub const BATCH_PREFIX: &str = "batch#";
/// Key prefix of a rollout chunk's target list (`rollout#<rollout id>#w<wave>#c<chunk>`).
pub const ROLLOUT_PREFIX: &str = "rollout#";
/// Key prefix of the sweep's items: its chunks (`sweep#<sweep id>#c<n>`) and its lock.
pub const SWEEP_PREFIX: &str = "sweep#";
/// The lock that keeps two sweeps from running at once (a lease: `holder`, `leaseUntil`).
pub const SWEEP_LOCK_KEY: &str = "sweep#lock";
/// The table's TTL attribute (epoch seconds, a Number). Only non-instance items carry it:
/// DynamoDB deletes them some time after it passes. Instance items never expire.
pub const TTL_ATTRIBUTE: &str = attr::EXPIRES_AT;
/// How long batch locks and rollout chunk lists are kept: 35 days. Longer than the 14 days in
/// which Step Functions can redrive a failed execution (a redriven send must still find its lock,
/// a redriven chunk its targets) and than the 30 days SSM keeps command history (a lock's command
/// id stays resolvable as long as SSM knows the command).
pub const NON_INSTANCE_TTL_SECONDS: i64 = 35 * 24 * 3600;

/// The ledger key of a batch's send lock.
pub fn batch_lock_key(batch_key: &str) -> String {
    format!("{BATCH_PREFIX}{batch_key}")
}

/// The ledger key of a rollout chunk's target list.
pub fn rollout_targets_key(rollout_id: &str, wave: usize, chunk: usize) -> String {
    format!("{ROLLOUT_PREFIX}{rollout_id}#w{wave}#c{chunk}")
}

/// The ledger key of one of a sweep's chunks.
pub fn sweep_chunk_key(sweep_id: &str, chunk: usize) -> String {
    format!("{SWEEP_PREFIX}{sweep_id}#c{chunk}")
}

/// True for the workflow's own items (batch locks, rollout chunks, sweep chunks and lock), which
/// are not instances.
pub fn is_non_instance_key(key: &str) -> bool {
    key.starts_with(BATCH_PREFIX)
        || key.starts_with(ROLLOUT_PREFIX)
        || key.starts_with(SWEEP_PREFIX)
        || key.starts_with(crate::completion::WAIT_PREFIX)
        || key.starts_with(crate::completion::COMMAND_PREFIX)
}

/// The `expiresAt` value of a non-instance item written at `now`.
pub fn expires_at(now: chrono::DateTime<chrono::Utc>) -> i64 {
    now.timestamp() + NON_INSTANCE_TTL_SECONDS
}

/// The TTL field of a non-instance item written now.
pub fn ttl_field() -> (&'static str, AttributeValue) {
    (TTL_ATTRIBUTE, n(expires_at(chrono::Utc::now())))
}

/// Every ledger write passes here: an instance item's key must be a well-formed instance id, and
/// a non-instance item (batch lock, rollout chunk) never carries `state` (it would show in the
/// byState index and count as an instance). A malformed id is never written as a key.
pub fn check_write(w: &LedgerWrite) -> Result<(), FleetError> {
    if is_non_instance_key(&w.key) {
        if w.fields.iter().any(|(name, _)| *name == attr::STATE) {
            return Err(FleetError::invalid_input(format!(
                "ledger item {} is not an instance and must not carry a state",
                crate::text::clip(&w.key, 80)
            )));
        }
        return Ok(());
    }
    if !is_valid_instance_id(&w.key) {
        return Err(FleetError::invalid_input(format!(
            "refusing to write malformed instance id {:?} to the ledger (expected i- and 8 or 17 lowercase hex digits)",
            crate::text::clip(&w.key, 64)
        )));
    }
    Ok(())
}

pub type Item = HashMap<String, AttributeValue>;

/// When a write may replace what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// Unmanaged/skipped notes: only over nothing, or over an older run's non-installed state.
    NotNewerNorInstalled,
    /// Claiming instances for a send: as above, and not while another run installs them
    /// (unless its claim is older than `stale_before`), and not when already installed with the
    /// same document and version.
    Claim {
        document: String,
        document_version: String,
        stale_before: String,
    },
    /// Outcomes: only the execution that claimed the instance writes its outcome.
    OwnedByExecution,
    /// A command's final outcome: as `OwnedByExecution`, and only once per command (`outcomeOf`), so
    /// that the first of its two readers (the completion event, the workflow's check) writes it.
    Outcome { command_id: String },
    /// A failed run's instances: those it has not finished and no newer run or install owns.
    Unfinished,
    /// Batch lock: only when it does not exist.
    NotExists,
    /// Claiming installed instances for a verification (the sweep's drift check): only an
    /// installed item (or one this execution, or a stale claim, holds), never over a newer run.
    ClaimVerify { stale_before: String },
    /// The sweep takes a failed instance for a retry: only while it is failed and its retry time
    /// (`retryAfter`, RFC 3339) has come, so two sweeps never both take it.
    SweepRetry { now: String },
    /// The instance no longer exists: any instance item that is not gone already.
    Gone,
}

/// One conditional update of one item. A field whose name starts with `+` is a counter: its
/// (Number) value is added to what is there (`driftCount`, `sweepAttempts`), not set.
#[derive(Debug, Clone)]
pub struct LedgerWrite {
    pub key: String,
    pub fields: Vec<(&'static str, AttributeValue)>,
    pub guard: Guard,
}

/// What a conditional batch of writes did.
#[derive(Debug, Default)]
pub struct WriteResult {
    pub written: Vec<String>,
    /// Keys whose condition failed, with the item that was there.
    pub refused: Vec<(String, Item)>,
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The fields every instance write carries.
pub fn base_fields(state: LedgerState, exec: &Execution, now: &str) -> Vec<(&'static str, AttributeValue)> {
    vec![
        (attr::STATE, s(state.as_str())),
        (attr::EXECUTION_ARN, s(&exec.execution_id)),
        (attr::EXECUTION_STARTED_AT, s(&exec.execution_start_time)),
        (attr::UPDATED_AT, s(now)),
    ]
}

/// The write for an unmanaged or skipped instance.
pub fn note_write(note: &InstanceNote, state: LedgerState, exec: &Execution, now: &str) -> LedgerWrite {
    let mut fields = base_fields(state, exec, now);
    fields.push((attr::REASON_CODE, s(note.reason_code.as_str())));
    fields.push((attr::REASON, s(&note.reason)));
    if let Some(p) = &note.platform {
        fields.push((attr::PLATFORM, s(p)));
    }
    LedgerWrite {
        key: note.instance_id.clone(),
        fields,
        guard: Guard::NotNewerNorInstalled,
    }
}

/// The names and values both claims ([`Guard::Claim`], [`Guard::ClaimVerify`]) test: the item
/// (`#pk`), the run that wrote it (`#started` against `:started`), its state (`#state` against
/// `:installing` and `:installed`), the execution that holds it (`#exec` against `:exec`) and when
/// it was last written (`#updated` against the stale cutoff `:stale`).
fn claim_terms(
    names: &mut HashMap<String, String>,
    values: &mut HashMap<String, AttributeValue>,
    exec: &Execution,
    stale_before: &str,
) {
    for (name, attribute) in [
        ("#pk", attr::INSTANCE_ID),
        ("#started", attr::EXECUTION_STARTED_AT),
        ("#state", attr::STATE),
        ("#exec", attr::EXECUTION_ARN),
        ("#updated", attr::UPDATED_AT),
    ] {
        names.insert(name.into(), attribute.into());
    }
    for (value, v) in [
        (":started", s(&exec.execution_start_time)),
        (":exec", s(&exec.execution_id)),
        (":installing", s(LedgerState::Installing.as_str())),
        (":installed", s(LedgerState::Installed.as_str())),
        (":stale", s(stale_before)),
    ] {
        values.insert(value.into(), v);
    }
}

fn to_update(table: &str, w: &LedgerWrite, exec: &Execution) -> Result<Update, FleetError> {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut values: HashMap<String, AttributeValue> = HashMap::new();
    let mut sets = Vec::new();
    for (i, (name, value)) in w.fields.iter().enumerate() {
        values.insert(format!(":f{i}"), value.clone());
        match name.strip_prefix('+') {
            Some(counter) => {
                names.insert(format!("#f{i}"), counter.to_string());
                values.insert(":zero".into(), n(0));
                sets.push(format!("#f{i} = if_not_exists(#f{i}, :zero) + :f{i}"));
            }
            None => {
                names.insert(format!("#f{i}"), name.to_string());
                sets.push(format!("#f{i} = :f{i}"));
            }
        }
    }
    names.insert("#created".into(), attr::CREATED_AT.into());
    values.insert(":now".into(), s(now_rfc3339()));
    sets.push("#created = if_not_exists(#created, :now)".into());
    let condition = match &w.guard {
        Guard::SweepRetry { now } => {
            names.insert("#state".into(), attr::STATE.into());
            names.insert("#retry".into(), attr::RETRY_AFTER.into());
            values.insert(":failed".into(), s(LedgerState::Failed.as_str()));
            values.insert(":due".into(), s(now));
            "#state = :failed AND (attribute_not_exists(#retry) OR #retry <= :due)".to_string()
        }
        Guard::Gone => {
            names.insert("#pk".into(), attr::INSTANCE_ID.into());
            names.insert("#state".into(), attr::STATE.into());
            values.insert(":gone".into(), s(LedgerState::Gone.as_str()));
            "attribute_exists(#pk) AND #state <> :gone".to_string()
        }
        Guard::ClaimVerify { stale_before } => {
            claim_terms(&mut names, &mut values, exec, stale_before);
            "attribute_exists(#pk) AND #started <= :started \
             AND (#state = :installed OR (#state = :installing AND (#exec = :exec OR #updated < :stale)))"
                .to_string()
        }
        Guard::NotExists => {
            names.insert("#pk".into(), attr::INSTANCE_ID.into());
            "attribute_not_exists(#pk)".to_string()
        }
        Guard::OwnedByExecution => {
            names.insert("#exec".into(), attr::EXECUTION_ARN.into());
            values.insert(":exec".into(), s(&exec.execution_id));
            "#exec = :exec".to_string()
        }
        Guard::Outcome { command_id } => {
            names.insert("#exec".into(), attr::EXECUTION_ARN.into());
            names.insert("#outcome".into(), attr::OUTCOME_OF.into());
            values.insert(":exec".into(), s(&exec.execution_id));
            values.insert(":outcome".into(), s(command_id));
            "#exec = :exec AND (attribute_not_exists(#outcome) OR #outcome <> :outcome)".to_string()
        }
        Guard::Unfinished => {
            names.insert("#pk".into(), attr::INSTANCE_ID.into());
            names.insert("#started".into(), attr::EXECUTION_STARTED_AT.into());
            names.insert("#state".into(), attr::STATE.into());
            names.insert("#exec".into(), attr::EXECUTION_ARN.into());
            values.insert(":started".into(), s(&exec.execution_start_time));
            values.insert(":exec".into(), s(&exec.execution_id));
            values.insert(":installed".into(), s(LedgerState::Installed.as_str()));
            values.insert(":unmanaged".into(), s(LedgerState::Unmanaged.as_str()));
            values.insert(":skipped".into(), s(LedgerState::Skipped.as_str()));
            values.insert(":failed".into(), s(LedgerState::Failed.as_str()));
            "attribute_not_exists(#pk) OR (#started <= :started AND #state <> :installed \
             AND NOT (#exec = :exec AND #state IN (:unmanaged, :skipped, :failed)))"
                .to_string()
        }
        Guard::NotNewerNorInstalled => {
            names.insert("#pk".into(), attr::INSTANCE_ID.into());
            names.insert("#started".into(), attr::EXECUTION_STARTED_AT.into());
            names.insert("#state".into(), attr::STATE.into());
            values.insert(":started".into(), s(&exec.execution_start_time));
            values.insert(":installed".into(), s(LedgerState::Installed.as_str()));
            "attribute_not_exists(#pk) OR (#started <= :started AND #state <> :installed)".to_string()
        }
        Guard::Claim {
            document,
            document_version,
            stale_before,
        } => {
            claim_terms(&mut names, &mut values, exec, stale_before);
            names.insert("#doc".into(), attr::DOCUMENT.into());
            names.insert("#ver".into(), attr::DOCUMENT_VERSION.into());
            values.insert(":doc".into(), s(document));
            values.insert(":ver".into(), s(document_version));
            "attribute_not_exists(#pk) OR (#started <= :started \
             AND (#state <> :installing OR #exec = :exec OR #updated < :stale) \
             AND NOT (#state = :installed AND #doc = :doc AND #ver = :ver))"
                .to_string()
        }
    };
    Update::builder()
        .table_name(table)
        .key(attr::INSTANCE_ID, s(&w.key))
        .update_expression(format!("SET {}", sets.join(", ")))
        .condition_expression(condition)
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(|e| FleetError::invalid_input(format!("cannot build ledger update: {e}")))
}

/// Apply conditional writes, at most 100 per transaction. Items whose condition fails are
/// returned in `refused` with the item they met; everything else is written.
pub async fn write_all(
    client: &Client,
    table: &str,
    exec: &Execution,
    writes: Vec<LedgerWrite>,
) -> Result<WriteResult, FleetError> {
    let mut result = WriteResult::default();
    for w in &writes {
        check_write(w)?;
    }
    for chunk in writes.chunks(MAX_TRANSACTION) {
        let r = write_transaction(client, table, exec, chunk.to_vec()).await?;
        result.written.extend(r.written);
        result.refused.extend(r.refused);
    }
    Ok(result)
}

/// Apply up to 100 writes as one transaction, dropping refused items and retrying the rest.
/// Writes that must succeed or fail together (a batch lock and its instances) use this directly.
pub async fn write_transaction(
    client: &Client,
    table: &str,
    exec: &Execution,
    mut pending: Vec<LedgerWrite>,
) -> Result<WriteResult, FleetError> {
    for w in &pending {
        check_write(w)?;
    }
    let mut result = WriteResult::default();
    let mut conflicts = 0;
    while !pending.is_empty() {
        let items = pending
            .iter()
            .map(|w| Ok(TransactWriteItem::builder().update(to_update(table, w, exec)?).build()))
            .collect::<Result<Vec<_>, FleetError>>()?;
        match client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => {
                result.written.extend(pending.drain(..).map(|w| w.key));
            }
            Err(err) => {
                let service_err = err.as_service_error();
                if let Some(TransactWriteItemsError::TransactionCanceledException(tce)) = service_err {
                    let reasons = tce.cancellation_reasons();
                    let mut keep = Vec::new();
                    let mut refused_any = false;
                    let mut throttled = false;
                    for (i, w) in pending.drain(..).enumerate() {
                        let reason = reasons.get(i);
                        match reason.and_then(|r| r.code()) {
                            Some("ConditionalCheckFailed") => {
                                refused_any = true;
                                result
                                    .refused
                                    .push((w.key, reason.and_then(|r| r.item()).cloned().unwrap_or_default()));
                            }
                            Some("ThrottlingError")
                            | Some("ProvisionedThroughputExceeded")
                            | Some("RequestLimitExceeded") => {
                                throttled = true;
                                keep.push(w);
                            }
                            _ => keep.push(w),
                        }
                    }
                    pending = keep;
                    if throttled {
                        return Err(FleetError::Throttled {
                            service: "dynamodb:TransactWriteItems".into(),
                            message: "transaction throttled".into(),
                        });
                    }
                    if !refused_any {
                        // TransactionConflict or similar: another writer holds an item; try again briefly.
                        conflicts += 1;
                        if conflicts > 3 {
                            return Err(FleetError::Transient {
                                service: "dynamodb:TransactWriteItems".into(),
                                message: format!(
                                    "transaction cancelled repeatedly: {:?}",
                                    reasons.iter().filter_map(|r| r.code()).collect::<Vec<_>>()
                                ),
                            });
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50 * conflicts)).await;
                    }
                } else {
                    return Err(FleetError::from_sdk("dynamodb", "TransactWriteItems", &err));
                }
            }
        }
    }
    Ok(result)
}

/// Read a string attribute.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(|s| s.as_str())
}

/// Store rollout chunks (instance id lists) with BatchWriteItem, 25 items a call, retrying
/// unprocessed items with backoff.
pub async fn put_target_chunks(
    client: &Client,
    table: &str,
    chunks: &[(String, Vec<String>)],
    rollout_id: &str,
) -> Result<(), FleetError> {
    for (key, ids) in chunks {
        if !key.starts_with(ROLLOUT_PREFIX) {
            return Err(FleetError::invalid_input(format!(
                "rollout chunk key {:?} does not start with {ROLLOUT_PREFIX}",
                crate::text::clip(key, 80)
            )));
        }
        if let Some(bad) = ids.iter().find(|id| !is_valid_instance_id(id)) {
            return Err(FleetError::invalid_input(format!(
                "rollout chunk {key} holds malformed instance id {:?}",
                crate::text::clip(bad, 64)
            )));
        }
    }
    let now = now_rfc3339();
    let (ttl_name, ttl_value) = ttl_field();
    let items = chunks
        .iter()
        .map(|(key, ids)| {
            let mut item = Item::new();
            item.insert(attr::INSTANCE_ID.into(), s(key));
            item.insert(attr::KIND.into(), s("rolloutTargets"));
            item.insert(attr::ROLLOUT_ID.into(), s(rollout_id));
            item.insert(
                attr::INSTANCE_IDS.into(),
                AttributeValue::L(ids.iter().map(s).collect()),
            );
            item.insert(attr::CREATED_AT.into(), s(&now));
            // Not an instance: expires, and never carries `state`.
            item.insert(ttl_name.into(), ttl_value.clone());
            item
        })
        .collect();
    put_items(client, table, items).await
}

/// Store a sweep's chunks: each holds the instance ids of one install execution, and which of
/// them are installed already (verified, not installed).
pub async fn put_sweep_chunks(
    client: &Client,
    table: &str,
    sweep_id: &str,
    chunks: &[(String, Chunk)],
) -> Result<(), FleetError> {
    for (key, chunk) in chunks {
        if !key.starts_with(SWEEP_PREFIX) || key == SWEEP_LOCK_KEY {
            return Err(FleetError::invalid_input(format!(
                "sweep chunk key {:?} does not start with {SWEEP_PREFIX}",
                crate::text::clip(key, 80)
            )));
        }
        if let Some(bad) = chunk.instance_ids.iter().find(|id| !is_valid_instance_id(id)) {
            return Err(FleetError::invalid_input(format!(
                "sweep chunk {key} holds malformed instance id {:?}",
                crate::text::clip(bad, 64)
            )));
        }
    }
    let now = now_rfc3339();
    let (ttl_name, ttl_value) = ttl_field();
    let list = |ids: &[String]| AttributeValue::L(ids.iter().map(s).collect());
    let items = chunks
        .iter()
        .map(|(key, chunk)| {
            let mut item = Item::new();
            item.insert(attr::INSTANCE_ID.into(), s(key));
            item.insert(attr::KIND.into(), s("sweepTargets"));
            item.insert(attr::SWEEP_ID.into(), s(sweep_id));
            item.insert(attr::INSTANCE_IDS.into(), list(&chunk.instance_ids));
            if !chunk.verify_ids.is_empty() {
                item.insert(attr::VERIFY_IDS.into(), list(&chunk.verify_ids));
            }
            item.insert(attr::CREATED_AT.into(), s(&now));
            item.insert(ttl_name.into(), ttl_value.clone());
            item
        })
        .collect();
    put_items(client, table, items).await
}

/// BatchGetItem takes at most 100 keys.
pub const MAX_BATCH_GET: usize = 100;

/// The ledger records of the given instances (strongly consistent reads, 100 keys a call,
/// unprocessed keys asked again with backoff). Ids without an item are absent from the map.
pub async fn get_records(
    client: &Client,
    table: &str,
    ids: &[String],
) -> Result<HashMap<String, crate::record::LedgerRecord>, FleetError> {
    Ok(get_items(client, table, ids)
        .await?
        .values()
        .filter_map(crate::record::LedgerRecord::from_item)
        .map(|r| (r.instance_id.clone(), r))
        .collect())
}

/// The items under the given keys, by key: BatchGetItem, 100 keys a call, strongly consistent;
/// unprocessed keys are asked again, with backoff while a call returns nothing. Keys without an
/// item are absent from the map.
pub async fn get_items(client: &Client, table: &str, keys: &[String]) -> Result<HashMap<String, Item>, FleetError> {
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    let mut found = HashMap::new();
    for group in keys.chunks(MAX_BATCH_GET) {
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(
                    group
                        .iter()
                        .map(|k| Item::from([(attr::INSTANCE_ID.to_string(), s(k))]))
                        .collect(),
                ))
                .consistent_read(true)
                .build()
                .map_err(|e| FleetError::invalid_input(e.to_string()))?,
        );
        let mut tries = 0;
        while let Some(keys) = request.take() {
            let resp = client
                .batch_get_item()
                .request_items(table, keys)
                .send()
                .await
                .map_err(|e| FleetError::from_sdk("dynamodb", "BatchGetItem", &e))?;
            let got = resp.responses().and_then(|r| r.get(table)).cloned().unwrap_or_default();
            let progressed = !got.is_empty();
            for item in got {
                if let Some(key) = get_s(&item, attr::INSTANCE_ID).map(str::to_string) {
                    found.insert(key, item);
                }
            }
            request = resp
                .unprocessed_keys()
                .and_then(|u| u.get(table))
                .filter(|k| !k.keys().is_empty())
                .cloned();
            if request.is_some() && !progressed {
                tries += 1;
                if tries > 8 {
                    return Err(FleetError::Throttled {
                        service: "dynamodb:BatchGetItem".into(),
                        message: format!("keys still unprocessed after {tries} tries"),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << tries.min(6))).await;
            }
        }
    }
    Ok(found)
}

/// Put whole items with BatchWriteItem, 25 a call, retrying unprocessed items with backoff (the
/// ledger's chunk and page items; the run results table's items too).
pub async fn put_items(client: &Client, table: &str, items: Vec<Item>) -> Result<(), FleetError> {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    for group in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = group
            .iter()
            .map(|item| {
                let put = PutRequest::builder()
                    .set_item(Some(item.clone()))
                    .build()
                    .map_err(|e| FleetError::invalid_input(e.to_string()))?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<_, FleetError>>()?;
        let mut tries = 0;
        while !requests.is_empty() {
            let resp = client
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .map_err(|e| FleetError::from_sdk("dynamodb", "BatchWriteItem", &e))?;
            requests = resp
                .unprocessed_items()
                .and_then(|u| u.get(table))
                .cloned()
                .unwrap_or_default();
            if !requests.is_empty() {
                tries += 1;
                if tries > 8 {
                    return Err(FleetError::Throttled {
                        service: "dynamodb:BatchWriteItem".into(),
                        message: format!("{} items still unprocessed after {tries} tries", requests.len()),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << tries.min(6))).await;
            }
        }
    }
    Ok(())
}

/// Load a rollout chunk's instance ids.
pub async fn load_target_chunk(client: &Client, table: &str, key: &str) -> Result<Vec<String>, FleetError> {
    Ok(load_chunk(client, table, key).await?.instance_ids)
}

/// A chunk of work kept in the ledger: a rollout's (`rollout#`) or a sweep's (`sweep#`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunk {
    pub instance_ids: Vec<String>,
    /// The ids (also in `instance_ids`) that are installed already: a verification, not an install.
    pub verify_ids: Vec<String>,
}

/// One ledger item by key, read consistently (the workflow's own items: chunks, waits), or None.
pub async fn get_item(client: &Client, table: &str, key: &str) -> Result<Option<Item>, FleetError> {
    let resp = client
        .get_item()
        .table_name(table)
        .key(attr::INSTANCE_ID, s(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| FleetError::from_sdk("dynamodb", "GetItem", &e))?;
    Ok(resp.item().cloned())
}

/// Load a rollout's or a sweep's chunk.
pub async fn load_chunk(client: &Client, table: &str, key: &str) -> Result<Chunk, FleetError> {
    if !(key.starts_with(ROLLOUT_PREFIX) || key.starts_with(SWEEP_PREFIX)) || key == SWEEP_LOCK_KEY {
        return Err(FleetError::invalid_input(format!(
            "targetsKey {:?} is not a rollout or sweep chunk (it starts with {ROLLOUT_PREFIX} or {SWEEP_PREFIX})",
            crate::text::clip(key, 80)
        )));
    }
    let found = get_item(client, table, key).await?;
    let item = found
        .as_ref()
        .ok_or_else(|| FleetError::invalid_input(format!("no rollout targets stored under {key}")))?;
    let list = item
        .get(attr::INSTANCE_IDS)
        .and_then(|v| v.as_l().ok())
        .ok_or_else(|| FleetError::invalid_input(format!("{key} holds no instanceIds list")))?;
    let strings = |l: &[AttributeValue]| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect::<Vec<_>>();
    Ok(Chunk {
        instance_ids: strings(list),
        verify_ids: item
            .get(attr::VERIFY_IDS)
            .and_then(|v| v.as_l().ok())
            .map(|l| strings(l))
            .unwrap_or_default(),
    })
}

/// Key infix of a rollout's listed pages: `rollout#<rollout id>#list#<page>`.
pub const ROLLOUT_LIST_INFIX: &str = "#list#";
/// `kind` of a listed page's item.
pub const ROLLOUT_LIST_KIND: &str = "rolloutList";

/// The ledger key of page `page` (0, 1, ...) of a rollout's target listing.
pub fn rollout_list_key(rollout_id: &str, page: usize) -> String {
    format!("{ROLLOUT_PREFIX}{rollout_id}{ROLLOUT_LIST_INFIX}{page}")
}

/// Store listed pages of a rollout's targets, one item per DescribeInstances page: key
/// [`rollout_list_key`], `kind` rolloutList, `rolloutId`, `page`, `targets` (a map from platform
/// family to the instance ids of that family), `createdAt` and the TTL. Like the chunk lists, a
/// page is not an instance: it expires and never carries `state` ([`check_write`]).
pub async fn put_target_list_pages(
    client: &Client,
    table: &str,
    rollout_id: &str,
    pages: &[(usize, Vec<crate::rollout::Target>)],
) -> Result<(), FleetError> {
    let now = now_rfc3339();
    let mut items = Vec::with_capacity(pages.len());
    for (page, targets) in pages {
        let key = rollout_list_key(rollout_id, *page);
        if let Some(bad) = targets.iter().find(|t| !is_valid_instance_id(&t.instance_id)) {
            return Err(FleetError::invalid_input(format!(
                "listed page {key} holds malformed instance id {:?}",
                crate::text::clip(&bad.instance_id, 64)
            )));
        }
        let mut by_family: std::collections::BTreeMap<&str, Vec<AttributeValue>> = std::collections::BTreeMap::new();
        for t in targets {
            by_family.entry(t.family.as_str()).or_default().push(s(&t.instance_id));
        }
        let fields: Vec<(&'static str, AttributeValue)> = vec![
            (attr::KIND, s(ROLLOUT_LIST_KIND)),
            (attr::ROLLOUT_ID, s(rollout_id)),
            ("page", n(page)),
            (
                "targets",
                AttributeValue::M(
                    by_family
                        .into_iter()
                        .map(|(family, ids)| (family.to_string(), AttributeValue::L(ids)))
                        .collect(),
                ),
            ),
            (attr::CREATED_AT, s(&now)),
            ttl_field(),
        ];
        let write = LedgerWrite {
            key,
            fields,
            guard: Guard::NotExists,
        };
        check_write(&write)?;
        let mut item: Item = write.fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        item.insert(attr::INSTANCE_ID.into(), s(write.key));
        items.push(item);
    }
    put_items(client, table, items).await
}

/// Read pages `0..pages` of a rollout's target listing ([`put_target_list_pages`]) with
/// BatchGetItem (100 keys a call, consistent reads, unprocessed keys retried with backoff).
/// Targets come back in page order; within a page, by family. A page that is missing (never
/// written, or expired) is an error: the plan would leave its targets out.
pub async fn load_target_list_pages(
    client: &Client,
    table: &str,
    rollout_id: &str,
    pages: usize,
) -> Result<Vec<crate::rollout::Target>, FleetError> {
    let keys: Vec<String> = (0..pages).map(|p| rollout_list_key(rollout_id, p)).collect();
    let found = get_items(client, table, &keys).await?;
    let mut out = Vec::new();
    for key in &keys {
        let item = found.get(key).ok_or_else(|| {
            FleetError::invalid_input(format!(
                "listed page {key} is not in the ledger (never written, or expired): list the targets again"
            ))
        })?;
        let targets = item
            .get("targets")
            .and_then(|v| v.as_m().ok())
            .ok_or_else(|| FleetError::invalid_input(format!("listed page {key} holds no targets map")))?;
        let mut families: Vec<(&String, &AttributeValue)> = targets.iter().collect();
        families.sort_by(|a, b| a.0.cmp(b.0));
        for (family, ids) in families {
            let ids = ids
                .as_l()
                .map_err(|_| FleetError::invalid_input(format!("listed page {key}: {family} is not a list")))?;
            for id in ids.iter().filter_map(|v| v.as_s().ok()) {
                out.push(crate::rollout::Target {
                    instance_id: id.clone(),
                    family: family.clone(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Execution {
        Execution {
            execution_id: "arn:e".into(),
            execution_start_time: "2026-11-25T12:00:00.000Z".into(),
        }
    }

    /// DynamoDB rejects names or values that the expressions do not use: every guard must use all it declares.
    #[test]
    fn counters_are_added_to_not_set() {
        let w = LedgerWrite {
            key: "i-0123456789abcdef0".into(),
            fields: vec![("verifiedAt", s("t")), ("+driftCount", n(1))],
            guard: Guard::OwnedByExecution,
        };
        let u = to_update("t", &w, &exec()).unwrap();
        assert!(u.update_expression().contains("#f0 = :f0"));
        assert!(u.update_expression().contains("#f1 = if_not_exists(#f1, :zero) + :f1"));
        assert_eq!(u.expression_attribute_names().unwrap()["#f1"], "driftCount");
    }

    #[test]
    fn sweep_items_are_not_instances() {
        assert_eq!(sweep_chunk_key("s1", 4), "sweep#s1#c4");
        assert!(is_non_instance_key(&sweep_chunk_key("s1", 0)));
        assert!(is_non_instance_key(SWEEP_LOCK_KEY));
        assert!(check_write(&LedgerWrite {
            key: SWEEP_LOCK_KEY.into(),
            fields: vec![("state", s("installed"))],
            guard: Guard::NotExists,
        })
        .is_err());
    }

    #[test]
    fn every_declared_name_and_value_is_used() {
        let guards = [
            Guard::NotExists,
            Guard::OwnedByExecution,
            Guard::Unfinished,
            Guard::NotNewerNorInstalled,
            Guard::Claim {
                document: "D".into(),
                document_version: "1".into(),
                stale_before: "t".into(),
            },
            Guard::ClaimVerify {
                stale_before: "t".into(),
            },
            Guard::SweepRetry { now: "t".into() },
            Guard::Gone,
            Guard::Outcome {
                command_id: "c1".into(),
            },
        ];
        for guard in guards {
            let w = LedgerWrite {
                key: "i-1".into(),
                fields: vec![("state", s("failed")), ("+driftCount", n(1))],
                guard: guard.clone(),
            };
            let u = to_update("t", &w, &exec()).unwrap();
            let text = format!("{} {}", u.update_expression(), u.condition_expression().unwrap_or(""));
            for k in u.expression_attribute_names().unwrap().keys() {
                assert!(text.contains(k.as_str()), "{guard:?}: name {k} unused in {text}");
            }
            for k in u.expression_attribute_values().unwrap().keys() {
                assert!(text.contains(k.as_str()), "{guard:?}: value {k} unused in {text}");
            }
        }
    }

    fn write(key: &str, fields: Vec<(&'static str, AttributeValue)>) -> LedgerWrite {
        LedgerWrite {
            key: key.into(),
            fields,
            guard: Guard::NotExists,
        }
    }

    #[test]
    fn malformed_ids_are_never_keys_and_non_instance_items_never_carry_state() {
        assert!(check_write(&write("i-0123456789abcdef0", vec![("state", s("failed"))])).is_ok());
        assert!(check_write(&write("i-0123abcd", vec![("state", s("failed"))])).is_ok());
        for bad in [
            "not-an-id",
            "",
            "i-0123456789ABCDEF0",
            "i-日本語",
            "i-0123456789abcdef0 ",
        ] {
            let err = check_write(&write(bad, vec![("state", s("skipped"))])).unwrap_err();
            assert_eq!(err.error_type(), crate::error::INVALID_INPUT, "{bad}");
            assert!(err.to_string().contains("malformed instance id"), "{err}");
        }
        assert!(check_write(&write(&batch_lock_key("abc"), vec![("kind", s("batch")), ttl_field()])).is_ok());
        let err = check_write(&write(&batch_lock_key("abc"), vec![("state", s("installing"))])).unwrap_err();
        assert_eq!(err.error_type(), crate::error::INVALID_INPUT);
        assert!(check_write(&write(&rollout_targets_key("r", 0, 1), vec![("state", s("x"))])).is_err());
    }

    #[tokio::test]
    async fn a_malformed_key_fails_before_any_call() {
        let client = aws_smithy_mocks::mock_client!(aws_sdk_dynamodb, []);
        let err = write_all(
            &client,
            "t",
            &exec(),
            vec![write("junk", vec![("state", s("skipped"))])],
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), crate::error::INVALID_INPUT);
        let err = put_target_chunks(
            &client,
            "t",
            &[(rollout_targets_key("r", 0, 0), vec!["junk".into()])],
            "r",
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), crate::error::INVALID_INPUT);
        let err = load_target_chunk(&client, "t", "i-0123456789abcdef0")
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), crate::error::INVALID_INPUT);
    }

    #[test]
    fn keys_prefixes_and_ttl() {
        assert_eq!(batch_lock_key("k1"), "batch#k1");
        assert_eq!(rollout_targets_key("r1", 2, 3), "rollout#r1#w2#c3");
        assert!(is_non_instance_key("batch#k1") && is_non_instance_key("rollout#r1#w0#c0"));
        assert!(!is_non_instance_key("i-0123456789abcdef0"));
        assert!(is_non_instance_key(&crate::completion::wait_key("token")));
        assert!(is_non_instance_key(&crate::completion::command_key("c-1")));
        assert_eq!(TTL_ATTRIBUTE, "expiresAt");
        // longer than the 14-day redrive window and the 30-day SSM command history
        const { assert!(NON_INSTANCE_TTL_SECONDS > 30 * 24 * 3600) };
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(expires_at(now), 1_800_000_000 + 35 * 86400);
        let (name, value) = ttl_field();
        assert_eq!(name, "expiresAt");
        let secs: i64 = value.as_n().unwrap().parse().unwrap();
        assert!(secs > chrono::Utc::now().timestamp() + 34 * 86400);
    }

    #[tokio::test]
    async fn rollout_chunks_expire_and_carry_no_state() {
        use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
        let rule = aws_smithy_mocks::mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| {
                let items = &r.request_items().unwrap()["t"];
                items.len() == 2
                    && items.iter().all(|w| {
                        let item = w.put_request().unwrap().item();
                        item.get("instanceId")
                            .and_then(|v| v.as_s().ok())
                            .is_some_and(|k| k.starts_with("rollout#"))
                            && item.get("expiresAt").and_then(|v| v.as_n().ok()).is_some_and(|n| {
                                n.parse::<i64>().unwrap() > chrono::Utc::now().timestamp() + 34 * 86400
                            })
                            && !item.contains_key("state")
                    })
            })
            .then_output(|| BatchWriteItemOutput::builder().build());
        let client = aws_smithy_mocks::mock_client!(aws_sdk_dynamodb, [&rule]);
        put_target_chunks(
            &client,
            "t",
            &[
                (rollout_targets_key("r", 0, 0), vec!["i-0123456789abcdef0".into()]),
                (rollout_targets_key("r", 1, 0), vec!["i-0123abcd".into()]),
            ],
            "r",
        )
        .await
        .unwrap();
        assert_eq!(rule.num_calls(), 1);
    }

    fn target(id: &str, family: &str) -> crate::rollout::Target {
        crate::rollout::Target {
            instance_id: id.into(),
            family: family.into(),
        }
    }

    #[tokio::test]
    async fn listed_pages_are_non_instance_items_by_family_that_expire() {
        use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
        assert_eq!(rollout_list_key("r1", 7), "rollout#r1#list#7");
        assert!(is_non_instance_key(&rollout_list_key("r1", 0)));
        let rule = aws_smithy_mocks::mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| {
                let items = &r.request_items().unwrap()["t"];
                items.len() == 2
                    && items.iter().all(|w| {
                        let item = w.put_request().unwrap().item();
                        item["instanceId"].as_s().unwrap().starts_with("rollout#r1#list#")
                            && item["kind"].as_s().unwrap() == "rolloutList"
                            && item.get("expiresAt").and_then(|v| v.as_n().ok()).is_some_and(|n| {
                                n.parse::<i64>().unwrap() > chrono::Utc::now().timestamp() + 34 * 86400
                            })
                            && !item.contains_key("state")
                    })
                    && {
                        let first = items[0].put_request().unwrap().item();
                        let t = first["targets"].as_m().unwrap();
                        t["Windows (x86_64)"].as_l().unwrap().len() == 1
                            && t["Linux/UNIX (arm64)"].as_l().unwrap().len() == 2
                            && first["page"].as_n().unwrap() == "0"
                    }
            })
            .then_output(|| BatchWriteItemOutput::builder().build());
        let client = aws_smithy_mocks::mock_client!(aws_sdk_dynamodb, [&rule]);
        put_target_list_pages(
            &client,
            "t",
            "r1",
            &[
                (
                    0,
                    vec![
                        target("i-0123456789abcdef0", "Linux/UNIX (arm64)"),
                        target("i-0123456789abcdef1", "Windows (x86_64)"),
                        target("i-0123456789abcdef2", "Linux/UNIX (arm64)"),
                    ],
                ),
                (1, vec![]),
            ],
        )
        .await
        .unwrap();
        assert_eq!(rule.num_calls(), 1);
        // a malformed id is never stored
        let none = aws_smithy_mocks::mock_client!(aws_sdk_dynamodb, []);
        let err = put_target_list_pages(&none, "t", "r1", &[(0, vec![target("junk", "x")])])
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), crate::error::INVALID_INPUT);
    }

    #[tokio::test]
    async fn listed_pages_are_read_back_in_order_and_a_missing_one_is_an_error() {
        use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
        let page = |n: usize, ids: &[&str]| {
            let mut item = Item::new();
            item.insert("instanceId".into(), s(rollout_list_key("r", n)));
            item.insert(
                "targets".into(),
                AttributeValue::M(HashMap::from([(
                    "Linux/UNIX (x86_64)".to_string(),
                    AttributeValue::L(ids.iter().map(|i| s(*i)).collect()),
                )])),
            );
            item
        };
        // 150 pages stored: two calls of at most 100 keys, consistent reads; the mock answers the
        // keys asked for that exist
        let rule = aws_smithy_mocks::mock!(aws_sdk_dynamodb::Client::batch_get_item)
            .match_requests(|r| {
                let k = &r.request_items().unwrap()["t"];
                k.keys().len() <= 100 && k.consistent_read() == Some(true)
            })
            .then_compute_output(move |r| {
                let items: Vec<Item> = r.request_items().unwrap()["t"]
                    .keys()
                    .iter()
                    .filter_map(|k| {
                        let key = k["instanceId"].as_s().unwrap();
                        let n: usize = key.rsplit('#').next().unwrap().parse().unwrap();
                        match n {
                            0 => Some(page(0, &["i-0123456789abcdef0"])),
                            149 => Some(page(149, &["i-0123456789abcdef1"])),
                            1..149 => Some(page(n, &[])),
                            _ => None,
                        }
                    })
                    .collect();
                BatchGetItemOutput::builder().responses("t", items).build()
            });
        let client = aws_smithy_mocks::mock_client!(aws_sdk_dynamodb, aws_smithy_mocks::RuleMode::MatchAny, [&rule]);
        let got = load_target_list_pages(&client, "t", "r", 150).await.unwrap();
        assert_eq!(rule.num_calls(), 2);
        assert_eq!(
            got.iter().map(|t| t.instance_id.as_str()).collect::<Vec<_>>(),
            vec!["i-0123456789abcdef0", "i-0123456789abcdef1"]
        );
        assert_eq!(got[0].family, "Linux/UNIX (x86_64)");
        // page 150 does not exist
        let err = load_target_list_pages(&client, "t", "r", 151).await.unwrap_err();
        assert_eq!(err.error_type(), crate::error::INVALID_INPUT);
        assert!(err.to_string().contains("rollout#r#list#150"), "{err}");
        assert_eq!(rule.num_calls(), 4);
    }
}
