//! group-by-platform: route managed instances to their document, in batches of at most 50.
//! Pure logic: no AWS calls.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let table = fleet_core::config::route_table(&fleet_core::config::env)?;
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(&table, event.payload)
    }))
    .await
}
