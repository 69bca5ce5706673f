//! run-command's actions, one per state of the run workflow (statemachine/run.asl.json):
//!
//! - `prepare` (Find Reachable Instances): the chunk's instances, placed by what EC2 and SSM say now;
//!   those that cannot be sent the command get their final result at once.
//! - `send` (Send Run Commands): one SendCommand per batch; a retried call never sends a batch twice.
//! - `check` (Check Run Commands): the commands' invocations; final ones become results.
//! - `fail` (Record Run Failure): every instance of the chunk without a final result is recorded as
//!   failed with the workflow's error, so none is left without one.
//!
//! Results go to the run results table only: a run never writes the install ledger.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use fleet_core::model::Summary;
use fleet_core::run::{self, Placement, RunBatch, RunCommand, RunOutcome, RunSpec, RunTarget};
use fleet_core::run_store::{self, RunResult};
use fleet_core::FleetError;
use serde::Deserialize;
use serde_json::{json, Value};

/// SendCommand takes at most 50 instance ids.
pub const MAX_BATCH: usize = 50;

#[derive(Debug, Clone)]
pub struct Config {
    pub ledger_table: String,
    pub results_table: String,
    pub output_log_group: String,
    pub opt_out_tag: String,
    pub delivery_timeout_seconds: u64,
    /// Documents the stack may send (the allowlist); the role is scoped to the same list.
    pub allowed_documents: Vec<String>,
}

impl Config {
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Self, FleetError> {
        use fleet_core::config::{number, optional, required};
        let delivery: u64 = number(get, "DELIVERY_TIMEOUT_SECONDS", 600)?;
        if !(30..=2_592_000).contains(&delivery) {
            return Err(FleetError::Configuration(format!(
                "DELIVERY_TIMEOUT_SECONDS={delivery} must be between 30 and 2592000 (SendCommand's TimeoutSeconds)"
            )));
        }
        Ok(Config {
            ledger_table: required(get, "LEDGER_TABLE")?,
            results_table: required(get, "RUN_RESULTS_TABLE")?,
            output_log_group: required(get, "RUN_OUTPUT_LOG_GROUP")?,
            opt_out_tag: optional(get, "OPT_OUT_TAG_KEY", "fleet-install:opt-out"),
            delivery_timeout_seconds: delivery,
            allowed_documents: required(get, "RUN_DOCUMENTS")?
                .split(',')
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect(),
        })
    }
}

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub db: aws_sdk_dynamodb::Client,
}

/// What every action gets.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Common {
    action: String,
    /// The run: the rollout execution's name.
    run_id: String,
    #[serde(default)]
    wave: Option<u64>,
    run: RunSpec,
}

fn body<T: for<'de> Deserialize<'de>>(payload: &Value) -> Result<T, FleetError> {
    serde_json::from_value(payload.clone()).map_err(|e| {
        FleetError::invalid_input(format!(
            "run-command expects {{action: prepare | send | check | fail, runId, run: {{documents, parameters}}, ...}}: {e}"
        ))
    })
}

