//! Ad-hoc runs: any SSM command document across the fleet (`fleet-install run`). Pure logic only:
//! the run's specification as it travels in the workflow, the check of the user's parameters
//! against the document's declared ones, what an invocation's status means for a run's result, the
//! poll interval of long commands, and where an invocation's full output is kept.
//!
//! A run's results live in their own table (one item per run and instance), never in the install
//! ledger: an ad-hoc run does not change any instance's install state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest execution timeout a run may ask for: 48 hours (AWS-RunShellScript's own limit).
pub const MAX_EXECUTION_TIMEOUT_SECONDS: u64 = 172_800;
/// The longest a poll waits: long commands are checked every 5 minutes at most, so that a 48-hour
/// command stays far below a Standard execution's 25,000 history events (about 580 polls).
pub const MAX_POLL_SECONDS: u64 = 300;
/// Lines of output kept in a result (the rest is in CloudWatch Logs).
pub const OUTPUT_TAIL_LINES: usize = 20;
/// Characters of output kept in a result at most.
pub const OUTPUT_TAIL_CHARS: usize = 2_000;
/// The document name that means "every platform" in [`RunDocument::family`].
pub const ANY_FAMILY: &str = "any";

/// One document of a run: for every platform (`family` = `any`) or for one document family of the
/// routing table (`linux`, `windows`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDocument {
    pub family: String,
    pub name: String,
    /// `$DEFAULT`, `$LATEST` or a version number.
    pub version: String,
}

/// What a run sends: the workflow carries it from the execution's input to every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    pub documents: Vec<RunDocument>,
    /// SendCommand's parameters: each name with its values (a StringList takes several).
    #[serde(default)]
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Seconds the command may run on an instance (the document's `executionTimeout` when it declares
    /// one). Bounds how long the workflow waits for the command.
    #[serde(default)]
    pub execution_timeout: Option<u64>,
}

impl RunSpec {
    /// The document an instance of this SSM platform type gets, if any. A document for one family
    /// wins over one for every platform.
    pub fn document_for(&self, platform_type: &str, platform_name: &str) -> Option<&RunDocument> {
        let family = document_family(platform_type, platform_name);
        self.documents
            .iter()
            .find(|d| Some(d.family.as_str()) == family)
            .or_else(|| self.documents.iter().find(|d| d.family == ANY_FAMILY))
    }
}

/// The routing table's document family of an SSM platform (`linux` or `windows`), `None` when the
/// table does not know it (macOS, an unknown Linux).
pub fn document_family(platform_type: &str, platform_name: &str) -> Option<&'static str> {
    crate::routing::family_of(platform_type, platform_name).map(|f| match f {
        crate::routing::Family::Windows => "windows",
        _ => "linux",
    })
}

/// Parse `NAME`, `NAME:VERSION`, `FAMILY=NAME` or `FAMILY=NAME:VERSION` (the CLI's `--document`).
pub fn parse_document(arg: &str) -> Result<RunDocument, String> {
    let (family, rest) = match arg.split_once('=') {
        Some((f, rest)) => {
            let f = f.trim().to_ascii_lowercase();
            if !["linux", "windows"].contains(&f.as_str()) {
                return Err(format!(
                    "--document {arg}: the family before '=' must be linux or windows (the routing table's \
                     document families), not {f:?}"
                ));
            }
            (f, rest)
        }
        None => (ANY_FAMILY.to_string(), arg),
    };
    let (name, version) = match rest.rsplit_once(':') {
        // An ARN has colons of its own: only a trailing `:<digits>` or `:$DEFAULT`/`:$LATEST` is a version.
        Some((n, v)) if is_version(v) => (n, v.to_string()),
        _ => (rest, "$DEFAULT".to_string()),
    };
    let name = name.trim();
    if !is_document_name(name) {
        return Err(format!(
            "--document {arg}: {name:?} is not a document name (3 to 128 letters, digits, '_', '-' and '.')"
        ));
    }
    Ok(RunDocument {
        family,
        name: name.to_string(),
        version,
    })
}

