//! What every command needs: the AWS configuration (profile, region, endpoint), the stack's
//! outputs, the output format and a progress line on stderr.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Context as _, Result};
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sfn::config::SharedCredentialsProvider;
use serde::Serialize;

use crate::cli::{GlobalArgs, OutputFormat};

pub struct Context {
    pub sdk: SdkConfig,
    pub stack_name: String,
    pub outputs_file: Option<PathBuf>,
    pub output: OutputFormat,
    pub progress: Progress,
}

impl Context {
    pub async fn load(g: &GlobalArgs) -> Context {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(p) = &g.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &g.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(u) = &g.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        let mut sdk = loader.load().await;
        if let Some(p) = &g.profile {
            // Credentials: the SDK's default chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
            // AWS_SESSION_TOKEN; then AWS_PROFILE or default in the config and credentials files,
            // with SSO, assume-role and credential_process; web identity; ECS; EC2 instance
            // metadata). That chain reads the environment first even when a profile is named; as in
            // the AWS CLI, an explicit --profile wins over credentials in the environment.
            let config = ProviderConfig::default().with_region(sdk.region().cloned());
            let provider = ProfileFileCredentialsProvider::builder()
                .configure(&config)
                .profile_name(p)
                .build();
            sdk = sdk
                .to_builder()
                .credentials_provider(SharedCredentialsProvider::new(provider))
                .build();
        }
        Context {
            sdk,
            stack_name: g.stack_name.clone(),
            outputs_file: g.outputs_file.clone(),
            output: g.output,
            progress: Progress::stderr(),
        }
    }

    /// The stack's outputs, from --outputs-file or CloudFormation DescribeStacks.
    pub async fn outputs(&self) -> Result<StackOutputs> {
        if let Some(path) = &self.outputs_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the stack outputs file {}", path.display()))?;
            return StackOutputs::from_json(&text, &path.display().to_string());
        }
        self.progress
            .update(format!("reading outputs of stack {}", self.stack_name));
        let cfn = aws_sdk_cloudformation::Client::new(&self.sdk);
        let outputs = stack_outputs(&cfn, &self.stack_name).await;
        self.progress.clear();
        outputs
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk)
    }
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk)
    }
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }
    pub fn sfn(&self) -> aws_sdk_sfn::Client {
        aws_sdk_sfn::Client::new(&self.sdk)
    }
    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk)
    }

    /// Print a command's result on stdout in the chosen format.
    pub fn emit<R: Report>(&self, report: &R) -> Result<()> {
        let text = match self.output {
            OutputFormat::Json => serde_json::to_string_pretty(report)? + "\n",
            OutputFormat::Table => report.to_table(),
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .context("cannot write to stdout")
    }
}

/// A command's result: JSON through serde, text through `to_table`.
pub trait Report: Serialize {
    fn to_table(&self) -> String;
}

/// The outputs of the deployed stack (template.yaml's Outputs section).
#[derive(Debug, Clone, Default)]
pub struct StackOutputs {
    values: BTreeMap<String, String>,
    source: String,
}

impl StackOutputs {
    pub fn new(values: BTreeMap<String, String>, source: impl Into<String>) -> Self {
        StackOutputs {
            values,
            source: source.into(),
        }
    }

    pub fn from_json(text: &str, source: &str) -> Result<Self> {
        let map: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(text).with_context(|| format!("{source} is not a JSON object of outputs"))?;
        let values = map
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                serde_json::Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect();
        Ok(StackOutputs::new(values, source))
    }

