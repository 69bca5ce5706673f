//! evaluate-wave: a wave's outcome from its install executions, against the failure budget.
//! Pure logic: no AWS calls.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    run(service_fn(|event: LambdaEvent<Value>| handler::handle(event.payload))).await
}
