//! Domain types that travel between the workflow's states. Field names are camelCase so that
//! inputs and outputs read naturally in the Step Functions console.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the workflow is: passed by the ASL to every function from the context object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// `$$.Execution.Id`: the execution ARN.
    pub execution_id: String,
    /// `$$.Execution.StartTime` (RFC 3339). Orders competing writes: an older run never overwrites a newer one.
    pub execution_start_time: String,
}

/// An instance that SSM manages and reports online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedInstance {
    pub instance_id: String,
    pub platform_type: String,
    pub platform_name: String,
    #[serde(default)]
    pub platform_version: String,
    #[serde(default)]
    pub agent_version: String,
    /// Installed already: the sweep sends the install document again as a verification (its
    /// "already installed and running" path), which repairs a removed or stopped agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

/// Why an instance is where it is. Stable codes: summaries count them, people read `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReasonCode {
    // unmanaged
    NoInstanceProfile,
    AgentNotReporting,
    ConnectionLost,
    AgentInactive,
    // skipped
    MalformedInstanceId,
    NotFound,
    Stopped,
    Terminated,
    OptedOut,
    NoRoute,
    // duplicates: another execution owns the instance, or it is already installed
    AlreadyInstalled,
    InProgressElsewhere,
    SupersededByNewerRun,
    // the SSM Agent is older than the install document needs (recorded as unmanaged: it is not a
    // failed install, the reason says what to do)
    AgentTooOld,
    // on the way, not final: AWS-UpdateSSMAgent succeeded, the install follows
    AgentUpdated,
    // command outcomes
    Installed,
    CommandFailed,
    // the install documents' own exit codes (routing::EXIT_CODES)
    BadParameter,
    UnsupportedPlatform,
    DownloadFailed,
    ChecksumMismatch,
    InstallFailed,
    ServiceNotRunning,
    InstallerTimedOut,
    RebootStarted,
    RebootRequired,
    ExecutionTimedOut,
    DeliveryTimedOut,
    Undeliverable,
    AccessDenied,
    Cancelled,
    RejectedBySsm,
    // the workflow itself failed
    WorkflowError,
    // the sweep: a verification found the agent installed and running
    Verified,
    // the sweep: a verification found the agent removed or stopped, and the same command put it back
    DriftRepaired,
    // compliance only (never written): a running instance with no ledger item at all
    NeverSeen,
    // the instance no longer exists (terminated, or unknown to EC2): the item expires
    Gone,
}

impl ReasonCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReasonCode::NoInstanceProfile => "NoInstanceProfile",
            ReasonCode::AgentNotReporting => "AgentNotReporting",
            ReasonCode::ConnectionLost => "ConnectionLost",
            ReasonCode::AgentInactive => "AgentInactive",
            ReasonCode::MalformedInstanceId => "MalformedInstanceId",
            ReasonCode::NotFound => "NotFound",
            ReasonCode::Stopped => "Stopped",
            ReasonCode::Terminated => "Terminated",
            ReasonCode::OptedOut => "OptedOut",
            ReasonCode::NoRoute => "NoRoute",
            ReasonCode::AlreadyInstalled => "AlreadyInstalled",
            ReasonCode::InProgressElsewhere => "InProgressElsewhere",
            ReasonCode::SupersededByNewerRun => "SupersededByNewerRun",
            ReasonCode::AgentTooOld => "AgentTooOld",
            ReasonCode::AgentUpdated => "AgentUpdated",
            ReasonCode::Installed => "Installed",
            ReasonCode::CommandFailed => "CommandFailed",
            ReasonCode::BadParameter => "BadParameter",
            ReasonCode::UnsupportedPlatform => "UnsupportedPlatform",
            ReasonCode::DownloadFailed => "DownloadFailed",
            ReasonCode::ChecksumMismatch => "ChecksumMismatch",
            ReasonCode::InstallFailed => "InstallFailed",
            ReasonCode::ServiceNotRunning => "ServiceNotRunning",
            ReasonCode::InstallerTimedOut => "InstallerTimedOut",
            ReasonCode::RebootStarted => "RebootStarted",
            ReasonCode::RebootRequired => "RebootRequired",
            ReasonCode::ExecutionTimedOut => "ExecutionTimedOut",
            ReasonCode::DeliveryTimedOut => "DeliveryTimedOut",
            ReasonCode::Undeliverable => "Undeliverable",
            ReasonCode::AccessDenied => "AccessDenied",
            ReasonCode::Cancelled => "Cancelled",
            ReasonCode::RejectedBySsm => "RejectedBySsm",
            ReasonCode::WorkflowError => "WorkflowError",
            ReasonCode::Verified => "Verified",
            ReasonCode::DriftRepaired => "DriftRepaired",
            ReasonCode::NeverSeen => "NeverSeen",
            ReasonCode::Gone => "Gone",
        }
    }
}

