//! await-commands: resumes the install workflow when its commands end.
//!
//! Two callers: the workflow's "Wait For Commands" task (`.waitForTaskToken`), which registers the
//! execution's task token for its commands, and an EventBridge rule on SSM's command status-change
//! events, which resumes the execution once the last of them is final. See fleet_core::completion.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = handler::Config::from_env(&fleet_core::config::env)?;
    let aws = fleet_core::aws_config().await;
    let clients = handler::Clients {
        ssm: aws_sdk_ssm::Client::new(&aws),
        db: aws_sdk_dynamodb::Client::new(&aws),
        sfn: aws_sdk_sfn::Client::new(&aws),
    };
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(&clients, &config, event.payload)
    }))
    .await
}
