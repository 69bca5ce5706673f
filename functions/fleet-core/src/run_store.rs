//! The run results table: one item per ad-hoc run and instance (`runId`, `instanceId`), apart from
//! the install ledger. The run-command function writes it; the CLI reads it (`output`, `status`)
//! and records cancellations (`cancel`).
//!
//! Besides the results, a run's items include one marker per sent batch (`instanceId` starting
//! with [`BATCH_PREFIX`]): a retried Send Run Commands finds the command it already sent there.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use crate::run::RunOutcome;
use crate::FleetError;

type Item = HashMap<String, AttributeValue>;

/// Attribute names of the results table.
pub mod attr {
    pub const RUN_ID: &str = "runId";
    pub const INSTANCE_ID: &str = "instanceId";
    pub const OUTCOME: &str = "outcome";
    pub const STATUS: &str = "status";
    pub const STATUS_DETAILS: &str = "statusDetails";
    pub const EXIT_CODE: &str = "exitCode";
    pub const OUTPUT: &str = "output";
    pub const LOG_GROUP: &str = "logGroup";
    pub const LOG_STREAM: &str = "logStream";
    pub const COMMAND_ID: &str = "commandId";
    pub const DOCUMENT: &str = "document";
    pub const PLATFORM: &str = "platform";
    pub const WAVE: &str = "wave";
    pub const REASON: &str = "reason";
    pub const UPDATED_AT: &str = "updatedAt";
    pub const EXPIRES_AT: &str = "expiresAt";
    pub const INSTANCE_IDS: &str = "instanceIds";
}

/// Sort-key prefix of a batch marker (never an instance id, which starts with `i-`).
pub const BATCH_PREFIX: &str = "#batch#";
/// Results expire 90 days after their last write.
pub const RETENTION_DAYS: i64 = 90;

/// One instance's result in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunResult {
    pub run_id: String,
    pub instance_id: String,
    pub outcome: Option<RunOutcome>,
    /// SSM's invocation Status (`Success`, `Failed`, `TimedOut`, ...), empty when never sent.
    pub status: String,
    pub status_details: String,
    pub exit_code: Option<i32>,
    /// The last lines of what the instance printed.
    pub output: String,
    /// Where the full output is: CloudWatch Logs group and stream.
    pub log_group: String,
    pub log_stream: String,
    pub command_id: String,
    pub document: String,
    pub platform: String,
    pub wave: Option<u64>,
    /// Why, in words (unreachable, skipped, failed, cancelled).
    pub reason: String,
    pub updated_at: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

impl RunResult {
    pub fn to_item(&self, now: chrono::DateTime<chrono::Utc>) -> Item {
        let mut item = Item::new();
        item.insert(attr::RUN_ID.into(), s(&self.run_id));
        item.insert(attr::INSTANCE_ID.into(), s(&self.instance_id));
        if let Some(o) = self.outcome {
            item.insert(attr::OUTCOME.into(), s(o.as_str()));
        }
        for (name, value) in [
            (attr::STATUS, &self.status),
            (attr::STATUS_DETAILS, &self.status_details),
            (attr::OUTPUT, &self.output),
            (attr::LOG_GROUP, &self.log_group),
            (attr::LOG_STREAM, &self.log_stream),
            (attr::COMMAND_ID, &self.command_id),
            (attr::DOCUMENT, &self.document),
            (attr::PLATFORM, &self.platform),
            (attr::REASON, &self.reason),
        ] {
            if !value.is_empty() {
                item.insert(name.into(), s(value));
            }
        }
        if let Some(c) = self.exit_code {
            item.insert(attr::EXIT_CODE.into(), AttributeValue::N(c.to_string()));
        }
        if let Some(w) = self.wave {
            item.insert(attr::WAVE.into(), AttributeValue::N(w.to_string()));
        }
        stamp(&mut item, now);
        item
    }

