//! The ledger's shape, written once: attribute names, and one instance's item as a typed record
//! that converts to and from a DynamoDB item. Functions and the CLI read items through
//! [`LedgerRecord::from_item`]; writes name their attributes with the constants in [`attr`].

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ledger::is_non_instance_key;
use crate::model::LedgerState;

pub type Item = HashMap<String, AttributeValue>;

/// Attribute names of the ledger's items.
pub mod attr {
    /// The table's partition key: an instance id, or a workflow item's key (`batch#`, `rollout#`, `sweep#`).
    pub const INSTANCE_ID: &str = "instanceId";
    pub const STATE: &str = "state";
    pub const REASON_CODE: &str = "reasonCode";
    pub const REASON: &str = "reason";
    pub const PLATFORM: &str = "platform";
    pub const DOCUMENT: &str = "document";
    pub const DOCUMENT_VERSION: &str = "documentVersion";
    pub const COMMAND_ID: &str = "commandId";
    pub const ATTEMPTS: &str = "attempts";
    pub const EXECUTION_ARN: &str = "executionArn";
    pub const EXECUTION_STARTED_AT: &str = "executionStartedAt";
    pub const CREATED_AT: &str = "createdAt";
    pub const UPDATED_AT: &str = "updatedAt";
    pub const STATUS_DETAIL: &str = "statusDetail";
    /// Last time a command found the agent installed and running (an install or a verification).
    pub const VERIFIED_AT: &str = "verifiedAt";
    /// How many times a verification found the agent removed or stopped (a counter).
    pub const DRIFT_COUNT: &str = "driftCount";
    /// When a verification last found the agent removed or stopped.
    pub const LAST_DRIFT_AT: &str = "lastDriftAt";
    /// How many sweeps sent a failed instance again (a counter; the backoff grows with it).
    pub const SWEEP_ATTEMPTS: &str = "sweepAttempts";
    /// A failed instance is not sent again by a sweep before this time (RFC 3339).
    pub const RETRY_AFTER: &str = "retryAfter";
    /// The table's TTL attribute (epoch seconds): workflow items, and instances that are gone.
    pub const EXPIRES_AT: &str = "expiresAt";
    /// Workflow items: their ids.
    pub const INSTANCE_IDS: &str = "instanceIds";
    /// Sweep chunks: the ids (also in `instanceIds`) that are verified, not installed.
    pub const VERIFY_IDS: &str = "verifyIds";
    /// Workflow items: what they are (rolloutTargets, sweepTargets, batchLock).
    pub const KIND: &str = "kind";
    pub const ROLLOUT_ID: &str = "rolloutId";
    pub const SWEEP_ID: &str = "sweepId";
    /// The batch an instance was last sent in (its lock is `batch#<key>`).
    pub const BATCH_KEY: &str = "batchKey";
    /// The command whose final outcome the item holds (written once per command: `Guard::Outcome`).
    pub const OUTCOME_OF: &str = "outcomeOf";
    pub const AGENT_UPDATE_COMMAND_ID: &str = "agentUpdateCommandId";
    pub const AGENT_UPDATE_ATTEMPTS: &str = "agentUpdateAttempts";
    pub const AGENT_UPDATED_AT: &str = "agentUpdatedAt";
    pub const AGENT_UPDATED_FROM: &str = "agentUpdatedFrom";
    /// The sweep lock: the execution that holds it, until when, since when.
    pub const HOLDER: &str = "holder";
    pub const LEASE_UNTIL: &str = "leaseUntil";
    pub const STARTED_AT: &str = "startedAt";
    /// Counters (`+` prefix: the ledger adds the value, see `ledger::LedgerWrite`).
    pub const ADD_DRIFT_COUNT: &str = "+driftCount";
    pub const ADD_SWEEP_ATTEMPTS: &str = "+sweepAttempts";
}

/// One instance as the ledger records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRecord {
    pub instance_id: String,
    /// None when the item has no state, or one this version does not know.
    #[serde(serialize_with = "state_str")]
    pub state: Option<LedgerState>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drift_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_attempts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

fn state_str<S: serde::Serializer>(state: &Option<LedgerState>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.map(|st| st.as_str()).unwrap_or(""))
}