fn is_version(v: &str) -> bool {
    v == "$DEFAULT" || v == "$LATEST" || (!v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
}

/// SSM's document name rule: `^[a-zA-Z0-9_\-.]{3,128}$`.
pub fn is_document_name(name: &str) -> bool {
    (3..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Check a run's documents: at most one for every platform and one per family, none twice.
pub fn check_documents(docs: &[RunDocument]) -> Result<(), String> {
    if docs.is_empty() {
        return Err("give --document NAME (or one per family: linux=NAME windows=NAME)".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in docs {
        if !seen.insert(d.family.as_str()) {
            return Err(format!("--document: two documents for {}", d.family));
        }
    }
    Ok(())
}

/// Parse `K=V` (the CLI's `--parameter`): repeated names add values (a StringList).
pub fn parse_parameters(args: &[String]) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("--parameter {a:?}: expected NAME=VALUE"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("--parameter {a:?}: the name before '=' is empty"));
        }
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(out)
}

/// One parameter a document declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredParameter {
    pub kind: String,
    pub required: bool,
    pub allowed_values: Vec<String>,
    pub allowed_pattern: Option<String>,
    pub min_items: Option<usize>,
    pub max_items: Option<usize>,
}

/// The `parameters` a document's content declares (JSON content, schema 1.2, 2.2 or 0.3).
pub fn declared_parameters(content: &serde_json::Value) -> BTreeMap<String, DeclaredParameter> {
    let mut out = BTreeMap::new();
    let Some(params) = content.get("parameters").and_then(|p| p.as_object()) else {
        return out;
    };
    for (name, p) in params {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.insert(
            name.clone(),
            DeclaredParameter {
                kind: p.get("type").and_then(|t| t.as_str()).unwrap_or("String").to_string(),
                required: p.get("default").is_none(),
                allowed_values: p
                    .get("allowedValues")
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().map(text).collect())
                    .unwrap_or_default(),
                allowed_pattern: p.get("allowedPattern").and_then(|v| v.as_str()).map(str::to_string),
                min_items: p.get("minItems").and_then(|v| v.as_u64()).map(|n| n as usize),
                max_items: p.get("maxItems").and_then(|v| v.as_u64()).map(|n| n as usize),
            },
        );
    }
    out
}

/// Why a parameter was refused. The message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    #[error("parameter {name:?} is not declared by document {document} (it declares: {declared})")]
    Unknown {
        name: String,
        document: String,
        declared: String,
    },
    #[error(
        "parameter {name:?} is required by document {document} (it has no default): give --parameter {name}=VALUE"
    )]
    Missing { name: String, document: String },
    #[error("parameter {name:?} of document {document} takes one value ({kind}), not {count}")]
    TooMany {
        name: String,
        document: String,
        kind: String,
        count: usize,
    },
    #[error("parameter {name:?} of document {document}: {value:?} is not one of the allowed values {allowed}")]
    NotAllowed {
        name: String,
        document: String,
        value: String,
        allowed: String,
    },
    #[error("parameter {name:?} of document {document}: {value:?} does not match the allowed pattern {pattern}")]
    Pattern {
        name: String,
        document: String,
        value: String,
        pattern: String,
    },
    #[error("parameter {name:?} of document {document}: {value:?} is not a {kind}")]
    Type {
        name: String,
        document: String,
        value: String,
        kind: String,
    },
    #[error("parameter {name:?} of document {document} takes {bound} values, not {count}")]
    Items {
        name: String,
        document: String,
        bound: String,
        count: usize,
    },
}

