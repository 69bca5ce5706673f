//! check-status: read the commands' invocations, write final outcomes to the ledger, and tell
//! the workflow what is still running and what to re-send.

mod handler;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let table = fleet_core::config::required(&fleet_core::config::env, "LEDGER_TABLE")?;
    let stack = fleet_core::config::optional(&fleet_core::config::env, "STACK_NAME", "fleet-install");
    let aws = fleet_core::aws_config().await;
    let ssm = aws_sdk_ssm::Client::new(&aws);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    run(service_fn(|event: LambdaEvent<Value>| async {
        let resp = handler::handle(&ssm, &dynamodb, &table, event.payload).await?;
        let r = resp.recorded;
        if r != handler::Recorded::default() {
            // Installs and failures per hour on the dashboard: one Embedded Metric Format line, no API call.
            let emf = fleet_core::compliance::emf_outcomes(
                &stack,
                chrono::Utc::now(),
                r.installed,
                r.failed,
                r.drift_repaired,
            );
            println!("{emf}");
        }
        Ok::<_, fleet_core::FleetError>(resp)
    }))
    .await
}
