//! plan-rollout's two modes, one state each in the rollout workflow:
//! - `list` ("List Target Instances"): at most `MAX_LIST_PAGES` DescribeInstances pages from the
//!   cursor the workflow carries; each page's targets are kept in the ledger
//!   (`rollout#<rollout id>#list#<page>`), opted-out instances recorded as skipped; returns the
//!   next cursor and the counts so far. The workflow calls it again while there is a cursor, so
//!   no invocation pages through the whole fleet.
//! - `plan` ("Plan Waves"): reads the listed pages, orders the targets, picks a canary that covers
//!   every platform family, splits the rest into waves and chunks and stores the chunks.
//!
//! An ad-hoc run (`fleet-install run`, the execution's input carries `run`) is planned the same way,
//! with two differences: its targets may be every running instance (`all`) or given ids
//! (`instanceIds`), and nothing is written to the install ledger's instance items: opted-out
//! instances stay targets here, and the run workflow records them as skipped in the run's results.

use fleet_core::model::{InstanceNote, LedgerState, ReasonCode};
use fleet_core::rollout::{order_targets, plan_rollout, Target, WavePlan, WaveSize};
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub struct Config {
    pub table: String,
    pub opt_out_tag: String,
    pub max_per_execution: usize,
    /// DescribeInstances pages (of up to 1,000 instances) one list invocation reads at most.
    pub max_list_pages: usize,
}

/// The default of `MAX_LIST_PAGES`: 10 pages, 10,000 instances an invocation.
pub const DEFAULT_MAX_LIST_PAGES: usize = 10;

impl Config {
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Self, FleetError> {
        use fleet_core::config::{number, optional, required};
        let max_list_pages = number(get, "MAX_LIST_PAGES", DEFAULT_MAX_LIST_PAGES)?;
        if max_list_pages == 0 {
            return Err(FleetError::Configuration(
                "environment variable MAX_LIST_PAGES must be at least 1".into(),
            ));
        }
        Ok(Config {
            table: required(get, "LEDGER_TABLE")?,
            opt_out_tag: optional(get, "OPT_OUT_TAG_KEY", "fleet-install:opt-out"),
            max_per_execution: number(get, "MAX_INSTANCES_PER_EXECUTION", 1000)?,
            max_list_pages,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagFilter {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    List,
    Plan,
}

/// Where a listing is: carried by the workflow from one list invocation to the next, and to Plan Waves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    /// DescribeInstances' cursor for the next page; `None` when every page has been read.
    #[serde(default)]
    pub next_token: Option<String>,
    /// Pages read and stored so far (pages `0..pages`).
    #[serde(default)]
    pub pages: usize,
    /// Targets (valid ids, not opted out) listed so far.
    #[serde(default)]
    pub targets: usize,
    /// Opted-out instances listed (and recorded as skipped) so far.
    #[serde(default)]
    pub opted_out: usize,
}

/// The list state's input: the execution's input on the first call, the previous call's output
/// (with its `listing`) on the next ones.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Previous {
    #[serde(default)]
    pub listing: Option<Listing>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub mode: Mode,
    /// `$$.Execution.Name`: names the listed pages, the chunks and their install executions.
    pub rollout_id: String,
    /// The rollout execution: opted-out targets are recorded in the ledger under it.
    #[serde(flatten)]
    pub execution: fleet_core::model::Execution,
    #[serde(default)]
    pub tags: Vec<TagFilter>,
    #[serde(default)]
    pub canary: usize,
    #[serde(default)]
    pub wave_size: usize,
    #[serde(default)]
    pub wave_percent: f64,
    /// list: the state's input, whose `listing` is where the previous call stopped.
    #[serde(default)]
    pub previous: Option<Previous>,
    /// plan: the finished listing.
    #[serde(default)]
    pub listing: Option<Listing>,
    /// `$$.Execution.Input`: what only ad-hoc runs set.
    #[serde(default)]
    pub input: RolloutInput,
}

/// The parts of the rollout execution's input that only an ad-hoc run sets.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutInput {
    /// Target these running instances (at most [`MAX_INSTANCE_IDS`]).
    #[serde(default)]
    pub instance_ids: Vec<String>,
    /// Target every running instance.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub run: Option<fleet_core::run::RunSpec>,
}

/// The most instance ids a run may name (DescribeInstances takes 200 values in one filter).
pub const MAX_INSTANCE_IDS: usize = fleet_core::adapters::EC2_FILTER_VALUES;

/// What a list invocation returns.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse {
    pub rollout_id: String,
    pub listing: Listing,
    /// DescribeInstances pages this invocation read.
    pub pages_read: usize,
    /// The most it may read (`MAX_LIST_PAGES`).
    pub max_pages: usize,
    /// True while there is a cursor: the workflow lists again.
    pub more: bool,
}