/// Check `given` against the document's declared parameters: names, required ones, one value for
/// single-valued types, allowed values, allowed patterns (matched against the whole value, as SSM
/// does), Integer and Boolean values, and StringList item counts.
pub fn check_parameters(
    document: &str,
    declared: &BTreeMap<String, DeclaredParameter>,
    given: &BTreeMap<String, Vec<String>>,
) -> Result<(), ParameterError> {
    for (name, values) in given {
        let Some(d) = declared.get(name) else {
            return Err(ParameterError::Unknown {
                name: name.clone(),
                document: document.to_string(),
                declared: if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            });
        };
        let list = d.kind == "StringList" || d.kind == "MapList";
        if !list && values.len() > 1 {
            return Err(ParameterError::TooMany {
                name: name.clone(),
                document: document.to_string(),
                kind: d.kind.clone(),
                count: values.len(),
            });
        }
        if list {
            let n = values.len();
            let (lo, hi) = (d.min_items.unwrap_or(0), d.max_items.unwrap_or(usize::MAX));
            if n < lo || n > hi {
                return Err(ParameterError::Items {
                    name: name.clone(),
                    document: document.to_string(),
                    bound: match d.max_items {
                        Some(hi) => format!("{lo} to {hi}"),
                        None => format!("at least {lo}"),
                    },
                    count: n,
                });
            }
        }
        for v in values {
            let bad_type = match d.kind.as_str() {
                "Integer" => v.trim().parse::<i64>().is_err(),
                "Boolean" => !matches!(v.trim(), "true" | "false"),
                _ => false,
            };
            if bad_type {
                return Err(ParameterError::Type {
                    name: name.clone(),
                    document: document.to_string(),
                    value: crate::text::clip(v, 80).to_string(),
                    kind: d.kind.clone(),
                });
            }
            if !d.allowed_values.is_empty() && !d.allowed_values.contains(v) {
                return Err(ParameterError::NotAllowed {
                    name: name.clone(),
                    document: document.to_string(),
                    value: crate::text::clip(v, 80).to_string(),
                    allowed: d.allowed_values.join(", "),
                });
            }
            if let Some(p) = &d.allowed_pattern {
                if !matches_whole(p, v) {
                    return Err(ParameterError::Pattern {
                        name: name.clone(),
                        document: document.to_string(),
                        value: crate::text::clip(v, 80).to_string(),
                        pattern: p.clone(),
                    });
                }
            }
        }
    }
    if let Some((name, _)) = declared.iter().find(|(n, d)| d.required && !given.contains_key(*n)) {
        return Err(ParameterError::Missing {
            name: name.clone(),
            document: document.to_string(),
        });
    }
    Ok(())
}

/// True when `value` matches `pattern` as a whole. A pattern this regex engine cannot compile
/// (look-around, back-references: Java features) is left to SSM, which checks it at SendCommand.
fn matches_whole(pattern: &str, value: &str) -> bool {
    match regex_lite::Regex::new(&format!("^(?:{pattern})$")) {
        Ok(re) => re.is_match(value),
        Err(_) => true,
    }
}

/// A run's result for one instance, by SSM's final invocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunOutcome {
    /// Sent; not finished.
    Running,
    Succeeded,
    /// Failed, timed out, undeliverable: counted against the failure budget.
    Failed,
    /// Not a managed, online instance: never sent.
    Unreachable,
    /// Not sent: no document for its platform, or opted out.
    Skipped,
    /// Stopped by `fleet-install cancel`.
    Cancelled,
}

impl RunOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Unreachable => "unreachable",
            RunOutcome::Skipped => "skipped",
            RunOutcome::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RunOutcome::Running,
            RunOutcome::Succeeded,
            RunOutcome::Failed,
            RunOutcome::Unreachable,
            RunOutcome::Skipped,
            RunOutcome::Cancelled,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    pub fn is_final(&self) -> bool {
        *self != RunOutcome::Running
    }
}

/// What SSM's Status of an invocation means for a run. Anything not final is `Running`.
pub fn run_outcome(status: &str) -> RunOutcome {
    match status {
        "Success" => RunOutcome::Succeeded,
        "Cancelled" | "Canceled" => RunOutcome::Cancelled,
        "Failed" | "TimedOut" | "Undeliverable" | "Terminated" | "InvalidPlatform" | "AccessDenied"
        | "DeliveryTimedOut" | "ExecutionTimedOut" => RunOutcome::Failed,
        _ => RunOutcome::Running,
    }
}

