//! Thin adapters over the EC2 and SSM APIs: batched at the API limits, errors classified.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::types::Filter;
use aws_sdk_ssm::types::{CommandInvocation, InstanceInformationStringFilter};
use chrono::{DateTime, Utc};

use crate::classify::{Ec2Facts, SsmFacts};
use crate::error::FleetError;

/// DescribeInstances: at most 200 values in one filter.
pub const EC2_FILTER_VALUES: usize = 200;
/// DescribeInstanceInformation: at most 50 results a page; we ask for 50 ids at a time.
pub const SSM_INFO_BATCH: usize = 50;

fn to_utc(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|d| DateTime::<Utc>::from_timestamp(d.secs(), d.subsec_nanos()))
}

/// EC2's view of the given instances. Ids that EC2 does not know are absent from the map.
/// Uses the `instance-id` filter (not InstanceIds) so one unknown id does not fail the call.
pub async fn describe_ec2(
    client: &aws_sdk_ec2::Client,
    ids: &[String],
    opt_out_tag: &str,
) -> Result<HashMap<String, Ec2Facts>, FleetError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(EC2_FILTER_VALUES) {
        let mut token = None;
        loop {
            let resp = client
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("instance-id")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .max_results(1000)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| FleetError::from_sdk("ec2", "DescribeInstances", &e))?;
            for i in resp.reservations().iter().flat_map(|r| r.instances()) {
                if let Some(facts) = facts_of(i, opt_out_tag) {
                    out.insert(facts.instance_id.clone(), facts);
                }
            }
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(out)
}

/// True when the instance carries the opt-out tag key, whatever its value (even empty or "false"):
/// the key alone opts out.
pub fn has_opt_out_tag(i: &aws_sdk_ec2::types::Instance, opt_out_tag: &str) -> bool {
    i.tags().iter().any(|t| t.key() == Some(opt_out_tag))
}

fn facts_of(i: &aws_sdk_ec2::types::Instance, opt_out_tag: &str) -> Option<Ec2Facts> {
    let id = i.instance_id()?;
    let opted_out = has_opt_out_tag(i, opt_out_tag);
    Some(Ec2Facts {
        instance_id: id.to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        launch_time: to_utc(i.launch_time()),
        has_instance_profile: i.iam_instance_profile().is_some(),
        opted_out,
        platform_details: i.platform_details().map(str::to_string),
    })
}

/// SSM's view of the given instances (those SSM has ever registered and still lists).
pub async fn describe_ssm(
    client: &aws_sdk_ssm::Client,
    ids: &[String],
) -> Result<HashMap<String, SsmFacts>, FleetError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(SSM_INFO_BATCH) {
        let mut token = None;
        loop {
            let filter = InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(chunk.to_vec()))
                .build()
                .map_err(|e| FleetError::invalid_input(e.to_string()))?;
            let resp = client
                .describe_instance_information()
                .filters(filter)
                .max_results(50)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| FleetError::from_sdk("ssm", "DescribeInstanceInformation", &e))?;
            for info in resp.instance_information_list() {
                let Some(id) = info.instance_id() else { continue };
                out.insert(
                    id.to_string(),
                    SsmFacts {
                        instance_id: id.to_string(),
                        ping_status: info.ping_status().map(|p| p.as_str().to_string()).unwrap_or_default(),
                        last_ping: to_utc(info.last_ping_date_time()),
                        platform_type: info.platform_type().map(|p| p.as_str().to_string()).unwrap_or_default(),
                        platform_name: info.platform_name().unwrap_or_default().to_string(),
                        platform_version: info.platform_version().unwrap_or_default().to_string(),
                        agent_version: info.agent_version().unwrap_or_default().to_string(),
                    },
                );
            }
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(out)
}

/// One instance's invocation of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub instance_id: String,
    pub status: String,
    pub status_details: String,
    pub response_code: Option<i32>,
    /// The tail of the output SSM returns inline (the full output is in CloudWatch Logs).
    pub output: String,
}