/// What Plan Waves returns.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub rollout_id: String,
    pub targets: usize,
    pub opted_out: usize,
    /// Platform families among the targets.
    pub families: usize,
    /// The canary's members by platform family (empty without a canary).
    pub canary_platforms: BTreeMap<String, usize>,
    pub waves: Vec<WavePlan>,
    /// The ad-hoc run's document and parameters (`null` for an install rollout): each chunk's child
    /// workflow is chosen by it.
    pub run: Option<fleet_core::run::RunSpec>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Output {
    Listed(ListResponse),
    Planned(Response),
}

pub async fn handle(
    ec2: &aws_sdk_ec2::Client,
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    payload: Value,
) -> Result<Output, FleetError> {
    let req: Request = serde_json::from_value(payload).map_err(|e| {
        FleetError::invalid_input(format!(
            "plan-rollout expects {{mode: list | plan, rolloutId, tags: [{{key, values}}], canary, \
             waveSize | wavePercent, previous (list) | listing (plan)}}: {e}"
        ))
    })?;
    let size = wave_size(&req)?;
    match req.mode {
        Mode::List => list(ec2, db, config, req).await.map(Output::Listed),
        Mode::Plan => plan(db, config, req, size).await.map(Output::Planned),
    }
}

fn wave_size(req: &Request) -> Result<WaveSize, FleetError> {
    match (req.wave_size, req.wave_percent) {
        (n, _) if n > 0 => Ok(WaveSize::Count(n)),
        (_, p) if p > 0.0 && p <= 100.0 => Ok(WaveSize::Percent(p)),
        _ => Err(FleetError::invalid_input(
            "give waveSize > 0 or wavePercent in (0, 100]",
        )),
    }
}

