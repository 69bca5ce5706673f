//! record-unmanaged: write unmanaged and skipped instances to the ledger with their reasons,
//! and record a workflow failure for every instance the failed run still held.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let table = fleet_core::config::required(&fleet_core::config::env, "LEDGER_TABLE")?;
    let aws = fleet_core::aws_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(&dynamodb, &table, event.payload)
    }))
    .await
}