pub async fn handle(
    clients: &Clients,
    config: &Config,
    now: DateTime<Utc>,
    payload: Value,
) -> Result<Value, FleetError> {
    let common: Common = body(&payload)?;
    if common.run_id.is_empty() {
        return Err(FleetError::invalid_input("runId is empty"));
    }
    run::check_documents(&common.run.documents).map_err(FleetError::invalid_input)?;
    if let Some(d) = common
        .run
        .documents
        .iter()
        .find(|d| !config.allowed_documents.contains(&d.name))
    {
        return Err(FleetError::invalid_input(format!(
            "document {} is not in the stack's allowlist of documents ({}): add it to the RunDocuments parameter \
             and update the stack",
            d.name,
            config.allowed_documents.join(", ")
        )));
    }
    match common.action.as_str() {
        "prepare" => prepare(clients, config, &common, body(&payload)?).await,
        "send" => send(clients, config, now, &common, body(&payload)?).await,
        "check" => check(clients, config, now, &common, body(&payload)?).await,
        "fail" => fail(clients, config, &common, body(&payload)?).await,
        other => Err(FleetError::invalid_input(format!(
            "unknown action {other:?}: expected prepare, send, check or fail"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrepareRequest {
    /// The ledger item that holds the chunk's instance ids (written by the rollout's planning).
    targets_key: String,
}

fn result(common: &Common, instance_id: &str, outcome: RunOutcome, reason: String, platform: String) -> RunResult {
    RunResult {
        run_id: common.run_id.clone(),
        instance_id: instance_id.to_string(),
        outcome: Some(outcome),
        reason,
        platform,
        wave: common.wave,
        ..Default::default()
    }
}

async fn prepare(
    clients: &Clients,
    config: &Config,
    common: &Common,
    req: PrepareRequest,
) -> Result<Value, FleetError> {
    let ids = fleet_core::ledger::load_target_chunk(&clients.db, &config.ledger_table, &req.targets_key).await?;
    let ec2 = fleet_core::adapters::describe_ec2(&clients.ec2, &ids, &config.opt_out_tag).await?;
    let online: Vec<String> = ids
        .iter()
        .filter(|id| ec2.get(*id).is_some_and(|e| e.state == "running"))
        .cloned()
        .collect();
    let ssm = fleet_core::adapters::describe_ssm(&clients.ssm, &online).await?;
    let mut summary = Summary::default();
    let mut finished = Vec::new();
    let mut to_send = Vec::new();
    for id in &ids {
        match run::place(&common.run, ec2.get(id), ssm.get(id), &config.opt_out_tag) {
            Placement::Send { document, platform } => to_send.push((
                document,
                RunTarget {
                    instance_id: id.clone(),
                    platform,
                },
            )),
            Placement::Result {
                outcome,
                reason,
                platform,
            } => {
                run::summary_add(&mut summary, outcome, &platform, outcome.as_str());
                finished.push(result(common, id, outcome, reason, platform));
            }
        }
    }
    run_store::put_results(&clients.db, &config.results_table, &finished).await?;
    let batches = run::batches(to_send, MAX_BATCH);
    tracing::info!(
        run_id = %common.run_id,
        targets = ids.len(),
        not_sent = finished.len(),
        batches = batches.len(),
        "run chunk prepared"
    );
    Ok(json!({"batches": batches, "summary": summary, "batchCount": batches.len()}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendRequest {
    batches: Vec<RunBatch>,
    /// `$$.Execution.Name` of the run chunk's execution: names its batches.
    chunk_name: String,
    #[serde(flatten)]
    execution: fleet_core::model::Execution,
    /// The chunk's counts so far (Find Reachable Instances'): instances SSM refuses are added.
    #[serde(default)]
    summary: Summary,
}

/// The comment SSM shows for a batch (at most 100 characters): the batch key.
fn batch_key(chunk_name: &str, index: usize) -> String {
    let suffix = format!("#b{index}");
    let head = fleet_core::text::clip(chunk_name, 100 - suffix.len());
    format!("{head}{suffix}")
}

async fn send(
    clients: &Clients,
    config: &Config,
    now: DateTime<Utc>,
    common: &Common,
    req: SendRequest,
) -> Result<Value, FleetError> {
    let since = DateTime::parse_from_rfc3339(&req.execution.execution_start_time)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now - chrono::Duration::hours(1));
    let mut commands = Vec::new();
    let mut summary = req.summary;
    for (i, batch) in req.batches.iter().enumerate() {
        let key = batch_key(&req.chunk_name, i);
        let ids: Vec<String> = batch.instances.iter().map(|t| t.instance_id.clone()).collect();
        let existing =
            match run_store::get_batch_command(&clients.db, &config.results_table, &common.run_id, &key).await? {
                Some(id) => Some(id),
                // Sent by an attempt that died before it recorded the command.
                None => fleet_core::adapters::find_command_by_comment(&clients.ssm, &batch.document.name, since, &key)
                    .await?
                    .map(|c| c.command_id),
            };
        let (command_id, sent) = match existing {
            Some(id) => (id, batch.instances.clone()),
            None => match send_one(clients, config, common, batch, &key, &ids).await? {
                Sent::Command(id) => (id, batch.instances.clone()),
                Sent::Refused(first) => {
                    // SSM refused the batch (an instance went offline since Find Reachable Instances): send
                    // again without the instances SSM no longer reports online; those are unreachable. If SSM
                    // refuses again, or refused ids it reports online, the rest are unreachable too.
                    let ssm = fleet_core::adapters::describe_ssm(&clients.ssm, &ids).await?;
                    let (ok, mut unsent): (Vec<RunTarget>, Vec<RunTarget>) = batch
                        .instances
                        .iter()
                        .cloned()
                        .partition(|t| ssm.get(&t.instance_id).is_some_and(|s| s.ping_status == "Online"));
                    let mut reason = first;
                    let mut resent = None;
                    if !ok.is_empty() && !unsent.is_empty() {
                        let ok_ids: Vec<String> = ok.iter().map(|t| t.instance_id.clone()).collect();
                        let retry = RunBatch {
                            document: batch.document.clone(),
                            instances: ok.clone(),
                        };
                        match send_one(clients, config, common, &retry, &key, &ok_ids).await? {
                            Sent::Command(id) => resent = Some((id, ok)),
                            Sent::Refused(again) => {
                                unsent.extend(ok);
                                reason = again;
                            }
                        }
                    } else {
                        unsent.extend(ok);
                    }
                    let unreachable: Vec<RunResult> = unsent
                        .iter()
                        .map(|t| {
                            run::summary_add(&mut summary, RunOutcome::Unreachable, &t.platform, "unreachable");
                            result(
                                common,
                                &t.instance_id,
                                RunOutcome::Unreachable,
                                format!("SSM refused the command: {reason}"),
                                t.platform.clone(),
                            )
                        })
                        .collect();
                    run_store::put_results(&clients.db, &config.results_table, &unreachable).await?;
                    match resent {
                        Some(sent) => sent,
                        None => continue,
                    }
                }
            },
        };
        let sent_ids: Vec<String> = sent.iter().map(|t| t.instance_id.clone()).collect();
        run_store::put_items(
            &clients.db,
            &config.results_table,
            vec![run_store::batch_marker(&common.run_id, &key, &command_id, &sent_ids)],
        )
        .await?;
        let running: Vec<RunResult> = sent
            .iter()
            .map(|t| RunResult {
                status: "Pending".into(),
                command_id: command_id.clone(),
                document: batch.document.name.clone(),
                log_group: config.output_log_group.clone(),
                ..result(
                    common,
                    &t.instance_id,
                    RunOutcome::Running,
                    String::new(),
                    t.platform.clone(),
                )
            })
            .collect();
        run_store::put_results(&clients.db, &config.results_table, &running).await?;
        commands.push(RunCommand {
            command_id,
            batch_key: key,
            document: batch.document.name.clone(),
            instances: sent,
            sent_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
    }
    tracing::info!(run_id = %common.run_id, commands = commands.len(), "run commands sent");
    Ok(json!({"commands": commands, "commandCount": commands.len(), "summary": summary}))
}

enum Sent {
    Command(String),
    Refused(String),
}

async fn send_one(
    clients: &Clients,
    config: &Config,
    common: &Common,
    batch: &RunBatch,
    key: &str,
    ids: &[String],
) -> Result<Sent, FleetError> {
    let params: HashMap<String, Vec<String>> = common.run.parameters.clone().into_iter().collect();
    let resp = clients
        .ssm
        .send_command()
        .document_name(&batch.document.name)
        .document_version(&batch.document.version)
        .set_instance_ids(Some(ids.to_vec()))
        .set_parameters(Some(params))
        .comment(key)
        .timeout_seconds(config.delivery_timeout_seconds as i32)
        .max_concurrency("50")
        .max_errors("100%")
        .cloud_watch_output_config(
            aws_sdk_ssm::types::CloudWatchOutputConfig::builder()
                .cloud_watch_log_group_name(&config.output_log_group)
                .cloud_watch_output_enabled(true)
                .build(),
        )
        .send()
        .await;
    match resp {
        Ok(r) => r
            .command()
            .and_then(|c| c.command_id())
            .map(|id| Sent::Command(id.to_string()))
            .ok_or_else(|| FleetError::Transient {
                service: "ssm:SendCommand".into(),
                message: "response without a command id".into(),
            }),
        Err(e) => {
            use aws_sdk_ssm::operation::send_command::SendCommandError as E;
            match e.as_service_error() {
                Some(E::InvalidInstanceId(inner)) => Ok(Sent::Refused(
                    inner.message().unwrap_or("invalid instance id").to_string(),
                )),
                _ => Err(FleetError::from_sdk("ssm", "SendCommand", &e)),
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckRequest {
    commands: Vec<RunCommand>,
    #[serde(default)]
    summary: Summary,
    /// The base poll interval (seconds).
    #[serde(default = "default_poll")]
    poll_seconds: u64,
}

fn default_poll() -> u64 {
    30
}

/// One invocation as a run records it.
#[derive(Debug, Clone)]
struct Invocation {
    status: String,
    status_details: String,
    response_code: Option<i32>,
    output: String,
    plugin: String,
}

async fn list_invocations(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<HashMap<String, Invocation>, FleetError> {
    let mut out = HashMap::new();
    for ci in fleet_core::adapters::command_invocations(ssm, command_id).await? {
        let Some(id) = ci.instance_id() else { continue };
        let plugins = ci.command_plugins();
        // The plugin that ran (a step skipped by its precondition reports Success with nothing run).
        let plugin = plugins
            .iter()
            .find(|p| !matches!(p.status(), Some(aws_sdk_ssm::types::CommandPluginStatus::Success)))
            .or_else(|| plugins.iter().rev().find(|p| p.output().is_some_and(|o| !o.is_empty())))
            .or_else(|| plugins.first());
        out.insert(
            id.to_string(),
            Invocation {
                status: ci.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                status_details: ci.status_details().unwrap_or_default().to_string(),
                response_code: plugin.map(|p| p.response_code()),
                output: plugin.and_then(|p| p.output()).unwrap_or_default().to_string(),
                plugin: plugin.and_then(|p| p.name()).unwrap_or_default().to_string(),
            },
        );
    }
    Ok(out)
}

async fn check(
    clients: &Clients,
    config: &Config,
    now: DateTime<Utc>,
    common: &Common,
    req: CheckRequest,
) -> Result<Value, FleetError> {
    let mut summary = req.summary;
    let mut in_flight = Vec::new();
    let mut finished = Vec::new();
    let give_up = run::give_up_after(config.delivery_timeout_seconds, common.run.execution_timeout);
    let mut oldest = 0u64;
    for cmd in req.commands {
        let invocations = list_invocations(&clients.ssm, &cmd.command_id).await?;
        let elapsed = DateTime::parse_from_rfc3339(&cmd.sent_at)
            .map(|t| (now - t.with_timezone(&Utc)).num_seconds().max(0) as u64)
            .unwrap_or(0);
        let overdue = elapsed > give_up;
        let mut still = Vec::new();
        for t in cmd.instances {
            let inv = invocations.get(&t.instance_id);
            let outcome = inv.map(|i| run::run_outcome(&i.status)).unwrap_or(RunOutcome::Running);
            if outcome == RunOutcome::Running && !overdue {
                still.push(t);
                continue;
            }
            let mut r = result(common, &t.instance_id, outcome, String::new(), t.platform.clone());
            r.command_id = cmd.command_id.clone();
            r.document = cmd.document.clone();
            r.log_group = config.output_log_group.clone();
            match inv {
                Some(i) => {
                    r.status = i.status.clone();
                    r.status_details = i.status_details.clone();
                    r.exit_code = i.response_code;
                    r.output = run::output_tail(&i.output);
                    if !i.plugin.is_empty() {
                        r.log_stream = run::output_stream(&cmd.command_id, &t.instance_id, &i.plugin);
                    }
                }
                None => r.status = "Pending".into(),
            }
            if outcome == RunOutcome::Running {
                r.outcome = Some(RunOutcome::Failed);
                r.reason = format!(
                    "SSM gave no final status within {give_up} s of sending (delivery timeout + execution timeout + \
                     10 min): last seen {}",
                    if r.status.is_empty() { "nothing" } else { &r.status }
                );
            } else if outcome != RunOutcome::Succeeded {
                r.reason = match r.exit_code {
                    Some(c) if c > 0 => format!("{} ({}), exit code {c}", r.status, r.status_details),
                    _ => format!("{} ({})", r.status, r.status_details),
                };
            }
            let o = r.outcome.unwrap_or(RunOutcome::Failed);
            let reason_code = if o == RunOutcome::Succeeded {
                String::new()
            } else {
                r.status.clone()
            };
            run::summary_add(&mut summary, o, &r.platform, &reason_code);
            finished.push(r);
        }
        if !still.is_empty() {
            oldest = oldest.max(elapsed);
            in_flight.push(RunCommand {
                instances: still,
                ..cmd
            });
        }
    }
    run_store::put_results(&clients.db, &config.results_table, &finished).await?;
    let wait = run::poll_seconds(oldest, req.poll_seconds);
    tracing::info!(
        run_id = %common.run_id,
        finished = finished.len(),
        commands_in_flight = in_flight.len(),
        wait_seconds = wait,
        "run commands checked"
    );
    Ok(json!({
        "commands": in_flight,
        "commandCount": in_flight.len(),
        "summary": summary,
        "waitSeconds": wait,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailRequest {
    targets_key: String,
    #[serde(default)]
    failure: Value,
    #[serde(default)]
    failed_state: String,
}

async fn fail(clients: &Clients, config: &Config, common: &Common, req: FailRequest) -> Result<Value, FleetError> {
    let ids = fleet_core::ledger::load_target_chunk(&clients.db, &config.ledger_table, &req.targets_key).await?;
    let existing = get_results(&clients.db, &config.results_table, &common.run_id, &ids).await?;
    let error = req
        .failure
        .get("Error")
        .and_then(|v| v.as_str())
        .unwrap_or("States.ALL");
    let cause = req.failure.get("Cause").and_then(|v| v.as_str()).unwrap_or("");
    let mut recorded = Vec::new();
    for id in &ids {
        let prior = existing.get(id);
        if prior.and_then(|r| r.outcome).is_some_and(|o| o.is_final()) {
            continue;
        }
        let mut r = prior
            .cloned()
            .unwrap_or_else(|| result(common, id, RunOutcome::Failed, String::new(), String::new()));
        r.outcome = Some(RunOutcome::Failed);
        r.reason = format!(
            "the run workflow failed at {}: {error}: {}{}",
            if req.failed_state.is_empty() {
                "an unknown state"
            } else {
                &req.failed_state
            },
            fleet_core::text::clip(cause, 300),
            if r.command_id.is_empty() {
                String::new()
            } else {
                format!(
                    " (command {} may still be running; see `fleet-install output`)",
                    r.command_id
                )
            }
        );
        recorded.push(r);
    }
    run_store::put_results(&clients.db, &config.results_table, &recorded).await?;
    tracing::error!(run_id = %common.run_id, recorded = recorded.len(), error, "run chunk failed");
    Ok(json!({"recorded": recorded.len()}))
}

/// The results of `ids` in a run (BatchGetItem, 100 keys a call).
async fn get_results(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    run_id: &str,
    ids: &[String],
) -> Result<BTreeMap<String, RunResult>, FleetError> {
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(100) {
        let keys: Vec<HashMap<String, AttributeValue>> = chunk
            .iter()
            .map(|id| {
                HashMap::from([
                    (
                        run_store::attr::RUN_ID.to_string(),
                        AttributeValue::S(run_id.to_string()),
                    ),
                    (run_store::attr::INSTANCE_ID.to_string(), AttributeValue::S(id.clone())),
                ])
            })
            .collect();
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| FleetError::invalid_input(e.to_string()))?,
        );
        let mut tries = 0u32;
        while let Some(r) = request.take() {
            let resp = db
                .batch_get_item()
                .request_items(table, r)
                .send()
                .await
                .map_err(|e| FleetError::from_sdk("dynamodb", "BatchGetItem", &e))?;
            for item in resp.responses().and_then(|m| m.get(table)).into_iter().flatten() {
                let r = RunResult::from_item(item);
                out.insert(r.instance_id.clone(), r);
            }
            request = resp
                .unprocessed_keys()
                .and_then(|m| m.get(table))
                .filter(|k| !k.keys().is_empty())
                .cloned();
            if request.is_some() {
                tries += 1;
                if tries > 8 {
                    return Err(FleetError::Throttled {
                        service: "dynamodb:BatchGetItem".into(),
                        message: "run results still unprocessed after 8 tries".into(),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << tries.min(6))).await;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput;
    use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
    use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
    use aws_sdk_ssm::types::{Command, CommandInvocation, CommandInvocationStatus, CommandPlugin, CommandPluginStatus};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn config() -> Config {
        Config::from_env(&|k: &str| {
            Some(
                match k {
                    "LEDGER_TABLE" => "ledger",
                    "RUN_RESULTS_TABLE" => "results",
                    "RUN_OUTPUT_LOG_GROUP" => "/fleet/run",
                    "RUN_DOCUMENTS" => "AWS-RunShellScript, AWS-RunPowerShellScript",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .unwrap()
    }

    fn clients(ssm: aws_sdk_ssm::Client, db: aws_sdk_dynamodb::Client) -> Clients {
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, []);
        Clients { ec2, ssm, db }
    }

    fn spec() -> Value {
        json!({"documents": [{"family": "any", "name": "AWS-RunShellScript", "version": "$DEFAULT"}],
               "parameters": {"commands": ["uptime"]}})
    }

    fn target(i: u32) -> Value {
        json!({"instanceId": format!("i-{i:017x}"), "platform": "Ubuntu"})
    }

    #[tokio::test]
    async fn a_document_outside_the_allowlist_is_refused_before_any_call() {
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, []);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, []);
        let payload = json!({"action": "prepare", "runId": "r", "targetsKey": "rollout#r#w0#c0",
            "run": {"documents": [{"family": "any", "name": "Evil-Doc", "version": "$DEFAULT"}]}});
        let err = handle(&clients(ssm, db), &config(), Utc::now(), payload)
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        assert!(
            err.to_string().contains("Evil-Doc is not in the stack's allowlist"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_batch_already_sent_is_not_sent_again() {
        // The marker of batch 0 holds its command: no SendCommand, no ListCommands.
        let marker = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
            GetItemOutput::builder()
                .item("commandId", AttributeValue::S("cmd-0".into()))
                .build()
        });
        let writes =
            mock!(aws_sdk_dynamodb::Client::batch_write_item).then_output(|| BatchWriteItemOutput::builder().build());
        let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| SendCommandOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&marker, &writes]);
        let payload = json!({"action": "send", "runId": "r", "wave": 0, "run": spec(), "chunkName": "r-w0-c0",
            "executionId": "arn:x", "executionStartTime": "2026-12-02T10:00:00Z",
            "batches": [{"document": {"family": "any", "name": "AWS-RunShellScript", "version": "$DEFAULT"},
                          "instances": [target(1), target(2)]}]});
        let out = handle(&clients(ssm, db), &config(), Utc::now(), payload).await.unwrap();
        assert_eq!(send.num_calls(), 0);
        assert_eq!(out["commands"][0]["commandId"], "cmd-0");
        assert_eq!(out["commands"][0]["batchKey"], "r-w0-c0#b0");
        assert_eq!(out["commandCount"], 1);
    }

    #[tokio::test]
    async fn a_batch_sent_by_a_dead_attempt_is_found_by_its_comment() {
        let marker = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
        let writes =
            mock!(aws_sdk_dynamodb::Client::batch_write_item).then_output(|| BatchWriteItemOutput::builder().build());
        let list = mock!(aws_sdk_ssm::Client::list_commands).then_output(|| {
            ListCommandsOutput::builder()
                .commands(Command::builder().command_id("cmd-found").comment("r-w0-c0#b0").build())
                .build()
        });
        let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| SendCommandOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&marker, &writes]);
        let payload = json!({"action": "send", "runId": "r", "run": spec(), "chunkName": "r-w0-c0",
            "executionId": "arn:x", "executionStartTime": "2026-12-02T10:00:00Z",
            "batches": [{"document": {"family": "any", "name": "AWS-RunShellScript", "version": "$DEFAULT"},
                          "instances": [target(1)]}]});
        let out = handle(&clients(ssm, db), &config(), Utc::now(), payload).await.unwrap();
        assert_eq!(send.num_calls(), 0);
        assert_eq!(out["commands"][0]["commandId"], "cmd-found");
        // The marker and the running result are written.
        assert_eq!(writes.num_calls(), 2);
    }

    #[tokio::test]
    async fn a_throttled_send_is_a_throttled_error_for_the_workflow_to_retry() {
        let marker = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
        let list = mock!(aws_sdk_ssm::Client::list_commands).then_output(|| ListCommandsOutput::builder().build());
        let send = mock!(aws_sdk_ssm::Client::send_command).then_error(|| {
            SendCommandError::generic(
                aws_sdk_ssm::error::ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &send]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&marker]);
        let payload = json!({"action": "send", "runId": "r", "run": spec(), "chunkName": "c",
            "executionId": "arn:x", "executionStartTime": "2026-12-02T10:00:00Z",
            "batches": [{"document": {"family": "any", "name": "AWS-RunShellScript", "version": "$DEFAULT"},
                          "instances": [target(1)]}]});
        let err = handle(&clients(ssm, db), &config(), Utc::now(), payload)
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::THROTTLED, "{err}");
    }

    #[tokio::test]
    async fn a_batch_ssm_refuses_is_sent_again_without_the_instances_gone_offline() {
        use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
        use aws_sdk_ssm::types::{InstanceInformation, PingStatus};
        let marker = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
        let writes = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| {
                // the unreachable instance's result says why
                r.request_items().unwrap()["results"].iter().all(|w| {
                    let item = w.put_request().unwrap().item();
                    item.get("outcome").and_then(|o| o.as_s().ok()).map(String::as_str) != Some("unreachable")
                        || (item["instanceId"].as_s().unwrap() == &format!("i-{:017x}", 2)
                            && item["reason"].as_s().unwrap().contains("SSM refused the command"))
                })
            })
            .then_output(|| BatchWriteItemOutput::builder().build());
        let list = mock!(aws_sdk_ssm::Client::list_commands).then_output(|| ListCommandsOutput::builder().build());
        let refused = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| r.instance_ids().len() == 2)
            .then_error(|| {
                SendCommandError::InvalidInstanceId(
                    aws_sdk_ssm::types::error::InvalidInstanceId::builder()
                        .message("Instances [[i-00000000000000002]] not in a valid state")
                        .build(),
                )
            });
        let sent = mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(|r| r.instance_ids() == [format!("i-{:017x}", 1)])
            .then_output(|| {
                SendCommandOutput::builder()
                    .command(Command::builder().command_id("cmd-1").build())
                    .build()
            });
        let info = mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(|| {
            DescribeInstanceInformationOutput::builder()
                .instance_information_list(
                    InstanceInformation::builder()
                        .instance_id(format!("i-{:017x}", 1))
                        .ping_status(PingStatus::Online)
                        .build(),
                )
                .instance_information_list(
                    InstanceInformation::builder()
                        .instance_id(format!("i-{:017x}", 2))
                        .ping_status(PingStatus::ConnectionLost)
                        .build(),
                )
                .build()
        });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &refused, &sent, &info]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&marker, &writes]);
        let payload = json!({"action": "send", "runId": "r", "run": spec(), "chunkName": "c",
            "executionId": "arn:x", "executionStartTime": "2026-12-02T10:00:00Z",
            "batches": [{"document": {"family": "any", "name": "AWS-RunShellScript", "version": "$DEFAULT"},
                          "instances": [target(1), target(2)]}]});
        let out = handle(&clients(ssm, db), &config(), Utc::now(), payload).await.unwrap();
        assert_eq!((refused.num_calls(), sent.num_calls()), (1, 1));
        assert_eq!(out["commands"][0]["commandId"], "cmd-1");
        assert_eq!(out["commands"][0]["instances"], json!([target(1)]));
        assert_eq!(out["summary"]["byState"], json!({"unreachable": 1}));
    }

    fn invocation(i: u32, status: CommandInvocationStatus, code: i32, output: &str) -> CommandInvocation {
        CommandInvocation::builder()
            .instance_id(format!("i-{i:017x}"))
            .status(status.clone())
            .status_details(status.as_str())
            .command_plugins(
                CommandPlugin::builder()
                    .name("aws:runShellScript")
                    .status(if status == CommandInvocationStatus::Success {
                        CommandPluginStatus::Success
                    } else if status == CommandInvocationStatus::Failed {
                        CommandPluginStatus::Failed
                    } else {
                        CommandPluginStatus::InProgress
                    })
                    .response_code(code)
                    .output(output)
                    .build(),
            )
            .build()
    }

    #[tokio::test]
    async fn check_records_final_invocations_and_keeps_the_rest_in_flight() {
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(|| {
            ListCommandInvocationsOutput::builder()
                .command_invocations(invocation(1, CommandInvocationStatus::Success, 0, "ok\n"))
                .command_invocations(invocation(2, CommandInvocationStatus::Failed, 3, "boom\n"))
                .command_invocations(invocation(3, CommandInvocationStatus::InProgress, -1, ""))
                .build()
        });
        let writes = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| r.request_items().map(|m| m["results"].len()) == Some(2))
            .then_output(|| BatchWriteItemOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&writes]);
        let now = Utc::now();
        let payload = json!({"action": "check", "runId": "r", "run": spec(), "pollSeconds": 15,
            "commands": [{"commandId": "c1", "batchKey": "k", "document": "AWS-RunShellScript",
                          "instances": [target(1), target(2), target(3)],
                          "sentAt": (now - chrono::Duration::seconds(900)).to_rfc3339()}]});
        let out = handle(&clients(ssm, db), &config(), now, payload).await.unwrap();
        assert_eq!(writes.num_calls(), 1);
        assert_eq!(out["commandCount"], 1);
        assert_eq!(out["commands"][0]["instances"].as_array().unwrap().len(), 1);
        assert_eq!(out["summary"]["byState"], json!({"failed": 1, "succeeded": 1}));
        assert_eq!(out["waitSeconds"], 90);
    }

    #[tokio::test]
    async fn an_invocation_without_a_final_status_past_every_timeout_is_recorded_failed() {
        let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(|| {
            ListCommandInvocationsOutput::builder()
                .command_invocations(invocation(1, CommandInvocationStatus::InProgress, -1, ""))
                .build()
        });
        let writes =
            mock!(aws_sdk_dynamodb::Client::batch_write_item).then_output(|| BatchWriteItemOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list]);
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&writes]);
        let now = Utc::now();
        let mut run = spec();
        run["executionTimeout"] = json!(60);
        let payload = json!({"action": "check", "runId": "r", "run": run,
            "commands": [{"commandId": "c1", "batchKey": "k", "document": "AWS-RunShellScript",
                          "instances": [target(1)], "sentAt": (now - chrono::Duration::hours(2)).to_rfc3339()}]});
        let out = handle(&clients(ssm, db), &config(), now, payload).await.unwrap();
        assert_eq!(out["commandCount"], 0);
        assert_eq!(out["summary"]["byState"], json!({"failed": 1}));
    }
}
