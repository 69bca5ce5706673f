//! The command line: global flags and one subcommand each for prereq, preview, rollout,
//! status, unmanaged, replay, sweep, compliance, run, output and cancel.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::args::{
    parse_canary, parse_execution_timeout, parse_failure_ratio, parse_pause, parse_tag, parse_wave_percent,
    parse_wave_size, TagPair,
};

/// The SSM managed policy in the `aws` partition; other partitions: [`ssm_policy_arn`].
pub const DEFAULT_POLICY_ARN: &str = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";
/// The name of the AWS managed policy that lets the SSM agent register.
pub const SSM_POLICY_NAME: &str = "AmazonSSMManagedInstanceCore";

/// The partitions AWS managed policies exist in.
pub const PARTITIONS: [&str; 7] = [
    "aws",
    "aws-cn",
    "aws-us-gov",
    "aws-iso",
    "aws-iso-b",
    "aws-iso-e",
    "aws-iso-f",
];

/// The partition of a region (`aws` when the region is unknown).
pub fn partition_of(region: Option<&str>) -> &'static str {
    let r = region.unwrap_or_default();
    [
        ("cn-", "aws-cn"),
        ("us-gov-", "aws-us-gov"),
        ("us-isob-", "aws-iso-b"),
        ("us-isof-", "aws-iso-f"),
        ("eu-isoe-", "aws-iso-e"),
        ("us-iso-", "aws-iso"),
    ]
    .into_iter()
    .find(|(prefix, _)| r.starts_with(prefix))
    .map_or("aws", |(_, p)| p)
}

/// `arn:<partition>:iam::aws:policy/AmazonSSMManagedInstanceCore`.
pub fn ssm_policy_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/{SSM_POLICY_NAME}")
}

