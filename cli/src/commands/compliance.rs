//! `compliance`: every running instance in exactly one bucket (compliant, not compliant with its
//! reason, skipped, opted out), from DescribeInstances and the ledger, with fleet-core's
//! [`assess`], the same rules the sweep counts the fleet with. Prints the compliance ratio, the
//! counts per bucket and reason, optionally per platform or per reason, and the oldest
//! not-compliant instance with its age.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use fleet_core::compliance::{
    assess, Assessment, RunningInstance, Tally, COMPLIANT, NOT_COMPLIANT, OPTED_OUT, SKIPPED,
};
use fleet_core::record::LedgerRecord;
use serde::Serialize;

use crate::cli::{ComplianceArgs, ComplianceBy};
use crate::context::{Context, Progress, Report};
use crate::ledger::scan_records;
use crate::table::{key_values, section, Table};

/// The buckets in the order tables list them.
pub const BUCKETS: [&str; 4] = [COMPLIANT, NOT_COMPLIANT, SKIPPED, OPTED_OUT];

/// The oldest not-compliant instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OldestRow {
    pub instance_id: String,
    pub reason: String,
    /// RFC 3339.
    pub since: String,
    pub age_hours: f64,
}

/// One reason (of the not-compliant or skipped bucket), with its oldest instance (`--by reason`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasonRow {
    pub reason: String,
    pub bucket: String,
    pub instances: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<OldestRow>,
}

/// One running instance and its bucket (`--instances`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRow {
    pub instance_id: String,
    pub bucket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub platform: String,
    /// Compliant: verified (or installed) since; not compliant: not compliant since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceReport {
    /// When the fleet was looked at (ages count from here).
    pub at: String,
    pub running: u64,
    /// Compliant over running instances that should have the agent (all but the opted out).
    pub ratio: f64,
    /// Every bucket, 0 included; the counts add up to `running`.
    pub by_bucket: BTreeMap<String, u64>,
    /// Not-compliant instances by reason.
    pub by_reason: BTreeMap<String, u64>,
    /// platform -> bucket -> instances (every bucket, 0 included).
    pub by_platform: BTreeMap<String, BTreeMap<String, u64>>,
    /// null when every instance complies.
    pub oldest_not_compliant: Option<OldestRow>,
    /// `--by reason`: each reason with its oldest instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<ReasonRow>>,
    /// `--instances`: every running instance with its bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceRow>>,
    /// What the table breaks down (`--by`).
    #[serde(skip)]
    pub by: Option<ComplianceBy>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Hours from `since` to `now`, two decimals, never negative.
pub fn age_hours(since: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    let hours = (now - since).num_seconds().max(0) as f64 / 3600.0;
    (hours * 100.0).round() / 100.0
}

