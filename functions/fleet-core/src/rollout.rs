//! The rollout's logic: targets into a canary wave and waves, waves into chunks (one install
//! execution each), the canary's cover of every platform family, and the failure budget that stops
//! a rollout.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Summary;

/// How big the waves after the canary are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    Count(usize),
    /// Percent of all targets, 0 < p <= 100.
    Percent(f64),
}

/// One chunk of a wave: the ledger key where its instance ids are kept, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkRef {
    pub targets_key: String,
    pub instances: usize,
    /// The name the chunk's install execution gets: unique within the rollout.
    pub execution_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WavePlan {
    pub wave: usize,
    pub label: String,
    pub instances: usize,
    pub chunks: Vec<ChunkRef>,
    /// The canary's targets by platform family ([`platform_family`]); empty for the other waves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, usize>,
}

/// The order targets are rolled out in: a stable shuffle (by hash), so that the canary and each
/// wave mix platforms and subnets instead of taking the lowest ids.
pub fn rollout_order(ids: &mut Vec<String>, rollout_id: &str) {
    ids.sort();
    ids.dedup();
    ids.sort_by_cached_key(|id| order_key(rollout_id, id));
}

fn order_key(rollout_id: &str, instance_id: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(rollout_id.as_bytes());
    h.update(instance_id.as_bytes());
    h.finalize()[..8].to_vec()
}

/// Split ordered targets into the canary and the waves, and each wave into chunks of at most
/// `max_per_execution` instances. Returns the plan and the ids of each chunk, in order.
pub fn plan_waves(
    ids: &[String],
    canary: usize,
    size: WaveSize,
    max_per_execution: usize,
    rollout_id: &str,
) -> Vec<(WavePlan, Vec<Vec<String>>)> {
    let total = ids.len();
    let mut out = Vec::new();
    let mut rest = ids;
    let canary = canary.min(total);
    let per_wave = match size {
        WaveSize::Count(n) => n.max(1),
        WaveSize::Percent(p) => ((total as f64 * p.clamp(0.0, 100.0) / 100.0).ceil() as usize).max(1),
    };
    let mut wave = 0;
    while !rest.is_empty() {
        let take = if wave == 0 && canary > 0 {
            canary
        } else {
            per_wave.min(rest.len())
        };
        let (now, later) = rest.split_at(take);
        let label = if wave == 0 && canary > 0 {
            "canary".to_string()
        } else {
            format!("wave {wave}")
        };
        let chunks: Vec<Vec<String>> = now.chunks(max_per_execution.max(1)).map(|c| c.to_vec()).collect();
        let refs = chunks
            .iter()
            .enumerate()
            .map(|(c, ids)| ChunkRef {
                targets_key: crate::ledger::rollout_targets_key(rollout_id, wave, c),
                instances: ids.len(),
                execution_name: truncate_name(&format!("{rollout_id}-w{wave}-c{c}")),
            })
            .collect();
        out.push((
            WavePlan {
                wave,
                label,
                instances: now.len(),
                chunks: refs,
                platforms: BTreeMap::new(),
            },
            chunks,
        ));
        rest = later;
        wave += 1;
    }
    out
}

/// A rollout target: an instance id and its platform family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub instance_id: String,
    pub family: String,
}

/// The operating system a target runs, from EC2's PlatformDetails, which names the OS and for
/// some AMIs a licence add-on ("Windows with SQL Server Standard", "Red Hat Enterprise Linux with
/// HA", "Linux with SQL Server Web", "Windows BYOL", "Red Hat BYOL Linux"). An install depends on
/// the OS, not on the licence: the add-on is dropped. `None` for an empty value.
pub fn os_of_platform_details(details: &str) -> Option<String> {
    let details = details.trim();
    let lower = details.to_ascii_lowercase();
    let base = match lower.find(" with ") {
        Some(i) => details[..i].trim(),
        None => details,
    };
    let base_lower = base.to_ascii_lowercase();
    let os = if base.is_empty() {
        return None;
    } else if base_lower.starts_with("windows") {
        "Windows"
    } else if base_lower.starts_with("red hat") {
        "Red Hat Enterprise Linux"
    } else if base_lower == "linux" || base_lower == "linux/unix" {
        "Linux/UNIX"
    } else {
        base
    };
    Some(os.to_string())
}