/// The last [`OUTPUT_TAIL_LINES`] lines of `output`, at most [`OUTPUT_TAIL_CHARS`] characters.
pub fn output_tail(output: &str) -> String {
    let trimmed = output.trim_end_matches(['\n', '\r']);
    let lines: Vec<&str> = trimmed.lines().collect();
    let start = lines.len().saturating_sub(OUTPUT_TAIL_LINES);
    let tail = lines[start..].join("\n");
    crate::text::tail(&tail, OUTPUT_TAIL_CHARS).to_string()
}

/// The CloudWatch Logs stream SSM writes an invocation's standard output to:
/// `<command id>/<instance id>/<plugin id>/stdout`, the plugin id being the plugin's name with ':'
/// replaced by '-' (`aws:runShellScript` -> `aws-runShellScript`).
pub fn output_stream(command_id: &str, instance_id: &str, plugin_name: &str) -> String {
    format!("{command_id}/{instance_id}/{}/stdout", plugin_name.replace(':', "-"))
}

/// How long to wait before the next status check of commands that have run `elapsed` seconds: a
/// tenth of the time so far, between the base interval and [`MAX_POLL_SECONDS`]. A 30-second
/// command is checked every base interval; a 40-minute one about every 4 minutes near its end.
pub fn poll_seconds(elapsed: u64, base: u64) -> u64 {
    let base = base.max(1);
    (elapsed / 10).clamp(base, MAX_POLL_SECONDS.max(base))
}

/// Counts of a run's results by outcome and platform: the run chunk's output, in the shape the
/// rollout's wave evaluation reads (`byState`).
pub fn summary_add(summary: &mut crate::model::Summary, outcome: RunOutcome, platform: &str, reason: &str) {
    *summary.by_state.entry(outcome.as_str().to_string()).or_default() += 1;
    let platform = if platform.is_empty() { "unknown" } else { platform };
    *summary
        .by_platform
        .entry(platform.to_string())
        .or_default()
        .entry(outcome.as_str().to_string())
        .or_default() += 1;
    if outcome != RunOutcome::Succeeded && !reason.is_empty() {
        *summary.by_reason.entry(reason.to_string()).or_default() += 1;
    }
}

/// Where one target of a run goes: a command (with its document) or straight to a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Send {
        document: RunDocument,
        platform: String,
    },
    Result {
        outcome: RunOutcome,
        reason: String,
        platform: String,
    },
}

/// Decide a target's placement from what EC2 and SSM say about it now.
pub fn place(
    spec: &RunSpec,
    ec2: Option<&crate::classify::Ec2Facts>,
    ssm: Option<&crate::classify::SsmFacts>,
    opt_out_tag: &str,
) -> Placement {
    let platform = ssm
        .map(|s| s.platform_name.clone())
        .filter(|p| !p.is_empty())
        .or_else(|| ec2.and_then(|e| e.platform_details.clone()))
        .unwrap_or_default();
    let result = |outcome, reason: String| Placement::Result {
        outcome,
        reason,
        platform: platform.clone(),
    };
    match ec2 {
        None => {
            return result(
                RunOutcome::Unreachable,
                "EC2 does not know the instance (terminated)".into(),
            )
        }
        Some(e) if e.state != "running" => {
            return result(
                RunOutcome::Unreachable,
                format!("the instance is {}, not running", e.state),
            )
        }
        Some(e) if e.opted_out => return result(RunOutcome::Skipped, format!("opted out by tag {opt_out_tag}")),
        _ => {}
    }
    let Some(s) = ssm else {
        return result(
            RunOutcome::Unreachable,
            "not a managed instance: SSM has never registered it (no instance profile, no SSM Agent, or no route \
             to SSM); `fleet-install unmanaged` tells why"
                .into(),
        );
    };
    if s.ping_status != "Online" {
        return result(
            RunOutcome::Unreachable,
            format!(
                "the SSM Agent is {} (last ping {})",
                s.ping_status,
                s.last_ping.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into())
            ),
        );
    }
    match spec.document_for(&s.platform_type, &s.platform_name) {
        Some(d) => Placement::Send {
            document: d.clone(),
            platform,
        },
        None => result(
            RunOutcome::Skipped,
            format!(
                "no document for platform {} {} in this run",
                s.platform_type, s.platform_name
            ),
        ),
    }
}

