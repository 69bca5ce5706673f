use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use fleet_core::compliance::{assess, RunningInstance, SweepReport, Tally, COMPLIANT};
use fleet_core::ledger::{self, n, s, Chunk, Guard, LedgerWrite};
use fleet_core::model::{Execution, LedgerState, ReasonCode, Summary};
use fleet_core::record::{attr, LedgerRecord};
use fleet_core::sweep::{backoff, decide, Settings, Work};
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub struct Config {
    pub table: String,
    pub opt_out_tag: String,
    pub max_per_execution: usize,
    /// DescribeInstances (or ledger Scan) pages one invocation reads at most.
    pub max_pages: usize,
    pub settings: Settings,
    /// How long a sweep holds its lock at most (longer than the sweep workflow's timeout).
    pub lease: Duration,
    /// The EMF dimension `Stack`.
    pub stack_name: String,
}

impl Config {
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Self, FleetError> {
        use fleet_core::config::{number, optional, required};
        let hours: i64 = number(get, "DRIFT_CHECK_INTERVAL_HOURS", 24)?;
        let base: i64 = number(get, "SWEEP_RETRY_BASE_SECONDS", 12 * 3600)?;
        let max: i64 = number(get, "SWEEP_RETRY_MAX_SECONDS", 7 * 24 * 3600)?;
        if hours < 0 || base <= 0 || max < base {
            return Err(FleetError::Configuration(format!(
                "DRIFT_CHECK_INTERVAL_HOURS={hours} must be >= 0, SWEEP_RETRY_BASE_SECONDS={base} > 0 and \
                 SWEEP_RETRY_MAX_SECONDS={max} >= the base"
            )));
        }
        let max_pages: usize = number(get, "MAX_LIST_PAGES", 10)?;
        if max_pages == 0 {
            return Err(FleetError::Configuration("MAX_LIST_PAGES must be at least 1".into()));
        }
        Ok(Config {
            table: required(get, "LEDGER_TABLE")?,
            opt_out_tag: optional(get, "OPT_OUT_TAG_KEY", "fleet-install:opt-out"),
            max_per_execution: number(get, "MAX_INSTANCES_PER_EXECUTION", 1000)?,
            max_pages,
            settings: Settings {
                verify_interval: Duration::hours(hours),
                verify_all: false,
                retry_base: Duration::seconds(base),
                retry_max: Duration::seconds(max),
                stale_installing: Duration::seconds(number(get, "STALE_INSTALLING_SECONDS", 24 * 3600)?),
            },
            lease: Duration::seconds(number(get, "SWEEP_LEASE_SECONDS", 24 * 3600)?),
            stack_name: optional(get, "STACK_NAME", "fleet-install"),
        })
    }
}

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub db: aws_sdk_dynamodb::Client,
    pub sfn: aws_sdk_sfn::Client,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Action {
    action: String,
}

