//! await-commands' two entries (see fleet_core::completion for the design):
//!
//! - **register** (the workflow's "Wait For Commands", `.waitForTaskToken`): records the task token
//!   under a wait item with the commands still outstanding, and a pointer per command (send-command
//!   wrote it first, with the command as sent; this adds the wait). A command
//!   may have ended before its pointer existed (its event found nothing): each command's status is
//!   read once after the pointers are written, and the wait resumes at once if all have ended.
//! - **event** (EventBridge, SSM's "EC2 Command Status-change Notification", terminal statuses):
//!   follows the command's pointer, reads its invocations (every one must be final), writes the final
//!   outcomes they hold to the ledger (fleet_core::outcome: the instance's outcome lands when its
//!   command ends, not when the round's last command does), removes the command from its wait, and
//!   the removal that empties the wait resumes the execution. Failures with attempts left and agent
//!   updates are the workflow's check's to act on.
//!
//! Duplicate and late events are harmless: a command already removed is not removed twice, and a
//! token the execution no longer waits on (TaskTimedOut, InvalidToken, TaskDoesNotExist) is logged
//! and dropped. An event for a command no wait holds (another tool's, or one whose wait ended) is
//! logged and dropped.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use fleet_core::adapters::Invocation;
use fleet_core::completion::{self, CommandEvent, OUTSTANDING, RESUMED_AT, RESUMED_BY, TASK_TOKEN, WAIT_KEY};
use fleet_core::ledger::{self, get_s, n, s, Item};
use fleet_core::model::{Execution, SentCommand};
use fleet_core::record::attr;
use fleet_core::{outcome, FleetError};
use serde::Deserialize;
use serde_json::{json, Value};

pub struct Clients {
    pub ssm: aws_sdk_ssm::Client,
    pub db: aws_sdk_dynamodb::Client,
    pub sfn: aws_sdk_sfn::Client,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub table: String,
}

