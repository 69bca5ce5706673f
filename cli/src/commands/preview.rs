//! `preview`: the rollout that would run for some tags, without running it. Uses the same
//! classification, routing, platform families and wave planning (a canary that covers every
//! platform family) as the workflow (fleet-core).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result};
use chrono::{DateTime, Duration, Utc};
use fleet_core::classify::{classify, Classification, Ec2Facts, SsmFacts};
use fleet_core::model::{InstanceNote, LedgerState, ManagedInstance};
use fleet_core::rollout::{order_targets, plan_rollout, Target, WaveSize};
use fleet_core::routing::{route, RouteTable, RouteTarget, MAX_BATCH};
use serde::Serialize;

use crate::args::{describe_tags, group_tags, wave_size, TagFilter};
use crate::cli::PreviewArgs;
use crate::context::{Context, Progress, Report};
use crate::table::{key_values, section, Table};

/// Install executions take at most this many instances (the template's default).
pub const MAX_PER_EXECUTION: usize = 1000;
/// The rollout id the preview plans with (the real rollout uses its execution name, so its
/// order differs).
pub const PREVIEW_ID: &str = "preview";

/// What the preview needs from the stack.
#[derive(Debug, Clone)]
pub struct Settings {
    pub opt_out_tag: String,
    pub routes: RouteTable,
}