/// Read up to `max_list_pages` pages from where the previous call stopped, keep each page's targets
/// in the ledger and record the opted-out instances as skipped.
async fn list(
    ec2: &aws_sdk_ec2::Client,
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    req: Request,
) -> Result<ListResponse, FleetError> {
    if req.tags.iter().any(|t| t.key.is_empty() || t.values.is_empty()) {
        return Err(FleetError::invalid_input("each tag filter needs a key and values"));
    }
    let ad_hoc = req.input.run.is_some();
    let ids = &req.input.instance_ids;
    if !ad_hoc && (req.input.all || !ids.is_empty()) {
        return Err(FleetError::invalid_input(
            "`all` and `instanceIds` are for ad-hoc runs (input with `run`); a rollout targets by tag",
        ));
    }
    let chosen = [!req.tags.is_empty(), req.input.all, !ids.is_empty()]
        .iter()
        .filter(|c| **c)
        .count();
    if chosen != 1 {
        return Err(FleetError::invalid_input(if ad_hoc {
            "a run targets exactly one of: tag filters, instanceIds, or all"
        } else {
            "a rollout needs at least one tag filter, each with a key and values"
        }));
    }
    if ids.len() > MAX_INSTANCE_IDS {
        return Err(FleetError::invalid_input(format!(
            "a run names at most {MAX_INSTANCE_IDS} instance ids ({} given): target more by tag",
            ids.len()
        )));
    }
    if let Some(bad) = ids.iter().find(|id| !fleet_core::model::is_valid_instance_id(id)) {
        return Err(FleetError::invalid_input(format!(
            "{:?} is not an instance id (i- and 8 or 17 hex digits)",
            fleet_core::text::clip(bad, 64)
        )));
    }
    // A run leaves opted-out instances to the run workflow, which records them as skipped in the
    // run's results; a rollout records them in the ledger here.
    let opt_out_tag = if ad_hoc { "" } else { config.opt_out_tag.as_str() };
    let mut listing = req.previous.and_then(|p| p.listing).unwrap_or_default();
    if listing.pages > 0 && listing.next_token.is_none() {
        return Err(FleetError::invalid_input(format!(
            "the listing of rollout {} has ended ({} pages): there is nothing more to list",
            req.rollout_id, listing.pages
        )));
    }
    let tags: Vec<(String, Vec<String>)> = req.tags.iter().map(|t| (t.key.clone(), t.values.clone())).collect();
    let mut pages: Vec<(usize, Vec<Target>)> = Vec::new();
    let mut opted_out: Vec<InstanceNote> = Vec::new();
    loop {
        let page =
            fleet_core::adapters::describe_running_page_of(ec2, &tags, ids, opt_out_tag, listing.next_token.take())
                .await
                .map_err(|e| {
                    tracing::error!(rollout_id = %req.rollout_id, page = listing.pages, error = %e, "listing failed");
                    e
                })?;
        let mut targets = Vec::new();
        for t in page.instances {
            let f = t.facts;
            if !fleet_core::model::is_valid_instance_id(&f.instance_id) {
                // Never a ledger key nor a chunk member.
                tracing::warn!(
                    instance_id = fleet_core::text::clip(&f.instance_id, 64),
                    "EC2 returned a malformed instance id: left out of the rollout"
                );
                continue;
            }
            if f.opted_out {
                opted_out.push(InstanceNote {
                    reason_code: ReasonCode::OptedOut,
                    reason: format!("opted out by tag {}", config.opt_out_tag),
                    platform: f.platform_details,
                    instance_id: f.instance_id,
                });
            } else {
                targets.push(Target {
                    instance_id: f.instance_id,
                    family: t.family,
                });
            }
        }
        listing.targets += targets.len();
        pages.push((listing.pages, targets));
        listing.pages += 1;
        listing.next_token = page.next_token;
        if listing.next_token.is_none() || pages.len() >= config.max_list_pages {
            break;
        }
    }
    listing.opted_out += opted_out.len();
    // Opted-out targets end in the ledger too, as skipped with the reason.
    if !opted_out.is_empty() {
        opted_out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let now = fleet_core::ledger::now_rfc3339();
        let writes = opted_out
            .iter()
            .map(|n| fleet_core::ledger::note_write(n, LedgerState::Skipped, &req.execution, &now))
            .collect();
        fleet_core::ledger::write_all(db, &config.table, &req.execution, writes).await?;
    }
    fleet_core::ledger::put_target_list_pages(db, &config.table, &req.rollout_id, &pages).await?;
    tracing::info!(
        pages_read = pages.len(),
        pages = listing.pages,
        targets = listing.targets,
        opted_out = listing.opted_out,
        more = listing.next_token.is_some(),
        "targets listed"
    );
    Ok(ListResponse {
        rollout_id: req.rollout_id,
        more: listing.next_token.is_some(),
        pages_read: pages.len(),
        max_pages: config.max_list_pages,
        listing,
    })
}

