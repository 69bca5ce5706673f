//! Reading the ledger: one item per instance (key `instanceId`), GSI `byState` (state,
//! updatedAt). Items are read into fleet-core's typed [`LedgerRecord`], whose attribute names
//! ([`attr`]) and states ([`LedgerState`]) are written once in fleet-core; the workflow's own items
//! (`batch#`, `rollout#`, `sweep#` keys) are never records and never shown.

use std::collections::HashMap;

use anyhow::{anyhow, Context as _, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use fleet_core::model::LedgerState;
pub use fleet_core::record::{attr, Item, LedgerRecord};

pub const BY_STATE_INDEX: &str = "byState";

/// A ledger item as a row; None for the workflow's own items and items without an instance id.
pub fn row(item: &Item) -> Option<LedgerRecord> {
    LedgerRecord::from_item(item)
}

/// A state's name for counts and tables ("unknown" for a state this version does not know).
pub fn state_label(r: &LedgerRecord) -> &'static str {
    match r.state {
        Some(s) => s.as_str(),
        None => "unknown",
    }
}

/// All instances in `state`, oldest change first, optionally only those changed at or after
/// `since` (the ledger's RFC 3339 format). Follows LastEvaluatedKey to the end.
pub async fn query_by_state(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    state: LedgerState,
    since: Option<&str>,
) -> Result<Vec<LedgerRecord>> {
    let mut rows = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let mut q = db
            .query()
            .table_name(table)
            .index_name(BY_STATE_INDEX)
            .expression_attribute_names("#s", attr::STATE)
            .expression_attribute_values(":s", AttributeValue::S(state.as_str().to_string()))
            .set_exclusive_start_key(start.take());
        q = match since {
            Some(since) => q
                .key_condition_expression("#s = :s AND #u >= :since")
                .expression_attribute_names("#u", attr::UPDATED_AT)
                .expression_attribute_values(":since", AttributeValue::S(since.to_string())),
            None => q.key_condition_expression("#s = :s"),
        };
        let resp = q
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .with_context(|| {
                format!(
                    "cannot query the ledger {table} (index {BY_STATE_INDEX}) for state {}",
                    state.as_str()
                )
            })?;
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
) -> Result<Vec<LedgerRecord>> {
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
            .expression_attribute_names("#e", attr::EXECUTION_ARN)
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

/// Every instance record in the ledger, by instance id: a paginated Scan of the whole table.
///
/// For a whole fleet this is cheaper than BatchGetItem on the running instances' ids: a Scan page
/// reads up to 1 MB in one call and is billed by the bytes read (eventually consistent: 0.5 read
/// unit per 4 KB, so a few items per unit), while BatchGetItem takes 100 keys a call and bills each
/// item at least 0.5 unit (1 when strongly consistent, as the sweep reads them). The Scan also
/// reads the workflow's own items and gone instances, which cost a little and are dropped here.
pub async fn scan_records(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    progress: crate::context::Progress,
) -> Result<HashMap<String, LedgerRecord>> {
    let mut records = HashMap::new();
    let mut start: Option<Item> = None;
    loop {
        let resp = db
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .with_context(|| format!("cannot scan the ledger {table}"))?;
        for r in resp.items().iter().filter_map(row) {
            records.insert(r.instance_id.clone(), r);
        }
        progress.update(format!("reading the ledger: {} instance records", records.len()));
        match resp.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    Ok(records)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn item(id: &str, state: &str, updated: &str) -> Item {
        let mut i = Item::new();
        i.insert(attr::INSTANCE_ID.into(), AttributeValue::S(id.into()));
        i.insert(attr::STATE.into(), AttributeValue::S(state.into()));
        i.insert(attr::UPDATED_AT.into(), AttributeValue::S(updated.into()));
        i.insert(
            attr::CREATED_AT.into(),
            AttributeValue::S("2026-11-25T10:00:00.000Z".into()),
        );
        i
    }

    #[test]
    fn rows_read_every_attribute_and_skip_internal_items() {
        let mut i = item("i-0123456789abcdef0", "failed", "2026-11-25T12:00:00.000Z");
        i.insert(attr::ATTEMPTS.into(), AttributeValue::N("3".into()));
        i.insert(attr::REASON_CODE.into(), AttributeValue::S("CommandFailed".into()));
        i.insert(attr::STATUS_DETAIL.into(), AttributeValue::S("Failed".into()));
        let r = row(&i).unwrap();
        assert_eq!(r.attempts, Some(3));
        assert!(r.is(LedgerState::Failed));
        assert_eq!(r.reason_code.as_deref(), Some("CommandFailed"));
        assert_eq!(r.status_detail.as_deref(), Some("Failed"));
        // The JSON the CLI prints keeps the ledger's attribute names (the end-to-end tests read them).
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["instanceId"], "i-0123456789abcdef0");
        assert_eq!(json["state"], "failed");
        assert_eq!(json["reasonCode"], "CommandFailed");
        assert_eq!(json["updatedAt"], "2026-11-25T12:00:00.000Z");
        assert!(json.get("commandId").is_none());
        for key in ["batch#abc", "rollout#r1#w0#c0", "sweep#lock", "sweep#s#c0"] {
            assert!(row(&item(key, "", "")).is_none(), "{key}");
        }
        assert!(row(&Item::new()).is_none());
        let odd = row(&item("i-0123456789abcdef1", "in_progress", "")).unwrap();
        assert_eq!(state_label(&odd), "unknown");
        assert_eq!(state_label(&r), "failed");
    }

    #[tokio::test]
    async fn scan_records_follows_every_page_and_keeps_instances_only() {
        use aws_sdk_dynamodb::operation::scan::ScanOutput;
        use aws_smithy_mocks::{mock, mock_client};
        let scan = mock!(aws_sdk_dynamodb::Client::scan)
            .match_requests(|r| r.table_name() == Some("ledger") && r.filter_expression().is_none())
            .sequence()
            .output(|| {
                ScanOutput::builder()
                    .items(item("i-0000000000000000a", "installed", "2026-11-25T01:00:00.000Z"))
                    .items(item("sweep#lock", "", ""))
                    .last_evaluated_key(attr::INSTANCE_ID, AttributeValue::S("sweep#lock".into()))
                    .build()
            })
            .output(|| {
                ScanOutput::builder()
                    .items(item("i-0000000000000000b", "failed", "2026-11-25T01:00:00.000Z"))
                    .items(item("batch#x", "", ""))
                    .build()
            })
            .build();
        let db = mock_client!(aws_sdk_dynamodb, [&scan]);
        let records = scan_records(&db, "ledger", crate::context::Progress::disabled())
            .await
            .unwrap();
        assert_eq!(scan.num_calls(), 2);
        let mut ids: Vec<&String> = records.keys().collect();
        ids.sort();
        assert_eq!(ids, ["i-0000000000000000a", "i-0000000000000000b"]);
        assert!(records["i-0000000000000000b"].is(LedgerState::Failed));
    }

    #[tokio::test]
    async fn a_refused_scan_says_which_table() {
        use aws_sdk_dynamodb::operation::scan::ScanError;
        use aws_sdk_dynamodb::types::error::ResourceNotFoundException;
        use aws_smithy_mocks::{mock, mock_client};
        let scan = mock!(aws_sdk_dynamodb::Client::scan).then_error(|| {
            ScanError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("Requested resource not found")
                    .build(),
            )
        });
        let db = mock_client!(aws_sdk_dynamodb, [&scan]);
        let err = scan_records(&db, "ledger", crate::context::Progress::disabled())
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("cannot scan the ledger ledger"), "{text}");
        assert!(
            text.contains("ResourceNotFoundException: Requested resource not found"),
            "{text}"
        );
    }
}
