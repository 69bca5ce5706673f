//! plan-rollout: list a rollout's targets by tag, a bounded number of pages per invocation (mode
//! `list`), then split them into a canary wave that covers every platform family and waves (mode
//! `plan`). The instance ids are kept in the ledger (listed pages, then one item per chunk), never
//! in the workflow's payload.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = handler::Config::from_env(&fleet_core::config::env)?;
    let aws = fleet_core::aws_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(&ec2, &dynamodb, &config, event.payload)
    }))
    .await
}