/// Read the listed pages, order the targets, pick the canary, split into waves and chunks, store the chunks.
async fn plan(
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    req: Request,
    size: WaveSize,
) -> Result<Response, FleetError> {
    let listing = req
        .listing
        .ok_or_else(|| FleetError::invalid_input("plan needs the finished listing (listing: {pages, ...})"))?;
    if listing.next_token.is_some() {
        return Err(FleetError::invalid_input(format!(
            "the listing of rollout {} is not finished ({} pages so far): list the rest first",
            req.rollout_id, listing.pages
        )));
    }
    let mut targets =
        fleet_core::ledger::load_target_list_pages(db, &config.table, &req.rollout_id, listing.pages).await?;
    order_targets(&mut targets, &req.rollout_id);
    let families = targets
        .iter()
        .map(|t| t.family.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let plan = plan_rollout(&targets, req.canary, size, config.max_per_execution, &req.rollout_id);
    let chunks: Vec<(String, Vec<String>)> = plan
        .iter()
        .flat_map(|(w, ids)| {
            w.chunks
                .iter()
                .zip(ids)
                .map(|(c, ids)| (c.targets_key.clone(), ids.clone()))
        })
        .collect();
    fleet_core::ledger::put_target_chunks(db, &config.table, &chunks, &req.rollout_id).await?;
    let canary_platforms = plan
        .first()
        .filter(|(w, _)| w.label == "canary")
        .map(|(w, _)| w.platforms.clone())
        .unwrap_or_default();
    tracing::info!(
        targets = targets.len(),
        opted_out = listing.opted_out,
        families,
        canary = ?canary_platforms,
        waves = plan.len(),
        chunks = chunks.len(),
        "rollout planned"
    );
    Ok(Response {
        rollout_id: req.rollout_id,
        targets: targets.len(),
        opted_out: listing.opted_out,
        families,
        canary_platforms,
        waves: plan.into_iter().map(|(w, _)| w).collect(),
        run: req.input.run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
    use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{ArchitectureValues, Instance, PlatformValues, Reservation, Tag};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use serde_json::json;

    fn config() -> Config {
        Config {
            table: "ledger".into(),
            opt_out_tag: "fleet-install:opt-out".into(),
            max_per_execution: 2,
            max_list_pages: 2,
        }
    }

    fn id(n: u32) -> String {
        format!("i-{n:017x}")
    }

    fn instances(range: std::ops::Range<u32>, opt_out: bool, windows: bool) -> Reservation {
        let mut r = Reservation::builder();
        for n in range {
            let mut i = Instance::builder()
                .instance_id(id(n))
                .architecture(ArchitectureValues::X8664);
            if windows {
                i = i.platform(PlatformValues::Windows).platform_details("Windows");
            } else {
                i = i.platform_details("Linux/UNIX");
            }
            if opt_out {
                // the key alone opts out, even with the value "false"
                i = i.tags(Tag::builder().key("fleet-install:opt-out").value("false").build());
            }
            r = r.instances(i.build());
        }
        r.build()
    }

    fn list_request(previous: Value) -> Value {
        json!({"mode": "list", "rolloutId": "r1", "executionId": "arn:r1", "executionStartTime": "2026-11-25T12:00:00Z",
               "tags": [{"key": "team", "values": ["web"]}], "canary": 1, "waveSize": 3, "previous": previous})
    }

    #[tokio::test]
    async fn a_list_invocation_reads_at_most_max_pages_and_hands_on_the_cursor() {
        // three pages; at most two an invocation
        let describe = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| {
                r.filters().iter().any(|f| f.name() == Some("tag:team"))
                    && r.filters().iter().any(|f| f.name() == Some("instance-state-name"))
                    && r.max_results() == Some(1000)
            })
            .sequence()
            .output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(instances(0..5, false, false))
                    .next_token("p2")
                    .build()
            })
            .output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(instances(5..7, false, true))
                    .reservations(instances(100..102, true, false))
                    .next_token("p3")
                    .build()
            })
            .build();
        let third = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| r.next_token() == Some("p3"))
            .then_output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(instances(7..8, false, false))
                    .build()
            });
        let pages = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| {
                r.request_items().unwrap()["ledger"].iter().all(|w| {
                    let item = w.put_request().unwrap().item();
                    item["instanceId"].as_s().unwrap().starts_with("rollout#r1#list#") && !item.contains_key("state")
                })
            })
            .then_output(|| BatchWriteItemOutput::builder().build());
        // the two opted-out instances are recorded as skipped
        let skipped = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 2)
            .then_output(|| {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder().build()
            });
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&describe, &third]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&pages, &skipped]);
        // the first call gets the execution's input: no listing yet
        let first = handle(&ec2, &db, &config(), list_request(json!({"tags": [], "canary": 1})))
            .await
            .unwrap();
        let Output::Listed(first) = first else {
            panic!("{first:?}")
        };
        assert_eq!((first.pages_read, first.max_pages, first.more), (2, 2, true));
        assert_eq!(
            first.listing,
            Listing {
                next_token: Some("p3".into()),
                pages: 2,
                targets: 7,
                opted_out: 2
            }
        );
        assert_eq!((describe.num_calls(), third.num_calls()), (2, 0));
        assert_eq!((pages.num_calls(), skipped.num_calls()), (1, 1));
        // the next call gets the previous one's output and goes on from its cursor
        let previous = serde_json::to_value(Output::Listed(first)).unwrap();
        assert_eq!(previous["listing"]["nextToken"], "p3");
        let second = handle(&ec2, &db, &config(), list_request(previous)).await.unwrap();
        let Output::Listed(second) = second else {
            panic!("{second:?}")
        };
        assert_eq!((second.pages_read, second.more), (1, false));
        assert_eq!(
            second.listing,
            Listing {
                next_token: None,
                pages: 3,
                targets: 8,
                opted_out: 2
            }
        );
        assert_eq!(third.num_calls(), 1);
        assert_eq!(
            serde_json::to_value(Output::Listed(second)).unwrap()["listing"]["nextToken"],
            Value::Null
        );
    }

    #[tokio::test]
    async fn an_expired_cursor_fails_the_listing_with_a_clear_error() {
        let refused = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| r.next_token() == Some("stale"))
            .then_error(|| {
                aws_sdk_ec2::operation::describe_instances::DescribeInstancesError::generic(
                    aws_sdk_ec2::error::ErrorMetadata::builder()
                        .code("InvalidPaginationToken")
                        .message("The specified pagination token is not valid or is expired.")
                        .build(),
                )
            });
        let ec2 = mock_client!(aws_sdk_ec2, [&refused]);
        let db = mock_client!(aws_sdk_dynamodb, []);
        let previous = json!({"listing": {"nextToken": "stale", "pages": 40, "targets": 40000, "optedOut": 0}});
        let err = handle(&ec2, &db, &config(), list_request(previous)).await.unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::AWS_REJECTED);
        assert!(err.to_string().contains("invalid or expired"), "{err}");
        assert!(err.to_string().contains("Start the rollout or sweep again"), "{err}");
    }

    fn page_item(
        n: usize,
        by_family: &[(&str, std::ops::Range<u32>)],
    ) -> std::collections::HashMap<String, AttributeValue> {
        let targets = by_family
            .iter()
            .map(|(family, ids)| {
                (
                    family.to_string(),
                    AttributeValue::L(ids.clone().map(|i| AttributeValue::S(id(i))).collect()),
                )
            })
            .collect();
        std::collections::HashMap::from([
            (
                "instanceId".to_string(),
                AttributeValue::S(fleet_core::ledger::rollout_list_key("r1", n)),
            ),
            ("targets".to_string(), AttributeValue::M(targets)),
        ])
    }

    #[tokio::test]
    async fn plan_reads_the_listed_pages_and_its_canary_covers_every_family() {
        // 20 Linux x86_64, 1 Windows, 1 Linux arm64 over two pages; a canary of 2 grows to 3
        let read = mock!(aws_sdk_dynamodb::Client::batch_get_item)
            .match_requests(|r| r.request_items().unwrap()["ledger"].keys().len() == 2)
            .then_output(|| {
                BatchGetItemOutput::builder()
                    .responses(
                        "ledger",
                        vec![
                            page_item(0, &[("Linux/UNIX (x86_64)", 0..12), ("Windows (x86_64)", 100..101)]),
                            page_item(1, &[("Linux/UNIX (x86_64)", 12..20), ("Linux/UNIX (arm64)", 200..201)]),
                        ],
                    )
                    .build()
            });
        let chunks = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| {
                r.request_items().unwrap()["ledger"].iter().all(|w| {
                    w.put_request().unwrap().item()["instanceId"]
                        .as_s()
                        .unwrap()
                        .starts_with("rollout#r1#w")
                })
            })
            .then_output(|| BatchWriteItemOutput::builder().build());
        let ec2 = mock_client!(aws_sdk_ec2, []);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&read, &chunks]);
        let r = handle(
            &ec2,
            &db,
            &config(),
            json!({"mode": "plan", "rolloutId": "r1", "executionId": "arn:r1", "executionStartTime": "2026-11-25T12:00:00Z",
                   "canary": 2, "waveSize": 10, "listing": {"nextToken": null, "pages": 2, "targets": 22, "optedOut": 3}}),
        )
        .await
        .unwrap();
        let Output::Planned(r) = r else { panic!("{r:?}") };
        assert_eq!((r.targets, r.opted_out, r.families), (22, 3, 3));
        assert_eq!(r.waves.iter().map(|w| w.instances).collect::<Vec<_>>(), vec![3, 10, 9]);
        assert_eq!(
            r.canary_platforms,
            BTreeMap::from([
                ("Linux/UNIX (arm64)".to_string(), 1),
                ("Linux/UNIX (x86_64)".to_string(), 1),
                ("Windows (x86_64)".to_string(), 1)
            ])
        );
        assert_eq!(r.waves[0].platforms, r.canary_platforms);
        assert_eq!(r.waves[1].chunks.len(), 5); // 10 with at most 2 per execution
        assert_eq!(read.num_calls(), 1);
        assert_eq!(chunks.num_calls(), 1); // 2 + 5 + 5 chunks in one BatchWriteItem
        let json = serde_json::to_value(Output::Planned(r)).unwrap();
        for field in ["rolloutId", "targets", "optedOut", "waves", "canaryPlatforms"] {
            assert!(json.get(field).is_some(), "{field}");
        }
    }

    #[tokio::test]
    async fn rejects_rollouts_without_targets_or_sizes_and_listings_out_of_turn() {
        let ec2 = mock_client!(aws_sdk_ec2, []);
        let db = mock_client!(aws_sdk_dynamodb, []);
        let exec = json!({"executionId": "arn:r", "executionStartTime": "2026-11-25T12:00:00Z"});
        let with = |v: Value| {
            let mut v = v;
            v.as_object_mut().unwrap().extend(exec.as_object().unwrap().clone());
            v
        };
        for bad in [
            with(json!({"mode": "list", "rolloutId": "r", "tags": [], "waveSize": 3})),
            with(json!({"mode": "list", "rolloutId": "r", "tags": [{"key": "a", "values": ["b"]}]})),
            with(json!({"mode": "list", "rolloutId": "r", "tags": [{"key": "a", "values": []}], "waveSize": 3})),
            with(json!({"rolloutId": "r", "tags": [{"key": "a", "values": ["b"]}], "waveSize": 3})),
            json!({"tags": "x"}),
            // a listing that has ended is not listed again
            with(
                json!({"mode": "list", "rolloutId": "r", "tags": [{"key": "a", "values": ["b"]}], "waveSize": 3,
                        "previous": {"listing": {"nextToken": null, "pages": 3}}}),
            ),
            // `all` and instance ids are for runs only; a run targets one way only, at most 200 valid ids
            with(json!({"mode": "list", "rolloutId": "r", "tags": [], "waveSize": 3, "input": {"all": true}})),
            with(
                json!({"mode": "list", "rolloutId": "r", "tags": [{"key": "a", "values": ["b"]}], "waveSize": 3,
                        "input": {"all": true, "run": run_spec()}}),
            ),
            with(json!({"mode": "list", "rolloutId": "r", "tags": [], "waveSize": 3, "input": {"run": run_spec()}})),
            with(json!({"mode": "list", "rolloutId": "r", "tags": [], "waveSize": 3,
                        "input": {"instanceIds": ["i-nothex"], "run": run_spec()}})),
            with(json!({"mode": "list", "rolloutId": "r", "tags": [], "waveSize": 3,
                        "input": {"instanceIds": (0..201).map(id).collect::<Vec<_>>(), "run": run_spec()}})),
            // a plan needs a finished listing
            with(json!({"mode": "plan", "rolloutId": "r", "waveSize": 3})),
            with(json!({"mode": "plan", "rolloutId": "r", "waveSize": 3, "listing": {"nextToken": "t", "pages": 1}})),
        ] {
            let err = handle(&ec2, &db, &config(), bad.clone()).await.unwrap_err();
            assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT, "{bad}");
        }
    }

    fn run_spec() -> Value {
        json!({"documents": [{"family": "any", "name": "AWS-RunShellScript", "version": "$DEFAULT"}],
               "parameters": {"commands": ["uptime"]}})
    }

    #[tokio::test]
    async fn a_run_lists_its_instance_ids_and_keeps_opted_out_ones_out_of_the_ledger() {
        // The instance-id filter narrows the listing; the opted-out instance stays a target (the run
        // workflow records it as skipped in the run's results), so only the page item is written.
        let describe = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| {
                r.filters()
                    .iter()
                    .any(|f| f.name() == Some("instance-id") && f.values().len() == 3)
                    && !r
                        .filters()
                        .iter()
                        .any(|f| f.name().is_some_and(|n| n.starts_with("tag:")))
            })
            .then_output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(instances(0..2, false, false))
                    .reservations(instances(2..3, true, false))
                    .build()
            });
        let pages = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| {
                r.request_items().unwrap()["ledger"].iter().all(|w| {
                    let item = w.put_request().unwrap().item();
                    item["instanceId"].as_s().unwrap().starts_with("rollout#r1#list#")
                })
            })
            .then_output(|| BatchWriteItemOutput::builder().build());
        let ec2 = mock_client!(aws_sdk_ec2, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, [&pages]);
        let mut req = list_request(json!({}));
        req["tags"] = json!([]);
        req["input"] = json!({"instanceIds": [id(0), id(1), id(2)], "run": run_spec()});
        let out = serde_json::to_value(handle(&ec2, &db, &config(), req).await.unwrap()).unwrap();
        assert_eq!(out["listing"]["targets"], 3);
        assert_eq!(out["listing"]["optedOut"], 0);
        assert_eq!(pages.num_calls(), 1);
    }

    #[test]
    fn max_list_pages_defaults_to_10_and_must_be_at_least_1() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let c = Config::from_env(&env(&[("LEDGER_TABLE", "t")])).unwrap();
        assert_eq!(c.max_list_pages, 10);
        let c = Config::from_env(&env(&[("LEDGER_TABLE", "t"), ("MAX_LIST_PAGES", "3")])).unwrap();
        assert_eq!(c.max_list_pages, 3);
        for bad in ["0", "x"] {
            let vars: &'static [(&'static str, &'static str)] = match bad {
                "0" => &[("LEDGER_TABLE", "t"), ("MAX_LIST_PAGES", "0")],
                _ => &[("LEDGER_TABLE", "t"), ("MAX_LIST_PAGES", "x")],
            };
            let err = Config::from_env(&env(vars)).err().unwrap();
            assert_eq!(err.error_type(), fleet_core::error::CONFIGURATION);
            assert!(err.to_string().contains("MAX_LIST_PAGES"), "{err}");
        }
    }
}