/// A target's platform family: its operating system and CPU architecture, as DescribeInstances
/// reports them (no call per instance), e.g. "Linux/UNIX (x86_64)", "Linux/UNIX (arm64)",
/// "Windows (x86_64)", "Red Hat Enterprise Linux (arm64)", "SUSE Linux (x86_64)", "Ubuntu Pro (x86_64)".
///
/// The OS is EC2's PlatformDetails without licence add-ons ([`os_of_platform_details`]); when
/// EC2 gives none, its Platform (`windows` for Windows instances, absent for the others, which are
/// Linux/UNIX). EC2 reports Amazon Linux, Ubuntu (other than Ubuntu Pro), Debian and the other
/// community distributions all as "Linux/UNIX": they are one family here.
pub fn platform_family(platform_details: Option<&str>, platform: Option<&str>, architecture: Option<&str>) -> String {
    let os = platform_details
        .and_then(os_of_platform_details)
        .or_else(|| {
            platform.and_then(|p| {
                if p.trim().eq_ignore_ascii_case("windows") {
                    Some("Windows".to_string())
                } else {
                    os_of_platform_details(p)
                }
            })
        })
        .unwrap_or_else(|| "Linux/UNIX".to_string());
    match architecture.map(str::trim).filter(|a| !a.is_empty()) {
        Some(arch) => format!("{os} ({arch})"),
        None => os,
    }
}

/// Targets in rollout order: deduplicated by instance id, then the same stable shuffle as
/// [`rollout_order`].
pub fn order_targets(targets: &mut Vec<Target>, rollout_id: &str) {
    targets.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    targets.dedup_by(|a, b| a.instance_id == b.instance_id);
    targets.sort_by_cached_key(|t| order_key(rollout_id, &t.instance_id));
}

/// The canary and the order of the other targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryPick {
    /// Every target id: the canary's first, then the others, each in rollout order.
    pub ids: Vec<String>,
    /// Instances in the canary: the requested size, or the number of platform families when there
    /// are more families than that (at most the number of targets; 0 when no canary was asked for).
    pub canary: usize,
    /// The canary's members by platform family.
    pub platforms: BTreeMap<String, usize>,
    /// Platform families among all the targets.
    pub families: usize,
}

/// Pick the canary from targets in rollout order so that it holds at least one instance of every
/// platform family among the targets: first the earliest target of each family, then the earliest
/// of the others until the canary has `canary` members. When there are more families than
/// `canary`, the canary grows to one instance per family, so that a failure specific to one
/// platform always stops the rollout at the canary. `canary == 0` means no canary wave.
pub fn pick_canary(ordered: &[Target], canary: usize) -> CanaryPick {
    let mut first_of_family: Vec<usize> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, t) in ordered.iter().enumerate() {
        if seen.insert(t.family.as_str()) {
            first_of_family.push(i);
        }
    }
    let families = first_of_family.len();
    if canary == 0 {
        return CanaryPick {
            ids: ordered.iter().map(|t| t.instance_id.clone()).collect(),
            canary: 0,
            platforms: BTreeMap::new(),
            families,
        };
    }
    let size = canary.max(families).min(ordered.len());
    let mut in_canary = vec![false; ordered.len()];
    for &i in &first_of_family {
        in_canary[i] = true;
    }
    let mut members = families;
    for flag in in_canary.iter_mut() {
        if members >= size {
            break;
        }
        if !*flag {
            *flag = true;
            members += 1;
        }
    }
    let mut ids = Vec::with_capacity(ordered.len());
    let mut platforms = BTreeMap::new();
    for (t, _) in ordered.iter().zip(&in_canary).filter(|(_, c)| **c) {
        ids.push(t.instance_id.clone());
        *platforms.entry(t.family.clone()).or_insert(0) += 1;
    }
    ids.extend(
        ordered
            .iter()
            .zip(&in_canary)
            .filter(|(_, c)| !**c)
            .map(|(t, _)| t.instance_id.clone()),
    );
    CanaryPick {
        ids,
        canary: size,
        platforms,
        families,
    }
}