/// An age for people: `45m`, `5h 12m`, `3d 4h`.
pub fn human_age(hours: f64) -> String {
    let minutes = (hours * 60.0).round().max(0.0) as u64;
    let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn oldest_row(instance_id: &str, reason: &str, since: DateTime<Utc>, now: DateTime<Utc>) -> OldestRow {
    OldestRow {
        instance_id: instance_id.to_string(),
        reason: reason.to_string(),
        since: rfc3339(since),
        age_hours: age_hours(since, now),
    }
}

/// Put every running instance in its bucket and count. Pure: the fleet and the ledger come in.
pub fn build(
    fleet: &[RunningInstance],
    records: &HashMap<String, LedgerRecord>,
    now: DateTime<Utc>,
    by: Option<ComplianceBy>,
    list: bool,
) -> ComplianceReport {
    let mut tally = Tally::default();
    let assessed: Vec<(&RunningInstance, Assessment)> = fleet
        .iter()
        .map(|i| (i, assess(i, records.get(&i.instance_id))))
        .collect();
    for (i, a) in &assessed {
        tally.add(&i.instance_id, a);
    }
    let mut by_bucket: BTreeMap<String, u64> = BUCKETS.iter().map(|b| (b.to_string(), 0)).collect();
    by_bucket.extend(tally.by_bucket.clone());
    let by_platform = tally
        .by_platform
        .iter()
        .map(|(p, counts)| {
            let mut all: BTreeMap<String, u64> = BUCKETS.iter().map(|b| (b.to_string(), 0)).collect();
            all.extend(counts.clone());
            (p.clone(), all)
        })
        .collect();
    let reasons = (by == Some(ComplianceBy::Reason)).then(|| reason_rows(&assessed, now));
    let instances = list.then(|| {
        let mut rows: Vec<InstanceRow> = assessed
            .iter()
            .map(|(i, a)| InstanceRow {
                instance_id: i.instance_id.clone(),
                bucket: a.bucket.to_string(),
                reason: a.reason.clone(),
                platform: a.platform.clone(),
                since: a.since.map(rfc3339),
            })
            .collect();
        rows.sort_by(|a, b| (bucket_rank(&a.bucket), &a.instance_id).cmp(&(bucket_rank(&b.bucket), &b.instance_id)));
        rows
    });
    ComplianceReport {
        at: rfc3339(now),
        running: tally.running,
        ratio: tally.ratio(),
        by_bucket,
        by_reason: tally.by_reason.clone(),
        by_platform,
        oldest_not_compliant: tally
            .oldest_not_compliant
            .as_ref()
            .map(|o| oldest_row(&o.instance_id, &o.reason, o.since, now)),
        reasons,
        instances,
        by,
    }
}

fn bucket_rank(bucket: &str) -> usize {
    BUCKETS.iter().position(|b| *b == bucket).unwrap_or(BUCKETS.len())
}

/// Reasons of the not-compliant and skipped buckets, most instances first, each with its oldest.
fn reason_rows(assessed: &[(&RunningInstance, Assessment)], now: DateTime<Utc>) -> Vec<ReasonRow> {
    let mut rows: BTreeMap<(usize, String), ReasonRow> = BTreeMap::new();
    for (i, a) in assessed {
        if a.bucket != NOT_COMPLIANT && a.bucket != SKIPPED {
            continue;
        }
        let reason = a.reason.clone().unwrap_or_default();
        let row = rows
            .entry((bucket_rank(a.bucket), reason.clone()))
            .or_insert_with(|| ReasonRow {
                reason: reason.clone(),
                bucket: a.bucket.to_string(),
                instances: 0,
                oldest: None,
            });
        row.instances += 1;
        if let Some(since) = a.since {
            let older = row.oldest.as_ref().is_none_or(|o| {
                let o_since = fleet_core::record::parse_time(&o.since);
                o_since.is_none_or(|t| since < t || (since == t && i.instance_id < o.instance_id))
            });
            if older {
                row.oldest = Some(oldest_row(&i.instance_id, &reason, since, now));
            }
        }
    }
    let mut rows: Vec<ReasonRow> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        (bucket_rank(&a.bucket), std::cmp::Reverse(a.instances), &a.reason).cmp(&(
            bucket_rank(&b.bucket),
            std::cmp::Reverse(b.instances),
            &b.reason,
        ))
    });
    rows
}

impl ComplianceReport {
    fn count(&self, bucket: &str) -> u64 {
        self.by_bucket.get(bucket).copied().unwrap_or(0)
    }
}

/// Compliant over the instances that should have the agent, as `0.917 (11 of 12)`.
fn ratio_text(ratio: f64, compliant: u64, should: u64) -> String {
    format!("{ratio:.3} ({compliant} of {should})")
}

/// Buckets in their order, the not-compliant one followed by its reasons (most instances first).
pub fn bucket_table(by_bucket: &BTreeMap<String, u64>, by_reason: &BTreeMap<String, u64>) -> Table {
    let mut t = Table::new(&["BUCKET", "REASON", "INSTANCES"]).numeric(&[2]);
    for b in BUCKETS {
        t.row([b, "", &by_bucket.get(b).copied().unwrap_or(0).to_string()]);
        if b == NOT_COMPLIANT {
            let mut reasons: Vec<(&String, &u64)> = by_reason.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (reason, n) in reasons {
                t.row([String::new(), reason.clone(), n.to_string()]);
            }
        }
    }
    t
}

