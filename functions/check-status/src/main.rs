//! check-status: read the commands' invocations, write final outcomes to the ledger, and tell
//! the workflow what is still running and what to re-send.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let table = fleet_core::config::required(&fleet_core::config::env, "LEDGER_TABLE")?;
    let aws = fleet_core::aws_config().await;
    let ssm = aws_sdk_ssm::Client::new(&aws);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(&ssm, &dynamodb, &table, event.payload)
    }))
    .await
}