impl Config {
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Self, FleetError> {
        Ok(Config {
            table: fleet_core::config::required(get, "LEDGER_TABLE")?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Register {
    task_token: String,
    execution_id: String,
    /// `$$.Execution.StartTime`: outcome writes carry it (absent: events do not write outcomes).
    #[serde(default)]
    execution_start_time: String,
    /// The workflow's in-flight commands: each pointer keeps its command, so that its event can
    /// write its outcomes.
    #[serde(default)]
    commands: Vec<Value>,
    /// The workflow's attempts per instance: a failure before the last one is not final. Without it
    /// events only resume the wait and the check writes every outcome.
    #[serde(default)]
    max_attempts: Option<u32>,
}

pub async fn handle(clients: &Clients, config: &Config, payload: Value) -> Result<Value, FleetError> {
    if completion::is_event(&payload) {
        return on_event(clients, config, payload).await;
    }
    let req: Register = serde_json::from_value(payload).map_err(|e| {
        FleetError::invalid_input(format!(
            "await-commands expects an SSM event or {{taskToken, executionId, commands}}: {e}"
        ))
    })?;
    if req.task_token.is_empty() {
        return Err(FleetError::invalid_input("taskToken is empty"));
    }
    register(clients, config, req).await
}

/// What one removal of a command from its wait did.
#[derive(Debug, PartialEq)]
enum Removal {
    /// The command was the wait's last: its token, to resume the execution.
    Closed(String),
    /// Other commands of the wait are still running.
    Open(usize),
    /// Not in the wait (any more): a duplicate event, or the registration saw it first.
    NotThere,
}

async fn register(clients: &Clients, config: &Config, req: Register) -> Result<Value, FleetError> {
    // Each command's id, and the command as sent when it is whole (a pointer without it only resumes).
    let mut ids: Vec<String> = Vec::new();
    let mut sent: Vec<(String, Option<SentCommand>)> = Vec::new();
    for c in &req.commands {
        let id = c
            .get("commandId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !id.is_empty() && !ids.contains(&id) {
            ids.push(id.clone());
            sent.push((id, serde_json::from_value(c.clone()).ok()));
        }
    }
    let execution = Execution {
        execution_id: req.execution_id.clone(),
        execution_start_time: req.execution_start_time.clone(),
    };
    let max_attempts = req.max_attempts.filter(|_| !execution.execution_start_time.is_empty());
    let key = completion::wait_key(&req.task_token);
    if ids.is_empty() {
        // Nothing in flight (every instance of the send was refused): nothing to wait for.
        resume(clients, config, &key, &req.task_token, "registration", None).await?;
        return Ok(json!({"waitKey": key, "commands": 0, "resumed": true}));
    }
    let now = ledger::now_rfc3339();
    let mut wait: Item = Item::new();
    wait.insert(attr::INSTANCE_ID.into(), s(&key));
    wait.insert(attr::KIND.into(), s("wait"));
    wait.insert(attr::EXECUTION_ARN.into(), s(&execution.execution_id));
    wait.insert(TASK_TOKEN.into(), s(&req.task_token));
    wait.insert(OUTSTANDING.into(), AttributeValue::Ss(ids.clone()));
    wait.insert("commandCount".into(), n(ids.len()));
    wait.insert(attr::CREATED_AT.into(), s(&now));
    let (ttl_name, ttl) = ledger::ttl_field();
    wait.insert(ttl_name.into(), ttl.clone());
    let pointers: Vec<Item> = sent
        .iter()
        .map(|(id, cmd)| {
            let mut p = Item::from([
                (attr::INSTANCE_ID.to_string(), s(completion::command_key(id))),
                (attr::KIND.to_string(), s("commandWait")),
                (WAIT_KEY.to_string(), s(&key)),
                (attr::EXECUTION_ARN.to_string(), s(&execution.execution_id)),
                (attr::CREATED_AT.to_string(), s(&now)),
                (ttl_name.to_string(), ttl.clone()),
            ]);
            if let (Some(max), Some(cmd)) = (max_attempts, cmd) {
                for (k, v) in completion::pointer_fields(cmd, &execution, max) {
                    p.entry(k.to_string()).or_insert(v);
                }
            }
            p
        })
        .collect();
    // One BatchWriteItem (25 items a call) for the wait and its pointers. A pointer may land before its
    // wait: an event that follows it to a wait not written yet finds no command to remove and is dropped,
    // and the status check below sees that command ended.
    let mut items = vec![wait];
    items.extend(pointers);
    ledger::put_items(&clients.db, &config.table, items).await?;
    // Commands that ended before their pointer existed: their events found no wait.
    let mut ended = 0;
    let mut token = None;
    for (id, _) in &sent {
        if !command_ended(&clients.ssm, id).await? {
            continue;
        }
        // Its outcomes: written by its event (send-command wrote the pointer it follows) or, if that
        // event is lost, by the check that follows this wait.
        ended += 1;
        if let Removal::Closed(t) = remove(&clients.db, &config.table, &key, id).await? {
            token = Some(t);
        }
    }
    tracing::info!(
        wait = key,
        commands = ids.len(),
        ended,
        "waiting for the commands' completion events"
    );
    if let Some(t) = token {
        resume(clients, config, &key, &t, "registration", None).await?;
    }
    Ok(json!({"waitKey": key, "commands": ids.len(), "ended": ended}))
}

async fn on_event(clients: &Clients, config: &Config, payload: Value) -> Result<Value, FleetError> {
    let event = match completion::parse_event(&payload) {
        Ok(e) => e,
        Err(e) => {
            // No retry makes a malformed event readable: log it and drop it.
            tracing::warn!(error = %e, "dropped an event that is not an SSM command status change");
            return Ok(json!({"dropped": "malformed", "reason": e.to_string()}));
        }
    };
    if !event.ends_command() {
        tracing::debug!(
            command = event.command_id,
            status = event.status,
            "not a command's final status"
        );
        return Ok(json!({"dropped": "not final", "commandId": event.command_id}));
    }
    let pointer = ledger::get_item(&clients.db, &config.table, &completion::command_key(&event.command_id)).await?;
    let Some(pointer) = pointer else {
        tracing::info!(
            command = event.command_id,
            document = event.document_name,
            status = event.status,
            "dropped: unknown command (not sent by fleet-install's install workflow)"
        );
        return Ok(json!({"dropped": "unknown command", "commandId": event.command_id}));
    };
    let invocations = confirm_final(&clients.ssm, &event).await?;
    // send-command wrote the pointer with the command as sent: its outcomes are written now, whether
    // or not the workflow waits on it yet.
    let recorded = match completion::pointer_command(&pointer) {
        Some((cmd, exec, max)) => {
            record(clients, config, &cmd, &exec, max, invocations).await?;
            true
        }
        None => false,
    };
    let Some(wait_key) = get_s(&pointer, WAIT_KEY).map(str::to_string) else {
        // Sent, not waited on yet: the registration reads the command's status and finds it ended.
        tracing::info!(
            command = event.command_id,
            recorded,
            "command ended before its wait was registered"
        );
        return Ok(json!({"dropped": "no wait yet", "recorded": recorded, "commandId": event.command_id}));
    };
    match remove(&clients.db, &config.table, &wait_key, &event.command_id).await? {
        Removal::Closed(token) => {
            resume(clients, config, &wait_key, &token, "event", Some(&event.command_id)).await?;
            Ok(json!({"resumed": wait_key, "commandId": event.command_id}))
        }
        Removal::Open(left) => {
            tracing::info!(
                wait = wait_key,
                command = event.command_id,
                left,
                "command ended; others still running"
            );
            Ok(json!({"commandId": event.command_id, "outstanding": left}))
        }
        Removal::NotThere => {
            // A duplicate, or the registration saw the command end first. If the wait was emptied
            // but never resumed (that call failed), resume it now.
            let wait = ledger::get_item(&clients.db, &config.table, &wait_key).await?;
            let unresumed = wait
                .as_ref()
                .filter(|w| !w.contains_key(RESUMED_AT) && outstanding(w) == 0);
            if let Some(token) = unresumed.and_then(|w| get_s(w, TASK_TOKEN)).map(str::to_string) {
                resume(clients, config, &wait_key, &token, "event", Some(&event.command_id)).await?;
                return Ok(json!({"resumed": wait_key, "commandId": event.command_id}));
            }
            tracing::info!(
                wait = wait_key,
                command = event.command_id,
                "dropped: a duplicate or late event"
            );
            Ok(json!({"dropped": "duplicate", "commandId": event.command_id}))
        }
    }
}

/// The event says the command ended: its invocations must say so too before the workflow reads
/// them. If SSM does not list them all final yet, fail: Lambda retries the event later.
async fn confirm_final(ssm: &aws_sdk_ssm::Client, event: &CommandEvent) -> Result<Vec<Invocation>, FleetError> {
    let invocations = fleet_core::adapters::list_invocations(ssm, &event.command_id).await?;
    if completion::all_final(invocations.iter().map(|i| i.status.as_str())) {
        return Ok(invocations);
    }
    Err(FleetError::Transient {
        service: "ssm:ListCommandInvocations".into(),
        message: format!(
            "command {} reported {} but {} of its {} invocations are not final yet",
            event.command_id,
            event.status,
            invocations.iter().filter(|i| completion::is_running(&i.status)).count(),
            invocations.len()
        ),
    })
}

/// Write the final outcomes of one ended command (`Guard::Outcome`: once per command, by its
/// execution). What is not final (a failure with attempts left, an agent updated) waits for the
/// workflow's check.
async fn record(
    clients: &Clients,
    config: &Config,
    cmd: &SentCommand,
    exec: &Execution,
    max_attempts: u32,
    invocations: Vec<Invocation>,
) -> Result<(), FleetError> {
    let by_instance = invocations.into_iter().map(|i| (i.instance_id.clone(), i)).collect();
    let e = outcome::evaluate(cmd, &by_instance, max_attempts);
    if e.finals.is_empty() {
        return Ok(());
    }
    let now = ledger::now_rfc3339();
    let writes = e
        .finals
        .iter()
        .map(|f| outcome::final_write(f, cmd, exec, &now))
        .collect();
    let result = ledger::write_all(&clients.db, &config.table, exec, writes).await?;
    tracing::info!(
        command = cmd.command_id,
        written = result.written.len(),
        refused = result.refused.len(),
        retrying = e.retry.len(),
        agents_updated = e.updated.len(),
        "recorded the command's final outcomes"
    );
    Ok(())
}

/// The command's own status (ListCommands), final or not. A command SSM does not know is not.
async fn command_ended(ssm: &aws_sdk_ssm::Client, command_id: &str) -> Result<bool, FleetError> {
    let resp = ssm.list_commands().command_id(command_id).send().await;
    match resp {
        Ok(r) => Ok(r
            .commands()
            .first()
            .and_then(|c| c.status())
            .is_some_and(|s| completion::is_terminal(s.as_str()))),
        Err(e) => {
            use aws_sdk_ssm::operation::list_commands::ListCommandsError as E;
            if matches!(e.as_service_error(), Some(E::InvalidCommandId(_))) {
                return Ok(false);
            }
            Err(FleetError::from_sdk("ssm", "ListCommands", &e))
        }
    }
}

fn outstanding(item: &Item) -> usize {
    match item.get(OUTSTANDING) {
        Some(AttributeValue::Ss(v)) => v.len(),
        _ => 0,
    }
}

/// Remove one command from its wait, only if it is still there (so that exactly one caller sees
/// the wait close).
async fn remove(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    wait_key: &str,
    command_id: &str,
) -> Result<Removal, FleetError> {
    let resp = db
        .update_item()
        .table_name(table)
        .key(attr::INSTANCE_ID, s(wait_key))
        .update_expression("DELETE #o :c")
        .condition_expression("contains(#o, :id)")
        .expression_attribute_names("#o", OUTSTANDING)
        .expression_attribute_values(":c", AttributeValue::Ss(vec![command_id.to_string()]))
        .expression_attribute_values(":id", s(command_id))
        .return_values(ReturnValue::AllNew)
        .send()
        .await;
    match resp {
        Ok(r) => {
            let item = r.attributes().cloned().unwrap_or_default();
            let left = outstanding(&item);
            if left > 0 {
                return Ok(Removal::Open(left));
            }
            let token = get_s(&item, TASK_TOKEN).unwrap_or_default().to_string();
            if token.is_empty() {
                return Err(FleetError::invalid_input(format!(
                    "wait {wait_key} holds no task token"
                )));
            }
            Ok(Removal::Closed(token))
        }
        Err(e) => {
            use aws_sdk_dynamodb::operation::update_item::UpdateItemError as E;
            if matches!(e.as_service_error(), Some(E::ConditionalCheckFailedException(_))) {
                return Ok(Removal::NotThere);
            }
            Err(FleetError::from_sdk("dynamodb", "UpdateItem", &e))
        }
    }
}

/// SendTaskSuccess. A token the execution no longer waits on (it timed out into the fallback check,
/// was stopped, or was resumed already) is logged and dropped.
async fn resume(
    clients: &Clients,
    config: &Config,
    wait_key: &str,
    token: &str,
    by: &str,
    command_id: Option<&str>,
) -> Result<(), FleetError> {
    let output = json!({"resumedBy": by, "commandId": command_id}).to_string();
    let sent = clients
        .sfn
        .send_task_success()
        .task_token(token)
        .output(output)
        .send()
        .await;
    let outcome = match sent {
        Ok(_) => {
            tracing::info!(wait = wait_key, by, command = command_id, "resumed the execution");
            by.to_string()
        }
        Err(e) => {
            use aws_sdk_sfn::operation::send_task_success::SendTaskSuccessError as E;
            let closed = match e.as_service_error() {
                Some(E::TaskTimedOut(_)) => Some("TaskTimedOut"),
                Some(E::InvalidToken(_)) => Some("InvalidToken"),
                Some(E::TaskDoesNotExist(_)) => Some("TaskDoesNotExist"),
                _ => None,
            };
            let Some(why) = closed else {
                return Err(FleetError::from_sdk("states", "SendTaskSuccess", &e));
            };
            tracing::warn!(
                wait = wait_key,
                by,
                command = command_id,
                error = why,
                "dropped: the execution no longer waits on this token (its fallback check ran, or it ended)"
            );
            format!("closed:{why}")
        }
    };
    // Best effort: a later duplicate then knows the wait is done.
    let marked = clients
        .db
        .update_item()
        .table_name(&config.table)
        .key(attr::INSTANCE_ID, s(wait_key))
        .update_expression("SET #r = :now, #b = :by")
        .condition_expression("attribute_exists(#k)")
        .expression_attribute_names("#r", RESUMED_AT)
        .expression_attribute_names("#b", RESUMED_BY)
        .expression_attribute_names("#k", attr::INSTANCE_ID)
        .expression_attribute_values(":now", s(ledger::now_rfc3339()))
        .expression_attribute_values(":by", s(outcome))
        .send()
        .await;
    if let Err(e) = marked {
        tracing::debug!(wait = wait_key, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "could not mark the wait resumed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_sdk_sfn::operation::send_task_success::{SendTaskSuccessError, SendTaskSuccessOutput};
    use aws_sdk_sfn::types::error::{InvalidToken, TaskTimedOut};
    use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput;
    use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
    use aws_sdk_ssm::types::{Command, CommandInvocation, CommandInvocationStatus, CommandStatus};
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    const TOKEN: &str = "token-abc";

    fn config() -> Config {
        Config { table: "ledger".into() }
    }

    fn clients(ssm: &[&Rule], db: &[&Rule], sfn: &[&Rule]) -> Clients {
        Clients {
            ssm: mock_client!(aws_sdk_ssm, RuleMode::MatchAny, ssm),
            db: mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, db),
            sfn: mock_client!(aws_sdk_sfn, RuleMode::MatchAny, sfn),
        }
    }

    fn event(command: &str, status: &str) -> Value {
        json!({"version": "0", "id": "e", "detail-type": completion::COMMAND_STATUS_CHANGE, "source": "aws.ssm",
               "account": "123456789012", "time": "2026-12-02T10:00:00Z", "region": "us-east-1", "resources": [],
               "detail": {"command-id": command, "document-name": "Install-Linux", "status": status}})
    }

    fn pointer(wait: &str) -> Item {
        Item::from([(WAIT_KEY.to_string(), s(wait))])
    }

    fn wait_after(left: &[&str]) -> Item {
        let mut i = Item::from([(TASK_TOKEN.to_string(), s(TOKEN))]);
        if !left.is_empty() {
            i.insert(
                OUTSTANDING.into(),
                AttributeValue::Ss(left.iter().map(|x| x.to_string()).collect()),
            );
        }
        i
    }

    fn final_invocations() -> Rule {
        mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(|| {
            ListCommandInvocationsOutput::builder()
                .command_invocations(
                    CommandInvocation::builder()
                        .instance_id("i-0123456789abcdef0")
                        .status(CommandInvocationStatus::Success)
                        .build(),
                )
                .build()
        })
    }

    #[tokio::test]
    async fn an_event_writes_its_commands_final_outcomes_once_and_leaves_retries_to_the_check() {
        let sent: SentCommand = serde_json::from_value(json!({"commandId": "c-1", "batchKey": "k", "route": "linux",
            "documentName": "LinuxDoc", "documentVersion": "1", "parameters": {}, "attempt": 1, "instances": [
                {"instanceId": "i-0123456789abcdef0", "platform": "Ubuntu"},
                {"instanceId": "i-0123456789abcdef1", "platform": "Ubuntu"}]}))
        .unwrap();
        // the pointer as send-command writes it
        let exec = Execution {
            execution_id: "arn:exec".into(),
            execution_start_time: "2026-12-02T10:00:00.000Z".into(),
        };
        let mut p = pointer("wait#w");
        p.extend(
            completion::pointer_fields(&sent, &exec, 3)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
        let get = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_output(move || GetItemOutput::builder().set_item(Some(p.clone())).build());
        let invocations = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(|| {
            let plugin = aws_sdk_ssm::types::CommandPlugin::builder()
                .status(aws_sdk_ssm::types::CommandPluginStatus::Failed)
                .response_code(4)
                .build();
            ListCommandInvocationsOutput::builder()
                .command_invocations(
                    CommandInvocation::builder()
                        .instance_id("i-0123456789abcdef0")
                        .status(CommandInvocationStatus::Success)
                        .build(),
                )
                .command_invocations(
                    CommandInvocation::builder()
                        .instance_id("i-0123456789abcdef1")
                        .status(CommandInvocationStatus::Failed)
                        .status_details("Failed")
                        .command_plugins(plugin)
                        .build(),
                )
                .build()
        });
        // one transaction: the installed instance only, guarded by its command
        let write = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                let items = r.transact_items();
                let u = items[0].update().unwrap();
                items.len() == 1
                    && u.key()[attr::INSTANCE_ID] == s("i-0123456789abcdef0")
                    && u.condition_expression()
                        .is_some_and(|c| c.contains("#outcome <> :outcome"))
                    && u.expression_attribute_values().unwrap()[":outcome"] == s("c-1")
                    && u.expression_attribute_values().unwrap()[":exec"] == s("arn:exec")
            })
            .then_output(|| {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder().build()
            });
        let remove = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.update_expression() == Some("DELETE #o :c"))
            .then_output(|| {
                UpdateItemOutput::builder()
                    .set_attributes(Some(wait_after(&["c-2"])))
                    .build()
            });
        let c = clients(&[&invocations], &[&get, &write, &remove], &[]);
        let out = handle(&c, &config(), event("c-1", "Failed")).await.unwrap();
        assert_eq!(out["outstanding"], 1);
        assert_eq!(write.num_calls(), 1);
        assert_eq!(remove.num_calls(), 1);
    }

    #[tokio::test]
    async fn the_last_command_of_a_wait_resumes_the_execution_once() {
        let get = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_output(|| GetItemOutput::builder().set_item(Some(pointer("wait#w"))).build());
        let invocations = final_invocations();
        let remove = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.update_expression() == Some("DELETE #o :c"))
            .then_output(|| {
                UpdateItemOutput::builder()
                    .set_attributes(Some(wait_after(&[])))
                    .build()
            });
        let mark = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.update_expression() != Some("DELETE #o :c"))
            .then_output(|| UpdateItemOutput::builder().build());
        let success = mock!(aws_sdk_sfn::Client::send_task_success)
            .match_requests(|r| r.task_token() == Some(TOKEN) && r.output().unwrap().contains("\"event\""))
            .then_output(|| SendTaskSuccessOutput::builder().build());
        let c = clients(&[&invocations], &[&get, &remove, &mark], &[&success]);
        let out = handle(&c, &config(), event("c-1", "Success")).await.unwrap();
        assert_eq!(out["resumed"], "wait#w");
        assert_eq!(success.num_calls(), 1);
        assert_eq!(mark.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_command_that_is_not_the_last_does_not_resume() {
        let get = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_output(|| GetItemOutput::builder().set_item(Some(pointer("wait#w"))).build());
        let invocations = final_invocations();
        let remove = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
            UpdateItemOutput::builder()
                .set_attributes(Some(wait_after(&["c-2"])))
                .build()
        });
        let success =
            mock!(aws_sdk_sfn::Client::send_task_success).then_output(|| SendTaskSuccessOutput::builder().build());
        let c = clients(&[&invocations], &[&get, &remove], &[&success]);
        let out = handle(&c, &config(), event("c-1", "Failed")).await.unwrap();
        assert_eq!(out["outstanding"], 1);
        assert_eq!(success.num_calls(), 0);
    }

    #[tokio::test]
    async fn unknown_commands_and_non_final_or_malformed_events_change_nothing() {
        let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
        let update = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| UpdateItemOutput::builder().build());
        let success =
            mock!(aws_sdk_sfn::Client::send_task_success).then_output(|| SendTaskSuccessOutput::builder().build());
        let c = clients(&[], &[&get, &update], &[&success]);
        let out = handle(&c, &config(), event("nobody-sent-this", "Success"))
            .await
            .unwrap();
        assert_eq!(out["dropped"], "unknown command");
        let out = handle(&c, &config(), event("c-1", "InProgress")).await.unwrap();
        assert_eq!(out["dropped"], "not final");
        let mut bad = event("c-1", "Success");
        bad["source"] = json!("aws.ec2");
        let out = handle(&c, &config(), bad).await.unwrap();
        assert_eq!(out["dropped"], "malformed");
        assert_eq!(update.num_calls(), 0);
        assert_eq!(success.num_calls(), 0);
    }