#[derive(Debug, Parser)]
#[command(
    name = "fleet-install",
    version,
    about = "Operate fleet-install: prerequisites, rollout preview, rollouts, status, unmanaged instances, replay, sweeps, compliance, and runs of any allowed SSM document.",
    long_about = "Operate fleet-install: prerequisites, rollout preview, rollouts, status, unmanaged instances, replay, sweeps, compliance, and runs of any allowed SSM document (run, output, cancel).\n\n\
        Reads the deployed stack's outputs (ledger table, state machines, documents, opt-out tag) with \
        CloudFormation DescribeStacks, or from --outputs-file. Results go to stdout as a table or JSON; \
        progress goes to stderr when it is a terminal.",
    after_help = "Exit status: 0 on success; 1 on errors; 2 when the command ran but reports a failure \
        (`rollout --wait` or `sweep --wait` ended in a status other than SUCCEEDED, `rollout` found an execution of that name \
        already running and started nothing, `prereq` could not read or change a role or \
        could not turn on Default Host Management Configuration, `replay` could not redrive or start an execution), \
        and on usage errors (a bad option value included). `run` has its own: 0 started, or with --wait ended within its \
        failure budget; 1 over the budget or failed; 2 on a usage error (an unknown or invalid parameter, a document \
        outside the allowlist) or when an execution of that name with another input exists."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The CloudFormation stack whose outputs name the ledger, state machines and documents.
    #[arg(long, global = true, default_value = "fleet-install", value_name = "NAME")]
    pub stack_name: String,
    /// Read the stack outputs from a JSON file ({"OutputKey": "value", ...}) instead of
    /// CloudFormation, e.g. the local stack's target/local-stack/outputs.json.
    #[arg(long, global = true, value_name = "FILE")]
    pub outputs_file: Option<PathBuf>,
    /// Use a named profile from the AWS config and credentials files (it wins over credentials in
    /// the environment, as in the AWS CLI). Without it: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// AWS_SESSION_TOKEN, then AWS_PROFILE or the default profile, web identity, ECS, EC2 metadata.
    #[arg(long, global = true, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// The AWS region (default: from the profile or the environment).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Send every AWS call to this endpoint (e.g. the local stack, http://127.0.0.1:5055).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Output format of the results on stdout.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned plain-text tables.
    Table,
    /// One JSON document.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find the IAM roles EC2 can assume that lack the SSM managed policy (attach it with
    /// --apply); show whether Default Host Management Configuration is on (turn it on with
    /// --apply --enable-default-host-management); list running instances that have no instance
    /// profile at all, and whether DHMC can reach them.
    Prereq(PrereqArgs),
    /// Show the rollout that would run for these tags, without running it.
    Preview(PreviewArgs),
    /// Start a rollout: a canary wave, then waves, stopping when a wave fails too often.
    Rollout(RolloutArgs),
    /// Show a rollout or install execution: waves or summary, failures from the ledger.
    Status(StatusArgs),
    /// List instances the ledger records as unmanaged or skipped, with the reason.
    Unmanaged(UnmanagedArgs),
    /// Re-run failures: redrive failed executions, or re-install the instances that failed.
    Replay(ReplayArgs),
    /// Start a sweep now (as its schedule does): every running instance compared with the ledger;
    /// never-seen, unmanaged, failed (when their retry time has come), skipped-but-running and
    /// stale instances are sent to install; installed ones due for their drift check are verified
    /// (a removed or stopped agent is put back).
    Sweep(SweepArgs),
    /// Put every running instance in one bucket (compliant, not compliant with its reason,
    /// skipped, opted out): the compliance ratio, counts by bucket and reason, the oldest
    /// not-compliant instance.
    Compliance(ComplianceArgs),
    /// Run an allowed SSM command document (AWS-RunShellScript, your own) across the fleet in
    /// canary waves with a failure budget; no time limit of its own (up to the document's 48-hour
    /// execution timeout). Results are kept per run and instance, apart from the install ledger.
    Run(RunArgs),
    /// Show what the instances of a run printed (the last lines; where the full output is).
    Output(OutputArgs),
    /// Cancel a run: stop its executions, cancel its commands in flight, record those instances
    /// as cancelled.
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).args(["tags", "instance_ids", "all"])))]
pub struct RunArgs {
    /// The document to send: NAME or NAME:VERSION for every platform, or FAMILY=NAME[:VERSION]
    /// (FAMILY linux or windows) for one document family; repeat for one per family. It must be in
    /// the stack's allowlist (RunDocuments and the install documents).
    #[arg(long = "document", value_name = "[FAMILY=]NAME[:VERSION]", required = true)]
    pub documents: Vec<String>,
    /// A document parameter, checked against the document's declared parameters before anything
    /// starts; repeat a name for a StringList (e.g. several commands).
    #[arg(long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// Target running instances with this tag (repeat a key to allow several values; all keys must match).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<TagPair>,
    /// Target these running instances (at most 200; comma-separated or repeated).
    #[arg(long = "instance-ids", value_name = "ID", value_delimiter = ',', num_args = 1..)]
    pub instance_ids: Vec<String>,
    /// Target every running instance.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub waves: WaveArgs,
    /// Stop the run when a wave's failed / (succeeded + failed) is above this (0 to 1).
    #[arg(
        long,
        value_name = "F",
        default_value_t = 0.05,
        allow_negative_numbers = true,
        value_parser = parse_failure_ratio
    )]
    pub max_failure_ratio: f64,
    /// Seconds to wait between waves (0 or more).
    #[arg(
        long = "pause",
        value_name = "SECONDS",
        default_value_t = 0,
        allow_negative_numbers = true,
        value_parser = parse_pause
    )]
    pub pause_seconds: u32,
    /// How long the command may run on each instance, 1 to 172800 seconds (48 hours): the
    /// document's executionTimeout parameter [default: the document's].
    #[arg(long, value_name = "S", allow_negative_numbers = true, value_parser = parse_execution_timeout)]
    pub execution_timeout: Option<u64>,
    /// Execution name, used as given [default: run-<UTC yyyymmddThhmmss>-<8 random hex digits>].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Wait for the run to end: exit 0 when it ended within its failure budget, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// The run's name (or its execution ARN).
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Only this instance, with its last lines of output in full.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The run's name (or its execution ARN).
    #[arg(value_name = "RUN")]
    pub run: String,
}