impl From<&CommandInvocation> for Invocation {
    fn from(ci: &CommandInvocation) -> Self {
        // The plugin that failed tells the exit code (a step skipped by its precondition reports 0).
        let plugins = ci.command_plugins();
        let plugin = plugins
            .iter()
            .find(|p| {
                matches!(
                    p.status(),
                    Some(
                        aws_sdk_ssm::types::CommandPluginStatus::Failed
                            | aws_sdk_ssm::types::CommandPluginStatus::TimedOut
                    )
                )
            })
            .or_else(|| plugins.first());
        Invocation {
            instance_id: ci.instance_id().unwrap_or_default().to_string(),
            status: ci.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
            status_details: ci.status_details().unwrap_or_default().to_string(),
            response_code: plugin.map(|p| p.response_code()),
            output: plugin.and_then(|p| p.output()).unwrap_or_default().to_string(),
        }
    }
}

/// All invocations of a command, paginated. Right after SendCommand SSM may list none or say
/// InvocationDoesNotExist: both come back as an empty list, which the caller reads as "running".
pub async fn list_invocations(client: &aws_sdk_ssm::Client, command_id: &str) -> Result<Vec<Invocation>, FleetError> {
    Ok(command_invocations(client, command_id)
        .await?
        .iter()
        .map(Invocation::from)
        .collect())
}

/// [`list_invocations`] as SSM gives them (with their plugins' details).
pub async fn command_invocations(
    client: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<Vec<CommandInvocation>, FleetError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let resp = client
            .list_command_invocations()
            .command_id(command_id)
            .details(true)
            .max_results(50)
            .set_next_token(token.take())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsError as E;
                if matches!(e.as_service_error(), Some(E::InvalidCommandId(_)))
                    || code_of(&e) == Some("InvocationDoesNotExist")
                {
                    return Ok(out);
                }
                return Err(FleetError::from_sdk("ssm", "ListCommandInvocations", &e));
            }
        };
        out.extend(resp.command_invocations().iter().cloned());
        token = resp.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}

fn code_of<E: aws_sdk_ssm::error::ProvideErrorMetadata, R>(e: &aws_sdk_ssm::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// What SendCommand sends.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub document_name: String,
    pub document_version: String,
    pub instance_ids: Vec<String>,
    pub parameters: BTreeMap<String, String>,
    pub comment: String,
    pub delivery_timeout_seconds: i32,
    pub output_log_group: Option<String>,
}

/// Why SendCommand refused.
#[derive(Debug)]
pub enum SendError {
    /// SSM says at least one instance id is not a managed, online instance.
    InvalidInstanceId(String),
    Other(FleetError),
}

pub async fn send_command(client: &aws_sdk_ssm::Client, req: &SendRequest) -> Result<String, SendError> {
    let params: HashMap<String, Vec<String>> = req
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), vec![v.clone()]))
        .collect();
    let mut call = client
        .send_command()
        .document_name(&req.document_name)
        .document_version(&req.document_version)
        .set_instance_ids(Some(req.instance_ids.clone()))
        .set_parameters(Some(params))
        .comment(&req.comment)
        .timeout_seconds(req.delivery_timeout_seconds)
        .max_concurrency("50")
        .max_errors("100%");
    if let Some(group) = &req.output_log_group {
        call = call.cloud_watch_output_config(
            aws_sdk_ssm::types::CloudWatchOutputConfig::builder()
                .cloud_watch_log_group_name(group)
                .cloud_watch_output_enabled(true)
                .build(),
        );
    }
    match call.send().await {
        Ok(resp) => resp
            .command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| {
                SendError::Other(FleetError::Transient {
                    service: "ssm:SendCommand".into(),
                    message: "response without a command id".into(),
                })
            }),
        Err(e) => {
            use aws_sdk_ssm::operation::send_command::SendCommandError as E;
            match e.as_service_error() {
                Some(E::InvalidInstanceId(inner)) => Err(SendError::InvalidInstanceId(
                    inner.message().unwrap_or("invalid instance id").to_string(),
                )),
                _ => Err(SendError::Other(FleetError::from_sdk("ssm", "SendCommand", &e))),
            }
        }
    }
}

