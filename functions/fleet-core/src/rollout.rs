//! The rollout's logic: targets into a canary wave and waves, waves into chunks (one install
//! execution each), and the failure budget that stops a rollout.

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
}

/// The order targets are rolled out in: a stable shuffle (by hash), so that the canary and each
/// wave mix platforms and subnets instead of taking the lowest ids.
pub fn rollout_order(ids: &mut Vec<String>, rollout_id: &str) {
    ids.sort();
    ids.dedup();
    ids.sort_by_cached_key(|id| {
        let mut h = Sha256::new();
        h.update(rollout_id.as_bytes());
        h.update(id.as_bytes());
        h.finalize()[..8].to_vec()
    });
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
            },
            chunks,
        ));
        rest = later;
        wave += 1;
    }
    out
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
        r.installed += get("installed");
        r.failed += get("failed");
        r.unmanaged += get("unmanaged");
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
