//! Small helpers around the AWS SDK: readable error messages, timestamps and the listing of the
//! running instances.

use anyhow::anyhow;
use aws_sdk_sfn::error::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, SecondsFormat, Utc};

/// "Code: message" from a service error (what the AWS CLI would show), or the whole error
/// chain for anything else (connection refused, no credentials, no region, ...).
pub fn message<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(service) => match (service.code(), service.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_string(),
            _ => match service.to_string() {
                // no code the SDK could read from the response: say what the response was
                text if text.starts_with("unhandled error") => DisplayErrorContext(err).to_string(),
                text => text,
            },
        },
        None => DisplayErrorContext(err).to_string(),
    }
}

pub fn to_utc(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())
}

/// RFC 3339, seconds, `Z`.
pub fn rfc3339(t: &aws_smithy_types::DateTime) -> String {
    to_utc(t)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Every running instance of the account and Region: DescribeInstances with the filter
/// instance-state-name=running, 1,000 a page, every page. `keep` picks and maps the instances to
/// return; `page_done` is told, after each page, how many have been kept so far. The error is the
/// service's message: callers add what they were listing for.
pub async fn running_instances<T>(
    ec2: &aws_sdk_ec2::Client,
    mut keep: impl FnMut(&aws_sdk_ec2::types::Instance) -> Option<T>,
    mut page_done: impl FnMut(usize),
) -> anyhow::Result<Vec<T>> {
    use aws_sdk_ec2::types::Filter;
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let resp = ec2
            .describe_instances()
            .filters(Filter::builder().name("instance-state-name").values("running").build())
            .max_results(1000)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| anyhow!(message(&e)))?;
        out.extend(
            resp.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(&mut keep),
        );
        page_done(out.len());
        token = resp.next_token().filter(|t| !t.is_empty()).map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}