/// The whole plan from targets in rollout order ([`order_targets`]): a canary that covers every
/// platform family ([`pick_canary`]), then waves of `size`, each in chunks of at most
/// `max_per_execution`. The canary wave's plan lists its platforms.
pub fn plan_rollout(
    ordered: &[Target],
    canary: usize,
    size: WaveSize,
    max_per_execution: usize,
    rollout_id: &str,
) -> Vec<(WavePlan, Vec<Vec<String>>)> {
    let pick = pick_canary(ordered, canary);
    let mut plan = plan_waves(&pick.ids, pick.canary, size, max_per_execution, rollout_id);
    if pick.canary > 0 {
        if let Some((first, _)) = plan.first_mut() {
            first.platforms = pick.platforms;
        }
    }
    plan
}

/// Step Functions execution names: at most 80 characters.
pub const MAX_EXECUTION_NAME: usize = 80;

/// An execution name of at most 80 characters, cut at character boundaries (a rollout id may hold
/// multibyte characters). A longer name keeps its distinguishing tail (wave and chunk) behind a
/// short hash of the whole name, so two long rollout ids that share an ending still differ.
pub fn truncate_name(s: &str) -> String {
    if s.chars().count() <= MAX_EXECUTION_NAME {
        return s.to_string();
    }
    let digest: String = Sha256::digest(s.as_bytes())
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect();
    // 10 hex digits and a dash, then the tail.
    let tail = crate::text::tail(s, MAX_EXECUTION_NAME - digest.len() - 1);
    format!("{digest}-{tail}")
}

/// A wave's outcome, from its install executions' summaries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveResult {
    pub wave: usize,
    pub label: String,
    pub instances: u64,
    pub installed: u64,
    pub failed: u64,
    pub unmanaged: u64,
    pub skipped: u64,
    pub duplicate: u64,
    /// failed / (installed + failed): unmanaged and skipped instances are reported, not counted,
    /// since the install never ran on them.
    pub failure_ratio: f64,
}

pub fn wave_result(wave: usize, label: &str, summaries: &[Summary]) -> WaveResult {
    let mut r = WaveResult {
        wave,
        label: label.to_string(),
        ..Default::default()
    };
    for s in summaries {
        let get = |k: &str| s.by_state.get(k).copied().unwrap_or(0);
        // An ad-hoc run's chunks count `succeeded` and `unreachable` (crate::run::RunOutcome).
        r.installed += get("installed") + get(crate::run::RunOutcome::Succeeded.as_str());
        r.failed += get("failed");
        r.unmanaged += get("unmanaged") + get(crate::run::RunOutcome::Unreachable.as_str());
        r.skipped += get("skipped");
        r.duplicate += get(crate::model::DUPLICATE);
        r.instances += s.total();
    }
    let attempted = r.installed + r.failed;
    r.failure_ratio = if attempted == 0 {
        0.0
    } else {
        r.failed as f64 / attempted as f64
    };
    r
}

