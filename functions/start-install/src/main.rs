//! start-install: the SQS trigger. Turns a batch of EC2 "running" events into install workflow
//! executions with deterministic names, and reports partial batch failures.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = handler::Config::from_env(&fleet_core::config::env)?;
    let aws = fleet_core::aws_config().await;
    let sfn = aws_sdk_sfn::Client::new(&aws);
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(&sfn, &config, event.payload)
    }))
    .await
}