/// One SendCommand of a run: a document and at most 50 instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunBatch {
    pub document: RunDocument,
    /// (instance id, platform) pairs.
    pub instances: Vec<RunTarget>,
}

/// An instance of a batch and its platform name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTarget {
    pub instance_id: String,
    #[serde(default)]
    pub platform: String,
}

/// Group the targets to send by document, in batches of at most `max` (SendCommand takes 50 ids).
pub fn batches(targets: Vec<(RunDocument, RunTarget)>, max: usize) -> Vec<RunBatch> {
    let mut by_doc: BTreeMap<(String, String, String), Vec<RunTarget>> = BTreeMap::new();
    for (d, t) in targets {
        by_doc.entry((d.family, d.name, d.version)).or_default().push(t);
    }
    let mut out = Vec::new();
    for ((family, name, version), mut ts) in by_doc {
        ts.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        for c in ts.chunks(max.max(1)) {
            out.push(RunBatch {
                document: RunDocument {
                    family: family.clone(),
                    name: name.clone(),
                    version: version.clone(),
                },
                instances: c.to_vec(),
            });
        }
    }
    out
}

/// A sent batch: the command that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCommand {
    pub command_id: String,
    pub batch_key: String,
    pub document: String,
    pub instances: Vec<RunTarget>,
    /// When it was sent (RFC 3339).
    pub sent_at: String,
}