/// The route table with the stack's documents; only the document names matter to a preview.
pub fn route_table(linux_document: &str, windows_document: &str) -> RouteTable {
    let target = |route: &str, document: &str| RouteTarget {
        route: route.to_string(),
        document_name: document.to_string(),
        document_version: "1".to_string(),
        parameters: BTreeMap::new(),
    };
    RouteTable {
        linux: Some(target("linux", linux_document)),
        windows: Some(target("windows", windows_document)),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TotalRow {
    pub platform: String,
    /// managed, unmanaged, skipped
    pub ssm: String,
    /// The install document, or "-" when nothing is installed.
    pub document: String,
    pub instances: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewWave {
    pub wave: usize,
    pub label: String,
    pub instances: usize,
    /// Managed and routed to a document.
    pub installable: usize,
    /// One install execution per chunk.
    pub executions: usize,
    pub instance_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotInstalled {
    pub instance_id: String,
    /// The ledger state the workflow would record: unmanaged or skipped.
    pub state: String,
    pub reason_code: String,
    pub reason: String,
    pub platform: String,
}

/// Instances to install whose SSM Agent is older than their document needs, by platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentUpdateRow {
    pub platform: String,
    pub document: String,
    /// The oldest SSM Agent the document runs on.
    pub minimum_agent_version: String,
    /// Instances whose AgentVersion (DescribeInstanceInformation) is below the minimum.
    pub instances: usize,
    /// Instances whose AgentVersion SSM did not report or that is not a version.
    pub version_unknown: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewReport {
    pub tags: Vec<TagFilter>,
    pub opt_out_tag: String,
    /// Running instances with the tags.
    pub matched: usize,
    pub opted_out: usize,
    /// The rollout's targets: matched minus opted out.
    pub targets: usize,
    pub canary: usize,
    /// Instances in the canary wave as planned: `canary`, or one per platform family when there are
    /// more families than that (at most the targets; 0 without a canary).
    pub canary_planned: usize,
    /// The canary's instances by platform family (EC2 PlatformDetails and Architecture).
    pub canary_platforms: BTreeMap<String, usize>,
    /// Platform families among the targets.
    pub platform_families: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave_percent: Option<f64>,
    pub totals: Vec<TotalRow>,
    /// Instances to install that need an SSM Agent update first, by platform and document.
    pub agent_updates: Vec<AgentUpdateRow>,
    pub waves: Vec<PreviewWave>,
    pub not_installed: Vec<NotInstalled>,
}

impl PreviewReport {
    /// Instances to install that need an SSM Agent update.
    pub fn agent_updates_needed(&self) -> usize {
        self.agent_updates.iter().map(|a| a.instances).sum()
    }

    fn agent_line(&self) -> String {
        let installable: usize = self
            .totals
            .iter()
            .filter(|t| t.ssm == "managed" && t.document != "-")
            .map(|t| t.instances)
            .sum();
        let unknown: usize = self.agent_updates.iter().map(|a| a.version_unknown).sum();
        let mut line = format!(
            "{} of {installable} instances to install need an SSM Agent update (AgentVersion below their document's minimum)",
            self.agent_updates_needed()
        );
        if unknown > 0 {
            line.push_str(&format!("; agent version unknown for {unknown}"));
        }
        line
    }

    fn canary_line(&self) -> String {
        if self.canary_planned == 0 {
            return "none".to_string();
        }
        let platforms = self
            .canary_platforms
            .iter()
            .map(|(family, n)| format!("{family} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut line = format!(
            "{} instances, covering all {} platform families of the targets: {platforms}",
            self.canary_planned, self.platform_families
        );
        if self.canary_planned > self.canary {
            line.push_str(&format!(
                " (grown from {}: more platform families than canary slots, so one instance per family)",
                self.canary
            ));
        }
        line
    }
}

impl Report for PreviewReport {
    fn to_table(&self) -> String {
        let sizes = match (self.wave_size, self.wave_percent) {
            (Some(n), _) => format!("{n} instances per wave"),
            (_, Some(p)) => format!("{p}% of the targets per wave"),
            _ => String::new(),
        };
        let mut out = key_values(&[
            ("Tags", describe_tags(&self.tags)),
            (
                "Targets",
                format!(
                    "{} running instances match, {} opted out (tag {}), {} in the rollout",
                    self.matched, self.opted_out, self.opt_out_tag, self.targets
                ),
            ),
            ("Waves", format!("canary {}, then {sizes}", self.canary)),
            ("Canary", self.canary_line()),
            ("Agent", self.agent_line()),
        ]);
        let mut totals = Table::new(&["PLATFORM", "SSM", "DOCUMENT", "INSTANCES"]).numeric(&[3]);
        for t in &self.totals {
            totals.row([
                t.platform.clone(),
                t.ssm.clone(),
                t.document.clone(),
                t.instances.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&section("Totals", &totals, "no running instance has these tags"));
        if !self.agent_updates.is_empty() {
            let mut t = Table::new(&[
                "PLATFORM",
                "DOCUMENT",
                "MINIMUM AGENT",
                "NEED UPDATE",
                "VERSION UNKNOWN",
            ])
            .numeric(&[3, 4]);
            for a in &self.agent_updates {
                t.row([
                    a.platform.clone(),
                    a.document.clone(),
                    a.minimum_agent_version.clone(),
                    a.instances.to_string(),
                    a.version_unknown.to_string(),
                ]);
            }
            out.push('\n');
            out.push_str(&section(
                "SSM Agent updates needed (AgentVersion below the document's minimum)",
                &t,
                "none",
            ));
        }
        let mut waves = Table::new(&[
            "WAVE",
            "LABEL",
            "INSTANCES",
            "INSTALL",
            "NOT INSTALLED",
            "EXECUTIONS",
            "FIRST INSTANCES",
        ])
        .numeric(&[0, 2, 3, 4, 5]);
        for w in &self.waves {
            let mut first = w.instance_ids.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if w.instance_ids.len() > 3 {
                first.push_str(&format!(" (+{})", w.instance_ids.len() - 3));
            }
            waves.row([
                w.wave.to_string(),
                w.label.clone(),
                w.instances.to_string(),
                w.installable.to_string(),
                (w.instances - w.installable).to_string(),
                w.executions.to_string(),
                first,
            ]);
        }
        out.push('\n');
        out.push_str(&section("Waves", &waves, "none (no targets)"));
        let mut skipped = Table::new(&["INSTANCE", "STATE", "REASON CODE", "PLATFORM", "REASON"]);
        for n in &self.not_installed {
            skipped.row([&n.instance_id, &n.state, &n.reason_code, &n.platform, &n.reason]);
        }
        out.push('\n');
        out.push_str(&section("Not installed", &skipped, "none"));
        out
    }
}

pub async fn run(ctx: &Context, args: &PreviewArgs) -> Result<PreviewReport> {
    let t = &args.targets;
    let size = wave_size(t.waves.wave_size, t.waves.wave_percent)?;
    let outputs = ctx.outputs().await?;
    let settings = Settings {
        opt_out_tag: outputs.opt_out_tag()?.to_string(),
        routes: route_table(outputs.linux_document()?, outputs.windows_document()?),
    };
    preview(
        &ctx.ec2(),
        &ctx.ssm(),
        &settings,
        &group_tags(&t.tags),
        t.waves.canary,
        size,
        Utc::now(),
        ctx.progress,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn preview(
    ec2: &aws_sdk_ec2::Client,
    ssm: &aws_sdk_ssm::Client,
    settings: &Settings,
    tags: &[TagFilter],
    canary: usize,
    size: WaveSize,
    now: DateTime<Utc>,
    progress: Progress,
) -> Result<PreviewReport> {
    progress.update(format!("finding running instances with {}", describe_tags(tags)));
    // One paginated DescribeInstances by tag gives the ids, everything classification needs and
    // each instance's platform family.
    let listed = fleet_core::adapters::describe_running_targets_by_tags(ec2, &tag_pairs(tags), &settings.opt_out_tag)
        .await
        .context("cannot list instances by tag (ec2:DescribeInstances)")?;
    let mut families: HashMap<String, String> = HashMap::new();
    let mut ec2_facts: HashMap<String, Ec2Facts> = HashMap::new();
    for (id, t) in listed {
        families.insert(id.clone(), t.family);
        ec2_facts.insert(id, t.facts);
    }
    let mut ids: Vec<String> = ec2_facts.keys().cloned().collect();
    ids.sort();
    let ask: Vec<String> = ids
        .iter()
        .filter(|id| ec2_facts.get(*id).is_some_and(|f| !f.opted_out))
        .cloned()
        .collect();
    progress.update(format!("asking SSM about {} instances", ask.len()));
    let ssm_facts = fleet_core::adapters::describe_ssm(ssm, &ask)
        .await
        .context("cannot describe the instances' SSM registration (ssm:DescribeInstanceInformation)")?;
    progress.clear();
    Ok(build(
        &ids, &ec2_facts, &families, &ssm_facts, settings, tags, canary, size, now,
    ))
}

fn tag_pairs(tags: &[TagFilter]) -> Vec<(String, Vec<String>)> {
    tags.iter().map(|t| (t.key.clone(), t.values.clone())).collect()
}

/// Running instances with all the tag filters (each filter: any of its values), sorted.
pub async fn instances_by_tags(ec2: &aws_sdk_ec2::Client, tags: &[TagFilter]) -> Result<Vec<String>> {
    let facts = fleet_core::adapters::describe_running_targets_by_tags(ec2, &tag_pairs(tags), "")
        .await
        .context("cannot list instances by tag (ec2:DescribeInstances)")?;
    let mut ids: Vec<String> = facts.into_keys().collect();
    ids.sort();
    Ok(ids)
}

enum Outcome {
    Install {
        platform: String,
        document: String,
    },
    NotInstalled {
        ssm: &'static str,
        state: LedgerState,
        note: InstanceNote,
    },
}

/// The preview from the facts: classification with a registration deadline of 0 (an instance
/// SSM does not know is unmanaged now), routing, and the wave plan with its canary over every
/// platform family (`families`: instance id -> platform family, as plan-rollout lists them).
#[allow(clippy::too_many_arguments)]
pub fn build(
    ids: &[String],
    ec2_facts: &HashMap<String, Ec2Facts>,
    families: &HashMap<String, String>,
    ssm_facts: &HashMap<String, SsmFacts>,
    settings: &Settings,
    tags: &[TagFilter],
    canary: usize,
    size: WaveSize,
    now: DateTime<Utc>,
) -> PreviewReport {
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut managed: Vec<ManagedInstance> = Vec::new();
    let mut opted_out = 0;
    for id in ids {
        let ec2 = ec2_facts.get(id);
        if ec2.is_some_and(|f| f.opted_out) {
            opted_out += 1;
        }
        match classify(id, ec2, ssm_facts.get(id), now, Duration::zero(), &settings.opt_out_tag) {
            Classification::Managed(m) => managed.push(m),
            Classification::Unmanaged(note) => {
                outcomes.insert(
                    id.clone(),
                    Outcome::NotInstalled {
                        ssm: "unmanaged",
                        state: LedgerState::Unmanaged,
                        note,
                    },
                );
            }
            Classification::Skipped(note) => {
                outcomes.insert(
                    id.clone(),
                    Outcome::NotInstalled {
                        ssm: "skipped",
                        state: LedgerState::Skipped,
                        note,
                    },
                );
            }
            Classification::PendingRegistration => {
                outcomes.insert(
                    id.clone(),
                    Outcome::NotInstalled {
                        ssm: "unmanaged",
                        state: LedgerState::PendingRegistration,
                        note: InstanceNote {
                            instance_id: id.clone(),
                            reason_code: fleet_core::model::ReasonCode::AgentNotReporting,
                            reason: "not registered with SSM yet".into(),
                            platform: ec2.and_then(|f| f.platform_details.clone()),
                        },
                    },
                );
            }
        }
    }
    let routed = route(&managed, &settings.routes, 1, MAX_BATCH);
    let mut agent_updates: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    for b in &routed.batches {
        let minimum = crate::agent::document_min_agent_version(&b.route);
        for i in &b.instances {
            if let Some(minimum) = minimum {
                let version = ssm_facts
                    .get(&i.instance_id)
                    .map(|f| f.agent_version.as_str())
                    .unwrap_or_default();
                let old = fleet_core::routing::older_than(version, minimum);
                if old != Some(false) {
                    let e = agent_updates
                        .entry((i.platform.clone(), b.document_name.clone(), minimum.to_string()))
                        .or_default();
                    match old {
                        Some(_) => e.0 += 1,
                        None => e.1 += 1,
                    }
                }
            }
            outcomes.insert(
                i.instance_id.clone(),
                Outcome::Install {
                    platform: i.platform.clone(),
                    document: b.document_name.clone(),
                },
            );
        }
    }
    for note in routed.skipped {
        outcomes.insert(
            note.instance_id.clone(),
            Outcome::NotInstalled {
                ssm: "managed",
                state: LedgerState::Skipped,
                note,
            },
        );
    }

    let mut totals: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let mut not_installed = Vec::new();
    for outcome in outcomes.values() {
        let key = match outcome {
            Outcome::Install { platform, document } => (platform.clone(), "managed".to_string(), document.clone()),
            Outcome::NotInstalled { ssm, state, note } => {
                let platform = note
                    .platform
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "unknown".into());
                not_installed.push(NotInstalled {
                    instance_id: note.instance_id.clone(),
                    state: state.as_str().to_string(),
                    reason_code: note.reason_code.as_str().to_string(),
                    reason: note.reason.clone(),
                    platform: platform.clone(),
                });
                (platform, ssm.to_string(), "-".to_string())
            }
        };
        *totals.entry(key).or_default() += 1;
    }
    not_installed.sort_by(|a, b| (&a.state, &a.instance_id).cmp(&(&b.state, &b.instance_id)));

    // The rollout's targets are the matched instances minus the opted out (plan-rollout).
    let mut targets: Vec<Target> = ids
        .iter()
        .filter(|id| !ec2_facts.get(*id).is_some_and(|f| f.opted_out))
        .map(|id| Target {
            instance_id: id.clone(),
            family: families
                .get(id)
                .cloned()
                .unwrap_or_else(|| fleet_core::rollout::platform_family(None, None, None)),
        })
        .collect();
    order_targets(&mut targets, PREVIEW_ID);
    let platform_families = targets
        .iter()
        .map(|t| t.family.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let plan = plan_rollout(&targets, canary, size, MAX_PER_EXECUTION, PREVIEW_ID);
    let (canary_planned, canary_platforms) = match plan.first() {
        Some((w, _)) if w.label == "canary" => (w.instances, w.platforms.clone()),
        _ => (0, BTreeMap::new()),
    };
    let waves = plan
        .into_iter()
        .map(|(plan, chunks)| {
            let instance_ids: Vec<String> = chunks.into_iter().flatten().collect();
            PreviewWave {
                wave: plan.wave,
                label: plan.label,
                instances: plan.instances,
                installable: instance_ids
                    .iter()
                    .filter(|id| matches!(outcomes.get(*id), Some(Outcome::Install { .. })))
                    .count(),
                executions: plan.chunks.len(),
                instance_ids,
            }
        })
        .collect();
    let (wave_size, wave_percent) = match size {
        WaveSize::Count(n) => (Some(n), None),
        WaveSize::Percent(p) => (None, Some(p)),
    };
    PreviewReport {
        tags: tags.to_vec(),
        opt_out_tag: settings.opt_out_tag.clone(),
        matched: ids.len(),
        opted_out,
        targets: targets.len(),
        canary,
        canary_planned,
        canary_platforms,
        platform_families,
        wave_size,
        wave_percent,
        totals: totals
            .into_iter()
            .map(|((platform, ssm, document), instances)| TotalRow {
                platform,
                ssm,
                document,
                instances,
            })
            .collect(),
        agent_updates: agent_updates
            .into_iter()
            .map(
                |((platform, document, minimum_agent_version), (instances, version_unknown))| AgentUpdateRow {
                    platform,
                    document,
                    minimum_agent_version,
                    instances,
                    version_unknown,
                },
            )
            .collect(),
        waves,
        not_installed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{Instance, Reservation};
    use aws_smithy_mocks::{mock, mock_client};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn id(n: usize) -> String {
        format!("i-{n:017x}")
    }

    fn ec2(n: usize, opted_out: bool, profile: bool) -> (String, Ec2Facts) {
        (
            id(n),
            Ec2Facts {
                instance_id: id(n),
                state: "running".into(),
                launch_time: Some(now() - Duration::seconds(30)),
                has_instance_profile: profile,
                opted_out,
                platform_details: Some("Linux/UNIX".into()),
            },
        )
    }

    fn ssm(n: usize, t: &str, name: &str) -> (String, SsmFacts) {
        (
            id(n),
            SsmFacts {
                instance_id: id(n),
                ping_status: "Online".into(),
                last_ping: Some(now()),
                platform_type: t.into(),
                platform_name: name.into(),
                platform_version: "1".into(),
                agent_version: "3.3".into(),
            },
        )
    }

    fn settings() -> Settings {
        Settings {
            opt_out_tag: "fleet-install:opt-out".into(),
            routes: route_table("LinuxDoc", "WinDoc"),
        }
    }

    fn tags() -> Vec<TagFilter> {
        vec![TagFilter {
            key: "env".into(),
            values: vec!["prod".into()],
        }]
    }

    #[test]
    fn preview_classifies_routes_and_plans_waves() {
        // 0-5 Ubuntu, 6-7 Windows, 8 macOS (no route), 9 unregistered with a profile,
        // 10 no instance profile, 11 opted out.
        let ids: Vec<String> = (0..12).map(id).collect();
        let mut e: HashMap<String, Ec2Facts> = (0..11).map(|n| ec2(n, false, n != 10)).collect();
        e.extend([ec2(11, true, true)]);
        let mut s: HashMap<String, SsmFacts> = (0..6).map(|n| ssm(n, "Linux", "Ubuntu")).collect();
        s.extend([
            ssm(6, "Windows", "Microsoft Windows Server 2022"),
            ssm(7, "Windows", "Microsoft Windows Server 2019"),
        ]);
        s.extend([ssm(8, "MacOS", "macOS")]);
        // 0-5 and 8-11 Linux x86_64, 6-7 Windows
        let fam: HashMap<String, String> = (0..12)
            .map(|n| {
                let f = if n == 6 || n == 7 {
                    "Windows (x86_64)"
                } else {
                    "Linux/UNIX (x86_64)"
                };
                (id(n), f.to_string())
            })
            .collect();
        let r = build(&ids, &e, &fam, &s, &settings(), &tags(), 2, WaveSize::Count(4), now());
        assert_eq!((r.matched, r.opted_out, r.targets), (12, 1, 11));
        let totals: Vec<(&str, &str, &str, usize)> = r
            .totals
            .iter()
            .map(|t| (t.platform.as_str(), t.ssm.as_str(), t.document.as_str(), t.instances))
            .collect();
        assert_eq!(
            totals,
            vec![
                ("Linux/UNIX", "skipped", "-", 1),
                ("Linux/UNIX", "unmanaged", "-", 2),
                ("Ubuntu", "managed", "LinuxDoc", 6),
                ("Windows", "managed", "WinDoc", 2),
                ("macOS", "managed", "-", 1),
            ]
        );
        assert_eq!(
            r.waves
                .iter()
                .map(|w| (w.label.as_str(), w.instances))
                .collect::<Vec<_>>(),
            vec![("canary", 2), ("wave 1", 4), ("wave 2", 4), ("wave 3", 1)]
        );
        assert_eq!(r.waves.iter().map(|w| w.installable).sum::<usize>(), 8);
        // the canary of 2 holds one of each of the two platform families
        assert_eq!((r.canary_planned, r.platform_families), (2, 2));
        assert_eq!(
            r.canary_platforms,
            BTreeMap::from([
                ("Linux/UNIX (x86_64)".to_string(), 1),
                ("Windows (x86_64)".to_string(), 1)
            ])
        );
        assert!(r.waves[0].instance_ids.iter().any(|i| *i == id(6) || *i == id(7)));
        assert!(r.waves.iter().all(|w| !w.instance_ids.contains(&id(11))));
        let codes: Vec<(&str, &str)> = r
            .not_installed
            .iter()
            .map(|n| (n.instance_id.as_str(), n.reason_code.as_str()))
            .collect();
        assert_eq!(codes.len(), 4);
        assert!(codes.contains(&(id(8).as_str(), "NoRoute")));
        assert!(codes.contains(&(id(9).as_str(), "AgentNotReporting")));
        assert!(codes.contains(&(id(10).as_str(), "NoInstanceProfile")));
        assert!(codes.contains(&(id(11).as_str(), "OptedOut")));

        let text = r.to_table();
        println!("{text}");
        assert!(text.contains(
            "Targets  12 running instances match, 1 opted out (tag fleet-install:opt-out), 11 in the rollout"
        ));
        assert!(text.contains("Ubuntu      managed    LinuxDoc          6"), "{text}");
        assert!(text.contains("   0  canary          2"), "{text}");
        assert!(
            text.contains(
                "Canary   2 instances, covering all 2 platform families of the targets: Linux/UNIX (x86_64) 1, Windows (x86_64) 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("OptedOut"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["waveSize"], 4);
        assert!(json.get("wavePercent").is_none());
        assert_eq!(json["waves"][0]["instanceIds"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn more_platform_families_than_canary_slots_grow_the_canary_and_the_preview_says_so() {
        // 20 Linux x86_64, 1 Linux arm64, 1 Windows; a canary of 1 asked for
        let ids: Vec<String> = (0..22).map(id).collect();
        let e: HashMap<String, Ec2Facts> = (0..22).map(|n| ec2(n, false, true)).collect();
        let s: HashMap<String, SsmFacts> = (0..22).map(|n| ssm(n, "Linux", "Ubuntu")).collect();
        let fam: HashMap<String, String> = (0..22)
            .map(|n| {
                let f = match n {
                    20 => "Linux/UNIX (arm64)",
                    21 => "Windows (x86_64)",
                    _ => "Linux/UNIX (x86_64)",
                };
                (id(n), f.to_string())
            })
            .collect();
        let r = build(&ids, &e, &fam, &s, &settings(), &tags(), 1, WaveSize::Count(10), now());
        assert_eq!((r.canary, r.canary_planned, r.platform_families), (1, 3, 3));
        assert_eq!(r.waves[0].instances, 3);
        assert!(r.waves[0].instance_ids.contains(&id(20)) && r.waves[0].instance_ids.contains(&id(21)));
        assert_eq!(r.waves.iter().map(|w| w.instances).collect::<Vec<_>>(), vec![3, 10, 9]);
        let text = r.to_table();
        println!("{text}");
        assert!(
            text.contains(
                "Canary   3 instances, covering all 3 platform families of the targets: Linux/UNIX (arm64) 1, \
             Linux/UNIX (x86_64) 1, Windows (x86_64) 1 (grown from 1: more platform families than canary slots, \
             so one instance per family)\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["canaryPlanned"], 3);
        assert_eq!(json["canaryPlatforms"]["Windows (x86_64)"], 1);
        // no canary asked for: none
        let r = build(&ids, &e, &fam, &s, &settings(), &tags(), 0, WaveSize::Count(10), now());
        assert_eq!((r.canary_planned, r.canary_platforms.len()), (0, 0));
        assert!(r.to_table().contains("Canary   none\n"));
    }

    #[tokio::test]
    async fn instances_below_their_documents_minimum_agent_are_counted_by_platform() {
        use aws_sdk_ec2::types::{IamInstanceProfile, InstanceState, InstanceStateName};
        use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
        use aws_sdk_ssm::types::{InstanceInformation, PingStatus, PlatformType};
        let instances = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
            let i = |n: usize| {
                Instance::builder()
                    .instance_id(id(n))
                    .state(InstanceState::builder().name(InstanceStateName::Running).build())
                    .iam_instance_profile(IamInstanceProfile::builder().arn("arn:p").build())
                    .launch_time(aws_smithy_types::DateTime::from_secs(0))
                    .build()
            };
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .set_instances(Some((0..6).map(i).collect()))
                        .build(),
                )
                .build()
        });
        let info = mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(|| {
            let i = |n: usize, t: PlatformType, name: &str, v: &str| {
                InstanceInformation::builder()
                    .instance_id(id(n))
                    .ping_status(PingStatus::Online)
                    .platform_type(t)
                    .platform_name(name)
                    .agent_version(v)
                    .build()
            };
            DescribeInstanceInformationOutput::builder()
                .instance_information_list(i(0, PlatformType::Linux, "Ubuntu", "3.3.1142.0"))
                .instance_information_list(i(1, PlatformType::Linux, "Ubuntu", "3.3.2746.0"))
                .instance_information_list(i(2, PlatformType::Linux, "Ubuntu", "3.2.582.0"))
                .instance_information_list(i(
                    3,
                    PlatformType::Windows,
                    "Microsoft Windows Server 2022",
                    "3.3.2100.0",
                ))
                .instance_information_list(i(4, PlatformType::Linux, "Amazon Linux", ""))
                .instance_information_list(i(
                    5,
                    PlatformType::Windows,
                    "Microsoft Windows Server 2019",
                    "3.3.3050.0",
                ))
                .build()
        });
        let ec2 = mock_client!(aws_sdk_ec2, [&instances]);
        let ssm = mock_client!(aws_sdk_ssm, [&info]);
        let r = preview(
            &ec2,
            &ssm,
            &settings(),
            &tags(),
            1,
            WaveSize::Percent(50.0),
            now(),
            Progress::disabled(),
        )
        .await
        .unwrap();
        let rows: Vec<(&str, &str, &str, usize, usize)> = r
            .agent_updates
            .iter()
            .map(|a| {
                (
                    a.platform.as_str(),
                    a.document.as_str(),
                    a.minimum_agent_version.as_str(),
                    a.instances,
                    a.version_unknown,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("Amazon Linux", "LinuxDoc", "3.3.2746.0", 0, 1),
                ("Ubuntu", "LinuxDoc", "3.3.2746.0", 2, 0),
                ("Windows", "WinDoc", "3.3.2746.0", 1, 0),
            ]
        );
        assert_eq!(r.agent_updates_needed(), 3);
        let text = r.to_table();
        println!("{text}");
        assert!(text.contains(
            "Agent    3 of 6 instances to install need an SSM Agent update (AgentVersion below their document's minimum); agent version unknown for 1\n"
        ), "{text}");
        assert!(
            text.contains("SSM Agent updates needed (AgentVersion below the document's minimum)\n"),
            "{text}"
        );
        assert!(
            text.contains("Ubuntu        LinuxDoc  3.3.2746.0               2                0\n"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["agentUpdates"][2]["platform"], "Windows");
        assert_eq!(json["agentUpdates"][2]["minimumAgentVersion"], "3.3.2746.0");
    }

    #[tokio::test]
    async fn tag_filters_reach_ec2_and_pages_are_followed() {
        let rule = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| {
                let f = r.filters();
                f.iter()
                    .any(|f| f.name() == Some("tag:env") && f.values() == ["prod", "staging"])
                    && f.iter()
                        .any(|f| f.name() == Some("instance-state-name") && f.values() == ["running"])
            })
            .sequence()
            .output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(
                        Reservation::builder()
                            .instances(Instance::builder().instance_id(id(2)).build())
                            .build(),
                    )
                    .next_token("t")
                    .build()
            })
            .output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(
                        Reservation::builder()
                            .instances(Instance::builder().instance_id(id(1)).build())
                            .build(),
                    )
                    .build()
            })
            .build();
        let client = mock_client!(aws_sdk_ec2, [&rule]);
        let filters = vec![TagFilter {
            key: "env".into(),
            values: vec!["prod".into(), "staging".into()],
        }];
        assert_eq!(instances_by_tags(&client, &filters).await.unwrap(), vec![id(1), id(2)]);
        assert_eq!(rule.num_calls(), 2);
    }
}