/// A command found by its comment: its id and the instance ids it targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCommand {
    pub command_id: String,
    pub instance_ids: Vec<String>,
}

/// Find a command this system already sent for a batch (its comment carries the batch key),
/// among the document's commands since `since`. Used when a previous attempt died between
/// SendCommand and recording the command id.
pub async fn find_command_by_comment(
    client: &aws_sdk_ssm::Client,
    document_name: &str,
    since: DateTime<Utc>,
    comment: &str,
) -> Result<Option<FoundCommand>, FleetError> {
    let mut token = None;
    loop {
        let resp = client
            .list_commands()
            .filters(
                aws_sdk_ssm::types::CommandFilter::builder()
                    .key(aws_sdk_ssm::types::CommandFilterKey::InvokedAfter)
                    .value(since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .build()
                    .map_err(|e| FleetError::invalid_input(e.to_string()))?,
            )
            .filters(
                aws_sdk_ssm::types::CommandFilter::builder()
                    .key(aws_sdk_ssm::types::CommandFilterKey::DocumentName)
                    .value(document_name)
                    .build()
                    .map_err(|e| FleetError::invalid_input(e.to_string()))?,
            )
            .max_results(50)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| FleetError::from_sdk("ssm", "ListCommands", &e))?;
        if let Some(c) = resp.commands().iter().find(|c| c.comment() == Some(comment)) {
            return Ok(c.command_id().map(|id| FoundCommand {
                command_id: id.to_string(),
                instance_ids: c.instance_ids().to_vec(),
            }));
        }
        token = resp.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(None);
        }
    }
}

/// A running instance a rollout may target: what EC2 says about it, and its platform family
/// ([`crate::rollout::platform_family`] of its PlatformDetails, Platform and Architecture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFacts {
    pub facts: Ec2Facts,
    pub family: String,
}

/// One page of running instances with the tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetPage {
    pub instances: Vec<TargetFacts>,
    /// The cursor of the next page; `None` after the last one.
    pub next_token: Option<String>,
}

/// DescribeInstances' largest page.
pub const EC2_MAX_RESULTS: i32 = 1000;

/// The error codes with which EC2 refuses a NextToken it no longer knows (expired, or not one of
/// its own). With the same filters as the page that gave the token, `InvalidParameterValue` can
/// only be about the token too.
pub const CURSOR_REFUSED_CODES: &[&str] = &["InvalidPaginationToken", "InvalidNextToken", "InvalidParameterValue"];

fn running_tag_filters(tags: &[(String, Vec<String>)]) -> Vec<Filter> {
    let mut filters: Vec<Filter> = tags
        .iter()
        .map(|(key, values)| {
            Filter::builder()
                .name(format!("tag:{key}"))
                .set_values(Some(values.clone()))
                .build()
        })
        .collect();
    filters.push(Filter::builder().name("instance-state-name").values("running").build());
    filters
}

fn target_facts_of(i: &aws_sdk_ec2::types::Instance, opt_out_tag: &str) -> Option<TargetFacts> {
    let facts = facts_of(i, opt_out_tag)?;
    let family = crate::rollout::platform_family(
        i.platform_details(),
        i.platform().map(|p| p.as_str()),
        i.architecture().map(|a| a.as_str()),
    );
    Some(TargetFacts { facts, family })
}

/// The error for a DescribeInstances call that EC2 refused: a refused cursor (`next_token` was
/// sent and EC2 answered with one of [`CURSOR_REFUSED_CODES`]) is an `AwsRejected` that says so
/// and what to do; anything else is classified as usual ([`FleetError::from_sdk`]).
pub fn describe_page_error(
    next_token: Option<&str>,
    err: &aws_sdk_ec2::error::SdkError<
        aws_sdk_ec2::operation::describe_instances::DescribeInstancesError,
        aws_sdk_ec2::config::http::HttpResponse,
    >,
) -> FleetError {
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    let code = err.as_service_error().and_then(|e| e.code());
    match (next_token, code) {
        (Some(token), Some(code)) if CURSOR_REFUSED_CODES.contains(&code) => FleetError::AwsRejected {
            service: "ec2:DescribeInstances".into(),
            message: format!(
                "EC2 refused the listing's cursor (NextToken {:?}) as invalid or expired ({code}: {}): the listing \
                 cannot resume from it. Start the rollout or sweep again; it lists from the beginning",
                crate::text::clip(token, 40),
                err.as_service_error().and_then(|e| e.message()).unwrap_or("no message")
            ),
        },
        _ => FleetError::from_sdk("ec2", "DescribeInstances", err),
    }
}