/// The ledger's states, one per instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    PendingRegistration,
    Unmanaged,
    Installing,
    Installed,
    Failed,
    Skipped,
    /// The instance no longer exists: kept for a while (the item expires), never acted on.
    Gone,
}

impl LedgerState {
    /// Every state, in the order reports list them.
    pub const ALL: [LedgerState; 7] = [
        LedgerState::PendingRegistration,
        LedgerState::Unmanaged,
        LedgerState::Installing,
        LedgerState::Installed,
        LedgerState::Failed,
        LedgerState::Skipped,
        LedgerState::Gone,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            LedgerState::PendingRegistration => "pending_registration",
            LedgerState::Unmanaged => "unmanaged",
            LedgerState::Installing => "installing",
            LedgerState::Installed => "installed",
            LedgerState::Failed => "failed",
            LedgerState::Skipped => "skipped",
            LedgerState::Gone => "gone",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending_registration" => LedgerState::PendingRegistration,
            "unmanaged" => LedgerState::Unmanaged,
            "installing" => LedgerState::Installing,
            "installed" => LedgerState::Installed,
            "failed" => LedgerState::Failed,
            "skipped" => LedgerState::Skipped,
            "gone" => LedgerState::Gone,
            _ => return None,
        })
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, LedgerState::PendingRegistration | LedgerState::Installing)
    }
}

/// An instance that ends (or is noted) somewhere other than "installed", with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceNote {
    pub instance_id: String,
    pub reason_code: ReasonCode,
    pub reason: String,
    /// Platform as far as it is known (SSM platform name, or EC2's platform details).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// One instance in a batch, with the platform label used for summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInstance {
    pub instance_id: String,
    pub platform: String,
    /// In an agent-update batch: the SSM Agent version the instance reported (for the reason if the update fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// At most 50 instances that get the same document with the same parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub route: String,
    pub document_name: String,
    pub document_version: String,
    pub parameters: BTreeMap<String, String>,
    /// 1 for the first send, 2 for the first retry, ...
    pub attempt: u32,
    pub instances: Vec<BatchInstance>,
    /// In an agent-update batch: the SSM Agent version the install document needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agent_version: Option<String>,
    /// A verification batch (the sweep's drift check): its instances are installed already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

impl Batch {
    /// True for a batch of AWS-UpdateSSMAgent (route `agent-update`), not an install.
    pub fn is_agent_update(&self) -> bool {
        self.route == crate::routing::AGENT_UPDATE_ROUTE
    }
}

/// Instances whose SSM Agent this execution updated (AWS-UpdateSSMAgent succeeded), at the time
/// check-status saw it. filter-managed neither updates them again nor gives up on them (agent
/// restarting, version not reported yet) before the registration deadline counted from then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentUpdated {
    /// RFC 3339.
    pub updated_at: String,
    pub instance_ids: Vec<String>,
}

impl Batch {
    pub fn instance_ids(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.instance_id.clone()).collect()
    }
}

/// A batch that was sent: the SSM command that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentCommand {
    pub command_id: String,
    /// Deterministic key of the batch (execution, attempt, route, instances): the idempotency token.
    pub batch_key: String,
    #[serde(flatten)]
    pub batch: Batch,
}

/// Counts by final state, platform and reason: the workflow's output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    #[serde(default)]
    pub by_state: BTreeMap<String, u64>,
    #[serde(default)]
    pub by_platform: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default)]
    pub by_reason: BTreeMap<String, u64>,
    /// Instances whose SSM Agent was updated (AWS-UpdateSSMAgent) on the way to their install; each
    /// is also counted once in its final state.
    #[serde(default)]
    pub agent_updated: u64,
    /// Verifications (the sweep's drift check) that found the agent gone or stopped and could not
    /// put it back; each is also counted once in its final state (failed).
    #[serde(default)]
    pub drift_unrepaired: u64,
}

