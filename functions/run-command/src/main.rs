//! run-command: the Lambda behind the run workflow (statemachine/run.asl.json), which sends any
//! allowed SSM command document to a chunk of a run's targets, checks its invocations and keeps
//! each instance's result in the run results table (never the install ledger). No call waits for a
//! command: the workflow does the waiting.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = handler::Config::from_env(&fleet_core::config::env)?;
    let aws = fleet_core::aws_config().await;
    let clients = handler::Clients {
        ec2: aws_sdk_ec2::Client::new(&aws),
        ssm: aws_sdk_ssm::Client::new(&aws),
        db: aws_sdk_dynamodb::Client::new(&aws),
    };
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(&clients, &config, chrono::Utc::now(), event.payload)
    }))
    .await
}
