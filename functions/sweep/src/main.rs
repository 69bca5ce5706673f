//! sweep: the scheduled check that makes the ledger true. It lists every running instance (a
//! bounded number of pages per invocation, the cursor carried by the workflow), compares them
//! with the ledger, hands what needs work to install executions through ledger chunks, marks
//! gone instances, and publishes compliance as CloudWatch metrics (Embedded Metric Format).

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
        db: aws_sdk_dynamodb::Client::new(&aws),
        sfn: aws_sdk_sfn::Client::new(&aws),
    };
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(&clients, &config, chrono::Utc::now(), event.payload)
    }))
    .await
}
