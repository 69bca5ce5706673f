//! Compliance: every running instance in exactly one bucket, from its EC2 facts and its ledger
//! record. The sweep counts the fleet with it (and publishes the counts as CloudWatch metrics in
//! the Embedded Metric Format); `fleet-install compliance` prints the same counts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{LedgerState, ReasonCode};
use crate::record::LedgerRecord;

/// A running instance as DescribeInstances shows it (no per-instance calls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningInstance {
    pub instance_id: String,
    pub launch_time: Option<DateTime<Utc>>,
    /// Carries the opt-out tag now.
    pub opted_out: bool,
    /// EC2's platform details (Linux/UNIX, Windows, ...), used when the ledger knows no better.
    pub platform: Option<String>,
}

/// Bucket names.
pub const COMPLIANT: &str = "compliant";
pub const NOT_COMPLIANT: &str = "not_compliant";
pub const SKIPPED: &str = "skipped";
pub const OPTED_OUT: &str = "opted_out";

/// Reasons of the not-compliant bucket that are not a ledger reason code.
pub const FAILED: &str = "Failed";
pub const DRIFT: &str = "Drift";
pub const IN_PROGRESS: &str = "InProgress";

/// Where one running instance stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    /// compliant, not_compliant, skipped or opted_out.
    pub bucket: &'static str,
    /// Not compliant: why (a ledger reason code, NeverSeen, Failed, Drift or InProgress). Skipped:
    /// the ledger's reason code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Compliant: verified since. Not compliant: not compliant since (launch for a never seen
    /// instance, else the last verification or, failing that, when the ledger first saw it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    pub platform: String,
}

fn time(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref().and_then(crate::record::parse_time)
}

/// Put one running instance in its bucket.
pub fn assess(inst: &RunningInstance, record: Option<&LedgerRecord>) -> Assessment {
    let platform = record
        .and_then(|r| r.platform.clone())
        .or_else(|| inst.platform.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let a = |bucket: &'static str, reason: Option<&str>, since: Option<DateTime<Utc>>| Assessment {
        bucket,
        reason: reason.map(str::to_string),
        since,
        platform: platform.clone(),
    };
    if inst.opted_out {
        return a(OPTED_OUT, None, None);
    }
    let Some(r) = record.filter(|r| !r.is(LedgerState::Gone) && r.state.is_some()) else {
        return a(NOT_COMPLIANT, Some(ReasonCode::NeverSeen.as_str()), inst.launch_time);
    };
    let not_since = time(&r.verified_at)
        .or_else(|| time(&r.created_at))
        .or(inst.launch_time);
    match r.state.expect("filtered above") {
        LedgerState::Installed => a(COMPLIANT, None, time(&r.verified_at).or_else(|| time(&r.updated_at))),
        LedgerState::Installing | LedgerState::PendingRegistration => a(NOT_COMPLIANT, Some(IN_PROGRESS), not_since),
        LedgerState::Failed => {
            let drifted = match (r.last_drift(), r.verified()) {
                (Some(d), Some(v)) => d >= v,
                (Some(_), None) => true,
                _ => false,
            };
            a(NOT_COMPLIANT, Some(if drifted { DRIFT } else { FAILED }), not_since)
        }
        LedgerState::Unmanaged => a(
            NOT_COMPLIANT,
            Some(r.reason_code.as_deref().unwrap_or("Unmanaged")),
            not_since,
        ),
        LedgerState::Skipped => match r.reason_code.as_deref() {
            // Nothing to install it with: skipped, not a failure of the fleet.
            Some("NoRoute") => a(SKIPPED, Some("NoRoute"), None),
            // Opted out then, not now: it should have the agent.
            Some("OptedOut") | None => a(NOT_COMPLIANT, Some(ReasonCode::NeverSeen.as_str()), not_since),
            // Stopped, NotFound, ... when its event came: running now, so it needs the agent.
            Some(code) => a(NOT_COMPLIANT, Some(code), not_since),
        },
        LedgerState::Gone => unreachable!("filtered above"),
    }
}

/// The oldest not-compliant instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Oldest {
    pub instance_id: String,
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// Counts of a fleet by bucket, reason and platform. Small (buckets x platforms): it travels
/// through the sweep workflow from one listing invocation to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    #[serde(default)]
    pub running: u64,
    #[serde(default)]
    pub by_bucket: BTreeMap<String, u64>,
    /// Not-compliant instances by reason.
    #[serde(default)]
    pub by_reason: BTreeMap<String, u64>,
    /// platform -> bucket -> instances.
    #[serde(default)]
    pub by_platform: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_not_compliant: Option<Oldest>,
}