/// How long after sending the workflow waits for a command at most before it records what is
/// still unfinished as failed: delivery timeout + execution timeout + 10 minutes. SSM itself ends
/// every invocation by then; this bound only guards against a status that never comes.
pub fn give_up_after(delivery_timeout: u64, execution_timeout: Option<u64>) -> u64 {
    delivery_timeout + execution_timeout.unwrap_or(MAX_EXECUTION_TIMEOUT_SECONDS) + 600
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shell() -> BTreeMap<String, DeclaredParameter> {
        declared_parameters(&json!({
            "schemaVersion": "1.2",
            "parameters": {
                "commands": {"type": "StringList", "minItems": 1},
                "workingDirectory": {"type": "String", "default": ""},
                "executionTimeout": {"type": "String", "default": "3600",
                    "allowedPattern": "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)"},
                "mode": {"type": "String", "default": "fast", "allowedValues": ["fast", "safe"]},
                "retries": {"type": "Integer", "default": 1}
            }
        }))
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        parse_parameters(&pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn valid_parameters_pass_and_a_string_list_takes_several_values() {
        let p = given(&[
            ("commands", "uptime"),
            ("commands", "df -h"),
            ("executionTimeout", "172800"),
        ]);
        assert_eq!(p["commands"], vec!["uptime", "df -h"]);
        assert_eq!(check_parameters("AWS-RunShellScript", &shell(), &p), Ok(()));
    }

    #[test]
    fn each_refusal_names_the_parameter() {
        let d = shell();
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("commands", "x"), ("comands", "y")], "\"comands\" is not declared"),
            (vec![("workingDirectory", "/tmp")], "\"commands\" is required"),
            (
                vec![("commands", "x"), ("executionTimeout", "172801")],
                "\"executionTimeout\"",
            ),
            (vec![("commands", "x"), ("executionTimeout", "0")], "allowed pattern"),
            (vec![("commands", "x"), ("mode", "slow")], "\"mode\""),
            (vec![("commands", "x"), ("retries", "two")], "is not a Integer"),
            (
                vec![("commands", "x"), ("mode", "fast"), ("mode", "safe")],
                "takes one value",
            ),
        ];
        for (pairs, want) in cases {
            let err = check_parameters("AWS-RunShellScript", &d, &given(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn the_pattern_must_match_the_whole_value() {
        // A partial match ("17280" inside "1728000") is not enough.
        let err = check_parameters(
            "AWS-RunShellScript",
            &shell(),
            &given(&[("commands", "x"), ("executionTimeout", "1728000")]),
        );
        assert!(matches!(err, Err(ParameterError::Pattern { .. })), "{err:?}");
    }

    #[test]
    fn documents_parse_with_versions_and_families() {
        let d = parse_document("AWS-RunShellScript").unwrap();
        assert_eq!(
            (d.family.as_str(), d.name.as_str(), d.version.as_str()),
            ("any", "AWS-RunShellScript", "$DEFAULT")
        );
        let d = parse_document("windows=My-Doc:3").unwrap();
        assert_eq!(
            (d.family.as_str(), d.name.as_str(), d.version.as_str()),
            ("windows", "My-Doc", "3")
        );
        assert_eq!(parse_document("Linux=Doc.x:$LATEST").unwrap().version, "$LATEST");
        assert!(parse_document("mac=Doc").unwrap_err().contains("linux or windows"));
        assert!(parse_document("a b").unwrap_err().contains("not a document name"));
        assert!(check_documents(&[parse_document("A-1").unwrap(), parse_document("B-1").unwrap()]).is_err());
    }

    #[test]
    fn a_family_document_wins_over_the_one_for_every_platform() {
        let spec = RunSpec {
            documents: vec![
                parse_document("AWS-RunShellScript").unwrap(),
                parse_document("windows=AWS-RunPowerShellScript").unwrap(),
            ],
            parameters: BTreeMap::new(),
            execution_timeout: None,
        };
        assert_eq!(
            spec.document_for("Windows", "Microsoft Windows Server 2022")
                .unwrap()
                .name,
            "AWS-RunPowerShellScript"
        );
        assert_eq!(spec.document_for("Linux", "Ubuntu").unwrap().name, "AWS-RunShellScript");
        assert_eq!(spec.document_for("MacOS", "macOS").unwrap().name, "AWS-RunShellScript");
        let only_windows = RunSpec {
            documents: vec![parse_document("windows=AWS-RunPowerShellScript").unwrap()],
            ..spec
        };
        assert!(only_windows.document_for("Linux", "Amazon Linux").is_none());
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(run_outcome("Success"), RunOutcome::Succeeded);
        for s in ["Failed", "TimedOut", "Undeliverable", "Terminated"] {
            assert_eq!(run_outcome(s), RunOutcome::Failed, "{s}");
        }
        assert_eq!(run_outcome("Cancelled"), RunOutcome::Cancelled);
        for s in ["Pending", "InProgress", "Delayed", "Cancelling", ""] {
            assert_eq!(run_outcome(s), RunOutcome::Running, "{s}");
        }
        assert_eq!(RunOutcome::parse("unreachable"), Some(RunOutcome::Unreachable));
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let out: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let t = output_tail(&out);
        assert!(t.starts_with("line 31\n") && t.ends_with("line 50"), "{t}");
        assert!(output_tail(&"x".repeat(5000)).len() <= OUTPUT_TAIL_CHARS);
    }

    #[test]
    fn polls_slow_down_for_long_commands_and_stay_bounded() {
        assert_eq!(poll_seconds(0, 15), 15);
        assert_eq!(poll_seconds(600, 15), 60);
        assert_eq!(poll_seconds(40 * 60, 15), 240);
        assert_eq!(poll_seconds(48 * 3600, 15), MAX_POLL_SECONDS);
        // 48 hours of polls stay far below the 25,000-event history limit (about 9 events a poll).
        let (mut t, mut polls) = (0u64, 0u64);
        while t < MAX_EXECUTION_TIMEOUT_SECONDS {
            t += poll_seconds(t, 15);
            polls += 1;
        }
        assert!(polls * 9 < 10_000, "{polls} polls");
    }

    #[test]
    fn the_output_stream_names_the_plugin_as_ssm_does() {
        assert_eq!(
            output_stream("c-1", "i-0123456789abcdef0", "aws:runShellScript"),
            "c-1/i-0123456789abcdef0/aws-runShellScript/stdout"
        );
    }

    fn facts(state: &str, opted_out: bool) -> crate::classify::Ec2Facts {
        crate::classify::Ec2Facts {
            instance_id: "i-1".into(),
            state: state.into(),
            launch_time: None,
            has_instance_profile: true,
            opted_out,
            platform_details: Some("Linux/UNIX".into()),
        }
    }

    fn ssm(ping: &str, platform_type: &str, name: &str) -> crate::classify::SsmFacts {
        crate::classify::SsmFacts {
            instance_id: "i-1".into(),
            ping_status: ping.into(),
            last_ping: None,
            platform_type: platform_type.into(),
            platform_name: name.into(),
            platform_version: String::new(),
            agent_version: "3.3.0.0".into(),
        }
    }

    #[test]
    fn placement_sends_only_to_running_online_managed_instances_with_a_document() {
        let spec = RunSpec {
            documents: vec![parse_document("linux=AWS-RunShellScript").unwrap()],
            parameters: BTreeMap::new(),
            execution_timeout: None,
        };
        let linux = ssm("Online", "Linux", "Ubuntu");
        assert!(matches!(
            place(&spec, Some(&facts("running", false)), Some(&linux), "k"),
            Placement::Send { .. }
        ));
        let outcome = |p: Placement| match p {
            Placement::Result { outcome, reason, .. } => (outcome, reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            outcome(place(&spec, None, Some(&linux), "k")).0,
            RunOutcome::Unreachable
        );
        assert_eq!(
            outcome(place(&spec, Some(&facts("stopped", false)), Some(&linux), "k")).0,
            RunOutcome::Unreachable
        );
        let (o, r) = outcome(place(&spec, Some(&facts("running", true)), Some(&linux), "opt"));
        assert_eq!((o, r.as_str()), (RunOutcome::Skipped, "opted out by tag opt"));
        assert_eq!(
            outcome(place(&spec, Some(&facts("running", false)), None, "k")).0,
            RunOutcome::Unreachable
        );
        let lost = ssm("ConnectionLost", "Linux", "Ubuntu");
        assert!(outcome(place(&spec, Some(&facts("running", false)), Some(&lost), "k"))
            .1
            .contains("ConnectionLost"));
        let win = ssm("Online", "Windows", "Microsoft Windows Server 2022 Datacenter");
        let (o, r) = outcome(place(&spec, Some(&facts("running", false)), Some(&win), "k"));
        assert_eq!(o, RunOutcome::Skipped);
        assert!(r.contains("no document for platform Windows"), "{r}");
    }

    #[test]
    fn batches_group_by_document_and_hold_at_most_the_maximum() {
        let lin = parse_document("linux=AWS-RunShellScript").unwrap();
        let win = parse_document("windows=AWS-RunPowerShellScript").unwrap();
        let t = |i: usize| RunTarget {
            instance_id: format!("i-{i:017x}"),
            platform: String::new(),
        };
        let targets: Vec<_> = (0..120)
            .map(|i| (if i % 4 == 0 { win.clone() } else { lin.clone() }, t(i)))
            .collect();
        let b = batches(targets, 50);
        let sizes: Vec<(String, usize)> = b.iter().map(|b| (b.document.name.clone(), b.instances.len())).collect();
        assert_eq!(
            sizes,
            vec![
                ("AWS-RunShellScript".to_string(), 50),
                ("AWS-RunShellScript".to_string(), 40),
                ("AWS-RunPowerShellScript".to_string(), 30)
            ]
        );
    }
}