fn string(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// An RFC 3339 time as the ledger writes it.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

impl LedgerRecord {
    /// The record of an instance's item; None for the workflow's own items and items without a key.
    pub fn from_item(item: &Item) -> Option<Self> {
        let instance_id = string(item, attr::INSTANCE_ID)?;
        if is_non_instance_key(&instance_id) {
            return None;
        }
        Some(LedgerRecord {
            instance_id,
            state: string(item, attr::STATE).and_then(|s| LedgerState::parse(&s)),
            reason_code: string(item, attr::REASON_CODE),
            reason: string(item, attr::REASON),
            platform: string(item, attr::PLATFORM),
            document: string(item, attr::DOCUMENT),
            document_version: string(item, attr::DOCUMENT_VERSION),
            command_id: string(item, attr::COMMAND_ID),
            attempts: number(item, attr::ATTEMPTS),
            execution_arn: string(item, attr::EXECUTION_ARN),
            execution_started_at: string(item, attr::EXECUTION_STARTED_AT),
            created_at: string(item, attr::CREATED_AT),
            updated_at: string(item, attr::UPDATED_AT),
            status_detail: string(item, attr::STATUS_DETAIL),
            verified_at: string(item, attr::VERIFIED_AT),
            drift_count: number(item, attr::DRIFT_COUNT),
            last_drift_at: string(item, attr::LAST_DRIFT_AT),
            sweep_attempts: number(item, attr::SWEEP_ATTEMPTS),
            retry_after: string(item, attr::RETRY_AFTER),
            expires_at: number(item, attr::EXPIRES_AT),
        })
    }

    /// The record as a DynamoDB item (absent fields are left out).
    pub fn to_item(&self) -> Item {
        let mut item = Item::new();
        let mut put_s = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                item.insert(name.to_string(), AttributeValue::S(v.clone()));
            }
        };
        put_s(attr::INSTANCE_ID, &Some(self.instance_id.clone()));
        put_s(attr::STATE, &self.state.map(|s| s.as_str().to_string()));
        put_s(attr::REASON_CODE, &self.reason_code);
        put_s(attr::REASON, &self.reason);
        put_s(attr::PLATFORM, &self.platform);
        put_s(attr::DOCUMENT, &self.document);
        put_s(attr::DOCUMENT_VERSION, &self.document_version);
        put_s(attr::COMMAND_ID, &self.command_id);
        put_s(attr::EXECUTION_ARN, &self.execution_arn);
        put_s(attr::EXECUTION_STARTED_AT, &self.execution_started_at);
        put_s(attr::CREATED_AT, &self.created_at);
        put_s(attr::UPDATED_AT, &self.updated_at);
        put_s(attr::STATUS_DETAIL, &self.status_detail);
        put_s(attr::VERIFIED_AT, &self.verified_at);
        put_s(attr::LAST_DRIFT_AT, &self.last_drift_at);
        put_s(attr::RETRY_AFTER, &self.retry_after);
        let mut put_n = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                item.insert(name.to_string(), AttributeValue::N(v));
            }
        };
        put_n(attr::ATTEMPTS, self.attempts.map(|v| v.to_string()));
        put_n(attr::DRIFT_COUNT, self.drift_count.map(|v| v.to_string()));
        put_n(attr::SWEEP_ATTEMPTS, self.sweep_attempts.map(|v| v.to_string()));
        put_n(attr::EXPIRES_AT, self.expires_at.map(|v| v.to_string()));
        item
    }

    /// The state's name as the ledger spells it ("" when unknown).
    pub fn state_str(&self) -> &'static str {
        self.state.map(|s| s.as_str()).unwrap_or("")
    }

    pub fn is(&self, state: LedgerState) -> bool {
        self.state == Some(state)
    }

    pub fn updated(&self) -> Option<DateTime<Utc>> {
        self.updated_at.as_deref().and_then(parse_time)
    }

    pub fn verified(&self) -> Option<DateTime<Utc>> {
        self.verified_at.as_deref().and_then(parse_time)
    }

    pub fn retry_after_time(&self) -> Option<DateTime<Utc>> {
        self.retry_after.as_deref().and_then(parse_time)
    }

    pub fn last_drift(&self) -> Option<DateTime<Utc>> {
        self.last_drift_at.as_deref().and_then(parse_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> LedgerRecord {
        LedgerRecord {
            instance_id: "i-0123456789abcdef0".into(),
            state: Some(LedgerState::Failed),
            reason_code: Some("DownloadFailed".into()),
            reason: Some("exit 4".into()),
            platform: Some("Ubuntu".into()),
            document: Some("Doc".into()),
            document_version: Some("3".into()),
            command_id: Some("c-1".into()),
            attempts: Some(3),
            execution_arn: Some("arn:e".into()),
            execution_started_at: Some("2026-12-01T00:00:00.000Z".into()),
            created_at: Some("2026-12-01T00:00:00.000Z".into()),
            updated_at: Some("2026-12-01T00:01:00.000Z".into()),
            status_detail: Some("Failed".into()),
            verified_at: Some("2026-11-30T00:00:00.000Z".into()),
            drift_count: Some(2),
            last_drift_at: Some("2026-11-30T00:00:00.000Z".into()),
            sweep_attempts: Some(1),
            retry_after: Some("2026-12-01T12:00:00.000Z".into()),
            expires_at: None,
        }
    }

    #[test]
    fn round_trips_through_an_item() {
        let r = full();
        let item = r.to_item();
        assert_eq!(item[attr::STATE], AttributeValue::S("failed".into()));
        assert_eq!(item[attr::ATTEMPTS], AttributeValue::N("3".into()));
        assert!(!item.contains_key(attr::EXPIRES_AT));
        assert_eq!(LedgerRecord::from_item(&item), Some(r));
    }

    #[test]
    fn workflow_items_are_not_records() {
        for key in ["batch#x", "rollout#r#w0#c0", "sweep#s#c0", "sweep#lock"] {
            let item = Item::from([(attr::INSTANCE_ID.to_string(), AttributeValue::S(key.into()))]);
            assert_eq!(LedgerRecord::from_item(&item), None, "{key}");
        }
        assert_eq!(LedgerRecord::from_item(&Item::new()), None);
    }

    #[test]
    fn serialises_camel_case_with_the_state_name() {
        let json = serde_json::to_value(full()).unwrap();
        assert_eq!(json["instanceId"], "i-0123456789abcdef0");
        assert_eq!(json["state"], "failed");
        assert_eq!(json["retryAfter"], "2026-12-01T12:00:00.000Z");
        assert!(json.get("expiresAt").is_none());
        let unknown = LedgerRecord { state: None, ..full() };
        assert_eq!(serde_json::to_value(unknown).unwrap()["state"], "");
    }

    #[test]
    fn times_parse() {
        let r = full();
        assert!(r.retry_after_time().unwrap() > r.updated().unwrap());
        assert!(r.is(LedgerState::Failed));
        assert_eq!(r.state_str(), "failed");
    }
}