/// Every action carries the sweep's identity: `$$.Execution.Name`, `.Id` and `.StartTime`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Common {
    sweep_id: String,
    #[serde(flatten)]
    execution: Execution,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BeginRequest {
    #[serde(default)]
    input: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    chunk_count: usize,
    #[serde(default)]
    tally: Tally,
    #[serde(default)]
    work: BTreeMap<String, u64>,
    #[serde(default)]
    verify_all: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoneRequest {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    checked: u64,
    #[serde(default)]
    gone: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FinishRequest {
    #[serde(default)]
    tally: Tally,
    #[serde(default)]
    work: BTreeMap<String, u64>,
    #[serde(default)]
    chunk_count: usize,
    #[serde(default)]
    gone: u64,
    /// One per install execution: its output summary's `byState`, `byReason` and `driftUnrepaired`,
    /// or `{"failed": true}` when the execution failed.
    #[serde(default)]
    results: Vec<Value>,
}

/// What `begin` answers.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Begun {
    pub acquired: bool,
    /// The execution that holds the lock (this one when acquired).
    pub holder: String,
    pub verify_all: bool,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    /// The DescribeInstances cursor; null when the fleet is listed.
    pub next_token: Option<String>,
    pub chunk_count: usize,
    pub tally: Tally,
    pub work: BTreeMap<String, u64>,
    /// DescribeInstances pages this invocation read (at most MAX_LIST_PAGES).
    pub pages: usize,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// The ledger Scan cursor (an instance id); null when the whole ledger was checked.
    pub cursor: Option<String>,
    pub checked: u64,
    pub gone: u64,
    pub pages: usize,
}

pub async fn handle(
    clients: &Clients,
    config: &Config,
    now: DateTime<Utc>,
    payload: Value,
) -> Result<Value, FleetError> {
    let action: Action = body(&payload)?;
    let common: Common = body(&payload)?;
    let out = match action.action.as_str() {
        "begin" => serde_json::to_value(begin(clients, config, now, &common, body(&payload)?).await?),
        "list" => serde_json::to_value(list(clients, config, now, &common, body(&payload)?).await?),
        "gone" => serde_json::to_value(gone(clients, config, now, &common, body(&payload)?).await?),
        "finish" => {
            let report = finish(body(&payload)?);
            for doc in fleet_core::compliance::emf_documents(
                &report.found_after(),
                &config.stack_name,
                now,
                report.drift_repaired,
                report.sent,
            ) {
                // One line each on stdout: CloudWatch Logs extracts the metrics.
                println!("{doc}");
            }
            release(&clients.db, config, &common).await?;
            tracing::info!(
                running = report.running,
                ratio_before = report.ratio_before,
                ratio_after = report.ratio_after,
                sent = report.sent,
                "sweep finished"
            );
            serde_json::to_value(report)
        }
        "release" => {
            release(&clients.db, config, &common).await?;
            Ok(serde_json::json!({"released": true}))
        }
        other => {
            return Err(FleetError::invalid_input(format!(
                "sweep: unknown action {:?} (begin, list, gone, finish or release)",
                fleet_core::text::clip(other, 40)
            )))
        }
    };
    out.map_err(|e| FleetError::invalid_input(format!("sweep: cannot serialise the answer: {e}")))
}

/// An action's request, read from the payload.
fn body<T: serde::de::DeserializeOwned>(payload: &Value) -> Result<T, FleetError> {
    serde_json::from_value(payload.clone()).map_err(|e| FleetError::invalid_input(format!("sweep: {e}")))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Take the sweep lock: free, expired, already ours, or held by an execution that no longer runs
/// (stopped by an operator, timed out) are taken; a running holder keeps it.
async fn begin(
    clients: &Clients,
    config: &Config,
    now: DateTime<Utc>,
    c: &Common,
    req: BeginRequest,
) -> Result<Begun, FleetError> {
    let verify_all = req.input.get("verifyAll").and_then(Value::as_bool).unwrap_or(false);
    let me = &c.execution.execution_id;
    let mut takeover: Option<String> = None;
    for _ in 0..2 {
        let mut update = clients
            .db
            .update_item()
            .table_name(&config.table)
            .key(attr::INSTANCE_ID, s(ledger::SWEEP_LOCK_KEY))
            .update_expression("SET #holder = :me, #until = :until, #started = :started, #ttl = :ttl")
            .expression_attribute_names("#pk", attr::INSTANCE_ID)
            .expression_attribute_names("#holder", attr::HOLDER)
            .expression_attribute_names("#until", attr::LEASE_UNTIL)
            .expression_attribute_names("#started", attr::STARTED_AT)
            .expression_attribute_names("#ttl", attr::EXPIRES_AT)
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":until", s(rfc3339(now + config.lease)))
            .expression_attribute_values(":started", s(&c.execution.execution_start_time))
            .expression_attribute_values(":ttl", n(ledger::expires_at(now)))
            .expression_attribute_values(":now", s(rfc3339(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        update = match &takeover {
            Some(old) => update
                .condition_expression("#holder = :old")
                .expression_attribute_values(":old", s(old)),
            None => update.condition_expression("attribute_not_exists(#pk) OR #holder = :me OR #until < :now"),
        };
        match update.send().await {
            Ok(_) => {
                return Ok(Begun {
                    acquired: true,
                    holder: me.clone(),
                    verify_all,
                })
            }
            Err(err) => {
                use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
                let Some(UpdateItemError::ConditionalCheckFailedException(e)) = err.as_service_error() else {
                    return Err(FleetError::from_sdk("dynamodb", "UpdateItem", &err));
                };
                let holder = e
                    .item()
                    .and_then(|i| i.get(attr::HOLDER))
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                if takeover.is_some() || holder.is_empty() || holder_runs(&clients.sfn, &holder).await? {
                    tracing::info!(holder, "another sweep holds the lock: this one does nothing");
                    return Ok(Begun {
                        acquired: false,
                        holder,
                        verify_all,
                    });
                }
                tracing::warn!(holder, "the sweep lock's holder no longer runs: taking the lock over");
                takeover = Some(holder);
            }
        }
    }
    unreachable!("the loop returns on its second pass")
}

async fn holder_runs(sfn: &aws_sdk_sfn::Client, arn: &str) -> Result<bool, FleetError> {
    use aws_sdk_sfn::operation::describe_execution::DescribeExecutionError;
    match sfn.describe_execution().execution_arn(arn).send().await {
        Ok(d) => Ok(d.status() == &aws_sdk_sfn::types::ExecutionStatus::Running),
        Err(err) => match err.as_service_error() {
            Some(DescribeExecutionError::ExecutionDoesNotExist(_)) => Ok(false),
            _ => Err(FleetError::from_sdk("states", "DescribeExecution", &err)),
        },
    }
}

/// Delete the lock if this sweep holds it.
async fn release(db: &aws_sdk_dynamodb::Client, config: &Config, c: &Common) -> Result<(), FleetError> {
    use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
    match db
        .delete_item()
        .table_name(&config.table)
        .key(attr::INSTANCE_ID, s(ledger::SWEEP_LOCK_KEY))
        .condition_expression("#holder = :me")
        .expression_attribute_names("#holder", attr::HOLDER)
        .expression_attribute_values(":me", s(&c.execution.execution_id))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(err)
            if matches!(
                err.as_service_error(),
                Some(DeleteItemError::ConditionalCheckFailedException(_))
            ) =>
        {
            tracing::warn!("the sweep lock was not this sweep's any more: left alone");
            Ok(())
        }
        Err(err) => Err(FleetError::from_sdk("dynamodb", "DeleteItem", &err)),
    }
}

/// List up to `max_pages` pages of running instances, compare them with the ledger, and store
/// what needs work as chunks.
async fn list(
    clients: &Clients,
    config: &Config,
    now: DateTime<Utc>,
    c: &Common,
    req: ListRequest,
) -> Result<Listed, FleetError> {
    let settings = Settings {
        verify_all: req.verify_all,
        ..config.settings.clone()
    };
    let mut token = req.next_token.filter(|t| !t.is_empty());
    let mut tally = req.tally;
    let mut work_counts = req.work;
    let mut todo: Vec<(String, Work)> = Vec::new();
    let mut retry_writes = Vec::new();
    let mut pages = 0;
    while pages < config.max_pages {
        // every running instance: no tag filter
        let page =
            fleet_core::adapters::describe_running_page(&clients.ec2, &[], &config.opt_out_tag, token.take()).await?;
        pages += 1;
        let mut running = Vec::new();
        for t in page.instances {
            let f = t.facts;
            if !fleet_core::model::is_valid_instance_id(&f.instance_id) {
                tracing::warn!(
                    instance_id = fleet_core::text::clip(&f.instance_id, 64),
                    "EC2 returned a malformed instance id: not swept"
                );
                continue;
            }
            running.push(RunningInstance {
                instance_id: f.instance_id,
                launch_time: f.launch_time,
                opted_out: f.opted_out,
                platform: f.platform_details,
            });
        }
        let ids: Vec<String> = running.iter().map(|r| r.instance_id.clone()).collect();
        let records = ledger::get_records(&clients.db, &config.table, &ids).await?;
        for inst in &running {
            let record = records.get(&inst.instance_id);
            tally.add(&inst.instance_id, &assess(inst, record));
            let Some(work) = decide(inst, record, now, &settings) else {
                continue;
            };
            if work == Work::Retry {
                retry_writes.push(retry_write(&inst.instance_id, record, now, &settings));
            }
            todo.push((inst.instance_id.clone(), work));
        }
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    // Failed instances are taken only while their retry time has come: their next one is set now.
    if !retry_writes.is_empty() {
        let result = ledger::write_all(&clients.db, &config.table, &c.execution, retry_writes).await?;
        let refused: std::collections::HashSet<&str> = result.refused.iter().map(|(k, _)| k.as_str()).collect();
        todo.retain(|(id, w)| *w != Work::Retry || !refused.contains(id.as_str()));
    }
    for (_, w) in &todo {
        *work_counts.entry(w.as_str().to_string()).or_default() += 1;
    }
    let chunks: Vec<(String, Chunk)> = todo
        .chunks(config.max_per_execution.max(1))
        .enumerate()
        .map(|(i, part)| {
            (
                ledger::sweep_chunk_key(&c.sweep_id, req.chunk_count + i),
                Chunk {
                    instance_ids: part.iter().map(|(id, _)| id.clone()).collect(),
                    verify_ids: part
                        .iter()
                        .filter(|(_, w)| *w == Work::Verify)
                        .map(|(id, _)| id.clone())
                        .collect(),
                },
            )
        })
        .collect();
    ledger::put_sweep_chunks(&clients.db, &config.table, &c.sweep_id, &chunks).await?;
    tracing::info!(
        pages,
        work = todo.len(),
        chunks = chunks.len(),
        listed = tally.running,
        "listed running instances"
    );
    Ok(Listed {
        next_token: token,
        chunk_count: req.chunk_count + chunks.len(),
        tally,
        work: work_counts,
        pages,
    })
}

/// The write that takes a failed instance for this sweep's retry: its next retry time, backed off.
fn retry_write(id: &str, record: Option<&LedgerRecord>, now: DateTime<Utc>, settings: &Settings) -> LedgerWrite {
    let attempt = record.and_then(|r| r.sweep_attempts).unwrap_or(0) + 1;
    let next = now + backoff(attempt, settings.retry_base, settings.retry_max);
    LedgerWrite {
        key: id.to_string(),
        fields: vec![(attr::RETRY_AFTER, s(rfc3339(next))), (attr::ADD_SWEEP_ATTEMPTS, n(1))],
        guard: Guard::SweepRetry { now: rfc3339(now) },
    }
}

/// Check a bounded part of the ledger for instances that no longer exist: they are marked gone
/// and expire.
async fn gone(
    clients: &Clients,
    config: &Config,
    now: DateTime<Utc>,
    c: &Common,
    req: GoneRequest,
) -> Result<Checked, FleetError> {
    let mut cursor = req.cursor.filter(|k| !k.is_empty());
    let mut checked = req.checked;
    let mut gone = req.gone;
    let mut pages = 0;
    let mut ids: Vec<String> = Vec::new();
    while pages < config.max_pages {
        let resp = clients
            .db
            .scan()
            .table_name(&config.table)
            .limit(1000)
            .projection_expression("#pk")
            .filter_expression("attribute_exists(#state) AND #state <> :gone")
            .expression_attribute_names("#pk", attr::INSTANCE_ID)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_values(":gone", s(LedgerState::Gone.as_str()))
            .set_exclusive_start_key(
                cursor
                    .take()
                    .map(|k| HashMap::from([(attr::INSTANCE_ID.to_string(), s(k))])),
            )
            .send()
            .await
            .map_err(|e| FleetError::from_sdk("dynamodb", "Scan", &e))?;
        pages += 1;
        ids.extend(
            resp.items()
                .iter()
                .filter_map(|i| i.get(attr::INSTANCE_ID).and_then(|v| v.as_s().ok()))
                .filter(|id| fleet_core::model::is_valid_instance_id(id))
                .cloned(),
        );
        cursor = resp
            .last_evaluated_key()
            .and_then(|k| k.get(attr::INSTANCE_ID))
            .and_then(|v| v.as_s().ok())
            .cloned();
        if cursor.is_none() {
            break;
        }
    }
    checked += ids.len() as u64;
    let facts = if ids.is_empty() {
        HashMap::new()
    } else {
        fleet_core::adapters::describe_ec2(&clients.ec2, &ids, &config.opt_out_tag).await?
    };
    let stamp = rfc3339(now);
    let writes: Vec<LedgerWrite> = ids
        .iter()
        .filter_map(|id| {
            let reason = match facts.get(id) {
                None => "EC2 no longer knows the instance: it was terminated",
                Some(f) if f.state == "terminated" => "the instance was terminated",
                Some(_) => return None,
            };
            Some(LedgerWrite {
                key: id.clone(),
                fields: vec![
                    (attr::STATE, s(LedgerState::Gone.as_str())),
                    (attr::REASON_CODE, s(ReasonCode::Gone.as_str())),
                    (
                        attr::REASON,
                        s(format!("{reason} (found by the sweep at {stamp}); the item expires")),
                    ),
                    (attr::UPDATED_AT, s(&stamp)),
                    (attr::EXPIRES_AT, n(ledger::expires_at(now))),
                ],
                guard: Guard::Gone,
            })
        })
        .collect();
    if !writes.is_empty() {
        gone += ledger::write_all(&clients.db, &config.table, &c.execution, writes)
            .await?
            .written
            .len() as u64;
    }
    Ok(Checked {
        cursor,
        checked,
        gone,
        pages,
    })
}

fn count(map: &Value, key: &str) -> u64 {
    map.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn finish(req: FinishRequest) -> SweepReport {
    let mut installed = 0;
    let mut verified = 0;
    let mut drift_repaired = 0;
    let mut drift_unrepaired = 0;
    let mut failed = 0;
    let mut failed_executions = 0;
    for r in &req.results {
        if r.get("failed").and_then(Value::as_bool) == Some(true) {
            failed_executions += 1;
            continue;
        }
        // the counts the Map keeps of the child's summary (byState, byReason, driftUnrepaired)
        let summary: Summary = serde_json::from_value(r.get("summary").unwrap_or(r).clone()).unwrap_or_default();
        let by_state = serde_json::to_value(&summary.by_state).unwrap_or_default();
        let by_reason = serde_json::to_value(&summary.by_reason).unwrap_or_default();
        installed += count(&by_state, LedgerState::Installed.as_str());
        failed += count(&by_state, LedgerState::Failed.as_str());
        verified += count(&by_reason, ReasonCode::Verified.as_str());
        drift_repaired += count(&by_reason, ReasonCode::DriftRepaired.as_str());
        drift_unrepaired += summary.drift_unrepaired;
    }
    let found = req.tally;
    // Installed now and not compliant before: everything installed but the verifications.
    let fixed = installed.saturating_sub(verified + drift_repaired);
    let compliant_after = (found.count(COMPLIANT) + fixed).saturating_sub(drift_unrepaired);
    let after = Tally {
        by_bucket: {
            let mut b = found.by_bucket.clone();
            b.insert(COMPLIANT.into(), compliant_after);
            b
        },
        ..found.clone()
    };
    SweepReport {
        running: found.running,
        ratio_before: found.ratio(),
        ratio_after: after.ratio(),
        compliant_after,
        sent: req.work.values().sum(),
        work: req.work,
        installed,
        verified,
        drift_repaired,
        drift_unrepaired,
        failed,
        install_executions: req.chunk_count as u64,
        failed_executions,
        gone: req.gone,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(compliant: u64, not: u64) -> Tally {
        let mut t = Tally {
            running: compliant + not,
            ..Default::default()
        };
        t.by_bucket.insert(COMPLIANT.into(), compliant);
        t.by_bucket.insert(fleet_core::compliance::NOT_COMPLIANT.into(), not);
        t
    }

    #[test]
    fn finish_counts_fixed_verified_and_drift() {
        let report = finish(FinishRequest {
            tally: tally(90, 10),
            work: BTreeMap::from([("neverSeen".into(), 6), ("verify".into(), 90), ("retry".into(), 4)]),
            chunk_count: 2,
            gone: 1,
            results: vec![
                serde_json::json!({"byState": {"installed": 93, "failed": 5}, "byReason": {"Verified": 85, "DriftRepaired": 3, "InstallFailed": 5}, "driftUnrepaired": 2}),
                serde_json::json!({"failed": true}),
            ],
        });
        assert_eq!(report.sent, 100);
        assert_eq!(report.installed, 93);
        assert_eq!(report.verified, 85);
        assert_eq!(report.drift_repaired, 3);
        // 93 installed - 85 verified - 3 repaired = 5 fixed; 2 verifications failed
        assert_eq!(report.compliant_after, 90 + 5 - 2);
        assert!((report.ratio_before - 0.9).abs() < 1e-9);
        assert!((report.ratio_after - 0.93).abs() < 1e-9);
        assert_eq!(report.failed_executions, 1);
        let after = report.found_after();
        assert_eq!(after.count(COMPLIANT), 93);
        assert_eq!(after.count(fleet_core::compliance::NOT_COMPLIANT), 7);
    }

    #[test]
    fn retry_writes_back_off_from_the_recorded_attempts() {
        let now = fleet_core::record::parse_time("2026-12-01T00:00:00Z").unwrap();
        let settings = Settings {
            verify_interval: Duration::hours(24),
            verify_all: false,
            retry_base: Duration::hours(12),
            retry_max: Duration::days(7),
            stale_installing: Duration::hours(24),
        };
        let record = LedgerRecord {
            instance_id: "i-0123456789abcdef0".into(),
            sweep_attempts: Some(2),
            ..Default::default()
        };
        let w = retry_write("i-0123456789abcdef0", Some(&record), now, &settings);
        // third sweep retry: 48 h
        assert_eq!(w.fields[0].1, s("2026-12-03T00:00:00.000Z"));
        assert_eq!(
            w.guard,
            Guard::SweepRetry {
                now: "2026-12-01T00:00:00.000Z".into()
            }
        );
        let first = retry_write("i-0123456789abcdef0", None, now, &settings);
        assert_eq!(first.fields[0].1, s("2026-12-01T12:00:00.000Z"));
    }

    #[test]
    fn config_refuses_nonsense() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert!(Config::from_env(&env(&[("LEDGER_TABLE", "t")])).is_ok());
        assert!(Config::from_env(&env(&[("LEDGER_TABLE", "t"), ("MAX_LIST_PAGES", "0")])).is_err());
        assert!(Config::from_env(&env(&[("LEDGER_TABLE", "t"), ("SWEEP_RETRY_BASE_SECONDS", "0")])).is_err());
        assert!(Config::from_env(&env(&[("LEDGER_TABLE", "t"), ("DRIFT_CHECK_INTERVAL_HOURS", "-1")])).is_err());
        assert!(Config::from_env(&env(&[])).is_err());
    }
}