    pub fn get(&self, key: &str) -> Result<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "{} has no output {key}: is the stack deployed and up to date?",
                    self.source
                )
            })
    }

    pub fn ledger_table(&self) -> Result<&str> {
        self.get("LedgerTableName")
    }
    pub fn install_state_machine(&self) -> Result<&str> {
        self.get("InstallStateMachineArn")
    }
    pub fn rollout_state_machine(&self) -> Result<&str> {
        self.get("RolloutStateMachineArn")
    }
    pub fn sweep_state_machine(&self) -> Result<&str> {
        self.get("SweepStateMachineArn")
    }
    pub fn opt_out_tag(&self) -> Result<&str> {
        self.get("OptOutTagKey")
    }
    pub fn linux_document(&self) -> Result<&str> {
        self.get("LinuxInstallDocumentName")
    }
    pub fn windows_document(&self) -> Result<&str> {
        self.get("WindowsInstallDocumentName")
    }
    pub fn dead_letter_queue(&self) -> Result<&str> {
        self.get("InstallDeadLetterQueueUrl")
    }
    pub fn run_state_machine(&self) -> Result<&str> {
        self.get("RunStateMachineArn")
    }
    pub fn run_results_table(&self) -> Result<&str> {
        self.get("RunResultsTableName")
    }
    /// The documents `run` may send: the stack's two install documents and its RunDocuments.
    pub fn run_documents(&self) -> Result<Vec<String>> {
        let mut docs = vec![self.linux_document()?.to_string(), self.windows_document()?.to_string()];
        docs.extend(
            self.get("RunDocuments")?
                .split(',')
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty()),
        );
        Ok(docs)
    }
}

/// DescribeStacks: the outputs of one stack.
pub async fn stack_outputs(cfn: &aws_sdk_cloudformation::Client, stack_name: &str) -> Result<StackOutputs> {
    let resp = cfn
        .describe_stacks()
        .stack_name(stack_name)
        .send()
        .await
        .map_err(|e| anyhow!(crate::aws::message(&e)))
        .with_context(|| format!("cannot read the outputs of CloudFormation stack {stack_name} (--stack-name)"))?;
    let stack = resp
        .stacks()
        .first()
        .ok_or_else(|| anyhow!("CloudFormation stack {stack_name} does not exist"))?;
    let values = stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect();
    Ok(StackOutputs::new(values, format!("stack {stack_name}")))
}

/// A one-line progress indicator on stderr, shown only when stderr is a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn stderr() -> Self {
        Progress {
            enabled: std::io::stderr().is_terminal(),
        }
    }

    pub fn disabled() -> Self {
        Progress { enabled: false }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Replace the progress line.
    pub fn update(&self, msg: impl AsRef<str>) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{}", msg.as_ref());
            let _ = e.flush();
        }
    }

    /// Remove the progress line.
    pub fn clear(&self) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::types::{Output, Stack, StackStatus};
    use aws_smithy_mocks::{mock, mock_client};

    #[test]
    fn outputs_from_a_file() {
        let o = StackOutputs::from_json(
            r#"{"LedgerTableName": "fleet-install-LedgerTable", "OptOutTagKey": "fleet-install:opt-out", "X": 3}"#,
            "outputs.json",
        )
        .unwrap();
        assert_eq!(o.ledger_table().unwrap(), "fleet-install-LedgerTable");
        assert_eq!(o.get("X").unwrap(), "3");
        let err = o.rollout_state_machine().unwrap_err().to_string();
        assert!(
            err.contains("outputs.json has no output RolloutStateMachineArn"),
            "{err}"
        );
        assert!(StackOutputs::from_json("[1]", "f").is_err());
    }

    #[tokio::test]
    async fn outputs_from_cloudformation() {
        let rule = mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .match_requests(|r| r.stack_name() == Some("fleet-install"))
            .then_output(|| {
                DescribeStacksOutput::builder()
                    .stacks(
                        Stack::builder()
                            .stack_name("fleet-install")
                            .stack_status(StackStatus::CreateComplete)
                            .creation_time(aws_smithy_types::DateTime::from_secs(0))
                            .outputs(
                                Output::builder()
                                    .output_key("LedgerTableName")
                                    .output_value("ledger")
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            });
        let cfn = mock_client!(aws_sdk_cloudformation, [&rule]);
        let o = stack_outputs(&cfn, "fleet-install").await.unwrap();
        assert_eq!(o.ledger_table().unwrap(), "ledger");
        assert!(o
            .install_state_machine()
            .unwrap_err()
            .to_string()
            .contains("stack fleet-install"));
    }
}