impl Report for ComplianceReport {
    fn to_table(&self) -> String {
        let should = self.running.saturating_sub(self.count(OPTED_OUT));
        let mut out = key_values(&[
            ("Running instances", self.running.to_string()),
            (
                "Compliance",
                format!(
                    "{} compliant; opted-out instances are not counted",
                    ratio_text(self.ratio, self.count(COMPLIANT), should)
                ),
            ),
            (
                "Oldest not compliant",
                match &self.oldest_not_compliant {
                    Some(o) => format!(
                        "{} ({}) since {}, {}",
                        o.instance_id,
                        o.reason,
                        o.since,
                        human_age(o.age_hours)
                    ),
                    None => "none".into(),
                },
            ),
            ("At", self.at.clone()),
        ]);
        let buckets = bucket_table(&self.by_bucket, &self.by_reason);
        out.push('\n');
        out.push_str(&section("By bucket (not compliant: by reason)", &buckets, "none"));
        if self.by == Some(ComplianceBy::Platform) {
            let mut t = Table::new(&[
                "PLATFORM",
                "COMPLIANT",
                "NOT COMPLIANT",
                "SKIPPED",
                "OPTED OUT",
                "TOTAL",
                "RATIO",
            ])
            .numeric(&[1, 2, 3, 4, 5, 6]);
            for (platform, counts) in &self.by_platform {
                let get = |b: &str| counts.get(b).copied().unwrap_or(0);
                let total: u64 = counts.values().sum();
                let should = total.saturating_sub(get(OPTED_OUT));
                t.row([
                    platform.clone(),
                    get(COMPLIANT).to_string(),
                    get(NOT_COMPLIANT).to_string(),
                    get(SKIPPED).to_string(),
                    get(OPTED_OUT).to_string(),
                    total.to_string(),
                    if should == 0 {
                        "-".to_string()
                    } else {
                        format!("{:.3}", get(COMPLIANT) as f64 / should as f64)
                    },
                ]);
            }
            out.push('\n');
            out.push_str(&section("By platform", &t, "no running instance"));
        }
        if let Some(reasons) = &self.reasons {
            let mut t = Table::new(&["REASON", "BUCKET", "INSTANCES", "OLDEST", "SINCE", "AGE"]).numeric(&[2]);
            for r in reasons {
                let (id, since, age) = match &r.oldest {
                    Some(o) => (o.instance_id.clone(), o.since.clone(), human_age(o.age_hours)),
                    None => Default::default(),
                };
                t.row([
                    r.reason.clone(),
                    r.bucket.clone(),
                    r.instances.to_string(),
                    id,
                    since,
                    age,
                ]);
            }
            out.push('\n');
            out.push_str(&section(
                "By reason (not compliant and skipped)",
                &t,
                "none: every instance complies or is opted out",
            ));
        }
        if let Some(instances) = &self.instances {
            let mut t = Table::new(&["INSTANCE", "BUCKET", "REASON", "PLATFORM", "SINCE"]);
            for i in instances {
                t.row([
                    i.instance_id.clone(),
                    i.bucket.clone(),
                    i.reason.clone().unwrap_or_default(),
                    i.platform.clone(),
                    i.since.clone().unwrap_or_default(),
                ]);
            }
            out.push('\n');
            out.push_str(&section("Instances", &t, "none running"));
        }
        out
    }
}

pub async fn run(ctx: &Context, args: &ComplianceArgs) -> Result<ComplianceReport> {
    let outputs = ctx.outputs().await?;
    let table = outputs.ledger_table()?;
    let opt_out_tag = outputs.opt_out_tag()?;
    let (ec2, db) = (ctx.ec2(), ctx.dynamodb());
    // Both listings at once: DescribeInstances pages and ledger Scan pages do not depend on each other.
    let (fleet, records) = tokio::try_join!(
        running_instances(&ec2, opt_out_tag, ctx.progress),
        scan_records(&db, table, Progress::disabled()),
    )?;
    ctx.progress.clear();
    Ok(build(&fleet, &records, Utc::now(), args.by, args.instances))
}

