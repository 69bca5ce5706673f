//! Reading the ledger: one item per instance (key `instanceId`), GSI `byState` (state,
//! updatedAt). Items whose key starts with `batch#` or `rollout#` are the workflow's own
//! bookkeeping and are never shown.

use std::collections::HashMap;

use anyhow::{anyhow, Context as _, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

pub const BY_STATE_INDEX: &str = "byState";

pub type Item = HashMap<String, AttributeValue>;

/// One instance as the ledger records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRow {
    pub instance_id: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
}

/// The workflow's own items: batch locks and rollout target chunks.
pub fn is_internal(instance_id: &str) -> bool {
    instance_id.starts_with("batch#") || instance_id.starts_with("rollout#")
}

fn s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

/// A ledger item as a row; None for internal items and items without an instance id.
pub fn row(item: &Item) -> Option<LedgerRow> {
    let instance_id = s(item, "instanceId")?;
    if is_internal(&instance_id) {
        return None;
    }
    Some(LedgerRow {
        instance_id,
        state: s(item, "state").unwrap_or_default(),
        reason_code: s(item, "reasonCode"),
        reason: s(item, "reason"),
        platform: s(item, "platform"),
        document: s(item, "document"),
        document_version: s(item, "documentVersion"),
        command_id: s(item, "commandId"),
        attempts: item
            .get("attempts")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok()),
        execution_arn: s(item, "executionArn"),
        execution_started_at: s(item, "executionStartedAt"),
        created_at: s(item, "createdAt"),
        updated_at: s(item, "updatedAt"),
        status_detail: s(item, "statusDetail"),
    })
}

/// All instances in `state`, oldest change first, optionally only those changed at or after
/// `since` (the ledger's RFC 3339 format). Follows LastEvaluatedKey to the end.
pub async fn query_by_state(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    state: &str,
    since: Option<&str>,
) -> Result<Vec<LedgerRow>> {
    let mut rows = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let mut q = db
            .query()
            .table_name(table)
            .index_name(BY_STATE_INDEX)
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":s", AttributeValue::S(state.to_string()))
            .set_exclusive_start_key(start.take());
        q = match since {
            Some(since) => q
                .key_condition_expression("#s = :s AND #u >= :since")
                .expression_attribute_names("#u", "updatedAt")
                .expression_attribute_values(":since", AttributeValue::S(since.to_string())),
            None => q.key_condition_expression("#s = :s"),
        };
        let resp = q
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .with_context(|| format!("cannot query the ledger {table} (index {BY_STATE_INDEX}) for state {state}"))?;
        rows.extend(resp.items().iter().filter_map(row));
        match resp.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    Ok(rows)
}

/// Which executions' instances to read from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionFilter {
    /// The instances one install execution touched last.
    Exact(String),
    /// The instances every install execution whose ARN starts with this touched last (a
    /// rollout's chunk executions are named `<rollout>-w<wave>-c<chunk>`).
    Prefix(String),
}

/// Scan the ledger for instances last touched by the given execution(s).
pub async fn scan_by_execution(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    filter: &ExecutionFilter,
) -> Result<Vec<LedgerRow>> {
    let (expression, value) = match filter {
        ExecutionFilter::Exact(arn) => ("#e = :e", arn),
        ExecutionFilter::Prefix(prefix) => ("begins_with(#e, :e)", prefix),
    };
    let mut rows = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let resp = db
            .scan()
            .table_name(table)
            .filter_expression(expression)
            .expression_attribute_names("#e", "executionArn")
            .expression_attribute_values(":e", AttributeValue::S(value.clone()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .with_context(|| format!("cannot scan the ledger {table}"))?;
        rows.extend(resp.items().iter().filter_map(row));
        match resp.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    Ok(rows)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn item(id: &str, state: &str, updated: &str) -> Item {
        let mut i = Item::new();
        i.insert("instanceId".into(), AttributeValue::S(id.into()));
        i.insert("state".into(), AttributeValue::S(state.into()));
        i.insert("updatedAt".into(), AttributeValue::S(updated.into()));
        i.insert("createdAt".into(), AttributeValue::S("2026-11-25T10:00:00.000Z".into()));
        i
    }

    #[test]
    fn rows_read_every_attribute_and_skip_internal_items() {
        let mut i = item("i-0123456789abcdef0", "failed", "2026-11-25T12:00:00.000Z");
        i.insert("attempts".into(), AttributeValue::N("3".into()));
        i.insert("reasonCode".into(), AttributeValue::S("CommandFailed".into()));
        i.insert("statusDetail".into(), AttributeValue::S("Failed".into()));
        let r = row(&i).unwrap();
        assert_eq!(r.attempts, Some(3));
        assert_eq!(r.reason_code.as_deref(), Some("CommandFailed"));
        assert_eq!(r.status_detail.as_deref(), Some("Failed"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["instanceId"], "i-0123456789abcdef0");
        assert!(json.get("commandId").is_none());
        assert!(row(&item("batch#abc", "", "")).is_none());
        assert!(row(&item("rollout#r1#w0#c0", "", "")).is_none());
        assert!(row(&Item::new()).is_none());
    }
}
