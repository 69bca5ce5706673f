use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use fleet_core::trigger::{parse_message, plan_executions, Message};
use fleet_core::FleetError;
use serde_json::Value;

pub struct Config {
    pub state_machine_arn: String,
    pub max_per_execution: usize,
}

impl Config {
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Self, FleetError> {
        use fleet_core::config::{number, required};
        let max: usize = number(get, "MAX_INSTANCES_PER_EXECUTION", 1000)?;
        if max == 0 {
            return Err(FleetError::Configuration(
                "MAX_INSTANCES_PER_EXECUTION must be at least 1".into(),
            ));
        }
        Ok(Config {
            state_machine_arn: required(get, "STATE_MACHINE_ARN")?,
            max_per_execution: max,
        })
    }
}

fn failure(id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id.to_string();
    f
}

pub async fn handle(
    sfn: &aws_sdk_sfn::Client,
    config: &Config,
    payload: Value,
) -> Result<SqsBatchResponse, FleetError> {
    let event: SqsEvent =
        serde_json::from_value(payload).map_err(|e| FleetError::invalid_input(format!("not an SQS event: {e}")))?;
    let mut response = SqsBatchResponse::default();
    let mut running = Vec::new();
    for record in &event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        match parse_message(record.body.as_deref().unwrap_or("")) {
            Message::Malformed { reason } => {
                // Left on the queue: after maxReceiveCount SQS moves it to the dead-letter queue.
                tracing::error!(
                    message_id,
                    reason,
                    "malformed message: reported as failed so that it reaches the DLQ"
                );
                if !message_id.is_empty() {
                    response.batch_item_failures.push(failure(&message_id));
                }
            }
            Message::Ignored { reason } => {
                tracing::warn!(message_id, reason, "message dropped");
            }
            m @ Message::Running { .. } => running.push((message_id, m)),
        }
    }
    let plans = plan_executions(&running, config.max_per_execution, "launch");
    let mut started = 0;
    for plan in plans {
        let input = serde_json::json!({"instanceIds": plan.instance_ids, "source": "ec2-running"}).to_string();
        let result = sfn
            .start_execution()
            .state_machine_arn(&config.state_machine_arn)
            .name(&plan.name)
            .input(input)
            .send()
            .await;
        match result {
            Ok(out) => {
                started += 1;
                tracing::info!(
                    execution = out.execution_arn(),
                    instances = plan.instance_ids.len(),
                    "started install workflow"
                );
            }
            Err(e) => {
                use aws_sdk_sfn::operation::start_execution::StartExecutionError as E;
                if let Some(E::ExecutionAlreadyExists(_)) = e.as_service_error() {
                    // Same name, different input cannot happen (the name hashes the input);
                    // this is a redelivery of work already started.
                    tracing::info!(name = plan.name, "execution already exists: redelivered batch");
                    continue;
                }
                let err = FleetError::from_sdk("states", "StartExecution", &e);
                tracing::error!(name = plan.name, error = %err, "could not start execution; its messages are returned to the queue");
                for m in &plan.message_ids {
                    response.batch_item_failures.push(failure(m));
                }
            }
        }
    }
    tracing::info!(
        records = event.records.len(),
        running = running.len(),
        started,
        failed = response.batch_item_failures.len(),
        "batch handled"
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sfn::operation::start_execution::{StartExecutionError, StartExecutionOutput};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn config() -> Config {
        Config {
            state_machine_arn: "arn:aws:states:us-east-1:1:stateMachine:install".into(),
            max_per_execution: 2,
        }
    }

    fn running(instance: &str, event_id: &str) -> String {
        serde_json::json!({"id": event_id, "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
            "time": "2026-11-25T18:01:02Z", "detail": {"instance-id": instance, "state": "running"}})
        .to_string()
    }

    fn sqs(bodies: &[(&str, String)]) -> Value {
        serde_json::json!({"Records": bodies.iter().map(|(id, body)| serde_json::json!({
            "messageId": id, "receiptHandle": "rh", "body": body, "attributes": {}, "messageAttributes": {},
            "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"
        })).collect::<Vec<_>>()})
    }

    fn ok() -> StartExecutionOutput {
        StartExecutionOutput::builder()
            .execution_arn("arn:aws:states:us-east-1:1:execution:install:x")
            .start_date(aws_sdk_sfn::primitives::DateTime::from_secs(0))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn dedupes_chunks_names_and_reports_only_bad_messages() {
        let start = mock!(aws_sdk_sfn::Client::start_execution)
            .match_requests(|r| r.name().is_some_and(|n| n.starts_with("launch-20261125T1801-")))
            .then_output(ok);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&start]);
        let event = sqs(&[
            ("m1", running("i-0000000000000000a", "e1")),
            ("m2", running("i-0000000000000000b", "e2")),
            ("m3", running("i-0000000000000000a", "e3")),
            ("m4", running("i-0000000000000000c", "e4")),
            ("m5", "garbage".to_string()),
            (
                "m6",
                serde_json::json!({"source": "aws.s3", "detail-type": "x", "detail": {}}).to_string(),
            ),
        ]);
        let r = handle(&sfn, &config(), event).await.unwrap();
        assert_eq!(start.num_calls(), 2); // 3 distinct instances, 2 per execution
        let failed: Vec<_> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        assert_eq!(failed, vec!["m5"]);
    }

    #[tokio::test]
    async fn redelivery_is_not_an_error_and_throttling_returns_the_messages() {
        let start = mock!(aws_sdk_sfn::Client::start_execution)
            .sequence()
            .error(|| {
                StartExecutionError::ExecutionAlreadyExists(
                    aws_sdk_sfn::types::error::ExecutionAlreadyExists::builder().build(),
                )
            })
            .error(|| {
                StartExecutionError::generic(
                    aws_sdk_sfn::error::ErrorMetadata::builder()
                        .code("ThrottlingException")
                        .build(),
                )
            })
            .build();
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&start]);
        let event = sqs(&[
            ("m1", running("i-0000000000000000a", "e1")),
            ("m2", running("i-0000000000000000b", "e2")),
            ("m3", running("i-0000000000000000c", "e3")),
        ]);
        let r = handle(&sfn, &config(), event).await.unwrap();
        let failed: Vec<_> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        assert_eq!(failed, vec!["m3"]);
    }

    #[tokio::test]
    async fn a_json_array_shaped_like_an_event_is_not_started_and_reaches_the_dlq() {
        let start = mock!(aws_sdk_sfn::Client::start_execution).then_output(ok);
        let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&start]);
        let array = serde_json::json!([
            "e1",
            "aws.ec2",
            "EC2 Instance State-change Notification",
            "2026-11-25T18:01:02Z",
            {"instance-id": "i-0000000000000000a", "state": "running"}
        ])
        .to_string();
        let bad_id = serde_json::json!({"id": "e2", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
            "time": "2026-11-25T18:01:02Z", "detail": {"instance-id": "i-0000000000000000A; rm", "state": "running"}})
        .to_string();
        let stopped = serde_json::json!({"id": "e3", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
            "time": "2026-11-25T18:01:02Z", "detail": {"instance-id": "i-0000000000000000b", "state": "stopped"}})
        .to_string();
        let event = sqs(&[("m1", array), ("m2", bad_id), ("m3", stopped)]);
        let r = handle(&sfn, &config(), event).await.unwrap();
        assert_eq!(start.num_calls(), 0, "nothing here is a running event");
        let failed: Vec<_> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        // the array and the malformed id go to the DLQ; the stopped event is dropped
        assert_eq!(failed, vec!["m1", "m2"]);
    }

    #[tokio::test]
    async fn empty_and_malformed_events() {
        let sfn = mock_client!(aws_sdk_sfn, []);
        let r = handle(&sfn, &config(), serde_json::json!({"Records": []}))
            .await
            .unwrap();
        assert!(r.batch_item_failures.is_empty());
        let err = handle(&sfn, &config(), serde_json::json!({"Records": "nope"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        assert!(Config::from_env(&|_: &str| None).is_err());
    }
}