/// Every running instance of the account and Region: DescribeInstances with the filter
/// instance-state-name=running, 1,000 a page, every page.
pub async fn running_instances(
    ec2: &aws_sdk_ec2::Client,
    opt_out_tag: &str,
    progress: Progress,
) -> Result<Vec<RunningInstance>> {
    crate::aws::running_instances(
        ec2,
        |i| {
            Some(RunningInstance {
                instance_id: i.instance_id()?.to_string(),
                launch_time: i.launch_time().and_then(crate::aws::to_utc),
                opted_out: fleet_core::adapters::has_opt_out_tag(i, opt_out_tag),
                platform: i.platform_details().map(str::to_string),
            })
        },
        |n| progress.update(format!("listing running instances: {n}")),
    )
    .await
    .context("cannot list the running instances (ec2:DescribeInstances)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::model::LedgerState;

    fn t(s: &str) -> DateTime<Utc> {
        fleet_core::record::parse_time(s).unwrap()
    }

    fn inst(id: &str, opted_out: bool) -> RunningInstance {
        RunningInstance {
            instance_id: id.into(),
            launch_time: Some(t("2026-11-25T00:00:00Z")),
            opted_out,
            platform: Some("Linux/UNIX".into()),
        }
    }

    fn rec(id: &str, state: LedgerState, code: Option<&str>, platform: &str, created: &str) -> LedgerRecord {
        LedgerRecord {
            instance_id: id.into(),
            state: Some(state),
            reason_code: code.map(str::to_string),
            platform: Some(platform.into()),
            created_at: Some(created.into()),
            updated_at: Some(created.into()),
            ..Default::default()
        }
    }

    /// Seven running instances, one of each kind, and a ledger that also holds a gone instance.
    fn fleet() -> (Vec<RunningInstance>, HashMap<String, LedgerRecord>) {
        let fleet = vec![
            inst("i-0000000000000000a", false), // installed
            inst("i-0000000000000000b", false), // installed
            inst("i-0000000000000000c", false), // never seen (launched Nov 25 00:00)
            inst("i-0000000000000000d", false), // unmanaged, no profile, since Nov 24
            inst("i-0000000000000000e", false), // failed
            inst("i-0000000000000000f", false), // skipped NoRoute
            inst("i-00000000000000010", true),  // opted out
        ];
        let records = [
            rec(
                "i-0000000000000000a",
                LedgerState::Installed,
                Some("Installed"),
                "Ubuntu",
                "2026-11-20T00:00:00.000Z",
            ),
            rec(
                "i-0000000000000000b",
                LedgerState::Installed,
                Some("Installed"),
                "Windows",
                "2026-11-20T00:00:00.000Z",
            ),
            rec(
                "i-0000000000000000d",
                LedgerState::Unmanaged,
                Some("NoInstanceProfile"),
                "Ubuntu",
                "2026-11-24T00:00:00.000Z",
            ),
            rec(
                "i-0000000000000000e",
                LedgerState::Failed,
                Some("DownloadFailed"),
                "Ubuntu",
                "2026-11-25T06:00:00.000Z",
            ),
            rec(
                "i-0000000000000000f",
                LedgerState::Skipped,
                Some("NoRoute"),
                "macOS",
                "2026-11-25T06:00:00.000Z",
            ),
            rec(
                "i-0000000000000ffff",
                LedgerState::Gone,
                None,
                "Ubuntu",
                "2026-11-01T00:00:00.000Z",
            ),
        ]
        .into_iter()
        .map(|r| (r.instance_id.clone(), r))
        .collect();
        (fleet, records)
    }

    fn now() -> DateTime<Utc> {
        t("2026-11-25T12:00:00Z")
    }

    #[test]
    fn every_running_instance_is_in_exactly_one_bucket() {
        let (fleet, records) = fleet();
        let r = build(&fleet, &records, now(), None, true);
        assert_eq!(r.running, 7);
        assert_eq!(r.by_bucket.values().sum::<u64>(), r.running);
        assert_eq!(
            r.by_bucket,
            BTreeMap::from([
                (COMPLIANT.to_string(), 2),
                (NOT_COMPLIANT.to_string(), 3),
                (SKIPPED.to_string(), 1),
                (OPTED_OUT.to_string(), 1),
            ])
        );
        assert_eq!(
            r.by_reason,
            BTreeMap::from([
                ("Failed".to_string(), 1),
                ("NeverSeen".to_string(), 1),
                ("NoInstanceProfile".to_string(), 1),
            ])
        );
        // 2 compliant of the 6 that should have the agent
        assert!((r.ratio - 2.0 / 6.0).abs() < 1e-9);
        let listed = r.instances.as_ref().unwrap();
        assert_eq!(listed.len(), 7);
        let mut ids: Vec<&str> = listed.iter().map(|i| i.instance_id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 7, "an instance listed twice");
        assert!(!ids.contains(&"i-0000000000000ffff"), "a gone instance counted");
        // the unmanaged one has waited longest (since its ledger item was created on Nov 24)
        let o = r.oldest_not_compliant.clone().unwrap();
        assert_eq!(
            (o.instance_id.as_str(), o.reason.as_str(), o.since.as_str(), o.age_hours),
            ("i-0000000000000000d", "NoInstanceProfile", "2026-11-24T00:00:00Z", 36.0)
        );
        // platforms: the ledger's when it knows, else EC2's; every bucket present
        assert_eq!(r.by_platform["Ubuntu"][COMPLIANT], 1);
        assert_eq!(r.by_platform["Ubuntu"][NOT_COMPLIANT], 2);
        assert_eq!(r.by_platform["Linux/UNIX"][OPTED_OUT], 1);
        assert_eq!(r.by_platform["Windows"][SKIPPED], 0);
        let platform_total: u64 = r.by_platform.values().flat_map(|b| b.values()).sum();
        assert_eq!(platform_total, 7);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let (fleet, records) = fleet();
        let json = serde_json::to_value(build(&fleet, &records, now(), None, false)).unwrap();
        for key in [
            "running",
            "ratio",
            "byBucket",
            "byReason",
            "byPlatform",
            "oldestNotCompliant",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["oldestNotCompliant"]["ageHours"], 36.0);
        assert_eq!(json["oldestNotCompliant"]["instanceId"], "i-0000000000000000d");
        assert!(json.get("instances").is_none() && json.get("reasons").is_none());
        // an empty fleet: all buckets 0, ratio 1, nothing oldest
        let empty = serde_json::to_value(build(&[], &HashMap::new(), now(), None, true)).unwrap();
        assert_eq!(empty["running"], 0);
        assert_eq!(empty["ratio"], 1.0);
        assert_eq!(empty["byBucket"][COMPLIANT], 0);
        assert!(empty["oldestNotCompliant"].is_null());
        assert_eq!(empty["instances"], serde_json::json!([]));
    }

    #[test]
    fn the_bucket_table_nests_reasons_under_not_compliant() {
        let (fleet, records) = fleet();
        let text = build(&fleet, &records, now(), None, false).to_table();
        println!("{text}");
        assert!(text.starts_with("Running instances     7\n"), "{text}");
        assert!(
            text.contains("Compliance            0.333 (2 of 6) compliant"),
            "{text}"
        );
        assert!(
            text.contains(
                "Oldest not compliant  i-0000000000000000d (NoInstanceProfile) since 2026-11-24T00:00:00Z, 1d 12h\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "By bucket (not compliant: by reason)\n\
                 BUCKET         REASON             INSTANCES\n\
                 compliant                                 2\n\
                 not_compliant                             3\n\
                 \x20              Failed                     1\n\
                 \x20              NeverSeen                  1\n\
                 \x20              NoInstanceProfile          1\n\
                 skipped                                   1\n\
                 opted_out                                 1\n"
            ),
            "{text}"
        );
        assert!(!text.contains("By platform") && !text.contains("By reason (") && !text.contains("Instances"));
    }

    #[test]
    fn by_platform_and_by_reason_tables() {
        let (fleet, records) = fleet();
        let text = build(&fleet, &records, now(), Some(ComplianceBy::Platform), false).to_table();
        println!("{text}");
        assert!(
            text.contains(
                "PLATFORM    COMPLIANT  NOT COMPLIANT  SKIPPED  OPTED OUT  TOTAL  RATIO\n\
                 Linux/UNIX          0              1        0          1      2  0.000\n\
                 Ubuntu              1              2        0          0      3  0.333\n\
                 Windows             1              0        0          0      1  1.000\n\
                 macOS               0              0        1          0      1  0.000\n"
            ),
            "{text}"
        );
        let r = build(&fleet, &records, now(), Some(ComplianceBy::Reason), false);
        let reasons = r.reasons.clone().unwrap();
        assert_eq!(
            reasons
                .iter()
                .map(|r| (r.reason.as_str(), r.bucket.as_str(), r.instances))
                .collect::<Vec<_>>(),
            vec![
                ("Failed", NOT_COMPLIANT, 1),
                ("NeverSeen", NOT_COMPLIANT, 1),
                ("NoInstanceProfile", NOT_COMPLIANT, 1),
                ("NoRoute", SKIPPED, 1),
            ]
        );
        // never seen: not compliant since its launch, 12 hours ago
        assert_eq!(reasons[1].oldest.as_ref().unwrap().age_hours, 12.0);
        let text = r.to_table();
        println!("{text}");
        assert!(
            text.contains(
                "NeverSeen          not_compliant          1  i-0000000000000000c  2026-11-25T00:00:00Z  12h 00m"
            ),
            "{text}"
        );
        assert!(!text.contains("By platform"));
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(human_age(0.0), "0m");
        assert_eq!(human_age(0.75), "45m");
        assert_eq!(human_age(5.2), "5h 12m");
        assert_eq!(human_age(76.0), "3d 4h");
        assert_eq!(age_hours(t("2026-11-25T12:00:00Z"), t("2026-11-25T11:00:00Z")), 0.0);
        assert_eq!(age_hours(t("2026-11-25T00:00:00Z"), t("2026-11-25T01:20:00Z")), 1.33);
    }

    #[tokio::test]
    async fn lists_every_page_of_running_instances() {
        use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
        use aws_sdk_ec2::types::{Instance, Reservation, Tag};
        use aws_smithy_mocks::{mock, mock_client};
        let running = |r: &aws_sdk_ec2::operation::describe_instances::DescribeInstancesInput| {
            r.filters()
                .iter()
                .any(|f| f.name() == Some("instance-state-name") && f.values() == ["running"])
        };
        let pages = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(move |r| running(r) && r.next_token().is_none())
            .then_output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(
                        Reservation::builder()
                            .instances(
                                Instance::builder()
                                    .instance_id("i-0000000000000000a")
                                    .platform_details("Linux/UNIX")
                                    .launch_time(aws_smithy_types::DateTime::from_secs(1_764_028_800))
                                    .build(),
                            )
                            .build(),
                    )
                    .next_token("page-2")
                    .build()
            });
        let page2 = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(move |r| running(r) && r.next_token() == Some("page-2"))
            .then_output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(
                        Reservation::builder()
                            .instances(
                                Instance::builder()
                                    .instance_id("i-0000000000000000b")
                                    .tags(Tag::builder().key("fleet-install:opt-out").value("").build())
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            });
        let ec2 = mock_client!(aws_sdk_ec2, aws_smithy_mocks::RuleMode::MatchAny, [&pages, &page2]);
        let fleet = running_instances(&ec2, "fleet-install:opt-out", Progress::disabled())
            .await
            .unwrap();
        assert_eq!((pages.num_calls(), page2.num_calls()), (1, 1));
        assert_eq!(fleet.len(), 2);
        assert_eq!(fleet[0].launch_time, Some(t("2025-11-25T00:00:00Z")));
        assert_eq!(fleet[0].platform.as_deref(), Some("Linux/UNIX"));
        assert!(!fleet[0].opted_out && fleet[1].opted_out);
    }

    #[tokio::test]
    async fn a_refused_listing_says_what_was_denied() {
        use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
        use aws_smithy_mocks::{mock, mock_client};
        let denied = mock!(aws_sdk_ec2::Client::describe_instances).then_error(|| {
            DescribeInstancesError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("UnauthorizedOperation")
                    .message("You are not authorized to perform this operation.")
                    .build(),
            )
        });
        let ec2 = mock_client!(aws_sdk_ec2, [&denied]);
        let err = running_instances(&ec2, "opt-out", Progress::disabled())
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("cannot list the running instances (ec2:DescribeInstances)"),
            "{text}"
        );
        assert!(text.contains("UnauthorizedOperation: You are not authorized"), "{text}");
    }
}
