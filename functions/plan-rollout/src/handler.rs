use fleet_core::model::{InstanceNote, LedgerState, ReasonCode};
use fleet_core::rollout::{plan_waves, rollout_order, WavePlan, WaveSize};
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub struct Config {
    pub table: String,
    pub opt_out_tag: String,
    pub max_per_execution: usize,
}

impl Config {
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Self, FleetError> {
        use fleet_core::config::{number, optional, required};
        Ok(Config {
            table: required(get, "LEDGER_TABLE")?,
            opt_out_tag: optional(get, "OPT_OUT_TAG_KEY", "fleet-install:opt-out"),
            max_per_execution: number(get, "MAX_INSTANCES_PER_EXECUTION", 1000)?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagFilter {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// `$$.Execution.Name`: names the chunks and their install executions.
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
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub rollout_id: String,
    pub targets: usize,
    pub opted_out: usize,
    pub waves: Vec<WavePlan>,
}

pub async fn handle(
    ec2: &aws_sdk_ec2::Client,
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    payload: Value,
) -> Result<Response, FleetError> {
    let req: Request = serde_json::from_value(payload).map_err(|e| {
        FleetError::invalid_input(format!(
            "plan-rollout expects {{rolloutId, tags: [{{key, values}}], canary, waveSize | wavePercent}}: {e}"
        ))
    })?;
    if req.tags.is_empty() || req.tags.iter().any(|t| t.key.is_empty() || t.values.is_empty()) {
        return Err(FleetError::invalid_input(
            "a rollout needs at least one tag filter, each with a key and values",
        ));
    }
    let size = match (req.wave_size, req.wave_percent) {
        (n, _) if n > 0 => WaveSize::Count(n),
        (_, p) if p > 0.0 && p <= 100.0 => WaveSize::Percent(p),
        _ => {
            return Err(FleetError::invalid_input(
                "give waveSize > 0 or wavePercent in (0, 100]",
            ))
        }
    };
    let tags: Vec<(String, Vec<String>)> = req.tags.iter().map(|t| (t.key.clone(), t.values.clone())).collect();
    let facts = fleet_core::adapters::describe_running_by_tags(ec2, &tags, &config.opt_out_tag).await?;
    let mut ids = Vec::new();
    let mut opted_out = Vec::new();
    for f in facts.into_values() {
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
            ids.push(f.instance_id);
        }
    }
    opted_out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    // Opted-out targets end in the ledger too, as skipped with the reason.
    if !opted_out.is_empty() {
        let now = fleet_core::ledger::now_rfc3339();
        let writes = opted_out
            .iter()
            .map(|n| fleet_core::ledger::note_write(n, LedgerState::Skipped, &req.execution, &now))
            .collect();
        fleet_core::ledger::write_all(db, &config.table, &req.execution, writes).await?;
    }
    rollout_order(&mut ids, &req.rollout_id);
    let plan = plan_waves(&ids, req.canary, size, config.max_per_execution, &req.rollout_id);
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
    tracing::info!(
        targets = ids.len(),
        opted_out = opted_out.len(),
        waves = plan.len(),
        chunks = chunks.len(),
        "rollout planned"
    );
    Ok(Response {
        rollout_id: req.rollout_id,
        targets: ids.len(),
        opted_out: opted_out.len(),
        waves: plan.into_iter().map(|(w, _)| w).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{Instance, Reservation, Tag};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn config() -> Config {
        Config {
            table: "ledger".into(),
            opt_out_tag: "fleet-install:opt-out".into(),
            max_per_execution: 2,
        }
    }

    fn instances(range: std::ops::Range<u32>, opt_out: bool) -> Reservation {
        let mut r = Reservation::builder();
        for n in range {
            let mut i = Instance::builder().instance_id(format!("i-{n:017x}"));
            if opt_out {
                // the key alone opts out, even with the value "false"
                i = i.tags(Tag::builder().key("fleet-install:opt-out").value("false").build());
            }
            r = r.instances(i.build());
        }
        r.build()
    }

    #[tokio::test]
    async fn plans_waves_over_pages_and_stores_chunks() {
        let describe = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| {
                r.filters().iter().any(|f| f.name() == Some("tag:team"))
                    && r.filters().iter().any(|f| f.name() == Some("instance-state-name"))
            })
            .sequence()
            .output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(instances(0..5, false))
                    .next_token("p2")
                    .build()
            })
            .output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(instances(5..7, false))
                    .reservations(instances(100..102, true))
                    .build()
            })
            .build();
        let write =
            mock!(aws_sdk_dynamodb::Client::batch_write_item).then_output(|| BatchWriteItemOutput::builder().build());
        // the two opted-out instances are recorded as skipped
        let skipped = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| r.transact_items().len() == 2)
            .then_output(|| {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder().build()
            });
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&write, &skipped]);
        let r = handle(
            &ec2,
            &db,
            &config(),
            serde_json::json!({"rolloutId": "r1", "executionId": "arn:r1", "executionStartTime": "2026-11-25T12:00:00Z",
                "tags": [{"key": "team", "values": ["web"]}], "canary": 1, "waveSize": 3}),
        )
        .await
        .unwrap();
        assert_eq!(r.targets, 7);
        assert_eq!(r.opted_out, 2);
        assert_eq!(r.waves.iter().map(|w| w.instances).collect::<Vec<_>>(), vec![1, 3, 3]);
        assert_eq!(r.waves[1].chunks.len(), 2); // 3 with at most 2 per execution
        assert_eq!(describe.num_calls(), 2);
        assert_eq!(write.num_calls(), 1); // 5 chunks in one BatchWriteItem
        assert_eq!(skipped.num_calls(), 1);
    }

    #[tokio::test]
    async fn rejects_rollouts_without_targets_or_sizes() {
        let ec2 = mock_client!(aws_sdk_ec2, []);
        let db = mock_client!(aws_sdk_dynamodb, []);
        for bad in [
            serde_json::json!({"rolloutId": "r", "tags": [], "waveSize": 3}),
            serde_json::json!({"rolloutId": "r", "tags": [{"key": "a", "values": ["b"]}]}),
            serde_json::json!({"tags": "x"}),
        ] {
            let err = handle(&ec2, &db, &config(), bad).await.unwrap_err();
            assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        }
    }
}