/// Summary key for instances another run owns (not written to the ledger again).
pub const DUPLICATE: &str = "duplicate";

impl Summary {
    /// Count one instance reaching a final state.
    pub fn add(&mut self, state: &str, platform: Option<&str>, reason: ReasonCode) {
        *self.by_state.entry(state.to_string()).or_default() += 1;
        let platform = platform.filter(|p| !p.is_empty()).unwrap_or("unknown");
        *self
            .by_platform
            .entry(platform.to_string())
            .or_default()
            .entry(state.to_string())
            .or_default() += 1;
        if reason != ReasonCode::Installed {
            *self.by_reason.entry(reason.as_str().to_string()).or_default() += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.by_state.values().sum()
    }

    /// Add another summary's counts to this one (summaries counted apart, e.g. per batch).
    pub fn merge(&mut self, other: Summary) {
        for (k, v) in other.by_state {
            *self.by_state.entry(k).or_default() += v;
        }
        for (platform, states) in other.by_platform {
            let mine = self.by_platform.entry(platform).or_default();
            for (k, v) in states {
                *mine.entry(k).or_default() += v;
            }
        }
        for (k, v) in other.by_reason {
            *self.by_reason.entry(k).or_default() += v;
        }
        self.agent_updated += other.agent_updated;
        self.drift_unrepaired += other.drift_unrepaired;
    }
}

/// True when `id` looks like an EC2 instance id (`i-` and 8 or 17 hex digits).
pub fn is_valid_instance_id(id: &str) -> bool {
    match id.strip_prefix("i-") {
        Some(hex) => {
            (hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_validation() {
        assert!(is_valid_instance_id("i-0123456789abcdef0"));
        assert!(is_valid_instance_id("i-0123abcd"));
        assert!(!is_valid_instance_id("i-0123456789ABCDEF0"));
        assert!(!is_valid_instance_id("i-123"));
        assert!(!is_valid_instance_id("0123456789abcdef0"));
        assert!(!is_valid_instance_id("i-0123456789abcdefg"));
        assert!(!is_valid_instance_id("i-0123456789abcdef0; rm -rf /"));
    }

    #[test]
    fn summary_counts_by_state_platform_and_reason() {
        let mut s = Summary::default();
        s.add("installed", Some("Ubuntu"), ReasonCode::Installed);
        s.add("installed", Some("Ubuntu"), ReasonCode::Installed);
        s.add("unmanaged", None, ReasonCode::NoInstanceProfile);
        assert_eq!(s.total(), 3);
        assert_eq!(s.by_state["installed"], 2);
        assert_eq!(s.by_platform["Ubuntu"]["installed"], 2);
        assert_eq!(s.by_platform["unknown"]["unmanaged"], 1);
        assert_eq!(s.by_reason.get("Installed"), None);
        assert_eq!(s.by_reason["NoInstanceProfile"], 1);
    }

    #[test]
    fn merged_summaries_count_as_one_summary_counted_in_one_go() {
        let events = [
            ("installed", Some("Ubuntu"), ReasonCode::Installed),
            ("skipped", Some("Ubuntu"), ReasonCode::OptedOut),
            ("failed", Some("Windows"), ReasonCode::CommandFailed),
            ("skipped", None, ReasonCode::OptedOut),
        ];
        let mut whole = Summary::default();
        for (state, platform, code) in events {
            whole.add(state, platform, code);
        }
        let (mut a, mut b) = (Summary::default(), Summary::default());
        for (i, (state, platform, code)) in events.into_iter().enumerate() {
            if i % 2 == 0 { &mut a } else { &mut b }.add(state, platform, code);
        }
        a.agent_updated = 2;
        b.agent_updated = 1;
        b.drift_unrepaired = 4;
        whole.agent_updated = 3;
        whole.drift_unrepaired = 4;
        a.merge(b);
        assert_eq!(a, whole);
        assert_eq!(a.by_reason["OptedOut"], 2);
    }

    #[test]
    fn ledger_state_round_trips() {
        for s in [
            LedgerState::PendingRegistration,
            LedgerState::Unmanaged,
            LedgerState::Installing,
            LedgerState::Installed,
            LedgerState::Failed,
            LedgerState::Skipped,
            LedgerState::Gone,
        ] {
            assert_eq!(LedgerState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        assert!(!LedgerState::Installing.is_final());
        assert!(LedgerState::Failed.is_final());
    }
}