    #[tokio::test]
    async fn a_duplicate_event_finds_the_command_gone_and_drops() {
        let get_pointer = mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|r| r.key().unwrap()[attr::INSTANCE_ID] == s("command#c-1"))
            .then_output(|| GetItemOutput::builder().set_item(Some(pointer("wait#w"))).build());
        let mut resumed = wait_after(&[]);
        resumed.insert(RESUMED_AT.into(), s("2026-12-02T10:00:00Z"));
        let get_wait = mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|r| r.key().unwrap()[attr::INSTANCE_ID] == s("wait#w"))
            .then_output(move || GetItemOutput::builder().set_item(Some(resumed.clone())).build());
        let invocations = final_invocations();
        let remove = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
            UpdateItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build())
        });
        let success =
            mock!(aws_sdk_sfn::Client::send_task_success).then_output(|| SendTaskSuccessOutput::builder().build());
        let c = clients(&[&invocations], &[&get_pointer, &get_wait, &remove], &[&success]);
        let out = handle(&c, &config(), event("c-1", "Success")).await.unwrap();
        assert_eq!(out["dropped"], "duplicate");
        assert_eq!(success.num_calls(), 0);
    }

    #[tokio::test]
    async fn a_redelivered_event_resumes_a_wait_whose_resume_failed() {
        // The last command was removed, but SendTaskSuccess failed (no resumedAt): Lambda's retry of the
        // same event finds the command gone and resumes the wait then.
        let get_pointer = mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|r| r.key().unwrap()[attr::INSTANCE_ID] == s("command#c-1"))
            .then_output(|| GetItemOutput::builder().set_item(Some(pointer("wait#w"))).build());
        let get_wait = mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|r| r.key().unwrap()[attr::INSTANCE_ID] == s("wait#w"))
            .then_output(|| GetItemOutput::builder().set_item(Some(wait_after(&[]))).build());
        let invocations = final_invocations();
        let remove = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.update_expression() == Some("DELETE #o :c"))
            .then_error(|| {
                UpdateItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build())
            });
        let mark = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.update_expression() != Some("DELETE #o :c"))
            .then_output(|| UpdateItemOutput::builder().build());
        let success = mock!(aws_sdk_sfn::Client::send_task_success)
            .match_requests(|r| r.task_token() == Some(TOKEN))
            .then_output(|| SendTaskSuccessOutput::builder().build());
        let c = clients(&[&invocations], &[&get_pointer, &get_wait, &remove, &mark], &[&success]);
        let out = handle(&c, &config(), event("c-1", "Success")).await.unwrap();
        assert_eq!(out["resumed"], "wait#w");
        assert_eq!(success.num_calls(), 1);
        assert_eq!(mark.num_calls(), 1);
    }

    #[tokio::test]
    async fn an_event_ahead_of_its_invocations_fails_so_that_lambda_retries_it() {
        let get = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_output(|| GetItemOutput::builder().set_item(Some(pointer("wait#w"))).build());
        let invocations = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(|| {
            ListCommandInvocationsOutput::builder()
                .command_invocations(
                    CommandInvocation::builder()
                        .instance_id("i-0123456789abcdef0")
                        .status(CommandInvocationStatus::InProgress)
                        .build(),
                )
                .build()
        });
        let update = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| UpdateItemOutput::builder().build());
        let c = clients(&[&invocations], &[&get, &update], &[]);
        let err = handle(&c, &config(), event("c-1", "Success")).await.unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::TRANSIENT);
        assert!(err.to_string().contains("not final"), "{err}");
        assert_eq!(update.num_calls(), 0);
    }

    #[tokio::test]
    async fn a_closed_token_is_logged_and_dropped() {
        for timed_out in [true, false] {
            let closed = move || {
                if timed_out {
                    SendTaskSuccessError::TaskTimedOut(TaskTimedOut::builder().build())
                } else {
                    SendTaskSuccessError::InvalidToken(InvalidToken::builder().build())
                }
            };
            let get = mock!(aws_sdk_dynamodb::Client::get_item)
                .then_output(|| GetItemOutput::builder().set_item(Some(pointer("wait#w"))).build());
            let invocations = final_invocations();
            let update = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
                UpdateItemOutput::builder()
                    .set_attributes(Some(wait_after(&[])))
                    .build()
            });
            let success = mock!(aws_sdk_sfn::Client::send_task_success).then_error(closed);
            let c = clients(&[&invocations], &[&get, &update], &[&success]);
            let out = handle(&c, &config(), event("c-1", "Success")).await.unwrap();
            assert_eq!(out["resumed"], "wait#w");
            assert_eq!(success.num_calls(), 1);
        }
    }

    #[tokio::test]
    async fn registration_records_the_wait_and_resumes_when_the_commands_ended_first() {
        let pointers = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .match_requests(|r| {
                let items = &r.request_items().unwrap()["ledger"];
                let wait = items[0].put_request().unwrap().item();
                items.len() == 3
                    && wait[OUTSTANDING] == AttributeValue::Ss(vec!["c-1".into(), "c-2".into()])
                    && wait[TASK_TOKEN] == s(TOKEN)
                    && !wait.contains_key(attr::STATE)
                    && items[1..]
                        .iter()
                        .all(|p| p.put_request().unwrap().item()[WAIT_KEY] == s(completion::wait_key(TOKEN)))
            })
            .then_output(|| aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput::builder().build());
        let status = mock!(aws_sdk_ssm::Client::list_commands).then_output(|| {
            ListCommandsOutput::builder()
                .commands(Command::builder().status(CommandStatus::Success).build())
                .build()
        });
        let first = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.expression_attribute_values().unwrap().get(":id") == Some(&s("c-1")))
            .then_output(|| {
                UpdateItemOutput::builder()
                    .set_attributes(Some(wait_after(&["c-2"])))
                    .build()
            });
        let last = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.expression_attribute_values().unwrap().get(":id") == Some(&s("c-2")))
            .then_output(|| {
                UpdateItemOutput::builder()
                    .set_attributes(Some(wait_after(&[])))
                    .build()
            });
        let mark = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.update_expression().unwrap().starts_with("SET"))
            .then_output(|| UpdateItemOutput::builder().build());
        let success = mock!(aws_sdk_sfn::Client::send_task_success)
            .match_requests(|r| r.output().unwrap().contains("registration"))
            .then_output(|| SendTaskSuccessOutput::builder().build());
        let c = clients(&[&status], &[&pointers, &first, &last, &mark], &[&success]);
        let out = handle(
            &c,
            &config(),
            json!({"taskToken": TOKEN, "executionId": "arn:exec", "commands": [
                {"commandId": "c-1", "batchKey": "k1"}, {"commandId": "c-2"}, {"commandId": "c-1"}]}),
        )
        .await
        .unwrap();
        assert_eq!(out["commands"], 2);
        assert_eq!(out["ended"], 2);
        assert_eq!(pointers.num_calls(), 1);
        assert_eq!(success.num_calls(), 1);
    }

    #[tokio::test]
    async fn registration_of_running_commands_only_waits() {
        let pointers = mock!(aws_sdk_dynamodb::Client::batch_write_item)
            .then_output(|| aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput::builder().build());
        let status = mock!(aws_sdk_ssm::Client::list_commands).then_output(|| {
            ListCommandsOutput::builder()
                .commands(Command::builder().status(CommandStatus::InProgress).build())
                .build()
        });
        let success =
            mock!(aws_sdk_sfn::Client::send_task_success).then_output(|| SendTaskSuccessOutput::builder().build());
        let c = clients(&[&status], &[&pointers], &[&success]);
        let out = handle(
            &c,
            &config(),
            json!({"taskToken": TOKEN, "executionId": "arn:exec", "commands": [{"commandId": "c-1"}]}),
        )
        .await
        .unwrap();
        assert_eq!(out["ended"], 0);
        assert_eq!(success.num_calls(), 0);
        let err = handle(&c, &config(), json!({"taskToken": "", "executionId": "x"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
    }
}