impl Tally {
    pub fn add(&mut self, instance_id: &str, a: &Assessment) {
        self.running += 1;
        *self.by_bucket.entry(a.bucket.to_string()).or_default() += 1;
        *self
            .by_platform
            .entry(a.platform.clone())
            .or_default()
            .entry(a.bucket.to_string())
            .or_default() += 1;
        if a.bucket == NOT_COMPLIANT {
            let reason = a.reason.clone().unwrap_or_default();
            *self.by_reason.entry(reason.clone()).or_default() += 1;
            if let Some(since) = a.since {
                let older = self
                    .oldest_not_compliant
                    .as_ref()
                    .is_none_or(|o| since < o.since || (since == o.since && instance_id < o.instance_id.as_str()));
                if older {
                    self.oldest_not_compliant = Some(Oldest {
                        instance_id: instance_id.to_string(),
                        reason,
                        since,
                    });
                }
            }
        }
    }

    /// Add another tally (one listing invocation's) to this one.
    pub fn merge(&mut self, other: &Tally) {
        self.running += other.running;
        for (k, v) in &other.by_bucket {
            *self.by_bucket.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.by_reason {
            *self.by_reason.entry(k.clone()).or_default() += v;
        }
        for (p, buckets) in &other.by_platform {
            let mine = self.by_platform.entry(p.clone()).or_default();
            for (k, v) in buckets {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
        if let Some(o) = &other.oldest_not_compliant {
            let older = self
                .oldest_not_compliant
                .as_ref()
                .is_none_or(|m| o.since < m.since || (o.since == m.since && o.instance_id < m.instance_id));
            if older {
                self.oldest_not_compliant = Some(o.clone());
            }
        }
    }

    pub fn count(&self, bucket: &str) -> u64 {
        self.by_bucket.get(bucket).copied().unwrap_or(0)
    }

    /// Compliant instances over running instances that should have the agent (all but the opted
    /// out). 1.0 for an empty fleet.
    pub fn ratio(&self) -> f64 {
        let denominator = self.running.saturating_sub(self.count(OPTED_OUT));
        if denominator == 0 {
            1.0
        } else {
            self.count(COMPLIANT) as f64 / denominator as f64
        }
    }

    /// Age of the oldest not-compliant instance at `now`, in hours (0 when every instance complies).
    pub fn oldest_hours(&self, now: DateTime<Utc>) -> f64 {
        self.oldest_not_compliant
            .as_ref()
            .map(|o| ((now - o.since).num_seconds().max(0) as f64) / 3600.0)
            .unwrap_or(0.0)
    }
}

/// The sweep's report: what it found, what it sent, and compliance after it. The sweep
/// function's last step ("Report Compliance") outputs it; `fleet-install sweep --wait` reads it
/// back from the execution's output (fields it does not find are zero).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SweepReport {
    pub running: u64,
    /// Compliance as the sweep found the fleet.
    pub found: Tally,
    pub ratio_before: f64,
    /// Compliance once the sweep's installs ended: compliant before, plus instances installed
    /// now, minus verifications that failed.
    pub ratio_after: f64,
    pub compliant_after: u64,
    /// Instances sent to install executions, by why.
    pub work: BTreeMap<String, u64>,
    pub sent: u64,
    pub installed: u64,
    pub verified: u64,
    pub drift_repaired: u64,
    pub drift_unrepaired: u64,
    pub failed: u64,
    pub install_executions: u64,
    pub failed_executions: u64,
    pub gone: u64,
}

impl SweepReport {
    /// The tally as published: the found counts, with the compliant bucket after the sweep.
    pub fn found_after(&self) -> Tally {
        let mut t = self.found.clone();
        let before = t.count(COMPLIANT);
        t.by_bucket.insert(COMPLIANT.into(), self.compliant_after);
        let moved = self.compliant_after as i64 - before as i64;
        let not_after = (t.count(NOT_COMPLIANT) as i64 - moved).max(0) as u64;
        t.by_bucket.insert(NOT_COMPLIANT.into(), not_after);
        t
    }
}

/// CloudWatch metric names the sweep publishes (namespace and dimension below).
pub const METRIC_NAMESPACE: &str = "FleetInstall";
pub const METRIC_RATIO: &str = "ComplianceRatio";
pub const METRIC_OLDEST_HOURS: &str = "OldestNonCompliantHours";
pub const METRIC_RUNNING: &str = "RunningInstances";
pub const METRIC_COMPLIANT: &str = "CompliantInstances";
pub const METRIC_NOT_COMPLIANT: &str = "NonCompliantInstances";
/// Drift put back, counted by check-status as it happens (the sweep's own total is SweepDriftRepaired).
pub const METRIC_DRIFT_REPAIRED: &str = "DriftRepaired";
pub const METRIC_SWEEP_DRIFT_REPAIRED: &str = "SweepDriftRepaired";
pub const METRIC_SENT: &str = "SweepInstancesSent";

/// The Embedded Metric Format documents for one sweep: the totals (dimension Stack), and the
/// not-compliant instances by reason (dimensions Stack, Reason). One log line each; CloudWatch
/// Logs turns them into metrics (no PutMetricData call).
pub fn emf_documents(
    tally: &Tally,
    stack: &str,
    now: DateTime<Utc>,
    drift_repaired: u64,
    sent: u64,
) -> Vec<serde_json::Value> {
    let ts = now.timestamp_millis();
    let meta = |dims: serde_json::Value, metrics: &[(&str, &str)]| {
        serde_json::json!({
            "Timestamp": ts,
            "CloudWatchMetrics": [{
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [dims],
                "Metrics": metrics.iter().map(|(n, u)| serde_json::json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
            }]
        })
    };
    let mut docs = vec![serde_json::json!({
        "_aws": meta(serde_json::json!(["Stack"]), &[
            (METRIC_RATIO, "None"),
            (METRIC_OLDEST_HOURS, "None"),
            (METRIC_RUNNING, "Count"),
            (METRIC_COMPLIANT, "Count"),
            (METRIC_NOT_COMPLIANT, "Count"),
            (METRIC_SWEEP_DRIFT_REPAIRED, "Count"),
            (METRIC_SENT, "Count"),
        ]),
        "Stack": stack,
        METRIC_RATIO: tally.ratio(),
        METRIC_OLDEST_HOURS: tally.oldest_hours(now),
        METRIC_RUNNING: tally.running,
        METRIC_COMPLIANT: tally.count(COMPLIANT),
        METRIC_NOT_COMPLIANT: tally.count(NOT_COMPLIANT),
        METRIC_SWEEP_DRIFT_REPAIRED: drift_repaired,
        METRIC_SENT: sent,
    })];
    for (reason, count) in &tally.by_reason {
        docs.push(serde_json::json!({
            "_aws": meta(serde_json::json!(["Stack", "Reason"]), &[(METRIC_NOT_COMPLIANT, "Count")]),
            "Stack": stack,
            "Reason": reason,
            METRIC_NOT_COMPLIANT: count,
        }));
    }
    docs
}

/// Metric names check-status publishes per check (namespace FleetInstall, dimension Stack).
pub const METRIC_INSTALLED: &str = "InstancesInstalled";
pub const METRIC_FAILED: &str = "InstancesFailed";

/// The Embedded Metric Format document for one check's outcomes.
pub fn emf_outcomes(
    stack: &str,
    now: DateTime<Utc>,
    installed: u64,
    failed: u64,
    drift_repaired: u64,
) -> serde_json::Value {
    serde_json::json!({
        "_aws": {
            "Timestamp": now.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [["Stack"]],
                "Metrics": [
                    {"Name": METRIC_INSTALLED, "Unit": "Count"},
                    {"Name": METRIC_FAILED, "Unit": "Count"},
                    {"Name": METRIC_DRIFT_REPAIRED, "Unit": "Count"},
                ],
            }],
        },
        "Stack": stack,
        METRIC_INSTALLED: installed,
        METRIC_FAILED: failed,
        METRIC_DRIFT_REPAIRED: drift_repaired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        crate::record::parse_time(s).unwrap()
    }

    fn inst(id: &str) -> RunningInstance {
        RunningInstance {
            instance_id: id.into(),
            launch_time: Some(t("2026-11-01T00:00:00Z")),
            opted_out: false,
            platform: Some("Linux/UNIX".into()),
        }
    }

    fn rec(state: LedgerState, code: Option<&str>) -> LedgerRecord {
        LedgerRecord {
            instance_id: "i-1".into(),
            state: Some(state),
            reason_code: code.map(str::to_string),
            platform: Some("Ubuntu".into()),
            created_at: Some("2026-11-02T00:00:00.000Z".into()),
            updated_at: Some("2026-11-03T00:00:00.000Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_state_has_one_bucket() {
        let i = inst("i-1");
        let b = |r: Option<LedgerRecord>| {
            let a = assess(&i, r.as_ref());
            (a.bucket, a.reason)
        };
        assert_eq!(b(None), (NOT_COMPLIANT, Some("NeverSeen".into())));
        assert_eq!(b(Some(rec(LedgerState::Installed, Some("Installed")))).0, COMPLIANT);
        assert_eq!(
            b(Some(rec(LedgerState::Unmanaged, Some("NoInstanceProfile")))),
            (NOT_COMPLIANT, Some("NoInstanceProfile".into()))
        );
        assert_eq!(
            b(Some(rec(LedgerState::Failed, Some("DownloadFailed")))),
            (NOT_COMPLIANT, Some(FAILED.into()))
        );
        assert_eq!(
            b(Some(rec(LedgerState::Installing, None))),
            (NOT_COMPLIANT, Some(IN_PROGRESS.into()))
        );
        assert_eq!(
            b(Some(rec(LedgerState::Skipped, Some("NoRoute")))),
            (SKIPPED, Some("NoRoute".into()))
        );
        assert_eq!(
            b(Some(rec(LedgerState::Skipped, Some("OptedOut")))),
            (NOT_COMPLIANT, Some("NeverSeen".into()))
        );
        assert_eq!(
            b(Some(rec(LedgerState::Skipped, Some("Stopped")))),
            (NOT_COMPLIANT, Some("Stopped".into()))
        );
        assert_eq!(
            b(Some(rec(LedgerState::Gone, None))),
            (NOT_COMPLIANT, Some("NeverSeen".into()))
        );
        let opted = RunningInstance {
            opted_out: true,
            ..inst("i-1")
        };
        assert_eq!(
            assess(&opted, Some(&rec(LedgerState::Installed, None))).bucket,
            OPTED_OUT
        );
    }

    #[test]
    fn a_failed_verification_is_drift_until_verified_again() {
        let i = inst("i-1");
        let mut r = rec(LedgerState::Failed, Some("InstallFailed"));
        r.verified_at = Some("2026-11-05T00:00:00.000Z".into());
        r.last_drift_at = Some("2026-11-06T00:00:00.000Z".into());
        let a = assess(&i, Some(&r));
        assert_eq!(a.reason.as_deref(), Some(DRIFT));
        // not compliant since its last verification
        assert_eq!(a.since, Some(t("2026-11-05T00:00:00Z")));
        r.last_drift_at = Some("2026-11-04T00:00:00.000Z".into());
        assert_eq!(assess(&i, Some(&r)).reason.as_deref(), Some(FAILED));
    }

    #[test]
    fn tallies_merge_and_give_the_ratio_and_the_oldest() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        a.add("i-1", &assess(&inst("i-1"), Some(&rec(LedgerState::Installed, None))));
        a.add("i-2", &assess(&inst("i-2"), None)); // never seen since launch (Nov 1)
        b.add(
            "i-3",
            &assess(
                &inst("i-3"),
                Some(&rec(LedgerState::Unmanaged, Some("NoInstanceProfile"))),
            ),
        );
        b.add(
            "i-4",
            &assess(
                &RunningInstance {
                    opted_out: true,
                    ..inst("i-4")
                },
                None,
            ),
        );
        a.merge(&b);
        assert_eq!(a.running, 4);
        assert_eq!(a.by_bucket.values().sum::<u64>(), 4);
        assert_eq!(a.count(NOT_COMPLIANT), 2);
        assert!((a.ratio() - 1.0 / 3.0).abs() < 1e-9);
        let oldest = a.oldest_not_compliant.clone().unwrap();
        assert_eq!(oldest.instance_id, "i-2");
        assert_eq!(oldest.reason, "NeverSeen");
        assert_eq!(a.oldest_hours(t("2026-11-02T00:00:00Z")), 24.0);
        assert_eq!(a.by_platform["Ubuntu"][COMPLIANT], 1);
        assert_eq!(a.by_platform["Linux/UNIX"][OPTED_OUT], 1);
        assert_eq!(Tally::default().ratio(), 1.0);
    }

    #[test]
    fn emf_has_the_totals_and_one_document_per_reason() {
        let mut tally = Tally::default();
        tally.add("i-1", &assess(&inst("i-1"), None));
        tally.add("i-2", &assess(&inst("i-2"), Some(&rec(LedgerState::Installed, None))));
        let docs = emf_documents(&tally, "fleet", t("2026-11-02T00:00:00Z"), 3, 7);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], METRIC_NAMESPACE);
        assert_eq!(docs[0][METRIC_RATIO], 0.5);
        assert_eq!(docs[0][METRIC_SWEEP_DRIFT_REPAIRED], 3);
        assert_eq!(docs[0]["Stack"], "fleet");
        // every metric named in the metadata is a member of the document
        for d in &docs {
            for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
                assert!(d.get(m["Name"].as_str().unwrap()).is_some());
            }
        }
        assert_eq!(docs[1]["Reason"], "NeverSeen");
        let o = emf_outcomes("fleet", t("2026-11-02T00:00:00Z"), 5, 1, 2);
        for m in o["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
            assert!(o.get(m["Name"].as_str().unwrap()).is_some());
        }
        assert_eq!(o[METRIC_INSTALLED], 5);
        assert_eq!(docs[1][METRIC_NOT_COMPLIANT], 1);
    }
}
