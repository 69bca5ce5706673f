use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use fleet_core::classify::{classify, Classification};
use fleet_core::model::{AgentUpdated, InstanceNote, ManagedInstance, ReasonCode};
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub struct Config {
    pub opt_out_tag: String,
    /// The ledger, where a rollout keeps each chunk's targets.
    pub ledger_table: String,
    /// AutoUpdateSsmAgent: an instance whose SSM Agent is older than its document needs gets
    /// AWS-UpdateSSMAgent first (true), or is recorded AgentTooOld and sent nothing (false).
    pub auto_update_agent: bool,
}

impl Config {
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Self, FleetError> {
        Ok(Config {
            opt_out_tag: fleet_core::config::optional(get, "OPT_OUT_TAG_KEY", "fleet-install:opt-out"),
            ledger_table: fleet_core::config::required(get, "LEDGER_TABLE")?,
            auto_update_agent: match fleet_core::config::optional(get, "AUTO_UPDATE_SSM_AGENT", "true").as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(FleetError::Configuration(format!(
                        "environment variable AUTO_UPDATE_SSM_AGENT={other:?} is neither \"true\" nor \"false\""
                    )))
                }
            },
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    #[serde(default)]
    pub instance_ids: Vec<String>,
    /// A rollout chunk: the instance ids are kept in the ledger under this key, not in the payload.
    #[serde(default)]
    pub targets_key: Option<String>,
    pub registration_deadline_seconds: i64,
    /// Instances whose agent this execution already updated: never updated again, and waited for
    /// (agent restarting, new version not reported yet) until the deadline counted from the update.
    #[serde(default)]
    pub agent_updated: Vec<AgentUpdated>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub managed: Vec<ManagedInstance>,
    pub pending: Vec<String>,
    pub unmanaged: Vec<InstanceNote>,
    pub skipped: Vec<InstanceNote>,
    /// Managed instances whose SSM Agent is older than their install document needs: AWS-UpdateSSMAgent first.
    pub agent_update: Vec<ManagedInstance>,
}

pub async fn handle(
    ec2: &aws_sdk_ec2::Client,
    ssm: &aws_sdk_ssm::Client,
    db: &aws_sdk_dynamodb::Client,
    config: &Config,
    now: DateTime<Utc>,
    payload: Value,
) -> Result<Response, FleetError> {
    let req: Request = serde_json::from_value(payload).map_err(|e| {
        FleetError::invalid_input(format!(
            "filter-managed expects {{instanceIds, registrationDeadlineSeconds}}: {e}"
        ))
    })?;
    if req.registration_deadline_seconds < 0 {
        return Err(FleetError::invalid_input(
            "registrationDeadlineSeconds must not be negative",
        ));
    }
    let mut requested = req.instance_ids;
    // A sweep's chunk names the installed instances it verifies (the drift check).
    let mut verify: BTreeSet<String> = BTreeSet::new();
    if let Some(key) = req.targets_key.filter(|k| !k.is_empty()) {
        let chunk = fleet_core::ledger::load_chunk(db, &config.ledger_table, &key).await?;
        requested.extend(chunk.instance_ids);
        verify.extend(chunk.verify_ids);
    }
    // Deduplicate, keep the first occurrence's order.
    let mut seen = BTreeSet::new();
    let ids: Vec<String> = requested.into_iter().filter(|id| seen.insert(id.clone())).collect();
    let valid: Vec<String> = ids
        .iter()
        .filter(|id| fleet_core::model::is_valid_instance_id(id))
        .cloned()
        .collect();
    let ec2_facts = if valid.is_empty() {
        Default::default()
    } else {
        fleet_core::adapters::describe_ec2(ec2, &valid, &config.opt_out_tag).await?
    };
    // Only ask SSM about instances that could be installed now.
    let candidates: Vec<String> = valid
        .iter()
        .filter(|id| {
            ec2_facts
                .get(*id)
                .is_some_and(|f| matches!(f.state.as_str(), "running" | "pending") && !f.opted_out)
        })
        .cloned()
        .collect();
    let ssm_facts = if candidates.is_empty() {
        Default::default()
    } else {
        fleet_core::adapters::describe_ssm(ssm, &candidates).await?
    };
    let deadline = Duration::seconds(req.registration_deadline_seconds);
    let updated_at: HashMap<&str, DateTime<Utc>> = req
        .agent_updated
        .iter()
        .filter_map(|g| {
            let at = DateTime::parse_from_rfc3339(&g.updated_at).ok()?.with_timezone(&Utc);
            Some(g.instance_ids.iter().map(move |id| (id.as_str(), at)))
        })
        .flatten()
        .collect();
    let mut resp = Response::default();
    for id in &ids {
        // Updated by this execution and still inside the deadline counted from the update.
        let update_waits = updated_at.get(id.as_str()).filter(|at| now < **at + deadline);
        match classify(
            id,
            ec2_facts.get(id),
            ssm_facts.get(id),
            now,
            deadline,
            &config.opt_out_tag,
        ) {
            Classification::Managed(mut m) => match fleet_core::agent::needs_update(&m) {
                None => {
                    m.verify = verify.contains(id);
                    resp.managed.push(m)
                }
                Some(_) if update_waits.is_some() => resp.pending.push(id.clone()),
                Some(minimum) => {
                    let reason = match updated_at.get(id.as_str()) {
                        Some(at) => fleet_core::agent::still_old_reason(
                            &m.agent_version,
                            minimum,
                            &fleet_core::classify::age(now - *at),
                        ),
                        None if !config.auto_update_agent => {
                            fleet_core::agent::update_disabled_reason(&m.agent_version, minimum)
                        }
                        None => {
                            resp.agent_update.push(m);
                            continue;
                        }
                    };
                    resp.unmanaged.push(InstanceNote {
                        instance_id: id.clone(),
                        reason_code: ReasonCode::AgentTooOld,
                        reason,
                        platform: Some(fleet_core::classify::platform_label(&m.platform_type, &m.platform_name)),
                    });
                }
            },
            Classification::PendingRegistration => resp.pending.push(id.clone()),
            // Offline right after its agent update (the agent restarts): wait, as for a registration.
            Classification::Unmanaged(_) if update_waits.is_some() => resp.pending.push(id.clone()),
            Classification::Unmanaged(n) => resp.unmanaged.push(n),
            Classification::Skipped(n) => resp.skipped.push(n),
        }
    }
    tracing::info!(
        instances = ids.len(),
        managed = resp.managed.len(),
        pending = resp.pending.len(),
        unmanaged = resp.unmanaged.len(),
        skipped = resp.skipped.len(),
        agent_update = resp.agent_update.len(),
        "classified instances"
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{IamInstanceProfile, Instance, InstanceState, InstanceStateName, Reservation, Tag};
    use aws_sdk_ssm::operation::describe_instance_information::{
        DescribeInstanceInformationError, DescribeInstanceInformationOutput,
    };
    use aws_sdk_ssm::types::{InstanceInformation, PingStatus, PlatformType};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use fleet_core::model::ReasonCode;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn id(n: u32) -> String {
        format!("i-{n:017x}")
    }

    fn instance(n: u32, state: InstanceStateName, launched_ago: i64, profile: bool, opt_out: bool) -> Instance {
        let mut b = Instance::builder()
            .instance_id(id(n))
            .state(InstanceState::builder().name(state).build())
            .launch_time(aws_sdk_ec2::primitives::DateTime::from_secs(
                (now() - Duration::seconds(launched_ago)).timestamp(),
            ))
            .platform_details("Linux/UNIX");
        if profile {
            b = b.iam_instance_profile(
                IamInstanceProfile::builder()
                    .arn("arn:aws:iam::1:instance-profile/p")
                    .build(),
            );
        }
        if opt_out {
            b = b.tags(Tag::builder().key("fleet-install:opt-out").value("true").build());
        }
        b.build()
    }

    fn info(n: u32, ping: PingStatus) -> InstanceInformation {
        InstanceInformation::builder()
            .instance_id(id(n))
            .ping_status(ping)
            .platform_type(PlatformType::Linux)
            .platform_name("Amazon Linux")
            .platform_version("2023")
            .agent_version("3.3.3050.0")
            .build()
    }

    fn config() -> Config {
        Config {
            opt_out_tag: "fleet-install:opt-out".into(),
            ledger_table: "ledger".into(),
            auto_update_agent: true,
        }
    }

    fn no_db() -> aws_sdk_dynamodb::Client {
        mock_client!(aws_sdk_dynamodb, [])
    }

    #[tokio::test]
    async fn classifies_a_mixed_set_with_one_call_per_service() {
        let ec2_rule = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(instance(1, InstanceStateName::Running, 60, true, false))
                        .instances(instance(2, InstanceStateName::Running, 60, true, false))
                        .instances(instance(3, InstanceStateName::Running, 3600, false, false))
                        .instances(instance(4, InstanceStateName::Stopped, 3600, true, false))
                        .instances(instance(5, InstanceStateName::Running, 60, true, true))
                        .build(),
                )
                .build()
        });
        let ssm_rule = mock!(aws_sdk_ssm::Client::describe_instance_information)
            .match_requests(|r| {
                // only running, not opted-out instances are asked about
                let vals = r.filters()[0].values();
                vals.len() == 3 && !vals.contains(&id(4)) && !vals.contains(&id(5))
            })
            .then_output(|| {
                DescribeInstanceInformationOutput::builder()
                    .instance_information_list(info(1, PingStatus::Online))
                    .build()
            });
        let ec2 = mock_client!(aws_sdk_ec2, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, [&ssm_rule]);
        let payload = serde_json::json!({
            "instanceIds": [id(1), id(2), id(3), id(4), id(5), id(6), "not-an-id", id(1)],
            "registrationDeadlineSeconds": 900
        });
        let r = handle(&ec2, &ssm, &no_db(), &config(), now(), payload).await.unwrap();
        assert_eq!(r.managed.len(), 1);
        assert_eq!(r.managed[0].instance_id, id(1));
        assert_eq!(r.pending, vec![id(2)]);
        assert_eq!(r.unmanaged.len(), 1);
        assert_eq!(r.unmanaged[0].reason_code, ReasonCode::NoInstanceProfile);
        let skipped: Vec<_> = r
            .skipped
            .iter()
            .map(|s| (s.instance_id.clone(), s.reason_code))
            .collect();
        assert_eq!(
            skipped,
            vec![
                (id(4), ReasonCode::Stopped),
                (id(5), ReasonCode::OptedOut),
                (id(6), ReasonCode::NotFound),
                ("not-an-id".to_string(), ReasonCode::MalformedInstanceId)
            ]
        );
        assert_eq!(ec2_rule.num_calls(), 1);
        assert_eq!(ssm_rule.num_calls(), 1);
    }

    fn with_agent(n: u32, ping: PingStatus, agent: &str) -> InstanceInformation {
        let mut i = info(n, ping);
        i.agent_version = Some(agent.into());
        i
    }

    /// Instances 1-5 running (launched a week ago), SSM as given.
    async fn classify_with(
        infos: Vec<InstanceInformation>,
        config: &Config,
        agent_updated: Value,
        deadline: i64,
    ) -> Response {
        let ec2_rule = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
            let mut r = Reservation::builder();
            for n in 1..=5 {
                r = r.instances(instance(n, InstanceStateName::Running, 7 * 86400, true, false));
            }
            DescribeInstancesOutput::builder().reservations(r.build()).build()
        });
        let ssm_rule = mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(move || {
            DescribeInstanceInformationOutput::builder()
                .set_instance_information_list(Some(infos.clone()))
                .build()
        });
        let ec2 = mock_client!(aws_sdk_ec2, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, [&ssm_rule]);
        let payload = serde_json::json!({
            "instanceIds": (1..=5).map(id).collect::<Vec<_>>(),
            "registrationDeadlineSeconds": deadline,
            "agentUpdated": agent_updated,
        });
        handle(&ec2, &ssm, &no_db(), config, now(), payload).await.unwrap()
    }

    #[tokio::test]
    async fn an_agent_older_than_its_document_needs_is_updated_first() {
        let infos = vec![
            with_agent(1, PingStatus::Online, "3.3.1142.0"),
            with_agent(2, PingStatus::Online, "3.3.2746.0"),
            with_agent(3, PingStatus::Online, "3.3.3050.0"),
            with_agent(4, PingStatus::Online, ""),
        ];
        let r = classify_with(infos.clone(), &config(), serde_json::json!([]), 900).await;
        assert_eq!(r.agent_update.len(), 1);
        assert_eq!(r.agent_update[0].instance_id, id(1));
        assert_eq!(r.agent_update[0].agent_version, "3.3.1142.0");
        // recent enough, or a version SSM does not report: installed as usual
        assert_eq!(
            r.managed.iter().map(|m| m.instance_id.clone()).collect::<Vec<_>>(),
            vec![id(2), id(3), id(4)]
        );
        // AutoUpdateSsmAgent=false: AgentTooOld, sent nothing
        let off = Config {
            auto_update_agent: false,
            ..config()
        };
        let r = classify_with(infos, &off, serde_json::json!([]), 900).await;
        assert!(r.agent_update.is_empty());
        assert_eq!(r.unmanaged.len(), 2); // 1 and the never-registered 5
        let note = r.unmanaged.iter().find(|n| n.instance_id == id(1)).unwrap();
        assert_eq!(note.reason_code, ReasonCode::AgentTooOld);
        assert!(
            note.reason
                .starts_with("SSM Agent 3.3.1142.0 is older than 3.3.2746.0, which the install document needs"),
            "{}",
            note.reason
        );
        assert!(note.reason.contains("AutoUpdateSsmAgent"), "{}", note.reason);
        assert_eq!(note.platform.as_deref(), Some("Amazon Linux"));
    }

    #[tokio::test]
    async fn an_updated_agent_is_installed_once_ssm_reports_it_and_never_updated_twice() {
        // updated 5 minutes ago: 1 now reports the new version, 2 still the old one, 3 is offline (restarting)
        let updated = serde_json::json!([{
            "updatedAt": (now() - Duration::seconds(300)).to_rfc3339(),
            "instanceIds": [id(1), id(2), id(3)]
        }]);
        let infos = vec![
            with_agent(1, PingStatus::Online, "3.3.3050.0"),
            with_agent(2, PingStatus::Online, "3.3.1142.0"),
            with_agent(3, PingStatus::ConnectionLost, "3.3.1142.0"),
        ];
        let r = classify_with(infos.clone(), &config(), updated.clone(), 900).await;
        assert_eq!(r.managed.len(), 1);
        assert_eq!(r.managed[0].instance_id, id(1));
        assert!(r.agent_update.is_empty(), "never sent a second update");
        assert_eq!(r.pending, vec![id(2), id(3)]);
        // past the deadline counted from the update: AgentTooOld (2), and 3 unmanaged as any offline instance
        let r = classify_with(infos, &config(), updated, 120).await;
        assert!(r.agent_update.is_empty() && r.pending.is_empty());
        let note = r.unmanaged.iter().find(|n| n.instance_id == id(2)).unwrap();
        assert_eq!(note.reason_code, ReasonCode::AgentTooOld);
        assert!(
            note.reason.contains("5 min after AWS-UpdateSSMAgent succeeded"),
            "{}",
            note.reason
        );
        let offline = r.unmanaged.iter().find(|n| n.instance_id == id(3)).unwrap();
        assert_eq!(offline.reason_code, ReasonCode::ConnectionLost);
    }

    #[test]
    fn auto_update_is_read_from_the_environment() {
        let get = |v: &'static str| {
            move |k: &str| match k {
                "LEDGER_TABLE" => Some("t".to_string()),
                "AUTO_UPDATE_SSM_AGENT" => Some(v.to_string()),
                _ => None,
            }
        };
        assert!(Config::from_env(&get("true")).unwrap().auto_update_agent);
        assert!(!Config::from_env(&get("false")).unwrap().auto_update_agent);
        assert!(Config::from_env(&get("")).unwrap().auto_update_agent);
        let err = Config::from_env(&get("yes")).err().unwrap();
        assert!(err.to_string().contains("AUTO_UPDATE_SSM_AGENT"), "{err}");
    }

    #[tokio::test]
    async fn asks_ssm_in_batches_of_fifty() {
        let ec2_rule = mock!(aws_sdk_ec2::Client::describe_instances).then_compute_output(|req| {
            let ids = req.filters()[0].values().to_vec();
            let mut r = Reservation::builder();
            for i in ids {
                let n = u32::from_str_radix(&i[2..], 16).unwrap();
                r = r.instances(instance(n, InstanceStateName::Running, 10, true, false));
            }
            DescribeInstancesOutput::builder().reservations(r.build()).build()
        });
        let ssm_rule = mock!(aws_sdk_ssm::Client::describe_instance_information)
            .match_requests(|r| r.filters()[0].values().len() <= 50)
            .then_output(|| DescribeInstanceInformationOutput::builder().build());
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&ssm_rule]);
        let ids: Vec<String> = (1..=420).map(id).collect();
        let r = handle(
            &ec2,
            &ssm,
            &no_db(),
            &config(),
            now(),
            serde_json::json!({"instanceIds": ids, "registrationDeadlineSeconds": 900}),
        )
        .await
        .unwrap();
        assert_eq!(r.pending.len(), 420);
        assert_eq!(ec2_rule.num_calls(), 3); // ceil(420/200)
        assert_eq!(ssm_rule.num_calls(), 9); // ceil(420/50)
    }

    #[tokio::test]
    async fn throttling_is_reported_as_throttled() {
        let ec2_rule = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(instance(1, InstanceStateName::Running, 60, true, false))
                        .build(),
                )
                .build()
        });
        let ssm_rule = mock!(aws_sdk_ssm::Client::describe_instance_information).then_error(|| {
            DescribeInstanceInformationError::generic(
                aws_sdk_ssm::error::ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let ec2 = mock_client!(aws_sdk_ec2, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, [&ssm_rule]);
        let err = handle(
            &ec2,
            &ssm,
            &no_db(),
            &config(),
            now(),
            serde_json::json!({"instanceIds": [id(1)], "registrationDeadlineSeconds": 900}),
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::THROTTLED);
    }

    #[tokio::test]
    async fn empty_and_malformed_input() {
        let ec2_rule =
            mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| DescribeInstancesOutput::builder().build());
        let ssm_rule = mock!(aws_sdk_ssm::Client::describe_instance_information)
            .then_output(|| DescribeInstanceInformationOutput::builder().build());
        let ec2 = mock_client!(aws_sdk_ec2, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, [&ssm_rule]);
        let r = handle(
            &ec2,
            &ssm,
            &no_db(),
            &config(),
            now(),
            serde_json::json!({"instanceIds": [], "registrationDeadlineSeconds": 900}),
        )
        .await
        .unwrap();
        assert_eq!(r, Response::default());
        assert_eq!(ec2_rule.num_calls() + ssm_rule.num_calls(), 0);
        let err = handle(
            &ec2,
            &ssm,
            &no_db(),
            &config(),
            now(),
            serde_json::json!({"instances": "i-1"}),
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        assert!(err.to_string().contains("instanceIds"), "{err}");
    }

    #[tokio::test]
    async fn loads_a_rollout_chunk_from_the_ledger() {
        use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
        use aws_sdk_dynamodb::types::AttributeValue;
        let get = mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|r| {
                r.key().and_then(|k| k.get("instanceId")) == Some(&AttributeValue::S("rollout#r#w0#c0".into()))
            })
            .then_output(|| {
                GetItemOutput::builder()
                    .item(
                        "instanceIds",
                        AttributeValue::L(vec![AttributeValue::S(id(1)), AttributeValue::S(id(2))]),
                    )
                    .build()
            });
        let ec2_rule = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| r.filters()[0].values().len() == 2)
            .then_output(|| DescribeInstancesOutput::builder().build());
        let ec2 = mock_client!(aws_sdk_ec2, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, []);
        let db = mock_client!(aws_sdk_dynamodb, [&get]);
        let r = handle(
            &ec2,
            &ssm,
            &db,
            &config(),
            now(),
            serde_json::json!({"targetsKey": "rollout#r#w0#c0", "registrationDeadlineSeconds": 900}),
        )
        .await
        .unwrap();
        assert_eq!(r.skipped.len(), 2); // EC2 does not know them
        assert_eq!(get.num_calls(), 1);
        let missing = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
        let db = mock_client!(aws_sdk_dynamodb, [&missing]);
        let err = handle(
            &ec2,
            &ssm,
            &db,
            &config(),
            now(),
            serde_json::json!({"targetsKey": "nope", "registrationDeadlineSeconds": 1}),
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
    }

    #[tokio::test]
    async fn an_unparseable_server_error_is_transient() {
        let ec2_rule = mock!(aws_sdk_ec2::Client::describe_instances).then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(500).unwrap(),
                aws_smithy_types::body::SdkBody::from("<html>Internal Server Error</html>"),
            )
        });
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, []);
        let err = handle(
            &ec2,
            &ssm,
            &no_db(),
            &config(),
            now(),
            serde_json::json!({"instanceIds": [id(1)], "registrationDeadlineSeconds": 9}),
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::TRANSIENT, "{err}");
    }

    #[tokio::test]
    async fn access_denied_is_its_own_error_naming_the_call_and_the_fix() {
        use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
        // EC2 answers UnauthorizedOperation.
        let ec2_rule = mock!(aws_sdk_ec2::Client::describe_instances).then_error(|| {
            DescribeInstancesError::generic(
                aws_sdk_ec2::error::ErrorMetadata::builder()
                    .code("UnauthorizedOperation")
                    .message("You are not authorized to perform this operation.")
                    .build(),
            )
        });
        let ec2 = mock_client!(aws_sdk_ec2, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, []);
        let payload = serde_json::json!({"instanceIds": [id(1)], "registrationDeadlineSeconds": 9});
        let err = handle(&ec2, &ssm, &no_db(), &config(), now(), payload.clone())
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::ACCESS_DENIED, "{err}");
        let text = err.to_string();
        assert!(text.contains("ec2:DescribeInstances"), "{text}");
        assert!(text.contains("You are not authorized"), "{text}");
        assert!(text.contains("IAM role") && text.contains("redeploy"), "{text}");
        let d: lambda_runtime::Diagnostic = err.into();
        assert_eq!(d.error_type, "FleetInstall.AccessDenied");

        // SSM answers AccessDeniedException.
        let ec2_rule = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(instance(1, InstanceStateName::Running, 60, true, false))
                        .build(),
                )
                .build()
        });
        let ssm_rule = mock!(aws_sdk_ssm::Client::describe_instance_information).then_error(|| {
            DescribeInstanceInformationError::generic(
                aws_sdk_ssm::error::ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("User: arn:aws:sts::1:assumed-role/r is not authorized to perform: ssm:DescribeInstanceInformation")
                    .build(),
            )
        });
        let ec2 = mock_client!(aws_sdk_ec2, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, [&ssm_rule]);
        let err = handle(&ec2, &ssm, &no_db(), &config(), now(), payload.clone())
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::ACCESS_DENIED, "{err}");
        assert!(err.to_string().contains("ssm:DescribeInstanceInformation"), "{err}");

        // A bare 403 without an error code.
        let ec2_rule = mock!(aws_sdk_ec2::Client::describe_instances).then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
                aws_smithy_types::body::SdkBody::from("Forbidden"),
            )
        });
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&ec2_rule]);
        let ssm = mock_client!(aws_sdk_ssm, []);
        let err = handle(&ec2, &ssm, &no_db(), &config(), now(), payload)
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::ACCESS_DENIED, "{err}");
        assert!(err.to_string().contains("ec2:DescribeInstances"), "{err}");
    }
}