#[derive(Debug, Args)]
pub struct PrereqArgs {
    /// Attach the policy to the roles that lack it. Without --apply, prereq only reports what
    /// it would attach and changes nothing.
    #[arg(long)]
    pub apply: bool,
    /// Report only, change nothing: the default; kept so that older scripts still work.
    #[arg(long, conflicts_with = "apply")]
    pub dry_run: bool,
    /// The managed policy every EC2-assumable role needs: AmazonSSMManagedInstanceCore (in the
    /// region's partition) by default, or the stack's CommandOutputWriterPolicyArn output. Any
    /// other policy needs --allow-any-policy.
    #[arg(long, value_name = "ARN")]
    pub policy_arn: Option<String>,
    /// Allow a --policy-arn other than AmazonSSMManagedInstanceCore and the stack's
    /// CommandOutputWriterPolicy.
    #[arg(long, requires = "policy_arn")]
    pub allow_any_policy: bool,
    /// Turn on Default Host Management Configuration in the Region if it is off: create the role
    /// AWSSystemsManagerDefaultEC2InstanceManagementRole (path /service-role/, trusted by
    /// ssm.amazonaws.com) or use the existing one, attach AmazonSSMManagedEC2InstanceDefaultPolicy,
    /// and set the SSM setting to it. Only with --apply; without it, prereq says what it would do
    /// and changes nothing. A setting that already names a role is left as it is. DHMC reaches
    /// only instances with IMDSv2 required and SSM Agent 3.2.582.0 or later.
    #[arg(long)]
    pub enable_default_host_management: bool,
}

/// Targets and wave sizes, shared by preview and rollout.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Target running instances with this tag (repeat a key to allow several values; all keys
    /// must match).
    #[arg(long = "tag", value_name = "KEY=VALUE", required = true, value_parser = parse_tag)]
    pub tags: Vec<TagPair>,
    #[command(flatten)]
    pub waves: WaveArgs,
}

/// The canary and the waves after it, shared by preview, rollout and run.
#[derive(Debug, Args)]
pub struct WaveArgs {
    // Numeric options take negative-looking values (allow_negative_numbers) so that their parser,
    // not clap's "unexpected argument", says what they accept.
    /// Instances in the canary wave (0: no canary).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        allow_negative_numbers = true,
        value_parser = parse_canary
    )]
    pub canary: usize,
    /// Instances per wave after the canary (at least 1).
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "wave_percent",
        allow_negative_numbers = true,
        value_parser = parse_wave_size
    )]
    pub wave_size: Option<usize>,
    /// Percent of all targets per wave after the canary, more than 0 and at most 100 [default: 10].
    #[arg(
        long,
        value_name = "P",
        allow_negative_numbers = true,
        value_parser = parse_wave_percent
    )]
    pub wave_percent: Option<f64>,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Stop the rollout when a wave's failed / (installed + failed) is above this (0 to 1).
    #[arg(
        long,
        value_name = "F",
        default_value_t = 0.05,
        allow_negative_numbers = true,
        value_parser = parse_failure_ratio
    )]
    pub max_failure_ratio: f64,
    /// Seconds to wait between waves (0 or more).
    #[arg(
        long = "pause",
        value_name = "SECONDS",
        default_value_t = 300,
        allow_negative_numbers = true,
        value_parser = parse_pause
    )]
    pub pause_seconds: u32,
    /// Execution name, used as given [default: rollout-<UTC yyyymmddThhmmss>-<8 random hex digits>].
    /// If an execution of this name already exists, nothing is started and rollout says so (exit 2).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Wait for the rollout to end, then show its status.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// An execution ARN, or the name of a rollout or install execution.
    #[arg(value_name = "EXECUTION_ARN_OR_NAME")]
    pub execution: String,
}

#[derive(Debug, Args)]
pub struct UnmanagedArgs {
    /// Only instances whose ledger entry changed at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Redrive failed install and rollout executions (stopped within the last 14 days) instead
    /// of starting new installs for failed instances.
    #[arg(long)]
    pub redrive: bool,
    /// Only failures recorded (or executions stopped) at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub failed_since: Option<String>,
    /// Show what would be started or redriven without doing it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Wait for the sweep to end, then show its report: what it found, what it sent and why,
    /// what came of it, and compliance before and after (or the sweep that was already running).
    #[arg(long)]
    pub wait: bool,
    /// Verify every installed instance, not only those whose last verification is older than the
    /// drift check interval (one verification run each: a SendCommand per 50 instances).
    #[arg(long)]
    pub verify_all: bool,
}