/// The budget is exceeded when the ratio is strictly above it.
pub fn exceeds_budget(result: &WaveResult, max_failure_ratio: f64) -> bool {
    result.failure_ratio > max_failure_ratio
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReasonCode;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("i-{i:017x}")).collect()
    }

    #[test]
    fn canary_then_waves_cover_every_target_once() {
        let mut t = ids(1050);
        rollout_order(&mut t, "r1");
        let plan = plan_waves(&t, 10, WaveSize::Count(300), 250, "r1");
        let sizes: Vec<usize> = plan.iter().map(|(w, _)| w.instances).collect();
        assert_eq!(sizes, vec![10, 300, 300, 300, 140]);
        assert_eq!(plan[0].0.label, "canary");
        assert_eq!(plan[1].0.chunks.len(), 2); // 300 -> 250 + 50
        let mut all: Vec<String> = plan.iter().flat_map(|(_, c)| c.iter().flatten().cloned()).collect();
        all.sort();
        assert_eq!(all, ids(1050));
        let keys: std::collections::HashSet<_> = plan
            .iter()
            .flat_map(|(w, _)| w.chunks.iter().map(|c| c.targets_key.clone()))
            .collect();
        assert_eq!(keys.len(), plan.iter().map(|(w, _)| w.chunks.len()).sum::<usize>());
    }

    #[test]
    fn percent_waves_and_no_canary() {
        let plan = plan_waves(&ids(100), 0, WaveSize::Percent(25.0), 1000, "r");
        assert_eq!(
            plan.iter().map(|(w, _)| w.instances).collect::<Vec<_>>(),
            vec![25, 25, 25, 25]
        );
        assert!(plan_waves(&[], 5, WaveSize::Count(10), 10, "r").is_empty());
    }

    #[test]
    fn order_is_stable_and_mixed() {
        let mut a = ids(100);
        let mut b = ids(100);
        b.reverse();
        rollout_order(&mut a, "r");
        rollout_order(&mut b, "r");
        assert_eq!(a, b);
        assert_ne!(a, ids(100));
    }

    #[test]
    fn hundred_thousand_targets_plan_stays_small() {
        let t = ids(100_000);
        let plan = plan_waves(&t, 100, WaveSize::Percent(10.0), 1000, "rollout-20261125T1800");
        let json = serde_json::to_string(&plan.iter().map(|(w, _)| w).collect::<Vec<_>>()).unwrap();
        assert!(json.len() < 64 * 1024, "plan payload {} bytes", json.len());
        assert!(plan.iter().all(|(w, _)| w
            .chunks
            .iter()
            .all(|c| c.instances <= 1000 && c.execution_name.len() <= 80)));
    }

    #[test]
    fn long_multibyte_rollout_ids_give_names_of_at_most_80_characters() {
        // 3-byte and 4-byte characters around byte index len - 80: byte slicing panics here.
        let id = format!("déploiement-été-日本語-{}-😀z", "日本語".repeat(30));
        let plan = plan_waves(&ids(30), 1, WaveSize::Count(10), 5, &id);
        let mut names = std::collections::HashSet::new();
        for (w, _) in &plan {
            for c in &w.chunks {
                assert!(c.execution_name.chars().count() <= 80, "{}", c.execution_name);
                assert!(names.insert(c.execution_name.clone()), "duplicate {}", c.execution_name);
                assert!(c.targets_key.starts_with("rollout#"));
            }
        }
        let last = &plan.last().unwrap().0;
        assert!(last.chunks[0].execution_name.ends_with(&format!("-w{}-c0", last.wave)));
        // Two long ids with the same ending do not share names.
        let other = format!("other-{id}");
        assert_ne!(
            truncate_name(&format!("{id}-w0-c0")),
            truncate_name(&format!("{other}-w0-c0"))
        );
        // Short names are kept as they are.
        assert_eq!(truncate_name("été-w0-c0"), "été-w0-c0");
        // Exactly at the limit in characters but far over it in bytes: kept.
        let exact = "é".repeat(80);
        assert_eq!(truncate_name(&exact), exact);
    }

    fn targets(families: &[(&str, usize)]) -> Vec<Target> {
        let mut n = 0;
        let mut out = Vec::new();
        for (family, count) in families {
            for _ in 0..*count {
                out.push(Target {
                    instance_id: format!("i-{n:017x}"),
                    family: family.to_string(),
                });
                n += 1;
            }
        }
        out
    }

    #[test]
    fn platform_families_from_what_describe_instances_says() {
        let f = platform_family;
        assert_eq!(f(Some("Linux/UNIX"), None, Some("x86_64")), "Linux/UNIX (x86_64)");
        assert_eq!(f(Some("Linux/UNIX"), None, Some("arm64")), "Linux/UNIX (arm64)");
        assert_eq!(f(Some("Windows"), Some("windows"), Some("x86_64")), "Windows (x86_64)");
        // licence add-ons are not another OS
        assert_eq!(
            f(
                Some("Windows with SQL Server Enterprise"),
                Some("windows"),
                Some("x86_64")
            ),
            "Windows (x86_64)"
        );
        assert_eq!(f(Some("Windows BYOL"), None, Some("x86_64")), "Windows (x86_64)");
        assert_eq!(
            f(Some("Red Hat Enterprise Linux with HA"), None, Some("arm64")),
            "Red Hat Enterprise Linux (arm64)"
        );
        assert_eq!(f(Some("Red Hat BYOL Linux"), None, None), "Red Hat Enterprise Linux");
        assert_eq!(
            f(Some("Linux with SQL Server Standard"), None, Some("x86_64")),
            "Linux/UNIX (x86_64)"
        );
        assert_eq!(f(Some("SUSE Linux"), None, Some("arm64")), "SUSE Linux (arm64)");
        assert_eq!(f(Some("Ubuntu Pro"), None, Some("x86_64")), "Ubuntu Pro (x86_64)");
        // no PlatformDetails: EC2's Platform says windows, or nothing (Linux/UNIX)
        assert_eq!(f(None, Some("windows"), Some("x86_64")), "Windows (x86_64)");
        assert_eq!(f(Some(" "), Some("Windows"), None), "Windows");
        assert_eq!(f(None, None, Some("arm64")), "Linux/UNIX (arm64)");
        assert_eq!(f(None, Some("Linux/UNIX"), Some("")), "Linux/UNIX");
    }

    #[test]
    fn the_canary_holds_every_family_within_its_size() {
        // 97 of one family, 2 and 1 of two others: a canary of 5 without the rule would most likely
        // hold only the big family.
        let mut t = targets(&[
            ("Linux/UNIX (x86_64)", 97),
            ("Linux/UNIX (arm64)", 2),
            ("Windows (x86_64)", 1),
        ]);
        order_targets(&mut t, "r1");
        let pick = pick_canary(&t, 5);
        assert_eq!((pick.canary, pick.families), (5, 3));
        assert_eq!(
            pick.platforms,
            BTreeMap::from([
                ("Linux/UNIX (arm64)".to_string(), 1),
                ("Linux/UNIX (x86_64)".to_string(), 3),
                ("Windows (x86_64)".to_string(), 1),
            ])
        );
        // every target once; the canary first, each part in rollout order
        let mut all = pick.ids.clone();
        all.sort();
        assert_eq!(all, ids(100));
        let pos = |id: &String| t.iter().position(|x| &x.instance_id == id).unwrap();
        assert!(pick.ids[..5].windows(2).all(|w| pos(&w[0]) < pos(&w[1])));
        assert!(pick.ids[5..].windows(2).all(|w| pos(&w[0]) < pos(&w[1])));
        // the earliest of the big family are the ones that fill the canary
        let first_big: Vec<&String> = t
            .iter()
            .filter(|x| x.family == "Linux/UNIX (x86_64)")
            .take(3)
            .map(|x| &x.instance_id)
            .collect();
        assert!(first_big.iter().all(|id| pick.ids[..5].contains(id)));
    }

    #[test]
    fn more_families_than_canary_slots_grow_the_canary_to_one_per_family() {
        let mut t = targets(&[
            ("A (x86_64)", 10),
            ("B (x86_64)", 3),
            ("C (arm64)", 1),
            ("D (x86_64)", 1),
        ]);
        order_targets(&mut t, "r");
        let pick = pick_canary(&t, 2);
        assert_eq!((pick.canary, pick.families), (4, 4));
        assert!(pick.platforms.values().all(|n| *n == 1));
        let plan = plan_rollout(&t, 2, WaveSize::Count(5), 1000, "r");
        assert_eq!(plan[0].0.label, "canary");
        assert_eq!(plan[0].0.instances, 4);
        assert_eq!(plan[0].0.platforms.len(), 4);
        assert!(plan[1..].iter().all(|(w, _)| w.platforms.is_empty()));
        assert_eq!(
            plan.iter().map(|(w, _)| w.instances).collect::<Vec<_>>(),
            vec![4, 5, 5, 1]
        );
        // one family only: the canary is the size asked for
        let one = targets(&[("A (x86_64)", 10)]);
        assert_eq!(pick_canary(&one, 3).canary, 3);
        // fewer targets than the canary: all of them
        let few = targets(&[("A (x86_64)", 1), ("B (x86_64)", 1)]);
        let pick = pick_canary(&few, 5);
        assert_eq!((pick.canary, pick.ids.len()), (2, 2));
    }

    #[test]
    fn no_canary_asked_means_none_and_the_order_is_kept() {
        let mut t = targets(&[("A (x86_64)", 6), ("B (arm64)", 2)]);
        order_targets(&mut t, "r");
        let pick = pick_canary(&t, 0);
        assert_eq!((pick.canary, pick.families), (0, 2));
        assert!(pick.platforms.is_empty());
        assert_eq!(pick.ids, t.iter().map(|x| x.instance_id.clone()).collect::<Vec<_>>());
        let plan = plan_rollout(&t, 0, WaveSize::Count(4), 1000, "r");
        assert_eq!(plan[0].0.label, "wave 0");
        assert!(plan[0].0.platforms.is_empty());
        assert!(pick_canary(&[], 3).ids.is_empty());
        assert!(plan_rollout(&[], 3, WaveSize::Count(4), 1000, "r").is_empty());
    }

    #[test]
    fn targets_are_ordered_like_ids_and_deduplicated() {
        let mut t = targets(&[("A (x86_64)", 50), ("B (arm64)", 50)]);
        t.push(t[3].clone());
        t.reverse();
        order_targets(&mut t, "r9");
        let mut plain = ids(100);
        rollout_order(&mut plain, "r9");
        assert_eq!(t.iter().map(|x| x.instance_id.clone()).collect::<Vec<_>>(), plain);
    }

    #[test]
    fn only_the_canary_plan_carries_platforms_in_its_json() {
        let mut t = targets(&[("A (x86_64)", 4), ("B (arm64)", 1)]);
        order_targets(&mut t, "r");
        let plan = plan_rollout(&t, 2, WaveSize::Count(3), 1000, "r");
        let json = serde_json::to_value(plan.iter().map(|(w, _)| w).collect::<Vec<_>>()).unwrap();
        assert_eq!(
            json[0]["platforms"],
            serde_json::json!({"A (x86_64)": 1, "B (arm64)": 1})
        );
        assert!(json[1].get("platforms").is_none());
        // an older plan without the field still reads
        let back: WavePlan = serde_json::from_value(json[1].clone()).unwrap();
        assert!(back.platforms.is_empty());
    }

    #[test]
    fn failure_ratio_counts_only_attempted_installs() {
        let mut s = Summary::default();
        for _ in 0..8 {
            s.add("installed", Some("Ubuntu"), ReasonCode::Installed);
        }
        s.add("failed", Some("Ubuntu"), ReasonCode::CommandFailed);
        s.add("failed", Some("Ubuntu"), ReasonCode::CommandFailed);
        s.add("unmanaged", None, ReasonCode::NoInstanceProfile);
        let r = wave_result(0, "canary", &[s]);
        assert_eq!((r.instances, r.installed, r.failed, r.unmanaged), (11, 8, 2, 1));
        assert!((r.failure_ratio - 0.2).abs() < 1e-9);
        assert!(exceeds_budget(&r, 0.1));
        assert!(!exceeds_budget(&r, 0.2));
        assert_eq!(wave_result(1, "w", &[]).failure_ratio, 0.0);
    }
}
