//! Typed errors shared by every function, and the stable `errorType` names the workflow's
//! `Retry` and `Catch` clauses match on.
//!
//! The names in [`ERROR_TYPES`] are a contract with `statemachine/*.asl.json`: a contract test
//! reads the ASL and fails when an `ErrorEquals` names something no function returns.

use lambda_runtime::Diagnostic;

/// The AWS call was throttled; the workflow retries it with a long, jittered backoff.
pub const THROTTLED: &str = "FleetInstall.Throttled";
/// A transient fault (5xx, timeout, connection reset); the workflow retries it.
pub const TRANSIENT: &str = "FleetInstall.Transient";
/// The input cannot be processed as it is; retrying will not help.
pub const INVALID_INPUT: &str = "FleetInstall.InvalidInput";
/// The function is misconfigured (missing or malformed environment variable).
pub const CONFIGURATION: &str = "FleetInstall.Configuration";
/// An AWS call failed in a way that retrying will not fix (validation, unknown resource).
pub const AWS_REJECTED: &str = "FleetInstall.AwsRejected";
/// The function's IAM role may not make an AWS call: the stack must grant it. Never retried.
pub const ACCESS_DENIED: &str = "FleetInstall.AccessDenied";
/// The workflow failed and the failure was recorded in the ledger; redrive resumes it.
pub const WORKFLOW_FAILED: &str = "FleetInstall.WorkflowFailed";

/// Every error type a fleet-install function can return.
pub const ERROR_TYPES: &[&str] = &[
    THROTTLED,
    TRANSIENT,
    INVALID_INPUT,
    CONFIGURATION,
    AWS_REJECTED,
    ACCESS_DENIED,
    WORKFLOW_FAILED,
];

/// The error codes AWS services answer with when the caller's IAM policy does not allow the
/// call: `AccessDeniedException` (DynamoDB, SSM, Step Functions, SQS JSON protocol),
/// `AccessDenied` (IAM, STS, SQS query protocol) and `UnauthorizedOperation` (EC2).
/// A 403 without any code counts as access denied too.
pub const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
    "Client.UnauthorizedOperation",
];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FleetError {
    #[error("throttled by {service}: {message}")]
    Throttled { service: String, message: String },
    #[error("transient failure calling {service}: {message}")]
    Transient { service: String, message: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("configuration error: {0}")]
    Configuration(String),
    #[error("{service} rejected the request: {message}")]
    AwsRejected { service: String, message: String },
    /// `service` is `service:Operation`, `message` what AWS said.
    #[error(
        "access denied: {service} was refused ({message}). The function's IAM role in the fleet-install stack \
         lacks the permission for {service}: grant it in template.yaml and update (redeploy) the stack, \
         then redrive the execution; retrying as it is will not help"
    )]
    AccessDenied { service: String, message: String },
    #[error("workflow failed: {0}")]
    WorkflowFailed(String),
}

impl FleetError {
    /// The stable `errorType` reported to Lambda and matched by the workflow.
    pub fn error_type(&self) -> &'static str {
        match self {
            FleetError::Throttled { .. } => THROTTLED,
            FleetError::Transient { .. } => TRANSIENT,
            FleetError::InvalidInput(_) => INVALID_INPUT,
            FleetError::Configuration(_) => CONFIGURATION,
            FleetError::AwsRejected { .. } => AWS_REJECTED,
            FleetError::AccessDenied { .. } => ACCESS_DENIED,
            FleetError::WorkflowFailed(_) => WORKFLOW_FAILED,
        }
    }

    pub fn invalid_input(msg: impl Into<String>) -> Self {
        FleetError::InvalidInput(msg.into())
    }

    /// Classify an AWS SDK error by its error code and HTTP status.
    pub fn from_sdk<E>(service: &str, operation: &str, err: &aws_smithy_types_error::SdkError<E, HttpResponse>) -> Self
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    {
        use aws_smithy_types_error::SdkError;
        let service_op = format!("{service}:{operation}");
        let message = format!("{}", aws_smithy_types::error::display::DisplayErrorContext(err));
        match err {
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                let code = ctx.err().code().filter(|c| !c.is_empty());
                let denied = match code {
                    Some(c) => is_access_denied_code(c),
                    None => status == 403,
                };
                if denied {
                    // What AWS said, short: "AccessDeniedException: User ... is not authorized to perform ...".
                    let said = match (code, ctx.err().message()) {
                        (Some(c), Some(m)) => format!("{c}: {m}"),
                        (Some(c), None) => c.to_string(),
                        (None, Some(m)) => format!("HTTP 403: {m}"),
                        (None, None) => "HTTP 403 without an error code".to_string(),
                    };
                    return FleetError::AccessDenied {
                        service: service_op,
                        message: said,
                    };
                }
                match code {
                    Some(code) => classify_code(&service_op, code, message),
                    // No modelled error code: judge by the HTTP status.
                    None if status == 429 => FleetError::Throttled {
                        service: service_op,
                        message,
                    },
                    None if status >= 500 => FleetError::Transient {
                        service: service_op,
                        message,
                    },
                    None => FleetError::AwsRejected {
                        service: service_op,
                        message,
                    },
                }
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                FleetError::Transient {
                    service: service_op,
                    message,
                }
            }
            _ => FleetError::AwsRejected {
                service: service_op,
                message,
            },
        }
    }
}

