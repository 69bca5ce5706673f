//! send-command: one SendCommand per batch, exactly once per batch even when retried or redriven.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = handler::Config::from_env(&fleet_core::config::env)?;
    let aws = fleet_core::aws_config().await;
    let ssm = aws_sdk_ssm::Client::new(&aws);
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(&ssm, &ec2, &dynamodb, &config, event.payload)
    }))
    .await
}