/// One page (at most 1,000 instances) of the running instances that carry every given tag (each:
/// any of its values), from the cursor `next_token` (`None`: the first page). The caller carries the
/// cursor, so a listing can go on in another invocation.
pub async fn describe_running_page(
    client: &aws_sdk_ec2::Client,
    tags: &[(String, Vec<String>)],
    opt_out_tag: &str,
    next_token: Option<String>,
) -> Result<TargetPage, FleetError> {
    describe_running_page_of(client, tags, &[], opt_out_tag, next_token).await
}

/// [`describe_running_page`] narrowed to the given instance ids too (none: no narrowing; at most
/// [`EC2_FILTER_VALUES`]).
pub async fn describe_running_page_of(
    client: &aws_sdk_ec2::Client,
    tags: &[(String, Vec<String>)],
    instance_ids: &[String],
    opt_out_tag: &str,
    next_token: Option<String>,
) -> Result<TargetPage, FleetError> {
    let mut filters = running_tag_filters(tags);
    if !instance_ids.is_empty() {
        filters.push(
            Filter::builder()
                .name("instance-id")
                .set_values(Some(instance_ids.to_vec()))
                .build(),
        );
    }
    let resp = client
        .describe_instances()
        .set_filters(Some(filters))
        .max_results(EC2_MAX_RESULTS)
        .set_next_token(next_token.clone())
        .send()
        .await
        .map_err(|e| describe_page_error(next_token.as_deref(), &e))?;
    Ok(TargetPage {
        instances: resp
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| target_facts_of(i, opt_out_tag))
            .collect(),
        next_token: resp.next_token().filter(|t| !t.is_empty()).map(str::to_string),
    })
}