    pub fn from_item(item: &Item) -> Self {
        let get = |n: &str| item.get(n).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let num = |n: &str| {
            item.get(n)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        RunResult {
            run_id: get(attr::RUN_ID),
            instance_id: get(attr::INSTANCE_ID),
            outcome: RunOutcome::parse(&get(attr::OUTCOME)),
            status: get(attr::STATUS),
            status_details: get(attr::STATUS_DETAILS),
            exit_code: num(attr::EXIT_CODE).map(|c| c as i32),
            output: get(attr::OUTPUT),
            log_group: get(attr::LOG_GROUP),
            log_stream: get(attr::LOG_STREAM),
            command_id: get(attr::COMMAND_ID),
            document: get(attr::DOCUMENT),
            platform: get(attr::PLATFORM),
            wave: num(attr::WAVE).map(|w| w as u64),
            reason: get(attr::REASON),
            updated_at: get(attr::UPDATED_AT),
        }
    }
}

/// Write items (25 per BatchWriteItem), retrying what DynamoDB leaves unprocessed.
pub use crate::ledger::put_items;

/// Write results.
pub async fn put_results(client: &Client, table: &str, results: &[RunResult]) -> Result<(), FleetError> {
    let now = chrono::Utc::now();
    put_items(client, table, results.iter().map(|r| r.to_item(now)).collect()).await
}

/// Every item of a run (results and batch markers), paged.
async fn query_items(client: &Client, table: &str, run_id: &str) -> Result<Vec<Item>, FleetError> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let resp = client
            .query()
            .table_name(table)
            .key_condition_expression("#r = :r")
            .expression_attribute_names("#r", attr::RUN_ID)
            .expression_attribute_values(":r", s(run_id))
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| FleetError::from_sdk("dynamodb", "Query", &e))?;
        out.extend(resp.items().iter().cloned());
        start = resp.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(out);
        }
    }
}

/// A run's results, in instance id order (batch markers left out).
pub async fn query_results(client: &Client, table: &str, run_id: &str) -> Result<Vec<RunResult>, FleetError> {
    let mut out: Vec<RunResult> = query_items(client, table, run_id)
        .await?
        .iter()
        .filter(|i| {
            !i.get(attr::INSTANCE_ID)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|k| k.starts_with(BATCH_PREFIX))
        })
        .map(RunResult::from_item)
        .collect();
    out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    Ok(out)
}

/// The sort key of a batch's marker.
pub fn batch_marker_key(batch_key: &str) -> String {
    format!("{BATCH_PREFIX}{batch_key}")
}

/// The command id recorded for a batch, if it was sent.
pub async fn get_batch_command(
    client: &Client,
    table: &str,
    run_id: &str,
    batch_key: &str,
) -> Result<Option<String>, FleetError> {
    let resp = client
        .get_item()
        .table_name(table)
        .key(attr::RUN_ID, s(run_id))
        .key(attr::INSTANCE_ID, s(batch_marker_key(batch_key)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| FleetError::from_sdk("dynamodb", "GetItem", &e))?;
    Ok(resp
        .item()
        .and_then(|i| i.get(attr::COMMAND_ID))
        .and_then(|v| v.as_s().ok())
        .cloned())
}

/// A batch marker: the batch was sent as `command_id`.
pub fn batch_marker(run_id: &str, batch_key: &str, command_id: &str, instance_ids: &[String]) -> Item {
    let now = chrono::Utc::now();
    let mut item = Item::new();
    item.insert(attr::RUN_ID.into(), s(run_id));
    item.insert(attr::INSTANCE_ID.into(), s(batch_marker_key(batch_key)));
    item.insert(attr::COMMAND_ID.into(), s(command_id));
    item.insert(
        attr::INSTANCE_IDS.into(),
        AttributeValue::L(instance_ids.iter().map(s).collect()),
    );
    stamp(&mut item, now);
    item
}

/// `updatedAt` (now) and `expiresAt` (now + [`RETENTION_DAYS`]) of an item.
fn stamp(item: &mut Item, now: chrono::DateTime<chrono::Utc>) {
    item.insert(
        attr::UPDATED_AT.into(),
        s(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    item.insert(
        attr::EXPIRES_AT.into(),
        AttributeValue::N((now + chrono::Duration::days(RETENTION_DAYS)).timestamp().to_string()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_survives_the_round_trip_through_an_item() {
        let r = RunResult {
            run_id: "run-1".into(),
            instance_id: "i-0123456789abcdef0".into(),
            outcome: Some(RunOutcome::Failed),
            status: "Failed".into(),
            status_details: "Failed".into(),
            exit_code: Some(3),
            output: "a\nb".into(),
            log_group: "/g".into(),
            log_stream: "c/i/aws-runShellScript/stdout".into(),
            command_id: "c".into(),
            document: "AWS-RunShellScript".into(),
            platform: "Linux".into(),
            wave: Some(2),
            reason: "exit 3".into(),
            updated_at: String::new(),
        };
        let now = chrono::Utc::now();
        let item = r.to_item(now);
        let back = RunResult::from_item(&item);
        assert_eq!(
            RunResult {
                updated_at: String::new(),
                ..back.clone()
            },
            r
        );
        assert!(!back.updated_at.is_empty());
        let ttl: i64 = item[attr::EXPIRES_AT].as_n().unwrap().parse().unwrap();
        assert_eq!(ttl, (now + chrono::Duration::days(RETENTION_DAYS)).timestamp());
    }
}
