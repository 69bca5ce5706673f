//! fleet-install's shared library: domain types, pure logic (classification, routing,
//! chunking, status interpretation, trigger planning), configuration, error names, and the
//! AWS adapters the functions use.

pub mod adapters;
pub mod agent;
pub mod classify;
pub mod completion;
pub mod compliance;
pub mod config;
pub mod error;
pub mod ledger;
pub mod model;
pub mod outcome;
pub mod record;
pub mod rollout;
pub mod routing;
pub mod run;
pub mod run_store;
pub mod status;
pub mod sweep;
pub mod text;
pub mod trigger;

pub use error::FleetError;

/// Load the AWS configuration once per cold start (honours AWS_ENDPOINT_URL for the local stack).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