/// What `compliance --by` breaks the counts down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ComplianceBy {
    /// One row per platform, one column per bucket.
    Platform,
    /// One row per reason (not compliant and skipped), with its oldest instance.
    Reason,
}

#[derive(Debug, Args)]
pub struct ComplianceArgs {
    /// Also break the counts down by platform or by reason.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub by: Option<ComplianceBy>,
    /// Also list every running instance with its bucket, reason, platform and since when.
    #[arg(long)]
    pub instances: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_every_command() {
        let help = Cli::command().render_help().to_string();
        for c in [
            "prereq",
            "preview",
            "rollout",
            "status",
            "unmanaged",
            "replay",
            "sweep",
            "compliance",
            "run",
            "output",
            "cancel",
        ] {
            assert!(help.contains(c), "{c} missing from\n{help}");
        }
    }

    #[test]
    fn rollout_arguments_and_defaults() {
        let cli = Cli::try_parse_from([
            "fleet-install",
            "--output",
            "json",
            "rollout",
            "--tag",
            "env=prod",
            "--tag",
            "env=staging",
            "--wave-size",
            "50",
            "--region",
            "eu-west-1",
        ])
        .unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.region.as_deref(), Some("eu-west-1"));
        assert_eq!(cli.global.stack_name, "fleet-install");
        let Command::Rollout(r) = cli.command else { panic!() };
        assert_eq!(r.targets.tags.len(), 2);
        assert_eq!(r.targets.waves.canary, 10);
        assert_eq!(r.targets.waves.wave_size, Some(50));
        assert_eq!(r.max_failure_ratio, 0.05);
        assert_eq!(r.pause_seconds, 300);
        assert!(!r.wait);
    }

    #[test]
    fn bad_arguments_are_rejected() {
        for bad in [
            vec!["fleet-install", "rollout"],
            vec!["fleet-install", "rollout", "--tag", "novalue"],
            vec![
                "fleet-install",
                "preview",
                "--tag",
                "a=b",
                "--wave-size",
                "5",
                "--wave-percent",
                "5",
            ],
            vec!["fleet-install", "--output", "yaml", "unmanaged"],
            vec!["fleet-install", "status"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn negative_and_out_of_range_numbers_are_explained() {
        use clap::error::ErrorKind;
        let parse = |args: &[&str]| Cli::try_parse_from(["fleet-install"].iter().chain(args).copied());
        for (command, option, value, says) in [
            ("rollout", "--canary", "-1", "must be 0 or more"),
            ("preview", "--canary", "-1", "must be 0 or more"),
            ("rollout", "--canary", "1.5", "must be a whole number"),
            ("rollout", "--wave-size", "-5", "must be at least 1"),
            ("preview", "--wave-size", "0", "must be at least 1"),
            ("rollout", "--wave-percent", "-10", "greater than 0 and at most 100"),
            ("preview", "--wave-percent", "-0.5", "greater than 0 and at most 100"),
            ("rollout", "--wave-percent", "150", "greater than 0 and at most 100"),
            ("rollout", "--wave-percent", "NaN", "must be a number"),
            ("rollout", "--max-failure-ratio", "-0.1", "between 0 and 1"),
            ("rollout", "--max-failure-ratio", "5", "between 0 and 1"),
            ("rollout", "--pause", "-30", "must be 0 or more"),
            ("rollout", "--pause", "99999999999", "at most 4294967295 seconds"),
        ] {
            let e = parse(&[command, "--tag", "a=b", option, value]).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{option} {value}: {text}");
            assert_eq!(e.exit_code(), 2, "{option} {value}");
            assert!(!text.contains("unexpected argument"), "{text}");
            assert!(text.contains(option) && text.contains(says), "{option} {value}: {text}");
        }
        // The same values, given with `=`, get the same answer.
        let e = parse(&["rollout", "--tag", "a=b", "--canary=-1"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation, "{e}");
        // Values in range still parse, 0 included where it means something.
        let Command::Rollout(r) = parse(&[
            "rollout",
            "--tag",
            "a=b",
            "--canary",
            "0",
            "--wave-percent",
            "100",
            "--max-failure-ratio",
            "0",
            "--pause",
            "0",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(
            (
                r.targets.waves.canary,
                r.targets.waves.wave_percent,
                r.max_failure_ratio,
                r.pause_seconds
            ),
            (0, Some(100.0), 0.0, 0)
        );
        // A negative number is never taken for an option: a missing value is still said to be missing.
        let e = parse(&["rollout", "--tag", "a=b", "--canary", "--wave-size", "5"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("a value is required"), "{e}");
    }

    #[test]
    fn prereq_changes_nothing_unless_applied() {
        let prereq = |args: &[&str]| {
            let argv = ["fleet-install", "prereq"]
                .iter()
                .chain(args)
                .copied()
                .collect::<Vec<_>>();
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Prereq(p) => p,
                _ => panic!(),
            })
        };
        let p = prereq(&[]).unwrap();
        assert!(!p.apply && !p.dry_run && p.policy_arn.is_none() && !p.allow_any_policy);
        let p = prereq(&["--dry-run"]).unwrap();
        assert!(!p.apply && p.dry_run);
        assert!(prereq(&["--apply"]).unwrap().apply);
        let e = prereq(&["--apply", "--dry-run"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        // --allow-any-policy confirms a --policy-arn; alone it is a usage error.
        assert!(prereq(&["--allow-any-policy"]).is_err());
        let p = prereq(&[
            "--apply",
            "--policy-arn",
            "arn:aws:iam::1:policy/x",
            "--allow-any-policy",
        ])
        .unwrap();
        assert_eq!(p.policy_arn.as_deref(), Some("arn:aws:iam::1:policy/x"));
        // Without --apply, --enable-default-host-management is a dry run: prereq says what it would do.
        let p = prereq(&["--enable-default-host-management"]).unwrap();
        assert!(p.enable_default_host_management && !p.apply);
        let p = prereq(&["--apply", "--enable-default-host-management"]).unwrap();
        assert!(p.enable_default_host_management && p.apply);
    }

    #[test]
    fn sweep_and_compliance_arguments() {
        let parse = |args: &[&str]| Cli::try_parse_from(["fleet-install"].iter().chain(args).copied());
        let Command::Sweep(s) = parse(&["sweep"]).unwrap().command else {
            panic!()
        };
        assert!(!s.wait && !s.verify_all);
        let cli = parse(&["sweep", "--wait", "--verify-all", "--output", "json"]).unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        let Command::Sweep(s) = cli.command else { panic!() };
        assert!(s.wait && s.verify_all);
        let Command::Compliance(c) = parse(&["compliance"]).unwrap().command else {
            panic!()
        };
        assert_eq!((c.by, c.instances), (None, false));
        for (value, by) in [("platform", ComplianceBy::Platform), ("reason", ComplianceBy::Reason)] {
            let Command::Compliance(c) = parse(&["compliance", "--by", value]).unwrap().command else {
                panic!()
            };
            assert_eq!(c.by, Some(by));
        }
        let Command::Compliance(c) = parse(&["compliance", "--instances", "--by=reason"]).unwrap().command else {
            panic!()
        };
        assert!(c.instances && c.by == Some(ComplianceBy::Reason));
        for bad in [
            vec!["compliance", "--by", "bucket"],
            vec!["compliance", "--by"],
            vec!["sweep", "--verify"],
            vec!["sweep", "now"],
        ] {
            let e = parse(&bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        let e = parse(&["compliance", "--by", "os"]).unwrap_err().to_string();
        assert!(e.contains("platform") && e.contains("reason"), "{e}");
    }

    #[test]
    fn partitions_from_regions() {
        assert_eq!(ssm_policy_arn(partition_of(None)), DEFAULT_POLICY_ARN);
        assert_eq!(partition_of(Some("eu-west-1")), "aws");
        assert_eq!(partition_of(Some("cn-north-1")), "aws-cn");
        assert_eq!(partition_of(Some("us-gov-west-1")), "aws-us-gov");
        assert_eq!(partition_of(Some("us-iso-east-1")), "aws-iso");
        assert_eq!(partition_of(Some("us-isob-east-1")), "aws-iso-b");
    }
}