/// Map an AWS error code to the workflow's action.
pub fn classify_code(service: &str, code: &str, message: String) -> FleetError {
    const THROTTLING: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "TransactionInProgressException",
    ];
    const TRANSIENT_CODES: &[&str] = &[
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServerErrorException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalException",
    ];
    let service = service.to_string();
    if is_access_denied_code(code) {
        FleetError::AccessDenied { service, message }
    } else if THROTTLING.contains(&code) {
        FleetError::Throttled { service, message }
    } else if TRANSIENT_CODES.contains(&code) {
        FleetError::Transient { service, message }
    } else {
        FleetError::AwsRejected { service, message }
    }
}

/// True for the codes in [`ACCESS_DENIED_CODES`].
pub fn is_access_denied_code(code: &str) -> bool {
    ACCESS_DENIED_CODES.contains(&code)
}

impl From<FleetError> for Diagnostic {
    fn from(err: FleetError) -> Self {
        Diagnostic {
            error_type: err.error_type().to_string(),
            error_message: err.to_string(),
        }
    }
}

/// Re-export so that callers need not depend on the runtime crate directly.
pub(crate) mod aws_smithy_types_error {
    pub use aws_sdk_ssm::error::SdkError;
}

use aws_sdk_ssm::config::http::HttpResponse;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_listed_error_type() {
        let all = [
            FleetError::Throttled {
                service: "s".into(),
                message: "m".into(),
            },
            FleetError::Transient {
                service: "s".into(),
                message: "m".into(),
            },
            FleetError::InvalidInput("x".into()),
            FleetError::Configuration("x".into()),
            FleetError::AwsRejected {
                service: "s".into(),
                message: "m".into(),
            },
            FleetError::AccessDenied {
                service: "s".into(),
                message: "m".into(),
            },
            FleetError::WorkflowFailed("x".into()),
        ];
        assert_eq!(all.len(), ERROR_TYPES.len());
        for e in all {
            assert!(ERROR_TYPES.contains(&e.error_type()), "{e:?}");
            let d: Diagnostic = e.clone().into();
            assert_eq!(d.error_type, e.error_type());
            assert!(!d.error_message.is_empty());
        }
    }

    #[test]
    fn throttling_codes_map_to_throttled() {
        for code in [
            "ThrottlingException",
            "RequestLimitExceeded",
            "ProvisionedThroughputExceededException",
        ] {
            assert_eq!(classify_code("ssm", code, String::new()).error_type(), THROTTLED);
        }
        assert_eq!(
            classify_code("ssm", "InternalServerError", String::new()).error_type(),
            TRANSIENT
        );
        assert_eq!(
            classify_code("ssm", "ValidationException", String::new()).error_type(),
            AWS_REJECTED
        );
    }

    #[test]
    fn every_access_denied_code_maps_to_access_denied_with_the_call_and_the_fix() {
        for (service, code) in [
            ("dynamodb:TransactWriteItems", "AccessDeniedException"),
            ("ssm:SendCommand", "AccessDeniedException"),
            ("states:StartExecution", "AccessDeniedException"),
            ("sqs:SendMessage", "AccessDeniedException"),
            ("iam:AttachRolePolicy", "AccessDenied"),
            ("sts:GetCallerIdentity", "AccessDenied"),
            ("ec2:DescribeInstances", "UnauthorizedOperation"),
        ] {
            let e = classify_code(service, code, format!("{code}: User x is not authorized"));
            assert_eq!(e.error_type(), ACCESS_DENIED, "{service} {code}");
            assert!(matches!(e, FleetError::AccessDenied { .. }));
            let d: Diagnostic = e.into();
            assert_eq!(d.error_type, "FleetInstall.AccessDenied");
            assert!(d.error_message.contains(service), "{}", d.error_message);
            assert!(d.error_message.contains("is not authorized"), "{}", d.error_message);
            assert!(d.error_message.contains("IAM role"), "{}", d.error_message);
            assert!(d.error_message.contains("redeploy"), "{}", d.error_message);
        }
        assert!(ERROR_TYPES.contains(&ACCESS_DENIED));
    }

    #[test]
    fn access_denied_is_neither_throttled_nor_transient() {
        let e = classify_code("ssm:SendCommand", "AccessDeniedException", String::new());
        assert_ne!(e.error_type(), THROTTLED);
        assert_ne!(e.error_type(), TRANSIENT);
    }
}