/// Every running instance with the tags and its platform family, all pages in one call (the CLI's
/// preview; the rollout workflow pages across invocations with [`describe_running_page`]).
pub async fn describe_running_targets_by_tags(
    client: &aws_sdk_ec2::Client,
    tags: &[(String, Vec<String>)],
    opt_out_tag: &str,
) -> Result<HashMap<String, TargetFacts>, FleetError> {
    let mut out = HashMap::new();
    let mut token = None;
    loop {
        let page = describe_running_page(client, tags, opt_out_tag, token.take()).await?;
        for t in page.instances {
            out.insert(t.facts.instance_id.clone(), t);
        }
        token = page.next_token;
        if token.is_none() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{Instance, Tag};

    #[test]
    fn the_exit_code_is_read_from_the_plugin_that_failed() {
        use aws_sdk_ssm::types::{CommandInvocation, CommandInvocationStatus, CommandPlugin, CommandPluginStatus};
        let plugin = |name: &str, status: CommandPluginStatus, code: i32| {
            CommandPlugin::builder()
                .name(name)
                .status(status)
                .response_code(code)
                .output(format!("{name} said {code}"))
                .build()
        };
        let ci = CommandInvocation::builder()
            .instance_id("i-0123456789abcdef0")
            .status(CommandInvocationStatus::Failed)
            .status_details("Failed")
            .command_plugins(plugin("skippedStep", CommandPluginStatus::Success, 0))
            .command_plugins(plugin("installAgent", CommandPluginStatus::Failed, 5))
            .build();
        let inv = Invocation::from(&ci);
        assert_eq!(inv.response_code, Some(5));
        assert_eq!(inv.output, "installAgent said 5");
        // one plugin, or none failed: the first
        let ci = CommandInvocation::builder()
            .instance_id("i-0123456789abcdef0")
            .status(CommandInvocationStatus::Success)
            .command_plugins(plugin("installAgent", CommandPluginStatus::Success, 0))
            .build();
        assert_eq!(Invocation::from(&ci).response_code, Some(0));
        let none = CommandInvocation::builder().instance_id("i-0123456789abcdef0").build();
        assert_eq!(Invocation::from(&none).response_code, None);
    }

    #[test]
    fn the_opt_out_key_alone_opts_out_whatever_its_value() {
        let with = |value: Option<&str>| {
            let tag = Tag::builder()
                .key("fleet-install:opt-out")
                .set_value(value.map(str::to_string))
                .build();
            Instance::builder().instance_id("i-0123456789abcdef0").tags(tag).build()
        };
        for v in [Some("true"), Some("false"), Some("FALSE"), Some("no"), Some(""), None] {
            assert!(has_opt_out_tag(&with(v), "fleet-install:opt-out"), "{v:?}");
            assert!(facts_of(&with(v), "fleet-install:opt-out").unwrap().opted_out, "{v:?}");
        }
        let other = Instance::builder()
            .instance_id("i-0123456789abcdef0")
            .tags(Tag::builder().key("team").value("fleet-install:opt-out").build())
            .build();
        assert!(!has_opt_out_tag(&other, "fleet-install:opt-out"));
    }

    #[tokio::test]
    async fn a_refused_cursor_is_a_clear_error_and_others_are_classified_as_usual() {
        use aws_sdk_ec2::operation::describe_instances::{DescribeInstancesError, DescribeInstancesOutput};
        use aws_smithy_mocks::{mock, mock_client, RuleMode};
        let refused = |code: &'static str| {
            move || {
                DescribeInstancesError::generic(
                    aws_sdk_ec2::error::ErrorMetadata::builder()
                        .code(code)
                        .message("The specified pagination token is not valid or is expired.")
                        .build(),
                )
            }
        };
        for code in CURSOR_REFUSED_CODES {
            let rule = mock!(aws_sdk_ec2::Client::describe_instances)
                .match_requests(|r| r.next_token() == Some("old-cursor") && r.max_results() == Some(1000))
                .then_error(refused(code));
            let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]);
            let err = describe_running_page(
                &client,
                &[("team".into(), vec!["web".into()])],
                "opt",
                Some("old-cursor".into()),
            )
            .await
            .unwrap_err();
            assert_eq!(err.error_type(), crate::error::AWS_REJECTED, "{code}");
            let text = err.to_string();
            assert!(
                text.contains("cursor") && text.contains("old-cursor") && text.contains(code),
                "{text}"
            );
            assert!(text.contains("Start the rollout or sweep again"), "{text}");
        }
        // without a cursor the same code is not about a cursor; a denial stays a denial
        let rule = mock!(aws_sdk_ec2::Client::describe_instances).then_error(refused("InvalidParameterValue"));
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]);
        let err = describe_running_page(&client, &[], "opt", None).await.unwrap_err();
        assert!(!err.to_string().contains("cursor"), "{err}");
        let rule = mock!(aws_sdk_ec2::Client::describe_instances).then_error(refused("UnauthorizedOperation"));
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]);
        let err = describe_running_page(&client, &[], "opt", Some("c".into()))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), crate::error::ACCESS_DENIED);
        // a page: its instances with their families, and the next cursor (an empty one ends the listing)
        let rule = mock!(aws_sdk_ec2::Client::describe_instances)
            .sequence()
            .output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(
                        aws_sdk_ec2::types::Reservation::builder()
                            .instances(
                                Instance::builder()
                                    .instance_id("i-0123456789abcdef0")
                                    .platform_details("Linux/UNIX")
                                    .architecture(aws_sdk_ec2::types::ArchitectureValues::Arm64)
                                    .build(),
                            )
                            .build(),
                    )
                    .next_token("")
                    .build()
            })
            .build();
        let client = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&rule]);
        let page = describe_running_page(&client, &[], "opt", None).await.unwrap();
        assert_eq!(page.next_token, None);
        assert_eq!(page.instances[0].family, "Linux/UNIX (arm64)");
    }
}
