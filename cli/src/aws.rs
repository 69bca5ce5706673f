//! Small helpers around the AWS SDK: readable error messages and timestamps.

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
